"""Double opt-in confirmation emails, end to end: a subscription that becomes pending (public
/subscribe, a resubscribe through lists.subscribe) -> its list.pending outbox event -> the
confirmations consumer -> the send queue -> the SMTP sink; and lists' double_optin_template."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import logging
from urllib.parse import urlencode

import pytest
from fakes.smtp_sink import Sink, serving
from helpers import assert_json_error, snapshot
from sendkit import deliver, fast
from txkit import SENDERS, messages, ok

from postroom.delivery import confirmation_mail, confirmations, store as delivery_store
from postroom.delivery.capability import CAPABILITY
from postroom.workspaces import secrets as ws_secrets

BASE = "http://postroom.test"   # the test client's URL: the subscribe request's, so the links'
OPTIN_MJML = ("<mjml><mj-body><mj-section><mj-column>"
              "<mj-text><p>Hi {{ contact.first_name }}, say yes to {{ list.name }}</p>"
              '<p><a href="{{ confirm_subscription_url }}">Yes, {{ list.name }}</a></p></mj-text>'
              "</mj-column></mj-section></mj-body></mjml>")


@pytest.fixture(autouse=True)
async def only_this_tests_work(pool):
    """The queue and the outbox are shared by the run: earlier tests' pending events and queued
    mails are not this test's to send."""
    await pool.execute("DELETE FROM email_queue")
    await pool.execute("UPDATE events SET confirmations_consumed_at = now()"
                       " WHERE confirmations_consumed_at IS NULL AND type = 'list.pending'")


@pytest.fixture
async def sink():
    async with serving(Sink()) as s:
        yield s


async def marketing(client, ws, sink, sender_name: str = "Acme") -> str:
    """An SMTP integration on the sink, named the workspace's marketing provider."""
    senders = copy.deepcopy(SENDERS)
    senders[0]["name"] = sender_name
    r = await ok(await client.post("/api/workspaces.createIntegration", headers=ws.headers, json={
        "workspace_id": ws.id, "name": "relay", "type": "email",
        "provider": {"kind": "smtp", "senders": senders, "rate_limit_per_minute": 6000,
                     "smtp": {"host": "127.0.0.1", "port": sink.port, "use_tls": False}}}), 201)
    await ok(await client.post("/api/workspaces.update", headers=ws.headers, json={
        "id": ws.id, "name": "Acme", "settings": {"marketing_email_provider_id": r["integration_id"]}}))
    return r["integration_id"]


async def make_list(client, ws, list_id="news", status=201, **fields):
    body = {"workspace_id": ws.id, "id": list_id, "name": fields.pop("name", "News"), "is_public": True,
            "is_double_optin": True, **fields}
    return await client.post("/api/lists.create", headers=ws.headers, json=body)


async def public_subscribe(client, ws, email, list_id="news", **contact):
    await ok(await client.post("/subscribe", json={"workspace_id": ws.id, "contact": {"email": email, **contact},
                                                   "list_ids": [list_id]}))


async def email_hmac(pool, settings, ws, email: str) -> str:
    """engagement-contract 2.2, computed here from the workspace secret the links are keyed with."""
    async with pool.acquire() as conn:
        key = (await ws_secrets.workspace_secret(conn, ws.id, settings.key_bytes, "email_hmac")).hex()
    return hmac.new(key.encode(), email.encode(), hashlib.sha256).hexdigest()


async def confirm_link(pool, settings, ws, email, list_id, list_name, message_id, base=BASE) -> str:
    """engagement-contract 2.1 `confirm_subscription_url`, written out: keys sorted, form-encoded."""
    query = urlencode([("action", "confirm"), ("email", email), ("email_hmac", await email_hmac(pool, settings, ws, email)),
                       ("lid", list_id), ("lname", list_name), ("mid", message_id), ("wid", ws.id)])
    return f"{base}/notification-center?{query}"


async def events_left(pool, ws) -> int:
    return await pool.fetchval("SELECT count(*) FROM events WHERE workspace_id = $1 AND type = 'list.pending'"
                               " AND confirmations_consumed_at IS NULL", ws.id)


# ---------------------------------------------------------------- the default confirmation

