"""An SMTP sink at the edge of the world: a real `aiosmtpd` server on 127.0.0.1 (in the test's event
loop) that records every command, the envelope, the AUTH identity and the raw message, parses
each message it accepts with the `email` package, and can be told to reject a stage with a
given reply (delivery-contract 2.10):

    sink.reject("RCPT", "550 5.1.1 no such user", address="jane@example.com")
    sink.reject("END", "451 4.3.0 try again", times=1)      # after the data, once
    sink.reject("AUTH", "535 5.7.8 bad credentials")

Stages: EHLO, AUTH, MAIL, RCPT, DATA (the command, before 354), END (after the final dot).
TLS: `starttls=` a server SSLContext offers STARTTLS; `implicit=` one makes the port TLS from
the first byte (port-465 style). `certificates()` makes both from a throwaway CA (trustme).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import email
import email.policy
import ssl
import warnings
from email.message import EmailMessage

import trustme
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

from fakes.webhook_receiver import WAIT, wait_until

STAGES = ("EHLO", "AUTH", "MAIL", "RCPT", "DATA", "END")


@dataclasses.dataclass
class Rule:
    stage: str
    reply: str
    address: str | None = None     # RCPT only: the address it applies to (any when None)
    times: int | None = None       # how many times it applies; None: always

    def applies(self, stage: str, address: str | None) -> bool:
        if self.stage != stage or self.times == 0:
            return False
        return self.address is None or (address or "").lower() == self.address.lower()


@dataclasses.dataclass
class Auth:
    mechanism: str
    login: str
    secret: str        # the password, or the bearer token for XOAUTH2


@dataclasses.dataclass
class File:
    filename: str | None
    content_type: str
    disposition: str | None
    content_id: str | None
    transfer_encoding: str | None
    content: bytes
    raw: str           # the part's body as it was on the wire (still encoded)


@dataclasses.dataclass
class Mail:
    connection: int
    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    raw: bytes
    auth: Auth | None
    tls: bool

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    def header(self, name: str) -> str | None:
        """The decoded value (RFC 2047 words read)."""
        value = self.message[name]
        return None if value is None else str(value)

    def raw_header(self, name: str) -> str | None:
        """The value as it was on the wire (unfolded)."""
        raw = email.message_from_bytes(self.raw, policy=email.policy.compat32)[name]
        return None if raw is None else " ".join(str(raw).split())

    def leaf(self, content_type: str):
        return next((p for p in self.message.walk() if p.get_content_type() == content_type), None)

    @property
    def text(self) -> str | None:
        part = self.leaf("text/plain")
        return None if part is None else part.get_content()

    @property
    def html(self) -> str | None:
        part = self.leaf("text/html")
        return None if part is None else part.get_content()

    @property
    def structure(self) -> list:
        """The MIME tree as nested lists of content types, e.g.
        ['multipart/mixed', ['multipart/alternative', 'text/plain', 'text/html'], 'application/pdf']."""
        return _structure(self.message)

    @property
    def files(self) -> list[File]:
        out = []
        for part in self.message.walk():
            if part.is_multipart() or part.get_content_maintype() == "text" and not part.get_filename():
                continue
            out.append(File(part.get_filename(), part.get_content_type(), part.get_content_disposition(),
                            part["Content-ID"], part["Content-Transfer-Encoding"],
                            part.get_payload(decode=True), part.get_payload()))
        return out


def _structure(part):
    if not part.is_multipart():
        return part.get_content_type()
    return [part.get_content_type(), *(_structure(p) for p in part.iter_parts())]


def certificates() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for 127.0.0.1 and localhost."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    return server, client


class _Server(SMTP):
    """One connection: aiosmtpd's SMTP with a number, and the DATA command open to rejection."""

    def __init__(self, sink: "Sink", number: int, **kwargs):
        super().__init__(sink, **kwargs)
        self.number = number
        self.sink = sink
        self.auth: Auth | None = None

    async def smtp_DATA(self, arg: str) -> None:
        if self.envelope is not None and self.envelope.rcpt_tos:
            self.sink.log(self, "DATA")
            reply = self.sink.rejection("DATA")
            if reply:
                await self.push(reply)
                return
        await super().smtp_DATA(arg)


