"""The OpenAPI document: valid OpenAPI 3.1, served, and the same set of operations as the app.

(Every request and response of the other tests is checked against it by the `client` fixture;
the last tests here show that this check catches what it should.)
"""

from __future__ import annotations

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Router

from contract import ContractError
from postroom import app as app_module
from postroom.contacts import model as contact_model

METHODS = ("get", "head", "post", "put", "delete", "patch", "options")


def operations(doc) -> dict[tuple[str, str], dict]:
    return {(path, method): op for path, item in doc["paths"].items() for method, op in item.items()
            if method in METHODS}


def router_of(app) -> Router:
    node = app
    for _ in range(10):
        if isinstance(node, Router):
            return node
        node = node.app
    raise AssertionError("no Router inside the app")


def test_document_is_valid_openapi_3_1():
    doc = app_module.document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # openapi-spec-validator: the 3.1 meta-schema, every schema, every $ref
    ids = [op["operationId"] for op in operations(doc).values()]
    assert len(ids) == len(set(ids))


# Notifuse's operationIds for the operations of its public document that Postroom serves:
# "<path> <operationId>" pairs, read from Notifuse's openapi.yaml
NOTIFUSE_IDS = dict(line.split() for line in """
/api/contacts.list listContacts                     /api/contacts.count countContacts
/api/contacts.upsert upsertContact                  /api/contacts.getByEmail getContactByEmail
/api/contacts.getByExternalID getContactByExternalID
/api/contacts.import batchImportContacts            /api/contacts.delete deleteContact
/api/contactLists.updateStatus updateContactListStatus
/api/webhookSubscriptions.create createWebhookSubscription
/api/webhookSubscriptions.list listWebhookSubscriptions
/api/webhookSubscriptions.get getWebhookSubscription
/api/webhookSubscriptions.update updateWebhookSubscription
/api/webhookSubscriptions.delete deleteWebhookSubscription
/api/webhookSubscriptions.toggle toggleWebhookSubscription
/api/webhookSubscriptions.regenerateSecret regenerateWebhookSecret
/api/webhookSubscriptions.deliveries getWebhookDeliveries
/api/webhookSubscriptions.test testWebhookSubscription
/api/webhookSubscriptions.eventTypes listWebhookEventTypes
/subscribe subscribeToLists                         /api/lists.subscribe subscribeToListsAuthenticated
/api/templates.list listTemplates                   /api/templates.get getTemplate
/api/templates.create createTemplate                /api/templates.update updateTemplate
/api/templates.delete deleteTemplate                /api/templates.compile compileTemplate
/api/user.rootSignin rootSignin
""".replace("  ", "\n").split("\n") if line.strip())


def test_operation_ids_are_notifuses_where_it_has_them():
    paths = app_module.document()["paths"]
    found = {path: next(iter(paths[path].values()))["operationId"] for path in NOTIFUSE_IDS}
    assert found == NOTIFUSE_IDS
    ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert all(i[:1].islower() and i.isalnum() for i in ids), ids  # one style: lowerCamelCase


async def test_served_without_a_token(client):
    response = await client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == app_module.document()
    assert (await client.get("/api/openapi.json")).content == response.content  # built once


async def test_wrong_method_is_a_json_405(client):
    response = await client.post("/api/openapi.json", json={})
    assert response.status_code == 405
    assert response.json() == {"error": "Method not allowed"}


def test_every_api_endpoint_is_documented_and_nothing_else(app):
    doc = app_module.document()
    registered = {(e.path, e.method.lower()): e for e in app_module.build_api().endpoints.values()}
    documented = {key: op for key, op in operations(doc).items() if key[0].startswith("/api/")}
    assert sorted(set(registered) - set(documented)) == [], "endpoints missing from the document"
    assert sorted(set(documented) - set(registered)) == [], "documented operations nobody serves"
    for key, endpoint in registered.items():
        op = documented[key]
        if endpoint.auth == "none":
            assert op["security"] == [], key
        else:
            assert "security" not in op, key  # the document's default: bearer JWT
            assert "401" in op["responses"], key
        if endpoint.auth == "workspace":
            assert {"400", "403"} <= set(op["responses"]), key
            if endpoint.method == "GET":
                names = [p["name"] for p in op["parameters"] if p.get("required")]
                assert endpoint.workspace_param in names, key
            else:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                assert endpoint.workspace_param in schema["required"], key


def test_every_other_route_is_documented_and_nothing_else(app):
    doc = app_module.document()
    served = {r.path for r in router_of(app).routes if not r.path.startswith("/api/")}
    documented = {p for p in doc["paths"] if not p.startswith("/api/")}
    assert served == documented


