"""Contact rules: parse, validate, normalise, merge, diff and the wire form. Pure: no I/O.

One table (`_SPECS`) names every field with its kind and limit; everything else is derived
from it. Error strings are the wire contract's (docs/contacts-contract.md), each raised as a
ContactError whose `.message` is the full user-facing text.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

import email_validator as _ev
import msgspec

from postroom.platform import fields, times
from postroom.platform.errors import RuleError

# ---------------------------------------------------------------- the field table

_STRING, _TIMEZONE, _NUMBER, _INTEGER, _DATETIME, _JSON, _STAMP = (
    "string", "timezone", "number", "integer", "datetime", "json", "stamp")

EMAIL_MAX = 255
ORDERS_COUNT_MAX = 2**63 - 1  # the column is bigint
# msgspec (de)serialises nested values recursively; far below Python's recursion limit, a
# custom_json that was accepted can always be encoded again (for the database, for responses).
JSON_MAX_DEPTH = 128


def _n(prefix: str, kind: str, limit: int | None = None) -> list[tuple[str, str, int | None]]:
    return [(f"{prefix}_{i}", kind, limit) for i in range(1, 6)]


# (field, kind, max characters) in output order, email excepted (it has its own checks).
_SPECS: tuple[tuple[str, str, int | None], ...] = (
    ("external_id", _STRING, 255),
    ("timezone", _TIMEZONE, None),  # checked against the IANA list instead of a length
    ("language", _STRING, 50),
    ("first_name", _STRING, 255),
    ("last_name", _STRING, 255),
    ("full_name", _STRING, 255),
    ("phone", _STRING, 50),
    ("address_line_1", _STRING, 255),
    ("address_line_2", _STRING, 255),
    ("country", _STRING, 100),
    ("postcode", _STRING, 20),
    ("state", _STRING, 100),
    ("job_title", _STRING, 255),
    ("lifetime_value", _NUMBER, None),
    ("orders_count", _INTEGER, None),
    ("last_order_at", _DATETIME, None),
    *_n("custom_string", _STRING, 255),
    *_n("custom_number", _NUMBER),
    *_n("custom_datetime", _DATETIME),
    *_n("custom_json", _JSON),
    ("created_at", _STAMP, None),
    ("updated_at", _STAMP, None),
)

FIELDS: tuple[str, ...] = ("email",) + tuple(name for name, _, _ in _SPECS)
DATA_FIELDS: tuple[str, ...] = tuple(f for f in FIELDS if f not in ("email", "created_at", "updated_at"))
_DATA_SET = frozenset(DATA_FIELDS)


def _of(*kinds: str) -> frozenset[str]:
    return frozenset(name for name, kind, _ in _SPECS if kind in kinds)


# All of these are subsets of DATA_FIELDS (email is the key; created_at/updated_at are TIMESTAMP_FIELDS).
STRING_FIELDS: frozenset[str] = _of(_STRING, _TIMEZONE)  # text columns, timezone included
NUMBER_FIELDS: frozenset[str] = _of(_NUMBER)
INTEGER_FIELDS: frozenset[str] = _of(_INTEGER)
DATETIME_FIELDS: frozenset[str] = _of(_DATETIME)
JSON_FIELDS: frozenset[str] = _of(_JSON)
TIMESTAMP_FIELDS: frozenset[str] = _of(_STAMP)
LIMITS: Mapping[str, int] = MappingProxyType(
    {"email": EMAIL_MAX, **{name: limit for name, _, limit in _SPECS if limit}})

# A contact with every field NULL: the "old" side of a creation's diff.
EMPTY: Mapping[str, None] = MappingProxyType(dict.fromkeys(FIELDS))


# ---------------------------------------------------------------- errors and type names

class ContactError(RuleError):
    """A contact the contract rejects (400); `.message` is the whole user-facing string."""


def _err(detail: str) -> ContactError:
    return ContactError("invalid contact: " + detail)


def json_type_name(value) -> str:
    """The JSON type of a decoded value, named as Notifuse (gjson) names it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, str):
        return "String"
    if isinstance(value, (int, float, Decimal)):
        return "Number"
    if isinstance(value, (dict, list, tuple)):
        return "JSON"
    return type(value).__name__


def _type_error(field: str, expected: str, value) -> ContactError:
    return _err(f"invalid type for {field}: expected {expected}, got {json_type_name(value)}")


