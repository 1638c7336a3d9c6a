"""Provider events (engagement-contract 3): each provider's payloads turned into the contract's
normalised events (3.3, 3.4), the bounce classifier (3.5), the effects rule (3.6), the checks of
credentials that need no I/O (3.2), and the inboundWebhookEvents.list parameters (3.8). Pure.

A parser takes the decoded JSON body (and, for SES, the raw text) and returns the events to
store; an event type Postroom does not use is skipped (not an error, 3.1 step 8); a body that is
not the provider's shape raises Malformed (400 `Failed to process webhook`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from postroom.platform import paging, times
from postroom.platform.errors import RuleError

SOURCES = ("ses", "postmark", "mailgun", "sparkpost", "mailjet", "sendgrid", "smtp")
TYPES = ("delivered", "bounce", "complaint", "unsubscribe")
DELIVERED, BOUNCE, COMPLAINT, UNSUBSCRIBE = TYPES
HARD, SOFT_COUNT, SOFT_IGNORE = "hard", "soft_count", "soft_ignore"
CUSTOM_ID = "notifuse_message_id"   # the marker Postroom attaches at send (delivery-contract 2.9)
STATUS_INFO_MAX = 255
SOFT_BOUNCE_THRESHOLD = 5           # workspace setting soft_bounce_threshold, 1..20 (3.6)
SOFT_BOUNCE_RANGE = (1, 20)

# The answers of POST /webhooks/email (3.1).
PROVIDER_REQUIRED = "Provider is required"
IDS_REQUIRED = "Workspace ID and integration ID are required"
READ_FAILED = "Failed to read request body"
NOT_FOUND = "integration not found"
BAD_SIGNATURE = "invalid webhook signature"
FAILED = "Failed to process webhook"


class Malformed(RuleError):
    """A body that is not the provider's shape: 400 `Failed to process webhook`."""

    def __init__(self, message: str = FAILED):
        super().__init__(message, 400)


# ---------------------------------------------------------------- the normalised event (3.3)

@dataclass(frozen=True)
class Event:
    type: str
    source: str
    recipient_email: str
    dedupe_key: str
    timestamp: _dt.datetime
    raw_payload: str
    message_id: str = ""
    bounce_type: str = ""
    bounce_category: str = ""
    bounce_diagnostic: str = ""
    bounce_classification: str = ""
    complaint_feedback_type: str = ""

    def id_for(self, integration_id: str) -> str:
        """UUIDv5 (URL namespace) of `postroom:inbound:{integration_id}:{dedupe_key}` (3.3, 3.7)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"postroom:inbound:{integration_id}:{self.dedupe_key}"))

    @property
    def status_info(self) -> str:
        """What the message's status_info records with bounced_at or complained_at (3.6)."""
        if self.type == COMPLAINT:
            text = self.complaint_feedback_type
        else:
            text = " ".join(p for p in (self.bounce_type, self.bounce_category, self.bounce_diagnostic) if p)
        return text[:STATUS_INFO_MAX]


def event_wire(row: Mapping) -> dict:
    """The inbound_webhook_events object, in Notifuse's field order; empty optional fields omitted."""
    out: dict[str, Any] = {"id": str(row["id"]), "type": row["type"], "source": row["source"],
                           "integration_id": row["integration_id"], "recipient_email": row["recipient_email"]}
    if row["message_id"]:
        out["message_id"] = row["message_id"]
    out["timestamp"] = row["timestamp"]
    out["raw_payload"] = row["raw_payload"]
    for name in ("bounce_type", "bounce_category", "bounce_diagnostic", "bounce_classification",
                 "complaint_feedback_type"):
        if row[name]:
            out[name] = row[name]
    out["created_at"] = row["created_at"]
    return out


def timeline_changes(event: Event) -> dict:
    """The `insert_inbound_webhook_event` timeline entry's changes (3.6)."""
    out = {"type": {"new": event.type}, "source": {"new": event.source}}
    for name in ("bounce_type", "bounce_category", "bounce_diagnostic", "complaint_feedback_type"):
        value = getattr(event, name)
        if value:
            out[name] = {"new": value}
    return out


# ---------------------------------------------------------------- reading provider JSON

def _obj(value) -> dict:
    return value if isinstance(value, dict) else {}


