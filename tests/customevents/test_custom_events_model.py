"""The pure rules of custom events (customevents.model): money, the upsert rule over a sequence of
requests, property diffs and the lenient paging of customEvents.list."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from postroom.customevents import model

NOW = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)


def req(**fields) -> model.Incoming:
    body = {"workspace_id": "w", "email": "a@example.com", "event_name": "e", "external_id": "1", **fields}
    return model.parse_upsert(body, NOW)


@pytest.mark.parametrize("value, stored", [(9.999, "10.00"), (0.125, "0.13"), (-0.125, "-0.13"), (2.675, "2.68"),
                                           (1.005, "1.01"), (-1.005, "-1.01"), (7, "7.00"), (0.0049, "0.00")])
def test_money_rounds_half_away_from_zero_on_what_was_written(value, stored):
    assert str(model.money(value)) == stored


def test_number_renders_whole_amounts_without_a_fraction():
    assert model.number(Decimal("10.00")) == 10 and type(model.number(Decimal("10.00"))) is int
    assert model.number(Decimal("9999999999999.99")) == 9999999999999.99
    assert repr(model.number(Decimal("0.10"))) == "0.1"


def test_plan_applies_requests_in_order_per_key():
    t = [f"2024-01-0{d}T00:00:00Z" for d in range(1, 6)]
    requests = [req(occurred_at=t[1], properties={"v": 2}), req(external_id="2", occurred_at=t[0]),
                req(occurred_at=t[0], properties={"v": 1}), req(occurred_at=t[2], properties={"v": 3}),
                req(deleted_at=t[4]), req(deleted_at=t[3])]
    final, changes = model.plan({}, requests, NOW)
    assert [c.event_type for c in changes] == [model.CREATED, model.CREATED, model.UPDATED, model.DELETED]
    assert final[("e", "1")]["properties"] == {"v": 3} and final[("e", "1")]["deleted_at"].day == 5
    assert [c.row["external_id"] for c in changes] == ["1", "2", "1", "1"]
    # each change carries its row as it was right after it
    assert changes[0].row["properties"] == {"v": 2} and changes[2].row["properties"] == {"v": 3}


def test_goal_fields_cannot_be_cleared():
    stored, _ = model.plan({}, [req(goal_type="purchase", goal_value=5, goal_name="n", occurred_at="2024-01-01T00:00:00Z")],
                           NOW)
    final, changes = model.plan(stored, [req(occurred_at="2024-01-02T00:00:00Z")], NOW)
    row = final[("e", "1")]
    assert (row["goal_type"], row["goal_value"], row["goal_name"]) == ("purchase", Decimal("5.00"), "n")
    assert set(changes[0].changes) == {"properties", "occurred_at"}


def test_property_changes_compare_json_values():
    assert model.property_changes({"a": 1, "b": {"x": [1, 2]}, "c": True},
                                  {"a": 1.0, "b": {"x": [1, 2]}, "c": 1, "d": None}) == {
        "c": {"old": True, "new": 1}, "d": {"old": None, "new": None}}
    assert model.property_changes({"o": {"k": 1, "j": 2}}, {"o": {"j": 2, "k": 1}}) == {}


@pytest.mark.parametrize("limit, offset, expected", [
    (None, None, (50, 0)), ("0", "-1", (50, 0)), ("abc", "x", (50, 0)), ("1000", "3", (100, 3)),
    ("+7", "+2", (7, 2)), ("9" * 40, "9" * 40, (100, model.OFFSET_MAX)), ("-5", "1.5", (50, 0))])
def test_list_paging_is_lenient(limit, offset, expected):
    q = model.parse_list("A@Example.com ", None, limit, offset)
    assert (q.limit, q.offset) == expected and q.email == "a@example.com"


def test_list_needs_a_filter():
    with pytest.raises(model.CustomEventError, match="either email or event_name is required"):
        model.parse_list(None, None, None, None)
