"""POST /unsubscribe-oneclick (engagement contract 2.4, checks 19-27 and 35): what Gmail sends to
the List-Unsubscribe URL of a marketing mail, the page's JSON call, and what never unsubscribes."""

from __future__ import annotations

import dataclasses
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
from postroom.delivery import mime

from helpers import add, assert_json_error, provider_message
import prefkit
from prefkit import ANA, E, H

GMAIL = {"Content-Type": "application/x-www-form-urlencoded",
         "User-Agent": "Mozilla/5.0 (compatible; Google-Unsubscribe)"}


@pytest.fixture
async def fx(client, pool, settings, ws):
    return await prefkit.make(client, pool, settings, ws)


def header_url(fx) -> str:
    """The List-Unsubscribe URL of m1 as it is on the wire: template data -> message -> MIME."""
    data = prefkit.links(fx)
    message = dataclasses.replace(provider_message(to=ANA, message_id=fx.m1),
                                  list_unsubscribe_url=data["oneclick_unsubscribe_url"])
    parsed = message_from_bytes(mime.to_bytes(message), policy=default_policy)
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    value = str(parsed["List-Unsubscribe"])
    assert value.startswith("<https://") and value.endswith(">")
    return value[1:-1]


def test_template_links_are_the_contract_ones():
    fx = prefkit.Fixture(ws=type("W", (), {"id": "ws_1"})(), m1="m1")
    data = prefkit.links(fx)
    assert data["unsubscribe_url"] == (
        f"{E}/notification-center?action=unsubscribe&email=ana%40example.com&email_hmac={H}&lid=news"
        "&lname=Newsletter&mid=m1&wid=ws_1")
    assert data["notification_center_url"] == f"{E}/notification-center?email=ana%40example.com&email_hmac={H}&wid=ws_1"
    assert data["oneclick_unsubscribe_url"] == (
        f"{E}/unsubscribe-oneclick?email=ana%40example.com&email_hmac={H}&lids=news&mid=m1&wid=ws_1")
    assert data["confirm_subscription_url"] == data["unsubscribe_url"].replace("action=unsubscribe", "action=confirm")


async def test_gmail_one_click_post_unsubscribes(client, pool, fx):
    url = header_url(fx)
    client.cookies.clear()
    r = await client.post(prefkit.local(url), content=b"List-Unsubscribe=One-Click", headers=GMAIL)
    assert r.status_code == 200 and r.json() == {"success": True}
    assert "location" not in r.headers and "set-cookie" not in r.headers
    assert await prefkit.status_of(pool, fx.id, "news") == "unsubscribed"
    assert await prefkit.unsubscribed_at(pool, fx.id, fx.m1) is not None
    assert {"unsubscribe_email", "list.unsubscribed"} <= set(await prefkit.timeline(pool, fx.id))
    events = await prefkit.outbox(pool, fx.id)
    assert events.count("email.unsubscribed") == 1 and events.count("list.unsubscribed") == 1
    data = await pool.fetchval("SELECT data FROM events WHERE workspace_id = $1 AND type = 'email.unsubscribed'", fx.id)
    assert set(data) == {"email", "message_id", "template_id", "broadcast_id", "list_id", "channel", "event_timestamp"}
    assert data["message_id"] == fx.m1 and data["list_id"] == "news" and data["email"] == ANA

    # Repeating it (Gmail retries) answers the same and writes nothing.
    before = await prefkit.stored(pool, fx.id)
    r = await client.post(prefkit.local(url), content=b"List-Unsubscribe=One-Click", headers=GMAIL)
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await prefkit.stored(pool, fx.id) == before


@pytest.mark.parametrize("headers, body", [
    ({"Content-Type": "multipart/form-data; boundary=xyz"},
     b'--xyz\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--xyz--\r\n'),
    ({"Content-Type": "application/x-www-form-urlencoded", "User-Agent": ""}, b"List-Unsubscribe=One-Click"),
    ({}, b""),
])
async def test_multipart_empty_user_agent_and_no_body_work_the_same(client, pool, fx, headers, body):
    r = await client.post(prefkit.local(header_url(fx)), content=body, headers=headers)
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await prefkit.status_of(pool, fx.id, "news") == "unsubscribed"


