"""What the templates API tests share: the contract's section 8 fixture (workspaces ws1, ws2 and one
with a 24-character id; keys OWNER, READER, NONE), the example tree T of 3.5, and small calls.

Workspace ids are global, so each test gets workspaces of its own with random ids; ws1's settings
are the contract's (languages en, fr, de; custom endpoint https://links.acme.test/).
"""

from __future__ import annotations

import copy
import dataclasses
import secrets

import httpx
import pytest

from postroom.app import create_app
from postroom.platform.config import Settings

from contract_example import T

WS1_SETTINGS = {"languages": ["en", "fr", "de"], "default_language": "en",
                "custom_endpoint_url": "https://links.acme.test/", "website_url": "https://acme.test/"}


def tree() -> dict:
    """A fresh copy of T, to change."""
    return copy.deepcopy(T)


def node(root: dict, block_id: str) -> dict:
    """The block of `root` with that id."""
    stack = [root]
    while stack:
        current = stack.pop()
        if current.get("id") == block_id:
            return current
        stack.extend(current.get("children", []))
    raise KeyError(block_id)


def create_w(ws_id: str, **changes) -> dict:
    """The body of "Create W" (section 8), with top-level changes."""
    return {"workspace_id": ws_id, "id": "welcome", "name": "Welcome", "channel": "email", "category": "transactional",
            "email": {"subject": "Hi {{ contact.first_name }}", "subject_preview": "Welcome aboard",
                      "visual_editor_tree": tree()},
            "test_data": {"contact": {"first_name": "Ann"}}, **changes}


def web_template(ws_id: str, template_id: str = "post", **changes) -> dict:
    """A web template's create body: what the API can store without the render engine."""
    return {"workspace_id": ws_id, "id": template_id, "name": "Post", "channel": "web", "category": "blog",
            "web": {"content": {"type": "doc", "content": [{"type": "paragraph"}]}, "html": "<p>Hi</p>",
                    "plain_text": "Hi"},
            **changes}


@dataclasses.dataclass
class Fixture:
    ws1: object       # conftest.Workspace, with the contract's settings; its token is OWNER's
    ws2: object       # an empty workspace of the same owner
    ws24: object      # a workspace whose id has 24 characters
    reader: dict      # headers of a key of ws1 with templates read only
    none: dict        # headers of a key of ws1 without templates

    @property
    def owner(self) -> dict:
        return self.ws1.headers


async def make_fixture(new_workspace, pool) -> Fixture:
    ws1 = await new_workspace()
    ws2 = await new_workspace()
    ws24 = await new_workspace("ws_" + secrets.token_hex(11)[:21])
    assert len(ws24.id) == 24
    await pool.execute("UPDATE workspaces SET settings = $2 WHERE id = $1", ws1.id, WS1_SETTINGS)
    for other in (ws2, ws24):  # OWNER owns all three
        await pool.execute("INSERT INTO user_workspaces (workspace_id, user_id, role, permissions)"
                           " SELECT $1, user_id, role, permissions FROM user_workspaces WHERE workspace_id = $2"
                           " AND role = 'owner'", other.id, ws1.id)
        other.token = ws1.token
    reader = {"Authorization": f"Bearer {await ws1.key('templates:r')}"}
    none = {"Authorization": f"Bearer {await ws1.key('contacts:rw')}"}
    return Fixture(ws1, ws2, ws24, reader, none)


@pytest.fixture
async def fx(new_workspace, pool) -> Fixture:
    """The section 8 fixture (a module uses it with `fx = fixtures_api.fx`)."""
    return await make_fixture(new_workspace, pool)


@pytest.fixture(scope="module")
async def default_limit_client(settings, dsn, pool):
    """The app with the default body limit (10 MiB) instead of the tests' 1 MiB."""
    app = create_app(dataclasses.replace(settings, max_body_bytes=Settings().max_body_bytes), dsn, pool=pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://postroom.test") as c:
        yield c


async def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


async def create(client, ws, body: dict, headers: dict | None = None) -> dict:
    r = await client.post("/api/templates.create", headers=headers or ws.headers, json=body)
    return (await ok(r, 201))["template"]


async def get(client, ws, template_id: str, **params):
    return await client.get("/api/templates.get", headers=ws.headers,
                            params={"workspace_id": ws.id, "id": template_id, **params})


async def listed(client, ws, **params) -> list[dict]:
    r = await client.get("/api/templates.list", headers=ws.headers, params={"workspace_id": ws.id, **params})
    return (await ok(r))["templates"]