async def test_public_subscribe_sends_one_confirmation_with_the_default(client, ws, pool, settings, sink):
    await marketing(client, ws, sink)
    await ok(await make_list(client, ws, name="News & Views"), 201)
    await public_subscribe(client, ws, "Ana@Example.com", first_name="Ana")
    assert await confirmations.confirm_once(pool, settings) == 1
    assert await events_left(pool, ws) == 0
    await deliver(pool, settings)
    (mail,) = sink.received
    assert mail.rcpt_tos == ["ana@example.com"]
    assert mail.header("From") == "Acme <noreply@acme.test>"
    assert mail.header("Subject") == "Please confirm your subscription to News & Views"
    # no List-Unsubscribe (the person is not subscribed yet) and no List-Id (see the report)
    assert mail.header("List-Unsubscribe") is None and mail.header("List-Unsubscribe-Post") is None
    (m,) = await messages(client, ws, list_id="news")
    assert m["id"] == confirmation_mail.message_id(ws.id, await pool.fetchval(
        "SELECT id FROM events WHERE workspace_id = $1 AND type = 'list.pending'", ws.id))
    assert mail.header("X-Message-ID") == m["id"]
    link = await confirm_link(pool, settings, ws, "ana@example.com", "news", "News & Views", m["id"])
    assert link.startswith(f"{BASE}/notification-center?action=confirm&email=ana%40example.com&email_hmac=")
    assert "&lname=News+%26+Views&" in link
    assert f'href="{link}"' in mail.html          # the button, untracked
    assert link in mail.text and "You asked to receive News & Views at ana@example.com." in mail.text
    assert "<strong>News &amp; Views</strong>" in mail.html   # the list's name escaped in HTML
    assert "/r/" not in mail.html and "/t/" not in mail.html   # no click or open tracking
    assert m["status"] == "sent" and m["list_id"] == "news" and m["contact_email"] == "ana@example.com"
    assert m["template_id"] == confirmation_mail.DEFAULT_TEMPLATE_ID and m["template_version"] == 0
    assert m["message_data"]["data"]["confirm_subscription_url"] == link
    assert m["message_data"]["data"]["list"] == {"id": "news", "name": "News & Views"}
    queued = await pool.fetchval("SELECT count(*) FROM email_queue WHERE workspace_id = $1", ws.id)
    assert queued == 0
    # a second pass finds nothing more to send
    assert await confirmations.confirm_once(pool, settings) == 0


async def test_links_use_the_configured_api_endpoint(client, ws, pool, settings, sink):
    await marketing(client, ws, sink)
    await ok(await make_list(client, ws), 201)
    await public_subscribe(client, ws, "bo@example.com")
    custom = fast(settings, api_endpoint="https://mail.acme.test")
    assert await confirmations.confirm_once(pool, custom) == 1
    await deliver(pool, settings)
    (mail,) = sink.received
    (m,) = await messages(client, ws, list_id="news")
    link = await confirm_link(pool, settings, ws, "bo@example.com", "news", "News", m["id"],
                              base="https://mail.acme.test")
    assert link in mail.text


async def test_the_default_speaks_the_contacts_language_when_the_workspace_does(client, ws, pool, settings, sink):
    await marketing(client, ws, sink)
    await ok(await client.post("/api/workspaces.update", headers=ws.headers, json={
        "id": ws.id, "name": "Acme", "settings": {"languages": ["en", "fr"], "default_language": "en"}}))
    await ok(await make_list(client, ws), 201)
    await public_subscribe(client, ws, "fr@example.com", language="fr-CA", first_name="Élise")
    await public_subscribe(client, ws, "de@example.com", language="de")   # the workspace has no German
    assert await confirmations.confirm_once(pool, settings) == 2
    await deliver(pool, settings)
    subjects = {m.rcpt_tos[0]: m.header("Subject") for m in sink.received}
    assert subjects == {"fr@example.com": "Merci de confirmer votre inscription à News",
                        "de@example.com": "Please confirm your subscription to News"}
    french = next(m for m in sink.received if m.rcpt_tos == ["fr@example.com"])
    assert "Vous avez demandé à recevoir News à l'adresse fr@example.com." in french.text
    assert "Confirmer mon inscription" in french.html


# ---------------------------------------------------------------- the list's own template

async def test_a_list_with_its_own_template(client, ws, pool, settings, sink):
    await marketing(client, ws, sink)
    template = {"workspace_id": ws.id, "id": "optin", "name": "Opt-in", "channel": "email", "category": "opt_in",
                "email": {"editor_mode": "code", "mjml_source": OPTIN_MJML, "reply_to": "lists@acme.test",
                          "subject": "Confirm {{ list.name }}, {{ contact.first_name }}"}}
    await ok(await client.post("/api/templates.create", headers=ws.headers, json=template), 201)
    created = await ok(await make_list(client, ws, double_optin_template={"id": "optin"}), 201)
    assert created["list"]["double_optin_template"] == {"id": "optin", "version": 0}
    got = await ok(await client.get("/api/lists.get", headers=ws.headers, params={"workspace_id": ws.id, "id": "news"}))
    assert got["list"]["double_optin_template"] == {"id": "optin", "version": 0}
    await public_subscribe(client, ws, "cy@example.com", first_name="Cy")
    assert await confirmations.confirm_once(pool, settings) == 1
    await deliver(pool, settings)
    (mail,) = sink.received
    (m,) = await messages(client, ws, list_id="news")
    version = await pool.fetchval("SELECT max(version) FROM templates WHERE workspace_id = $1 AND id = 'optin'", ws.id)
    assert mail.header("Subject") == "Confirm News, Cy" and mail.header("Reply-To") == "lists@acme.test"
    link = await confirm_link(pool, settings, ws, "cy@example.com", "news", "News", m["id"])
    assert f'href="{link}"' in mail.html and "say yes to News" in mail.html
    assert m["template_id"] == "optin" and m["template_version"] == version


