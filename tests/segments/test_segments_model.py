"""The tree DSL's validation (segments.model): every message of the contract, with the node's path."""

from __future__ import annotations

import datetime as _dt

import pytest

from postroom.segments import model
from postroom.segments.compiler import compile_tree


def leaf_contact(*filters):
    return {"kind": "leaf", "leaf": {"source": "contacts", "contact": {"filters": list(filters)}}}


def f(field="country", ftype="string", op="equals", **more):
    out = {"field_name": field, "field_type": ftype, "operator": op}
    if "values" not in more and op not in ("is_set", "is_not_set") and "number_values" not in more:
        more.setdefault("string_values", ["FR"])
    out.update(more)
    return out


def branch(op, *children):
    return {"kind": "branch", "branch": {"operator": op, "leaves": list(children)}}


def timeline(**cond):
    return {"kind": "leaf", "leaf": {"source": "contact_timeline", "contact_timeline": {
        "kind": "open_email", "count_operator": "at_least", "count_value": 1, **cond}}}


def goal(**cond):
    return {"kind": "leaf", "leaf": {"source": "custom_events_goals", "custom_events_goal": {
        "goal_type": "purchase", "aggregate_operator": "sum", "operator": "gte", "value": 100,
        "timeframe_operator": "anytime", **cond}}}


def clist(**cond):
    return {"kind": "leaf", "leaf": {"source": "contact_lists", "contact_list": {
        "operator": "in", "list_id": "news", **cond}}}


def error(tree) -> str:
    with pytest.raises(model.SegmentError) as exc:
        model.parse_tree(tree)
    return exc.value.message


