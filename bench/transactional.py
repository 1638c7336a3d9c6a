"""Transactional sends end to end: HTTP transactional.send -> the send queue -> `postroom worker` ->
a local SMTP sink, then the same to a local Postmark-speaking HTTP provider; each against its raw
client (aiosmtplib, httpx) sending the same pre-built messages to the same sink in the same run.

    python bench/transactional.py [--provider smtp|postmark|both] [--count 20000] [--concurrency 32]
                                  [--connections 8]

What it does, for each provider half (`both` runs SMTP, then Postmark):
1. creates a throw-away database (bench/_common.py), starts `postroom serve --no-workers` and one
   `postroom worker`, and in this process the receiving end, which notes when each recipient's
   mail arrived: an SMTP sink (aiosmtpd), or a Postmark fake (POST /email with the server token,
   answered as Postmark does, on uvicorn) reached through POSTROOM_PROVIDER_BASE_URL_POSTMARK;
2. through the API: an integration of that kind pointing at it (`--connections` calls in flight,
   its `max_concurrency`; a rate far above what the machine can do), `workspaces.update`
   choosing it for transactional mail, a code-mode template with Liquid in subject and body, a
   notification;
3. sends `--count` `transactional.send` calls over `--concurrency` keep-alive connections, each to
   a new contact, and waits until the receiving end has every mail;
4. the baseline, measured in this run once the server and worker are stopped: the same number of
   messages built once with Postroom's own code (the MIME builder for SMTP, the Postmark provider's
   JSON body for Postmark), sent to a fresh receiving end of the same kind by the raw client with
   the same concurrency: aiosmtplib over `--connections` connections, or `--connections` tasks
   posting on one httpx.AsyncClient made as the worker's provider context makes its own;
5. prints accepted req/s and API p50/p99, delivered emails/s, the delay from the API's answer to
   the arrival (p50/p99), server and worker peak RSS, the ratio delivered/raw, and PASS/MISS.

Targets (issue 10): >= 1,000 emails/s delivered per node, ratio >= 0.5, API p99 <= 25 ms, p99 delay
<= 1 s, RSS <= 200 MB. On 2 shared cores the receiving end, the load generator, the server, the
worker and PostgreSQL all compete for the same CPU: the ratio is the figure that transfers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import _common as bench

SUBJECT = "Order {{ order }} confirmed"
SOURCE = ("<mjml><mj-body><mj-section><mj-column><mj-text>Hello {{ contact.first_name | default: 'there' }},"
          " order {{ order }} is on its way.</mj-text></mj-column></mj-section></mj-body></mjml>")
TARGET_RATE, TARGET_RATIO, TARGET_API_P99_MS, TARGET_DELAY_P99_S, TARGET_RSS_MB = 1000.0, 0.5, 25.0, 1.0, 200.0
FROM, FROM_NAME = "orders@bench.example.com", "Bench Shop"
POSTMARK_TOKEN = "bench-postmark-server-token"


class Arrivals:
    """The wall-clock time each recipient's mail arrived at a receiving end."""

    def __init__(self, expected: int) -> None:
        self.at: dict[str, float] = {}
        self.expected = expected
        self.done = asyncio.Event()

    def note(self, recipients, now: float) -> None:
        for rcpt in recipients:
            self.at[rcpt] = now
        if len(self.at) >= self.expected:
            self.done.set()


class SmtpSink(Arrivals):
    """aiosmtpd's handler: a mail arrives when its final dot did."""

    async def handle_DATA(self, server, session, envelope):
        self.note(envelope.rcpt_tos, time.time())
        return "250 OK"


