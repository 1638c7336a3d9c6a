"""/t/ and /r/ end to end (engagement contract 1.6-1.9, checks 3-18): tokens minted by real
transactional sends, hits recorded once with their timeline entries and outbox events, every click
counted per link, and everything that must record nothing getting the contract's answer."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import os
import time
import uuid

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from helpers import assert_json_error
from trackkit import (BROWSER, E, GMAIL_PROXY, add_notification, entries, events, message, ok, path_of, recorded,
                      send, set_settings, tokens_of, unqueue, workspace)

from postroom.app import create_app
from postroom.delivery import store as delivery_store
from postroom.delivery.model import Outgoing, Source
from postroom.platform.config import Settings
from postroom.templates.render import signed_tracking

UA = {"User-Agent": BROWSER}
A_DESTINATION = "https://x.test/a?b=2&a=1&utm_source=nl&utm_content=news_tpl"
B_DESTINATION = "https://x.test/b?utm_campaign=x"
EVENT_KEYS = {"email", "message_id", "template_id", "broadcast_id", "list_id", "channel", "event_timestamp"}
NOTHING = (None, None, ["insert_message_history"], [], [])  # what a message shows when no hit was recorded


@dataclasses.dataclass
class World:
    ws: object
    other: object  # a second workspace of this installation
    sent: dict  # scenario -> (message id, {"r": click tokens, "t": open tokens})


@pytest.fixture(scope="module")
async def world(client, pool, settings) -> World:
    """One workspace (tracking on, E = https://t.example, UTM source `nl`) and a message per
    scenario, sent through transactional.send; then 7 s pass, so their hits may be recorded."""
    ws = await workspace(pool, settings)
    await add_notification(client, ws, utm={"utm_source": "nl"})
    sent = {}
    for name in ("open", "click", "bots", "bad", "off", "rotation"):
        mid, html = await send(client, pool, ws, f"{name}@example.com")
        sent[name] = (mid, tokens_of(html))
    other = await workspace(pool, settings)
    await asyncio.sleep(7.1)
    return World(ws, other, sent)


def t(token: str) -> str:
    return f"/t/{token}"


def r(token: str) -> str:
    return f"/r/{token}"


def assert_pixel(response: httpx.Response, head: bool = False) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    assert response.headers["pragma"] == "no-cache" and response.headers["expires"] == "0"
    assert "set-cookie" not in response.headers
    if not head:
        assert response.content.startswith(b"\x89PNG") and len(response.content) == 825


def assert_redirect(response: httpx.Response, destination: str) -> None:
    assert response.status_code == 303, response.text
    assert response.headers["location"] == destination
    assert response.headers["cache-control"] == "no-store" and response.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in response.headers


def assert_no_redirect(response: httpx.Response, *hidden: str) -> None:
    assert not 300 <= response.status_code < 400 and "location" not in response.headers, response.headers
    for value in hidden:
        assert value not in response.text


# ---------------------------------------------------------------- opens (checks 3, 4)

async def test_first_open_is_recorded_once(client, pool, world):
    mid, found = world.sent["open"]
    (token,) = found["t"]
    assert_pixel(await client.get(t(token), headers=UA))
    m = await message(pool, world.ws, mid)
    assert m["opened_at"] is not None and m["clicked_at"] is None
    timeline = await entries(pool, world.ws, mid)
    assert [k for k, _ in timeline] == ["insert_message_history", "update_message_history", "open_email"]
    opened = timeline[-1][1]
    assert list(opened) == ["opened_at"] and opened["opened_at"]["old"] is None and opened["opened_at"]["new"]
    ((kind, data),) = await events(pool, world.ws, mid)
    assert kind == "email.opened" and EVENT_KEYS <= set(data)
    assert (data["email"], data["message_id"], data["template_id"], data["channel"]) == \
        ("open@example.com", mid, "news_tpl", "email")
    assert data["broadcast_id"] is None and data["list_id"] is None and data["event_timestamp"].endswith("Z")
    assert "url" not in data
    before = await recorded(pool, world.ws, mid)
    assert_pixel(await client.get(t(token), headers=UA))  # check 4: again, nothing new
    assert await recorded(pool, world.ws, mid) == before


# ---------------------------------------------------------------- clicks (checks 10, 11)

async def link_stats(client, ws, mid: str) -> list[dict]:
    r_ = await client.get("/api/messages.linkStats", headers=ws.headers,
                          params={"workspace_id": ws.id, "message_id": mid})
    return (await ok(r_))["links"]


async def test_clicks_redirect_set_times_once_and_count_every_click(client, pool, world):
    mid, found = world.sent["click"]
    first, second = found["r"]
    assert_redirect(await client.get(r(first), headers=UA), A_DESTINATION)
    m = await message(pool, world.ws, mid)
    assert m["clicked_at"] is not None and m["opened_at"] == m["clicked_at"]  # a click implies an open
    assert [k for k, _ in await entries(pool, world.ws, mid)] == [
        "insert_message_history", "update_message_history", "click_email", "update_message_history", "open_email"]
    (clicked, c_data), (opened, _) = await events(pool, world.ws, mid)
    assert (clicked, opened) == ("email.clicked", "email.opened")
    assert c_data["url"] == A_DESTINATION and EVENT_KEYS <= set(c_data)
    (link,) = await link_stats(client, world.ws, mid)
    assert (link["link_index"], link["url"], link["clicks"]) == (0, A_DESTINATION, 1)
    assert link["first_clicked_at"] == link["last_clicked_at"]

    assert_redirect(await client.get(r(second), headers=UA), B_DESTINATION)  # check 11: UTM not doubled
    assert (await message(pool, world.ws, mid))["clicked_at"] == m["clicked_at"]
    assert len(await events(pool, world.ws, mid)) == 2 and len(await entries(pool, world.ws, mid)) == 5
    assert [(x["link_index"], x["clicks"]) for x in await link_stats(client, world.ws, mid)] == [(0, 1), (1, 1)]

    assert_redirect(await client.get(r(first), headers=UA), A_DESTINATION)  # every click counts
    links = await link_stats(client, world.ws, mid)
    assert [(x["link_index"], x["clicks"]) for x in links] == [(0, 2), (1, 1)]
    assert links[0]["last_clicked_at"] > links[0]["first_clicked_at"]
    assert len(await events(pool, world.ws, mid)) == 2


# ---------------------------------------------------------------- not recorded, same answer (checks 5-7, 12)

async def test_bots_head_requests_and_early_hits_record_nothing(client, pool, world, settings):
    mid, found = world.sent["bots"]
    (open_token,), (click, _) = found["t"], found["r"]
    assert_pixel(await client.head(t(open_token), headers=UA), head=True)  # check 7
    assert (await client.head(r(click), headers=UA)).status_code == 303
    for agent in ("Mozilla/5.0 (compatible; Googlebot/2.1)", "", "curl/8.4.0", "Mozilla/5.0 HeadlessChrome/131"):
        assert_pixel(await client.get(t(open_token), headers={"User-Agent": agent}))
        assert_redirect(await client.get(r(click), headers={"User-Agent": agent}), A_DESTINATION)
    assert await recorded(pool, world.ws, mid) == NOTHING

    fresh, html = await send(client, pool, world.ws, "early@example.com")  # checks 5, 12: within 7 s
    early = tokens_of(html)
    assert_pixel(await client.get(t(early["t"][0]), headers=UA))
    assert_redirect(await client.get(r(early["r"][0]), headers=UA), A_DESTINATION)
    assert await recorded(pool, world.ws, fresh) == NOTHING
    future = signed_tracking(settings.key_bytes, E, mid, world.ws.id, int(time.time()) + 3600)  # clock skew
    assert_pixel(await client.get(path_of(future.open_url()), headers=UA))
    assert await recorded(pool, world.ws, mid) == NOTHING

    assert_pixel(await client.get(t(open_token), headers={"User-Agent": GMAIL_PROXY}))  # check 6: Gmail's proxy
    assert (await message(pool, world.ws, mid))["opened_at"] is not None


# ---------------------------------------------------------------- bad tokens (checks 8, 9, 13, 14, 18)

def notifuse_token(plaintext: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(hashlib.sha256(b"nf-tracking-obfuscation-2024").digest()).encrypt(nonce, plaintext.encode(), None)
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def changed(token: str, at: int) -> str:
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1:]


async def test_tampered_truncated_and_foreign_tokens_record_nothing(client, pool, world, settings):
    mid, found = world.sent["bad"]
    (open_token,), (click, _) = found["t"], found["r"]
    old = int(time.time()) - 60
    other_installation = signed_tracking(b"another installation's key material", E, mid, world.ws.id, old)
    bad_clicks = [changed(click, 5), changed(click, len(click) // 2), changed(click, len(click) - 1),
                  click[:-4], click[:20], click + "AA", open_token, "garbage", "x" * 5000,
                  path_of(other_installation.click_url(A_DESTINATION, 0)).rsplit("/", 1)[1]]
    for bad in bad_clicks:
        response = await client.get(r(bad), headers=UA)
        assert_json_error(response, 400, "Invalid token")
        assert_no_redirect(response, "x.test")
    assert_json_error(await client.get("/r/", headers=UA), 400, "Missing token")

    bad_opens = [changed(open_token, 5), changed(open_token, len(open_token) - 1), open_token[:-3], click,
                 "garbage", path_of(other_installation.open_url()).rsplit("/", 1)[1]]
    for bad in [*bad_opens, ""]:
        assert_pixel(await client.get(t(bad), headers=UA))  # check 8: no error body, ever

    # Notifuse's key (checks 9, 14): the pixel, and a page instead of a redirect
    assert_pixel(await client.get(t(notifuse_token(f"{mid}\n{world.ws.id}\n{old}")), headers=UA))
    page = await client.get(r(notifuse_token(f"{mid}\n{world.ws.id}\n{old}\nhttps://evil.test")), headers=UA)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert_no_redirect(page)
    assert 'You are being taken to <a href="https://evil.test"' in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"

    # minted by this installation for another workspace: valid, but the message is not that
    # workspace's (check 18), so the redirect happens and nothing is written anywhere
    foreign = signed_tracking(settings.key_bytes, E, mid, world.other.id, old)
    assert_pixel(await client.get(path_of(foreign.open_url()), headers=UA))
    assert_redirect(await client.get(path_of(foreign.click_url("https://x.test/c", 0)), headers=UA),
                    "https://x.test/c")
    ghost = signed_tracking(settings.key_bytes, E, str(uuid.uuid4()), world.ws.id, old)
    assert_pixel(await client.get(path_of(ghost.open_url()), headers=UA))
    assert_redirect(await client.get(path_of(ghost.click_url("https://x.test/d", 0)), headers=UA), "https://x.test/d")

    assert await recorded(pool, world.ws, mid) == NOTHING
    for ws in (world.ws, world.other):
        assert not await pool.fetchval("SELECT count(*) FROM message_link_clicks WHERE workspace_id = $1"
                                       " AND message_id <> ALL($2::text[])", ws.id,
                                       [world.sent["click"][0], world.sent["bots"][0]])
    assert not await pool.fetchval("SELECT count(*) FROM events WHERE workspace_id = $1", world.other.id)


# ---------------------------------------------------------------- legacy paths and methods (checks 15, 16)

async def test_legacy_paths_never_record_and_never_redirect(client, pool, world):
    mid = world.sent["bad"][0]
    visit = await client.get("/visit", params={"mid": mid, "wid": world.ws.id, "ts": "0",
                                               "url": "https://evil.test/x?a=1&b=<2>"}, headers=UA)
    assert visit.status_code == 200 and visit.headers["content-type"].startswith("text/html")
    assert_no_redirect(visit, "<2>")
    assert 'href="https://evil.test/x?a=1&amp;b=&lt;2&gt;"' in visit.text
    script = await client.get("/visit", params={"url": "javascript:alert(1)"}, headers=UA)
    assert script.status_code == 200 and "<a " not in script.text
    assert_json_error(await client.get("/visit", params={"mid": mid, "wid": world.ws.id}), 400,
                      "Missing redirect URL")
    assert_pixel(await client.get("/opens", params={"mid": mid, "wid": world.ws.id, "ts": "0"}, headers=UA))
    assert_pixel(await client.get("/opens", headers=UA))  # Notifuse: 400 without mid/wid; the pixel always
    assert await recorded(pool, world.ws, mid) == NOTHING


async def test_other_methods_are_refused(client, world):
    _, found = world.sent["bad"]
    for method, path in (("POST", t(found["t"][0])), ("POST", r(found["r"][0])), ("PUT", "/opens"),
                         ("DELETE", "/visit"), ("POST", "/t/"), ("PATCH", "/r/")):
        response = await client.request(method, path)
        assert_json_error(response, 405, "Method not allowed")
        assert response.headers["allow"] == "GET, HEAD"


# ---------------------------------------------------------------- the switch, read per request (check 17)

async def test_tracking_switched_off_after_sending_records_nothing(client, pool, world):
    mid, found = world.sent["off"]
    await set_settings(pool, world.ws, {"email_tracking_enabled": False})
    try:
        assert_redirect(await client.get(r(found["r"][0]), headers=UA), A_DESTINATION)
        assert_pixel(await client.get(t(found["t"][0]), headers=UA))
        assert await recorded(pool, world.ws, mid) == NOTHING
    finally:
        await set_settings(pool, world.ws, {"email_tracking_enabled": True})
    assert_pixel(await client.get(t(found["t"][0]), headers=UA))  # on again: recorded
    assert (await message(pool, world.ws, mid))["opened_at"] is not None


# ---------------------------------------------------------------- key rotation (0.3)

async def test_links_survive_a_secret_rotation(pool, dsn, settings, world):
    mid, found = world.sent["rotation"]
    rotated = dataclasses.replace(settings, secret_key="a-new-secret-" + "y" * 40,
                                  previous_secret_keys=(settings.secret_key,))
    forgetful = dataclasses.replace(settings, secret_key="a-new-secret-" + "y" * 40)
    for s, recorded_after in ((forgetful, False), (rotated, True)):
        transport = httpx.ASGITransport(app=create_app(s, dsn, pool=pool))
        async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as c:
            response = await c.get(r(found["r"][0]), headers=UA)
        if recorded_after:
            assert_redirect(response, A_DESTINATION)
        else:
            assert_json_error(response, 400, "Invalid token")
        assert ((await message(pool, world.ws, mid))["clicked_at"] is not None) is recorded_after
    assert Settings(previous_secret_keys=("a", "b")).previous_key_bytes == (b"a", b"b")


# ---------------------------------------------------------------- per-link statistics (1.9)

async def test_link_stats_of_a_broadcast_and_their_bad_input(client, pool, settings, world):
    ws = world.ws
    old = int(time.time()) - 60
    mids = []
    for email in ("b1@example.com", "b2@example.com"):
        async with pool.acquire() as conn:
            mid, _ = await delivery_store.enqueue(conn, settings.key_bytes, Outgoing(
                workspace_id=ws.id, integration_id=ws.integration_id, contact_email=email,
                from_address="noreply@acme.test", from_name="Acme", subject="s", html="<p>x</p>",
                template_id="news_tpl", template_version=1, source_type=Source.BROADCAST, source_id="bc1"), "fake")
        mids.append(mid)
        await unqueue(pool, ws, mid)
    first, second = (signed_tracking(settings.key_bytes, E, mid, ws.id, old) for mid in mids)
    for url in (first.click_url("https://x.test/p?u=1", 0), first.click_url("https://x.test/p?u=1", 0),
                second.click_url("https://x.test/p?u=2", 0), second.click_url("https://x.test/q", 1)):
        assert (await client.get(path_of(url), headers=UA)).status_code == 303
    (clicked, _), = [e for e in await events(pool, ws, mids[0]) if e[0] == "email.clicked"]
    r_ = await client.get("/api/messages.broadcastLinkStats", headers=ws.headers,
                          params={"workspace_id": ws.id, "broadcast_id": "bc1"})
    assert (await ok(r_))["links"] == [
        {"link_index": 0, "url": "https://x.test/p?u=2", "clicks": 3, "unique_clicks": 2},
        {"link_index": 1, "url": "https://x.test/q", "clicks": 1, "unique_clicks": 1}]
    assert (await ok(await client.get("/api/messages.broadcastLinkStats", headers=ws.headers,
                                      params={"workspace_id": ws.id, "broadcast_id": "nope"})))["links"] == []
    assert await link_stats(client, ws, str(uuid.uuid4())) == []
    assert_json_error(await client.get("/api/messages.linkStats", headers=ws.headers,
                                       params={"workspace_id": ws.id}), 400, "message_id is required")
    assert_json_error(await client.get("/api/messages.broadcastLinkStats", headers=ws.headers,
                                       params={"workspace_id": ws.id}), 400, "broadcast_id is required")
    assert_json_error(await client.get("/api/messages.linkStats", headers=ws.headers,
                                       params={"message_id": mids[0]}), 400, "workspace_id is required")
    reader = {"Authorization": f"Bearer {await ws.key('contacts:r')}"}  # no message_history read
    assert (await client.get("/api/messages.linkStats", headers=reader,
                             params={"workspace_id": ws.id, "message_id": mids[0]})).status_code == 403
