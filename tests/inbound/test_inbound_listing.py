"""GET /api/inboundWebhookEvents.list (engagement-contract 3.8, checks 61-63), webhooks.register and
webhooks.status (4, checks 64-65), and the integration side effects of delivery-contract 1.5."""

from __future__ import annotations

import datetime
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import inboundkit
from inboundkit import ANA, S
from helpers import assert_json_error

from postroom.inbound import store

LIST = "/api/inboundWebhookEvents.list"


sns_fake, inbound_client, world = inboundkit.fixtures()


def smtp_bounce(i: int, email: str = ANA, **extra) -> dict:
    return {"event": "bounce", "bounce_category": "soft", "recipient": email, "event_id": f"b{i}",
            "timestamp": f"2026-01-0{i}T00:00:00.5Z", **extra}


async def test_pages_follow_the_cursor(world, inbound_client):
    for i in (1, 2, 3):
        assert (await world.post("smtp", smtp_bounce(i))).status_code == 200
    assert (await world.post("smtp", {"event": "delivered", "recipient": ANA, "event_id": "d"})).status_code == 200
    h, params = world.ws.headers, {"workspace_id": world.id, "event_type": "bounce", "limit": "2"}
    first = (await inbound_client.get(LIST, params=params, headers=h)).json()
    assert [e["timestamp"][:10] for e in first["events"]] == ["2026-01-03", "2026-01-02"]
    assert first["has_more"] is True
    second = (await inbound_client.get(LIST, params={**params, "cursor": first["next_cursor"]}, headers=h)).json()
    assert [e["timestamp"][:10] for e in second["events"]] == ["2026-01-01"]
    assert second["has_more"] is False and "next_cursor" not in second


async def test_filters(world, inbound_client):
    await world.post("smtp", smtp_bounce(1, message_id=world.m1))
    await world.post("smtp", smtp_bounce(2, email="bo@example.com"))
    await world.post("smtp", {"event": "complaint", "recipient": ANA, "event_id": "c", "complaint_type": "abuse",
                              "timestamp": "2026-01-05T00:00:00Z"})

    async def ids(**params):
        r = await inbound_client.get(LIST, params={"workspace_id": world.id, **params}, headers=world.ws.headers)
        assert r.status_code == 200, r.text
        return [(e["type"], e["recipient_email"]) for e in r.json()["events"]]

    assert await ids(recipient_email=" ANA@example.com") == [("complaint", ANA), ("bounce", ANA)]
    assert await ids(message_id=world.m1) == [("bounce", ANA)]
    assert await ids(event_type="complaint") == [("complaint", ANA)]
    assert await ids(timestamp_after="2026-01-02T00:00:00.5Z", timestamp_before="2026-01-02T00:00:00.5Z") == [
        ("bounce", "bo@example.com")]
    assert await ids(limit="500") == await ids()
    r = await inbound_client.get(LIST, params={"workspace_id": world.id}, headers=world.ws.headers)
    complaint = r.json()["events"][0]
    assert list(complaint) == ["id", "type", "source", "integration_id", "recipient_email", "timestamp",
                               "raw_payload", "complaint_feedback_type", "created_at"]
    assert complaint["integration_id"] == world.integrations["smtp"]


@pytest.mark.parametrize("params, message", [
    ({"event_type": "open"}, "Invalid parameters: invalid event type: open"),
    ({"limit": "abc"}, "Invalid parameters: invalid limit value: abc"),
    ({"recipient_email": "bad"}, "Invalid parameters: invalid contact email format"),
    ({"timestamp_after": "2026-01-02T00:00:00Z", "timestamp_before": "2026-01-01T00:00:00Z"},
     "Invalid parameters: timestamp_after must be before timestamp_before"),
    ({"timestamp_after": "yesterday"}, "Invalid parameters: invalid timestamp_after time format, expected RFC3339: "
                                       "expected RFC 3339 date-time such as 2023-05-15T14:30:00Z"),
    ({"cursor": "!!"}, "Invalid parameters: invalid cursor"),
])
async def test_bad_parameters(world, inbound_client, params, message):
    r = await inbound_client.get(LIST, params={"workspace_id": world.id, **params}, headers=world.ws.headers)
    assert_json_error(r, 400, message)


async def test_access(world, inbound_client, new_workspace):
    assert (await inbound_client.get(LIST, params={"workspace_id": world.id})).status_code == 401
    other = await new_workspace()
    r = await inbound_client.get(LIST, params={"workspace_id": world.id}, headers=other.headers)
    assert r.status_code == 403
    no_history = await world.ws.key("contacts:r")
    r = await inbound_client.get(LIST, params={"workspace_id": world.id}, headers={"Authorization": f"Bearer {no_history}"})
    assert r.status_code == 403 and r.json()["error"].startswith("Insufficient permissions: read access to message")
    assert_json_error(await inbound_client.get(LIST, headers=world.ws.headers), 400,
                      "Invalid parameters: workspace_id is required")


# ---------------------------------------------------------------- webhooks.register / webhooks.status (4)

