"""POST /api/contacts.delete: one transaction removing the contact, its memberships and timeline."""

from __future__ import annotations

import asyncio

from helpers import assert_json_error

DELETE = "/api/contacts.delete"


async def upsert(client, ws, **contact):
    r = await client.post("/api/contacts.upsert", headers=ws.headers,
                          json={"workspace_id": ws.id, "contact": contact})
    assert r.status_code == 200, r.text
    return r.json()["contact"]


async def delete(client, ws, email, headers=None):
    return await client.post(DELETE, headers=headers or ws.headers, json={"workspace_id": ws.id, "email": email})


async def footprint(pool, ws_id, email):
    """How many rows of each kind the contact has."""
    out = {}
    for table in ("contacts", "contact_lists", "contact_segments", "contact_timeline"):
        out[table] = await pool.fetchval(f"SELECT count(*) FROM {table} WHERE workspace_id = $1 AND email = $2",
                                         ws_id, email)
    return out


async def with_memberships(pool, ws, email):
    await pool.execute("INSERT INTO lists (workspace_id, id, name) VALUES ($1, 'news', 'News'), ($1, 'promo', 'Promo')"
                       " ON CONFLICT DO NOTHING", ws.id)
    await pool.execute("INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at) VALUES"
                       " ($1, 'news', $2, 'active', now()), ($1, 'promo', $2, 'unsubscribed', now())", ws.id, email)
    await pool.execute("INSERT INTO contact_segments (workspace_id, segment_id, email) VALUES ($1, 'vip', $2)",
                       ws.id, email)


async def count(client, ws):
    r = await client.get("/api/contacts.count", headers=ws.headers, params={"workspace_id": ws.id})
    return r.json()["total_contacts"]


async def test_delete_removes_contact_memberships_and_timeline(client, pool, ws, new_workspace):
    contact = await upsert(client, ws, email="gone@example.com", first_name="Gone", custom_json_1={"k": 1})
    await upsert(client, ws, email="gone@example.com", first_name="Gone again")   # a second timeline entry
    await upsert(client, ws, email="stay@example.com", first_name="Stay")
    await with_memberships(pool, ws, "gone@example.com")
    await with_memberships(pool, ws, "stay@example.com")
    other = await new_workspace()
    await upsert(client, other, email="gone@example.com")
    await with_memberships(pool, other, "gone@example.com")
    assert (await footprint(pool, ws.id, "gone@example.com")) == {
        "contacts": 1, "contact_lists": 2, "contact_segments": 1, "contact_timeline": 2}
    stay_before = await footprint(pool, ws.id, "stay@example.com")
    other_before = await footprint(pool, other.id, "gone@example.com")
    events_before = await pool.fetchval("SELECT max(id) FROM events WHERE workspace_id = $1", ws.id)

    r = await delete(client, ws, "gone@example.com")
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}

    assert (await footprint(pool, ws.id, "gone@example.com")) == {
        "contacts": 0, "contact_lists": 0, "contact_segments": 0, "contact_timeline": 0}
    assert await footprint(pool, ws.id, "stay@example.com") == stay_before
    assert await footprint(pool, other.id, "gone@example.com") == other_before
    events = await pool.fetch("SELECT type, subject, data FROM events WHERE workspace_id = $1 AND id > $2 ORDER BY id",
                              ws.id, events_before)
    # each segment membership leaves with its event (segments-contract), then the contact goes
    assert [(e["type"], e["subject"]) for e in events] == [("segment.left", "gone@example.com"),
                                                           ("contact.deleted", "gone@example.com")]
    assert events[0]["data"] == {"email": "gone@example.com", "segment_id": "vip", "segment_name": None}
    deleted = events[1]["data"]["contact"]
    assert deleted["first_name"] == "Gone again" and deleted["custom_json_1"] == {"k": 1}
    assert deleted["created_at"] == contact["created_at"]
    r = await client.get("/api/contacts.getByEmail", headers=ws.headers,
                         params={"workspace_id": ws.id, "email": "gone@example.com"})
    assert_json_error(r, 404, "Contact not found")
    assert await count(client, ws) == 1
    assert await count(client, other) == 1


