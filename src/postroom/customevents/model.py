"""Custom events (segments-contract, Custom events): the request rules, the upsert rule and the wire
forms. Pure: no I/O.

A custom event is the latest known state of one fact of an outside system, keyed by
(event_name, external_id) in a workspace and attached to a contact by its normalised email.

    parse_upsert(body) -> Incoming           the upsert's checks, in the contract's order
    parse_import(body) -> list[Incoming]     the import's checks: every event before any write
    apply(stored, incoming, now) -> Change   what one request does to the stored row
    plan(stored, incomings, now) -> ...      several requests in input order (import)
    to_wire(row), event_data(row)            the event object, and the outbox event's data
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Mapping, Sequence

from postroom.contacts import model as contacts_model
from postroom.platform import jsonenc, times
from postroom.platform.errors import RuleError
from postroom.platform.fields import required_string, without_nul

GOAL_TYPES = ("purchase", "subscription", "lead", "signup", "booking", "trial", "other")
VALUE_REQUIRED = ("purchase", "subscription")   # goal types that need a goal_value
EVENT_NAME = re.compile(r"[a-z0-9_./-]+")      # hyphen allowed, although the message does not say so
EXTERNAL_ID_MAX, EVENT_NAME_MAX, GOAL_NAME_MAX, INTEGRATION_ID_MAX, SOURCE_MAX = 255, 100, 100, 32, 50
GOAL_VALUE_LIMIT = Decimal(10) ** 13            # absolute value below this (numeric(15, 2))
CENT = Decimal("0.01")
IMPORT_MAX = 50
DEFAULT_SOURCE = "api"

REQUEST = "invalid request: "
EVENT = "invalid custom event: "
NOT_FOUND = "Custom event not found"
GET_REQUIRED = "workspace_id, event_name, and external_id are required"
LIST_FILTER_REQUIRED = "either email or event_name is required"
WRITE_DENIED_SUFFIX = " for custom events"      # Notifuse's 403 on writes says what it is for

ENTITY_TYPE = "custom_event"
CREATED, UPDATED, DELETED = "custom_event.created", "custom_event.updated", "custom_event.deleted"

# Output order of the event object; the optional ones are omitted when null.
WIRE_FIELDS = ("external_id", "email", "event_name", "properties", "occurred_at", "source", "integration_id",
               "goal_name", "goal_type", "goal_value", "deleted_at", "created_at", "updated_at")
OPTIONAL = frozenset(("integration_id", "goal_name", "goal_type", "goal_value", "deleted_at"))
# The outbox event's data (nulls present), and the stored columns.
EVENT_FIELDS = ("event_name", "external_id", "email", "properties", "occurred_at", "source", "integration_id",
                "goal_name", "goal_type", "goal_value", "deleted_at", "created_at", "updated_at")
COLUMNS = EVENT_FIELDS
GOAL_FIELDS = ("goal_type", "goal_value", "goal_name")
TIME_FIELDS = ("occurred_at", "deleted_at", "created_at", "updated_at")


class CustomEventError(RuleError):
    """A custom-event request the contract refuses (400); `.message` is the whole string."""


class _Refused(Exception):
    """A refusal of rules 2..11, kept apart from its prefix: upsert sends prefix + detail, import
    `invalid event at index <i>: <detail>`."""

    def __init__(self, prefix: str, detail: str):
        super().__init__(detail)
        self.prefix, self.detail = prefix, detail


@dataclass(frozen=True)
class Incoming:
    """One checked upsert (or import event). Times are aware UTC datetimes; goal_value has two
    decimals. created_at/updated_at are an import's (history), None elsewhere."""

    email: str
    event_name: str
    external_id: str
    properties: dict
    occurred_at: _dt.datetime
    source: str = DEFAULT_SOURCE
    integration_id: str | None = None
    goal_name: str | None = None
    goal_type: str | None = None
    goal_value: Decimal | None = None
    deleted_at: _dt.datetime | None = None
    created_at: _dt.datetime | None = None
    updated_at: _dt.datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.event_name, self.external_id

    @property
    def deletes(self) -> bool:
        return self.deleted_at is not None


# ---------------------------------------------------------------- field checks (rules 2..11)

def _string(raw: Mapping, name: str, prefix: str = REQUEST) -> str | None:
    """An optional string field: absent or null -> None; another type or a NUL is refused."""
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Refused(prefix, f"{name} must be a string")
    if "\x00" in value:
        raise _Refused(prefix, f"{name} contains a NUL character")
    return value


