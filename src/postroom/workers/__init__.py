"""Long-running loops that work off PostgreSQL tables (outbox -> webhook deliveries, ...).

`postroom serve` runs them in its app lifespan (unless `--no-workers`); `postroom worker` runs
only them (postroom.workers.cli). Any number of processes of either kind can share one database:
the loops coordinate through PostgreSQL alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from postroom.platform.capability import Loop


# The loops' statements run against queue tables whose size swings by orders of magnitude within
# seconds (an import's burst of deliveries) while their statistics lag behind autovacuum. A plan
# cached for a prepared statement while a table was nearly empty (a scan of the whole table, a
# probe through the wrong index) would be kept as the table grows: measured, claims went from
# 2 ms to over 100 ms and deliveries fell behind. So their sessions plan every execution afresh;
# planning costs a fraction of a millisecond, and the API's own sessions are unaffected.
SESSION_SETTINGS = {"plan_cache_mode": "force_custom_plan"}
# webhooks: the dispatcher, the wake-up listener, the delivery loop; delivery: its listener, its
# claims and commits, attachment reads of its sends; segments: the builder and the outbox
# consumer (one connection a pass each); with room for a pass of each
POOL_MAX = 12


async def start(state, loops: Sequence[Loop]) -> list[asyncio.Task]:
    """Starts the capabilities' loops (their manifests', app.loops()) on a pool of the loops' own
    (`state.worker_pool`, opened here from `state.dsn`); returns their tasks. `close` (or `stop`)
    closes that pool.

    They stop gracefully when `state.workers_stop` (an asyncio.Event, created here when absent)
    is set: no new work is claimed, attempts in flight finish and are recorded. Cancelling the
    tasks stops them at once; what was in flight is then retried by any worker after its lease.
    """
    from postroom.platform import db

    stop = getattr(state, "workers_stop", None)
    if stop is None:
        stop = state.workers_stop = asyncio.Event()
    if getattr(state, "worker_pool", None) is None:
        state.worker_pool = await db.create_pool(state.dsn, min_size=1, max_size=POOL_MAX,
                                                 timeout=state.settings.db_timeout,
                                                 server_settings=SESSION_SETTINGS)
    return [task for loop in loops for task in loop(state.worker_pool, state.settings, stop)]


async def close(state) -> None:
    """Closes the loops' pool (after their tasks ended)."""
    pool, state.worker_pool = getattr(state, "worker_pool", None), None
    if pool is not None:
        await pool.close()


async def stop(state, tasks: list[asyncio.Task], timeout: float) -> None:
    """Asks the loops to stop, waits up to `timeout` seconds, then cancels what is left; closes
    their pool."""
    stop_event = getattr(state, "workers_stop", None)
    if stop_event is not None:
        stop_event.set()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await close(state)
