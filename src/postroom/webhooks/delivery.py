"""Webhook delivery: the guarded HTTP sender, the outbox dispatcher and the delivery worker.

Flow: a change writes its outbox event (`events`) in its own transaction. The dispatcher claims
undispatched events of a workspace (one dispatcher per workspace at a time, through an advisory
lock), fans each out to the enabled subscriptions that want it as rows of `webhook_deliveries`,
and marks the events dispatched, all in one transaction: an event is never lost nor doubled,
and a rolled-back write never had an event to dispatch. The delivery worker claims due rows
(`FOR UPDATE SKIP LOCKED`, in batches, bounded per subscription), sends them concurrently,
and records the results in bulk. Every loop has a one-pass function for tests and tools:
`dispatch_once`, `DeliveryWorker.run_once`, `prune_once`.

Ordering: per (subscription, subject) - the subject of contact and list events is the contact's
email - one delivery at a time, in event order; a delivery waits while an earlier one of its
subject is pending a retry or in flight. It is released when that one is delivered, fails for
good or is cancelled. Subjects and subscriptions do not wait for one another.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import quote, unquote, urlsplit

import httpcore

from postroom.platform import db, secrets as sealed_secrets
from postroom.webhooks import model, store

log = logging.getLogger("postroom.webhooks")

Resolver = Callable[[str, int], Awaitable[list[str]]]


class Refused(Exception):
    """The destination is a link-local or cloud metadata address."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


async def vetted_addresses(host: str, port: int, resolve: Resolver) -> list[str]:
    """The addresses to connect to for `host`; Refused when any of them is refused (a name that
    resolves to a metadata address is not trusted with its other addresses either)."""
    addresses = [host] if model.ip_literal(host) is not None else await resolve(host, port)
    for address in addresses:
        if model.refused_address(ipaddress.ip_address(address)):
            raise Refused(model.refused_message(host, address))
    if not addresses:
        raise OSError(f"{host} has no address")
    return addresses


async def check_destination(url: str, resolve: Resolver = system_resolve, timeout: float = 2.0) -> None:
    """At create/update: refuses a URL whose host resolves to a refused address. A name that does
    not resolve (yet) is accepted; every delivery checks again when it connects."""
    parts = urlsplit(url)
    try:
        async with asyncio.timeout(timeout):
            await vetted_addresses(parts.hostname, parts.port or 443, resolve)
    except Refused as exc:
        raise model.WebhookError(exc.message) from None
    except (OSError, TimeoutError, UnicodeError, ValueError):
        pass


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Every new connection resolves its host here and connects only to vetted addresses, so the
    check holds at delivery time (a name re-pointed after creation is caught, and the address
    checked is the address connected to). TLS still verifies the certificate for the host name."""

    def __init__(self, resolve: Resolver):
        self._inner = httpcore.AnyIOBackend()
        self._resolve = resolve

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last: Exception | None = None
        for address in (await vetted_addresses(host, port, self._resolve))[:4]:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last  # type: ignore[misc]

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise Refused("unix sockets are not webhook destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True)
class Outcome:
    status: int | None          # the receiver's HTTP status, None when there was no answer
    body: str                   # the first 1 KB of its answer
    error: str | None           # why the attempt failed (None on any answer that is not a failure)
    refused: bool = False       # the destination is forbidden: retrying will not help

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


def _clean(text: str) -> str:
    return text.replace("\x00", "")


def _target(url: str):
    """(httpcore URL, Host header, Authorization header or None) of a stored URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port
    ascii_host = host if model.ip_literal(host) is not None else host.encode("idna").decode("ascii")
    shown = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    host_header = shown if port is None else f"{shown}:{port}"
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe="!#$%&'()*+,/:;=?@[]~")
    core_url = httpcore.URL(scheme=scheme.encode(), host=ascii_host.encode(), port=port, target=target.encode())
    auth = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = b"Basic " + base64.b64encode(credentials.encode())
    return core_url, host_header.encode(), auth


