"""Broadcast rules, pure (no I/O), from broadcasts-contract: the broadcast object and its
requests (create, update with its merge rule, schedule, the id-only actions, list and get
queries, sendToIndividual, selectWinner, retryFailed), feed URL rules, the state machine, the
scheduled instant, the A/B split (rank keys, sample, round-robin variations), the winner rules and
the `delivery` object.

A JSON value of the wrong type anywhere in a request is `Invalid request body`, the answer of
Notifuse's typed decoding. Every other refusal names its field with the contract's message.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from postroom.platform import jsonenc
from postroom.platform.errors import RuleError
from postroom.platform.fields import normalize_email

INVALID_BODY = "Invalid request body"
NOT_FOUND = "Broadcast not found"
NAME_MAX = 255
MAX_VARIATIONS = 8
MAX_TEST_HOURS = 168
WINNER_METRICS = ("open_rate", "click_rate")
UTM_KEYS = ("source", "medium", "campaign", "term", "content")
LIST_DEFAULT, LIST_MAX = 50, 100


class BroadcastError(RuleError):
    """A broadcast request refused; the text names the field or the state at fault."""


# ---------------------------------------------------------------- statuses and the state machine

DRAFT, SCHEDULED, PROCESSING, TESTING, TEST_COMPLETED, WINNER_SELECTED, PROCESSED, PAUSED, CANCELLED, FAILED = (
    "draft", "scheduled", "processing", "testing", "test_completed", "winner_selected", "processed", "paused",
    "cancelled", "failed")
STATUSES = (DRAFT, SCHEDULED, PROCESSING, TESTING, TEST_COMPLETED, WINNER_SELECTED, PROCESSED, PAUSED, CANCELLED,
            FAILED)
SENDING = (PROCESSING, TESTING, WINNER_SELECTED)      # what delete refuses
PAUSABLE = (PROCESSING, TESTING, WINNER_SELECTED, PROCESSED)
CANCELLABLE = (SCHEDULED, PAUSED, PROCESSING, TESTING, TEST_COMPLETED, WINNER_SELECTED, PROCESSED)
UPDATABLE = (DRAFT, SCHEDULED, PAUSED)
TEST_RESULTS = (PROCESSING, TESTING, TEST_COMPLETED, WINNER_SELECTED, PROCESSED)
HOLDS_SEGMENTS = (SCHEDULED, PROCESSING, PAUSED, TESTING, TEST_COMPLETED, WINNER_SELECTED)  # segments.delete refuses

# delivery.status values
D_PENDING, D_SENDING, D_WAITING, D_SENT, D_PARTIAL, D_CANCELLED = (
    "pending", "sending", "waiting_for_winner", "sent", "partially_failed", "cancelled")


def check_schedule(status: str) -> None:
    if status != DRAFT:
        raise BroadcastError(f"only broadcasts with draft status can be scheduled, current status: {status}")


def check_pause(status: str, delivery_status: str) -> None:
    if status not in PAUSABLE:
        raise BroadcastError("only broadcasts with processing, testing, winner_selected or processed status can be "
                             f"paused, current status: {status}")
    _still_sending(status, delivery_status)


def check_resume(status: str) -> None:
    if status != PAUSED:
        raise BroadcastError(f"only broadcasts with paused status can be resumed, current status: {status}")


def check_cancel(status: str, delivery_status: str) -> None:
    if status not in CANCELLABLE:
        raise BroadcastError("only broadcasts with scheduled, paused, processing, testing, test_completed, "
                             f"winner_selected or processed status can be cancelled, current status: {status}")
    _still_sending(status, delivery_status)


def _still_sending(status: str, delivery_status: str) -> None:
    if status == PROCESSED and delivery_status != D_SENDING:
        raise BroadcastError("broadcast has already finished sending")


def check_update(status: str) -> None:
    if status not in UPDATABLE:
        raise BroadcastError(f"cannot update broadcast with status: {status}")


def check_delete(status: str) -> None:
    if status in SENDING:
        raise BroadcastError("broadcasts in 'sending' status cannot be deleted")


def check_select_winner(status: str, test_settings: Mapping) -> None:
    manual_ab = bool(test_settings.get("enabled")) and not test_settings.get("auto_send_winner")
    if not (status == TEST_COMPLETED or (status in (TESTING, PROCESSING) and manual_ab)):
        raise BroadcastError("broadcast is not in test completed state")


def check_test_results(status: str) -> None:
    if status not in TEST_RESULTS:
        raise BroadcastError(f"broadcast test results not available for status: {status}")


def check_retry_failed(status: str, delivery_status: str) -> None:
    if status != PROCESSED or delivery_status != D_PARTIAL:
        raise BroadcastError("only broadcasts that finished with failures can retry failed recipients, "
                             f"current status: {status}")


def resumed_status(paused_from: str | None) -> str:
    """Resume returns to the exact status held before the pause; a broadcast paused by a start
    check (no recorded status) runs its start again, from `processing`."""
    return paused_from if paused_from in PAUSABLE else PROCESSING


# ---------------------------------------------------------------- typed access to a request

_STR, _OBJ, _LIST, _BOOL, _INT = (str,), (dict,), (list,), (bool,), (int,)


def _typed(body: Mapping, spec: Mapping[str, tuple]) -> None:
    """Each key of `spec` present and not null has one of its types (a bool is not an int), else
    Invalid request body."""
    for key, types in spec.items():
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, types) or (types != _BOOL and isinstance(value, bool)):
            raise BroadcastError(INVALID_BODY)


def _object(body: Mapping, key: str) -> dict:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BroadcastError(INVALID_BODY)
    return value


def request_body(body) -> Mapping:
    """A JSON object with no NUL character in any key or string (PostgreSQL text cannot hold one)."""
    if not isinstance(body, dict):
        raise BroadcastError(INVALID_BODY)
    where = _nul_at(body, ())
    if where is not None:
        raise BroadcastError(f"{'.'.join(where) or 'body'} contains a NUL character")
    return body


def _nul_at(value, path: tuple) -> tuple | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return path + (key.replace("\x00", ""),)
        found = _nul_at(item, path + (str(key),))
        if found is not None:
            return found
    return None


def workspace_of(body: Mapping) -> str:
    _typed(body, {"workspace_id": _STR})
    ws = body.get("workspace_id") or ""
    if not ws:
        raise BroadcastError("workspace_id is required")
    return ws


def broadcast_ref(body: Mapping, key: str = "id", message: str = "broadcast id is required") -> str:
    _typed(body, {key: _STR})
    value = (body.get(key) or "").strip()
    if not value:
        raise BroadcastError(message)
    return value


def new_id() -> str:
    """32 lowercase hex characters, made by the server (an id sent to create is ignored)."""
    return secrets.token_hex(16)


# ---------------------------------------------------------------- the parts of a broadcast

def parse_audience(raw) -> dict:
    """{list, segments, exclude_unsubscribed}; the legacy `lists` gives `list` when it is absent,
    `skip_duplicate_emails` is accepted and dropped."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BroadcastError(INVALID_BODY)
    _typed(raw, {"list": _STR, "segments": _LIST, "exclude_unsubscribed": _BOOL, "lists": _LIST,
                 "skip_duplicate_emails": _BOOL})
    segments = raw.get("segments") or []
    legacy = raw.get("lists") or []
    if any(not isinstance(s, str) for s in (*segments, *legacy)):
        raise BroadcastError(INVALID_BODY)
    chosen = raw.get("list") or (legacy[0] if legacy else "")
    return {"list": chosen, "segments": list(dict.fromkeys(s for s in segments if s)),
            "exclude_unsubscribed": bool(raw.get("exclude_unsubscribed"))}


