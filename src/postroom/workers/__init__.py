"""Long-running loops that work off PostgreSQL tables (outbox -> webhook deliveries, ...).

`postroom serve` runs them in its app lifespan (unless `--no-workers`); `postroom worker` runs
only them (postroom.workers.cli). Any number of processes of either kind can share one database:
the loops coordinate through PostgreSQL alone.
"""

from __future__ import annotations

import asyncio


async def start(state) -> list[asyncio.Task]:
    """Starts every worker loop on the app's pool; returns their tasks.

    They stop gracefully when `state.workers_stop` (an asyncio.Event, created here when absent)
    is set: no new work is claimed, attempts in flight finish and are recorded. Cancelling the
    tasks stops them at once; what was in flight is then retried by any worker after its lease.
    """
    from postroom.webhooks import delivery as webhooks

    stop = getattr(state, "workers_stop", None)
    if stop is None:
        stop = state.workers_stop = asyncio.Event()
    return [*webhooks.start(state.pool, state.settings, stop)]


async def stop(state, tasks: list[asyncio.Task], timeout: float) -> None:
    """Asks the loops to stop, waits up to `timeout` seconds, then cancels what is left."""
    stop_event = getattr(state, "workers_stop", None)
    if stop_event is not None:
        stop_event.set()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
