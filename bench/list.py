"""contacts.list and contacts.count at scale, over HTTP, against the same SQL run directly, in one run.

    python bench/list.py [--contacts 1000000] [--reps 50]

What it does:
1. creates a database `postroom_bench_list_<random>` on POSTROOM_BENCH_DATABASE_URL (default
   postgresql://postgres@127.0.0.1:5432/postgres), runs `postroom migrate`, drops it at the end;
2. creates the workspaces `bench-a` and `bench-b` with the CLI and loads `--contacts` contacts
   into each with one INSERT ... SELECT FROM generate_series per workspace (secondary indexes
   of contacts dropped during the load and rebuilt from their own definitions afterwards):
   five mail domains, names from small lists, two contacts per minute of created_at (ties on
   created_at are part of the test), and list memberships: `news` holds ~30% of each workspace
   (random, 90% active), `vip` ~1%, `old` the oldest 30% (members clustered far down the list:
   the hard case for a walk of the contacts, reported as such). Each membership carries its
   contact's created_at (contact_created_at), as lists.store writes it; secondary indexes of
   contact_lists are rebuilt after the load too. The count rows are rebuilt with contacts.store.recount;
3. starts `postroom serve --no-workers` and times each request below `--reps` times with httpx,
   one at a time, after a warm-up: p50/p95 per request;
4. runs the same SQL directly with asyncpg (the statements contacts.store.list_contacts would run,
   the count query): the floor the HTTP figure is compared with;
5. prints the figures, the ratio HTTP/SQL, and PASS/MISS against the targets: p95 <= 30 ms for
   unfiltered and list pages at any depth, <= 500 ms for substring filters, <= 100 ms for count.
   The exit code is 0 whether targets are met or not.

The machine is shared while helpers work: check the script at a small --contacts (e.g. 50000);
the full figures (1,000,000) on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time

import httpx

import _common as bench
from postroom.contacts import query, store
from postroom.platform import db

WS_A, WS_B = "bench-a", "bench-b"
START = dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc)
PAGE_TARGET_MS = 30
SUBSTRING_TARGET_MS = 500
COUNT_TARGET_MS = 100

FIRST_NAMES = ["Ann", "Bob", "Carla", "Dmitri", "Eve", "Farid", "Grace", "Hiro", "Ines", "Jon",
               "Karin", "Luis", "Mei", "Nadia", "Omar", "Paula", "Quinn", "Rosa", "Sven", "Tara"]
LAST_NAMES = ["Smith", "Martin", "Garcia", "Muller", "Rossi", "Kim", "Nguyen", "Silva", "Dubois", "Novak",
              "Khan", "Lopez", "Brown", "Weber", "Ivanov", "Sato", "Costa", "Olsen", "Moreau", "Ali"]

LOAD_CONTACTS = """
INSERT INTO contacts (workspace_id, email, external_id, first_name, last_name, full_name, phone, country,
                      language, created_at, updated_at)
SELECT $1, 'user' || g || '@' || (ARRAY['gmail.com', 'yahoo.com', 'outlook.com', 'example.org', 'company.io'])[1 + g % 5],
       'crm-' || g, fn, ln, fn || ' ' || ln, '+1 555 ' || lpad((g % 10000000)::text, 7, '0'),
       (ARRAY['US', 'FR', 'DE', 'GB', 'ES', 'IT'])[1 + g % 6], (ARRAY['en', 'fr', 'de', 'es'])[1 + g % 4],
       $2::timestamptz + (g / 2) * interval '1 minute', $2::timestamptz + (g / 2) * interval '1 minute'
  FROM generate_series(1, $3::int) g,
       LATERAL (SELECT ($4::text[])[1 + (g::bigint * 7919) % cardinality($4::text[])] AS fn,
                       ($5::text[])[1 + (g::bigint * 104729 / 7) % cardinality($5::text[])] AS ln) names
"""

LOAD_LISTS = """
INSERT INTO lists (workspace_id, id, name) VALUES ($1, 'news', 'Newsletter'), ($1, 'vip', 'VIP'), ($1, 'old', 'Old')
"""

# `old`: the oldest 30% of the workspace, i.e. members that all sit far down the list.
LOAD_OLD_MEMBERS = """
INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at)
SELECT $1, 'old', email, 'active', created_at FROM contacts
 WHERE workspace_id = $1 AND created_at < $2::timestamptz + ($3::int * 3 / 10 / 2) * interval '1 minute'
"""

LOAD_MEMBERS = """
INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at)
SELECT $1, $2, email, CASE WHEN random() < 0.9 THEN 'active' ELSE 'unsubscribed' END, created_at
  FROM contacts WHERE workspace_id = $1 AND random() < $3
