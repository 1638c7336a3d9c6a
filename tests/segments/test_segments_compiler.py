"""Compiled predicates run against PostgreSQL: for each leaf kind and operator, exactly who matches.

Contacts, list memberships, timeline rows, messages and custom events are inserted straight into
their tables; each tree is compiled (segments.compiler) and evaluated over the workspace's contacts.
"""

from __future__ import annotations

import datetime as _dt

import pytest

from postroom.segments import model
from postroom.segments.compiler import compile_tree

UTC = _dt.timezone.utc
NOW = _dt.datetime.now(UTC)


def t(s: str) -> _dt.datetime:
    return model.parse_time_value(s)


def leaf(*filters):
    return {"kind": "leaf", "leaf": {"source": "contacts", "contact": {"filters": list(filters)}}}


def flt(field, ftype, op, values=None, path=None):
    out = {"field_name": field, "field_type": ftype, "operator": op}
    if values is not None:
        out["number_values" if ftype == "number" and op != "in_array" else "string_values"] = values
    if path is not None:
        out["json_path"] = path
    return out


async def contacts(pool, ws, rows: dict[str, dict]):
    for email, fields in rows.items():
        cols = ["workspace_id", "email", "created_at", "updated_at", *fields]
        vals = [ws.id, email, fields.pop("created_at", NOW), NOW, *fields.values()]
        cols = ["workspace_id", "email", "created_at", "updated_at", *fields]
        marks = ", ".join(f"${i}" for i in range(1, len(vals) + 1))
        await pool.execute(f"INSERT INTO contacts ({', '.join(cols)}) VALUES ({marks})", *vals)


async def members(pool, ws, tree) -> set[str]:
    sql, args = compile_tree(model.parse_tree(tree), first=2)
    rows = await pool.fetch(f"SELECT c.email FROM contacts c WHERE c.workspace_id = $1 AND {sql}", ws.id, *args)
    return {r["email"] for r in rows}


# ---------------------------------------------------------------- contact fields

async def test_string_operators(pool, ws):
    await contacts(pool, ws, {
        "fr@x.io": {"country": "FR", "first_name": "Joanna", "phone": "+33100"},
        "lfr@x.io": {"country": "fr", "first_name": "ANNE", "phone": ""},
        "de@x.io": {"country": "DE", "first_name": "Bob", "custom_string_1": "50% off"},
        "none@x.io": {"custom_string_1": "500 off", "first_name": "Eve"},
        "john@x.io": {"first_name": "John", "last_name": "Ajo"},
        "anna@x.io": {"first_name": "Anna", "last_name": "Nad"},
    })
    S = "string"
    assert await members(pool, ws, leaf(flt("country", S, "equals", ["FR"]))) == {"fr@x.io"}
    assert await members(pool, ws, leaf(flt("country", S, "not_equals", ["FR"]))) == {"lfr@x.io", "de@x.io"}
    assert await members(pool, ws, leaf(flt("country", S, "gt", ["DE"]))) == {"fr@x.io", "lfr@x.io"}
    assert await members(pool, ws, leaf(flt("country", S, "lt", ["a"]))) == {"fr@x.io", "de@x.io"}  # code points
    assert await members(pool, ws, leaf(flt("country", S, "gte", ["FR"]))) == {"fr@x.io", "lfr@x.io"}
    assert await members(pool, ws, leaf(flt("country", S, "lte", ["DE"]))) == {"de@x.io"}
    assert await members(pool, ws, leaf(flt("first_name", S, "contains", ["ann"]))) == \
        {"fr@x.io", "lfr@x.io", "anna@x.io"}
    assert await members(pool, ws, leaf(flt("custom_string_1", S, "contains", ["50%"]))) == {"de@x.io"}
    assert await members(pool, ws, leaf(flt("first_name", S, "not_contains", ["a", "e"]))) == {"de@x.io", "john@x.io"}
    assert await members(pool, ws, leaf(flt("first_name", S, "starts_with", ["jo"]))) == {"fr@x.io", "john@x.io"}
    assert await members(pool, ws, leaf(flt("last_name", S, "starts_with", ["jo"]))) == set()
    assert await members(pool, ws, leaf(flt("first_name", S, "ends_with", ["na"]))) == {"fr@x.io", "anna@x.io"}
    assert await members(pool, ws, leaf(flt("phone", S, "is_set"))) == {"fr@x.io", "lfr@x.io"}
    assert len(await members(pool, ws, leaf(flt("phone", S, "is_not_set")))) == 4
    assert await members(pool, ws, leaf(flt("email", S, "ends_with", ["@x.io"]))) == \
        {"fr@x.io", "lfr@x.io", "de@x.io", "none@x.io", "john@x.io", "anna@x.io"}


