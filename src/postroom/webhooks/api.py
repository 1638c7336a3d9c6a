"""Webhook subscription endpoints (permission resource `webhooks`): decode -> model -> store -> encode."""

from __future__ import annotations

import datetime as dt

from postroom.platform.http import Call, Endpoint, json_response
from postroom.platform.errors import RuleError
from postroom.webhooks import delivery, model, store


def _wire(call: Call, row) -> dict:
    secret = store.open_secret(call.settings.key_bytes, call.workspace_id, row["id"], row["secret"])
    return model.to_wire(row, secret)


def _found(row):
    if row is None:
        raise RuleError(model.NOT_FOUND, 404)
    return row


async def create(call: Call):
    fields = model.parse_create(call.body)
    await delivery.check_destination(fields["url"])
    sub_id, secret = model.new_subscription_id(), model.new_secret()
    row = await store.create_subscription(call.pool, call.settings.key_bytes, call.workspace_id, sub_id, secret,
                                          fields)
    return json_response({"subscription": model.to_wire(row, secret)}, status=201)


async def list_(call: Call):
    rows = await store.list_subscriptions(call.pool, call.workspace_id)
    return {"subscriptions": [_wire(call, row) for row in rows]}


async def get(call: Call):
    sub_id = model.parse_id(call.param("id"))
    return {"subscription": _wire(call, _found(await store.get_subscription(call.pool, call.workspace_id, sub_id)))}


async def update(call: Call):
    sub_id = model.parse_id(call.body.get("id"))
    changes = model.parse_update(call.body)
    if "url" in changes:
        await delivery.check_destination(changes["url"])
    row = _found(await store.update_subscription(call.pool, call.workspace_id, sub_id, changes))
    return {"subscription": _wire(call, row)}


async def delete(call: Call):
    sub_id = model.parse_id(call.body.get("id"))
    if not await store.delete_subscription(call.pool, call.workspace_id, sub_id):
        raise RuleError(model.NOT_FOUND, 404)
    return {"success": True}


async def toggle(call: Call):
    sub_id = model.parse_id(call.body.get("id"))
    enabled = model.parse_enabled(call.body.get("enabled"))
    row = _found(await store.update_subscription(call.pool, call.workspace_id, sub_id, {"enabled": enabled}))
    return {"subscription": _wire(call, row)}


async def regenerate_secret(call: Call):
    sub_id = model.parse_id(call.body.get("id"))
    secret = model.new_secret()
    row = _found(await store.set_secret(call.pool, call.settings.key_bytes, call.workspace_id, sub_id, secret))
    return {"subscription": model.to_wire(row, secret)}


async def deliveries(call: Call):
    limit, offset = model.parse_page(call.param("limit"), call.param("offset"))
    sub_id = call.param("subscription_id")
    if sub_id is not None:
        _found(await store.get_subscription(call.pool, call.workspace_id, sub_id))
    rows, total = await store.list_deliveries(call.pool, call.workspace_id, sub_id, limit, offset)
    return {"deliveries": [model.delivery_to_wire(row) for row in rows], "total": total,
            "limit": limit, "offset": offset}


async def test(call: Call):
    """Sends a signed sample of one event type (default: the subscription's first) now, to the
    subscription's URL, and answers with the outcome. Nothing is queued or logged."""
    sub_id = model.parse_id(call.body.get("id"))
    event_type = call.body.get("event_type")
    if event_type is not None and event_type != "":
        event_type = model.parse_event_type(event_type)
    row = _found(await store.get_subscription(call.pool, call.workspace_id, sub_id))
    event_type = event_type or row["event_types"][0]
    secret = store.open_secret(call.settings.key_bytes, call.workspace_id, sub_id, row["secret"])
    now = dt.datetime.now(dt.timezone.utc)
    message_id = model.new_message_id("test_")
    body = model.body(message_id, event_type, call.workspace_id, now, model.sample_data(event_type, now))
    sender = delivery.Sender(call.settings.webhook_timeout, max_connections=1)
    try:
        outcome = await sender.post(row["url"], message_id, model.secret_key(secret), body)
    finally:
        await sender.aclose()
    return model.test_result(outcome.status, outcome.body, outcome.error)


async def event_types(call: Call):
    return {"event_types": list(model.EVENT_TYPES)}


_R = "webhooks"
ENDPOINTS = [
    Endpoint("/api/webhookSubscriptions.create", "POST", create, resource=_R, write=True),
    Endpoint("/api/webhookSubscriptions.list", "GET", list_, resource=_R),
    Endpoint("/api/webhookSubscriptions.get", "GET", get, resource=_R),
    Endpoint("/api/webhookSubscriptions.update", "POST", update, resource=_R, write=True),
    Endpoint("/api/webhookSubscriptions.delete", "POST", delete, resource=_R, write=True),
    Endpoint("/api/webhookSubscriptions.toggle", "POST", toggle, resource=_R, write=True),
    Endpoint("/api/webhookSubscriptions.regenerateSecret", "POST", regenerate_secret, resource=_R, write=True),
    Endpoint("/api/webhookSubscriptions.deliveries", "GET", deliveries, resource=_R),
    Endpoint("/api/webhookSubscriptions.test", "POST", test, resource=_R, write=True),
    Endpoint("/api/webhookSubscriptions.eventTypes", "GET", event_types, auth="user"),
]
