"""Numbered SQL migrations (NNNN_name.sql), applied in order under an advisory lock."""

from __future__ import annotations

import functools
import re
from importlib import resources

import asyncpg

# Any constant works; it only has to be the same for every Postroom process on one database.
_LOCK_ID = 0x706F7374726F6F6D  # "postroom"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@functools.cache
def available() -> tuple[tuple[int, str, str], ...]:
    """(version, file name, SQL) of every migration shipped with the package, in order. Read once
    per process: they are part of the installed package (GET /readyz asks on every probe)."""
    found = []
    for entry in resources.files(__package__).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    found.sort()
    return tuple(found)


async def pending(conn: asyncpg.Connection) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = set()
    if exists:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [name for version, name, _ in available() if version not in done]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply what is pending; returns the names applied. Safe to run from many processes at once."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in available():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied
