"""Many concurrent clients of mixed reads and writes for a fixed time: throughput, p50/p99, errors.

    python bench/mixed.py [--seconds 60] [--clients 64] [--contacts 20000] [--warmup 5]

What it does:
1. creates a database `postroom_bench_mixed_<random>` on POSTROOM_BENCH_DATABASE_URL (default
   postgresql://postgres@127.0.0.1:5432/postgres), runs `postroom migrate`, drops it at the end;
2. creates the workspace `bench` and an API key with the CLI, starts `postroom serve --no-workers`
   on a free port, creates the list `news` and imports `--contacts` contacts through the API;
3. runs `--clients` keep-alive connections from a load generator in a process of its own (raw
   asyncio + httptools on uvloop, bench/_common.py's client), each sending one request after the
   other for `--warmup` seconds (not measured) and then `--seconds` seconds, every request drawn
   at random from this mix:

       getByEmail 25%   upsert 20%   list 15%   count 15%   lists.subscribe 15%   import 10%

   upserts and subscriptions go to an existing contact 80% of the time (else a new one), imports
   are batches of 20 contacts, half of them existing; clients share the contacts, so writes of
   one contact race each other as they would in production;
4. prints throughput and p50/p99 per operation and overall, the error count (any status other
   than 200, a connection failure, or an import row reported as `error`) with the first errors,
   the CPU the server and the machine used, and PASS/MISS for "no errors". The exit code is 0
   whether or not there were errors.

The machine is shared while helpers work: check the script briefly (e.g. --seconds 5); the full
run (60 s, 64 clients) on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import random
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

import msgspec

import _common as bench

_HERE = os.path.dirname(os.path.abspath(__file__))
WS = "bench"
LIST = "news"
MIX = (("getByEmail", 25), ("upsert", 20), ("list", 15), ("count", 15), ("subscribe", 15), ("import", 10))
IMPORT_BATCH = 20
ROW_ERROR = b'"action":"error"'

FIRST = ("John", "Maria", "Wei", "Amara", "Lars", "Sofia", "Kenji", "Olga", "Diego", "Fatima")
CITIES = ("Paris", "Lagos", "Tokyo", "Lima", "Oslo", "Austin")


def email(n: int) -> str:
    return f"user{n}@mixed.example.com"


def contact(n: int, version: int) -> dict:
    return {"email": email(n), "first_name": FIRST[(n + version) % len(FIRST)], "last_name": f"L{n % 997}",
            "city": CITIES[(n + version) % len(CITIES)], "custom_number_1": version,
            "custom_json_1": {"v": version, "tags": [f"t{n % 7}"]}}


# ---------------------------------------------------------------- the load generator (own process)

@dataclass
class Job:
    port: int
    token: str
    clients: int
    warmup: float
    seconds: float
    contacts: int
    seed: int = 1


@dataclass
class Result:
    latencies: dict[str, list[float]] = field(default_factory=dict)   # measured requests, per operation
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    client_cpu: float = 0.0
    watched_cpu: float | None = None
    machine_cores: float = 0.0


class Requests:
    """Builds one client's requests: the operation drawn from MIX, its raw HTTP/1.1 bytes."""

    def __init__(self, job: Job, rng: random.Random) -> None:
        self.job, self.rng = job, rng
        self.headers = {"Authorization": f"Bearer {job.token}", "Content-Type": "application/json"}
        self.ops = [name for name, weight in MIX for _ in range(weight)]
        self.version = 0
        self.encode = msgspec.json.encode

    def someone(self) -> int:
        """An existing contact 80% of the time, else a new one (high numbers, rarely repeated)."""
        if self.rng.random() < 0.8:
            return self.rng.randrange(self.job.contacts)
        return self.job.contacts + self.rng.randrange(10_000_000)

    def get(self, path: str, params: dict) -> bytes:
        return bench.http_request("GET", f"{path}?{urlencode(params)}", self.job.port, self.headers)

    def post(self, path: str, body: dict) -> bytes:
        return bench.http_request("POST", path, self.job.port, self.headers, self.encode(body))

    def next(self) -> tuple[str, bytes]:
        op = self.rng.choice(self.ops)
        self.version += 1
        r = self.rng
        if op == "getByEmail":
            return op, self.get("/api/contacts.getByEmail", {"workspace_id": WS, "email": email(r.randrange(self.job.contacts))})
        if op == "upsert":
            return op, self.post("/api/contacts.upsert", {"workspace_id": WS, "contact": contact(self.someone(), self.version)})
        if op == "list":
            params = {"workspace_id": WS, "limit": 20}
            if r.random() < 0.3:
                params["list_id"] = LIST
            return op, self.get("/api/contacts.list", params)
        if op == "count":
            return op, self.get("/api/contacts.count", {"workspace_id": WS})
        if op == "subscribe":
            n = self.someone()
            return op, self.post("/api/lists.subscribe", {"workspace_id": WS, "contact": {"email": email(n)}, "list_ids": [LIST]})
        batch = [contact(r.randrange(self.job.contacts) if i % 2 else self.job.contacts + r.randrange(10_000_000),
                         self.version) for i in range(IMPORT_BATCH)]
        return op, self.post("/api/contacts.import", {"workspace_id": WS, "contacts": batch})


