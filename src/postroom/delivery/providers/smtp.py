"""SMTP (delivery-contract 1.2, 2.1, 2.8) with `aiosmtplib`: settings, the conversation, and the
classification of its failures from the stage and the reply code.

    connect (TLS first when implicit) -> EHLO -> [STARTTLS -> EHLO] -> [AUTH]     once a connection
    [RSET] -> MAIL FROM:<from> -> RCPT TO:<to>, <cc...>, <bcc...> -> DATA         each message

A provider keeps a small pool of open connections (`max_connections`, the integration's
`max_concurrency`, 2 by default): up to 100 messages on one connection, closed after 60 s idle. A
connection is reused at once after an accepted message; after a refusal or a second's idleness it
is RSET first (which also tells a connection the server closed: a fresh one is opened then). The message is built once, before any connection (mime.render).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import ssl
import time
from dataclasses import dataclass

import aiosmtplib
import httpx

from postroom.delivery import mime
from postroom.delivery.providers.base import (
    SMTP_COMMAND_TIMEOUT, SMTP_CONNECT_TIMEOUT, SMTP_CONVERSATION_TIMEOUT, STATUS_INFO_MAX, THROTTLE_DEFAULT,
    Class, Context, Message, ProviderConfigError, SendFailed, Sent, string_setting,
)

log = logging.getLogger(__name__)

SECRETS = ("password", "oauth2_client_secret", "oauth2_refresh_token")
TLS_MODES = ("none", "starttls", "implicit")
MAX_MESSAGES_PER_CONNECTION = 100
IDLE_CLOSE = 60.0                 # seconds an unused connection stays open
REUSE_WITHOUT_RSET = 1.0          # seconds after an accepted message a connection is reused without RSET
DEFAULT_CONNECTIONS = 2
TOKEN_MARGIN = 300.0              # an OAuth2 token is renewed 5 minutes before it expires
TOKEN_URLS = {"microsoft": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
              "google": "https://oauth2.googleapis.com/token"}
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
HOOK = "smtp_oauth2"              # the test hook's key for the token endpoints (base.HOOK_KINDS)

# ---------------------------------------------------------------- settings (1.2)


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    use_tls: bool = False
    tls_mode: str = ""            # as given; `tls` is the mode in force
    ehlo_hostname: str = ""
    username: str = ""
    password: str = ""
    auth_type: str = "basic"
    oauth2_provider: str = ""
    oauth2_client_id: str = ""
    oauth2_client_secret: str = ""
    oauth2_tenant_id: str = ""
    oauth2_refresh_token: str = ""

    @property
    def tls(self) -> str:
        """`tls_mode` when given; else none without `use_tls`, implicit on port 465, starttls."""
        if self.tls_mode:
            return self.tls_mode
        if not self.use_tls:
            return "none"
        return "implicit" if self.port == 465 else "starttls"

    @classmethod
    def parse(cls, raw: dict) -> "Settings":
        """The table rows in order, first failure wins; messages without the
        `invalid provider configuration: ` prefix."""
        host = string_setting(raw, "host").strip()
        if not host:
            raise ProviderConfigError("host is required for SMTP configuration")
        port = raw.get("port") or 0
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ProviderConfigError(f"invalid port number for SMTP configuration: {port}")
        fields = dict(host=host, port=port, use_tls=_flag(raw, "use_tls"), tls_mode=_tls_mode(raw),
                      ehlo_hostname=_ehlo_hostname(raw), username=string_setting(raw, "username"),
                      password=string_setting(raw, "password"), auth_type=_auth_type(raw))
        if fields["auth_type"] == "oauth2":
            fields.update(_oauth2(raw))
        return cls(**fields)



def _flag(raw: dict, name: str) -> bool:
    value = raw.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ProviderConfigError(f"{name} must be a boolean")
    return value


def _tls_mode(raw: dict) -> str:
    mode = string_setting(raw, "tls_mode")
    if mode and mode not in TLS_MODES:
        raise ProviderConfigError("tls_mode must be 'none', 'starttls' or 'implicit'")
    return mode


def _ehlo_hostname(raw: dict) -> str:
    name = string_setting(raw, "ehlo_hostname").strip()
    # one token on the EHLO line: whitespace or a control character would add arguments or commands
    if name and (not name.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in name)):
        raise ProviderConfigError("ehlo_hostname must be a host name")
    return name


def _auth_type(raw: dict) -> str:
    auth = string_setting(raw, "auth_type") or "basic"
    if auth not in ("basic", "oauth2"):
        raise ProviderConfigError("auth_type must be 'basic' or 'oauth2'")
    return auth


def _oauth2(raw: dict) -> dict:
    provider = string_setting(raw, "oauth2_provider")
    if not provider:
        raise ProviderConfigError("oauth2_provider is required for OAuth2 authentication")
    if provider not in TOKEN_URLS:
        raise ProviderConfigError("oauth2_provider must be 'microsoft' or 'google'")
    out = {"oauth2_provider": provider}
    for name in ("oauth2_client_id", "oauth2_client_secret"):
        out[name] = string_setting(raw, name)
        if not out[name]:
            raise ProviderConfigError(f"{name} is required for OAuth2 authentication")
    needed = ("oauth2_tenant_id", "Microsoft") if provider == "microsoft" else ("oauth2_refresh_token", "Google")
    out[needed[0]] = string_setting(raw, needed[0])
    if not out[needed[0]]:
        raise ProviderConfigError(f"{needed[0]} is required for {needed[1]} OAuth2")
    return out


# ---------------------------------------------------------------- classification (2.8)

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s*")


def enhanced_code(text: str) -> tuple[str, str]:
    """(`5.1.1`, rest) from a reply text `5.1.1 no such user`; ("", text) without one."""
    found = _ENHANCED.match(text)
    return (found.group(1), text[found.end():]) if found else ("", text)


def classify(stage: str, code: int, enhanced: str = "", *, copy: bool = False) -> Class | None:
    """The class of a refused reply at `stage` (CONNECT, EHLO, STARTTLS, AUTH, MAIL FROM, RCPT TO,
    DATA); None for a 5xx to a cc or bcc address (`copy`), which is dropped while the send goes on.
    Only the stage and the codes count, never the words of the text."""
    if code == 421:
        return "throttled"
    if stage not in ("RCPT TO", "DATA"):
        return "provider"
    if 400 <= code < 500:
        # greylisting, a full mailbox: nothing has been handed over yet, so the retry duplicates nothing
        return "deferred"
    if stage == "DATA":
        return "message"
    if copy:
        return None
    # relay denied (5.7.x) is configuration; every other permanent refusal of the address
    # (5.1.x, 5.2.x, 550-553 without an enhanced code, the rest) is the recipient's
    return "provider" if enhanced.startswith("5.7.") else "recipient"


def describe(stage: str, address: str | None, code: int, text: str) -> str:
    """`smtp: <STAGE> <addr?> rejected: <code> <enhanced code> <text>`."""
    enhanced, rest = enhanced_code(" ".join(text.split()))
    where = f"{stage} <{address}>" if address else stage
    reply = " ".join(p for p in (str(code), enhanced, rest) if p)
    return f"smtp: {where} rejected: {reply}"[:STATUS_INFO_MAX]


class _Dropped(Exception):
    """A cc or bcc address refused with 5xx: noted, and the send goes on without it."""

    def __init__(self, note: str):
        super().__init__(note)
        self.note = note


def _refusal(stage: str, address: str | None, e: aiosmtplib.SMTPResponseException, copy: bool = False):
    """The SendFailed (or _Dropped) of a refused reply."""
    info = describe(stage, address, e.code, e.message)
    cls = classify(stage, e.code, enhanced_code(e.message.strip())[0], copy=copy)
    if cls is None:
        return _Dropped(f"{info}; address dropped")
    return SendFailed(cls, info, THROTTLE_DEFAULT if cls == "throttled" else None)


async def _step(stage: str, call, address: str | None = None, *, copy: bool = False):
    """Runs one command; a refusal or a failure becomes SendFailed with its class (or _Dropped)."""
    try:
        return await call
    except aiosmtplib.SMTPResponseException as e:
        raise _refusal(stage, address, e, copy) from None
    except aiosmtplib.SMTPTimeoutError:
        raise SendFailed("provider", f"smtp: {stage} timed out") from None
    except (aiosmtplib.SMTPException, OSError, ValueError) as e:
        # network, TLS (ssl.SSLError is an OSError), a server that went away, a refused EHLO name
        raise SendFailed("provider", f"smtp: {stage} failed: {' '.join(str(e).split())}"[:STATUS_INFO_MAX]) from None


# ---------------------------------------------------------------- OAuth2 tokens


@dataclass
class _Token:
    value: str
    expires: float                # time.monotonic() after which it is not used


class Tokens:
    """Access tokens per (provider, tenant, client id). The key also holds a digest of the secrets:
    two integrations naming the same client id with different secrets must not share a token (a
    tenant could otherwise send through another's mailbox by copying its client id)."""

    def __init__(self):
        self._tokens: dict[tuple, _Token] = {}
        self._locks: dict[tuple, asyncio.Lock] = {}

    @staticmethod
    def key(s: Settings) -> tuple:
        digest = hashlib.sha256(f"{s.oauth2_client_secret}\0{s.oauth2_refresh_token}".encode()).hexdigest()
        return (s.oauth2_provider, s.oauth2_tenant_id, s.oauth2_client_id, digest)

    def forget(self, s: Settings) -> None:
        self._tokens.pop(self.key(s), None)

    async def get(self, s: Settings, context: Context) -> str:
        key = self.key(s)
        async with self._locks.setdefault(key, asyncio.Lock()):   # one fetch when several connections open
            token = self._tokens.get(key)
            if token is None or token.expires <= time.monotonic():
                token = await fetch_token(s, context)
                self._tokens[key] = token
            return token.value


TOKENS = Tokens()                 # shared by the providers of a process


def token_request(s: Settings) -> tuple[str, dict[str, str]]:
    """(URL, form) of the token endpoint."""
    url = TOKEN_URLS[s.oauth2_provider].format(tenant=s.oauth2_tenant_id)
    form = {"client_id": s.oauth2_client_id, "client_secret": s.oauth2_client_secret}
    if s.oauth2_provider == "microsoft":
        form.update(grant_type="client_credentials", scope=MICROSOFT_SCOPE)
    else:
        form.update(grant_type="refresh_token", refresh_token=s.oauth2_refresh_token)
    return url, form


async def fetch_token(s: Settings, context: Context) -> _Token:
    url, form = token_request(s)
    failed = f"smtp: AUTH OAuth2 token from {s.oauth2_provider}"
    try:
        answer = await context.client.post(context.url(HOOK, url), data=form)
    except httpx.HTTPError as e:
        raise SendFailed("provider", f"{failed} failed: {type(e).__name__} {e}"[:STATUS_INFO_MAX]) from None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if answer.status_code != 200 or not body.get("access_token"):
        error = body.get("error_description") or body.get("error") or answer.text
        raise SendFailed("provider", f"{failed} refused: HTTP {answer.status_code}: {' '.join(str(error).split())}"[:STATUS_INFO_MAX])
    lifetime = float(body.get("expires_in") or 3600)
    return _Token(body["access_token"], time.monotonic() + lifetime - TOKEN_MARGIN)


# ---------------------------------------------------------------- connections


@dataclass(eq=False)
class _Connection:
    smtp: aiosmtplib.SMTP
    sent: int = 0
    timer: asyncio.TimerHandle | None = None
    clean: bool = False           # the last transaction ended with the server's 250 after DATA
    returned_at: float = 0.0      # time.monotonic() when it went back to the pool

    @property
    def unchecked(self) -> bool:
        """Reused without RSET: the server may have closed it a moment ago, unseen so far."""
        return self.clean and time.monotonic() - self.returned_at < REUSE_WITHOUT_RSET

    async def reset(self) -> bool:
        """Ready for the next MAIL FROM; False when the server closed the connection or refuses it.
        After an accepted message the session is already back at its start (RFC 5321 4.1.1.4), so
        a connection reused at once skips the RSET round trip (a fifth of a message's); one that
        sat idle, or whose last transaction was refused, is RSET first, which also tells a
        connection the server closed."""
        if not self.smtp.is_connected:
            return False
        if self.unchecked:
            return True
        try:
            await self.smtp.rset()
            return True
        except (aiosmtplib.SMTPException, OSError):
            self.smtp.close()
            return False

    async def quit(self) -> None:
        try:
            if self.smtp.is_connected:
                await asyncio.wait_for(self.smtp.quit(), 5.0)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            self.smtp.close()


class _Pool:
    """Open connections of one integration: at most `size` in use, the idle ones kept for reuse
    (most recently used first) and closed after IDLE_CLOSE seconds."""

    def __init__(self, size: int):
        self.slots = asyncio.Semaphore(size)
        self.idle: list[_Connection] = []
        self.closing: set[asyncio.Task] = set()

    async def take(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.timer:
                conn.timer.cancel()
            if await conn.reset():
                return conn
        return None

    def give_back(self, conn: _Connection, clean: bool = False) -> None:
        if conn.sent >= MAX_MESSAGES_PER_CONNECTION or not conn.smtp.is_connected:
            self.retire(conn)
            return
        conn.clean, conn.returned_at = clean, time.monotonic()
        conn.timer = asyncio.get_running_loop().call_later(IDLE_CLOSE, self._expire, conn)
        self.idle.append(conn)

    def _expire(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
            self.retire(conn)

    def retire(self, conn: _Connection) -> None:
        task = asyncio.get_running_loop().create_task(conn.quit())
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def aclose(self) -> None:
        for conn in list(self.idle):
            if conn.timer:
                conn.timer.cancel()
            self.retire(conn)
        self.idle.clear()
        if self.closing:
            await asyncio.gather(*self.closing, return_exceptions=True)


def default_tls_context() -> ssl.SSLContext:
    """The system's trust store, TLS 1.2 or later, host name checked (contract 2.1)."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# ---------------------------------------------------------------- the provider


def connect(settings: Settings, context: Context, integration_id: str | None = None,
            concurrency: int | None = None) -> "SmtpProvider":
    """One kept-open connection per call in flight: the pool is the integration's concurrency."""
    return SmtpProvider(settings, context, max_connections=concurrency or DEFAULT_CONNECTIONS)


class SmtpProvider:
    def __init__(self, settings: Settings, context: Context, *, max_connections: int = DEFAULT_CONNECTIONS,
                 tls_context: ssl.SSLContext | None = None, tokens: Tokens = TOKENS):
        self.settings = settings
        self.context = context
        self.tokens = tokens
        self._tls = tls_context
        self._pool = _Pool(max_connections)
        if settings.tls == "none" and (settings.password or settings.auth_type == "oauth2"):
            log.warning("SMTP relay %s:%s: tls_mode none, credentials go in clear", settings.host, settings.port)

    async def send(self, message: Message) -> Sent:
        data = mime.render("smtp", message)
        sender, recipients = mime.envelope("smtp", message)
        async with self._pool.slots:
            notes = await self._converse(message, sender, recipients, data)
        note = "; ".join(notes)[:STATUS_INFO_MAX] or None
        return Sent(mime.message_id_header(message), note)

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def _converse(self, message: Message, sender: str, recipients: list[str], data: bytes) -> list[str]:
        conn = None
        try:
            async with asyncio.timeout(SMTP_CONVERSATION_TIMEOUT):
                conn = await self._pool.take()
                if conn is not None:
                    try:
                        conn.sent += 1
                        notes = await _transaction(conn.smtp, sender, recipients, data, unchecked=conn.unchecked)
                    except _Gone:
                        self._drop(conn)
                        conn = None
                if conn is None:
                    conn = await self._open(message)
                    conn.sent += 1
                    notes = await _transaction(conn.smtp, sender, recipients, data)
        except TimeoutError:
            self._drop(conn)
            raise SendFailed("provider", f"smtp: conversation timed out after {SMTP_CONVERSATION_TIMEOUT:g} s") from None
        except SendFailed as failed:
            # a refused transaction leaves a sound session (RSET precedes its reuse: not clean); throttling
            # and outages do not
            if failed.cls in ("throttled", "provider"):
                self._drop(conn)
            elif conn is not None:
                self._pool.give_back(conn)
            raise
        except BaseException:
            self._drop(conn)
            raise
        self._pool.give_back(conn, clean=True)
        return notes

    def _drop(self, conn: _Connection | None) -> None:
        if conn is not None:
            self._pool.retire(conn)

    async def _open(self, message: Message) -> _Connection:
        s = self.settings
        smtp = aiosmtplib.SMTP(hostname=s.host, port=s.port, use_tls=s.tls == "implicit", start_tls=False,
                               local_hostname=self._ehlo_name(message), timeout=SMTP_COMMAND_TIMEOUT,
                               tls_context=self._tls_context() if s.tls != "none" else None)
        try:
            await _step("CONNECT", smtp.connect(timeout=SMTP_CONNECT_TIMEOUT))
            await _step("EHLO", smtp.ehlo())
            if s.tls == "starttls":
                await _step("STARTTLS", smtp.starttls())
                await _step("EHLO", smtp.ehlo())
            await self._authenticate(smtp, message)
        except BaseException:
            smtp.close()
            raise
        return _Connection(smtp)

    def _ehlo_name(self, message: Message) -> str:
        domain = mime.ascii_address(message.from_address).rpartition("@")[2]
        return self.settings.ehlo_hostname or domain or self.settings.host

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = default_tls_context()
        return self._tls

    async def _authenticate(self, smtp: aiosmtplib.SMTP, message: Message) -> None:
        s = self.settings
        if s.auth_type == "oauth2":
            await _step("AUTH", self._xoauth2(smtp, mime.ascii_address(message.from_address)))
        elif s.username and s.password:
            # PLAIN (contract); LOGIN only for servers that offer it and not PLAIN
            methods = smtp.server_auth_methods
            plain = "plain" in methods or "login" not in methods
            call = smtp.auth_plain if plain else smtp.auth_login
            await _step("AUTH", call(s.username, s.password))

    async def _xoauth2(self, smtp: aiosmtplib.SMTP, user: str) -> None:
        """Raw aiosmtplib errors: the caller's _step classifies them as AUTH."""
        token = await self.tokens.get(self.settings, self.context)
        try:
            await smtp.auth_xoauth2(user, token)
        except aiosmtplib.SMTPAuthenticationError as e:
            if e.code != 535:
                raise
            # a 535 may mean the token was revoked before its time: one fresh token, one more try
            self.tokens.forget(self.settings)
            await smtp.auth_xoauth2(user, await self.tokens.get(self.settings, self.context))


class _Gone(Exception):
    """A connection reused without RSET turned out closed at MAIL FROM: nothing was sent on it, so
    the message goes on a new connection."""


async def _unless_gone(call):
    try:
        return await call
    except aiosmtplib.SMTPServerDisconnected:
        raise _Gone() from None


async def _transaction(smtp: aiosmtplib.SMTP, sender: str, recipients: list[str], data: bytes,
                       unchecked: bool = False) -> list[str]:
    """MAIL FROM with no ESMTP parameter (strict servers refuse BODY=, SMTPUTF8, SIZE=), one RCPT per
    address, DATA. Returns the notes of the cc/bcc addresses dropped. On an `unchecked` connection
    (reused without RSET) a closed connection at MAIL FROM raises _Gone."""
    mail = smtp.mail(sender)
    await _step("MAIL FROM", _unless_gone(mail) if unchecked else mail, sender)
    notes = []
    for i, address in enumerate(recipients):
        try:
            await _step("RCPT TO", smtp.rcpt(address), address, copy=i > 0)
        except _Dropped as dropped:
            notes.append(dropped.note)
    await _step("DATA", smtp.data(data))
    return notes
