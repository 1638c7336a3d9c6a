"""An in-memory provider for tests and benches (structure 7): records every message it was given
and answers by a plan, a list of steps consumed in order (then `default`):

    Step()                                   accepted
    Step(fail="provider", info="fake: HTTP 503")   SendFailed of that class
    Step(fail="throttled", retry_after=1.0)
    Step(delay=0.2)                          waits, then answers as the rest of the step says

A `Fake` is shared by every provider object built from it (`Fake.factory`), so a test sees the
calls of all integrations and workers in one list. It never touches the network.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from postroom.delivery.providers.base import Message, ProviderConfigError, SendFailed, Sent

SECRETS = ("api_key",)
KIND = "fake"


@dataclass(frozen=True)
class Settings:
    """`{"api_key": ..., "label": ...}`: a secret to prove sealing and masking, a plain field."""
    api_key: str
    label: str = ""

    @classmethod
    def parse(cls, raw: dict) -> "Settings":
        key = raw.get("api_key")
        if not isinstance(key, str) or not key:
            raise ProviderConfigError("api key is required for fake configuration")
        label = raw.get("label")
        label = "" if label is None else label
        if not isinstance(label, str):
            raise ProviderConfigError("label must be a string")
        return cls(key, label)


@dataclass(frozen=True)
class Step:
    fail: str | None = None          # a failure class of providers.base.CLASSES
    info: str = "fake: refused"
    retry_after: float | None = None
    delay: float = 0.0


@dataclass
class Call:
    message: Message
    settings: Settings
    at: float                        # time.monotonic() when the call began


@dataclass
class Fake:
    plan: list[Step] = field(default_factory=list)
    default: Step = field(default_factory=Step)
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    _ids: itertools.count = field(default_factory=itertools.count)

    def next_step(self) -> Step:
        return self.plan.pop(0) if self.plan else self.default

    def factory(self, settings: Settings, kind: str = KIND) -> "Provider":
        """A provider answering from this plan (SendWorker's provider_factory)."""
        return Provider(settings, None, self)


def connect(settings: Settings, context=None, integration_id: str | None = None,
            concurrency: int | None = None) -> "Provider":
    return Provider(settings, context)


class Provider:
    def __init__(self, settings: Settings, context=None, fake: Fake | None = None):
        self.settings = settings
        self.fake = fake or Fake()

    async def send(self, message: Message) -> Sent:
        fake = self.fake
        fake.calls.append(Call(message, self.settings, time.monotonic()))
        step = fake.next_step()
        fake.in_flight += 1
        fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
        try:
            if step.delay:
                await asyncio.sleep(step.delay)
        finally:
            fake.in_flight -= 1
        if step.fail:
            raise SendFailed(step.fail, step.info, step.retry_after)
        return Sent(f"fake-{next(fake._ids)}")

    async def aclose(self) -> None:
        pass