async def _drive(job: Job, watch_pid: int | None) -> Result:
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    result = Result()
    for name, _ in MIX:
        result.latencies[name], result.statuses[name], result.errors[name] = [], {}, 0

    async def connect() -> bench._Conn:
        _, conn = await loop.create_connection(bench._Conn, "127.0.0.1", job.port)
        conn.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    conns = [await connect() for _ in range(job.clients)]
    start = clock()
    measure_from = start + job.warmup
    end = measure_from + job.seconds

    def failed(op: str, text: str) -> None:
        result.errors[op] += 1
        if len(result.first_errors) < 10:
            result.first_errors.append(f"{op}: {text}")

    async def client(n: int, conn: bench._Conn) -> None:
        requests = Requests(job, random.Random(job.seed * 1000 + n))
        while True:
            t0 = clock()
            if t0 >= end:
                break
            op, raw = requests.next()
            measured = t0 >= measure_from
            try:
                status, body = await conn.send(raw)
            except Exception as exc:  # a broken connection counts as a failed request
                if measured:
                    result.latencies[op].append(clock() - t0)
                    result.statuses[op][0] = result.statuses[op].get(0, 0) + 1
                    failed(op, f"{type(exc).__name__}: {exc}")
                conn.transport.close()
                conn = await connect()
                continue
            if not measured:
                continue
            result.latencies[op].append(clock() - t0)
            result.statuses[op][status] = result.statuses[op].get(status, 0) + 1
            if status != 200:
                failed(op, f"{status} {body[:300]!r}")
            elif op == "import" and ROW_ERROR in body:
                failed(op, f"a row was refused: {body[:300]!r}")
        conn.transport.close()

    await asyncio.sleep(max(0.0, measure_from - clock()))  # (clients start at once; the warm-up runs)
    watched0 = bench.proc_cpu_seconds(watch_pid) if watch_pid else None
    machine0, cpu0 = bench.cpu_times(), time.process_time()
    tasks = [asyncio.create_task(client(n, c)) for n, c in enumerate(conns)]
    await asyncio.gather(*tasks)
    result.seconds = job.seconds
    result.client_cpu = time.process_time() - cpu0
    result.machine_cores = bench.machine_busy(machine0, bench.cpu_times())
    if watch_pid:
        result.watched_cpu = bench.proc_cpu_seconds(watch_pid) - watched0
    return result


def _driver_main() -> None:
    """Entry point of the load generator process: pickled (Job fields, watch_pid) on stdin, pickled
    Result fields (or an error text) on stdout (plain data: this module is __main__ in the parent)."""
    fields, watch_pid = pickle.loads(sys.stdin.buffer.read())
    job = Job(**fields)
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = vars(runner.run(asyncio.wait_for(_drive(job, watch_pid), job.warmup + job.seconds + 120)))
    except BaseException as exc:  # reported to the parent as text
        result = f"{type(exc).__name__}: {exc}"
    sys.stdout.buffer.write(pickle.dumps(result))
    sys.stdout.buffer.flush()


async def run_driver(job: Job, watch_pid: int | None) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import mixed; mixed._driver_main()",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_HERE, os.environ.get("PYTHONPATH")]))})
    try:
        out, _ = await asyncio.wait_for(proc.communicate(pickle.dumps((vars(job), watch_pid))),
                                        job.warmup + job.seconds + 180)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    result = pickle.loads(out) if out else f"exit code {proc.returncode}"
    if isinstance(result, str):
        raise RuntimeError(f"the load generator failed: {result}")
    return Result(**result)


