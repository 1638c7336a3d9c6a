"""The SMTP bridge (delivery-contract 6): an SMTP server (aiosmtpd) where a client authenticates
with an API key and each mail it submits is a transactional.send of the key's workspace, run by
the one send flow (transactional_api.send_notification) and so recorded and delivered like any
other. The rules (payload, headers, replies) are delivery/bridge_model.py's.

Off by default; `postroom serve` starts it when POSTROOM_SMTP_BRIDGE_ENABLED is set (the
capability's `servers`, run by app.py's lifespan), in the server's own event loop and database
pool, once per server process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from dataclasses import dataclass

from aiosmtpd.smtp import MISSING, SMTP, AuthResult

from postroom.auth import api as auth_api, store as auth_store
from postroom.auth.model import permission_error
from postroom.delivery import bridge_model as model
from postroom.delivery.transactional_api import Sender, send_notification
from postroom.platform import ratelimit
from postroom.platform.errors import RuleError
from postroom.platform.http import WORKSPACE_ID

log = logging.getLogger("postroom.delivery.bridge")
# aiosmtpd logs every command line at INFO, AUTH's base64 credentials included: kept quiet unless
# a logging configuration asks for it by name.
_PROTOCOL_LOG = logging.getLogger("mail.log")

# The bridge's AUTH counters, in the rate-limit table beside the workspaces' own: no workspace id
# can be this (platform.http.WORKSPACE_ID), so they share no row.
RATE_SCOPE = "@smtp-bridge"
# aiosmtpd's stock answers that the contract words otherwise.
_STOCK_REPLIES = {
    "552 Error: Too much mail data": model.REPLY_TOO_LARGE,
    "552 Error: message size exceeds fixed maximum message size": model.REPLY_TOO_LARGE,
}
TLS_LABELS = {"off": "no TLS", "starttls": "STARTTLS", "implicit": "implicit TLS"}
# How long a stopping bridge lets mails being processed finish before it closes their connections.
STOP_GRACE = 10.0


class _Connection(SMTP):
    """One client connection: aiosmtpd's protocol with the contract's timeouts and replies."""

    def __init__(self, bridge: "Bridge", **kwargs):
        super().__init__(bridge, **kwargs)
        self.bridge = bridge

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.bridge.connections.add(self)

    def connection_lost(self, error) -> None:
        self.bridge.connections.discard(self)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        # aiosmtpd's timer restarts at each command only; restarted at each read as well, the
        # timeout bounds a silence (60 s per read), not a whole 10 MiB DATA.
        self._reset_timeout()
        super().data_received(data)

    async def check_auth_needed(self, caller_method: str) -> bool:
        """MAIL, RCPT and DATA wait for AUTH."""
        if not self.session.authenticated:
            await self.push(model.REPLY_AUTH_REQUIRED)
            return True
        return False

    async def push(self, status) -> None:
        await super().push(_STOCK_REPLIES.get(status, status) if isinstance(status, str) else status)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Bridge:
    """The aiosmtpd handler: AUTH (PLAIN, LOGIN) against API keys, and DATA as a send."""

    def __init__(self, pool, settings, base_url: str):
        self.pool = pool
        self.settings = settings
        self.base_url = base_url
        self.connections: set[_Connection] = set()
        self.in_flight = 0

    # ------------------------------------------------------------ AUTH

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        blob = await _auth_value(server, args[1] if len(args) > 1 else None, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        credentials = model.plain_credentials(blob)
        if credentials is None:
            await server.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self.login(server, *credentials)

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        username = await _auth_value(server, args[1] if len(args) > 1 else None, "Username:")
        if username is None:
            return AuthResult(success=False, handled=True)
        password = await _auth_value(server, None, "Password:")
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self.login(server, model.text_of(username), model.text_of(password))

    async def login(self, server: SMTP, username: str, password: str) -> AuthResult:
        """Counted first (a client over its limit learns nothing of its credentials), then checked;
        a success clears the counters."""
        peer = server.session.peer
        buckets = model.auth_buckets(username, str(peer[0] if isinstance(peer, tuple) else peer))
        try:
            async with self.pool.acquire() as conn:
                if await ratelimit.count_attempt(conn, RATE_SCOPE, buckets, model.AUTH_WINDOW) is not None:
                    return AuthResult(success=False, handled=False, message=model.REPLY_TOO_MANY_AUTH)
                principal = await auth_api.api_key_login(conn, self.settings.key_bytes, username, password)
                if principal is None:
                    return AuthResult(success=False, handled=False, message=model.REPLY_BAD_CREDENTIALS)
                await ratelimit.forget(conn, RATE_SCOPE, buckets)
        except Exception:
            log.exception("SMTP bridge: AUTH could not be checked")
            return AuthResult(success=False, handled=False, message=model.REPLY_AUTH_UNAVAILABLE)
        return AuthResult(success=True, auth_data=principal)

    # ------------------------------------------------------------ commands

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= model.MAX_RECIPIENTS:
            return model.REPLY_TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.in_flight += 1
        try:
            message_id = await self.submit(session.auth_data, envelope.original_content)
        except RuleError as exc:
            return model.reply_for(exc)
        except Exception as exc:
            log.exception("SMTP bridge: a mail could not be sent")
            return model.reply_for(exc)
        finally:
            self.in_flight -= 1
        return model.queued(message_id)

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP bridge: connection error: %s: %s", type(error).__name__, error)
        return model.REPLY_TEMPORARY

    async def submit(self, principal, raw: bytes) -> str:
        """The mail as transactional.send: the bridge's checks in the contract's order (6, item 4),
        then parse_send's, the permissions, and the send flow."""
        message = model.parse_mail(raw)
        payload = model.fill_from_headers(model.find_payload(raw, message), message)
        workspace_id = model.workspace_of(payload)
        membership = None
        if WORKSPACE_ID.match(workspace_id):   # an id no workspace can have has no member
            async with self.pool.acquire() as conn:
                membership = await auth_store.membership(conn, workspace_id, principal.user_id)
        if membership is None:
            raise RuleError(model.NO_ACCESS, 403)
        model.check_notification(payload)
        request = model.send_request(payload)
        denied = permission_error(membership, "transactional", True)
        if denied:
            raise RuleError(denied, 403)
        return await send_notification(Sender(self.pool, self.settings, workspace_id, membership, self.base_url),
                                       request)


