"""Incremental membership off the outbox: each event re-checks its contact against the segments it
can affect, and nothing else; joins and leaves reach the timeline and the outbox."""

from __future__ import annotations

from helpers import make_contacts, make_list

from postroom.events import store as events
from postroom.segments import worker


def leaf(source, key, cond):
    return {"kind": "leaf", "leaf": {"source": source, key: cond}}


FR = leaf("contacts", "contact", {"filters": [
    {"field_name": "country", "field_type": "string", "operator": "equals", "string_values": ["FR"]}]})
IN_NEWS = leaf("contact_lists", "contact_list", {"operator": "in", "list_id": "news", "status": "active"})
BUYERS = leaf("custom_events_goals", "custom_events_goal", {
    "goal_type": "purchase", "aggregate_operator": "sum", "operator": "gte", "value": 100})


async def create(client, ws, seg_id, tree):
    r = await client.post("/api/segments.create", headers=ws.headers, json={
        "workspace_id": ws.id, "id": seg_id, "name": seg_id.title(), "color": "red", "tree": tree, "timezone": "UTC"})
    assert r.status_code == 201, r.text


async def settle(pool):
    while await worker.scan_once(pool) or await worker.consume_once(pool):
        pass


async def member_of(pool, ws, email) -> list[str]:
    rows = await pool.fetch("SELECT segment_id FROM contact_segments WHERE workspace_id = $1 AND email = $2"
                            " ORDER BY segment_id", ws.id, email)
    return [r["segment_id"] for r in rows]


async def seg_events(pool, ws):
    rows = await pool.fetch("SELECT type, subject, data->>'segment_id' AS seg FROM events WHERE workspace_id = $1"
                            " AND type LIKE 'segment.%' ORDER BY id", ws.id)
    return [tuple(r) for r in rows]


async def upsert(client, ws, email, **fields):
    r = await client.post("/api/contacts.upsert", headers=ws.headers,
                          json={"workspace_id": ws.id, "contact": {"email": email, **fields}})
    assert r.status_code == 200, r.text


async def test_contact_changes_move_members(client, pool, ws):
    await create(client, ws, "fr", FR)
    await settle(pool)
    await upsert(client, ws, "ann@x.io", country="DE")
    await settle(pool)
    assert await member_of(pool, ws, "ann@x.io") == []
    await upsert(client, ws, "ann@x.io", country="FR")
    await settle(pool)
    assert await member_of(pool, ws, "ann@x.io") == ["fr"]
    assert await seg_events(pool, ws) == [("segment.joined", "ann@x.io", "fr")]
    entry = await pool.fetchrow("SELECT kind, entity_type, entity_id FROM contact_timeline WHERE workspace_id = $1"
                                " AND kind LIKE 'segment.%'", ws.id)
    assert tuple(entry) == ("segment.joined", "contact_segment", "fr")
    await upsert(client, ws, "ann@x.io", country="IT")
    await settle(pool)
    assert await member_of(pool, ws, "ann@x.io") == []
    assert (await seg_events(pool, ws))[-1] == ("segment.left", "ann@x.io", "fr")
    r = await client.get("/api/timeline.list", headers=ws.headers, params={"workspace_id": ws.id, "email": "ann@x.io"})
    ops = [(e["kind"], e["operation"], e["entity_type"], e.get("entity_id")) for e in r.json()["timeline"]
           if e["kind"].startswith("segment.")]
    assert ops == [("segment.left", "delete", "contact_segment", "fr"), ("segment.joined", "insert", "contact_segment", "fr")]
    # the segment.* events are consumed without feedback: nothing is left to do
    assert await worker.consume_once(pool) == 0
    # a new contact is checked against every segment
    await upsert(client, ws, "bea@x.io", country="FR")
    await settle(pool)
    assert await member_of(pool, ws, "bea@x.io") == ["fr"]