def _text(value) -> str:
    """A string field as text (numbers as their decimal form); NUL dropped (PostgreSQL text
    cannot hold it); anything else is ""."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value != int(value) else str(int(value))
    if isinstance(value, str):
        return value.replace("\x00", "")
    return ""


def _email(value) -> str:
    email = _text(value).strip().lower()
    if not email:
        raise Malformed()
    return email


def _canonical(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _raw(value) -> str:
    """An event's own JSON, as stored in raw_payload."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace("\\u0000", "")


def parse_when(value, now: _dt.datetime) -> _dt.datetime:
    """An event time: RFC 3339 (any fraction), Unix seconds (number or decimal string), else `now`."""
    if isinstance(value, bool):
        return now
    if isinstance(value, (int, float)):
        return _from_unix(value, now)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
            return _from_unix(float(text), now)
        try:
            return times.parse_time(text)
        except times.TimeFormatError:
            return now
    return now


def _from_unix(seconds: float, now: _dt.datetime) -> _dt.datetime:
    try:
        return _dt.datetime.fromtimestamp(seconds, times.UTC)
    except (OverflowError, OSError, ValueError):
        return now


# ---------------------------------------------------------------- the bounce classifier (3.5)

_DSN_CODE = re.compile(r"(?<![0-9.])([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9])")


def dsn_class(diagnostic: str) -> str | None:
    """The class of an enhanced status code (RFC 3463) in a diagnostic (3.9's DSN rules); None
    without one."""
    m = _DSN_CODE.search(diagnostic)
    if m is None:
        return None
    code = ".".join(m.groups())
    if m.group(1) == "5":
        if code == "5.2.2" or m.group(2) == "7":
            return SOFT_COUNT
        if code == "5.3.4":
            return SOFT_IGNORE
        return HARD
    if m.group(1) == "4":
        return HARD if code == "4.4.7" else SOFT_COUNT
    return None


def _ses(t: str, c: str, d: str, extra: str) -> str:
    if t == "permanent":
        return HARD
    if t == "transient" and c == "general" and ("message expired" in d or "4.4.7" in d):
        return HARD
    if t == "transient" and c in ("messagetoolarge", "contentrejected", "attachmentrejected"):
        return SOFT_IGNORE
    return SOFT_COUNT


def _mailgun(t: str, c: str, d: str, extra: str) -> str:
    return HARD if {t, c} & {"hardbounce", "permanent"} else SOFT_COUNT


def _mailjet(t: str, c: str, d: str, extra: str) -> str:
    if t == "hardbounce":
        return HARD
    if t in ("blocked", "softbounce") and extra in ("content", "spam", "system", "domain"):
        return SOFT_IGNORE
    return SOFT_COUNT


_POSTMARK_HARD = ("bademailaddress", "manuallydeactivated")
_POSTMARK_IGNORE = ("messagecontent", "ruleblocked", "autoresponder", "subscribe", "unsubscribe", "addresschange",
                    "challengeverification", "openrelaytest", "virusnotification", "spamnotification", "inbounderror",
                    "smtpapierror", "templaterenderingfailed", "dmarcpolicy")


def _postmark(t: str, c: str, d: str, extra: str) -> str:
    if t == "blocked" or "hard" in t or t in _POSTMARK_HARD:
        return HARD
    if t in _POSTMARK_IGNORE:
        return SOFT_IGNORE
    return SOFT_COUNT


def _sparkpost(t: str, c: str, d: str, extra: str) -> str:
    if c in ("10", "30", "90"):
        return HARD
    if c in ("23", "52", "53", "60", "80", "100"):
        return SOFT_IGNORE
    return SOFT_COUNT


def _sendgrid(t: str, c: str, d: str, extra: str) -> str:
    if t == "bounce" or c == "invalid address":
        return HARD
    if t == "blocked" and c in ("content", "reputation", "frequency or volume"):
        return SOFT_IGNORE
    return SOFT_COUNT


def _smtp(t: str, c: str, d: str, extra: str) -> str:
    if c in ("hard", "hardbounce", "permanent"):
        return HARD
    if c in ("content", "message", "policy"):
        return SOFT_IGNORE
    if c in ("soft", "softbounce", "transient", "temporary"):
        return SOFT_COUNT
    if not c:
        return dsn_class(d) or SOFT_COUNT
    return SOFT_COUNT