class Sink:
    def __init__(self, *, users: dict[str, str] | None = None, tokens: dict[str, str] | None = None,
                 mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN", "XOAUTH2"), starttls: ssl.SSLContext | None = None,
                 implicit: ssl.SSLContext | None = None):
        """`users` login -> password (None: no AUTH required); `tokens` user -> the one bearer
        token XOAUTH2 accepts for it; `mechanisms` what EHLO offers."""
        self.users = users
        self.tokens = tokens or {}
        self.mechanisms = mechanisms
        self.starttls = starttls
        self.implicit = implicit
        self.rules: list[Rule] = []
        self.received: list[Mail] = []
        self.commands: list[tuple[int, str]] = []   # (connection number, command line without secrets)
        self.servers: list[_Server] = []
        self.arrived = asyncio.Event()
        self.port = 0

    # ------------------------------------------------------------ what a test tells it

    def reject(self, stage: str, reply: str, *, address: str | None = None, times: int | None = None) -> Rule:
        if stage not in STAGES:
            raise ValueError(stage)
        rule = Rule(stage, reply, address, times)
        self.rules.append(rule)
        return rule

    def drop_connections(self) -> None:
        """Closes every open connection from the server side, as a relay's idle timeout does."""
        for server in self.servers:
            if server.transport is not None:
                server.transport.close()

    # ------------------------------------------------------------ what a test reads

    @property
    def connections(self) -> int:
        return len(self.servers)

    def verbs(self, connection: int | None = None) -> list[str]:
        return [line.split(" ", 1)[0] for n, line in self.commands if connection in (None, n)]

    def of(self, command: str) -> list[str]:
        return [line for _, line in self.commands if line.startswith(command)]

    async def wait_for(self, condition, timeout: float = WAIT):
        await wait_until(condition, self.arrived, "the sink", timeout)

    # ------------------------------------------------------------ aiosmtpd's hooks

    def log(self, server: _Server, line: str) -> None:
        self.commands.append((server.number, line))
        self.arrived.set()

    def rejection(self, stage: str, address: str | None = None) -> str | None:
        for rule in self.rules:
            if rule.applies(stage, address):
                if rule.times is not None:
                    rule.times -= 1
                return rule.reply
        return None

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.log(server, f"EHLO {hostname}")
        reply = self.rejection("EHLO")
        if reply:
            return [reply]
        session.host_name = hostname
        return responses

    async def handle_AUTH(self, server, session, envelope, args):
        self.log(server, f"AUTH {args[0]}")
        return self.rejection("AUTH") or MISSING

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.log(server, " ".join(["MAIL", f"FROM:<{address}>", *mail_options]))
        reply = self.rejection("MAIL")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.log(server, " ".join(["RCPT", f"TO:<{address}>", *rcpt_options]))
        reply = self.rejection("RCPT", address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_RSET(self, server, session, envelope):
        self.log(server, "RSET")
        return MISSING

    async def handle_QUIT(self, server, session, envelope):
        self.log(server, "QUIT")
        return MISSING

    async def handle_DATA(self, server, session, envelope):
        reply = self.rejection("END")
        if reply:
            self.log(server, f"END refused {reply}")
            return reply
        tls = server._tls_protocol is not None or self.implicit is not None
        self.received.append(Mail(server.number, envelope.mail_from, list(envelope.mail_options),
                                  list(envelope.rcpt_tos), bytes(envelope.original_content), server.auth, tls))
        self.log(server, "END accepted")
        return "250 2.0.0 OK queued"

    def handle_STARTTLS(self, server, session, envelope):
        self.log(server, "STARTTLS done")
        return True

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        login, password = auth_data.login.decode(), auth_data.password.decode()
        if self.users is not None and self.users.get(login) != password:
            return AuthResult(success=False, handled=False)
        server.auth = Auth(mechanism, login, password)
        return AuthResult(success=True, auth_data=auth_data)

    async def auth_XOAUTH2(self, server, args):
        """Google's and Microsoft's form: `user=<u>\\x01auth=Bearer <token>\\x01\\x01`; a refused
        token gets a 334 challenge with a JSON error, then 535 after the client's empty line."""
        fields = dict(f.split("=", 1) for f in base64.b64decode(args[1]).decode().split("\x01") if "=" in f)
        user, token = fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ")
        if self.tokens.get(user) != token:
            await server.challenge_auth('{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}')
            return AuthResult(success=False, handled=False, message="535 5.7.8 Username and Password not accepted")
        server.auth = Auth("XOAUTH2", user, token)
        return AuthResult(success=True, auth_data=LoginPassword(user.encode(), token.encode()))

    def server(self) -> _Server:
        offered = set(self.mechanisms)
        excluded = [m for m in ("PLAIN", "LOGIN", "XOAUTH2") if m not in offered]
        with warnings.catch_warnings():   # AUTH without TLS is what a test sink on 127.0.0.1 wants
            warnings.simplefilter("ignore", UserWarning)
            server = _Server(self, len(self.servers) + 1, hostname="sink.test", tls_context=self.starttls,
                             auth_required=self.users is not None or bool(self.tokens), auth_require_tls=False,
                             auth_exclude_mechanism=excluded, authenticator=self.authenticate,
                             loop=asyncio.get_running_loop())
        self.servers.append(server)
        return server


@contextlib.asynccontextmanager
async def serving(sink: Sink):
    """Runs `sink` on a free port of 127.0.0.1 for the duration of the block."""
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(sink.server, "127.0.0.1", 0, ssl=sink.implicit)
    sink.port = listener.sockets[0].getsockname()[1]
    try:
        yield sink
    finally:
        listener.close()
        sink.drop_connections()
        await listener.wait_closed()
