"""customEvents.upsert / .create / .get / .list (segments-contract, Custom events): the rule of
the newer occurred_at, soft delete and restore, the contact created, the side effects written in
the write's transaction, and every refusal of the contract with nothing stored."""

from __future__ import annotations

import pytest
from helpers import assert_json_error, snapshot

from postroom.platform.times import format_time

UPSERT, CREATE, GET, LIST = ("/api/customEvents.upsert", "/api/customEvents.create", "/api/customEvents.get",
                             "/api/customEvents.list")
NAME_RULE = ("invalid custom event: event_name must contain only lowercase letters, numbers, underscores, dots, "
             "and slashes")
GOAL_TYPES = "invalid request: goal_type must be one of: [purchase subscription lead signup booking trial other]"


async def upsert(client, ws, path=UPSERT, status=200, headers=None, **event):
    body = {"workspace_id": ws.id, "email": "ann@example.com", "event_name": "order.placed", "external_id": "o-1",
            **event}
    r = await client.post(path, headers=headers or ws.headers, json=body)
    assert r.status_code == status, r.text
    return r.json()


async def get(client, ws, event_name="order.placed", external_id="o-1"):
    return await client.get(GET, headers=ws.headers, params={"workspace_id": ws.id, "event_name": event_name,
                                                             "external_id": external_id})


async def listed(client, ws, **params):
    r = await client.get(LIST, headers=ws.headers, params={"workspace_id": ws.id, **params})
    assert r.status_code == 200, r.text
    return r.json()


async def outbox(pool, ws, prefix="custom_event."):
    rows = await pool.fetch("SELECT type, subject, data FROM events WHERE workspace_id = $1 AND type LIKE $2"
                            " ORDER BY id", ws.id, prefix + "%")
    return [(r["type"], r["subject"], r["data"]) for r in rows]


async def entries(client, ws, email="ann@example.com"):
    r = await client.get("/api/timeline.list", headers=ws.headers, params={"workspace_id": ws.id, "email": email})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["timeline"] if e["entity_type"] == "custom_event"]


# ---------------------------------------------------------------- upsert: insert, and the answer

async def test_upsert_inserts_and_answers_the_stored_event(client, pool, ws):
    body = await upsert(client, ws, properties={"total": 12, "items": ["a"]}, occurred_at="2024-05-01T10:00:00+02:00",
                        goal_type="purchase", goal_value=12.5, goal_name="first_order", integration_id="shop")
    event = body["event"]
    assert list(body) == ["event"]
    assert list(event) == ["external_id", "email", "event_name", "properties", "occurred_at", "source",
                           "integration_id", "goal_name", "goal_type", "goal_value", "created_at", "updated_at"]
    assert event["occurred_at"] == "2024-05-01T08:00:00Z" and event["source"] == "api"
    assert event["goal_value"] == 12.5 and event["properties"] == {"total": 12, "items": ["a"]}
    r = await get(client, ws)
    assert r.status_code == 200 and r.json() == body
    row = await pool.fetchrow("SELECT goal_value::text, email FROM custom_events WHERE workspace_id = $1", ws.id)
    assert tuple(row) == ("12.50", "ann@example.com")


async def test_optional_fields_are_omitted_when_null(client, ws):
    event = (await upsert(client, ws))["event"]
    assert list(event) == ["external_id", "email", "event_name", "properties", "occurred_at", "source",
                           "created_at", "updated_at"]
    assert event["properties"] == {}


async def test_create_is_upsert_and_get_on_upsert_is_405(client, ws):
    a = (await upsert(client, ws, path=CREATE, external_id="c-1", properties={"x": 1}))["event"]
    assert a["external_id"] == "c-1" and (await get(client, ws, external_id="c-1")).json()["event"] == a
    r = await client.get(UPSERT, headers=ws.headers, params={"workspace_id": ws.id})
    assert_json_error(r, 405, "Method not allowed")
    assert r.headers["allow"] == "POST"
    r = await client.post(GET, headers=ws.headers, json={"workspace_id": ws.id})
    assert_json_error(r, 405, "Method not allowed")


