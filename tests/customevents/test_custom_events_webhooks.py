"""custom_event.* reach outgoing webhooks through the outbox, narrowed by a subscription's
custom_event_filters (goal_types, event_names), with the event's data as the contract gives it."""

from __future__ import annotations

from postroom.webhooks import delivery


async def upsert(client, ws, **event):
    r = await client.post("/api/customEvents.upsert", headers=ws.headers, json={
        "workspace_id": ws.id, "email": "ann@example.com", **event})
    assert r.status_code == 200, r.text
    return r.json()["event"]


async def subscribe(client, ws, filters):
    r = await client.post("/api/webhookSubscriptions.create", headers=ws.headers, json={
        "workspace_id": ws.id, "name": "Hook", "url": "http://127.0.0.1:9/hook",
        "event_types": ["custom_event.created", "custom_event.updated", "custom_event.deleted"],
        "custom_event_filters": filters})
    assert r.status_code == 201, r.text
    return r.json()["subscription"]["id"]


async def test_filters_narrow_deliveries_and_data_is_the_event(client, pool, settings, ws):
    purchases = await subscribe(client, ws, {"goal_types": ["purchase"]})
    trials = await subscribe(client, ws, {"event_names": ["trial.started"]})
    everything = await subscribe(client, ws, None)
    bought = await upsert(client, ws, event_name="order.placed", external_id="o-1", goal_type="purchase",
                          goal_value=19.99, properties={"sku": "A"})
    await upsert(client, ws, event_name="trial.started", external_id="t-1", goal_type="trial")
    await upsert(client, ws, event_name="trial.started", external_id="t-1", deleted_at="2024-01-01T00:00:00Z")
    for _ in range(50):
        events, _ = await delivery.dispatch_once(pool, settings)
        if events == 0:
            break
    rows = await pool.fetch("SELECT subscription_id, event_type, data FROM webhook_deliveries"
                            " WHERE workspace_id = $1 ORDER BY id", ws.id)
    got: dict[str, list] = {}
    for r in rows:
        got.setdefault(r["subscription_id"], []).append((r["event_type"], r["data"]["custom_event"]["external_id"]))
    assert got[purchases] == [("custom_event.created", "o-1")]
    assert got[trials] == [("custom_event.created", "t-1"), ("custom_event.deleted", "t-1")]
    assert len(got[everything]) == 3
    data = next(r["data"] for r in rows if r["subscription_id"] == purchases)
    assert data == {"custom_event": {
        "event_name": "order.placed", "external_id": "o-1", "email": "ann@example.com", "properties": {"sku": "A"},
        "occurred_at": bought["occurred_at"], "source": "api", "integration_id": None, "goal_name": None,
        "goal_type": "purchase", "goal_value": 19.99, "deleted_at": None, "created_at": bought["created_at"],
        "updated_at": bought["updated_at"]}}
