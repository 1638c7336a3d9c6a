"""Links of the final HTML: UTM parameters, click tracking and the open pixel (4.5). Pure.

Links are found by their `<a …>` start tags only (any case, either quote, inside conditional
comments too); `<abbr>` and `<area>` are not links. A rewritten `href` keeps its quote and is
written back HTML-escaped; a link that is not rewritten keeps its bytes. Click-tracked links are
numbered 0, 1, … in document order (engagement contract 1.2): the index is in the click token,
and the per-link statistics count by it.
"""

from __future__ import annotations

import functools
import html
import re
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote_plus, urlencode

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")

_A_TAG_RE = re.compile(r"""<a(?=[\s/>])(?:[^>"']|"[^"]*"|'[^']*')*>""", re.I)
_ATTR_RE = re.compile(r"""([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?""")
_BODY_END_RE = re.compile(r"</body\s*>", re.I)
_HTTP_RE = re.compile(r"https?://", re.I)
_URL_SPACE = " \t\n\r\f"
MAX_TRACKED_URL = 2048  # bytes; a longer destination keeps its UTM but is not click-tracked (1.2)
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})


@dataclass(frozen=True)
class LinkRules:
    utm: tuple[tuple[str, str], ...] = ()  # non-empty values, in the order of UTM_KEYS
    endpoint: str = ""  # the workspace's own links start with `<endpoint>/`
    click_url: Callable[[str, int], str] | None = None  # tracking on: (destination, link index) → tracked URL

    @property
    def active(self) -> bool:
        return bool(self.utm) or self.click_url is not None


def utm_pairs(values) -> tuple[tuple[str, str], ...]:
    return tuple((key, values[key]) for key in UTM_KEYS if values.get(key))


@functools.lru_cache(maxsize=64)
def _query(utm: tuple[tuple[str, str], ...]) -> str:
    return urlencode(utm)


@functools.lru_cache(maxsize=4096)  # a broadcast rewrites the same links for every recipient
def with_utm(url: str, utm: tuple[tuple[str, str], ...]) -> str:
    """The URL with the UTM values appended after its query and before its fragment.

    A URL whose query already has a `utm_*` key (any case) is left alone; the existing query is
    kept byte for byte, so signed URLs stay valid.
    """
    if not utm:
        return url
    base, hash_, fragment = url.partition("#")
    path, question, query = base.partition("?")
    for part in query.split("&") if query else ():
        if unquote_plus(part.split("=", 1)[0]).lower().startswith("utm_"):
            return url
    if not question:
        separator = "?"
    else:
        separator = "" if base.endswith(("?", "&")) else "&"
    return f"{base}{separator}{_query(utm)}{hash_}{fragment}"


def destination(url: str, rules: LinkRules, index: int = 0) -> tuple[str | None, bool]:
    """(the new URL of a link or None when it is left unchanged, whether it is click-tracked as
    link `index`)."""
    url = url.strip(_URL_SPACE)
    if not url or url.startswith("#") or "{{" in url or "{%" in url or not _HTTP_RE.match(url):
        return None, False  # fragments, mailto:, tel:, relative and scheme-less URLs, unrendered Liquid
    if rules.endpoint and url.startswith(rules.endpoint + "/"):
        return None, False  # the workspace's own unsubscribe, confirmation and already-tracked links
    new = with_utm(url, rules.utm)
    tracked = rules.click_url is not None and len(new.encode("utf-8")) <= MAX_TRACKED_URL
    if tracked:
        new = rules.click_url(new, index)
    return (new if new != url else None), tracked


def _href(tag: str) -> tuple[int, int, str] | None:
    """(start, end, raw value) of the first `href` in a start tag, positions within `tag`."""
    for match in _ATTR_RE.finditer(tag, 2):
        if match.group(1).lower() != "href":
            continue
        for group in (2, 3, 4):
            if match.group(group) is not None:
                return match.start(group), match.end(group), match.group(group)
        return None  # a bare `href`: no URL
    return None


@dataclass(frozen=True)
class Href:
    tag: int  # where the `<a` starts
    start: int  # the value's span
    end: int
    quoted: bool


def link_values(page: str) -> list[Href]:
    """Every link's `href` value in the page, in document order."""
    found = []
    for tag in _A_TAG_RE.finditer(page):
        href = _href(tag.group())
        if href is not None:
            start, end, _ = href
            found.append(Href(tag.start(), tag.start() + start, tag.start() + end, tag.group()[start - 1] in "\"'"))
    return found


class Rewriter:
    """The links of one page, given in document order: each call is the next link's raw `href`
    and gives its final raw value (HTML-escaped), its own bytes when it is left unchanged."""

    def __init__(self, rules: LinkRules):
        self.rules = rules
        self.tracked = 0  # click-tracked links so far: the next one's index

    def __call__(self, raw: str) -> str:
        if not self.rules.active:
            return raw
        new, tracked = destination(html.unescape(raw), self.rules, self.tracked)
        self.tracked += tracked
        return raw if new is None else new.translate(_ESCAPES)


def rewrite(page: str, rules: LinkRules) -> tuple[str, list[str]]:
    """The HTML with its links rewritten, and every link's final raw `href` in document order."""
    out, last, hrefs = [], 0, []
    rewritten = Rewriter(rules)
    for href in link_values(page):
        raw = page[href.start:href.end]
        value = rewritten(raw)
        hrefs.append(value)
        if value is raw:
            continue
        out.append(page[last:href.start])
        out.append(value if href.quoted else f'"{value}"')
        last = href.end
    if not out:
        return page, hrefs
    out.append(page[last:])
    return "".join(out), hrefs


def pixel(src: str) -> str:
    return ('<table border="0" cellpadding="0" cellspacing="0" role="presentation" width="100%">'
            f'<tr><td><img src="{src.translate(_ESCAPES)}" alt="" style="border:0;margin:0;padding:0;">'
            "</td></tr></table>")


def body_end(page: str) -> int:
    """Where the open pixel goes: the last `</body>` (any case), else the end of the page."""
    last = None
    for last in _BODY_END_RE.finditer(page):
        pass
    return last.start() if last else len(page)


def add_pixel(page: str, src: str) -> str:
    at = body_end(page)
    return page[:at] + pixel(src) + page[at:]