class PostmarkFake(Arrivals):
    """A bare ASGI app speaking Postmark's /email (delivery-contract 2.3, 2.10): the server token
    checked (401, ErrorCode 10), the JSON body read (422, ErrorCode 402), then 200 with a fresh
    MessageID. A mail arrives when its whole request body did."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        chunks, more = [], True
        while more:
            event = await receive()
            chunks.append(event.get("body", b""))
            more = event.get("more_body", False)
        now = time.time()
        headers = dict(scope["headers"])
        if scope["method"] != "POST" or scope["path"] != "/email":
            status, answer = 404, {"ErrorCode": 404, "Message": "not found"}
        elif headers.get(b"x-postmark-server-token") != POSTMARK_TOKEN.encode():
            status, answer = 401, {"ErrorCode": 10, "Message": "The Server Token you provided in the "
                                   "X-Postmark-Server-Token request header was invalid."}
        else:
            try:
                to = json.loads(b"".join(chunks))["To"]
            except (ValueError, KeyError, TypeError):
                status, answer = 422, {"ErrorCode": 402, "Message": "Received invalid JSON input."}
            else:
                self.note([to], now)
                status, answer = 200, {"To": to, "SubmittedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                                       "MessageID": str(uuid.uuid4()), "ErrorCode": 0, "Message": "OK"}
        body = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def serve_smtp(count: int):
    """An SMTP sink on a free port: yields (arrivals, port)."""
    from aiosmtpd.smtp import SMTP

    handler = SmtpSink(count)
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="sink.bench"), "127.0.0.1", 0)
    try:
        yield handler, server.sockets[0].getsockname()[1]
    finally:
        server.close()


@contextlib.asynccontextmanager
async def serve_postmark(count: int):
    """The Postmark fake on uvicorn (in this process and loop) on a free port: yields (arrivals, port)."""
    import uvicorn

    class Quiet(uvicorn.Server):
        def capture_signals(self):  # the bench keeps its own signal handling
            return contextlib.nullcontext()

    fake = PostmarkFake(count)
    server = Quiet(uvicorn.Config(fake, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                  access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()   # it could not start: say why
        await asyncio.sleep(0.01)
    try:
        yield fake, server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def raw_smtp(count: int, connections: int) -> float:
    """Emails/s of aiosmtplib alone over `connections` connections, sending messages built once by
    Postroom's MIME builder."""
    import aiosmtplib

    from postroom.delivery import mime

    messages = [mime.to_bytes(m) for m in raw_messages(count)]
    order = iter(range(count))
    async with serve_smtp(count) as (_, port):
        async def sender() -> None:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
            await client.connect()
            for i in order:
                await client.sendmail(FROM, [f"raw{i}@bench.example.com"], messages[i])
            await client.quit()

        started = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(connections)))
        return count / (time.monotonic() - started)


async def raw_postmark(count: int, connections: int) -> float:
    """Emails/s of httpx alone, `connections` calls in flight on one AsyncClient made as the
    worker's provider context makes its own, posting the JSON bodies Postroom's Postmark provider
    builds, serialised once."""
    import httpx

    from postroom.delivery.providers.base import HTTP_TIMEOUT, Context, rebase
    from postroom.delivery.providers.postmark import URL, PostmarkProvider, Settings

    provider = PostmarkProvider(Settings(POSTMARK_TOKEN), Context(client=None, base_urls={}))
    bodies = [json.dumps(provider.body(m)).encode() for m in raw_messages(count)]
    headers = {"Accept": "application/json", "Content-Type": "application/json",
               "X-Postmark-Server-Token": POSTMARK_TOKEN}
    order = iter(range(count))
    async with serve_postmark(count) as (fake, port), httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        url = rebase(URL, f"http://127.0.0.1:{port}")

        async def sender() -> None:
            for i in order:
                r = await client.post(url, content=bodies[i], headers=headers)
                if r.status_code != 200:
                    raise RuntimeError(f"raw Postmark send {i}: {r.status_code} {r.text}")

        started = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(connections)))
        seconds = time.monotonic() - started
        if len(fake.at) != count:
            raise RuntimeError(f"raw Postmark sends: {len(fake.at)} of {count} arrived")
        return count / seconds


