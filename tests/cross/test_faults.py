"""Faults against real processes: the server SIGKILLed in the middle of an import, and PostgreSQL
restarted under requests in flight.

Both run `postroom serve --no-workers` as a subprocess. The import test uses this run's database;
the restart test runs an embedded PostgreSQL of its own (the system one is never touched), kept on
one port across the restart as a real server would be.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import subprocess
import sys
import time

import asyncpg
import httpx
import pytest

from conftest import SECRET
from processes import Serve, free_port
from postroom.contacts import bulk, bulk_store, imports, model
from postroom.lists import store as lists_store
from postroom.platform import embedded_pg

IMPORT = "/api/contacts.import"
ROWS = 30_000
# Requests during the outage must answer within this many seconds: a hang detector, far above the
# few milliseconds a refused connection costs (the pool's connect timeout is 5 s, the worst case).
ANSWER_BOUND = 10.0


def cli(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "postroom.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# ---------------------------------------------------------------- SIGKILL in the middle of an import

def import_rows(n: int) -> list[dict]:
    """n contacts with deterministic values (timestamps included, so two runs store the same)."""
    return [{
        "email": f"c{i:05d}@kill.example.com",
        "first_name": f"First{i}",
        "last_name": f"Last{i % 97}",
        "external_id": f"ext-{i}",
        "custom_number_1": i,
        "custom_string_1": "x" * (i % 40),
        "custom_json_1": {"n": i, "tags": [f"t{i % 7}", f"t{i % 11}"]},
        "created_at": "2024-01-02T03:04:05Z",
        "updated_at": f"2024-02-{1 + i % 28:02d}T10:00:00Z",
    } for i in range(n)]


def seed_rows(n: int) -> list[dict]:
    """Every third contact of import_rows exists before the import, with other values."""
    return [{"email": f"c{i:05d}@kill.example.com", "first_name": f"Old{i}", "custom_number_1": -i,
             "created_at": "2023-06-01T00:00:00Z", "updated_at": "2023-06-01T00:00:00Z"}
            for i in range(0, n, 3)]


async def state(pool, ws_id: str) -> dict:
    """What the kill test looks at in a workspace: contacts (a few fields), side effects per email,
    and the contact count."""
    contacts = {r["email"]: tuple(r.values())[1:] for r in await pool.fetch(
        "SELECT email, first_name, custom_number_1, external_id, updated_at FROM contacts WHERE workspace_id = $1", ws_id)}
    timeline = collections.Counter({(r["email"], r["kind"]): r["n"] for r in await pool.fetch(
        "SELECT email, kind, count(*) AS n FROM contact_timeline WHERE workspace_id = $1 GROUP BY 1, 2", ws_id)})
    events = collections.Counter({(r["subject"], r["type"]): r["n"] for r in await pool.fetch(
        "SELECT subject, type, count(*) AS n FROM events WHERE workspace_id = $1 GROUP BY 1, 2", ws_id)})
    counted = await pool.fetchval("SELECT coalesce(sum(delta), 0) FROM contact_counts WHERE workspace_id = $1", ws_id)
    return {"contacts": contacts, "timeline": timeline, "events": events, "counted": counted}


# Everything an import writes, without ids and the clock's own timestamps: rows of workspace $1
# missing from $2, and the other way round (EXCEPT ALL: duplicates count).
DIFFERENCES = {
    "contacts": f"SELECT {', '.join(model.FIELDS)} FROM contacts WHERE workspace_id = $1",
    "timeline": "SELECT email, kind, entity_type, entity_id, changes FROM contact_timeline WHERE workspace_id = $1",
    "events": "SELECT type, subject, data FROM events WHERE workspace_id = $1",
}


async def differences(pool, a: str, b: str) -> dict[str, int]:
    out = {}
    for name, select in DIFFERENCES.items():
        one, other = select, select.replace("$1", "$2")
        out[name] = await pool.fetchval(
            f"SELECT (SELECT count(*) FROM ({one} EXCEPT ALL {other}) x) + (SELECT count(*) FROM ({other} EXCEPT ALL {one}) y)",
            a, b)
    return out


async def wait_for_quiet(pool, timeout: float = 20) -> None:
    """Until no other session of this database is inside a statement or a transaction: the killed
    server's transactions are rolled back (or committed, for a COMMIT already sent)."""
    deadline = time.monotonic() + timeout
    while True:
        busy = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle'")
        if busy == 0:
            return
        assert time.monotonic() < deadline, f"{busy} sessions still busy after the kill"
        await asyncio.sleep(0.05)


