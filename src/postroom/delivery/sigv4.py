"""AWS Signature Version 4 for one HTTP request, with hmac and hashlib (what SES API v1 needs: a
POST of a form, no query string, no session token). Checked against AWS's published test vectors
and botocore's signer in tests/delivery/test_ses_provider.py.

botocore is not a runtime dependency for this: it would bring ~80 MB of service models to sign
three headers, and its signer reads the clock itself where a test wants to give the time.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import urllib.parse

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def host_header(url: str) -> str:
    """The Host value an HTTP client sends for `url`: the port only when it is not the scheme's."""
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def canonical_query(query: str) -> str:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    quote = lambda s: urllib.parse.quote(s, safe="-_.~")  # noqa: E731
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(pairs))


def canonical_request(method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[str, str]:
    """(canonical request, signed header names) of the request; `headers` must hold every header
    to sign, Host included."""
    parts = urllib.parse.urlsplit(url)
    named = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    signed = ";".join(sorted(named))
    lines = [method.upper(), urllib.parse.quote(parts.path or "/", safe="/-_.~"), canonical_query(parts.query),
             "".join(f"{name}:{named[name]}\n" for name in sorted(named)), signed, _sha256(body)]
    return "\n".join(lines), signed


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret_key).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def sign(method: str, url: str, headers: dict[str, str], body: bytes, *, access_key: str, secret_key: str,
         region: str, service: str, now: datetime.datetime | None = None) -> dict[str, str]:
    """`headers` plus Host, X-Amz-Date and Authorization."""
    when = (now or datetime.datetime.now(datetime.timezone.utc)).astimezone(datetime.timezone.utc)
    stamp, date = when.strftime("%Y%m%dT%H%M%SZ"), when.strftime("%Y%m%d")
    out = {**headers, "Host": host_header(url), "X-Amz-Date": stamp}
    request, signed = canonical_request(method, url, out, body)
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, stamp, scope, _sha256(request.encode())])
    signature = hmac.new(signing_key(secret_key, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    return out
