"""customEvents.import (segments-contract, import): the batch cap, every event checked before any
write, one transaction in input order (two events of one key are successive upserts), the missing
contacts created, and a refused or failed batch that writes nothing at all."""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest
from helpers import assert_json_error, snapshot

from postroom.customevents import model, store

IMPORT = "/api/customEvents.import"


def event(i: int = 0, **fields) -> dict:
    return {"email": f"user{i}@example.com", "event_name": "order.placed", "external_id": f"o-{i}", **fields}


async def send(client, ws, events, status=201):
    r = await client.post(IMPORT, headers=ws.headers, json={"workspace_id": ws.id, "events": events})
    assert r.status_code == status, r.text
    return r.json()


async def test_import_of_three_answers_ids_in_order_and_creates_contacts(client, pool, ws):
    await client.post("/api/contacts.upsert", headers=ws.headers, json={
        "workspace_id": ws.id, "contact": {"email": "user1@example.com", "first_name": "Known"}})
    body = await send(client, ws, [event(2), event(0), event(1, goal_type="purchase", goal_value=5)])
    assert body == {"event_ids": ["o-2", "o-0", "o-1"], "count": 3}
    emails = [r["email"] for r in await pool.fetch("SELECT email FROM contacts WHERE workspace_id = $1 ORDER BY 1",
                                                   ws.id)]
    assert emails == ["user0@example.com", "user1@example.com", "user2@example.com"]
    assert await pool.fetchval("SELECT first_name FROM contacts WHERE workspace_id = $1 AND email = $2",
                               ws.id, "user1@example.com") == "Known"
    created = await pool.fetch("SELECT subject FROM events WHERE workspace_id = $1 AND type = 'contact.created'"
                               " ORDER BY id", ws.id)
    assert [r["subject"] for r in created] == ["user1@example.com", "user0@example.com", "user2@example.com"]
    assert await pool.fetchval("SELECT sum(delta) FROM contact_counts WHERE workspace_id = $1", ws.id) == 3
    # the outbox and the timeline in input order
    rows = await pool.fetch("SELECT type, data->'custom_event'->>'external_id' AS ext FROM events"
                            " WHERE workspace_id = $1 AND type LIKE 'custom_event.%' ORDER BY id", ws.id)
    assert [(r["type"], r["ext"]) for r in rows] == [("custom_event.created", f"o-{i}") for i in (2, 0, 1)]
    rows = await pool.fetch("SELECT entity_id FROM contact_timeline WHERE workspace_id = $1"
                            " AND entity_type = 'custom_event' ORDER BY id", ws.id)
    assert [r["entity_id"] for r in rows] == ["o-2", "o-0", "o-1"]


async def test_history_fields_and_source(client, pool, ws):
    await send(client, ws, [event(0, source="shopify", created_at="2020-01-01T00:00:00Z",
                                  updated_at="2020-01-02T00:00:00Z", occurred_at="2019-12-31T00:00:00Z"),
                            event(1)])
    r = await client.get("/api/customEvents.get", headers=ws.headers,
                         params={"workspace_id": ws.id, "event_name": "order.placed", "external_id": "o-0"})
    got = r.json()["event"]
    assert (got["source"], got["created_at"], got["updated_at"], got["occurred_at"]) == (
        "shopify", "2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z", "2019-12-31T00:00:00Z")
    r = await client.get("/api/customEvents.get", headers=ws.headers,
                         params={"workspace_id": ws.id, "event_name": "order.placed", "external_id": "o-1"})
    assert r.json()["event"]["source"] == "api"
    # upsert does not take a source: it is the API's
    r = await client.post("/api/customEvents.upsert", headers=ws.headers, json={
        "workspace_id": ws.id, **event(5, source="shopify")})
    assert r.json()["event"]["source"] == "api"


async def test_two_events_of_one_key_are_successive_upserts(client, pool, ws):
    await send(client, ws, [
        event(0, occurred_at="2024-01-02T00:00:00Z", properties={"v": 2}),
        event(0, occurred_at="2024-01-01T00:00:00Z", properties={"v": 1}),   # older: no change
        event(0, occurred_at="2024-01-03T00:00:00Z", properties={"v": 3}),
        event(0, deleted_at="2024-02-01T00:00:00Z"),
        event(0, occurred_at="2024-01-04T00:00:00Z", properties={"v": 4}),   # restore
    ])
    row = await pool.fetchrow("SELECT properties, deleted_at, occurred_at FROM custom_events WHERE workspace_id = $1",
                              ws.id)
    assert row["properties"] == {"v": 4} and row["deleted_at"] is None
    types = [r["type"] for r in await pool.fetch("SELECT type FROM events WHERE workspace_id = $1"
                                                 " AND type LIKE 'custom_event.%' ORDER BY id", ws.id)]
    assert types == ["custom_event.created", "custom_event.updated", "custom_event.deleted", "custom_event.created"]
    assert await pool.fetchval("SELECT count(*) FROM contact_timeline WHERE workspace_id = $1"
                               " AND entity_type = 'custom_event'", ws.id) == 4


