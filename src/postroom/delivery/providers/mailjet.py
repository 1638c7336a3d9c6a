"""Mailjet (delivery-contract 2.5): one POST to the v3.1 Send API, one message in `Messages`, the
message id as `CustomID` (2.9).

A refused message comes back as `Messages[0].Status: "error"` with `Errors`, each naming the
properties it concerns in `ErrorRelatedTo` (`To[0].Email`, `HTMLPart`, …); that list, not the text,
tells a recipient problem from a message problem (2.8). Authentication and rate errors are one
error object at the top level."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from postroom.delivery.providers.base import (
    Attachment, HttpProvider, Message, ProviderConfigError, SendFailed, Sent, b64, failure,
    flag_setting, json_of, member, objects, text_setting)

KIND = "mailjet"
URL = "https://api.mailjet.com/v3.1/send"
SECRETS = ("api_key", "secret_key")
RECIPIENT_PROPERTIES = ("To", "Cc", "Bcc")


@dataclass(frozen=True)
class Settings:
    api_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    sandbox_mode: bool = False

    @classmethod
    def parse(cls, raw: dict) -> Settings:
        api_key, secret_key = text_setting(raw, "api_key"), text_setting(raw, "secret_key")
        if not api_key or not secret_key:
            raise ProviderConfigError("api key and secret key are required for Mailjet configuration")
        return cls(api_key, secret_key, flag_setting(raw, "sandbox_mode"))


class MailjetProvider(HttpProvider):
    kind = KIND
    url = URL
    settings: Settings

    def request(self, message: Message) -> dict:
        return {"json": self.body(message), "auth": (self.settings.api_key, self.settings.secret_key)}

    def sent(self, response: httpx.Response) -> Sent:
        return Sent(_message_uuid(json_of(response)))

    def failed(self, response: httpx.Response) -> SendFailed:
        errors = _errors(json_of(response))
        code = errors[0].get("ErrorCode") if errors else None
        text = "; ".join(_describe(e) for e in errors)
        recipient = response.status_code == 400 and any(_concerns_recipient(e) for e in errors)
        return failure(KIND, response, code, text, cls="recipient" if recipient else None)

    def body(self, message: Message) -> dict:
        body: dict = {"Messages": [_message(message)]}
        if self.settings.sandbox_mode:
            body["SandboxMode"] = True
        return body


def _message(message: Message) -> dict:
    cc, bcc = message.copies
    out: dict = {"From": _address(message.from_address, message.from_name), "To": [{"Email": message.to}]}
    if cc:
        out["Cc"] = [{"Email": a} for a in cc]
    if bcc:
        out["Bcc"] = [{"Email": a} for a in bcc]
    out |= {"Subject": message.subject, "HTMLPart": message.html}
    if message.text:
        out["TextPart"] = message.text
    out["CustomID"] = message.message_id
    if message.reply_to:
        # API v3.1's own property (Notifuse writes a Reply-To header instead).
        out["ReplyTo"] = {"Email": message.reply_to}
    out["Headers"] = message.headers()   # never empty: X-Message-ID is always there
    if message.attached:
        out["Attachments"] = [_file(a) for a in message.attached]
    if message.inline:
        out["InlinedAttachments"] = [_file(a) | {"ContentID": a.cid} for a in message.inline]
    return out


def _address(email: str, name: str) -> dict:
    """Mailjet has a separate name field: the name goes raw, and an empty one is left out."""
    return {"Email": email, "Name": name} if name else {"Email": email}


def _file(attachment: Attachment) -> dict:
    return {"ContentType": attachment.mime_type, "Filename": attachment.filename,
            "Base64Content": b64(attachment.content)}


def _message_uuid(answer) -> str | None:
    try:
        return answer["Messages"][0]["To"][0]["MessageUUID"]
    except (KeyError, IndexError, TypeError):
        return None


def _errors(answer) -> list[dict]:
    """The error objects of an answer: those of the message, else the top-level one (401, 429,
    malformed JSON)."""
    messages = objects(member(answer, "Messages"))
    if messages:
        return [error for m in messages for error in objects(m.get("Errors"))]
    return [answer] if member(answer, "ErrorMessage") is not None else []


def _concerns_recipient(error: dict) -> bool:
    """True when the error names a recipient property: `To`, `To[0].Email`, `Cc[1]`, … (an exact
    property name, so a future `ToName` would not count)."""
    related = error.get("ErrorRelatedTo")
    return isinstance(related, list) and any(
        isinstance(path, str) and path.split(".", 1)[0].split("[", 1)[0] in RECIPIENT_PROPERTIES
        for path in related)


def _describe(error: dict) -> str:
    related = error.get("ErrorRelatedTo")
    where = f" ({', '.join(map(str, related))})" if isinstance(related, list) and related else ""
    return f"{error.get('ErrorMessage') or ''}{where}"


connect = MailjetProvider.connect
