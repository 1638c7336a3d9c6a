"""Open and click tracking, the rules (engagement contract 1.4-1.9). Pure: no I/O.

What a `/t/` or `/r/` token says (`read_open`, `read_click`), whether a request may be recorded
before the database is asked (`recordable`: method, bot user agent, the too-early rule), what is
written for a recorded hit (`open_changes`, `click_event_data`), the legacy answers (the
interstitial page, the pixel) and the per-link statistics' parameters and wire shape.

Tokens are minted by the render path (templates.render.tokens, the one format); this module
reads them and also recognises tokens made with Notifuse's public key, which are never recorded
and never redirected.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from postroom.delivery import model as delivery_model
from postroom.delivery.transactional import tracking_enabled
from postroom.platform import times
from postroom.platform.errors import RuleError
from postroom.platform.params import query_param
from postroom.templates.render import tokens

OPEN, CLICK = tokens.OPEN, tokens.CLICK
TOO_EARLY_SECONDS = 7  # scanners fetch within seconds of delivery (1.7 rule 5)

# 1.6: the answers of /r/ (and /visit) to a token or URL it cannot follow
MISSING_TOKEN = "Missing token"
INVALID_TOKEN = "Invalid token"
INVALID_FORMAT = "Invalid token format"
MISSING_URL = "Missing redirect URL"
METHOD_NOT_ALLOWED = "Method not allowed"
METHODS = ("GET", "HEAD")

# 1.7: case-insensitive substrings of a bot's User-Agent (an empty one is a bot too)
BOT_MARKERS = (
    "bot", "crawler", "spider", "scanner", "linkcheck", "security", "headlesschrome", "phantomjs", "selenium",
    "safelinks", "proofpoint", "mimecast", "atp", "barracuda", "forcepoint", "cisco ironport", "symantec",
    "mcafee", "trend micro", "sophos", "fireeye", "emailsecurity", "urldefense", "linkprotect", "urlscan",
    "urlfilter", "emailprotection", "antivirus", "malware", "threatdetection", "securityscanner",
    "python-requests", "curl", "wget", "java", "go-http-client", "postman",
)
_BOT_RE = re.compile("|".join(re.escape(m) for m in BOT_MARKERS), re.I)

# Notifuse's tokens (1.4, for comparison): AES-256-GCM under SHA-256 of a string that ships in
# its source, so anyone can mint them. Recognised only to answer them safely.
_LEGACY = AESGCM(hashlib.sha256(b"nf-tracking-obfuscation-2024").digest())
_LEGACY_RE = re.compile(r"[A-Za-z0-9_-]+")


# ---------------------------------------------------------------- tokens

@dataclass(frozen=True)
class Hit:
    """What a valid Postroom token names."""

    kind: str  # OPEN or CLICK
    message_id: str
    workspace_id: str
    sent_at: int  # unix seconds
    link_index: int | None = None  # clicks
    url: str | None = None  # clicks: the destination, exactly as encoded (UTM included)


@dataclass(frozen=True)
class Legacy:
    """A token made with Notifuse's public key: `url` for a click (may be empty), None for an open."""

    url: str | None


