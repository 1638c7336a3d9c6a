"""The send queue against real `postroom worker` processes (delivery-contract 5.2, 5.3, 5.6):

- a worker SIGKILLed mid-batch: after a new worker ran, every queued message reached the SMTP sink,
  only the rows that were claimed and not yet recorded at the kill went out again (with the
  same Message-ID), and the message history holds each message sent once with one email.sent;
- two workers at once on one queue: no message is sent twice, and both took part.

Each test runs its workers on a database of its own (other tests leave queued rows behind whose
integrations point nowhere), against the aiosmtpd sink of tests/fakes/smtp_sink.py made slow: it
takes each message, then waits before its 250, so a batch is certainly in flight at the kill. The
rows still claimed at the kill whose message had reached the sink (answered or not: outcomes are
committed in groups) are exactly the ones the redelivery duplicates.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import asyncpg
import pytest

from conftest import SECRET, _with_database
from fakes.smtp_sink import Sink, serving
from postroom.delivery import model, store
from postroom.delivery.model import Outgoing, Source
from postroom.delivery.worker import SendWorker
from postroom.platform import db
from postroom.platform.migrations import migrate
from postroom.workspaces import store as ws_store

COUNT = 400               # messages queued
CONNECTIONS = 8           # the integration's max_concurrency: calls in flight per worker process
SINK_DELAY = 0.05         # seconds the sink holds each message before its 250
LEASE = "3s"              # POSTROOM_DELIVERY_LEASE of the workers (5 min by default)
LEASE_SECONDS = 3.0
WS = "sigkill"
FROM = "orders@shop.example.com"


class SlowSink(Sink):
    """Takes the message (it is received from then on), then waits SINK_DELAY before the 250, as a
    relay writing to disk does. It also notes which process sent each message: the client
    socket's owner among `pids`, found once per connection through /proc."""

    def __init__(self, pids: list[int] | None = None):
        super().__init__()
        self.pids = pids if pids is not None else []
        self.sender_of: dict[int, int | None] = {}    # client port -> pid
        self.pid_of_mail: list[int | None] = []       # parallel to `received`
        self.arrived_at: list[float] = []             # parallel to `received`: wall-clock time taken

    async def handle_DATA(self, server, session, envelope):
        port = session.peer[1]
        if self.pids and port not in self.sender_of:
            self.sender_of[port] = _owner(port, self.port, self.pids)
        reply = await super().handle_DATA(server, session, envelope)
        self.pid_of_mail.append(self.sender_of.get(port))
        self.arrived_at.append(time.time())
        await asyncio.sleep(SINK_DELAY)
        return reply


def _owner(port: int, server_port: int, pids: list[int]) -> int | None:
    """The pid among `pids` holding the open client socket of 127.0.0.1:`port` to `server_port`
    (a closed one of an earlier connection on the same port lingers with inode 0)."""
    inode = None
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            if (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)) == (port, server_port) \
                    and fields[9] != "0":
                inode = fields[9]
                break
    if inode is None:
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


@pytest.fixture
async def own_db(server_url):
    """A migrated database of this test's own; dropped at the end (workers killed first)."""
    name = f"postroom_sigkill_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    try:
        conn = await db.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def own_pool(own_db):
    p = await db.create_pool(own_db, min_size=1, max_size=4)
    yield p
    await p.close()