async def test_number_operators(pool, ws):
    await contacts(pool, ws, {"n9@x.io": {"custom_number_1": 9.0}, "n10@x.io": {"custom_number_1": 10.0},
                              "n11@x.io": {"custom_number_1": 11.0, "orders_count": 3}, "null@x.io": {}})
    N = "number"
    assert await members(pool, ws, leaf(flt("custom_number_1", N, "gt", [10]))) == {"n11@x.io"}
    assert await members(pool, ws, leaf(flt("custom_number_1", N, "gte", [10]))) == {"n10@x.io", "n11@x.io"}
    assert await members(pool, ws, leaf(flt("custom_number_1", N, "lt", [10]))) == {"n9@x.io"}
    assert await members(pool, ws, leaf(flt("custom_number_1", N, "lte", [10]))) == {"n9@x.io", "n10@x.io"}
    assert await members(pool, ws, leaf(flt("custom_number_1", N, "equals", [10]))) == {"n10@x.io"}
    assert await members(pool, ws, leaf(flt("custom_number_1", N, "not_equals", [10]))) == {"n9@x.io", "n11@x.io"}
    assert await members(pool, ws, leaf(flt("custom_number_1", N, "is_not_set"))) == {"null@x.io"}
    assert await members(pool, ws, leaf(flt("orders_count", N, "equals", [3.0]))) == {"n11@x.io"}


async def test_time_operators(pool, ws):
    await contacts(pool, ws, {
        "jan1@x.io": {"custom_datetime_1": t("2024-01-01T00:00:00Z")},
        "jan31@x.io": {"custom_datetime_1": t("2024-01-31T00:00:00Z")},
        "late@x.io": {"custom_datetime_1": t("2024-01-31T00:00:01Z")},
        "feb@x.io": {"custom_datetime_1": t("2024-02-01")},
        "old@x.io": {"custom_datetime_1": t("2023-12-31T23:59:59Z")},
        "null@x.io": {},
    })
    T, rng = "time", ["2024-01-01", "2024-01-31"]
    assert await members(pool, ws, leaf(flt("custom_datetime_1", T, "in_date_range", rng))) == {"jan1@x.io", "jan31@x.io"}
    assert await members(pool, ws, leaf(flt("custom_datetime_1", T, "not_in_date_range", rng))) == \
        {"late@x.io", "feb@x.io", "old@x.io"}
    assert await members(pool, ws, leaf(flt("custom_datetime_1", T, "before_date", ["2024-01-01"]))) == {"old@x.io"}
    assert "jan1@x.io" not in await members(pool, ws, leaf(flt("custom_datetime_1", T, "after_date", ["2024-01-01"])))
    assert await members(pool, ws, leaf(flt("custom_datetime_1", T, "equals", ["2024-01-31T02:00:00+02:00"]))) == \
        {"jan31@x.io"}


async def test_in_the_last_days(pool, ws):
    day = _dt.timedelta(days=1)
    await contacts(pool, ws, {"six@x.io": {"custom_datetime_1": NOW - 6 * day},
                              "tomorrow@x.io": {"custom_datetime_1": NOW + day},
                              "eight@x.io": {"custom_datetime_1": NOW - 8 * day}, "null@x.io": {}})
    assert await members(pool, ws, leaf(flt("custom_datetime_1", "time", "in_the_last_days", ["7"]))) == \
        {"six@x.io", "tomorrow@x.io"}


