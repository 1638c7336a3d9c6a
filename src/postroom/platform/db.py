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


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20, timeout: float = 5.0) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        timeout=timeout,
        command_timeout=60,
        max_inactive_connection_lifetime=300,
    )
