"""What an operator sees: the access log, Prometheus metrics and the readiness probe.

- `Observed` wraps the ASGI edge: for every HTTP request it writes one JSON line to stdout
  (ts, method, path, status, duration_ms, workspace) and counts it in the metrics. The line is
  built from those fields only: never a header (so never a token), a query string (the
  confirmation link carries one) or a body.
- `GET /metrics`: Prometheus text format from prometheus_client, one registry per app. Request
  counts and latency histograms are labelled by endpoint, the route's own path: a path that no
  route serves is counted as `unmatched`, so clients cannot create series. The capabilities'
  probes (queue depths, from their manifests) and the pool's figures are read when scraped. With
  POSTROOM_METRICS_TOKEN set, the scrape must send it as `Authorization: Bearer <token>`.
- `GET /readyz`: 200 when the database answers and every migration shipped is applied, else 503
  JSON. `GET /healthz` is liveness: the process answers, without the database.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import sys
import time
from collections.abc import Callable, Sequence

import asyncpg
import msgspec
from prometheus_client import CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.core import GaugeMetricFamily
from starlette.responses import Response

from postroom.platform.capability import Probe
from postroom.platform.errors import RuleError
from postroom.platform.http import DB_UNAVAILABLE, error_response, json_response
from postroom.platform.openapi import STRING, error_refs, json_content, obj

ACCESS_LOGGER = "postroom.access"
UNMATCHED = "unmatched"
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
# Seconds. API calls take milliseconds; imports of many rows take seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PROBE_TIMEOUT = 2.0  # /readyz and the scrape-time queries give the database this long

_encode = msgspec.json.Encoder().encode


# ---------------------------------------------------------------- the access log

def access_logger() -> logging.Logger:
    """The `postroom.access` logger, used for its level only: the access log is written while it
    is enabled for INFO (the default); set it to WARNING (e.g. in a logging config) to turn the
    log off. Lines go straight to stdout, not through logging handlers: a LogRecord per request
    costs more than the rest of the log line together."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return logger


class _Stdout:
    """Lines for stdout, written and flushed once per turn of the event loop: under load, one
    write carries the lines of every request that ended in that turn; when quiet, a line is out
    as soon as its request is. sys.stdout is looked up at each write (tests swap it)."""

    def __init__(self) -> None:
        self.pending: list[str] = []

    def add(self, line: str) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append(line)

    def flush(self) -> None:
        text, self.pending = "".join(self.pending), []
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except (OSError, ValueError):  # stdout closed or gone: the request is answered all the same
            pass


class _Clock:
    """UTC timestamps with milliseconds, RFC 3339; the seconds part formatted once per second."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second, self.prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self.prefix}.{int((now - second) * 1000):03d}Z"


# ---------------------------------------------------------------- metrics

class Metrics:
    """The registry of one app: request series, plus figures read at scrape time."""

    def __init__(self, probes: Sequence[Probe] = ()) -> None:
        self.probes = tuple(probes)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("postroom_http_requests", "HTTP requests answered, by endpoint, method and status.",
                                ("endpoint", "method", "status"), registry=self.registry)
        self.duration = Histogram("postroom_http_request_duration_seconds",
                                  "Time from the request's arrival to the end of its response, by endpoint.",
                                  ("endpoint",), buckets=BUCKETS, registry=self.registry)
        self.in_flight = 0
        self.pool = None
        self.sample: dict = {}
        # Label children, found once: labels() costs a lock and a tuple build per call.
        self._counts: dict[tuple[str, str, int], object] = {}
        self._durations: dict[str, object] = {}
        self.registry.register(_Sampled(self))
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = self.requests.labels(endpoint, method, str(status))
        count.inc()
        duration = self._durations.get(endpoint)
        if duration is None:
            duration = self._durations[endpoint] = self.duration.labels(endpoint)
        duration.observe(seconds)

    async def refresh(self, pool) -> None:
        """Runs the capabilities' probes (queue depths) against the database, bounded in time. A
        probe that fails is left out of the scrape; with no connection postroom_database_up is 0."""
        self.pool = pool
        if pool is None:  # the app's lifespan has not opened it
            self.sample = {"up": 0}
            return
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                async with pool.acquire() as conn:
                    rows = {}
                    for probe in self.probes:
                        try:
                            rows[probe] = await conn.fetchrow(probe.query)
                        except asyncpg.PostgresError:  # it answers, without these tables: migrations pending
                            pass
                    self.sample = {"up": 1, "rows": rows}
        except (*DB_UNAVAILABLE, asyncpg.PostgresError):  # no connection (a refused login included)
            self.sample = {"up": 0}

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition the scraper asks for (Accept): Prometheus text 0.0.4 by default,
        OpenMetrics or text 1.0.0 on request. Returns (body, content type)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class _Sampled:
    """A collector of the figures read at scrape time (prometheus_client calls collect())."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        m = self.metrics
        yield GaugeMetricFamily("postroom_http_requests_in_flight", "HTTP requests being answered now.",
                                value=m.in_flight)
        sample = m.sample
        if sample:
            yield GaugeMetricFamily("postroom_database_up",
                                    "1 when the last scrape's queries were answered by the database, else 0.",
                                    value=sample["up"])
        for probe, row in sample.get("rows", {}).items():
            yield from probe.collect(row)
        pool = m.pool
        if pool is not None:
            size, idle = pool.get_size(), pool.get_idle_size()
            conns = GaugeMetricFamily("postroom_db_pool_connections",
                                      "Connections of the database pool, by state.", labels=("state",))
            conns.add_metric(("in_use",), size - idle)
            conns.add_metric(("idle",), idle)
            yield conns
            yield GaugeMetricFamily("postroom_db_pool_max_connections", "Size limit of the database pool.",
                                    value=pool.get_max_size())


