"""The MIME message of one send, built with Python's `email` package (delivery-contract 2.1): what
SMTP puts after DATA and SES carries as `RawMessage.Data`.

    From, To, Cc (when any), Reply-To (when set), Subject, Date, Message-ID, MIME-Version,
    X-Message-ID, List-Unsubscribe[-Post]; never Bcc
    body   multipart/alternative (text, html), or the html alone when there is no text (None or "");
           the html is wrapped in multipart/related with the inline parts when there are any;
           multipart/mixed around it all with the attached files when there are attachments

A header value holding CR or LF is refused, never sent (it would let a subject or a name add
headers of its own): `check_header_value` is the rule, for the API layer to call at validation
time as well; it raises `MessageError`, a RuleError naming the field. Addresses must be ASCII on
the wire (neither SMTP without SMTPUTF8 nor SES v1 carries anything else): domains are converted
to IDNA, and a non-ASCII local part is a `MessageError` too.
"""

from __future__ import annotations

import binascii
import datetime
import secrets
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime

import idna

from postroom.delivery.providers.base import (Attachment, Message, SendFailed, display_from, encoded_word,
                                             has_line_break)
from postroom.platform.errors import RuleError



class _Written(EmailPolicy):
    """Headers are stored as written (`set_raw`) and read back as they are. The default policy
    parses a header into an object on every read, and the generator reads each part's
    Content-Type and Content-Transfer-Encoding several times: half the time of a message."""

    def header_fetch_parse(self, name, value):
        return value


# Headers are written as they are: the From and Subject forms are the shared ones of base.py (names
# quoted, RFC 2047 B words), which the email package would otherwise decode and re-encode its own
# way. Files (set_content) use the standard SMTP policy, which writes their RFC 2231 parameters.
POLICY = _Written(linesep=SMTP.linesep, refold_source="none")
# "=_" cannot start a quoted-printable or base64 line of a part, so no body line can equal a boundary.
BOUNDARY_PREFIX = "=_pr"


class MessageError(RuleError):
    """A message that cannot be put on the wire as given; the text names the field."""


# ---------------------------------------------------------------- rules on values


def check_header_value(field: str, value: str) -> None:
    """Refuses a CR or LF in a value that ends up in a header (subject, a name, an address, a
    filename): `<field> must not contain CR or LF characters`."""
    if has_line_break(value):
        raise MessageError(f"{field} must not contain CR or LF characters")


def check(message: Message) -> None:
    """Every header value of `message`, in the order the headers are written."""
    for field, value in message.header_fields():
        check_header_value(field, value)


def ascii_address(address: str) -> str:
    """`address` with its domain in IDNA (punycode); a non-ASCII local part is refused."""
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        raise MessageError(f"address {address} has a non-ASCII local part, which cannot be sent")
    if domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    except idna.IDNAError as e:
        raise MessageError(f"address {address} has a domain that IDNA cannot encode: {e}") from None


def message_id_header(message: Message) -> str:
    """`<message_id@domain of the from address>`: stable across retries, so a receiver can tell a
    repeated delivery of the same message."""
    domain = ascii_address(message.from_address).rpartition("@")[2]
    return f"<{message.message_id}@{domain}>"


# ---------------------------------------------------------------- the message


def headers(message: Message, now: datetime.datetime | None = None) -> list[tuple[str, str]]:
    """The top-level headers, in order, as written."""
    cc, _ = message.copies
    out = [("From", display_from(message.from_name, ascii_address(message.from_address))),
           ("To", ascii_address(message.to))]
    if cc:
        out.append(("Cc", ", ".join(ascii_address(a) for a in cc)))
    if message.reply_to:
        out.append(("Reply-To", ascii_address(message.reply_to)))
    when = now or datetime.datetime.now(datetime.timezone.utc)
    out += [("Subject", encoded_word(message.subject)), ("Date", format_datetime(when)),
            ("Message-ID", message_id_header(message)), ("MIME-Version", "1.0")]
    out += list(message.headers().items())
    return out


