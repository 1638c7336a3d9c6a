"""POST /subscribe with contact.email_hmac (engagement contract 2.7, check 33): the confirm link of
a double opt-in mail, re-subscribing, private lists, and the public form left as it was."""

from __future__ import annotations

import pytest

from helpers import add, assert_json_error, list_events
import prefkit
from prefkit import ANA, H


@pytest.fixture
async def fx(client, pool, settings, ws):
    return await prefkit.make(client, pool, settings, ws)


def body(fx, list_id, email_hmac=H, **contact):
    return {"workspace_id": fx.id, "contact": {"email": ANA, "email_hmac": email_hmac, **contact},
            "list_ids": [list_id]}


async def test_confirm_link_makes_pending_active(client, pool, fx):
    await add(pool, fx.ws, "vip", ANA, "pending")
    r = await client.post("/subscribe", json=body(fx, "vip"))
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await prefkit.status_of(pool, fx.id, "vip") == "active"
    assert [t for t, _, _ in await list_events(pool, fx.ws)] == ["list.confirmed"]
    # Again: nothing more.
    assert (await client.post("/subscribe", json=body(fx, "vip"))).status_code == 200
    assert [t for t, _, _ in await list_events(pool, fx.ws)] == ["list.confirmed"]


async def test_without_hmac_a_private_list_is_refused(client, pool, fx):
    await add(pool, fx.ws, "vip", ANA, "pending")
    r = await client.post("/subscribe", json={"workspace_id": fx.id, "contact": {"email": ANA}, "list_ids": ["vip"]})
    assert_json_error(r, 400, "list is not public")
    assert await prefkit.status_of(pool, fx.id, "vip") == "pending"


async def test_a_private_list_needs_an_existing_membership(client, pool, fx):
    r = await client.post("/subscribe", json=body(fx, "vip"))
    assert_json_error(r, 400, "list is not public")
    assert await prefkit.status_of(pool, fx.id, "vip") is None


@pytest.mark.parametrize("double_optin, after, kind", [(False, "active", "list.resubscribed"),
                                                       (True, "pending", "list.pending")])
async def test_resubscribe(client, pool, fx, double_optin, after, kind):
    await client.post("/api/lists.update", headers=fx.ws.headers,
                      json={"workspace_id": fx.id, "id": "news", "name": "Newsletter", "is_double_optin": double_optin})
    await pool.execute("UPDATE contact_lists SET status = 'unsubscribed' WHERE workspace_id = $1", fx.id)
    r = await client.post("/subscribe", json=body(fx, "news"))
    assert r.status_code == 200
    assert await prefkit.status_of(pool, fx.id, "news") == after
    events = await list_events(pool, fx.ws)
    assert [t for t, _, _ in events] == [kind]
    if double_optin:  # a new confirmation link goes out with the event
        assert events[0][2]["confirm_url"].startswith("http://postroom.test/confirm?")


@pytest.mark.parametrize("status", ["bounced", "complained"])
async def test_suppressed_stay(client, pool, fx, status):
    await pool.execute("UPDATE contact_lists SET status = $2 WHERE workspace_id = $1", fx.id, status)
    assert (await client.post("/subscribe", json=body(fx, "news"))).status_code == 200
    assert await prefkit.status_of(pool, fx.id, "news") == status


async def test_contact_fields_in_the_body_are_ignored(client, pool, fx):
    await pool.execute("UPDATE contact_lists SET status = 'unsubscribed' WHERE workspace_id = $1", fx.id)
    r = await client.post("/subscribe", json=body(fx, "news", first_name="Mallory", phone=None))
    assert r.status_code == 200
    row = await pool.fetchrow("SELECT first_name, phone FROM contacts WHERE workspace_id = $1 AND email = $2", fx.id, ANA)
    assert (row["first_name"], row["phone"]) == ("Ana", "+15550100")


async def test_a_wrong_hmac_is_401_and_changes_nothing(client, pool, fx):
    await add(pool, fx.ws, "vip", ANA, "pending")
    before = await prefkit.stored(pool, fx.id)
    r = await client.post("/subscribe", json=body(fx, "vip", email_hmac="0" * 64))
    assert_json_error(r, 401, "Unauthorized: invalid verification")
    r = await client.post("/subscribe", json={**body(fx, "vip"), "workspace_id": "nope"})
    assert_json_error(r, 401, "Unauthorized: invalid verification")
    r = await client.post("/subscribe", json=body(fx, "vip", email_hmac=5))
    assert_json_error(r, 400, "contact.email_hmac must be a string")
    r = await client.post("/subscribe", json={**body(fx, "vip"), "list_ids": ["gone"]})
    assert_json_error(r, 400, "list not found: gone")
    assert await prefkit.stored(pool, fx.id) == before


async def test_the_owner_shares_the_forms_rate_limit(client, pool, fx):
    for _ in range(10):
        assert (await client.post("/subscribe", json=body(fx, "news"))).status_code == 200
    r = await client.post("/subscribe", json=body(fx, "news"))
    assert r.status_code == 429 and "retry-after" in r.headers
