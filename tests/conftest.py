"""Shared fixtures: a real PostgreSQL database of this run's own, the app, and workspaces with keys.

POSTROOM_TEST_DATABASE_URL points at a server to use (a database is created in it for this run
and dropped afterwards); without it the embedded PostgreSQL is started in a temporary directory.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from contract import Contract
from postroom.app import create_app
from postroom.auth import model as auth_model, store as auth_store
from postroom import app as app_module
from postroom.platform import db
from postroom.platform.config import Settings
from postroom.platform.migrations import migrate
from postroom.workspaces import store as ws_store

SECRET = "test-secret-" + "x" * 40
ROOT_EMAIL = "root@example.com"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def server_url():
    url = os.environ.get("POSTROOM_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from postroom.platform.embedded_pg import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="postroom-test-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "data")
        dsn = server.start()
        try:
            yield dsn
        finally:
            server.stop()


@pytest.fixture(scope="session")
async def dsn(server_url):
    """A fresh database for this test run, migrated; dropped at the end."""
    name = f"postroom_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    conn = await db.connect(url)
    await migrate(conn)
    await conn.close()
    try:
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@dataclasses.dataclass
class EmptyDatabase:
    url: str
    name: str
    admin: asyncpg.Connection  # on the server's maintenance database, e.g. to drop this one mid-test


@pytest.fixture
async def empty_db(server_url):
    """A database of the test's own, not migrated (what a new installation starts from); dropped
    at the end."""
    name = f"postroom_empty_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield EmptyDatabase(_with_database(server_url, name), name, admin)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def pool(dsn):
    # Generous waits: tests burst 50 concurrent requests at this pool, and a slow CI machine
    # must not turn a queue for connections into 503s (tests/cross/test_faults.py checks the bound).
    p = await db.create_pool(dsn, min_size=2, max_size=60, timeout=30.0)
    yield p
    await p.close()


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    # delivery_fake_provider: integrations of kind `fake` (the in-memory provider) are accepted
    return Settings(database_url="postgresql://unused", data_dir=tmp_path_factory.mktemp("data"),
                    secret_key=SECRET, root_email=ROOT_EMAIL, max_body_bytes=1024 * 1024,
                    delivery_fake_provider=True)


@pytest.fixture(scope="session")
async def app(settings, dsn, pool):
    return create_app(settings, dsn, pool=pool)


@pytest.fixture(scope="session")
def contract():
    """The OpenAPI document as a checker (tests/contract.py says what it holds requests and responses to)."""
    return Contract(app_module.document())


@pytest.fixture(scope="session")
async def client(app, contract):
    """httpx on the real ASGI app. Every exchange is checked against the OpenAPI document: a
    response outside it, or a request outside it that succeeded, fails the test (see contract.py)."""

    async def check(response: httpx.Response) -> None:
        await response.aread()
        request = response.request
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streamed body: its bytes are gone
            body = None
        contract.check(request.method, request.url.path, request.url.query.decode("ascii", "replace"),
                       body, response.status_code, response.headers, response.content)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test",
                                 event_hooks={"response": [check]}) as c:
        yield c


class Workspace:
    """A workspace of the test's own with an owner API key."""

    def __init__(self, ws_id: str, token: str, settings: Settings, pool):
        self.id = ws_id
        self.token = token
        self._settings = settings
        self._pool = pool

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    async def key(self, permissions: str | None = None) -> str:
        """A further API key of this workspace, with e.g. permissions='contacts:r'."""
        async with self._pool.acquire() as conn:
            user_id = await ws_store.create_api_key_user(
                conn, self.id, f"key-{secrets.token_hex(4)}@{self.id}.api.postroom",
                auth_model.parse_permissions(permissions))
        return auth_model.issue_token(self._settings.key_bytes, user_id, "api_key")


@pytest.fixture
async def new_workspace(pool, settings):
    async def make(ws_id: str | None = None) -> Workspace:
        ws_id = ws_id or f"ws_{secrets.token_hex(6)}"
        async with pool.acquire() as conn:
            await ws_store.create_with_owner(conn, ws_id, f"Workspace {ws_id}", {}, None)
            owner = await auth_store.upsert_user(conn, f"owner-{ws_id}@example.com", "Owner", "api_key")
            await auth_store.add_member(conn, ws_id, owner["id"], "owner", auth_model.full_permissions())
        return Workspace(ws_id, auth_model.issue_token(settings.key_bytes, owner["id"], "api_key"),
                         settings, pool)

    return make


@pytest.fixture
async def ws(new_workspace) -> Workspace:
    return await new_workspace()