_CLASSIFIERS: dict[str, Callable[[str, str, str, str], str]] = {
    "ses": _ses, "mailgun": _mailgun, "mailjet": _mailjet, "postmark": _postmark, "sparkpost": _sparkpost,
    "sendgrid": _sendgrid, "smtp": _smtp}


def classify(kind: str, bounce_type: str, category: str, diagnostic: str, extra: str = "") -> str:
    """hard / soft_count / soft_ignore of a bounce (3.5); inputs compared trimmed and lower-cased.
    `extra` is Mailjet's error_related_to. Anything not matched is soft_count."""
    rule = _CLASSIFIERS.get(kind, _smtp)
    return rule(*(s.strip().lower() for s in (bounce_type, category, diagnostic, extra)))


def _bounce(source: str, recipient: str, key: str, when, raw: str, message_id: str, bounce_type: str,
            category: str, diagnostic: str, extra: str = "") -> Event:
    return Event(BOUNCE, source, recipient, key, when, raw, message_id, bounce_type, category, diagnostic,
                 classify(source, bounce_type, category, diagnostic, extra))


# ---------------------------------------------------------------- per provider (3.4)

def ses_message(envelope: dict) -> dict | None:
    """The SES event inside an SNS Notification; None when its Message is not a JSON object."""
    try:
        message = json.loads(_text(envelope.get("Message")))
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def _ses_message_id(mail: dict) -> str:
    tags = _obj(mail.get("tags")).get(CUSTOM_ID)
    if isinstance(tags, list) and tags and _text(tags[0]):
        return _text(tags[0])
    for header in mail.get("headers") or []:
        header = _obj(header)
        if _text(header.get("name")).lower() == "x-message-id" and _text(header.get("value")):
            return _text(header.get("value"))
    return _text(mail.get("messageId"))


def parse_ses(envelope: dict, raw: str, now: _dt.datetime) -> list[Event]:
    """An SNS Notification carrying an SES event (configuration-set or identity notification)."""
    if "Successfully validated SNS topic" in _text(envelope.get("Message")):
        return []
    message = ses_message(envelope)
    if message is None:
        return []
    kind = _text(message.get("eventType")) or _text(message.get("notificationType"))
    mail = _obj(message.get("mail"))
    message_id = _ses_message_id(mail)
    sns_id = _text(envelope.get("MessageId"))
    out = []
    if kind == "Bounce":
        bounce = _obj(message.get("bounce"))
        when = parse_when(bounce.get("timestamp"), now)
        for r in bounce.get("bouncedRecipients") or []:
            r = _obj(r)
            email = _email(r.get("emailAddress"))
            out.append(_bounce("ses", email, f"{sns_id}:{email}", when, raw, message_id,
                               _text(bounce.get("bounceType")), _text(bounce.get("bounceSubType")),
                               _text(r.get("diagnosticCode"))))
    elif kind == "Complaint":
        complaint = _obj(message.get("complaint"))
        when = parse_when(complaint.get("timestamp"), now)
        for r in complaint.get("complainedRecipients") or []:
            email = _email(_obj(r).get("emailAddress"))
            out.append(Event(COMPLAINT, "ses", email, f"{sns_id}:{email}", when, raw, message_id,
                             complaint_feedback_type=_text(complaint.get("complaintFeedbackType"))))
    elif kind == "Delivery":
        delivery = _obj(message.get("delivery"))
        when = parse_when(delivery.get("timestamp"), now)
        for r in delivery.get("recipients") or []:
            email = _email(r)
            out.append(Event(DELIVERED, "ses", email, f"{sns_id}:{email}", when, raw, message_id))
    return out


def parse_postmark(body, raw: str, now: _dt.datetime) -> list[Event]:
    if not isinstance(body, dict):
        raise Malformed()
    record = _text(body.get("RecordType"))
    message_id = _text(_obj(body.get("Metadata")).get(CUSTOM_ID)) or _text(body.get("MessageID"))
    if record == "Delivery":
        email = _email(body.get("Recipient"))
        key = f"Delivery:{_text(body.get('MessageID'))}:{email}:{_text(body.get('DeliveredAt'))}"
        return [Event(DELIVERED, "postmark", email, key, parse_when(body.get("DeliveredAt"), now), raw, message_id)]
    if record in ("Bounce", "SpamComplaint"):
        email = _email(body.get("Email"))
        record_id = _text(body.get("ID"))
        if not record_id:
            raise Malformed()
        key = f"{record}:{record_id}"
        if record == "Bounce":
            kind = _text(body.get("Type"))
            return [_bounce("postmark", email, key, parse_when(body.get("BouncedAt"), now), raw, message_id, kind,
                            kind, _text(body.get("Details")))]
        when = parse_when(body.get("BouncedAt") or body.get("ComplainedAt"), now)
        return [Event(COMPLAINT, "postmark", email, key, when, raw, message_id,
                      complaint_feedback_type=_text(body.get("Type")))]
    return []


