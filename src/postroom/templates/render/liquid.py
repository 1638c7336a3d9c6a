"""Liquid for email: python-liquid 2 with the limits, tags and filters of the contract (section 6).

One environment serves both modes of 4.3. HTML mode differs from text mode only in the data it is
given: every string of the `contact` object is wrapped as `ContactText` (a `str` subclass), and
output of a value that holds one is HTML-escaped. The taint follows a contact string through
filters that build new strings (`upcase`, `append`, `split`, `join`, ...), so no filter chain
can smuggle a subscriber-typed value out unescaped; `escape`, `h`, `escape_once` and `safe` end
it. Text mode is given the data as is, so nothing is escaped.

Limits (6): the source size is checked by the caller (it is a property of the document, 4.2 step
5); loops are limited by python-liquid (nested loops multiply); output and assigned/captured data
by python-liquid's stream and namespace limits; the 5 s wall clock is ours: the render context
checks a deadline on every loop iteration and every write to an output buffer, so the work
stops instead of running on in the background.
"""

from __future__ import annotations

import datetime as _dt
import functools
import time
from dataclasses import dataclass
from decimal import Decimal
from io import StringIO
from typing import Any, Mapping

from liquid import BoundTemplate, Environment, RenderContext
from liquid.builtin.content import ContentNode
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.echo_tag import EchoTag
from liquid.exceptions import (
    LiquidError,
    LiquidSyntaxError,
    LocalNamespaceLimitError,
    LoopIterationLimitError,
    OutputStreamLimitError,
)
from liquid.filter import with_environment
from liquid.output import LimitedStringIO
from liquid.stringify import to_liquid_string
from liquid.tag import Tag

SOURCE_LIMIT = 1_048_576
TIMEOUT_SECONDS = 5.0
LOOP_LIMIT = 1_000_000
OUTPUT_LIMIT = 10_485_760
MEMORY_LIMIT = 10_485_760

TIMEOUT_REASON = "liquid rendering timeout after 5s (possible infinite loop or excessive computation)"
LOOP_REASON = f"liquid loop iteration limit exceeded ({LOOP_LIMIT})"
OUTPUT_REASON = f"liquid output limit exceeded ({OUTPUT_LIMIT} bytes)"
MEMORY_REASON = f"liquid memory limit exceeded ({MEMORY_LIMIT} bytes)"

# Section 6, exactly: Shopify's standard tags and filters as liquidgo has them, plus `liquid`,
# and python-liquid's `safe`, `escapejs` and `squish`. Anything python-liquid registers beyond
# these is removed, so a template that works here works in no more places than the contract says.
TAGS = frozenset((
    "assign", "capture", "case", "comment", "#", "doc", "cycle", "increment", "decrement", "echo",
    "for", "break", "continue", "if", "unless", "ifchanged", "liquid", "tablerow"))
FILTERS = frozenset((
    "abs", "append", "at_least", "at_most", "base64_decode", "base64_encode",
    "base64_url_safe_decode", "base64_url_safe_encode", "capitalize", "ceil", "compact", "concat",
    "date", "default", "divided_by", "downcase", "escape", "escape_once", "find", "find_index",
    "first", "floor", "has", "h", "join", "last", "lstrip", "map", "minus", "modulo",
    "newline_to_br", "plus", "prepend", "reject", "remove", "remove_first", "remove_last",
    "replace", "replace_first", "replace_last", "reverse", "round", "rstrip", "size", "slice",
    "sort", "sort_natural", "split", "strip", "strip_html", "strip_newlines", "sum", "times",
    "truncate", "truncatewords", "uniq", "upcase", "url_decode", "url_encode", "where",
    "safe", "escapejs", "squish"))
_PSEUDO_TAGS = ("content", "output", "illegal")  # python-liquid's names for text, {{ }} and unknown tags
REFUSED_TAGS = ("include", "render")  # nothing to include: refused at parse, named in the error

