"""Rendering the MJML once per template version (4.8): what makes personalised sends cheap.

A document whose Liquid is only output statements (`{{ … }}`, no tags) can be rendered by mrml
once with a unique marker in place of each output, and the HTML, the MJML and the plain text of
each recipient are then that one rendering with the recipient's values put where the markers
are. That is only the same output as Liquid-then-mrml when mrml copies the values untouched, so a
plan is made only when all of this holds, and otherwise every recipient takes the full path:

1. every marker sits where mrml copies text as it is: in the content of `mj-text`, `mj-button`,
   `mj-raw`, `mj-table`, `mj-title`, `mj-preview` and the other content elements (outside
   `<style>` and `<script>`), or in an `href`, `src`, `alt` or `title` value of an element
   there or of `mj-image`, `mj-button` and the other elements that copy those attributes;
   never in a comment, never inside a tag name, never right after a `&` that could make an
   entity with it;
2. a second family of markers, of another length and full of punctuation and spaces, renders
   to the same HTML with the second markers in place of the first (so mrml neither measured,
   parsed nor encoded them), and every marker shows up at least once;
3. for each recipient, every value is "inert": made of letters, digits, non-ASCII characters and
   the URL punctuation the second family carries, with single inner spaces, no markup, no
   entity, no quote and no `;`. An empty value is inert only where the text or attribute around
   it has characters of its own and mrml renders the document with that marker removed as the
   marker-free HTML. A recipient whose values are not inert takes the full path.

Links and the open pixel are applied to each recipient's substituted HTML by the same code as on
the full path; the plain text is derived once (`text.pieces`) and finished per recipient
(`text.assemble`), which is exact because the pieces depend only on markup, and inert values
carry none. The tests compare both paths on every golden template.
"""

from __future__ import annotations

import html as _html
import re
import secrets
from dataclasses import dataclass
from typing import Any, Mapping

from liquid import BoundTemplate
from liquid.builtin.content import ContentNode

from postroom.templates.render import links, liquid, mjml, text
from postroom.templates.render.document import fix_markup

# Where mrml copies text content as it is.
_TEXTY = frozenset((
    "mj-text", "mj-button", "mj-raw", "mj-table", "mj-title", "mj-preview", "mj-navbar-link",
    "mj-social-element", "mj-accordion-title", "mj-accordion-text"))
# Elements whose URL and label attributes mrml copies as they are.
_ATTRIBUTE_ELEMENTS = frozenset((
    "mj-image", "mj-button", "mj-navbar-link", "mj-social-element", "mj-carousel-image"))
_ATTRIBUTES = frozenset(("href", "src", "alt", "title"))
_RAW_TEXT = frozenset(("style", "script"))

_PUNCTUATION = "-._~:/?#[]@!$()*+,=%|^"
_ENTITIES = "&amp;&lt;&gt;&quot;&#39;"  # what HTML mode writes for a contact's `&<>"'`
_TEXT_ONLY = "'\">"  # harmless between tags, not inside a quoted attribute value


def _inert(extra: str) -> re.Pattern:
    char = rf"(?:[^\x00-\x7f]|[A-Za-z0-9{re.escape(_PUNCTUATION + extra)}]|&(?:amp|lt|gt|quot|#39);)"
    return re.compile(rf"{char}+(?: {char}+)*")


INERT_RE = _inert("")  # a value inside an attribute
INERT_TEXT_RE = _inert(_TEXT_ONLY)  # a value between tags
_TOKEN_RE = re.compile(
    r"""<!--.*?-->|<!\[CDATA\[.*?\]\]>|<(/?)([A-Za-z][^\s/>]*)((?:[^>"']|"[^"]*"|'[^']*')*)>|[^<]+|<""",
    re.S)