async def test_list_status_changes_move_members(client, pool, ws):
    await make_list(client, ws, "news")
    await create(client, ws, "news_active", IN_NEWS)
    await upsert(client, ws, "cid@x.io")
    r = await client.post("/api/lists.subscribe", headers=ws.headers, json={
        "workspace_id": ws.id, "contact": {"email": "cid@x.io"}, "list_ids": ["news"]})
    assert r.status_code == 200
    await settle(pool)
    assert await member_of(pool, ws, "cid@x.io") == ["news_active"]
    r = await client.post("/api/contactLists.updateStatus", headers=ws.headers, json={
        "workspace_id": ws.id, "email": "cid@x.io", "list_id": "news", "status": "unsubscribed"})
    assert r.status_code == 200
    await settle(pool)
    assert await member_of(pool, ws, "cid@x.io") == []


async def test_custom_events_move_goal_members(client, pool, ws):
    await make_contacts(pool, ws, ["dan@x.io"])
    await create(client, ws, "buyers", BUYERS)
    await settle(pool)

    async def purchase(value, deleted=False):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO custom_events (workspace_id, event_name, external_id, email, occurred_at, goal_type,"
                " goal_value, deleted_at) VALUES ($1, 'order', 'o1', 'dan@x.io', now(), 'purchase', $2,"
                " CASE WHEN $3 THEN now() END) ON CONFLICT (workspace_id, event_name, external_id)"
                " DO UPDATE SET deleted_at = EXCLUDED.deleted_at", ws.id, value, deleted)
            await events.emit(conn, ws.id, "custom_event.deleted" if deleted else "custom_event.created", "dan@x.io",
                              {"custom_event": {"email": "dan@x.io", "event_name": "order", "goal_type": "purchase"}})

    await purchase(200)
    await settle(pool)
    assert await member_of(pool, ws, "dan@x.io") == ["buyers"]
    await purchase(200, deleted=True)
    await settle(pool)
    assert await member_of(pool, ws, "dan@x.io") == []


async def test_an_event_rechecks_only_the_segments_it_can_affect(client, pool, ws):
    await make_list(client, ws, "news")
    await create(client, ws, "fr", FR)
    await create(client, ws, "news_active", IN_NEWS)
    await upsert(client, ws, "eve@x.io", country="DE")
    await settle(pool)
    # a membership written behind the outbox's back: only a list event would reveal it
    await pool.execute("INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at)"
                       " VALUES ($1, 'news', 'eve@x.io', 'active', now())", ws.id)
    await upsert(client, ws, "eve@x.io", country="FR")   # contact.updated: the contacts segment only
    await settle(pool)
    assert await member_of(pool, ws, "eve@x.io") == ["fr"]
    r = await client.post("/api/contactLists.updateStatus", headers=ws.headers, json={
        "workspace_id": ws.id, "email": "eve@x.io", "list_id": "news", "status": "active"})
    assert r.status_code == 200
    await events.emit(pool, ws.id, "list.subscribed", "eve@x.io",
                      {"contact_list": {"email": "eve@x.io", "list_id": "news"}})
    await settle(pool)
    assert await member_of(pool, ws, "eve@x.io") == ["fr", "news_active"]


async def test_changes_during_a_build_follow_the_new_tree(client, pool, ws):
    await create(client, ws, "fr", FR)
    await upsert(client, ws, "fay@x.io", country="FR")  # before the build ran
    await worker.consume_once(pool)   # the segment is building: the contact is judged already
    assert await member_of(pool, ws, "fay@x.io") == ["fr"]
    await settle(pool)
    assert await member_of(pool, ws, "fay@x.io") == ["fr"]
    assert len(await seg_events(pool, ws)) == 1  # joined once