class Worker:
    """`postroom worker` as a subprocess, its output kept in a file."""

    def __init__(self, dsn: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
        env.update(POSTROOM_DATABASE_URL=dsn, POSTROOM_SECRET_KEY=SECRET, POSTROOM_DELIVERY_LEASE=LEASE,
                   POSTROOM_DELIVERY_POLL_INTERVAL="200ms")
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-m", "postroom.cli", "worker"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def alive(self) -> None:
        assert self.proc.poll() is None, f"the worker exited ({self.proc.returncode}):\n{self.output()}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def stop(self) -> None:
        """SIGTERM (a graceful stop: it says QUIT to the sink, which runs in this loop, so the wait
        must not block it), SIGKILL after 40 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def queue_messages(pool, settings, sink_port: int) -> dict[str, str]:
    """The workspace, an SMTP integration to the sink, COUNT transactional messages queued;
    returns recipient -> message id."""
    async with pool.acquire() as conn:
        await ws_store.create_with_owner(conn, WS, "Crash test", {}, None)
        integration = await store.create_integration(
            conn, settings.key_bytes, WS, "Sink", "smtp", {"host": "127.0.0.1", "port": sink_port, "use_tls": False},
            {}, [{"id": str(uuid.uuid4()), "email": FROM, "name": "Shop", "is_default": True}], 6_000_000, CONNECTIONS)
        ids = {}
        async with conn.transaction():
            for i in range(COUNT):
                to = f"r{i:04d}@crash.example.com"
                ids[to], _ = await store.enqueue(conn, settings.key_bytes, Outgoing(
                    workspace_id=WS, integration_id=integration["id"], contact_email=to, from_address=FROM,
                    from_name="Shop", subject=f"Order {i}", html=f"<p>Order {i} is on its way</p>",
                    text=f"Order {i} is on its way", template_id="order", template_version=1,
                    source_type=Source.TRANSACTIONAL, source_id="order_confirmed", data={"order": i}), "smtp")
    return ids


async def wait_until(condition, what: str, timeout: float, workers: list[Worker]) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        for w in workers:
            w.alive()
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.005)


async def queue_empty(pool) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM email_queue")


async def history_checks(pool, ids: dict[str, str]) -> dict[str, int]:
    """Each message sent once in the history: status sent, one update_message_history timeline
    entry, one email.sent event, no email.failed. Returns message id -> attempts."""
    rows = await pool.fetch("SELECT id, contact_email, status, sent_at, attempts FROM message_history"
                            " WHERE workspace_id = $1", WS)
    assert {r["contact_email"]: r["id"] for r in rows} == ids
    assert collections.Counter(r["status"] for r in rows) == {"sent": COUNT}
    assert all(r["sent_at"] is not None for r in rows)
    timeline = collections.Counter(
        (r["entity_id"], r["kind"]) for r in await pool.fetch(
            "SELECT entity_id, kind FROM contact_timeline WHERE workspace_id = $1 AND entity_type = 'message_history'", WS))
    events = collections.Counter(
        (r["data"]["message_id"], r["type"]) for r in await pool.fetch(
            "SELECT type, data FROM events WHERE workspace_id = $1 AND type LIKE 'email.%'", WS))
    for message_id in ids.values():
        assert timeline[(message_id, "insert_message_history")] == 1, message_id
        assert timeline[(message_id, "update_message_history")] == 1, message_id
        assert events[(message_id, "email.sent")] == 1, message_id
    assert sum(events.values()) == COUNT, "an email.* event other than one email.sent per message"
    assert sum(timeline.values()) == 2 * COUNT
    return {r["id"]: r["attempts"] for r in rows}


async def test_worker_killed_mid_batch_redelivers_only_the_batch_in_flight(own_db, own_pool, settings):
    pool = own_pool
    sink = SlowSink()
    workers: list[Worker] = []
    async with serving(sink):
        ids = await queue_messages(pool, settings, sink.port)
        try:
            first = Worker(own_db)
            workers.append(first)
            # some but not all: a quarter of the messages at the sink
            await wait_until(lambda: _true(len(sink.received) >= COUNT // 4), "the first worker's sends", 30, workers)
            first.kill()
            assert len(sink.received) < COUNT, "every message was sent before the kill"
            await asyncio.sleep(0.3)     # what was on the wire before the kill reaches the sink
            # the rows claimed and not recorded when the worker died: its batch in flight
            in_flight = await pool.fetch("SELECT message_id, contact_email, attempts, updated_at, lease_expires_at,"
                                         " lease_expires_at > now() AS leased FROM email_queue"
                                         " WHERE status = 'processing'")
            before = collections.Counter(m.rcpt_tos[0] for m in sink.received)
            second = Worker(own_db)
            workers.append(second)
            await wait_until(lambda: queue_empty(pool), "the queue emptied by the second worker", 30, [second])
            await wait_until(lambda: _true(len(sink.received) >= COUNT + len(set(before) & _emails(in_flight))),
                             "the redelivered messages at the sink", 10, [second])
            await asyncio.sleep(0.2)     # nothing more arrives
        finally:
            await asyncio.gather(*(w.stop() for w in workers))

    # The window a kill can duplicate (5.6): the calls in flight (at most max_concurrency of the
    # integration in one process) and the calls that ended but whose outcomes wait for the group
    # commit (it starts at flush_max outcomes or after flush_delay; calls in flight meanwhile end
    # during it). One claim alone is at most max_concurrency rows here (free slots < CLAIM_MAX).
    window = SendWorker.flush_max + 2 * CONNECTIONS
    claimed = _emails(in_flight)
    print(f"\nat the kill: {len(before)} at the sink, {len(claimed)} claimed and unrecorded;"
          f" window {window} (flush_max {SendWorker.flush_max} + 2 x max_concurrency {CONNECTIONS},"
          f" claim at most {model.CLAIM_MAX}); lease {LEASE}")
    assert claimed, "no batch was in flight at the kill"
    assert all(r["attempts"] == 1 and r["leased"] for r in in_flight)
    # the lease in force is the one the environment set (claim time + POSTROOM_DELIVERY_LEASE)
    assert {(r["lease_expires_at"] - r["updated_at"]).total_seconds() for r in in_flight} == {LEASE_SECONDS}
    assert len(claimed) <= window
    # claimed rows whose mail had not reached the sink: calls started and unfinished, or not started
    assert len(claimed - set(before)) <= CONNECTIONS
    assert not any(n > 1 for n in before.values()), "a message went out twice before the kill"

    got = collections.Counter(m.rcpt_tos[0] for m in sink.received)
    assert set(got) == set(ids), "a queued message never reached the sink"
    twice = {to for to, n in got.items() if n > 1}
    print(f"received twice: {len(twice)}")
    assert max(got.values()) <= 2
    # exactly the in-flight rows that had reached the sink go out again; nothing else does
    assert twice == claimed & set(before)
    assert len(twice) <= window
    lease_end = {r["contact_email"]: r["lease_expires_at"].timestamp() for r in in_flight}
    for to in twice:
        (first_at, first_copy), (second_at, second_copy) = [
            (at, m) for at, m in zip(sink.arrived_at, sink.received) if m.rcpt_tos[0] == to]
        assert first_at < lease_end[to] <= second_at + 0.05, "sent again before its lease ran out"
        assert first_copy.header("Message-ID") == second_copy.header("Message-ID") == f"<{ids[to]}@shop.example.com>"
        assert first_copy.header("X-Message-ID") == second_copy.header("X-Message-ID") == ids[to]
        assert first_copy.header("Subject") == second_copy.header("Subject")

    attempts = await history_checks(pool, ids)
    # a reclaimed row counts its dead worker's call as an attempt (5.2)
    assert {to for to, message_id in ids.items() if attempts[message_id] == 2} == claimed
    assert all(attempts[message_id] in (1, 2) for message_id in ids.values())
    assert await queue_empty(pool)


async def test_two_workers_at_once_send_each_message_once(own_db, own_pool, settings):
    pool = own_pool
    pids: list[int] = []
    sink = SlowSink(pids)
    workers: list[Worker] = []
    async with serving(sink):
        ids = await queue_messages(pool, settings, sink.port)
        try:
            workers.extend([Worker(own_db), Worker(own_db)])
            pids.extend(w.pid for w in workers)
            await wait_until(lambda: queue_empty(pool), "the queue emptied by two workers", 30, workers)
            await wait_until(lambda: _true(len(sink.received) >= COUNT), "every message at the sink", 10, workers)
            await asyncio.sleep(0.3)     # a duplicate would arrive now
        finally:
            await asyncio.gather(*(w.stop() for w in workers))

    got = collections.Counter(m.rcpt_tos[0] for m in sink.received)
    assert set(got) == set(ids)
    assert [to for to, n in got.items() if n > 1] == []
    per_worker = collections.Counter(sink.pid_of_mail)
    print(f"\nsent per worker: {dict(per_worker)}")
    assert set(per_worker) == set(pids), f"not both workers sent: {dict(per_worker)}"
    attempts = await history_checks(pool, ids)
    assert set(attempts.values()) == {1}
    assert await queue_empty(pool)


async def _true(value: bool) -> bool:
    return value


def _emails(rows) -> set[str]:
    return {r["contact_email"] for r in rows}