def _integer(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def _hit(kind: str, fields: list[str]) -> Hit | None:
    sent_at = _integer(fields[2])
    if sent_at is None or not fields[0] or not fields[1]:
        return None
    if kind == OPEN:
        return Hit(OPEN, fields[0], fields[1], sent_at)
    index = _integer(fields[3])
    return None if index is None else Hit(CLICK, fields[0], fields[1], sent_at, index, fields[4])


def _legacy_plaintext(token: str) -> str | None:
    """The plaintext of a token made with Notifuse's key (base64url without padding of nonce ‖
    ciphertext ‖ tag, no associated data), else None."""
    if not token or len(token) > tokens.MAX_TOKEN or not _LEGACY_RE.fullmatch(token) or len(token) % 4 == 1:
        return None
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    if len(raw) < tokens.NONCE + tokens.TAG:
        return None
    try:
        return _LEGACY.decrypt(raw[:tokens.NONCE], raw[tokens.NONCE:], None).decode("utf-8")
    except (InvalidTag, UnicodeDecodeError):
        return None


def read_open(keys: Iterable[bytes], token: str) -> Hit | None:
    """The hit an open token names, or None for anything else (invalid, a click token, a legacy
    token): `/t/` serves the pixel either way."""
    plain = tokens.decrypt(keys, OPEN, token)
    fields = tokens.split(OPEN, plain) if plain is not None else None
    return _hit(OPEN, fields) if fields is not None else None


def read_click(keys: Iterable[bytes], token: str) -> Hit | Legacy:
    """The hit a click token names, or Legacy for a Notifuse token; raises RuleError (400) with
    1.6's message for anything else."""
    if not token:
        raise RuleError(MISSING_TOKEN)
    plain = tokens.decrypt(keys, CLICK, token)
    if plain is None:
        legacy = _legacy_plaintext(token)
        if legacy is None:
            raise RuleError(INVALID_TOKEN)
        parts = legacy.split("\n", 3)
        if len(parts) != 4:
            raise RuleError(INVALID_FORMAT)
        if not parts[3]:
            raise RuleError(MISSING_URL)
        return Legacy(parts[3])
    fields = tokens.split(CLICK, plain)
    hit = _hit(CLICK, fields) if fields is not None else None
    if hit is None:
        raise RuleError(INVALID_FORMAT)
    if not hit.url:
        raise RuleError(MISSING_URL)
    return hit


# ---------------------------------------------------------------- whether a request is recorded (1.7)

def is_bot(user_agent: str | None) -> bool:
    return not user_agent or not user_agent.strip() or _BOT_RE.search(user_agent) is not None


def too_early(sent_at: int, now: float) -> bool:
    """Less than 7 s since the send, or a send time in the future (clock skew)."""
    return now - sent_at < TOO_EARLY_SECONDS


def recordable(method: str, hit: Hit | None, user_agent: str | None, now: float) -> bool:
    """Rules 1, 2, 4 and 5 of 1.7, the ones that need no database; rules 3 (the workspace's
    switch, now) and 6 (the message exists in that workspace) are the store's."""
    return method == "GET" and hit is not None and not is_bot(user_agent) and not too_early(hit.sent_at, now)


def workspace_tracks(settings: Mapping | None) -> bool:
    """Rule 3: the workspace exists and its email_tracking_enabled is on now (unset is on)."""
    return settings is not None and tracking_enabled(settings)


# ---------------------------------------------------------------- what is recorded (1.8)

# Timeline kinds: open_/click_ + the channel; segments filter on these exact kinds.
def open_kind(channel: str) -> str:
    return f"open_{channel}"


def click_kind(channel: str) -> str:
    return f"click_{channel}"


def changes(column: str, at: _dt.datetime) -> dict:
    return {column: {"old": None, "new": at}}


def event_data(row: Mapping, at: _dt.datetime, url: str | None = None) -> dict:
    """The email.opened / email.clicked payload: Notifuse's email.* shape, `url` added to clicks."""
    out = delivery_model.event_data(row, at)
    if url is not None:
        out["url"] = url
    return out


# ---------------------------------------------------------------- answers

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pixel(size: int = 825) -> bytes:
    """A 1x1 transparent PNG, padded with a text chunk to `size` bytes: the 67-68 byte pixel is
    what blockers fingerprint (1.6)."""
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0))
    tail = _chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00\x00")) + _chunk(b"IEND", b"")
    keyword = b"Comment\x00"
    filler = size - len(head) - len(tail) - 12 - len(keyword)
    return head + _chunk(b"tEXt", keyword + b"." * max(filler, 0)) + tail


PIXEL = _pixel()
PIXEL_HEADERS = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache", "Expires": "0"}
REDIRECT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_LINKABLE = re.compile(r"https?://", re.I)
_UNSAFE_IN_HEADER = re.compile(r"[^\x21-\x7e]+")


def location(url: str) -> str:
    """The Location of a redirect: the destination as encoded, with any character a header
    cannot carry as is (non-ASCII, spaces, controls) percent-encoded as UTF-8, as browsers do."""
    return _UNSAFE_IN_HEADER.sub(lambda m: quote(m.group(), safe=""), url)


def interstitial(url: str) -> str:
    """The page answered for a legacy token or /visit: the destination shown, never followed
    (it may have been minted by anyone). A link only for http and https."""
    shown = html.escape(url, quote=True)
    target = f'<a href="{shown}" rel="noopener noreferrer nofollow">{shown}</a>' if _LINKABLE.match(url) else shown
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">"
            "<title>Leaving</title></head>\n"
            f"<body><p>You are being taken to {target}</p></body></html>\n")


# ---------------------------------------------------------------- per-link statistics (1.9)

def _required(query, name: str) -> str:
    value = query_param(query, name)
    if value is None:
        raise RuleError(f"{name} is required")
    return value


def parse_link_stats(query) -> str:
    """messages.linkStats: message_id, then workspace_id."""
    message_id = _required(query, "message_id")
    _required(query, "workspace_id")
    return message_id


def parse_broadcast_link_stats(query) -> str:
    """messages.broadcastLinkStats: broadcast_id, then workspace_id."""
    broadcast_id = _required(query, "broadcast_id")
    _required(query, "workspace_id")
    return broadcast_id


def link_wire(row: Mapping) -> dict:
    return {"link_index": row["link_index"], "url": row["url"], "clicks": row["clicks"],
            "first_clicked_at": times.format_time(row["first_clicked_at"]),
            "last_clicked_at": times.format_time(row["last_clicked_at"])}


def broadcast_link_wire(row: Mapping) -> dict:
    return {"link_index": row["link_index"], "url": row["url"], "clicks": row["clicks"],
            "unique_clicks": row["unique_clicks"]}