async def test_unknown_email_creates_the_contact_with_its_side_effects(client, pool, ws):
    await upsert(client, ws, email="  New@Example.COM ")
    r = await client.get("/api/contacts.getByEmail", headers=ws.headers,
                         params={"workspace_id": ws.id, "email": "new@example.com"})
    assert r.status_code == 200, r.text
    assert (await outbox(pool, ws, "contact."))[0][:2] == ("contact.created", "new@example.com")
    kinds = [e["kind"] for e in (await client.get("/api/timeline.list", headers=ws.headers, params={
        "workspace_id": ws.id, "email": "new@example.com"})).json()["timeline"]]
    assert kinds == ["custom_event.order.placed", "contact.created"]
    assert (await get(client, ws)).json()["event"]["email"] == "new@example.com"
    assert await pool.fetchval("SELECT sum(delta) FROM contact_counts WHERE workspace_id = $1", ws.id) == 1


async def test_an_existing_contact_is_left_as_it_is(client, pool, ws):
    r = await client.post("/api/contacts.upsert", headers=ws.headers, json={
        "workspace_id": ws.id, "contact": {"email": "ann@example.com", "first_name": "Ann"}})
    assert r.status_code == 200
    before = await pool.fetchrow("SELECT * FROM contacts WHERE workspace_id = $1", ws.id)
    await upsert(client, ws)
    assert await pool.fetchrow("SELECT * FROM contacts WHERE workspace_id = $1", ws.id) == before
    assert [t for t, _, _ in await outbox(pool, ws, "contact.")] == ["contact.created"]


async def test_a_delete_request_creates_no_contact(client, pool, ws):
    await upsert(client, ws, email="gone@example.com", deleted_at="2024-01-01T00:00:00Z")
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", ws.id) == 0
    assert await outbox(pool, ws) == [("custom_event.deleted", "gone@example.com", {"custom_event": {
        "event_name": "order.placed", "external_id": "o-1", "email": "gone@example.com", "properties": {},
        "occurred_at": format_time(await pool.fetchval(
            "SELECT occurred_at FROM custom_events WHERE workspace_id = $1", ws.id)),
        "source": "api", "integration_id": None, "goal_name": None, "goal_type": None, "goal_value": None,
        "deleted_at": "2024-01-01T00:00:00Z",
        "created_at": (await outbox(pool, ws))[0][2]["custom_event"]["created_at"],
        "updated_at": (await outbox(pool, ws))[0][2]["custom_event"]["updated_at"]}})]
    assert (await get(client, ws)).status_code == 404


# ---------------------------------------------------------------- the newer occurred_at wins

async def test_older_or_equal_occurred_at_changes_nothing(client, pool, ws):
    first = (await upsert(client, ws, occurred_at="2024-05-02T00:00:00Z", properties={"status": "paid"}))["event"]
    before = await snapshot(pool, ws.id)
    for at in ("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z"):
        again = (await upsert(client, ws, occurred_at=at, properties={"status": "pending"}, email="bob@example.com",
                              goal_type="lead"))["event"]
        assert again == first  # the stored event, with its own created_at
    after = await snapshot(pool, ws.id)
    # the request created bob's contact (not a delete), nothing else moved
    assert after["custom_events"] == before["custom_events"] and after["contact_timeline"] != before["contact_timeline"]
    assert [t for t, _, _ in await outbox(pool, ws)] == ["custom_event.created"]


