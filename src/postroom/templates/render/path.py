"""The one render path (4.1-4.7): a resolved variant plus data in, a finished email out.

    render(content, data, options) -> Result

Steps, in the contract's order (4.2): the subject (text mode), the preview (HTML mode), then the
body: source (tree or `mjml_source`), head overrides, Liquid clean-up, size, Liquid (HTML mode),
markup fix-up, mrml, links, open pixel, and the plain text. The first failure ends the render and
what was produced before it is returned (2.6). A template that does not render is a Result with
`success` False, never an exception; an invalid tree raises TreeError, as the routes refuse it
with a 400 before rendering, and a programming error raises as it is.

Speed (4.8): the document of a variant (its MJML after overrides, its parsed Liquid, the lines
of its blocks) is cached in a bounded LRU keyed by a hash of the content and overrides. From the
second render of the same document on, `once.Plan` renders the MJML once and puts each
recipient's values into it, when that provably gives the same output (see `once`).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import msgspec

from postroom.templates.render import document, links, liquid, mjml, once, text, tree
from postroom.templates.render.liquid import LiquidFailure, LiquidProblem

SIZE_LIMIT = liquid.SOURCE_LIMIT
CACHE_SIZE = 256  # documents; a 40-block newsletter's entry is ~100 KB with its plan


# ---------------------------------------------------------------- the interface

@dataclass(frozen=True)
class Content:
    """A resolved variant (1.4). Code mode when `mjml_source` is non-empty: it wins over the tree."""

    tree: dict | None = None
    mjml_source: str | None = None
    subject: str = ""
    subject_preview: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Options:
    channel: str = "email"  # "web": no Liquid, no link rewriting (2.6)
    preserve_liquid: bool = False
    subject_override: str | None = None
    preheader_override: str | None = None
    tracking: bool = False  # requires click_url and open_url
    utm: Mapping[str, str] = field(default_factory=dict)  # utm_source … utm_term; empty ignored
    endpoint: str = ""  # the workspace's endpoint, no trailing "/"
    click_url: Callable[[str, int], str] | None = None  # (destination URL, link index) → tracked URL
    open_url: Callable[[], str] | None = None  # → the open pixel's URL
    # tokens.signed_tracking(...) gives both: Options(click_url=t.click_url, open_url=t.open_url)


@dataclass
class RenderError:
    message: str  # "<where>: <summary>"
    details: list[dict]  # one entry: line, column, message, tagName[, block_id]


@dataclass
class Result:
    success: bool = False
    subject: str | None = None
    subject_preview: str | None = None
    mjml: str | None = None
    html: str | None = None
    text: str | None = None
    error: RenderError | None = None

    def wire(self) -> dict[str, Any]:
        """The `templates.compile` response: keys in the contract's order, absent ones omitted."""
        out: dict[str, Any] = {"success": self.success}
        for key in ("mjml", "html", "subject", "subject_preview", "text"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.error is not None:
            out["error"] = {"message": self.error.message, "details": self.error.details}
        return out


# ---------------------------------------------------------------- documents and their cache

@dataclass
class _Document:
    where: str  # "visual_editor_tree" or "mjml_source"
    mjml: str  # after head overrides and Liquid clean-up: what Liquid parses
    generated: tree.Generated | None
    lines: document.LineMap
    template: Any  # BoundTemplate, LiquidProblem, or None when there is no Liquid
    size: int
    uses: int = 0
    plan: Any = None  # once.Plan, None until built, _NO_PLAN when the document has none


class _Cache:
    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[bytes, _Document] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> _Document | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                found.uses += 1
            return found

    def put(self, key: bytes, value: _Document) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_DOCUMENTS = _Cache(CACHE_SIZE)


def _sources(content: Content, options: Options) -> tuple[str, str | None, str | None]:
    code = content.mjml_source or ""
    title = options.subject_override or content.subject or None
    preheader = options.preheader_override or content.subject_preview or None
    return code, title, preheader


def _document_of(content: Content, options: Options) -> _Document:
    code, title, preheader = _sources(content, options)
    try:
        key = hashlib.blake2b(msgspec.json.encode(
            [None if code else content.tree, code, title, preheader]), digest_size=20).digest()
    except (TypeError, msgspec.EncodeError):
        tree.validate(content.tree)  # a tree that is not JSON is refused with its path
        raise
    found = _DOCUMENTS.get(key)
    if found is None:
        found = _build_document(content.tree, code, title, preheader)
        _DOCUMENTS.put(key, found)
    return found


def _build_document(source_tree, code: str, title, preheader) -> _Document:
    if code:
        where, generated, source = "mjml_source", None, code
    else:
        tree.validate(source_tree)
        where, generated = "visual_editor_tree", tree.to_mjml(source_tree)
        source = generated.text
    overridden, lines = document.head_overrides(source, title, preheader)
    cleaned = document.clean_liquid(overridden)
    template = liquid.parse(cleaned) if liquid.has_liquid(cleaned) else None
    return _Document(where, cleaned, generated, lines, template, len(cleaned.encode("utf-8")))


def clear_cache() -> None:
    """Forget every cached document (tests; a process never needs to)."""
    _DOCUMENTS.clear()


# ---------------------------------------------------------------- errors

def _error(where: str, summary: str, line: int, column: int, reason: str, tag_name: str,
           block_id: Any = None, with_block: bool = False) -> RenderError:
    detail = {"line": line, "column": column, "message": reason, "tagName": tag_name}
    if with_block:
        detail["block_id"] = block_id
    return RenderError(f"{where}: {summary}", [detail])


def _field_error(where: str, problem: LiquidProblem) -> RenderError:
    return _error(where, problem.summary, problem.line, problem.column, problem.reason, where)


def _body_error(doc: _Document, problem: LiquidProblem) -> RenderError:
    block = None
    if doc.generated is not None and problem.line:
        block = doc.generated.block_at(doc.lines.old_line(problem.line))
    if block is None:
        return _field_error(doc.where, problem)
    return _error(doc.where, problem.summary, problem.line, problem.column, problem.reason,
                  block.kind, block.id, with_block=True)


def _size_problem(size: int) -> LiquidProblem:
    return LiquidProblem(0, 0, f"template size ({size} bytes) exceeds maximum allowed size ({SIZE_LIMIT} bytes)",
                         "limit")


# ---------------------------------------------------------------- the steps

def _render_field(source: str, data: Mapping, *, html: bool) -> str:
    """A subject, preview or text; raises LiquidFailure."""
    size = len(source.encode("utf-8"))
    if size > SIZE_LIMIT:
        raise LiquidFailure(_size_problem(size))
    if not liquid.has_liquid(source):
        return source
    template = liquid.parse_cached(source)
    if isinstance(template, LiquidProblem):
        raise LiquidFailure(template)
    return liquid.render(template, data, html=html, source=source)


def _link_rules(options: Options) -> links.LinkRules:
    if options.channel == "web":
        return links.LinkRules()
    if options.tracking and (options.click_url is None or options.open_url is None):
        raise ValueError("tracking needs Options.click_url and Options.open_url")
    return links.LinkRules(links.utm_pairs(options.utm), options.endpoint.rstrip("/"),
                           options.click_url if options.tracking else None)


def _finish(page: str, rules: links.LinkRules, options: Options) -> tuple[str, list[str]]:
    page, hrefs = links.rewrite(page, rules)
    if options.tracking and options.channel != "web":
        page = links.add_pixel(page, options.open_url())
    return page, hrefs


def render(content: Content, data: Mapping[str, Any], options: Options = Options()) -> Result:
    """Render a variant for one recipient (4.2). See the module docstring."""
    result = Result()
    verbatim = options.preserve_liquid or options.channel == "web"
    rules = _link_rules(options)
    html_data = liquid.html_data(data) if not verbatim else data
    subject = options.subject_override or content.subject
    try:
        if subject:
            result.subject = subject if verbatim else _render_field(subject, data, html=False).translate(_NO_BREAKS)
    except LiquidFailure as failure:
        result.error = _field_error("subject", failure.problem)
        return result
    try:
        if content.subject_preview:
            result.subject_preview = (content.subject_preview if verbatim
                                      else _render_field(content.subject_preview, html_data, html=True))
    except LiquidFailure as failure:
        result.error = _field_error("subject_preview", failure.problem)
        return result
    doc = _document_of(content, options)
    if not _body(result, doc, html_data, rules, options, verbatim):
        return result
    try:
        if content.text:
            result.text = content.text if verbatim else _render_field(content.text, data, html=False)
    except LiquidFailure as failure:
        result.error, result.mjml, result.html = _field_error("text", failure.problem), None, None
        return result
    result.success = True
    return result


_NO_BREAKS = str.maketrans({"\r": " ", "\n": " "})


def _body(result: Result, doc: _Document, data: Mapping, rules: links.LinkRules,
          options: Options, verbatim: bool) -> bool:
    """Steps 2-11 and the derived text into `result`; False when the body failed."""
    result.mjml = doc.mjml
    if doc.size > SIZE_LIMIT:
        result.error = _field_error(doc.where, _size_problem(doc.size))
        return False
    if isinstance(doc.template, LiquidProblem) and not verbatim:
        result.error = _body_error(doc, doc.template)
        return False
    if not verbatim and _planned(result, doc, data, rules, options):
        return True
    try:
        after = doc.mjml if verbatim or doc.template is None else liquid.render(
            doc.template, data, html=True, source=doc.mjml)
    except LiquidFailure as failure:
        result.error = _body_error(doc, failure.problem)
        return False
    fixed = document.fix_markup(after)
    if not verbatim:
        result.mjml = fixed
    try:
        page = mjml.to_html(fixed)
    except mjml.MjmlFailure as failure:
        result.error = _mjml_error(doc, failure.problem, unchanged=after == doc.mjml)
        return False
    result.html, _ = _finish(page, rules, options)
    result.text = text.from_html(result.html)
    return True


def _mjml_error(doc: _Document, problem: mjml.MjmlProblem, unchanged: bool) -> RenderError:
    # Lines after Liquid are a tree's lines only when Liquid changed nothing.
    block = None
    if unchanged and doc.generated is not None and problem.line:
        block = doc.generated.block_at(doc.lines.old_line(problem.line))
    return _error("mjml", problem.summary, problem.line, problem.column, problem.reason,
                  block.kind if block else "mjml")


def _planned(result: Result, doc: _Document, data: Mapping, rules: links.LinkRules,
             options: Options) -> bool:
    """The once-per-version path (4.8): True when it produced the body into `result`."""
    plan = _plan(doc)
    if plan is None:
        return False
    values = plan.values(doc.template, data) if doc.template is not None else []
    if values is None:
        return False
    pixel = links.pixel(options.open_url()) if options.tracking and options.channel != "web" else ""
    result.mjml, result.html, result.text = plan.render(values, rules, pixel)
    return True


def _plan(doc: _Document) -> once.Plan | None:
    # A document seen once may never be seen again (a preview while typing): the plan, which
    # costs a few mrml calls, is made when the document is rendered a second time, or at once
    # when it has no Liquid and the plan costs what one render does.
    if doc.uses < 1 and doc.template is not None:
        return None
    if doc.plan is None:
        doc.plan = once.build(doc.template, doc.mjml) or _NO_PLAN
    return None if doc.plan is _NO_PLAN else doc.plan


_NO_PLAN = object()


# ---------------------------------------------------------------- previews and save-time checks

def compiled_preview(content: Content) -> str:
    """The MJML the render path starts from, head overrides applied, Liquid in place (1.2).

    Equal to `render(content, {}, Options(preserve_liquid=True)).mjml`.
    """
    return _document_of(content, Options()).mjml


def check_liquid(content: Content) -> RenderError | None:
    """The save-time Liquid check of 2.3: parse only, in the order subject, subject_preview,
    body, text. The message is `<where>: liquid syntax error at line L, column C: <reason>`;
    for a tree `<where>` is the path of the block whose generated lines hold the error (or
    `visual_editor_tree`) and L, C count in the MJML generated from the tree (3.5). The tree
    must have passed `tree.validate`."""
    for where, source in (("subject", content.subject), ("subject_preview", content.subject_preview)):
        problem = liquid.check(source) if source else None
        if problem:
            return _field_error(where, problem)
    body = _check_body(content)
    if body:
        return body
    problem = liquid.check(content.text) if content.text else None
    return _field_error("text", problem) if problem else None


def _check_body(content: Content) -> RenderError | None:
    if content.mjml_source:
        problem = liquid.check(document.clean_liquid(content.mjml_source))
        return _field_error("mjml_source", problem) if problem else None
    generated = tree.to_mjml(content.tree)
    problem = liquid.check(document.clean_liquid(generated.text))
    if problem is None:
        return None
    block = generated.block_at(problem.line) if problem.line else None
    where = block.path if block else "visual_editor_tree"
    detail = {"line": problem.line, "column": problem.column, "message": problem.reason,
              "tagName": block.kind if block else where}
    if block:
        detail["block_id"] = block.id
    return RenderError(f"{where}: {problem.summary}", [detail])