def parse_mailgun(body, raw: str, now: _dt.datetime) -> list[Event]:
    if not isinstance(body, dict) or not isinstance(body.get("event-data"), dict):
        raise Malformed()
    data = body["event-data"]
    event = _text(data.get("event"))
    if event not in ("delivered", "failed", "complained", "unsubscribed"):
        return []
    email = _email(data.get("recipient"))
    key = _text(data.get("id")) or _sha256(_canonical(data))
    when = parse_when(data.get("timestamp"), now)
    message_id = _text(_obj(data.get("user-variables")).get(CUSTOM_ID)) or \
        _text(_obj(_obj(data.get("message")).get("headers")).get("message-id"))
    if event == "failed":
        status = _obj(data.get("delivery-status"))
        category = "HardBounce" if _text(data.get("severity")) == "permanent" else "SoftBounce"
        diagnostic = _text(status.get("message")) or _text(status.get("description")) or _text(data.get("reason"))
        return [_bounce("mailgun", email, key, when, raw, message_id, "Failed", category, diagnostic)]
    if event == "complained":
        return [Event(COMPLAINT, "mailgun", email, key, when, raw, message_id, complaint_feedback_type="abuse")]
    kind = DELIVERED if event == "delivered" else UNSUBSCRIBE
    return [Event(kind, "mailgun", email, key, when, raw, message_id)]


_SPARKPOST_TYPES = {("message_event", "delivery"): DELIVERED, ("message_event", "bounce"): BOUNCE,
                    ("message_event", "out_of_band"): BOUNCE, ("message_event", "spam_complaint"): COMPLAINT,
                    ("unsubscribe_event", "list_unsubscribe"): UNSUBSCRIBE,
                    ("unsubscribe_event", "link_unsubscribe"): UNSUBSCRIBE}


def parse_sparkpost(body, raw: str, now: _dt.datetime) -> list[Event]:
    if not isinstance(body, list):
        raise Malformed()
    out = []
    for element in body:
        if not isinstance(element, dict):
            raise Malformed()
        for category, data in _obj(element.get("msys")).items():
            data = _obj(data)
            kind = _SPARKPOST_TYPES.get((category, _text(data.get("type"))))
            if kind is None:
                continue
            email = _email(data.get("rcpt_to"))
            key = _text(data.get("event_id")) or _sha256(_canonical(element))
            when = parse_when(data.get("timestamp"), now)
            message_id = _text(_obj(data.get("rcpt_meta")).get(CUSTOM_ID)) or _text(data.get("message_id"))
            own = _raw(element)
            if kind == BOUNCE:
                out.append(_bounce("sparkpost", email, key, when, own, message_id, "Bounce",
                                   _text(data.get("bounce_class")), _text(data.get("reason"))))
            elif kind == COMPLAINT:
                out.append(Event(COMPLAINT, "sparkpost", email, key, when, own, message_id,
                                 complaint_feedback_type=_text(data.get("fbtype"))))
            else:
                out.append(Event(kind, "sparkpost", email, key, when, own, message_id))
    return out


def _items(body) -> list:
    """One event object or an array of them."""
    if isinstance(body, dict):
        return [body]
    if isinstance(body, list) and all(isinstance(e, dict) for e in body):
        return body
    raise Malformed()