def _ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    with contextlib.suppress(Exception):
        import certifi

        context.load_verify_locations(certifi.where())
    return context


class Sender:
    """Signs and POSTs webhook bodies: no redirects, no proxies, one timeout for the whole
    attempt, and no connection to a refused address.

    Keeps its own idle HTTP/1.1 connections per origin (httpcore's AsyncHTTPConnection): a LIFO
    stack each, so the cost of a request does not grow with the number of connections open
    (httpcore's own pool scans them all for every request, which collapses at a few dozen)."""

    SWEEP_EVERY = 15.0

    def __init__(self, timeout: float, max_connections: int = 256, resolve: Resolver = system_resolve):
        self.timeout = timeout
        self.max_idle = max(max_connections, 1)       # idle connections kept per origin
        self._ssl = _ssl_context()
        self._backend = _GuardedBackend(resolve)
        self._idle: dict[tuple, list[httpcore.AsyncHTTPConnection]] = {}
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY

    async def aclose(self) -> None:
        stacks, self._idle = self._idle, {}
        for stack in stacks.values():
            for conn in stack:
                with contextlib.suppress(Exception):
                    await conn.aclose()

    async def _sweep(self) -> None:
        """Closes idle connections that expired or that their server closed."""
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY
        for key, stack in list(self._idle.items()):
            keep = []
            for conn in stack:
                if conn.is_idle() and not conn.has_expired():
                    keep.append(conn)
                else:
                    with contextlib.suppress(Exception):
                        await conn.aclose()
            if keep:
                self._idle[key] = keep
            else:
                self._idle.pop(key, None)

    async def _connection(self, url: httpcore.URL):
        key = (url.scheme, url.host, url.port)
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            if conn.is_idle() and not conn.has_expired():
                return key, conn
            with contextlib.suppress(Exception):
                await conn.aclose()
        origin = httpcore.Origin(url.scheme, url.host, url.port or (443 if url.scheme == b"https" else 80))
        conn = httpcore.AsyncHTTPConnection(origin, ssl_context=self._ssl, keepalive_expiry=30.0,
                                            network_backend=self._backend)
        return key, conn

    async def post(self, url: str, message_id: str, key: bytes, body: bytes) -> Outcome:
        try:
            core_url, host_header, auth = _target(url)
        except (ValueError, UnicodeError) as exc:
            return Outcome(None, "", f"invalid URL: {exc}", refused=True)
        headers = [(b"Host", host_header), *model.signed_headers(key, message_id, int(time.time()), body),
                   (b"Content-Length", str(len(body)).encode())]
        if auth is not None:
            headers.append((b"Authorization", auth))
        limit = self.timeout
        request = httpcore.Request(b"POST", core_url, headers=headers, content=body, extensions={
            "timeout": {"connect": limit, "read": limit, "write": limit, "pool": limit}})
        if time.monotonic() >= self._next_sweep:
            await self._sweep()
        pool_key, conn = await self._connection(core_url)
        reusable = False
        try:
            async with asyncio.timeout(limit):
                response = await conn.handle_async_request(request)
                try:
                    kept, total = bytearray(), 0
                    async for chunk in response.aiter_stream():
                        total += len(chunk)
                        if len(kept) < model.RESPONSE_BODY_LIMIT:
                            kept += chunk[:model.RESPONSE_BODY_LIMIT - len(kept)]
                        if total > 64 * model.RESPONSE_BODY_LIMIT:
                            break  # a long answer is not read to its end: the connection is dropped
                    else:
                        reusable = True
                finally:
                    await response.aclose()
                text = _clean(bytes(kept).decode("utf-8", "replace"))
                error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
                return Outcome(response.status, text, error)
        except Refused as exc:
            return Outcome(None, "", exc.message, refused=True)
        except (TimeoutError, httpcore.TimeoutException):
            return Outcome(None, "", f"timed out after {limit:g} s")
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError, OSError) as exc:
            return Outcome(None, "", _clean(f"connection failed: {exc or type(exc).__name__}"[:500]))
        finally:
            stack = self._idle.setdefault(pool_key, [])
            if reusable and conn.is_idle() and len(stack) < self.max_idle:
                stack.append(conn)
            else:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(conn.aclose())


