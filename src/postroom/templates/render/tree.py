"""The visual editor's block tree: validation (3.2) and MJML emission (3.3-3.5). Pure.

One table (`KINDS`) names every block kind with the children it takes and how its content is
written; the nesting rules, the leaf rule and the emitter are all read from it.
"""

from __future__ import annotations

import html.entities
import math
import re
from dataclasses import dataclass, field
from typing import Any

from postroom.platform.errors import RuleError

MAX_DEPTH = 50
MAX_BLOCKS = 10_000

# ---------------------------------------------------------------- the kind table

RAW, TEXT, VERBATIM = "raw", "text", "verbatim"  # content: HTML as given / escaped text / mj-liquid

_COLUMN_CONTENT = (
    "mj-text", "mj-button", "mj-image", "mj-divider", "mj-spacer", "mj-social", "mj-navbar",
    "mj-accordion", "mj-carousel", "mj-table", "mj-raw", "mj-liquid")
_HTML = "html"  # marker: children are HTML kinds


@dataclass(frozen=True)
class Kind:
    children: tuple[str, ...] | None = None  # None: a leaf
    content: str | None = None


_BODY_KINDS: dict[str, Kind] = {
    "mj-body": Kind(("mj-wrapper", "mj-section", "mj-hero", "mj-raw", "mj-liquid")),
    "mj-wrapper": Kind(("mj-section", "mj-hero", "mj-raw", "mj-liquid")),
    "mj-section": Kind(("mj-column", "mj-group", "mj-raw", "mj-liquid")),
    "mj-group": Kind(("mj-column",)),
    "mj-column": Kind(_COLUMN_CONTENT),
    "mj-hero": Kind(_COLUMN_CONTENT),
    "mj-text": Kind(content=RAW),
    "mj-button": Kind(content=RAW),
    "mj-image": Kind(),
    "mj-divider": Kind(),
    "mj-spacer": Kind(),
    "mj-social": Kind(("mj-social-element",)),
    "mj-social-element": Kind(content=TEXT),
    "mj-raw": Kind(content=RAW),
    "mj-liquid": Kind(content=VERBATIM),
    "mj-navbar": Kind(("mj-navbar-link",)),
    "mj-navbar-link": Kind(content=RAW),
    "mj-accordion": Kind(("mj-accordion-element",)),
    "mj-accordion-element": Kind(("mj-accordion-title", "mj-accordion-text")),
    "mj-accordion-title": Kind(content=RAW),
    "mj-accordion-text": Kind(content=RAW),
    "mj-carousel": Kind(("mj-carousel-image",)),
    "mj-carousel-image": Kind(),
    "mj-table": Kind((_HTML,), content=RAW),
}
# Defaults inside mj-attributes: mj-body and every MJML element that may appear under it
# (mj-liquid is no element, HTML kinds take no defaults).
_DEFAULTABLE = tuple(k for k in _BODY_KINDS if k != "mj-liquid")

KINDS: dict[str, Kind] = {
    "mjml": Kind(("mj-head", "mj-body")),
    "mj-head": Kind(("mj-attributes", "mj-breakpoint", "mj-font", "mj-html-attributes",
                     "mj-preview", "mj-style", "mj-title", "mj-raw")),
    "mj-attributes": Kind(("mj-all", "mj-class", *_DEFAULTABLE)),
    "mj-all": Kind(),
    "mj-class": Kind(),
    "mj-breakpoint": Kind(),
    "mj-font": Kind(),
    "mj-html-attributes": Kind(),
    "mj-preview": Kind(content=TEXT),
    "mj-style": Kind(content=RAW),
    "mj-title": Kind(content=TEXT),
    **_BODY_KINDS,
}
_HTML_KIND_RE = re.compile(r"[a-z][a-z0-9]*")
_HTML_KIND = Kind((_HTML,), content=TEXT)
_ATTRIBUTE_NAME_RE = re.compile(r"[A-Za-z_:][A-Za-z0-9_:.-]*")


def kind_of(name: str) -> Kind | None:
    """The kind named `name`, HTML kinds (`td`, `span`, ...) included; None if unknown."""
    found = KINDS.get(name)
    if found is None and name != "mjml" and _HTML_KIND_RE.fullmatch(name):
        return _HTML_KIND
    return found


def _allows(parent: str, child: str) -> bool:
    children = kind_of(parent).children or ()
    if _HTML in children and child not in KINDS and kind_of(child) is not None:
        return True
    return child in children


def _is_leaf(name: str, parent: str | None) -> bool:
    # Under mj-attributes every element is a set of defaults: `<mj-section … />`.
    return parent == "mj-attributes" or kind_of(name).children is None


# ---------------------------------------------------------------- validation

class TreeError(RuleError):
    """A tree the rules of 3.2 refuse; `.message` is the reason, the caller adds its prefix."""