def parse_mailjet(body, raw: str, now: _dt.datetime) -> list[Event]:
    out = []
    for e in _items(body):
        event = _text(e.get("event"))
        if event not in ("sent", "bounce", "blocked", "spam", "unsub"):
            continue
        email = _email(e.get("email"))
        key = _sha256(f"{event}|{_text(e.get('MessageID'))}|{_text(e.get('email'))}|{_text(e.get('time'))}")
        when = parse_when(e.get("time"), now)
        message_id = _text(e.get("CustomID")) or _text(e.get("MessageID"))
        own = _raw(e)
        if event in ("bounce", "blocked"):
            if event == "blocked":
                kind = category = "Blocked"
            elif e.get("hard_bounce") is True:
                kind, category = "HardBounce", "Permanent"
            else:
                kind, category = "SoftBounce", "Temporary"
            comment, error = _text(e.get("comment")), _text(e.get("error"))
            diagnostic = f"{comment}: {error}" if comment and error else comment or error
            out.append(_bounce("mailjet", email, key, when, own, message_id, kind, category, diagnostic,
                               _text(e.get("error_related_to"))))
        elif event == "spam":
            out.append(Event(COMPLAINT, "mailjet", email, key, when, own, message_id,
                             complaint_feedback_type=_text(e.get("source")) or "spam"))
        else:
            out.append(Event(DELIVERED if event == "sent" else UNSUBSCRIBE, "mailjet", email, key, when, own,
                             message_id))
    return out


def parse_sendgrid(body, raw: str, now: _dt.datetime) -> list[Event]:
    if not isinstance(body, list):
        raise Malformed()
    out = []
    for e in _items(body):
        event = _text(e.get("event"))
        if event not in ("delivered", "bounce", "dropped", "spamreport", "unsubscribe", "group_unsubscribe"):
            continue
        email = _email(e.get("email"))
        key = _text(e.get("sg_event_id")) or _sha256(_canonical(e))
        when = parse_when(e.get("timestamp"), now)
        message_id = _text(e.get(CUSTOM_ID)) or _text(e.get("sg_message_id"))
        own = _raw(e)
        if event == "bounce":
            status, reason = _text(e.get("status")), _text(e.get("reason"))
            out.append(_bounce("sendgrid", email, key, when, own, message_id, _text(e.get("type")) or "bounce",
                               _text(e.get("bounce_classification")), f"{status}: {reason}" if status else reason))
        elif event == "dropped":
            out.append(_bounce("sendgrid", email, key, when, own, message_id, "dropped", "Dropped",
                               _text(e.get("reason"))))
        elif event == "spamreport":
            out.append(Event(COMPLAINT, "sendgrid", email, key, when, own, message_id,
                             complaint_feedback_type="spam"))
        else:
            out.append(Event(DELIVERED if event == "delivered" else UNSUBSCRIBE, "sendgrid", email, key, when, own,
                             message_id))
    return out


def parse_smtp(body, raw: str, now: _dt.datetime) -> list[Event]:
    """Postroom's generic JSON (3.4): any event but delivered, bounce, complaint is refused, since
    the format is ours and the sender should hear of a mistake."""
    out = []
    for e in _items(body):
        event = _text(e.get("event"))
        if event not in ("delivered", "bounce", "complaint"):
            raise Malformed()
        email = _email(e.get("recipient"))
        key = _text(e.get("event_id")) or _sha256(_canonical(e))
        when = parse_when(e.get("timestamp"), now)
        message_id = _text(e.get("message_id"))
        own = _raw(e)
        if event == "bounce":
            out.append(_bounce("smtp", email, key, when, own, message_id, "Bounce", _text(e.get("bounce_category")),
                               _text(e.get("diagnostic_code"))))
        elif event == "complaint":
            out.append(Event(COMPLAINT, "smtp", email, key, when, own, message_id,
                             complaint_feedback_type=_text(e.get("complaint_type"))))
        else:
            out.append(Event(DELIVERED, "smtp", email, key, when, own, message_id))
    return out


PARSERS: dict[str, Callable[[Any, str, _dt.datetime], list[Event]]] = {
    "postmark": parse_postmark, "mailgun": parse_mailgun, "sparkpost": parse_sparkpost, "mailjet": parse_mailjet,
    "sendgrid": parse_sendgrid, "smtp": parse_smtp}


