"""GET /api/timeline.list: a contact's history, newest first, in pages."""

from __future__ import annotations

import base64

from helpers import assert_json_error

from postroom.timeline.model import operation_of

TIMELINE = "/api/timeline.list"


async def upsert(client, ws, **contact):
    r = await client.post("/api/contacts.upsert", headers=ws.headers,
                          json={"workspace_id": ws.id, "contact": contact})
    assert r.status_code == 200, r.text
    return r.json()


async def timeline(client, ws, headers=None, **params):
    return await client.get(TIMELINE, headers=headers or ws.headers, params={"workspace_id": ws.id, **params})


async def test_entries_newest_first_with_their_shape(client, pool, ws):
    await upsert(client, ws, email="t@example.com", first_name="Ann")
    await upsert(client, ws, email="t@example.com", first_name="Anna", last_name="Lee")
    await upsert(client, ws, email="t@example.com", first_name="Anna")  # nothing changed: no entry
    await upsert(client, ws, email="other@example.com")
    r = await timeline(client, ws, email="t@example.com")
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["timeline"]
    entries = body["timeline"]
    assert [e["kind"] for e in entries] == ["contact.updated", "contact.created"]
    updated, created = entries
    assert list(updated) == ["id", "email", "operation", "entity_type", "kind", "entity_id", "changes", "created_at"]
    assert updated["operation"] == "update" and created["operation"] == "insert"
    assert updated["email"] == "t@example.com" and updated["entity_type"] == "contact"
    assert updated["entity_id"] == "t@example.com"
    assert updated["changes"] == {"first_name": {"old": "Ann", "new": "Anna"}, "last_name": {"old": None, "new": "Lee"}}
    assert created["changes"] is None  # a creation's values are the contact itself, not a change
    assert isinstance(updated["id"], str) and int(updated["id"]) > int(created["id"])
    assert updated["created_at"].endswith("Z") and updated["created_at"] >= created["created_at"]


async def test_paging_through_a_long_timeline(client, ws):
    for i in range(13):
        await upsert(client, ws, email="long@example.com", custom_number_1=i)
    seen, cursor, sizes = [], None, []
    for _ in range(20):
        params = {"email": "long@example.com", "limit": 5}
        if cursor:
            params["cursor"] = cursor
        body = (await timeline(client, ws, **params)).json()
        seen += [e["id"] for e in body["timeline"]]
        sizes.append(len(body["timeline"]))
        # a new entry between pages lands before the cursor: later pages do not show it
        await upsert(client, ws, email="long@example.com", custom_number_2=len(seen))
        cursor = body.get("next_cursor")
        if cursor is None:
            break
    assert sizes == [5, 5, 3]
    assert len(seen) == len(set(seen)) == 13
    assert [int(i) for i in seen] == sorted((int(i) for i in seen), reverse=True)
    full = (await timeline(client, ws, email="long@example.com", limit=100)).json()["timeline"]
    assert [e["id"] for e in full][-13:] == seen


async def test_default_limit_is_50(client, ws):
    for i in range(52):
        await upsert(client, ws, email="many@example.com", orders_count=i)
    body = (await timeline(client, ws, email="many@example.com")).json()
    assert len(body["timeline"]) == 50 and "next_cursor" in body
    cursor = base64.b64decode(body["next_cursor"]).decode()
    stamp, _, entry_id = cursor.partition("|")
    assert entry_id == body["timeline"][-1]["id"] and stamp == body["timeline"][-1]["created_at"]


async def test_email_is_normalised_and_unknown_contact_has_empty_timeline(client, ws, new_workspace):
    await upsert(client, ws, email="norm@example.com")
    r = await timeline(client, ws, email=" NORM@example.COM ")
    assert [e["kind"] for e in r.json()["timeline"]] == ["contact.created"]
    assert (await timeline(client, ws, email="nobody@example.com")).json() == {"timeline": []}
    other = await new_workspace()
    assert (await timeline(client, other, email="norm@example.com")).json() == {"timeline": []}


async def test_errors(client, ws):
    await upsert(client, ws, email="err@example.com")
    assert_json_error(await timeline(client, ws), 400, "email is required")
    assert_json_error(await timeline(client, ws, email=" "), 400, "email is required")
    assert_json_error(await client.get(TIMELINE, headers=ws.headers, params={"email": "err@example.com"}), 400,
                      "workspace_id is required")
    for bad in ("0", "101", "x", "-3"):
        assert_json_error(await timeline(client, ws, email="err@example.com", limit=bad), 400,
                          "limit must be between 1 and 100")
    enc = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    for bad in ("***", enc("2024-01-01T00:00:00Z|abc"), enc("2024-01-01T00:00:00Z|"), enc("nonsense|5"),
                enc("2024-01-01T00:00:00Z~5"), enc("2024-01-01T00:00:00Z|99999999999999999999")):
        assert_json_error(await timeline(client, ws, email="err@example.com", cursor=bad), 400, "invalid cursor encoding")
    r = await client.post(TIMELINE, headers=ws.headers, json={"workspace_id": ws.id, "email": "err@example.com"})
    assert_json_error(r, 405, "Method not allowed")


async def test_needs_contacts_read_permission(client, ws):
    await upsert(client, ws, email="perm@example.com")
    reader = {"Authorization": f"Bearer {await ws.key('contacts:r')}"}
    r = await timeline(client, ws, headers=reader, email="perm@example.com")
    assert r.status_code == 200 and len(r.json()["timeline"]) == 1
    other = {"Authorization": f"Bearer {await ws.key('lists:rw')}"}
    assert_json_error(await timeline(client, ws, headers=other, email="perm@example.com"), 403,
                      "Insufficient permissions: read access to contacts required")


def test_operation_of_kinds():
    assert operation_of("contact.created") == "insert"
    assert operation_of("list.subscribed") == "insert"
    assert operation_of("contact.updated") == "update"
    assert operation_of("list.unsubscribed") == "update"
    assert operation_of("list.removed") == "delete"
    assert operation_of("contact.deleted") == "delete"
