"""Secrets at rest: AES-256-GCM under a key derived from SECRET_KEY with HKDF-SHA256.

A sealed value is `version (1 byte) || nonce (12 bytes) || ciphertext+tag`. `context` is the
associated data: give the identity of the row a secret belongs to (e.g. b"webhook:ws:id") and a
sealed value copied into another row will not open there.
"""

from __future__ import annotations

import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_INFO = b"postroom/secrets-at-rest/v1"   # its own label: independent of the token signing key
_NONCE = 12


class SecretError(ValueError):
    """The sealed value does not open with this key and context (wrong key, tampered, other row)."""


@functools.lru_cache(maxsize=8)
def _aead(key_bytes: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key_bytes))


def encrypt(key_bytes: bytes, plaintext: bytes, context: bytes = b"") -> bytes:
    nonce = os.urandom(_NONCE)
    return _VERSION + nonce + _aead(key_bytes).encrypt(nonce, plaintext, context)


def decrypt(key_bytes: bytes, blob: bytes, context: bytes = b"") -> bytes:
    blob = bytes(blob)
    if len(blob) < 1 + _NONCE + 16 or blob[:1] != _VERSION:
        raise SecretError("not a sealed secret")
    try:
        return _aead(key_bytes).decrypt(blob[1:1 + _NONCE], blob[1 + _NONCE:], context)
    except InvalidTag:
        raise SecretError("sealed secret does not open with this key") from None
