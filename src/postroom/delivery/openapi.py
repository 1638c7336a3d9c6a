"""The OpenAPI part of delivery: the message object, messages.list and broadcastStats, and the
workspace's email integrations."""

from __future__ import annotations

from postroom.delivery import integrations, model, transactional as tx
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



# ---------------------------------------------------------------- transactional notifications (3)

_TRACKING = obj({"enable_tracking": BOOLEAN, **{k: STRING for k in tx.TRACKING_STRINGS}}, ["enable_tracking"])
_CHANNELS = obj({"email": obj({"template_id": STRING, "settings": {"type": "object"}}, ["template_id"])})
SCHEMAS["TransactionalNotification"] = obj(
    {"id": {"type": "string", "maxLength": tx.ID_MAX}, "name": {"type": "string", "maxLength": tx.NAME_MAX},
     "description": STRING, "channels": _CHANNELS, "tracking_settings": _TRACKING, "metadata": {"type": "object"},
     "integration_id": STRING, "created_at": TIME, "updated_at": TIME},
    ["id", "name", "description", "channels", "tracking_settings", "created_at", "updated_at"])
_ONE = obj({"notification": ref("TransactionalNotification")}, ["notification"])
_NOTIFICATION_INPUT = obj({"id": STRING, "name": STRING, "description": STRING, "channels": {"type": "object"},
                           "tracking_settings": {"type": "object"}, "metadata": {"type": "object"}}, closed=False)
_NULLABLE = {"type": ["object", "null"]}
_UPDATES = obj({"name": STRING, "description": STRING, "channels": _NULLABLE, "tracking_settings": _NULLABLE,
                "metadata": {**_NULLABLE, "description": "null clears it"}}, closed=False)
_ATTACHMENT = obj({"filename": STRING, "content": {"type": "string", "description": "standard base64"},
                   "content_type": STRING, "disposition": {"type": "string", "enum": ["attachment", "inline"]}},
                  ["filename", "content"])
_EMAIL_OPTIONS = obj({"from_name": STRING, "subject": STRING, "subject_preview": STRING, "cc": array(STRING),
                      "bcc": array(STRING), "reply_to": STRING, "list_unsubscribe_url": STRING,
                      "attachments": array(_ATTACHMENT, maxItems=tx.ATTACHMENTS_MAX)}, closed=False)
_SUCCESS = obj({"success": {"const": True}}, ["success"])

OPERATIONS.update({
    "/api/transactional.list": Op(
        "The workspace's transactional notifications, newest first", id="listTransactionalNotifications",
        tag="transactional",
        params=[param("search", STRING, description="a literal, case-insensitive part of the name or id"),
                param("limit", STRING, description="a positive integer; anything else means no limit"),
                param("offset", STRING, description="an integer >= 0; not an integer is ignored")],
        ok=obj({"notifications": array(ref("TransactionalNotification")), "total": INTEGER},
               ["notifications", "total"])),
    "/api/transactional.get": Op(
        "One transactional notification", id="getTransactionalNotification", tag="transactional",
        params=[param("id", STRING, True)], ok=_ONE, errors=[404]),
    "/api/transactional.create": Op(
        "Create a transactional notification (a deleted one's id may be reused)",
        id="createTransactionalNotification", tag="transactional", body={"notification": _NOTIFICATION_INPUT},
        required=["notification"], status=201, ok=_ONE, errors=[409]),
    "/api/transactional.update": Op(
        "Change a notification: absent fields are kept, a given object replaces the stored one",
        id="updateTransactionalNotification", tag="transactional",
        body={"id": STRING, "updates": _UPDATES}, required=["id", "updates"], ok=_ONE, errors=[404]),
    "/api/transactional.delete": Op(
        "Delete a notification (messages already queued are still sent)", id="deleteTransactionalNotification",
        tag="transactional", body={"id": STRING}, required=["id"], ok=_SUCCESS, errors=[404]),
    "/api/transactional.send": Op(
        "Send a notification to one contact: the contact is upserted, the template rendered and the message "
        "queued; the same external_id always answers the same message_id", id="sendTransactionalNotification",
        tag="transactional",
        body={"notification": obj({"id": STRING, "external_id": STRING, "contact": {"type": "object"},
                                   "channels": array(STRING), "data": {"type": "object"},
                                   "metadata": {"type": "object"}, "email_options": _EMAIL_OPTIONS},
                                  ["id", "contact", "channels"], closed=False)},
        required=["notification"], ok=obj({"message_id": STRING, "success": {"const": True}},
                                          ["message_id", "success"])),
    "/api/transactional.testTemplate": Op(
        "Send a template's test data now through a chosen integration and sender (no queue, no contact written)",
        id="testTransactionalTemplate", tag="transactional",
        body={"template_id": STRING, "integration_id": STRING, "sender_id": STRING, "recipient_email": STRING,
              "language": STRING, "email_options": _EMAIL_OPTIONS},
        required=["template_id", "integration_id", "sender_id", "recipient_email"],
        ok=obj({"success": BOOLEAN, "error": STRING}, ["success"]), errors=[404]),
})
