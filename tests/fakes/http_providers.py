"""Local fakes of the five HTTP email providers (delivery-contract 2.10): real HTTP servers on
127.0.0.1, reached through the test hook, each checking a request the way its provider documents
it (path, credential, body shape) and answering in that provider's own shapes.

Every fake records each request as `Recorded(method, path, headers, body, raw)` with the body
parsed (JSON; forms as {field: [values]}, files as `Upload`), then answers:

1. a wrong or missing credential: the provider's 401;
2. a body the provider would refuse (a required field missing): its validation error;
3. else the next entry of `script` (consumed in order), when there is one;
4. else the provider's success, with a fresh id kept in `ids`.

An `Answer` can also be slow (`delay`, cut short when the client gives up) or `close` the
connection without a byte of answer; `status=None` means "the kind's success" (a slow success).
`plain_message` and `full_message` are what the tests send; `provider_fixtures` gives a test module
its fake and a `Sender` through the fake's kind of provider."""

from __future__ import annotations

import abc
import asyncio
import base64
import contextlib
import dataclasses
import email.parser
import email.policy
import json
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import parse_qs

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from fakes.asgi_server import QuietServer, serve
from postroom.delivery.providers.base import (
    HTTP_TIMEOUT, Attachment, Context, HttpProvider, Message, SendFailed, Sent)
from postroom.delivery.providers.mailgun import MailgunProvider
from postroom.delivery.providers.mailjet import MailjetProvider
from postroom.delivery.providers.postmark import PostmarkProvider
from postroom.delivery.providers.sendgrid import SendGridProvider
from postroom.delivery.providers.sparkpost import SparkPostProvider


@dataclasses.dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    content: bytes


@dataclasses.dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]   # lower-case names
    body: Any                 # JSON value; {field: [str | Upload]} for forms; None when unreadable
    raw: bytes


@dataclasses.dataclass
class Answer:
    status: int | None = None                 # None: the kind's success answer
    body: Any = None                          # dict/list -> JSON, str -> text/plain, None -> empty
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0                        # seconds before answering
    close: bool = False                       # drop the connection instead of answering


# ---------------------------------------------------------------- request bodies

def parse_body(content_type: str, raw: bytes) -> Any:
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        if media == "application/json":
            return json.loads(raw)
        if media == "application/x-www-form-urlencoded":
            return parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
        if media == "multipart/form-data":
            return _multipart(content_type, raw)
    except ValueError:
        return None
    return None


def _multipart(content_type: str, raw: bytes) -> dict[str, list]:
    # The HTTP policy keeps CRLF inside parts as sent, so a field or a file comes back byte-exact.
    whole = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
    if not whole.is_multipart():
        raise ValueError("not multipart")
    fields: dict[str, list] = {}
    for part in whole.iter_parts():
        name = part.get_param("name", header="content-disposition")
        content = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        value = Upload(filename, part.get_content_type(), content) if filename is not None else content.decode()
        fields.setdefault(name, []).append(value)
    return fields


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------- the server side every fake shares

