"""What every CLI command shares: the error it reports, the database it runs against, and the
process settings of long-running commands. The commands themselves are the capabilities' (their
manifests' `commands`) and postroom.cli's own."""

from __future__ import annotations

import gc
import signal
from contextlib import contextmanager

from postroom.platform.config import Settings


class CliError(Exception):
    pass


@contextmanager
def database(settings: Settings, *, serving: bool = False):
    """Yields a DSN: POSTROOM_DATABASE_URL, or the embedded server (started for the duration
    of the command, or reached where `postroom serve` already runs it)."""
    if settings.database_url:
        yield settings.database_url
        return
    from postroom.platform.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError, find_bin_dir

    try:
        find_bin_dir()
        server = EmbeddedPostgres(settings.data_dir)
        if serving:
            server.acquire_serve_lock()
        dsn = server.start()
    except EmbeddedPostgresError as exc:
        raise CliError(str(exc)) from None
    try:
        yield dsn
    finally:
        server.stop()


async def with_conn(dsn: str, work):
    from postroom.platform import db

    conn = await db.connect(dsn)
    try:
        return await work(conn)
    finally:
        await conn.close()


def _exit_cleanly(signum, frame):
    raise SystemExit(0)


def settle_memory() -> None:
    """For a long-running process, once its modules are loaded: what was allocated so far lives
    as long as the process, so it is moved out of the garbage collector's sight (gc.freeze), and
    the youngest generation is collected less often. Requests allocate many short-lived objects;
    with the defaults, full collections walk every loaded module's objects and show up as
    latency spikes under load."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def install_stop_handlers() -> None:
    """SIGINT/SIGTERM end the process through normal unwinding, so `finally` blocks run."""
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)


