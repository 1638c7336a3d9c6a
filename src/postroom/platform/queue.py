"""The worker loop of a queue kept in a PostgreSQL table: claim -> attempt -> complete -> reclaim.

A queue subclasses `Worker` and supplies the four steps with its own SQL; this module holds none.

- `claim(limit)` takes up to `limit` due jobs (`FOR UPDATE SKIP LOCKED`) and gives each a lease.
- `attempt(job)` does one job and returns its result; it should not raise (a job whose attempt
  raised records nothing and comes back through `reclaim` once its lease runs out).
- `complete(results)` records many results in one go.
- `reclaim()` returns claims whose lease ran out (their worker died or hung) to the queue.

`run(stop)` loops until `stop` is set, then claims nothing new, lets the attempts in flight end
and records them (graceful stop); cancelling it stops at once (forced stop: what was in flight is
reclaimed after its lease). Side tasks of the loop: the reclaim, once a second; the LISTEN on the
queue's channel, which wakes it as soon as work is queued (it polls meanwhile); the flush of
finished results before each claim (grouped by `flush_delay` / `flush_max` where a queue asks). `run_once()` is one bounded pass, for tests and tools.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from typing import Any, Sequence


async def pause(event: asyncio.Event, seconds: float) -> None:
    """Waits `seconds`, or until `event` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def run_passes(stop: asyncio.Event, one_pass, idle: float, log: logging.Logger, name: str) -> None:
    """A loop of passes that is not a claimed queue (an outbox consumer): `await one_pass()`, True
    when it found work, until `stop` is set; again at once while it finds work, after `idle`
    seconds (or `stop`) otherwise. A pass that raises is logged and tried again a second later."""
    while not stop.is_set():
        try:
            busy = await one_pass()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s pass failed; retrying", name)
            await pause(stop, 1.0)
            continue
        if not busy:
            await pause(stop, idle)


class Worker(abc.ABC):
    """Claims jobs and attempts them, at most `concurrency` at a time; `run` until stopped, or
    `run_once` for one pass."""

    name = "queue"                                  # in log lines
    log = logging.getLogger("postroom.queue")
    reclaim_every = 1.0                             # seconds between two reclaims in `run`
    # Group commit in `run`: finished results wait up to `flush_delay` seconds, or until there are
    # `flush_max`, and are recorded in one `complete`. 0: each pass records what has finished.
    flush_delay = 0.0
    flush_max = 1

    def __init__(self, pool, *, concurrency: int, poll_interval: float, attempt_timeout: float,
                 channel: str | None = None):
        self.pool = pool
        self.concurrency = concurrency
        self.poll_interval = poll_interval          # the longest wait between two claims
        self.attempt_timeout = attempt_timeout      # bound of one attempt: a graceful stop waits this long
        self.channel = channel                      # NOTIFY channel that says work was queued
        self.in_flight: set[asyncio.Task] = set()
        self.results: list = []
        self.wake = asyncio.Event()
        self._oldest_result = 0.0                   # monotonic time the oldest unrecorded result arrived

    # ------------------------------------------------------------ the queue's steps

    @abc.abstractmethod
    async def claim(self, limit: int) -> Sequence:
        """Up to `limit` due jobs, each now leased to this worker."""

    @abc.abstractmethod
    async def attempt(self, job) -> Any:
        """Does one job; returns the result `complete` records."""

    @abc.abstractmethod
    async def complete(self, results: list) -> None:
        """Records the results of finished attempts."""

    @abc.abstractmethod
    async def reclaim(self) -> int:
        """Puts claims whose lease ran out back in the queue; returns how many."""

    async def aclose(self) -> None:
        """Releases what the attempts use (connections); called when `run` ends."""

    # ------------------------------------------------------------ the loop

    async def _attempt(self, job) -> None:
        try:
            result = await self.attempt(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("%s attempt raised; its claim comes back after its lease", self.name)
            return
        if not self.results:
            self._oldest_result = time.monotonic()
        if self.urgent(result):
            self._oldest_result = float("-inf")     # record this batch at the next pass
        self.results.append(result)
        self.wake.set()  # a slot is free: the loop claims again, and records once the batch is due

    def urgent(self, result) -> bool:
        """A result the next claim must see recorded (a queue whose claims read what its results
        change); it ends the grouping of `flush_delay` for its batch."""
        return False

    def _flush_wait(self) -> float:
        """Seconds until the finished results are due to be recorded (<= 0: now)."""
        if not self.results or len(self.results) >= self.flush_max:
            return 0.0
        return self._oldest_result + self.flush_delay - time.monotonic()

    async def flush(self) -> int:
        """Records the finished results; returns how many."""
        if not self.results:
            return 0
        batch, self.results = self.results, []
        try:
            await self.complete(batch)
        except BaseException:
            self.results[:0] = batch  # kept for the next flush
            raise
        return len(batch)

    async def run_once(self) -> int:
        """One bounded pass: expired claims back to the queue, one claim, every attempt of it to
        its end, results recorded. Returns the number of attempts made."""
        await self.reclaim()
        jobs = await self.claim(self.concurrency)
        await asyncio.gather(*(self._attempt(job) for job in jobs))
        await self.flush()
        return len(jobs)

    def _start(self, job) -> None:
        task = asyncio.create_task(self._attempt(job))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wakes the loop when work was queued (by any process)."""
        def woken(*_):
            self.wake.set()

        while not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    await conn.add_listener(self.channel, woken)
                    try:
                        while not stop.is_set() and not conn.is_closed():
                            await pause(stop, 5.0)
                    finally:
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(self.channel, woken)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.warning("%s wake-up listener lost its connection; polling meanwhile", self.name,
                                 exc_info=True)
                await pause(stop, 1.0)

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop)) if self.channel else None
        next_reclaim = 0.0
        capacity = max(self.concurrency, 1)
        try:
            while not stop.is_set():
                self.wake.clear()
                try:
                    # Every finished attempt is recorded before claiming: a claim may count the jobs
                    # still in flight against a bound (webhooks: a subscription's concurrency), and a
                    # result that arrived during the previous flush would otherwise hold a slot a round longer.
                    if self._flush_wait() <= 0:
                        for _ in range(4):
                            if not await self.flush():
                                break
                    if time.monotonic() >= next_reclaim:
                        next_reclaim = time.monotonic() + self.reclaim_every
                        reclaimed = await self.reclaim()
                        if reclaimed:
                            self.log.warning("%s: %d claims whose worker stopped mid-attempt were requeued",
                                             self.name, reclaimed)
                    free = capacity - len(self.in_flight)
                    if free > 0:
                        jobs = await self.claim(free)
                        for job in jobs:
                            self._start(job)
                        if jobs and len(jobs) == free:
                            continue
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.log.exception("%s pass failed; retrying", self.name)
                    await pause(stop, 1.0)
                    continue
                waker = asyncio.ensure_future(self.wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    timeout = self.poll_interval
                    if self.results:
                        timeout = min(timeout, max(self._flush_wait(), 0.0))
                    await asyncio.wait({waker, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                    stopper.cancel()
            # Stopping: let the attempts in flight end (each is bounded by the timeout), record them.
            if self.in_flight:
                await asyncio.wait(self.in_flight, timeout=self.attempt_timeout + 1.0)
            await self.flush()
        finally:
            if listener is not None:
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
                await self.aclose()
            if listener is not None:
                with contextlib.suppress(BaseException):
                    await listener