def _email(value) -> str:
    if value is None or value == "":
        raise _Refused(REQUEST, "email is required")
    try:
        return contacts_model.validate_email(value)   # one email rule: trimmed, lower-cased, checked
    except contacts_model.ContactError as exc:
        raise _Refused(REQUEST, exc.message.removeprefix("invalid contact: ")) from None


def _time(raw: Mapping, name: str) -> _dt.datetime | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Refused(REQUEST, f"{name} must be an RFC 3339 timestamp")
    try:
        return times.parse_time(value)
    except times.TimeFormatError:
        raise _Refused(REQUEST, f"{name} must be an RFC 3339 timestamp") from None


def money(value) -> Decimal:
    """A goal_value as stored: two decimals, rounded half away from zero (9.999 -> 10.00,
    -0.005 -> -0.01). A float is read by its shortest decimal form, the digits the client wrote."""
    exact = Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))
    return exact.quantize(CENT, rounding=ROUND_HALF_UP)


def _goal_value(raw: Mapping) -> Decimal | None:
    value = raw.get("goal_value")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused(REQUEST, "goal_value must be a number")
    try:
        stored = money(value)
    except (ArithmeticError, ValueError, OverflowError):
        raise _Refused(REQUEST, "goal_value out of range") from None
    if abs(stored) >= GOAL_VALUE_LIMIT:
        raise _Refused(REQUEST, "goal_value out of range")
    return stored + 0  # -0.00 is 0.00


def _properties(raw: Mapping) -> dict:
    value = raw.get("properties")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Refused(REQUEST, "properties must be an object")
    problem = jsonenc.storage_problem(value)
    if problem:
        raise _Refused(REQUEST, f"properties {problem}")
    return value


def _check(raw: Mapping, now: _dt.datetime, history: bool) -> Incoming:
    """Rules 2..11 of the upsert table on one event, first failure wins. `history`: an import
    event, which may also carry source, created_at and updated_at."""
    email = _email(raw.get("email"))
    event_name = raw.get("event_name")
    if event_name is None or event_name == "":
        raise _Refused(REQUEST, "event_name is required")
    if not isinstance(event_name, str):
        raise _Refused(REQUEST, "event_name must be a string")
    external_id = raw.get("external_id")
    if external_id is None or external_id == "":
        raise _Refused(REQUEST, "external_id is required")
    external_id = _string(raw, "external_id")
    if len(external_id) > EXTERNAL_ID_MAX:
        raise _Refused(REQUEST, f"external_id must be {EXTERNAL_ID_MAX} characters or less")
    goal_type = raw.get("goal_type")
    if goal_type is not None and goal_type not in GOAL_TYPES:
        raise _Refused(REQUEST, f"goal_type must be one of: [{' '.join(GOAL_TYPES)}]")
    if goal_type in VALUE_REQUIRED and raw.get("goal_value") is None:
        raise _Refused(REQUEST, f"goal_value is required for goal_type '{goal_type}'")
    goal_name = _string(raw, "goal_name")
    if goal_name is not None and len(goal_name) > GOAL_NAME_MAX:
        raise _Refused(REQUEST, f"goal_name must be {GOAL_NAME_MAX} characters or less")
    goal_value = _goal_value(raw)
    integration_id = _string(raw, "integration_id")
    if integration_id is not None and len(integration_id) > INTEGRATION_ID_MAX:
        raise _Refused(REQUEST, f"integration_id must be {INTEGRATION_ID_MAX} characters or less")
    properties = _properties(raw)
    occurred_at, deleted_at = _time(raw, "occurred_at"), _time(raw, "deleted_at")
    source, created_at, updated_at = DEFAULT_SOURCE, None, None
    if history:
        source = _string(raw, "source") or DEFAULT_SOURCE
        if len(source) > SOURCE_MAX:
            raise _Refused(REQUEST, f"source must be {SOURCE_MAX} characters or less")
        created_at, updated_at = _time(raw, "created_at"), _time(raw, "updated_at")
    if len(event_name) > EVENT_NAME_MAX:
        raise _Refused(EVENT, f"event_name must be {EVENT_NAME_MAX} characters or less")
    if not EVENT_NAME.fullmatch(event_name):
        raise _Refused(EVENT, "event_name must contain only lowercase letters, numbers, underscores, dots, "
                              "and slashes")
    return Incoming(email=email, event_name=event_name, external_id=external_id, properties=properties,
                    occurred_at=occurred_at or now, source=source, integration_id=integration_id,
                    goal_name=goal_name, goal_type=goal_type, goal_value=goal_value, deleted_at=deleted_at,
                    created_at=created_at, updated_at=updated_at)