CASES = [
    ({}, "tree node must have 'kind' field"),
    ({"kind": "twig"}, "invalid tree node kind: twig (must be 'branch' or 'leaf')"),
    ({"kind": "branch"}, "branch node must have 'branch' field"),
    ({"kind": "leaf"}, "leaf node must have 'leaf' field"),
    (branch("xor", leaf_contact(f())), "invalid branch operator: xor (must be 'and' or 'or')"),
    (branch("and"), "branch must have at least one leaf"),
    (branch("and", leaf_contact(f()), None), "branch leaf 1 is nil"),
    ({"kind": "leaf", "leaf": {}}, "leaf must have 'source' field"),
    ({"kind": "leaf", "leaf": {"source": "orders"}},
     "invalid source: orders (must be 'contacts', 'contact_lists', 'contact_timeline', or 'custom_events_goals')"),
    ({"kind": "leaf", "leaf": {"source": "contact_lists"}}, "leaf with source 'contact_lists' must have 'contact_list' field"),
    (leaf_contact(), "contact condition must have at least one filter"),
    (leaf_contact(None), "filter 0 is nil"),
    (leaf_contact({"field_type": "string"}), "filter 0: filter must have 'field_name'"),
    (leaf_contact({"field_name": "country"}), "filter 0: filter must have 'field_type'"),
    (leaf_contact(f(ftype="bool")), "filter 0: invalid field_type: bool (must be 'string', 'number', 'time', or 'json')"),
    (leaf_contact({"field_name": "country", "field_type": "string"}), "filter 0: filter must have 'operator'"),
    (leaf_contact(f(json_path=["a"])),
     "filter 0: json_path can only be used with custom_json fields (custom_json_1 through custom_json_5)"),
    (leaf_contact(f("custom_json_1", json_path=["a", ""])), "filter 0: json_path segment 1 is empty"),
    (leaf_contact(f(ftype="json")), "filter 0: field_type 'json' can only be used with custom_json fields"),
    (leaf_contact(f("custom_json_1", ftype="json")), "filter 0: json filter must have 'json_path'"),
    (leaf_contact(f("custom_json_1", "json", "in_array", json_path=["t"], string_values=[])),
     "filter 0: in_array operator must have 'string_values'"),
    (leaf_contact(f(string_values=None)), "filter 0: string filter must have 'string_values'"),
    (leaf_contact(f("custom_number_1", "number")), "filter 0: number filter must have 'number_values'"),
    (leaf_contact(f("shoe_size")), "filter 0: invalid field name: shoe_size"),
    (leaf_contact(f(op="resembles")), "filter 0: invalid operator: resembles"),
    (leaf_contact(f("custom_number_1", "number", "contains", number_values=[1])),
     "filter 0: operator contains is not supported for field_type number"),
    (leaf_contact(f("first_name", "number", number_values=[1])),
     "filter 0: field_type number does not match field first_name (expected string)"),
    (leaf_contact(f(string_values=["a", "b"])), "filter 0: equals requires exactly one value"),
    (leaf_contact(f("created_at", "time", "in_date_range", string_values=["2024-01-01"])),
     "filter 0: in_date_range requires exactly 2 values (start and end)"),
    (leaf_contact(f("created_at", "time", "before_date", string_values=["yesterday"])),
     "filter 0: invalid time value: yesterday (expected ISO8601 or YYYY-MM-DD)"),
    (leaf_contact(f("created_at", "time", "in_the_last_days", string_values=["7", "8"])),
     "filter 0: in_the_last_days requires 1 value (number of days)"),
    (leaf_contact(f("created_at", "time", "in_the_last_days", string_values=["0"])), "filter 0: invalid days value: 0"),
    (leaf_contact(f("created_at", "time", "in_the_last_days", string_values=["7x"])), "filter 0: invalid days value: 7x"),
    (leaf_contact(f("created_at", "time", "in_date_range", string_values=["2024-02-01", "2024-01-01"])),
     "filter 0: in_date_range ends before it starts: 2024-01-01 is before 2024-02-01"),
    (leaf_contact(f(string_values=["x"] * 1001, op="contains")), "filter 0: filter has too many values (max 1000)"),
    (clist(operator="within"), "invalid contact_list operator: within (must be 'in' or 'not_in')"),
    (clist(list_id=""), "contact_list condition must have 'list_id'"),
    (clist(status="gone"), "invalid contact_list status: gone"),
    (timeline(kind=""), "contact_timeline condition must have 'kind'"),
    (timeline(count_operator="more"), "invalid count_operator: more (must be 'at_least', 'at_most', or 'exactly')"),
    (timeline(count_value=-1), "count_value must be non-negative"),
    (timeline(kind="contact.updated", template_id="t1"), model.TEMPLATE_ONLY),
    (timeline(timeframe_operator="soon"), "invalid timeframe_operator: soon"),
    (timeline(timeframe_operator="in_date_range", timeframe_values=["2024-01-01"]),
     "in_date_range requires 2 values (start and end)"),
    (timeline(timeframe_operator="in_date_range", timeframe_values=["2024-03-01", "2024-01-01"]),
     "in_date_range ends before it starts: 2024-01-01 is before 2024-03-01"),
    (timeline(timeframe_operator="before_date", timeframe_values=[]), "before_date requires 1 value"),
    (timeline(timeframe_operator="after_date", timeframe_values=["a", "b"]), "after_date requires 1 value"),
    (timeline(filters=[f("entity_kind")]), "filter 0: invalid timeline field name: entity_kind"),
    (goal(goal_type=""), "custom_events_goal condition must have 'goal_type'"),
    (goal(goal_type="refund"),
     "invalid goal_type: refund (must be one of: purchase, subscription, lead, signup, booking, trial, other, or '*')"),
    (goal(aggregate_operator="median"),
     "invalid aggregate_operator: median (must be 'sum', 'count', 'avg', 'min', or 'max')"),
    (goal(operator="gt"), "invalid operator: gt (must be 'gte', 'lte', 'eq', or 'between')"),
    (goal(operator="between"), "between operator requires 'value_2'"),
    (goal(timeframe_operator="later"),
     "invalid timeframe_operator: later (must be 'anytime', 'in_the_last_days', 'in_date_range', 'before_date', or 'after_date')"),
    (goal(timeframe_operator="in_the_last_days"), "timeframe_values required for timeframe_operator 'in_the_last_days'"),
    # the path of a nested node
    (branch("and", leaf_contact(f()), leaf_contact({"field_name": "country", "field_type": "string"})),
     "branch leaf 1: filter 0: filter must have 'operator'"),
    (branch("or", leaf_contact(f()), branch("and", clist(), goal(goal_type="x"))),
     "branch leaf 1: branch leaf 1: invalid goal_type: x (must be one of: purchase, subscription, lead, signup, "
     "booking, trial, other, or '*')"),
]


