"""JSON in and out: compact, UTC timestamps with Z, strict decoding."""

from __future__ import annotations

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
