"""What every email provider shares: the message a provider call carries, its answer, the five
failure classes, and the rules that are the same for every kind (delivery-contract 2.0, 2.8).

A provider is one file in this package (`smtp.py`, `ses.py`, `postmark.py`, ...) holding its
`Settings` (parsed and validated from the integration's settings object, 1.2), its request
building and its error classification. Each exposes a class with

    async send(message: Message) -> Sent       # raises SendFailed with a class of CLASSES
    async aclose() -> None

built by the module's `connect(settings, context, integration_id=None, concurrency=None)`;
`context` holds what one process shares between providers (the HTTP client, the test hook's base
URLs), `integration_id` is the integration the provider sends for (SES names its configuration
set after it; None for an unsaved configuration under test), and `concurrency` is the
integration's `max_concurrency` (the SMTP connection pool's size). The send queue's worker calls
`send`; nothing here touches the database.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import time
from dataclasses import dataclass, field
from email.charset import BASE64, Charset
from email.header import Header
from typing import Literal, Protocol

import httpx

from postroom.platform.errors import RuleError

# ---------------------------------------------------------------- failure classes (2.8)

Class = Literal["recipient", "message", "throttled", "deferred", "provider"]
CLASSES: tuple[Class, ...] = ("recipient", "message", "throttled", "deferred", "provider")
RETRIED: frozenset[Class] = frozenset({"throttled", "deferred", "provider"})
BREAKER: frozenset[Class] = frozenset({"provider"})   # what counts toward the circuit breaker
THROTTLE_DEFAULT = 30.0      # seconds, when a throttled answer says nothing
THROTTLE_QUOTA = 600.0       # SparkPost 420 and the SES daily quota
STATUS_INFO_MAX = 255


class SendFailed(Exception):
    """A provider call that did not hand the message over. `status_info` is what the message
    history records (at most 255 characters, 2.8); `retry_after` (seconds) only for throttling."""

    def __init__(self, cls: Class, status_info: str, retry_after: float | None = None):
        super().__init__(status_info)
        if cls not in CLASSES:
            raise ValueError(f"unknown failure class {cls!r}")
        self.cls = cls
        self.status_info = status_info[:STATUS_INFO_MAX]
        self.retry_after = retry_after


class ProviderConfigError(RuleError):
    """A settings object the kind refuses; the message is 1.2's text without the
    `invalid provider configuration: ` prefix the integration adds."""


def string_setting(raw: dict, name: str) -> str:
    """A string field of a settings object: absent or null is ""; any other type is refused."""
    value = raw.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProviderConfigError(f"{name} must be a string")
    return value


# ---------------------------------------------------------------- the message of one call (2.0)

Disposition = Literal["attachment", "inline"]


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = ""           # "" -> detected (content_type_of)
    disposition: Disposition = "attachment"

    @property
    def cid(self) -> str:
        """How HTML refers to an inline part (`cid:<this>`), for every kind."""
        return self.filename.replace(" ", "_")

    @property
    def mime_type(self) -> str:
        return self.content_type or content_type_of(self.filename, self.content)


@dataclass(frozen=True)
class Message:
    message_id: str
    from_address: str
    from_name: str
    to: str
    subject: str
    html: str
    text: str | None = None          # the plain-text part the render path produced
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    reply_to: str | None = None
    attachments: tuple[Attachment, ...] = ()
    list_unsubscribe_url: str | None = None

    @property
    def copies(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(cc, bcc) without empty strings and duplicates, case-insensitively: a cc equal to `to`,
        a bcc equal to `to` or to a cc (SendGrid refuses a whole message with duplicates)."""
        seen = {self.to.lower()}
        out: list[list[str]] = [[], []]
        for i, addresses in enumerate((self.cc, self.bcc)):
            for address in addresses:
                if address and address.lower() not in seen:
                    seen.add(address.lower())
                    out[i].append(address)
        return tuple(out[0]), tuple(out[1])

    @property
    def envelope(self) -> tuple[str, ...]:
        """Every recipient: to, then cc, then bcc, de-duplicated."""
        cc, bcc = self.copies
        return (self.to, *cc, *bcc)

    @property
    def inline(self) -> tuple[Attachment, ...]:
        return tuple(a for a in self.attachments if a.disposition == "inline")

    @property
    def attached(self) -> tuple[Attachment, ...]:
        return tuple(a for a in self.attachments if a.disposition != "inline")

    def headers(self) -> dict[str, str]:
        """The custom headers every kind that takes them carries: X-Message-ID and the
        List-Unsubscribe pair (the Post half only for an http(s) URL, RFC 8058)."""
        out = {}
        url = self.list_unsubscribe_url
        if url:
            out["List-Unsubscribe"] = f"<{url}>"
            if url.lower().startswith(("https://", "http://")):
                out["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        out["X-Message-ID"] = self.message_id
        return out


@dataclass(frozen=True)
class Sent:
    """The provider accepted the message. `note` is recorded as status_info (a cc refused at
    RCPT and dropped, say)."""

    provider_message_id: str | None
    note: str | None = None


# ---------------------------------------------------------------- shared rules

_UTF8_B = Charset("utf-8")
_UTF8_B.header_encoding = BASE64


def encoded_word(text: str) -> str:
    """`text` as RFC 2047 encoded words (UTF-8, B) when it is not ASCII; as it is otherwise. A long
    text is split into several words: RFC 2047 allows at most 75 characters a word (the email
    package's default line of 76 gives words one too long)."""
    return text if text.isascii() else Header(text, _UTF8_B).encode(maxlinelen=75)


def display_from(name: str, address: str) -> str:
    """The From header form for APIs that take one string (SMTP, SES, Postmark, Mailgun): the bare
    address without a name; the name quoted when it holds any of ()<>[]:;@\\,." and RFC 2047
    encoded (UTF-8, B) when it is not ASCII."""
    if not name:
        return address
    if name.isascii():
        return email.utils.formataddr((name, address))
    return f"{encoded_word(name)} <{address}>"


# What a filename's extension does not tell, the first bytes often do.
_MAGIC = ((b"%PDF-", "application/pdf"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"PK\x03\x04", "application/zip"),
          (b"\x1f\x8b", "application/gzip"))


def content_type_of(filename: str, content: bytes) -> str:
    """The type of an attachment given without one: from the filename's extension, else from
    the content's first bytes, else application/octet-stream."""
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    if guessed:
        return guessed
    for magic, kind in _MAGIC:
        if content.startswith(magic):
            return kind
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def retry_after(value: str | None, default: float = THROTTLE_DEFAULT) -> float:
    """Seconds from a Retry-After header (seconds or an HTTP date); `default` when absent or
    unreadable."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def status_info(kind: str, status: int, code: str | int | None, text: str) -> str:
    """`<kind>: HTTP <status>[ <code>]: <provider text>`, at most 255 characters."""
    head = f"{kind}: HTTP {status}" + (f" {code}" if code not in (None, "") else "")
    text = " ".join(str(text).split())
    return (f"{head}: {text}" if text else head)[:STATUS_INFO_MAX]


# ---------------------------------------------------------------- what one process shares

HTTP_TIMEOUT = httpx.Timeout(30.0, connect=5.0)   # 10 MiB of attachments need more than 10 s
SMTP_CONNECT_TIMEOUT = 30.0
SMTP_COMMAND_TIMEOUT = 60.0
SMTP_CONVERSATION_TIMEOUT = 120.0
# `smtp_oauth2`: the OAuth2 token endpoints of SMTP's XOAUTH2 (Microsoft, Google), so a test can
# fake them like any provider API
HOOK_KINDS = ("ses", "postmark", "mailgun", "mailjet", "sendgrid", "sparkpost", "smtp_oauth2")


def hook_base_urls(environ=os.environ) -> dict[str, str]:
    """The test hook (2.0): POSTROOM_PROVIDER_BASE_URL_<KIND> replaces scheme, host and port of
    that kind's endpoint. Process configuration only, never an integration field, so a tenant
    cannot send a provider key to a host of its choosing."""
    out = {}
    for kind in HOOK_KINDS:
        value = environ.get(f"POSTROOM_PROVIDER_BASE_URL_{kind.upper()}", "").strip().rstrip("/")
        if value:
            out[kind] = value
    return out


def rebase(url: str, base: str | None) -> str:
    """`url` with scheme, host and port taken from `base` (path and query kept)."""
    if not base:
        return url
    target = httpx.URL(url)
    over = httpx.URL(base)
    return str(target.copy_with(scheme=over.scheme, host=over.host, port=over.port))


@dataclass
class Context:
    """Shared by every provider of a process: one HTTP client with keep-alive for all HTTP kinds,
    and the test hook's base URLs."""

    client: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=HTTP_TIMEOUT))
    base_urls: dict[str, str] = field(default_factory=hook_base_urls)

    def url(self, kind: str, url: str) -> str:
        return rebase(url, self.base_urls.get(kind))

    async def aclose(self) -> None:
        await self.client.aclose()


class Provider(Protocol):
    async def send(self, message: Message) -> Sent: ...

    async def aclose(self) -> None: ...