def parse_test_settings(raw) -> dict:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BroadcastError(INVALID_BODY)
    _typed(raw, {"enabled": _BOOL, "sample_percentage": _INT, "auto_send_winner": _BOOL,
                 "auto_send_winner_metric": _STR, "test_duration_hours": _INT, "variations": _LIST})
    variations = []
    for v in raw.get("variations") or []:
        if not isinstance(v, dict):
            raise BroadcastError(INVALID_BODY)
        _typed(v, {"variation_name": _STR, "template_id": _STR, "metrics": _OBJ})
        out = {"variation_name": v.get("variation_name") or "", "template_id": v.get("template_id") or ""}
        if v.get("metrics"):
            out["metrics"] = v["metrics"]
        variations.append(out)
    return {"enabled": bool(raw.get("enabled")), "sample_percentage": raw.get("sample_percentage") or 0,
            "auto_send_winner": bool(raw.get("auto_send_winner")),
            "auto_send_winner_metric": raw.get("auto_send_winner_metric") or "",
            "test_duration_hours": raw.get("test_duration_hours") or 0, "variations": variations}


def parse_utm(raw) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BroadcastError(INVALID_BODY)
    _typed(raw, {k: _STR for k in UTM_KEYS})
    return {k: raw[k] for k in UTM_KEYS if raw.get(k)}


