"""The access log, GET /metrics, GET /readyz and GET /healthz, against the real app and database."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import re
import secrets

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from helpers import assert_json_error
from postroom.app import create_app
from postroom.platform import db, observability
from postroom.platform.migrations import available, migrate

FIELDS = {"ts", "method", "path", "status", "duration_ms", "workspace"}


async def stdout(capsys) -> str:
    await asyncio.sleep(0)  # the access log is written at the next turn of the event loop
    return capsys.readouterr().out


def log_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"ts"')]


def only(lines: list[dict], **match) -> dict:
    found = [line for line in lines if all(line[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, lines)
    return found[0]


async def scrape(client, headers=None) -> dict:
    """/metrics parsed by prometheus_client's own parser: {(name, labels...): value}."""
    r = await client.get("/metrics", headers=headers or {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def series(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))


@pytest.fixture
async def other_app(settings, pool):
    """An app of the test's own (its own metrics registry) on the shared pool, and a client for it."""
    made = []

    async def make(**changes):
        app = create_app(dataclasses.replace(settings, **changes), "unused", pool=pool)
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://postroom.test")
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


# ---------------------------------------------------------------- the access log

async def test_access_log_line_has_each_field_and_no_token_body_or_query(client, ws, capsys):
    marker = f"secret-marker-{secrets.token_hex(4)}"
    email = f"{marker}@example.com"
    await stdout(capsys)  # drop what came before
    r = await client.post("/api/contacts.upsert", headers=ws.headers,
                          json={"workspace_id": ws.id, "contact": {"email": email, "custom_string_1": marker}})
    assert r.status_code == 200, r.text
    r = await client.get("/api/contacts.getByEmail", headers=ws.headers, params={"workspace_id": ws.id, "email": email})
    assert r.status_code == 200, r.text
    out = await stdout(capsys)

    lines = log_lines(out)
    assert len(lines) == 2 and all(set(line) == FIELDS for line in lines), out
    post, get = lines
    assert post["method"] == "POST" and post["path"] == "/api/contacts.upsert" and post["status"] == 200
    assert get["method"] == "GET" and get["path"] == "/api/contacts.getByEmail" and get["status"] == 200
    for line in lines:
        assert line["workspace"] == ws.id
        assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 60_000
        ts = dt.datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
        assert abs((dt.datetime.now(dt.timezone.utc) - ts).total_seconds()) < 60
    # one line per request, nothing else on stdout; no token, body value or query string in it
    assert out.count("\n") == 2
    assert ws.token not in out and marker not in out and "Bearer" not in out and "?" not in out


async def test_access_log_of_refused_requests(client, ws, new_workspace, capsys):
    other = await new_workspace()
    await stdout(capsys)  # drop what came before
    await client.post("/api/contacts.upsert", json={"workspace_id": ws.id, "contact": {"email": "a@example.com"}})
    await client.post("/api/contacts.upsert", headers=ws.headers,
                      json={"workspace_id": other.id, "contact": {"email": "a@example.com"}})
    await client.post("/api/contacts.upsert", headers=ws.headers, json={"workspace_id": "Not Valid!", "contact": {}})
    await client.get("/api/contacts.upsert", headers=ws.headers, params={"workspace_id": ws.id})
    await client.get("/no/such/path", params={"token": "in-a-query"})
    await client.options("/api/contacts.upsert")
    out = await stdout(capsys)
    lines = log_lines(out)
    assert [(x["method"], x["path"], x["status"], x["workspace"]) for x in lines] == [
        ("POST", "/api/contacts.upsert", 401, None),            # no token: no workspace either
        ("POST", "/api/contacts.upsert", 403, other.id),        # the workspace asked for, refused
        ("POST", "/api/contacts.upsert", 400, None),            # an invalid id is not echoed
        ("GET", "/api/contacts.upsert", 405, None),
        ("GET", "/no/such/path", 404, None),
        ("OPTIONS", "/api/contacts.upsert", 200, None),         # the CORS preflight, answered by the edge
    ]
    assert ws.token not in out and "in-a-query" not in out and "Not Valid" not in out


async def test_access_log_can_be_silenced_like_any_logger(client, capsys):
    logger = observability.access_logger()
    logger.setLevel("WARNING")
    try:
        await stdout(capsys)  # drop what came before
        assert (await client.get("/healthz")).status_code == 200
        assert await stdout(capsys) == ""
    finally:
        logger.setLevel("INFO")


# ---------------------------------------------------------------- /metrics

async def test_metrics_count_requests_per_endpoint_and_collapse_unknown_paths(other_app, ws):
    c = await other_app()
    for _ in range(3):
        r = await c.get("/api/contacts.count", headers=ws.headers, params={"workspace_id": ws.id})
        assert r.status_code == 200
    await c.get("/api/contacts.count", params={"workspace_id": ws.id})            # 401
    await c.get(f"/api/contacts.{secrets.token_hex(4)}", headers=ws.headers)       # unknown /api path
    await c.get(f"/wp-admin/{secrets.token_hex(4)}.php")
    samples = await scrape(c)

    count = "/api/contacts.count"
    assert series(samples, "postroom_http_requests_total", endpoint=count, method="GET", status=200) == 3
    assert series(samples, "postroom_http_requests_total", endpoint=count, method="GET", status=401) == 1
    assert series(samples, "postroom_http_requests_total", endpoint="unmatched", method="GET", status=404) == 2
    assert series(samples, "postroom_http_request_duration_seconds_count", endpoint=count) == 4
    assert series(samples, "postroom_http_request_duration_seconds_bucket", endpoint=count, le="+Inf") == 4
    assert series(samples, "postroom_http_request_duration_seconds_sum", endpoint=count) > 0
    endpoints = {dict(labels).get("endpoint") for (_, labels) in samples}
    assert not any(e and ("wp-admin" in e or e.startswith("/api/contacts.") and e != count) for e in endpoints)
    # the scrape counts itself only once it is answered
    assert series(samples, "postroom_http_requests_in_flight") == 1
    again = await scrape(c)
    assert series(again, "postroom_http_requests_total", endpoint="/metrics", method="GET", status=200) == 1


async def test_metrics_queue_depths_and_pool_match_the_database(other_app, ws, pool):
    c = await other_app()
    before = await scrape(c)

    def depth(samples, status=None):
        if status is None:
            return series(samples, "postroom_outbox_events_pending") or 0
        return series(samples, "postroom_webhook_deliveries_queued", status=status) or 0

    r = await c.post("/api/contacts.upsert", headers=ws.headers,
                     json={"workspace_id": ws.id, "contact": {"email": "outbox@example.com"}})
    assert r.status_code == 200                      # an outbox event no dispatcher takes here
    # a subscription no worker can deliver to (removed below, with its deliveries, so that no
    # later test's worker finds them in the shared queue)
    await pool.execute("INSERT INTO webhook_subscriptions (workspace_id, id, name, url, secret, event_types, enabled)"
                       " VALUES ($1, 'sub', 'Sub', 'http://127.0.0.1:9/h', '\\x00', '{contact.created}', false)",
                       ws.id)
    try:
        for i, status in enumerate(("pending", "pending", "delivering", "delivered", "failed")):
            await pool.execute(
                "INSERT INTO webhook_deliveries (workspace_id, subscription_id, event_id, event_type, message_id,"
                " data, occurred_at, status, max_attempts) VALUES ($1, 'sub', $2, 'contact.created', $3, '{}',"
                " now(), $4, 3)", ws.id, i + 1, f"msg_{i + 1}", status)
        samples = await scrape(c)
    finally:
        await pool.execute("DELETE FROM webhook_subscriptions WHERE workspace_id = $1 AND id = 'sub'", ws.id)
    # what this test added, whatever other tests left in the shared database
    assert depth(samples) >= depth(before) + 1
    assert depth(samples, "pending") == depth(before, "pending") + 2
    assert depth(samples, "delivering") == depth(before, "delivering") + 1
    assert series(samples, "postroom_database_up") == 1
    in_use = series(samples, "postroom_db_pool_connections", state="in_use")
    idle = series(samples, "postroom_db_pool_connections", state="idle")
    assert in_use + idle == pool.get_size() and in_use >= 0 and idle >= 0
    assert series(samples, "postroom_db_pool_max_connections") == pool.get_max_size()
    assert series(samples, "process_resident_memory_bytes") > 0


async def test_metrics_token_is_required_when_set(other_app, ws, capsys):
    token = secrets.token_urlsafe(24)
    c = await other_app(metrics_token=token)
    assert_json_error(await c.get("/metrics"), 401, "Authorization header is required")
    assert_json_error(await c.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401, "Invalid metrics token")
    assert_json_error(await c.get("/metrics", headers={"Authorization": token}), 401,
                      "Invalid authorization header format")
    # an API key is not the metrics token
    assert_json_error(await c.get("/metrics", headers=ws.headers), 401, "Invalid metrics token")
    await stdout(capsys)  # drop what came before
    samples = await scrape(c, {"Authorization": f"Bearer {token}"})
    assert series(samples, "postroom_http_requests_total", endpoint="/metrics", method="GET", status=401) == 4
    assert token not in await stdout(capsys)


async def test_metrics_without_token_setting_is_open_and_speaks_openmetrics_on_request(client, other_app):
    assert (await client.get("/metrics")).status_code == 200
    c = await other_app()   # not through the contract check: the document lists the default format
    await c.get("/healthz")
    r = await c.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/openmetrics-text")
    names = {f.name for f in openmetrics_families(r.text)}
    assert {"postroom_http_requests", "postroom_http_request_duration_seconds"} <= names


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/healthz"])
async def test_probes_answer_other_methods_with_json_405(client, path):
    assert_json_error(await client.post(path), 405, "Method not allowed")


# ---------------------------------------------------------------- /readyz and /healthz

async def test_readyz_and_healthz_when_ready(client):
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"}
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_readyz_503_while_migrations_are_pending(empty_db, settings):
    url = empty_db.url
    pool = await db.create_pool(url, min_size=1, max_size=2)
    try:
        app = create_app(settings, url, pool=pool)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            names = [name for _, name, _ in available()]
            assert_json_error(await c.get("/readyz"), 503, f"migrations pending: {', '.join(names)}")
            assert (await c.get("/healthz")).status_code == 200
            # the scrape still answers: the database is up, the queue tables are not there yet
            r = await c.get("/metrics")
            assert r.status_code == 200 and "postroom_database_up 1.0" in r.text
            assert "postroom_outbox_events_pending" not in r.text

            async with pool.acquire() as conn:
                await migrate(conn)
                await conn.execute("DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)")
            assert_json_error(await c.get("/readyz"), 503, f"migrations pending: {names[-1]}")
            async with pool.acquire() as conn:
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                   available()[-1][0], names[-1])
            assert (await c.get("/readyz")).json() == {"status": "ready"}
    finally:
        await pool.close()