def _echo(value: str) -> str:
    # Errors repeat the offending value, but never a huge one.
    return value if len(value) <= 100 else value[:100] + "..."


# ---------------------------------------------------------------- strings

def _check_text(field: str, s: str) -> None:
    """PostgreSQL text cannot hold NUL, and UTF-8 cannot hold a lone surrogate."""
    fields.without_nul(s, field, _err)
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise _err(f"{field} contains invalid Unicode") from None


def _parse_string(field: str, value, limit: int | None):
    if not isinstance(value, str):
        raise _type_error(field, "string", value)
    s = value.strip()  # str.strip() trims all Unicode whitespace (U+00A0, U+2003, U+3000, ...)
    _check_text(field, s)
    return s if limit is None else fields.at_most(s, field, limit, _err)


# ---------------------------------------------------------------- timezone

def _load_zone_names() -> dict[str, str]:
    """lower-cased name -> IANA spelling, from the tzdata package's list.

    The packaged list, not zoneinfo.available_timezones(): that one also picks up files of the
    host (e.g. "localtime"), so what is valid would depend on the machine.
    """
    try:
        from importlib.resources import files
        names = files("tzdata").joinpath("zones").read_text("utf-8").split()
    except (ImportError, OSError):  # pragma: no cover - tzdata is a dependency
        import zoneinfo
        names = sorted(zoneinfo.available_timezones() - {"localtime"})
    # "Factory" is tzdata's placeholder for "not configured", not a place.
    return {n.lower(): n for n in names if n != "Factory"}


_ZONES = _load_zone_names()
ZONE_NAMES = tuple(sorted(_ZONES.values()))  # the IANA names a timezone may take, e.g. for a menu


def _parse_timezone(field: str, value, limit):
    s = _parse_string(field, value, None)
    # "" is accepted and stored as "" (the merge rule for strings): Notifuse stores any
    # string here, so clients that send "" for "no timezone" keep working.
    if s == "":
        return s
    # Matched without regard to case, stored in the IANA spelling ("europe/paris" -> "Europe/Paris").
    name = _ZONES.get(s.lower())
    if name is None:
        raise _err(f"invalid timezone: {_echo(s)}")
    return name


# ---------------------------------------------------------------- numbers

def _parse_number(field: str, value, limit):
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _err(f"{field} must be a finite number")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise _err(f"{field} must be a finite number") from None
    raise _type_error(field, "number", value)


def _parse_integer(field: str, value, limit):
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _err(f"{field} must be a finite number")
        if not value.is_integer():  # 5.0 is the integer 5; 1.5 is not an integer
            raise _type_error(field, "integer", value)
        value = int(value)
    elif not isinstance(value, int) or isinstance(value, bool):
        raise _type_error(field, "integer", value)
    if value < 0:
        raise _err(f"{field} must be >= 0")
    if value > ORDERS_COUNT_MAX:
        raise _err(f"{field} must be <= {ORDERS_COUNT_MAX}")
    return value


# ---------------------------------------------------------------- times

UTC = times.UTC
format_time = times.format_time


def _time_error(field: str, value: str, reason: str) -> ContactError:
    return _err(f'invalid time format for {field}: parsing time "{_echo(value)}": {reason}')


def parse_time(value: str, field: str) -> _dt.datetime:
    """An RFC 3339 timestamp (offsets allowed) as an aware datetime in UTC (platform.times);
    the error names the field."""
    try:
        return times.parse_time(value)
    except times.TimeFormatError as exc:
        raise _time_error(field, value.strip(), exc.reason) from None


def _parse_datetime(field: str, value, limit):
    if not isinstance(value, str):
        raise _type_error(field, "string", value)
    return parse_time(value, field)


# ---------------------------------------------------------------- custom JSON

def _parse_json(field: str, value, limit):
    if not isinstance(value, (dict, list)):
        raise _err(f"invalid JSON value for {field}, got {json_type_name(value)}")
    # Walk it all (keys and values, any depth) without recursion: jsonb refuses what text refuses.
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > JSON_MAX_DEPTH:
            raise _err(f"{field} is nested more than {JSON_MAX_DEPTH} levels deep")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            if isinstance(k, str):
                _check_text(field, k)
            if isinstance(v, str):
                _check_text(field, v)
            elif isinstance(v, (dict, list)):
                stack.append((v, depth + 1))
            elif isinstance(v, float) and not math.isfinite(v):
                raise _err(f"{field} contains a non-finite number")
    return value