# ---------------------------------------------------------------- outbox -> deliveries

DISPATCH_BATCH = 1000


async def dispatch_once(pool, settings, batch: int = DISPATCH_BATCH, max_workspaces: int = 1000) -> tuple[int, int]:
    """One pass: one batch of undispatched events for each workspace that has some (skipping those
    another dispatcher holds). Returns (events, deliveries) created."""
    events = deliveries = 0
    for workspace_id in await store.pending_workspaces(pool, max_workspaces):
        done = await store.dispatch_workspace(pool, workspace_id, batch,
                                              model.max_attempts(settings.webhook_retry_schedule))
        if done is not None:
            events += done[0]
            deliveries += done[1]
    return events, deliveries


async def prune_once(pool, settings) -> int:
    """Deletes finished deliveries older than the retention; returns how many."""
    total = 0
    for _ in range(200):  # at most a million rows a call; the next call goes on
        n = await store.prune(pool, settings.webhook_retention_days, 5000)
        total += n
        if n < 5000:
            break
    return total


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def run_dispatcher(pool, settings, stop: asyncio.Event, prune_every: float = 3600.0) -> None:
    next_prune = time.monotonic()
    # the outbox and the queue grow from nothing to thousands of rows in seconds (see GrowthStats);
    # dispatched events count too: the outbox grows without subscriptions
    stats = db.GrowthStats(store.QUEUE_TABLES)
    while not stop.is_set():
        busy = False
        try:
            events, deliveries = await dispatch_once(pool, settings)
            busy = events > 0
            stats.note(pool, max(events, deliveries))
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + prune_every
                pruned = await prune_once(pool, settings)
                if pruned:
                    log.info("pruned %d webhook deliveries older than %g days", pruned,
                             settings.webhook_retention_days)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook dispatcher pass failed; retrying")
            await _wait(stop, 1.0)
            continue
        if not busy:
            await _wait(stop, settings.webhook_poll_interval)


# ---------------------------------------------------------------- deliveries