async def test_contacts_reads_show_memberships_and_delete_leaves(client, pool, ws):
    await make_list(client, ws, "news")
    await create(client, ws, "fr", FR)
    await create(client, ws, "news_active", IN_NEWS)
    await upsert(client, ws, "gus@x.io", country="FR")
    await upsert(client, ws, "hal@x.io", country="DE")
    await upsert(client, ws, "ida@x.io", country="DE")
    r = await client.post("/api/lists.subscribe", headers=ws.headers, json={
        "workspace_id": ws.id, "contact": {"email": "hal@x.io"}, "list_ids": ["news"]})
    assert r.status_code == 200
    await settle(pool)
    params = [("workspace_id", ws.id), ("segments[]", "fr"), ("segments[]", "news_active")]
    r = await client.get("/api/contacts.list", headers=ws.headers, params=params)
    assert sorted(c["email"] for c in r.json()["contacts"]) == ["gus@x.io", "hal@x.io"]
    r = await client.get("/api/contacts.list", headers=ws.headers, params=[("workspace_id", ws.id), ("segments", "nope")])
    assert r.json()["contacts"] == []
    r = await client.get("/api/contacts.getByEmail", headers=ws.headers,
                         params={"workspace_id": ws.id, "email": "gus@x.io"})
    (membership,) = r.json()["contact"]["contact_segments"]
    assert (membership["email"], membership["segment_id"], membership["version"]) == ("gus@x.io", "fr", 1)
    assert set(membership) == {"email", "segment_id", "version", "matched_at", "computed_at"}

    r = await client.post("/api/contacts.delete", headers=ws.headers, json={"workspace_id": ws.id, "email": "gus@x.io"})
    assert r.status_code == 200
    assert await member_of(pool, ws, "gus@x.io") == []
    assert (await seg_events(pool, ws))[-1] == ("segment.left", "gus@x.io", "fr")
    data = await pool.fetchval("SELECT data FROM events WHERE workspace_id = $1 AND type = 'segment.left'", ws.id)
    assert data == {"email": "gus@x.io", "segment_id": "fr", "segment_name": "Fr"}
    await settle(pool)
    r = await client.get("/api/segments.get", headers=ws.headers, params={"workspace_id": ws.id, "id": "fr"})
    assert r.json()["segment"]["users_count"] == 0


async def test_the_manifest_loops_build_and_follow_changes(client, pool, settings, ws):
    import asyncio

    from postroom.segments.capability import CAPABILITY

    stop = asyncio.Event()
    tasks = [t for loop in CAPABILITY.loops for t in loop(pool, settings, stop)]
    try:
        await upsert(client, ws, "joy@x.io", country="FR")
        await create(client, ws, "fr", FR)

        async def until(check, timeout=10.0):
            deadline = asyncio.get_running_loop().time() + timeout
            while not await check():
                assert asyncio.get_running_loop().time() < deadline, "not within the time"
                await asyncio.sleep(0.05)

        async def active():
            r = await client.get("/api/segments.get", headers=ws.headers, params={"workspace_id": ws.id, "id": "fr"})
            return r.json()["segment"]["status"] == "active"

        await until(active)
        assert await member_of(pool, ws, "joy@x.io") == ["fr"]
        await upsert(client, ws, "kim@x.io", country="FR")

        async def kim_joined():
            return await member_of(pool, ws, "kim@x.io") == ["fr"]

        await until(kim_joined)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def test_custom_events_api_moves_goal_members(client, pool, ws):
    await create(client, ws, "buyers", BUYERS)
    await settle(pool)
    event = {"workspace_id": ws.id, "email": "lea@x.io", "event_name": "order", "external_id": "o-9",
             "goal_type": "purchase", "goal_value": 200, "occurred_at": "2024-05-01T10:00:00Z"}
    r = await client.post("/api/customEvents.upsert", headers=ws.headers, json=event)
    assert r.status_code == 200, r.text
    await settle(pool)
    assert await member_of(pool, ws, "lea@x.io") == ["buyers"]
    r = await client.post("/api/customEvents.upsert", headers=ws.headers,
                          json={**event, "deleted_at": "2024-05-02T10:00:00Z"})
    assert r.status_code == 200, r.text
    await settle(pool)
    assert await member_of(pool, ws, "lea@x.io") == []
    assert [e[:2] for e in await seg_events(pool, ws)] == [("segment.joined", "lea@x.io"), ("segment.left", "lea@x.io")]