def parse_metadata(raw) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BroadcastError(INVALID_BODY)
    problem = jsonenc.storage_problem(raw)
    if problem:
        raise BroadcastError(f"metadata {problem}")
    return raw


# ---------------------------------------------------------------- data feeds

LOCAL_HOSTS = ("localhost", "localhost.localdomain")
INTERNAL_HOSTS = ("internal", "corp", "intranet", "metadata", "metadata.google.internal", "metadata.azure.internal")
INTERNAL_SUFFIXES = (".internal", ".corp", ".intranet", ".cluster.local")
RESTRICTED_IP = "URL must not use private or restricted IP address"


def restricted_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Anything Python's ipaddress does not call global, IPv4-mapped forms included."""
    if ip.version == 6:
        ip = ipaddress.IPv6Address(int(ip))            # drop a %zone
        if ip.ipv4_mapped is not None:
            return restricted_ip(ip.ipv4_mapped)
    return not ip.is_global or ip.is_multicast


def feed_url_problem(url: str) -> str | None:
    """Rules 2-9 of the data-feed URL table, in order; None when the URL passes."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port                                     # a bad port does not parse
    except ValueError as e:
        return f"invalid URL: {e}"
    if parts.scheme not in ("http", "https"):
        return "URL must use http or https scheme"
    if not host:
        return "URL must have a host"
    if parts.query:
        return "URL must not contain query parameters"
    if parts.fragment:
        return "URL must not contain fragment"
    host = host.rstrip(".").lower()
    if host in LOCAL_HOSTS or host.endswith((".localhost", ".local")):
        return "URL must not use localhost or local domain"
    if host in INTERNAL_HOSTS or host.endswith(INTERNAL_SUFFIXES):
        return "URL must not use internal domain"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return RESTRICTED_IP if restricted_ip(ip) else None


def _headers(raw, prefix: str) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BroadcastError(INVALID_BODY)
    out = []
    for h in raw:
        if not isinstance(h, dict):
            raise BroadcastError(INVALID_BODY)
        _typed(h, {"name": _STR, "value": _STR})
        if not h.get("name"):
            raise BroadcastError(f"{prefix}header name is required")
        if not h.get("value"):
            raise BroadcastError(f"{prefix}header value is required")
        out.append({"name": h["name"], "value": h["value"]})
    return out


def _feed(raw, kind: str) -> dict | None:
    """One feed's settings, checked when enabled (rules 1-11); a disabled feed is kept as given."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BroadcastError(INVALID_BODY)
    _typed(raw, {"enabled": _BOOL, "url": _STR, "headers": _LIST})
    feed = {"enabled": bool(raw.get("enabled")), "url": raw.get("url") or ""}
    prefix = f"{kind} feed: "
    if feed["enabled"]:
        if not feed["url"]:
            raise BroadcastError(f"{prefix}URL is required when {kind} feed is enabled")
        problem = feed_url_problem(feed["url"])
        if problem:
            raise BroadcastError(f"{prefix}{kind} feed URL: {problem}")
        if kind == "recipient" and urlsplit(feed["url"]).scheme != "https":
            raise BroadcastError(f"{prefix}URL must use https scheme")
    feed["headers"] = _headers(raw.get("headers"), prefix) if feed["enabled"] else (raw.get("headers") or [])
    return feed


def parse_data_feed(raw, stored: Mapping | None = None) -> dict | None:
    """data_feed: `global_feed` and `recipient_feed` each replaced when given, kept when absent;
    fetched data (`global_feed_data`, `global_feed_fetched_at`) always kept from `stored`."""
    if raw is None:
        return dict(stored) if stored else None
    if not isinstance(raw, dict):
        raise BroadcastError(INVALID_BODY)
    out = dict(stored or {})
    for kind in ("global", "recipient"):
        key = f"{kind}_feed"
        if raw.get(key) is not None:
            out[key] = _feed(raw[key], kind)
    return out or None