def decode(raw: bytes):
    """The body as JSON, or None when it is not JSON."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def parse(kind: str, body, raw: str, now: _dt.datetime) -> list[Event]:
    """The events of a provider body (SES envelopes go through parse_ses after their checks)."""
    if body is None:
        raise Malformed()
    if kind == "ses":
        if not isinstance(body, dict):
            raise Malformed()
        return parse_ses(body, raw, now)
    parser = PARSERS.get(kind)
    if parser is None:
        raise Malformed()
    return parser(body, raw, now)


# ---------------------------------------------------------------- credentials (3.2)

SECRET_BYTES = 32
BASIC_USER = "postroom"
TOKEN_HEADER = "x-postroom-webhook-token"
NONE, VALID, WRONG = "none", "valid", "wrong"


def new_secret(random: bytes) -> str:
    """32 random bytes as base64url without padding."""
    return base64.urlsafe_b64encode(random).rstrip(b"=").decode("ascii")


def basic_password(authorization: str | None) -> str | None:
    """The password of an HTTP Basic Authorization header (any user name)."""
    if not authorization or not authorization[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    _, found, password = decoded.partition(":")
    return password if found else None


def secret_state(presented: list[str | None], secret: str | None) -> str:
    """`none` when no secret was presented; `valid` when every presented one equals the secret
    (constant-time); `wrong` otherwise."""
    given = [p for p in presented if p]
    if not given:
        return NONE
    if secret is None:
        return WRONG
    ok = True
    for value in given:
        ok &= hmac.compare_digest(value.encode("utf-8", "surrogatepass"), secret.encode())
    return VALID if ok else WRONG


def mailgun_signature(signing_key: str, signature) -> str:
    """`valid`/`wrong`/`none` of a Mailgun body's `signature` object: hex HMAC-SHA256 of
    timestamp ‖ token under the webhook signing key."""
    sig = _obj(signature)
    timestamp, token, given = _text(sig.get("timestamp")), _text(sig.get("token")), _text(sig.get("signature"))
    if not (timestamp and token and given):
        return NONE
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return VALID if hmac.compare_digest(expected.encode(), given.strip().lower().encode()) else WRONG


def sendgrid_signature(public_key_b64: str, signature_b64: str | None, timestamp: str | None, raw: bytes) -> str:
    """`valid`/`wrong`/`none` of SendGrid's Signed Event Webhook: ECDSA P-256, SHA-256 over
    timestamp ‖ raw body; base64 DER signature; base64 DER SubjectPublicKeyInfo key."""
    if not signature_b64 or not timestamp:
        return NONE
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, binascii.Error, TypeError):
        return WRONG
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return WRONG
    try:
        key.verify(signature, timestamp.encode() + raw, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return WRONG
    return VALID


def public_key_ok(public_key_b64: str) -> bool:
    """A SendGrid verification key that can verify anything: base64 DER of an EC public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        return isinstance(serialization.load_der_public_key(base64.b64decode(public_key_b64, validate=True)),
                          ec.EllipticCurvePublicKey)
    except (ValueError, binascii.Error, TypeError):
        return False


# ---------------------------------------------------------------- effects (3.6)

@dataclass(frozen=True)
class Effects:
    """What one stored event does: the message column it sets once (with its outbox event), and
    which memberships move to which status."""
    column: str | None = None           # message_history column set when NULL
    outbox: str | None = None           # email.* event written when the column was set now
    status_info: bool = False           # status_info written with the column
    memberships: str | None = None      # "all": every membership not already in `keep`; "list": the message's list
    to_status: str | None = None
    keep: tuple[str, ...] = ()          # membership statuses left as they are
    counts_soft: bool = False           # a soft bounce that counts toward the threshold


def effects(event: Event) -> Effects:
    if event.type == DELIVERED:
        return Effects("delivered_at", "email.delivered")
    if event.type == COMPLAINT:
        return Effects("complained_at", "email.complained", True, "all", "complained", ("complained",))
    if event.type == UNSUBSCRIBE:
        return Effects("unsubscribed_at", "email.unsubscribed", False, "list", "unsubscribed",
                       ("unsubscribed", "bounced", "complained"))
    if event.bounce_classification == HARD:
        return Effects("bounced_at", "email.bounced", True, "all", "bounced", ("bounced", "complained"))
    if event.bounce_classification == SOFT_COUNT:
        return Effects(counts_soft=True, memberships="all", to_status="bounced", keep=("bounced", "complained"))
    return Effects()


def soft_bounce_threshold(settings: Mapping | None) -> int:
    """The workspace setting soft_bounce_threshold (1..20), else 5."""
    value = (settings or {}).get("soft_bounce_threshold")
    lo, hi = SOFT_BOUNCE_RANGE
    if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
        return value
    return SOFT_BOUNCE_THRESHOLD


# ---------------------------------------------------------------- inboundWebhookEvents.list (3.8)

PREFIX = "Invalid parameters: "


def _bad(message: str) -> RuleError:
    return RuleError(PREFIX + message)


