"""Outgoing webhooks: pure rules. Event types, input validation and its error strings, the
Standard Webhooks secret and signature, the body sent, the retry ladder and the wire shapes.
No I/O. (Which destination addresses are refused is platform.outbound's rule.)"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from postroom.platform import fields, jsonenc, paging
from postroom.platform.errors import RuleError
from postroom.platform.outbound import ip_literal, refused_address, refused_message

EVENT_TYPES = (
    "contact.created", "contact.updated", "contact.deleted",
    "list.subscribed", "list.unsubscribed", "list.confirmed", "list.resubscribed",
    "list.bounced", "list.complained", "list.pending", "list.removed",
    "segment.joined", "segment.left",
    "email.sent", "email.failed", "email.delivered", "email.opened", "email.clicked", "email.bounced",
    "email.complained", "email.unsubscribed",
    "custom_event.created", "custom_event.updated", "custom_event.deleted",
)
_KNOWN = frozenset(EVENT_TYPES)

NOT_FOUND = "webhook subscription not found"
SECRET_PREFIX = "whsec_"
MAX_NAME = 255
MAX_URL = 2048
RESPONSE_BODY_LIMIT = 1024          # bytes of a receiver's answer kept in the log
FAILING_SUBSCRIPTION_CONCURRENCY = 2  # attempts in flight for a subscription whose last ones failed


class WebhookError(RuleError):
    """A subscription or destination refused: 400, or 404 for one that does not exist."""


# ---------------------------------------------------------------- secrets and signatures

def new_secret() -> str:
    """Standard Webhooks symmetric secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: the base64-decoded part after the prefix."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"Content-Type", b"application/json"),
        (b"User-Agent", b"Postroom-Webhooks/1"),
        (b"webhook-id", message_id.encode()),
        (b"webhook-timestamp", str(timestamp).encode()),
        (b"webhook-signature", sign(key, message_id, timestamp, body).encode()),
    ]


def new_subscription_id() -> str:
    return secrets.token_hex(16)


def new_message_id(prefix: str = "") -> str:
    return prefix + secrets.token_hex(16)


# ---------------------------------------------------------------- destinations

