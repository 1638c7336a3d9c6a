"""`postroom worker`: the background workers only (webhook deliveries, ...), no HTTP server.

Runs until SIGINT or SIGTERM: the first stops claiming work and lets attempts in flight finish
(bounded by the webhook timeout); a second one stops at once (unfinished attempts are retried by
any worker once their lease expires). On the embedded database, the server this command started
is stopped on the way out.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from types import SimpleNamespace


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "worker", help="run the background workers only (webhook deliveries, ...); "
                       "any number of workers and `serve --no-workers` processes can share one database")
    p.set_defaults(run=cmd_worker)


def cmd_worker(args, settings) -> None:
    from postroom.platform.commands import database, install_stop_handlers, with_conn
    from postroom.platform.migrations import migrate

    install_stop_handlers()  # a signal during start-up still unwinds (and stops an embedded server)
    with database(settings) as dsn:
        settings.ensure_secret_key()
        applied = asyncio.run(with_conn(dsn, migrate))
        if applied:
            print(f"applied migrations: {', '.join(applied)}", file=sys.stderr)
        import uvloop

        # uvloop, as `serve` runs on: a worker's time goes to sockets (deliveries and the database)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run(dsn, settings))
        install_stop_handlers()  # asyncio restored the defaults: keep unwinding cleanly to the end


async def run(dsn: str, settings) -> None:
    from postroom import app, workers

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    forced = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            forced.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    state = SimpleNamespace(settings=settings, dsn=dsn, workers_stop=stop)
    try:
        tasks = await workers.start(state, app.loops())
        from postroom.platform.commands import settle_memory

        settle_memory()  # now that the loops' modules are loaded
        print(f"postroom worker: running {', '.join(t.get_name() for t in tasks)}", file=sys.stderr, flush=True)
        await stop.wait()
        print("postroom worker: stopping", file=sys.stderr, flush=True)
        stopping = asyncio.ensure_future(workers.stop(state, tasks, timeout=settings.webhook_timeout + 5.0))
        forcing = asyncio.ensure_future(forced.wait())
        await asyncio.wait({stopping, forcing}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stopping.cancel()
        forcing.cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await workers.close(state)
    print("postroom worker: stopped", file=sys.stderr, flush=True)
