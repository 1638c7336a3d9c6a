"""SendGrid (delivery-contract 2.6): one POST to v3 /mail/send with a single personalization, the
message id in `custom_args.notifuse_message_id` (2.9). SendGrid accepts with 202, an empty body
and the id in the `X-Message-Id` header.

Its errors are `{"errors": [{"message", "field", "help"}]}`; `field` is the JSON path of the value
refused, and a path into `personalizations` is a recipient (2.8)."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from postroom.delivery.providers.base import (
    Attachment, HttpProvider, Message, SendFailed, Sent, b64, failure, json_of, member, objects,
    required_setting, text_setting)

KIND = "sendgrid"
URL = "https://api.sendgrid.com/v3/mail/send"
SECRETS = ("api_key",)


@dataclass(frozen=True)
class Settings:
    api_key: str = field(repr=False)
    # The Signed Event Webhook's verification key (base64 DER, from the account's mail settings):
    # with it, events SendGrid posts back must carry a valid signature (engagement-contract 3.2).
    webhook_public_key: str | None = None

    @classmethod
    def parse(cls, raw: dict) -> Settings:
        return cls(required_setting(raw, "api_key", "api key is required for SendGrid configuration"),
                   text_setting(raw, "webhook_public_key") or None)


class SendGridProvider(HttpProvider):
    kind = KIND
    url = URL
    settings: Settings

    def request(self, message: Message) -> dict:
        return {"json": self.body(message), "headers": {"Authorization": f"Bearer {self.settings.api_key}"}}

    def sent(self, response: httpx.Response) -> Sent:
        return Sent(response.headers.get("X-Message-Id"))   # 202 has an empty body

    def failed(self, response: httpx.Response) -> SendFailed:
        errors = objects(member(json_of(response), "errors"))
        text = "; ".join(_describe(e) for e in errors)
        recipient = response.status_code == 400 and any(
            str(e.get("field") or "").startswith("personalizations") for e in errors)
        return failure(KIND, response, None, text, cls="recipient" if recipient else None)

    def body(self, message: Message) -> dict:
        cc, bcc = message.copies   # SendGrid refuses the whole message when an address repeats
        personalization: dict = {"to": [{"email": message.to}]}
        if cc:
            personalization["cc"] = [{"email": a} for a in cc]
        if bcc:
            personalization["bcc"] = [{"email": a} for a in bcc]
        sender = {"email": message.from_address}
        if message.from_name:
            sender["name"] = message.from_name   # a separate name field: passed raw
        body: dict = {"personalizations": [personalization], "from": sender}
        if message.reply_to:
            body["reply_to"] = {"email": message.reply_to}
        body |= {"subject": message.subject, "content": _content(message),
                 "custom_args": {"notifuse_message_id": message.message_id}, "headers": message.headers()}
        if message.attachments:
            body["attachments"] = [_attachment(a) for a in message.attachments]
        return body


def _content(message: Message) -> list[dict]:
    # SendGrid requires text/plain, when present, before text/html.
    text = [{"type": "text/plain", "value": message.text}] if message.text else []
    return text + [{"type": "text/html", "value": message.html}]


def _attachment(attachment: Attachment) -> dict:
    out = {"content": b64(attachment.content), "filename": attachment.filename,
           "type": attachment.mime_type, "disposition": attachment.disposition}
    if attachment.disposition == "inline":
        out["content_id"] = attachment.cid
    return out


def _describe(error: dict) -> str:
    where = f" ({error['field']})" if error.get("field") else ""
    return f"{error.get('message') or ''}{where}"


connect = SendGridProvider.connect