async def _auth_value(server: SMTP, given: str | None, challenge: str) -> bytes | None:
    """An AUTH value: the one given on the command line, else the client's answer to `challenge`.
    None when the client gave up or sent bad base64 (already answered)."""
    if given is None:
        value = await server.challenge_auth(challenge)
        return None if value is MISSING else value
    try:
        return base64.b64decode(given, validate=True)
    except (binascii.Error, ValueError):
        await server.push("501 5.5.2 Can't decode base64")
        return None


@dataclass
class Running:
    """A started bridge: where it listens, and how to stop it."""
    server: asyncio.AbstractServer
    bridge: Bridge
    host: str
    port: int
    tls: str

    async def close(self, grace: float = STOP_GRACE) -> None:
        """Stops listening, lets the mails being processed finish (within `grace` seconds), then
        closes every connection. A client cut off before its reply sends again; the Message-ID
        replay makes that one send."""
        self.server.close()
        deadline = time.monotonic() + grace
        while self.bridge.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.bridge.connections):
            connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), timeout=grace)


async def start(pool, settings, base_url: str) -> Running:
    """Listens on the configured address in the running event loop."""
    conf = settings.smtp_bridge
    context = conf.tls_context()
    bridge = Bridge(pool, settings, base_url)
    if _PROTOCOL_LOG.level == logging.NOTSET:
        _PROTOCOL_LOG.setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    hostname = conf.greeting_domain

    def connection() -> _Connection:
        return _Connection(bridge, data_size_limit=model.MAX_MESSAGE_BYTES, hostname=hostname,
                           ident="Postroom SMTP bridge", timeout=model.TIMEOUT,
                           tls_context=context if conf.tls == "starttls" else None,
                           # implicit TLS is TLS from the first byte: AUTH is never in clear text
                           auth_require_tls=conf.tls == "starttls", loop=loop)

    server = await loop.create_server(connection, conf.host, conf.port,
                                      ssl=context if conf.tls == "implicit" else None)
    host, port = server.sockets[0].getsockname()[:2]
    return Running(server, bridge, host, port, conf.tls)
