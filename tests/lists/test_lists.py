"""Lists, memberships (contactLists.*), lists.subscribe and the import helpers, against PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from helpers import add, list_events, list_timeline, make_contacts, make_list, membership

from postroom.contacts.model import format_time
from postroom.lists import model, store

# ---------------------------------------------------------------- helpers


async def lists_rows(pool, ws):
    async with pool.acquire() as conn:
        return [tuple(r) for r in await conn.fetch(
            "SELECT id, name, is_double_optin, is_public, description, deleted_at IS NULL FROM lists"
            " WHERE workspace_id = $1 ORDER BY id", ws.id)]


async def update_status(client, ws, email, list_id, status):
    return await client.post("/api/contactLists.updateStatus", headers=ws.headers,
                             json={"workspace_id": ws.id, "email": email, "list_id": list_id, "status": status})


# ---------------------------------------------------------------- lists.create / get / list

async def test_create_get_and_list(client, ws):
    created = await make_list(client, ws, "news_2024", name="  Newsletter ", is_double_optin=True,
                              is_public=True, description="Weekly")
    assert created["id"] == "news_2024" and created["name"] == "Newsletter"
    assert created["is_double_optin"] is True and created["is_public"] is True
    assert created["description"] == "Weekly"
    assert created["created_at"].endswith("Z") and created["updated_at"].endswith("Z")
    assert list(created) == ["id", "name", "is_double_optin", "is_public", "description", "created_at", "updated_at"]

    plain = await make_list(client, ws, "B")
    assert plain["is_double_optin"] is False and plain["is_public"] is False
    assert "description" not in plain  # empty description omitted, as Notifuse

    r = await client.get("/api/lists.get", headers=ws.headers, params={"workspace_id": ws.id, "id": "news_2024"})
    assert r.status_code == 200 and r.json() == {"list": created}

    r = await client.get("/api/lists.list", headers=ws.headers, params={"workspace_id": ws.id})
    assert r.status_code == 200
    assert [item["id"] for item in r.json()["lists"]] == ["news_2024", "B"]


async def test_lists_list_empty(client, ws):
    r = await client.get("/api/lists.list", headers=ws.headers, params={"workspace_id": ws.id})
    assert r.status_code == 200 and r.json() == {"lists": []}


@pytest.mark.parametrize("body, message", [
    ({}, "invalid create list request: id is required"),
    ({"id": ""}, "invalid create list request: id is required"),
    ({"id": 5, "name": "x"}, "invalid create list request: id must be a string"),
    ({"id": "bad-id", "name": "x"}, "invalid create list request: id must contain only letters, digits and _"),
    ({"id": "é", "name": "x"}, "invalid create list request: id must contain only letters, digits and _"),
    ({"id": "a" * 33, "name": "x"}, "invalid create list request: id length must be between 1 and 32"),
    ({"id": "ok"}, "invalid create list request: name is required"),
    ({"id": "ok", "name": "   "}, "invalid create list request: name is required"),
    ({"id": "ok", "name": 3}, "invalid create list request: name must be a string"),
    ({"id": "ok", "name": "n" * 256}, "invalid create list request: name length must be between 1 and 255"),
    ({"id": "ok", "name": "n", "is_public": "yes"}, "invalid create list request: is_public must be a boolean"),
    ({"id": "ok", "name": "n", "is_double_optin": 1},
     "invalid create list request: is_double_optin must be a boolean"),
    ({"id": "ok", "name": "n", "description": []}, "invalid create list request: description must be a string"),
    ({"id": "ok", "name": "n", "description": "d" * 2001},
     "invalid create list request: description exceeds 2000 characters"),
])
async def test_create_rejects(client, ws, pool, body, message):
    r = await client.post("/api/lists.create", headers=ws.headers, json={"workspace_id": ws.id, **body})
    assert r.status_code == 400 and r.json() == {"error": message}
    assert await lists_rows(pool, ws) == []


async def test_create_limits_are_inclusive(client, ws):
    created = await make_list(client, ws, "a" * 32, name="n" * 255)
    assert created["id"] == "a" * 32 and len(created["name"]) == 255


async def test_create_duplicate_and_reuse_after_delete(client, ws, pool):
    await make_list(client, ws, "dup", name="First")
    r = await client.post("/api/lists.create", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": "dup", "name": "Second"})
    assert r.status_code == 409 and r.json() == {"error": "list already exists: dup"}
    r = await client.post("/api/lists.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "dup"})
    assert r.status_code == 200
    # The deleted row keeps its id: reuse is refused, the deleted list is not revived.
    r = await client.post("/api/lists.create", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": "dup", "name": "Third"})
    assert r.status_code == 409 and r.json() == {"error": "list already exists: dup"}
    assert await lists_rows(pool, ws) == [("dup", "First", False, False, None, False)]


async def test_list_ids_are_per_workspace(client, ws, new_workspace):
    other = await new_workspace()
    await make_list(client, ws, "shared")
    await make_list(client, other, "shared")
    r = await client.get("/api/lists.get", headers=other.headers, params={"workspace_id": ws.id, "id": "shared"})
    assert r.status_code == 403


async def test_get_errors(client, ws):
    r = await client.get("/api/lists.get", headers=ws.headers, params={"workspace_id": ws.id})
    assert r.status_code == 400 and r.json() == {"error": "id is required"}
    r = await client.get("/api/lists.get", headers=ws.headers, params={"workspace_id": ws.id, "id": "nope"})
    assert r.status_code == 404 and r.json() == {"error": "list not found"}
    r = await client.get("/api/lists.get", headers=ws.headers, params={"workspace_id": ws.id, "id": "no-pe"})
    assert r.status_code == 400 and r.json() == {"error": "id must contain only letters, digits and _"}
    r = await client.get("/api/lists.get", headers=ws.headers, params={"id": "x"})
    assert r.status_code == 400 and r.json() == {"error": "workspace_id is required"}


# ---------------------------------------------------------------- lists.update / delete

async def test_update_keeps_what_is_left_out(client, ws, pool):
    await make_list(client, ws, "L", name="Old", is_double_optin=True, is_public=True, description="d")
    r = await client.post("/api/lists.update", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": "L", "name": "New"})
    assert r.status_code == 200, r.text
    updated = r.json()["list"]
    assert (updated["name"], updated["is_double_optin"], updated["is_public"], updated["description"]) == \
        ("New", True, True, "d")
    r = await client.post("/api/lists.update", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": "L", "name": "New", "is_public": False,
                                "is_double_optin": False, "description": None})
    assert r.status_code == 200
    assert await lists_rows(pool, ws) == [("L", "New", False, False, None, True)]
    assert r.json()["list"]["updated_at"] >= updated["updated_at"]


async def test_update_errors(client, ws, pool):
    await make_list(client, ws, "L", name="Old")
    cases = [
        ({"name": "x"}, 400, "id is required"),
        ({"id": "L"}, 400, "invalid update list request: name is required"),
        ({"id": "L", "name": "x", "is_public": "no"}, 400, "invalid update list request: is_public must be a boolean"),
        ({"id": "missing", "name": "x"}, 404, "list not found"),
    ]
    for body, status, message in cases:
        r = await client.post("/api/lists.update", headers=ws.headers, json={"workspace_id": ws.id, **body})
        assert (r.status_code, r.json()) == (status, {"error": message}), body
    assert await lists_rows(pool, ws) == [("L", "Old", False, False, None, True)]


async def test_delete_is_soft_and_hides_everything(client, ws, pool):
    await make_list(client, ws, "gone")
    await add(pool, ws, "gone", "a@example.com", "active")
    r = await client.post("/api/lists.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "gone"})
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await lists_rows(pool, ws) == [("gone", "List gone", False, False, None, False)]
    assert await membership(pool, ws, "gone", "a@example.com") == ("active", False)  # rows stay
    for path, params in [("/api/lists.get", {"id": "gone"}), ("/api/lists.stats", {"list_id": "gone"}),
                         ("/api/contactLists.getContactsByList", {"list_id": "gone"}),
                         ("/api/contactLists.getByIDs", {"list_id": "gone", "email": "a@example.com"})]:
        r = await client.get(path, headers=ws.headers, params={"workspace_id": ws.id, **params})
        assert r.status_code == 404 and r.json() == {"error": "list not found"}, path
    r = await client.get("/api/lists.list", headers=ws.headers, params={"workspace_id": ws.id})
    assert r.json() == {"lists": []}
    r = await client.get("/api/contactLists.getListsByContact", headers=ws.headers,
                         params={"workspace_id": ws.id, "email": "a@example.com"})
    assert r.json() == {"contact_lists": []}
    r = await client.post("/api/lists.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "gone"})
    assert r.status_code == 404 and r.json() == {"error": "list not found"}
    r = await client.post("/api/lists.update", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": "gone", "name": "back"})
    assert r.status_code == 404


async def test_delete_errors(client, ws):
    r = await client.post("/api/lists.delete", headers=ws.headers, json={"workspace_id": ws.id})
    assert r.status_code == 400 and r.json() == {"error": "id is required"}
    r = await client.post("/api/lists.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "nope"})
    assert r.status_code == 404 and r.json() == {"error": "list not found"}


# ---------------------------------------------------------------- lists.stats

async def test_stats_count_each_status_and_skip_removed(client, ws, pool):
    await make_list(client, ws, "s")
    await make_list(client, ws, "other")
    for i, status in enumerate(["active", "active", "pending", "unsubscribed", "bounced", "bounced", "bounced"]):
        await add(pool, ws, "s", f"u{i}@example.com", status)
    await add(pool, ws, "other", "u0@example.com", "complained")
    await add(pool, ws, "s", "removed@example.com", "active")
    r = await client.post("/api/contactLists.removeContact", headers=ws.headers,
                          json={"workspace_id": ws.id, "email": "removed@example.com", "list_id": "s"})
    assert r.status_code == 200
    r = await client.get("/api/lists.stats", headers=ws.headers, params={"workspace_id": ws.id, "list_id": "s"})
    assert r.status_code == 200
    assert r.json() == {"list_id": "s", "stats": {"total_active": 2, "total_pending": 1, "total_unsubscribed": 1,
                                                 "total_bounced": 3, "total_complained": 0}}


async def test_stats_errors(client, ws):
    r = await client.get("/api/lists.stats", headers=ws.headers, params={"workspace_id": ws.id})
    assert r.status_code == 400 and r.json() == {"error": "list_id is required"}
    r = await client.get("/api/lists.stats", headers=ws.headers, params={"workspace_id": ws.id, "list_id": "x"})
    assert r.status_code == 404 and r.json() == {"error": "list not found"}


# ---------------------------------------------------------------- permissions and methods

async def test_permissions(client, ws, pool):
    await make_list(client, ws, "p")
    reader = {"Authorization": f"Bearer {await ws.key('lists:r')}"}
    nothing = {"Authorization": f"Bearer {await ws.key('contacts:rw')}"}
    r = await client.get("/api/lists.list", headers=reader, params={"workspace_id": ws.id})
    assert r.status_code == 200
    r = await client.get("/api/lists.list", headers=nothing, params={"workspace_id": ws.id})
    assert r.status_code == 403 and r.json() == {"error": "Insufficient permissions: read access to lists required"}
    for path, body in [("/api/lists.create", {"id": "q", "name": "q"}), ("/api/lists.delete", {"id": "p"}),
                       ("/api/contactLists.updateStatus", {"email": "a@b.co", "list_id": "p", "status": "active"})]:
        r = await client.post(path, headers=reader, json={"workspace_id": ws.id, **body})
        assert r.status_code == 403, path
        assert r.json() == {"error": "Insufficient permissions: write access to lists required"}
    assert [row[0] for row in await lists_rows(pool, ws)] == ["p"]


async def test_subscribe_needs_contacts_write_too(client, ws, pool):
    await make_list(client, ws, "p")
    lists_only = {"Authorization": f"Bearer {await ws.key('lists:rw,contacts:r')}"}
    r = await client.post("/api/lists.subscribe", headers=lists_only,
                          json={"workspace_id": ws.id, "contact": {"email": "a@example.com"}, "list_ids": ["p"]})
    assert r.status_code == 403 and r.json() == {"error": "Insufficient permissions: write access to contacts required"}
    contacts_only = {"Authorization": f"Bearer {await ws.key('lists:r,contacts:rw')}"}
    r = await client.post("/api/lists.subscribe", headers=contacts_only,
                          json={"workspace_id": ws.id, "contact": {"email": "a@example.com"}, "list_ids": ["p"]})
    assert r.status_code == 403 and r.json() == {"error": "Insufficient permissions: write access to lists required"}
    both = {"Authorization": f"Bearer {await ws.key('lists:rw,contacts:rw')}"}
    r = await client.post("/api/lists.subscribe", headers=both,
                          json={"workspace_id": ws.id, "contact": {"email": "a@example.com"}, "list_ids": ["p"]})
    assert r.status_code == 200
    assert await membership(pool, ws, "p", "a@example.com") == ("active", False)


async def test_methods_and_auth(client, ws):
    r = await client.post("/api/lists.list", headers=ws.headers, json={"workspace_id": ws.id})
    assert r.status_code == 405 and r.json() == {"error": "Method not allowed"}
    r = await client.get("/api/lists.create", headers=ws.headers, params={"workspace_id": ws.id})
    assert r.status_code == 405
    r = await client.get("/api/lists.list", params={"workspace_id": ws.id})
    assert r.status_code == 401 and r.json() == {"error": "Authorization header is required"}


# ---------------------------------------------------------------- contactLists reads

async def test_get_by_ids(client, ws, pool):
    await make_list(client, ws, "g", name="Gee")
    await add(pool, ws, "g", "a@example.com", "pending")
    r = await client.get("/api/contactLists.getByIDs", headers=ws.headers,
                         params={"workspace_id": ws.id, "email": "  A@Example.COM ", "list_id": "g"})
    assert r.status_code == 200
    cl = r.json()["contact_list"]
    assert list(cl) == ["email", "list_id", "list_name", "status", "created_at", "updated_at"]
    assert (cl["email"], cl["list_id"], cl["list_name"], cl["status"]) == ("a@example.com", "g", "Gee", "pending")

    cases = [({"list_id": "g"}, 400, "email is required"),
             ({"email": "a@example.com"}, 400, "list_id is required"),
             ({"email": "a@example.com", "list_id": "zz"}, 404, "list not found"),
             ({"email": "b@example.com", "list_id": "g"}, 404, "Contact list relationship not found")]
    for params, status, message in cases:
        r = await client.get("/api/contactLists.getByIDs", headers=ws.headers, params={"workspace_id": ws.id, **params})
        assert (r.status_code, r.json()) == (status, {"error": message}), params


async def test_get_lists_by_contact(client, ws, pool):
    await make_list(client, ws, "a")
    await make_list(client, ws, "b")
    await add(pool, ws, "a", "x@example.com", "active")
    await add(pool, ws, "b", "x@example.com", "unsubscribed")
    r = await client.get("/api/contactLists.getListsByContact", headers=ws.headers,
                         params={"workspace_id": ws.id, "email": "X@example.com"})
    assert r.status_code == 200
    assert [(c["list_id"], c["status"]) for c in r.json()["contact_lists"]] == [("a", "active"), ("b", "unsubscribed")]
    r = await client.get("/api/contactLists.getListsByContact", headers=ws.headers,
                         params={"workspace_id": ws.id, "email": "nobody@example.com"})
    assert r.json() == {"contact_lists": []}
    r = await client.get("/api/contactLists.getListsByContact", headers=ws.headers, params={"workspace_id": ws.id})
    assert r.status_code == 400 and r.json() == {"error": "email is required"}


async def test_get_contacts_by_list_pages(client, ws, pool):
    await make_list(client, ws, "big", name="Big")
    emails = [f"user{i:03d}@example.com" for i in range(25)]
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at)"
            " SELECT $1, 'big', e, CASE WHEN right(split_part(e, '@', 1), 1) = '0' THEN 'bounced' ELSE 'active' END,"
            " now() FROM unnest($2::text[]) e", ws.id, list(reversed(emails)))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"workspace_id": ws.id, "list_id": "big", "limit": "10"}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/api/contactLists.getContactsByList", headers=ws.headers, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [c["email"] for c in body["contact_lists"]]
        assert all(c["list_name"] == "Big" for c in body["contact_lists"])
        pages += 1
        cursor = body.get("next_cursor")
        if cursor is None:
            break
        assert pages < 10
    assert seen == emails and pages == 3

    r = await client.get("/api/contactLists.getContactsByList", headers=ws.headers,
                         params={"workspace_id": ws.id, "list_id": "big", "status": "bounced"})
    assert [c["email"] for c in r.json()["contact_lists"]] == ["user000@example.com", "user010@example.com",
                                                               "user020@example.com"]
    assert "next_cursor" not in r.json()


async def test_get_contacts_by_list_errors(client, ws):
    await make_list(client, ws, "l")
    cases = [({}, 400, "list_id is required"),
             ({"list_id": "none"}, 404, "list not found"),
             ({"list_id": "l", "limit": "0"}, 400, "limit must be between 1 and 1000"),
             ({"list_id": "l", "limit": "1001"}, 400, "limit must be between 1 and 1000"),
             ({"list_id": "l", "limit": "ten"}, 400, "limit must be between 1 and 1000"),
             ({"list_id": "l", "cursor": "!!!"}, 400, "invalid cursor encoding"),
             ({"list_id": "l", "status": "gone"}, 400, "invalid status: gone")]
    for params, status, message in cases:
        r = await client.get("/api/contactLists.getContactsByList", headers=ws.headers,
                             params={"workspace_id": ws.id, **params})
        assert (r.status_code, r.json()) == (status, {"error": message}), params
    r = await client.get("/api/contactLists.getContactsByList", headers=ws.headers,
                         params={"workspace_id": ws.id, "list_id": "l"})
    assert r.json() == {"contact_lists": []}


# ---------------------------------------------------------------- contactLists.updateStatus: the state machine

@pytest.mark.parametrize("old, new, kind", [
    ("pending", "active", "list.confirmed"),
    ("unsubscribed", "active", "list.resubscribed"),
    ("bounced", "active", "list.resubscribed"),
    ("active", "unsubscribed", "list.unsubscribed"),
    ("active", "bounced", "list.bounced"),
    ("pending", "complained", "list.complained"),
    ("active", "pending", "list.pending"),
])
async def test_update_status_transitions(client, ws, pool, old, new, kind):
    await make_list(client, ws, "m", name="Em")
    await add(pool, ws, "m", "a@example.com", old)
    r = await update_status(client, ws, " A@example.com", "m", new)
    assert r.status_code == 200
    assert r.json() == {"success": True, "message": "status updated successfully", "found": True}
    assert await membership(pool, ws, "m", "a@example.com") == (new, False)
    events = await list_events(pool, ws)
    assert [(t, s) for t, s, _ in events] == [(kind, "a@example.com")]
    data = events[0][2]
    assert data["contact_list"]["status"] == new and data["contact_list"]["list_name"] == "Em"
    assert data["previous_status"] == old
    async with pool.acquire() as conn:  # times written as contacts.model.format_time writes them
        stored = await conn.fetchrow("SELECT created_at, updated_at FROM contact_lists WHERE workspace_id = $1",
                                     ws.id)
    assert data["contact_list"]["created_at"] == format_time(stored["created_at"])
    assert data["contact_list"]["updated_at"] == format_time(stored["updated_at"])
    timeline = await list_timeline(pool, ws)
    assert len(timeline) == 1
    entry_kind, email, entity_type, entity_id, changes = timeline[0]
    assert (entry_kind, email, entity_type, entity_id) == (kind, "a@example.com", "contact_list", "m")
    assert changes["status"] == {"old": old, "new": new}
    if new == "pending":  # the link to send, until Postroom sends it
        assert data["confirm_url"].startswith("http://postroom.test/confirm?")
        assert changes["confirm_url"] == data["confirm_url"]
    else:
        assert "confirm_url" not in data


async def test_update_status_same_status_writes_nothing(client, ws, pool):
    await make_list(client, ws, "m")
    await add(pool, ws, "m", "a@example.com", "active")
    r = await update_status(client, ws, "a@example.com", "m", "active")
    assert r.json() == {"success": True, "message": "status updated successfully", "found": True}
    assert await list_events(pool, ws) == [] and await list_timeline(pool, ws) == []


async def test_update_status_not_in_list(client, ws, pool):
    await make_list(client, ws, "m")
    await add(pool, ws, "m", "removed@example.com", "active")
    r = await client.post("/api/contactLists.removeContact", headers=ws.headers,
                          json={"workspace_id": ws.id, "email": "removed@example.com", "list_id": "m"})
    assert r.status_code == 200
    for email in ("nobody@example.com", "removed@example.com"):
        r = await update_status(client, ws, email, "m", "active")
        assert r.status_code == 200
        assert r.json() == {"success": True, "message": "contact not in list", "found": False}
    assert await membership(pool, ws, "m", "nobody@example.com") is None
    assert await membership(pool, ws, "m", "removed@example.com") == ("active", True)


async def test_update_status_errors(client, ws, pool):
    await make_list(client, ws, "m")
    await add(pool, ws, "m", "a@example.com", "active")
    cases = [({"list_id": "m", "status": "active"}, 400, "email is required"),
             ({"email": 5, "list_id": "m", "status": "active"}, 400, "email must be a string"),
             ({"email": "a@example.com", "status": "active"}, 400, "list_id is required"),
             ({"email": "a@example.com", "list_id": "m"}, 400, "status is required"),
             ({"email": "a@example.com", "list_id": "m", "status": "deleted"}, 400, "invalid status: deleted"),
             ({"email": "a@example.com", "list_id": "m", "status": "Active"}, 400, "invalid status: Active"),
             ({"email": "a@example.com", "list_id": "m", "status": 1}, 400, "invalid status: Number"),
             ({"email": "a@example.com", "list_id": "nope", "status": "bounced"}, 404, "list not found")]
    for body, status, message in cases:
        r = await client.post("/api/contactLists.updateStatus", headers=ws.headers, json={"workspace_id": ws.id, **body})
        assert (r.status_code, r.json()) == (status, {"error": message}), body
    assert await membership(pool, ws, "m", "a@example.com") == ("active", False)
    assert await list_events(pool, ws) == []


# ---------------------------------------------------------------- contactLists.removeContact

async def test_remove_contact(client, ws, pool):
    await make_list(client, ws, "r", name="Are")
    await add(pool, ws, "r", "a@example.com", "unsubscribed")
    r = await client.post("/api/contactLists.removeContact", headers=ws.headers,
                          json={"workspace_id": ws.id, "email": "A@example.com", "list_id": "r"})
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await membership(pool, ws, "r", "a@example.com") == ("unsubscribed", True)
    events = await list_events(pool, ws)
    assert [(t, s) for t, s, _ in events] == [("list.removed", "a@example.com")]
    assert (await list_timeline(pool, ws))[0][4] == {"status": {"old": "unsubscribed", "new": None}}
    r = await client.get("/api/contactLists.getByIDs", headers=ws.headers,
                         params={"workspace_id": ws.id, "email": "a@example.com", "list_id": "r"})
    assert r.status_code == 404
    # Removing again: not in the list any more.
    r = await client.post("/api/contactLists.removeContact", headers=ws.headers,
                          json={"workspace_id": ws.id, "email": "a@example.com", "list_id": "r"})
    assert r.status_code == 404 and r.json() == {"error": "contact not in list"}
    assert len(await list_events(pool, ws)) == 1


async def test_remove_contact_errors(client, ws):
    cases = [({"list_id": "r"}, 400, "email is required"),
             ({"email": "a@example.com"}, 400, "list_id is required"),
             ({"email": "a@example.com", "list_id": "r"}, 404, "list not found")]
    for body, status, message in cases:
        r = await client.post("/api/contactLists.removeContact", headers=ws.headers,
                              json={"workspace_id": ws.id, **body})
        assert (r.status_code, r.json()) == (status, {"error": message}), body


# ---------------------------------------------------------------- lists.subscribe (authenticated)

async def subscribe(client, ws, contact, list_ids):
    return await client.post("/api/lists.subscribe", headers=ws.headers,
                             json={"workspace_id": ws.id, "contact": contact, "list_ids": list_ids})


async def contact_row(pool, ws, email):
    async with pool.acquire() as conn:
        return await conn.fetchrow("SELECT * FROM contacts WHERE workspace_id = $1 AND email = $2", ws.id, email)


async def test_subscribe_upserts_contact_and_subscribes(client, ws, pool):
    await make_list(client, ws, "a")
    await make_list(client, ws, "doi", is_double_optin=True)
    r = await subscribe(client, ws, {"email": " New@Example.com", "first_name": "Ann"}, ["a", "doi", "a"])
    assert r.status_code == 200 and r.json() == {"success": True}
    assert (await contact_row(pool, ws, "new@example.com"))["first_name"] == "Ann"
    # Authenticated: the caller vouches for consent, so a double opt-in list is active too.
    assert await membership(pool, ws, "a", "new@example.com") == ("active", False)
    assert await membership(pool, ws, "doi", "new@example.com") == ("active", False)
    assert sorted((t, d["contact_list"]["list_id"]) for t, _, d in await list_events(pool, ws)) == \
        [("list.subscribed", "a"), ("list.subscribed", "doi")]
    # The contact is updated by a second call (upsert rules); active memberships stay as they are.
    r = await subscribe(client, ws, {"email": "new@example.com", "first_name": "Anne"}, ["a"])
    assert r.status_code == 200
    assert (await contact_row(pool, ws, "new@example.com"))["first_name"] == "Anne"
    assert len(await list_events(pool, ws)) == 2


@pytest.mark.parametrize("before, double_optin, after, kind", [
    ("unsubscribed", False, "active", "list.resubscribed"),
    ("unsubscribed", True, "pending", "list.pending"),
    ("bounced", False, "bounced", None),
    ("bounced", True, "bounced", None),
    ("complained", False, "complained", None),
    ("active", True, "active", None),
    ("pending", True, "pending", "list.pending"),  # the confirmation link is issued again
])
async def test_subscribe_state_machine(client, ws, pool, before, double_optin, after, kind):
    await make_list(client, ws, "m", is_double_optin=double_optin)
    await add(pool, ws, "m", "a@example.com", before)
    r = await subscribe(client, ws, {"email": "a@example.com"}, ["m"])
    assert r.status_code == 200
    assert await membership(pool, ws, "m", "a@example.com") == (after, False)
    events = await list_events(pool, ws)
    assert [t for t, _, _ in events] == ([kind] if kind else [])
    if kind == "list.pending":
        assert "/confirm?" in events[0][2]["confirm_url"]


async def test_subscribe_revives_removed_membership(client, ws, pool):
    await make_list(client, ws, "m")
    await add(pool, ws, "m", "a@example.com", "bounced")
    await client.post("/api/contactLists.removeContact", headers=ws.headers,
                      json={"workspace_id": ws.id, "email": "a@example.com", "list_id": "m"})
    r = await subscribe(client, ws, {"email": "a@example.com"}, ["m"])
    assert r.status_code == 200
    # Removal forgets the membership: coming back is a new subscription.
    assert await membership(pool, ws, "m", "a@example.com") == ("active", False)
    assert [t for t, _, _ in await list_events(pool, ws)] == ["list.removed", "list.subscribed"]


async def test_subscribe_errors_write_nothing(client, ws, pool):
    await make_list(client, ws, "m")
    cases = [({"list_ids": ["m"]}, "contact field is required"),
             ({"contact": {"email": "bad"}, "list_ids": ["m"]}, "invalid contact: invalid email format"),
             ({"contact": {"email": "a@example.com", "first_name": 1}, "list_ids": ["m"]},
              "invalid contact: invalid type for first_name: expected string, got Number"),
             ({"contact": {"email": "a@example.com"}}, "list_ids is required"),
             ({"contact": {"email": "a@example.com"}, "list_ids": []}, "list_ids is required"),
             ({"contact": {"email": "a@example.com"}, "list_ids": "m"}, "list_ids must be an array of strings"),
             ({"contact": {"email": "a@example.com"}, "list_ids": [1]}, "list_ids must be an array of strings"),
             ({"contact": {"email": "a@example.com"}, "list_ids": ["m", "nope"]}, "list not found: nope"),
             ({"contact": {"email": "a@example.com"}, "list_ids": ["bad-id"]}, "list not found: bad-id"),
             ({"contact": {"email": "a@example.com"}, "list_ids": [f"l{i}" for i in range(101)]},
              "list_ids must have at most 100 items")]
    for body, message in cases:
        r = await client.post("/api/lists.subscribe", headers=ws.headers, json={"workspace_id": ws.id, **body})
        assert (r.status_code, r.json()) == (400, {"error": message}), body
    assert await contact_row(pool, ws, "a@example.com") is None
    assert await membership(pool, ws, "m", "a@example.com") is None
    assert await list_events(pool, ws) == []


async def test_subscribe_private_list_is_fine_when_authenticated(client, ws, pool):
    await make_list(client, ws, "private", is_public=False)
    r = await subscribe(client, ws, {"email": "a@example.com"}, ["private"])
    assert r.status_code == 200
    assert await membership(pool, ws, "private", "a@example.com") == ("active", False)


async def test_concurrent_subscribes_make_one_membership(client, ws, pool):
    await make_list(client, ws, "c")
    results = await asyncio.gather(*[subscribe(client, ws, {"email": "race@example.com"}, ["c"]) for _ in range(8)])
    assert all(r.status_code == 200 for r in results)
    assert await membership(pool, ws, "c", "race@example.com") == ("active", False)
    assert [t for t, _, _ in await list_events(pool, ws)] == ["list.subscribed"]


# ---------------------------------------------------------------- the import helpers

async def test_unknown_list_ids(client, ws, pool):
    await make_list(client, ws, "a")
    await make_list(client, ws, "deleted")
    await client.post("/api/lists.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "deleted"})
    async with pool.acquire() as conn:
        assert await store.unknown_list_ids(conn, ws.id, ["x", "a", "deleted", "x"]) == ["x", "deleted"]
        assert await store.unknown_list_ids(conn, ws.id, ["a"]) == []
        assert await store.unknown_list_ids(conn, ws.id, []) == []


async def test_add_members(client, ws, pool):
    await make_list(client, ws, "a", name="Ay")
    await make_list(client, ws, "doi", is_double_optin=True)
    await make_contacts(pool, ws, [f"{name}@example.com" for name in (
        "unsubscribed", "bounced", "complained", "pending", "active", "removed", "new")])
    for status in ("unsubscribed", "bounced", "complained", "pending", "active"):
        await add(pool, ws, "a", f"{status}@example.com", status)
    await add(pool, ws, "a", "removed@example.com", "unsubscribed")
    async with pool.acquire() as conn:
        await conn.execute("UPDATE contact_lists SET deleted_at = now() WHERE workspace_id = $1"
                           " AND email = 'removed@example.com'", ws.id)
    emails = ["unsubscribed@example.com", "bounced@example.com", "complained@example.com", "pending@example.com",
              "active@example.com", "removed@example.com", "new@example.com", "new@example.com"]
    async with pool.acquire() as conn, conn.transaction():
        await store.add_members(conn, ws.id, emails, ["a", "doi"])
    expected_a = {"unsubscribed": "unsubscribed", "bounced": "bounced", "complained": "complained",
                  "pending": "pending", "active": "active", "removed": "active", "new": "active"}
    for name, status in expected_a.items():
        assert await membership(pool, ws, "a", f"{name}@example.com") == (status, False), name
        # Import subscribes as active even on a double opt-in list (as Notifuse).
        assert await membership(pool, ws, "doi", f"{name}@example.com") == ("active", False), name
    events = await list_events(pool, ws)
    changed = sorted((d["contact_list"]["list_id"], s) for t, s, d in events if t == "list.subscribed")
    assert changed == sorted([("a", "removed@example.com"), ("a", "new@example.com")] +
                             [("doi", e) for e in set(emails)])
    assert len(events) == len(changed)
    assert all(d["contact_list"]["status"] == "active" for _, _, d in events)
    assert {d["contact_list"]["list_name"] for _, _, d in events} == {"Ay", "List doi"}
    assert len(await list_timeline(pool, ws)) == len(events)
    # Again: nothing changes, nothing is recorded.
    async with pool.acquire() as conn, conn.transaction():
        await store.add_members(conn, ws.id, emails, ["a", "doi"])
    assert len(await list_events(pool, ws)) == len(events)


async def test_add_members_at_scale_is_set_based(client, ws, pool):
    await make_list(client, ws, "big")
    emails = [f"bulk{i}@example.com" for i in range(5000)]
    await make_contacts(pool, ws, emails)
    async with pool.acquire() as conn:
        statements = []

        def log(record):
            statements.append(record.query)

        conn.add_query_logger(log)
        try:
            async with conn.transaction():
                await store.add_members(conn, ws.id, emails, ["big", "unknown"])
        finally:
            conn.remove_query_logger(log)
        count = await conn.fetchval("SELECT count(*) FROM contact_lists WHERE workspace_id = $1", ws.id)
    assert count == 5000
    assert len([q for q in statements if "contact_lists" in q or "events" in q]) == 1, statements
    assert len(await list_events(pool, ws)) == 5000


# ---------------------------------------------------------------- contact_created_at on memberships

async def created_at_copies(pool, ws):
    """(list_id, email) -> (the membership's contact_created_at, its contact's created_at), removed
    memberships included."""
    rows = await pool.fetch("SELECT cl.list_id, cl.email, cl.contact_created_at, c.created_at FROM contact_lists cl"
                            "  LEFT JOIN contacts c ON c.workspace_id = cl.workspace_id AND c.email = cl.email"
                            " WHERE cl.workspace_id = $1", ws.id)
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


async def import_contacts(client, ws, contacts, list_ids):
    r = await client.post("/api/contacts.import", headers=ws.headers,
                          json={"workspace_id": ws.id, "contacts": contacts, "subscribe_to_lists": list_ids})
    assert r.status_code == 200, r.text
    assert all(op["action"] != "error" for op in r.json()["operations"]), r.text


async def test_every_way_into_a_list_copies_the_contacts_created_at(client, ws, pool):
    """contacts.list reads a list's members in order of the copy of created_at each membership
    carries: every writer of a membership sets it from the contact."""
    await make_list(client, ws, "a")
    await make_list(client, ws, "pub", is_public=True, is_double_optin=True)
    r = await client.post("/api/contacts.upsert", headers=ws.headers, json={
        "workspace_id": ws.id, "contact": {"email": "known@example.com", "created_at": "2019-05-06T07:08:09.5Z"}})
    assert r.status_code == 200
    # lists.subscribe: a new contact with its own (historic) created_at, and an existing contact
    assert (await subscribe(client, ws, {"email": "sub@example.com", "created_at": "2020-01-02T03:04:05.123456Z"},
                            ["a"])).status_code == 200
    assert (await subscribe(client, ws, {"email": "known@example.com"}, ["a"])).status_code == 200
    # POST /subscribe: a new contact (now), and an existing one, whose created_at it may not change
    for contact in ({"email": "fan@example.com"}, {"email": "known@example.com", "created_at": "2030-01-01T00:00:00Z"}):
        r = await client.post("/subscribe", json={"workspace_id": ws.id, "contact": contact, "list_ids": ["pub"]})
        assert r.status_code == 200, r.text
    # contactLists.updateStatus only changes memberships that exist
    r = await update_status(client, ws, "known@example.com", "pub", "active")
    assert r.json()["found"] is True
    r = await update_status(client, ws, "fan@example.com", "a", "active")
    assert r.json() == {"success": True, "message": "contact not in list", "found": False}
    # import with subscribe_to_lists: new contacts (one with a created_at), an existing contact,
    # and a removed membership that comes back
    r = await client.post("/api/contactLists.removeContact", headers=ws.headers,
                          json={"workspace_id": ws.id, "email": "known@example.com", "list_id": "a"})
    assert r.status_code == 200
    await import_contacts(client, ws, [{"email": "imp@example.com", "created_at": "2018-02-03T04:05:06Z"},
                                       {"email": "imp2@example.com"}, {"email": "known@example.com"}], ["a", "pub"])
    # a removed membership whose contact moved meanwhile, brought back by lists.subscribe
    r = await client.post("/api/contactLists.removeContact", headers=ws.headers,
                          json={"workspace_id": ws.id, "email": "sub@example.com", "list_id": "a"})
    assert r.status_code == 200
    assert (await subscribe(client, ws, {"email": "sub@example.com", "created_at": "2017-01-01T00:00:00Z"},
                            ["a"])).status_code == 200

    copies = await created_at_copies(pool, ws)
    assert set(copies) == {("a", "sub@example.com"), ("a", "known@example.com"), ("pub", "fan@example.com"),
                           ("pub", "known@example.com"), ("a", "imp@example.com"), ("pub", "imp@example.com"),
                           ("a", "imp2@example.com"), ("pub", "imp2@example.com"), ("pub", "sub@example.com")} - \
        {("pub", "sub@example.com")}
    assert all(copy == created for copy, created in copies.values()), copies
    times = {email: format_time(copy) for (_, email), (copy, _) in copies.items()}
    assert times["known@example.com"] == "2019-05-06T07:08:09.5Z"
    assert times["imp@example.com"] == "2018-02-03T04:05:06Z"
    assert times["sub@example.com"] == "2017-01-01T00:00:00Z"
    assert await membership(pool, ws, "a", "known@example.com") == ("active", False)
    assert await membership(pool, ws, "a", "sub@example.com") == ("active", False)


async def test_memberships_follow_a_created_at_given_by_an_import(client, ws, pool):
    await make_list(client, ws, "a")
    await make_list(client, ws, "b")
    await import_contacts(client, ws, [{"email": "x@example.com", "created_at": "2021-01-01T00:00:00Z"},
                                       {"email": "y@example.com", "created_at": "2021-01-02T00:00:00Z"}], ["a", "b"])
    r = await client.post("/api/contactLists.removeContact", headers=ws.headers,
                          json={"workspace_id": ws.id, "email": "x@example.com", "list_id": "b"})
    assert r.status_code == 200
    # x moves to the front, with its removed membership of b; y is imported unchanged
    await import_contacts(client, ws, [{"email": "x@example.com", "created_at": "2022-01-01T00:00:00Z"},
                                       {"email": "y@example.com", "first_name": "Y"}], [])
    copies = await created_at_copies(pool, ws)
    assert len(copies) == 4 and all(copy == created for copy, created in copies.values()), copies
    r = await client.get("/api/contacts.list", headers=ws.headers, params={"workspace_id": ws.id, "list_id": "a"})
    assert [c["email"] for c in r.json()["contacts"]] == ["x@example.com", "y@example.com"]


# ---------------------------------------------------------------- the model, without a database

def test_transitions_table():
    S = model.on_subscribe
    assert S(None, False, False) == model.Change("active", "list.subscribed")
    assert S(None, True, False) == model.Change("active", "list.subscribed")
    assert S(None, True, True) == model.Change("pending", "list.pending")
    assert S(None, False, True) == model.Change("active", "list.subscribed")
    for public in (False, True):
        assert S("unsubscribed", True, public) == model.Change("pending", "list.pending")
        assert S("unsubscribed", False, public) == model.Change("active", "list.resubscribed")
        for status in ("active", "bounced", "complained"):
            assert S(status, True, public) is None and S(status, False, public) is None
    assert model.on_set_status("pending", "active").kind == "list.confirmed"
    assert model.on_set_status("complained", "active").kind == "list.resubscribed"
    assert model.on_set_status("active", "active") is None
    assert model.on_confirm("pending") == model.Change("active", "list.confirmed")
    assert model.on_confirm("active") is None
    for status in (None, "unsubscribed", "bounced", "complained"):
        with pytest.raises(model.ListError):
            model.on_confirm(status)
    assert model.on_import(None).status == "active" and model.on_import("unsubscribed") is None
    with pytest.raises(model.ListError) as exc:
        model.on_remove(None)
    assert exc.value.status == 404