# ---------------------------------------------------------------- the middleware

class Observed:
    """ASGI middleware around the edge: one access-log line and the metrics of every request.

    `paths` are the exact paths the app serves (its endpoint label); anything else is
    `unmatched`. The workspace is the one the dispatcher validated (platform.http.Api puts it
    in scope["state"]["workspace_id"]); None when there is none.
    """

    def __init__(self, app, state, paths, probes: Sequence[Probe] = ()) -> None:
        self.app = app
        self.state = state
        self.paths = {p: p for p in paths}
        self.metrics = state.metrics = Metrics(probes)
        self.log = access_logger()
        self.out = _Stdout()
        self.clock = _Clock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when nothing was sent (the edge answers every error)

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight -= 1
            self.record(scope, status, time.perf_counter() - started)

    def record(self, scope, status: int, seconds: float) -> None:
        path, method = scope["path"], scope["method"]
        self.metrics.observe(self.paths.get(path, UNMATCHED), method if method in METHODS else "other",
                             status, seconds)
        if not self.log.isEnabledFor(logging.INFO):
            return
        state = scope.get("state")
        try:
            line = _encode({
                "ts": self.clock.now(), "method": method, "path": path, "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "workspace": state.get("workspace_id") if state else None,
            })
        except msgspec.EncodeError:  # not expected: the fields are plain str, int and float
            return
        self.out.add(line.decode() + "\n")


# ---------------------------------------------------------------- /metrics and /readyz

def metrics_handler(bearer_token: Callable[[str | None], str]):
    """GET /metrics. With POSTROOM_METRICS_TOKEN set, `bearer_token` (the auth capability's
    rule) reads the Authorization header, raising a RuleError for a missing or malformed one."""

    async def metrics(request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "Method not allowed", {"Allow": "GET"})
        state = request.app.state
        expected = state.settings.metrics_token
        if expected:
            try:
                given = bearer_token(request.headers.get("authorization"))
            except RuleError as exc:
                return error_response(exc.status, exc.message, {"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return error_response(401, "Invalid metrics token", {"WWW-Authenticate": "Bearer"})
        await state.metrics.refresh(state.pool)
        body, content_type = state.metrics.render(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    return metrics


async def healthz(request) -> Response:
    """Liveness: the process answers; the database is not asked."""
    if request.method not in ("GET", "HEAD"):
        return error_response(405, "Method not allowed", {"Allow": "GET"})
    return json_response({"status": "ok"})


async def readyz(request) -> Response:
    """Ready when the database answers within PROBE_TIMEOUT and no migration is pending."""
    if request.method not in ("GET", "HEAD"):
        return error_response(405, "Method not allowed", {"Allow": "GET"})
    from postroom.platform.migrations import pending as pending_migrations

    pool = request.app.state.pool
    unavailable = error_response(503, "database unavailable", {"Retry-After": "1"})
    if pool is None:  # the app's lifespan has not opened it
        return unavailable
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            async with pool.acquire() as conn:
                pending = await pending_migrations(conn)
    except (*DB_UNAVAILABLE, asyncpg.PostgresError):
        return unavailable
    if pending:
        return error_response(503, f"migrations pending: {', '.join(pending)}", {"Retry-After": "5"})
    return json_response({"status": "ready"})


def _probe_paths(operation_id: str, summary: str, ok: dict, errors=(), description: str | None = None,
                 security: list | None = None) -> dict:
    """GET, and HEAD (the same answer without a body)."""
    get = {"summary": summary, "tags": ["platform"], "operationId": operation_id, "security": security or [],
           "responses": {"200": ok, **error_refs(errors)}}
    if description:
        get["description"] = description
    head = dict(get, operationId="head" + operation_id.removeprefix("get"), summary=summary + " (headers only)",
                responses={status: {"description": r.get("description", "see GET")}
                           for status, r in get["responses"].items()})
    return {"get": get, "head": head}


# The OpenAPI path items of the probes above.
PATHS = {
    "/healthz": _probe_paths("getLiveness", "Liveness: the process answers (the database is not asked)",
                             json_content(obj({"status": {"const": "ok"}}, ["status"]))),
    "/readyz": _probe_paths("getReadiness", "Readiness: the database answers and no migration is pending",
                            json_content(obj({"status": {"const": "ready"}}, ["status"]), "ready"), [503],
                            "503 `database unavailable` or `migrations pending: ...` when not ready."),
    "/metrics": _probe_paths("getMetrics", "Prometheus metrics",
                             {"description": "Prometheus text exposition format",
                              "content": {"text/plain": {"schema": STRING}}}, [401],
                             "No token unless POSTROOM_METRICS_TOKEN is set; then `Bearer <that token>`.",
                             [{}, {"MetricsToken": []}]),
}
