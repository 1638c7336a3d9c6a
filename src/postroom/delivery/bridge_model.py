"""The SMTP bridge's rules, pure (delivery-contract 6): where a mail carries its send request,
what its headers add to it, the checks the bridge runs before transactional.send's own, the
credentials of AUTH, and the SMTP reply for each outcome. The server is delivery/bridge.py; the
send itself is transactional_api.send_notification, with transactional.parse_send's rules.

A mail's body is the request `{"workspace_id": ..., "notification": {...}}`, the `notification`
being transactional.send's; the envelope's sender and recipients are not used.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from email.message import Message
from typing import Any, Mapping

from postroom.delivery import transactional as tx
from postroom.delivery.model import DeliveryError
from postroom.platform import jsonenc
from postroom.platform.errors import RuleError

MAX_MESSAGE_BYTES = 10 * 1024 * 1024     # SIZE, as Notifuse
MAX_RECIPIENTS = 50
# Per read and per write (Notifuse: 10 s), so a 10 MiB DATA from a slow client survives.
TIMEOUT = 60.0
# AUTH attempts per window: per user name (Notifuse), and per client address (Postroom). A
# success clears both counters, so only failures in a row add up.
AUTH_WINDOW = 60
AUTH_PER_USER = 5
AUTH_PER_ADDRESS = 20
_BUCKET_TEXT_MAX = 320                   # a user name is an address (254 at most); longer ones are cut

REPLY_AUTH_REQUIRED = "530 5.7.0 authentication required"
REPLY_BAD_CREDENTIALS = "535 5.7.8 invalid credentials"
REPLY_TOO_MANY_AUTH = "454 4.7.0 too many authentication attempts"
REPLY_AUTH_UNAVAILABLE = "454 4.7.0 temporary authentication failure"   # RFC 4954's text
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 too many recipients"
REPLY_TOO_LARGE = "552 5.3.4 message too large"
REPLY_TEMPORARY = "451 4.3.0 temporary failure, try again later"
_REPLY_TEXT_MAX = 400                    # an SMTP reply line is at most 512 octets (RFC 5321 4.5.3.1.5)

NO_ACCESS = "user does not have access to workspace"
NOT_JSON = "email body is not valid JSON: "


# ---------------------------------------------------------------- AUTH

def plain_credentials(blob: bytes) -> tuple[str, str] | None:
    """RFC 4616's `authzid NUL authcid NUL password` as (user name, password); None when the
    blob has not that shape. The authorisation identity is ignored (Notifuse)."""
    parts = blob.split(b"\x00")
    if len(parts) != 3:
        return None
    return text_of(parts[1]), text_of(parts[2])


def text_of(value: bytes) -> str:
    """A credential as text: what is not UTF-8 cannot match a key, and is refused as a wrong one."""
    return value.decode("utf-8", "replace")


def auth_buckets(username: str, address: str) -> dict[str, int]:
    """The rate-limit counters one AUTH attempt counts in (platform.ratelimit), with their limits."""
    return {f"smtp-user:{username.strip().lower()[:_BUCKET_TEXT_MAX]}": AUTH_PER_USER,
            f"smtp-ip:{address[:_BUCKET_TEXT_MAX]}": AUTH_PER_ADDRESS}


# ---------------------------------------------------------------- finding the request in the mail

def parse_mail(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.default)


def _part_text(part: Message) -> str:
    """A leaf part's content: its Content-Transfer-Encoding undone, then its charset decoded (UTF-8
    when none is named), without a BOM or the white space around it."""
    data = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = data.decode(charset)
    except LookupError:
        raise ValueError(f"unknown charset {charset}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"the text is not valid {charset} ({exc.reason} at byte {exc.start})") from None
    return text.strip().lstrip("\ufeff").strip()


def _whole_body(raw: bytes) -> str:
    """Everything after the header block, as UTF-8."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = raw.partition(separator)
        if found:
            return body.decode("utf-8", "replace").strip().lstrip("\ufeff").strip()
    return ""


def _json_object(text: str) -> dict:
    value = jsonenc.decode(text.encode("utf-8", "surrogatepass"))
    if not isinstance(value, dict):
        raise ValueError("the payload must be a JSON object")
    return value