async def test_sigkill_in_the_middle_of_an_import_leaves_whole_chunks_and_a_rerun_converges(dsn, pool, new_workspace):
    killed, clean = await new_workspace(), await new_workspace()
    rows = import_rows(ROWS)
    for ws in (killed, clean):  # the seed, written by the import's own function
        seed = bulk.Batch()
        for row in seed_rows(ROWS):
            assert seed.add(row)
        await bulk_store.write_batch(pool, ws.id, seed, after_write=lists_store.sync_contact_created_at)
    seeded = {c["email"] for c in seed_rows(ROWS)}
    before = await state(pool, killed.id)
    body = json.dumps({"workspace_id": killed.id, "contacts": rows}).encode()
    headers = {**killed.headers, "Content-Type": "application/json"}

    # The import runs in chunks of CHUNK_SIZE contacts in input order (each email once here).
    chunks = bulk.chunks([r["email"] for r in rows], imports.CHUNK_SIZE)
    assert len(chunks) >= 10

    server = Serve(dsn).start()
    try:
        await server.ready()
        async with httpx.AsyncClient(timeout=120) as http:
            request = asyncio.create_task(http.post(server.url + IMPORT, content=body, headers=headers))
            # Kill it once the first chunk has committed (its contacts are there), long before the last.
            deadline = time.monotonic() + 60
            while await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", killed.id) \
                    == len(before["contacts"]):
                assert not request.done(), f"the import ended before any chunk was seen: {request.result()}"
                assert time.monotonic() < deadline, "no chunk committed within 60 s"
                await asyncio.sleep(0.005)
            server.kill()
            with pytest.raises(httpx.TransportError):
                await request
    finally:
        server.stop()
    await wait_for_quiet(pool)

    # ---- consistency after the kill: whole chunks, and side effects exactly for what was applied
    after = await state(pool, killed.id)
    stored = after["contacts"]
    by_email = {r["email"]: r for r in rows}

    def applied(email: str) -> bool:
        if email not in seeded:
            return email in stored
        return stored[email][0] == by_email[email]["first_name"]

    states = []
    for i, chunk in enumerate(chunks):
        done = {applied(e) for e in chunk}
        assert len(done) == 1, f"chunk {i} is partly applied"
        states.append(done.pop())
    print(f"\nkilled with {sum(states)} of {len(states)} chunks applied")
    assert any(states), "no chunk was applied before the kill"
    assert not all(states), "the import finished before the kill"

    for email in seeded:  # an applied seeded contact has its row's values, an unapplied one is as it was
        if applied(email):
            row = by_email[email]
            assert stored[email][1:3] == (row["custom_number_1"], row["external_id"])
        else:
            assert stored[email] == before["contacts"][email]
    for email in by_email:
        want = collections.Counter()
        if email in seeded:
            want["contact.created"] += 1               # the seed
            if applied(email):
                want["contact.updated"] += 1
        elif applied(email):
            want["contact.created"] += 1
        for kind in ("contact.created", "contact.updated"):
            assert after["timeline"][(email, kind)] == want[kind], (email, kind, "timeline")
            assert after["events"][(email, kind)] == want[kind], (email, kind, "outbox")
    assert after["timeline"].total() == after["events"].total() == \
        len(seeded) + sum(1 for e in by_email if applied(e))   # nothing else: no orphan
    assert after["counted"] == len(stored)                # contacts.count moved with the chunks

    # ---- a new server, the same import again: the state of one clean run
    server = Serve(dsn).start()
    try:
        await server.ready()
        async with httpx.AsyncClient(timeout=300) as http:
            for ws in (killed, clean):
                r = await http.post(server.url + IMPORT, headers={**ws.headers, "Content-Type": "application/json"},
                                    content=json.dumps({"workspace_id": ws.id, "contacts": rows}).encode())
                assert r.status_code == 200, r.text
                assert all(op["action"] in ("create", "update") for op in r.json()["operations"])
    finally:
        server.stop()
    assert await pool.fetchval("SELECT count(*) FROM contacts WHERE workspace_id = $1", clean.id) == ROWS
    assert await differences(pool, killed.id, clean.id) == {"contacts": 0, "timeline": 0, "events": 0}
    rerun, single = await state(pool, killed.id), await state(pool, clean.id)
    assert rerun == single and rerun["counted"] == ROWS


