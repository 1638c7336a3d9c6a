"""Tokens, permissions and the root sign-in signature: pure rules, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass

import jwt

from postroom.platform.errors import RuleError

RESOURCES = (
    "contacts", "lists", "templates", "broadcasts", "transactional",
    "workspace", "message_history", "webhooks",
)
# How a 403 names a resource where the contract words it differently from the permission key.
LABELS = {"message_history": "message history", "transactional": "transactional notifications"}
API_KEY_TTL = 10 * 365 * 24 * 3600      # API keys are long-lived; revoke by deleting the key
SESSION_TTL = 30 * 24 * 3600
ROOT_SIGNIN_SKEW = 60


class AuthError(RuleError):
    """A token, membership or permission refused: 401 or 403 (status first, as the edge's order reads)."""

    def __init__(self, status: int, message: str):
        super().__init__(message, status)


@dataclass(frozen=True)
class Principal:
    user_id: str
    type: str                 # "user" or "api_key"
    session_id: str | None = None
    email: str | None = None  # an API key's `email` claim (the SMTP bridge's user name), when it has one


@dataclass(frozen=True)
class Membership:
    role: str                 # "owner" or "member"
    permissions: dict


def bearer_token(header: str | None) -> str:
    if header is None or header.strip() == "":
        raise AuthError(401, "Authorization header is required")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError(401, "Invalid authorization header format")
    return token


def decode_token(token: str, key: bytes) -> Principal:
    try:
        claims = jwt.decode(token, key, algorithms=["HS256"], options={"require": []})
    except jwt.PyJWTError as exc:
        raise AuthError(401, f"Invalid token: {exc}") from None
    user_id = claims.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        raise AuthError(401, "User ID not found in token")
    kind = claims.get("type")
    if not isinstance(kind, str) or not kind:
        raise AuthError(401, "User type not found in token")
    if kind not in ("user", "api_key"):
        raise AuthError(401, f"Invalid token: unknown user type {kind!r}")
    try:
        user_id = str(uuid.UUID(user_id))
    except ValueError:
        raise AuthError(401, "Invalid token: user_id is not a valid id") from None
    session_id = claims.get("session_id")
    if kind == "user":
        try:
            session_id = str(uuid.UUID(str(session_id)))
        except ValueError:
            raise AuthError(401, "Invalid token: session_id is missing or not a valid id") from None
    email = claims.get("email")
    return Principal(user_id=user_id, type=kind, session_id=session_id,
                     email=email if isinstance(email, str) and email else None)


def issue_token(key: bytes, user_id: str, kind: str, session_id: str | None = None,
                ttl: int | None = None, now: float | None = None, email: str | None = None) -> str:
    """`email`: an API key's address, carried as the `email` claim (as Notifuse's keys do; the
    SMTP bridge takes it as the user name)."""
    issued = int(now if now is not None else time.time())
    ttl = ttl if ttl is not None else (API_KEY_TTL if kind == "api_key" else SESSION_TTL)
    claims = {"user_id": user_id, "type": kind, "iat": issued, "nbf": issued, "exp": issued + ttl}
    if session_id is not None:
        claims["session_id"] = session_id
    if email is not None:
        claims["email"] = email
    return jwt.encode(claims, key, algorithm="HS256")


def full_permissions() -> dict:
    return {r: {"read": True, "write": True} for r in RESOURCES}


def parse_permissions(spec: str | None) -> dict:
    """`contacts:r,lists:rw` -> {resource: {read, write}}; absent resources get nothing. None -> full."""
    if spec is None or spec.strip() in ("", "all", "*"):
        return full_permissions()
    perms = {r: {"read": False, "write": False} for r in RESOURCES}
    for item in spec.split(","):
        name, _, access = item.strip().partition(":")
        if name not in perms:
            raise ValueError(f"unknown resource {name!r} (one of {', '.join(RESOURCES)})")
        if access not in ("r", "w", "rw"):
            raise ValueError(f"invalid access {access!r} for {name} (use r, w or rw)")
        perms[name] = {"read": "r" in access or "w" in access, "write": "w" in access}
    return perms


def permission_error(membership: Membership, resource: str | None, write: bool) -> str | None:
    """None when allowed, else the 403 message."""
    if resource is None or membership.role == "owner":
        return None
    grant = membership.permissions.get(resource) or {}
    if grant.get("write" if write else "read"):
        return None
    return f"Insufficient permissions: {'write' if write else 'read'} access to {LABELS.get(resource, resource)} required"


def root_signature(secret: str, email: str, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{email}:{timestamp}".encode(), hashlib.sha256).hexdigest()


def check_root_signin(secret: str, root_email: str | None, email, timestamp, signature,
                      now: float | None = None) -> str:
    """Returns the root email when the signed request is good; raises AuthError otherwise."""
    if not root_email:
        raise AuthError(400, "root sign-in is not configured: set POSTROOM_ROOT_EMAIL")
    if not isinstance(email, str) or not email:
        raise AuthError(400, "email is required")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise AuthError(400, "timestamp must be an integer (unix seconds)")
    if not isinstance(signature, str) or not signature:
        raise AuthError(400, "signature is required")
    current = now if now is not None else time.time()
    if abs(current - timestamp) > ROOT_SIGNIN_SKEW:
        raise AuthError(401, "timestamp is more than 60 seconds away from the server's clock")
    expected = root_signature(secret, email, timestamp)
    # compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500)
    if email.strip().lower() != root_email.strip().lower() or \
            not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise AuthError(401, "invalid email or signature")
    return root_email.strip().lower()