# ---------------------------------------------------------------- email

normalize_email = fields.normalize_email  # the stored form and the lookup key


# A common-case address that email_validator is certain to accept (checked by a test):
# dot-atom local part, then at least two hostname labels, the last ending with a letter.
_FAST_EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z0-9][a-z0-9-]{0,61})?[a-z]")
# Names under a special-use domain (shop.test, b.local) are valid addresses, as they are in
# Notifuse: people test with them, and refusing what cannot be delivered belongs to sending.
# email_validator refuses them in every mode, so the slow path checks such a domain's syntax
# under an ordinary top-level name instead. A bare special-use name (localhost) has one label,
# which stays refused like any single-label domain.
_SPECIAL_SUFFIXES = tuple("." + d for d in _ev.SPECIAL_USE_DOMAIN_NAMES)


def _email_format_ok(email: str) -> bool:
    local, _, domain = email.rpartition("@")
    if _FAST_EMAIL.fullmatch(email) and len(domain) <= 253 and "--" not in domain:
        return True
    checked = email
    if domain.endswith(_SPECIAL_SUFFIXES) and len(domain) <= 253:
        checked = f"{local}@{domain}.com"
    try:
        _ev.validate_email(
            checked, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=False,
            allow_domain_literal=False, allow_display_name=False, allow_empty_local=False,
            strict=False, test_environment=False, globally_deliverable=True)
    except _ev.EmailNotValidError as exc:
        # The whole-address length (254 octets) is email_validator's last syntax check; our own
        # limit (255 characters) answers for length, so a failure on that alone is a good format.
        msg = str(exc)
        return msg.startswith("The email address is too long") and "@-sign" not in msg
    return True


def validate_email(value) -> str:
    """Checks an incoming email in the contract's order and returns it normalised."""
    if value is None:
        raise _err("email is required")
    if not isinstance(value, str):
        raise _type_error("email", "string", value)
    email = normalize_email(value)
    if not email:
        raise _err("email is required")
    _check_text("email", email)
    if not _email_format_ok(email):
        raise _err("invalid email format")
    return fields.at_most(email, "email", EMAIL_MAX, _err)


# ---------------------------------------------------------------- parsing a contact

_PARSERS = {_STRING: _parse_string, _TIMEZONE: _parse_timezone, _NUMBER: _parse_number,
            _INTEGER: _parse_integer, _DATETIME: _parse_datetime, _JSON: _parse_json,
            _STAMP: _parse_datetime}
_PLAN = tuple((name, _PARSERS[kind], limit) for name, kind, limit in _SPECS)
_MISSING = object()


def _parse_slow(raw, keep_nulls: bool) -> dict[str, object]:
    """The rules as written: every field through its parser, in output order."""
    if not isinstance(raw, dict):
        raise _err("email is required")
    out: dict[str, object] = {"email": validate_email(raw.get("email"))}
    get = raw.get
    for name, parser, limit in _PLAN:
        value = get(name, _MISSING)
        if value is _MISSING:
            continue
        if value is None:
            # null clears a data field; a null timestamp means "not given".
            if keep_nulls and name not in TIMESTAMP_FIELDS:
                out[name] = None
            continue
        out[name] = parser(name, value, limit)
    return out


# ---------------------------------------------------------------- the fast path of parsing
#
# The same rules for the common values, checked inline per field kind (an import validates
# 10,000 contacts in a request). A value the inline checks accept is one its parser accepts,
# with the same result; any other value (a wrong type, too long, unusual text, a time of
# another shape) goes to its parser, which returns it or raises the error the rules give.
# Fields are taken in the same order, so the first failure is the same one.
# tests/contacts/test_contacts_fast_paths.py holds the two paths together.

_F_STRING, _F_TIMEZONE, _F_NUMBER, _F_INTEGER, _F_TIME, _F_STAMP, _F_JSON = range(7)
_F_CODE = {_STRING: _F_STRING, _TIMEZONE: _F_TIMEZONE, _NUMBER: _F_NUMBER, _INTEGER: _F_INTEGER,
           _DATETIME: _F_TIME, _STAMP: _F_STAMP, _JSON: _F_JSON}
