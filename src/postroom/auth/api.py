"""Authentication for every /api call, and the root sign-in endpoint."""

from __future__ import annotations

import time

from postroom.auth import model, store
from postroom.auth.model import AuthError, Membership, Principal
from postroom.platform.http import Call, Endpoint
from postroom.platform.errors import RuleError

# Verified tokens and memberships are remembered briefly: an API client sends the same token with
# every request, and the lookups would otherwise cost a JWT verification and a database round trip
# each time. A revoked key or membership stops working within MEMBERSHIP_TTL seconds.
MEMBERSHIP_TTL = 2.0
_CACHE_MAX = 10_000


class _TtlCache:
    def __init__(self) -> None:
        self._items: dict = {}

    def get(self, key):
        hit = self._items.get(key)
        if hit is None:
            return None
        if hit[1] < time.monotonic():
            self._items.pop(key, None)
            return None
        return hit[0]

    def put(self, key, value, ttl: float) -> None:
        if len(self._items) >= _CACHE_MAX:
            self._items.clear()
        self._items[key] = (value, time.monotonic() + ttl)


def _caches(state) -> tuple[_TtlCache, _TtlCache]:
    caches = getattr(state, "auth_caches", None)
    if caches is None:
        caches = state.auth_caches = (_TtlCache(), _TtlCache())
    return caches


async def authenticate(request, state) -> Principal:
    tokens, _ = _caches(state)
    token = model.bearer_token(request.headers.get("authorization"))
    principal = tokens.get(token)
    if principal is None:
        principal = model.decode_token(token, state.settings.key_bytes)
        if principal.type == "user":
            async with state.pool.acquire() as conn:
                if not await store.session_valid(conn, principal.session_id, principal.user_id):
                    raise AuthError(401, "Invalid token: session expired or signed out")
        # never past the token's own expiry: exp is checked by decode_token, and the TTL is short
        tokens.put(token, principal, MEMBERSHIP_TTL)
    return principal


async def authorize(state, principal: Principal, workspace_id: str, resource: str | None,
                    write: bool) -> Membership:
    _, memberships = _caches(state)
    key = (workspace_id, principal.user_id)
    membership = memberships.get(key)
    if membership is None:
        async with state.pool.acquire() as conn:
            membership = await store.membership(conn, workspace_id, principal.user_id)
        if membership is None:
            raise RuleError("user is not a member of the workspace", 403)
        memberships.put(key, membership, MEMBERSHIP_TTL)
    denied = model.permission_error(membership, resource, write)
    if denied:
        raise RuleError(denied, 403)
    return membership


async def api_key_login(conn, key: bytes, username: str, token: str) -> Principal | None:
    """An API key given as a user name and password (the SMTP bridge's AUTH, delivery-contract 6):
    the password is the key's token, the user name its address. The token must verify, be an API
    key's, carry that address in its `email` claim when it has one (keys issued before the claim
    existed have none), and its user must still exist with that address. None when refused."""
    try:
        principal = model.decode_token(token, key)
    except AuthError:
        return None
    name = username.strip().lower()
    if principal.type != "api_key" or (principal.email is not None and principal.email.lower() != name):
        return None
    user = await store.user_by_id(conn, principal.user_id)
    if user is None or user["type"] != "api_key" or user["email"].lower() != name:
        return None
    return principal


def user_json(row) -> dict:
    return {"id": row["id"], "email": row["email"], "name": row["name"], "type": row["type"],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


async def root_signin(call: Call) -> dict:
    settings = call.settings
    body = call.body
    email = model.check_root_signin(settings.ensure_secret_key(), settings.root_email,
                                    body.get("email"), body.get("timestamp"), body.get("signature"))
    async with call.pool.acquire() as conn, conn.transaction():
        user = await store.upsert_user(conn, email, "root", "user")
        session_id = await store.create_session(conn, user["id"], model.SESSION_TTL)
    token = model.issue_token(settings.key_bytes, user["id"], "user", session_id)
    return {"token": token, "user": user_json(user)}


def is_root(settings, user_row) -> bool:
    return bool(settings.root_email) and user_row is not None and user_row["type"] == "user" and \
        user_row["email"] == settings.root_email.strip().lower()


ENDPOINTS = [
    Endpoint("/api/user.rootSignin", "POST", root_signin, auth="none"),
]
