"""Open and click tracking tokens (engagement contract 1.4): minted by the render path, read by
the tracking capability's `/t/` and `/r/`. Pure (os.urandom aside).

    token = base64url-no-padding(0x01 ‖ nonce(12) ‖ AES-256-GCM(K_track, plaintext, ad))
    ad    = 0x01 ‖ "t" (open) or "r" (click)
    open  = "{message_id}\\n{workspace_id}\\n{sent_unix_seconds}"
    click = "{message_id}\\n{workspace_id}\\n{sent_unix_seconds}\\n{link_index}\\n{destination}"

K_track is HKDF-SHA256 of the installation's SECRET_KEY material (Settings.key_bytes), empty
salt, info `postroom tracking v1` (0.3). The workspace id is inside the authenticated plaintext,
so a token names one workspace and only its messages. The kind is the associated data: a click
token does not open as an open token and the other way round. No expiry: links in mail must keep
working; retired secrets stay readable through POSTROOM_PREVIOUS_SECRET_KEYS.
"""

from __future__ import annotations

import base64
import functools
import os
import re
from dataclasses import dataclass
from typing import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

OPEN, CLICK = "t", "r"  # the kind, also the path segment: <endpoint>/t/<token>, <endpoint>/r/<token>
VERSION = b"\x01"
INFO = b"postroom tracking v1"
NONCE = 12
TAG = 16
MAX_TOKEN = 4096  # characters; a longer token is invalid
FIELDS = {OPEN: 3, CLICK: 5}
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")


@functools.lru_cache(maxsize=16)
def _aead(key_bytes: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(key_bytes))


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def from_b64url(token: str) -> bytes | None:
    """The bytes of a canonical base64url-no-padding string, else None (a changed character that
    only touches the unused low bits of the last one is refused too: one token, one spelling)."""
    if not _TOKEN_RE.fullmatch(token) or len(token) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return raw if b64url(raw) == token else None


def mint(key_bytes: bytes, kind: str, fields: Iterable[str]) -> str:
    nonce = os.urandom(NONCE)
    sealed = _aead(key_bytes).encrypt(nonce, "\n".join(fields).encode("utf-8"), VERSION + kind.encode())
    return b64url(VERSION + nonce + sealed)


def decrypt(keys: Iterable[bytes], kind: str, token: str) -> str | None:
    """The plaintext of a token of `kind` under the first of `keys` it opens with, else None
    (empty, too long, not base64url, another version or kind, changed, truncated, foreign)."""
    if not token or len(token) > MAX_TOKEN:
        return None
    raw = from_b64url(token)
    if raw is None or len(raw) < 1 + NONCE + TAG or raw[:1] != VERSION:
        return None
    for key in keys:
        try:
            plain = _aead(key).decrypt(raw[1:1 + NONCE], raw[1 + NONCE:], VERSION + kind.encode())
        except InvalidTag:
            continue
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:  # authenticated, so ours; never minted like this
            return None
    return None


def split(kind: str, plaintext: str) -> list[str] | None:
    """The fields of a plaintext of `kind`, or None when it has the wrong number of them. The
    destination is last, so a newline inside it stays its own."""
    parts = plaintext.split("\n", FIELDS[kind] - 1)
    return parts if len(parts) == FIELDS[kind] else None


@dataclass(frozen=True)
class Tracker:
    """One message's tracking URLs: what the render path calls for the pixel and each link."""

    key_bytes: bytes
    endpoint: str  # the workspace's endpoint E, no trailing "/"
    message_id: str
    workspace_id: str
    sent_at: int  # unix seconds at render: the send time the too-early rule measures from

    def click_url(self, destination: str, index: int) -> str:
        """`E/r/<token>` for the link at `index` (0-based among rewritten links) to `destination`."""
        token = mint(self.key_bytes, CLICK, (self.message_id, self.workspace_id, str(self.sent_at), str(index),
                                             destination))
        return f"{self.endpoint}/{CLICK}/{token}"

    def open_url(self) -> str:
        """`E/t/<token>`: the pixel's source and the template variable `tracking_opens_url`."""
        return f"{self.endpoint}/{OPEN}/{self.open_token}"

    @functools.cached_property
    def open_token(self) -> str:
        return mint(self.key_bytes, OPEN, (self.message_id, self.workspace_id, str(self.sent_at)))


def signed_tracking(key_bytes: bytes, endpoint: str, message_id: str, workspace_id: str, sent_at: int) -> Tracker:
    """The one way a sender gets tracking URLs (transactional sends, test sends, compile
    previews, broadcasts): pass `tracker.click_url` and `tracker.open_url` to render Options and
    the tracker to the template data (Sending)."""
    return Tracker(key_bytes, endpoint.rstrip("/"), message_id, workspace_id, sent_at)
