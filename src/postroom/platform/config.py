"""Configuration, read once from the environment."""

from __future__ import annotations

import base64
import os
import secrets
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
    # provider events (POST /webhooks/email): accept a request that presents no credential at all
    # (callbacks registered without a token, before a move to Postroom); a wrong one is always refused
    allow_unauthenticated_provider_webhooks: bool = False
    # test hook: scheme, host and port that SNS certificate and confirmation fetches go to instead
    # of the sns.<region>.amazonaws.com host the message names (which is still required)
    sns_base_url: str = ""

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            database_url=_env("POSTROOM_DATABASE_URL"),
            data_dir=Path(_env("POSTROOM_DATA_DIR") or ".postroom").expanduser().resolve(),
            secret_key=_env("POSTROOM_SECRET_KEY", "SECRET_KEY"),
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