# Filters whose result is safe HTML (or explicitly declared so): the taint stops there.
_CLEANING = frozenset(("escape", "h", "escape_once", "safe"))
# Filters that return their input's elements or one of their arguments unchanged: each element
# keeps its own taint, so re-tainting would escape clean data picked by `default` or `concat`.
_PASSING = frozenset((
    "default", "first", "last", "find", "where", "reject", "sort", "sort_natural", "uniq",
    "reverse", "compact", "map", "concat"))


# ---------------------------------------------------------------- problems

@dataclass(frozen=True)
class LiquidProblem:
    """Why a Liquid source does not parse or render; `line`/`column` are 1-based, 0 if unknown."""

    line: int
    column: int
    reason: str
    kind: str = "syntax"  # "syntax" (parse), "runtime" (a filter or tag failed) or "limit" (section 6)

    @property
    def summary(self) -> str:
        if self.kind == "limit":
            return self.reason
        label = "liquid syntax error" if self.kind == "syntax" else "liquid error"
        return f"{label} at line {self.line}, column {self.column}: {self.reason}"


class LiquidFailure(Exception):
    """Raised by `render` for a template that does not render; carries the problem."""

    def __init__(self, problem: LiquidProblem):
        super().__init__(problem.summary)
        self.problem = problem


class _Timeout(LiquidError):
    pass


def position(source: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of a character index; columns count characters."""
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    return line, column


def _where(err: LiquidError, source: str) -> tuple[int, int]:
    token = err.token
    if token is None:
        return 0, 0
    index = token.start_index
    if index < 0:  # python-liquid's end-of-input token: the parser stopped at the end
        index = len(source)
    return position(source, min(index, len(source)))


def _problem(err: Exception, source: str, *, parsing: bool) -> LiquidProblem:
    if isinstance(err, _Timeout):
        return LiquidProblem(*_where(err, source), TIMEOUT_REASON, "limit")
    if isinstance(err, LoopIterationLimitError):
        return LiquidProblem(*_where(err, source), LOOP_REASON, "limit")
    if isinstance(err, OutputStreamLimitError):
        return LiquidProblem(*_where(err, source), OUTPUT_REASON, "limit")
    if isinstance(err, LocalNamespaceLimitError):
        return LiquidProblem(*_where(err, source), MEMORY_REASON, "limit")
    if isinstance(err, LiquidError):
        reason = str(err.args[0]) if err.args else type(err).__name__
        kind = "syntax" if parsing or isinstance(err, LiquidSyntaxError) else "runtime"
        return LiquidProblem(*_where(err, source), reason, kind)
    # A filter that python-liquid does not guard (e.g. `round` with an absurd precision).
    return LiquidProblem(0, 0, f"{type(err).__name__}: {err}", "runtime")


# ---------------------------------------------------------------- contact strings (HTML mode)

class ContactText(str):
    """A string that came from the contact object: HTML-escaped when output in HTML mode."""

    __slots__ = ()


def taint(value: Any) -> Any:
    """`value` with every string (keys included) at any depth wrapped as ContactText."""
    if isinstance(value, str):
        return value if isinstance(value, ContactText) else ContactText(value)
    if isinstance(value, Mapping):
        return {taint(k): taint(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [taint(v) for v in value]
    return value


def html_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The data as HTML mode sees it: the `contact` object tainted, everything else as given."""
    out = dict(data)
    if "contact" in out:
        out["contact"] = taint(out["contact"])
    return out


def _tainted(value: Any) -> bool:
    if isinstance(value, str):
        return isinstance(value, ContactText)
    if isinstance(value, Mapping):
        return any(_tainted(k) or _tainted(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_tainted(v) for v in value)
    return False


_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})


def escape_html(text: str) -> str:
    return text.translate(_ESCAPES)