async def test_newer_occurred_at_replaces_and_records_only_changed_keys(client, pool, ws):
    first = (await upsert(client, ws, occurred_at="2024-05-01T00:00:00Z", properties={"a": 1, "b": {"x": 1, "y": 2}, "c": 3},
                          goal_type="purchase", goal_value=10, goal_name="first"))["event"]
    second = (await upsert(client, ws, occurred_at="2024-05-03T00:00:00Z", properties={"a": 1.0, "b": {"y": 2, "x": 1},
                                                                                      "d": True},
                           integration_id="crm", goal_value=12))["event"]
    assert second["properties"] == {"a": 1.0, "b": {"y": 2, "x": 1}, "d": True}
    assert second["occurred_at"] == "2024-05-03T00:00:00Z" and second["integration_id"] == "crm"
    # goal fields are replaced only by values: a null keeps the stored one
    assert (second["goal_type"], second["goal_value"], second["goal_name"]) == ("purchase", 12, "first")
    assert second["created_at"] == first["created_at"] and second["updated_at"] > first["updated_at"]
    update, insert = await entries(client, ws)
    assert update["kind"] == insert["kind"] == "custom_event.order.placed"
    assert (update["operation"], insert["operation"]) == ("update", "insert")
    assert update["entity_id"] == "o-1" and update["created_at"] == "2024-05-03T00:00:00Z"
    assert insert["created_at"] == "2024-05-01T00:00:00Z"
    assert update["changes"] == {"properties": {"c": {"old": 3, "new": None}, "d": {"old": None, "new": True}},
                                 "occurred_at": {"old": "2024-05-01T00:00:00Z", "new": "2024-05-03T00:00:00Z"},
                                 "goal_value": {"old": 10, "new": 12}}
    assert insert["changes"] == {"event_name": {"new": "order.placed"}, "external_id": {"new": "o-1"},
                                 "goal_type": {"new": "purchase"}, "goal_value": {"new": 10},
                                 "goal_name": {"new": "first"}}
    types = [(t, d["custom_event"]["goal_value"]) for t, _, d in await outbox(pool, ws)]
    assert types == [("custom_event.created", 10), ("custom_event.updated", 12)]


# ---------------------------------------------------------------- soft delete and restore

async def test_soft_delete_hides_keeps_and_restore_brings_back(client, pool, ws):
    await upsert(client, ws, occurred_at="2024-05-01T00:00:00Z", properties={"keep": "me"}, goal_type="signup")
    deleted = (await upsert(client, ws, deleted_at="2024-06-01T00:00:00Z", occurred_at="2020-01-01T00:00:00Z",
                            properties={"other": 1}, email="bob@example.com"))["event"]
    # only deleted_at (and updated_at) moved; the request's other fields are not taken
    assert deleted["deleted_at"] == "2024-06-01T00:00:00Z" and deleted["properties"] == {"keep": "me"}
    assert deleted["email"] == "ann@example.com" and deleted["occurred_at"] == "2024-05-01T00:00:00Z"
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1 AND email = 'bob@example.com'",
                               ws.id) == 0
    assert_json_error(await get(client, ws), 404, "Custom event not found")
    assert (await listed(client, ws, email="ann@example.com")) == {"events": [], "count": 0}
    # deleted again: nothing changes
    again = (await upsert(client, ws, deleted_at="2024-07-01T00:00:00Z"))["event"]
    assert again == deleted
    restored = (await upsert(client, ws, occurred_at="2019-01-01T00:00:00Z", properties={"back": True}))["event"]
    assert "deleted_at" not in restored and restored["properties"] == {"back": True}
    assert restored["occurred_at"] == "2019-01-01T00:00:00Z" and restored["goal_type"] == "signup"
    assert (await get(client, ws)).json()["event"] == restored
    assert [t for t, _, _ in await outbox(pool, ws)] == ["custom_event.created", "custom_event.deleted",
                                                         "custom_event.created"]
    restore, delete, _ = await entries(client, ws)
    assert delete["operation"] == restore["operation"] == "update"
    assert delete["changes"] == {"deleted_at": {"old": None, "new": "2024-06-01T00:00:00Z"}}
    assert restore["changes"] == {"deleted_at": {"old": "2024-06-01T00:00:00Z", "new": None}}


# ---------------------------------------------------------------- goal_value: money

