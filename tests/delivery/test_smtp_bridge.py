"""The SMTP bridge (delivery-contract 6; checks 68-70): a real bridge on a free port, a client
speaking SMTP (aiosmtplib), the workspace of the section 8 fixture, and the send worker
delivering what the bridge queued to the SMTP sink. Also its settings and `postroom serve`
starting it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import secrets
import ssl
from email.message import EmailMessage

import aiosmtplib
import pytest
import trustme
from fakes.smtp_sink import Sink, serving
from helpers import snapshot
from processes import Serve, free_port
from sendkit import deliver
from txkit import ok, send_s, setup

from postroom.auth import model as auth_model, store as auth_store
from postroom.delivery import bridge, bridge_model
from postroom.platform import db
from postroom.platform.config import ConfigError, Settings, SmtpBridgeSettings
from postroom.platform.migrations import migrate
from postroom.workspaces import store as ws_store

V = "validation error: "


@pytest.fixture(autouse=True)
async def fresh_counters(pool):
    """This test's queue and AUTH counters only."""
    await pool.execute("DELETE FROM email_queue")
    await pool.execute("DELETE FROM subscribe_rate_limits WHERE workspace_id = $1", bridge.RATE_SCOPE)


@pytest.fixture
async def sink():
    async with serving(Sink()) as s:
        yield s


def bridge_settings(settings, **conf) -> Settings:
    values = {"enabled": True, "host": "127.0.0.1", "port": 0, "domain": "bridge.test", "tls": "off", **conf}
    return dataclasses.replace(settings, smtp_bridge=SmtpBridgeSettings(**values))


@contextlib.asynccontextmanager
async def running(pool, settings, **conf):
    started = await bridge.start(pool, bridge_settings(settings, **conf), "http://postroom.test")
    try:
        yield started
    finally:
        await started.close(grace=1.0)


@pytest.fixture
async def port(pool, settings):
    async with running(pool, settings) as started:
        yield started.port


@dataclasses.dataclass
class Key:
    email: str
    token: str


async def create_key(client, ws, prefix: str = "app") -> Key:
    """An API key as workspaces.createAPIKey gives it: its token carries its address."""
    body = await ok(await client.post("/api/workspaces.createAPIKey", headers=ws.headers,
                                      json={"workspace_id": ws.id, "email_prefix": prefix}))
    return Key(body["email"], body["token"])


async def member_key(pool, settings, ws, permissions: str) -> Key:
    email = f"k-{secrets.token_hex(4)}@{ws.id}.api.postroom"
    async with pool.acquire() as conn:
        user_id = await ws_store.create_api_key_user(conn, ws.id, email, auth_model.parse_permissions(permissions))
    return Key(email, auth_model.issue_token(settings.key_bytes, user_id, "api_key", email=email))


def mail(payload, *, message_id: str | None = None, **headers) -> bytes:
    """A single-part text/plain mail whose body is the JSON of `payload` (a str is sent as is)."""
    m = EmailMessage()
    m["From"] = "app@shop.test"
    m["To"] = "bridge@postroom.test"
    m["Subject"] = "send"
    if message_id:
        m["Message-ID"] = message_id
    for name, value in headers.items():
        m[name.replace("_", "-")] = value
    m.set_content(payload if isinstance(payload, str) else json.dumps(payload), cte="8bit")
    return m.as_bytes()


@contextlib.asynccontextmanager
async def connected(port: int, key: Key | None = None, **options):
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=20, **options)
    await smtp.connect()
    try:
        await smtp.ehlo()
        if key is not None:
            await smtp.login(key.email, key.token)
        yield smtp
    finally:
        with contextlib.suppress(Exception):
            await smtp.quit()
        smtp.close()


async def data(smtp: aiosmtplib.SMTP, raw: bytes, recipients=("anyone@shop.test",)) -> tuple[int, str]:
    """MAIL, RCPT, DATA: the reply to DATA (or the first refusal)."""
    try:
        response = (await smtp.sendmail("app@shop.test", list(recipients), raw))[1]
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    return 250, response


async def submit(port: int, key: Key, raw: bytes) -> tuple[int, str]:
    async with connected(port, key) as smtp:
        return await data(smtp, raw)


async def auth(port: int, username: str, password: str, mechanism: str = "plain") -> tuple[int, str]:
    async with connected(port) as smtp:
        try:
            response = await getattr(smtp, f"auth_{mechanism}")(username, password)
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        return response.code, response.message


