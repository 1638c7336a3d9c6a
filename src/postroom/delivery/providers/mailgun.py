"""Mailgun (delivery-contract 2.4): one form POST to /v3/<domain>/messages, on the US or the EU
host, the message id as the user variable `v:notifuse_message_id` (2.9).

The body is form-urlencoded without attachments and multipart/form-data with them (Mailgun takes
files only that way). Mailgun's errors carry no code, only `{"message": "…"}` (or plain text for
401), so the status decides the class, with one text rule the contract gives for 400."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import httpx

from postroom.delivery.providers.base import (
    HttpProvider, Message, SendFailed, Sent, display_from, failure, json_of, member,
    required_setting, text_setting)

KIND = "mailgun"
HOSTS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
# webhook_signing_key: the account's HTTP webhook signing key, which verifies the events Mailgun
# posts back (engagement-contract 3.2); optional and write-only like the API key.
SECRETS = ("api_key", "webhook_signing_key")
PROVIDER_STATUSES = frozenset({401, 403, 404})   # credentials, permissions, a domain Mailgun does not know

# A 400 is about a recipient when Mailgun names the to/cc/bcc parameter, which it does at the very
# start of the text: "'to' parameter is not a valid address. please check documentation", "to
# parameter is missing". The contract names this text rule; anchoring it at the start and on the
# exact parameter name keeps "'from' parameter …" and "Too many recipients" out.
RECIPIENT_PARAMETER = re.compile(r"'?(?:to|cc|bcc)'? parameter\b", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    domain: str
    region: str
    api_key: str = field(repr=False)
    webhook_signing_key: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, raw: dict) -> Settings:
        domain = required_setting(raw, "domain", "domain is required for Mailgun configuration")
        region = text_setting(raw, "region")   # free text: anything but "eu" means US (1.2)
        return cls(domain, region, required_setting(raw, "api_key", "api key is required for Mailgun configuration"),
                   text_setting(raw, "webhook_signing_key") or None)


class MailgunProvider(HttpProvider):
    kind = KIND
    settings: Settings

    @property
    def url(self) -> str:
        host = HOSTS["eu" if self.settings.region.lower() == "eu" else "us"]
        return f"{host}/v3/{self.settings.domain}/messages"

    def request(self, message: Message) -> dict:
        # httpx sends multipart/form-data when there are files, form-urlencoded otherwise.
        return {"data": self.fields(message), "files": self.files(message) or None,
                "auth": ("api", self.settings.api_key)}

    def sent(self, response: httpx.Response) -> Sent:
        return Sent(member(json_of(response), "id"))

    def failed(self, response: httpx.Response) -> SendFailed:
        text = str(member(json_of(response), "message") or "")   # 401 is plain text: the raw body is kept
        recipient = response.status_code == 400 and RECIPIENT_PARAMETER.match(text.strip())
        return failure(KIND, response, None, text, cls="recipient" if recipient else None,
                       provider=PROVIDER_STATUSES)

    def fields(self, message: Message) -> dict[str, str | list[str]]:
        """The form fields; a list is one field per value (each cc, each bcc)."""
        cc, bcc = message.copies
        fields: dict[str, str | list[str]] = {
            "from": display_from(message.from_name, message.from_address), "to": message.to}
        if cc:
            fields["cc"] = list(cc)
        if bcc:
            fields["bcc"] = list(bcc)
        fields |= {"subject": message.subject, "html": message.html}
        if message.text:
            fields["text"] = message.text
        if message.reply_to:
            fields["h:Reply-To"] = message.reply_to
        fields |= {f"h:{name}": value for name, value in message.headers().items()}
        fields["v:notifuse_message_id"] = message.message_id
        return fields

    def files(self, message: Message) -> list[tuple[str, tuple[str, bytes, str]]]:
        # Mailgun gives an inline part the filename as its Content-ID, so an inline file is named
        # by its cid: HTML refers to it as cid:<filename with spaces as _> (2.0).
        return [("inline", (a.cid, a.content, a.mime_type)) if a.disposition == "inline"
                else ("attachment", (a.filename, a.content, a.mime_type)) for a in message.attachments]


connect = MailgunProvider.connect
