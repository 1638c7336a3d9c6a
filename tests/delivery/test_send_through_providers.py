"""The send queue through the real provider modules (no injected factory): an integration made
with workspaces.createIntegration, a queued message, the worker's connect and send, against the
SMTP sink and a local Postmark that checks its token."""

from __future__ import annotations

import pytest
from fakes.http_providers import PostmarkFake, hooked, serving as serving_http
from fakes.smtp_sink import Sink, serving as serving_smtp
from sendkit import drain, fast, message

from postroom.delivery import store
from postroom.delivery.model import Outgoing, Source
from postroom.delivery.worker import SendWorker

SENDERS = [{"email": "noreply@acme.test", "name": "Acme, Inc.", "is_default": True}]


@pytest.fixture(autouse=True)
async def only_this_tests_queue(pool):
    await pool.execute("DELETE FROM email_queue")


async def create(client, ws, provider: dict) -> str:
    r = await client.post("/api/workspaces.createIntegration", headers=ws.headers, json={
        "workspace_id": ws.id, "name": "Relay", "type": "email",
        "provider": {"senders": SENDERS, "rate_limit_per_minute": 6000, **provider}})
    assert r.status_code == 201, r.text
    return r.json()["integration_id"]


async def queue(pool, settings, ws, integration_id: str, kind: str) -> str:
    out = Outgoing(workspace_id=ws.id, integration_id=integration_id, contact_email="jane@example.com",
                   from_address="noreply@acme.test", from_name="Acme, Inc.", subject="Your order",
                   html="<p>Thanks</p>", text="Thanks", template_id="welcome", template_version=1,
                   source_type=Source.TRANSACTIONAL, source_id="welcome_email", data={})
    async with pool.acquire() as conn:
        message_id, _ = await store.enqueue(conn, settings.key_bytes, out, kind, settings.delivery_max_attempts)
    return message_id


async def test_smtp_integration_delivers_to_the_sink(client, ws, pool, settings):
    async with serving_smtp(Sink()) as sink:
        iid = await create(client, ws, {"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": sink.port,
                                                                 "use_tls": False}})
        mid = await queue(pool, settings, ws, iid, "smtp")
        worker = SendWorker(pool, fast(settings))
        try:
            await drain(worker)
        finally:
            await worker.aclose()
        (mail,) = sink.received
    assert mail.rcpt_tos == ["jane@example.com"]
    assert mail.header("X-Message-ID") == mid and mail.header("From") == '"Acme, Inc." <noreply@acme.test>'
    assert mail.text.strip() == "Thanks" and "<p>Thanks</p>" in mail.html
    m = await message(pool, ws.id, mid)
    assert m["status"] == "sent" and m["provider_message_id"] == mail.header("Message-ID")


async def test_postmark_integration_sends_with_its_sealed_token(client, ws, pool, settings):
    async with serving_http(PostmarkFake(server_token="pm-token")) as fake, hooked(fake) as context:
        iid = await create(client, ws, {"kind": "postmark", "postmark": {"server_token": "pm-token"}})
        mid = await queue(pool, settings, ws, iid, "postmark")
        worker = SendWorker(pool, fast(settings), context=context)
        await drain(worker)
        (request,) = fake.requests
    assert request.headers["x-postmark-server-token"] == "pm-token"
    assert request.body["Metadata"] == {"notifuse_message_id": mid} and request.body["TextBody"] == "Thanks"
    m = await message(pool, ws.id, mid)
    assert m["status"] == "sent" and m["provider_message_id"]


async def test_a_wrong_token_is_a_provider_failure_kept_for_retry(client, ws, pool, settings):
    async with serving_http(PostmarkFake(server_token="right")) as fake, hooked(fake) as context:
        iid = await create(client, ws, {"kind": "postmark", "postmark": {"server_token": "wrong"}})
        mid = await queue(pool, settings, ws, iid, "postmark")
        worker = SendWorker(pool, fast(settings), context=context)
        assert await worker.run_once() == 1
    m = await message(pool, ws.id, mid)
    assert m["status"] == "queued" and m["status_info"].startswith("postmark: HTTP 401")
    row = await pool.fetchrow("SELECT status, attempts FROM email_queue WHERE message_id = $1", mid)
    assert tuple(row) == ("failed", 1)
