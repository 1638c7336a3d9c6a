"""The OpenAPI part of delivery: the message object, messages.list and broadcastStats, and the
workspace's email integrations."""

from __future__ import annotations

from postroom.delivery import integrations, model
from postroom.delivery.providers import KINDS
from postroom.platform import paging
from postroom.platform.openapi import (BOOLEAN, INTEGER, STRING, TIME, Op, array, limit_param, obj,
                                       param, ref)

_MESSAGE_ORDER = ("id", "external_id", "contact_email", "broadcast_id", "automation_id",
                  "transactional_notification_id", "list_id", "template_id", "template_version", "channel",
                  "status_info", "message_data", "channel_options", "attachments", *model.TIMESTAMP_FIELDS,
                  "status", "attempts", "provider_message_id")
_TYPES = {"template_version": INTEGER, "attempts": {"type": "integer", "minimum": 0},
          "channel": {"type": "string", "enum": list(model.CHANNELS)},
          "status": {"type": "string", "enum": [s.value for s in model.Status]},
          "message_data": obj({"data": {"type": "object"}, "metadata": {"type": "object"}}, ["data"]),
          "channel_options": {"type": "object"}, "attachments": array({"type": "object"}),
          **{name: TIME for name in model.TIMESTAMP_FIELDS}}

SENDER = obj({"id": STRING, "email": STRING, "name": STRING, "is_default": BOOLEAN},
             ["id", "email", "name", "is_default"])
KIND = {"type": "string", "enum": [*KINDS, integrations.FAKE],
        "description": "`fake` only on test servers (POSTROOM_DELIVERY_FAKE_PROVIDER)"}
SETTINGS = {"type": "object", "description": "the kind's settings; secrets read back as \"********\""}

SCHEMAS = {
    "Message": obj({name: _TYPES.get(name, STRING) for name in _MESSAGE_ORDER},
                   ["id", "contact_email", "template_id", "template_version", "channel", "message_data", "sent_at",
                    "created_at", "updated_at", "status", "attempts"]),
    "EmailIntegration": obj(
        {"id": STRING, "name": STRING, "type": {"const": "email"},
         "email_provider": obj({"kind": KIND, **{k: SETTINGS for k in (*KINDS, integrations.FAKE)},
                                "senders": array(SENDER, minItems=1),
                                "rate_limit_per_minute": {"type": "integer", "minimum": 1},
                                "max_concurrency": {"type": "integer", "minimum": 1, "maximum": 64}},
                               ["kind", "senders", "rate_limit_per_minute"]),
         "created_at": TIME, "updated_at": TIME},
        ["id", "name", "type", "email_provider", "created_at", "updated_at"]),
}

PROVIDER = obj({"kind": KIND, **{k: {"type": "object"} for k in (*KINDS, integrations.FAKE)},
                "senders": array(obj({"id": STRING, "email": STRING, "name": STRING, "is_default": BOOLEAN},
                                     closed=False)),
                "rate_limit_per_minute": INTEGER, "max_concurrency": INTEGER}, closed=False)
STATUS_MESSAGE = obj({"status": {"const": "success"}, "message": STRING}, ["status", "message"])
_BOOL = {"type": "string", "enum": ["true", "false"]}

OPERATIONS = {
    "/api/messages.list": Op(
        "The message history, newest first", id="listMessages", tag="messages",
        params=[param("cursor", STRING, description="the previous page's next_cursor"),
                *(param(name, STRING) for name in model.EXACT),
                param("status", {"type": "string", "enum": [s.value for s in model.Status]}),
                param("channel", {"type": "string", "enum": list(model.CHANNELS)}),
                param("contact_email", STRING, description="compared lower-cased"),
                {**limit_param(paging.DEFAULT_LIMIT, paging.MAX_LIMIT),
                 "schema": {"type": "integer", "minimum": 0, "default": paging.DEFAULT_LIMIT,
                            "description": "0 means the default; above 100 means 100"}},
                *(param(name, _BOOL) for name in model.FLAGS),
                *(param(name, TIME) for name, _, _ in model.RANGES)],
        ok=obj({"messages": array(ref("Message")), "next_cursor": STRING, "has_more": BOOLEAN},
               ["messages", "has_more"])),
    "/api/messages.broadcastStats": Op(
        "Counts of a broadcast's messages by state", id="getBroadcastStats", tag="messages",
        params=[param("broadcast_id", STRING, True)],
        ok=obj({"broadcast_id": STRING, "stats": obj({k: {"type": "integer", "minimum": 0}
                                                      for k in model.STAT_FIELDS}, model.STAT_FIELDS)},
               ["broadcast_id", "stats"])),
    "/api/workspaces.createIntegration": Op(
        "Add an email provider integration (owners only)", id="createIntegration", tag="integrations",
        body={"name": {"type": "string", "maxLength": integrations.NAME_MAX}, "type": {"const": "email"},
              "provider": PROVIDER},
        required=["name", "type", "provider"], status=201,
        ok=obj({"status": {"const": "success"}, "integration_id": STRING}, ["status", "integration_id"])),
    "/api/workspaces.updateIntegration": Op(
        "Rename an integration or change its provider; masked or omitted secrets are kept (owners only)",
        id="updateIntegration", tag="integrations",
        body={"integration_id": STRING, "name": {"type": "string", "maxLength": integrations.NAME_MAX},
              "provider": PROVIDER},
        required=["integration_id", "name"], ok=STATUS_MESSAGE, errors=[404]),
    "/api/workspaces.deleteIntegration": Op(
        "Remove an integration; provider ids naming it are cleared (owners only)", id="deleteIntegration",
        tag="integrations", body={"integration_id": STRING}, required=["integration_id"], ok=STATUS_MESSAGE,
        errors=[404]),
    "/api/email.testProvider": Op(
        "Send one test message through a provider now (no queue, no history); masked secrets come from "
        "integration_id or the one integration with the same settings", id="testEmailProvider", tag="integrations",
        body={"to": STRING, "provider": PROVIDER, "integration_id": STRING}, required=["to", "provider"],
        ok=obj({"success": BOOLEAN, "error": STRING}, ["success"]), errors=[404]),
}

