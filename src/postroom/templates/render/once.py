"""Rendering the MJML once per template version (4.8): what makes personalised sends cheap.

A document whose Liquid is only output statements (`{{ … }}`, no tags) can be rendered by mrml
once with a unique marker in place of each output, and the MJML, HTML and plain text of each
recipient are then that one rendering with the recipient's values put where the markers are.
That is only the output Liquid-then-mrml gives when mrml treats the values as it treats the
markers, so a plan is made only when all of this holds, and otherwise every recipient takes the
full path:

1. every marker sits where mrml copies text: in the content of `mj-text`, `mj-button`, `mj-raw`,
   `mj-table`, `mj-title`, `mj-preview` and the other content elements (outside `<style>` and
   `<script>`), or in an `href`, `src`, `alt` or `title` value of an element there or of
   `mj-image`, `mj-button` and the other elements that copy those attributes; never in a
   comment, never inside a tag name, never right after a `&` that could make an entity with it;
2. a second family of markers, of another length and carrying every character an inert value
   may have (spaces, URL punctuation, entities, a bare `&`, non-ASCII, quotes between tags),
   renders to the HTML of the first with the second markers in their place. mrml copies
   markers as they are, except that `mj-style inline` makes it parse and re-serialise the whole
   page by the HTML standard's rules; then the expected page holds each second marker
   serialised the same way (`_serialise`), and values are serialised so before they go in. The
   richest level of characters that passes is the plan's; none passing, no plan;
3. for each recipient, every value is inert at its place: only characters of that level,
   single inner spaces, entities whole, and no `&…` at its end when what follows could continue
   it. An empty value is inert only where the text or attribute around it has characters of its
   own and mrml renders the document with that marker removed as the page with it removed.

Links and the open pixel are applied to each recipient's substituted HTML by the same code as on
the full path; the plain text is derived once (`text.pieces`) and finished per recipient
(`text.assemble`), which is exact because the pieces depend only on markup, and inert values
carry none. The tests compare both paths on every golden template with random data.
"""

from __future__ import annotations

import html as _html
import html.entities
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

from liquid import BoundTemplate
from liquid.builtin.content import ContentNode

from postroom.templates.render import links, liquid, mjml, text
from postroom.templates.render.document import fix_markup

# Where mrml copies text content.
_TEXTY = frozenset((
    "mj-text", "mj-button", "mj-raw", "mj-table", "mj-title", "mj-preview", "mj-navbar-link",
    "mj-social-element", "mj-accordion-title", "mj-accordion-text"))
# Elements whose URL and label attributes mrml copies.
_ATTRIBUTE_ELEMENTS = frozenset((
    "mj-image", "mj-button", "mj-navbar-link", "mj-social-element", "mj-carousel-image"))
_ATTRIBUTES = frozenset(("href", "src", "alt", "title"))
_RAW_TEXT = frozenset(("style", "script"))

_TOKEN_RE = re.compile(
    r"""<!--.*?-->|<!\[CDATA\[.*?\]\]>|<(/?)([A-Za-z][^\s/>]*)((?:[^>"']|"[^"]*"|'[^']*')*)>|[^<]+|<""",
    re.S)
