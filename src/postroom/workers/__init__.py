"""Long-running loops that work off PostgreSQL tables (outbox -> webhook deliveries, ...)."""

from __future__ import annotations

import asyncio


async def start(state) -> list[asyncio.Task]:
    """Starts every worker loop on the app's pool; returns their tasks (cancelled at shutdown)."""
    return []
