"""contacts.import over HTTP against a raw COPY-and-merge of the same rows with asyncpg, in one run.

    python bench/import.py [--rows 200000] [--batch 10000] [--no-direct] [--no-serial]

What it does:
1. creates a database `postroom_bench_<random>` on POSTROOM_BENCH_DATABASE_URL (default
   postgresql://postgres@127.0.0.1:5432/postgres), runs `postroom migrate`, and drops it at the end;
2. creates the workspaces `bench` (HTTP), `bench-direct`, `bench-raw` and `bench-serial` and an API
   key with the CLI;
3. starts `postroom serve --no-workers` on a free port and sends `--rows` new contacts (the seed's
   38-field shape, values varied per contact: bench/upsert.py's generator) to POST /api/contacts.import
   in batches of `--batch`, one request after the other, with httpx; checks that every row was created.
   10,000 such contacts make a 10.4 MiB body, over the default 10 MiB limit: this server alone gets
   POSTROOM_MAX_BODY_BYTES raised to fit (the figure is printed with a PASS/MISS line);
4. stops the server, then (unless --no-direct) runs the endpoint's work in this process on the same
   bodies: decode, then contacts.imports.import_rows (what the handler runs after its checks): the
   HTTP layer's share is the difference;
5. the baseline, "raw": the same bodies decoded, typed for COPY (the least typing the columns need,
   nothing checked), and written the way the endpoint writes (the same chunks of
   imports.CHUNK_SIZE contacts, imports.CONCURRENCY of them at once, each its own transaction on its
   own connection): COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT DO
   UPDATE into contacts. No validation, no timeline, no outbox, no lists: the floor of writing these
   rows to this table here. Also (unless --no-serial) "raw serial": one transaction per batch on one
   connection (what a simple loader does; it leaves the second core idle), for reference;
6. prints rows/s of each, the ratios, the largest request body against the default 10 MiB limit,
   CPU use, and PASS/MISS against the targets (the ratio target is HTTP / raw). The exit code is 0
   whether targets are met or not.

Each path writes its own workspace of the same tables, one after the other (HTTP, in-process, raw,
raw serial), each after a CHECKPOINT and a VACUUM ANALYZE, so that none pays for another's dirty
pages; later paths find more rows in the indexes (a small disadvantage for the baselines).
The machine is shared while helpers work: check the script at a small --rows; full figures on a quiet
machine, and run it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time

import httpx
import msgspec

import _common as bench
from upsert import contact

TARGET_ROWS_PER_S = 40_000
TARGET_RATIO = 0.6
DEFAULT_BODY_LIMIT = 10 * 1024 * 1024


def bodies(workspace_id: str, rows: int, batch: int) -> list[bytes]:
    """The request bodies, generated one batch at a time (the dicts of 200,000 contacts are not kept)."""
    out = []
    for start in range(0, rows, batch):
        contacts = [contact(f"c{n}@bench.example.com", n, 0) for n in range(start, min(start + batch, rows))]
        out.append(msgspec.json.encode({"workspace_id": workspace_id, "contacts": contacts}))
    return out


# ---------------------------------------------------------------- the baseline: raw COPY and merge

def raw_statements(fields, json_fields):
    cols = ", ".join(fields)
    stage = ", ".join(f"{f}::text AS {f}" if f in json_fields else f for f in fields)
    values = ", ".join(f"{f}::jsonb" if f in json_fields else f for f in fields)
    create = f"CREATE TEMP TABLE raw_stage ON COMMIT DROP AS SELECT {stage} FROM contacts WITH NO DATA"
    merge = (f"INSERT INTO contacts (workspace_id, {cols}) SELECT $1, {values} FROM raw_stage "
             f"ON CONFLICT (workspace_id, email) DO UPDATE SET "
             + ", ".join(f"{f} = EXCLUDED.{f}" for f in fields if f != "email"))
    return create, merge


def raw_records(contacts: list, fields, json_fields, time_fields, now) -> list[tuple]:
    """Decoded contacts as COPY records: the least typing the columns need, nothing checked."""
    encode = msgspec.json.encode
    parse_time = dt.datetime.fromisoformat
    records = []
    for c in contacts:
        rec = []
        for f in fields:
            v = c.get(f)
            if v is not None:
                if f in json_fields:
                    v = encode(v).decode()
                elif f in time_fields:
                    v = parse_time(v)
                elif isinstance(v, int) and f != "orders_count":
                    v = float(v)
            elif f in ("created_at", "updated_at"):
                v = now
            rec.append(v)
        records.append(tuple(rec))
    return records


async def raw_copy_merge(pool, workspace_id: str, payloads: list[bytes], chunk_size: int, concurrency: int) -> float:
    """The baseline: each body decoded, then written in chunks of `chunk_size` contacts, up to
    `concurrency` chunks at once on connections of `pool`, each chunk COPY + one merge statement in
    its own transaction. With chunk_size >= the batch and concurrency 1: one transaction per body."""
    from postroom.contacts import model

    fields = list(model.FIELDS)
    json_fields = set(model.JSON_FIELDS)
    time_fields = set(model.DATETIME_FIELDS) | set(model.TIMESTAMP_FIELDS)
    create, merge = raw_statements(fields, json_fields)

    async def write(conn, records):
        async with conn.transaction():
            await conn.execute(create)
            await conn.copy_records_to_table("raw_stage", records=records, columns=fields)
            await conn.execute(merge, workspace_id)

    t0 = time.perf_counter()
    for body in payloads:
        contacts = msgspec.json.decode(body)["contacts"]
        pending = iter(range(0, len(contacts), chunk_size))

        async def worker():
            async with pool.acquire() as conn:
                for start in pending:
                    records = raw_records(contacts[start:start + chunk_size], fields, json_fields, time_fields,
                                          dt.datetime.now(dt.timezone.utc))
                    await write(conn, records)

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    return time.perf_counter() - t0


# ---------------------------------------------------------------- the endpoint's work without HTTP

async def direct_import(pool, workspace_id: str, payloads: list[bytes]) -> float:
    """The endpoint's work without HTTP: each body decoded, then contacts.imports.import_rows."""
    from postroom.contacts import imports

    t0 = time.perf_counter()
    for body in payloads:
        batch = await imports.import_rows(pool, workspace_id, msgspec.json.decode(body)["contacts"], [])
        if batch.counts()["created"] != len(batch):
            raise RuntimeError(f"direct import: {batch.counts()}")
    return time.perf_counter() - t0