def parse_url(value) -> str:
    """A receiver URL: http(s), with a host that is not a refused address literal.
    (Names are resolved and checked by the caller that can do I/O, and again at delivery.)"""
    url = fields.trimmed_string(value, "URL", WebhookError)
    fields.at_most(url, "URL", MAX_URL, WebhookError, fields.AT_MOST)
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise WebhookError("invalid URL: it contains spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise WebhookError(f"invalid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise WebhookError("URL must use http or https scheme")
    if not host:
        raise WebhookError("URL must have a host")
    ip = ip_literal(host)
    if ip is not None and refused_address(ip):
        raise WebhookError(refused_message(host, ip))
    return url


# ---------------------------------------------------------------- input

def parse_id(value) -> str:
    return fields.without_nul(fields.required_string(value, "id", WebhookError), "id", WebhookError)


def parse_name(value) -> str:
    return fields.text(value, "name", MAX_NAME, WebhookError, fields.AT_MOST)


def parse_event_type(value) -> str:
    if not isinstance(value, str) or value not in _KNOWN:
        shown = value if isinstance(value, str) else jsonenc.encode(value).decode()
        raise WebhookError(f"invalid event type: {shown[:100]}")
    return value


def parse_event_types(value) -> list[str]:
    if value is None or (isinstance(value, list) and not value):
        raise WebhookError("at least one event type is required")
    if not isinstance(value, list):
        raise WebhookError("event_types must be an array of strings")
    return list(dict.fromkeys(parse_event_type(v) for v in value))


def parse_custom_event_filters(value) -> dict | None:
    """{goal_types?: [str], event_names?: [str]}; empty means no filter (None)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise WebhookError("custom_event_filters must be an object")
    out = {}
    for key in ("goal_types", "event_names"):
        items = value.get(key)
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise WebhookError(f"custom_event_filters.{key} must be an array of strings")
        for item in items:
            fields.without_nul(item, f"custom_event_filters.{key}", WebhookError)
        if items:
            out[key] = list(dict.fromkeys(items))
    return out or None


def parse_enabled(value) -> bool:
    if value is None:
        raise WebhookError("enabled is required")
    if not isinstance(value, bool):
        raise WebhookError("enabled must be a boolean")
    return value


def parse_create(body: dict) -> dict:
    """Validation order: name, URL, event types, filters; the first failure wins."""
    return {
        "name": parse_name(body.get("name")),
        "url": parse_url(body.get("url")),
        "event_types": parse_event_types(body.get("event_types")),
        "custom_event_filters": parse_custom_event_filters(body.get("custom_event_filters")),
    }


def parse_update(body: dict) -> dict:
    """The fields present in an update (absent ones keep their stored value; a null
    custom_event_filters clears the filter)."""
    changes: dict = {}
    if "name" in body:
        changes["name"] = parse_name(body["name"])
    if "url" in body:
        changes["url"] = parse_url(body["url"])
    if "event_types" in body:
        changes["event_types"] = parse_event_types(body["event_types"])
    if "custom_event_filters" in body:
        changes["custom_event_filters"] = parse_custom_event_filters(body["custom_event_filters"])
    if "enabled" in body:
        changes["enabled"] = parse_enabled(body["enabled"])
    return changes


def parse_page(limit: str | None, offset: str | None) -> tuple[int, int]:
    # the one limit rule (ASCII digits only: int() would also take "1_0" and other scripts' digits)
    return paging.parse_limit(limit, 20, 100, WebhookError), paging.parse_offset(offset, WebhookError)


# ---------------------------------------------------------------- what is sent

def webhook_data(event_type: str, data: dict) -> dict:
    """`data` of the body. Contact events carry the outbox data as is ({"contact": {...}}), list
    events {email, list_id, list_name, status, previous_status} (plus confirm_url on list.pending,
    so an integration can send the double opt-in link), the others their outbox data."""
    if event_type.startswith("list.") and isinstance(data, dict):
        m = data.get("contact_list")
        m = m if isinstance(m, dict) else data
        previous = data.get("previous_status", m.get("previous_status"))
        out = {"email": m.get("email"), "list_id": m.get("list_id"), "list_name": m.get("list_name"),
               "status": m.get("status"), "previous_status": previous}
        confirm_url = data.get("confirm_url", m.get("confirm_url"))
        if confirm_url:
            out["confirm_url"] = confirm_url
        return out
    return data


def body(message_id: str, event_type: str, workspace_id: str, occurred_at: dt.datetime, data: dict) -> bytes:
    """The JSON body: the same bytes on every attempt of one delivery."""
    return jsonenc.encode({"id": message_id, "type": event_type, "workspace_id": workspace_id,
                           "timestamp": occurred_at, "data": webhook_data(event_type, data)})


_LIST_SAMPLE_STATUS = {
    "subscribed": ("active", None), "confirmed": ("active", "pending"), "resubscribed": ("active", "unsubscribed"),
    "unsubscribed": ("unsubscribed", "active"), "bounced": ("bounced", "active"),
    "complained": ("complained", "active"), "pending": ("pending", None), "removed": ("active", "active"),
}


def sample_data(event_type: str, now: dt.datetime) -> dict:
    """A realistic `data` for a test delivery of this type."""
    category, _, action = event_type.partition(".")
    when = now.isoformat().replace("+00:00", "Z")
    if category == "contact":
        return {"contact": {"email": "test@example.com", "external_id": "ext_456", "first_name": "Test",
                            "last_name": "User", "created_at": when, "updated_at": when}}
    if category == "list":
        status, previous = _LIST_SAMPLE_STATUS.get(action, ("active", None))
        return {"contact_list": {"email": "test@example.com", "list_id": "test_list", "list_name": "Test list",
                                 "status": status}, "previous_status": previous}
    if category == "segment":
        return {"email": "test@example.com", "segment_id": "test_segment", "segment_name": "Test segment"}
    if category == "email":
        out = {"message_id": "test_message", "email": "test@example.com", "template_id": "test_template",
               "broadcast_id": "test_broadcast", "created_at": when}
        if action == "clicked":
            out["url"] = "https://example.com/test-link"
        elif action == "bounced":
            out.update(bounce_type="hard", bounce_reason="Test bounce")
        return out
    return {"event_name": "test_purchase", "goal_type": "purchase", "email": "test@example.com",
            "properties": {"amount": 99.99, "currency": "USD"}, "created_at": when}


# ---------------------------------------------------------------- retries

def max_attempts(schedule) -> int:
    """The first attempt plus one per step of the retry schedule."""
    return len(schedule) + 1


def after_failure(attempts: int, max_tries: int, schedule) -> tuple[str, float]:
    """After failed attempt number `attempts` (1-based): ("pending", seconds until the next) or
    ("failed", 0) once `max_tries` attempts have been made."""
    if attempts >= max_tries or not schedule:
        return "failed", 0.0
    return "pending", float(schedule[min(attempts, len(schedule)) - 1])


# ---------------------------------------------------------------- wire

def to_wire(row, secret: str) -> dict:
    event_types = list(row["event_types"])
    filters = row["custom_event_filters"]
    settings = {"event_types": event_types}
    out = {"id": row["id"], "name": row["name"], "url": row["url"], "secret": secret,
           "event_types": event_types}
    if filters:
        out["custom_event_filters"] = settings["custom_event_filters"] = filters
    out["settings"] = settings
    out["enabled"] = row["enabled"]
    if row["last_delivery_at"] is not None:
        out["last_delivery_at"] = row["last_delivery_at"]
    out["created_at"] = row["created_at"]
    out["updated_at"] = row["updated_at"]
    return out


def delivery_to_wire(row) -> dict:
    out = {"id": row["message_id"], "subscription_id": row["subscription_id"], "event_type": row["event_type"],
           "payload": webhook_data(row["event_type"], row["data"]), "status": row["status"],
           "attempts": row["attempts"], "max_attempts": row["max_attempts"],
           "next_attempt_at": row["next_attempt_at"]}
    for key in ("last_attempt_at", "delivered_at", "last_response_status", "last_response_body", "last_error"):
        if row[key] is not None:
            out[key] = row[key]
    out["created_at"] = row["created_at"]
    return out


def test_result(status: int | None, response_body: str, error: str | None) -> dict:
    out = {"success": error is None and status is not None and 200 <= status < 300,
           "status_code": status or 0, "response_body": response_body}
    if error is not None:
        out["error"] = error
    return out
