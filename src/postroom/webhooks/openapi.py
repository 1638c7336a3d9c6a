"""The OpenAPI part of webhooks: subscriptions, the delivery log, and their operations."""

from __future__ import annotations

from postroom.webhooks import model as webhooks_model
from postroom.platform.openapi import ANY_JSON, BOOLEAN, INTEGER, STRING, TIME, Op, array, limit_param, obj, param, ref

EVENT_TYPE = {"type": "string", "enum": list(webhooks_model.EVENT_TYPES)}
FILTERS = obj({"goal_types": array(STRING), "event_names": array(STRING)})

SCHEMAS = {
    "WebhookSubscription": obj(
        {"id": STRING, "name": STRING, "url": {"type": "string", "format": "uri"},
         "secret": {"type": "string", "pattern": f"^{webhooks_model.SECRET_PREFIX}"},
         "event_types": array(EVENT_TYPE, minItems=1),
         "custom_event_filters": FILTERS,
         "settings": obj({"event_types": array(EVENT_TYPE), "custom_event_filters": FILTERS},
                         ["event_types"]),
         "enabled": BOOLEAN, "last_delivery_at": TIME, "created_at": TIME, "updated_at": TIME},
        ["id", "name", "url", "secret", "event_types", "settings", "enabled", "created_at", "updated_at"]),
    "WebhookDelivery": obj(
        {"id": {"type": "string", "description": "the webhook-id header of every attempt"},
         "subscription_id": STRING, "event_type": STRING, "payload": ANY_JSON,
         "status": {"type": "string", "enum": ["pending", "delivering", "delivered", "failed", "cancelled"]},
         "attempts": INTEGER, "max_attempts": INTEGER, "next_attempt_at": TIME,
         "last_attempt_at": TIME, "delivered_at": TIME, "last_response_status": INTEGER,
         "last_response_body": STRING, "last_error": STRING, "created_at": TIME},
        ["id", "subscription_id", "event_type", "payload", "status", "attempts", "max_attempts",
         "next_attempt_at", "created_at"]),
}

OPERATIONS = {
    "/api/webhookSubscriptions.create": Op(
        "Create a webhook subscription (its secret is in the answer)", id="createWebhookSubscription", tag="webhooks",
        body={"name": {"type": "string", "maxLength": webhooks_model.MAX_NAME},
              "url": {"type": "string", "format": "uri", "maxLength": webhooks_model.MAX_URL,
                      "description": "http(s); link-local and cloud metadata addresses are refused"},
              "event_types": array(EVENT_TYPE, minItems=1),
              "custom_event_filters": {"anyOf": [FILTERS, {"type": "null"}]}},
        required=["name", "url", "event_types"], status=201,
        ok=obj({"subscription": ref("WebhookSubscription")}, ["subscription"])),
    "/api/webhookSubscriptions.list": Op(
        "The workspace's webhook subscriptions", id="listWebhookSubscriptions", tag="webhooks",
        ok=obj({"subscriptions": array(ref("WebhookSubscription"))}, ["subscriptions"])),
    "/api/webhookSubscriptions.get": Op(
        "One webhook subscription", id="getWebhookSubscription", tag="webhooks", params=[param("id", STRING, True)],
        ok=obj({"subscription": ref("WebhookSubscription")}, ["subscription"]), errors=[404]),
    "/api/webhookSubscriptions.update": Op(
        "Update a webhook subscription (absent fields keep their value)", id="updateWebhookSubscription", tag="webhooks",
        body={"id": STRING, "name": {"type": "string", "maxLength": webhooks_model.MAX_NAME},
              "url": {"type": "string", "format": "uri", "maxLength": webhooks_model.MAX_URL},
              "event_types": array(EVENT_TYPE, minItems=1),
              "custom_event_filters": {"anyOf": [FILTERS, {"type": "null"}]}, "enabled": BOOLEAN},
        required=["id"], ok=obj({"subscription": ref("WebhookSubscription")}, ["subscription"]),
        errors=[404]),
    "/api/webhookSubscriptions.delete": Op(
        "Delete a webhook subscription with its delivery log", id="deleteWebhookSubscription", tag="webhooks",
        body={"id": STRING}, required=["id"], ok=ref("Success"), errors=[404]),
    "/api/webhookSubscriptions.toggle": Op(
        "Enable or disable a webhook subscription", id="toggleWebhookSubscription", tag="webhooks",
        body={"id": STRING, "enabled": BOOLEAN}, required=["id", "enabled"],
        ok=obj({"subscription": ref("WebhookSubscription")}, ["subscription"]), errors=[404]),
    "/api/webhookSubscriptions.regenerateSecret": Op(
        "Replace a webhook subscription's secret", id="regenerateWebhookSecret", tag="webhooks",
        body={"id": STRING}, required=["id"],
        ok=obj({"subscription": ref("WebhookSubscription")}, ["subscription"]), errors=[404]),
    "/api/webhookSubscriptions.deliveries": Op(
        "The delivery log, newest first", id="getWebhookDeliveries", tag="webhooks",
        params=[limit_param(20, 100), param("offset", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1,
                                               "default": 0}),
                param("subscription_id", STRING)],
        ok=obj({"deliveries": array(ref("WebhookDelivery")), "total": {"type": "integer", "minimum": 0},
                 "limit": INTEGER, "offset": INTEGER}, ["deliveries", "total", "limit", "offset"]),
        errors=[404]),
    "/api/webhookSubscriptions.test": Op(
        "Send a signed sample event to the subscription's URL now and report the outcome", id="testWebhookSubscription", tag="webhooks",
        body={"id": STRING, "event_type": {"anyOf": [EVENT_TYPE, {"enum": ["", None]}]}}, required=["id"],
        ok=obj({"success": BOOLEAN, "status_code": INTEGER, "response_body": STRING, "error": STRING},
                ["success", "status_code", "response_body"]), errors=[404]),
    "/api/webhookSubscriptions.eventTypes": Op(
        "The event types a subscription can name", id="listWebhookEventTypes", tag="webhooks",
        ok=obj({"event_types": array(EVENT_TYPE)}, ["event_types"])),
}