def queued_id(reply: tuple[int, str]) -> str:
    code, text = reply
    assert code == 250 and text.startswith("2.0.0 OK queued as "), reply
    return text.removeprefix("2.0.0 OK queued as ")


async def history(pool, ws) -> list:
    return await pool.fetch("SELECT id, external_id, channel_options FROM message_history WHERE workspace_id = $1",
                            ws.id)


# ---------------------------------------------------------------- checks 68-70

async def test_a_mail_sent_twice_is_one_send(client, ws, pool, settings, sink, port):
    """Check 68: AUTH PLAIN with a createAPIKey key; the Message-ID makes the second mail a replay."""
    await setup(client, ws, smtp_port=sink.port)
    key = await create_key(client, ws)
    raw = mail(send_s(ws.id), message_id="<m1@app>")
    async with connected(port) as smtp:
        assert (await smtp.auth_plain(key.email, key.token)).code == 235
        first = queued_id(await data(smtp, raw))
        second = queued_id(await data(smtp, raw))
    assert first == second
    await deliver(pool, settings)
    (delivered,) = sink.received
    assert delivered.rcpt_tos == ["jane@example.com"] and delivered.header("Subject") == "Hi Jane"
    assert delivered.header("X-Message-ID") == first and "X1" in delivered.text
    (row,) = await history(pool, ws)
    assert row["id"] == first and row["external_id"] == "m1@app"


async def test_wrong_password_and_mail_before_auth(client, ws, sink, port):
    """Check 69."""
    await setup(client, ws, smtp_port=sink.port)
    key = await create_key(client, ws)
    assert await auth(port, key.email, key.token + "x") == (535, "5.7.8 invalid credentials")
    async with connected(port) as smtp:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await smtp.mail("app@shop.test")
        assert (refused.value.code, refused.value.message) == (530, "5.7.0 authentication required")
        for command in (b"RCPT TO:<a@shop.test>", b"DATA"):
            reply = await smtp.execute_command(*command.split(b" ", 1))
            assert (reply.code, reply.message) == (530, "5.7.0 authentication required")


