"""Amazon SNS message signatures (engagement-contract 3.2, 3.4): which URLs may be fetched, the
string SNS signs, the check of a signature against the signing certificate, and the fetch of
that certificate (cached) and of a subscription's confirmation link, through the guarded client.

Only `https` URLs on a host `sns.<region>.amazonaws.com` (or `.amazonaws.com.cn`) are fetched,
whatever a message says. The test hook `POSTROOM_SNS_BASE_URL` (process configuration, like the
providers' base-URL hook) replaces the scheme, host and port of a URL that passed that rule, so a
test can serve certificates locally; the rule itself is never relaxed.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections import OrderedDict
from urllib.parse import urlsplit, urlunsplit

from postroom.platform import outbound

SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
TIMEOUT = 10.0
CACHE_SIZE = 64
CACHE_SECONDS = 24 * 3600.0
CERT_MAX = 64 * 1024

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
CONFIRMATIONS = ("SubscriptionConfirmation", "UnsubscribeConfirmation")


def trusted_url(url) -> bool:
    """An `https` URL on an SNS host, default port, no credentials."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (parts.scheme == "https" and parts.username is None and port in (None, 443)
            and SNS_HOST.fullmatch(parts.hostname or "") is not None)


def is_envelope(body) -> bool:
    """An SNS message: what SES events arrive in (raw message delivery carries none)."""
    return isinstance(body, dict) and all(isinstance(body.get(k), str) and body.get(k)
                                          for k in ("Type", "MessageId", "Signature", "SigningCertURL",
                                                    "SignatureVersion", "TopicArn", "Timestamp"))


def string_to_sign(envelope: dict) -> bytes | None:
    """`key\\nvalue\\n` pairs in SNS's order for the message's Type; None for an unknown Type or a
    required field missing (Subject is the one optional field)."""
    kind = envelope.get("Type")
    names = NOTIFICATION_FIELDS if kind == "Notification" else SUBSCRIPTION_FIELDS if kind in CONFIRMATIONS else None
    if names is None:
        return None
    out = []
    for name in names:
        value = envelope.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            return None
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


def verify(envelope: dict, certificate_pem: bytes) -> bool:
    """The message's Signature (base64; version 1 SHA1withRSA, 2 SHA256withRSA) made by the key
    of `certificate_pem`."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(envelope.get("SignatureVersion"))
    payload = string_to_sign(envelope)
    if algorithm is None or payload is None:
        return False
    try:
        signature = base64.b64decode(envelope.get("Signature") or "", validate=True)
        key = x509.load_pem_x509_certificate(certificate_pem).public_key()
    except (ValueError, binascii.Error, TypeError):
        return False
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, payload, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return False
    return True


class Sns:
    """One per process: the guarded client and the certificates already fetched."""

    def __init__(self, base_url: str = "", client: outbound.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self.client = client or outbound.Client(TIMEOUT, max_idle=4, body_limit=CERT_MAX)
        self._certificates: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.fetches = 0

    def _rebased(self, url: str) -> str:
        if not self.base_url:
            return url
        over, parts = urlsplit(self.base_url), urlsplit(url)
        return urlunsplit((over.scheme, over.netloc, parts.path, parts.query, ""))

    async def certificate(self, url: str) -> bytes | None:
        """The PEM at a trusted SigningCertURL (None when it cannot be had), cached a day."""
        if not trusted_url(url):
            return None
        cached = self._certificates.get(url)
        if cached is not None and cached[0] > time.monotonic():
            self._certificates.move_to_end(url)
            return cached[1]
        self.fetches += 1
        answer = await self.client.get(self._rebased(url))
        if not answer.ok or "-----BEGIN CERTIFICATE-----" not in answer.body:
            return None
        pem = answer.body.encode()
        self._certificates[url] = (time.monotonic() + CACHE_SECONDS, pem)
        while len(self._certificates) > CACHE_SIZE:
            self._certificates.popitem(last=False)
        return pem

    async def authentic(self, envelope: dict) -> bool:
        """The envelope's signature verifies with the certificate at its (trusted) SigningCertURL."""
        pem = await self.certificate(envelope.get("SigningCertURL"))
        return pem is not None and verify(envelope, pem)

    async def confirm(self, subscribe_url: str) -> outbound.Outcome | None:
        """GETs a SubscriptionConfirmation's SubscribeURL once; None when the URL is not trusted."""
        if not trusted_url(subscribe_url):
            return None
        return await self.client.get(self._rebased(subscribe_url))

    async def aclose(self) -> None:
        await self.client.aclose()