async def test_json_fields(pool, ws):
    await contacts(pool, ws, {
        "pro@x.io": {"custom_json_1": {"plan": "pro", "score": 7, "tags": ["beta"], "a": {"b": None},
                                       "since": "2024-03-01", "items": [{"sku": "x1"}]}},
        "str@x.io": {"custom_json_1": {"plan": "free", "score": "7", "tags": ["alpha"], "a": {},
                                       "since": "2024-02-30", "meta": {"vip": 1}}},
        "big@x.io": {"custom_json_1": {"score": 1e300, "since": "2024-05-01T10:00:00+02:00", "flag": True}},
        "null@x.io": {},
    })
    J = "custom_json_1"
    assert await members(pool, ws, leaf(flt(J, "string", "equals", ["pro"], ["plan"]))) == {"pro@x.io"}
    assert await members(pool, ws, leaf(flt(J, "json", "equals", ["true"], ["flag"]))) == {"big@x.io"}
    assert await members(pool, ws, leaf(flt(J, "number", "gt", [5], ["score"]))) == {"pro@x.io", "big@x.io"}
    assert await members(pool, ws, leaf(flt(J, "string", "is_set", None, ["a", "b"]))) == {"pro@x.io"}
    assert await members(pool, ws, leaf(flt(J, "string", "is_not_set", None, ["a", "b"]))) == \
        {"str@x.io", "big@x.io", "null@x.io"}
    assert await members(pool, ws, leaf(flt(J, "json", "in_array", ["vip", "beta"], ["tags"]))) == {"pro@x.io"}
    assert await members(pool, ws, leaf(flt(J, "json", "in_array", ["vip"], ["meta"]))) == {"str@x.io"}
    # a day that does not exist is no time; a time with an offset is read in UTC
    assert await members(pool, ws, leaf(flt(J, "time", "after_date", ["2024-01-01"], ["since"]))) == \
        {"pro@x.io", "big@x.io"}
    assert await members(pool, ws, leaf(flt(J, "time", "equals", ["2024-05-01T08:00:00Z"], ["since"]))) == {"big@x.io"}
    # an all-digit path segment is an index into an array
    assert await members(pool, ws, leaf(flt(J, "string", "equals", ["x1"], ["items", "0", "sku"]))) == {"pro@x.io"}
    assert await members(pool, ws, leaf(flt(J, "string", "is_set"))) == {"pro@x.io", "str@x.io", "big@x.io"}
    # SQL in a path is a key like any other: it matches nothing here and runs nothing
    assert await members(pool, ws, leaf(flt(J, "string", "is_set", None, ["plan'); DROP TABLE contacts; --"]))) == set()
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", ws.id) == 4


# ---------------------------------------------------------------- lists

