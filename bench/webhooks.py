"""Outgoing webhooks under load: contact upserts -> outbox -> `postroom worker` -> a local receiver.

    python bench/webhooks.py [--count 20000] [--concurrency 16] [--workers 1] [--rate 1000]

What it does:
1. creates a throw-away database (see bench/_common.py), a workspace and one subscription to
   `contact.created` pointing at a receiver on 127.0.0.1 (raw asyncio, in this process);
2. starts `--workers` `postroom worker` processes on that database;
3. writes `--count` new contacts with `postroom.contacts.store.upsert` from `--concurrency` tasks,
   noting when each write committed, while the receiver notes when each delivery arrived (it
   verifies the signature of the first 100 with the `standardwebhooks` package);
4. prints the write rate (the baseline, measured in this run), the delivery rate, their ratio,
   the delay from commit to arrival (p50, p99, max), and PASS/MISS against the targets;
5. then measures the delivery capacity on its own: `--count` more contacts are written with the
   workers stopped, the workers are started, and the backlog's drain rate is printed.
A delivery rate can never exceed the write rate feeding it: on a machine where the writes are
slower than the target, the ratio (and the drain rate) tell whether delivery keeps up.

Targets (issue 4): deliveries keep up with writes (>= 1,000/s) and p99 delay <= 2 s. Writes go as
fast as they can unless --rate paces them: run both, unpaced for capacity, --rate 1000 for the
delay of a steady load at the target rate.
Use a small --count to check it works on a busy machine; the full size is for a quiet one.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import msgspec
import standardwebhooks

import _common as bench

TARGET_RATE = 1000.0
TARGET_P99_S = 2.0


class Receiver(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive receiver: records (webhook-id, email, arrival) and answers 200."""

    arrivals: dict[str, float] = {}
    samples: list[tuple[bytes, dict]] = []
    done: asyncio.Event

    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes):
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4:head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length:]
            now = time.monotonic()
            email = msgspec.json.decode(body)["data"]["contact"]["email"]
            if email not in Receiver.arrivals:
                Receiver.arrivals[email] = now
            if len(Receiver.samples) < 100:
                Receiver.samples.append((body, headers))
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            if len(Receiver.arrivals) >= Receiver.expected:
                Receiver.done.set()