async def test_bad_or_missing_hmac_changes_nothing(client, pool, fx):
    url = prefkit.local(header_url(fx))
    before = await prefkit.stored(pool, fx.id)
    wrong = url.replace(H, H[:-1] + ("0" if H[-1] != "0" else "1"))
    r = await client.post(wrong, content=b"List-Unsubscribe=One-Click", headers=GMAIL)
    assert_json_error(r, 401, "Unauthorized: invalid verification")
    # Another workspace's id with ana's HMAC, and no workspace at all.
    r = await client.post(url.replace(f"wid={fx.id}", "wid=nope"), content=b"List-Unsubscribe=One-Click", headers=GMAIL)
    assert_json_error(r, 401, "Unauthorized: invalid verification")
    r = await client.post(url.replace(f"wid={fx.id}", "wid=ws_%00x"), headers=GMAIL)
    assert_json_error(r, 400, "wid contains a NUL character")
    assert await prefkit.stored(pool, fx.id) == before


async def test_hmac_is_checked_on_the_normalised_email_and_lowercased(client, pool, fx):
    url = f"/unsubscribe-oneclick?email=%20Ana%40Example.COM&email_hmac={H.upper()}&lids=news&wid={fx.id}"
    r = await client.post(url, content=b"List-Unsubscribe=One-Click", headers=GMAIL)
    assert r.status_code == 200
    assert await prefkit.status_of(pool, fx.id, "news") == "unsubscribed"


@pytest.mark.parametrize("query, message", [
    ("email=ana%40example.com&email_hmac={h}&lids=news", "wid is required"),
    ("wid={w}&email_hmac={h}&lids=news", "email is required"),
    ("wid={w}&email=ana%40example.com&email_hmac={h}", "lids is required"),
    ("wid={w}&email=ana%40example.com&email_hmac={h}&lids=,", "lids is required"),
])
async def test_form_path_names_the_missing_part(client, pool, fx, query, message):
    before = await prefkit.stored(pool, fx.id)
    r = await client.post("/unsubscribe-oneclick?" + query.format(w=fx.id, h=H), content=b"List-Unsubscribe=One-Click",
                          headers=GMAIL)
    assert_json_error(r, 400, message)
    assert await prefkit.stored(pool, fx.id) == before


async def test_notifuse_links_without_hmac_are_vouched_for_by_their_message(client, pool, fx):
    other = await prefkit.add_message(pool, fx.id, "bob@example.com", "news")
    r = await client.post(f"/unsubscribe-oneclick?email=ana%40example.com&lids=news&mid={other}&wid={fx.id}",
                          content=b"List-Unsubscribe=One-Click", headers=GMAIL)
    assert_json_error(r, 401, "Unauthorized: invalid verification")
    r = await client.post(f"/unsubscribe-oneclick?email=ana%40example.com&lids=vip&mid={fx.m1}&wid={fx.id}",
                          content=b"List-Unsubscribe=One-Click", headers=GMAIL)
    assert_json_error(r, 401, "Unauthorized: invalid verification")  # m1 was not sent on vip
    assert await prefkit.status_of(pool, fx.id, "news") == "active"
    r = await client.post(f"/unsubscribe-oneclick?email=ana%40example.com&lids=news&mid={fx.m1}&wid={fx.id}",
                          content=b"List-Unsubscribe=One-Click", headers=GMAIL)
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await prefkit.status_of(pool, fx.id, "news") == "unsubscribed"


async def test_a_message_of_another_contact_is_not_marked(client, pool, fx):
    other = await prefkit.add_message(pool, fx.id, "bob@example.com", "news")
    r = await client.post(f"/unsubscribe-oneclick?email=ana%40example.com&email_hmac={H}&lids=news&mid={other}"
                          f"&wid={fx.id}", headers=GMAIL)
    assert r.status_code == 200
    assert await prefkit.status_of(pool, fx.id, "news") == "unsubscribed"
    assert await prefkit.unsubscribed_at(pool, fx.id, other) is None
    assert "email.unsubscribed" not in await prefkit.outbox(pool, fx.id)


async def test_get_redirects_to_the_center_and_changes_nothing(client, pool, fx):
    url = prefkit.local(header_url(fx))
    before = await prefkit.stored(pool, fx.id)
    r = await client.get(url)
    assert r.status_code == 303
    assert r.headers["location"] == f"{E}/notification-center?email=ana%40example.com&email_hmac={H}&wid={fx.id}"
    r = await client.get(url.replace(H, "0" * 64))
    assert_json_error(r, 405, "Method not allowed")
    assert await prefkit.stored(pool, fx.id) == before