async def test_a_pinned_version_and_a_deleted_template(client, ws, pool, settings, sink):
    await marketing(client, ws, sink)
    template = {"workspace_id": ws.id, "id": "optin", "name": "Opt-in", "channel": "email", "category": "opt_in",
                "email": {"editor_mode": "code", "mjml_source": OPTIN_MJML, "subject": "First {{ list.name }}"}}
    await ok(await client.post("/api/templates.create", headers=ws.headers, json=template), 201)
    first = await pool.fetchval("SELECT max(version) FROM templates WHERE workspace_id = $1 AND id = 'optin'", ws.id)
    template["email"]["subject"] = "Second {{ list.name }}"
    await ok(await client.post("/api/templates.update", headers=ws.headers, json=template))
    await ok(await make_list(client, ws, double_optin_template={"id": "optin", "version": first}), 201)
    await public_subscribe(client, ws, "p1@example.com")
    assert await confirmations.confirm_once(pool, settings) == 1
    await ok(await client.post("/api/templates.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": "optin"}))
    await public_subscribe(client, ws, "p2@example.com")
    assert await confirmations.confirm_once(pool, settings) == 1
    await deliver(pool, settings)
    subjects = {m.rcpt_tos[0]: m.header("Subject") for m in sink.received}
    assert subjects == {"p1@example.com": "First News",
                        "p2@example.com": "Please confirm your subscription to News"}   # gone: the default


# ---------------------------------------------------------------- however the membership became pending

async def test_a_resubscribe_to_a_double_optin_list_is_confirmed_by_mail(client, ws, pool, settings, sink):
    await marketing(client, ws, sink)
    await ok(await make_list(client, ws), 201)
    body = {"workspace_id": ws.id, "contact": {"email": "re@example.com"}, "list_ids": ["news"]}
    await ok(await client.post("/api/lists.subscribe", headers=ws.headers, json=body))   # active: the caller vouches
    assert await confirmations.confirm_once(pool, settings) == 0
    await ok(await client.post("/api/contactLists.updateStatus", headers=ws.headers, json={
        "workspace_id": ws.id, "email": "re@example.com", "list_id": "news", "status": "unsubscribed"}))
    await ok(await client.post("/api/lists.subscribe", headers=ws.headers, json=body))   # -> pending
    assert await confirmations.confirm_once(pool, settings) == 1
    await deliver(pool, settings)
    (mail,) = sink.received
    assert mail.rcpt_tos == ["re@example.com"]
    (m,) = await messages(client, ws, list_id="news")
    assert await confirm_link(pool, settings, ws, "re@example.com", "news", "News", m["id"]) in mail.text