# ---------------------------------------------------------------- the run

async def seed(server: bench.Server, token: str, contacts: int) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=300) as http:
        r = await http.post("/api/lists.create", json={"workspace_id": WS, "id": LIST, "name": "News"})
        r.raise_for_status()
        for first in range(0, contacts, 2000):
            rows = [contact(n, 0) for n in range(first, min(contacts, first + 2000))]
            r = await http.post("/api/contacts.import", json={"workspace_id": WS, "contacts": rows,
                                                               "subscribe_to_lists": [LIST] if first % 4000 == 0 else []})
            r.raise_for_status()
            if ROW_ERROR in r.content:
                raise RuntimeError(f"seeding refused rows: {r.text[:300]}")


def report(result: Result, args, server: bench.Server) -> None:
    all_latencies = sorted(x for values in result.latencies.values() for x in values)
    total = len(all_latencies)
    errors = sum(result.errors.values())
    print()
    print(f"{'operation':<12} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, _ in MIX:
        values = sorted(result.latencies[name])
        print(f"{name:<12} {len(values):9d} {len(values) / result.seconds:8.0f} "
              f"{bench.percentile(values, 50) * 1000:8.2f} {bench.percentile(values, 99) * 1000:8.2f} "
              f"{result.errors[name]:7d}")
    print(f"{'overall':<12} {total:9d} {total / result.seconds:8.0f} {bench.percentile(all_latencies, 50) * 1000:8.2f} "
          f"{bench.percentile(all_latencies, 99) * 1000:8.2f} {errors:7d}")
    statuses: dict[int, int] = {}
    for per_op in result.statuses.values():
        for status, n in per_op.items():
            statuses[status] = statuses.get(status, 0) + n
    print(f"HTTP statuses: {dict(sorted(statuses.items()))} (0: connection failure)")
    for line in result.first_errors:
        print(f"  error: {line}")
    if result.watched_cpu is not None:
        print(f"CPU while measuring: server {result.watched_cpu / result.seconds:.2f} cores, load generator "
              f"{result.client_cpu / result.seconds:.2f} cores, machine {result.machine_cores:.2f} of {os.cpu_count()}"
              " (the rest: PostgreSQL and other work)")
    print(f"machine after: {bench.machine()}")
    print()
    print(f"{bench.verdict(errors == 0)}  no errors under {args.clients} concurrent clients for {args.seconds:g} s"
          f" ({errors} of {total})")
    print(f"throughput {total / result.seconds:.0f} req/s, p99 {bench.percentile(all_latencies, 99) * 1000:.2f} ms"
          " (reported; no target)")
    if errors:
        print(f"the end of the server's log:\n{server.log_tail()}", file=sys.stderr)


async def main(args) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    print(f"machine: {bench.machine()}")
    async with bench.fresh_database("postroom_bench_mixed") as dsn:
        server = bench.Server(dsn, workers=False)
        try:
            await asyncio.to_thread(server.cli, "workspace", "create", WS, "--name", "Bench")
            token = await asyncio.to_thread(server.cli, "apikey", "create", "--workspace", WS)
            server.start()
            await server.ready()
            t0 = time.perf_counter()
            await seed(server, token, args.contacts)
            print(f"seeded {args.contacts} contacts in {time.perf_counter() - t0:.1f} s; {args.clients} clients,"
                  f" {args.warmup:g} s warm-up, {args.seconds:g} s measured; mix: "
                  + ", ".join(f"{name} {weight}%" for name, weight in MIX))
            job = Job(server.port, token, args.clients, args.warmup, args.seconds, args.contacts)
            result = await run_driver(job, server.pid)
            report(result, args, server)
        finally:
            server.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="measured seconds (default 60)")
    p.add_argument("--clients", type=int, default=64, help="concurrent keep-alive connections (default 64)")
    p.add_argument("--contacts", type=int, default=20_000, help="contacts imported before the run (default 20000)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring (default 5)")
    args = p.parse_args()
    if args.seconds <= 0 or args.clients < 1 or args.contacts < 1 or args.warmup < 0:
        p.error("--seconds, --clients and --contacts must be positive, --warmup not negative")
    bench.run_main(main(args))
