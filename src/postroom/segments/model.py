"""Segment rules: the request checks, the tree DSL (validated in full into typed nodes) and the
wire form of a segment and of a membership. Pure: no I/O.

A tree is checked depth first in document order and the first failure wins; its message is
prefixed by the path of the node at fault (`branch leaf <i>: ` per level, `filter <i>: ` for a
contact filter), as docs/segments-contract.md "Tree validation messages" words it. A JSON type
that is not the DSL's (a string `count_value`, a number in `string_values`) is `Invalid request
body`, like any body that does not decode to the request's shape.

parse_tree returns a `Tree`: the typed nodes the compiler (segments.compiler) turns into SQL, what
the incremental evaluator needs to know which events can move a member (`Tree.depends`), and
whether the tree has relative dates (the daily recompute).
"""

from __future__ import annotations

import datetime as _dt
import re
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from postroom.contacts import model as contacts
from postroom.lists import model as lists_model
from postroom.platform import fields, times
from postroom.platform.errors import RuleError

INVALID_BODY = "Invalid request body"
MAX_DEPTH, MAX_NODES, MAX_VALUES = 10, 200, 1000
MAX_DAYS = 36_600  # in_the_last_days: a century; beyond it an interval could overflow a timestamp
MAX_JSON_PATH = 32
ID = re.compile(r"^[a-z0-9_]+$")
ID_MAX, NAME_MAX, COLOR_MAX, TIMEZONE_MAX = 32, 255, 50, 100
STATUSES = ("building", "active", "deleted")
RECOMPUTE_HOUR = 5  # the daily recompute of relative-date trees: 05:00 in the segment's timezone


class SegmentError(RuleError):
    """A segment request the rules refuse (400 unless said otherwise)."""


class TreeError(SegmentError):
    """A tree refused; `.message` is the path-prefixed reason (without the request's prefix)."""


# ---------------------------------------------------------------- the contact fields

FIELD_TYPES = ("string", "number", "time", "json")
_COLUMN_TYPE = {
    **{f: "string" for f in ("email", *sorted(contacts.STRING_FIELDS))},
    **{f: "number" for f in (*contacts.NUMBER_FIELDS, *contacts.INTEGER_FIELDS)},
    **{f: "time" for f in (*contacts.DATETIME_FIELDS, *contacts.TIMESTAMP_FIELDS)},
    **{f: "json" for f in contacts.JSON_FIELDS},
}
# The columns a filter may name, by name: the SQL takes the column from here, never from the request.
COLUMNS: dict[str, str] = {f: f for f in _COLUMN_TYPE}

_COMPARE = ("equals", "not_equals", "gt", "gte", "lt", "lte")
_TEXT = ("contains", "not_contains", "starts_with", "ends_with")
_SET = ("is_set", "is_not_set")
_DATES = ("in_date_range", "not_in_date_range", "before_date", "after_date", "in_the_last_days")
OPERATORS_BY_TYPE = {
    "string": (*_COMPARE, *_TEXT, *_SET),
    "number": (*_COMPARE, *_SET),
    "time": (*_COMPARE, *_SET, *_DATES),
    "json": (*_COMPARE, *_TEXT, *_SET, "in_array"),
}
OPERATORS = frozenset(op for ops in OPERATORS_BY_TYPE.values() for op in ops)
_ONE_VALUE = frozenset((*_COMPARE, "before_date", "after_date"))
_TWO_VALUES = frozenset(("in_date_range", "not_in_date_range"))

# ---------------------------------------------------------------- the other leaves

SOURCES = {"contacts": "contact", "contact_lists": "contact_list", "contact_timeline": "contact_timeline",
           "custom_events_goals": "custom_events_goal"}
LIST_STATUSES = lists_model.STATUSES
COUNT_OPERATORS = ("at_least", "at_most", "exactly")
TIMEFRAMES = ("anytime", "in_the_last_days", "in_date_range", "before_date", "after_date")
MESSAGE_KINDS = ("open_email", "click_email", "bounce_email", "complain_email", "unsubscribe_email",
                 "insert_message_history")