async def test_quoted_printable_with_a_soft_break_inside_a_string(client, ws, pool, settings, sink, port):
    """Check 70: the transfer encoding is undone before the JSON is read."""
    await setup(client, ws, smtp_port=sink.port)
    key = await create_key(client, ws)
    text = json.dumps(send_s(ws.id))
    cut = text.index("jane@example.com") + 8
    body = (text[:cut] + "=\r\n" + text[cut:]).replace("{", "=7B", 1).encode()
    raw = (b"From: app@shop.test\r\nTo: bridge@postroom.test\r\nMessage-ID: <m70@app>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           + body + b"\r\n")
    message_id = queued_id(await submit(port, key, raw))
    await deliver(pool, settings)
    (delivered,) = sink.received
    assert delivered.rcpt_tos == ["jane@example.com"] and delivered.header("X-Message-ID") == message_id
    (row,) = await history(pool, ws)
    assert row["external_id"] == "m70@app"


# ---------------------------------------------------------------- AUTH

async def test_auth_login_and_a_key_issued_without_the_email_claim(client, ws, pool, settings, sink, port):
    await setup(client, ws, smtp_port=sink.port)
    key = await create_key(client, ws)
    assert (await auth(port, key.email, key.token, "login"))[0] == 235
    # the fixture's owner key has no `email` claim: its user's stored address is the user name
    owner_email = f"owner-{ws.id}@example.com"
    assert (await auth(port, owner_email.upper(), ws.token))[0] == 235
    assert (await auth(port, "someone@else.test", ws.token))[0] == 535
    legacy = Key(owner_email, ws.token)
    message_id = queued_id(await submit(port, legacy, mail(send_s(ws.id))))
    await deliver(pool, settings)
    assert [m.header("X-Message-ID") for m in sink.received] == [message_id]


async def test_auth_values_given_after_a_challenge(client, ws, port):
    """AUTH PLAIN and AUTH LOGIN with nothing on the command line: the server asks (334)."""
    key = await create_key(client, ws)

    def b64(text: str) -> bytes:
        return base64.b64encode(text.encode())

    async with connected(port) as smtp:
        assert (await smtp.execute_command(b"AUTH", b"PLAIN")).code == 334
        assert (await smtp.execute_command(b"*")).code == 501                 # the client gives up
        assert (await smtp.execute_command(b"AUTH", b"PLAIN")).code == 334
        assert (await smtp.execute_command(b"not base64!")).code == 501
        assert (await smtp.execute_command(b"AUTH", b"PLAIN", b64("no separators"))).code == 501
        assert (await smtp.execute_command(b"AUTH", b"PLAIN")).code == 334
        assert (await smtp.execute_command(b64(f"\0{key.email}\0{key.token}"))).code == 235
    async with connected(port) as smtp:
        asked = await smtp.execute_command(b"AUTH", b"LOGIN")
        assert (asked.code, base64.b64decode(asked.message)) == (334, b"Username:")
        asked = await smtp.execute_command(b64(key.email))
        assert (asked.code, base64.b64decode(asked.message)) == (334, b"Password:")
        assert (await smtp.execute_command(b64(key.token))).code == 235


async def test_credentials_that_are_refused(client, ws, new_workspace, pool, settings, port):
    key = await create_key(client, ws)
    other = await create_key(client, await new_workspace(), prefix="other")
    refused = (535, "5.7.8 invalid credentials")
    assert await auth(port, other.email, key.token) == refused            # another key's address
    assert await auth(port, key.email, "not-a-token") == refused
    foreign = auth_model.issue_token(b"another-secret-" + b"x" * 40, "00000000-0000-4000-8000-000000000001",
                                     "api_key", email=key.email)
    assert await auth(port, key.email, foreign) == refused                 # signed with another secret
    async with pool.acquire() as conn:
        user = await auth_store.upsert_user(conn, f"person-{secrets.token_hex(3)}@example.com", "P", "user")
        session = await auth_store.create_session(conn, user["id"], 3600)
    session_token = auth_model.issue_token(settings.key_bytes, user["id"], "user", session)
    assert await auth(port, user["email"], session_token) == refused       # not an API key
    gone = await member_key(pool, settings, ws, "transactional:rw")
    await pool.execute("DELETE FROM user_workspaces WHERE user_id = (SELECT id FROM users WHERE email = $1)",
                       gone.email)
    await pool.execute("DELETE FROM users WHERE email = $1", gone.email)
    assert await auth(port, gone.email, gone.token) == refused             # its user no longer exists


async def test_auth_is_rate_limited_per_user_and_a_success_resets_it(client, ws, port):
    key = await create_key(client, ws)
    for _ in range(4):
        assert (await auth(port, key.email, "wrong"))[0] == 535
    assert (await auth(port, key.email, key.token))[0] == 235              # clears the counter
    for _ in range(5):
        assert (await auth(port, key.email, "wrong"))[0] == 535
    too_many = (454, "4.7.0 too many authentication attempts")
    assert await auth(port, key.email, "wrong") == too_many
    assert await auth(port, key.email, key.token) == too_many              # even with the right key
    other = await create_key(client, ws, prefix="other")
    assert (await auth(port, other.email, other.token))[0] == 235          # a user's limit is its own


async def test_auth_is_rate_limited_per_client_address(client, ws, port):
    key = await create_key(client, ws)
    for i in range(20):
        assert (await auth(port, f"guess{i}@nowhere.test", "wrong"))[0] == 535
    assert await auth(port, key.email, key.token) == (454, "4.7.0 too many authentication attempts")


async def test_starttls_and_auth_refused_before_it(client, ws, pool, settings, sink):
    await setup(client, ws, smtp_port=sink.port)
    key = await create_key(client, ws)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    tls = {"cert_pem": cert.cert_chain_pems[0].bytes(), "key_pem": cert.private_key_pem.bytes()}
    async with running(pool, settings, tls="starttls", **tls) as started:
        async with connected(started.port) as smtp:
            await smtp.ehlo()
            assert smtp.supports_extension("starttls") and not smtp.supports_extension("auth")
            blob = base64.b64encode(f"\0{key.email}\0{key.token}".encode())
            reply = await smtp.execute_command(b"AUTH", b"PLAIN", blob)
            assert reply.code == 538
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await smtp.mail("app@shop.test")
            assert refused.value.code == 530
            await smtp.starttls(tls_context=trusting)
            await smtp.ehlo()
            assert smtp.supports_extension("auth")
            await smtp.login(key.email, key.token)
            first = queued_id(await data(smtp, mail(send_s(ws.id), message_id="<tls1@app>")))
    async with running(pool, settings, tls="implicit", **tls) as started:
        async with connected(started.port, key, use_tls=True, tls_context=trusting) as smtp:
            second = queued_id(await data(smtp, mail(send_s(ws.id), message_id="<tls2@app>")))
    await deliver(pool, settings)
    assert sorted(m.header("X-Message-ID") for m in sink.received) == sorted([first, second])


# ---------------------------------------------------------------- what the mail holds

async def test_refused_mails_store_nothing(client, ws, new_workspace, pool, settings, sink, port):
    await setup(client, ws, smtp_port=sink.port)
    key = await create_key(client, ws)
    contact = {"email": "jane@example.com"}
    notification = {"id": "welcome_email", "contact": contact}
    cases = [
        (mail("not json"), "email body is not valid JSON: "),
        (mail("[1, 2]"), "email body is not valid JSON: the payload must be a JSON object"),
        (mail({"notification": notification}), "workspace_id is required in JSON payload"),
        (mail({"workspace_id": ws.id, "notification": {"contact": contact}}), "notification.id is required"),
        (mail({"workspace_id": ws.id}), "notification.id is required"),
        (mail({"workspace_id": ws.id, "notification": {"id": "welcome_email"}}), "notification.contact is required"),
        (mail({"workspace_id": ws.id, "notification": {"id": "welcome_email", "contact": {"first_name": "J"}}}),
         "notification.contact.email is required"),
        (mail(send_s(ws.id, contact={"email": "nope"})), V + "notification.contact is invalid"),
        (mail(send_s(ws.id, email_options={"cc": ["nope"]})), V + "cc 'nope' must be a valid email address"),
        (mail(send_s(ws.id), Cc="nope"), V + "cc 'nope' must be a valid email address"),
        (mail(send_s(ws.id, channels=["sms"])), "no valid channels to send notification"),
        (mail(send_s(ws.id, id="missing")), "notification not found: transactional notification not found: missing"),
        (mail(send_s(ws.id, email_options={"attachments": [{"filename": "run.exe", "content": "eA=="}]})),
         V + "invalid attachments: attachment 0: file extension .exe is not supported by email service providers"),
    ]
    limited = {text: await member_key(pool, settings, ws, permissions) for permissions, text in (
        ("contacts:rw", "Insufficient permissions: write access to transactional notifications required"),
        ("transactional:rw", "Insufficient permissions: write access to contacts required"))}
    elsewhere = await new_workspace()
    before = await snapshot(pool, ws.id)
    async with connected(port, key) as smtp:
        for raw, text in cases:
            code, message = await data(smtp, raw)
            assert code == 554 and message.startswith("5.6.0 " + text), (text, code, message)
        assert await data(smtp, mail(send_s(elsewhere.id))) == (550, "5.7.1 user does not have access to workspace")
        assert await data(smtp, mail(send_s("NOT A WORKSPACE"))) == (550, "5.7.1 user does not have access to workspace")
    for text, limited_key in limited.items():
        assert await submit(port, limited_key, mail(send_s(ws.id))) == (550, "5.7.1 " + text)
    assert await snapshot(pool, ws.id) == before
    await deliver(pool, settings)
    assert sink.received == []


async def test_the_json_part_is_preferred_and_nested_parts_are_walked(client, ws, pool, settings, sink, port):
    await setup(client, ws, smtp_port=sink.port)
    key = await create_key(client, ws)
    outer = EmailMessage()
    outer["From"] = "app@shop.test"
    outer["Message-ID"] = "<multi@app>"
    outer.set_content(json.dumps(send_s(ws.id, id="missing")))    # a text/plain part that is JSON too
    outer.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="a.pdf")
    alternative = EmailMessage()
    alternative.set_content("Hello, this is not the request")
    payload = "\ufeff \n" + json.dumps(send_s(ws.id, contact={"email": "jane@example.com", "first_name": "Jäne"}))
    alternative.add_alternative(payload.encode("utf-16"), maintype="application", subtype="json",
                                cte="base64", params={"charset": "utf-16"})
    outer.attach(alternative)
    assert [p.get_content_type() for p in outer.walk()] == [
        "multipart/mixed", "text/plain", "application/pdf", "multipart/alternative", "text/plain",
        "application/json"]
    message_id = queued_id(await submit(port, key, outer.as_bytes()))
    await deliver(pool, settings)
    (delivered,) = sink.received
    assert delivered.header("X-Message-ID") == message_id and delivered.header("Subject") == "Hi Jäne"


