"""Runs an ASGI app on a free port of 127.0.0.1 for the duration of a block: the one server every
fake at the edge of the world (webhook receiver, HTTP email providers) is served by."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn


class QuietServer(uvicorn.Server):
    def capture_signals(self):  # the test process keeps its own signal handling
        return contextlib.nullcontext()

    @property
    def port(self) -> int:
        return self.servers[0].sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def serve(app, **config) -> AsyncIterator[QuietServer]:
    """`config`: more uvicorn.Config settings (ssl_certfile for HTTPS, say)."""
    server = QuietServer(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                        **config))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():  # it could not start: say why instead of waiting forever
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        await task