TIMELINE_FIELDS = {"operation": "string", "entity_type": "string", "entity_id": "string", "created_at": "time"}
GOAL_TYPES = ("purchase", "subscription", "lead", "signup", "booking", "trial", "other")
AGGREGATES = ("sum", "count", "avg", "min", "max")
GOAL_OPERATORS = ("gte", "lte", "eq", "between")
TEMPLATE_ONLY = ("template_id can only be used with email event kinds (open_email, click_email, bounce_email, "
                 "complain_email, unsubscribe_email) or insert_message_history")


# ---------------------------------------------------------------- typed nodes

@dataclass(frozen=True)
class Filter:
    field: str                 # a COLUMNS key (or a TIMELINE_FIELDS key inside a timeline leaf)
    type: str                  # what the value is read as: string, number, time, json
    operator: str
    values: tuple = ()         # str, Decimal or datetime, by type and operator; days as int
    path: tuple[str, ...] | None = None  # json_path on custom_json_N


@dataclass(frozen=True)
class Timeframe:
    operator: str              # one of TIMEFRAMES
    values: tuple = ()         # datetimes, or (days,) for in_the_last_days


@dataclass(frozen=True)
class ContactLeaf:
    filters: tuple[Filter, ...]


@dataclass(frozen=True)
class ListLeaf:
    operator: str              # in / not_in
    list_id: str
    status: str | None


@dataclass(frozen=True)
class TimelineLeaf:
    kind: str
    count_operator: str
    count_value: int
    template_id: str | None
    timeframe: Timeframe
    filters: tuple[Filter, ...]


@dataclass(frozen=True)
class GoalLeaf:
    goal_type: str             # a GOAL_TYPES entry or "*"
    goal_name: str | None
    aggregate: str
    operator: str
    value: Decimal
    value_2: Decimal | None
    timeframe: Timeframe


@dataclass(frozen=True)
class Branch:
    operator: str              # and / or
    children: tuple


@dataclass
class Tree:
    root: object
    relative: bool = False                 # any in_the_last_days: recomputed daily
    depends: set[str] = field(default_factory=set)  # see dependency keys below


# Dependency keys: which outbox events can change whether a contact matches.
#   "contacts"            a contacts leaf (any field)
#   "list:<id>"           a contact_lists leaf on that list
#   "timeline:<kind>"     a contact_timeline leaf on that kind
#   "goal:<type>"         a goal leaf on that goal type ("goal:*" for any)


# ---------------------------------------------------------------- the walk