def validate(tree: Any, path: str = "visual_editor_tree") -> None:
    """A whole document tree: rules 1-14 of 3.2 in that order, depth first; first failure wins."""
    if not isinstance(tree, dict) or tree.get("type") != "mjml":
        raise TreeError(f"{path} must have type 'mjml'")
    children = tree.get("children")
    if children is not None and not isinstance(children, list):
        raise TreeError(f"{path}: children must be an array")
    if not children:
        raise TreeError(f"{path} root block must have children")
    _check_document_children(children)
    _check_size(tree, path)
    _check_node(tree, path, None)


def validate_block(block: Any, path: str = "block") -> None:
    """A template-block fragment (2.7): any kind but `mjml`; paths start at `block`."""
    if isinstance(block, dict) and (not isinstance(block.get("type"), str) or not block["type"]):
        raise TreeError("block kind is required")
    if isinstance(block, dict) and block["type"] == "mjml":
        raise TreeError(f"{path}: component mjml cannot be a template block")
    _check_size(block, path)
    _check_node(block, path, None)


def _check_document_children(children: list) -> None:
    counts = {"mj-head": 0, "mj-body": 0}
    for child in children:
        kind = child.get("type") if isinstance(child, dict) else None
        if not isinstance(kind, str) or not kind:
            continue  # rules 5 and 6 name it with its path
        if kind not in counts:
            raise TreeError(f"mjml can only contain mj-head and mj-body, found {kind}")
        counts[kind] += 1
    if counts["mj-head"] > 1 or counts["mj-body"] > 1:
        raise TreeError("mjml document must contain at most one mj-head and one mj-body")
    if counts["mj-body"] == 0:
        raise TreeError("mjml document must contain an mj-body")


def _check_size(root: Any, path: str) -> None:
    # Iterative, so a pathological tree costs no recursion; stops at the first excess.
    blocks = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise TreeError(f"{path} exceeds maximum depth of {MAX_DEPTH}")
        blocks += 1
        if blocks > MAX_BLOCKS:
            raise TreeError(f"{path} exceeds {MAX_BLOCKS} blocks")
        children = node.get("children") if isinstance(node, dict) else None
        if isinstance(children, list):
            stack.extend((child, depth + 1) for child in reversed(children))


def _check_node(node: Any, path: str, parent: str | None) -> None:
    def fail(reason: str) -> TreeError:
        return TreeError(f"{path}: {reason}")

    if not isinstance(node, dict):
        raise fail("block must be an object")
    kind = node.get("type")
    if not isinstance(kind, str) or not kind:
        raise fail("block type is required")
    if kind_of(kind) is None:
        raise fail(f"unknown block type '{kind}'")
    children = node.get("children")
    if children is not None and not isinstance(children, list):
        raise fail("children must be an array")
    attributes = node.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise fail("attributes must be an object")
    for name, value in (attributes or {}).items():
        if not isinstance(name, str) or not _ATTRIBUTE_NAME_RE.fullmatch(name):
            raise fail(f"attribute name '{name}' is invalid")
        if value is not None and not isinstance(value, (str, int, float)):
            raise fail(f"attribute '{name}' must be a string, number or boolean")
    content = node.get("content")
    if content is not None and not isinstance(content, str):
        raise fail("content must be a string")
    if children and _is_leaf(kind, parent):
        raise fail(f"component {kind} cannot have children")
    if parent is not None and not _allows(parent, kind):
        raise fail(f"component {kind} cannot be a child of {parent}")
    for i, child in enumerate(children or ()):
        _check_node(child, f"{path}.children[{i}]", kind)


# ---------------------------------------------------------------- encoding (3.4)

_SPAN_RE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_CAPITAL_RE = re.compile(r"[A-Z]")
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_VALUE_ESCAPES = str.maketrans({"&": "&amp;", '"': "&quot;", "'": "&#39;", "<": "&lt;", ">": "&gt;"})
_VOID_RE = re.compile(
    r"<(area|base|br|col|embed|hr|img|input|link|meta|param|source|track|wbr)(?=[\s/>])"
    r"((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>", re.I)
_ENTITY_RE = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset(("amp", "lt", "gt", "quot", "apos"))
_SKIPPED_ATTRIBUTES = frozenset(("visibility",))  # editor-only (Notifuse #305)


def kebab(name: str) -> str:
    return _CAPITAL_RE.sub(lambda m: "-" + m.group().lower(), name)


def outside_spans(text: str, encode) -> str:
    """`encode` applied to the text between Liquid spans; the spans copied verbatim."""
    if "{" not in text:
        return encode(text)
    out, last = [], 0
    for match in _SPAN_RE.finditer(text):
        out.append(encode(text[last:match.start()]))
        out.append(match.group())
        last = match.end()
    out.append(encode(text[last:]))
    return "".join(out)


def escape_text(text: str) -> str:
    return outside_spans(text, lambda part: part.translate(_TEXT_ESCAPES))


def _escape_value(text: str) -> str:
    return outside_spans(text, lambda part: part.translate(_VALUE_ESCAPES))


