"""RFC 3339 times as every capability reads and writes them: UTC with "Z" on the way out."""

from __future__ import annotations

import datetime as _dt
import re

import msgspec

_encode = msgspec.json.Encoder().encode


class TimeFormatError(ValueError):
    """Not an RFC 3339 date-time; `.reason` says what is wrong (the caller names the field)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


UTC = _dt.timezone.utc
# RFC 3339 date-time (section 5.6); T and Z may be lower-case. ASCII digits only.
_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")
_OFFSETS: dict[tuple[str, str, str], _dt.timezone] = {}


def parse_time(value: str) -> _dt.datetime:
    """An RFC 3339 timestamp (offsets allowed) as an aware datetime in UTC.

    Whitespace around the value is trimmed; a value that is not one raises TimeFormatError.
    More than six fraction digits are rounded to the microsecond (PostgreSQL's precision).
    """
    s = value.strip()
    m = _TIME_RE.fullmatch(s)
    if m is None:
        raise TimeFormatError("expected RFC 3339 date-time such as 2023-05-15T14:30:00Z")
    year, month, day, hour, minute, second, frac, sign, oh, om = m.groups()
    if sign is not None and (int(oh) > 23 or int(om) > 59):  # fromisoformat lets +01:60 pass
        raise TimeFormatError("time zone offset out of range")
    if s[10] == "T" and s[-1] != "z" and (frac is None or len(frac) <= 6):
        # Fast path: the C parser takes exactly this shape; on failure, the checks below say why.
        try:
            t = _dt.datetime.fromisoformat(s)
            return t if t.tzinfo is UTC else t.astimezone(UTC)
        except (ValueError, OverflowError):
            pass
    checks = (("year", int(year), 1, 9999), ("month", int(month), 1, 12), ("hour", int(hour), 0, 23),
              ("minute", int(minute), 0, 59), ("second", int(second), 0, 59))
    for what, n, lo, hi in checks:
        if not lo <= n <= hi:
            raise TimeFormatError(f"{what} out of range")
    tz = UTC
    if sign is not None:
        tz = _OFFSETS.get((sign, oh, om))
        if tz is None:
            delta = _dt.timedelta(hours=int(oh), minutes=int(om))
            tz = _OFFSETS[(sign, oh, om)] = _dt.timezone(-delta if sign == "-" else delta)
    micro, carry = 0, 0
    if frac:
        micro = int(frac[:6].ljust(6, "0"))
        if len(frac) > 6 and frac[6] >= "5":
            micro += 1
            if micro == 1_000_000:
                micro, carry = 0, 1
    try:
        t = _dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz)
        if carry:
            t += _dt.timedelta(seconds=1)
        return t if tz is UTC else t.astimezone(UTC)
    except ValueError:  # every other part was range-checked above
        raise TimeFormatError("day out of range") from None
    except OverflowError:
        raise TimeFormatError("time out of range") from None


def format_time(t: _dt.datetime) -> str:
    """RFC 3339 in UTC with "Z"; the fraction only when there is one, without trailing zeros.

    A naive datetime is taken to be UTC already.
    """
    if t.tzinfo is UTC and type(t) is _dt.datetime:
        # msgspec writes "YYYY-MM-DDTHH:MM:SS" (".ffffff" when there are microseconds) and "Z"
        # for UTC, in C: the same text but for the fraction's trailing zeros, 8x faster.
        s = _encode(t)
        return s[1:-1].decode() if not t.microsecond else s[1:-2].decode().rstrip("0") + "Z"
    if t.tzinfo is None:
        s = t.isoformat()
    else:
        if t.tzinfo is not UTC:
            t = t.astimezone(UTC)
        s = t.isoformat()[:-6]  # without "+00:00"
    # s is "YYYY-MM-DDTHH:MM:SS", or with ".ffffff" when there are microseconds
    return (s.rstrip("0") if t.microsecond else s) + "Z"
