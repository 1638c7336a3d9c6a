"""Configuration, read once from the environment."""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_BODY = 10 * 1024 * 1024


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
    api_endpoint: str = ""
    pool_min: int = 2
    pool_max: int = 20
    db_timeout: float = 5.0

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            database_url=_env("POSTROOM_DATABASE_URL"),
            data_dir=Path(_env("POSTROOM_DATA_DIR") or ".postroom").expanduser().resolve(),
            secret_key=_env("POSTROOM_SECRET_KEY", "SECRET_KEY"),
            root_email=_env("POSTROOM_ROOT_EMAIL", "ROOT_EMAIL"),
            cors_origin=_env("POSTROOM_CORS_ORIGIN") or "*",
            max_body_bytes=_int_env("POSTROOM_MAX_BODY_BYTES", DEFAULT_MAX_BODY),
            api_endpoint=_env("POSTROOM_API_ENDPOINT") or "",
            pool_min=_int_env("POSTROOM_DB_POOL_MIN", 2),
            pool_max=_int_env("POSTROOM_DB_POOL_MAX", 20),
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
        return signing_key(self.ensure_secret_key())
