"""The manifest type: everything one capability adds to Postroom, in one value.

Each capability declares its manifest in `<capability>/capability.py`; `app.py` keeps the one list
of manifests and the composition roots read it: the edge serves their endpoints and routes,
`platform.openapi` assembles their operations, path items and schemas into one document, the CLI
adds their commands, `workers` runs their loops, `postroom serve` runs their servers and `/metrics`
reads their probes. Nothing under `platform/` imports a capability: a capability reaches the
platform only through its manifest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from postroom.platform.http import Endpoint

# start(pool, settings, stop) -> the tasks of one process's loops; they end when `stop` is set
# (gracefully: nothing new is claimed, work in flight is finished and recorded) or when cancelled.
Loop = Callable[[Any, Any, asyncio.Event], list[asyncio.Task]]
# register(subparsers): adds argparse commands, each with set_defaults(run=fn(args, settings)).
Command = Callable[[Any], None]
# start(state) -> a started server other than HTTP (an object with `async close()`), or None when
# its settings leave it off. Run by the API process (`postroom serve`, with or without workers),
# once per process, for as long as the app runs; never by `postroom worker`.
Server = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Probe:
    """A figure read from the database at scrape time: `query` returns one row, and `collect`
    turns it into Prometheus metric families. When the query fails (a table of a pending
    migration), its figures are left out of that scrape."""

    query: str
    collect: Callable[[Mapping[str, Any]], Iterable[Any]]


@dataclass(frozen=True)
class Capability:
    name: str
    endpoints: Sequence[Endpoint] = ()            # /api/* operations
    routes: Sequence[Any] = ()                    # starlette Routes outside /api (public pages, probes)
    operations: Mapping[str, Any] = field(default_factory=dict)  # endpoint path -> platform.openapi.Op
    paths: Mapping[str, dict] = field(default_factory=dict)      # OpenAPI path items of the routes
    schemas: Mapping[str, dict] = field(default_factory=dict)    # OpenAPI component schemas
    commands: Sequence[Command] = ()
    loops: Sequence[Loop] = ()
    servers: Sequence[Server] = ()
    probes: Sequence[Probe] = ()
