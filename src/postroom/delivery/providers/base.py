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

import abc
import base64
import email.utils
import mimetypes
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from email.charset import BASE64, Charset
from email.header import Header
from typing import Any, ClassVar, Literal, Protocol

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
    list_unsubscribe_mailto: str | None = None  # a `mailto:` URI added to List-Unsubscribe (an inbound mailbox)

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

    def header_fields(self) -> list[tuple[str, str]]:
        """Every value that becomes a header (or an API field a provider turns into one), named,
        in the order the headers are written: what a CR or LF must never reach."""
        fields = [("from_name", self.from_name), ("from_address", self.from_address), ("to", self.to),
                  *(("cc", a) for a in self.cc), *(("bcc", a) for a in self.bcc),
                  ("reply_to", self.reply_to or ""), ("subject", self.subject), ("message_id", self.message_id),
                  ("list_unsubscribe_url", self.list_unsubscribe_url or ""),
                  ("list_unsubscribe_mailto", self.list_unsubscribe_mailto or "")]
        fields += [(f"attachment {i} filename", a.filename) for i, a in enumerate(self.attachments)]
        fields += [(f"attachment {i} content_type", a.content_type) for i, a in enumerate(self.attachments)]
        return fields

    def headers(self) -> dict[str, str]:
        """The custom headers every kind that takes them carries: X-Message-ID and the
        List-Unsubscribe pair (the URL, then the mailto: when there is one; the Post half only for
        an http(s) URL, RFC 8058)."""
        out = {}
        url = self.list_unsubscribe_url
        targets = [f"<{target}>" for target in (url, self.list_unsubscribe_mailto) if target]
        if targets:
            out["List-Unsubscribe"] = ", ".join(targets)
            if url and url.lower().startswith(("https://", "http://")):
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


def has_line_break(value: str) -> bool:
    return "\r" in value or "\n" in value


def refuse_line_breaks(kind: str, message: Message) -> None:
    """A CR or LF in a header value could add headers of the sender's choosing: the message is
    refused, never sent."""
    for name, value in message.header_fields():
        if has_line_break(value):
            shown = "attachments" if name.startswith("attachment ") else name
            raise SendFailed("message", f"{kind}: {shown} holds a line break")


def b64(content: bytes) -> str:
    """Attachment content as the JSON APIs take it: standard base64 on one line."""
    return base64.b64encode(content).decode("ascii")


def text_setting(raw: Mapping[str, Any], key: str) -> str:
    """A string field of a settings object (1.2), stripped; "" when absent, null or not a string,
    which is what the "required" rules test."""
    value = raw.get(key)
    return value.strip() if isinstance(value, str) else ""


def required_setting(raw: Mapping[str, Any], key: str, error: str) -> str:
    """A string field the kind cannot work without; ProviderConfigError(`error`) when empty."""
    value = text_setting(raw, key)
    if not value:
        raise ProviderConfigError(error)
    return value


def flag_setting(raw: Mapping[str, Any], key: str) -> bool:
    """A bool field of a settings object: only JSON `true` turns it on."""
    return raw.get(key) is True


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


# ---------------------------------------------------------------- what the HTTP kinds share

PROVIDER_STATUSES = frozenset({401, 403})   # credentials and permissions: configuration (2.8)


async def post(context: Context, kind: str, url: str, **request: Any) -> httpx.Response:
    """POST to the kind's endpoint (rebased by the test hook) on the shared client. A network
    failure, a timeout or a connection closed before the whole answer is `provider` (2.8); a
    timeout after the request was sent may hide an accepted message, so the retry can duplicate
    it (delivery is at-least-once, 5.3)."""
    try:
        return await context.client.post(context.url(kind, url), **request)
    except httpx.TransportError as exc:
        detail = f": {exc}" if str(exc) else ""
        raise SendFailed("provider", f"{kind}: {type(exc).__name__}{detail}") from exc


def json_of(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON (a proxy's HTML page, Mailgun's plain
    `Forbidden`)."""
    try:
        return response.json()
    except ValueError:
        return None


def objects(value: Any) -> list[dict]:
    """The JSON objects of what should be a list of them (a provider's `errors`); [] for anything
    else, so a malformed answer is classified by its status alone."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def member(value: Any, key: str) -> Any:
    """`value[key]` when `value` is a JSON object, else None."""
    return value.get(key) if isinstance(value, dict) else None


def failure(kind: str, response: httpx.Response, code: str | int | None, text: str | None, *,
            cls: Class | None = None, provider: Collection[int] = PROVIDER_STATUSES,
            quota: Collection[int] = ()) -> SendFailed:
    """The failure of an HTTP answer that is not a success (2.8). `cls` is the kind's own reading
    of its structured error (a recipient named by the error, an account code); without one the
    status decides: 429 and the kind's `quota` statuses are throttled (Retry-After, else 30 s, or
    10 min for a quota), 5xx and the kind's `provider` statuses are provider, any other 4xx is
    message, and an answer that is neither 2xx nor 4xx (a redirect) is provider. `text` is the
    provider's own words; without them status_info keeps the raw body."""
    status = response.status_code
    info = status_info(kind, status, code, text or response.text)   # no structured text: the raw body
    cls = cls or _status_class(status, provider, quota)
    if cls != "throttled":
        return SendFailed(cls, info)
    default = THROTTLE_QUOTA if status in quota else THROTTLE_DEFAULT
    return SendFailed(cls, info, retry_after(response.headers.get("Retry-After"), default))


def _status_class(status: int, provider: Collection[int], quota: Collection[int]) -> Class:
    if status == 429 or status in quota:
        return "throttled"
    if 400 <= status < 500 and status not in provider:
        return "message"
    return "provider"


class HttpProvider(abc.ABC):
    """The send every HTTP kind shares: refuse line breaks, POST the kind's request on the shared
    client, read a 2xx answer with `sent` and raise what `failed` makes of any other. A kind
    subclasses it with `kind` and the four abstract members, each about that kind only."""

    kind: ClassVar[str]

    def __init__(self, settings, context: Context):
        self.settings = settings
        self.context = context

    @classmethod
    def connect(cls, settings, context: Context, integration_id: str | None = None,
                concurrency: int | None = None) -> "HttpProvider":
        """The module's `connect` (see the module docstring): an HTTP kind needs only the
        settings and the shared client; concurrency is the worker's to hold."""
        return cls(settings, context)

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The kind's endpoint before the test hook."""

    @abc.abstractmethod
    def request(self, message: Message) -> dict[str, Any]:
        """httpx keyword arguments of the call: the body (`json`, or `data` and `files`),
        `headers`, `auth`."""

    @abc.abstractmethod
    def sent(self, response: httpx.Response) -> Sent:
        """A 2xx answer read (it may still refuse, as SparkPost's 200 with no recipient accepted)."""

    @abc.abstractmethod
    def failed(self, response: httpx.Response) -> SendFailed:
        """Any other answer classified (2.8)."""

    async def send(self, message: Message) -> Sent:
        refuse_line_breaks(self.kind, message)
        response = await post(self.context, self.kind, self.url, **self.request(message))
        if response.is_success:
            return self.sent(response)
        raise self.failed(response)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client is the context's, closed with it."""