def _propagating(func, name: str):
    def call(left, *args, **kwargs):
        result = func(left, *args, **kwargs)
        if name in _CLEANING:
            return str(result) if isinstance(result, ContactText) else result
        if not (_tainted(left) or any(map(_tainted, args)) or any(map(_tainted, kwargs.values()))):
            return result
        if isinstance(result, str):
            return taint(result)
        if isinstance(result, list):
            return [taint(v) if isinstance(v, str) else v for v in result]
        return result
    return call


# ---------------------------------------------------------------- output

def to_text(value: Any) -> str:
    """Liquid's stringification, except that whole numbers render without a fraction (4.3)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return str(int(value))
    if isinstance(value, list):
        return "".join(to_text(v) for v in value)
    return to_liquid_string(value, False)


class _OutputNode(OutputNode):
    def text(self, context) -> str:
        value = self.expression.evaluate(context)
        text = to_text(value)
        return escape_html(text) if context.html and _tainted(value) else text

    def render_to_output(self, context, buffer) -> int:
        return buffer.write(self.text(context))


class _EchoNode(_OutputNode):
    def __str__(self) -> str:
        return f"{{% echo {self.expression} %}}"


class _Output(Output):
    node_class = _OutputNode


class _Echo(EchoTag):
    node_class = _EchoNode


class _Refused(Tag):
    block = False

    def parse(self, stream):
        raise LiquidSyntaxError(f"tag '{self.name}' is not allowed", token=stream.current)


def _refused(tag_name: str) -> type[Tag]:
    return type(f"_Refused_{tag_name}", (_Refused,), {"name": tag_name})


# ---------------------------------------------------------------- the deadline

class _Buffer(LimitedStringIO):
    """An output buffer that also enforces the render's deadline on every write."""

    def __init__(self, limit: int, deadline: float):
        super().__init__(limit=limit)
        self.deadline = deadline

    def write(self, text: str) -> int:
        if time.monotonic() > self.deadline:
            raise _Timeout("timeout", token=None)
        return super().write(text)


def _deadline_iter(iterator, deadline: float):
    for item in iterator:
        if time.monotonic() > deadline:
            raise _Timeout("timeout", token=None)
        yield item


class _Context(RenderContext):
    __slots__ = ("deadline", "html")

    def loop(self, namespace, forloop):
        # ForLoop and TableRow both iterate their `it`: wrapping it puts the deadline on every
        # iteration, empty loop bodies included (check 44's hundred empty loops).
        forloop.it = _deadline_iter(forloop.it, self.deadline)
        return super().loop(namespace, forloop)

    def get_buffer(self, buf=None) -> StringIO:
        carry = buf.size if isinstance(buf, LimitedStringIO) else 0
        return _Buffer(OUTPUT_LIMIT - carry, self.deadline)

    def filter(self, name, token):
        func = super().filter(name, token)
        if not self.html or name in _PASSING:
            return func
        return _propagating(func, name)


class _Template(BoundTemplate):
    context_class = _Context


# ---------------------------------------------------------------- the environment

@with_environment
def _date(value, fmt, *, environment):
    # python-liquid reads "now", "today" and timestamps in the server's local zone; the
    # contract's `date` works in UTC whatever the machine is set to.
    if isinstance(value, str) and value in ("now", "today"):
        value = _dt.datetime.now(_dt.timezone.utc)
    elif (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdigit()):
        value = _dt.datetime.fromtimestamp(int(value), _dt.timezone.utc)
    return _BUILTIN_DATE(value, fmt, environment=environment)


class _Environment(Environment):
    loop_iteration_limit = LOOP_LIMIT
    output_stream_limit = OUTPUT_LIMIT
    local_namespace_limit = MEMORY_LIMIT
    template_class = _Template

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        self.tags = {name: tag for name, tag in self.tags.items() if name in TAGS or name in _PSEUDO_TAGS}
        self.add_tag(_Output)
        self.add_tag(_Echo)
        for name in REFUSED_TAGS:
            self.add_tag(_refused(name))
        self.filters["h"] = self.filters["escape"]
        self.filters["date"] = _date
        self.filters = {name: func for name, func in self.filters.items() if name in FILTERS}