def raw_messages(count: int) -> list:
    """The baseline's messages: the shape transactional.send renders, one recipient each."""
    from postroom.delivery.providers.base import Message

    return [Message(message_id=f"raw-{i}", from_address=FROM, from_name=FROM_NAME, to=f"raw{i}@bench.example.com",
                    subject=f"Order {i} confirmed", html=f"<p>Hello Ann{i}, order {i} is on its way.</p>",
                    text=f"Hello Ann{i}, order {i} is on its way.") for i in range(count)]


@dataclass(frozen=True)
class Half:
    """One provider half of the bench."""
    name: str
    raw_client: str
    serve: Callable          # serve(count): async context manager of (arrivals, port)
    integration: Callable    # integration(port): the integration's `kind` and settings object
    env: Callable            # env(port): what the server and the worker need to reach it
    raw: Callable            # await raw(count, connections): the baseline's emails/s


HALVES = {
    "smtp": Half("smtp", "aiosmtplib", serve_smtp,
                 lambda port: {"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": port, "use_tls": False}},
                 lambda port: {}, raw_smtp),
    "postmark": Half("postmark", "httpx", serve_postmark,
                     lambda port: {"kind": "postmark", "postmark": {"server_token": POSTMARK_TOKEN}},
                     lambda port: {"POSTROOM_PROVIDER_BASE_URL_POSTMARK": f"http://127.0.0.1:{port}"}, raw_postmark),
}


async def api(client, path: str, body: dict, status: int = 200) -> dict:
    r = await client.post(path, json=body)
    if r.status_code != status:
        raise RuntimeError(f"{path}: {r.status_code} {r.text}")
    return r.json()


async def set_up(server, pool, provider: dict, connections: int) -> str:
    """The workspace `bench` with its owner key, the integration (`provider`: kind and its
    settings), the template and notification; returns the key."""
    import httpx

    server.cli("workspace", "create", "bench", "--name", "Bench")
    token = server.cli("apikey", "create", "--workspace", "bench", "--name", "bench")
    await pool.execute("UPDATE user_workspaces SET role = 'owner' WHERE workspace_id = 'bench'")  # integrations are an owner's
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as c:
        made = await api(c, "/api/workspaces.createIntegration", {
            "workspace_id": "bench", "name": "Sink", "type": "email", "provider": {
                **provider, "senders": [{"email": FROM, "name": FROM_NAME, "is_default": True}],
                "rate_limit_per_minute": 6_000_000, "max_concurrency": connections}}, 201)
        await api(c, "/api/workspaces.update", {"id": "bench", "settings": {
            "transactional_email_provider_id": made["integration_id"], "email_tracking_enabled": False}})
        await api(c, "/api/templates.create", {
            "workspace_id": "bench", "id": "order", "name": "Order", "channel": "email", "category": "transactional",
            "email": {"editor_mode": "code", "subject": SUBJECT, "mjml_source": SOURCE}}, 201)
        await api(c, "/api/transactional.create", {"workspace_id": "bench", "notification": {
            "id": "order_confirmed", "name": "Order confirmed", "channels": {"email": {"template_id": "order"}}}}, 201)
    return token


def send_requests(port: int, token: str, count: int) -> list[bytes]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return [bench.http_request("POST", "/api/transactional.send", port, headers, json.dumps({
        "workspace_id": "bench", "notification": {
            "id": "order_confirmed", "contact": {"email": f"r{i}@bench.example.com", "first_name": f"Ann{i}"},
            "channels": ["email"], "data": {"order": i}}}).encode()) for i in range(count)]


