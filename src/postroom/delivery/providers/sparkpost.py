"""SparkPost (delivery-contract 2.7): one POST to <endpoint>/api/v1/transmissions, the message id
in `metadata.notifuse_message_id` (2.9). The endpoint is the integration's (US, EU or an
enterprise host), always https; the test hook rebases it like any other kind's.

Copies follow SparkPost's documented scheme: every cc and bcc recipient carries `header_to` (the
To address), and only cc addresses appear, in a `CC` header. Postroom tracks opens and clicks
itself, so SparkPost's tracking is off. Errors are `{"errors": [{"message", "code",
"description"}]}`; a few codes concern the recipients (2.8). A 200 that accepted no recipient
did not send anything and is a recipient failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from postroom.delivery.providers.base import (
    Attachment, HttpProvider, Message, ProviderConfigError, SendFailed, Sent, b64, failure,
    flag_setting, json_of, member, objects, required_setting, status_info)

KIND = "sparkpost"
PATH = "/api/v1/transmissions"
SECRETS = ("api_key",)
SINK = ".sink.sparkpostmail.com"   # SparkPost's sink: accepted, never delivered
SENDING_LIMIT = 420                # hourly or sandbox limit reached: throttled for 10 min

# 1902 "Message generation rejected" is what a transmission to a suppressed address gets; 5002
# "No valid recipients" (or "At least one valid recipient is required") what one with none gets.
RECIPIENT_CODES = frozenset({"1902", "5002"})


@dataclass(frozen=True)
class Settings:
    endpoint: str
    api_key: str = field(repr=False)
    sandbox_mode: bool = False

    @classmethod
    def parse(cls, raw: dict) -> Settings:
        endpoint = required_setting(raw, "endpoint", "endpoint is required for SparkPost configuration")
        parts = urlsplit(endpoint)
        if parts.scheme.lower() != "https" or not parts.hostname:
            # Plain http would send the key in clear; a fake is reached through the hook instead.
            raise ProviderConfigError("endpoint must be an https URL")
        api_key = required_setting(raw, "api_key", "api key is required for SparkPost configuration")
        return cls(endpoint, api_key, flag_setting(raw, "sandbox_mode"))


class SparkPostProvider(HttpProvider):
    kind = KIND
    settings: Settings

    @property
    def url(self) -> str:
        return self.settings.endpoint.rstrip("/") + PATH

    def request(self, message: Message) -> dict:
        # SparkPost takes the bare key (Notifuse sends "Bearer <key>").
        return {"json": self.body(message), "headers": {"Authorization": self.settings.api_key}}

    def sent(self, response: httpx.Response) -> Sent:
        results = member(json_of(response), "results")
        accepted, rejected = member(results, "total_accepted_recipients"), member(results, "total_rejected_recipients")
        if accepted == 0:   # nothing will be delivered: the recipient was refused
            raise SendFailed("recipient", status_info(KIND, response.status_code, None,
                                                      f"no recipient accepted ({rejected or 0} rejected)"))
        note = f"{KIND}: {rejected} recipient(s) rejected" if isinstance(rejected, int) and rejected > 0 else None
        return Sent(member(results, "id"), note)

    def failed(self, response: httpx.Response) -> SendFailed:
        errors = objects(member(json_of(response), "errors"))
        code = errors[0].get("code") if errors else None
        text = "; ".join(": ".join(str(e[k]) for k in ("message", "description") if e.get(k)) for e in errors)
        recipient = response.status_code in (400, 422) and any(str(e.get("code")) in RECIPIENT_CODES for e in errors)
        return failure(KIND, response, code, text, cls="recipient" if recipient else None, quota={SENDING_LIMIT})

    def body(self, message: Message) -> dict:
        return {"options": {"open_tracking": False, "click_tracking": False},
                "recipients": self.recipients(message), "content": _content(message),
                "metadata": {"notifuse_message_id": message.message_id}}

    def recipients(self, message: Message) -> list[dict]:
        cc, bcc = message.copies
        out = [{"address": {"email": self._address(message.to)}}]
        # `header_to` is what the copy's To header shows: the To address, not the sink's.
        out += [{"address": {"email": self._address(a), "header_to": message.to}} for a in (*cc, *bcc)]
        return out

    def _address(self, address: str) -> str:
        return address + SINK if self.settings.sandbox_mode else address


def _content(message: Message) -> dict:
    cc, _ = message.copies
    sender = {"name": message.from_name, "email": message.from_address} if message.from_name \
        else {"email": message.from_address}
    content: dict = {"from": sender, "subject": message.subject, "html": message.html}
    if message.text:
        content["text"] = message.text
    if message.reply_to:
        content["reply_to"] = message.reply_to
    headers = message.headers()
    if cc:
        headers["CC"] = ", ".join(cc)   # bcc addresses appear nowhere
    content["headers"] = headers
    if message.attached:
        content["attachments"] = [_file(a.filename, a) for a in message.attached]
    if message.inline:
        content["inline_images"] = [_file(a.cid, a) for a in message.inline]
    return content


def _file(name: str, attachment: Attachment) -> dict:
    return {"name": name, "type": attachment.mime_type, "data": b64(attachment.content)}


connect = SparkPostProvider.connect