def find_payload(raw: bytes, message: Message) -> dict:
    """The request a mail carries. A single-part mail: its body. A multipart one (nested parts
    walked): the first `application/json` part that holds a JSON object, else the first
    `text/plain` one, else the whole body (Notifuse's fallback). The reason given when none parses
    is the first candidate's."""
    if message.is_multipart():
        leaves = [p for p in message.walk() if not p.is_multipart()]
        candidates: list[Any] = [p for p in leaves if p.get_content_type() == "application/json"]
        candidates += [p for p in leaves if p.get_content_type() == "text/plain"]
        candidates.append(None)      # the whole body
    else:
        candidates = [message]
    first_reason = None
    for part in candidates:
        try:
            return _json_object(_whole_body(raw) if part is None else _part_text(part))
        except ValueError as exc:
            first_reason = first_reason or str(exc)
    raise DeliveryError(NOT_JSON + (first_reason or "empty body"))


# ---------------------------------------------------------------- headers filling gaps

def _header_addresses(message: Message, name: str) -> list[str]:
    values = [str(v) for v in message.get_all(name, [])]
    return [address for _, address in email.utils.getaddresses(values) if address]


def message_id_of(message: Message) -> str:
    """The Message-ID header without its angle brackets ("" when there is none)."""
    value = str(message.get("Message-ID") or "").strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    return value


def fill_from_headers(payload: dict, message: Message) -> dict:
    """Cc and Bcc (address lists) and Reply-To (its first address) where the request's
    `email_options` leaves them empty; the Message-ID as `external_id` where the request has no
    `external_id` key, so that a mail sent twice is sent once. A value of the wrong type is left
    for parse_send to refuse."""
    n = payload.get("notification")
    if not isinstance(n, dict):
        return payload
    n = dict(n)
    options = n.get("email_options")
    if options is None or isinstance(options, dict):
        filled = dict(options or {})
        for key, header in (("cc", "Cc"), ("bcc", "Bcc")):
            if not filled.get(key) and _header_addresses(message, header):
                filled[key] = _header_addresses(message, header)
        if not filled.get("reply_to"):
            reply_to = _header_addresses(message, "Reply-To")
            if reply_to:
                filled["reply_to"] = reply_to[0]
        if filled != (options or {}):
            n["email_options"] = filled
    if "external_id" not in n and message_id_of(message):
        n["external_id"] = message_id_of(message)
    return {**payload, "notification": n}


# ---------------------------------------------------------------- the bridge's own checks (6, item 4)

def workspace_of(payload: Mapping) -> str:
    """The workspace named by the request; its membership is checked next, by the server."""
    workspace_id = payload.get("workspace_id")
    if workspace_id is None or workspace_id == "":
        raise DeliveryError("workspace_id is required in JSON payload")
    if not isinstance(workspace_id, str):
        raise DeliveryError(tx.INVALID_BODY)
    return workspace_id


def check_notification(payload: Mapping) -> None:
    """The notification checks Notifuse's bridge makes, with its texts, after the membership."""
    n = payload.get("notification")
    if n is not None and not isinstance(n, dict):
        raise DeliveryError(tx.INVALID_BODY)
    n = n or {}
    if not n.get("id"):
        raise DeliveryError("notification.id is required")
    contact = n.get("contact")
    if contact is None:
        raise DeliveryError("notification.contact is required")
    if isinstance(contact, dict) and not contact.get("email"):
        raise DeliveryError("notification.contact.email is required")


def send_request(payload: dict) -> tx.SendRequest:
    """Every rule of transactional.send (parse_send). `channels` absent, null or empty means every
    channel: asking for all of them leaves the notification's configured ones (3.7 step 2)."""
    n = payload.get("notification")
    if isinstance(n, dict) and n.get("channels") in (None, []):
        payload = {**payload, "notification": {**n, "channels": list(tx.CHANNELS)}}
    return tx.parse_send(payload)


# ---------------------------------------------------------------- replies

def _reply_text(text: str) -> str:
    """One ASCII line of bounded length: an error text may quote the client's values."""
    line = " ".join(text.split())
    line = line.encode("ascii", "backslashreplace").decode("ascii")
    return line if len(line) <= _REPLY_TEXT_MAX else line[:_REPLY_TEXT_MAX - 3] + "..."


def queued(message_id: str) -> str:
    return f"250 2.0.0 OK queued as {message_id}"


def reply_for(error: Exception) -> str:
    """A refused mail's reply: 550 for access and permissions (403 in the API), 554 for the
    request's content (the API's 4xx), 451 for anything else (the client retries later)."""
    if isinstance(error, RuleError):
        if error.status in (401, 403):
            return "550 5.7.1 " + _reply_text(error.message)
        if 400 <= error.status < 500:
            return "554 5.6.0 " + _reply_text(error.message)
    return REPLY_TEMPORARY
