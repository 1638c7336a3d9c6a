"""customEvents.import of 50-event batches over HTTP against a raw COPY of the same rows, in one run.

    python bench/custom_events.py [--events 20000] [--contacts 2000] [--concurrency 4]

What it does:
1. creates a database `postroom_bench_<random>` on POSTROOM_BENCH_DATABASE_URL (default
   postgresql://postgres@127.0.0.1:5432/postgres), runs `postroom migrate`, and drops it at the end;
2. creates the workspaces `bench` (HTTP) and `bench-raw` and an API key with the CLI;
3. starts `postroom serve --no-workers` on a free port and sends `--events` new custom events (an
   order each: a few properties, a purchase goal with a value, spread over `--contacts` emails that do
   not exist yet, so the first batches also create contacts) to POST /api/customEvents.import in
   batches of 50 (the contract's cap) over `--concurrency` keep-alive connections, from the load
   generator of bench/_common.py; checks that every event and contact was written;
4. the baseline, "raw": the same batches decoded and COPYed into custom_events of another
   workspace, one COPY of 50 rows per batch, each its own transaction, over as many connections:
   no checks, no contacts, no timeline, no outbox, no lock of the stored rows. The floor of putting
   these rows in this table in batches of 50 here. Also "raw bulk": every row in one COPY, for
   reference (what a batch cap of 50 costs any writer);
5. prints events/s of each, the ratio HTTP / raw, p50/p99 of a batch, CPU use, and PASS/MISS
   against the targets. The exit code is 0 whether targets are met or not.

The machine is shared while helpers work: check the script at a small --events; full figures on a
quiet machine, and run it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import time

import msgspec

import _common as bench

BATCH = 50
TARGET_EVENTS_PER_S = 5_000
TARGET_RATIO = 0.25
COLUMNS = ("event_name", "external_id", "email", "properties", "occurred_at", "source", "goal_type", "goal_value",
           "created_at", "updated_at")


def events(count: int, contacts: int) -> list[dict]:
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    return [{"email": f"buyer{n % contacts}@bench.example.com", "event_name": "order.placed",
             "external_id": f"order-{n}", "properties": {"total": n % 500 + 0.99, "items": n % 7 + 1,
                                                         "currency": "EUR", "coupon": None},
             "occurred_at": (base + dt.timedelta(seconds=n)).isoformat().replace("+00:00", "Z"),
             "goal_type": "purchase", "goal_value": n % 500 + 0.99}
            for n in range(count)]


def batches(workspace_id: str, rows: list[dict]) -> list[bytes]:
    return [msgspec.json.encode({"workspace_id": workspace_id, "events": rows[i:i + BATCH]})
            for i in range(0, len(rows), BATCH)]


def records(body: bytes) -> list[tuple]:
    """A decoded batch as COPY records: the least typing the columns need, nothing checked."""
    from decimal import Decimal

    now = dt.datetime.now(dt.timezone.utc)
    out = []
    for e in msgspec.json.decode(body)["events"]:
        out.append((e["event_name"], e["external_id"], e["email"], msgspec.json.encode(e["properties"]).decode(),
                    dt.datetime.fromisoformat(e["occurred_at"]), "api", e["goal_type"],
                    Decimal(repr(e["goal_value"])), now, now))
    return out


async def raw_copy(pool, payloads: list[bytes], concurrency: int, bulk: bool) -> float:
    """One COPY of each batch in its own transaction over `concurrency` connections (with `bulk`:
    every row in one COPY). properties goes through a text staging column: binary COPY has no jsonb
    encoder for our codec."""
    stage = ("CREATE TEMP TABLE raw_events ON COMMIT DROP AS SELECT event_name, external_id, email,"
             " properties::text AS properties, occurred_at, source, goal_type, goal_value, created_at, updated_at"
             " FROM custom_events WITH NO DATA")
    move = (f"INSERT INTO custom_events (workspace_id, {', '.join(COLUMNS)}) SELECT $1, event_name, external_id,"
            " email, properties::jsonb, occurred_at, source, goal_type, goal_value, created_at, updated_at"
            " FROM raw_events")
    workspace = "bench-raw-bulk" if bulk else "bench-raw"
    t0 = time.perf_counter()
    if bulk:
        rows = [r for body in payloads for r in records(body)]
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(stage)
            await conn.copy_records_to_table("raw_events", records=rows, columns=COLUMNS)
            await conn.execute(move, workspace)
        return time.perf_counter() - t0
    pending = iter(payloads)

    async def worker():
        async with pool.acquire() as conn:
            for body in pending:
                async with conn.transaction():
                    await conn.execute(stage)
                    await conn.copy_records_to_table("raw_events", records=records(body), columns=COLUMNS)
                    await conn.execute(move, workspace)

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return time.perf_counter() - t0


async def main(args) -> None:
    from postroom.platform import db

    print(f"machine: {bench.machine()}")
    rows = events(args.events, args.contacts)
    payloads = batches("bench", rows)
    print(f"{args.events} events in {len(payloads)} batches of {BATCH}, over {args.contacts} new contacts,"
          f" {args.concurrency} connections")
    async with bench.fresh_database() as dsn:
        server = bench.Server(dsn, workers=False)
        conn = await db.connect(dsn)
        try:
            for ws in ("bench", "bench-raw", "bench-raw-bulk"):
                await asyncio.to_thread(server.cli, "workspace", "create", ws, "--name", ws)
            token = await asyncio.to_thread(server.cli, "apikey", "create", "--workspace", "bench")
            server.start()
            await server.ready()
            await conn.execute("VACUUM ANALYZE")
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            requests = [bench.http_request("POST", "/api/customEvents.import", server.port, headers, b)
                        for b in payloads]
            warmup = [bench.http_request("POST", "/api/customEvents.import", server.port, headers, b)
                      for b in batches("bench", [dict(e, external_id="warm-" + e["external_id"])
                                                 for e in rows[:BATCH * 4]])]
            http = await bench.run_load(server.port, requests, concurrency=args.concurrency, warmup=warmup,
                                        watch_pid=server.pid)
            server.stop()
            written = await conn.fetchval("SELECT count(*) FROM custom_events WHERE workspace_id = 'bench'"
                                          " AND external_id NOT LIKE 'warm-%'")
            contacts = await conn.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = 'bench'")
            effects = await conn.fetchval(
                "SELECT (SELECT count(*) FROM contact_timeline WHERE workspace_id = 'bench')"
                " + (SELECT count(*) FROM events WHERE workspace_id = 'bench')")
            pool = await db.create_pool(dsn, min_size=2, max_size=args.concurrency + 1)
            try:
                await conn.execute("VACUUM ANALYZE")
                machine0 = bench.cpu_times()
                raw_seconds = await raw_copy(pool, payloads, args.concurrency, bulk=False)
                raw_busy = bench.machine_busy(machine0, bench.cpu_times())
                await conn.execute("VACUUM ANALYZE")
                bulk_seconds = await raw_copy(pool, payloads, 1, bulk=True)
            finally:
                await pool.close()
            same = await conn.fetchval(
                "SELECT count(*) FROM custom_events h JOIN custom_events r ON r.workspace_id = 'bench-raw'"
                " AND r.event_name = h.event_name AND r.external_id = h.external_id AND r.properties = h.properties"
                " AND r.goal_value = h.goal_value AND r.occurred_at = h.occurred_at WHERE h.workspace_id = 'bench'")
        finally:
            await conn.close()
            server.stop()

    f = http.figures
    rate = f.count * BATCH / f.seconds
    raw_rate, bulk_rate = args.events / raw_seconds, args.events / bulk_seconds
    print()
    print(f"HTTP      {rate:8.0f} events/s  ({f.rate:.0f} batches/s, p50 {f.ms(50):.2f} ms, p99 {f.ms(99):.2f} ms"
          f" a batch; statuses {dict(http.statuses)}; server {http.watched_cpu / f.seconds:.2f} cores, machine"
          f" {http.machine_cores:.2f} of {os.cpu_count()})")
    print(f"raw       {raw_rate:8.0f} events/s  ({raw_seconds:.2f} s; COPY of 50 a transaction, {args.concurrency}"
          f" connections; machine {raw_busy:.2f} cores)")
    print(f"raw bulk  {bulk_rate:8.0f} events/s  ({bulk_seconds:.2f} s; one COPY of every row)")
    ratio = rate / raw_rate
    print(f"ratio HTTP/raw {ratio:.2f}   HTTP/raw bulk {rate / bulk_rate:.2f}")
    print(f"written over HTTP: {written}/{args.events} events, {contacts} contacts, {effects} timeline entries +"
          f" outbox events; equal to the raw rows: {same}")
    if http.errors:
        print(f"errors: {http.errors[:3]}")
    print(f"machine after: {bench.machine()}")
    print()
    print(f"{bench.verdict(rate >= TARGET_EVENTS_PER_S)}  HTTP {rate:.0f} events/s >= {TARGET_EVENTS_PER_S}")
    print(f"{bench.verdict(ratio >= TARGET_RATIO)}  ratio HTTP/raw {ratio:.2f} >= {TARGET_RATIO}")
    print(f"{bench.verdict(written == args.events and same == args.events)}  every event written, as raw wrote it")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--contacts", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