async def run_half(half: Half, args) -> None:
    """One provider half: the run through Postroom, then the raw baseline, then its figures."""
    from postroom.platform import db

    print(f"\n== {half.name}: machine: {bench.machine()}")
    async with half.serve(args.count) as (arrivals, port), bench.fresh_database("postroom_bench_tx") as dsn:
        server = bench.Server(dsn, env=half.env(port))
        server.start()
        worker = None
        pool = await db.create_pool(dsn, min_size=1, max_size=2)
        try:
            await server.ready()
            token = await set_up(server, pool, half.integration(port), args.connections)
            (worker,) = bench.start_workers(server.env)
            await asyncio.sleep(2.0)  # let the worker connect and settle
            if worker.poll() is not None:
                worker.log.seek(0)
                raise RuntimeError("the worker exited:\n" + worker.log.read().decode(errors="replace"))
            load = await bench.run_load(server.port, send_requests(server.port, token, args.count),
                                        concurrency=args.concurrency, watch_pid=server.pid)
            try:
                await asyncio.wait_for(arrivals.done.wait(), timeout=max(120.0, args.count / 50))
            except TimeoutError:
                pass
            server_kb, worker_kb = server.peak_rss_kb(), bench.proc_status(worker.pid, "VmHWM")
        finally:
            if worker is not None:
                bench.stop_processes([worker])
            await pool.close()
            server.stop()
    raw_rate = await half.raw(args.count, args.connections)
    emails = [f"r{i}@bench.example.com" for i in range(args.count)]
    got = [e for e in emails if e in arrivals.at]
    first_answer = min(load.answered_at) if load.answered_at else 0.0
    last_arrival = max(arrivals.at.values(), default=first_answer)
    delivered_rate = len(got) / (last_arrival - first_answer) if last_arrival > first_answer else float("nan")
    delays = sorted(arrivals.at[e] - load.answered_at[i] for i, e in enumerate(emails) if e in arrivals.at)
    p50, p99 = bench.percentile(delays, 50), bench.percentile(delays, 99)
    server_mb, worker_mb = (kb * 1024 / 1e6 if kb else float("nan") for kb in (server_kb, worker_kb))
    print(load.figures.line("accepted"))
    print(f"HTTP responses: {dict(sorted(load.statuses.items()))}" + (f"; first errors: {load.errors}" if load.errors else ""))
    print(f"delivered  {delivered_rate:9.0f} emails/s   ({len(got)} of {args.count} at the {half.name} sink,"
          " first answer to last arrival)")
    print(f"raw        {raw_rate:9.0f} emails/s   ({half.raw_client}, {args.connections} in flight, same kind of sink)"
          " [baseline]")
    print(f"ratio delivered/raw {delivered_rate / raw_rate:.2f}")
    print(f"delay answer->sink  p50 {p50 * 1000:8.1f} ms   p99 {p99 * 1000:8.1f} ms")
    print(f"peak RSS: server {server_mb:.1f} MB, worker {worker_mb:.1f} MB")
    print(f"CPU while sending: server {load.watched_cpu / load.figures.seconds:.2f} cores,"
          f" machine {load.machine_cores:.2f} of {os.cpu_count()}")
    print()
    print(f"{bench.verdict(len(got) == args.count and delivered_rate >= TARGET_RATE)} >= {TARGET_RATE:.0f} emails/s delivered, all delivered")
    print(f"{bench.verdict(delivered_rate / raw_rate >= TARGET_RATIO)} ratio delivered/raw >= {TARGET_RATIO}")
    print(f"{bench.verdict(load.figures.ms(99) <= TARGET_API_P99_MS)} API p99 {load.figures.ms(99):.1f} ms <= {TARGET_API_P99_MS:.0f} ms")
    print(f"{bench.verdict(p99 <= TARGET_DELAY_P99_S)} p99 delay <= {TARGET_DELAY_P99_S:.0f} s")
    print(f"{bench.verdict(max(server_mb, worker_mb) <= TARGET_RSS_MB)} RSS <= {TARGET_RSS_MB:.0f} MB")


async def main(args) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    for name in (["smtp", "postmark"] if args.provider == "both" else [args.provider]):
        await run_half(HALVES[name], args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--provider", choices=("smtp", "postmark", "both"), default="both")
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--connections", type=int, default=8)
    bench.run_main(main(parser.parse_args()))