@dataclass(frozen=True)
class EventQuery:
    limit: int = paging.DEFAULT_LIMIT
    exact: dict = field(default_factory=dict)       # column -> value
    after: _dt.datetime | None = None
    before: _dt.datetime | None = None
    cursor: tuple[_dt.datetime, str] | None = None


def _time(raw: str | None, name: str) -> _dt.datetime | None:
    if raw is None:
        return None
    try:
        return times.parse_time(raw)
    except times.TimeFormatError as exc:
        raise _bad(f"invalid {name} time format, expected RFC3339: {exc.reason}") from None


def encode_cursor(timestamp: _dt.datetime, event_id: str) -> str:
    """Standard base64 of `<timestamp RFC 3339 with its fraction>~<id>`."""
    return base64.b64encode(f"{times.format_time(timestamp)}~{event_id}".encode()).decode("ascii")


def decode_cursor(raw: str) -> tuple[_dt.datetime, str]:
    """Also Notifuse's whole-second form; any defect is `invalid cursor`."""
    try:
        text = base64.b64decode(raw.strip().replace(" ", "+") + "=" * (-len(raw.strip()) % 4),
                                altchars=b"+/", validate=True).decode("utf-8")
        stamp, found, key = text.partition("~")
        if not found:
            raise ValueError
        return times.parse_time(stamp), str(uuid.UUID(key))
    except (binascii.Error, ValueError, times.TimeFormatError):
        raise _bad("invalid cursor") from None


def parse_event_query(param: Callable[[str], str | None], valid_email: Callable[[str], bool]) -> EventQuery:
    """inboundWebhookEvents.list's parameters, in 3.8's order; `param(name)` reads one."""
    if param("workspace_id") is None:
        raise _bad("workspace_id is required")
    limit = paging.lenient_limit(param("limit"), _bad)
    exact: dict = {}
    event_type = param("event_type")
    if event_type is not None:
        if event_type not in TYPES:
            raise _bad(f"invalid event type: {event_type}")
        exact["type"] = event_type
    email = param("recipient_email")
    if email is not None:
        email = email.strip().lower()
        if not valid_email(email):
            raise _bad("invalid contact email format")
        exact["recipient_email"] = email
    message_id = param("message_id")
    if message_id is not None:
        exact["message_id"] = message_id
    after, before = _time(param("timestamp_after"), "timestamp_after"), _time(param("timestamp_before"),
                                                                               "timestamp_before")
    if after is not None and before is not None and after > before:
        raise _bad("timestamp_after must be before timestamp_before")
    cursor = param("cursor")
    return EventQuery(limit, exact, after, before, decode_cursor(cursor) if cursor is not None else None)


# ---------------------------------------------------------------- webhooks.register / status (4)

EVENT_TYPES = ("delivered", "bounce", "complaint")
NOT_IMPLEMENTED = "webhook registration not implemented for provider: {}"
MANUAL = "automatic registration is not available for {}; add the callback URL in the provider's console"


def callback_url(api_endpoint: str, kind: str, workspace_id: str, integration_id: str, secret: str) -> str:
    """{API endpoint}/webhooks/email?provider&workspace_id&integration_id&token (4.2)."""
    from urllib.parse import urlencode

    query = urlencode({"provider": kind, "workspace_id": workspace_id, "integration_id": integration_id,
                       "token": secret})
    return f"{api_endpoint.rstrip('/')}/webhooks/email?{query}"


def parse_event_types(value) -> list[str]:
    """event_types of webhooks.register: absent or empty = all three; unknown values ignored."""
    if value is None or value == []:
        return list(EVENT_TYPES)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError("event_types must be an array of strings")
    if any("\x00" in v for v in value):
        raise RuleError("invalid event_types: contains a NUL character")
    wanted = [t for t in EVENT_TYPES if t in value]
    return wanted


def status_wire(kind: str, url: str, event_types: list[str], last_event_at: _dt.datetime | None) -> dict:
    """The minimal first version's status (4.3): nothing registered at the provider; registered
    once a verified event arrived."""
    details: dict[str, Any] = {"callback_url": url}
    if last_event_at is not None:
        details["last_event_at"] = last_event_at
    return {"status": {"email_provider_kind": kind, "is_registered": last_event_at is not None,
                       "endpoints": [{"url": url, "event_type": t, "active": False} for t in event_types],
                       "error": MANUAL.format(kind), "provider_details": details}}