async def test_two_pending_events_two_mails_and_none_twice_after_a_restart(client, ws, pool, settings, sink,
                                                                          monkeypatch):
    await marketing(client, ws, sink)
    await ok(await make_list(client, ws), 201)
    await public_subscribe(client, ws, "one@example.com")
    await public_subscribe(client, ws, "two@example.com")

    # a pass that dies between the two events: rolled back whole, nothing queued, nothing consumed
    real = delivery_store.enqueue
    calls = []

    async def dies_on_the_second(conn, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionError("the process died")
        return await real(conn, *args, **kwargs)

    monkeypatch.setattr(delivery_store, "enqueue", dies_on_the_second)
    with pytest.raises(ConnectionError):
        await confirmations.confirm_once(pool, settings)
    monkeypatch.setattr(delivery_store, "enqueue", real)
    assert await events_left(pool, ws) == 2
    assert await pool.fetchval("SELECT count(*) FROM message_history WHERE workspace_id = $1", ws.id) == 0

    # the restarted consumer sends both, once
    assert await confirmations.confirm_once(pool, settings) == 2
    # an event handed out again (its consumed mark lost to a concurrent update) finds its message
    await pool.execute("UPDATE events SET confirmations_consumed_at = NULL WHERE workspace_id = $1"
                       " AND type = 'list.pending'", ws.id)
    assert await confirmations.confirm_once(pool, settings) == 2
    assert await confirmations.confirm_once(pool, settings) == 0
    await deliver(pool, settings)
    assert sorted(m.rcpt_tos[0] for m in sink.received) == ["one@example.com", "two@example.com"]
    assert len(await messages(client, ws, list_id="news")) == 2


async def test_a_single_optin_list_sends_nothing(client, ws, pool, settings, sink):
    await marketing(client, ws, sink)
    await ok(await make_list(client, ws, is_double_optin=False), 201)
    await public_subscribe(client, ws, "solo@example.com")
    assert await confirmations.confirm_once(pool, settings) == 0
    await deliver(pool, settings)
    assert sink.received == []
    assert await messages(client, ws) == []


async def test_a_membership_no_longer_pending_gets_no_mail(client, ws, pool, settings, sink):
    await marketing(client, ws, sink)
    await ok(await make_list(client, ws), 201)
    await public_subscribe(client, ws, "quick@example.com")
    await ok(await client.post("/api/contactLists.updateStatus", headers=ws.headers, json={
        "workspace_id": ws.id, "email": "quick@example.com", "list_id": "news", "status": "active"}))
    assert await confirmations.confirm_once(pool, settings) == 1   # consumed
    await deliver(pool, settings)
    assert sink.received == [] and await messages(client, ws) == []


async def test_without_a_marketing_provider_the_failure_is_recorded(client, ws, pool, settings, caplog):
    await ok(await make_list(client, ws), 201)
    await public_subscribe(client, ws, "lost@example.com")
    with caplog.at_level(logging.WARNING, logger="postroom.delivery.confirmations"):
        assert await confirmations.confirm_once(pool, settings) == 1
    assert any("marketing_email_provider_id" in r.getMessage() and "lost@example.com" in r.getMessage()
               for r in caplog.records)
    assert await events_left(pool, ws) == 0
    assert await pool.fetchval("SELECT count(*) FROM email_queue WHERE workspace_id = $1", ws.id) == 0
    (m,) = await messages(client, ws, list_id="news")
    assert m["status"] == "failed" and "failed_at" in m and m["contact_email"] == "lost@example.com"
    assert m["status_info"] == confirmation_mail.NO_PROVIDER and "marketing_email_provider_id" in m["status_info"]
    failed = await pool.fetch("SELECT data FROM events WHERE workspace_id = $1 AND type = 'email.failed'", ws.id)
    assert [e["data"]["message_id"] for e in failed] == [m["id"]]
    assert failed[0]["data"]["list_id"] == "news" and failed[0]["data"]["status_info"] == m["status_info"]
    kinds = await pool.fetch("SELECT kind FROM contact_timeline WHERE workspace_id = $1 AND entity_id = $2"
                             " ORDER BY id", ws.id, m["id"])
    assert [k["kind"] for k in kinds] == ["insert_message_history", "update_message_history"]
    assert await confirmations.confirm_once(pool, settings) == 0   # recorded once


# ---------------------------------------------------------------- double_optin_template on lists

BAD_REFS = [
    ({"id": "nope"}, "double_optin_template: template not found: nope"),
    ({"id": "post"}, "double_optin_template: template post is not an email template"),
    ({"id": "mail", "version": 99}, "double_optin_template: template not found: mail version 99"),
    ("mail", "double_optin_template must be an object"),
    ({"id": 5}, "double_optin_template.id must be a string"),
    ({}, "double_optin_template.id is required"),
    ({"id": "x" * 33}, "double_optin_template.id length must be between 1 and 32"),
    ({"id": "mail", "version": -1}, "double_optin_template.version must be zero or positive"),
    ({"id": "mail", "version": 1.5}, "double_optin_template.version must be an integer"),
]


@pytest.fixture
async def templated(client, ws, new_workspace):
    """A web template `post`, an email template `mail`, and another workspace's email template `theirs`."""
    web = {"workspace_id": ws.id, "id": "post", "name": "Post", "channel": "web", "category": "blog",
           "web": {"content": {"type": "doc"}, "html": "<p>Hi</p>", "plain_text": "Hi"}}
    await ok(await client.post("/api/templates.create", headers=ws.headers, json=web), 201)
    for owner, template_id in ((ws, "mail"), (await new_workspace(), "theirs")):
        await ok(await client.post("/api/templates.create", headers=owner.headers, json={
            "workspace_id": owner.id, "id": template_id, "name": "Mail", "channel": "email", "category": "opt_in",
            "email": {"editor_mode": "code", "mjml_source": OPTIN_MJML, "subject": "Hi"}}), 201)
    await ok(await make_list(client, ws, list_id="kept", double_optin_template={"id": "mail"}), 201)
    return ws


@pytest.mark.parametrize("ref, message", BAD_REFS + [
    ({"id": "theirs"}, "double_optin_template: template not found: theirs")])
async def test_bad_double_optin_template(client, pool, templated, ref, message):
    ws = templated
    before = await snapshot(pool, ws.id)
    assert_json_error(await make_list(client, ws, list_id="fresh", double_optin_template=ref), 400,
                      "invalid create list request: " + message)
    r = await client.post("/api/lists.update", headers=ws.headers, json={
        "workspace_id": ws.id, "id": "kept", "name": "Kept", "double_optin_template": ref})
    assert_json_error(r, 400, "invalid update list request: " + message)
    assert await snapshot(pool, ws.id) == before


async def test_update_sets_keeps_and_clears_the_template(client, pool, templated):
    ws = templated

    async def update(**body):
        r = await client.post("/api/lists.update", headers=ws.headers,
                              json={"workspace_id": ws.id, "id": "kept", "name": "Kept", **body})
        return (await ok(r))["list"]

    assert (await update())["double_optin_template"] == {"id": "mail", "version": 0}   # left out: kept
    version = await pool.fetchval("SELECT max(version) FROM templates WHERE workspace_id = $1 AND id = 'mail'", ws.id)
    pinned = await update(double_optin_template={"id": "mail", "version": version})
    assert pinned["double_optin_template"] == {"id": "mail", "version": version}
    assert "double_optin_template" not in await update(double_optin_template=None)
    listed = await ok(await client.get("/api/lists.list", headers=ws.headers, params={"workspace_id": ws.id}))
    assert [x.get("double_optin_template") for x in listed["lists"]] == [None]


async def test_the_delivery_loops_send_it_unattended(client, ws, pool, settings, sink):
    """The loops of delivery's manifest, as `postroom worker` runs them: the confirmation
    consumer and the send loop, woken by nothing but their polls and the queue's NOTIFY."""
    await marketing(client, ws, sink)
    await ok(await make_list(client, ws), 201)
    stop = asyncio.Event()
    tasks = [t for loop in CAPABILITY.loops for t in loop(pool, fast(settings), stop)]
    try:
        await public_subscribe(client, ws, "live@example.com")
        await sink.wait_for(lambda: len(sink.received) >= 1)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    (mail,) = sink.received
    assert mail.rcpt_tos == ["live@example.com"]
    assert mail.header("Subject") == "Please confirm your subscription to News"


async def test_a_membership_set_pending_by_the_api_is_mailed(client, ws, pool, settings, sink):
    await marketing(client, ws, sink)
    await ok(await make_list(client, ws), 201)
    await ok(await client.post("/api/lists.subscribe", headers=ws.headers, json={
        "workspace_id": ws.id, "contact": {"email": "ask@example.com"}, "list_ids": ["news"]}))
    await ok(await client.post("/api/contactLists.updateStatus", headers=ws.headers, json={
        "workspace_id": ws.id, "email": "ask@example.com", "list_id": "news", "status": "pending"}))
    assert await confirmations.confirm_once(pool, settings) == 1
    await deliver(pool, settings)
    assert [m.rcpt_tos for m in sink.received] == [["ask@example.com"]]


# ---------------------------------------------------------------- the pure rules

def test_language_choice_of_the_default():
    assert confirmation_mail.language_for("fr", ["en", "fr"], "en") == "fr"
    assert confirmation_mail.language_for("FR_ca", ["en", "fr"], "en") == "fr"
    assert confirmation_mail.language_for("fr", [], "en") == "en"            # the workspace does not speak it
    assert confirmation_mail.language_for(None, [], "de") == "de"            # the workspace's default
    assert confirmation_mail.language_for("it", ["it"], "it") == "en"        # not written: English
    assert set(confirmation_mail.LANGUAGES) == {"en", "fr", "de", "es"}


def test_message_ids_and_the_links_base():
    one = confirmation_mail.message_id("ws1", 41)
    assert one == confirmation_mail.message_id("ws1", 41) != confirmation_mail.message_id("ws1", 42)
    assert one != confirmation_mail.message_id("ws2", 41)
    assert confirmation_mail.endpoint_of_link("https://x.test/pr/confirm?workspace_id=w&token=t") == "https://x.test/pr"
    assert confirmation_mail.endpoint_of_link(None) == "" and confirmation_mail.endpoint_of_link("junk") == ""