def _number(value: int | float) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return repr(value)  # Python's repr is the shortest text that reads back as the same number


def attributes(attrs: dict | None) -> str:
    """` name="value"` pairs, kebab-case, sorted, with the skips and encodings of 3.4."""
    pairs = []
    for name, value in (attrs or {}).items():
        if name in _SKIPPED_ATTRIBUTES or value is None or value == "" or value is False:
            continue
        key = kebab(name)
        if value is True:
            text = key
        elif isinstance(value, (int, float)):
            text = _number(value)
        else:
            text = _escape_value(value)
        pairs.append((key, text))
    pairs.sort()
    return "".join(f' {key}="{text}"' for key, text in pairs)


def _fix_void(match: re.Match) -> str:
    attrs = match.group(2)
    if attrs.rstrip().endswith("/"):
        return match.group()
    return f"<{match.group(1)}{attrs.rstrip()} />"


def _fix_entity(match: re.Match) -> str:
    name = match.group(1)
    chars = html.entities.html5.get(name + ";")
    if name in _XML_ENTITIES or chars is None:
        return match.group()
    return "".join(f"&#{ord(c)};" for c in chars)


def fix_raw(text: str) -> str:
    """Raw content made well-formed XML: `<br>` → `<br />`, `&nbsp;` → `&#160;`, spans kept.

    A Liquid span may sit inside a tag (`<img src="{{ url }}">`), so spans are masked with a
    character the text does not contain rather than cut out, and the tag is still seen whole.
    """
    if "<" not in text and "&" not in text:
        return text
    spans = _SPAN_RE.findall(text) if "{" in text else []
    if spans:
        mark = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in text)
        text = _SPAN_RE.sub(lambda m, n=iter(range(len(spans))): f"{mark}{next(n)}{mark}", text)
    text = _ENTITY_RE.sub(_fix_entity, _VOID_RE.sub(_fix_void, text))
    if spans:
        text = re.sub(f"{mark}(\\d+){mark}", lambda m: spans[int(m.group(1))], text)
    return text


# ---------------------------------------------------------------- emission (3.5)

@dataclass(frozen=True)
class Block:
    """A tree block as placed in the generated MJML: lines are 1-based and inclusive."""

    id: Any
    kind: str
    path: str
    first_line: int
    last_line: int


@dataclass(frozen=True)
class Generated:
    text: str
    blocks: tuple[Block, ...] = field(repr=False)

    def block_at(self, line: int) -> Block | None:
        """The innermost block whose lines contain `line` of `text`."""
        found = None
        for block in self.blocks:  # pre-order: a later match is nested in an earlier one
            if block.first_line <= line <= block.last_line:
                found = block
            elif block.first_line > line:
                break
        return found


def _emits(node: dict) -> bool:
    kind = node["type"]
    if kind == "mj-html-attributes":
        return False  # no effect in the MJML engine, and not expressible as a tree (3.3)
    return kind != "mj-liquid" or bool(node.get("content"))


def _content(node: dict, kind: Kind, parent: str | None) -> str:
    text = node.get("content")
    if not text or parent == "mj-attributes" or kind.content is None:
        return ""
    if kind.content == TEXT:
        return escape_text(text)
    return fix_raw(text) if kind.content == RAW else text


class _Emitter:
    def __init__(self):
        self.parts: list[str] = []
        self.line = 1
        self.blocks: list[list] = []

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.line += text.count("\n")

    def node(self, node: dict, depth: int, path: str, parent: str | None) -> None:
        name = node["type"]
        entry = [node.get("id"), name, path, self.line, self.line]
        self.blocks.append(entry)
        if name == "mj-liquid":
            self.write(node["content"])  # no tag, no indentation: Liquid may generate structure
        else:
            self._element(node, name, depth, path, parent)
        entry[4] = self.line

    def _element(self, node: dict, name: str, depth: int, path: str, parent: str | None) -> None:
        indent = "  " * depth
        kind = kind_of(name)
        attrs = attributes(node.get("attributes"))
        content = _content(node, kind, parent)
        children = [(i, c) for i, c in enumerate(node.get("children") or ()) if _emits(c)]
        if not children:
            self.write(f"{indent}<{name}{attrs}>{content}</{name}>" if content else f"{indent}<{name}{attrs} />")
            return
        self.write(f"{indent}<{name}{attrs}>")
        if content:  # an HTML kind or mj-table holding text before its child elements
            self.write(f"\n{indent}  {content}")
        for i, child in children:
            self.write("\n")
            self.node(child, depth + 1, f"{path}.children[{i}]", name)
        self.write(f"\n{indent}</{name}>")


def to_mjml(tree: dict, path: str = "visual_editor_tree") -> Generated:
    """The MJML text of a validated tree (3.5), with each block's lines."""
    emitter = _Emitter()
    emitter.node(tree, 0, path, None)
    return Generated("".join(emitter.parts), tuple(Block(*entry) for entry in emitter.blocks))