_OPEN_ENTITY_RE = re.compile(r"&[#A-Za-z0-9]*$")
_QUOTED_ATTR_RE = re.compile(r"""([^\s"'>/=]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


class _Markers:
    def __init__(self, count: int, avoid: str):
        while True:
            nonce = "".join(secrets.choice("bcdfghjkmnpqrstvwxz") for _ in range(10))
            if nonce not in avoid:
                break
        self.first = [f"q{nonce}{i}q" for i in range(count)]
        # Another length, a leading digit, an inner space, every inert punctuation, entity and
        # non-ASCII; quotes only where values may carry them.
        self.second = [f"0 {nonce}.{i}-_~:/?#[]@!$()*+,=%|^é{_ENTITIES}" for i in range(count)]
        self.pattern = re.compile(rf"q{nonce}(\d+)q")


def _document(template: BoundTemplate, markers: list[str]) -> str:
    out, i = [], 0
    for node in template.nodes:
        if isinstance(node, ContentNode):
            out.append(node.text)
        else:
            out.append(markers[i])
            i += 1
    return "".join(out)


def _split(page: str, pattern: re.Pattern) -> tuple[list[str], list[int]]:
    """`page` cut at the markers: literal parts and the hole index between each two."""
    parts, holes, last = [], [], 0
    for match in pattern.finditer(page):
        parts.append(page[last:match.start()])
        holes.append(int(match.group(1)))
        last = match.end()
    parts.append(page[last:])
    return parts, holes


def _join(parts: list[str], holes: list[int], values: list[str]) -> str:
    out = [parts[0]]
    for hole, part in zip(holes, parts[1:]):
        out.append(values[hole])
        out.append(part)
    return "".join(out)


# ---------------------------------------------------------------- condition 1: where markers sit

def _surroundings(page: str, pattern: re.Pattern, count: int) -> list[tuple[bool, bool]] | None:
    """For each marker: (the text or value around it has characters of its own, it is between
    tags rather than in an attribute); None when a marker sits anywhere mrml might not copy it
    as it is."""
    found: list[tuple[bool, bool] | None] = [None] * count
    stack: list[str] = []  # open mj-* elements
    raw_text = 0  # open <style>/<script> inside content
    for token in _TOKEN_RE.finditer(page):
        whole, closing, name = token.group(), token.group(1), token.group(2)
        if name is None:
            if pattern.search(whole):
                if whole.startswith("<") or raw_text or not stack or stack[-1] not in _TEXTY:
                    return None
                # mrml also copies the title into an attribute (`aria-label`): no raw quotes there.
                if not _note(found, whole, pattern, stack[-1] != "mj-title"):
                    return None
            continue
        name = name.lower()
        if pattern.search(whole) and not _in_attributes(found, token.group(3), name, stack, pattern):
            return None
        self_closing = token.group(3).rstrip().endswith("/")
        if name.startswith("mj-") or name == "mjml":
            if closing and name in stack:
                del stack[len(stack) - 1 - stack[::-1].index(name):]
            elif not closing and not self_closing:
                stack.append(name)
        elif name in _RAW_TEXT and not self_closing:
            raw_text += -1 if closing else 1
    return found if all(v is not None for v in found) else None


def _note(found: list, container: str, pattern: re.Pattern, between_tags: bool) -> bool:
    own = bool(pattern.sub("", container).strip())
    for match in pattern.finditer(container):
        if _OPEN_ENTITY_RE.search(container[:match.start()]):
            return False
        found[int(match.group(1))] = (own, between_tags)
    return True


def _in_attributes(found: list, attrs: str, element: str, stack: list[str], pattern) -> bool:
    if element.startswith("mj-"):
        allowed = element in _ATTRIBUTE_ELEMENTS
    else:
        allowed = bool(stack) and stack[-1] in _TEXTY
    seen = 0
    for attr in _QUOTED_ATTR_RE.finditer(attrs):
        value = attr.group(2) if attr.group(2) is not None else attr.group(3)
        if not pattern.search(value):
            continue
        if not allowed or attr.group(1).lower() not in _ATTRIBUTES or not _note(found, value, pattern, False):
            return False
        seen += len(pattern.findall(value))
    return seen == len(pattern.findall(attrs))  # none in a name or an unquoted value


# ---------------------------------------------------------------- the plan

@dataclass(frozen=True)
class _TextLink:
    label: tuple[list[str], list[int]]
    link: int  # index in the page's links


@dataclass(frozen=True)
class Plan:
    nodes: list  # the output statements, in document order
    mjml: tuple[list[str], list[int]]  # the MJML after Liquid, cut at the markers
    html: tuple[list[str], list[int]]
    empty_ok: tuple[bool, ...]
    patterns: tuple[re.Pattern, ...]  # what makes a value inert at each hole
    text: tuple[tuple[list[str], list[int]] | _TextLink, ...]

    def values(self, template: BoundTemplate, data: Mapping[str, Any]) -> list[str] | None:
        """This recipient's values (HTML mode data), or None when the full path must run."""
        values = liquid.render_outputs(template, self.nodes, data, html=True)
        if values is None:
            return None
        for value, empty_ok, inert in zip(values, self.empty_ok, self.patterns):
            if not (inert.fullmatch(value) if value else empty_ok):
                return None
        return values

    def page(self, values: list[str]) -> tuple[str, str]:
        """(MJML after Liquid, HTML) for these values."""
        return _join(*self.mjml, values), _join(*self.html, values)

    def plain_text(self, values: list[str], hrefs: list[str]) -> str:
        # The converter decodes entities and maps whitespace; the values get the same, and no
        # entity can straddle a marker (a value's entities are whole, `&…` before one is refused).
        spaced = [(_html.unescape(v) if "&" in v else v).translate(text.WHITESPACE) for v in values]
        parts: list[str | text.Link] = []
        for item in self.text:
            if isinstance(item, _TextLink):
                parts.append(text.Link(_join(*item.label, spaced), _html.unescape(hrefs[item.link]), 0))
            else:
                parts.append(_join(*item, spaced))
        return text.assemble(parts)


def build(template: BoundTemplate | None, source: str) -> Plan | None:
    """The plan for a document (`source`: its MJML before Liquid), or None if it has none."""
    nodes = liquid.output_nodes(template) if template is not None else []
    if nodes is None:
        return None
    markers = _Markers(len(nodes), source)
    first = fix_markup(_document(template, markers.first) if template is not None else source)
    surroundings = _surroundings(first, markers.pattern, len(nodes))
    if surroundings is None:
        return None
    markers.second = [m + (_TEXT_ONLY if between else "") for m, (_, between) in zip(markers.second, surroundings)]
    try:
        page = mjml.to_html(first)
        if nodes and not _same_with_second_markers(template, markers, page):
            return None
        empty_ok = tuple(own and _same_without(template, markers, i, page)
                         for i, (own, _) in enumerate(surroundings))
    except mjml.MjmlFailure:
        return None
    text_plan = _text_plan(page, markers.pattern)
    if text_plan is None:
        return None
    patterns = tuple(INERT_TEXT_RE if between else INERT_RE for _, between in surroundings)
    return Plan(nodes, _split(first, markers.pattern), _split(page, markers.pattern), empty_ok,
                patterns, text_plan)


def _same_with_second_markers(template, markers: _Markers, page: str) -> bool:
    if any(marker not in page for marker in markers.first):
        return False
    second = mjml.to_html(fix_markup(_document(template, markers.second)))
    expected = markers.pattern.sub(lambda m: markers.second[int(m.group(1))], page)
    return second == expected


def _same_without(template, markers: _Markers, hole: int, page: str) -> bool:
    values = list(markers.first)
    values[hole] = ""
    return mjml.to_html(fix_markup(_document(template, values))) == page.replace(markers.first[hole], "")


def _text_plan(page: str, pattern: re.Pattern):
    starts = {start: k for k, start in enumerate(links.link_starts(page))}
    raw = links.rewrite(page, links.LinkRules())[1]
    plan, pending = [], []
    for piece in text.pieces(page):
        if isinstance(piece, str):
            pending.append(piece)
            continue
        k = starts.get(piece.start)
        if k is None or _html.unescape(raw[k]) != piece.url:
            return None  # the converter and the link pass disagree about this link
        plan.append(_split("".join(pending), pattern))
        pending = []
        plan.append(_TextLink(_split(piece.label, pattern), k))
    plan.append(_split("".join(pending), pattern))
    return tuple(plan)
