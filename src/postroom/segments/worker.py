"""Segment membership in the background: the build loop and the outbox consumer.

Build loop: runs pending scans (create, tree change, rebuild, daily recompute) one chunk of
contacts a transaction, in email order (store.scan_step), and starts the daily recompute of
relative-date segments when their time comes (store.start_recomputes). A chunk holds its
segment's row lock, and a tree change resets the scan under that lock: a superseded build stops
at its next chunk and the new version starts from the first contact.

Outbox consumer (events.dispatch, consumer "segments"): takes a batch of a workspace's events in
order, coalesces them per contact, and re-checks each contact only against the live segments
whose trees an event can affect (model.plan / Tree.depends), with one membership statement per
affected segment over the batch's contacts. The changes, their timeline entries, their outbox
events and the consumer's position commit together. The incremental check reads the current tree,
so a contact that changes during a build is judged by the new version. Every loop has a one-pass
function for tests and tools: `scan_once`, `consume_once`, `recompute_once`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging

from postroom.events import dispatch
from postroom.platform import db, queue
from postroom.segments import model, store

log = logging.getLogger("postroom.segments")

POLL = 0.2            # seconds between polls when there is nothing to do
CONSUME_BATCH = 1000  # outbox events per workspace per pass
SCAN_STEPS = 50       # chunks per pass of the build loop before it looks at recomputes again


async def consume_workspace(pool, workspace_id: str, batch: int = CONSUME_BATCH) -> tuple[int, int, int] | None:
    """(events, joined, left) of one batch of the workspace; None when another pass holds it."""
    async with dispatch.locked(pool, store.CONSUMER, workspace_id) as conn:
        if conn is None:
            return None
        rows = await dispatch.claim_batch(conn, store.CONSUMER, workspace_id, batch)
        everyone, by_key = model.plan(rows)
        joined = left = 0
        if everyone or by_key:
            for seg in await store.affected(conn, workspace_id, sorted(by_key), bool(everyone)):
                emails = set(everyone)
                for key in seg["depends"]:
                    emails |= by_key.get(key, set())
                if emails:
                    j, k = await store.apply_listed(conn, workspace_id, seg, model.parse_tree(seg["tree"]),
                                                    sorted(emails))
                    joined += j
                    left += k
        return len(rows), joined, left


async def consume_once(pool, batch: int = CONSUME_BATCH, max_workspaces: int = 1000) -> int:
    """One pass over every workspace with unconsumed events; returns how many were consumed."""
    total = 0
    for workspace_id in await dispatch.pending_workspaces(pool, store.CONSUMER, max_workspaces):
        done = await consume_workspace(pool, workspace_id, batch)
        if done is not None:
            total += done[0]
    return total


async def scan_once(pool, steps: int = SCAN_STEPS, chunk: int = store.CHUNK) -> int:
    """Up to `steps` chunks of pending scans; returns how many ran."""
    ran = 0
    while ran < steps:
        if await store.scan_step(pool, chunk) is None:
            break
        ran += 1
    return ran


async def recompute_once(pool, now: _dt.datetime | None = None) -> int:
    """Starts the daily recomputes due at `now` (the clock: real time when None)."""
    return await store.start_recomputes(pool, now or _dt.datetime.now(_dt.timezone.utc))


async def _run(name: str, once, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            busy = await once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("segments %s pass failed; retrying", name)
            await queue.pause(stop, 1.0)
            continue
        if not busy:
            await queue.pause(stop, POLL)


# The tables a build fills from nothing (memberships, with their timeline entries and events):
# their statistics are refreshed as they grow (platform.db.GrowthStats).
GROWING = ("contact_segments", "contact_timeline", "events")


def start(pool, settings, stop: asyncio.Event) -> list[asyncio.Task]:
    """The segment loops of one process: the builder (scans and daily recomputes) and the outbox
    consumer. They end when `stop` is set or when cancelled."""
    stats = db.GrowthStats(GROWING)

    async def build() -> int:
        ran = await recompute_once(pool) + await scan_once(pool)
        stats.note(pool, ran * store.CHUNK)
        return ran

    return [
        asyncio.create_task(_run("build", build, stop), name="segments-build"),
        asyncio.create_task(_run("outbox", lambda: consume_once(pool), stop), name="segments-outbox"),
    ]
