"""The OpenAPI part of provider events: inboundWebhookEvents.list, webhooks.register and
webhooks.status, and the public POST /webhooks/email."""

from __future__ import annotations

from postroom.inbound import model
from postroom.platform.openapi import (BOOLEAN, CURSOR_PARAM, STRING, TIME, TRUE, Op, array, error_refs,
                                     error_response, json_content, obj, param, ref)

_OPTIONAL = {"type": "string", "description": "omitted when empty"}

SCHEMAS = {
    "InboundWebhookEvent": obj(
        {"id": {"type": "string", "format": "uuid"}, "type": {"type": "string", "enum": list(model.TYPES)},
         "source": {"type": "string", "enum": list(model.SOURCES)}, "integration_id": STRING,
         "recipient_email": STRING, "message_id": _OPTIONAL, "timestamp": TIME,
         "raw_payload": {"type": "string", "description": "the event's own JSON"},
         "bounce_type": _OPTIONAL, "bounce_category": _OPTIONAL, "bounce_diagnostic": _OPTIONAL,
         "bounce_classification": {"type": "string", "enum": [model.HARD, model.SOFT_COUNT, model.SOFT_IGNORE]},
         "complaint_feedback_type": _OPTIONAL, "created_at": TIME},
        ["id", "type", "source", "integration_id", "recipient_email", "timestamp", "raw_payload", "created_at"]),
    "WebhookRegistrationStatus": obj({"status": obj(
        {"email_provider_kind": STRING, "is_registered": BOOLEAN,
         "endpoints": array(obj({"webhook_id": STRING, "url": STRING,
                                 "event_type": {"type": "string", "enum": list(model.EVENT_TYPES)},
                                 "active": BOOLEAN}, ["url", "event_type", "active"])),
         "error": STRING,
         "provider_details": obj({"callback_url": STRING, "last_event_at": TIME}, ["callback_url"], closed=False)},
        ["email_provider_kind", "is_registered", "endpoints"])}, ["status"]),
}

_INTEGRATION = param("integration_id", STRING, True)

OPERATIONS = {
    "/api/inboundWebhookEvents.list": Op(
        "Provider events (delivered, bounce, complaint, unsubscribe), newest first", id="listInboundWebhookEvents",
        tag="inboundWebhookEvents",
        params=[param("event_type", {"type": "string", "enum": list(model.TYPES)}),
                param("recipient_email", STRING, description="normalised before matching"),
                param("message_id", STRING), param("timestamp_after", TIME, description="inclusive"),
                param("timestamp_before", TIME, description="inclusive"),
                param("limit", {"type": "integer", "minimum": 0}, description="0 or absent: 20; above 100: 100"),
                CURSOR_PARAM],
        ok=obj({"events": array(ref("InboundWebhookEvent")), "next_cursor": STRING, "has_more": BOOLEAN},
               ["events", "has_more"])),
    "/api/webhooks.register": Op(
        "Register the provider's event webhooks for an integration (first version: gives the callback URL "
        "to enter in the provider's console)", id="registerWebhooks", tag="webhooks",
        body={"integration_id": STRING, "event_types": array({"type": "string"}),
              "rotate_secret": {"type": ["boolean", "null"]}},
        required=["integration_id"], ok=ref("WebhookRegistrationStatus"), errors=[404]),
    "/api/webhooks.status": Op(
        "The provider webhooks of an integration", id="getWebhookStatus", tag="webhooks", params=[_INTEGRATION],
        ok=ref("WebhookRegistrationStatus"), errors=[404]),
}

PATHS = {
    "/webhooks/email": {"post": {
        "summary": "Events posted by an email provider (delivered, bounce, complaint)",
        "description": "Authenticated by the provider's signature (SNS, Mailgun, SendGrid) or the "
                       "integration's webhook secret (query `token`, HTTP Basic password or "
                       "`X-Postroom-Webhook-Token`). Event types Postroom does not use are skipped. "
                       "A repeated delivery of an event is stored and applied once.",
        "tags": ["public"], "operationId": "receiveProviderWebhook", "security": [],
        "parameters": [param("provider", STRING, True), param("workspace_id", STRING, True),
                       param("integration_id", STRING, True), param("token", STRING)],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
        "responses": {"200": json_content(obj({"success": TRUE}, ["success"])),
                      **error_refs([400, 404, 405, 413]),
                      "401": error_response("invalid webhook signature"),
                      "502": error_response("the SNS subscription could not be confirmed"),
                      **error_refs([503])}}},
}