@pytest.mark.parametrize("sent, stored, wire", [
    (9.999, "10.00", 10), (-5, "-5.00", -5), (0.005, "0.01", 0.01), (-0.005, "-0.01", -0.01),
    (2.675, "2.68", 2.68), (1.004, "1.00", 1), (-0.004, "0.00", 0), (9999999999999.99, "9999999999999.99",
                                                                     9999999999999.99)])
async def test_goal_value_has_two_decimals_rounded_half_away_from_zero(client, pool, ws, sent, stored, wire):
    event = (await upsert(client, ws, goal_type="purchase", goal_value=sent))["event"]
    assert event["goal_value"] == wire and type(event["goal_value"]) is type(wire)
    assert await pool.fetchval("SELECT goal_value::text FROM custom_events WHERE workspace_id = $1", ws.id) == stored


# ---------------------------------------------------------------- refusals: 400, nothing stored

def bad(**changes):
    return changes


BAD_UPSERTS = [
    (bad(workspace_id=""), "workspace_id is required"),
    (bad(workspace_id=None), "workspace_id is required"),
    (bad(email=""), "invalid request: email is required"),
    (bad(email=None, event_name="Bad Name"), "invalid request: email is required"),
    (bad(email="not-an-email"), "invalid request: invalid email format"),
    (bad(email="a\x00@example.com"), "invalid request: email contains a NUL character"),
    (bad(email=7), "invalid request: invalid type for email: expected string, got Number"),
    (bad(event_name=""), "invalid request: event_name is required"),
    (bad(event_name=5), "invalid request: event_name must be a string"),
    (bad(external_id=""), "invalid request: external_id is required"),
    (bad(external_id="x" * 256), "invalid request: external_id must be 255 characters or less"),
    (bad(external_id=["x"]), "invalid request: external_id must be a string"),
    (bad(goal_type="sale"), GOAL_TYPES),
    (bad(goal_type=3), GOAL_TYPES),
    (bad(goal_type="purchase"), "invalid request: goal_value is required for goal_type 'purchase'"),
    (bad(goal_type="subscription", goal_value=None), "invalid request: goal_value is required for goal_type 'subscription'"),
    (bad(goal_name="n" * 101), "invalid request: goal_name must be 100 characters or less"),
    (bad(goal_value=1e13), "invalid request: goal_value out of range"),
    (bad(goal_value=-9999999999999.999), "invalid request: goal_value out of range"),
    (bad(goal_value="12"), "invalid request: goal_value must be a number"),
    (bad(goal_value=True), "invalid request: goal_value must be a number"),
    (bad(integration_id="i" * 33), "invalid request: integration_id must be 32 characters or less"),
    (bad(properties=[1]), "invalid request: properties must be an object"),
    (bad(properties="x"), "invalid request: properties must be an object"),
    (bad(properties={"a": "b\x00"}), "invalid request: properties contains a NUL character"),
    (bad(occurred_at="yesterday"), "invalid request: occurred_at must be an RFC 3339 timestamp"),
    (bad(occurred_at=1700000000), "invalid request: occurred_at must be an RFC 3339 timestamp"),
    (bad(deleted_at="2024-13-01T00:00:00Z"), "invalid request: deleted_at must be an RFC 3339 timestamp"),
    (bad(event_name="e" * 101), "invalid custom event: event_name must be 100 characters or less"),
    (bad(event_name="Order Placed"), NAME_RULE),
    (bad(event_name="order_placed!"), NAME_RULE),
    (bad(event_name="a\x00b"), NAME_RULE),
    # first failure wins: the table's order
    (bad(external_id="", goal_type="sale"), "invalid request: external_id is required"),
    (bad(goal_type="sale", event_name="Bad"), GOAL_TYPES),
    (bad(goal_value="x", integration_id="i" * 33), "invalid request: goal_value must be a number"),
    (bad(properties=[], event_name="Bad"), "invalid request: properties must be an object"),
]


