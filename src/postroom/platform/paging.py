"""Paging of list endpoints: the `limit` parameter and the cursors. Pure: no I/O.

A cursor is opaque to clients and names the last row of the previous page, in one of two shapes:

- a keyset cursor, base64 of `<created_at RFC 3339><sep><key>` (Notifuse's shape): contacts.list
  (sep "~", key: the email) and timeline.list (sep "|", key: the entry id);
- a key cursor, URL-safe base64 of the key alone: contactLists.getContactsByList (the email).

Any defect of a cursor is 400 `invalid cursor encoding`; a bad limit names its range. A refusal
is raised as error(message), a 400 RuleError by default (a caller may pass its own subclass).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import re
from typing import Callable

from postroom.platform import times
from postroom.platform.errors import RuleError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
CURSOR_ERROR = "invalid cursor encoding"

_INTEGER = re.compile(r"[+-]?[0-9]{1,9}")

Error = Callable[[str], Exception]


def parse_limit(raw: str | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT,
                error: Error = RuleError) -> int:
    """`limit`: absent -> default; a whole number in 1..maximum; anything else is a 400."""
    if raw is None:
        return default
    s = raw.strip()
    if not _INTEGER.fullmatch(s) or not 1 <= int(s) <= maximum:
        raise error(f"limit must be between 1 and {maximum}")
    return int(s)


def parse_offset(raw: str | None, error: Error = RuleError) -> int:
    """`offset`: absent -> 0; ASCII digits only (int() would also take "1_0" and other scripts'
    digits); anything else is a 400."""
    if raw is None:
        return 0
    s = raw.strip()
    if not (s.isascii() and s.isdigit() and len(s) <= 18):
        raise error("offset must be a non-negative integer")
    return int(s)


_JSON_INT = re.compile(r"-?(0|[1-9][0-9]*)")


def limit_value(raw: str | None, error: Error = RuleError) -> int:
    """The number of a lenient `limit` (0 when absent): a JSON integer, as Notifuse decodes it;
    1.5, 1e2 and digits beyond int64 are `invalid limit value: <v>`."""
    if raw is None:
        return 0
    if len(raw) > 20 or not _JSON_INT.fullmatch(raw) or abs(int(raw)) >= 2 ** 63:
        raise error(f"invalid limit value: {raw}")
    return int(raw)


def lenient_limit(raw: str | None, error: Error = RuleError) -> int:
    """Notifuse's `limit` of messages.list and inboundWebhookEvents.list: limit_value, negative is
    `limit cannot be negative`, 0 or absent is the default, above the maximum is capped (no error)."""
    limit = limit_value(raw, error)
    if limit < 0:
        raise error("limit cannot be negative")
    return DEFAULT_LIMIT if limit == 0 else min(limit, MAX_LIMIT)


def _decode(raw: str, error: Error) -> str:
    """The text of a cursor: standard or URL-safe base64, padded or not; empty, not UTF-8 or
    holding NUL (which PostgreSQL text cannot) is a defect."""
    try:
        text = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise error(CURSOR_ERROR) from None
    if not text or "\x00" in text:
        raise error(CURSOR_ERROR)
    return text


# ---------------------------------------------------------------- key cursors

def encode_key_cursor(key: str) -> str:
    """URL-safe base64 of `key`: nothing in it for a query string to mangle."""
    return base64.urlsafe_b64encode(key.encode()).decode()


def decode_key_cursor(raw: str, error: Error = RuleError) -> str:
    """The key of the last row of the previous page; any defect is `invalid cursor encoding`."""
    return _decode(raw, error)


# ---------------------------------------------------------------- keyset cursors

def encode_cursor(created_at: _dt.datetime, key: str, sep: str = "~") -> str:
    """base64 of `<created_at RFC 3339><sep><key>`.

    Times are microseconds in PostgreSQL and format_time writes every digit it has, so the
    cursor names the last row exactly.
    """
    return base64.b64encode(f"{times.format_time(created_at)}{sep}{key}".encode()).decode("ascii")


def decode_cursor(raw: str, sep: str = "~", error: Error = RuleError) -> tuple[_dt.datetime, str]:
    """(created_at, key) of the last row of the previous page; any defect is `invalid cursor encoding`.

    Standard and URL-safe base64 are both accepted, padded or not; a `+` that arrived as a space
    (an unencoded cursor in a query string) is taken back.
    """
    text = _decode(raw.strip().replace(" ", "+"), error)
    stamp, found, key = text.partition(sep)  # an RFC 3339 time holds neither "~" nor "|"; a key may
    if not found or not key:
        raise error(CURSOR_ERROR)
    try:
        created_at = times.parse_time(stamp)
    except times.TimeFormatError:
        raise error(CURSOR_ERROR) from None
    return created_at, key
