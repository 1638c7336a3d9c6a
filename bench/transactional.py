"""Transactional sends end to end: HTTP transactional.send -> the send queue -> `postroom worker` ->
SMTP, against raw aiosmtplib sending the same messages to the same sink.

    python bench/transactional.py [--count 20000] [--concurrency 32] [--connections 8]

What it does:
1. creates a throw-away database (bench/_common.py), starts `postroom serve --no-workers` and one
   `postroom worker`, and an SMTP sink in this process (aiosmtpd) that notes when each recipient's
   mail arrived;
2. through the API: an SMTP integration pointing at the sink (`--connections` kept-open
   connections, a rate far above what the machine can do), `workspaces.update` choosing it for
   transactional mail, a code-mode template with Liquid in subject and body, a notification;
3. sends `--count` `transactional.send` calls over `--concurrency` keep-alive connections, each to
   a new contact, and waits until the sink has every mail;
4. the baseline, measured in this run: the same number of messages, built once with Postroom's
   MIME builder, sent by aiosmtplib over `--connections` connections to the same sink;
5. prints accepted req/s and API p50/p99, delivered emails/s, the delay from the API's answer to
   the sink (p50/p99), server and worker peak RSS, the ratio delivered/raw, and PASS/MISS.

Targets (issue 10): >= 1,000 emails/s delivered per node, ratio >= 0.5, API p99 <= 25 ms, p99 delay
<= 1 s, RSS <= 200 MB. On 2 shared cores the sink, the load generator, the server, the worker and
PostgreSQL all compete for the same CPU: the ratio is the figure that transfers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time

import _common as bench

SUBJECT = "Order {{ order }} confirmed"
SOURCE = ("<mjml><mj-body><mj-section><mj-column><mj-text>Hello {{ contact.first_name | default: 'there' }},"
          " order {{ order }} is on its way.</mj-text></mj-column></mj-section></mj-body></mjml>")
TARGET_RATE, TARGET_RATIO, TARGET_API_P99_MS, TARGET_DELAY_P99_S, TARGET_RSS_MB = 1000.0, 0.5, 25.0, 1.0, 200.0


class Arrivals:
    """The sink's handler: the wall-clock time each recipient's mail arrived."""

    def __init__(self, expected: int) -> None:
        self.at: dict[str, float] = {}
        self.expected = expected
        self.done = asyncio.Event()

    async def handle_DATA(self, server, session, envelope):
        now = time.time()
        for rcpt in envelope.rcpt_tos:
            self.at[rcpt] = now
        if len(self.at) >= self.expected:
            self.done.set()
        return "250 OK"


async def serve_sink(handler) -> tuple[asyncio.AbstractServer, int]:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="sink.bench"), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def api(client, path: str, body: dict, status: int = 200) -> dict:
    r = await client.post(path, json=body)
    if r.status_code != status:
        raise RuntimeError(f"{path}: {r.status_code} {r.text}")
    return r.json()


async def set_up(server, pool, sink_port: int, connections: int) -> str:
    """The workspace `bench` with its owner key, the integration, the template and notification;
    returns the key."""
    import httpx

    server.cli("workspace", "create", "bench", "--name", "Bench")
    token = server.cli("apikey", "create", "--workspace", "bench", "--name", "bench")
    await pool.execute("UPDATE user_workspaces SET role = 'owner' WHERE workspace_id = 'bench'")  # integrations are an owner's
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as c:
        made = await api(c, "/api/workspaces.createIntegration", {
            "workspace_id": "bench", "name": "Sink", "type": "email", "provider": {
                "kind": "smtp", "smtp": {"host": "127.0.0.1", "port": sink_port, "use_tls": False},
                "senders": [{"email": "orders@bench.example.com", "name": "Bench Shop", "is_default": True}],
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


async def raw_baseline(port: int, count: int, connections: int) -> float:
    """Emails/s of aiosmtplib alone, sending messages built once by Postroom's MIME builder."""
    import aiosmtplib

    from postroom.delivery import mime
    from postroom.delivery.providers.base import Message

    handler = Arrivals(count)
    server, port = await serve_sink(handler)
    messages = [mime.to_bytes(Message(
        message_id=f"raw-{i}", from_address="orders@bench.example.com", from_name="Bench Shop",
        to=f"raw{i}@bench.example.com", subject=f"Order {i} confirmed",
        html=f"<p>Hello Ann{i}, order {i} is on its way.</p>", text=f"Hello Ann{i}, order {i} is on its way."))
        for i in range(count)]
    order = iter(range(count))

    async def sender() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        for i in order:
            await client.sendmail("orders@bench.example.com", [f"raw{i}@bench.example.com"], messages[i])
        await client.quit()

    started = time.monotonic()
    await asyncio.gather(*(sender() for _ in range(connections)))
    seconds = time.monotonic() - started
    server.close()
    return count / seconds


async def main(args) -> None:
    from postroom.platform import db

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    print(f"machine: {bench.machine()}")
    arrivals = Arrivals(args.count)
    sink, sink_port = await serve_sink(arrivals)
    async with bench.fresh_database("postroom_bench_tx") as dsn:
        server = bench.Server(dsn)
        server.start()
        worker = None
        pool = await db.create_pool(dsn, min_size=1, max_size=2)
        try:
            await server.ready()
            token = await set_up(server, pool, sink_port, args.connections)
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
            sink.close()
    raw_rate = await raw_baseline(sink_port, args.count, args.connections)
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
    print(f"delivered  {delivered_rate:9.0f} emails/s   ({len(got)} of {args.count} at the sink, first answer to last arrival)")
    print(f"raw        {raw_rate:9.0f} emails/s   (aiosmtplib, {args.connections} connections, same sink) [baseline]")
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--connections", type=int, default=8)
    bench.run_main(main(parser.parse_args()))