async def main(args) -> None:
    import secrets as pysecrets

    from postroom.contacts import store as contacts
    from postroom.lists import store as lists_store
    from postroom.platform import db
    from postroom.platform.config import signing_key
    from postroom.webhooks import model, store as webhooks
    from postroom.workspaces import store as workspaces

    print(bench.machine())
    loop = asyncio.get_running_loop()
    Receiver.expected = args.count
    Receiver.done = asyncio.Event()
    server = await loop.create_server(Receiver, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    secret_key = pysecrets.token_urlsafe(48)
    async with bench.fresh_database("postroom_bench_webhooks") as dsn:
        pool = await db.create_pool(dsn, min_size=2, max_size=args.concurrency + 2)
        secret = model.new_secret()
        async with pool.acquire() as conn:
            await workspaces.create_with_owner(conn, "bench", "Bench", {}, None)
        await webhooks.create_subscription(
            pool, signing_key(secret_key), "bench", model.new_subscription_id(), secret,
            {"name": "bench", "url": f"http://127.0.0.1:{port}/hook", "event_types": ["contact.created"],
             "custom_event_filters": None})
        procs = bench.start_workers({"POSTROOM_DATABASE_URL": dsn, "POSTROOM_SECRET_KEY": secret_key}, args.workers)
        try:
            await asyncio.sleep(2.0)  # let the workers connect and settle
            for p in procs:
                if p.poll() is not None:
                    p.log.seek(0)
                    raise RuntimeError("a worker exited:\n" + p.log.read().decode(errors="replace"))
            written: dict[str, float] = {}
            emails = [f"user{i}@bench.example.com" for i in range(args.count)]
            queue = iter(emails)
            first = time.monotonic()

            due = iter(range(args.count))

            async def writer():
                for email, i in zip(queue, due):
                    if args.rate:  # the i-th write is due i/rate seconds after the first
                        wait = first + i / args.rate - time.monotonic()
                        if wait > 0:
                            await asyncio.sleep(wait)
                    await contacts.upsert(pool, "bench", {"email": email, "first_name": "Bench"},
                                          after_write=lists_store.sync_contact_created_at)
                    written[email] = time.monotonic()

            await asyncio.gather(*(writer() for _ in range(args.concurrency)))
            last_write = time.monotonic()
            try:
                await asyncio.wait_for(Receiver.done.wait(), timeout=max(60.0, args.count / 100))
            except TimeoutError:
                pass
            last_arrival = max(Receiver.arrivals.values(), default=last_write)
            live_arrivals = dict(Receiver.arrivals)
            # capacity: a backlog written while no worker runs, then drained
            bench.stop_processes(procs)
            procs = []
            backlog = [f"later{i}@bench.example.com" for i in range(args.count)]
            queue = iter(backlog)

            async def backlog_writer():
                for email in queue:
                    await contacts.upsert(pool, "bench", {"email": email, "first_name": "Bench"},
                                          after_write=lists_store.sync_contact_created_at)

            await asyncio.gather(*(backlog_writer() for _ in range(args.concurrency)))
            Receiver.arrivals = {}
            Receiver.done = asyncio.Event()
            procs = bench.start_workers({"POSTROOM_DATABASE_URL": dsn, "POSTROOM_SECRET_KEY": secret_key}, args.workers)
            try:
                await asyncio.wait_for(Receiver.done.wait(), timeout=max(60.0, args.count / 100))
            except TimeoutError:
                pass
            drained = len(Receiver.arrivals)
            times = sorted(Receiver.arrivals.values())
            drain_seconds = times[-1] - times[0] if len(times) > 1 else 0.0
        finally:
            bench.stop_processes(procs)
            await pool.close()
            server.close()
    Receiver.arrivals = live_arrivals
    got = len(Receiver.arrivals)
    delays = sorted(Receiver.arrivals[e] - written[e] for e in Receiver.arrivals if e in written)
    verified = 0
    for body, headers in Receiver.samples:
        standardwebhooks.Webhook(secret).verify(body, headers)
        verified += 1
    write_rate = args.count / (last_write - first)
    delivery_rate = got / (last_arrival - first)
    p50, p99 = bench.percentile(delays, 50), bench.percentile(delays, 99)
    paced = f", paced at {args.rate:g}/s" if args.rate else ", as fast as they go"
    print(f"writes     {write_rate:9.0f} /s   ({args.count} contact upserts, {args.concurrency} tasks{paced}) [baseline]")
    print(f"deliveries {delivery_rate:9.0f} /s   ({got} of {args.count} delivered, {args.workers} worker process(es),"
          f" {verified} signatures verified)")
    print(f"ratio deliveries/writes {delivery_rate / write_rate:.2f}")
    print(f"delay write->delivery   p50 {p50 * 1000:8.1f} ms   p99 {p99 * 1000:8.1f} ms"
          f"   max {(delays[-1] if delays else float('nan')) * 1000:8.1f} ms")
    drain_rate = drained / drain_seconds if drain_seconds > 0 else float("nan")
    print(f"drain      {drain_rate:9.0f} /s   ({drained} of {args.count} backlogged deliveries, first to last"
          f" arrival)")
    keeps_up = delivery_rate >= min(TARGET_RATE, 0.9 * write_rate)
    print(f"{bench.verdict(got == args.count and keeps_up)} deliveries keep up with writes"
          f" (>= {TARGET_RATE:.0f}/s or >= 0.9 x the write rate) and all delivered")
    print(f"{bench.verdict(drained == args.count and drain_rate >= TARGET_RATE)} drain >= {TARGET_RATE:.0f}/s")
    print(f"{bench.verdict(p99 <= TARGET_P99_S)} p99 delay <= {TARGET_P99_S:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="writes per second (default 0: as fast as the writers go). Unpaced, any write"
                             " rate above the delivery rate makes the delay grow with the run's length;"
                             " paced at the target (1000), the delay shows what a steady load sees")
    parser.add_argument("--workers", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