@pytest.mark.parametrize("tree, message", CASES)
def test_tree_messages(tree, message):
    assert error(tree) == message


@pytest.mark.parametrize("tree", [
    leaf_contact(f(string_values=[5])),                       # a number among string_values
    timeline(count_value="2"),
    goal(value="10"),
    {"kind": "leaf", "leaf": "contacts"},
    branch("and", "leaf"),
])
def test_json_types_outside_the_dsl_are_invalid_bodies(tree):
    assert error(tree) == "Invalid request body"


def test_depth_and_node_limits_name_the_node():
    tree = leaf_contact(f())
    for _ in range(10):
        tree = branch("and", tree)
    assert error(tree) == "branch leaf 0: " * 10 + "tree is too deep (max 10 levels)"
    deep = leaf_contact(f())
    for _ in range(9):
        deep = branch("and", deep)
    model.parse_tree(deep)  # ten levels are fine
    wide = branch("or", *[leaf_contact(f()) for _ in range(5000)])
    assert error(wide) == "branch leaf 199: tree has too many nodes (max 200)"


def test_accepted_tree_records_dependencies_and_relative_dates():
    tree = model.parse_tree(branch(
        "and", leaf_contact(f("custom_datetime_1", "time", "in_the_last_days", string_values=["7"])),
        clist(list_id="vip"), timeline(kind="click_email"), goal(goal_type="*")))
    assert tree.relative is True
    assert tree.depends == {"contacts", "list:vip", "timeline:click_email", "goal:*"}
    assert model.parse_tree(leaf_contact(f())).relative is False
    assert model.parse_tree(goal(timeframe_operator="in_the_last_days", timeframe_values=["3"])).relative is True


def test_values_become_parameters_never_sql():
    hostile = "x'); DROP TABLE contacts; --"
    tree = model.parse_tree(branch("or", leaf_contact(f(string_values=[hostile])),
                                   leaf_contact(f("custom_json_1", "string", json_path=[hostile], string_values=["a"])),
                                   clist(list_id=hostile)))
    sql, args = compile_tree(tree, first=3, workspace="$1")
    assert hostile not in sql and "DROP" not in sql
    assert hostile in args and [hostile] in args
    assert "$3::text" in sql and "$2" not in sql  # numbered from the offset given


def test_time_values_and_limits():
    assert model.parse_time_value("2024-01-31") == _dt.datetime(2024, 1, 31, tzinfo=_dt.timezone.utc)
    assert model.parse_time_value("2024-05-15T16:30:00+02:00") == _dt.datetime(2024, 5, 15, 14, 30,
                                                                               tzinfo=_dt.timezone.utc)
    with pytest.raises(ValueError):
        model.parse_time_value("2024-02-30")
    assert model.preview_limit(None) == 10 and model.preview_limit(0) == 10
    assert model.preview_limit(7) == 7 and model.preview_limit(500) == 20 and model.preview_limit(-1) == 20
    assert model.contacts_limit("0") == 50 and model.contacts_limit("x") == 50 and model.contacts_limit("500") == 100
    assert model.contacts_offset("-3") == 0 and model.contacts_offset("40") == 40


def test_next_recompute_is_five_in_the_segment_zone():
    now = _dt.datetime(2024, 3, 1, 12, 0, tzinfo=_dt.timezone.utc)  # 21:00 in Tokyo
    assert model.next_recompute("Asia/Tokyo", now) == _dt.datetime(2024, 3, 1, 20, 0, tzinfo=_dt.timezone.utc)
    early = _dt.datetime(2024, 3, 1, 19, 0, tzinfo=_dt.timezone.utc)  # 04:00 in Tokyo
    assert model.next_recompute("Asia/Tokyo", early) == _dt.datetime(2024, 3, 1, 20, 0, tzinfo=_dt.timezone.utc)
    assert model.next_recompute("UTC", _dt.datetime(2024, 3, 1, 5, 0, tzinfo=_dt.timezone.utc)) == \
        _dt.datetime(2024, 3, 2, 5, 0, tzinfo=_dt.timezone.utc)
