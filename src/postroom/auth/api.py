"""Authentication for every /api call, and the root sign-in endpoint."""

from __future__ import annotations

from postroom.auth import model, store
from postroom.auth.model import AuthError, Membership, Principal
from postroom.platform.http import ApiError, Call, Endpoint


def _raise(exc: AuthError):
    raise ApiError(exc.status, exc.message) from None


async def authenticate(request, state) -> Principal:
    try:
        token = model.bearer_token(request.headers.get("authorization"))
        principal = model.decode_token(token, state.settings.key_bytes)
    except AuthError as exc:
        _raise(exc)
    if principal.type == "user":
        async with state.pool.acquire() as conn:
            if not await store.session_valid(conn, principal.session_id, principal.user_id):
                raise ApiError(401, "Invalid token: session expired or signed out")
    return principal


async def authorize(state, principal: Principal, workspace_id: str, resource: str | None,
                    write: bool) -> Membership:
    async with state.pool.acquire() as conn:
        membership = await store.membership(conn, workspace_id, principal.user_id)
    if membership is None:
        raise ApiError(403, "user is not a member of the workspace")
    denied = model.permission_error(membership, resource, write)
    if denied:
        raise ApiError(403, denied)
    return membership


def user_json(row) -> dict:
    return {"id": row["id"], "email": row["email"], "name": row["name"], "type": row["type"],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


async def root_signin(call: Call) -> dict:
    settings = call.settings
    body = call.body
    try:
        email = model.check_root_signin(settings.ensure_secret_key(), settings.root_email,
                                        body.get("email"), body.get("timestamp"), body.get("signature"))
    except AuthError as exc:
        _raise(exc)
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