_FAST_PLAN = tuple((name, _F_CODE[kind], _PARSERS[kind], limit) for name, kind, limit in _SPECS)
# The usual RFC 3339 shape (upper-case T and Z, at most six fraction digits): _TIME_RE matches
# it, and parse_time hands it to datetime.fromisoformat as is.
_USUAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)", re.ASCII)
_fromisoformat = _dt.datetime.fromisoformat


def _usual_time(s: str) -> _dt.datetime | None:
    """parse_time's result for a trimmed value of the usual shape, else None (not an error)."""
    if _USUAL_TIME.fullmatch(s) is None:
        return None
    if s[-1] != "Z" and (int(s[-5:-3]) > 23 or int(s[-2:]) > 59):
        return None
    try:
        t = _fromisoformat(s)
        return t if t.tzinfo is UTC else t.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _usual_email(value) -> str | None:
    """validate_email's result for a common-case address, else None (not an error)."""
    if type(value) is not str:
        return None
    email = value.strip().lower()
    if len(email) > EMAIL_MAX or _FAST_EMAIL.fullmatch(email) is None:
        return None
    domain = email[email.index("@") + 1:]
    if len(domain) > 253 or "--" in domain:
        return None
    return email


def _parse(raw, keep_nulls: bool) -> dict[str, object]:
    if type(raw) is not dict:
        return _parse_slow(raw, keep_nulls)
    get = raw.get
    email = _usual_email(get("email"))
    out: dict[str, object] = {"email": validate_email(get("email")) if email is None else email}
    for name, code, parser, limit in _FAST_PLAN:
        value = get(name, _MISSING)
        if value is _MISSING:
            continue
        if value is None:
            if keep_nulls and code != _F_STAMP:
                out[name] = None
            continue
        t = type(value)
        if code == _F_STRING:
            if t is str:
                s = value.strip()
                if len(s) <= limit and s.isascii() and "\x00" not in s:
                    out[name] = s
                    continue
        elif code == _F_NUMBER:
            if t is float:
                if value - value == 0.0:  # finite
                    out[name] = value
                    continue
            elif t is int:
                try:
                    out[name] = float(value)
                    continue
                except OverflowError:
                    pass
        elif code == _F_TIME or code == _F_STAMP:
            if t is str:
                parsed = _usual_time(value.strip())
                if parsed is not None:
                    out[name] = parsed
                    continue
        elif code == _F_INTEGER:
            if t is int and 0 <= value <= ORDERS_COUNT_MAX:
                out[name] = value
                continue
        elif code == _F_JSON:
            if (t is dict or t is list) and not value:  # {} or []: nothing inside to check
                out[name] = value
                continue
        elif code == _F_TIMEZONE:
            if t is str:
                s = value.strip()
                zone = _ZONES.get(s.lower()) if s else s
                if zone is not None:
                    out[name] = zone
                    continue
        out[name] = parser(name, value, limit)
    return out


def parse_contact(raw) -> dict[str, object]:
    """One incoming contact, validated field by field in output order (the first failure wins).

    Returns only the known keys present in `raw`, normalised; a null data field stays None
    (meaning "clear it"). Unknown keys are ignored; keys are case-sensitive.
    """
    return _parse(raw, True)


def parse_contact_for_import(raw) -> dict[str, object]:
    """As parse_contact, but a null drops the key: on import, null keeps the stored value."""
    return _parse(raw, False)


# ---------------------------------------------------------------- merge and diff

def merge(existing: Mapping | None, incoming: Mapping, now: _dt.datetime) -> dict[str, object]:
    """The full row after applying `incoming` (from parse_contact) to `existing` (None: create).

    Key absent -> unchanged; None -> cleared; "" -> ""; value -> set. created_at: given ->
    stored, else now on create and unchanged on update. updated_at: given -> stored, else now.
    """
    row = dict(EMPTY) if existing is None else {f: existing.get(f) for f in FIELDS}
    # Only the keys `incoming` has can change a field (an import row names a few, or all 38).
    for f, value in incoming.items():
        if f in _DATA_SET:
            row[f] = value
    if incoming.get("email") is not None:
        row["email"] = incoming["email"]
    created = incoming.get("created_at")
    if created is not None:
        row["created_at"] = created
    elif row["created_at"] is None:  # a create (or a row somehow without one)
        row["created_at"] = now
    updated = incoming.get("updated_at")
    row["updated_at"] = now if updated is None else updated
    return row