_QUOTED_ATTR_RE = re.compile(r"""([^\s"'>/=]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_OPEN_ENTITY_RE = re.compile(r"&[#A-Za-z0-9]*$")  # literal text ending where an entity could start
_OPEN_END_RE = re.compile(r"&[^\s<>&;]*$")  # a value ending in what could start an entity
_BARE_AMPERSAND_RE = re.compile(r"&(?!(?:amp|lt|gt|quot|#39);)")
_LEGACY = tuple(sorted((name for name in html.entities.html5 if not name.endswith(";")), key=len))

_PUNCTUATION = "-._~:/?#[]@!$()*+,;=%|^"
_ENTITIES = ("&amp;", "&lt;", "&gt;", "&quot;", "&#39;")  # HTML mode writes a contact's `&<>"'` so


def _serialise(value: str, in_attribute: bool) -> str:
    """A text as the HTML standard serialises it, in an attribute value or between tags."""
    value = value.replace("&", "&amp;").replace("\xa0", "&nbsp;")
    if in_attribute:
        return value.replace('"', "&quot;")
    return value.replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class _Level:
    """What inert values may carry; the first level whose second markers pass is the plan's."""

    bare_ampersand: bool  # `?a=1&b=2` from data other than the contact's
    between_tags: str  # characters allowed only between tags: quotes would end an attribute
    reserialised: bool  # mrml re-serialises the page (`mj-style inline`)

    def pattern(self, between: bool) -> re.Pattern:
        extra = _PUNCTUATION + (self.between_tags if between else "") + ("&" if self.bare_ampersand else "")
        entity = "|&(?:amp|lt|gt|quot|#39);"
        char = rf"(?:[^\x00-\x7f]|[A-Za-z0-9{re.escape(extra)}]{entity})"
        return re.compile(rf"{char}+(?: {char}+)*")

    def marker(self, nonce: str, i: int, between: bool) -> str:
        # Another length than the first markers, a leading digit, an inner space, every
        # allowed punctuation, entity and character, non-ASCII.
        bare = "&k=v&" if self.bare_ampersand else ""
        return f"0 {nonce}.{i}{_PUNCTUATION}{bare}é{''.join(_ENTITIES)}{self.between_tags if between else ''}"

    def decodes_alike(self, value: str) -> bool:
        # Re-serialised, a value is decoded by mrml's HTML parser and here by html.unescape: they
        # agree except on a bare `&` before `#` or a legacy entity name (`&not=1`, `&copy`).
        if not self.reserialised:
            return True
        for match in _BARE_AMPERSAND_RE.finditer(value):
            rest = value[match.end():match.end() + 32]
            if rest.startswith("#") or rest.startswith(_LEGACY):
                return False
        return True


# `>` is no inert character: the markup fix-up may rewrite it after a non-ASCII one.
_LEVELS = (_Level(True, "'\"", False), _Level(True, "'\"", True), _Level(False, "", False))


class _Markers:
    def __init__(self, count: int, avoid: str):
        while True:
            nonce = "".join(secrets.choice("bcdfghjkmnpqrstvwxz") for _ in range(10))
            if nonce not in avoid:
                break
        self.nonce = nonce
        self.first = [f"q{nonce}{i}q" for i in range(count)]
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


@dataclass(frozen=True)
class _Cut:
    """A text cut at the markers: literal parts, and between each two the hole's index."""

    parts: list[str]
    holes: list[int]

    def join(self, values: list[str]) -> str:
        out = [self.parts[0]]
        for hole, part in zip(self.holes, self.parts[1:]):
            out.append(values[hole])
            out.append(part)
        return "".join(out)


def _cut(page: str, pattern: re.Pattern) -> _Cut:
    parts, holes, last = [], [], 0
    for match in pattern.finditer(page):
        parts.append(page[last:match.start()])
        holes.append(int(match.group(1)))
        last = match.end()
    parts.append(page[last:])
    return _Cut(parts, holes)


# ---------------------------------------------------------------- condition 1: where markers sit

@dataclass(frozen=True)
class _Hole:
    own: bool  # the text or attribute value around it has characters of its own
    between_tags: bool  # in text rather than in an attribute (or the title, copied into one)
    closed: bool  # what follows it cannot continue an entity the value ends with
    in_title: bool = False


def _title_safe(value: str) -> bool:
    # mrml writes the title into `aria-label` escaped the way Rust debug-prints a string:
    # unprintable characters and combining marks become `\u{…}`, so values there keep to
    # printable characters that combine with nothing.
    return all(c < "\x80" or (c.isprintable() and unicodedata.category(c)[0] != "M") for c in value)


def _holes(page: str, pattern: re.Pattern, count: int) -> list[_Hole] | None:
    """Where each marker of the MJML sits; None when one sits where mrml might not copy it."""
    found: list[_Hole | None] = [None] * count
    stack: list[str] = []  # open mj-* elements
    raw_text = 0  # open <style>/<script> inside content
    for token in _TOKEN_RE.finditer(page):
        whole, closing, name = token.group(), token.group(1), token.group(2)
        if name is None:
            if pattern.search(whole):
                if whole.startswith("<") or raw_text or not stack or stack[-1] not in _TEXTY:
                    return None
                # mrml also copies the title into an attribute (`aria-label`): no quotes there.
                if not _note(found, whole, pattern, stack[-1] != "mj-title", stack[-1] == "mj-title"):
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


def _note(found: list, container: str, pattern: re.Pattern, between_tags: bool, in_title: bool = False) -> bool:
    own = bool(pattern.sub("", container).strip())
    for match in pattern.finditer(container):
        if _OPEN_ENTITY_RE.search(container[:match.start()]):
            return False  # `&am{{ x }}`: an entity could start before the value
        after = container[match.end():match.end() + 2]
        if between_tags and ">" in after:
            return False  # the markup fix-up of `漢>` would see the value, not the marker
        after = after[:1]
        found[int(match.group(1))] = _Hole(own, between_tags, after == "" or after in " \t\n\r\f<&", in_title)
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


def _kinds(page: str, pattern: re.Pattern) -> list[str]:
    """For each marker occurrence of an HTML page, in order: "tag" (inside a tag), "text"
    (between tags), or "raw" (in a comment or in style/script text, which re-serialising
    writes as it stands)."""
    kinds: list[str] = []
    raw_text = False
    for token in _TOKEN_RE.finditer(page):
        whole, name = token.group(), token.group(2)
        count = len(pattern.findall(whole))
        if name is not None:
            kinds += ["tag"] * count
            if name.lower() in _RAW_TEXT:
                raw_text = not token.group(1)
        else:
            kinds += ["raw" if whole.startswith("<") or raw_text else "text"] * count
    return kinds


def _as_placed(value: str, kind: str, reserialised: bool) -> str:
    if not reserialised or kind == "raw":
        return value
    return _serialise(_html.unescape(value), kind == "tag")


# ---------------------------------------------------------------- the plan

_HOLE, _LINK, _PIXEL = "", "L", "P"  # what a marker of the planned page stands for


@dataclass(frozen=True)
class _TextLink:
    label: _Cut
    link: int  # index in the page's links


@dataclass(frozen=True)
class Plan:
    nodes: list  # the output statements, in document order
    mjml: _Cut  # the MJML after Liquid
    html: _Cut  # the HTML; its holes index `slots`
    slots: tuple[tuple[str, int, str], ...]  # (what, index, kind) per marker of `html`
    links: tuple[_Cut, ...]  # each link's raw href, cut at the holes
    empty_ok: tuple[bool, ...]
    level: _Level
    inert: tuple[tuple[re.Pattern, bool, bool], ...]  # per hole: its characters, closed after, in the title
    text: tuple[_Cut | _TextLink, ...]  # the text before normalisation
    text_normalised: _Cut  # the same normalised, holes then the link texts as its markers

    def values(self, template: BoundTemplate, data: Mapping[str, Any]) -> list[str] | None:
        """This recipient's values (HTML mode data), or None when the full path must run."""
        values = liquid.render_outputs(template, self.nodes, data, html=True)
        if values is None:
            return None
        for value, empty_ok, (inert, closed, in_title) in zip(values, self.empty_ok, self.inert):
            if not value:
                if not empty_ok:
                    return None
            elif (not inert.fullmatch(value) or (not closed and _OPEN_END_RE.search(value))
                  or not self.level.decodes_alike(value) or (in_title and not _title_safe(value))):
                return None
        return values

    def render(self, values: list[str], rules: links.LinkRules, pixel: str) -> tuple[str, str, str]:
        """(MJML after Liquid, HTML with its links rewritten and `pixel` placed, plain text)."""
        reserialised = self.level.reserialised
        in_tags = [_as_placed(v, "tag", reserialised) for v in values]
        rewritten = links.Rewriter(rules)
        hrefs = [rewritten(cut.join(in_tags)) for cut in self.links]
        out = [self.html.parts[0]]
        for (what, index, kind), part in zip(self.slots, self.html.parts[1:]):
            if what == _HOLE:
                out.append(in_tags[index] if kind == "tag" else _as_placed(values[index], kind, reserialised))
            else:
                out.append(hrefs[index] if what == _LINK else pixel)
            out.append(part)
        return self.mjml.join(values), "".join(out), self._text(values, hrefs)

    def _text(self, values: list[str], hrefs: list[str]) -> str:
        # The converter decodes entities and maps whitespace; the values get the same, and no
        # entity can straddle a marker (condition 3, and `&…` before one is refused).
        spaced = [(_html.unescape(v) if "&" in v else v).translate(text.WHITESPACE) for v in values]
        parts: list[str | text.Link] = []
        tokens = list(spaced)
        for item in self.text:
            if isinstance(item, _TextLink):
                link = text.Link(item.label.join(spaced), _html.unescape(hrefs[item.link]), 0)
                parts.append(link)
                tokens.append(text.link_text(link.label, link.url))
            else:
                parts.append(item.join(spaced))
        # Normalising only rearranges spaces and newlines: put between literal text that was
        # normalised with markers in their place, tokens without spaces at their ends, runs of
        # spaces or newlines come out as the whole text normalised. Others (an empty value, an
        # NBSP at a name's start) take the whole normalisation.
        if all(t and t[0] != " " and t[-1] != " " and "  " not in t and "\n" not in t for t in tokens):
            return self.text_normalised.join(tokens)
        return text.assemble(parts)


def build(template: BoundTemplate | None, source: str) -> Plan | None:
    """The plan for a document (`source`: its MJML before Liquid), or None if it has none."""
    nodes = liquid.output_nodes(template) if template is not None else []
    if nodes is None:
        return None
    markers = _Markers(len(nodes), source)
    first = fix_markup(_document(template, markers.first) if template is not None else source)
    holes = _holes(first, markers.pattern, len(nodes))
    if holes is None:
        return None
    try:
        page = mjml.to_html(first)
        level = _level(template, markers, holes, page) if nodes else _LEVELS[0]
        if level is None:
            return None
        empty_ok = tuple(hole.own and _same_without(template, markers, i, page) for i, hole in enumerate(holes))
    except mjml.MjmlFailure:
        return None
    planned = _planned_page(page, markers)
    text_plan = _text_plan(page, markers)
    if planned is None or text_plan is None:
        return None
    inert = tuple((level.pattern(hole.between_tags), hole.closed, hole.in_title) for hole in holes)
    return Plan(nodes, _cut(first, markers.pattern), *planned, empty_ok, level, inert, *text_plan)


def _level(template, markers: _Markers, holes: list[_Hole], page: str) -> _Level | None:
    """The richest level whose second markers render as the first do, or None."""
    if any(marker not in page for marker in markers.first):
        return None
    kinds = _kinds(page, markers.pattern)
    cut = _cut(page, markers.pattern)
    for level in _LEVELS:
        second = [level.marker(markers.nonce, i, hole.between_tags) for i, hole in enumerate(holes)]
        expected = [cut.parts[0]]
        for hole, kind, part in zip(cut.holes, kinds, cut.parts[1:]):
            expected += [_as_placed(second[hole], kind, level.reserialised), part]
        if mjml.to_html(fix_markup(_document(template, second))) == "".join(expected):
            return level
    return None


def _same_without(template, markers: _Markers, hole: int, page: str) -> bool:
    values = list(markers.first)
    values[hole] = ""
    return mjml.to_html(fix_markup(_document(template, values))) == page.replace(markers.first[hole], "")


def _planned_page(page: str, markers: _Markers):
    """(the page cut at holes, links' hrefs and the pixel's place; their slots; the hrefs cut
    at their holes), or None."""
    hrefs = links.link_values(page)
    if not all(href.quoted for href in hrefs):
        return None  # mrml quotes every attribute; the full path would add quotes here
    kinds = iter(_kinds(page, markers.pattern))
    places = [(h.start, h.end, _LINK, j) for j, h in enumerate(hrefs)]
    end = links.body_end(page)
    places.append((end, end, _PIXEL, 0))
    places.sort(key=lambda p: (p[0], p[2] != _LINK))
    parts: list[str] = []
    slots: list[tuple[str, int, str]] = []
    link_cuts: list[_Cut] = []
    position, literal = 0, ""
    for start, stop, what, index in places:
        literal = _add_holes(page[position:start], markers, kinds, parts, slots, literal)
        parts.append(literal)
        slots.append((what, index, "tag"))
        literal = ""
        if what == _LINK:
            link_cuts.append(_cut(page[start:stop], markers.pattern))
            for _ in link_cuts[-1].holes:
                next(kinds)  # the href's holes belong to the link, placed as attribute values
        position = stop
    parts.append(_add_holes(page[position:], markers, kinds, parts, slots, literal))
    return _Cut(parts, list(range(len(slots)))), tuple(slots), tuple(link_cuts)


def _add_holes(segment: str, markers: _Markers, kinds, parts: list[str], slots: list, literal: str) -> str:
    """Cut `segment` at its holes into `parts`/`slots`; returns the literal left open at its end."""
    cut = _cut(segment, markers.pattern)
    literal += cut.parts[0]
    for hole, part in zip(cut.holes, cut.parts[1:]):
        parts.append(literal)
        slots.append((_HOLE, hole, next(kinds)))
        literal = part
    return literal


def _text_plan(page: str, markers: _Markers):
    """(the text before normalisation, the same normalised with markers), or None."""
    starts = {href.tag: k for k, href in enumerate(links.link_values(page))}
    raw = links.rewrite(page, links.LinkRules())[1]
    plan, pending, marked = [], [], []
    for piece in text.pieces(page):
        if isinstance(piece, str):
            pending.append(piece)
            marked.append(piece)
            continue
        k = starts.get(piece.start)
        if k is None or _html.unescape(raw[k]) != piece.url:
            return None  # the converter and the link pass disagree about this link
        if not piece.label.split() and not markers.pattern.search(raw[k]):
            # No words (a social icon): its text is the same for every recipient, whatever
            # tracking makes of its URL, so it is literal text here.
            constant = text.link_text(piece.label, piece.url)
            pending.append(constant)
            marked.append(constant)
            continue
        plan.append(_cut("".join(pending), markers.pattern))
        pending = []
        marked.append(f"q{markers.nonce}{len(markers.first) + sum(isinstance(p, _TextLink) for p in plan)}q")
        plan.append(_TextLink(_cut(piece.label, markers.pattern), k))
    plan.append(_cut("".join(pending), markers.pattern))
    return tuple(plan), _cut(text.normalise("".join(marked)), markers.pattern)
