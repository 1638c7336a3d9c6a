"""Amazon SES API v1 at the edge of the world (delivery-contract 2.10): a real HTTP server on
127.0.0.1, reached through the test hook, that checks the SigV4 header shape for its access key,
parses the form, records every call and answers from a script per action (default success).
What moto's server mode cannot do, this can: fail on demand with any SES error, and show the
exact parameters a send carried (moto drops ConfigurationSetName and Tags).

    fake.fail("SendEmail", 400, "MessageRejected", "Address blacklisted.")
    fake.fail("SendEmail", 400, "Throttling", "Maximum sending rate exceeded.", headers={"Retry-After": "7"})
    fake.configuration_sets = ["notifuse-<integration id>"]
"""

from __future__ import annotations

import dataclasses
import itertools
import urllib.parse
import uuid
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response

NS = "http://ses.amazonaws.com/doc/2010-12-01/"


@dataclasses.dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]

    @property
    def action(self) -> str:
        return self.form.get("Action", "")

    def members(self, prefix: str) -> list[str]:
        """`prefix.member.1`, `.2`, … in order."""
        return _members(self.form, prefix)


def _members(form: dict[str, str], prefix: str) -> list[str]:
    out = []
    for i in itertools.count(1):
        value = form.get(f"{prefix}.member.{i}")
        if value is None:
            return out
        out.append(value)


@dataclasses.dataclass
class Answer:
    status: int
    code: str = ""
    message: str = ""
    type: str = "Sender"
    headers: dict[str, str] | None = None
    body: bytes | None = None          # replaces the XML (a proxy's HTML page, say)


def _result(action: str, inner: str) -> bytes:
    request_id = uuid.uuid4()
    return (f'<{action}Response xmlns="{NS}"><{action}Result>{inner}</{action}Result>'
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>").encode()


def _error(answer: Answer) -> bytes:
    return (f'<ErrorResponse xmlns="{NS}"><Error><Type>{answer.type}</Type><Code>{escape(answer.code)}</Code>'
            f"<Message>{escape(answer.message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()


class SesFake:
    def __init__(self, access_key: str = "AKIDPOSTROOMTEST"):
        self.access_key = access_key
        self.configuration_sets: list[str] = []
        self.page_size: int | None = None          # ListConfigurationSets pages (NextToken) when set
        self.scripts: dict[str, list[Answer]] = {}
        self.calls: list[Call] = []
        self.holds: dict = {}                      # for fakes.webhook_receiver.serving
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, action: str, status: int, code: str = "", message: str = "", **kwargs) -> None:
        self.scripts.setdefault(action, []).append(Answer(status, code, message, **kwargs))

    def of(self, action: str) -> list[Call]:
        return [c for c in self.calls if c.action == action]

    def authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        return (auth.startswith(f"AWS4-HMAC-SHA256 Credential={self.access_key}/") and "/ses/aws4_request" in auth
                and "x-amz-date" in headers)

    def answer(self, call: Call) -> Answer | bytes:
        if not self.authorized(call.headers):
            return Answer(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
        script = self.scripts.get(call.action)
        if script:
            return script.pop(0)
        if call.action == "ListConfigurationSets":
            return self._list(call.form.get("NextToken", ""))
        if call.action in ("SendEmail", "SendRawEmail"):
            return _result(call.action, f"<MessageId>0100018f-{uuid.uuid4()}-000000</MessageId>")
        return Answer(400, "InvalidAction", f"Could not find operation {call.action} for version 2010-12-01")

    def _list(self, token: str) -> bytes:
        start = int(token or 0)
        size = self.page_size or len(self.configuration_sets) or 1
        page = self.configuration_sets[start:start + size]
        names = "".join(f"<member><Name>{escape(n)}</Name></member>" for n in page)
        more = f"<NextToken>{start + size}</NextToken>" if start + size < len(self.configuration_sets) else ""
        return _result("ListConfigurationSets", f"<ConfigurationSets>{names}</ConfigurationSets>{more}")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        call = Call(request.method, request.url.path, dict(request.headers.items()), form)
        self.calls.append(call)
        answer = self.answer(call)
        if isinstance(answer, bytes):
            response = Response(answer, 200, media_type="text/xml")
        else:
            content = answer.body if answer.body is not None else _error(answer)
            response = Response(content, answer.status, headers=answer.headers, media_type="text/xml")
        await response(scope, receive, send)
