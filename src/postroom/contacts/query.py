"""Reading contacts: parsing of the query parameters of contacts.list and friends. Pure: no I/O.

Everything a client can get wrong in a read request is checked here and raised as a
QueryError whose `.message` is the 400 text. The SQL built from a parsed ListQuery lives in
contacts/store.py (`list_contacts`).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from postroom.lists import model as lists_model
from postroom.platform import paging
from postroom.platform.errors import RuleError
from postroom.platform.fields import NUL_IN_PARAM, without_nul
from postroom.platform.params import single_value

# Case-insensitive substring filters of contacts.list, in the order they are applied.
SUBSTRING_FILTERS: tuple[str, ...] = (
    "email", "external_id", "first_name", "last_name", "full_name", "phone", "country", "language")

# Membership statuses a contact_list_status filter may name (the contact_lists CHECK constraint).
# every membership status: the filter's values, and the runs a page of a list's members merges
LIST_STATUSES: tuple[str, ...] = lists_model.STATUSES

MAX_SEGMENTS = 100

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


class QueryError(RuleError):
    """A read request the contract rejects; `.message` is the whole 400 text."""


# ---------------------------------------------------------------- single parameters

def parse_bool(name: str, raw: str | None, default: bool = False) -> bool:
    """`true`/`false`/`1`/`0` (any case); absent -> default; anything else names the parameter."""
    if raw is None:
        return default
    s = raw.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise QueryError(f"invalid {name}: must be true, false, 1 or 0")


def like_pattern(value: str) -> str:
    """A LIKE pattern matching `value` anywhere, with `\\`, `%` and `_` in it matching themselves
    (backslash is LIKE's default escape character)."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# ---------------------------------------------------------------- cursors

def encode_cursor(created_at: _dt.datetime, email: str) -> str:
    """contacts.list's cursor: the created_at and email of the page's last contact, in
    platform.paging's keyset shape with "~"."""
    return paging.encode_cursor(created_at, email)


def decode_cursor(raw: str) -> tuple[_dt.datetime, str]:
    """(created_at, email) of the previous page's last contact; any defect is `invalid cursor encoding`."""
    return paging.decode_cursor(raw, error=QueryError)


# ---------------------------------------------------------------- contacts.list

@dataclass(frozen=True)
class ListQuery:
    """A parsed contacts.list request."""

    substrings: tuple[tuple[str, str], ...] = ()   # (field, value) for each non-empty filter
    list_id: str | None = None
    list_status: str | None = None
    segments: tuple[str, ...] = ()
    with_contact_lists: bool = False
    limit: int = paging.DEFAULT_LIMIT
    after: tuple[_dt.datetime, str] | None = None  # decoded cursor

    @property
    def filtered(self) -> bool:
        return bool(self.substrings or self.list_id or self.list_status or self.segments)


def _one(items: list[tuple[str, str]], name: str) -> str | None:
    """The value of a single-valued parameter, by the rule of every endpoint
    (postroom.platform.params.query_param): empty counts as absent, given more than once or with
    a NUL character is an error."""
    return single_value(name, [value for key, value in items if key == name], QueryError)


def parse_list_query(items: list[tuple[str, str]]) -> ListQuery:
    """contacts.list parameters, given as (name, value) pairs in request order.

    Checked in this order: the substring filters (NUL), list_id, contact_list_status,
    segments, with_contact_lists, limit, cursor. Unknown parameters are ignored.
    """
    substrings = []
    for name in SUBSTRING_FILTERS:
        value = _one(items, name)
        if value is not None:
            substrings.append((name, value))
    list_id = _one(items, "list_id")
    status = _one(items, "contact_list_status")
    if status is not None:
        status = status.strip().lower()
        if status not in LIST_STATUSES:
            raise QueryError(f"invalid contact_list_status: must be one of {', '.join(LIST_STATUSES)}")
    segments: list[str] = []
    for key, value in items:
        if key in ("segments", "segments[]") and value:
            without_nul(value, "segments", QueryError, NUL_IN_PARAM)
            if value not in segments:
                segments.append(value)
    if len(segments) > MAX_SEGMENTS:
        raise QueryError(f"too many segments: at most {MAX_SEGMENTS}")
    with_lists = parse_bool("with_contact_lists", _one(items, "with_contact_lists"))
    limit = paging.parse_limit(_one(items, "limit"), error=QueryError)
    raw_cursor = _one(items, "cursor")
    after = decode_cursor(raw_cursor) if raw_cursor is not None else None
    return ListQuery(tuple(substrings), list_id, status, tuple(segments), with_lists, limit, after)
