"""JSON in and out: compact, UTC timestamps with Z, strict decoding."""

from __future__ import annotations

import re
from array import array
from itertools import accumulate

import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode(value) -> bytes:
    return _encoder.encode(value)


def decode(data: bytes):
    """Decode a request body; raises ValueError for anything that is not valid JSON."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from None


# Stored JSON is encoded again on the way out, inside a response that nests it further; msgspec
# works recursively, so what is stored stays far below the decoder's own depth limit (~1000).
MAX_STORED_DEPTH = 128


def storage_problem(value, max_depth: int = MAX_STORED_DEPTH) -> str | None:
    """Why a decoded JSON value cannot be stored as jsonb and sent back, or None: a string (key or
    value, at any depth) holding NUL, which jsonb refuses, or nesting deeper than `max_depth`.
    Walked with an explicit stack, so any depth is safe to check."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return "contains a NUL character"
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > max_depth:
            return f"is nested more than {max_depth} levels deep"
        if isinstance(node, dict):
            for key, item in node.items():
                if "\x00" in key:
                    return "contains a NUL character"
                stack.append((item, depth + 1))
        else:
            stack.extend((item, depth + 1) for item in node)
    return None


# A JSON string, escapes included (the unrolled form: one step per run of plain characters).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")  # +1 and -1 as signed bytes
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_exceeds(raw: bytes, limit: int) -> bool:
    """Whether the JSON text `raw` nests objects and arrays more than `limit` levels deep, read from
    the bytes before any decoding, so that a body deeper than a decoder (or the recursive code
    after it) can take is refused without being decoded. Strings are skipped; every bracket left
    is a step of +1 or -1, and the deepest point is the largest running sum. Only C-speed steps
    run per byte: a 10 MiB body takes a fraction of a second. Malformed text may count either way;
    the decoder refuses it anyway."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    steps = _JSON_STRING.sub(b"", raw).translate(_STEPS, _NOT_BRACKETS)
    if b"\x01" * (limit + 1) in steps:  # the usual deep body: one long run of openings
        return True
    return max(accumulate(array("b", steps)), default=0) > limit