def test_route_url(url, *, https_only: bool) -> str:
    """The `url` of refreshGlobalFeed / testRecipientFeed (rules 3-7 of those routes)."""
    if not isinstance(url, str) and url is not None:
        raise BroadcastError(INVALID_BODY)
    if not url:
        raise BroadcastError("url is required")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port
    except ValueError as e:
        raise BroadcastError(f"url: invalid URL: {e}") from None
    if https_only and parts.scheme != "https":
        raise BroadcastError("url must use https scheme")
    if parts.scheme not in ("http", "https"):
        raise BroadcastError("url: URL must use http or https scheme")
    if not host:
        raise BroadcastError("url: URL must have a host")
    problem = feed_url_problem(url)
    if problem and problem not in ("URL must not contain query parameters", "URL must not contain fragment"):
        raise BroadcastError(f"url: {problem}")
    return url


# ---------------------------------------------------------------- create and update

CREATE_TYPES = {"workspace_id": _STR, "name": _STR, "audience": _OBJ, "test_settings": _OBJ,
                "tracking_enabled": _BOOL, "utm_parameters": _OBJ, "metadata": _OBJ, "data_feed": _OBJ}


def validate(b: Mapping) -> None:
    """The create rules 2-12 on a whole broadcast (create, and update's merged result); rule 13,
    the feeds, is checked as they are parsed."""
    name = b["name"]
    if not name:
        raise BroadcastError("name is required")
    if len(name) > NAME_MAX:
        raise BroadcastError("name must be less than 255 characters")
    t = b["test_settings"]
    if t["enabled"]:
        if not 1 <= t["sample_percentage"] <= 100:
            raise BroadcastError("test sample percentage must be between 1 and 100")
        if len(t["variations"]) < 2:
            raise BroadcastError("at least 2 variations are required for A/B testing")
        if len(t["variations"]) > MAX_VARIATIONS:
            raise BroadcastError("maximum 8 variations are allowed for A/B testing")
        if t["auto_send_winner"]:
            if t["test_duration_hours"] <= 0:
                raise BroadcastError("test duration must be greater than 0 hours when auto winner is enabled")
            if t["test_duration_hours"] > MAX_TEST_HOURS:
                raise BroadcastError("test duration cannot exceed 168 hours (7 days)")
            if not t["auto_send_winner_metric"]:
                raise BroadcastError("auto send winner metric must be specified when auto winner is enabled")
            if t["auto_send_winner_metric"] not in WINNER_METRICS:
                raise BroadcastError(f"invalid test winner metric: {t['auto_send_winner_metric']}")
        for n, v in enumerate(t["variations"], 1):
            if not v["template_id"]:
                raise BroadcastError(f"template_id is required for variation {n}")
    elif len(t["variations"]) > MAX_VARIATIONS:
        raise BroadcastError("maximum 8 variations are allowed for A/B testing")
    if not b["audience"]["list"]:
        raise BroadcastError("list is required")


def _fields(body: Mapping, stored_feed: Mapping | None) -> dict:
    _typed(body, CREATE_TYPES)
    name = body.get("name") or ""
    return {"name": name.strip(), "audience": parse_audience(body.get("audience")),
            "test_settings": parse_test_settings(body.get("test_settings")),
            "utm_parameters": parse_utm(body.get("utm_parameters")),
            "metadata": parse_metadata(body.get("metadata")),
            "data_feed": parse_data_feed(body.get("data_feed"), stored_feed)}


def parse_create(body) -> dict:
    """broadcasts.create: the new broadcast's fields (schedule, status and counters in the body
    are ignored: a new broadcast is a draft with an empty schedule)."""
    body = request_body(body)
    _typed(body, CREATE_TYPES)
    workspace_of(body)
    out = _fields(body, None)
    validate(out)
    return out


@dataclass(frozen=True)
class Update:
    broadcast_id: str
    body: Mapping                 # the request, merged onto the stored broadcast by merge_update


def parse_update(body) -> Update:
    body = request_body(body)
    _typed(body, {**CREATE_TYPES, "id": _STR, "schedule": _OBJ})
    workspace_of(body)
    return Update(broadcast_ref(body), body)


