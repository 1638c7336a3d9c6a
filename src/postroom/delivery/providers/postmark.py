"""Postmark (delivery-contract 2.3): one JSON POST to /email per message, the message id in
`Metadata.notifuse_message_id` so Postmark's events can be matched back (2.9).

Postmark answers every refusal with `{"ErrorCode": n, "Message": "…"}`; the code, not the text,
says what failed (2.8). Its open and link tracking is left to the server's own settings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import httpx

from postroom.delivery.providers.base import (
    Attachment, Class, HttpProvider, Message, SendFailed, Sent, b64, display_from, failure, json_of,
    member, required_setting, text_setting)

KIND = "postmark"
URL = "https://api.postmarkapp.com/email"
SECRETS = ("server_token",)
DEFAULT_STREAM = "outbound"

INVALID_REQUEST = 300      # validation of the request JSON: a bad field, sometimes an address
INACTIVE_RECIPIENT = 406   # the address bounced or complained before, Postmark will not send to it
ACCOUNT_CODES = frozenset({400, 401, 405})   # sender signature missing / unconfirmed, may not send

# Code 300 covers many refusals; the only ones about a recipient are Postmark's address-parsing
# messages, which start by quoting the field: "Invalid 'To' address: …", "Error parsing 'Cc': …".
# The contract names this one text rule; it is anchored at the start and matches the quoted field
# name exactly, so "Invalid 'From' address" or a text merely mentioning "to" never matches.
RECIPIENT_FIELD = re.compile(r"(?:Invalid|Error parsing) '(?:To|Cc|Bcc)'")


@dataclass(frozen=True)
class Settings:
    server_token: str = field(repr=False)
    message_stream: str = DEFAULT_STREAM

    @classmethod
    def parse(cls, raw: dict) -> Settings:
        token = required_setting(raw, "server_token", "server token is required for Postmark configuration")
        return cls(token, text_setting(raw, "message_stream") or DEFAULT_STREAM)


class PostmarkProvider(HttpProvider):
    kind = KIND
    url = URL
    settings: Settings

    def request(self, message: Message) -> dict:
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": self.settings.server_token}
        return {"json": self.body(message), "headers": headers}

    def sent(self, response: httpx.Response) -> Sent:
        return Sent(member(json_of(response), "MessageID"))

    def failed(self, response: httpx.Response) -> SendFailed:
        answer = json_of(response)
        code, text = member(answer, "ErrorCode"), str(member(answer, "Message") or "")
        return failure(KIND, response, code, text, cls=_class(response.status_code, code, text), provider={401})

    def body(self, message: Message) -> dict:
        cc, bcc = message.copies
        body = {"From": display_from(message.from_name, message.from_address), "To": message.to}
        if cc:
            body["Cc"] = ",".join(cc)
        if bcc:
            body["Bcc"] = ",".join(bcc)
        body |= {"Subject": message.subject, "HtmlBody": message.html}
        if message.text:
            body["TextBody"] = message.text
        if message.reply_to:
            body["ReplyTo"] = message.reply_to
        body |= {"MessageStream": self.settings.message_stream,
                 "Metadata": {"notifuse_message_id": message.message_id},
                 "Headers": _headers(message)}
        if message.attachments:
            body["Attachments"] = [_attachment(a) for a in message.attachments]
        return body


def _headers(message: Message) -> list[dict]:
    headers = message.headers()
    # The contract lists List-Unsubscribe-Post first; a stable sort keeps the rest in order.
    names = sorted(headers, key=lambda name: name != "List-Unsubscribe-Post")
    return [{"Name": name, "Value": headers[name]} for name in names]


def _attachment(attachment: Attachment) -> dict:
    out = {"Name": attachment.filename, "Content": b64(attachment.content), "ContentType": attachment.mime_type}
    if attachment.disposition == "inline":
        out["ContentID"] = f"cid:{attachment.cid}"
    return out


def _class(status: int, code, text: str) -> Class | None:
    """Postmark's 422 codes (2.8); None leaves the class to the status (401 provider, 429
    throttled, 5xx provider, any other 4xx message)."""
    if status != 422:
        return None
    if code == INACTIVE_RECIPIENT or (code == INVALID_REQUEST and RECIPIENT_FIELD.match(text)):
        return "recipient"
    if code in ACCOUNT_CODES:
        return "provider"
    return None


connect = PostmarkProvider.connect
