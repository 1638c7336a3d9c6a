"""Configuration, read once from the environment."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_BODY = 10 * 1024 * 1024
DEFAULT_MAX_SEND_BODY = 16 * 1024 * 1024


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message says which and what to do."""


def _env(name: str, *aliases: str) -> str | None:
    for key in (name, *aliases):
        value = os.environ.get(key)
        if value not in (None, ""):
            return value
    return None


def _int_env(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _float_env(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number, got {raw!r}")
    return value


def _seconds_list_env(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """A comma-separated list of seconds, e.g. "30,60,120"."""
    raw = _env(name)
    if raw is None:
        return default
    steps = []
    for item in raw.split(","):
        try:
            value = float(item.strip())
        except ValueError:
            value = -1.0
        if not 0 <= value < float("inf"):
            raise ConfigError(f"{name} must be comma-separated seconds (e.g. 30,60,120), got {raw!r}")
        steps.append(value)
    return tuple(steps)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration_env(name: str, default: float) -> float:
    """Seconds from a duration such as "50ms", "1s", "5m" or a bare number of seconds."""
    raw = _env(name)
    if raw is None:
        return default
    text = raw.strip().lower()
    unit = next((u for u in ("ms", "s", "m", "h") if text.endswith(u)), "")
    try:
        value = float(text[:len(text) - len(unit)]) * _UNITS.get(unit, 1.0)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a positive duration such as 50ms, 1s or 5m, got {raw!r}")
    return value


def _bool_env(name: str, *aliases: str) -> bool:
    raw = _env(name, *aliases)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


# ---------------------------------------------------------------- the SMTP bridge (delivery-contract 6)

BRIDGE_TLS_MODES = ("off", "starttls", "implicit")
BRIDGE_DEFAULT_PORT = 587


def _pem_env(name: str, *aliases: str) -> bytes | None:
    raw = _env(name, *aliases)
    if raw is None:
        return None
    try:
        pem = base64.b64decode("".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name} must be a base64-encoded PEM file") from None
    if b"-----BEGIN " not in pem:
        raise ConfigError(f"{name} must be a base64-encoded PEM file (no PEM block found after decoding)")
    return pem


@dataclass(frozen=True)
class SmtpBridgeSettings:
    """The SMTP bridge: off unless enabled; when enabled, `from_env` has checked everything below
    (a TLS mode that needs a certificate has one that loads), so the server only binds."""
    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = BRIDGE_DEFAULT_PORT
    domain: str = ""                   # the greeting's domain; the host name when empty
    tls: str = "off"                   # one of BRIDGE_TLS_MODES
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, production: bool) -> "SmtpBridgeSettings":
        """`production`: whether this installation runs for real (see Settings.production), where a
        bridge without TLS must be asked for explicitly, since clients send API keys over it."""
        enabled = _bool_env("POSTROOM_SMTP_BRIDGE_ENABLED", "SMTP_BRIDGE_ENABLED", "SMTP_RELAY_ENABLED")
        if not enabled:
            return cls()
        raw_port = _env("POSTROOM_SMTP_BRIDGE_PORT", "SMTP_BRIDGE_PORT") or str(BRIDGE_DEFAULT_PORT)
        port = int(raw_port) if raw_port.strip().isdigit() else -1
        if not 0 <= port <= 65535:
            raise ConfigError(f"POSTROOM_SMTP_BRIDGE_PORT must be a port number (0-65535), got {raw_port!r}")
        cert = _pem_env("POSTROOM_SMTP_BRIDGE_TLS_CERT_BASE64", "SMTP_BRIDGE_TLS_CERT_BASE64")
        key = _pem_env("POSTROOM_SMTP_BRIDGE_TLS_KEY_BASE64", "SMTP_BRIDGE_TLS_KEY_BASE64")
        raw_mode = _env("POSTROOM_SMTP_BRIDGE_TLS", "SMTP_BRIDGE_TLS")
        if raw_mode is None:
            if cert and key:
                mode = "starttls"
            elif production:
                raise ConfigError(
                    "the SMTP bridge is enabled without TLS: set POSTROOM_SMTP_BRIDGE_TLS_CERT_BASE64 and "
                    "POSTROOM_SMTP_BRIDGE_TLS_KEY_BASE64 (base64 of PEM files), or POSTROOM_SMTP_BRIDGE_TLS=off "
                    "to accept API keys in clear text")
            else:
                mode = "off"
        else:
            mode = raw_mode.strip().lower()
            if mode not in BRIDGE_TLS_MODES:
                raise ConfigError(f"POSTROOM_SMTP_BRIDGE_TLS must be one of off, starttls, implicit, got {raw_mode!r}")
        if mode != "off" and not (cert and key):
            raise ConfigError(f"POSTROOM_SMTP_BRIDGE_TLS={mode} needs both POSTROOM_SMTP_BRIDGE_TLS_CERT_BASE64 and "
                              "POSTROOM_SMTP_BRIDGE_TLS_KEY_BASE64 (base64 of PEM files)")
        out = cls(True, _env("POSTROOM_SMTP_BRIDGE_HOST") or "0.0.0.0", port,
                  _env("POSTROOM_SMTP_BRIDGE_DOMAIN", "SMTP_BRIDGE_DOMAIN") or "", mode,
                  cert if mode != "off" else None, key if mode != "off" else None)
        out.tls_context()  # a certificate that does not load is a start-up error, not a failed handshake
        return out

    @property
    def greeting_domain(self) -> str:
        return self.domain or socket.gethostname()

    def tls_context(self) -> ssl.SSLContext | None:
        """The server context of `starttls` and `implicit`; None when TLS is off."""
        if self.tls == "off" or not self.cert_pem or not self.key_pem:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # load_cert_chain reads files only: the PEMs go to a private directory for the call
        with tempfile.TemporaryDirectory(prefix="postroom-tls-") as tmp:
            cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            for path, data in ((cert_path, self.cert_pem), (key_path, self.key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            try:
                context.load_cert_chain(cert_path, key_path)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError("the SMTP bridge's certificate and key do not load "
                                  f"(POSTROOM_SMTP_BRIDGE_TLS_CERT_BASE64, ..._KEY_BASE64): {exc}") from None
        return context


# Standard Webhooks' suggested ladder: 30 s, 1 min, 2 min, 5 min, 15 min, 30 min, 1 h, 2 h, 6 h, 24 h.
WEBHOOK_RETRY_SCHEDULE = (30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)


def signing_key(secret: str) -> bytes:
    """The HMAC key behind tokens: SECRET_KEY base64-decoded when that gives 32+ bytes, else its raw bytes."""
    try:
        decoded = base64.b64decode(secret, validate=True)
    except ValueError:
        decoded = b""
    return decoded if len(decoded) >= 32 else secret.encode()


@dataclass
class Settings:
    database_url: str | None = None
    data_dir: Path = field(default_factory=lambda: Path(".postroom"))
    secret_key: str | None = None
    # retired SECRET_KEYs (POSTROOM_PREVIOUS_SECRET_KEYS, comma-separated) still accepted for the
    # tracking links of mail already delivered (engagement contract 0.3)
    previous_secret_keys: tuple[str, ...] = ()
    root_email: str | None = None
    cors_origin: str = "*"
    max_body_bytes: int = DEFAULT_MAX_BODY
    # transactional.send and .testTemplate: 10 MiB of attachments grow by a third in base64
    max_send_body_bytes: int = DEFAULT_MAX_SEND_BODY
    api_endpoint: str = ""
    pool_min: int = 2
    pool_max: int = 20
    db_timeout: float = 5.0
    # outgoing webhooks (postroom.webhooks)
    webhook_timeout: float = 10.0                 # seconds for one attempt, connect to last byte
    webhook_retry_schedule: tuple[float, ...] = WEBHOOK_RETRY_SCHEDULE
    webhook_retention_days: float = 30.0          # delivery log kept this long, then pruned
    webhook_concurrency: int = 128                # attempts in flight per worker process
    webhook_subscription_concurrency: int = 32    # attempts in flight per subscription (2 while failing)
    webhook_poll_interval: float = 0.2            # seconds between polls when nothing wakes the workers
    webhook_lease_grace: float = 20.0             # a claim expires this long after the attempt's timeout
    # the send queue (postroom.delivery, delivery-contract 5.8); durations in seconds
    delivery_poll_interval: float = 1.0           # fallback poll when no NOTIFY wakes the loop
    delivery_retry_base: float = 30.0             # backoff base (tests use milliseconds)
    delivery_max_attempts: int = 8                # counted failures before giving up
    delivery_breaker_threshold: int = 5           # consecutive provider failures that open the breaker
    delivery_breaker_cooldown: float = 60.0       # first open period
    delivery_lease: float = 300.0                 # claim lease: longer than the 120 s bound of a send
    delivery_concurrency: int = 256               # provider calls in flight per worker process, all integrations
    delivery_fake_provider: bool = False          # accept kind "fake" (tests and benches only)
    # GET /metrics asks for `Authorization: Bearer <metrics_token>` when this is set
    metrics_token: str | None = None
    smtp_bridge: SmtpBridgeSettings = field(default_factory=SmtpBridgeSettings)
    # provider events (POST /webhooks/email): accept a request that presents no credential at all
    # (callbacks registered without a token, before a move to Postroom); a wrong one is always refused
    allow_unauthenticated_provider_webhooks: bool = False
    # test hook: scheme, host and port that SNS certificate and confirmation fetches go to instead
    # of the sns.<region>.amazonaws.com host the message names (which is still required)
    sns_base_url: str = ""

    @property
    def production(self) -> bool:
        """Postroom has no mode switch: an installation on a PostgreSQL of its own
        (POSTROOM_DATABASE_URL) is taken for production, the embedded database for a trial or a
        development machine (as ensure_secret_key reads it too)."""
        return bool(self.database_url)

    @classmethod
    def from_env(cls) -> "Settings":
        settings = cls(
            database_url=_env("POSTROOM_DATABASE_URL"),
            data_dir=Path(_env("POSTROOM_DATA_DIR") or ".postroom").expanduser().resolve(),
            secret_key=_env("POSTROOM_SECRET_KEY", "SECRET_KEY"),
            previous_secret_keys=tuple(k.strip() for k in (_env("POSTROOM_PREVIOUS_SECRET_KEYS") or "").split(",")
                                       if k.strip()),
            root_email=_env("POSTROOM_ROOT_EMAIL", "ROOT_EMAIL"),
            cors_origin=_env("POSTROOM_CORS_ORIGIN") or "*",
            max_body_bytes=_int_env("POSTROOM_MAX_BODY_BYTES", DEFAULT_MAX_BODY),
            max_send_body_bytes=_int_env("POSTROOM_MAX_SEND_BODY_BYTES", DEFAULT_MAX_SEND_BODY),
            api_endpoint=_env("POSTROOM_API_ENDPOINT") or "",
            pool_min=_int_env("POSTROOM_DB_POOL_MIN", 2),
            pool_max=_int_env("POSTROOM_DB_POOL_MAX", 20),
            webhook_timeout=_float_env("POSTROOM_WEBHOOK_TIMEOUT", 10.0),
            webhook_retry_schedule=_seconds_list_env("POSTROOM_WEBHOOK_RETRY_SCHEDULE", WEBHOOK_RETRY_SCHEDULE),
            webhook_retention_days=_float_env("POSTROOM_WEBHOOK_RETENTION_DAYS", 30.0),
            webhook_concurrency=_int_env("POSTROOM_WEBHOOK_CONCURRENCY", 128),
            webhook_subscription_concurrency=_int_env("POSTROOM_WEBHOOK_SUBSCRIPTION_CONCURRENCY", 32),
            webhook_poll_interval=_float_env("POSTROOM_WEBHOOK_POLL_INTERVAL", 0.2),
            webhook_lease_grace=_float_env("POSTROOM_WEBHOOK_LEASE_GRACE", 20.0),
            metrics_token=_env("POSTROOM_METRICS_TOKEN"),
            allow_unauthenticated_provider_webhooks=(_env("POSTROOM_ALLOW_UNAUTHENTICATED_PROVIDER_WEBHOOKS")
                                                     or "").strip().lower() in ("1", "true", "yes"),
            sns_base_url=_env("POSTROOM_SNS_BASE_URL") or "",
            delivery_poll_interval=_duration_env("POSTROOM_DELIVERY_POLL_INTERVAL", 1.0),
            delivery_retry_base=_duration_env("POSTROOM_DELIVERY_RETRY_BASE", 30.0),
            delivery_max_attempts=_int_env("POSTROOM_DELIVERY_MAX_ATTEMPTS", 8),
            delivery_breaker_threshold=_int_env("POSTROOM_DELIVERY_BREAKER_THRESHOLD", 5),
            delivery_breaker_cooldown=_duration_env("POSTROOM_DELIVERY_BREAKER_COOLDOWN", 60.0),
            delivery_lease=_duration_env("POSTROOM_DELIVERY_LEASE", 300.0),
            delivery_concurrency=_int_env("POSTROOM_DELIVERY_CONCURRENCY", 256),
        )
        settings.smtp_bridge = SmtpBridgeSettings.from_env(production=settings.production)
        return settings

    def ensure_secret_key(self) -> str:
        """Embedded mode keeps a generated key in the data dir; with an external database it must be set."""
        if self.secret_key:
            return self.secret_key
        if self.database_url:
            raise ConfigError(
                "POSTROOM_SECRET_KEY is not set: with POSTROOM_DATABASE_URL every API and worker process "
                "must share one key (generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        path = self.data_dir / "secret_key"
        if path.exists():
            self.secret_key = path.read_text().strip()
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            key = base64.b64encode(secrets.token_bytes(32)).decode()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(key + "\n")
            self.secret_key = key
        return self.secret_key

    @property
    def key_bytes(self) -> bytes:
        secret = self.ensure_secret_key()
        cached = self.__dict__.get("_key_cache")
        if cached is None or cached[0] != secret:
            cached = (secret, signing_key(secret))
            self.__dict__["_key_cache"] = cached
        return cached[1]

    @property
    def previous_key_bytes(self) -> tuple[bytes, ...]:
        """The key material of each retired secret, decoded as key_bytes is."""
        return tuple(signing_key(secret) for secret in self.previous_secret_keys)