def merge_update(stored: Mapping, update: Update, started: bool) -> dict:
    """The update's merge rule on a broadcast whose status allows it (check_update first):
    name, audience, test_settings, utm_parameters and metadata replaced (zero when absent);
    schedule and data_feed kept when absent. `started`: a paused broadcast that has sent, whose
    audience and test settings cannot change any more."""
    body = update.body
    out = _fields(body, stored.get("data_feed"))
    if started and (out["audience"] != stored["audience"] or out["test_settings"] != stored["test_settings"]):
        raise BroadcastError("cannot change audience or test_settings after sending has started")
    validate(out)
    out["schedule"] = parse_schedule_fields(body["schedule"]) if body.get("schedule") is not None \
        else dict(stored["schedule"])
    return out


# ---------------------------------------------------------------- schedule

EMPTY_SCHEDULE = {"is_scheduled": False, "scheduled_date": "", "scheduled_time": "", "timezone": "",
                  "use_recipient_timezone": False}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _zone(name: str) -> ZoneInfo:
    if not name:
        return ZoneInfo("UTC")
    try:
        if "\x00" in name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BroadcastError(f"invalid timezone: unknown time zone {name}") from None


def check_when(date: str, time: str, timezone: str) -> None:
    """Rules 3-6 of broadcasts.schedule."""
    if not date or not time:
        raise BroadcastError("scheduled_date and scheduled_time are required when not sending immediately")
    try:
        if not _DATE.fullmatch(date):
            raise ValueError
        _dt.date.fromisoformat(date)
    except ValueError:
        raise BroadcastError("scheduled date must be in YYYY-MM-DD format") from None
    if not _TIME.fullmatch(time):
        raise BroadcastError("scheduled time must be in HH:MM format")
    _zone(timezone)


def parse_schedule_fields(raw: Mapping) -> dict:
    """The stored `schedule` of an update that gives one: its five fields; when scheduled, the
    instant is checked like broadcasts.schedule."""
    _typed(raw, {"is_scheduled": _BOOL, "scheduled_date": _STR, "scheduled_time": _STR, "timezone": _STR,
                 "use_recipient_timezone": _BOOL})
    out = {**EMPTY_SCHEDULE, **{k: raw[k] for k in EMPTY_SCHEDULE if raw.get(k) is not None}}
    if out["is_scheduled"]:
        check_when(out["scheduled_date"], out["scheduled_time"], out["timezone"])
    return out


@dataclass(frozen=True)
class ScheduleRequest:
    broadcast_id: str
    send_now: bool
    schedule: dict                # the stored schedule when not send_now


def parse_schedule(body) -> ScheduleRequest:
    """broadcasts.schedule rules 1-6 (the rest need the database)."""
    body = request_body(body)
    _typed(body, {"workspace_id": _STR, "id": _STR, "send_now": _BOOL, "scheduled_date": _STR,
                  "scheduled_time": _STR, "timezone": _STR, "use_recipient_timezone": _BOOL})
    workspace_of(body)
    broadcast_id = broadcast_ref(body)
    if body.get("send_now"):
        return ScheduleRequest(broadcast_id, True, {})
    date, time, tz = body.get("scheduled_date") or "", body.get("scheduled_time") or "", body.get("timezone") or ""
    check_when(date, time, tz)
    return ScheduleRequest(broadcast_id, False, {
        "is_scheduled": True, "scheduled_date": date, "scheduled_time": time, "timezone": tz,
        "use_recipient_timezone": bool(body.get("use_recipient_timezone"))})


def local_instant(date: str, time: str, timezone: str) -> _dt.datetime:
    """`date time` read in `timezone` (empty: UTC), in UTC. A local time in a DST gap takes the
    offset in force before the gap, an ambiguous one its first occurrence (fold=0)."""
    naive = _dt.datetime.fromisoformat(f"{date}T{time}")
    return naive.replace(tzinfo=_zone(timezone), fold=0).astimezone(_dt.timezone.utc)


def scheduled_instant(schedule: Mapping) -> _dt.datetime:
    return local_instant(schedule["scheduled_date"], schedule["scheduled_time"], schedule.get("timezone") or "")


def earliest_instant(schedule: Mapping) -> _dt.datetime:
    """With use_recipient_timezone the broadcast starts at the earliest local instant: the
    scheduled wall time in UTC+14."""
    naive = _dt.datetime.fromisoformat(f"{schedule['scheduled_date']}T{schedule['scheduled_time']}")
    return (naive - _dt.timedelta(hours=14)).replace(tzinfo=_dt.timezone.utc)


