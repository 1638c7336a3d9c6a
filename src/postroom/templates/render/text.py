"""The plain-text part derived from the final HTML (4.6), on the standard library's html.parser.

Why not inscriptis or html2text (both on the mirror): html2text writes Markdown (`[label](url)`,
`**bold**`, `# headings`), inscriptis lays tables out as text columns and writes links its own
way, and neither drops a hidden preheader. The contract's rules are few and exact, so a small
converter states them directly:

- `<head>`, `<style>`, `<script>`, `<title>`, comments (conditional comments included) and any
  element styled `display:none` (the hidden preheader) are dropped; a comment still separates
  words (mrml puts one between navbar links); images write nothing, so the open pixel drops too;
- `p`, headings, `div`, table rows, `li`, `br` and the other block elements start lines;
- a link is `label (URL)` with the URL as the HTML has it (tracked), or the URL alone when the
  label equals it; an image inside a link lends its `alt` to the label, and a link with no
  label at all (a social icon beside its named link) is left out; a link to nothing or to
  `#…` is its label;
- entities are decoded; runs of spaces collapse, lines are trimmed, runs of blank lines become
  one, and the whole is trimmed.

The work is split in two so the render path can derive text once per template version: `pieces`
does everything that depends on markup, `assemble` everything that depends on the words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

_SKIPPED = frozenset(("head", "style", "script", "title", "template"))
_PARAGRAPHS = frozenset(("p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"))
_LINES = frozenset(("div", "tr", "li", "ul", "ol", "table", "hr", "section", "article",
                    "header", "footer", "center", "dl", "dt", "dd", "thead", "tbody", "tfoot"))
_CELLS = frozenset(("td", "th"))
_VOID = frozenset(("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr"))
_HIDDEN_RE = re.compile(r"display\s*:\s*none", re.I)
# Whitespace in HTML text is one space whatever it is; in a plain-text mail NBSP and the hair
# space of mj-spacer too.
WHITESPACE = str.maketrans(dict.fromkeys((c for c in range(0x3001) if chr(c).isspace()), " "))


@dataclass
class Link:
    label: str  # the link's text, before normalisation
    url: str  # the decoded `href`
    start: int  # offset of the `<a` in the page


class _Pieces(HTMLParser):
    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.out: list[str | Link] = []
        self.link: Link | None = None
        self.skipping: str | None = None  # the tag whose content is dropped
        self.nesting = 0  # same-name tags opened inside it
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", page)]

    def _write(self, text: str) -> None:
        if self.link is not None:
            self.link.label += text
        else:
            self.out.append(text)

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag, attrs):
        if self.skipping is not None:
            self.nesting += tag == self.skipping
            return
        if tag in _SKIPPED or (tag not in _VOID and _HIDDEN_RE.search(dict(attrs).get("style") or "")):
            self.skipping, self.nesting = tag, 0
            return
        self._break(tag)
        if tag == "img" and self.link is not None:
            self.link.label += " " + (dict(attrs).get("alt") or "").translate(WHITESPACE) + " "
        if tag == "a":
            self._close_link()
            href = next((value for name, value in attrs if name == "href"), None)
            if href is not None:
                self.link = Link("", href, self._offset())

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if self.skipping is not None:
            if tag == self.skipping:
                if self.nesting == 0:
                    self.skipping = None
                else:
                    self.nesting -= 1
            return
        if tag == "a":
            self._close_link()
        elif tag in _CELLS:
            self._write(" ")
        else:
            self._break(tag)

    def handle_comment(self, data):
        if self.skipping is None:
            self._write(" ")

    def handle_data(self, data):
        if self.skipping is None:
            self._write(data.translate(WHITESPACE))

    def _break(self, tag: str) -> None:
        if tag in _PARAGRAPHS:
            self._write("\n\n")
        elif tag == "br":
            self._write("\n")
        elif tag in _LINES:
            self._write(_SOFT)

    def _close_link(self) -> None:
        if self.link is not None:
            link, self.link = self.link, None
            self.out.append(link)


def pieces(page: str) -> list[str | Link]:
    parser = _Pieces(page)
    parser.feed(page)
    parser.close()
    parser._close_link()
    return parser.out


def link_text(label: str, url: str) -> str:
    if not url or url.startswith("#"):
        return label  # as it stands, spaces kept: carousel thumbnails are such links side by side
    label = " ".join(label.split())
    if not label:
        return ""
    return url if label == url else f"{label} ({url})"


# The edge of a block (div, table row, list item) is a soft break: however many meet, and next
# to a <br> or a paragraph's edge, they make one line break, so `</li><li>` is no blank line.
# Data never holds one: it is whitespace, turned into a space with the rest.
_SOFT = "\x1e"
_SPACES_RE = re.compile(r" {2,}")
_SOFT_RUN_RE = re.compile(r"\n?[ \x1e]*\x1e[ \x1e]*\n?")
_LINE_EDGE_RE = re.compile(r" ?\n ?")
_BLANKS_RE = re.compile(r"\n{3,}")


def _soft(match: re.Match) -> str:
    run = match.group()
    return "\n\n" if run.startswith("\n") and run.endswith("\n") and len(run) > 1 else "\n"


def normalise(text: str) -> str:
    text = _SOFT_RUN_RE.sub(_soft, _SPACES_RE.sub(" ", text))
    text = _LINE_EDGE_RE.sub("\n", _SPACES_RE.sub(" ", text))
    return _BLANKS_RE.sub("\n\n", text).strip()


def assemble(parts: list[str | Link]) -> str:
    return normalise("".join(p if isinstance(p, str) else link_text(p.label, p.url) for p in parts))


def from_html(page: str) -> str:
    return assemble(pieces(page))
