"""Webhook delivery: the signing sender, the outbox dispatcher and the delivery worker.

Flow: a change writes its outbox event (`events`) in its own transaction. The dispatcher claims
unconsumed events of a workspace (events.dispatch: one pass per workspace at a time, through an
advisory lock), fans each out to the enabled subscriptions that want it as rows of
`webhook_deliveries`, and marks the events consumed, all in one transaction: an event is never
lost nor doubled, and a rolled-back write never had an event to dispatch. The delivery worker (a
platform.queue worker) claims due rows (`FOR UPDATE SKIP LOCKED`, in batches, bounded per
subscription), sends them concurrently through platform.outbound, and records the results in
bulk. Every loop has a one-pass function for tests and tools: `dispatch_once`,
`DeliveryWorker.run_once`, `prune_once`.

Ordering: per (subscription, subject) - the subject of contact and list events is the contact's
email - one delivery at a time, in event order; a delivery waits while an earlier one of its
subject is pending a retry or in flight. It is released when that one is delivered, fails for
good or is cancelled. Subjects and subscriptions do not wait for one another.
"""

from __future__ import annotations

import asyncio
import logging
import time

from postroom.events import dispatch
from postroom.platform import db, outbound, queue, secrets as sealed_secrets
from postroom.platform.errors import RuleError
from postroom.platform.outbound import Outcome
from postroom.webhooks import model, store

log = logging.getLogger("postroom.webhooks")


async def check_destination(url: str, resolve: outbound.Resolver = outbound.system_resolve,
                            timeout: float = 2.0) -> None:
    """At create/update: WebhookError for a URL whose host resolves to a refused address (the rule
    and its message are platform.outbound's)."""
    try:
        await outbound.check_destination(url, resolve, timeout)
    except RuleError as exc:
        raise model.WebhookError(exc.message, exc.status) from None


class Sender:
    """Signs and POSTs webhook bodies through one guarded outbound client (its connections are
    kept per receiver, `max_connections` idle ones each)."""

    def __init__(self, timeout: float, max_connections: int = 256, resolve: outbound.Resolver = outbound.system_resolve):
        self.client = outbound.Client(timeout, max_idle=max_connections, resolve=resolve,
                                      body_limit=model.RESPONSE_BODY_LIMIT)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post(self, url: str, message_id: str, key: bytes, body: bytes) -> Outcome:
        headers = model.signed_headers(key, message_id, int(time.time()), body)
        return await self.client.post(url, headers, body)


# ---------------------------------------------------------------- outbox -> deliveries

DISPATCH_BATCH = 1000


async def dispatch_once(pool, settings, batch: int = DISPATCH_BATCH, max_workspaces: int = 1000) -> tuple[int, int]:
    """One pass: one batch of undispatched events for each workspace that has some (skipping those
    another dispatcher holds). Returns (events, deliveries) created."""
    events = deliveries = 0
    for workspace_id in await dispatch.pending_workspaces(pool, store.CONSUMER, max_workspaces):
        done = await store.dispatch_workspace(pool, workspace_id, batch,
                                              model.max_attempts(settings.webhook_retry_schedule))
        if done is not None:
            events += done[0]
            deliveries += done[1]
    return events, deliveries


async def prune_once(pool, settings) -> int:
    """Deletes finished deliveries older than the retention; returns how many."""
    total = 0
    for _ in range(200):  # at most a million rows a call; the next call goes on
        n = await store.prune(pool, settings.webhook_retention_days, 5000)
        total += n
        if n < 5000:
            break
    return total


async def run_dispatcher(pool, settings, stop: asyncio.Event, prune_every: float = 3600.0) -> None:
    next_prune = time.monotonic()
    # the outbox and the queue grow from nothing to thousands of rows in seconds (see GrowthStats);
    # dispatched events count too: the outbox grows without subscriptions
    stats = db.GrowthStats(store.QUEUE_TABLES)

    async def one_pass() -> bool:
        nonlocal next_prune
        events, deliveries = await dispatch_once(pool, settings)
        stats.note(pool, max(events, deliveries))
        if time.monotonic() >= next_prune:
            next_prune = time.monotonic() + prune_every
            pruned = await prune_once(pool, settings)
            if pruned:
                log.info("pruned %d webhook deliveries older than %g days", pruned, settings.webhook_retention_days)
        return events > 0

    await queue.run_passes(stop, one_pass, settings.webhook_poll_interval, log, "webhook dispatcher")


# ---------------------------------------------------------------- deliveries

class DeliveryWorker(queue.Worker):
    """The delivery queue: claims due deliveries, signs and sends them, records the results;
    `run` until stopped, or `run_once` for one pass (platform.queue.Worker)."""

    name = "webhook delivery"
    log = log

    def __init__(self, pool, settings, sender: Sender | None = None):
        super().__init__(pool, concurrency=settings.webhook_concurrency, poll_interval=settings.webhook_poll_interval,
                         attempt_timeout=settings.webhook_timeout, channel=dispatch.channel(store.CONSUMER))
        self.settings = settings
        self.sender = sender or Sender(settings.webhook_timeout, max_connections=max(settings.webhook_concurrency, 1))
        self.key_bytes = settings.key_bytes
        self.lease = settings.webhook_timeout + settings.webhook_lease_grace
        self._keys: dict[tuple, bytes] = {}

    def _key(self, row) -> bytes:
        cache_key = (row["workspace_id"], row["subscription_id"], bytes(row["secret"]))
        key = self._keys.get(cache_key)
        if key is None:
            if len(self._keys) > 10_000:
                self._keys.clear()
            secret = store.open_secret(self.key_bytes, row["workspace_id"], row["subscription_id"], row["secret"])
            key = self._keys[cache_key] = model.secret_key(secret)
        return key

    async def attempt(self, row) -> tuple:
        try:
            body = model.body(row["message_id"], row["event_type"], row["workspace_id"], row["occurred_at"],
                              row["data"])
            outcome = await self.sender.post(row["url"], row["message_id"], self._key(row), body)
        except sealed_secrets.SecretError:
            outcome = Outcome(None, "", "the subscription's secret does not open with this SECRET_KEY")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: keep the worker alive, keep the row retryable
            log.exception("webhook attempt failed unexpectedly")
            outcome = Outcome(None, "", f"internal error: {type(exc).__name__}")
        if outcome.ok:
            status, delay = "delivered", 0.0
        elif outcome.refused:
            status, delay = "failed", 0.0
        else:
            status, delay = model.after_failure(row["attempts"], row["max_attempts"],
                                                self.settings.webhook_retry_schedule)
        return (row["workspace_id"], row["id"], row["attempts"], status, delay,
                outcome.status, outcome.body, outcome.error, row["row_ref"])

    async def claim(self, limit: int):
        cap = self.settings.webhook_subscription_concurrency
        return await store.claim(self.pool, limit, cap, min(cap, model.FAILING_SUBSCRIPTION_CONCURRENCY), self.lease)

    async def complete(self, results: list) -> None:
        await store.complete(self.pool, results)

    async def reclaim(self) -> int:
        return await store.reclaim(self.pool)

    async def aclose(self) -> None:
        await self.sender.aclose()


def start(pool, settings, stop: asyncio.Event) -> list[asyncio.Task]:
    """The webhook loops of one process: the outbox dispatcher (with the log's pruning) and the
    delivery worker. They end when `stop` is set (gracefully) or when cancelled."""
    worker = DeliveryWorker(pool, settings)
    return [
        asyncio.create_task(run_dispatcher(pool, settings, stop), name="webhooks-dispatcher"),
        asyncio.create_task(worker.run(stop), name="webhooks-delivery"),
    ]