async def test_a_batch_of_no_ops_writes_no_side_effect(client, pool, ws):
    await send(client, ws, [event(0, occurred_at="2024-01-02T00:00:00Z")])
    before = await snapshot(pool, ws.id)
    assert await send(client, ws, [event(0, occurred_at="2024-01-01T00:00:00Z")]) == {"event_ids": ["o-0"], "count": 1}
    assert await snapshot(pool, ws.id) == before


def fifty_one():
    return [event(i) for i in range(51)]


BAD_IMPORTS = [
    ({"workspace_id": ""}, "workspace_id is required"),
    ({"events": None}, "invalid request: events array cannot be empty"),
    ({"events": []}, "invalid request: events array cannot be empty"),
    ({"events": {"a": 1}}, "invalid request: events must be an array"),
    ({"events": fifty_one()}, "invalid request: cannot import more than 50 events at once"),
    ({"events": [event(0), event(1), event(2, external_id="")]}, "event at index 2: external_id is required"),
    ({"events": [event(0, event_name="Bad"), event(1, external_id=None)]}, "event at index 1: external_id is required"),
    ({"events": [event(0), "x"]}, "invalid event at index 1: event must be an object"),
    ({"events": [event(0), event(1), event(2, goal_type="purchase")]},
     "invalid event at index 2: goal_value is required for goal_type 'purchase'"),
    ({"events": [event(0, event_name="Order Placed")]},
     "invalid event at index 0: event_name must contain only lowercase letters, numbers, underscores, dots, and slashes"),
    ({"events": [event(0), event(1, email="nope")]}, "invalid event at index 1: invalid email format"),
    ({"events": [event(0, source="s" * 51)]}, "invalid event at index 0: source must be 50 characters or less"),
    ({"events": [event(0, source=5)]}, "invalid event at index 0: source must be a string"),
    ({"events": [event(0, created_at="then")]}, "invalid event at index 0: created_at must be an RFC 3339 timestamp"),
    ({"events": [event(0, updated_at=1)]}, "invalid event at index 0: updated_at must be an RFC 3339 timestamp"),
    ({"events": [event(0, external_id="x" * 256)]},
     "invalid event at index 0: external_id must be 255 characters or less"),
    ({"events": [event(0, goal_value=1e14)]}, "invalid event at index 0: goal_value out of range"),
]


@pytest.mark.parametrize("changes, message", BAD_IMPORTS, ids=[m[:50] + str(i) for i, (_, m) in enumerate(BAD_IMPORTS)])
async def test_a_refused_import_writes_nothing(client, pool, ws, changes, message):
    before = await snapshot(pool, ws.id)
    r = await client.post(IMPORT, headers=ws.headers, json={"workspace_id": ws.id, "events": [event(0)], **changes})
    assert_json_error(r, 400, message)
    assert await snapshot(pool, ws.id) == before


async def test_fifty_is_the_cap(client, pool, ws):
    assert (await send(client, ws, [event(i) for i in range(50)]))["count"] == 50
    assert await pool.fetchval("SELECT count(*) FROM custom_events WHERE workspace_id = $1", ws.id) == 50


async def test_a_batch_the_database_refuses_leaves_nothing_behind(client, pool, ws):
    """The contacts, the events, their timeline entries and outbox events are one transaction:
    when its last statement fails, the contacts created before it are gone too."""
    before = await snapshot(pool, ws.id)
    await pool.execute(f"""CREATE FUNCTION refuse_{ws.id}() RETURNS trigger LANGUAGE plpgsql AS
                           $$ BEGIN RAISE EXCEPTION 'refused'; END $$""")
    await pool.execute(f"""CREATE TRIGGER refuse_{ws.id} BEFORE INSERT ON custom_events FOR EACH ROW
                           WHEN (NEW.workspace_id = '{ws.id}') EXECUTE FUNCTION refuse_{ws.id}()""")
    try:
        with pytest.raises(asyncpg.RaiseError):
            await store.write(pool, ws.id, model.parse_import({"workspace_id": ws.id, "events": [event(0), event(1)]},
                                                              dt.datetime.now(dt.timezone.utc)))
    finally:
        await pool.execute(f"DROP TRIGGER refuse_{ws.id} ON custom_events")
        await pool.execute(f"DROP FUNCTION refuse_{ws.id}()")
    assert await snapshot(pool, ws.id) == before


async def test_concurrent_writers_of_one_new_key_lose_nothing(client, pool, ws):
    """Ten imports of one new key at once, each with a newer occurred_at: exactly one inserts, every
    other one is applied as an update or a no-op, and the newest version is what is stored."""
    bodies = [[event(0, occurred_at=f"2024-01-{d:02d}T00:00:00Z", properties={"d": d})] for d in range(1, 11)]
    await asyncio.gather(*(send(client, ws, b) for b in bodies))
    row = await pool.fetchrow("SELECT properties, occurred_at FROM custom_events WHERE workspace_id = $1", ws.id)
    assert row["properties"] == {"d": 10}
    types = [r["type"] for r in await pool.fetch("SELECT type FROM events WHERE workspace_id = $1"
                                                 " AND type LIKE 'custom_event.%'", ws.id)]
    assert types.count("custom_event.created") == 1
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", ws.id) == 1
