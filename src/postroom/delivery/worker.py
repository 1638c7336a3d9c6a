"""The send loop (delivery-contract 5.6): a platform.queue worker over the email queue.

Each pass finds integrations with due rows, claims rows per integration in one short transaction
(budget row locked SKIP LOCKED, token bucket refilled, k = min(floor(tokens), free slots, 500,
1 when half-open)), sends each claimed row as its own task through the integration's provider,
and records the outcomes in batches (store.complete: queue, messages, timeline, outbox events and
breaker counters in one transaction). At most `max_concurrency` calls per integration are in
flight in this process. Provider objects are built from the integration's current settings, with
its secrets unsealed once, and kept while its `updated_at` is unchanged.

`SendWorker.run(stop)` until stopped (graceful: nothing new claimed, calls in flight finish and
are recorded); `run_once()` for tests and tools (platform.queue.Worker).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

from postroom.delivery import integrations, model, store
from postroom.delivery.providers.base import Attachment, Context, Message, SendFailed
from postroom.platform import queue

log = logging.getLogger("postroom.delivery")

SEND_TIMEOUT = model.SEND_TIMEOUT

# provider_factory(integration settings object, kind) -> a provider with `async send(message)`
# (tests and benches inject providers.fake.Fake.factory)
ProviderFactory = Callable[[Any, str], Any]


def rules_of(settings) -> model.Rules:
    return model.Rules(retry_base=settings.delivery_retry_base, max_attempts=settings.delivery_max_attempts,
                       breaker_threshold=settings.delivery_breaker_threshold,
                       breaker_cooldown=settings.delivery_breaker_cooldown, lease=settings.delivery_lease)


@dataclass
class Job:
    row: Any                   # the claimed email_queue row
    integration: Any           # its email_integrations row, None when deleted
    provider: Any = None


class SendWorker(queue.Worker):
    name = "send queue"
    log = log
    # Outcomes are committed together every 100 ms or 200 outcomes (5.6 step 5): one transaction
    # for many messages, their timeline entries and events, and one breaker update per integration.
    flush_delay = 0.1
    flush_max = 200

    def urgent(self, result: store.Result) -> bool:
        """A provider failure or a throttled answer is recorded before the next claim: the breaker
        and the throttle must stop the claims that would follow it, not 100 ms of them."""
        return result.outcome.cls in ("provider", "throttled")

    def __init__(self, pool, settings, provider_factory: ProviderFactory | None = None,
                 context: Context | None = None):
        super().__init__(pool, concurrency=settings.delivery_concurrency,
                         poll_interval=settings.delivery_poll_interval, attempt_timeout=SEND_TIMEOUT,
                         channel=store.CHANNEL)
        self.settings = settings
        self.rules = rules_of(settings)
        self.key_bytes = settings.key_bytes
        self._factory = provider_factory
        self._context = context
        self._providers: dict[tuple, Any] = {}
        self.busy: dict[tuple[str, str], int] = {}     # (workspace, integration) -> calls in flight here
        self._limits: dict[tuple[str, str], int] = {}  # their max_concurrency, as last read

    # ------------------------------------------------------------ providers

    def _provider(self, integration, workspace_id: str):
        key = (workspace_id, integration["id"], integration["updated_at"])
        provider = self._providers.get(key)
        if provider is None:
            if len(self._providers) > 10_000:
                self._providers.clear()
            module = integrations.kind_module(integration["kind"], self.settings.delivery_fake_provider)
            secrets = integrations.unseal(self.key_bytes, workspace_id, integration["id"], integration["secrets"])
            parsed = module.Settings.parse({**integration["settings"], **secrets})
            if self._factory is not None:
                provider = self._factory(parsed, integration["kind"])
            else:
                if self._context is None:
                    self._context = Context()
                provider = module.connect(parsed, self._context, integration_id=str(integration["id"]),
                                          concurrency=integration["max_concurrency"])
            # an older version of this integration's provider is dropped with the new one built
            for old in [k for k in self._providers if k[:2] == key[:2]]:
                self._providers.pop(old)
            provider = self._providers[key] = provider
        return provider

    # ------------------------------------------------------------ the queue's steps

    def _slots(self, key: tuple[str, str]) -> Callable[[Any], int]:
        def free(integration) -> int:
            limit = integration["max_concurrency"] or integrations.default_concurrency(integration["kind"])
            self._limits[key] = limit
            return max(limit - self.busy.get(key, 0), 0)
        return free

    async def claim(self, limit: int):
        jobs: list[Job] = []
        for key in await store.due_integrations(self.pool):
            if len(jobs) >= limit:
                break
            if self.busy.get(key, 0) >= self._limits.get(key, 64):
                continue        # fully busy here: claiming would only hold rows back from other processes
            slots = self._slots(key)
            integration, rows = await store.claim(self.pool, key[0], key[1],
                                                  lambda row: min(slots(row), limit - len(jobs)), self.rules)
            provider = None
            if integration is not None and rows:
                try:
                    provider = self._provider(integration, key[0])
                except Exception:
                    log.exception("the provider of integration %s cannot be built; its rows are retried", key[1])
            for row in rows:
                self.busy[key] = self.busy.get(key, 0) + 1
                jobs.append(Job(row, integration, provider))
        return jobs

    async def attempt(self, job: Job) -> store.Result:
        row = job.row
        key = (row["workspace_id"], row["integration_id"])
        try:
            outcome = await self._send(job)
        finally:
            self.busy[key] -= 1
            if not self.busy[key]:
                del self.busy[key]
        return store.Result(row["workspace_id"], row["id"], row["claim_id"], row["integration_id"], outcome,
                            counts_for_budget=job.integration is not None)

    async def _send(self, job: Job) -> model.Outcome:
        row = job.row
        if job.integration is None:
            return model.Outcome("failed", model.integration_gone_info(row["integration_id"]), cls="provider")
        if row["claimed_at"] > row["expires_at"]:
            return model.Outcome("failed", model.expired_info(row["last_error"]), cls=model.EXPIRED)
        if job.provider is None:
            return self._failure("provider", "provider settings cannot be opened", None, row)
        try:
            message = await self._message(row)
            async with asyncio.timeout(SEND_TIMEOUT):
                sent = await job.provider.send(message)
        except SendFailed as exc:
            return self._failure(exc.cls, exc.status_info, exc.retry_after, row)
        except TimeoutError:
            return self._failure("provider", f"{row['provider_kind']}: timeout after {SEND_TIMEOUT:g} s", None, row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of a provider: the row stays retryable, the worker alive
            log.exception("provider %s raised", row["provider_kind"])
            return self._failure("provider", f"internal error: {type(exc).__name__}", None, row)
        return model.Outcome("sent", sent.note, provider_message_id=sent.provider_message_id)

    def _failure(self, cls: str, info: str, retry_after: float | None, row) -> model.Outcome:
        throttled = row["throttled"] + (cls == "throttled")
        return model.after_failure(cls, info, retry_after, row["attempts"], throttled, self.rules)

    async def _message(self, row) -> Message:
        p = row["payload"]
        options = p.get("email_options") or {}
        refs = options.get("attachments") or []
        contents = await store.attachments(self.pool, row["workspace_id"], [a["checksum"] for a in refs])
        return Message(
            message_id=row["message_id"], from_address=p["from_address"],
            from_name=options.get("from_name") or p.get("from_name") or "", to=row["contact_email"],
            subject=p["subject"], html=p["html_content"], text=p.get("text_content"),
            cc=tuple(options.get("cc") or ()), bcc=tuple(options.get("bcc") or ()),
            reply_to=options.get("reply_to") or None,
            attachments=tuple(Attachment(a["filename"], contents.get(a["checksum"], b""), a.get("content_type") or "",
                                         a.get("disposition") or "attachment") for a in refs),
            list_unsubscribe_url=options.get("list_unsubscribe_url") or None,
            list_unsubscribe_mailto=options.get("list_unsubscribe_mailto") or None)

    async def complete(self, results: list) -> None:
        await store.complete(self.pool, results, self.rules)

    async def reclaim(self) -> int:
        return await store.reclaim(self.pool)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
        self._providers.clear()
        if self._context is not None:
            await self._context.aclose()
            self._context = None


def start(pool, settings, stop: asyncio.Event) -> list[asyncio.Task]:
    """The send loop of one process; it ends when `stop` is set (gracefully) or when cancelled."""
    return [asyncio.create_task(SendWorker(pool, settings).run(stop), name="delivery-send")]

