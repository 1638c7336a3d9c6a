"""Bounces for plain SMTP senders (engagement-contract 3.9), the pure part: VERP return paths and
the reading of delivery-status notifications (RFC 3464) and feedback reports (RFC 5965, ARF) into
the normalised events of 3.3, with `source` smtp. Pure: no I/O.

Not yet wired: the SMTP provider does not use these return paths, and no inbound SMTP listener or
bounce-mailbox poller feeds `parse_report`; both are the next step of 3.9.
"""

from __future__ import annotations

import base64
import datetime as _dt
import email
import email.policy
import email.utils
import hashlib
import hmac
import re
import uuid
from email.message import Message

from postroom.inbound import model

VERP_INFO = b"postroom verp v1"
_VERP = re.compile(r"(bounces|unsubscribe)\+([a-z2-7]{26})\.([a-z2-7]{8})@(.+)", re.IGNORECASE)


def verp_key(key_bytes: bytes) -> bytes:
    """K_verp (0.3): HKDF-SHA256 of the installation key material, empty salt, 32 bytes."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=VERP_INFO).derive(key_bytes)


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _tag(k_verp: bytes, raw_id: bytes) -> str:
    return _b32(hmac.new(k_verp, raw_id, hashlib.sha256).digest())[:8]


def verp_address(k_verp: bytes, message_id: str, bounce_domain: str, local: str = "bounces") -> str:
    """`bounces+{u}.{t}@{domain}`: {u} the 16 id bytes in lower-case base32 (26 characters), {t} the
    first 8 characters of base32 of HMAC-SHA256(K_verp, those bytes); 43 characters before `@`."""
    raw = uuid.UUID(message_id).bytes
    return f"{local}+{_b32(raw)}.{_tag(k_verp, raw)}@{bounce_domain}"


def parse_verp(k_verp: bytes, address: str, bounce_domain: str) -> tuple[str, str] | None:
    """(kind `bounces`/`unsubscribe`, message id) of a VERP address with a valid tag on our
    domain (case-insensitive); None for anything else (the receiver answers 550 5.1.1)."""
    m = _VERP.fullmatch(address.strip().strip("<>"))
    if m is None or m.group(4).lower() != bounce_domain.lower():
        return None
    try:
        raw = base64.b32decode(m.group(2).upper() + "======")
    except ValueError:
        return None
    if len(raw) != 16 or not hmac.compare_digest(_tag(k_verp, raw), m.group(3).lower()):
        return None
    return m.group(1).lower(), str(uuid.UUID(bytes=raw))


# ---------------------------------------------------------------- reports

def _fields(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    blocks = re.split(r"\r?\n\r?\n", text.strip())
    return [email.message_from_string(b + "\n", policy=email.policy.default) for b in blocks if b.strip()]


def _address(value: str | None) -> str:
    """`rfc822; ana@example.com` -> ana@example.com."""
    text = str(value or "")
    return text.partition(";")[2].strip().strip("<>").lower() if ";" in text else text.strip().strip("<>").lower()


def _returned(report: Message, name: str) -> str:
    """A header of the returned message (message/rfc822 or text/rfc822-headers part)."""
    for part in report.walk():
        kind = part.get_content_type()
        headers = None
        if kind == "message/rfc822":
            inner = part.get_payload()
            headers = inner[0] if isinstance(inner, list) and inner else inner
        elif kind == "text/rfc822-headers":
            headers = email.message_from_string(str(part.get_payload()), policy=email.policy.default)
        if isinstance(headers, Message) and headers.get(name):
            return str(headers.get(name)).strip()
    return ""


def parse_report(raw: bytes, now: _dt.datetime, message_id: str = "") -> list[model.Event]:
    """The events of a DSN or ARF report; `message_id` from the VERP address when there is one,
    else the returned headers' X-Message-ID. Anything else (an auto-reply, a plain-text bounce)
    gives no event."""
    report = email.message_from_bytes(raw, policy=email.policy.default)
    if report.get_content_type() != "multipart/report":
        return []
    kind = (report.get_param("report-type") or "").lower()
    message_id = message_id or _returned(report, "X-Message-ID")
    own_id = str(report.get("Message-ID") or "").strip()
    text = raw.decode("utf-8", "replace").replace("\x00", "")
    digest = hashlib.sha256(raw).hexdigest()

    def key(recipient: str) -> str:
        return f"{own_id}:{recipient}" if own_id else f"{digest}:{recipient}"

    out: list[model.Event] = []
    for part in report.walk():
        content = part.get_content_type()
        if kind == "delivery-status" and content == "message/delivery-status":
            for block in _fields(part)[1:]:       # the first block is about the message, the rest per recipient
                recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
                action = str(block.get("Action") or "").strip().lower()
                if not recipient:
                    continue
                if action == "failed":
                    status = str(block.get("Status") or "").strip()
                    diagnostic = str(block.get("Diagnostic-Code") or "").strip()
                    out.append(model.Event(
                        model.BOUNCE, "smtp", recipient, key(recipient), now, text, message_id, "failed", status,
                        diagnostic, model.dsn_class(status) or model.dsn_class(diagnostic) or model.SOFT_COUNT))
                elif action in ("delivered", "relayed", "expanded"):
                    out.append(model.Event(model.DELIVERED, "smtp", recipient, key(recipient), now, text, message_id))
        elif kind == "feedback-report" and content == "message/feedback-report":
            for block in _fields(part)[:1]:
                recipient = _address(block.get("Original-Rcpt-To") or block.get("Removal-Recipient")) or \
                    _address(email.utils.parseaddr(_returned(report, "To"))[1])
                if recipient:
                    out.append(model.Event(model.COMPLAINT, "smtp", recipient, key(recipient), now, text, message_id,
                                           complaint_feedback_type=str(block.get("Feedback-Type") or "").strip()))
    return out