async def test_a_text_part_is_used_when_no_json_part_parses(client, ws, pool, settings, sink, port):
    await setup(client, ws, smtp_port=sink.port)
    key = await create_key(client, ws)
    m = EmailMessage()
    m["From"] = "app@shop.test"
    m.set_content(json.dumps(send_s(ws.id)), cte="base64")
    m.add_alternative("<p>not json</p>", subtype="html")
    m.add_attachment(b"{broken", maintype="application", subtype="json", filename="x.json")
    queued_id(await submit(port, key, m.as_bytes()))
    bad = EmailMessage()
    bad.set_content("first text")
    bad.add_alternative("{\"second\": ", subtype="plain")
    code, text = await submit(port, key, bad.as_bytes())
    assert code == 554 and text.startswith("5.6.0 email body is not valid JSON: JSON is malformed"), text


async def test_headers_fill_what_the_json_leaves_empty(client, ws, pool, settings, sink, port):
    await setup(client, ws, smtp_port=sink.port)
    key = await create_key(client, ws)
    raw = mail(send_s(ws.id, channels=None, email_options={"bcc": []}), message_id="<h1@app>",
               Cc="Carl <c@example.com>, d@example.com", Bcc="b@example.com",
               Reply_To="Support <r@acme.test>, second@acme.test")
    message_id = queued_id(await submit(port, key, raw))
    given = send_s(ws.id, external_id="", email_options={"cc": ["given@example.com"], "reply_to": "x@acme.test"})
    second = queued_id(await submit(port, key, mail(given, message_id="<h2@app>", Cc="c@example.com",
                                                     Reply_To="r@acme.test")))
    await deliver(pool, settings)
    by_id = {m.header("X-Message-ID"): m for m in sink.received}
    assert sorted(by_id[message_id].rcpt_tos) == ["b@example.com", "c@example.com", "d@example.com",
                                                  "jane@example.com"]
    assert by_id[message_id].header("Reply-To") == "r@acme.test"
    assert sorted(by_id[second].rcpt_tos) == ["given@example.com", "jane@example.com"]
    assert by_id[second].header("Reply-To") == "x@acme.test"
    rows = {r["id"]: r for r in await history(pool, ws)}
    assert rows[message_id]["external_id"] == "h1@app"
    assert rows[message_id]["channel_options"] == {"cc": ["c@example.com", "d@example.com"],
                                                   "bcc": ["b@example.com"], "reply_to": "r@acme.test"}
    assert rows[second]["external_id"] is None     # the JSON's own (empty) external_id wins


