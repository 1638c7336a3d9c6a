"""The send queue's own cost: enqueue, claim, send through the fake provider, record.

    python bench/send.py [--count 20000] [--latency 0.0] [--concurrency 64] [--workers 1]

What it does:
1. creates a throw-away database (bench/_common.py), a workspace and one integration of kind
   `fake` with a rate far above what the machine can do (the bucket never binds);
2. enqueues `--count` messages with `postroom.delivery.store.enqueue` (in transactions of 100, as a
   broadcast batch would) and prints that rate;
3. the baseline, measured in this run on the same rows: a bare loop that claims 500 due rows with
   FOR UPDATE SKIP LOCKED and deletes them in one statement per batch, the least any queue on this
   table can do per message;
4. re-enqueues `--count` messages and drains them with `--workers` SendWorker instances in this
   process (the fake answers after `--latency` seconds; `--concurrency` calls in flight per
   worker), each outcome recorded as the product records it (message row, timeline entry, outbox
   event, breaker counters); prints the drain rate and its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time

import _common as bench

from postroom.auth import model as auth_model, store as auth_store
from postroom.delivery import store
from postroom.delivery.model import Outgoing, Source
from postroom.delivery.providers.fake import Fake, Step
from postroom.delivery.worker import SendWorker
from postroom.platform import db
from postroom.platform.config import Settings
from postroom.workspaces import store as ws_store

BASELINE = """
WITH due AS (SELECT id FROM email_queue WHERE workspace_id = $1 AND status = 'pending'
              ORDER BY priority, next_retry_at, created_at LIMIT 500 FOR UPDATE SKIP LOCKED)
DELETE FROM email_queue q USING due WHERE q.workspace_id = $1 AND q.id = due.id
"""


async def enqueue_all(pool, settings, ws_id, integration_id, count) -> float:
    started = time.perf_counter()
    for start in range(0, count, 100):
        async with pool.acquire() as conn, conn.transaction():
            for i in range(start, min(start + 100, count)):
                await store.enqueue(conn, settings.key_bytes, Outgoing(
                    workspace_id=ws_id, integration_id=integration_id, contact_email=f"u{i}@bench.test",
                    from_address="noreply@bench.test", from_name="Bench", subject="Hello", html="<p>hi</p>",
                    template_id="t", template_version=1, source_type=Source.BROADCAST, source_id="b1",
                    data={"i": i}), "fake")
    return count / (time.perf_counter() - started)


async def main(args) -> None:
    async with bench.fresh_database("postroom_bench_send") as dsn:
        pool = await db.create_pool(dsn, min_size=2, max_size=20)
        settings = Settings(database_url=dsn, secret_key="bench-" + "x" * 40, delivery_fake_provider=True,
                            delivery_concurrency=args.concurrency, delivery_poll_interval=0.05)
        async with pool.acquire() as conn:
            await ws_store.create_with_owner(conn, "bench", "Bench", {}, None)
            owner = await auth_store.upsert_user(conn, "owner@bench.test", "Owner", "api_key")
            await auth_store.add_member(conn, "bench", owner["id"], "owner", auth_model.full_permissions())
            integration = await store.create_integration(
                conn, settings.key_bytes, "bench", "Fake", "fake", {"label": ""}, {"api_key": "k"},
                [{"id": "0d9a5b4e-0000-4000-8000-000000000001", "email": "noreply@bench.test", "name": "Bench",
                  "is_default": True}], 10**8, 64)
        iid = integration["id"]
        print(bench.machine())
        rate = await enqueue_all(pool, settings, "bench", iid, args.count)
        print(f"enqueue  {rate:9.0f} msg/s   (history row, timeline entry, queue row; 100 per transaction)")

        started = time.perf_counter()
        while await pool.execute(BASELINE, "bench") != "DELETE 0":
            pass
        baseline = args.count / (time.perf_counter() - started)
        print(f"baseline {baseline:9.0f} msg/s   (claim 500 and delete, nothing else)")

        await pool.execute("DELETE FROM message_history; DELETE FROM contact_timeline; DELETE FROM events")
        await enqueue_all(pool, settings, "bench", iid, args.count)
        fake = Fake(default=Step(delay=args.latency))
        workers = [SendWorker(pool, dataclasses.replace(settings), provider_factory=fake.factory)
                   for _ in range(args.workers)]
        stop = asyncio.Event()
        started = time.perf_counter()
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        while await pool.fetchval("SELECT count(*) FROM email_queue"):
            await asyncio.sleep(0.05)
        drained = args.count / (time.perf_counter() - started)
        stop.set()
        await asyncio.gather(*tasks)
        sent = await pool.fetchval("SELECT count(*) FROM message_history WHERE status = 'sent'")
        print(f"send     {drained:9.0f} msg/s   ({sent} sent by {args.workers} worker(s), provider latency "
              f"{args.latency * 1000:g} ms)   ratio to baseline {drained / baseline:.2f}")
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    bench.run_main(main(parser.parse_args()))