def diff(old: Mapping | None, new: Mapping) -> dict[str, dict]:
    """{field: {"old": wire value, "new": wire value}} for each data field whose value changed.

    Values are compared in their wire form: 42 and 42.0 are equal, JSON compares by value
    (key order aside; true is not 1), datetimes by instant.
    """
    old = old or EMPTY
    changes: dict[str, dict] = {}
    for f in DATA_FIELDS:
        a, b = old.get(f), new.get(f)
        if a is b:
            continue
        if f in JSON_FIELDS:
            a, b = _field_wire(f, a), _field_wire(f, b)
            # By encoding: Python's == ignores key order (good) but takes true for 1 (bad).
            if a is not None and b is not None and _json_key(a) == _json_key(b):
                continue
        elif a == b:  # 42 == 42.0; datetimes compare as instants
            continue
        else:
            a, b = _wire(a), _wire(b)  # e.g. Decimal 0.1 vs float 0.1, or a naive UTC datetime
            if a == b:
                continue
        changes[f] = {"old": a, "new": b}
    return changes


def changed(old: Mapping | None, new: Mapping) -> bool:
    return bool(diff(old, new))


_sorted_encode = msgspec.json.Encoder(order="sorted").encode


def _json_key(value) -> bytes:
    return _sorted_encode(value)


# ---------------------------------------------------------------- the wire form

_EXACT = 2.0**53  # below this every whole float is an exact integer


def _number(v: float):
    return int(v) if v.is_integer() and -_EXACT < v < _EXACT else v


def _has_float(value) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        for v in (node.values() if isinstance(node, dict) else node):
            if isinstance(v, float):
                return True
            if isinstance(v, (dict, list)):
                stack.append(v)
    return False


def _wire_json(value):
    """The same JSON value with whole floats as integers (copies only what changes)."""
    if isinstance(value, float):
        return _number(value) if math.isfinite(value) else value
    if not isinstance(value, (dict, list)) or not _has_float(value):
        return value
    # Rebuilt with an explicit stack, so depth is not bounded by the recursion limit.
    root: list = [None]
    stack = [(value, root, 0)]
    while stack:
        node, parent, key = stack.pop()
        if isinstance(node, dict):
            copy = dict(node)
            parent[key] = copy
            stack.extend((v, copy, k) for k, v in node.items() if isinstance(v, (dict, list, float)))
        elif isinstance(node, list):
            copy = list(node)
            parent[key] = copy
            stack.extend((v, copy, i) for i, v in enumerate(node) if isinstance(v, (dict, list, float)))
        else:  # float
            parent[key] = _number(node) if math.isfinite(node) else node
    return root[0]


def _wire(value):
    """One field's value as JSON-ready data."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, int):
        return value
    if isinstance(value, _dt.datetime):
        return format_time(value)
    if isinstance(value, Decimal):
        return _number(float(value))
    return _wire_json(value)


def _field_wire(field: str, value):
    if value is not None and field in JSON_FIELDS and isinstance(value, (str, bytes)):
        value = msgspec.json.decode(value)  # raw JSON text from a driver: a JSON field is never a string
    return _wire(value)


def to_wire(row: Mapping) -> dict[str, object]:
    """A contact as sent: FIELDS order, NULL fields omitted, "" kept, whole numbers without a
    fraction, times as RFC 3339 UTC "Z", custom JSON as data. Other keys of `row` are ignored."""
    out = {}
    get = row.get
    for f, is_json in _WIRE_PLAN:
        v = get(f)
        if v is None:
            continue
        t = type(v)
        if t is int or (t is str and not is_json):  # the common cases, inline
            out[f] = v
        elif t is float:
            out[f] = int(v) if v.is_integer() and -_EXACT < v < _EXACT else v
        elif t is _dt.datetime:
            out[f] = format_time(v)
        elif t is dict or t is list:  # custom JSON as decoded: what _field_wire gives, without its dispatch
            out[f] = _wire_json(v) if v else v
        else:
            out[f] = _field_wire(f, v)
    return out


_WIRE_PLAN = tuple((f, f in JSON_FIELDS) for f in FIELDS)