async def test_status_gives_the_tokened_callback_url(world, inbound_client, settings):
    pm = world.integrations["postmark"]
    r = await inbound_client.get("/api/webhooks.status", params={"workspace_id": world.id, "integration_id": pm},
                                 headers=world.ws.headers)
    assert r.status_code == 200, r.text
    status = r.json()["status"]
    assert status["email_provider_kind"] == "postmark" and status["is_registered"] is False
    assert [e["event_type"] for e in status["endpoints"]] == ["delivered", "bounce", "complaint"]
    url = status["provider_details"]["callback_url"]
    parts = urlsplit(url)
    assert url.startswith((settings.api_endpoint or "http://postroom.test/").rstrip("/") + "/webhooks/email?")
    assert parse_qs(parts.query) == {"provider": ["postmark"], "workspace_id": [world.id], "integration_id": [pm],
                                     "token": [S]}
    assert all(e["url"] == url and e["active"] is False for e in status["endpoints"])
    assert "add the callback URL" in status["error"]
    # the URL as given works, and the integration then counts as registered
    body = {"RecordType": "Delivery", "MessageID": "p", "Recipient": ANA, "DeliveredAt": "2026-01-01T00:00:00Z"}
    assert (await inbound_client.post(url.removeprefix("http://postroom.test"), json=body)).status_code == 200
    r = await inbound_client.get("/api/webhooks.status", params={"workspace_id": world.id, "integration_id": pm},
                                 headers=world.ws.headers)
    assert r.json()["status"]["is_registered"] is True
    assert "last_event_at" in r.json()["status"]["provider_details"]


async def test_register_rotates_the_secret(world, inbound_client):
    pm = world.integrations["postmark"]
    r = await inbound_client.post("/api/webhooks.register", headers=world.ws.headers, json={
        "workspace_id": world.id, "integration_id": pm, "event_types": ["bounce", "open"], "rotate_secret": True})
    assert r.status_code == 200, r.text
    status = r.json()["status"]
    assert [e["event_type"] for e in status["endpoints"]] == ["bounce"]
    token = parse_qs(urlsplit(status["provider_details"]["callback_url"]).query)["token"][0]
    assert token != S and len(token) == 43
    body = {"RecordType": "Delivery", "MessageID": "p", "Recipient": ANA, "DeliveredAt": "2026-01-01T00:00:00Z"}
    assert (await world.post("postmark", body)).status_code == 401        # the old secret no longer works
    assert (await world.post("postmark", body, token=token)).status_code == 200


async def test_register_errors(world, inbound_client):
    h = world.ws.headers
    r = await inbound_client.post("/api/webhooks.register", headers=h, json={
        "workspace_id": world.id, "integration_id": world.integrations["smtp"]})
    assert_json_error(r, 400, "webhook registration not implemented for provider: smtp")
    missing = str(uuid.uuid4())
    r = await inbound_client.post("/api/webhooks.register", headers=h, json={"workspace_id": world.id,
                                                                              "integration_id": missing})
    assert_json_error(r, 404, f"integration with ID {missing} not found")
    r = await inbound_client.post("/api/webhooks.register", headers=h, json={"workspace_id": world.id})
    assert_json_error(r, 400, "integration_id is required")
    assert_json_error(await inbound_client.get("/api/webhooks.status", params={"integration_id": missing}, headers=h),
                      400, "workspace_id is required")
    r = await inbound_client.get("/api/webhooks.status", params={"workspace_id": world.id, "integration_id": missing},
                                 headers=h)
    assert_json_error(r, 404, f"integration with ID {missing} not found")
    reader = await world.ws.key("workspace:r")
    r = await inbound_client.post("/api/webhooks.register", headers={"Authorization": f"Bearer {reader}"}, json={
        "workspace_id": world.id, "integration_id": world.integrations["postmark"]})
    assert r.status_code == 403


async def test_smtp_status_gives_its_callback_url(world, inbound_client):
    r = await inbound_client.get("/api/webhooks.status", params={"workspace_id": world.id,
                                                                 "integration_id": world.integrations["smtp"]},
                                 headers=world.ws.headers)
    assert r.status_code == 200 and "provider=smtp" in r.json()["status"]["provider_details"]["callback_url"]


# ---------------------------------------------------------------- createIntegration / deleteIntegration (1.5)

async def test_integration_lifecycle(world, inbound_client, pool, settings):
    h = world.ws.headers
    r = await inbound_client.post("/api/workspaces.createIntegration", headers=h, json={
        "workspace_id": world.id, "name": "Another", "type": "email",
        "provider": {"kind": "postmark", "postmark": {"server_token": "t"}, "rate_limit_per_minute": 60,
                     "senders": [{"email": "a@acme.test", "name": "A"}]}})
    integration_id = r.json()["integration_id"]
    async with pool.acquire() as conn:
        made = await store.credentials(conn, settings.key_bytes, world.id, integration_id, create=False)
    assert made is not None and len(made["secret"]) == 43          # made with the integration
    await world.post("smtp", smtp_bounce(1))
    r = await inbound_client.post("/api/workspaces.deleteIntegration", headers=h, json={
        "workspace_id": world.id, "integration_id": integration_id})
    assert r.status_code == 200
    async with pool.acquire() as conn:
        assert await store.credentials(conn, settings.key_bytes, world.id, integration_id, create=False) is None
        # and nothing is made again for an integration that is gone
        assert await store.credentials(conn, settings.key_bytes, world.id, integration_id) is None
    assert len(await world.stored()) == 1    # events of other integrations stay


async def test_a_failing_hook_never_fails_the_call(world, inbound_client, monkeypatch):
    from postroom.inbound import api

    async def broken(*args):
        raise RuntimeError("provider down")

    monkeypatch.setattr(api.HOOKS, "created", broken)
    r = await inbound_client.post("/api/workspaces.createIntegration", headers=world.ws.headers, json={
        "workspace_id": world.id, "name": "Another", "type": "email",
        "provider": {"kind": "postmark", "postmark": {"server_token": "t"}, "rate_limit_per_minute": 60,
                     "senders": [{"email": "a@acme.test", "name": "A"}]}})
    assert r.status_code == 201


async def test_timestamps_keep_their_microseconds(world):
    await world.post("smtp", smtp_bounce(1, timestamp="2026-01-01T00:00:00.123456Z"))
    [event] = await world.stored()
    assert event["timestamp"] == datetime.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=datetime.timezone.utc)
