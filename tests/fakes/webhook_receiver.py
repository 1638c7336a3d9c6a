"""A webhook receiver at the edge of the world: a real HTTP server on 127.0.0.1 that records what
it gets, verifies Standard Webhooks signatures with the `standardwebhooks` package, and answers
by a plan (so a test can make a destination fail, time out or hold)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time

import standardwebhooks
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from fakes.asgi_server import serve

WAIT = 30.0  # bound of every wait for something to happen (never a speed assertion)


@dataclasses.dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    verified: bool

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server on 127.0.0.1. Each path can be given a plan: a function of the request
    (and how many requests that path saw before) returning a status code or a Response; an
    asyncio.Event in `holds[path]` makes the path wait for it before answering."""

    def __init__(self):
        self.received: list[Received] = []
        self.secrets: dict[str, str] = {}
        self.plans: dict = {}
        self.holds: dict[str, asyncio.Event] = {}
        self.arrived = asyncio.Event()
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        path = request.url.path
        headers = {k: v for k, v in request.headers.items()}
        verified = False
        secret = self.secrets.get(path)
        if secret:
            try:
                standardwebhooks.Webhook(secret).verify(body, headers)
                verified = True
            except standardwebhooks.WebhookVerificationError:
                verified = False
        seen = len(self.at(path))
        item = Received(path, headers, body, verified)
        self.received.append(item)
        self.arrived.set()
        hold = self.holds.get(path)
        if hold is not None:
            await hold.wait()
        plan = self.plans.get(path)
        answer = plan(item, seen) if plan else 200
        response = answer if isinstance(answer, Response) else PlainTextResponse(f"answer {answer}", answer)
        await response(scope, receive, send)

    async def wait_for(self, condition, timeout: float = WAIT):
        await wait_until(condition, self.arrived, "the receiver", timeout)


async def wait_until(condition, arrived: asyncio.Event, who: str, timeout: float = WAIT):
    """Until `condition()` holds, looking again whenever `arrived` is set (and every 0.1 s)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{who} did not get what was expected in time")
        arrived.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.1):
                await arrived.wait()


@contextlib.asynccontextmanager
async def serving(recv: Receiver):
    """Runs `recv` on a free port for the duration of the block (releasing any hold at the end)."""
    async with serve(recv) as server:
        recv.port = server.port
        try:
            yield recv
        finally:
            for hold in recv.holds.values():
                hold.set()
