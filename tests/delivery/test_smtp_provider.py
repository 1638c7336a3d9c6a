"""The SMTP provider against a real aiosmtpd sink (delivery-contract 1.2, 2.1, 2.8): settings,
TLS modes, AUTH, the conversation, connection reuse, classification, the message received."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import urllib.parse

import pytest
from starlette.responses import JSONResponse

from fakes.smtp_sink import Sink, certificates, serving
from helpers import provider_message
from fakes.webhook_receiver import Receiver, serving as serving_http
from postroom.delivery.providers import load
from postroom.delivery.providers import smtp as smtp_module
from postroom.delivery.providers.base import Attachment, Context, Message, ProviderConfigError, SendFailed, hook_base_urls
from postroom.delivery.providers.smtp import Settings, SmtpProvider, Tokens, classify, describe

PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 200


def message(**changes) -> Message:
    return provider_message(**{"message_id": "0b5e7f7e-1111-4111-8111-000000000001", **changes})


@pytest.fixture
async def sink():
    s = Sink(users={"relay": "pw1"})
    async with serving(s):
        yield s


@pytest.fixture
async def context():
    ctx = Context(base_urls={})
    yield ctx
    await ctx.aclose()


def settings_for(sink: Sink, **changes) -> Settings:
    return Settings.parse({"host": "127.0.0.1", "port": sink.port, "username": "relay", "password": "pw1", **changes})


@contextlib.asynccontextmanager
async def provider(settings: Settings, context: Context, **kwargs):
    p = SmtpProvider(settings, context, **kwargs)
    try:
        yield p
    finally:
        await p.aclose()


async def failure(p: SmtpProvider, msg: Message) -> SendFailed:
    with pytest.raises(SendFailed) as failed:
        await p.send(msg)
    return failed.value


# ---------------------------------------------------------------- settings (1.2)


def test_settings_defaults_and_the_kind_module():
    s = Settings.parse({"host": "smtp.example.com", "port": 587})
    assert (s.use_tls, s.tls_mode, s.tls, s.auth_type, s.username, s.password) == (False, "", "none", "basic", "", "")
    assert load("smtp").Settings is Settings and load("smtp").SECRETS == ("password", "oauth2_client_secret",
                                                                          "oauth2_refresh_token")


@pytest.mark.parametrize("raw, mode", [
    ({"use_tls": False, "port": 465}, "none"),
    ({"use_tls": True, "port": 465}, "implicit"),
    ({"use_tls": True, "port": 587}, "starttls"),
    ({"use_tls": True, "port": 465, "tls_mode": "starttls"}, "starttls"),
    ({"use_tls": False, "port": 2525, "tls_mode": "implicit"}, "implicit"),
])
def test_tls_mode_given_or_derived_from_use_tls_and_port(raw, mode):
    assert Settings.parse({"host": "h", **raw}).tls == mode


OAUTH_MS = {"auth_type": "oauth2", "oauth2_provider": "microsoft", "oauth2_client_id": "cid",
            "oauth2_client_secret": "cs", "oauth2_tenant_id": "t1"}


@pytest.mark.parametrize("raw, error", [
    ({"port": 25}, "host is required for SMTP configuration"),
    ({"host": "", "port": 70000}, "host is required for SMTP configuration"),     # host is checked first
    ({"host": "h", "port": 70000}, "invalid port number for SMTP configuration: 70000"),
    ({"host": "h"}, "invalid port number for SMTP configuration: 0"),
    ({"host": "h", "port": "587"}, "invalid port number for SMTP configuration: 587"),
    ({"host": "h", "port": 25, "tls_mode": "ssl"}, "tls_mode must be 'none', 'starttls' or 'implicit'"),
    ({"host": "h", "port": 25, "ehlo_hostname": "a b"}, "ehlo_hostname must be a host name"),
    ({"host": "h", "port": 25, "ehlo_hostname": "mx\r\nRSET"}, "ehlo_hostname must be a host name"),
    ({"host": "h", "port": 25, "auth_type": "ntlm"}, "auth_type must be 'basic' or 'oauth2'"),
    ({"host": "h", "port": 25, "auth_type": "oauth2"}, "oauth2_provider is required for OAuth2 authentication"),
    ({"host": "h", "port": 25, **OAUTH_MS, "oauth2_provider": "yahoo"}, "oauth2_provider must be 'microsoft' or 'google'"),
    ({"host": "h", "port": 25, **OAUTH_MS, "oauth2_client_id": ""}, "oauth2_client_id is required for OAuth2 authentication"),
    ({"host": "h", "port": 25, **OAUTH_MS, "oauth2_client_secret": ""},
     "oauth2_client_secret is required for OAuth2 authentication"),
    ({"host": "h", "port": 25, **OAUTH_MS, "oauth2_tenant_id": ""}, "oauth2_tenant_id is required for Microsoft OAuth2"),
    ({"host": "h", "port": 25, **OAUTH_MS, "oauth2_provider": "google"},
     "oauth2_refresh_token is required for Google OAuth2"),
])
def test_settings_refused_with_the_contract_messages_in_table_order(raw, error):
    with pytest.raises(ProviderConfigError) as refused:
        Settings.parse(raw)
    assert refused.value.message == error


def test_an_empty_auth_type_is_basic_and_oauth2_fields_are_kept():
    assert Settings.parse({"host": "h", "port": 25, "auth_type": ""}).auth_type == "basic"
    s = Settings.parse({"host": "h", "port": 25, **OAUTH_MS})
    assert (s.oauth2_provider, s.oauth2_client_id, s.oauth2_client_secret, s.oauth2_tenant_id) == ("microsoft", "cid", "cs", "t1")


# ---------------------------------------------------------------- classification, the pure rule (2.8)


@pytest.mark.parametrize("stage, code, enhanced, copy, cls", [
    ("RCPT TO", 550, "5.1.1", False, "recipient"),
    ("RCPT TO", 550, "5.2.1", False, "recipient"),
    ("RCPT TO", 551, "", False, "recipient"),
    ("RCPT TO", 553, "", False, "recipient"),
    ("RCPT TO", 550, "5.7.1", False, "provider"),       # relay denied is configuration
    ("RCPT TO", 450, "4.2.1", False, "deferred"),
    ("RCPT TO", 451, "4.7.1", False, "deferred"),
    ("RCPT TO", 452, "", False, "deferred"),
    ("RCPT TO", 550, "5.1.1", True, None),               # a cc or bcc: dropped, the send goes on
    ("RCPT TO", 550, "5.7.1", True, None),
    ("RCPT TO", 451, "", True, "deferred"),
    ("DATA", 554, "5.7.1", False, "message"),
    ("DATA", 552, "5.3.4", False, "message"),
    ("DATA", 451, "4.3.0", False, "deferred"),
    ("MAIL FROM", 550, "5.7.1", False, "provider"),
    ("MAIL FROM", 451, "4.3.0", False, "provider"),
    ("AUTH", 535, "5.7.8", False, "provider"),
    ("AUTH", 534, "5.7.9", False, "provider"),
    ("AUTH", 530, "5.7.0", False, "provider"),
    ("EHLO", 554, "", False, "provider"),
    ("CONNECT", 554, "", False, "provider"),
    ("CONNECT", 421, "4.3.2", False, "throttled"),
    ("EHLO", 421, "", False, "throttled"),
    ("MAIL FROM", 421, "", False, "throttled"),
    ("RCPT TO", 421, "4.7.0", True, "throttled"),
    ("DATA", 421, "", False, "throttled"),
])
def test_classification_from_stage_and_codes(stage, code, enhanced, copy, cls):
    assert classify(stage, code, enhanced, copy=copy) == cls


def test_classification_never_reads_the_words():
    # a text that says "mailbox unavailable" does not make a MAIL refusal the recipient's
    assert classify("MAIL FROM", 550, "5.1.1") == "provider"
    assert describe("RCPT TO", "jane@example.com", 550, "5.1.1  no such\n user") == \
        "smtp: RCPT TO <jane@example.com> rejected: 550 5.1.1 no such user"
    assert describe("DATA", None, 554, "content refused") == "smtp: DATA rejected: 554 content refused"


# ---------------------------------------------------------------- the conversation


async def test_a_send_reaches_the_sink_with_plain_auth_and_the_message(sink, context):
    async with provider(settings_for(sink), context) as p:
        sent = await p.send(message(reply_to="r@acme.test", list_unsubscribe_url="https://acme.test/u/1"))
    assert sent.provider_message_id == "<0b5e7f7e-1111-4111-8111-000000000001@acme.test>"
    assert sent.note is None
    [mail] = sink.received
    assert (mail.auth.mechanism, mail.auth.login, mail.auth.secret) == ("PLAIN", "relay", "pw1")
    assert mail.mail_from == "noreply@acme.test" and mail.rcpt_tos == ["jane@example.com"]
    assert mail.header("From") == "Acme <noreply@acme.test>"
    assert mail.header("Subject") == "Hi Jane"
    assert mail.header("Message-ID") == sent.provider_message_id
    assert mail.header("X-Message-ID") == "0b5e7f7e-1111-4111-8111-000000000001"
    assert mail.header("Reply-To") == "r@acme.test"
    assert mail.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert mail.structure == ["multipart/alternative", "text/plain", "text/html"]
    assert "Code X1" in mail.html and "Code X1" in mail.text
    assert not mail.tls


async def test_mail_from_carries_no_esmtp_parameter_and_ehlo_names_the_from_domain(sink, context):
    async with provider(settings_for(sink), context) as p:
        await p.send(message(from_address="noreply@bücher.test"))
    assert sink.of("MAIL") == ["MAIL FROM:<noreply@xn--bcher-kva.test>"]
    assert sink.of("EHLO") == ["EHLO xn--bcher-kva.test"]
    async with provider(settings_for(sink, ehlo_hostname="mx1.acme.test"), context) as p:
        await p.send(message())
    assert sink.of("EHLO")[-1] == "EHLO mx1.acme.test"


async def test_login_when_the_server_offers_it_and_not_plain(context):
    sink = Sink(users={"relay": "pw1"}, mechanisms=("LOGIN",))
    async with serving(sink), provider(settings_for(sink), context) as p:
        await p.send(message())
    assert sink.received[0].auth.mechanism == "LOGIN"
    assert sink.received[0].auth.secret == "pw1"


async def test_plain_is_preferred_when_both_are_offered(sink, context):
    assert sink.mechanisms[:2] == ("PLAIN", "LOGIN")
    async with provider(settings_for(sink), context) as p:
        await p.send(message())
    assert sink.received[0].auth.mechanism == "PLAIN"


async def test_no_auth_without_a_password(context):
    sink = Sink()                      # an open relay
    async with serving(sink), provider(settings_for(sink, password=None), context) as p:
        await p.send(message())
    assert not sink.of("AUTH") and sink.received[0].auth is None


async def test_envelope_is_to_cc_bcc_deduplicated_and_no_bcc_header(sink, context):
    msg = message(cc=("c@example.com", "JANE@example.com"), bcc=("b@example.com", "c@example.com"))
    async with provider(settings_for(sink), context) as p:
        await p.send(msg)
    [mail] = sink.received
    assert mail.rcpt_tos == ["jane@example.com", "c@example.com", "b@example.com"]
    assert sink.of("RCPT") == ["RCPT TO:<jane@example.com>", "RCPT TO:<c@example.com>", "RCPT TO:<b@example.com>"]
    assert mail.header("Cc") == "c@example.com"
    assert mail.header("Bcc") is None and b"b@example.com" not in mail.raw


async def test_attachments_arrive_parsed_with_encodings_and_content_id(sink, context):
    msg = message(html="<p>.leading dot\n.</p><img src=\"cid:my_logo.png\">",
                  attachments=(Attachment("reçu.pdf", b"%PDF-1.4 body"), Attachment("my logo.png", PNG, disposition="inline")))
    async with provider(settings_for(sink), context) as p:
        await p.send(msg)
    [mail] = sink.received
    assert mail.structure == ["multipart/mixed",
                              ["multipart/alternative", "text/plain", ["multipart/related", "text/html", "image/png"]],
                              "application/pdf"]
    pdf, png = sorted(mail.files, key=lambda f: f.content_type)
    assert (pdf.filename, pdf.disposition, pdf.transfer_encoding, pdf.content) == \
        ("reçu.pdf", "attachment", "base64", b"%PDF-1.4 body")
    assert "filename*=utf-8''re%C3%A7u.pdf" in mail.raw.decode("ascii")
    assert (png.content_id, png.disposition, png.content) == ("<my_logo.png>", "inline", PNG)
    assert ".leading dot\r\n.</p>" in mail.html        # dot-stuffing undone by the server: the lines intact


# ---------------------------------------------------------------- TLS


async def test_starttls_upgrades_then_ehlo_again_with_the_certificate_checked(context):
    server_tls, client_tls = certificates()
    sink = Sink(users={"relay": "pw1"}, starttls=server_tls)
    async with serving(sink), provider(settings_for(sink, use_tls=True), context, tls_context=client_tls) as p:
        await p.send(message())
    assert sink.received[0].tls
    assert sink.verbs()[:3] == ["EHLO", "STARTTLS", "EHLO"]


async def test_starttls_with_an_untrusted_certificate_fails_as_provider(context):
    server_tls, _ = certificates()
    sink = Sink(users={"relay": "pw1"}, starttls=server_tls)
    async with serving(sink), provider(settings_for(sink, use_tls=True), context) as p:   # the system's trust store
        failed = await failure(p, message())
    assert failed.cls == "provider" and failed.status_info.startswith("smtp: STARTTLS failed: ")
    assert "CERTIFICATE_VERIFY_FAILED" in failed.status_info
    assert not sink.received and not sink.of("AUTH")      # no credentials over an unchecked channel


async def test_implicit_tls_from_the_first_byte(context):
    server_tls, client_tls = certificates()
    sink = Sink(users={"relay": "pw1"}, implicit=server_tls)
    async with serving(sink), provider(settings_for(sink, tls_mode="implicit"), context, tls_context=client_tls) as p:
        await p.send(message())
    assert sink.received[0].tls and "STARTTLS" not in sink.verbs()


async def test_tls_none_attempts_no_upgrade_even_when_offered(context):
    server_tls, client_tls = certificates()
    sink = Sink(users={"relay": "pw1"}, starttls=server_tls)
    async with serving(sink), provider(settings_for(sink), context, tls_context=client_tls) as p:
        await p.send(message())
    assert not sink.received[0].tls and "STARTTLS" not in sink.verbs()


# ---------------------------------------------------------------- connections


async def test_several_messages_on_one_connection_rset_only_after_idleness(sink, context, monkeypatch):
    async with provider(settings_for(sink), context) as p:
        for i in range(3):
            await p.send(message(message_id=f"m{i}"))
        monkeypatch.setattr(smtp_module, "REUSE_WITHOUT_RSET", 0.05)
        await asyncio.sleep(0.1)
        await p.send(message(message_id="m3"))
    assert sink.connections == 1 and len(sink.received) == 4
    assert sink.verbs(1) == (["EHLO", "AUTH"] + ["MAIL", "RCPT", "DATA", "END"] * 3
                             + ["RSET", "MAIL", "RCPT", "DATA", "END", "QUIT"])


async def test_a_refused_transaction_is_followed_by_rset(sink, context):
    sink.reject("RCPT", "550 5.1.1 no such user", address="gone@example.com")
    async with provider(settings_for(sink), context) as p:
        with pytest.raises(SendFailed):
            await p.send(message(message_id="m0", to="gone@example.com"))
        await p.send(message(message_id="m1"))
    assert sink.connections == 1 and [m.header("X-Message-ID") for m in sink.received] == ["m1"]
    assert sink.verbs(1)[2:] == ["MAIL", "RCPT", "RSET", "MAIL", "RCPT", "DATA", "END", "QUIT"]


async def test_concurrent_sends_share_at_most_max_connections(sink, context):
    async with provider(settings_for(sink), context, max_connections=2) as p:
        await asyncio.gather(*(p.send(message(message_id=f"m{i}")) for i in range(8)))
    assert len(sink.received) == 8
    assert sink.connections == 2


async def test_a_connection_the_server_closed_is_replaced(sink, context):
    async with provider(settings_for(sink), context) as p:
        await p.send(message(message_id="m1"))
        sink.drop_connections()
        await asyncio.sleep(0.05)          # the client has seen the close
        await p.send(message(message_id="m2"))
        sink.drop_connections()            # and here it has not yet: MAIL FROM finds out, nothing was sent
        await p.send(message(message_id="m3"))
    assert [m.header("X-Message-ID") for m in sink.received] == ["m1", "m2", "m3"]
    assert [m.connection for m in sink.received] == [1, 2, 3]


async def test_at_most_100_messages_on_a_connection(sink, context, monkeypatch):
    assert smtp_module.MAX_MESSAGES_PER_CONNECTION == 100    # the contract's number, made small here
    monkeypatch.setattr(smtp_module, "MAX_MESSAGES_PER_CONNECTION", 3)
    async with provider(settings_for(sink), context) as p:
        for i in range(7):
            await p.send(message(message_id=f"m{i}"))
        await asyncio.sleep(0.05)
    assert [m.connection for m in sink.received] == [1, 1, 1, 2, 2, 2, 3]
    assert sink.verbs(1)[-1] == "QUIT" and sink.verbs(2)[-1] == "QUIT"


async def test_an_idle_connection_is_closed(sink, context, monkeypatch):
    assert smtp_module.IDLE_CLOSE == 60.0
    monkeypatch.setattr(smtp_module, "IDLE_CLOSE", 0.2)
    async with provider(settings_for(sink), context) as p:
        await p.send(message(message_id="m1"))
        await sink.wait_for(lambda: "QUIT" in sink.verbs(1))
        await p.send(message(message_id="m2"))
    assert [m.connection for m in sink.received] == [1, 2]


async def test_aclose_quits_idle_connections(sink, context):
    p = SmtpProvider(settings_for(sink), context)
    await p.send(message())
    await p.aclose()
    assert sink.verbs(1)[-1] == "QUIT"


# ---------------------------------------------------------------- failures, end to end


async def test_recipient_refused_fails_the_message_and_the_connection_is_reused(sink, context):
    sink.reject("RCPT", "550 5.1.1 no such user", address="jane@example.com", times=1)
    async with provider(settings_for(sink), context) as p:
        failed = await failure(p, message(cc=("c@example.com",)))
        await p.send(message())
    assert failed.cls == "recipient" and failed.retry_after is None
    assert failed.status_info == "smtp: RCPT TO <jane@example.com> rejected: 550 5.1.1 no such user"
    # the cc was never asked for once the to address was refused; the second send's RCPT follows
    assert sink.of("RCPT") == ["RCPT TO:<jane@example.com>", "RCPT TO:<jane@example.com>"]
    assert sink.connections == 1 and len(sink.received) == 1


async def test_a_refused_cc_is_dropped_and_noted(sink, context):
    sink.reject("RCPT", "550 5.1.1 unknown mailbox", address="c@example.com")
    async with provider(settings_for(sink), context) as p:
        sent = await p.send(message(cc=("c@example.com",), bcc=("b@example.com",)))
    assert sent.note == "smtp: RCPT TO <c@example.com> rejected: 550 5.1.1 unknown mailbox; address dropped"
    assert sink.received[0].rcpt_tos == ["jane@example.com", "b@example.com"]
    assert sink.received[0].header("Cc") == "c@example.com"       # the header still says what was asked


JANE, ACME = "RCPT TO <jane@example.com>", "MAIL FROM <noreply@acme.test>"


@pytest.mark.parametrize("stage, reply, cls, where", [
    ("RCPT", "553 mailbox name not allowed", "recipient", JANE),
    ("RCPT", "550 5.7.1 relaying denied", "provider", JANE),
    ("RCPT", "451 4.7.1 greylisted", "deferred", JANE),
    ("DATA", "554 5.7.1 no thanks", "message", "DATA"),
    ("END", "552 5.3.4 message too big", "message", "DATA"),
    ("END", "451 4.3.0 try again", "deferred", "DATA"),
    ("MAIL", "550 5.7.1 sender not allowed", "provider", ACME),
    ("MAIL", "451 4.3.0 local error", "provider", ACME),
    ("AUTH", "535 5.7.8 bad credentials", "provider", "AUTH"),
    ("EHLO", "554 go away", "provider", "EHLO"),
    ("MAIL", "421 4.7.0 slow down", "throttled", ACME),
    ("END", "421 4.3.2 shutting down", "throttled", "DATA"),
])
async def test_each_stage_and_reply_gives_its_class(sink, context, stage, reply, cls, where):
    sink.reject(stage, reply)
    async with provider(settings_for(sink), context) as p:
        failed = await failure(p, message())
    assert (failed.cls, failed.status_info) == (cls, f"smtp: {where} rejected: {reply}")
    assert failed.retry_after == (30.0 if cls == "throttled" else None)
    assert not sink.received


async def test_deferred_once_after_data_then_sent_on_the_retry(sink, context):
    sink.reject("END", "451 4.3.0 try again", times=1)
    async with provider(settings_for(sink), context) as p:
        assert (await failure(p, message())).cls == "deferred"
        await p.send(message())
    assert len(sink.received) == 1
    assert sink.connections == 1                          # the refused transaction left the session sound


async def test_a_throttled_connection_is_not_reused(sink, context):
    sink.reject("MAIL", "421 4.7.0 too many", times=1)
    async with provider(settings_for(sink), context) as p:
        await failure(p, message())
        await p.send(message())
    assert [m.connection for m in sink.received] == [2]


async def test_wrong_password_is_provider(sink, context):
    async with provider(settings_for(sink, password="nope"), context) as p:
        failed = await failure(p, message())
    assert failed.cls == "provider"
    assert failed.status_info == "smtp: AUTH rejected: 535 5.7.8 Authentication credentials invalid"


async def test_nothing_listening_is_provider(context):
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with provider(Settings.parse({"host": "127.0.0.1", "port": port}), context) as p:
        failed = await failure(p, message())
    assert failed.cls == "provider" and failed.status_info.startswith("smtp: CONNECT failed: ")


@contextlib.asynccontextmanager
async def silent_server(greet: bool):
    """A TCP server that greets (or not) and then never answers."""
    async def handle(reader, writer):
        if greet:
            writer.write(b"220 slow.test ESMTP\r\n")
        await asyncio.sleep(30)
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@pytest.mark.parametrize("greet, patch, info", [
    (False, {"SMTP_CONNECT_TIMEOUT": 0.2}, "smtp: CONNECT timed out"),
    (True, {"SMTP_COMMAND_TIMEOUT": 0.2}, "smtp: EHLO timed out"),
    (True, {"SMTP_CONVERSATION_TIMEOUT": 0.3}, "smtp: conversation timed out after 0.3 s"),
])
async def test_timeouts_are_provider(context, monkeypatch, greet, patch, info):
    for name, value in patch.items():
        monkeypatch.setattr(smtp_module, name, value)
    async with silent_server(greet) as port, provider(Settings.parse({"host": "127.0.0.1", "port": port}), context) as p:
        failed = await failure(p, message())
    assert (failed.cls, failed.status_info) == ("provider", info)


async def test_a_message_that_cannot_be_sent_fails_before_any_connection(sink, context):
    async with provider(settings_for(sink), context) as p:
        bad_subject = await failure(p, message(subject="Hi\r\nBcc: x@example.com"))
        bad_local = await failure(p, message(to="jöhn@example.com"))
        bad_bcc = await failure(p, message(bcc=("zoë@example.com",)))     # in no header: the envelope's check
    assert (bad_subject.cls, bad_subject.status_info) == ("message", "smtp: subject must not contain CR or LF characters")
    assert bad_local.cls == "message"
    assert (bad_bcc.cls, bad_bcc.status_info) == ("message", "smtp: address zoë@example.com has a non-ASCII local part, which cannot be sent")
    assert sink.connections == 0


# ---------------------------------------------------------------- XOAUTH2


def token_plan(tokens: list[str], status: int = 200):
    """Token endpoint answers: one token per request, in order."""
    def plan(item, seen):
        if status != 200:
            return JSONResponse({"error": "invalid_client", "error_description": "bad secret"}, status)
        return JSONResponse({"access_token": tokens[min(seen, len(tokens) - 1)], "expires_in": 3600, "token_type": "Bearer"})
    return plan


@pytest.fixture
async def token_endpoint():
    recv = Receiver()
    async with serving_http(recv):
        yield recv


def form(received) -> dict:
    return dict(urllib.parse.parse_qsl(received.body.decode()))


GOOGLE = {"auth_type": "oauth2", "oauth2_provider": "google", "oauth2_client_secret": "gs", "oauth2_refresh_token": "rt"}


@contextlib.asynccontextmanager
async def oauth2(token_endpoint: Receiver, accepted: str, **fields):
    """(sink accepting one token for the from address, provider with `fields`), token endpoints faked."""
    sink = Sink(tokens={"noreply@acme.test": accepted})
    ctx = Context(base_urls={"smtp_oauth2": token_endpoint.url("")})
    async with serving(sink):
        s = Settings.parse({"host": "127.0.0.1", "port": sink.port, **fields})
        async with provider(s, ctx, tokens=Tokens()) as p:
            yield sink, p
    await ctx.aclose()


async def test_xoauth2_microsoft_fetches_a_client_credentials_token_and_caches_it(token_endpoint):
    token_endpoint.plans["/t1/oauth2/v2.0/token"] = token_plan(["tok1"])
    async with oauth2(token_endpoint, "tok1", **{**OAUTH_MS, "oauth2_client_id": "ms-cache"}) as (sink, p):
        await p.send(message())
        sink.drop_connections()
        await p.send(message())
    assert [m.auth.mechanism for m in sink.received] == ["XOAUTH2", "XOAUTH2"]
    assert sink.received[0].auth.login == "noreply@acme.test"
    [fetch] = token_endpoint.received                  # two connections, one token
    assert fetch.path == "/t1/oauth2/v2.0/token"
    assert form(fetch) == {"grant_type": "client_credentials", "client_id": "ms-cache", "client_secret": "cs",
                           "scope": "https://outlook.office365.com/.default"}


async def test_xoauth2_google_refreshes_once_on_535(token_endpoint):
    token_endpoint.plans["/token"] = token_plan(["revoked", "fresh"])
    async with oauth2(token_endpoint, "fresh", **GOOGLE, oauth2_client_id="g1") as (sink, p):
        await p.send(message())
    assert sink.received[0].auth.secret == "fresh"
    assert [form(r)["grant_type"] for r in token_endpoint.received] == ["refresh_token", "refresh_token"]
    assert form(token_endpoint.received[0])["refresh_token"] == "rt"
    assert sink.of("AUTH") == ["AUTH XOAUTH2", "AUTH XOAUTH2"]


async def test_xoauth2_still_refused_after_the_refresh_is_provider(token_endpoint):
    token_endpoint.plans["/token"] = token_plan(["a", "b"])
    async with oauth2(token_endpoint, "never", **GOOGLE, oauth2_client_id="g2") as (sink, p):
        failed = await failure(p, message())
    assert failed.cls == "provider"
    assert failed.status_info == "smtp: AUTH rejected: 535 5.7.8 Username and Password not accepted"
    assert len(token_endpoint.received) == 2


async def test_a_token_endpoint_refusal_is_provider(token_endpoint):
    token_endpoint.plans["/t1/oauth2/v2.0/token"] = token_plan([], status=401)
    async with oauth2(token_endpoint, "x", **{**OAUTH_MS, "oauth2_client_id": "ms-refused"}) as (sink, p):
        failed = await failure(p, message())
    assert failed.cls == "provider"
    assert failed.status_info == "smtp: AUTH OAuth2 token from microsoft refused: HTTP 401: bad secret"
    assert not sink.of("AUTH")


def test_tokens_are_not_shared_between_different_secrets():
    a = Settings.parse({"host": "h", "port": 25, **OAUTH_MS})
    b = dataclasses.replace(a, oauth2_client_secret="other")
    assert Tokens.key(a) != Tokens.key(b) and Tokens.key(a) == Tokens.key(dataclasses.replace(a, host="x"))


def test_the_token_endpoints_are_reached_through_the_test_hook():
    assert hook_base_urls({"POSTROOM_PROVIDER_BASE_URL_SMTP_OAUTH2": "http://127.0.0.1:9/"}) == \
        {"smtp_oauth2": "http://127.0.0.1:9"}
    ctx = Context(client=None, base_urls={"smtp_oauth2": "http://127.0.0.1:9"})
    assert ctx.url("smtp_oauth2", "https://oauth2.googleapis.com/token") == "http://127.0.0.1:9/token"