async def settle(conn) -> None:
    """Before a measured path: the previous one's dirty pages written, statistics fresh."""
    await conn.execute("VACUUM ANALYZE")
    await conn.execute("CHECKPOINT")


async def main(args) -> None:
    from postroom.contacts import imports
    from postroom.platform import db

    print(f"machine: {bench.machine()}")
    payloads = bodies("bench", args.rows, args.batch)
    largest = max(len(b) for b in payloads)
    print(f"{args.rows} contacts in {len(payloads)} requests of up to {args.batch};"
          f" largest body {largest / 2**20:.2f} MiB ({largest / min(args.batch, args.rows):.0f} bytes a contact);"
          f" chunks of {imports.CHUNK_SIZE}, {imports.CONCURRENCY} at once")
    figures: dict[str, tuple[float, float]] = {}  # path -> (seconds, machine cores busy)

    async with bench.fresh_database() as dsn:
        # The body limit is raised for this server only when a batch does not fit the default.
        limit = {"POSTROOM_MAX_BODY_BYTES": str(largest + 1024)} if largest > DEFAULT_BODY_LIMIT else {}
        server = bench.Server(dsn, workers=False, env=limit)
        conn = await db.connect(dsn)
        try:
            for ws in ("bench", "bench-direct", "bench-raw", "bench-serial"):
                await asyncio.to_thread(server.cli, "workspace", "create", ws, "--name", ws)
            token = await asyncio.to_thread(server.cli, "apikey", "create", "--workspace", "bench")

            # ---- HTTP
            server.start()
            await server.ready()
            await settle(conn)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            failures: list[str] = []
            created = 0
            cpu0, machine0 = server.cpu_seconds(), bench.cpu_times()
            spent = 0.0
            async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
                for body in payloads:
                    t0 = time.perf_counter()
                    r = await client.post("/api/contacts.import", content=body, headers=headers)
                    spent += time.perf_counter() - t0
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:300]}")
                        continue
                    ops = r.json()["operations"]
                    created += sum(op["action"] == "create" for op in ops)
            server_cores = (server.cpu_seconds() - cpu0) / spent
            figures["HTTP"] = (spent, bench.machine_busy(machine0, bench.cpu_times()))
            server.stop()
            if failures:
                print(f"the server answered errors: {failures[:3]}\nthe end of its log:\n{server.log_tail()}",
                      file=sys.stderr)

            pool = await db.create_pool(dsn, min_size=2, max_size=4)
            try:
                if args.direct:
                    await settle(conn)
                    machine0 = bench.cpu_times()
                    seconds = await direct_import(pool, "bench-direct", payloads)
                    figures["in-process"] = (seconds, bench.machine_busy(machine0, bench.cpu_times()))
                await settle(conn)
                machine0 = bench.cpu_times()
                seconds = await raw_copy_merge(pool, "bench-raw", payloads, imports.CHUNK_SIZE, imports.CONCURRENCY)
                figures["raw"] = (seconds, bench.machine_busy(machine0, bench.cpu_times()))
                if args.serial:
                    await settle(conn)
                    machine0 = bench.cpu_times()
                    seconds = await raw_copy_merge(pool, "bench-serial", payloads, args.batch, 1)
                    figures["raw serial"] = (seconds, bench.machine_busy(machine0, bench.cpu_times()))
            finally:
                await pool.close()
            raw_count = await conn.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = 'bench-raw'")
            same = await conn.fetchval(
                "SELECT count(*) FROM contacts h JOIN contacts r ON r.workspace_id = 'bench-raw' "
                "AND r.email = h.email AND r.custom_json_1 = h.custom_json_1 AND r.last_order_at = h.last_order_at "
                "WHERE h.workspace_id = 'bench'")
            effects = await conn.fetchval(
                "SELECT (SELECT count(*) FROM contact_timeline WHERE workspace_id = 'bench')"
                " + (SELECT count(*) FROM events WHERE workspace_id = 'bench')")
        finally:
            await conn.close()
            server.stop()

    notes = {
        "HTTP": f"POST /api/contacts.import, validation, timeline + outbox per row; server {server_cores:.2f} cores",
        "in-process": "decode + imports.import_rows: the endpoint's work without HTTP",
        "raw": f"COPY + INSERT ... ON CONFLICT only, chunks of {imports.CHUNK_SIZE}, {imports.CONCURRENCY} at once",
        "raw serial": f"COPY + INSERT ... ON CONFLICT only, one transaction per batch of {args.batch}, one connection",
    }
    rate = {path: args.rows / seconds for path, (seconds, _) in figures.items()}
    print()
    for path, (seconds, busy) in figures.items():
        print(f"{path:<11} {rate[path]:8.0f} rows/s  ({seconds:6.2f} s, machine {busy:.2f} of {os.cpu_count()} cores;"
              f" {notes[path]})")
    ratio = rate["HTTP"] / rate["raw"]
    print(f"ratio HTTP/raw {ratio:.2f}", end="")
    if "in-process" in rate:
        print(f"   in-process/raw {rate['in-process'] / rate['raw']:.2f}   HTTP/in-process"
              f" {rate['HTTP'] / rate['in-process']:.2f}", end="")
    if "raw serial" in rate:
        print(f"   HTTP/raw serial {rate['HTTP'] / rate['raw serial']:.2f}", end="")
    print()
    print(f"rows created over HTTP: {created}/{args.rows} with {effects} timeline entries + events;"
          f" raw rows {raw_count}, equal to the HTTP ones: {same}")
    print(f"machine after: {bench.machine()}")
    print()
    print(f"{bench.verdict(rate['HTTP'] >= TARGET_ROWS_PER_S)}  HTTP {rate['HTTP']:.0f} rows/s >= {TARGET_ROWS_PER_S}")
    print(f"{bench.verdict(ratio >= TARGET_RATIO)}  ratio HTTP/raw {ratio:.2f} >= {TARGET_RATIO}")
    print(f"{bench.verdict(largest <= DEFAULT_BODY_LIMIT)}  a batch of {min(args.batch, args.rows)} fits the default"
          f" body limit ({largest / 2**20:.2f} MiB <= 10 MiB)")
    print(f"{bench.verdict(created == args.rows and not failures)}  every row created over HTTP")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=200_000, help="contacts to import on each path (default 200000)")
    p.add_argument("--batch", type=int, default=10_000, help="contacts per request (default 10000)")
    p.add_argument("--no-direct", dest="direct", action="store_false",
                   help="skip the in-process run of the endpoint's work (imports.import_rows without HTTP)")
    p.add_argument("--no-serial", dest="serial", action="store_false",
                   help="skip the serial raw baseline (one transaction per batch on one connection)")
    args = p.parse_args()
    if args.rows < 1 or args.batch < 1:
        p.error("--rows and --batch must be positive")
    bench.run_main(main(args))
