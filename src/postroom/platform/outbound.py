"""Guarded outbound HTTP: the requests Postroom makes to servers it is told about (webhook
receivers, HTTP email providers), and the rule of which destinations it refuses.

A destination is refused when its host is, or resolves to, a link-local or cloud metadata
address. The rule is checked when a URL is given (`check_destination`, a client error) and again
on every new connection (`Client`), against the very address connected to.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable
from urllib.parse import quote, unquote, urlsplit

import httpcore

from postroom.platform.errors import RuleError

Resolver = Callable[[str, int], Awaitable[list[str]]]


# ---------------------------------------------------------------- refused addresses

# Cloud metadata services and link-local addresses: never a legitimate destination, and the classic
# target of server-side request forgery. 100.100.100.200 is Alibaba Cloud's metadata address.
_REFUSED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "100.100.100.200/32", "fe80::/10", "fd00:ec2::254/128"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a link-local or cloud metadata address, including IPv4 ones embedded in IPv6
    (mapped, 6to4, NAT64, IPv4-compatible)."""
    if ip.version == 6:
        ip = ipaddress.IPv6Address(int(ip))  # drop any %zone
        embedded = [ip.ipv4_mapped, ip.sixtofour]
        if ip in _NAT64 or int(ip) >> 32 == 0:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(e is not None and refused_address(e) for e in embedded):
            return True
    return any(ip.version == net.version and ip in net for net in _REFUSED_NETWORKS)


def refused_message(host: str, ip) -> str:
    if ip_literal(host) is not None:
        return f"URL must not point to a link-local or cloud metadata address: {host}"
    return f"URL host {host} resolves to a link-local or cloud metadata address: {ip}"