async def test_delete_normalises_email_and_contact_can_come_back(client, pool, ws):
    await upsert(client, ws, email="back@example.com")
    r = await delete(client, ws, "  BACK@Example.com ")
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await count(client, ws) == 0
    r = await client.post("/api/contacts.upsert", headers=ws.headers,
                          json={"workspace_id": ws.id, "contact": {"email": "back@example.com"}})
    assert r.json()["action"] == "created"
    assert await count(client, ws) == 1
    kinds = await pool.fetch("SELECT kind FROM contact_timeline WHERE workspace_id = $1 AND email = $2", ws.id,
                             "back@example.com")
    assert [k["kind"] for k in kinds] == ["contact.created"]  # the old history went with the old contact


async def test_delete_unknown_contact_is_404_and_changes_nothing(client, pool, ws):
    await upsert(client, ws, email="here@example.com")
    events_before = await pool.fetchval("SELECT count(*) FROM events WHERE workspace_id = $1", ws.id)
    assert_json_error(await delete(client, ws, "nothere@example.com"), 404, "Contact not found")
    assert await pool.fetchval("SELECT count(*) FROM events WHERE workspace_id = $1", ws.id) == events_before
    assert await count(client, ws) == 1
    # the second of two deletes finds nothing
    assert (await delete(client, ws, "here@example.com")).status_code == 200
    assert_json_error(await delete(client, ws, "here@example.com"), 404, "Contact not found")
    assert await count(client, ws) == 0


async def test_delete_input_errors(client, pool, ws):
    await upsert(client, ws, email="safe@example.com")
    before = await footprint(pool, ws.id, "safe@example.com")
    for body, message in (({}, "email is required"), ({"email": None}, "email is required"),
                          ({"email": ""}, "email is required"), ({"email": "  "}, "email is required"),
                          ({"email": 42}, "email must be a string"), ({"email": ["safe@example.com"]}, "email must be a string"),
                          ({"email": "safe\x00@example.com"}, "invalid email: contains a NUL character")):
        r = await client.post(DELETE, headers=ws.headers, json={"workspace_id": ws.id, **body})
        assert_json_error(r, 400, message)
    r = await client.post(DELETE, headers=ws.headers, json={"email": "safe@example.com"})
    assert_json_error(r, 400, "workspace_id is required")
    r = await client.get(DELETE, headers=ws.headers, params={"workspace_id": ws.id, "email": "safe@example.com"})
    assert_json_error(r, 405, "Method not allowed")
    assert await footprint(pool, ws.id, "safe@example.com") == before


async def test_delete_needs_write_permission(client, pool, ws):
    await upsert(client, ws, email="guarded@example.com")
    reader = {"Authorization": f"Bearer {await ws.key('contacts:r')}"}
    assert_json_error(await delete(client, ws, "guarded@example.com", headers=reader), 403,
                      "Insufficient permissions: write access to contacts required")
    assert (await footprint(pool, ws.id, "guarded@example.com"))["contacts"] == 1
    writer = {"Authorization": f"Bearer {await ws.key('contacts:rw')}"}
    assert (await delete(client, ws, "guarded@example.com", headers=writer)).status_code == 200


async def test_concurrent_deletes_of_one_contact(client, pool, ws):
    await upsert(client, ws, email="race@example.com")
    results = await asyncio.gather(*(delete(client, ws, "race@example.com") for _ in range(6)))
    assert sorted(r.status_code for r in results) == [200] + [404] * 5
    events = await pool.fetchval("SELECT count(*) FROM events WHERE workspace_id = $1 AND type = 'contact.deleted'", ws.id)
    assert events == 1
    assert await count(client, ws) == 0


async def test_delete_racing_upsert_leaves_a_consistent_state(client, pool, ws):
    """An upsert and a delete of one email at the same time: whatever the order, the count and
    the table agree, and a surviving contact has its creation on its timeline."""
    for round_ in range(10):
        email = f"rr{round_}@example.com"
        await upsert(client, ws, email=email)
        up = client.post("/api/contacts.upsert", headers=ws.headers,
                         json={"workspace_id": ws.id, "contact": {"email": email, "first_name": "x"}})
        results = await asyncio.gather(up, delete(client, ws, email))
        assert all(r.status_code == 200 for r in results), [r.text for r in results]
        rows = await footprint(pool, ws.id, email)
        if rows["contacts"]:
            kinds = [r["kind"] for r in await pool.fetch(
                "SELECT kind FROM contact_timeline WHERE workspace_id = $1 AND email = $2 ORDER BY id", ws.id, email)]
            assert kinds[0] == "contact.created"
    actual = await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", ws.id)
    assert await count(client, ws) == actual
