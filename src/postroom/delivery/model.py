"""Delivery rules, pure (no I/O): message statuses and queue states, the retry ladder, the circuit
breaker, the token bucket, sender resolution, the message wire object and the messages.list /
messages.broadcastStats parameters (delivery-contract 1.1, 4, 5).

The SQL of delivery/store.py interpolates the StrEnums below, so each status is written once.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Mapping

from postroom.delivery.providers.base import BREAKER, RETRIED, THROTTLE_DEFAULT
from postroom.platform import paging, times
from postroom.platform.errors import RuleError
from postroom.platform.params import single_value


class DeliveryError(RuleError):
    """A delivery request refused (400 unless said otherwise)."""


# ---------------------------------------------------------------- statuses and states (4.1, 5.2)

class Status(StrEnum):
    """A message's status in the history (4.1)."""
    QUEUED = "queued"
    SENT = "sent"          # accepted by the provider
    FAILED = "failed"      # final


class QueueState(StrEnum):
    """A queue row's state (5.2); a row that reached a final outcome is deleted."""
    PENDING = "pending"
    PROCESSING = "processing"
    FAILED = "failed"      # waiting for its retry
    PAUSED = "paused"


class Breaker(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"   # one probe in flight


class Source(StrEnum):
    TRANSACTIONAL = "transactional"
    LIST = "list"
    BROADCAST = "broadcast"
    AUTOMATION = "automation"
    TEST = "test"


# Lower goes first (5.1): transactional mail waits at most one claim behind a broadcast.
PRIORITY = {Source.TRANSACTIONAL: 1, Source.TEST: 1, Source.LIST: 2, Source.BROADCAST: 5, Source.AUTOMATION: 5}
# Broadcasts and automations may wait out a long outage; a password reset is useless after a day.
EXPIRY = {Source.TRANSACTIONAL: _dt.timedelta(hours=24), Source.TEST: _dt.timedelta(hours=24),
          Source.LIST: _dt.timedelta(hours=24), Source.BROADCAST: _dt.timedelta(hours=72),
          Source.AUTOMATION: _dt.timedelta(hours=72)}

CHANNELS = ("email", "sms", "push")
LAST_ERROR_MAX = 1000
STATUS_INFO_MAX = 255
CLAIM_MAX = 500                     # rows per claim of one integration (5.6)
SEND_TIMEOUT = 130.0                # the longest a provider call may take (SMTP's 120 s conversation bound)


# ---------------------------------------------------------------- retries (5.3)

@dataclass(frozen=True)
class Rules:
    """The process's delivery configuration (5.8), in seconds."""
    retry_base: float = 30.0
    retry_cap: float = 1800.0
    max_attempts: int = 8
    breaker_threshold: int = 5
    breaker_cooldown: float = 60.0
    breaker_cap: float = 900.0
    lease: float = 300.0


def backoff(counted_failures: int, rules: Rules, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the n-th counted failure: min(base x 2^(n-1), cap) x [0.8, 1.2]; the
    jitter keeps the messages of one outage from coming back all at once."""
    n = max(counted_failures, 1)
    delay = min(rules.retry_base * 2 ** min(n - 1, 40), rules.retry_cap)
    return delay * (0.8 + 0.4 * rand())


@dataclass(frozen=True)
class Outcome:
    """What one provider call (or a refusal before it) means for the row: `sent`, `retry` after
    `delay` seconds, or `failed` for good."""
    kind: str                       # "sent" | "retry" | "failed"
    info: str | None = None         # status_info (sent: a note; else the failure text)
    provider_message_id: str | None = None
    delay: float = 0.0
    cls: str | None = None          # the failure class (providers.base.CLASSES)
    retry_after: float | None = None


def after_failure(cls: str, info: str, retry_after: float | None, attempts: int, throttled: int,
                  rules: Rules, rand: Callable[[], float] = random.random) -> Outcome:
    """The row's next step after a failed call. `attempts` and `throttled` count this call.
    recipient/message are final; throttled waits Retry-After and is not counted; deferred and
    provider back off and count toward max_attempts."""
    if cls not in RETRIED:
        return Outcome("failed", info, cls=cls)
    if cls == "throttled":
        wait = THROTTLE_DEFAULT if retry_after is None else max(retry_after, 0.0)
        return Outcome("retry", info, delay=wait, cls=cls, retry_after=wait)
    counted = attempts - throttled
    if counted >= rules.max_attempts:
        return Outcome("failed", info, cls=cls)
    return Outcome("retry", info, delay=backoff(counted, rules, rand), cls=cls)


# The failure class of a row that outlived its expiry (5.3), beside the providers' classes. Final
# failures of these classes are transient in nature: a broadcast may retry them (retryFailed).
EXPIRED = "expired"
TRANSIENT = ("provider", "deferred", "throttled", EXPIRED)


def expired_info(last_error: str | None) -> str:
    return f"expired: {last_error or 'not sent before its expiry'}"[:STATUS_INFO_MAX]


def integration_gone_info(integration_id: str) -> str:
    return f"integration not found: {integration_id}"[:STATUS_INFO_MAX]


# ---------------------------------------------------------------- token bucket (5.4)

def capacity(rate_per_minute: int) -> float:
    """A bucket holds one second of sending, at least one message: a claim never takes more than
    the rate allows in the next second."""
    return max(1.0, rate_per_minute / 60.0)


def refill(tokens: float, refilled_at: _dt.datetime, now: _dt.datetime, rate_per_minute: int) -> float:
    elapsed = max((now - refilled_at).total_seconds(), 0.0)
    return min(capacity(rate_per_minute), tokens + elapsed * rate_per_minute / 60.0)


@dataclass
class Budget:
    """An integration's `delivery_budget` row: its bucket and its breaker, shared by processes."""
    tokens: float
    refilled_at: _dt.datetime
    breaker: str = Breaker.CLOSED
    consecutive_failures: int = 0
    open_until: _dt.datetime | None = None
    opened_count: int = 0
    throttled_until: _dt.datetime | None = None


def plan_claim(budget: Budget, now: _dt.datetime, rate_per_minute: int, free_slots: int) -> int:
    """How many rows one claim of the integration may take now (5.4, 5.5): none while throttled,
    open, or while a half-open probe is in flight; one probe once the cooldown ended (a probe whose
    worker died is replaced after a lease); otherwise min(floor(tokens), free slots, 500)."""
    if budget.throttled_until is not None and budget.throttled_until > now:
        return 0
    tokens = refill(budget.tokens, budget.refilled_at, now, rate_per_minute)
    k = max(min(math.floor(tokens + 1e-9), free_slots, CLAIM_MAX), 0)
    if budget.breaker != Breaker.CLOSED:
        if budget.open_until is not None and budget.open_until > now:
            return 0
        k = min(k, 1)
    return k


def after_claim(budget: Budget, now: _dt.datetime, rate_per_minute: int, claimed: int, rules: Rules) -> Budget:
    """The budget once `claimed` rows were taken: refilled to now, one token per row spent; a
    claimed probe makes the breaker half-open until it answers (or its lease runs out)."""
    after = Budget(refill(budget.tokens, budget.refilled_at, now, rate_per_minute) - claimed, now,
                   budget.breaker, budget.consecutive_failures, budget.open_until, budget.opened_count,
                   budget.throttled_until)
    if claimed and budget.breaker != Breaker.CLOSED:
        after.breaker = Breaker.HALF_OPEN
        after.open_until = now + _dt.timedelta(seconds=rules.lease)
    return after


def cooldown(opened_count: int, rules: Rules) -> float:
    """The open period of the breaker's n-th consecutive opening (n from 0): 60 s doubled, 15 min at most."""
    return min(rules.breaker_cooldown * 2 ** min(opened_count, 40), rules.breaker_cap)


def after_outcomes(budget: Budget, outcomes: list[Outcome], now: _dt.datetime, rules: Rules) -> Budget:
    """The breaker and throttle state once `outcomes` (of one integration, in order) are recorded.
    A success closes and resets; a provider failure counts, and opens at the threshold or when it
    was the half-open probe; a throttled answer pauses the integration until Retry-After; other
    classes neither count nor reset (a half-open probe that met one lets the next probe go)."""
    b = Budget(budget.tokens, budget.refilled_at, budget.breaker, budget.consecutive_failures,
               budget.open_until, budget.opened_count, budget.throttled_until)
    for o in outcomes:
        if o.kind == "sent":
            b.breaker, b.consecutive_failures, b.open_until, b.opened_count = Breaker.CLOSED, 0, None, 0
        elif o.cls in BREAKER:
            b.consecutive_failures += 1
            if b.breaker == Breaker.HALF_OPEN or (b.breaker == Breaker.CLOSED and
                                                   b.consecutive_failures >= rules.breaker_threshold):
                b.open_until = now + _dt.timedelta(seconds=cooldown(b.opened_count, rules))
                b.opened_count += 1
                b.breaker = Breaker.OPEN
        else:
            if o.cls == "throttled":
                until = now + _dt.timedelta(seconds=o.retry_after or 0.0)
                if b.throttled_until is None or until > b.throttled_until:
                    b.throttled_until = until
            if b.breaker == Breaker.HALF_OPEN:   # the probe said nothing about an outage: probe again
                b.breaker, b.open_until = Breaker.OPEN, now
    return b


# ---------------------------------------------------------------- senders (1.1)

def resolve_sender(senders: list[Mapping], sender_id: str | None = None) -> Mapping | None:
    """The sender whose id is `sender_id`; else the first marked default; else the first."""
    if not senders:
        return None
    if sender_id:
        for s in senders:
            if s.get("id") == sender_id:
                return s
    for s in senders:
        if s.get("is_default") is True:
            return s
    return senders[0]


# ---------------------------------------------------------------- what enqueue takes

def checksum(content: bytes) -> str:
    """An attachment's key: the SHA-256 hex of its bytes (stored once per workspace, 3.7.1)."""
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class QueuedAttachment:
    """An attachment by checksum (its bytes live once per workspace in message_attachments);
    `content` is given when the caller has the bytes and they may not be stored yet."""
    checksum: str
    filename: str
    content_type: str = ""
    disposition: str = "attachment"
    content: bytes | None = None

    def ref(self) -> dict:
        return {"checksum": self.checksum, "filename": self.filename, "content_type": self.content_type,
                "disposition": self.disposition}


@dataclass(frozen=True)
class Outgoing:
    """One message to send, rendered: what the transactional API, broadcasts and list mails hand
    to store.enqueue. `data` is the template data (kept sealed in the message history only)."""
    workspace_id: str
    integration_id: str
    contact_email: str
    from_address: str
    from_name: str
    subject: str
    html: str
    template_id: str
    template_version: int
    source_type: Source
    source_id: str | None = None
    text: str | None = None
    message_id: str | None = None            # default: a fresh UUID v4 (4.1 ids)
    external_id: str | None = None
    priority: int | None = None              # default: PRIORITY[source_type]
    email_options: dict = field(default_factory=dict)   # cc, bcc, reply_to, list_unsubscribe_url, ...
    channel_options: dict | None = None      # what the message history shows (3.8)
    attachments: tuple[QueuedAttachment, ...] = ()
    list_id: str | None = None
    data: dict = field(default_factory=dict)
    metadata: dict | None = None
    channel: str = "email"

    def source_columns(self) -> dict[str, str | None]:
        """The message history's source ids (4.1)."""
        return {"broadcast_id": self.source_id if self.source_type == Source.BROADCAST else None,
                "automation_id": self.source_id if self.source_type == Source.AUTOMATION else None,
                "transactional_notification_id":
                    self.source_id if self.source_type == Source.TRANSACTIONAL else None}

    def payload(self) -> dict:
        """The queue row's payload (5.1): everything the send needs but the template data."""
        return {"from_address": self.from_address, "from_name": self.from_name, "subject": self.subject,
                "html_content": self.html, "text_content": self.text,
                "email_options": {**self.email_options, "attachments": [a.ref() for a in self.attachments]},
                "template_version": self.template_version, "list_id": self.list_id}


def marketing_unsubscribe(data: Mapping, mailto: str | None = None) -> dict:
    """The email_options of a broadcast or list mail for its List-Unsubscribe headers
    (engagement contract 2.3): the one-click URL of its template data, only when it is https
    (RFC 8058; over http the pair is left out), and the `mailto:` of an inbound mailbox where one
    is configured. Mail without a list (transactional) has no one-click URL, so none."""
    url = data.get("oneclick_unsubscribe_url")
    if not (isinstance(url, str) and url.lower().startswith("https://")):
        return {}
    out = {"list_unsubscribe_url": url}
    if mailto:
        out["list_unsubscribe_mailto"] = mailto if mailto.lower().startswith("mailto:") else f"mailto:{mailto}"
    return out


def insert_changes(row: Mapping) -> dict:
    """The timeline entry of a new message (4.5)."""
    return {k: {"new": row[k]} for k in ("template_id", "template_version", "channel", "broadcast_id", "sent_at")}


def update_changes(outcome: Outcome, row: Mapping) -> dict:
    """The timeline entry of a sent or finally failed message (4.5): the fields that changed."""
    if outcome.kind == "sent":
        out = {"status": {"old": Status.QUEUED.value, "new": Status.SENT.value}, "sent_at": {"new": row["sent_at"]}}
        if row["provider_message_id"]:
            out["provider_message_id"] = {"new": row["provider_message_id"]}
        return out
    return {"status": {"old": Status.QUEUED.value, "new": Status.FAILED.value},
            "failed_at": {"old": None, "new": row["failed_at"]}, "status_info": {"new": row["status_info"]}}


def event_data(row: Mapping, event_timestamp: _dt.datetime, with_info: bool = False) -> dict:
    """The payload of email.* outbox events (4.5)."""
    out = {"email": row["contact_email"], "message_id": row["id"], "template_id": row["template_id"],
           "broadcast_id": row["broadcast_id"], "list_id": row["list_id"], "channel": row["channel"],
           "event_timestamp": times.format_time(event_timestamp),
           "transactional_notification_id": row["transactional_notification_id"],
           "external_id": row["external_id"]}
    if with_info:
        out["status_info"] = row["status_info"]
    return out


# ---------------------------------------------------------------- the message object (4.1)

_OPTIONAL_STRINGS = ("external_id",)
_SOURCES = ("broadcast_id", "automation_id", "transactional_notification_id", "list_id")
_ONCE = ("delivered_at", "failed_at", "opened_at", "clicked_at", "bounced_at", "complained_at", "unsubscribed_at")
TIMESTAMP_FIELDS = ("sent_at", *_ONCE, "created_at", "updated_at")


def message_wire(row: Mapping, message_data: dict) -> dict:
    """The message object in 4.1's order; null or empty fields omitted except those always present.
    Times keep their microseconds (format_time drops trailing zeros)."""
    out: dict[str, Any] = {"id": row["id"]}
    if row["external_id"]:
        out["external_id"] = row["external_id"]
    out["contact_email"] = row["contact_email"]
    for k in _SOURCES:
        if row[k]:
            out[k] = row[k]
    out["template_id"] = row["template_id"]
    out["template_version"] = row["template_version"]
    out["channel"] = row["channel"]
    if row["status_info"]:
        out["status_info"] = row["status_info"]
    out["message_data"] = {"data": message_data.get("data") or {}}
    if message_data.get("metadata"):
        out["message_data"]["metadata"] = message_data["metadata"]
    if row["channel_options"]:
        out["channel_options"] = row["channel_options"]
    if row["attachments"]:
        out["attachments"] = row["attachments"]
    out["sent_at"] = times.format_time(row["sent_at"])
    for k in _ONCE:
        if row[k] is not None:
            out[k] = times.format_time(row[k])
    out["created_at"] = times.format_time(row["created_at"])
    out["updated_at"] = times.format_time(row["updated_at"])
    out["status"] = row["status"]
    out["attempts"] = row["attempts"]
    if row["provider_message_id"]:
        out["provider_message_id"] = row["provider_message_id"]
    return out


# ---------------------------------------------------------------- messages.list (4.3)

EXACT = ("id", "external_id", "list_id", "broadcast_id", "template_id", "transactional_notification_id",
         "automation_id")
FLAGS = {"is_sent": None, "is_delivered": "delivered_at", "is_failed": "failed_at", "is_opened": "opened_at",
         "is_clicked": "clicked_at", "is_bounced": "bounced_at", "is_complained": "complained_at",
         "is_unsubscribed": "unsubscribed_at"}   # is_sent means status = sent (Postroom)
RANGES = (("sent_after", "sent_at", ">="), ("sent_before", "sent_at", "<="),
          ("updated_after", "updated_at", ">="), ("updated_before", "updated_at", "<="))
ALL_PARAMS = ("workspace_id", "cursor", *EXACT, "status", "channel", "contact_email", "limit", *FLAGS,
              *(r[0] for r in RANGES))
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class MessageQuery:
    limit: int
    exact: dict[str, str]                      # column -> value (status and channel included)
    flags: dict[str, bool]                     # FLAGS name -> wanted
    ranges: dict[str, _dt.datetime]            # RANGES name -> bound
    cursor: tuple[_dt.datetime, str] | None


def _query_values(query) -> Callable[[str], str | None]:
    def get(name: str) -> str | None:
        return single_value(name, query.getlist(name), DeliveryError) if hasattr(query, "getlist") else \
            (query.get(name) or None)
    return get


def parse_message_query(query) -> MessageQuery:
    """messages.list parameters in the contract's check order (4.3): workspace_id; parsing of
    limit, the eight booleans, the four times; then negative limit, channel, contact email, the sent
    range, the updated range; then status; then the cursor."""
    get = _query_values(query)
    if get("workspace_id") is None:
        raise DeliveryError("Missing workspace ID")
    raw_limit = get("limit")
    paging.limit_value(raw_limit, DeliveryError)   # the value's own error first; its sign after the others
    flags = {}
    for name in FLAGS:
        raw = get(name)
        if raw is None:
            continue
        if raw not in ("true", "false"):
            raise DeliveryError(f"invalid {name} value: {raw}")
        flags[name] = raw == "true"
    ranges = {}
    for name, _, _ in RANGES:
        raw = get(name)
        if raw is None:
            continue
        try:
            ranges[name] = times.parse_time(raw)
        except times.TimeFormatError as exc:
            raise DeliveryError(f"invalid {name} time format, expected RFC3339: {exc.reason}") from None
    limit = paging.lenient_limit(raw_limit, DeliveryError)
    exact = {name: get(name) for name in EXACT if get(name) is not None}
    channel = get("channel")
    if channel is not None:
        if channel not in CHANNELS:
            raise DeliveryError(f"invalid channel type: {channel}")
        exact["channel"] = channel
    email = get("contact_email")
    if email is not None:
        email = email.strip().lower()
        if not _EMAIL.match(email):
            raise DeliveryError("invalid contact email format")
        exact["contact_email"] = email
    for lo, hi, field_name in (("sent_after", "sent_before", "sent"), ("updated_after", "updated_before", "updated")):
        if lo in ranges and hi in ranges and ranges[lo] > ranges[hi]:
            raise DeliveryError(f"{field_name}_after must be before {field_name}_before")
    status = get("status")
    if status is not None:
        if status not in tuple(Status):
            raise DeliveryError(f"invalid status value: {status}")
        exact["status"] = status
    raw_cursor = get("cursor")
    cursor = None if raw_cursor is None else decode_message_cursor(raw_cursor)
    return MessageQuery(limit, exact, flags, ranges, cursor)


def decode_message_cursor(raw: str) -> tuple[_dt.datetime, str]:
    """base64 of `<created_at>~<id>`; the three defects get 4.3's three messages. Notifuse's
    whole-second cursors are read as written."""
    try:
        text = paging.decode_key_cursor(raw.strip().replace(" ", "+"), DeliveryError)
    except DeliveryError:
        raise DeliveryError("invalid cursor encoding") from None
    stamp, found, key = text.partition("~")
    if not found or not stamp or not key:
        raise DeliveryError("invalid cursor format: expected timestamp~id")
    try:
        return times.parse_time(stamp), key
    except times.TimeFormatError:
        raise DeliveryError("invalid cursor timestamp format") from None


def encode_message_cursor(created_at: _dt.datetime, message_id: str) -> str:
    return paging.encode_cursor(created_at, message_id, "~")


def parse_broadcast_stats(query) -> str:
    """broadcast_id first, then workspace_id (4.4)."""
    get = _query_values(query)
    broadcast_id = get("broadcast_id")
    if broadcast_id is None:
        raise DeliveryError("broadcast_id is required")
    if get("workspace_id") is None:
        raise DeliveryError("workspace_id is required")
    return broadcast_id


STAT_FIELDS = ("total_sent", "total_delivered", "total_bounced", "total_complained", "total_failed",
               "total_opened", "total_clicked", "total_unsubscribed", "total_queued")