class _Walk:
    def __init__(self) -> None:
        self.nodes = 0
        self.tree = Tree(None)

    def fail(self, path: str, message: str):
        raise TreeError(f"{path}{message}")

    def node(self, node, path: str, depth: int):
        if depth > MAX_DEPTH:
            self.fail(path, f"tree is too deep (max {MAX_DEPTH} levels)")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.fail(path, f"tree has too many nodes (max {MAX_NODES})")
        if not isinstance(node, dict):
            raise SegmentError(INVALID_BODY)
        kind = _opt_str(node, "kind")
        if not kind:
            self.fail(path, "tree node must have 'kind' field")
        if kind == "branch":
            body = node.get("branch")
            if body is None:
                self.fail(path, "branch node must have 'branch' field")
            return self.branch(_obj(body), path, depth)
        if kind == "leaf":
            body = node.get("leaf")
            if body is None:
                self.fail(path, "leaf node must have 'leaf' field")
            return self.leaf(_obj(body), path)
        self.fail(path, f"invalid tree node kind: {kind} (must be 'branch' or 'leaf')")

    def branch(self, body: dict, path: str, depth: int) -> Branch:
        op = _opt_str(body, "operator") or ""
        if op not in ("and", "or"):
            self.fail(path, f"invalid branch operator: {op} (must be 'and' or 'or')")
        leaves = _opt_list(body, "leaves")
        if not leaves:
            self.fail(path, "branch must have at least one leaf")
        return Branch(op, self.each(leaves, path, "branch leaf", lambda child, at: self.node(child, at, depth + 1)))

    def each(self, items: list, path: str, label: str, visit) -> tuple:
        """visit(item, its path) for each item of a list, `<label> <i> is nil` for a null one."""
        out = []
        for i, item in enumerate(items):
            if item is None:
                self.fail(path, f"{label} {i} is nil")
            out.append(visit(item, f"{path}{label} {i}: "))
        return tuple(out)

    def leaf(self, body: dict, path: str):
        source = _opt_str(body, "source")
        if not source:
            self.fail(path, "leaf must have 'source' field")
        if source not in SOURCES:
            self.fail(path, f"invalid source: {source} (must be 'contacts', 'contact_lists', "
                            "'contact_timeline', or 'custom_events_goals')")
        key = SOURCES[source]
        condition = body.get(key)
        if condition is None:
            self.fail(path, f"leaf with source '{source}' must have '{key}' field")
        condition = _obj(condition)
        if source == "contacts":
            return self.contact(condition, path)
        if source == "contact_lists":
            return self.contact_list(condition, path)
        if source == "contact_timeline":
            return self.timeline(condition, path)
        return self.goal(condition, path)

    # ---- contacts

    def contact(self, cond: dict, path: str) -> ContactLeaf:
        filters = _opt_list(cond, "filters")
        if not filters:
            self.fail(path, "contact condition must have at least one filter")
        out = self.each(filters, path, "filter", lambda f, at: self.contact_filter(_obj(f), at))
        self.tree.depends.add("contacts")
        return ContactLeaf(out)

    def _filter_head(self, f: dict, path: str) -> tuple[str, str, str]:
        name = _opt_str(f, "field_name")
        if not name:
            self.fail(path, "filter must have 'field_name'")
        ftype = _opt_str(f, "field_type")
        if not ftype:
            self.fail(path, "filter must have 'field_type'")
        if ftype not in FIELD_TYPES:
            self.fail(path, f"invalid field_type: {ftype} (must be 'string', 'number', 'time', or 'json')")
        op = _opt_str(f, "operator")
        if not op:
            self.fail(path, "filter must have 'operator'")
        return name, ftype, op

    def contact_filter(self, f: dict, path: str) -> Filter:
        name, ftype, op = self._filter_head(f, path)
        is_json = name in contacts.JSON_FIELDS
        raw_path = _opt_list(f, "json_path")
        json_path = None
        if raw_path:
            if not is_json:
                self.fail(path, "json_path can only be used with custom_json fields "
                                "(custom_json_1 through custom_json_5)")
            json_path = []
            for i, segment in enumerate(raw_path):
                if not isinstance(segment, str):
                    raise SegmentError(INVALID_BODY)
                if segment == "":
                    self.fail(path, f"json_path segment {i} is empty")
                if "\x00" in segment:
                    self.fail(path, f"json_path segment {i} contains a NUL character")
                json_path.append(segment)
            if len(json_path) > MAX_JSON_PATH:
                self.fail(path, f"json_path has too many segments (max {MAX_JSON_PATH})")
            json_path = tuple(json_path)
        if ftype == "json" and not is_json:
            self.fail(path, "field_type 'json' can only be used with custom_json fields")
        if is_json and json_path is None and op not in _SET:
            self.fail(path, "json filter must have 'json_path'")
        values = self._filter_values(f, ftype, op, path)
        # semantic checks
        if name not in COLUMNS:
            self.fail(path, f"invalid field name: {name}")
        if not is_json and ftype != _COLUMN_TYPE[name]:
            self.fail(path, f"field_type {ftype} does not match field {name} (expected {_COLUMN_TYPE[name]})")
        return self._typed(name, ftype, op, values, json_path, path)

    def _filter_values(self, f: dict, ftype: str, op: str, path: str) -> list:
        """The raw values the operator takes (checked for presence and JSON type only)."""
        if op in _SET:
            return []
        if op == "in_array":
            values = _opt_list(f, "string_values")
            if not values:
                self.fail(path, "in_array operator must have 'string_values'")
        elif ftype == "number":
            values = _opt_list(f, "number_values")
            if not values:
                self.fail(path, "number filter must have 'number_values'")
        else:
            values = _opt_list(f, "string_values")
            if not values:
                self.fail(path, f"{ftype} filter must have 'string_values'")
        if len(values) > MAX_VALUES:
            self.fail(path, f"filter has too many values (max {MAX_VALUES})")
        want = (int, float) if ftype == "number" and op != "in_array" else str
        for v in values:
            if isinstance(v, bool) or not isinstance(v, want):
                raise SegmentError(INVALID_BODY)
            if isinstance(v, str) and "\x00" in v:
                self.fail(path, "value contains a NUL character")
        return values

    def _typed(self, name: str, ftype: str, op: str, values: list, json_path, path: str) -> Filter:
        if op not in OPERATORS:
            self.fail(path, f"invalid operator: {op}")
        if op not in OPERATORS_BY_TYPE[ftype]:
            self.fail(path, f"operator {op} is not supported for field_type {ftype}")
        if op in _ONE_VALUE and len(values) != 1:
            self.fail(path, f"{op} requires exactly one value")
        if op in _TWO_VALUES and len(values) != 2:
            self.fail(path, f"{op} requires exactly 2 values (start and end)")
        if op == "in_the_last_days":
            if len(values) != 1:
                self.fail(path, "in_the_last_days requires 1 value (number of days)")
            self.tree.relative = True
            return Filter(name, ftype, op, (self.days(values[0], path),), json_path)
        if ftype == "number":
            typed = tuple(_decimal(v, path, self) for v in values)
        elif ftype == "time":
            typed = tuple(self.time(v, path) for v in values)
            if op in _TWO_VALUES and typed[1] < typed[0]:
                self.fail(path, f"{op} ends before it starts: {values[1]} is before {values[0]}")
        else:
            typed = tuple(values)
        return Filter(name, ftype, op, typed, json_path)

    def days(self, raw: str, path: str) -> int:
        if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS:
            self.fail(path, f"invalid days value: {raw}")
        return int(raw)

    def time(self, raw: str, path: str) -> _dt.datetime:
        try:
            return parse_time_value(raw)
        except ValueError:
            self.fail(path, f"invalid time value: {raw} (expected ISO8601 or YYYY-MM-DD)")

    def timeframe(self, cond: dict, path: str, goal: bool) -> Timeframe:
        op = _opt_str(cond, "timeframe_operator") or "anytime"
        if op not in TIMEFRAMES:
            if goal:
                self.fail(path, f"invalid timeframe_operator: {op} (must be 'anytime', 'in_the_last_days', "
                                "'in_date_range', 'before_date', or 'after_date')")
            self.fail(path, f"invalid timeframe_operator: {op}")
        if op == "anytime":
            return Timeframe(op)
        values = _opt_list(cond, "timeframe_values")
        if not values:
            if goal:
                self.fail(path, f"timeframe_values required for timeframe_operator '{op}'")
            values = []
        for v in values:
            if not isinstance(v, str):
                raise SegmentError(INVALID_BODY)
        if op == "in_the_last_days":
            if len(values) != 1:
                self.fail(path, "in_the_last_days requires 1 value (number of days)")
            self.tree.relative = True
            return Timeframe(op, (self.days(values[0], path),))
        if op == "in_date_range":
            if len(values) != 2:
                self.fail(path, "in_date_range requires 2 values (start and end)")
            start, end = self.time(values[0], path), self.time(values[1], path)
            if end < start:
                self.fail(path, f"in_date_range ends before it starts: {values[1]} is before {values[0]}")
            return Timeframe(op, (start, end))
        if len(values) != 1:
            self.fail(path, f"{op} requires 1 value")
        return Timeframe(op, (self.time(values[0], path),))

    # ---- lists, timeline, goals

    def contact_list(self, cond: dict, path: str) -> ListLeaf:
        op = _opt_str(cond, "operator") or ""
        if op not in ("in", "not_in"):
            self.fail(path, f"invalid contact_list operator: {op} (must be 'in' or 'not_in')")
        list_id = _opt_str(cond, "list_id")
        if not list_id:
            self.fail(path, "contact_list condition must have 'list_id'")
        if "\x00" in list_id:
            self.fail(path, "list_id contains a NUL character")
        status = _opt_str(cond, "status") or None
        if status is not None and status not in LIST_STATUSES:
            self.fail(path, f"invalid contact_list status: {status}")
        self.tree.depends.add(f"list:{list_id}")
        return ListLeaf(op, list_id, status)

    def timeline(self, cond: dict, path: str) -> TimelineLeaf:
        kind = _opt_str(cond, "kind")
        if not kind:
            self.fail(path, "contact_timeline condition must have 'kind'")
        if "\x00" in kind:
            self.fail(path, "kind contains a NUL character")
        count_op = _opt_str(cond, "count_operator") or ""
        if count_op not in COUNT_OPERATORS:
            self.fail(path, f"invalid count_operator: {count_op} (must be 'at_least', 'at_most', or 'exactly')")
        count = cond.get("count_value", 0)
        if count is None:
            count = 0
        if isinstance(count, bool) or not isinstance(count, int):
            raise SegmentError(INVALID_BODY)
        if count < 0:
            self.fail(path, "count_value must be non-negative")
        if count > 2**31 - 1:
            self.fail(path, "count_value is too large")
        template_id = _opt_str(cond, "template_id") or None
        if template_id is not None:
            if kind not in MESSAGE_KINDS:
                self.fail(path, TEMPLATE_ONLY)
            if "\x00" in template_id:
                self.fail(path, "template_id contains a NUL character")
        frame = self.timeframe(cond, path, goal=False)
        filters = self.each(_opt_list(cond, "filters") or [], path, "filter",
                            lambda f, at: self.timeline_filter(_obj(f), at))
        self.tree.depends.add(f"timeline:{kind}")
        return TimelineLeaf(kind, count_op, count, template_id, frame, filters)

    def timeline_filter(self, f: dict, path: str) -> Filter:
        name, ftype, op = self._filter_head(f, path)
        if f.get("json_path"):
            self.fail(path, "json_path can only be used with custom_json fields "
                            "(custom_json_1 through custom_json_5)")
        if ftype == "json":
            self.fail(path, "field_type 'json' can only be used with custom_json fields")
        values = self._filter_values(f, ftype, op, path)
        if name not in TIMELINE_FIELDS:
            self.fail(path, f"invalid timeline field name: {name}")
        if ftype != TIMELINE_FIELDS[name]:
            self.fail(path, f"field_type {ftype} does not match field {name} (expected {TIMELINE_FIELDS[name]})")
        return self._typed(name, ftype, op, values, None, path)

    def goal(self, cond: dict, path: str) -> GoalLeaf:
        goal_type = _opt_str(cond, "goal_type")
        if not goal_type:
            self.fail(path, "custom_events_goal condition must have 'goal_type'")
        if goal_type != "*" and goal_type not in GOAL_TYPES:
            self.fail(path, f"invalid goal_type: {goal_type} (must be one of: purchase, subscription, lead, "
                            "signup, booking, trial, other, or '*')")
        goal_name = _opt_str(cond, "goal_name") or None
        if goal_name is not None and "\x00" in goal_name:
            self.fail(path, "goal_name contains a NUL character")
        aggregate = _opt_str(cond, "aggregate_operator") or ""
        if aggregate not in AGGREGATES:
            self.fail(path, f"invalid aggregate_operator: {aggregate} (must be 'sum', 'count', 'avg', 'min', or 'max')")
        op = _opt_str(cond, "operator") or ""
        if op not in GOAL_OPERATORS:
            self.fail(path, f"invalid operator: {op} (must be 'gte', 'lte', 'eq', or 'between')")
        value = _number(cond.get("value", 0), path, self)
        value_2 = None
        if op == "between":
            if cond.get("value_2") is None:
                self.fail(path, "between operator requires 'value_2'")
            value_2 = _number(cond["value_2"], path, self)
        frame = self.timeframe(cond, path, goal=True)
        self.tree.depends.add(f"goal:{goal_type}")
        return GoalLeaf(goal_type, goal_name, aggregate, op, value, value_2, frame)