def _workspace(body: Mapping) -> str:
    return without_nul(required_string(body.get("workspace_id"), "workspace_id", CustomEventError),
                       "workspace_id", CustomEventError)


def parse_upsert(body: Mapping, now: _dt.datetime) -> Incoming:
    """customEvents.upsert / .create: rule 1 (workspace_id), then rules 2..11 (`now` is the
    occurred_at of a request without one)."""
    _workspace(body)
    try:
        return _check(body, now, history=False)
    except _Refused as exc:
        raise CustomEventError(exc.prefix + exc.detail) from None


def parse_import(body: Mapping, now: _dt.datetime) -> list[Incoming]:
    """customEvents.import: workspace_id, the array and its cap, every event's external_id, then
    every event's rules 2..11; nothing is written unless all pass."""
    _workspace(body)
    events = body.get("events")
    if events is None or events == []:
        raise CustomEventError(REQUEST + "events array cannot be empty")
    if not isinstance(events, list):
        raise CustomEventError(REQUEST + "events must be an array")
    if len(events) > IMPORT_MAX:
        raise CustomEventError(REQUEST + f"cannot import more than {IMPORT_MAX} events at once")
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise CustomEventError(f"invalid event at index {i}: event must be an object")
        if event.get("external_id") is None or event.get("external_id") == "":
            raise CustomEventError(f"event at index {i}: external_id is required")
    out = []
    for i, event in enumerate(events):
        try:
            out.append(_check(event, now, history=True))
        except _Refused as exc:
            raise CustomEventError(f"invalid event at index {i}: {exc.detail}") from None
    return out


# ---------------------------------------------------------------- the upsert rule

@dataclass(frozen=True)
class Change:
    """What one accepted request does: the row after it, the outbox event type, and the timeline
    entry's changes (timeline.model.entry_operation reads insert or update from them).
    `row` is None for a request that changes nothing."""

    row: dict | None
    event_type: str | None = None
    changes: dict | None = None


def _row(req: Incoming, now: _dt.datetime) -> dict:
    return {"event_name": req.event_name, "external_id": req.external_id, "email": req.email,
            "properties": req.properties, "occurred_at": req.occurred_at, "source": req.source,
            "integration_id": req.integration_id, "goal_name": req.goal_name, "goal_type": req.goal_type,
            "goal_value": req.goal_value, "deleted_at": req.deleted_at,
            "created_at": req.created_at or now, "updated_at": req.updated_at or now}


def _replaced(stored: Mapping, req: Incoming, now: _dt.datetime) -> dict:
    """`stored` with the request's email, properties, source, integration_id and occurred_at; each
    goal field replaced only by a value (a null keeps the stored one); live again."""
    row = dict(stored)
    row.update(email=req.email, properties=req.properties, source=req.source, integration_id=req.integration_id,
               occurred_at=req.occurred_at, deleted_at=None, updated_at=req.updated_at or now)
    for f in GOAL_FIELDS:
        if getattr(req, f) is not None:
            row[f] = getattr(req, f)
    return row


def _wire_value(f: str, value):
    if value is None:
        return None
    if f in TIME_FIELDS:
        return times.format_time(value)
    if f == "goal_value":
        return number(value)
    return value


def _old_new(f: str, old, new) -> dict:
    return {"old": _wire_value(f, old), "new": _wire_value(f, new)}


def property_changes(old: Mapping, new: Mapping) -> dict:
    """{key: {"old", "new"}} for each property added, removed or changed (by JSON value: key order
    aside, 1 equals 1.0, true is not 1); an absent side is null."""
    out = {}
    for key in [*old, *(k for k in new if k not in old)]:
        if key in old and key in new and same_json(old[key], new[key]):
            continue
        out[key] = {"old": old.get(key), "new": new.get(key)}
    return out