async def test_recipients_and_size_limits(client, ws, pool, port):
    key = await create_key(client, ws)
    async with connected(port, key) as smtp:
        assert "size" in smtp.esmtp_extensions and smtp.esmtp_extensions["size"] == str(10 * 1024 * 1024)
        await smtp.mail("app@shop.test")
        for i in range(50):
            await smtp.rcpt(f"r{i}@shop.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt("r50@shop.test")
        assert (refused.value.code, refused.value.message) == (452, "4.5.3 too many recipients")
        await smtp.rset()
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as too_big:
            await smtp.mail("app@shop.test", options=[f"SIZE={10 * 1024 * 1024 + 1}"])
        assert (too_big.value.code, too_big.value.message) == (552, "5.3.4 message too large")
        big = mail("x" * 100)[:-4] + b"\r\n" + (b"y" * 998 + b"\r\n") * 10600
        assert await data(smtp, big) == (552, "5.3.4 message too large")
        assert (await smtp.noop()).code == 250                 # the connection is still usable
    assert await pool.fetchval("SELECT count(*) FROM message_history WHERE workspace_id = $1", ws.id) == 0


async def test_a_database_failure_is_a_temporary_reply(empty_db, settings):
    """451, so the client sends again later: here the database disappears between AUTH and DATA."""
    conn = await db.connect(empty_db.url)
    try:
        await migrate(conn)
        await ws_store.create_with_owner(conn, "ws1", "Workspace", {}, None)
        email = "app@ws1.api.postroom"
        user_id = await ws_store.create_api_key_user(conn, "ws1", email, auth_model.full_permissions())
    finally:
        await conn.close()
    key = Key(email, auth_model.issue_token(settings.key_bytes, user_id, "api_key", email=email))
    pool = await db.create_pool(empty_db.url, min_size=1, max_size=2, timeout=5.0)
    try:
        async with running(pool, settings) as started:
            async with connected(started.port, key) as smtp:
                await empty_db.admin.execute(f'DROP DATABASE "{empty_db.name}" WITH (FORCE)')
                assert await data(smtp, mail(send_s("ws1"))) == (451, "4.3.0 temporary failure, try again later")
    finally:
        pool.terminate()


# ---------------------------------------------------------------- the pure rules

def test_replies_for_errors():
    from postroom.platform.errors import RuleError

    assert bridge_model.reply_for(RuleError("bad\r\nthing é")) == "554 5.6.0 bad thing \\xe9"
    assert bridge_model.reply_for(RuleError("nope", 403)) == "550 5.7.1 nope"
    assert bridge_model.reply_for(RuleError("Failed to send notification", 500)) == bridge_model.REPLY_TEMPORARY
    assert bridge_model.reply_for(RuntimeError("boom")) == bridge_model.REPLY_TEMPORARY
    assert len(bridge_model.reply_for(RuleError("x" * 2000))) < 512


def test_plain_credentials():
    assert bridge_model.plain_credentials(b"\0user@x\0tok") == ("user@x", "tok")
    assert bridge_model.plain_credentials(b"admin\0user@x\0tok") == ("user@x", "tok")
    assert bridge_model.plain_credentials(b"user@x\0tok") is None


# ---------------------------------------------------------------- settings

BRIDGE_ENV = ("POSTROOM_SMTP_BRIDGE_ENABLED", "SMTP_BRIDGE_ENABLED", "SMTP_RELAY_ENABLED", "POSTROOM_SMTP_BRIDGE_HOST",
              "POSTROOM_SMTP_BRIDGE_PORT", "SMTP_BRIDGE_PORT", "POSTROOM_SMTP_BRIDGE_DOMAIN", "SMTP_BRIDGE_DOMAIN",
              "POSTROOM_SMTP_BRIDGE_TLS", "SMTP_BRIDGE_TLS", "POSTROOM_SMTP_BRIDGE_TLS_CERT_BASE64",
              "POSTROOM_SMTP_BRIDGE_TLS_KEY_BASE64", "SMTP_BRIDGE_TLS_CERT_BASE64", "SMTP_BRIDGE_TLS_KEY_BASE64",
              "POSTROOM_DATABASE_URL")


@pytest.fixture
def env(monkeypatch):
    for name in BRIDGE_ENV:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values):
        """The settings read from exactly these variables."""
        for name in BRIDGE_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        return Settings.from_env().smtp_bridge

    return set_env


