"""What the five HTTP providers share (delivery-contract 2.0, 2.8, 2.10), each rule checked on
every kind against its local fake: the success id, throttling with Retry-After, outages, the
"any other 4xx is message" rule, the provider's 401, timeouts, closed and refused connections,
line breaks refused before any request, the documented endpoints and the test hook."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from fakes.http_providers import (
    FAKES, Answer, MailgunFake, MailjetFake, PostmarkFake, SendGridFake, Sender, SparkPostFake, full_message,
    hooked, plain_message, provider_fixtures, serving)
from postroom.delivery.providers import KINDS, load
from postroom.delivery.providers.base import (
    HTTP_TIMEOUT, STATUS_INFO_MAX, THROTTLE_DEFAULT, Context, HttpProvider, ProviderConfigError, hook_base_urls)

HTTP_KINDS = ("postmark", "mailgun", "mailjet", "sendgrid", "sparkpost")
CLASSES = {"postmark": "PostmarkProvider", "mailgun": "MailgunProvider", "mailjet": "MailjetProvider",
           "sendgrid": "SendGridProvider", "sparkpost": "SparkPostProvider"}

# An error body in each kind's own shape, for the rules that depend on the status alone.
ERRORS = {
    "postmark": lambda status, headers: PostmarkFake.error(status, 0, "refused", headers),
    "mailgun": lambda status, headers: MailgunFake.error(status, "refused", headers),
    "mailjet": lambda status, headers: MailjetFake.error(status, "mj-0001", "refused", (), headers),
    "sendgrid": lambda status, headers: SendGridFake.error(status, "refused", None, headers),
    "sparkpost": lambda status, headers: SparkPostFake.error(status, "1200", "refused", "", headers),
}


def provider(kind: str, settings: dict, context: Context) -> HttpProvider:
    """A kind's provider from settings of the test's own (no fake to take them from)."""
    module = load(kind)
    return getattr(module, CLASSES[kind])(module.Settings.parse(settings), context)


served, fake, send = provider_fixtures(*(FAKES[kind] for kind in HTTP_KINDS))


def test_every_http_kind_is_a_provider_module():
    assert set(HTTP_KINDS) <= set(KINDS)
    for kind in HTTP_KINDS:
        module = load(kind)
        assert issubclass(getattr(module, CLASSES[kind]), HttpProvider)
        assert module.SECRETS and all(name in module.Settings.__dataclass_fields__ for name in module.SECRETS)


def test_secrets_stay_out_of_the_settings_repr():
    for kind, fake in FAKES.items():
        settings = load(kind).Settings.parse(fake().settings() | {"webhook_signing_key": "whsk-secret"})
        for name in load(kind).SECRETS:   # optional secrets (Mailgun's webhook signing key) set too
            assert getattr(settings, name) not in repr(settings)


async def test_success_returns_the_id_the_provider_gave(fake, send):
    sent = await send(full_message())
    assert len(fake.requests) == 1 and len(fake.ids) == 1
    assert sent.provider_message_id == fake.ids[0]
    assert sent.note is None


async def test_the_least_message_is_accepted_too(fake, send):
    sent = await send(plain_message())
    assert sent.provider_message_id == fake.ids[0]


# Each provider's own 401 (a wrong or missing credential), as status_info keeps it.
UNAUTHORIZED = {
    "postmark": "postmark: HTTP 401 10: The Server Token you provided in the X-Postmark-Server-Token request",
    "mailgun": "mailgun: HTTP 401: Forbidden",
    "mailjet": "mailjet: HTTP 401: API key authentication/authorization failure.",
    "sendgrid": "sendgrid: HTTP 401: The provided authorization grant is invalid, expired, or revoked",
    "sparkpost": "sparkpost: HTTP 401: Unauthorized.",
}


async def test_the_fake_answers_a_missing_credential_with_the_providers_401(fake):
    async with httpx.AsyncClient() as client:
        response = await client.post(fake.url + fake.path, json={})
    expected = fake.unauthorized().body
    if isinstance(expected, str):   # Mailgun's plain text
        assert (response.status_code, response.text) == (401, expected)
        return
    got = response.json()
    for identifier in (got, expected):   # Mailjet numbers each error afresh
        identifier.pop("ErrorIdentifier", None)
    assert (response.status_code, got) == (401, expected)


async def test_a_wrong_credential_gets_the_providers_401_and_is_provider(fake, send):
    secret = [s for s in load(fake.kind).SECRETS if s != "webhook_signing_key"][-1]   # a sending credential
    failure = await send.refused(plain_message(), **{secret: "wrong"})
    assert failure.cls == "provider"
    assert failure.status_info.startswith(UNAUTHORIZED[fake.kind])
    assert fake.ids == []


# The settings each kind refuses, and the first rule they break (1.2, checked in the table's order).
MAILJET_KEYS = "api key and secret key are required for Mailjet configuration"
CONFIG_ERRORS = {
    "postmark": [({"message_stream": "outbound"}, "server token is required for Postmark configuration"),
                 ({"server_token": "   "}, "server token is required for Postmark configuration"),
                 ({"server_token": 12}, "server token is required for Postmark configuration")],
    "mailgun": [({}, "domain is required for Mailgun configuration"),
                ({"api_key": "k", "region": "EU"}, "domain is required for Mailgun configuration"),
                ({"domain": "d.test", "region": "EU"}, "api key is required for Mailgun configuration"),
                ({"domain": "d.test", "api_key": ""}, "api key is required for Mailgun configuration")],
    "mailjet": [({}, MAILJET_KEYS), ({"api_key": "k"}, MAILJET_KEYS),
                ({"secret_key": "s", "sandbox_mode": True}, MAILJET_KEYS),
                ({"api_key": "k", "secret_key": " "}, MAILJET_KEYS)],
    "sendgrid": [({}, "api key is required for SendGrid configuration"),
                 ({"api_key": None}, "api key is required for SendGrid configuration")],
    "sparkpost": [({"api_key": "k"}, "endpoint is required for SparkPost configuration"),
                  ({"endpoint": "http://api.sparkpost.com", "api_key": "k"}, "endpoint must be an https URL"),
                  ({"endpoint": "api.sparkpost.com"}, "endpoint must be an https URL"),
                  ({"endpoint": "https://", "api_key": "k"}, "endpoint must be an https URL"),
                  ({"endpoint": "https://api.sparkpost.com", "sandbox_mode": True},
                   "api key is required for SparkPost configuration")],
}


@pytest.mark.parametrize("kind, raw, message", [
    (kind, raw, message) for kind, cases in CONFIG_ERRORS.items() for raw, message in cases])
def test_settings_are_refused_with_the_contracts_message(kind, raw, message):
    with pytest.raises(ProviderConfigError) as caught:
        load(kind).Settings.parse(raw)
    assert caught.value.message == message


@pytest.mark.parametrize("retry_after, expected", [("7", 7.0), (None, THROTTLE_DEFAULT)])
async def test_429_is_throttled_for_as_long_as_retry_after_says(fake, send, retry_after, expected):
    fake.will(ERRORS[fake.kind](429, {"Retry-After": retry_after} if retry_after else {}))
    failure = await send.refused(plain_message())
    assert failure.cls == "throttled"
    assert failure.retry_after == expected
    assert failure.status_info.startswith(f"{fake.kind}: HTTP 429")


async def test_retry_after_may_be_an_http_date(fake, send):
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    fake.will(ERRORS[fake.kind](429, {"Retry-After": when}))
    failure = await send.refused(plain_message())
    assert failure.cls == "throttled"
    assert 60 < failure.retry_after <= 120


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_provider(fake, send, status):
    fake.will(ERRORS[fake.kind](status, {}))
    failure = await send.refused(plain_message())
    assert (failure.cls, failure.retry_after) == ("provider", None)
    assert failure.status_info.startswith(f"{fake.kind}: HTTP {status}")


@pytest.mark.parametrize("status", [405, 409, 415])
async def test_any_other_4xx_is_message(fake, send, status):
    fake.will(ERRORS[fake.kind](status, {}))
    failure = await send.refused(plain_message())
    assert failure.cls == "message"
    assert "refused" in failure.status_info


async def test_a_redirect_is_not_a_success(fake, send):
    fake.will(Answer(302, None, {"Location": "https://elsewhere.test/"}))
    failure = await send.refused(plain_message())
    assert failure.cls == "provider"
    assert failure.status_info == f"{fake.kind}: HTTP 302"


async def test_a_body_that_is_not_the_providers_json_is_kept_raw(fake, send):
    fake.will(Answer(503, "<html>upstream connect error</html>"))
    failure = await send.refused(plain_message())
    assert failure.status_info == f"{fake.kind}: HTTP 503: <html>upstream connect error</html>"


async def test_status_info_is_cut_at_255_characters(fake, send):
    fake.will(Answer(500, "x" * 1000))
    failure = await send.refused(plain_message())
    assert len(failure.status_info) == STATUS_INFO_MAX


async def test_a_script_is_answered_in_order_then_success(fake, send):
    fake.will(ERRORS[fake.kind](503, {}), ERRORS[fake.kind](503, {}))
    assert (await send.refused(plain_message())).cls == "provider"
    assert (await send.refused(plain_message())).cls == "provider"
    sent = await send(plain_message())
    assert sent.provider_message_id == fake.ids[0]
    assert len(fake.requests) == 3


async def test_a_timeout_is_provider(fake):
    fake.will(Answer(delay=10))
    async with hooked(fake, timeout=httpx.Timeout(0.3)) as short:
        failure = await Sender(fake, short).refused(plain_message())
    assert failure.cls == "provider"
    assert failure.status_info == f"{fake.kind}: ReadTimeout"
    assert fake.ids == []


async def test_a_slow_success_within_the_timeout_is_a_success(fake):
    fake.will(Answer(delay=0.2))
    async with hooked(fake, timeout=httpx.Timeout(5.0)) as ctx:
        sent = await Sender(fake, ctx)(plain_message())
    assert sent.provider_message_id == fake.ids[0]


async def test_a_connection_closed_without_an_answer_is_provider(fake, send):
    fake.will(Answer(close=True))
    failure = await send.refused(plain_message())
    assert failure.cls == "provider"
    assert failure.status_info.startswith(f"{fake.kind}: RemoteProtocolError")
    assert len(fake.requests) == 1 and fake.ids == []
    assert (await send(plain_message())).provider_message_id == fake.ids[0]   # the next call reconnects


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_a_refused_connection_is_provider(kind):
    fake = FAKES[kind]()
    async with serving(fake):
        pass   # the port it had is closed now
    async with hooked(fake) as ctx:
        failure = await Sender(fake, ctx).refused(plain_message())
    assert failure.cls == "provider"
    assert failure.status_info.startswith(f"{kind}: ConnectError")


@pytest.mark.parametrize("field, value", [
    ("subject", "Hi\r\nBcc: victim@example.com"), ("from_name", "Acme\nX-Evil: 1"),
    ("reply_to", "r@acme.test\r\n"), ("cc", ("c@example.com\nBcc: v@example.com",)),
    ("list_unsubscribe_url", "https://acme.test/u\r\nX: 1")])
async def test_a_line_break_in_a_header_value_is_refused_before_any_request(fake, send, field, value):
    failure = await send.refused(plain_message(**{field: value}))
    assert failure.cls == "message"
    assert failure.status_info == f"{fake.kind}: {field} holds a line break"
    assert fake.requests == []


# ---------------------------------------------------------------- endpoints, with and without the hook

DOCUMENTED = {
    "postmark": ({"server_token": "t"}, "https://api.postmarkapp.com/email"),
    "mailgun": ({"domain": "mg.acme.test", "api_key": "k"}, "https://api.mailgun.net/v3/mg.acme.test/messages"),
    "mailgun-eu": ({"domain": "mg.acme.test", "region": "Eu", "api_key": "k"},
                   "https://api.eu.mailgun.net/v3/mg.acme.test/messages"),
    "mailjet": ({"api_key": "k", "secret_key": "s"}, "https://api.mailjet.com/v3.1/send"),
    "sendgrid": ({"api_key": "k"}, "https://api.sendgrid.com/v3/mail/send"),
    "sparkpost": ({"endpoint": "https://api.sparkpost.com", "api_key": "k"},
                  "https://api.sparkpost.com/api/v1/transmissions"),
    "sparkpost-eu": ({"endpoint": "https://api.eu.sparkpost.com/", "api_key": "k"},
                     "https://api.eu.sparkpost.com/api/v1/transmissions"),
}


@pytest.mark.parametrize("case", DOCUMENTED)
async def test_without_the_hook_each_kind_calls_its_documented_endpoint(case):
    settings, url = DOCUMENTED[case]
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202 if case == "sendgrid" else 200, json={})

    # An httpx transport that answers in process: the request is built and sent as on the wire.
    context = Context(client=httpx.AsyncClient(transport=httpx.MockTransport(answer)), base_urls={})
    try:
        await provider(case.split("-")[0], settings, context).send(plain_message())
    finally:
        await context.aclose()
    assert [(r.method, str(r.url)) for r in seen] == [("POST", url)]


@pytest.mark.parametrize("case", DOCUMENTED)
async def test_the_hook_from_the_environment_rebases_scheme_host_and_port_only(case):
    settings, url = DOCUMENTED[case]
    kind = case.split("-")[0]
    fake = FAKES[kind]()
    async with serving(fake):
        credentials = fake.settings()
        environ = {f"POSTROOM_PROVIDER_BASE_URL_{kind.upper()}": fake.url + "/"}
        context = Context(client=httpx.AsyncClient(timeout=HTTP_TIMEOUT), base_urls=hook_base_urls(environ))
        try:
            # The integration's own endpoint (SparkPost's, Mailgun's region) is kept; only the
            # credentials and, for Mailgun, the domain the fake serves are the fake's.
            keep = {k: v for k, v in settings.items() if k in ("endpoint", "region")}
            sent = await provider(kind, credentials | keep, context).send(plain_message())
        finally:
            await context.aclose()
    assert sent.provider_message_id == fake.ids[0]
    assert [(r.method, r.path) for r in fake.requests] == [("POST", fake.path)]
    assert fake.requests[0].headers["host"] == fake.url.removeprefix("http://")


async def test_the_default_client_has_the_contracts_timeouts():
    context = Context(base_urls={})
    try:
        timeout = context.client.timeout
        assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (5.0, 30.0, 30.0, 30.0)
    finally:
        await context.aclose()