def _obj(value) -> dict:
    if not isinstance(value, dict):
        raise SegmentError(INVALID_BODY)
    return value


def _opt_str(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise SegmentError(INVALID_BODY)
    return value


def _opt_list(body: dict, key: str) -> list | None:
    value = body.get(key)
    if value is not None and not isinstance(value, list):
        raise SegmentError(INVALID_BODY)
    return value


def _number(value, path: str, walk: _Walk) -> Decimal:
    if value is None:
        value = 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SegmentError(INVALID_BODY)
    return _decimal(value, path, walk)


def _decimal(value, path: str, walk: _Walk) -> Decimal:
    d = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not d.is_finite() or abs(d) >= Decimal(10) ** 30:
        walk.fail(path, f"number value out of range: {value}")
    return d


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_time_value(raw: str) -> _dt.datetime:
    """A time value of the DSL: RFC 3339 (offsets allowed) or YYYY-MM-DD (00:00 UTC that day)."""
    s = raw.strip()
    if _DATE.fullmatch(s):
        day = _dt.date.fromisoformat(s)  # ValueError for a day that does not exist
        return _dt.datetime(day.year, day.month, day.day, tzinfo=times.UTC)
    try:
        return times.parse_time(s)
    except times.TimeFormatError as exc:
        raise ValueError(exc.reason) from None


def parse_tree(tree) -> Tree:
    """The tree validated in full, as typed nodes; TreeError names the first bad node."""
    walk = _Walk()
    walk.tree.root = walk.node(tree, "", 1)
    return walk.tree


def canonical(tree) -> bytes:
    """The tree as canonical JSON (keys sorted): an update changes the tree when this changes."""
    return msgspec.json.encode(tree, order="sorted")


# ---------------------------------------------------------------- requests

@dataclass(frozen=True)
class SegmentInput:
    id: str
    name: str
    color: str
    timezone: str
    tree: dict
    parsed: Tree


def check_id(value, prefix: str, name: str = "id") -> str:
    fields.required_string(value, f"{prefix}{name}", SegmentError)
    if not ID.match(value):
        raise SegmentError(f"{prefix}{name} must contain only lowercase letters, numbers, and underscores")
    if len(value) > ID_MAX:
        raise SegmentError(f"{prefix}{name} length must be between 1 and {ID_MAX}")
    return value


def _bounded(body: dict, name: str, limit: int, prefix: str) -> str:
    value = body.get(name)
    fields.required_string(value, f"{prefix}{name}", SegmentError)
    fields.without_nul(value, f"{prefix}{name}", SegmentError)
    return fields.at_most(value, f"{prefix}{name}", limit, SegmentError, fields.BETWEEN)


def check_timezone(value: str, prefix: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise SegmentError(f"{prefix}invalid timezone: {value}") from None
    return value


def check_types(body: dict, *names: str) -> None:
    """A field given with a JSON type other than a string (null aside) is `Invalid request body`,
    as a typed decoding of the request would have it."""
    for name in names:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise SegmentError(INVALID_BODY)


def parse_workspace(body: dict) -> str:
    check_types(body, "workspace_id")
    value = body.get("workspace_id")
    if value is None or value == "":
        raise SegmentError("workspace_id is required")
    return value


def parse_tree_field(body: dict, prefix: str) -> tuple[dict, Tree]:
    tree = body.get("tree")
    if tree is None:
        raise SegmentError(f"{prefix}tree is required")
    try:
        return tree, parse_tree(tree)
    except TreeError as exc:
        raise SegmentError(f"{prefix}invalid tree: {exc.message}") from None


def parse_segment(body: dict, verb: str) -> SegmentInput:
    """segments.create / segments.update: every field, in the contract's order."""
    parse_workspace(body)
    check_types(body, "id", "name", "color", "timezone")
    p = f"invalid {verb} segment request: "
    seg_id = check_id(body.get("id"), p)
    name = _bounded(body, "name", NAME_MAX, p)
    color = _bounded(body, "color", COLOR_MAX, p)
    tz = check_timezone(_bounded(body, "timezone", TIMEZONE_MAX, p), p)
    tree, parsed = parse_tree_field(body, p)
    return SegmentInput(seg_id, name, color, tz, tree, parsed)


def preview_limit(raw) -> int:
    """segments.preview `limit`: absent or 0 -> 10; 1..100 as given; anything else -> 20."""
    if isinstance(raw, bool) or (raw is not None and not isinstance(raw, int)):
        raise SegmentError(INVALID_BODY)
    if raw is None or raw == 0:
        return 10
    return raw if 1 <= raw <= 100 else 20


def _int_param(raw: str | None, default: int) -> int | None:
    if raw is None:
        return default
    s = raw.strip()
    return int(s) if re.fullmatch(r"[+-]?[0-9]{1,9}", s) else None


def contacts_limit(raw: str | None) -> int:
    """segments.contacts `limit`: unparsable or <= 0 -> 50; above 100 -> 100."""
    n = _int_param(raw, 50)
    return 50 if n is None or n <= 0 else min(n, 100)


def contacts_offset(raw: str | None) -> int:
    n = _int_param(raw, 0)
    return 0 if n is None or n < 0 else n


def with_count(raw: str | None) -> bool:
    return raw in ("true", "1")


# ---------------------------------------------------------------- recompute times

def next_recompute(timezone: str, now: _dt.datetime) -> _dt.datetime:
    """The next 05:00 in `timezone` strictly after `now`, in UTC."""
    zone = zoneinfo.ZoneInfo(timezone)
    local = now.astimezone(zone)
    at = _dt.datetime.combine(local.date(), _dt.time(RECOMPUTE_HOUR), zone)
    if at <= local:
        at = _dt.datetime.combine(local.date() + _dt.timedelta(days=1), _dt.time(RECOMPUTE_HOUR), zone)
    return at.astimezone(times.UTC)


# ---------------------------------------------------------------- wire forms

def _json_arg(value):
    if isinstance(value, _dt.datetime):
        return times.format_time(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_json_arg(v) for v in value]
    return value


def segment_wire(row, users_count: int) -> dict:
    out = {"id": row["id"], "name": row["name"], "color": row["color"], "tree": row["tree"],
           "timezone": row["timezone"], "version": row["version"], "status": row["status"]}
    if row["generated_sql"]:
        out["generated_sql"] = row["generated_sql"]
    if row["generated_args"]:
        out["generated_args"] = row["generated_args"]
    if row["recompute_after"] is not None:
        out["recompute_after"] = times.format_time(row["recompute_after"])
    out["db_created_at"] = times.format_time(row["created_at"])
    out["db_updated_at"] = times.format_time(row["updated_at"])
    out["users_count"] = users_count
    return out


def json_args(args: list) -> list:
    """A compiled predicate's parameters as JSON values (times as RFC 3339, numbers as numbers)."""
    return [_json_arg(a) for a in args]


# ---------------------------------------------------------------- outbox events -> segments

# email.* events -> the timeline kinds they stand for
_EMAIL_KINDS = {
    "email.sent": ("insert_message_history", "update_message_history"),
    "email.opened": ("open_email",), "email.clicked": ("click_email",), "email.bounced": ("bounce_email",),
    "email.complained": ("complain_email",), "email.unsubscribed": ("unsubscribe_email",),
}
EVERYTHING = "*"


def event_keys(event_type: str, data) -> set[str]:
    """The dependency keys (see Tree.depends) an outbox event can move a member by; EVERYTHING
    for a contact created or deleted; nothing for segment.* (no feedback loop). Every event may
    also be counted by a timeline leaf on its own type."""
    if event_type.startswith("segment."):
        return set()
    if event_type in ("contact.created", "contact.deleted"):
        return {EVERYTHING}
    keys = {f"timeline:{event_type}"}
    data = data if isinstance(data, dict) else {}
    if event_type == "contact.updated":
        keys.add("contacts")
    elif event_type.startswith("list."):
        membership = data.get("contact_list")
        if isinstance(membership, dict) and isinstance(membership.get("list_id"), str):
            keys.add(f"list:{membership['list_id']}")
    elif event_type.startswith("email."):
        keys.update(f"timeline:{k}" for k in _EMAIL_KINDS.get(event_type, ("update_message_history",)))
    elif event_type.startswith("custom_event."):
        ev = data.get("custom_event")
        ev = ev if isinstance(ev, dict) else {}
        keys.add("goal:*")
        if isinstance(ev.get("goal_type"), str):
            keys.add(f"goal:{ev['goal_type']}")
        if isinstance(ev.get("event_name"), str):
            keys.add(f"timeline:custom_event.{ev['event_name']}")
    return keys


def event_email(subject, data) -> str | None:
    """The contact an outbox event is about: its subject (contact, list, message and custom
    events name the contact's email there), else the email in its data."""
    if isinstance(subject, str) and "@" in subject:
        return subject
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, dict) and isinstance(value.get("email"), str):
                return value["email"]
    return None


def plan(events) -> tuple[set[str], dict[str, set[str]]]:
    """A batch of outbox rows (type, subject, data) coalesced per contact: (contacts to re-check
    against every live segment, {dependency key: contacts})."""
    everyone: set[str] = set()
    by_key: dict[str, set[str]] = {}
    for e in events:
        keys = event_keys(e["type"], e["data"])
        email = event_email(e["subject"], e["data"]) if keys else None
        if email is None:
            continue
        if EVERYTHING in keys:
            everyone.add(email)
            continue
        for k in keys:
            by_key.setdefault(k, set()).add(email)
    return everyone, by_key
