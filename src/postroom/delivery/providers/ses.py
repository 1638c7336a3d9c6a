"""Amazon SES, API v1 over HTTPS (delivery-contract 1.2, 2.2, 2.8): settings, the signed form
request, the configuration set lookup, and the classification of its answers.

    POST https://email.<region>.amazonaws.com/   Action=SendEmail | SendRawEmail, Version=2010-12-01

SendRawEmail when the message has attachments or a List-Unsubscribe URL (the simple action cannot
carry custom headers), SendEmail otherwise. The configuration set `notifuse-<integration_id>` (the
one webhook registration creates, named so integrations carried over from Notifuse keep their
event destinations) is looked up once and the answer kept 10 minutes, where Notifuse asks before
every send.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import httpx

from postroom.delivery import mime, sigv4
from postroom.delivery.providers.base import (
    STATUS_INFO_MAX, THROTTLE_QUOTA, Class, Context, Message, ProviderConfigError, SendFailed,
    Sent, b64, display_from, retry_after, status_info, string_setting,
)

log = logging.getLogger(__name__)

SECRETS = ("secret_key",)
VERSION = "2010-12-01"
SERVICE = "ses"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
CONFIGURATION_SET_TTL = 600.0     # seconds a lookup answer is kept
LIST_PAGES = 10                   # ListConfigurationSets pages read at most (1,000 sets each)
TAG = "notifuse_message_id"
DAILY_QUOTA = "Daily message quota exceeded"
# A region is interpolated into the host name the keys are sent to: only AWS's shape is let through.
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")

# ---------------------------------------------------------------- settings (1.2)


@dataclass(frozen=True)
class Settings:
    region: str
    access_key: str
    secret_key: str

    @classmethod
    def parse(cls, raw: dict) -> "Settings":
        region = string_setting(raw, "region").strip()
        if not region:
            raise ProviderConfigError("region is required when Amazon SES is configured")
        if not _REGION.match(region):
            raise ProviderConfigError(f"invalid region for Amazon SES: {region}")
        access_key = string_setting(raw, "access_key").strip()
        if not access_key:
            raise ProviderConfigError("access key is required when Amazon SES is configured")
        secret_key = string_setting(raw, "secret_key")
        if not secret_key:
            raise ProviderConfigError("secret key is required when Amazon SES is configured")
        return cls(region, access_key, secret_key)

    @property
    def endpoint(self) -> str:
        return f"https://email.{self.region}.amazonaws.com/"



# ---------------------------------------------------------------- requests (pure)


def configuration_set_name(integration_id: str) -> str:
    return f"notifuse-{integration_id}"


def action_of(message: Message) -> str:
    return "SendRawEmail" if message.attachments or message.headers().get("List-Unsubscribe") else "SendEmail"


def _members(prefix: str, values) -> dict[str, str]:
    return {f"{prefix}.member.{i}": v for i, v in enumerate(values, 1)}


def send_email_params(message: Message) -> dict[str, str]:
    cc, bcc = message.copies
    ascii_ = mime.ascii_address
    params = {"Action": "SendEmail", "Version": VERSION,
              "Source": display_from(message.from_name, ascii_(message.from_address)),
              "Destination.ToAddresses.member.1": ascii_(message.to),
              **_members("Destination.CcAddresses", map(ascii_, cc)),
              **_members("Destination.BccAddresses", map(ascii_, bcc)),
              "Message.Subject.Data": message.subject, "Message.Subject.Charset": "UTF-8",
              "Message.Body.Html.Data": message.html, "Message.Body.Html.Charset": "UTF-8"}
    if message.text:
        # SES builds multipart/alternative from both (2.0: every message carries its text part)
        params.update({"Message.Body.Text.Data": message.text, "Message.Body.Text.Charset": "UTF-8"})
    if message.reply_to:
        params["ReplyToAddresses.member.1"] = ascii_(message.reply_to)
    return params


def send_raw_email_params(message: Message) -> dict[str, str]:
    """Destinations names every recipient, cc included (Notifuse leaves the cc out when there is a
    bcc, and those cc never get the mail)."""
    return {"Action": "SendRawEmail", "Version": VERSION,
            "RawMessage.Data": b64(mime.to_bytes(message)),
            **_members("Destinations", (mime.ascii_address(a) for a in message.envelope))}


def params_of(message: Message) -> dict[str, str]:
    """The form of the send (without the configuration set); a message SES cannot carry fails as
    `message` before any request."""
    try:
        mime.check(message)
        build = send_raw_email_params if action_of(message) == "SendRawEmail" else send_email_params
        params = build(message)
    except mime.MessageError as e:
        raise SendFailed("message", f"ses: {e.message}") from None
    params.update({"Tags.member.1.Name": TAG, "Tags.member.1.Value": message.message_id})
    return params


# ---------------------------------------------------------------- answers (pure)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(root: ET.Element, name: str) -> str:
    return next((el.text or "" for el in root.iter() if _local(el.tag) == name), "")


def _xml(body: bytes) -> ET.Element | None:
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        return None


@dataclass(frozen=True)
class Error:
    status: int
    code: str
    message: str
    retry_after: str | None = None


def error_of(status: int, body: bytes, retry_after_header: str | None = None) -> Error:
    """`ErrorResponse/Error/{Code, Message}`; a body that is not SES's XML (a proxy's 502 page)
    keeps its first characters as the message."""
    root = _xml(body)
    if root is None or _local(root.tag) != "ErrorResponse":
        return Error(status, "", body[:200].decode("utf-8", "replace"), retry_after_header)
    return Error(status, _find(root, "Code"), _find(root, "Message"), retry_after_header)


PROVIDER_CODES = frozenset({"MailFromDomainNotVerifiedException", "MailFromDomainNotVerified",
                            "ConfigurationSetDoesNotExist", "AccountSendingPausedException",
                            "ConfigurationSetSendingPausedException", "InvalidClientTokenId",
                            "SignatureDoesNotMatch", "AccessDenied", "AccessDeniedException", "ExpiredToken",
                            "IncompleteSignature", "MissingAuthenticationToken", "UnrecognizedClientException"})


def names_sender(text: str, sender: str) -> bool:
    """Whether a MessageRejected text is about the from address (`Email address is not verified.
    The following identities failed the check in region …: noreply@acme.test`) rather than a
    recipient; the address and its domain are looked for, in either spelling of the domain."""
    low = text.lower()
    local, _, domain = sender.lower().rpartition("@")
    ascii_domain = mime.ascii_address(sender).lower().rpartition("@")[2] if local.isascii() else domain
    return any(needle and needle in low for needle in {sender.lower(), domain, ascii_domain})


def classify(error: Error, sender: str) -> Class:
    if error.code == "Throttling" or error.status == 429:
        return "throttled"
    if error.code == "MessageRejected":
        return "provider" if names_sender(error.message, sender) else "recipient"
    if error.code in PROVIDER_CODES or error.status >= 500 or error.status in (401, 403):
        return "provider"
    return "message"       # InvalidParameterValue, a message too long (413), any other 4xx


def failure(error: Error, sender: str) -> SendFailed:
    cls = classify(error, sender)
    wait = None
    if cls == "throttled":
        wait = THROTTLE_QUOTA if DAILY_QUOTA.lower() in error.message.lower() else retry_after(error.retry_after)
    return SendFailed(cls, status_info("ses", error.status, error.code, error.message), wait)


def configuration_sets(root: ET.Element) -> tuple[set[str], str]:
    """(names, NextToken) of a ListConfigurationSets answer."""
    names = {el.text or "" for el in root.iter() if _local(el.tag) == "Name"}
    return names, _find(root, "NextToken")


# ---------------------------------------------------------------- the provider


def connect(settings: Settings, context: Context, integration_id: str | None = None,
            concurrency: int | None = None) -> "SesProvider":
    return SesProvider(settings, context, integration_id)


class SesProvider:
    def __init__(self, settings: Settings, context: Context, integration_id: str | None = None, *,
                 clock=time.monotonic):
        """`integration_id` names the configuration set; without one (a test of an unsaved
        configuration) there is none to look up."""
        self.settings = settings
        self.context = context
        self.integration_id = integration_id
        self._clock = clock
        self._lookup: tuple[str | None, float] | None = None    # (set in force or None, when it expires)
        self._lock = asyncio.Lock()

    async def send(self, message: Message) -> Sent:
        params = params_of(message)
        configuration_set = await self.configuration_set()
        answer = await self._call({**params, "ConfigurationSetName": configuration_set} if configuration_set else params)
        if isinstance(answer, Error) and answer.code == "ConfigurationSetDoesNotExist" and configuration_set:
            # deleted since the lookup: forget it and send without
            self._lookup = None
            answer = await self._call(params)
        if isinstance(answer, Error):
            raise failure(answer, message.from_address)
        return Sent(_find(answer, "MessageId") or None)

    async def aclose(self) -> None:
        """Nothing of its own: the HTTP client is the process's."""

    async def configuration_set(self) -> str | None:
        if not self.integration_id:
            return None
        async with self._lock:       # concurrent first sends ask once
            if self._lookup is None or self._lookup[1] <= self._clock():
                found = await self._find_configuration_set(configuration_set_name(self.integration_id))
                if found is not False:
                    self._lookup = (found, self._clock() + CONFIGURATION_SET_TTL)
                return found or None
            return self._lookup[0]

    async def _find_configuration_set(self, name: str) -> str | None | bool:
        """The name when the set exists, None when it does not (or the key may not list sets: then
        the answer is kept like any other, not asked again per message), False when SES could not
        be asked (an outage: asked again on the next send)."""
        token = ""
        for _ in range(LIST_PAGES):
            params = {"Action": "ListConfigurationSets", "Version": VERSION, "MaxItems": "1000"}
            if token:
                params["NextToken"] = token
            try:
                answer = await self._call(params)
            except SendFailed as e:
                log.warning("SES ListConfigurationSets failed: %s", e.status_info)
                return False
            if isinstance(answer, Error):
                log.warning("SES ListConfigurationSets refused: %s %s", answer.code, answer.message)
                return False if answer.status >= 500 or answer.status == 429 else None
            names, token = configuration_sets(answer)
            if name in names:
                return name
            if not token:
                return None
        return None

    async def _call(self, params: dict[str, str]) -> ET.Element | Error:
        """One signed POST; the XML root of a 200, an Error otherwise; network failures raise."""
        url = self.context.url("ses", self.settings.endpoint)
        body = urllib.parse.urlencode(params).encode("ascii")
        headers = sigv4.sign("POST", url, {"Content-Type": CONTENT_TYPE}, body, access_key=self.settings.access_key,
                             secret_key=self.settings.secret_key, region=self.settings.region, service=SERVICE)
        try:
            answer = await self.context.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise SendFailed("provider", f"ses: {type(e).__name__} {e}"[:STATUS_INFO_MAX]) from None
        root = _xml(answer.content) if answer.status_code == 200 else None
        if root is None:
            status = answer.status_code if answer.status_code != 200 else 502   # a 200 that is not XML
            return error_of(status, answer.content, answer.headers.get("Retry-After"))
        return root