async def test_list_memberships(pool, ws, new_workspace):
    await contacts(pool, ws, {e: {} for e in ("act@x.io", "uns@x.io", "rem@x.io", "none@x.io", "gone@x.io")})
    await pool.execute("INSERT INTO lists (workspace_id, id, name) VALUES ($1, 'news', 'N'), ($1, 'old', 'O')", ws.id)
    await pool.execute("UPDATE lists SET deleted_at = now() WHERE workspace_id = $1 AND id = 'old'", ws.id)
    rows = [("news", "act@x.io", "active", None), ("news", "uns@x.io", "unsubscribed", None),
            ("news", "rem@x.io", "active", NOW), ("old", "gone@x.io", "active", None)]
    for list_id, email, status, deleted in rows:
        await pool.execute("INSERT INTO contact_lists (workspace_id, list_id, email, status, deleted_at, contact_created_at)"
                           " VALUES ($1, $2, $3, $4, $5, now())", ws.id, list_id, email, status, deleted)

    def cl(**c):
        return {"kind": "leaf", "leaf": {"source": "contact_lists", "contact_list": {"list_id": "news", **c}}}

    assert await members(pool, ws, cl(operator="in")) == {"act@x.io", "uns@x.io"}
    assert await members(pool, ws, cl(operator="in", status="active")) == {"act@x.io"}
    assert await members(pool, ws, cl(operator="not_in", status="unsubscribed")) == \
        {"act@x.io", "rem@x.io", "none@x.io", "gone@x.io"}
    assert await members(pool, ws, cl(operator="in", list_id="old")) == set()  # a deleted list
    # a list of another workspace is only an unknown id here: it matches nobody, leaks nothing
    other = await new_workspace()
    await pool.execute("INSERT INTO lists (workspace_id, id, name) VALUES ($1, 'theirs', 'T')", other.id)
    await pool.execute("INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at)"
                       " VALUES ($1, 'theirs', 'act@x.io', 'active', now())", other.id)
    assert await members(pool, ws, cl(operator="in", list_id="theirs")) == set()
    assert len(await members(pool, ws, cl(operator="not_in", list_id="theirs"))) == 5


# ---------------------------------------------------------------- timeline

async def entry(pool, ws, email, kind, entity_id=None, at=None, entity_type="message_history"):
    await pool.execute("INSERT INTO contact_timeline (workspace_id, email, kind, entity_type, entity_id, created_at)"
                       " VALUES ($1, $2, $3, $4, $5, coalesce($6, now()))", ws.id, email, kind, entity_type,
                       entity_id, at)


async def message(pool, ws, msg_id, email, template_id):
    await pool.execute("INSERT INTO message_history (workspace_id, id, contact_email, template_id, template_version)"
                       " VALUES ($1, $2, $3, $4, 1)", ws.id, msg_id, email, template_id)


def tl(kind, op, n, **more):
    return {"kind": "leaf", "leaf": {"source": "contact_timeline", "contact_timeline": {
        "kind": kind, "count_operator": op, "count_value": n, **more}}}


async def test_timeline_counts_templates_and_timeframes(pool, ws):
    await contacts(pool, ws, {e: {} for e in ("two@x.io", "one@x.io", "never@x.io")})
    await message(pool, ws, "m1", "two@x.io", "T")
    await message(pool, ws, "m2", "two@x.io", "U")
    await message(pool, ws, "m3", "one@x.io", "T")
    await entry(pool, ws, "two@x.io", "open_email", "m1", t("2024-01-10"))
    await entry(pool, ws, "two@x.io", "open_email", "m2", NOW - _dt.timedelta(days=2))
    await entry(pool, ws, "one@x.io", "open_email", "m3", t("2024-03-10"))
    for email, msg in (("two@x.io", "m1"), ("two@x.io", "m2"), ("one@x.io", "m3")):
        await entry(pool, ws, email, "insert_message_history", msg)
    await entry(pool, ws, "one@x.io", "click_email", "m3")
    await entry(pool, ws, "two@x.io", "click_email", "m2")
    await entry(pool, ws, "one@x.io", "contact.updated", "one@x.io", entity_type="contact")

    assert await members(pool, ws, tl("open_email", "at_least", 2)) == {"two@x.io"}
    assert await members(pool, ws, tl("insert_message_history", "at_most", 0)) == {"never@x.io"}
    assert await members(pool, ws, tl("insert_message_history", "exactly", 1)) == {"one@x.io"}
    assert await members(pool, ws, tl("click_email", "at_least", 1, template_id="T")) == {"one@x.io"}
    assert await members(pool, ws, tl("open_email", "at_least", 1, timeframe_operator="in_the_last_days",
                                      timeframe_values=["30"])) == {"two@x.io"}
    assert await members(pool, ws, tl("open_email", "at_least", 1, timeframe_operator="in_date_range",
                                      timeframe_values=["2024-03-01", "2024-03-31"])) == {"one@x.io"}
    assert await members(pool, ws, tl("open_email", "at_least", 1, timeframe_operator="before_date",
                                      timeframe_values=["2024-02-01"])) == {"two@x.io"}
    assert await members(pool, ws, tl("open_email", "exactly", 1, timeframe_operator="after_date",
                                      timeframe_values=["2024-02-01T00:00:00Z"])) == {"two@x.io", "one@x.io"}
    # filters on the entry: its operation (from the kind), entity_id, entity_type, created_at
    assert await members(pool, ws, tl("contact.updated", "at_least", 1, filters=[
        flt("operation", "string", "equals", ["update"]), flt("entity_type", "string", "equals", ["contact"])])) == \
        {"one@x.io"}
    assert await members(pool, ws, tl("open_email", "at_least", 1, filters=[
        flt("entity_id", "string", "equals", ["m2"])])) == {"two@x.io"}
    assert await members(pool, ws, tl("open_email", "at_least", 1, filters=[
        flt("created_at", "time", "before_date", ["2024-02-01"])])) == {"two@x.io"}


