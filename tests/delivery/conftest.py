"""Fixtures of the provider tests: a fake served once per module (`FAKE` names how to make it,
or the module overrides `served`), reset before each test, and `send`, which sends through the
fake's kind of provider on a context hooked to the fake."""

from __future__ import annotations

import sys

import pytest

from fakes.http_providers import Answer, ProviderFake, Recorded, hooked, plain_message, serving
from postroom.delivery.providers.base import Context, HttpProvider, Message, SendFailed, Sent
from postroom.delivery.providers.mailgun import MailgunProvider
from postroom.delivery.providers.mailjet import MailjetProvider
from postroom.delivery.providers.postmark import PostmarkProvider
from postroom.delivery.providers.sendgrid import SendGridProvider
from postroom.delivery.providers.sparkpost import SparkPostProvider

PROVIDERS: dict[str, type[HttpProvider]] = {p.kind: p for p in (
    PostmarkProvider, MailgunProvider, MailjetProvider, SendGridProvider, SparkPostProvider)}


class Sender:
    """The fake's kind of provider with the fake's settings (plus `changes`) on `context`."""

    def __init__(self, fake: ProviderFake, context: Context):
        self.fake = fake
        self.context = context

    def provider(self, **changes) -> HttpProvider:
        cls = PROVIDERS[self.fake.kind]
        settings = sys.modules[cls.__module__].Settings.parse(self.fake.settings() | changes)
        return cls(settings, self.context)

    async def __call__(self, message: Message, **changes) -> Sent:
        return await self.provider(**changes).send(message)

    async def exchange(self, message: Message, **changes) -> tuple[Sent, Recorded]:
        """Send `message`; the answer and the one request the fake got for it (a POST to its path)."""
        sent = await self(message, **changes)
        [request] = self.fake.requests
        assert (request.method, request.path) == ("POST", self.fake.path)
        return sent, request

    async def refused(self, message: Message, **changes) -> SendFailed:
        with pytest.raises(SendFailed) as caught:
            await self(message, **changes)
        return caught.value

    async def answered(self, answer: Answer) -> SendFailed:
        """How the provider classifies `answer` (scripted as the fake's next one) to a plain message."""
        self.fake.will(answer)
        return await self.refused(plain_message())


@pytest.fixture(scope="module")
async def served(request):
    async with serving(request.module.FAKE()) as running:
        yield running


@pytest.fixture
def fake(served) -> ProviderFake:
    served.reset()
    return served


@pytest.fixture
async def send(fake):
    async with hooked(fake) as context:
        yield Sender(fake, context)


@pytest.fixture
def sender():
    """Sender for a context a test makes itself (a short timeout, a hook from the environment)."""
    return Sender
