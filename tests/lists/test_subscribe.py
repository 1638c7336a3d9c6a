"""The public subscribe form (POST /subscribe), confirmation links (GET /confirm), the rate limits
counted in PostgreSQL, and the sealed per-workspace secret."""

from __future__ import annotations

import dataclasses
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from postroom.app import create_app
from postroom.lists import model
from postroom.platform import secrets as sealed_secrets
from postroom.workspaces import secrets as ws_secrets

from helpers import add, list_events, list_timeline, make_list, membership


async def public(client, ws_id, contact, list_ids, **extra):
    return await client.post("/subscribe", json={"workspace_id": ws_id, "contact": contact, "list_ids": list_ids},
                             **extra)


async def contact_row(pool, ws, email):
    async with pool.acquire() as conn:
        return await conn.fetchrow("SELECT * FROM contacts WHERE workspace_id = $1 AND email = $2", ws.id, email)


async def all_events(pool, ws):
    async with pool.acquire() as conn:
        return [r["type"] for r in await conn.fetch("SELECT type FROM events WHERE workspace_id = $1 ORDER BY id", ws.id)]


def local(url: str) -> str:
    """path?query of a confirm_url, for the test client."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def pending_link(pool, ws, email, list_id):
    events = [d for t, s, d in await list_events(pool, ws)
              if t == "list.pending" and s == email and d["contact_list"]["list_id"] == list_id]
    return events[-1]["confirm_url"]


# ---------------------------------------------------------------- POST /subscribe

async def test_public_subscribe_creates_contact_and_membership(client, ws, pool):
    await make_list(client, ws, "pub", is_public=True)
    # No token needed, and a bad one is ignored.
    r = await public(client, ws.id, {"email": " Fan@Example.com ", "first_name": "Fan"}, ["pub"],
                     headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 200 and r.json() == {"success": True}
    assert (await contact_row(pool, ws, "fan@example.com"))["first_name"] == "Fan"
    assert await membership(pool, ws, "pub", "fan@example.com") == ("active", False)
    assert await all_events(pool, ws) == ["contact.created", "list.subscribed"]


async def test_public_subscribe_never_changes_an_existing_contact(client, ws, pool):
    await make_list(client, ws, "pub", is_public=True)
    r = await client.post("/api/contacts.upsert", headers=ws.headers,
                          json={"workspace_id": ws.id, "contact": {"email": "owner@example.com", "first_name": "Real",
                                                                   "phone": "+1555"}})
    assert r.status_code == 200
    before = dict(await contact_row(pool, ws, "owner@example.com"))
    r = await public(client, ws.id, {"email": "owner@example.com", "first_name": "Mallory", "phone": None,
                                     "custom_string_1": "x"}, ["pub"])
    assert r.status_code == 200
    assert dict(await contact_row(pool, ws, "owner@example.com")) == before
    assert await all_events(pool, ws) == ["contact.created", "list.subscribed"]


async def test_public_double_optin_gives_pending_and_a_working_link(client, ws, pool):
    await make_list(client, ws, "doi", name="Digest", is_public=True, is_double_optin=True)
    r = await public(client, ws.id, {"email": "fan@example.com"}, ["doi"])
    assert r.status_code == 200
    assert await membership(pool, ws, "doi", "fan@example.com") == ("pending", False)
    url = await pending_link(pool, ws, "fan@example.com", "doi")
    assert url.startswith("http://postroom.test/confirm?")
    query = parse_qs(urlsplit(url).query)
    assert query["workspace_id"] == [ws.id] and query["list_id"] == ["doi"] and query["email"] == ["fan@example.com"]
    timeline = await list_timeline(pool, ws)
    assert timeline[-1][0] == "list.pending" and timeline[-1][4]["confirm_url"] == url

    r = await client.get(local(url))
    assert r.status_code == 200 and r.json() == {"success": True, "message": "subscription confirmed"}
    assert r.headers["content-type"] == "application/json"
    assert await membership(pool, ws, "doi", "fan@example.com") == ("active", False)
    events = await list_events(pool, ws)
    assert [t for t, _, _ in events] == ["list.pending", "list.confirmed"]
    assert events[-1][2]["contact_list"]["list_name"] == "Digest"
    # A second click changes nothing.
    r = await client.get(local(url))
    assert r.status_code == 200
    assert len(await list_events(pool, ws)) == 2


async def test_public_subscribe_again_while_pending_issues_a_new_link(client, ws, pool):
    await make_list(client, ws, "doi", is_public=True, is_double_optin=True)
    await public(client, ws.id, {"email": "fan@example.com"}, ["doi"])
    await public(client, ws.id, {"email": "fan@example.com"}, ["doi"])
    events = await list_events(pool, ws)
    assert [t for t, _, _ in events] == ["list.pending", "list.pending"]
    r = await client.get(local(events[-1][2]["confirm_url"]))
    assert r.status_code == 200
    assert await membership(pool, ws, "doi", "fan@example.com") == ("active", False)


@pytest.mark.parametrize("before, double_optin, after, kinds", [
    ("unsubscribed", True, "pending", ["list.pending"]),
    ("unsubscribed", False, "active", ["list.resubscribed"]),
    ("bounced", True, "bounced", []),
    ("complained", False, "complained", []),
    ("active", True, "active", []),
])
async def test_public_state_machine(client, ws, pool, before, double_optin, after, kinds):
    await make_list(client, ws, "m", is_public=True, is_double_optin=double_optin)
    await add(pool, ws, "m", "a@example.com", before)
    r = await public(client, ws.id, {"email": "a@example.com"}, ["m"])
    # The answer is the same whatever the state: it tells nothing about the address.
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await membership(pool, ws, "m", "a@example.com") == (after, False)
    assert [t for t, _, _ in await list_events(pool, ws)] == kinds


async def test_public_subscribe_refuses_private_lists_and_writes_nothing(client, ws, pool):
    await make_list(client, ws, "pub", is_public=True)
    await make_list(client, ws, "private")
    for list_ids in (["private"], ["pub", "private"]):
        r = await public(client, ws.id, {"email": "a@example.com"}, list_ids)
        assert r.status_code == 400 and r.json() == {"error": "list is not public"}
    assert await contact_row(pool, ws, "a@example.com") is None
    assert await membership(pool, ws, "pub", "a@example.com") is None
    assert await all_events(pool, ws) == []


async def test_public_subscribe_unknown_lists_and_workspaces(client, ws, pool):
    await make_list(client, ws, "pub", is_public=True)
    await make_list(client, ws, "gone", is_public=True)
    await client.post("/api/lists.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "gone"})
    cases = [(ws.id, ["nope"], "list not found: nope"),
             (ws.id, ["pub", "gone"], "list not found: gone"),
             ("ws_does_not_exist", ["pub"], "list not found: pub")]  # no more than for an unknown list
    for ws_id, list_ids, message in cases:
        r = await public(client, ws_id, {"email": "a@example.com"}, list_ids)
        assert (r.status_code, r.json()) == (400, {"error": message}), (ws_id, list_ids)
    assert await contact_row(pool, ws, "a@example.com") is None
    assert await all_events(pool, ws) == []


async def test_public_subscribe_bad_requests(client, ws):
    await make_list(client, ws, "pub", is_public=True)
    r = await client.post("/subscribe", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json() == {"error": "Invalid request body"}
    r = await client.post("/subscribe", json=[1])
    assert r.status_code == 400 and r.json() == {"error": "Invalid request body"}
    cases = [({"contact": {"email": "a@example.com"}, "list_ids": ["pub"]}, "workspace_id is required"),
             ({"workspace_id": "Bad WS", "contact": {"email": "a@example.com"}, "list_ids": ["pub"]},
              "invalid workspace_id: must be 1-32 characters of a-z, 0-9, _ and -"),
             ({"workspace_id": ws.id, "list_ids": ["pub"]}, "contact field is required"),
             ({"workspace_id": ws.id, "contact": {}, "list_ids": ["pub"]}, "invalid contact: email is required"),
             ({"workspace_id": ws.id, "contact": {"email": "a@example.com"}}, "list_ids is required")]
    for body, message in cases:
        r = await client.post("/subscribe", json=body)
        assert (r.status_code, r.json()) == (400, {"error": message}), body
    r = await client.get("/subscribe")
    assert r.status_code == 405 and r.json() == {"error": "Method not allowed"}
    r = await client.post("/confirm")
    assert r.status_code == 405 and r.json() == {"error": "Method not allowed"}


# ---------------------------------------------------------------- GET /confirm

async def test_forged_and_broken_links_are_refused(client, ws, new_workspace, pool):
    await make_list(client, ws, "doi", is_public=True, is_double_optin=True)
    await public(client, ws.id, {"email": "fan@example.com"}, ["doi"])
    url = await pending_link(pool, ws, "fan@example.com", "doi")
    good = parse_qs(urlsplit(url).query)
    good = {k: v[0] for k, v in good.items()}

    other = await new_workspace()
    await make_list(client, other, "doi", is_public=True, is_double_optin=True)
    await public(client, other.id, {"email": "fan@example.com"}, ["doi"])
    other_token = parse_qs(urlsplit(await pending_link(pool, other, "fan@example.com", "doi")).query)["token"][0]

    forged = [
        {**good, "email": "victim@example.com"},        # someone else's address
        {**good, "list_id": "other"},
        {**good, "expires": str(int(good["expires"]) + 3600)},  # a longer life
        {**good, "token": other_token},                  # signed by another workspace's secret
        {**good, "token": good["token"][:-1] + ("A" if good["token"][-1] != "A" else "B")},
        {**good, "workspace_id": "ws_unknown"},
        {k: v for k, v in good.items() if k != "token"},
        {**good, "expires": "soon"},
        {**good, "workspace_id": "BAD WS"},
        {},
    ]
    for params in forged:
        r = await client.get("/confirm", params=params)
        assert (r.status_code, r.json()) == (400, {"error": "invalid confirmation link"}), params
    assert await membership(pool, ws, "doi", "fan@example.com") == ("pending", False)
    r = await client.get("/confirm", params=good)
    assert r.status_code == 200


async def test_expired_link(client, ws, pool, settings):
    await make_list(client, ws, "doi", is_public=True, is_double_optin=True)
    await public(client, ws.id, {"email": "fan@example.com"}, ["doi"])
    async with pool.acquire() as conn:
        secret = await ws_secrets.workspace_secret(conn, ws.id, settings.key_bytes, model.CONFIRM_SECRET)
    old = model.confirm_url("http://x", secret, ws.id, "doi", "fan@example.com", time.time() - model.CONFIRM_TTL - 10)
    r = await client.get(local(old))
    assert r.status_code == 400 and r.json() == {"error": "confirmation link has expired"}
    assert await membership(pool, ws, "doi", "fan@example.com") == ("pending", False)


async def test_link_of_a_membership_that_moved_on(client, ws, pool):
    await make_list(client, ws, "doi", is_public=True, is_double_optin=True)
    await public(client, ws.id, {"email": "fan@example.com"}, ["doi"])
    url = await pending_link(pool, ws, "fan@example.com", "doi")
    r = await client.post("/api/contactLists.updateStatus", headers=ws.headers,
                          json={"workspace_id": ws.id, "email": "fan@example.com", "list_id": "doi",
                                "status": "unsubscribed"})
    assert r.status_code == 200
    r = await client.get(local(url))
    assert r.status_code == 400 and r.json() == {"error": "subscription is not pending confirmation"}
    assert await membership(pool, ws, "doi", "fan@example.com") == ("unsubscribed", False)
    await client.post("/api/lists.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "doi"})
    r = await client.get(local(url))
    assert r.status_code == 400 and r.json() == {"error": "list not found"}


async def test_confirm_links_use_the_configured_endpoint(settings, dsn, pool, new_workspace):
    app = create_app(dataclasses.replace(settings, api_endpoint="https://mail.example.org/"), dsn, pool=pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://internal") as c:
        ws = await new_workspace()
        await make_list(c, ws, "doi", is_public=True, is_double_optin=True)
        await public(c, ws.id, {"email": "fan@example.com"}, ["doi"])
        url = await pending_link(pool, ws, "fan@example.com", "doi")
        assert url.startswith("https://mail.example.org/confirm?")
        assert (await c.get(local(url))).status_code == 200


# ---------------------------------------------------------------- rate limits

async def window_number(pool) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT floor(extract(epoch FROM now()) / $1)::bigint", model.RATE_WINDOW)


async def in_one_window(pool, new_workspace, burst):
    """Runs burst(ws) in a fresh workspace until one run stays inside one rate-limit window (at
    most 3 runs): counters start over with each window, so a burst across a window's end would
    be counted in two. Returns (ws, what burst returned)."""
    for _ in range(3):
        before = await window_number(pool)
        ws = await new_workspace()
        result = await burst(ws)
        if await window_number(pool) == before:
            return ws, result
    raise AssertionError("three bursts in a row crossed a rate-limit window")


async def test_rate_limit_per_email(client, pool, new_workspace):
    async def burst(ws):
        await make_list(client, ws, "pub", is_public=True)
        await make_list(client, ws, "pub2", is_public=True)
        first = [await public(client, ws.id, {"email": "spam@example.com"}, ["pub"]) for _ in range(model.EMAIL_LIMIT)]
        return first, await public(client, ws.id, {"email": "Spam@example.com"}, ["pub2"])

    ws, (first, r) = await in_one_window(pool, new_workspace, burst)
    assert [x.status_code for x in first] == [200] * model.EMAIL_LIMIT
    assert r.status_code == 429
    assert r.json() == {"error": "Too many subscription attempts. Please try again in a few minutes."}
    assert 1 <= int(r.headers["retry-after"]) <= model.RATE_WINDOW
    assert await membership(pool, ws, "pub2", "spam@example.com") is None  # refused before writing
    # Another address from the same client is still welcome.
    r = await public(client, ws.id, {"email": "other@example.com"}, ["pub2"])
    assert r.status_code == 200
    # The counters live in PostgreSQL.
    async with pool.acquire() as conn:
        hits = await conn.fetchval("SELECT hits FROM subscribe_rate_limits WHERE workspace_id = $1 AND bucket = $2",
                                   ws.id, "email:spam@example.com")
    assert hits == model.EMAIL_LIMIT + 1


async def test_rate_limit_per_address_is_shared_by_server_processes(client, app, settings, dsn, pool, new_workspace):
    # A second app on the same database stands for a second server process.
    second = create_app(settings, dsn, pool=pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://second") as other:
        async def burst(ws):
            await make_list(client, ws, "pub", is_public=True)
            first = [await public(client if i % 2 else other, ws.id, {"email": f"u{i}@example.com"}, ["pub"])
                     for i in range(model.IP_LIMIT)]
            return first, [await public(c, ws.id, {"email": "late@example.com"}, ["pub"]) for c in (client, other)]

        ws, (first, late) = await in_one_window(pool, new_workspace, burst)
    assert [x.status_code for x in first] == [200] * model.IP_LIMIT
    for r in late:
        assert r.status_code == 429 and "retry-after" in r.headers
    assert await membership(pool, ws, "pub", "late@example.com") is None
    # Another client address has its own counter.
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as elsewhere:
        r = await public(elsewhere, ws.id, {"email": "late@example.com"}, ["pub"])
        assert r.status_code == 200


async def test_rate_limit_window_starts_over(client, pool, new_workspace):
    async def burst(ws):
        await make_list(client, ws, "pub", is_public=True)
        return [await public(client, ws.id, {"email": "spam@example.com"}, ["pub"])
                for _ in range(model.EMAIL_LIMIT + 1)][-1]

    ws, r = await in_one_window(pool, new_workspace, burst)
    assert r.status_code == 429
    async with pool.acquire() as conn:  # as if the window had ended
        await conn.execute("UPDATE subscribe_rate_limits SET window_start = window_start - interval '2 minutes'"
                           " WHERE workspace_id = $1", ws.id)
    r = await public(client, ws.id, {"email": "spam@example.com"}, ["pub"])
    assert r.status_code == 200


async def test_rate_limits_are_per_workspace(client, ws, new_workspace):
    other = await new_workspace()
    for w in (ws, other):
        await make_list(client, w, "pub", is_public=True)
    for _ in range(model.EMAIL_LIMIT + 1):
        await public(client, ws.id, {"email": "spam@example.com"}, ["pub"])
    r = await public(client, other.id, {"email": "spam@example.com"}, ["pub"])
    assert r.status_code == 200


# ---------------------------------------------------------------- the sealed workspace secret

async def test_secret_is_sealed_and_bound_to_its_row(client, ws, new_workspace, pool, settings):
    await make_list(client, ws, "doi", is_public=True, is_double_optin=True)
    await public(client, ws.id, {"email": "fan@example.com"}, ["doi"])
    async with pool.acquire() as conn:
        sealed = bytes(await conn.fetchval("SELECT sealed FROM workspace_secrets WHERE workspace_id = $1"
                                           " AND name = $2", ws.id, model.CONFIRM_SECRET))
        secret = await ws_secrets.workspace_secret(conn, ws.id, settings.key_bytes, model.CONFIRM_SECRET)
        again = await ws_secrets.workspace_secret(conn, ws.id, settings.key_bytes, model.CONFIRM_SECRET)
    assert len(secret) == ws_secrets.SECRET_BYTES and again == secret
    assert secret not in sealed and len(sealed) > ws_secrets.SECRET_BYTES + 12
    context = ws_secrets.secret_context(ws.id, model.CONFIRM_SECRET)
    assert sealed_secrets.decrypt(settings.key_bytes, sealed, context) == secret
    with pytest.raises(sealed_secrets.SecretError):  # copied to another workspace, it does not open
        sealed_secrets.decrypt(settings.key_bytes, sealed, ws_secrets.secret_context("ws_other", model.CONFIRM_SECRET))
    with pytest.raises(sealed_secrets.SecretError):  # nor with another SECRET_KEY
        sealed_secrets.decrypt(b"another key" * 4, sealed, context)
    other = await new_workspace()
    async with pool.acquire() as conn:
        assert await ws_secrets.workspace_secret(conn, other.id, settings.key_bytes, model.CONFIRM_SECRET,
                                                 create=False) is None
        assert await ws_secrets.workspace_secret(conn, other.id, settings.key_bytes, model.CONFIRM_SECRET) != secret
        with pytest.raises(ws_secrets.SecretUnreadable):
            await ws_secrets.workspace_secret(conn, ws.id, b"another key" * 4, model.CONFIRM_SECRET)


def test_confirm_token_checks():
    secret = b"s" * 32
    url = model.confirm_url("https://h/", secret, "ws_1", "news", "a@example.com", 1_000_000)
    assert url.startswith("https://h/confirm?workspace_id=ws_1&list_id=news&email=a%40example.com&expires=")
    params = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    req = model.parse_confirm(params)
    model.check_confirm(secret, req, 1_000_000)
    with pytest.raises(model.ListError, match="invalid confirmation link"):
        model.check_confirm(b"t" * 32, req, 1_000_000)
    with pytest.raises(model.ListError, match="invalid confirmation link"):
        model.check_confirm(None, req, 1_000_000)
    with pytest.raises(model.ListError, match="confirmation link has expired"):
        model.check_confirm(secret, req, 1_000_000 + model.CONFIRM_TTL + 1)