def same_json(a, b) -> bool:
    """Equal JSON values: objects without regard to key order, numbers by value, booleans apart."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def insert_changes(row: Mapping) -> dict:
    changes = {"event_name": {"new": row["event_name"]}, "external_id": {"new": row["external_id"]}}
    for f in GOAL_FIELDS:
        if row[f] is not None:
            changes[f] = {"new": _wire_value(f, row[f])}
    return changes


def update_changes(old: Mapping, new: Mapping) -> dict:
    changes: dict[str, Any] = {"properties": property_changes(old["properties"], new["properties"]),
                               "occurred_at": _old_new("occurred_at", old["occurred_at"], new["occurred_at"])}
    for f in GOAL_FIELDS:
        if old[f] != new[f]:
            changes[f] = _old_new(f, old[f], new[f])
    return changes


def apply(stored: Mapping | None, req: Incoming, now: _dt.datetime) -> Change:
    """The contract's upsert rule: what `req` does to the stored row (None: there is none)."""
    if stored is None:
        row = _row(req, now)
        return Change(row, DELETED if req.deletes else CREATED, insert_changes(row))
    if stored["deleted_at"] is None:
        if req.deletes:  # only deleted_at moves; everything else is kept
            row = dict(stored, deleted_at=req.deleted_at, updated_at=req.updated_at or now)
            return Change(row, DELETED, {"deleted_at": _old_new("deleted_at", None, req.deleted_at)})
        if req.occurred_at <= stored["occurred_at"]:
            return Change(None)  # an older or equal version: nothing changes
        row = _replaced(stored, req, now)
        return Change(row, UPDATED, update_changes(stored, row))
    if req.deletes:
        return Change(None)  # deleted stays deleted, as it was
    row = _replaced(stored, req, now)
    return Change(row, CREATED, {"deleted_at": _old_new("deleted_at", stored["deleted_at"], None)})


def plan(stored: Mapping[tuple[str, str], Mapping], requests: Sequence[Incoming],
         now: _dt.datetime) -> tuple[dict[tuple[str, str], dict], list[Change]]:
    """Requests applied in input order, two on one key as successive upserts, to the stored rows
    of their keys: (the row at the end of each key some request changed; the accepted changes in
    input order, each with its row as it was right after it)."""
    current: dict[tuple[str, str], dict] = {}
    changes = []
    for req in requests:
        before = current.get(req.key, stored.get(req.key))
        change = apply(before, req, now)
        if change.row is not None:
            current[req.key] = change.row
            changes.append(change)
    return current, changes


# ---------------------------------------------------------------- wire forms

def number(value: Decimal) -> int | float:
    """A stored goal_value as a JSON number: whole amounts without a fraction (10, not 10.00);
    others as the float whose shortest form is the stored decimal (at most 15 significant digits,
    which a double holds exactly in text)."""
    return int(value) if value == value.to_integral_value() else float(value)


def to_wire(row: Mapping) -> dict:
    out = {}
    for f in WIRE_FIELDS:
        value = row[f]
        if value is None and f in OPTIONAL:
            continue
        out[f] = _wire_value(f, value)
    return out


def event_data(row: Mapping) -> dict:
    """The outbox event's data: {"custom_event": {...every field, nulls present}}."""
    return {"custom_event": {f: _wire_value(f, row[f]) for f in EVENT_FIELDS}}


# ---------------------------------------------------------------- reads

@dataclass(frozen=True)
class ListQuery:
    email: str | None
    event_name: str | None
    limit: int
    offset: int


LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT = 50, 100
_DIGITS = re.compile(r"[+-]?[0-9]{1,18}")
OFFSET_MAX = 10**18  # an offset beyond any table: an empty page


def lenient_int(raw: str | None) -> int | None:
    """A whole number, or None for anything unparsable (the list rule reads those as defaults)."""
    if raw is None:
        return None
    s = raw.strip()
    if _DIGITS.fullmatch(s):
        return int(s)
    if re.fullmatch(r"\+?[0-9]+", s, re.ASCII):
        return OFFSET_MAX  # more digits than any count
    return None


def parse_list(email: str | None, event_name: str | None, limit: str | None, offset: str | None) -> ListQuery:
    """customEvents.list: a filter is required; `limit` unparsable or <= 0 means 50, above 100
    means 100; `offset` unparsable or negative means 0."""
    if email is not None:
        email = contacts_model.normalize_email(email) or None
    if email is None and event_name is None:
        raise CustomEventError(LIST_FILTER_REQUIRED)
    n = lenient_int(limit)
    n = LIST_DEFAULT_LIMIT if n is None or n <= 0 else min(n, LIST_MAX_LIMIT)
    skip = lenient_int(offset)
    skip = 0 if skip is None or skip < 0 else min(skip, OFFSET_MAX)
    return ListQuery(email, event_name, n, skip)