def build(message: Message, now: datetime.datetime | None = None) -> EmailMessage:
    """The whole message; raises MessageError for a value that cannot be sent."""
    check(message)
    top = EmailMessage(policy=POLICY)
    for name, value in headers(message, now):
        top.set_raw(name, value)
    body = _body(message)
    for name, value in body.raw_items():
        top.set_raw(name, value)
    top.set_payload(body.get_payload())
    return top


def to_bytes(message: Message, now: datetime.datetime | None = None) -> bytes:
    return build(message, now).as_bytes()


def render(kind: str, message: Message) -> bytes:
    """The bytes a provider sends; a message that cannot be sent fails as `message`, before any
    connection is made."""
    try:
        return to_bytes(message)
    except MessageError as e:
        raise SendFailed("message", f"{kind}: {e.message}") from None


def envelope(kind: str, message: Message) -> tuple[str, list[str]]:
    """(sender, recipients) on the wire: to, cc, bcc in ASCII; a bcc appears in no header, so it is
    checked here."""
    try:
        return ascii_address(message.from_address), [ascii_address(a) for a in message.envelope]
    except MessageError as e:
        raise SendFailed("message", f"{kind}: {e.message}") from None


def _body(message: Message) -> MIMEPart:
    html = _text(message.html, "html")
    if message.inline:
        html = _multipart("related", [html, *(_file(a) for a in message.inline)])
    # an empty plain part would show a blank mail in clients that prefer text: none instead
    body = _multipart("alternative", [_text(message.text, "plain"), html]) if message.text else html
    if message.attachments:
        body = _multipart("mixed", [body, *(_file(a) for a in message.attached)])
    return body


def _text(text: str, subtype: str) -> MIMEPart:
    """UTF-8 in quoted-printable, lines ending in CRLF on the wire. The headers are set as written
    (set_content would parse back the headers it has just made: a third of the worker's time per
    message) and the body encoded by binascii, the C codec under the standard library's quopri:
    four times faster than the email package's pure-Python one, and it keeps encoded lines within
    RFC 2045's 76 characters."""
    part = MIMEPart(policy=POLICY)
    part.set_raw("Content-Type", f'text/{subtype}; charset="utf-8"')
    part.set_raw("Content-Transfer-Encoding", "quoted-printable")
    lines = text.encode("utf-8").splitlines()
    part.set_payload(binascii.b2a_qp(b"\n".join(lines) + b"\n", istext=True).decode("ascii"))
    return part


def _file(attachment: Attachment) -> MIMEPart:
    """One file in base64 (76-character lines); the email package writes the filename with RFC 2231
    when it is not ASCII."""
    maintype, subtype = _file_type(attachment.mime_type)
    part = MIMEPart(policy=SMTP)
    cid = f"<{attachment.cid}>" if attachment.disposition == "inline" else None
    part.set_content(attachment.content, maintype, subtype, disposition=attachment.disposition,
                     filename=attachment.filename, cid=cid)
    return part


def _file_type(mime_type: str) -> tuple[str, str]:
    """(maintype, subtype) of a file part; a type that is not `x/y`, or names a container the
    bytes are not (multipart, message), is sent as application/octet-stream."""
    maintype, _, subtype = mime_type.strip().lower().partition(";")[0].partition("/")
    if not maintype or not subtype or maintype in ("multipart", "message"):
        return "application", "octet-stream"
    return maintype, subtype


def _multipart(subtype: str, parts: list[MIMEPart]) -> MIMEPart:
    """A boundary of 128 random bits, chosen here: the generator would otherwise search the whole
    encoded body for a line that collides with its own guess, with a regular expression compiled
    per message."""
    out = MIMEPart(policy=POLICY)
    out.set_raw("Content-Type", f'multipart/{subtype}; boundary="{BOUNDARY_PREFIX}{secrets.token_hex(16)}"')
    for part in parts:
        out.attach(part)
    return out
