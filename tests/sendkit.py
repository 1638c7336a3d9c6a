"""What the delivery tests share (imported as `sendkit`): a fake integration, an enqueue of a
plain message, a worker on the fake provider, and reads of what the queue and history hold."""

from __future__ import annotations

import dataclasses

from postroom.delivery import store
from postroom.delivery.model import Outgoing, Source
from postroom.delivery.providers.fake import Fake
from postroom.delivery.worker import SendWorker

SENDER = {"id": "0d9a5b4e-0000-4000-8000-000000000001", "email": "noreply@acme.test", "name": "Acme",
          "is_default": True}


def fast(settings, **values):
    """The test settings with a fast queue: backoff in milliseconds, fake kind accepted."""
    base = dict(delivery_retry_base=0.01, delivery_fake_provider=True, delivery_poll_interval=0.05,
                delivery_breaker_cooldown=0.3)
    return dataclasses.replace(settings, **{**base, **values})


async def make_integration(pool, settings, ws_id: str, rate: int = 6000, concurrency: int | None = None,
                           name: str = "Fake relay") -> str:
    async with pool.acquire() as conn:
        row = await store.create_integration(conn, settings.key_bytes, ws_id, name, "fake", {"label": "x"},
                                             {"api_key": "k-secret"}, [SENDER], rate, concurrency)
    return row["id"]


async def enqueue(pool, settings, ws_id: str, integration_id: str, email: str = "jane@example.com",
                  source: Source = Source.TRANSACTIONAL, **extra) -> str:
    out = Outgoing(workspace_id=ws_id, integration_id=integration_id, contact_email=email,
                   from_address="noreply@acme.test", from_name="Acme", subject=extra.pop("subject", "Hi Jane"),
                   html="<p>code X1</p>", text="code X1", template_id="welcome", template_version=3,
                   source_type=source, source_id=extra.pop("source_id", "welcome_email"),
                   data=extra.pop("data", {"code": "X1"}), **extra)
    async with pool.acquire() as conn:
        message_id, _ = await store.enqueue(conn, settings.key_bytes, out, "fake",
                                            settings.delivery_max_attempts)
    return message_id


def worker(pool, settings, fake: Fake) -> SendWorker:
    return SendWorker(pool, settings, provider_factory=fake.factory)


async def deliver(pool, settings) -> None:
    """Everything queued sent (or failed) by a worker on the real providers, with a fast queue."""
    w = SendWorker(pool, fast(settings))
    try:
        await drain(w)
    finally:
        await w.aclose()


async def drain(w: SendWorker, passes: int = 200) -> None:
    """run_once until a pass finds nothing and nothing is waiting for a retry."""
    import asyncio

    for _ in range(passes):
        if not await w.run_once():
            if not await w.pool.fetchval("SELECT count(*) FROM email_queue"):
                return
            await asyncio.sleep(0.02)
    raise AssertionError("the queue did not drain")


async def message(pool, ws_id: str, message_id: str):
    return await pool.fetchrow("SELECT * FROM message_history WHERE workspace_id = $1 AND id = $2", ws_id, message_id)


async def queue_row(pool, ws_id: str, message_id: str):
    return await pool.fetchrow("SELECT * FROM email_queue WHERE workspace_id = $1 AND message_id = $2", ws_id, message_id)


async def email_events(pool, ws_id: str) -> list:
    rows = await pool.fetch("SELECT type, subject, data FROM events WHERE workspace_id = $1 AND type LIKE 'email.%'"
                            " ORDER BY id", ws_id)
    return [(r["type"], r["subject"], r["data"]) for r in rows]


async def timeline_of(pool, ws_id: str, message_id: str) -> list:
    rows = await pool.fetch("SELECT kind, changes FROM contact_timeline WHERE workspace_id = $1"
                            " AND entity_type = 'message_history' AND entity_id = $2 ORDER BY id", ws_id, message_id)
    return [(r["kind"], r["changes"]) for r in rows]