class ProviderFake(abc.ABC):
    kind: ClassVar[str]
    path: str

    defaults: ClassVar[dict[str, str]]      # the integration settings that authenticate here

    def __init__(self, **settings: str):
        self.configured = self.defaults | settings
        self.requests: list[Recorded] = []
        self.script: list[Answer] = []
        self.ids: list[str] = []
        self.url = ""                       # http://127.0.0.1:<port> while serving
        self.server: QuietServer | None = None

    def will(self, *answers: Answer) -> None:
        self.script.extend(answers)

    def reset(self) -> None:
        """Forget what was received and scripted: one served fake can serve test after test."""
        self.requests.clear()
        self.script.clear()
        self.ids.clear()

    def settings(self) -> dict:
        """Settings of an integration that authenticates against this fake."""
        return dict(self.configured)

    @abc.abstractmethod
    def authorized(self, headers: dict[str, str]) -> bool:
        """The request carries the credential this fake was made with, as the provider takes it."""

    @abc.abstractmethod
    def unauthorized(self) -> Answer:
        """The provider's 401."""

    @abc.abstractmethod
    def invalid(self, request: Recorded) -> Answer | None:
        """The provider's validation error for a body it documents as refused, else None."""

    @abc.abstractmethod
    def accepted(self, request: Recorded) -> Answer:
        """The provider's success answer, with a fresh id (kept in `ids`)."""

    # The server.
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw = await request.body()
        headers = dict(request.headers.items())
        recorded = Recorded(request.method, request.url.path, headers,
                            parse_body(headers.get("content-type", ""), raw), raw)
        self.requests.append(recorded)
        answer = self._answer(recorded)
        if answer.delay and await _until_gone(receive, answer.delay):
            return   # the client gave up waiting: nothing was accepted, no id is made
        if answer.close:
            await self._drop(scope, receive)
            return
        if answer.status is None:
            success = self.accepted(recorded)
            answer = dataclasses.replace(success, headers=success.headers | answer.headers)
        await _response(answer)(scope, receive, send)

    def _answer(self, request: Recorded) -> Answer:
        if request.method != "POST" or request.path != self.path:
            return Answer(404, "404 page not found")
        if not self.authorized(request.headers):
            return self.unauthorized()
        refused = self.invalid(request)
        if refused is not None:
            return refused
        return self.script.pop(0) if self.script else Answer()

    async def _drop(self, scope, receive) -> None:
        """Close this request's connection before any byte of answer (uvicorn's ASGI has no
        such message, so the transport is found by the client's address), then wait for the
        server to see the disconnect, so it does not answer 500 for us."""
        client = tuple(scope["client"])
        for connection in list(self.server.server_state.connections):
            if getattr(connection, "client", None) == client:
                connection.transport.close()
        await _until_gone(receive, 5.0)

    def new_id(self, value: str) -> str:
        self.ids.append(value)
        return value


