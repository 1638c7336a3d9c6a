"""Double opt-in confirmations: what the outbox consumer costs per list.pending event.

    python bench/confirmations.py [--count 2000]

What it does:
1. creates a throw-away database (bench/_common.py), a workspace whose marketing provider is an
   integration of kind `fake`, and a public double opt-in list;
2. makes `--count` pending subscriptions (contacts created, lists.store.subscribe as the public
   form does it), each writing its list.pending event;
3. the baseline, measured in this run: the same number of already rendered messages enqueued with
   `postroom.delivery.store.enqueue`, 50 per transaction (the consumer's batch), the least a
   consumer that queues through enqueue can cost;
4. drains the events with `confirmations.confirm_once` (each event: membership and contact read,
   template data and links, the built-in default rendered, the message enqueued, the event marked)
   and prints its rate and the ratio to the baseline; then 20,000 other events are written and
   one pass is timed, to show they cost the consumer nothing (its partial index holds none).
"""

from __future__ import annotations

import argparse
import time

import _common as bench

from postroom.auth import model as auth_model, store as auth_store
from postroom.contacts import store as contacts_store
from postroom.delivery import confirmations, store
from postroom.delivery.model import Outgoing, Source
from postroom.events import store as events_store
from postroom.lists import store as lists_store
from postroom.platform import db
from postroom.platform.config import Settings
from postroom.workspaces import store as ws_store

SENDER = {"id": "0d9a5b4e-0000-4000-8000-000000000001", "email": "noreply@bench.test", "name": "Bench",
          "is_default": True}


async def setup(pool, settings) -> str:
    async with pool.acquire() as conn:
        await ws_store.create_with_owner(conn, "bench", "Bench", {}, None)
        owner = await auth_store.upsert_user(conn, "owner@bench.test", "Owner", "api_key")
        await auth_store.add_member(conn, "bench", owner["id"], "owner", auth_model.full_permissions())
        integration = await store.create_integration(conn, settings.key_bytes, "bench", "Fake", "fake", {"label": ""},
                                                     {"api_key": "k"}, [SENDER], 10**8, 64)
        await conn.execute("UPDATE workspaces SET settings = coalesce(settings, '{}'::jsonb) || $2::jsonb WHERE id = $1",
                           "bench", {"marketing_email_provider_id": integration["id"]})
        await lists_store.create_list(conn, "bench", {"id": "news", "name": "News", "is_double_optin": True,
                                                      "is_public": True, "description": None,
                                                      "double_optin_template": None})
    return integration["id"]


async def pending(pool, count: int) -> None:
    async def link(list_id: str) -> str:
        return "https://bench.test/confirm?workspace_id=bench"

    for start in range(0, count, 100):
        async with pool.acquire() as conn, conn.transaction():
            lists = list((await lists_store.lists_by_ids(conn, "bench", ["news"], share=True)).values())
            for i in range(start, min(start + 100, count)):
                email = f"u{i}@bench.test"
                await contacts_store.create_if_absent(conn, "bench", {"email": email})
                await lists_store.subscribe(conn, "bench", email, lists, True, link)


async def baseline(pool, settings, integration_id: str, count: int) -> float:
    started = time.perf_counter()
    for start in range(0, count, confirmations.BATCH):
        async with pool.acquire() as conn, conn.transaction():
            for i in range(start, min(start + confirmations.BATCH, count)):
                await store.enqueue(conn, settings.key_bytes, Outgoing(
                    workspace_id="bench", integration_id=integration_id, contact_email=f"b{i}@bench.test",
                    from_address="noreply@bench.test", from_name="Bench", subject="Confirm", html="<p>hi</p>",
                    text="hi", template_id="t", template_version=1, source_type=Source.LIST, source_id="news",
                    list_id="news", data={"i": i}), "fake")
    return count / (time.perf_counter() - started)


async def main(args) -> None:
    async with bench.fresh_database("postroom_bench_confirm") as dsn:
        pool = await db.create_pool(dsn, min_size=2, max_size=10)
        settings = Settings(database_url=dsn, secret_key="bench-" + "x" * 40, delivery_fake_provider=True,
                            api_endpoint="https://bench.test")
        integration_id = await setup(pool, settings)
        print(bench.machine())
        await pending(pool, args.count)
        base = await baseline(pool, settings, integration_id, args.count)
        print(f"baseline {base:9.0f} msg/s   (enqueue of rendered messages, {confirmations.BATCH} per transaction)")
        started = time.perf_counter()
        done = 0
        while (n := await confirmations.confirm_once(pool, settings)):
            done += n
        rate = done / (time.perf_counter() - started)
        queued = await pool.fetchval("SELECT count(*) FROM email_queue WHERE source_type = 'list' AND source_id = 'news'"
                                     " AND template_id <> 't'")
        print(f"confirm  {rate:9.0f} ev/s    ({done} events, {queued} confirmations queued)   "
              f"ratio to baseline {rate / base:.2f}")
        async with pool.acquire() as conn, conn.transaction():
            for i in range(20_000):
                await events_store.emit(conn, "bench", "contact.updated", f"u{i}@bench.test", {"i": i})
        started = time.perf_counter()
        await confirmations.confirm_once(pool, settings)
        print(f"idle pass with 20000 other events unconsumed: {(time.perf_counter() - started) * 1000:.2f} ms")
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    bench.run_main(main(parser.parse_args()))