@pytest.mark.parametrize("path", [UPSERT, CREATE])
@pytest.mark.parametrize("changes, message", BAD_UPSERTS, ids=[m[:60] + str(i) for i, (_, m) in enumerate(BAD_UPSERTS)])
async def test_bad_upsert_is_refused_and_writes_nothing(client, pool, ws, path, changes, message):
    before = await snapshot(pool, ws.id)
    body = {"workspace_id": ws.id, "email": "ann@example.com", "event_name": "order.placed", "external_id": "o-1",
            **changes}
    r = await client.post(path, headers=ws.headers, json=body)
    assert_json_error(r, 400, message)
    assert await snapshot(pool, ws.id) == before


@pytest.mark.parametrize("name", ["orders/fulfilled", "order-placed", "a.b_c/d-9", "x" * 100])
async def test_event_names_the_pattern_accepts(client, ws, name):
    assert (await upsert(client, ws, event_name=name))["event"]["event_name"] == name


async def test_a_body_that_is_not_json(client, ws):
    r = await client.post(UPSERT, headers=ws.headers, content=b"{", )
    assert_json_error(r, 400, "Invalid request body")


# ---------------------------------------------------------------- permissions and membership

async def test_permissions_name_custom_events_on_writes(client, pool, ws):
    readonly = {"Authorization": f"Bearer {await ws.key('contacts:r')}"}
    before = await snapshot(pool, ws.id)
    for path in (UPSERT, CREATE):
        r = await client.post(path, headers=readonly, json={
            "workspace_id": ws.id, "email": "ann@example.com", "event_name": "e", "external_id": "1"})
        assert_json_error(r, 403, "Insufficient permissions: write access to contacts required for custom events")
    r = await client.post("/api/customEvents.import", headers=readonly, json={
        "workspace_id": ws.id, "events": [{"email": "ann@example.com", "event_name": "e", "external_id": "1"}]})
    assert_json_error(r, 403, "Insufficient permissions: write access to contacts required for custom events")
    assert await snapshot(pool, ws.id) == before
    # validation comes before the permission check
    r = await client.post(UPSERT, headers=readonly, json={"workspace_id": ws.id, "email": ""})
    assert_json_error(r, 400, "invalid request: email is required")
    writeonly = {"Authorization": f"Bearer {await ws.key('lists:rw')}"}
    r = await client.get(LIST, headers=writeonly, params={"workspace_id": ws.id, "email": "a@example.com"})
    assert_json_error(r, 403, "Insufficient permissions: read access to contacts required")
    r = await client.get(GET, headers=writeonly, params={"workspace_id": ws.id, "event_name": "e", "external_id": "1"})
    assert_json_error(r, 403, "Insufficient permissions: read access to contacts required")
    r = await client.get(LIST, headers=readonly, params={"workspace_id": ws.id, "email": "a@example.com"})
    assert r.status_code == 200


async def test_another_workspace_is_403(client, pool, ws, new_workspace):
    other = await new_workspace()
    await upsert(client, other)
    before = await snapshot(pool, other.id)
    r = await client.post(UPSERT, headers=ws.headers, json={
        "workspace_id": other.id, "email": "ann@example.com", "event_name": "order.placed", "external_id": "o-1"})
    assert_json_error(r, 403, "user is not a member of the workspace")
    r = await client.get(GET, headers=ws.headers, params={"workspace_id": other.id, "event_name": "order.placed",
                                                          "external_id": "o-1"})
    assert_json_error(r, 403, "user is not a member of the workspace")
    assert await snapshot(pool, other.id) == before
    assert_json_error(await get(client, ws), 404, "Custom event not found")


async def test_no_token_is_401(client, ws):
    r = await client.post(UPSERT, json={"workspace_id": ws.id})
    assert r.status_code == 401


# ---------------------------------------------------------------- get and list

async def test_get_requires_its_three_parameters(client, ws):
    for missing in ("workspace_id", "event_name", "external_id"):
        params = {"workspace_id": ws.id, "event_name": "e", "external_id": "1"}
        del params[missing]
        r = await client.get(GET, headers=ws.headers, params=params)
        assert_json_error(r, 400, "workspace_id, event_name, and external_id are required")
    assert_json_error(await get(client, ws, "nothing", "here"), 404, "Custom event not found")


