"""The asyncpg pool and the codecs every connection shares."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import msgspec

log = logging.getLogger("postroom.db")

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


def _encode_jsonb(value) -> str:
    return _json_encode(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("jsonb", "json"):
        await conn.set_type_codec(
            name, encoder=_encode_jsonb, decoder=_json_decode, schema="pg_catalog", format="text"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg already rolls back an open transaction and drops listeners;
    Postroom keeps no session state on pooled connections (no SET, LISTEN or advisory locks:
    those get connections of their own), so the default reset query would be a wasted round trip."""


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


class Pool(asyncpg.Pool):
    """asyncpg's pool, with waiting for a connection bounded by default.

    Plain `acquire()` waits for a free connection for as long as it takes. When every connection
    is busy (a database that stopped answering, or more demand than the pool), requests would
    queue without end; here a caller that has to wait gives up after `acquire_timeout` seconds
    with asyncio.TimeoutError, which the edge answers with 503 `database unavailable`. A free
    connection is taken at once, without the timer (asyncio's costs tens of microseconds per call,
    too much for every request); replacing a connection the database closed is bounded by the
    connect timeout.
    """

    __slots__ = ("_acquire_timeout",)

    def __init__(self, *args, acquire_timeout: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None):
        if timeout is None and not self.get_idle_size():
            timeout = self._acquire_timeout
        return super().acquire(timeout=timeout)


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20, timeout: float = 5.0,
                      server_settings: dict[str, str] | None = None) -> asyncpg.Pool:
    """`timeout` bounds both opening a connection and waiting for a busy pool (see Pool).

    During an outage requests fail fast: connections the server closed are noticed by asyncpg
    and replaced on the next acquire; a refused connection fails at once, an unanswered one
    after `timeout`; once the server is back, new connections succeed (no restart needed)."""
    return await Pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300,
        init=_init_connection,
        reset=_keep_session,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        acquire_timeout=timeout,
        timeout=timeout,
        server_settings=server_settings,
        command_timeout=60,
    )


# ---------------------------------------------------------------- statistics of tables filled in bulk

TABLES_SIZE = "SELECT coalesce(max(greatest(reltuples, 0)), 0)::bigint FROM pg_class WHERE oid = ANY($1::regclass[])"


class GrowthStats:
    """Planner statistics of tables that a process fills in bulk, refreshed as they grow.

    Autovacuum analyzes a changed table a minute or more later; until then a table filled from
    empty is planned as if it were empty. Measured: after an import of 20,000 contacts, the first
    page of contacts.list sorted the whole workspace (43 ms) instead of reading 20 index entries,
    and a delivery claim probed through the wrong index (2 ms -> 50 ms as the queue grew).

    Call `note(pool, n)` after writing n rows: once the rows noted since the last refresh reach
    the tables' size at that refresh (so they have about doubled), and at least `minimum`, an
    ANALYZE of the tables starts in the background (one at a time; a table autovacuum holds is
    skipped). Logarithmic in the growth: a handful of refreshes from empty to millions of rows,
    none in a steady state. A failed refresh is tried again on the next note.
    """

    def __init__(self, tables: tuple[str, ...], minimum: int = 5000) -> None:
        self.tables = tables
        self.minimum = minimum
        self.threshold = minimum
        self.added = 0
        self._running: asyncio.Task | None = None

    def note(self, pool, rows: int) -> asyncio.Task | None:
        """Counts `rows`; returns the refresh task when this call started one."""
        self.added += rows
        if self.added < self.threshold or (self._running is not None and not self._running.done()):
            return None
        self.added = 0
        self._running = asyncio.create_task(self._refresh(pool))
        return self._running

    async def _refresh(self, pool) -> None:
        try:
            async with pool.acquire() as conn:
                await conn.execute(f"ANALYZE (SKIP_LOCKED) {', '.join(self.tables)}")
                size = await conn.fetchval(TABLES_SIZE, list(self.tables))
            self.threshold = max(self.minimum, int(size))
        except Exception as exc:  # a refresh is an optimisation: say so and try again later
            log.warning("refreshing the statistics of %s failed: %s: %s", ", ".join(self.tables),
                        type(exc).__name__, exc)
            self.added = self.threshold
