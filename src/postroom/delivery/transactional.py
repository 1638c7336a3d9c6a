"""Transactional notification rules, pure (no I/O): the notification object and its
list/get/create/update/delete requests, the transactional.send and transactional.testTemplate
requests with their attachments, and what a send hands the render path (delivery-contract 3,
templates-contract 4.1).

Here rather than in a capability of its own: a notification is delivery's recipe for one kind of
message (which template, which tracking), it sends only through delivery's queue, and the layer
order (tests/cross/test_layering.py) has delivery directly above templates and contacts, which a
send needs. A JSON value of the wrong type anywhere in a request is `Invalid request body`, the
answer Notifuse's typed decoding gives.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from postroom.contacts import model as contacts_model
from postroom.delivery.mime import MessageError, check_header_value
from postroom.delivery.model import DeliveryError, QueuedAttachment, checksum
from postroom.delivery.providers.base import content_type_of
from postroom.platform import jsonenc, times
from postroom.platform.fields import NUL_IN_FIELD

INVALID_BODY = "Invalid request body"
V = "validation error: "
NOT_FOUND = "Notification not found"
EXISTS = "Notification already exists"
ID_MAX = 32
NAME_MAX = 255
SUBJECT_MAX = 255
CHANNELS = ("email",)
UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
# Accepted and stored for Notifuse clients, overwritten at send (3.1).
TRACKING_STRINGS = (*UTM, "endpoint", "workspace_id", "message_id")
CC_BCC_MAX = 50
TEMPLATE_MISSING = "invalid template for channel email: template not found"
NO_PROVIDER = "no email provider configured for transactional notifications"
NO_CHANNEL = "no valid channels to send notification"

_STR, _OBJ, _LIST, _BOOL = (str,), (dict,), (list,), (bool,)


def _typed(body: Mapping, spec: Mapping[str, tuple]) -> None:
    """Each key of `spec` present and not null has one of its types, else Invalid request body."""
    for key, types in spec.items():
        value = body.get(key)
        if value is not None and (not isinstance(value, types) or (types != _BOOL and isinstance(value, bool))):
            raise DeliveryError(INVALID_BODY)


def _no_nul(value: str, name: str) -> str:
    if "\x00" in value:
        raise DeliveryError(V + NUL_IN_FIELD.format(name=name))
    return value


def _storable(value, name: str) -> None:
    """Free-form JSON that is stored: no NUL in keys or strings, bounded depth (jsonb's limits)."""
    problem = jsonenc.storage_problem(value)
    if problem:
        raise DeliveryError(f"{V}{name} {problem}")


def _workspace(body: Mapping) -> str:
    ws = body.get("workspace_id")
    if not ws:
        raise DeliveryError(V + "workspace_id is required")
    return _no_nul(ws, "workspace_id")


# ---------------------------------------------------------------- the notification (3.1)

NOTIFICATION_TYPES = {"id": _STR, "name": _STR, "description": _STR, "channels": _OBJ,
                      "tracking_settings": _OBJ, "metadata": _OBJ}
CHANNEL_TYPES = {"template_id": _STR, "settings": _OBJ}
TRACKING_TYPES = {"enable_tracking": _BOOL, **{k: _STR for k in TRACKING_STRINGS}}


def _check_id(value: str) -> str:
    if len(value) > ID_MAX:
        raise DeliveryError(f"{V}notification.id exceeds {ID_MAX} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise DeliveryError(V + "notification.id must not contain whitespace")
    return value


def _check_name(value: str) -> str:
    _no_nul(value, "notification.name")
    if len(value) > NAME_MAX:
        raise DeliveryError(f"{V}notification.name exceeds {NAME_MAX} characters")
    return value


def _channels(value: Mapping) -> dict:
    """Only `email` is accepted (Notifuse stores any key and ignores it at send)."""
    out = {}
    for name in sorted(value):
        if name not in CHANNELS:
            raise DeliveryError(f"{V}unsupported channel: {name}")
        channel = value[name]
        if not isinstance(channel, dict):
            raise DeliveryError(INVALID_BODY)
        _typed(channel, CHANNEL_TYPES)
        _no_nul(channel.get("template_id") or "", f"channels.{name}.template_id")
        _storable(channel, f"channels.{name}")
        out[name] = {"template_id": channel.get("template_id") or "", **(
            {"settings": channel["settings"]} if channel.get("settings") is not None else {})}
    return out


def _tracking(value: Mapping) -> dict:
    _typed(value, TRACKING_TYPES)
    out: dict[str, Any] = {"enable_tracking": bool(value.get("enable_tracking"))}
    for name in TRACKING_STRINGS:
        if value.get(name):
            out[name] = _no_nul(value[name], f"tracking_settings.{name}")
    return out


def _metadata(value) -> dict | None:
    if value is not None:
        _storable(value, "metadata")
    return value


def parse_create(body: Mapping) -> dict:
    """transactional.create (3.4), in its check order; the template is checked by the handler."""
    _typed(body, {"workspace_id": _STR, "notification": _OBJ})
    _workspace(body)
    n = body.get("notification") or {}
    _typed(n, NOTIFICATION_TYPES)
    if not n.get("id"):
        raise DeliveryError(V + "notification.id is required")
    if not n.get("name"):
        raise DeliveryError(V + "notification.name is required")
    if not n.get("channels"):
        raise DeliveryError(V + "notification must have at least one channel")
    _check_id(n["id"])
    _check_name(n["name"])
    return {"id": n["id"], "name": n["name"], "description": _no_nul(n.get("description") or "", "description"),
            "channels": _channels(n["channels"]), "tracking_settings": _tracking(n.get("tracking_settings") or {}),
            "metadata": _metadata(n.get("metadata"))}


@dataclass(frozen=True)
class Update:
    id: str
    fields: dict          # column -> new value; only what the merge rule changes (3.5)


def parse_update(body: Mapping) -> Update:
    """transactional.update (3.5) with its merge rule: absent keeps, `""` name keeps, `""`
    description clears, `metadata: null` clears, `channels: null` keeps, a value replaces."""
    _typed(body, {"workspace_id": _STR, "id": _STR, "updates": _OBJ})
    _workspace(body)
    if not body.get("id"):
        raise DeliveryError(V + "id is required")
    notification_id = _no_nul(body["id"], "id")
    u = body.get("updates") or {}
    _typed(u, NOTIFICATION_TYPES)
    if not (u.get("name") or u.get("description") or u.get("channels") is not None
            or u.get("metadata") is not None or u.get("tracking_settings") is not None):
        raise DeliveryError(V + "at least one field must be updated")
    fields: dict[str, Any] = {}
    if u.get("name"):
        fields["name"] = _check_name(u["name"])
    if "description" in u:
        fields["description"] = _no_nul(u["description"] or "", "description")
    if u.get("channels") is not None:
        if not u["channels"]:
            raise DeliveryError(V + "notification must have at least one channel")
        fields["channels"] = _channels(u["channels"])
    if u.get("tracking_settings") is not None:
        fields["tracking_settings"] = _tracking(u["tracking_settings"])
    if "metadata" in u:
        fields["metadata"] = _metadata(u["metadata"])
    return Update(notification_id, fields)


def parse_ref(body: Mapping) -> str:
    """transactional.delete's {workspace_id, id}."""
    _typed(body, {"workspace_id": _STR, "id": _STR})
    _workspace(body)
    if not body.get("id"):
        raise DeliveryError(V + "id is required")
    return _no_nul(body["id"], "id")


def parse_get(param: Callable[[str], str | None]) -> str:
    if not param("workspace_id"):
        raise DeliveryError(V + "workspace_id is required")
    if not param("id"):
        raise DeliveryError(V + "id is required")
    return param("id")


_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


@dataclass(frozen=True)
class ListQuery:
    search: str | None
    limit: int | None      # None: no limit
    offset: int


def parse_list(param: Callable[[str], str | None]) -> ListQuery:
    """3.2: a limit that is absent, 0, negative or not an integer means no limit; an offset that
    is not an integer is ignored, a negative one refused."""
    if not param("workspace_id"):
        raise DeliveryError(V + "workspace_id is required")
    raw_limit, raw_offset = param("limit"), param("offset")
    limit = int(raw_limit) if raw_limit and _INTEGER.fullmatch(raw_limit) else 0
    offset = int(raw_offset) if raw_offset and _INTEGER.fullmatch(raw_offset) else 0
    if offset < 0:
        raise DeliveryError(V + "offset must be >= 0")
    return ListQuery(param("search"), limit if limit > 0 else None, offset)


def managed_by(row: Mapping, what: str) -> DeliveryError:
    return DeliveryError(f"cannot {what} integration-managed notification: notification is managed by "
                         f"integration {row['integration_id']}")


def check_update_allowed(row: Mapping, update: Update) -> None:
    """An integration-managed notification keeps its name and channels (3.5)."""
    if row["integration_id"]:
        if "name" in update.fields and update.fields["name"] != row["name"]:
            raise managed_by(row, "update name of")
        if "channels" in update.fields:
            raise managed_by(row, "update channels of")


def template_ids(channels: Mapping) -> list[str]:
    return [c.get("template_id") or "" for c in channels.values()]


def notification_wire(row: Mapping) -> dict:
    """3.1's output order; metadata and integration_id omitted when null."""
    out: dict[str, Any] = {"id": row["id"], "name": row["name"], "description": row["description"] or "",
                           "channels": row["channels"], "tracking_settings": row["tracking_settings"]}
    if row["metadata"] is not None:
        out["metadata"] = row["metadata"]
    if row["integration_id"]:
        out["integration_id"] = row["integration_id"]
    out["created_at"] = times.format_time(row["created_at"])
    out["updated_at"] = times.format_time(row["updated_at"])
    return out


# ---------------------------------------------------------------- attachments (3.7.1)

ATTACHMENTS_MAX = 20
FILENAME_MAX = 255
ATTACHMENT_BYTES_MAX = 3_145_728
TOTAL_BYTES_MAX = 10_485_760
# The extensions SES refuses (its published list): a mail carrying one would fail at the provider.
REFUSED = frozenset(("ade adp app asp bas bat cer chm cmd com cpl crt csh der exe fxp gadget hlp hta inf ins "
                     "isp its js jse ksh lib lnk mad maf mag mam maq mar mas mat mau mav maw mda mdb mde mdt "
                     "mdw mdz msc msh msh1 msh2 mshxml msh1xml msh2xml msi msp mst ops pcd pif plg prf prg reg "
                     "scf scr sct shb shs sys ps1 ps1xml ps2 ps2xml psc1 psc2 tmp url vb vbe vbs vps vsmacros "
                     "vss vst vsw vxd ws wsc wsf wsh xnk").split())
ATTACHMENT_TYPES = {"filename": _STR, "content": _STR, "content_type": _STR, "disposition": _STR}


def parse_attachments(raw, prefix: str = V + "invalid attachments: ") -> tuple[QueuedAttachment, ...]:
    """Every check of attachment i before attachment i+1, the total last. Content types not given
    are detected here, so the message history records what is sent (check 43)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise DeliveryError(INVALID_BODY)
    if len(raw) > ATTACHMENTS_MAX:
        raise DeliveryError(f"{prefix}maximum {ATTACHMENTS_MAX} attachments allowed, got {len(raw)}")
    out, total = [], 0
    for i, a in enumerate(raw):
        if not isinstance(a, dict):
            raise DeliveryError(INVALID_BODY)
        _typed(a, ATTACHMENT_TYPES)
        name = a.get("filename") or ""
        if not name:
            raise DeliveryError(f"{prefix}attachment {i}: filename is required")
        if len(name) > FILENAME_MAX:
            raise DeliveryError(f"{prefix}attachment {i}: filename must be less than 255 characters")
        if "/" in name or "\\" in name:
            raise DeliveryError(f"{prefix}attachment {i}: filename must not contain path separators")
        if "\x00" in name or "\r" in name or "\n" in name:   # it ends up in a MIME header
            raise DeliveryError(f"{prefix}attachment {i}: filename must not contain control characters")
        ext = name.rpartition(".")[2].lower() if "." in name else ""
        if ext in REFUSED:
            raise DeliveryError(f"{prefix}attachment {i}: file extension .{ext} is not supported by email "
                                "service providers")
        encoded = a.get("content") or ""
        if not encoded:
            raise DeliveryError(f"{prefix}attachment {i}: content is required")
        try:
            content = base64.b64decode(encoded.replace("\r", "").replace("\n", ""), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DeliveryError(f"{prefix}attachment {i}: content must be valid base64: {exc}") from None
        disposition = a.get("disposition") or "attachment"
        if disposition not in ("attachment", "inline"):
            raise DeliveryError(f"{prefix}attachment {i}: disposition must be 'attachment' or 'inline'")
        if len(content) > ATTACHMENT_BYTES_MAX:
            raise DeliveryError(f"{prefix}attachment {i} ({name}): size {len(content)} bytes exceeds maximum of "
                                f"{ATTACHMENT_BYTES_MAX} bytes (3MB)")
        total += len(content)
        content_type = _no_nul(a.get("content_type") or "", "content_type")
        if "\r" in content_type or "\n" in content_type:
            raise DeliveryError(f"{prefix}attachment {i}: content_type must not contain CR or LF characters")
        out.append(QueuedAttachment(checksum(content), name, content_type or content_type_of(name, content),
                                    disposition, content))
    if total > TOTAL_BYTES_MAX:
        raise DeliveryError(f"{prefix}total attachment size {total} bytes exceeds maximum of {TOTAL_BYTES_MAX} "
                            "bytes (10MB)")
    return tuple(out)


# ---------------------------------------------------------------- email_options (3.7, 2.0)

EMAIL_OPTION_TYPES = {"from_name": _STR, "subject": _STR, "subject_preview": _STR, "cc": _LIST, "bcc": _LIST,
                      "reply_to": _STR, "list_unsubscribe_url": _STR, "attachments": _LIST}


def valid_address(value: str) -> bool:
    try:
        contacts_model.validate_email(value)
    except contacts_model.ContactError:
        return False
    return True


@dataclass(frozen=True)
class EmailOptions:
    from_name: str = ""
    subject: str = ""
    subject_preview: str = ""
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: str = ""
    list_unsubscribe_url: str = ""
    attachments: tuple[QueuedAttachment, ...] = ()

    def recorded(self) -> dict | None:
        """channel_options of the message history (3.8): the six options that are set."""
        out = {k: getattr(self, k) for k in ("from_name", "subject", "subject_preview", "reply_to") if getattr(self, k)}
        if self.cc:
            out["cc"] = list(self.cc)
        if self.bcc:
            out["bcc"] = list(self.bcc)
        ordered = {k: out[k] for k in ("from_name", "subject", "subject_preview", "cc", "bcc", "reply_to") if k in out}
        return ordered or None


def _addresses(raw: list, prefix: str, fmt: str) -> list[str]:
    out = []
    for value in raw:
        if not isinstance(value, str):
            raise DeliveryError(INVALID_BODY)
        if value == "":
            continue     # dropped (Notifuse)
        if not valid_address(value):
            raise DeliveryError(prefix + fmt.format(value))
        out.append(value.strip())
    return out


def _dedupe(to: str, cc: list[str], bcc: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """cc without `to`, bcc without `to` or a cc, each without repeats, case-insensitively (2.0):
    SendGrid refuses the whole message over a duplicate."""
    seen = {to.lower()}
    out = []
    for group in (cc, bcc):
        kept = []
        for a in group:
            if a.lower() not in seen:
                seen.add(a.lower())
                kept.append(a)
        out.append(tuple(kept))
    return out[0], out[1]


def _unsubscribe_url(value: str) -> str:
    if not value:
        return ""
    parts = urlsplit(value)
    ok = (parts.scheme in ("http", "https") and parts.netloc) or (parts.scheme == "mailto" and parts.path)
    if not ok or any(c in value for c in "\r\n\x00 "):
        raise DeliveryError(V + "list_unsubscribe_url must be an absolute http, https or mailto URL")
    return value


def parse_email_options(raw, to: str, *, test: bool = False) -> EmailOptions:
    """Steps 7-14 of 3.7 (or testTemplate's wording of the address checks, `test`)."""
    o = raw or {}
    if not isinstance(o, dict):
        raise DeliveryError(INVALID_BODY)
    _typed(o, EMAIL_OPTION_TYPES)
    p = "" if test else V
    cc = _addresses(o.get("cc") or [], p, "invalid CC email format: {}" if test else
                    "cc '{}' must be a valid email address")
    bcc = _addresses(o.get("bcc") or [], p, "invalid BCC email format: {}" if test else
                     "bcc '{}' must be a valid email address")
    reply_to = (o.get("reply_to") or "").strip()
    if reply_to and not valid_address(reply_to):
        raise DeliveryError(p + (f"invalid reply_to email format: {reply_to}" if test else
                                 f"replyTo '{reply_to}' must be a valid email address"))
    subject, preview, from_name = o.get("subject") or "", o.get("subject_preview") or "", o.get("from_name") or ""
    if len(subject) > SUBJECT_MAX:
        raise DeliveryError(f"{p}subject length must not exceed {SUBJECT_MAX} characters")
    if len(preview) > SUBJECT_MAX:
        raise DeliveryError(f"{p}subject_preview length must not exceed {SUBJECT_MAX} characters")
    for name, value in (("from_name", from_name), ("subject", subject), ("subject_preview", preview)):
        _no_nul(value, name)
        if name != "subject_preview":
            try:   # header values: a line break would start a header of the caller's choosing
                check_header_value(name, value)
            except MessageError as exc:
                raise DeliveryError(p + exc.message) from None
    attachments = parse_attachments(o.get("attachments"), p + "invalid attachments: ")
    unsubscribe = _unsubscribe_url(o.get("list_unsubscribe_url") or "")
    cc_kept, bcc_kept = _dedupe(to, cc, bcc)
    if len(cc_kept) + len(bcc_kept) > CC_BCC_MAX:
        raise DeliveryError(f"{p}at most {CC_BCC_MAX} cc and bcc addresses are allowed")
    return EmailOptions(from_name, subject, preview, cc_kept, bcc_kept, reply_to, unsubscribe, attachments)


# ---------------------------------------------------------------- transactional.send (3.7)

SEND_TYPES = {"id": _STR, "external_id": _STR, "contact": _OBJ, "channels": _LIST, "data": _OBJ,
              "metadata": _OBJ, "email_options": _OBJ}


@dataclass(frozen=True)
class SendRequest:
    workspace_id: str
    notification_id: str
    contact: dict                      # parse_contact's result (email normalised)
    channels: tuple[str, ...]
    external_id: str | None = None
    data: dict = field(default_factory=dict)
    metadata: dict | None = None
    options: EmailOptions = EmailOptions()


def parse_send(body: Mapping) -> SendRequest:
    """Validation 1-14 of 3.7, in order, before any database access."""
    _typed(body, {"workspace_id": _STR, "notification": _OBJ})
    workspace_id = _workspace(body)
    n = body.get("notification") or {}
    _typed(n, SEND_TYPES)
    if not n.get("id"):
        raise DeliveryError(V + "notification.id is required")
    notification_id = _no_nul(n["id"], "notification.id")
    contact = n.get("contact")
    if contact is None:
        raise DeliveryError(V + "notification.contact is required")
    email = contact.get("email")
    if not isinstance(email, str) or not valid_address(email):
        raise DeliveryError(V + "notification.contact is invalid")
    try:
        parsed = contacts_model.parse_contact(contact)
    except contacts_model.ContactError as exc:
        raise DeliveryError(f"{V}notification.contact is invalid: {exc.message}") from None
    channels = n.get("channels") or []
    if not channels:
        raise DeliveryError(V + "notification must have at least one channel")
    if not all(isinstance(c, str) for c in channels):
        raise DeliveryError(INVALID_BODY)
    options = parse_email_options(n.get("email_options"), parsed["email"])
    external_id = n.get("external_id") or None
    if external_id is not None:
        _no_nul(external_id, "external_id")
    for name in ("data", "metadata"):
        if n.get(name) is not None:
            _storable(n[name], name)
    return SendRequest(workspace_id, notification_id, parsed, tuple(channels), external_id, n.get("data") or {},
                       n.get("metadata") or None, options)


def send_channels(requested: tuple[str, ...], configured: Mapping) -> list[str]:
    """Requested ∩ configured, unknown names and repeats ignored (3.7 step 2)."""
    out = []
    for c in requested:
        if c in configured and c not in out:
            out.append(c)
    return out


def utm_of(tracking: Mapping, template_id: str) -> dict:
    """The notification's UTM values; `utm_content` defaults to the template id only when one of
    source, medium, campaign is set (templates-contract 4.1: else no link gets a UTM parameter)."""
    out = {k: tracking[k] for k in UTM if tracking.get(k)}
    if not out.get("utm_content") and any(out.get(k) for k in ("utm_source", "utm_medium", "utm_campaign")):
        out["utm_content"] = template_id
    return out


def render_failure(where: str, message: str, override: bool) -> DeliveryError:
    """A render error as the send answers it (3.7 step 8)."""
    field_name, _, summary = message.partition(": ")
    if field_name == "subject":
        what = "subject override" if override else "subject"
        return DeliveryError(f"failed to process {what} with Liquid: {summary}")
    return DeliveryError(f"{where}: {message}")


def tracking_enabled(workspace_settings: Mapping) -> bool:
    """email_tracking_enabled, true when unset (new workspaces start with it on, 1.4)."""
    value = workspace_settings.get("email_tracking_enabled")
    return True if value is None else bool(value)


# ---------------------------------------------------------------- transactional.testTemplate (3.9)

TEST_TYPES = {"workspace_id": _STR, "template_id": _STR, "integration_id": _STR, "sender_id": _STR,
              "recipient_email": _STR, "language": _STR, "email_options": _OBJ}


@dataclass(frozen=True)
class TestRequest:
    workspace_id: str
    template_id: str
    integration_id: str
    sender_id: str
    recipient: str
    language: str
    options: EmailOptions


def parse_test(body: Mapping) -> TestRequest:
    _typed(body, TEST_TYPES)
    for name in ("workspace_id", "template_id", "integration_id", "sender_id", "recipient_email"):
        if not body.get(name):
            raise DeliveryError(f"{name} is required")
        _no_nul(body[name], name)
    if not valid_address(body["recipient_email"]):
        raise DeliveryError("invalid recipient_email format")
    recipient = contacts_model.validate_email(body["recipient_email"])
    language = _no_nul(body.get("language") or "", "language")
    options = parse_email_options(body.get("email_options"), recipient, test=True)
    return TestRequest(body["workspace_id"], body["template_id"], body["integration_id"], body["sender_id"],
                       recipient, language, options)
