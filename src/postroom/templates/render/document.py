"""Text steps on the MJML document: head overrides (4.6), Liquid clean-up (4.2 step 4) and the
markup fix-up (step 7). Pure string work; each step says why it exists.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from postroom.templates.render.tree import escape_text

# ---------------------------------------------------------------- head overrides

_ATTRS = r"""(?:[^>"']|"[^"]*"|'[^']*')*?"""
_ELEMENT_RE = {
    name: re.compile(rf"<{name}(?=[\s/>])({_ATTRS})\s*(?:/>|>.*?</{name}\s*>)", re.I | re.S)
    for name in ("mj-title", "mj-preview")}
_HEAD_OPEN_RE = re.compile(rf"<mj-head(?=[\s/>])({_ATTRS})\s*(/?)>", re.I)
_MJML_OPEN_RE = re.compile(rf"<mjml(?=[\s/>]){_ATTRS}>", re.I)


@dataclass(frozen=True)
class _Edit:
    start: int  # in the old text
    end: int
    text: str


class LineMap:
    """Maps a line of the overridden document back to the line of the document it came from.

    Lines inside replaced or inserted text map to the line where the edit starts, so an error in
    an inserted `<mj-title>` is attributed to the `mj-head` (or `mjml`) block that holds it.
    """

    def __init__(self, old: str, edits: list[_Edit]):
        self._starts: list[int] = []  # first new line of each edit
        self._rows: list[tuple[int, int, int]] = []  # (new last line, old start line, delta after)
        delta = 0
        for edit in edits:
            old_first = old.count("\n", 0, edit.start) + 1
            new_first = old_first + delta
            new_last = new_first + edit.text.count("\n")
            delta += edit.text.count("\n") - old.count("\n", edit.start, edit.end)
            self._starts.append(new_first)
            self._rows.append((new_last, old_first, delta))

    def old_line(self, line: int) -> int:
        i = bisect.bisect_right(self._starts, line) - 1
        if i < 0:
            return line
        new_last, old_first, delta = self._rows[i]
        return old_first if line <= new_last else line - delta


def _apply(text: str, edits: list[_Edit]) -> str:
    out, last = [], 0
    for edit in edits:
        out.append(text[last:edit.start])
        out.append(edit.text)
        last = edit.end
    out.append(text[last:])
    return "".join(out)


def _replacements(text: str, name: str, source: str) -> list[_Edit]:
    return [_Edit(m.start(), m.end(), f"<{name}{m.group(1)}>{escape_text(source)}</{name}>")
            for m in _ELEMENT_RE[name].finditer(text)]


def head_overrides(text: str, title: str | None, preview: str | None) -> tuple[str, LineMap]:
    """Every mj-title/mj-preview gets the new source; missing ones are inserted (4.6).

    `None` or `""` leaves that element as the document has it. Returns the new text and the map
    from its lines to the old ones.
    """
    edits: list[_Edit] = []
    missing = []
    for name, source in (("mj-title", title), ("mj-preview", preview)):
        if not source:
            continue
        found = _replacements(text, name, source)
        edits += found
        if not found:
            missing.append(f"<{name}>{escape_text(source)}</{name}>")
    if missing:
        edits.append(_insertion(text, missing))
    edits.sort(key=lambda e: (e.start, e.end))  # an insertion before a replacement at the same place
    return _apply(text, edits), LineMap(text, edits)


def _insertion(text: str, elements: list[str]) -> _Edit:
    inner = "".join(f"\n    {element}" for element in elements)
    head = _HEAD_OPEN_RE.search(text)
    if head and head.group(2):  # <mj-head/>: expanded so the elements have a place
        return _Edit(head.start(), head.end(), f"<mj-head{head.group(1).rstrip()}>{inner}\n  </mj-head>")
    if head:
        return _Edit(head.end(), head.end(), inner)
    root = _MJML_OPEN_RE.search(text)
    at = root.end() if root else 0
    return _Edit(at, at, f"\n  <mj-head>{inner}\n  </mj-head>")


# ---------------------------------------------------------------- Liquid clean-up (step 4)

_SPAN_RE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_SPACES_RE = re.compile(r"&nbsp;|&#160;|&#x[aA]0;")
_INVISIBLE = str.maketrans(dict.fromkeys(map(ord, "\u00a0\u200b\u2060\ufeff")))
_DECODED = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&apos;", "'"),
            ("&amp;", "&"))  # &amp; last: `&amp;lt;` stays the text `&lt;`


def _clean_span(match: re.Match) -> str:
    span = _SPACES_RE.sub(" ", match.group()).translate(_INVISIBLE)
    if "&" in span:
        for entity, char in _DECODED:
            span = span.replace(entity, char)
    return span


def clean_liquid(text: str) -> str:
    """Rich-text editors write `{% if a &gt; b %}` and non-breaking spaces inside tags; Liquid
    needs the characters. Only the spans change; lines never do."""
    if "{{" not in text and "{%" not in text:
        return text
    return _SPAN_RE.sub(_clean_span, text)


# ---------------------------------------------------------------- markup fix-up (step 7)

_FIX_RE = re.compile(
    r"""<!--.*?-->|<[A-Za-z/!?](?:[^>"']|"[^"]*"|'[^']*')*>"""  # comments and tags: kept
    r"|<"  # any other `<`: it cannot open a tag
    r"|(?<=[^\x00-\x7f])>|(?<=[^\x00-\x7f].)>", re.S)  # `漢>` in text


def _fixed(match: re.Match) -> str:
    found = match.group()
    if len(found) > 1:
        return found
    return "&lt;" if found == "<" else "&gt;"


def fix_markup(text: str) -> str:
    """A `<` that cannot open a tag becomes `&lt;`, so `Price < 10` from data still parses.

    Also, outside tags, a `>` within two characters after a non-ASCII one becomes `&gt;`: mrml
    0.2's tokenizer steps two bytes back from a `>` in text and panics when that lands inside a
    character (`漢>`, `éZ>`). Both spellings are the same HTML text.
    """
    if "<" not in text and ">" not in text:
        return text
    return _FIX_RE.sub(_fixed, text)