def test_contact_schemas_follow_the_field_table():
    schemas = app_module.document()["components"]["schemas"]
    write, read = schemas["ContactInput"], schemas["Contact"]
    assert list(write["properties"]) == list(contact_model.FIELDS)
    assert list(read["properties"]) == list(contact_model.FIELDS)
    assert write["required"] == ["email"]
    assert read["additionalProperties"] is False and "additionalProperties" not in write
    for field, limit in contact_model.LIMITS.items():
        assert write["properties"][field]["maxLength"] == limit, field
        assert read["properties"][field]["maxLength"] == limit, field
    for field in contact_model.FIELDS[1:]:
        assert "null" in write["properties"][field]["type"], field  # null clears (or is "not given")
        assert "null" not in read["properties"][field]["type"], field  # NULL is omitted on reads
    assert "null" not in write["properties"]["email"]["type"]
    for field in contact_model.JSON_FIELDS:
        assert read["properties"][field]["type"] == ["object", "array"]
    assert write["properties"]["orders_count"]["minimum"] == 0
    detail = schemas["ContactDetail"]
    assert {"contact_lists", "contact_segments"} <= set(detail["required"])


# ---------------------------------------------------------------- the check of the test suite's exchanges

def _exchange(contract, method, path, status, body, *, query="", request=b"", content_type="application/json",
              headers=None):
    content = body if isinstance(body, bytes) else httpx.Response(200, json=body).content
    contract.check(method, path, query, request, status, httpx.Headers({"content-type": content_type,
                                                                          **(headers or {})}), content)


def test_the_check_catches_an_undocumented_key(contract):
    ok = {"email": "a@example.com", "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"}
    _exchange(contract, "GET", "/api/contacts.getByEmail", 200,
              {"contact": {**ok, "contact_lists": [], "contact_segments": []}},
              query="workspace_id=ws_1&email=a@example.com")
    with pytest.raises(ContractError, match="contact"):
        _exchange(contract, "GET", "/api/contacts.getByEmail", 200,
                  {"contact": {**ok, "contact_lists": [], "contact_segments": [], "secret_field": 1}},
                  query="workspace_id=ws_1&email=a@example.com")


def test_the_check_catches_a_wrong_type_a_bad_time_and_a_null(contract):
    ok = {"email": "a@example.com", "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"}
    body = {"email": "a@example.com", "action": "created", "error": None}
    request = b'{"workspace_id": "ws_1", "contact": {"email": "a@example.com"}}'
    _exchange(contract, "POST", "/api/contacts.upsert", 200, {**body, "contact": ok}, request=request)
    for bad in ({"orders_count": "5"}, {"created_at": "yesterday"}, {"first_name": None}):
        with pytest.raises(ContractError):
            _exchange(contract, "POST", "/api/contacts.upsert", 200, {**body, "contact": {**ok, **bad}},
                      request=request)


def test_the_check_catches_an_undocumented_status_and_content_type(contract):
    with pytest.raises(ContractError, match="status 500 is not documented"):
        _exchange(contract, "GET", "/api/contacts.count", 500, {"error": "internal server error"})
    with pytest.raises(ContractError, match="Content-Type"):
        _exchange(contract, "GET", "/api/contacts.count", 400, b"bad", content_type="text/plain")
    with pytest.raises(ContractError, match="not 401/405"):
        _exchange(contract, "DELETE", "/api/contacts.count", 200, {"total_contacts": 1})
    with pytest.raises(ContractError, match="Allow"):
        _exchange(contract, "DELETE", "/api/contacts.count", 405, {"error": "Method not allowed"})
    _exchange(contract, "DELETE", "/api/contacts.count", 405, {"error": "Method not allowed"},
              headers={"Allow": "GET"})
    with pytest.raises(ContractError, match="Retry-After"):
        _exchange(contract, "GET", "/api/contacts.count", 503, {"error": "database unavailable"})
    _exchange(contract, "GET", "/api/contacts.count", 503, {"error": "database unavailable"},
              headers={"Retry-After": "1"})


def test_a_request_outside_the_document_must_not_succeed(contract):
    answer = {"total_contacts": 0}
    _exchange(contract, "GET", "/api/contacts.count", 400, {"error": "workspace_id is required"})
    with pytest.raises(ContractError, match="outside the document yet succeeded"):
        _exchange(contract, "GET", "/api/contacts.count", 200, answer)  # no workspace_id
    with pytest.raises(ContractError, match="limit"):
        _exchange(contract, "GET", "/api/contacts.list", 200, {"contacts": []}, query="workspace_id=ws_1&limit=500")
    with pytest.raises(ContractError, match="body is not JSON"):
        _exchange(contract, "POST", "/api/contacts.delete", 200, {"success": True}, request=b"{oops")
