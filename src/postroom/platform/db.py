"""The asyncpg pool and the codecs every connection shares."""

from __future__ import annotations

import asyncpg
import msgspec

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