def recipient_instant(schedule: Mapping, contact_timezone: str | None) -> _dt.datetime:
    """A recipient's send-after time: the scheduled wall time in the contact's timezone; one
    without a valid timezone uses the schedule's, or UTC."""
    for zone in (contact_timezone, schedule.get("timezone") or ""):
        if zone is None:
            continue
        try:
            return local_instant(schedule["scheduled_date"], schedule["scheduled_time"], zone)
        except BroadcastError:
            continue
    return local_instant(schedule["scheduled_date"], schedule["scheduled_time"], "")


# ---------------------------------------------------------------- the other requests

def parse_action(body) -> str:
    """pause, resume, cancel, delete: {workspace_id, id}."""
    body = request_body(body)
    workspace_of(body)
    return broadcast_ref(body)


@dataclass(frozen=True)
class Individual:
    broadcast_id: str
    recipient: str
    template_id: str


def parse_individual(body) -> Individual:
    body = request_body(body)
    _typed(body, {"workspace_id": _STR, "broadcast_id": _STR, "id": _STR, "recipient_email": _STR,
                  "template_id": _STR})
    workspace_of(body)
    key = "broadcast_id" if body.get("broadcast_id") else "id"
    broadcast_id = broadcast_ref(body, key, "broadcast_id is required")
    raw = (body.get("recipient_email") or "").strip()
    if not raw:
        raise BroadcastError("recipient_email is required")
    recipient = normalize_email(raw)
    if not _looks_like_address(recipient):
        raise BroadcastError("invalid recipient_email format")
    return Individual(broadcast_id, recipient, body.get("template_id") or "")


_ADDRESS = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")


def _looks_like_address(value: str) -> bool:
    return len(value) <= 254 and _ADDRESS.fullmatch(value) is not None


def individual_template(test_settings: Mapping, template_id: str) -> str:
    """sendToIndividual rules 7-8: the requested variation's template, else the first."""
    variations = [v for v in test_settings.get("variations") or [] if v.get("template_id")]
    if not template_id:
        if not variations:
            raise BroadcastError("broadcast has no variations")
        return variations[0]["template_id"]
    if not any(v["template_id"] == template_id for v in variations):
        raise BroadcastError(f"variation with ID {template_id} not found in broadcast")
    return template_id


def parse_select_winner(body) -> tuple[str, str]:
    body = request_body(body)
    _typed(body, {"workspace_id": _STR, "id": _STR, "template_id": _STR})
    workspace_of(body)
    broadcast_id = broadcast_ref(body)
    template_id = body.get("template_id") or ""
    if not template_id:
        raise BroadcastError("template_id is required")
    return broadcast_id, template_id


def check_winner_template(test_settings: Mapping, template_id: str) -> None:
    if not any(v["template_id"] == template_id for v in test_settings.get("variations") or []):
        raise BroadcastError("invalid template ID")


def parse_retry_failed(body) -> tuple[str, bool]:
    body = request_body(body)
    _typed(body, {"workspace_id": _STR, "id": _STR, "include_permanent": _BOOL})
    workspace_of(body)
    return broadcast_ref(body), bool(body.get("include_permanent"))


def send_variations(test_settings: Mapping) -> list[str]:
    """The templates a start needs: every variation's with A/B, else the first one's."""
    ids = [v["template_id"] for v in test_settings.get("variations") or [] if v.get("template_id")]
    if not ids:
        raise BroadcastError("broadcast has no variations")
    return ids if test_settings.get("enabled") else ids[:1]


# ---------------------------------------------------------------- list and get queries

_LEADING_INT = re.compile(r"\s*([+-]?[0-9]+)")
_BOOL_WORDS = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}


