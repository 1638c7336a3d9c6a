"""What the bench scripts share: a throw-away database, the real server as a subprocess, a lean
HTTP load generator in a process of its own, and the figures (percentiles, machine, PASS/MISS).

Run a script as `python bench/<name>.py`; it imports this module as `_common`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import asyncpg

_HERE = os.path.dirname(os.path.abspath(__file__))
ADMIN_URL = os.environ.get("POSTROOM_BENCH_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


# ---------------------------------------------------------------- figures and machine

def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil
    return sorted_values[int(rank) - 1]


@dataclass
class Figures:
    count: int
    seconds: float
    latencies: list[float]  # seconds, one per request

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("nan")

    def ms(self, q: float) -> float:
        return percentile(sorted(self.latencies), q) * 1000

    def line(self, label: str) -> str:
        return (f"{label:<8} {self.rate:9.0f} req/s   p50 {self.ms(50):7.2f} ms   p99 {self.ms(99):7.2f} ms"
                f"   ({self.count} in {self.seconds:.2f} s)")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def machine() -> str:
    """nproc and the load average, printed before a run (other work on the machine skews figures)."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"nproc {os.cpu_count()}   load average (1/5/15 min) {load}   python {sys.version.split()[0]}"


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    return sum(parts) - idle, sum(parts)