_BUILTIN_DATE = Environment().filters["date"]
ENV = _Environment()  # strict mode, strict filters, no loader: `include`/`render` never reach one
assert set(ENV.filters) == FILTERS, sorted(FILTERS ^ set(ENV.filters))


# ---------------------------------------------------------------- parse, check, render

def has_liquid(text: str) -> bool:
    return "{{" in text or "{%" in text


def parse(source: str) -> BoundTemplate | LiquidProblem:
    """The parsed template, or the problem that stops it from parsing."""
    try:
        template = ENV.from_string(source)
    except LiquidError as err:
        return _problem(err, source, parsing=True)
    return _unknown_filter(template, source) or template


def _unknown_filter(template: BoundTemplate, source: str) -> LiquidProblem | None:
    # python-liquid looks filters up only when they run; the contract refuses an unknown one at
    # parse, so a misspelt filter inside a branch no test data reaches is still caught at save.
    try:
        used = template.analyze(include_partials=False).filters
    except LiquidError as err:
        return _problem(err, source, parsing=True)
    unknown = [(span.index, name) for name, spans in used.items() if name not in ENV.filters
               for span in spans]
    if not unknown:
        return None
    index, name = min(unknown)
    return LiquidProblem(*position(source, index), f"unknown filter '{name}'")


@functools.lru_cache(maxsize=512)
def _parse_small(source: str) -> BoundTemplate | LiquidProblem:
    return parse(source)


def parse_cached(source: str) -> BoundTemplate | LiquidProblem:
    """`parse`, memoised for the short sources every send repeats (subjects, previews, texts)."""
    return _parse_small(source) if len(source) <= 65_536 else parse(source)


def check(source: str) -> LiquidProblem | None:
    """Parse only: the save-time check of 2.3."""
    result = parse(source)
    return result if isinstance(result, LiquidProblem) else None


def _context(template: BoundTemplate, data: Mapping[str, Any], html: bool) -> _Context:
    context = _Context(template, globals=template.make_globals(data))
    context.deadline = time.monotonic() + TIMEOUT_SECONDS
    context.html = html
    return context


_FAILURES = (LiquidError, ArithmeticError, ValueError, TypeError, LookupError, RecursionError)


def render(template: BoundTemplate, data: Mapping[str, Any], *, html: bool, source: str) -> str:
    """Render in HTML mode (`data` already passed through `html_data`) or text mode.

    Raises LiquidFailure with positions counted in `source`.
    """
    context = _context(template, data, html)
    buffer = _Buffer(OUTPUT_LIMIT, context.deadline)
    try:
        template.render_with_context(context, buffer)
    except _FAILURES as err:
        raise LiquidFailure(_problem(err, source, parsing=False)) from None
    return buffer.getvalue()


def output_nodes(template: BoundTemplate) -> list[OutputNode] | None:
    """The output statements of a template made only of text and outputs; None if it has tags.

    Such a template's outputs cannot create, drop or repeat markup of their own: what each one
    writes depends on the data alone, which is what rendering the MJML once per version needs.
    """
    outputs = []
    for node in template.nodes:
        if isinstance(node, _OutputNode):
            outputs.append(node)
        elif not isinstance(node, ContentNode):
            return None
    return outputs


def render_outputs(template: BoundTemplate, nodes: list[OutputNode], data: Mapping[str, Any],
                   *, html: bool) -> list[str] | None:
    """What each output statement writes for this data, or None if any of them fails."""
    context = _context(template, data, html)
    try:
        values = [node.text(context) for node in nodes]
    except _FAILURES:
        return None  # the caller renders the whole document, which reports the error in place
    # Output statements run no loop, so only the output limit can apply; past it the whole
    # document is rendered, and fails there with the limit's message.
    return values if sum(map(len, values)) <= OUTPUT_LIMIT // 4 else None
