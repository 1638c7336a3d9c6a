"""Segment builds and previews at scale, against the same predicate run as hand-written SQL.

    python bench/segments.py [--contacts 1000000] [--reps 20]

What it does:
1. creates a database `postroom_bench_segments_<random>` on POSTROOM_BENCH_DATABASE_URL (default
   postgresql://postgres@127.0.0.1:5432/postgres), runs `postroom migrate`, drops it at the end;
2. loads `--contacts` contacts into one workspace with one INSERT ... SELECT FROM generate_series
   (six countries, custom_number_1 in 0..99, custom_datetime_1 spread over a year), a list `news`
   holding ~30% of them, and two opens in the timeline for ~10%;
3. builds a field-only segment (`country equals FR`, a sixth of the contacts) through the build
   loop's own function (segments.worker.scan_once: chunks of 5,000 in email order, each evaluated
   and written in one statement) and reports contacts scanned per second; the baseline is one
   INSERT ... SELECT of the same members into a scratch table, run directly;
4. times segments.store.preview (count + first 10 emails) `--reps` times for a field-only tree, a
   list leaf and a timeline leaf, p50/p95, against the count of the same predicate written by hand;
5. prints PASS/MISS against the targets: a field-only build >= 200,000 contacts/s, preview p95
   <= 500 ms. The exit code is 0 whether targets are met or not.

The machine is shared while helpers work: check the script at a small --contacts (e.g. 50000);
the full figures (1,000,000) on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time

import _common as bench
from postroom.platform import db
from postroom.segments import model, store, worker

WS = "bench-seg"
BUILD_TARGET = 200_000
PREVIEW_TARGET_MS = 500

LOAD_CONTACTS = """
INSERT INTO contacts (workspace_id, email, country, custom_number_1, custom_datetime_1, created_at, updated_at)
SELECT $1, 'user' || g || '@example.org', (ARRAY['US', 'FR', 'DE', 'GB', 'ES', 'IT'])[1 + g % 6], g % 100,
       now() - (g % 365) * interval '1 day', now(), now()
  FROM generate_series(1, $2::int) g
"""
LOAD_LIST = """
INSERT INTO lists (workspace_id, id, name) VALUES ($1, 'news', 'News');
INSERT INTO contact_lists (workspace_id, list_id, email, status, contact_created_at)
SELECT workspace_id, 'news', email, 'active', created_at FROM contacts WHERE workspace_id = $1 AND random() < 0.3;
INSERT INTO contact_timeline (workspace_id, email, kind, entity_type, entity_id)
SELECT workspace_id, email, 'open_email', 'message_history', 'm' || k FROM contacts, generate_series(1, 2) k
 WHERE workspace_id = $1 AND random() < 0.1;
ANALYZE contacts; ANALYZE contact_lists; ANALYZE contact_timeline;
"""


def leaf(source, key, cond):
    return {"kind": "leaf", "leaf": {"source": source, key: cond}}


TREES = {
    "field": (leaf("contacts", "contact", {"filters": [
        {"field_name": "country", "field_type": "string", "operator": "equals", "string_values": ["FR"]},
        {"field_name": "custom_number_1", "field_type": "number", "operator": "gte", "number_values": [50]}]}),
        "SELECT count(*) FROM contacts WHERE workspace_id = $1 AND country = 'FR' AND custom_number_1 >= 50"),
    "list": (leaf("contact_lists", "contact_list", {"operator": "in", "list_id": "news", "status": "active"}),
             "SELECT count(*) FROM contact_lists WHERE workspace_id = $1 AND list_id = 'news' AND status = 'active'"
             " AND deleted_at IS NULL"),
    "timeline": (leaf("contact_timeline", "contact_timeline", {
        "kind": "open_email", "count_operator": "at_least", "count_value": 2}),
        "SELECT count(*) FROM (SELECT email FROM contact_timeline WHERE workspace_id = $1 AND kind = 'open_email'"
        " GROUP BY email HAVING count(*) >= 2) x"),
}
BUILD_TREE = leaf("contacts", "contact", {"filters": [
    {"field_name": "country", "field_type": "string", "operator": "equals", "string_values": ["FR"]}]})
BASELINE_BUILD = """
CREATE TEMP TABLE scratch AS
SELECT workspace_id, email, now() AS matched_at FROM contacts WHERE workspace_id = $1 AND country = 'FR'
"""


async def timed(fn, reps: int) -> list[float]:
    await fn()  # warm-up
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return sorted(out)


async def run(contacts: int, reps: int) -> None:
    print(bench.machine())
    async with bench.fresh_database("postroom_bench_segments") as dsn:
        pool = await db.create_pool(dsn, min_size=1, max_size=4)
        try:
            await pool.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'Bench')", WS)
            t = time.perf_counter()
            async with pool.acquire() as conn:  # loads take longer than the pool's statement timeout
                await conn.execute(LOAD_CONTACTS, WS, contacts, timeout=3600)
                await conn.execute(LOAD_LIST.replace("$1", f"'{WS}'"), timeout=3600)
            print(f"loaded {contacts} contacts in {time.perf_counter() - t:.1f} s")

            # ---- the build
            async with pool.acquire() as conn:
                t = time.perf_counter()
                await conn.execute(BASELINE_BUILD, WS, timeout=3600)
                base = time.perf_counter() - t
            seg = model.parse_segment({"workspace_id": WS, "id": "fr", "name": "FR", "color": "blue",
                                       "tree": BUILD_TREE, "timezone": "UTC"}, "create")
            async with pool.acquire() as conn:
                await store.create(conn, WS, seg, dt.datetime.now(dt.timezone.utc))
            t = time.perf_counter()
            while await worker.scan_once(pool):
                pass
            took = time.perf_counter() - t
            members = await pool.fetchval("SELECT count(*) FROM contact_segments WHERE workspace_id = $1", WS)
            rate = contacts / took
            print(f"build    {rate:10.0f} contacts/s  ({contacts} contacts, {members} members, {took:.2f} s;"
                  f" baseline INSERT ... SELECT {contacts / base:10.0f}/s, ratio {took / base:.1f}x)"
                  f"  {bench.verdict(rate >= BUILD_TARGET)} (>= {BUILD_TARGET})")

            # ---- previews
            for name, (tree, sql) in TREES.items():
                parsed = model.parse_tree(tree)
                async with pool.acquire() as conn:
                    lat = await timed(lambda: store.preview(conn, WS, parsed, 10), reps)
                    floor = await timed(lambda: conn.fetchval(sql, WS), reps)
                p95 = bench.percentile(lat, 95) * 1000
                print(f"preview {name:<9} p50 {bench.percentile(lat, 50) * 1000:8.1f} ms  p95 {p95:8.1f} ms"
                      f"   hand-written count p95 {bench.percentile(floor, 95) * 1000:8.1f} ms"
                      f"  {bench.verdict(p95 <= PREVIEW_TARGET_MS)} (<= {PREVIEW_TARGET_MS} ms)")
        finally:
            await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.contacts, args.reps))


if __name__ == "__main__":
    main()