@pytest.fixture(scope="module")
def pems():
    cert = trustme.CA().issue_cert("bridge.test")
    return {"POSTROOM_SMTP_BRIDGE_TLS_CERT_BASE64": base64.b64encode(cert.cert_chain_pems[0].bytes()).decode(),
            "POSTROOM_SMTP_BRIDGE_TLS_KEY_BASE64": base64.b64encode(cert.private_key_pem.bytes()).decode()}


def test_settings_defaults_and_notifuse_names(env, pems):
    assert env() == SmtpBridgeSettings()
    assert env(POSTROOM_SMTP_BRIDGE_TLS="nonsense").enabled is False     # nothing else is read while off
    on = env(SMTP_RELAY_ENABLED="true", SMTP_BRIDGE_PORT="2525", SMTP_BRIDGE_DOMAIN="mx.shop.test")
    assert (on.enabled, on.host, on.port, on.greeting_domain, on.tls) == (True, "0.0.0.0", 2525, "mx.shop.test", "off")
    assert env(SMTP_BRIDGE_ENABLED="1", POSTROOM_SMTP_BRIDGE_PORT="25", SMTP_BRIDGE_PORT="2525").port == 25
    with_tls = env(POSTROOM_SMTP_BRIDGE_ENABLED="yes", **pems)
    assert with_tls.tls == "starttls" and with_tls.tls_context() is not None
    assert env(POSTROOM_SMTP_BRIDGE_ENABLED="yes", SMTP_BRIDGE_TLS="IMPLICIT", **pems).tls == "implicit"
    notifuse_names = {name.removeprefix("POSTROOM_"): value for name, value in pems.items()}
    assert env(SMTP_BRIDGE_ENABLED="true", **notifuse_names).tls == "starttls"
    assert env(POSTROOM_SMTP_BRIDGE_ENABLED="yes", POSTROOM_SMTP_BRIDGE_TLS="off", **pems).cert_pem is None