async def test_readyz_503_when_the_database_is_gone_while_healthz_stays_200(empty_db, settings):
    url, admin, name = empty_db.url, empty_db.admin, empty_db.name
    pool = await db.create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        app = create_app(settings, url, pool=pool)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.get("/readyz")).status_code == 200
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')   # its sessions are terminated
            await asyncio.sleep(0.1)
            r = await c.get("/readyz")
            assert_json_error(r, 503, "database unavailable")
            assert r.headers["retry-after"] == "1"
            assert (await c.get("/healthz")).json() == {"status": "ok"}
            r = await c.get("/metrics")
            assert r.status_code == 200 and "postroom_database_up 0.0" in r.text
    finally:
        await pool.close()


# ---------------------------------------------------------------- the real server

async def test_serve_writes_json_lines_on_stdout_and_no_uvicorn_access_log(dsn, ws):
    from processes import Serve

    server = Serve(dsn).start()
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, headers=ws.headers, timeout=30) as c:
            r = await c.get("/api/contacts.count", params={"workspace_id": ws.id})
            assert r.status_code == 200, r.text
            r = await c.post("/api/contacts.upsert", json={"workspace_id": ws.id, "contact": {"email": "serve@example.com"}})
            assert r.status_code == 200, r.text
            assert (await c.get("/readyz")).status_code == 200
            assert (await c.get("/metrics")).status_code == 200
    finally:
        server.stop()
    out, err = server.output("stdout"), server.output("stderr")
    lines = [json.loads(line) for line in out.splitlines()]   # every stdout line is JSON
    assert all(set(line) == FIELDS for line in lines)
    only(lines, path="/api/contacts.count", status=200, workspace=ws.id)
    only(lines, path="/api/contacts.upsert", method="POST", status=200, workspace=ws.id)
    only(lines, path="/readyz", status=200)
    assert not re.search(r'"(GET|POST) /[^ ]* HTTP/1\.1" \d{3}', out + err), "uvicorn's access log is on"
    assert ws.token not in out + err and "serve@example.com" not in out + err
