"""contacts.upsert over HTTP against the same upserts done directly with asyncpg, in one run.

    python bench/upsert.py [--count 20000] [--concurrency 32] [--warmup N] [--profile FILE]

What it does:
1. creates a database `postroom_bench_<random>` on POSTROOM_BENCH_DATABASE_URL (default
   postgresql://postgres@127.0.0.1:5432/postgres), runs `postroom migrate`, and drops it at the end;
2. creates two workspaces (`bench` for HTTP, `bench-direct` for the baseline) and an API key with the
   CLI, and seeds each with the same existing contacts (so that half of the measured upserts update);
3. starts `postroom serve --no-workers` on a free port and sends `--count` contacts.upsert requests
   (after a warm-up) over `--concurrency` keep-alive connections from a load generator running in a
   process of its own (raw asyncio + httptools on uvloop; see bench/_common.py);
4. stops the server and performs the same upserts directly: `postroom.contacts.store.upsert` on the
   same parsed contacts, from `--concurrency` tasks sharing an asyncpg pool of the server's size;
5. prints requests/s, p50 and p99 of both, the ratio HTTP/direct, the server's peak RSS, and
   PASS/MISS against the targets. The exit code is 0 whether targets are met or not.

Workload: the 38 fields of the seed's contact with values varied per contact; request i creates a
new contact when i is even and updates a seeded one (changing most fields) when i is odd.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time

import msgspec

import _common as bench

TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0
TARGET_RSS_MB = 150.0

FIRST = ("John", "Maria", "Wei", "Amara", "Lars", "Sofia", "Kenji", "Olga", "Diego", "Fatima")
LAST = ("Doe", "Garcia", "Chen", "Okafor", "Nilsson", "Rossi", "Sato", "Ivanova", "Lopez", "Haddad")
ZONES = ("America/New_York", "Europe/Paris", "Asia/Tokyo", "UTC", "Australia/Sydney", "Africa/Lagos")
LANGS = ("en-US", "fr-FR", "ja-JP", "de-DE", "pt-BR", "es-ES")
JOBS = ("Software Engineer", "Product Manager", "Designer", "Founder", "Sales Lead", "Support")
TIERS = ("Premium tier", "Basic tier", "Trial", "Enterprise")
CREATED, UPDATED = b'"action":"created"', b'"action":"updated"'


def _time(n: int, month_shift: int = 0) -> str:
    return f"2023-{1 + (n + month_shift) % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:{(n * 7) % 60:02d}Z"


def contact(email: str, n: int, version: int) -> dict:
    """The seed's contact shape (every field it shows) with values that depend on n and version."""
    m = n + version * 7  # an update changes almost every field
    return {
        "email": email,
        "external_id": f"user_{n}",
        "timezone": ZONES[m % len(ZONES)],
        "language": LANGS[m % len(LANGS)],
        "first_name": FIRST[m % len(FIRST)],
        "last_name": LAST[(m // 10) % len(LAST)],
        "phone": f"+1555{n % 10_000_000:07d}",
        "address_line_1": f"{1 + m % 999} Main St",
        "address_line_2": f"Apt {1 + m % 20}{'ABCD'[m % 4]}",
        "country": "US",
        "postcode": f"{10001 + m % 89000:05d}",
        "state": "NY",
        "job_title": JOBS[m % len(JOBS)],
        "lifetime_value": round((m * 37.5) % 5000 + 0.5, 2),
        "orders_count": m % 50,
        "last_order_at": _time(m),
        "custom_string_1": TIERS[m % len(TIERS)],
        "custom_string_2": f"segment-{m % 13}",
        "custom_string_3": f"source-{m % 5}",
        "custom_string_4": f"campaign-{m % 17}",
        "custom_string_5": f"ref-{n}",
        "custom_number_1": m % 100,
        "custom_number_2": m % 1000 + 0.25,
        "custom_number_3": 123,
        "custom_number_4": m % 7,
        "custom_number_5": version,
        "custom_datetime_1": _time(m, 1),
        "custom_datetime_2": _time(m, 2),
        "custom_datetime_3": "2023-11-07T05:31:56Z",
        "custom_datetime_4": _time(n, 4),
        "custom_datetime_5": "2023-11-07T05:31:56Z",
        "custom_json_1": {"preferences": {"theme": "dark" if m % 2 else "light", "notifications": version % 2 == 0}},
        "custom_json_2": {"tags": [f"t{m % 9}", f"t{m % 4}"]},
        "custom_json_3": {},
        "custom_json_4": {},
        "custom_json_5": {},
        "created_at": "2023-01-15T10:30:00Z",
        "updated_at": _time(m, 3),
    }


def workload(total: int) -> tuple[list[dict], list[dict]]:
    """(contacts to seed, contacts to upsert in order): even positions new, odd ones updates."""
    existing = [contact(f"old-{k}@bench.example.com", k, 0) for k in range((total + 1) // 2)]
    upserts = [contact(f"new-{i}@bench.example.com", 1_000_000 + i, 0) if i % 2 == 0
               else contact(f"old-{i // 2}@bench.example.com", i // 2, 1) for i in range(total)]
    return existing, upserts


def mb(kb: int | None) -> float:
    return float("nan") if kb is None else kb * 1024 / 1e6


async def main(args) -> None:
    from postroom.contacts import model, store
    from postroom.lists import store as lists_store
    from postroom.platform import db
    from postroom.platform.config import Settings

    # SIGTERM ends the run like Ctrl-C: the finally blocks stop the server and drop the database.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    print(f"machine: {bench.machine()}")
    settings = Settings.from_env()
    warmup = args.warmup if args.warmup is not None else min(1000, max(100, args.count // 10))
    existing, upserts = workload(warmup + args.count)
    encode = msgspec.json.encode

    async with bench.fresh_database() as dsn:
        server = bench.Server(dsn, workers=False)
        profiler = None
        try:
            await asyncio.to_thread(server.cli, "workspace", "create", "bench", "--name", "Bench")
            await asyncio.to_thread(server.cli, "workspace", "create", "bench-direct", "--name", "Bench direct")
            token = await asyncio.to_thread(server.cli, "apikey", "create", "--workspace", "bench")
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            bodies = [encode({"workspace_id": "bench", "contact": c}) for c in upserts]
            requests = [bench.http_request("POST", "/api/contacts.upsert", server.port, headers, b) for b in bodies]
            # The baseline upserts exactly what the server will have parsed from those bodies.
            parsed = [model.parse_contact(msgspec.json.decode(b)["contact"]) for b in bodies]
            seed = [model.parse_contact(c) for c in existing]

            pool = await db.create_pool(dsn, min_size=settings.pool_min, max_size=settings.pool_max,
                                        timeout=settings.db_timeout)
            try:
                t0 = time.perf_counter()
                for ws in ("bench", "bench-direct"):
                    await bench.run_tasks(
                        lambda c, ws=ws: store.upsert(pool, ws, c, after_write=lists_store.sync_contact_created_at),
                        seed, args.concurrency)
                print(f"seeded {len(seed)} existing contacts in each workspace in {time.perf_counter() - t0:.1f} s;"
                      f" measuring {args.count} upserts after {warmup} warm-up, concurrency {args.concurrency},"
                      f" pool {settings.pool_min}..{settings.pool_max}")
                # Each phase starts from vacuumed tables (GIN pending lists flushed, dead rows gone).
                await pool.execute("VACUUM ANALYZE")
            finally:
                await pool.close()

            # ---- HTTP
            server.start()
            await server.ready()
            rss_idle = server.rss_kb()
            if args.profile:
                profiler = start_profiler(server.pid, args.profile)
            http = await bench.run_load(
                server.port, requests[warmup:], warmup=requests[:warmup], concurrency=args.concurrency,
                markers=(CREATED, UPDATED), watch_pid=server.pid)
            if profiler:
                stop_profiler(profiler, args.profile)
                profiler = None
            peak_kb, rss_kb = server.peak_rss_kb(), server.rss_kb()
            server.stop()
            if http.statuses.get(200, 0) != len(requests) - warmup:
                print(f"the server answered errors; the end of its log:\n{server.log_tail()}\n", file=sys.stderr)

            # ---- direct
            pool = await db.create_pool(dsn, min_size=settings.pool_min, max_size=settings.pool_max,
                                        timeout=settings.db_timeout)
            actions: dict[str, int] = {}

            async def upsert(c):
                action, _ = await store.upsert(pool, "bench-direct", c, after_write=lists_store.sync_contact_created_at)
                actions[action] = actions.get(action, 0) + 1

            try:
                await pool.execute("VACUUM ANALYZE")
                await bench.run_tasks(upsert, parsed[:warmup], args.concurrency)
                actions.clear()
                m0, c0 = bench.cpu_times(), time.process_time()
                direct = await bench.run_tasks(upsert, parsed[warmup:], args.concurrency)
                direct_cpu, direct_cores = time.process_time() - c0, bench.machine_busy(m0, bench.cpu_times())
            finally:
                await pool.close()
        finally:
            if profiler:
                stop_profiler(profiler, args.profile)
            server.stop()

    # ---- report
    h = http.figures
    ratio = h.rate / direct.rate
    ok_responses = http.statuses.get(200, 0)
    print()
    print("client: raw asyncio + httptools load generator on uvloop in its own process (bench/_common.py);"
          " direct: contacts.store.upsert from tasks in this process")
    print(h.line("HTTP"))
    print(direct.line("direct"))
    print(f"ratio HTTP/direct (req/s): {ratio:.2f}")
    print(f"server RSS: peak {mb(peak_kb):.1f} MB (VmHWM), idle before the run {mb(rss_idle):.1f} MB,"
          f" after the run {mb(rss_kb):.1f} MB")
    print(f"HTTP responses: {dict(sorted(http.statuses.items()))};"
          f" created {http.markers[CREATED]}, updated {http.markers[UPDATED]}")
    print(f"direct results: {actions}")
    for line in http.errors:
        print(f"  error: {line}")
    print(f"CPU while measuring HTTP: server {http.watched_cpu / h.seconds:.2f} cores,"
          f" load generator {http.client_cpu / h.seconds:.2f} cores, machine {http.machine_cores:.2f} of {os.cpu_count()}"
          f" (the rest: PostgreSQL and other work)")
    print(f"CPU while measuring direct: bench process {direct_cpu / direct.seconds:.2f} cores,"
          f" machine {direct_cores:.2f} of {os.cpu_count()}")
    print(f"machine after: {bench.machine()}")
    print()
    all_ok = ok_responses == h.count
    print(f"{bench.verdict(ratio >= TARGET_RATIO)}  ratio HTTP/direct {ratio:.2f} >= {TARGET_RATIO}")
    print(f"{bench.verdict(h.ms(99) <= TARGET_P99_MS)}  HTTP p99 {h.ms(99):.2f} ms <= {TARGET_P99_MS:g} ms")
    print(f"{bench.verdict(mb(peak_kb) <= TARGET_RSS_MB)}  server peak RSS {mb(peak_kb):.1f} MB <= {TARGET_RSS_MB:g} MB")
    print(f"{bench.verdict(all_ok)}  every HTTP response was 200 ({ok_responses}/{h.count})")
    print(f"(with {args.concurrency} connections always busy, mean latency = {args.concurrency} / rate:"
          f" p99 <= {TARGET_P99_MS:g} ms needs well over {args.concurrency / TARGET_P99_MS * 1000:.0f} req/s)")


def start_profiler(pid: int, path: str) -> subprocess.Popen:
    """py-spy sampling the server during the measured HTTP phase: a flame graph (.svg), speedscope
    (.json) or collapsed stacks (any other name; one `frame;frame;... count` line per stack)."""
    exe = shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    fmt = "speedscope" if path.endswith(".json") else "flamegraph" if path.endswith(".svg") else "raw"
    proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--output", path, "--format", fmt,
                             "--rate", "200", "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(1)  # let it attach before the load starts
    return proc


def stop_profiler(proc: subprocess.Popen, path: str) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"profile of the server during the HTTP phase: {path}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=20_000, help="measured upserts per path (default 20000)")
    p.add_argument("--concurrency", type=int, default=32, help="connections / tasks (default 32)")
    p.add_argument("--warmup", type=int, help="upserts before measuring (default count/10, 100..1000)")
    p.add_argument("--profile", metavar="FILE", help="record the server with py-spy (.svg flame graph, .json speedscope, else collapsed stacks)")
    args = p.parse_args()
    if args.count < 1 or args.concurrency < 1:
        p.error("--count and --concurrency must be positive")
    bench.run_main(main(args))