def ip_literal(host: str):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class Refused(Exception):
    """The destination is a link-local or cloud metadata address."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


async def vetted_addresses(host: str, port: int, resolve: Resolver) -> list[str]:
    """The addresses to connect to for `host`; Refused when any of them is refused (a name that
    resolves to a metadata address is not trusted with its other addresses either)."""
    addresses = [host] if ip_literal(host) is not None else await resolve(host, port)
    for address in addresses:
        if refused_address(ipaddress.ip_address(address)):
            raise Refused(refused_message(host, address))
    if not addresses:
        raise OSError(f"{host} has no address")
    return addresses


async def check_destination(url: str, resolve: Resolver = system_resolve, timeout: float = 2.0) -> None:
    """When a URL is given: RuleError (400) for a URL whose host resolves to a refused address. A
    name that does not resolve (yet) is accepted; every request checks again when it connects."""
    parts = urlsplit(url)
    try:
        async with asyncio.timeout(timeout):
            await vetted_addresses(parts.hostname, parts.port or 443, resolve)
    except Refused as exc:
        raise RuleError(exc.message) from None
    except (OSError, TimeoutError, UnicodeError, ValueError):
        pass


# ---------------------------------------------------------------- the client

class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Every new connection resolves its host here and connects only to vetted addresses, so the
    check holds at request time (a name re-pointed after it was given is caught, and the address
    checked is the address connected to). TLS still verifies the certificate for the host name."""

    def __init__(self, resolve: Resolver):
        self._inner = httpcore.AnyIOBackend()
        self._resolve = resolve

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last: Exception | None = None
        for address in (await vetted_addresses(host, port, self._resolve))[:4]:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last  # type: ignore[misc]

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise Refused("unix sockets are not outbound destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True)
class Outcome:
    status: int | None          # the server's HTTP status, None when there was no answer
    body: str                   # the start of its answer (the client's body_limit)
    error: str | None           # why the request failed (None on any answer that is not a failure)
    refused: bool = False       # the destination is forbidden: retrying will not help

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


def _clean(text: str) -> str:
    return text.replace("\x00", "")


def _target(url: str):
    """(httpcore URL, Host header, Authorization header or None) of a URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port
    ascii_host = host if ip_literal(host) is not None else host.encode("idna").decode("ascii")
    shown = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    host_header = shown if port is None else f"{shown}:{port}"
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe="!#$%&'()*+,/:;=?@[]~")
    core_url = httpcore.URL(scheme=scheme.encode(), host=ascii_host.encode(), port=port, target=target.encode())
    auth = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = b"Basic " + base64.b64encode(credentials.encode())
    return core_url, host_header.encode(), auth


def _ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    with contextlib.suppress(Exception):
        import certifi

        context.load_verify_locations(certifi.where())
    return context


class Client:
    """POSTs bodies to URLs (and GETs them): no redirects, no proxies, one timeout for the whole request, and no
    connection to a refused address. Every request ends in an Outcome, never an exception.
    Credentials in the URL are sent as Basic authorization.

    Keeps its own idle HTTP/1.1 connections per origin (httpcore's AsyncHTTPConnection): a LIFO
    stack each, so the cost of a request does not grow with the number of connections open
    (httpcore's own pool scans them all for every request, which collapses at a few dozen)."""

    SWEEP_EVERY = 15.0

    def __init__(self, timeout: float, max_idle: int = 256, resolve: Resolver = system_resolve,
                 body_limit: int = 1024, ssl_context: ssl.SSLContext | None = None):
        self.timeout = timeout
        self.max_idle = max(max_idle, 1)             # idle connections kept per origin
        self.body_limit = body_limit                 # bytes of an answer kept in its Outcome
        self._ssl = ssl_context or _ssl_context()    # tests trust their own CA
        self._backend = _GuardedBackend(resolve)
        self._idle: dict[tuple, list[httpcore.AsyncHTTPConnection]] = {}
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY

    async def aclose(self) -> None:
        stacks, self._idle = self._idle, {}
        for stack in stacks.values():
            for conn in stack:
                with contextlib.suppress(Exception):
                    await conn.aclose()

    async def _sweep(self) -> None:
        """Closes idle connections that expired or that their server closed."""
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY
        for key, stack in list(self._idle.items()):
            keep = []
            for conn in stack:
                if conn.is_idle() and not conn.has_expired():
                    keep.append(conn)
                else:
                    with contextlib.suppress(Exception):
                        await conn.aclose()
            if keep:
                self._idle[key] = keep
            else:
                self._idle.pop(key, None)

    async def _connection(self, url: httpcore.URL):
        key = (url.scheme, url.host, url.port)
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            if conn.is_idle() and not conn.has_expired():
                return key, conn
            with contextlib.suppress(Exception):
                await conn.aclose()
        origin = httpcore.Origin(url.scheme, url.host, url.port or (443 if url.scheme == b"https" else 80))
        conn = httpcore.AsyncHTTPConnection(origin, ssl_context=self._ssl, keepalive_expiry=30.0,
                                            network_backend=self._backend)
        return key, conn

    async def post(self, url: str, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> Outcome:
        """POSTs `body` with `headers` (Host, Content-Length and any URL credentials are added)."""
        return await self._exchange(b"POST", url, headers, body)

    async def get(self, url: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> Outcome:
        """GETs `url` under the same rules (a certificate, a subscription confirmation link)."""
        return await self._exchange(b"GET", url, headers, None)

    async def _exchange(self, method: bytes, url: str, headers: Iterable[tuple[bytes, bytes]],
                        body: bytes | None) -> Outcome:
        try:
            core_url, host_header, auth = _target(url)
        except (ValueError, UnicodeError) as exc:
            return Outcome(None, "", f"invalid URL: {exc}", refused=True)
        headers = [(b"Host", host_header), *headers]
        if body is not None:
            headers.append((b"Content-Length", str(len(body)).encode()))
        if auth is not None:
            headers.append((b"Authorization", auth))
        limit = self.timeout
        request = httpcore.Request(method, core_url, headers=headers, content=body or b"", extensions={
            "timeout": {"connect": limit, "read": limit, "write": limit, "pool": limit}})
        if time.monotonic() >= self._next_sweep:
            await self._sweep()
        pool_key, conn = await self._connection(core_url)
        reusable = False
        keep = self.body_limit
        try:
            async with asyncio.timeout(limit):
                response = await conn.handle_async_request(request)
                try:
                    kept, total = bytearray(), 0
                    async for chunk in response.aiter_stream():
                        total += len(chunk)
                        if len(kept) < keep:
                            kept += chunk[:keep - len(kept)]
                        if total > 64 * keep:
                            break  # a long answer is not read to its end: the connection is dropped
                    else:
                        reusable = True
                finally:
                    await response.aclose()
                text = _clean(bytes(kept).decode("utf-8", "replace"))
                error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
                return Outcome(response.status, text, error)
        except Refused as exc:
            return Outcome(None, "", exc.message, refused=True)
        except (TimeoutError, httpcore.TimeoutException):
            return Outcome(None, "", f"timed out after {limit:g} s")
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError, OSError) as exc:
            return Outcome(None, "", _clean(f"connection failed: {exc or type(exc).__name__}"[:500]))
        finally:
            stack = self._idle.setdefault(pool_key, [])
            if reusable and conn.is_idle() and len(stack) < self.max_idle:
                stack.append(conn)
            else:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(conn.aclose())