def machine_busy(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Cores in use on average between two cpu_times() readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return (os.cpu_count() or 1) * busy / total if total else float("nan")


def proc_status(pid: int, key: str) -> int | None:
    """A kB figure of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- database and CLI

def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def postroom(*args: str, env: dict[str, str], timeout: float = 120) -> str:
    """Runs the `postroom` CLI of this interpreter; returns its stdout, stripped."""
    done = subprocess.run([sys.executable, "-m", "postroom.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"postroom {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.asynccontextmanager
async def fresh_database(prefix: str = "postroom_bench"):
    """A new database `<prefix>_<random>` migrated with `postroom migrate`; dropped on the way out
    (errors and Ctrl-C included). Yields its DSN."""
    name = f"{prefix}_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            dsn = with_database(ADMIN_URL, name)
            await asyncio.to_thread(postroom, "migrate", env={"POSTROOM_DATABASE_URL": dsn})
            yield dsn
        finally:
            drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            try:
                await admin.execute(drop, timeout=60)
            except Exception as exc:  # say so, but let the run's own outcome through
                print(f"could not drop the bench database ({type(exc).__name__}: {exc}); run: {drop}", file=sys.stderr)
    finally:
        await admin.close()


# ---------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`postroom serve` as a subprocess on a free port (API only unless workers=True).

    The child is the server itself (python -m postroom.cli), so its /proc figures are the server's.
    """

    def __init__(self, dsn: str, *, workers: bool = False, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {"POSTROOM_DATABASE_URL": dsn, "POSTROOM_SECRET_KEY": secrets.token_urlsafe(48), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = None

    def start(self) -> None:
        """Starts `postroom serve`; create workspaces with cli() first, or serve makes a `demo` one."""
        args = [sys.executable, "-m", "postroom.cli", "serve", "--port", str(self.port)]
        if not self.workers:
            args.append("--no-workers")
        # A session of its own: Ctrl-C reaches the bench, which then stops the server in order.
        # Its output (start-up lines, tracebacks) goes to a temporary file: see log_tail().
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, env={**os.environ, **self.env}, start_new_session=True,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server printed (for a report when responses were not 200)."""
        if self.log is None:
            return ""
        self.log.seek(0)
        return "\n".join(self.log.read().decode(errors="replace").splitlines()[-lines:])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cli(self, *args: str) -> str:
        """`postroom ...` against the server's database and secret (workspace create, apikey create)."""
        return postroom(*args, env=self.env)

    async def ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode} before it was ready:\n"
                               + self.log_tail())
            try:
                with await asyncio.to_thread(urllib.request.urlopen, self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the server did not answer /healthz within {timeout:.0f} s")

    def peak_rss_kb(self) -> int | None:
        return proc_status(self.pid, "VmHWM")

    def rss_kb(self) -> int | None:
        return proc_status(self.pid, "VmRSS")

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self, timeout: float = 10) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_workers(env: dict[str, str], n: int = 1) -> list[subprocess.Popen]:
    """`n` `postroom worker` processes with `env` (database and secret key), each with its output in
    a temporary file (`proc.log`)."""
    procs = []
    for _ in range(n):
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen([sys.executable, "-m", "postroom.cli", "worker"], env={**os.environ, **env},
                                start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        proc.log = log  # type: ignore[attr-defined]
        procs.append(proc)
    return procs


def stop_processes(procs) -> None:
    """SIGTERM (a graceful stop), then SIGKILL for any still running after 30 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# ---------------------------------------------------------------- the HTTP load generator

def http_request(method: str, path: str, port: int, headers: dict[str, str] | None = None,
                 body: bytes = b"") -> bytes:
    """One HTTP/1.1 keep-alive request as raw bytes, ready to write to the socket."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Load:
    """What the load generator measured (warm-up excluded)."""

    figures: Figures
    statuses: dict[int, int]
    markers: dict[bytes, int]  # how many response bodies contained each marker
    errors: list[str] = field(default_factory=list)  # first few non-2xx bodies / connection failures
    client_cpu: float = 0.0    # CPU seconds the load generator itself used while measuring
    watched_cpu: float | None = None  # CPU seconds of `watch_pid` (e.g. the server) while measuring
    machine_cores: float = 0.0  # cores busy on the whole machine while measuring
    answered_at: list[float] = field(default_factory=list)  # wall-clock time each answer arrived


async def run_load(port: int, requests: list[bytes], *, concurrency: int, warmup: list[bytes] = (),
                   markers: tuple[bytes, ...] = (), watch_pid: int | None = None, timeout: float = 600) -> Load:
    """Sends `warmup` then `requests` over `concurrency` keep-alive connections and returns what was
    measured on `requests`. The client runs in a Python process of its own (so it shares no
    interpreter with the caller): raw asyncio protocols on uvloop with httptools parsing, a few tens
    of microseconds of CPU a request, far below the server it measures.
    """
    job = pickle.dumps((port, requests, list(warmup), concurrency, markers, watch_pid, timeout))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import _common; _common._load_main()",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_HERE, os.environ.get("PYTHONPATH")]))})
    try:
        out, _ = await asyncio.wait_for(proc.communicate(job), timeout + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0 or not out:
        raise RuntimeError(f"the load generator failed (exit code {proc.returncode})")
    result = pickle.loads(out)
    if isinstance(result, str):
        raise RuntimeError(f"load generator: {result}")
    return result


def _load_main() -> None:
    """Entry point of the load generator process: a pickled job on stdin, a pickled Load on stdout."""
    port, requests, warmup, concurrency, markers, watch_pid, timeout = pickle.loads(sys.stdin.buffer.read())
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            if warmup:
                runner.run(asyncio.wait_for(_drive(port, warmup, concurrency, markers, None), timeout))
            result = runner.run(asyncio.wait_for(_drive(port, requests, concurrency, markers, watch_pid), timeout))
    except BaseException as exc:  # reported to the parent as text
        result = f"{type(exc).__name__}: {exc}"
    sys.stdout.buffer.write(pickle.dumps(result))
    sys.stdout.buffer.flush()


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport = None
        self.waiter: asyncio.Future | None = None
        self.chunks: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:
            self._fail(exc)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        body, self.chunks = b"".join(self.chunks), []
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), body))

    def connection_lost(self, exc) -> None:
        self._fail(exc or ConnectionError("connection closed by the server"))

    def _fail(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def send(self, request: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter


async def _drive(port, requests, concurrency, markers, watch_pid) -> Load:
    loop = asyncio.get_running_loop()
    latencies = [0.0] * len(requests)
    answered = [0.0] * len(requests)
    statuses: dict[int, int] = {}
    found = dict.fromkeys(markers, 0)
    errors: list[str] = []
    order = iter(range(len(requests)))
    clock = time.perf_counter

    async def connect() -> _Conn:
        _, conn = await loop.create_connection(_Conn, "127.0.0.1", port)
        conn.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    conns = [await connect() for _ in range(concurrency)]

    async def worker(conn: _Conn) -> None:
        for i in order:
            t0 = clock()
            try:
                status, body = await conn.send(requests[i])
            except Exception as exc:  # a broken connection counts as a failed request
                latencies[i] = clock() - t0
                statuses[0] = statuses.get(0, 0) + 1
                if len(errors) < 5:
                    errors.append(f"request {i}: {type(exc).__name__}: {exc}")
                conn.transport.close()
                conn = await connect()
                continue
            latencies[i] = clock() - t0
            answered[i] = time.time()
            statuses[status] = statuses.get(status, 0) + 1
            if status >= 300 and len(errors) < 5:
                errors.append(f"request {i}: {status} {body[:300]!r}")
            for m in markers:
                if m in body:
                    found[m] += 1
        conn.transport.close()

    watched0 = proc_cpu_seconds(watch_pid) if watch_pid else None
    machine0, cpu0, t0 = cpu_times(), time.process_time(), clock()
    await asyncio.gather(*(worker(c) for c in conns))
    seconds = clock() - t0
    client_cpu, machine1 = time.process_time() - cpu0, cpu_times()
    watched = proc_cpu_seconds(watch_pid) - watched0 if watch_pid else None
    return Load(Figures(len(requests), seconds, latencies), statuses, found, errors, client_cpu, watched,
                machine_busy(machine0, machine1), answered)


async def run_tasks(work, items: list, concurrency: int) -> Figures:
    """Awaits work(item) for every item from `concurrency` tasks in this process; per-item latency."""
    latencies = [0.0] * len(items)
    order = iter(range(len(items)))
    clock = time.perf_counter

    async def worker() -> None:
        for i in order:
            t0 = clock()
            await work(items[i])
            latencies[i] = clock() - t0

    t0 = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Figures(len(items), clock() - t0, latencies)


# ---------------------------------------------------------------- running a bench

def run_main(coro, interrupted: str = "interrupted; the server was stopped and the bench database dropped") -> None:
    """Runs a bench's main coroutine on uvloop (the server's loop); Ctrl-C ends it with status 130
    once its clean-up (server stopped, database dropped) has run."""
    import uvloop

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(interrupted, file=sys.stderr)
        sys.exit(130)