async def _until_gone(receive, seconds: float) -> bool:
    """Wait `seconds`, or less if the client hangs up first (a slow answer must not keep the
    server's shutdown waiting); True when it did hang up."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
            return True
    return False


def _response(answer: Answer) -> Response:
    if isinstance(answer.body, (dict, list)):
        return Response(json.dumps(answer.body), answer.status, answer.headers, media_type="application/json")
    if isinstance(answer.body, str):
        return Response(answer.body, answer.status, answer.headers, media_type="text/plain")
    return Response(b"", answer.status, answer.headers)


@contextlib.asynccontextmanager
async def serving(fake: ProviderFake) -> AsyncIterator[ProviderFake]:
    async with serve(fake) as server:
        fake.server, fake.url = server, f"http://127.0.0.1:{server.port}"
        yield fake


@contextlib.asynccontextmanager
async def hooked(*fakes: ProviderFake, timeout: httpx.Timeout | float = HTTP_TIMEOUT) -> AsyncIterator[Context]:
    """A provider context whose test hook sends each fake's kind to that fake, on a client of its
    own (closed at the end)."""
    context = Context(client=httpx.AsyncClient(timeout=timeout), base_urls={f.kind: f.url for f in fakes})
    try:
        yield context
    finally:
        await context.aclose()


def _missing(body: Any, *paths: str) -> str | None:
    """The first dotted path (`a.b`, with `a.0.b` for list items) with no non-empty value."""
    for path in paths:
        value = body
        for step in path.split("."):
            if isinstance(value, list) and step.isdigit() and int(step) < len(value):
                value = value[int(step)]
            elif isinstance(value, dict):
                value = value.get(step)
            else:
                value = None
        if value in (None, "", [], {}):
            return path
    return None


# ---------------------------------------------------------------- Postmark

class PostmarkFake(ProviderFake):
    kind = "postmark"
    path = "/email"
    defaults = {"server_token": "pm-token"}

    def authorized(self, headers):
        return headers.get("x-postmark-server-token") == self.configured["server_token"]

    def unauthorized(self):
        return self.error(401, 10, "The Server Token you provided in the X-Postmark-Server-Token request "
                                   "header was invalid. Please verify that you are using a valid token.")

    def invalid(self, request):
        if "application/json" not in request.headers.get("accept", ""):
            return self.error(406, 0, "The Accept header must be application/json.")
        body = request.body
        if not isinstance(body, dict):
            return self.error(422, 402, "Received invalid JSON input.")
        if not body.get("From"):
            return self.error(422, 300, "Invalid 'From' address: ''.")
        if not any(body.get(k) for k in ("To", "Cc", "Bcc")):
            return self.error(422, 300, "Zero recipients specified")
        if not (body.get("HtmlBody") or body.get("TextBody")):
            return self.error(422, 300, "Provide either email TextBody or HtmlBody or both.")
        return None

    def accepted(self, request):
        return Answer(200, {"To": request.body.get("To"), "SubmittedAt": _now(),
                            "MessageID": self.new_id(str(uuid.uuid4())), "ErrorCode": 0, "Message": "OK"})

    @staticmethod
    def error(status: int, code: int, message: str, headers: dict | None = None) -> Answer:
        return Answer(status, {"ErrorCode": code, "Message": message}, headers or {})


# ---------------------------------------------------------------- Mailgun

class MailgunFake(ProviderFake):
    kind = "mailgun"
    FILE_FIELDS = ("attachment", "inline")

    defaults = {"domain": "mg.acme.test", "api_key": "mg-key"}

    @property
    def path(self) -> str:
        return f"/v3/{self.configured['domain']}/messages"

    def authorized(self, headers):
        return headers.get("authorization") == basic("api", self.configured["api_key"])

    def unauthorized(self):
        return Answer(401, "Forbidden")   # Mailgun's 401 is plain text

    def invalid(self, request):
        body = request.body
        if not isinstance(body, dict):
            return self.error(400, "Invalid request: expected form fields")
        for name in ("from", "to", "subject"):
            if not any(body.get(name) or ()):
                return self.error(400, f"{name} parameter is missing")
        if not any((body.get("html") or []) + (body.get("text") or [])):
            return self.error(400, "Need at least one of 'text' or 'html' parameters specified")
        files = [(name, v) for name, values in body.items() for v in values if isinstance(v, Upload)]
        if any(name not in self.FILE_FIELDS for name, _ in files):
            return self.error(400, "files are taken only as 'attachment' or 'inline'")
        return None

    def accepted(self, request):
        mailgun_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{secrets.token_hex(8)}@{self.configured['domain']}>"
        return Answer(200, {"id": self.new_id(mailgun_id), "message": "Queued. Thank you."})

    @staticmethod
    def error(status: int, message: str, headers: dict | None = None) -> Answer:
        return Answer(status, {"message": message}, headers or {})


# ---------------------------------------------------------------- Mailjet

class MailjetFake(ProviderFake):
    kind = "mailjet"
    path = "/v3.1/send"

    defaults = {"api_key": "mj-key", "secret_key": "mj-secret"}

    def authorized(self, headers):
        return headers.get("authorization") == basic(self.configured["api_key"], self.configured["secret_key"])

    def unauthorized(self):
        return Answer(401, {"ErrorIdentifier": str(uuid.uuid4()), "StatusCode": 401,
                            "ErrorMessage": "API key authentication/authorization failure. You may be unauthorized "
                                            "to access the API or your API key may be expired."})

    def invalid(self, request):
        messages = request.body.get("Messages") if isinstance(request.body, dict) else None
        if not isinstance(messages, list) or not messages:
            return Answer(400, {"ErrorIdentifier": str(uuid.uuid4()), "ErrorCode": "mj-0002", "StatusCode": 400,
                                "ErrorMessage": "Malformed JSON, please review the syntax and properties types."})
        for i, message in enumerate(messages):
            missing = _missing(message, "From.Email", "To.0.Email", "Subject")
            if missing is None and not (message.get("HTMLPart") or message.get("TextPart")):
                missing = "HTMLPart"
            if missing:
                return self.error(400, "mj-0003", "Missing mandatory property.", [missing.replace(".0.", "[0].")])
        return None

    def accepted(self, request):
        def sent(recipients):
            out = []
            for r in recipients or ():
                number = secrets.randbelow(10**17)
                out.append({"Email": r.get("Email"), "MessageUUID": str(uuid.uuid4()), "MessageID": number,
                            "MessageHref": f"https://api.mailjet.com/v3/REST/message/{number}"})
            return out

        results = []
        for message in request.body["Messages"]:
            to = sent(message.get("To"))
            self.new_id(to[0]["MessageUUID"])
            results.append({"Status": "success", "CustomID": message.get("CustomID", ""), "To": to,
                            "Cc": sent(message.get("Cc")), "Bcc": sent(message.get("Bcc"))})
        return Answer(200, {"Messages": results})

    @staticmethod
    def error(status: int, code: str, message: str, related=(), headers: dict | None = None) -> Answer:
        """A send error: per message for 400 (as Mailjet answers a refused message), top-level
        otherwise (401, 429, 5xx)."""
        error = {"ErrorIdentifier": str(uuid.uuid4()), "ErrorCode": code, "StatusCode": status,
                 "ErrorMessage": message, "ErrorRelatedTo": list(related)}
        body = {"Messages": [{"Status": "error", "Errors": [error]}]} if status == 400 else error
        return Answer(status, body, headers or {})


# ---------------------------------------------------------------- SendGrid

class SendGridFake(ProviderFake):
    kind = "sendgrid"
    path = "/v3/mail/send"

    defaults = {"api_key": "SG.key"}

    def authorized(self, headers):
        return headers.get("authorization") == f"Bearer {self.configured['api_key']}"

    def unauthorized(self):
        return self.error(401, "The provided authorization grant is invalid, expired, or revoked")

    def invalid(self, request):
        body = request.body
        missing = _missing(body, "personalizations.0.to.0.email", "from.email", "subject", "content.0.value")
        if missing:
            return self.error(400, f"The {missing} parameter is required.", missing)
        types = [c.get("type") for c in body["content"]]
        if "text/plain" in types and types.index("text/plain") != 0:
            return self.error(400, "If present, text/plain must be the first content type.", "content")
        return None

    def accepted(self, request):
        return Answer(202, None, {"X-Message-Id": self.new_id(secrets.token_urlsafe(16))})

    @staticmethod
    def error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> Answer:
        return Answer(status, {"errors": [{"message": message, "field": field, "help": None}]}, headers or {})


# ---------------------------------------------------------------- SparkPost

class SparkPostFake(ProviderFake):
    kind = "sparkpost"
    path = "/api/v1/transmissions"

    # The endpoint is the integration's (https): the test hook sends it here.
    defaults = {"endpoint": "https://api.sparkpost.com", "api_key": "sp-key"}

    def authorized(self, headers):
        return headers.get("authorization") == self.configured["api_key"]

    def unauthorized(self):
        return Answer(401, {"errors": [{"message": "Unauthorized."}]})

    def invalid(self, request):
        missing = _missing(request.body, "recipients.0.address.email", "content.from.email", "content.subject")
        if missing is None and not (request.body["content"].get("html") or request.body["content"].get("text")):
            missing = "content.html"
        if missing:
            return self.error(422, "1400", "required field is missing", f"{missing} is required")
        return None

    def accepted(self, request):
        transmission = self.new_id(str(secrets.randbelow(10**17)))
        return Answer(200, {"results": {"total_rejected_recipients": 0,
                                        "total_accepted_recipients": len(request.body["recipients"]),
                                        "id": transmission}})

    @staticmethod
    def error(status: int, code: str, message: str, description: str = "", headers: dict | None = None) -> Answer:
        error = {"message": message, "code": code} | ({"description": description} if description else {})
        return Answer(status, {"errors": [error]}, headers or {})


# ---------------------------------------------------------------- messages the tests send

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"


def plain_message(**changes) -> Message:
    """The least a provider call carries: one recipient, HTML only."""
    fields = {"message_id": "3f6c1a52-7d0e-4b8e-9a51-5f2d0c7e9b11", "from_address": "noreply@acme.test",
              "from_name": "Acme", "to": "jane@example.com", "subject": "Hi Jane", "html": "<p>Hi Jane</p>"}
    return Message(**(fields | changes))


def full_message(**changes) -> Message:
    """Every input of 2.0: a name that needs quoting, a text part, cc and bcc with the duplicates
    Postroom drops (a cc equal to `to`, a bcc equal to a cc, an empty string), reply-to, a PDF
    without a content type and an inline PNG whose name has a space, an https unsubscribe URL."""
    fields = {"from_name": "Acme, Inc.", "text": "Hi Jane", "html": '<p>Hi Jane</p><img src="cid:logo_1.png">',
              "cc": ("c@example.com", "JANE@example.com", ""), "bcc": ("b@example.com", "C@example.com"),
              "reply_to": "r@acme.test", "list_unsubscribe_url": "https://acme.test/u/1",
              "attachments": (Attachment("invoice.pdf", PDF),
                              Attachment("logo 1.png", PNG, "image/png", "inline"))}
    return plain_message(**(fields | changes))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


FAKES: dict[str, type[ProviderFake]] = {f.kind: f for f in (PostmarkFake, MailgunFake, MailjetFake, SendGridFake,
                                                            SparkPostFake)}


# ---------------------------------------------------------------- sending through a fake, for tests

PROVIDERS: dict[str, type[HttpProvider]] = {p.kind: p for p in (
    PostmarkProvider, MailgunProvider, MailjetProvider, SendGridProvider, SparkPostProvider)}


class Sender:
    """The fake's kind of provider with the fake's settings (plus `changes`) on `context`."""

    def __init__(self, fake: ProviderFake, context: Context):
        self.fake = fake
        self.context = context

    def provider(self, **changes) -> HttpProvider:
        cls = PROVIDERS[self.fake.kind]
        settings = sys.modules[cls.__module__].Settings.parse(self.fake.settings() | changes)
        return cls(settings, self.context)

    async def __call__(self, message: Message, **changes) -> Sent:
        return await self.provider(**changes).send(message)

    async def exchange(self, message: Message, **changes) -> tuple[Sent, Recorded]:
        """Send `message`; the answer and the one request the fake got for it (a POST to its path)."""
        sent = await self(message, **changes)
        [request] = self.fake.requests
        assert (request.method, request.path) == ("POST", self.fake.path)
        return sent, request

    async def refused(self, message: Message, **changes) -> SendFailed:
        with pytest.raises(SendFailed) as caught:
            await self(message, **changes)
        return caught.value

    async def answered(self, answer: Answer) -> SendFailed:
        """How the provider classifies `answer` (scripted as the fake's next one) to a plain message."""
        self.fake.will(answer)
        return await self.refused(plain_message())


def provider_fixtures(*makers):
    """The fixtures of a provider test module, taken as `served, fake, send = provider_fixtures(…)`
    (a conftest.py here would shadow tests/conftest.py for `from conftest import …`): `served`, the
    fake each maker makes, served once per module (several makers parametrise the module); `fake`,
    reset before each test; `send`, a Sender on a context hooked to the fake."""

    @pytest.fixture(scope="module", params=makers, ids=[make().kind for make in makers])
    async def served(request):
        async with serving(request.param()) as running:
            yield running

    @pytest.fixture
    def fake(served) -> ProviderFake:
        served.reset()
        return served

    @pytest.fixture
    async def send(fake):
        async with hooked(fake) as context:
            yield Sender(fake, context)

    return served, fake, send