class DeliveryWorker:
    """Claims due deliveries and attempts them; `run` until stopped, or `run_once` for one pass."""

    def __init__(self, pool, settings, sender: Sender | None = None):
        self.pool = pool
        self.settings = settings
        self.sender = sender or Sender(settings.webhook_timeout, max_connections=max(settings.webhook_concurrency, 1))
        self.key_bytes = settings.key_bytes
        self.lease = settings.webhook_timeout + settings.webhook_lease_grace
        self.in_flight: set[asyncio.Task] = set()
        self.results: list[tuple] = []
        self.wake = asyncio.Event()
        self._keys: dict[tuple, bytes] = {}

    def _key(self, row) -> bytes:
        cache_key = (row["workspace_id"], row["subscription_id"], bytes(row["secret"]))
        key = self._keys.get(cache_key)
        if key is None:
            if len(self._keys) > 10_000:
                self._keys.clear()
            secret = store.open_secret(self.key_bytes, row["workspace_id"], row["subscription_id"], row["secret"])
            key = self._keys[cache_key] = model.secret_key(secret)
        return key

    async def attempt(self, row) -> None:
        try:
            body = model.body(row["message_id"], row["event_type"], row["workspace_id"], row["occurred_at"],
                              row["data"])
            outcome = await self.sender.post(row["url"], row["message_id"], self._key(row), body)
        except sealed_secrets.SecretError:
            outcome = Outcome(None, "", "the subscription's secret does not open with this SECRET_KEY")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: keep the worker alive, keep the row retryable
            log.exception("webhook attempt failed unexpectedly")
            outcome = Outcome(None, "", f"internal error: {type(exc).__name__}")
        if outcome.ok:
            status, delay = "delivered", 0.0
        elif outcome.refused:
            status, delay = "failed", 0.0
        else:
            status, delay = model.after_failure(row["attempts"], row["max_attempts"],
                                                self.settings.webhook_retry_schedule)
        self.results.append((row["workspace_id"], row["id"], row["attempts"], status, delay,
                             outcome.status, outcome.body, outcome.error, row["row_ref"]))
        self.wake.set()

    async def flush(self) -> int:
        if not self.results:
            return 0
        batch, self.results = self.results, []
        try:
            await store.complete(self.pool, batch)
        except BaseException:
            self.results[:0] = batch  # kept for the next flush
            raise
        return len(batch)

    async def claim(self, limit: int):
        cap = self.settings.webhook_subscription_concurrency
        return await store.claim(self.pool, limit, cap, min(cap, model.FAILING_SUBSCRIPTION_CONCURRENCY), self.lease)

    async def run_once(self) -> int:
        """One bounded pass: expired claims back to the queue, one claim, every attempt of it to
        its end, results recorded. Returns the number of attempts made."""
        await store.reclaim(self.pool)
        rows = await self.claim(self.settings.webhook_concurrency)
        await asyncio.gather(*(self.attempt(row) for row in rows))
        await self.flush()
        return len(rows)

    def _start(self, row) -> None:
        task = asyncio.create_task(self.attempt(row))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wakes the loop when a dispatcher (in any process) has queued deliveries."""
        def woken(*_):
            self.wake.set()

        while not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    await conn.add_listener(store.WAKE_CHANNEL, woken)
                    try:
                        while not stop.is_set() and not conn.is_closed():
                            await _wait(stop, 5.0)
                    finally:
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(store.WAKE_CHANNEL, woken)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("webhook wake-up listener lost its connection; polling meanwhile", exc_info=True)
                await _wait(stop, 1.0)

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop))
        next_reclaim = 0.0
        capacity = max(self.settings.webhook_concurrency, 1)
        try:
            while not stop.is_set():
                self.wake.clear()
                try:
                    # Every finished attempt is recorded before claiming: the claim counts a
                    # subscription's rows still 'delivering' against its concurrency, and a result
                    # that arrived during the previous flush would otherwise hold a slot a round longer.
                    for _ in range(4):
                        if not await self.flush():
                            break
                    if time.monotonic() >= next_reclaim:
                        next_reclaim = time.monotonic() + 1.0
                        if await store.reclaim(self.pool):
                            log.warning("webhook deliveries whose worker stopped mid-attempt were requeued")
                    free = capacity - len(self.in_flight)
                    if free > 0:
                        rows = await self.claim(free)
                        for row in rows:
                            self._start(row)
                        if rows and len(rows) == free:
                            continue
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("webhook delivery pass failed; retrying")
                    await _wait(stop, 1.0)
                    continue
                waker = asyncio.ensure_future(self.wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({waker, stopper}, timeout=self.settings.webhook_poll_interval,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                    stopper.cancel()
            # Stopping: let the attempts in flight end (each is bounded by the timeout), record them.
            if self.in_flight:
                await asyncio.wait(self.in_flight, timeout=self.settings.webhook_timeout + 1.0)
            await self.flush()
        finally:
            listener.cancel()
            for task in self.in_flight:
                task.cancel()
            if self.in_flight:
                await asyncio.gather(*self.in_flight, return_exceptions=True)
            if self.results:  # cancelled: record what did finish; the rest is reclaimed after its lease
                with contextlib.suppress(BaseException):
                    async with asyncio.timeout(2.0):
                        await asyncio.shield(self.flush())
            with contextlib.suppress(BaseException):
                await self.sender.aclose()
            with contextlib.suppress(BaseException):
                await listener


def start(pool, settings, stop: asyncio.Event) -> list[asyncio.Task]:
    """The webhook loops of one process: the outbox dispatcher (with the log's pruning) and the
    delivery worker. They end when `stop` is set (gracefully) or when cancelled."""
    worker = DeliveryWorker(pool, settings)
    return [
        asyncio.create_task(run_dispatcher(pool, settings, stop), name="webhooks-dispatcher"),
        asyncio.create_task(worker.run(stop), name="webhooks-delivery"),
    ]