"""

SECONDARY_INDEXES = """
SELECT indexname, indexdef FROM pg_indexes
 WHERE schemaname = current_schema() AND tablename IN ('contacts', 'contact_lists')
   AND indexname NOT IN ('contacts_pkey', 'contact_lists_pkey')
"""

# The (created_at, email) of the row `depth` rows down the list, optionally of one list's members:
# where a client that paged that far would hold its cursor.
ROW_AT = """
SELECT c.created_at, c.email FROM contacts c
 WHERE c.workspace_id = $1
   AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM contact_lists cl WHERE cl.workspace_id = c.workspace_id
                                    AND cl.list_id = $3 AND cl.email = c.email AND cl.deleted_at IS NULL))
 ORDER BY c.created_at DESC, c.email OFFSET $2 LIMIT 1
"""


async def load(conn, n: int) -> None:
    indexes = await conn.fetch(SECONDARY_INDEXES)
    for row in indexes:
        await conn.execute(f'DROP INDEX "{row["indexname"]}"')
    await conn.execute("SELECT setseed(0.42)")
    for ws in (WS_A, WS_B):
        t0 = time.perf_counter()
        await conn.execute(LOAD_CONTACTS, ws, START, n, FIRST_NAMES, LAST_NAMES)
        await conn.execute(LOAD_LISTS, ws)
        await conn.execute(LOAD_MEMBERS, ws, "news", 0.3)
        await conn.execute(LOAD_MEMBERS, ws, "vip", 0.01)
        await conn.execute(LOAD_OLD_MEMBERS, ws, START, n)
        await store.recount(conn, ws)
        print(f"  loaded {n:,} contacts and their memberships into {ws} in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    await conn.execute("SET maintenance_work_mem = '512MB'")
    for row in indexes:
        await conn.execute(row["indexdef"])
    print(f"  rebuilt {len(indexes)} secondary indexes of contacts and contact_lists"
          f" in {time.perf_counter() - t0:.1f} s")
    for table in ("contacts", "contact_lists", "lists", "contact_counts"):
        await conn.execute(f"VACUUM ANALYZE {table}")


async def cursor_at(conn, depth: int, list_id: str | None = None) -> str | None:
    if depth <= 0:
        return None
    row = await conn.fetchrow(ROW_AT, WS_A, depth - 1, list_id)
    return query.encode_cursor(row["created_at"], row["email"]) if row else None


def stats(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return bench.percentile(ordered, 50) * 1000, bench.percentile(ordered, 95) * 1000


async def time_http(client, path: str, params: dict, reps: int, warmup: int = 3) -> tuple[list[float], dict]:
    body = None
    latencies = []
    for i in range(warmup + reps):
        t0 = time.perf_counter()
        r = await client.get(path, params=params)
        elapsed = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"{path} {params}: {r.status_code} {r.text[:300]}")
        body = r.json()
        if i >= warmup:
            latencies.append(elapsed)
    return latencies, body


async def time_sql(conn, case, params: dict, reps: int, warmup: int = 3) -> tuple[list[float], str]:
    """The statements the store runs for this request, in its order, timed directly."""
    latencies, strategy = [], ""
    if case["kind"] == "count":
        for i in range(warmup + reps):
            t0 = time.perf_counter()
            await conn.fetchval(store.COUNT, WS_A)
            if i >= warmup:
                latencies.append(time.perf_counter() - t0)
        return latencies, "counter rows"
    q = query.parse_list_query(list(params.items()))
    statements = store.list_statements(WS_A, q)
    for i in range(warmup + reps):
        t0 = time.perf_counter()
        for step, (sql, args) in enumerate(statements):
            rows = await conn.fetch(sql, *args)
            if len(rows) > q.limit:
                break
        if i >= warmup:
            latencies.append(time.perf_counter() - t0)
        strategy = ("list members walk" if len(statements) == 1 and q.list_id else
                    "index walk" if len(statements) == 1 else
                    "window" if step == 0 else "window, then by matches")
    return latencies, strategy


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000, help="contacts in each of the two workspaces")
    parser.add_argument("--reps", type=int, default=50, help="timed requests per case")
    args = parser.parse_args()
    n = args.contacts
    if n < 1000:
        parser.error("--contacts must be at least 1000")
    print(f"machine: {bench.machine()}")
    print(f"contacts.list / contacts.count with {n:,} contacts in {WS_A} and {n:,} in {WS_B}, {args.reps} requests a case")
    async with bench.fresh_database("postroom_bench_list") as dsn:
        server = bench.Server(dsn, workers=False)
        conn = await db.connect(dsn)
        try:
            for ws in (WS_A, WS_B):
                await asyncio.to_thread(server.cli, "workspace", "create", ws, "--name", ws)
            token = await asyncio.to_thread(server.cli, "apikey", "create", "--workspace", WS_A)
            await load(conn, n)
            deep = min(10_000, n // 2)
            cases = [
                {"name": "first page", "kind": "page", "params": {}},
                {"name": f"{deep:,} rows deep (cursor)", "kind": "page", "params": {"cursor": await cursor_at(conn, deep)}},
                {"name": f"{n // 2:,} rows deep (cursor)", "kind": "page", "params": {"cursor": await cursor_at(conn, n // 2)}},
                {"name": "last page (cursor)", "kind": "page", "params": {"cursor": await cursor_at(conn, n - 5)}},
                {"name": "first page, limit 100", "kind": "page", "params": {"limit": "100"}},
                {"name": "list_id (30% list)", "kind": "page", "params": {"list_id": "news"}},
                {"name": f"list_id, {deep:,} members deep", "kind": "page",
                 "params": {"list_id": "news", "cursor": await cursor_at(conn, deep, "news")}},
                {"name": "list_id + status active", "kind": "page",
                 "params": {"list_id": "news", "contact_list_status": "active"}},
                {"name": "list_id (1% list)", "kind": "page", "params": {"list_id": "vip"}},
                {"name": "list_id (oldest 30%: clustered)", "kind": "page", "params": {"list_id": "old"}},
                {"name": f"list_id (oldest 30%), {deep:,} deep", "kind": "page",
                 "params": {"list_id": "old", "cursor": await cursor_at(conn, deep, "old")}},
                {"name": "list_id (oldest 30%) + active", "kind": "page",
                 "params": {"list_id": "old", "contact_list_status": "active", "limit": "100"}},
                {"name": "list_id + status unsubscribed (3%)", "kind": "page",
                 "params": {"list_id": "news", "contact_list_status": "unsubscribed"}},
                {"name": "list_id + status with no members", "kind": "page",
                 "params": {"list_id": "old", "contact_list_status": "bounced"}},
                {"name": "list_id (oldest 30%) + email, 11%", "kind": "substring",
                 "params": {"list_id": "old", "email": "user1"}},
                {"name": "list_id (30% list) + email, 20%", "kind": "substring",
                 "params": {"list_id": "news", "email": "yahoo"}},
                {"name": "with_contact_lists", "kind": "page", "params": {"with_contact_lists": "true"}},
                {"name": "email substring, rare", "kind": "substring", "params": {"email": "user4242"}},
                {"name": "email substring, 20%", "kind": "substring", "params": {"email": "yahoo"}},
                {"name": "email substring, none", "kind": "substring", "params": {"email": "nobody-here"}},
                {"name": "email substring, old matches", "kind": "substring", "params": {"email": "user1"}},
                {"name": "first_name substring, 5%", "kind": "substring", "params": {"first_name": "omar"}},
                {"name": "first_name substring, none", "kind": "substring", "params": {"first_name": "zzz"}},
                {"name": "country substring, 2 chars", "kind": "substring", "params": {"country": "z"}},
                {"name": "contacts.count", "kind": "count", "params": {}},
            ]
            server.start()
            await server.ready()
            headers = {"Authorization": f"Bearer {token}"}
            rows = []
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
                for case in cases:
                    params = {"workspace_id": WS_A, **{k: v for k, v in case["params"].items() if v is not None}}
                    path = "/api/contacts.count" if case["kind"] == "count" else "/api/contacts.list"
                    http, body = await time_http(client, path, params, args.reps)
                    sql, strategy = await time_sql(conn, case, params, args.reps)
                    size = body["total_contacts"] if case["kind"] == "count" else len(body["contacts"])
                    if case["kind"] == "count" and size != n:
                        raise RuntimeError(f"contacts.count said {size}, expected {n}")
                    rows.append((case, stats(http), stats(sql), size, strategy))
        finally:
            server.stop()
            await conn.close()
    print()
    print(f"{'request':<34} {'HTTP p50':>9} {'p95':>8} {'SQL p50':>9} {'p95':>8} {'ratio':>6} {'rows':>6}  "
          f"{'target':>7}  plan")
    for case, (hp50, hp95), (sp50, sp95), size, strategy in rows:
        target = {"page": PAGE_TARGET_MS, "substring": SUBSTRING_TARGET_MS, "count": COUNT_TARGET_MS}[case["kind"]]
        ratio = hp50 / sp50 if sp50 else float("nan")
        print(f"{case['name']:<34} {hp50:7.2f}ms {hp95:6.2f}ms {sp50:7.2f}ms {sp95:6.2f}ms {ratio:6.2f} {size:>6}  "
              f"{bench.verdict(hp95 <= target)} {target:>3}ms  {strategy}")
    print("\nratio = HTTP p50 / SQL p50 (the SQL is what the store runs for that request, from this process).")


if __name__ == "__main__":
    asyncio.run(main())