# ---------------------------------------------------------------- PostgreSQL restarted under load

@dataclasses.dataclass
class Answer:
    kind: str
    started: float
    ended: float
    status: int          # 0: no HTTP answer (timeout or connection error)
    body: object


@pytest.fixture
def pinned_port(monkeypatch):
    """The embedded server takes a free port at each start; a restarted production server comes
    back where it was, so the test pins it."""
    port = free_port()
    monkeypatch.setattr(embedded_pg, "_free_port", lambda: port)
    return port


async def test_database_restart_fails_fast_with_503_and_recovers_without_restart(tmp_path, pinned_port):
    pg = embedded_pg.EmbeddedPostgres(tmp_path / "pg-data")
    dsn = await asyncio.to_thread(pg.start)
    server = None
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
        env.update(POSTROOM_DATABASE_URL=dsn, POSTROOM_SECRET_KEY=SECRET)
        await asyncio.to_thread(cli, env, "workspace", "create", "outage", "--name", "Outage")
        token = await asyncio.to_thread(cli, env, "apikey", "create", "--workspace", "outage")
        headers = {"Authorization": f"Bearer {token}"}
        server = Serve(dsn).start()
        await server.ready()
        emails = [f"loop{n}-{i}@outage.example.com" for n in range(8) for i in range(50)]
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as http:
            r = await http.post(IMPORT, json={"workspace_id": "outage", "contacts": [{"email": e} for e in emails]})
            assert r.status_code == 200, r.text

        answers: list[Answer] = []
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=ANSWER_BOUND + 5,
                                     limits=httpx.Limits(max_connections=64)) as http:

            async def call(kind: str, method: str, path: str, **kw) -> Answer:
                t0 = time.monotonic()
                try:
                    r = await http.request(method, path, **kw)
                    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
                    answer = Answer(kind, t0, time.monotonic(), r.status_code, body)
                except httpx.HTTPError as exc:
                    answer = Answer(kind, t0, time.monotonic(), 0, repr(exc))
                answers.append(answer)
                return answer

            async def client_loop(n: int) -> None:
                i = 0
                while not stop.is_set():
                    email = f"loop{n}-{i % 50}@outage.example.com"
                    await call("upsert", "POST", "/api/contacts.upsert",
                               json={"workspace_id": "outage", "contact": {"email": email, "first_name": f"N{i}"}})
                    await call("get", "GET", "/api/contacts.getByEmail", params={"workspace_id": "outage", "email": email})
                    await call("count", "GET", "/api/contacts.count", params={"workspace_id": "outage"})
                    i += 1
                    await asyncio.sleep(0.01)

            loops = [asyncio.create_task(client_loop(n)) for n in range(8)]
            try:
                await asyncio.sleep(1.0)
                # A long write in flight when the database goes: an import of many chunks.
                big = [{"email": f"big{i}@outage.example.com", "first_name": "Big"} for i in range(40_000)]
                importing = asyncio.create_task(call("import", "POST", IMPORT,
                                                     json={"workspace_id": "outage", "contacts": big}))
                conn = await asyncpg.connect(dsn)
                try:
                    deadline = time.monotonic() + 60
                    while not await conn.fetchval("SELECT count(*) FROM contacts WHERE email LIKE 'big%'"):
                        assert not importing.done() and time.monotonic() < deadline, "the import did not start"
                        await asyncio.sleep(0.005)
                finally:
                    await conn.close()

                down_started = time.monotonic()
                await asyncio.to_thread(pg.stop)
                down = time.monotonic()
                await asyncio.sleep(1.0)
                during = [await call("readyz", "GET", "/readyz"), await call("metrics", "GET", "/metrics")]
                await asyncio.sleep(2.0)
                up_started = time.monotonic()
                assert await asyncio.to_thread(pg.start) == dsn
                up = time.monotonic()

                # Recovery by itself: the same server process answers again.
                deadline = up + 30
                while (await call("probe", "GET", "/api/contacts.count", params={"workspace_id": "outage"})).status != 200:
                    assert time.monotonic() < deadline, "no recovery within 30 s of the database's return"
                    await asyncio.sleep(0.1)
                recovered = time.monotonic()
                deadline = recovered + 60   # enough requests after the recovery, however busy the machine
                while sum(a.started > recovered for a in answers) < 40 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                after = [await call("readyz", "GET", "/readyz")]
            finally:
                stop.set()
                await asyncio.gather(*loops, return_exceptions=True)
            await importing
        assert server.proc.poll() is None, "the server process died"
    finally:
        if server is not None:
            server.stop()
            print(server.output()[-8000:])  # shown when the test fails
        pg.stop()

    unavailable = {"error": "database unavailable"}
    bad = [a for a in answers if not (a.status == 200 or (a.status == 503 and a.body == unavailable))
           and a.kind != "metrics"]
    assert not bad, f"answers other than 200 or 503 database unavailable: {bad[:5]}"
    slowest = max(answers, key=lambda a: a.ended - a.started)
    assert slowest.ended - slowest.started < ANSWER_BOUND, f"a request took too long: {slowest}"

    # Requests sent and answered while the database was down all failed fast with 503.
    outage = [a for a in answers if a.started > down and a.ended < up_started and a.kind not in ("metrics",)]
    assert len(outage) >= 20 and all(a.status == 503 for a in outage), outage[:5]
    assert during[0].status == 503 and during[0].body == unavailable
    assert during[1].status == 200 and "postroom_database_up 0.0" in during[1].body
    # The import in flight failed with the database (it committed some chunks: that is the other test).
    assert importing.result().status == 503
    # After the database came back, every request succeeded.
    late = [a for a in answers if a.started > recovered]
    assert len(late) >= 20 and all(a.status == 200 for a in late), [a for a in late if a.status != 200][:5]
    assert after[0].status == 200

    latencies = sorted(a.ended - a.started for a in outage)
    print(f"\noutage: {len(outage)} requests answered 503, median {latencies[len(latencies) // 2] * 1000:.1f} ms,"
          f" max {latencies[-1] * 1000:.1f} ms; slowest request overall {(slowest.ended - slowest.started) * 1000:.0f} ms"
          f" ({slowest.kind}, {slowest.status}); stop took {(down - down_started) * 1000:.0f} ms,"
          f" start {(up - up_started) * 1000:.0f} ms, recovered {(recovered - up) * 1000:.0f} ms after the start")


async def test_a_request_waiting_for_a_busy_pool_gets_503_instead_of_queueing_forever(dsn, settings, ws):
    from postroom.app import create_app
    from postroom.platform import db

    small = await db.create_pool(dsn, min_size=1, max_size=1, timeout=0.2)
    try:
        app = create_app(settings, dsn, pool=small)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=ws.headers) as c:
            params = {"workspace_id": ws.id}
            async with small.acquire():     # the only connection is busy (a stuck query, say)
                r = await c.get("/api/contacts.count", params=params)
                assert r.status_code == 503 and r.json() == {"error": "database unavailable"}
                assert r.headers["retry-after"] == "1"
            r = await c.get("/api/contacts.count", params=params)
            assert r.status_code == 200, r.text
    finally:
        await small.close()