async def test_list_filters_order_and_limits(client, ws):
    for i, (email, name, at) in enumerate([
            ("ann@example.com", "order.placed", "2024-01-03T00:00:00Z"), ("ann@example.com", "trial", "2024-01-05T00:00:00Z"),
            ("bob@example.com", "order.placed", "2024-01-04T00:00:00Z"), ("ann@example.com", "order.placed", "2024-01-03T00:00:00Z"),
            ("ann@example.com", "a.first", "2024-01-03T00:00:00Z")]):
        await upsert(client, ws, email=email, event_name=name, external_id=f"k{i}", occurred_at=at)
    r = await client.get(LIST, headers=ws.headers, params={"workspace_id": ws.id})
    assert_json_error(r, 400, "either email or event_name is required")
    assert_json_error(await client.get(LIST, headers=ws.headers, params={"email": "a@example.com"}), 400,
                      "workspace_id is required")
    body = await listed(client, ws, email=" ANN@example.com ")
    assert [(e["event_name"], e["external_id"]) for e in body["events"]] == [
        ("trial", "k1"), ("a.first", "k4"), ("order.placed", "k0"), ("order.placed", "k3")]
    assert body["count"] == 4
    by_name = await listed(client, ws, event_name="order.placed")
    assert [e["external_id"] for e in by_name["events"]] == ["k2", "k0", "k3"]
    both = await listed(client, ws, event_name="order.placed", email="bob@example.com")
    assert [e["external_id"] for e in both["events"]] == ["k2"]
    page = await listed(client, ws, email="ann@example.com", limit="2", offset="1")
    assert [e["external_id"] for e in page["events"]] == ["k4", "k0"] and page["count"] == 2
    for limit in ("0", "-3", "abc", "1.5"):
        assert (await listed(client, ws, email="ann@example.com", limit=limit))["count"] == 4  # 50
    for offset in ("-1", "x", "2.0"):
        assert (await listed(client, ws, email="ann@example.com", offset=offset))["count"] == 4  # 0
    assert (await listed(client, ws, email="ann@example.com", offset="9" * 30))["count"] == 0
    assert (await listed(client, ws, email="nobody@example.com")) == {"events": [], "count": 0}


async def test_list_limit_above_100_is_100(client, pool, ws):
    await pool.execute("""INSERT INTO custom_events (workspace_id, event_name, external_id, email, occurred_at)
                          SELECT $1, 'bulk', 'k' || i, 'ann@example.com', now() FROM generate_series(1, 120) i""", ws.id)
    assert (await listed(client, ws, event_name="bulk", limit="1000"))["count"] == 100
    assert (await listed(client, ws, event_name="bulk"))["count"] == 50


# ---------------------------------------------------------------- contacts.delete takes the events

async def test_contact_delete_deletes_its_custom_events(client, pool, ws):
    await upsert(client, ws, external_id="a")
    await upsert(client, ws, external_id="b", email="bob@example.com")
    r = await client.post("/api/contacts.delete", headers=ws.headers, json={"workspace_id": ws.id,
                                                                            "email": "ann@example.com"})
    assert r.status_code == 200, r.text
    rows = await pool.fetch("SELECT external_id FROM custom_events WHERE workspace_id = $1", ws.id)
    assert [r["external_id"] for r in rows] == ["b"]


async def test_an_event_name_ending_like_a_verb_keeps_its_operation(client, ws):
    """The timeline's operation of a custom event comes from what happened, not from the name."""
    await upsert(client, ws, event_name="trial.created", occurred_at="2024-01-01T00:00:00Z")
    await upsert(client, ws, event_name="trial.created", occurred_at="2024-01-02T00:00:00Z")
    await upsert(client, ws, event_name="trial.deleted", external_id="d")
    ops = [(e["kind"], e["operation"]) for e in await entries(client, ws)]
    assert ops == [("custom_event.trial.deleted", "insert"), ("custom_event.trial.created", "update"),
                   ("custom_event.trial.created", "insert")]