# ---------------------------------------------------------------- goals

async def event(pool, ws, email, name, ext, goal_type=None, value=None, goal_name=None, deleted=False, at=None):
    await pool.execute(
        "INSERT INTO custom_events (workspace_id, event_name, external_id, email, occurred_at, goal_type, goal_value,"
        " goal_name, deleted_at) VALUES ($1, $2, $3, $4, coalesce($5, now()), $6, $7, $8,"
        " CASE WHEN $9 THEN now() END)", ws.id, name, ext, email, at, goal_type, value, goal_name, deleted)


def gl(goal_type, agg, op, value, **more):
    return {"kind": "leaf", "leaf": {"source": "custom_events_goals", "custom_events_goal": {
        "goal_type": goal_type, "aggregate_operator": agg, "operator": op, "value": value,
        "timeframe_operator": "anytime", **more}}}


async def test_goal_aggregates(pool, ws):
    await contacts(pool, ws, {e: {} for e in ("buyer@x.io", "half@x.io", "signups@x.io", "none@x.io",
                                              "refund@x.io", "big@x.io")})
    await event(pool, ws, "buyer@x.io", "order", "1", "purchase", 60, "first_order")
    await event(pool, ws, "buyer@x.io", "order", "2", "purchase", 50)
    await event(pool, ws, "half@x.io", "order", "3", "purchase", 60)
    await event(pool, ws, "half@x.io", "order", "4", "purchase", 50, deleted=True)
    await event(pool, ws, "signups@x.io", "signup", "5", "signup")
    await event(pool, ws, "signups@x.io", "signup", "6", "signup", at=t("2023-01-01"))
    await event(pool, ws, "refund@x.io", "order", "7", "purchase", -5)
    await event(pool, ws, "refund@x.io", "order", "8", "purchase", 15)
    await event(pool, ws, "big@x.io", "order", "9", "purchase", 150, "first_order")
    await event(pool, ws, "big@x.io", "trial", "10", "trial", None, "first_order")

    assert await members(pool, ws, gl("purchase", "sum", "gte", 100)) == {"buyer@x.io", "big@x.io"}
    assert await members(pool, ws, gl("signup", "count", "eq", 2)) == {"signups@x.io"}
    assert await members(pool, ws, gl("signup", "count", "lte", 5)) == {"signups@x.io"}  # none@ never signed up
    assert await members(pool, ws, gl("purchase", "avg", "between", 10, value_2=20)) == set()
    assert await members(pool, ws, gl("purchase", "avg", "between", 5, value_2=55)) == {"buyer@x.io", "refund@x.io"}
    assert await members(pool, ws, gl("purchase", "min", "lte", 0)) == {"refund@x.io"}
    assert await members(pool, ws, gl("purchase", "max", "gte", 100)) == {"big@x.io"}
    assert await members(pool, ws, gl("*", "count", "gte", 1, goal_name="first_order")) == {"buyer@x.io", "big@x.io"}
    assert await members(pool, ws, gl("*", "count", "eq", 2, goal_name="first_order")) == {"big@x.io"}
    assert await members(pool, ws, gl("trial", "max", "gte", 0)) == set()  # all values null: no match
    assert await members(pool, ws, gl("signup", "count", "eq", 1, timeframe_operator="in_the_last_days",
                                      timeframe_values=["30"])) == {"signups@x.io"}
    assert await members(pool, ws, gl("signup", "count", "eq", 1, timeframe_operator="before_date",
                                      timeframe_values=["2024-01-01"])) == {"signups@x.io"}


