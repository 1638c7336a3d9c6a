"""webhookSubscriptions.* endpoints, and the pure rules behind them (model, sealed secrets)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress

import pytest
import standardwebhooks

from postroom.platform import secrets as sealed
from postroom.webhooks import model

API = "/api/webhookSubscriptions."
GOOD = {"name": "CRM", "url": "https://hooks.example.com/in", "event_types": ["contact.created", "list.subscribed"]}


async def create(client, ws, **over):
    r = await client.post(API + "create", headers=ws.headers, json={"workspace_id": ws.id, **GOOD, **over})
    assert r.status_code == 201, r.text
    return r.json()["subscription"]


async def listed(client, ws):
    r = await client.get(API + "list", headers=ws.headers, params={"workspace_id": ws.id})
    assert r.status_code == 200, r.text
    return r.json()["subscriptions"]


# ---------------------------------------------------------------- endpoints

async def test_event_types(client, ws):
    r = await client.get(API + "eventTypes", headers=ws.headers)
    assert r.status_code == 200
    types = r.json()["event_types"]
    assert len(types) == 24 and types[0] == "contact.created" and "custom_event.deleted" in types
    assert "email.failed" in types   # final send failures (delivery-contract 4.5)
    assert "list.removed" in types and "email.unsubscribed" in types


async def test_create_returns_subscription_with_standard_secret(client, ws, pool):
    sub = await create(client, ws, custom_event_filters={"event_names": ["purchase"]})
    assert sub["name"] == "CRM" and sub["url"] == GOOD["url"] and sub["enabled"] is True
    assert sub["event_types"] == GOOD["event_types"]
    assert sub["settings"] == {"event_types": GOOD["event_types"], "custom_event_filters": {"event_names": ["purchase"]}}
    assert sub["custom_event_filters"] == {"event_names": ["purchase"]}
    assert len(sub["id"]) == 32 and sub["created_at"].endswith("Z")
    assert sub["secret"].startswith("whsec_")
    assert len(base64.b64decode(sub["secret"][6:], validate=True)) == 32
    # the secret is stored sealed, not in clear
    async with pool.acquire() as conn:
        stored = bytes(await conn.fetchval("SELECT secret FROM webhook_subscriptions WHERE workspace_id = $1", ws.id))
    assert sub["secret"].encode() not in stored and sub["secret"][6:].encode() not in stored
    r = await client.get(API + "get", headers=ws.headers, params={"workspace_id": ws.id, "id": sub["id"]})
    assert r.status_code == 200 and r.json()["subscription"] == sub
    assert await listed(client, ws) == [sub]


@pytest.mark.parametrize("body, message", [
    ({"name": ""}, "name is required"),
    ({"name": None}, "name is required"),
    ({"name": 5}, "name must be a string"),
    ({"name": "x" * 256}, "name must be at most 255 characters"),
    ({"url": ""}, "URL is required"),
    ({"url": 7}, "URL must be a string"),
    ({"url": "ftp://example.com/x"}, "URL must use http or https scheme"),
    ({"url": "example.com/hook"}, "URL must use http or https scheme"),
    ({"url": "https:///path"}, "URL must have a host"),
    ({"url": "http://[::1/x"}, "invalid URL: Invalid IPv6 URL"),
    ({"url": "https://example.com:99999/"}, "invalid URL: Port out of range 0-65535"),
    ({"url": "https://exa mple.com/"}, "invalid URL: it contains spaces or control characters"),
    ({"url": "http://169.254.169.254/latest/meta-data"},
     "URL must not point to a link-local or cloud metadata address: 169.254.169.254"),
    ({"url": "http://[fe80::1]/"}, "URL must not point to a link-local or cloud metadata address: fe80::1"),
    ({"url": "http://[fd00:ec2::254]/"}, "URL must not point to a link-local or cloud metadata address: fd00:ec2::254"),
    ({"url": "http://[::ffff:169.254.169.254]/"},
     "URL must not point to a link-local or cloud metadata address: ::ffff:169.254.169.254"),
    # a name (here the decimal spelling of the address) that resolves to a metadata address
    ({"url": "http://2852039166/"},
     "URL host 2852039166 resolves to a link-local or cloud metadata address: 169.254.169.254"),
    ({"event_types": []}, "at least one event type is required"),
    ({"event_types": None}, "at least one event type is required"),
    ({"event_types": "contact.created"}, "event_types must be an array of strings"),
    ({"event_types": ["contact.created", "contact.exploded"]}, "invalid event type: contact.exploded"),
    ({"event_types": [3]}, "invalid event type: 3"),
    ({"custom_event_filters": []}, "custom_event_filters must be an object"),
    ({"custom_event_filters": {"goal_types": "x"}}, "custom_event_filters.goal_types must be an array of strings"),
])
async def test_create_rejects(client, ws, body, message):
    r = await client.post(API + "create", headers=ws.headers, json={"workspace_id": ws.id, **GOOD, **body})
    assert r.status_code == 400, r.text
    assert r.json() == {"error": message}
    assert await listed(client, ws) == []


async def test_create_validation_order_first_failure_wins(client, ws):
    r = await client.post(API + "create", headers=ws.headers,
                          json={"workspace_id": ws.id, "name": "", "url": "ftp://x", "event_types": ["nope"]})
    assert r.json() == {"error": "name is required"}
    r = await client.post(API + "create", headers=ws.headers,
                          json={"workspace_id": ws.id, "name": "n", "url": "ftp://x", "event_types": ["nope"]})
    assert r.json() == {"error": "URL must use http or https scheme"}


@pytest.mark.parametrize("verb, method", [
    ("get", "GET"), ("update", "POST"), ("delete", "POST"), ("toggle", "POST"),
    ("regenerateSecret", "POST"), ("deliveries", "GET"), ("test", "POST")])
async def test_unknown_id_is_404(client, ws, verb, method):
    sub = await create(client, ws)
    key = "subscription_id" if verb == "deliveries" else "id"
    params = {"workspace_id": ws.id, key: "0" * 32}
    if method == "GET":
        r = await client.get(API + verb, headers=ws.headers, params=params)
    else:
        r = await client.post(API + verb, headers=ws.headers, json={**params, "enabled": False})
    assert r.status_code == 404, r.text
    assert r.json() == {"error": "webhook subscription not found"}
    assert await listed(client, ws) == [sub]


@pytest.mark.parametrize("verb, method", [
    ("get", "GET"), ("update", "POST"), ("delete", "POST"), ("toggle", "POST"),
    ("regenerateSecret", "POST"), ("test", "POST")])
async def test_missing_id_is_400(client, ws, verb, method):
    if method == "GET":
        r = await client.get(API + verb, headers=ws.headers, params={"workspace_id": ws.id})
    else:
        r = await client.post(API + verb, headers=ws.headers, json={"workspace_id": ws.id})
    assert r.status_code == 400 and r.json() == {"error": "id is required"}


async def test_update_changes_only_given_fields(client, ws):
    sub = await create(client, ws)
    r = await client.post(API + "update", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": sub["id"], "name": "Renamed",
                                "event_types": ["contact.updated", "contact.updated"]})
    assert r.status_code == 200, r.text
    new = r.json()["subscription"]
    assert new["name"] == "Renamed" and new["event_types"] == ["contact.updated"]
    assert new["url"] == sub["url"] and new["secret"] == sub["secret"] and new["enabled"] is True
    assert new["updated_at"] >= sub["updated_at"]


@pytest.mark.parametrize("body, message", [
    ({"event_types": ["contact.created", "bogus"]}, "invalid event type: bogus"),
    ({"event_types": []}, "at least one event type is required"),
    ({"url": "gopher://x"}, "URL must use http or https scheme"),
    ({"url": "http://169.254.170.2/creds"},
     "URL must not point to a link-local or cloud metadata address: 169.254.170.2"),
    ({"name": "  "}, "name is required"),
    ({"enabled": "yes"}, "enabled must be a boolean"),
])
async def test_update_rejects_and_keeps_stored(client, ws, body, message):
    sub = await create(client, ws)
    r = await client.post(API + "update", headers=ws.headers, json={"workspace_id": ws.id, "id": sub["id"], **body})
    assert r.status_code == 400 and r.json() == {"error": message}
    assert await listed(client, ws) == [sub]


async def test_toggle(client, ws):
    sub = await create(client, ws)
    for bad, message in ((None, "enabled is required"), ("false", "enabled must be a boolean")):
        r = await client.post(API + "toggle", headers=ws.headers, json={"workspace_id": ws.id, "id": sub["id"],
                                                                        "enabled": bad})
        assert r.status_code == 400 and r.json() == {"error": message}
    r = await client.post(API + "toggle", headers=ws.headers, json={"workspace_id": ws.id, "id": sub["id"],
                                                                    "enabled": False})
    assert r.status_code == 200 and r.json()["subscription"]["enabled"] is False
    assert (await listed(client, ws))[0]["enabled"] is False


async def test_regenerate_secret(client, ws):
    sub = await create(client, ws)
    r = await client.post(API + "regenerateSecret", headers=ws.headers, json={"workspace_id": ws.id, "id": sub["id"]})
    assert r.status_code == 200
    secret = r.json()["subscription"]["secret"]
    assert secret != sub["secret"] and secret.startswith("whsec_")
    assert (await listed(client, ws))[0]["secret"] == secret


async def test_delete(client, ws):
    sub = await create(client, ws)
    r = await client.post(API + "delete", headers=ws.headers, json={"workspace_id": ws.id, "id": sub["id"]})
    assert r.status_code == 200 and r.json() == {"success": True}
    assert await listed(client, ws) == []
    r = await client.post(API + "delete", headers=ws.headers, json={"workspace_id": ws.id, "id": sub["id"]})
    assert r.status_code == 404 and r.json() == {"error": "webhook subscription not found"}


@pytest.mark.parametrize("params, message", [
    ({"limit": "0"}, "limit must be between 1 and 100"),
    ({"limit": "101"}, "limit must be between 1 and 100"),
    ({"limit": "ten"}, "limit must be between 1 and 100"),
    ({"offset": "-1"}, "offset must be a non-negative integer"),
    ({"offset": "x"}, "offset must be a non-negative integer"),
])
async def test_deliveries_page_errors(client, ws, params, message):
    r = await client.get(API + "deliveries", headers=ws.headers, params={"workspace_id": ws.id, **params})
    assert r.status_code == 400 and r.json() == {"error": message}


async def test_deliveries_empty_page(client, ws):
    sub = await create(client, ws)
    r = await client.get(API + "deliveries", headers=ws.headers,
                         params={"workspace_id": ws.id, "subscription_id": sub["id"]})
    assert r.status_code == 200
    assert r.json() == {"deliveries": [], "total": 0, "limit": 20, "offset": 0}


async def test_test_rejects_unknown_event_type(client, ws):
    sub = await create(client, ws)
    r = await client.post(API + "test", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": sub["id"], "event_type": "contact.nope"})
    assert r.status_code == 400 and r.json() == {"error": "invalid event type: contact.nope"}


async def test_permissions(client, ws):
    sub = await create(client, ws)
    reader = {"Authorization": f"Bearer {await ws.key('webhooks:r')}"}
    r = await client.get(API + "list", headers=reader, params={"workspace_id": ws.id})
    assert r.status_code == 200 and len(r.json()["subscriptions"]) == 1
    for verb in ("create", "update", "delete", "toggle", "regenerateSecret", "test"):
        r = await client.post(API + verb, headers=reader, json={"workspace_id": ws.id, **GOOD, "id": sub["id"],
                                                                 "enabled": False})
        assert r.status_code == 403, verb
        assert r.json() == {"error": "Insufficient permissions: write access to webhooks required"}
    outsider = {"Authorization": f"Bearer {await ws.key('contacts:rw')}"}
    r = await client.get(API + "get", headers=outsider, params={"workspace_id": ws.id, "id": sub["id"]})
    assert r.status_code == 403
    assert r.json() == {"error": "Insufficient permissions: read access to webhooks required"}
    assert await listed(client, ws) == [sub]


async def test_wrong_method_and_missing_workspace(client, ws):
    r = await client.get(API + "create", headers=ws.headers, params={"workspace_id": ws.id})
    assert r.status_code == 405 and r.json() == {"error": "Method not allowed"}
    r = await client.get(API + "list", headers=ws.headers)
    assert r.status_code == 400 and r.json() == {"error": "workspace_id is required"}


async def test_workspaces_are_isolated(client, ws, new_workspace):
    sub = await create(client, ws)
    other = await new_workspace()
    r = await client.get(API + "get", headers=other.headers, params={"workspace_id": other.id, "id": sub["id"]})
    assert r.status_code == 404
    assert await listed(client, other) == []


# ---------------------------------------------------------------- pure rules

def test_signature_verifies_with_standardwebhooks():
    secret = model.new_secret()
    body = model.body("msg_1", "contact.created", "ws", dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
                      {"contact": {"email": "a@b.c"}})
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    headers = {k.decode(): v.decode() for k, v in model.signed_headers(model.secret_key(secret), "msg_1", now, body)}
    payload = standardwebhooks.Webhook(secret).verify(body, headers)
    assert payload == {"id": "msg_1", "type": "contact.created", "workspace_id": "ws",
                       "timestamp": "2024-05-01T00:00:00Z", "data": {"contact": {"email": "a@b.c"}}}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(model.new_secret()).verify(body, headers)


@pytest.mark.parametrize("address, refused", [
    ("169.254.169.254", True), ("169.254.0.1", True), ("100.100.100.200", True), ("fe80::1", True),
    ("febf::1", True), ("fd00:ec2::254", True), ("::ffff:169.254.169.254", True), ("2002:a9fe:a9fe::", True),
    ("64:ff9b::a9fe:a9fe", True), ("::a9fe:a9fe", True),
    ("127.0.0.1", False), ("10.0.0.1", False), ("::1", False), ("fd00:ec2::253", False), ("8.8.8.8", False),
    ("fec0::1", False), ("100.100.100.201", False),
])
def test_refused_addresses(address, refused):
    assert model.refused_address(ipaddress.ip_address(address)) is refused


def test_retry_ladder():
    schedule = (30.0, 60.0, 120.0)
    assert model.max_attempts(schedule) == 4
    assert [model.after_failure(n, 4, schedule) for n in (1, 2, 3, 4)] == [
        ("pending", 30.0), ("pending", 60.0), ("pending", 120.0), ("failed", 0.0)]
    assert model.after_failure(1, 1, ()) == ("failed", 0.0)


def test_list_event_data():
    data = {"contact_list": {"email": "a@b.c", "list_id": "news", "list_name": "News", "status": "active",
                             "created_at": "x", "updated_at": "y"}, "previous_status": "pending"}
    assert model.webhook_data("list.confirmed", data) == {
        "email": "a@b.c", "list_id": "news", "list_name": "News", "status": "active", "previous_status": "pending"}
    assert model.webhook_data("list.subscribed", {"contact_list": {"email": "a@b.c"}})["previous_status"] is None
    assert model.webhook_data("contact.updated", {"contact": {"email": "a@b.c"}}) == {"contact": {"email": "a@b.c"}}


def test_sealed_secrets():
    key = b"k" * 32
    blob = sealed.encrypt(key, b"whsec_abc", b"row-1")
    assert b"whsec_abc" not in blob
    assert sealed.decrypt(key, blob, b"row-1") == b"whsec_abc"
    for bad_key, context in ((b"j" * 32, b"row-1"), (key, b"row-2")):
        with pytest.raises(sealed.SecretError):
            sealed.decrypt(bad_key, blob, context)
    with pytest.raises(sealed.SecretError):
        sealed.decrypt(key, blob[:-1] + bytes([blob[-1] ^ 1]), b"row-1")


def test_list_pending_delivery_carries_the_confirm_link():
    from postroom.webhooks import model as wh_model

    outbox = {"contact_list": {"email": "p@example.com", "list_id": "news", "list_name": "News", "status": "pending"},
              "previous_status": None, "confirm_url": "https://mail.example.com/confirm?token=abc"}
    data = wh_model.webhook_data("list.pending", outbox)
    assert data == {"email": "p@example.com", "list_id": "news", "list_name": "News", "status": "pending",
                    "previous_status": None, "confirm_url": "https://mail.example.com/confirm?token=abc"}
    outbox.pop("confirm_url")
    assert "confirm_url" not in wh_model.webhook_data("list.subscribed", outbox)