@pytest.mark.parametrize("status", ["bounced", "complained", "unsubscribed"])
async def test_suppressed_memberships_stay_as_they_are(client, pool, fx, status):
    await pool.execute("UPDATE contact_lists SET status = $2 WHERE workspace_id = $1", fx.id, status)
    r = await client.post(prefkit.local(header_url(fx)), content=b"List-Unsubscribe=One-Click", headers=GMAIL)
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await prefkit.status_of(pool, fx.id, "news") == status
    assert "list.unsubscribed" not in await prefkit.outbox(pool, fx.id)


async def test_pending_becomes_unsubscribed_and_unknown_lists_are_nothing(client, pool, fx):
    await add(pool, fx.ws, "vip", ANA, "pending")
    r = await client.post(f"/unsubscribe-oneclick?email=ana%40example.com&email_hmac={H}&lids=vip,gone,b%21d"
                          f"&lids=news&wid={fx.id}", headers=GMAIL)
    assert r.status_code == 200
    assert await prefkit.status_of(pool, fx.id, "vip") == "unsubscribed"
    assert await prefkit.status_of(pool, fx.id, "news") == "unsubscribed"


async def test_json_path_of_the_page(client, pool, fx):
    body = {"wid": fx.id, "email": ANA, "email_hmac": H, "lids": ["news"], "mid": fx.m1}
    before = await prefkit.stored(pool, fx.id)
    r = await client.post("/unsubscribe-oneclick", json=body, headers={"User-Agent": "HeadlessChrome/120"})
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await prefkit.stored(pool, fx.id) == before  # a bot: success, no effect
    r = await client.post("/unsubscribe-oneclick", content=b"[1]", headers={"Content-Type": "application/json",
                                                                              "User-Agent": "Mozilla/5.0"})
    assert_json_error(r, 400, "Invalid request body")
    r = await client.post("/unsubscribe-oneclick", json={**body, "email_hmac": ""}, headers={"User-Agent": "Mozilla/5.0"})
    assert_json_error(r, 400, "email_hmac is required")
    r = await client.post("/unsubscribe-oneclick", json={**body, "lids": "news"}, headers={"User-Agent": "Mozilla/5.0"})
    assert_json_error(r, 400, "lids must be an array of strings")
    r = await client.post("/unsubscribe-oneclick", json={**body, "email_hmac": "f" * 64},
                          headers={"User-Agent": "Mozilla/5.0"})
    assert_json_error(r, 401, "Unauthorized: invalid verification")
    assert await prefkit.stored(pool, fx.id) == before
    r = await client.post("/unsubscribe-oneclick", json=body, headers={"User-Agent": "Mozilla/5.0 Chrome/120"})
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await prefkit.status_of(pool, fx.id, "news") == "unsubscribed"
    assert await prefkit.unsubscribed_at(pool, fx.id, fx.m1) is not None


async def test_per_email_limit_and_no_per_address_limit(client, pool, settings, fx):
    # 200 contacts from one client address: none limited (Gmail posts for everyone).
    emails = [f"c{i}@example.com" for i in range(200)]
    await pool.execute("INSERT INTO contacts (workspace_id, email, created_at, updated_at)"
                       " SELECT $1, e, now(), now() FROM unnest($2::text[]) e", fx.id, emails)
    from postroom.templates.render.context import email_hmac
    for email in emails:
        r = await client.post(f"/unsubscribe-oneclick?email={email}&email_hmac={email_hmac(email, prefkit.SECRET_HEX)}"
                              f"&lids=news&wid={fx.id}", headers=GMAIL)
        assert r.status_code == 200, r.text
    # The 21st for one email within the window is refused, with Retry-After.
    url = prefkit.local(header_url(fx))
    for _ in range(20):
        assert (await client.post(url, headers=GMAIL)).status_code == 200
    r = await client.post(url, headers=GMAIL)
    assert_json_error(r, 429, "Too many requests. Please try again later.")
    assert 1 <= int(r.headers["retry-after"]) <= 60


async def test_other_methods_are_405(client, fx):
    r = await client.put("/unsubscribe-oneclick")
    assert_json_error(r, 405, "Method not allowed")