def test_settings_start_up_errors(env, pems):
    on = {"POSTROOM_SMTP_BRIDGE_ENABLED": "1"}
    assert env(**on).tls == "off"                    # the embedded database: a trial, no TLS needed
    with pytest.raises(ConfigError, match="needs both"):
        env(**on, POSTROOM_SMTP_BRIDGE_TLS="starttls")
    with pytest.raises(ConfigError, match="needs both"):
        env(**on, POSTROOM_SMTP_BRIDGE_TLS="implicit",
            POSTROOM_SMTP_BRIDGE_TLS_CERT_BASE64=pems["POSTROOM_SMTP_BRIDGE_TLS_CERT_BASE64"])
    with pytest.raises(ConfigError, match="must be one of off, starttls, implicit"):
        env(**on, POSTROOM_SMTP_BRIDGE_TLS="ssl")
    with pytest.raises(ConfigError, match="POSTROOM_SMTP_BRIDGE_PORT must be a port number"):
        env(**on, POSTROOM_SMTP_BRIDGE_TLS="off", POSTROOM_SMTP_BRIDGE_PORT="70000")
    with pytest.raises(ConfigError, match="POSTROOM_SMTP_BRIDGE_ENABLED must be true or false"):
        env(POSTROOM_SMTP_BRIDGE_ENABLED="maybe")


def test_settings_tls_errors(env, pems):
    with pytest.raises(ConfigError, match="must be a base64-encoded PEM file"):
        env(POSTROOM_SMTP_BRIDGE_ENABLED="1", POSTROOM_SMTP_BRIDGE_TLS_CERT_BASE64="@@@",
            POSTROOM_SMTP_BRIDGE_TLS_KEY_BASE64=pems["POSTROOM_SMTP_BRIDGE_TLS_KEY_BASE64"])
    other_key = base64.b64encode(trustme.CA().issue_cert("x.test").private_key_pem.bytes()).decode()
    with pytest.raises(ConfigError, match="certificate and key do not load"):
        env(POSTROOM_SMTP_BRIDGE_ENABLED="1", POSTROOM_SMTP_BRIDGE_TLS_CERT_BASE64=pems[
            "POSTROOM_SMTP_BRIDGE_TLS_CERT_BASE64"], POSTROOM_SMTP_BRIDGE_TLS_KEY_BASE64=other_key)


def test_production_needs_tls_or_an_explicit_off(env, pems):
    production = {"POSTROOM_SMTP_BRIDGE_ENABLED": "1", "POSTROOM_DATABASE_URL": "postgresql://db.internal/postroom"}
    with pytest.raises(ConfigError, match="enabled without TLS"):
        env(**production)
    assert env(**production, POSTROOM_SMTP_BRIDGE_TLS="off").tls == "off"
    assert env(**production, POSTROOM_SMTP_BRIDGE_TLS="", **pems).tls == "starttls"


# ---------------------------------------------------------------- inside `postroom serve`

async def test_serve_starts_the_bridge_and_stops_it(dsn):
    bridge_port = free_port()
    server = Serve(dsn, POSTROOM_SMTP_BRIDGE_ENABLED="true", POSTROOM_SMTP_BRIDGE_HOST="127.0.0.1",
                   POSTROOM_SMTP_BRIDGE_PORT=str(bridge_port), POSTROOM_SMTP_BRIDGE_TLS="off").start()
    try:
        await server.ready()
        assert f"SMTP bridge listening on 127.0.0.1:{bridge_port} (no TLS)" in server.output()
        assert await auth(bridge_port, "nobody@nowhere.test", "wrong") == (535, "5.7.8 invalid credentials")
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.output()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", bridge_port)


async def test_serve_refuses_to_start_with_a_tls_mode_and_no_certificate(dsn):
    server = Serve(dsn, POSTROOM_SMTP_BRIDGE_ENABLED="true", POSTROOM_SMTP_BRIDGE_TLS="starttls").start()
    try:
        assert await asyncio.to_thread(server.proc.wait, 60) == 1
    finally:
        server.stop()
    assert "POSTROOM_SMTP_BRIDGE_TLS=starttls needs both" in server.output()