# ---------------------------------------------------------------- branches

async def test_branches(pool, ws):
    await contacts(pool, ws, {"a@x.io": {"country": "FR"}, "b@x.io": {"first_name": "Bo"},
                              "ab@x.io": {"country": "FR", "first_name": "Bo", "custom_number_1": 1.0},
                              "c@x.io": {"custom_number_1": 1.0}, "abc@x.io": {"country": "FR", "custom_number_1": 1.0}})
    a = leaf(flt("country", "string", "equals", ["FR"]))
    b = leaf(flt("first_name", "string", "equals", ["Bo"]))
    c = leaf(flt("custom_number_1", "number", "equals", [1]))

    def br(op, *kids):
        return {"kind": "branch", "branch": {"operator": op, "leaves": list(kids)}}

    assert await members(pool, ws, br("or", a, b)) == {"a@x.io", "b@x.io", "ab@x.io", "abc@x.io"}
    assert await members(pool, ws, br("and", a, b)) == {"ab@x.io"}
    assert await members(pool, ws, br("and", br("or", a, b), c)) == {"ab@x.io", "abc@x.io"}


@pytest.mark.parametrize("first", [1, 5])
def test_numbering_starts_at_the_offset(first):
    sql, args = compile_tree(model.parse_tree(leaf(flt("country", "string", "equals", ["FR"]))), first=first)
    assert f"${first}::text" in sql and args == ["FR"]


async def test_a_scoped_predicate_matches_the_same_among_its_candidates(pool, ws):
    """The build's chunks and the incremental check restrict the subqueries to their candidates:
    the members among the candidates are exactly those of the unrestricted predicate."""
    await contacts(pool, ws, {f"s{i}@x.io": {"country": "FR" if i % 2 else "DE"} for i in range(8)})
    await pool.execute("INSERT INTO lists (workspace_id, id, name) VALUES ($1, 'news', 'N')", ws.id)
    for i in range(0, 8, 3):
        await pool.execute("INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at)"
                           " VALUES ($1, 'news', $2, 'active', now())", ws.id, f"s{i}@x.io")
        await entry(pool, ws, f"s{i}@x.io", "open_email", "m")
        await event(pool, ws, f"s{i}@x.io", "order", str(i), "purchase", 10 * i)
    trees = [
        {"kind": "leaf", "leaf": {"source": "contact_lists", "contact_list": {"operator": "not_in", "list_id": "news"}}},
        tl("open_email", "at_most", 0),
        tl("open_email", "exactly", 1),
        gl("purchase", "sum", "gte", 30),
        {"kind": "branch", "branch": {"operator": "or", "leaves": [
            leaf(flt("country", "string", "equals", ["FR"])), tl("open_email", "at_least", 1)]}},
    ]
    candidates = ["s1@x.io", "s3@x.io", "s6@x.io", "s7@x.io"]
    for tree in trees:
        everyone = await members(pool, ws, tree)
        sql, args = compile_tree(model.parse_tree(tree), first=3, scope="{a}.email = ANY ($2::text[])")
        rows = await pool.fetch(f"SELECT c.email FROM contacts c WHERE c.workspace_id = $1"
                                f" AND c.email = ANY ($2::text[]) AND {sql}", ws.id, candidates, *args)
        assert {r["email"] for r in rows} == everyone & set(candidates), tree