def _leading_int(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    m = _LEADING_INT.match(raw)
    if not m:
        raise BroadcastError(f"invalid {name} parameter: expected integer")
    return int(m.group(1)[:12])


def parse_bool_param(raw: str | None, name: str) -> bool:
    if raw is None:
        return False
    value = _BOOL_WORDS.get(raw.lower())
    if value is None:
        raise BroadcastError(f"invalid {name} parameter: syntax error scanning boolean")
    return value


@dataclass(frozen=True)
class ListQuery:
    status: str | None
    limit: int
    offset: int
    with_templates: bool


def parse_list(param: Callable[[str], str | None]) -> ListQuery:
    if not param("workspace_id"):
        raise BroadcastError("workspace_id is required")
    limit = _leading_int(param("limit"), "limit")
    offset = _leading_int(param("offset"), "offset")
    with_templates = parse_bool_param(param("with_templates"), "with_templates")
    if limit is None or limit <= 0:
        limit = LIST_DEFAULT
    return ListQuery(param("status"), min(limit, LIST_MAX), max(offset or 0, 0), with_templates)


def parse_get(param: Callable[[str], str | None]) -> tuple[str, bool]:
    if not param("workspace_id"):
        raise BroadcastError("workspace_id is required")
    broadcast_id = (param("id") or "").strip()
    if not broadcast_id:
        raise BroadcastError("id is required")
    return broadcast_id, parse_bool_param(param("with_templates"), "with_templates")


def parse_results_query(param: Callable[[str], str | None]) -> str:
    if not param("workspace_id"):
        raise BroadcastError("workspace_id is required")
    broadcast_id = (param("id") or "").strip()
    if not broadcast_id:
        raise BroadcastError("broadcast id is required")
    return broadcast_id


# ---------------------------------------------------------------- A/B: rank keys, sample, variations

def rank_key(broadcast_id: str, email: str) -> int:
    """The first 8 bytes of SHA-256(broadcast_id ":" email), big-endian, signed: a pure function
    of the broadcast and the address, so the split is reproducible and unbiased by the address."""
    digest = hashlib.sha256(f"{broadcast_id}:{email}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def sample_size(total: int, percentage: int) -> int:
    """floor(total x percentage / 100), at least 1 when there is anyone."""
    if total <= 0:
        return 0
    return max(1, total * percentage // 100)


def test_variation(position: int, variations: int) -> int:
    """The variation index of the test recipient at 0-based `position` in the sample, by rank key:
    round-robin, so group sizes differ by at most one."""
    return position % variations


def split(broadcast_id: str, emails: Sequence[str], test_settings: Mapping) -> list[tuple[str, str, int | None]]:
    """(email, phase, variation index) of every recipient, in rank order. Phases: `single` (no A/B:
    the first variation), `test` (the sample, round-robin), `winner` (held until a winner)."""
    ranked = sorted(emails, key=lambda e: (rank_key(broadcast_id, e), e))
    if not test_settings.get("enabled"):
        return [(e, "single", 0) for e in ranked]
    n = sample_size(len(ranked), test_settings["sample_percentage"])
    v = len(test_settings["variations"])
    return [(e, "test", test_variation(i, v)) if i < n else (e, "winner", None) for i, e in enumerate(ranked)]


# ---------------------------------------------------------------- winners and test results

@dataclass(frozen=True)
class VariationFigures:
    template_id: str
    sent: int
    delivered: int
    opens: int
    clicks: int

    @property
    def open_rate(self) -> float:
        return self.opens / self.sent if self.sent else 0.0

    @property
    def click_rate(self) -> float:
        return self.clicks / self.sent if self.sent else 0.0


def recommended_winner(figures: Sequence[VariationFigures]) -> str:
    """The highest 0.7 x click_rate + 0.3 x open_rate; the first in variation order on ties."""
    best, best_score = "", -1.0
    for f in figures:
        score = 0.7 * f.click_rate + 0.3 * f.open_rate
        if score > best_score:
            best, best_score = f.template_id, score
    return best


def automatic_winner(figures: Sequence[VariationFigures], metric: str) -> str:
    """opens / sent or clicks / sent, highest wins; ties (all zero included) go to the first."""
    best, best_rate = "", -1.0
    for f in figures:
        rate = f.open_rate if metric == "open_rate" else f.click_rate
        if rate > best_rate:
            best, best_rate = f.template_id, rate
    return best


def winner_due(test_sent_at: _dt.datetime | None, hours: int, now: _dt.datetime) -> bool:
    return test_sent_at is not None and now >= test_sent_at + _dt.timedelta(hours=hours)


# ---------------------------------------------------------------- the delivery object

COUNTERS = ("recipients", "held", "waiting", "queued", "sent", "failed", "retryable", "skipped", "cancelled")


def delivery_status(status: str, c: Mapping[str, int]) -> str:
    """From the broadcast's status and its counters: pending before anything was fed, cancelled,
    waiting_for_winner while the rest is held, sent or partially_failed once nothing is waiting
    or queued, else sending."""
    if status == CANCELLED:
        return D_CANCELLED
    if status in (DRAFT, SCHEDULED) or (not c.get("recipients") and status not in (PROCESSED,)):
        return D_PENDING
    unsettled = c.get("waiting", 0) + c.get("queued", 0)
    if c.get("held") and not unsettled:
        return D_WAITING
    if unsettled or c.get("held"):
        return D_SENDING
    return D_PARTIAL if c.get("failed") else D_SENT


def delivery_wire(status: str, counters: Mapping[str, int], finished_at: str | None) -> dict:
    out: dict[str, Any] = {"status": delivery_status(status, counters)}
    out.update({k: int(counters.get(k) or 0) for k in COUNTERS})
    if finished_at:
        out["finished_at"] = finished_at
    return out


# ---------------------------------------------------------------- the broadcast object

def _omit_empty(out: dict, keys: Sequence[str]) -> dict:
    for k in keys:
        if out.get(k) in (None, "", 0, {}, []):
            out.pop(k, None)
    return out


def audience_wire(a: Mapping) -> dict:
    return _omit_empty({"list": a.get("list") or "", "segments": list(a.get("segments") or []),
                        "exclude_unsubscribed": bool(a.get("exclude_unsubscribed"))}, ("list", "segments"))


def schedule_wire(s: Mapping) -> dict:
    out = {**EMPTY_SCHEDULE, **{k: s[k] for k in EMPTY_SCHEDULE if k in s}}
    return _omit_empty(out, ("scheduled_date", "scheduled_time", "timezone"))


def test_settings_wire(t: Mapping, templates: Mapping[str, Any] | None = None) -> dict:
    variations = []
    for v in t.get("variations") or []:
        out = {"variation_name": v.get("variation_name") or "", "template_id": v.get("template_id") or "",
               "metrics": v.get("metrics") or {}}
        if templates is not None and v.get("template_id") in templates:
            out["template"] = templates[v["template_id"]]
        variations.append(out)
    out = {"enabled": bool(t.get("enabled")), "sample_percentage": int(t.get("sample_percentage") or 0),
           "auto_send_winner": bool(t.get("auto_send_winner")),
           "auto_send_winner_metric": t.get("auto_send_winner_metric") or "",
           "test_duration_hours": int(t.get("test_duration_hours") or 0), "variations": variations}
    return _omit_empty(out, ("auto_send_winner_metric", "test_duration_hours"))


def wire(row: Mapping, delivery: dict, format_time: Callable[[Any], str],
         templates: Mapping[str, Any] | None = None) -> dict:
    """The broadcast object in the contract's output order, empty fields omitted as Notifuse does."""
    t = (lambda k: format_time(row[k]) if row[k] else None)
    out = {"id": row["id"], "workspace_id": row["workspace_id"], "name": row["name"], "channel_type": "email",
           "status": row["status"], "audience": audience_wire(row["audience"]),
           "schedule": schedule_wire(row["schedule"]),
           "test_settings": test_settings_wire(row["test_settings"], templates),
           "utm_parameters": row["utm_parameters"] or None, "metadata": row["metadata"] or None,
           "winning_template": row["winning_template"], "test_sent_at": t("test_sent_at"),
           "winner_sent_at": t("winner_sent_at"),
           "test_phase_recipient_count": row["test_phase_recipient_count"],
           "winner_phase_recipient_count": row["winner_phase_recipient_count"],
           "enqueued_count": row["enqueued_count"], "created_at": t("created_at"), "updated_at": t("updated_at"),
           "started_at": t("started_at"), "completed_at": t("completed_at"), "cancelled_at": t("cancelled_at"),
           "paused_at": t("paused_at"), "pause_reason": row["pause_reason"],
           "data_feed": _feed_wire(row["data_feed"], format_time), "delivery": delivery}
    return _omit_empty(out, ("utm_parameters", "metadata", "winning_template", "test_sent_at", "winner_sent_at",
                             "started_at", "completed_at", "cancelled_at", "paused_at", "pause_reason", "data_feed"))


def _feed_wire(feed: Mapping | None, format_time) -> dict | None:
    if not feed:
        return None
    out = dict(feed)
    if out.get("global_feed_fetched_at") and not isinstance(out["global_feed_fetched_at"], str):
        out["global_feed_fetched_at"] = format_time(out["global_feed_fetched_at"])
    return out
