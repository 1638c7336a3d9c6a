"""Checks requests and responses against Postroom's OpenAPI document (postroom.app.document).

conftest.py hooks `Contract.check` into the `client` fixture, so every call a test makes through
`client` is held to the document:

- the response, always: its status must be one the operation lists, its Content-Type the
  documented media type, its JSON body valid against the documented schema (JSON Schema 2020-12,
  the dialect of OpenAPI 3.1, formats such as date-time and uuid checked), and documented
  required headers present. A HEAD answer is checked for its status and headers only.
- the request, by the rule "what the document refuses, the server refuses": tests send malformed
  input on purpose, so a request outside the document is fine as long as it gets a 4xx; if it
  succeeds (2xx), the document is stricter than the server and the check fails. Query values
  are read as the document types them (integers, booleans as true/false/1/0); an empty value
  counts as absent, as the server reads it.
- a method the document does not list on a documented path must get 401 (token first) or 405
  with Allow, as components/responses say, with the error body; OPTIONS (CORS, answered for any path) and paths the document does not
  list (404 `not found`) are not checked here: tests/platform/test_http_edge.py covers them.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from jsonschema import Draft202012Validator


class ContractError(AssertionError):
    pass


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class Contract:
    def __init__(self, document: dict):
        self.doc = document
        self._validators: dict[str, Draft202012Validator] = {}

    # ---- schemas

    def _validator(self, pointer: str) -> Draft202012Validator:
        validator = self._validators.get(pointer)
        if validator is None:
            # The document itself is the root resource, so "#/components/..." refs resolve; its
            # other keys (openapi, paths, ...) are not JSON Schema keywords and are ignored.
            validator = Draft202012Validator({**self.doc, "$ref": pointer},
                                             format_checker=Draft202012Validator.FORMAT_CHECKER)
            self._validators[pointer] = validator
        return validator

    def errors(self, pointer: str, instance) -> list[str]:
        found = sorted(self._validator(pointer).iter_errors(instance), key=lambda e: list(e.absolute_path))
        return [f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in found[:5]]

    def deref(self, node: dict) -> dict:
        while isinstance(node, dict) and "$ref" in node:
            target = self.doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    # ---- the operation of a request

    def operation(self, path: str, method: str):
        item = self.doc["paths"].get(path)
        if item is None:
            return None, None
        return item, item.get(method.lower())

    # ---- requests

    def request_problems(self, path: str, method: str, op: dict, query: str, body: bytes | None) -> list[str]:
        problems: list[str] = []
        items = parse_qsl(query, keep_blank_values=True)
        for index, param in enumerate(op.get("parameters", [])):
            param = self.deref(param)
            name = param["name"]
            values = [v for k, v in items if k == name and v != ""]
            if not values:
                if param.get("required"):
                    problems.append(f"query parameter {name} is required")
                continue
            schema = self.deref(param["schema"])
            pointer = _pointer("paths", path, method.lower(), "parameters", str(index), "schema")
            if schema.get("type") == "array":
                value = [_coerce(self.deref(schema.get("items", {})), v) for v in values]
            else:
                value = _coerce(schema, values[0])
            problems += [f"query parameter {name}: {e}" for e in self.errors(pointer, value)]
        request_body = op.get("requestBody")
        if request_body is not None and body is None:
            problems.append("the body was streamed and could not be checked")
        elif request_body is not None:
            try:
                decoded = json.loads(body)
            except ValueError:
                # a body in another documented media type (a form post) is not schema-checked
                if set(request_body.get("content", {})) <= {"application/json"}:
                    problems.append("the body is not JSON")
            else:
                pointer = _pointer("paths", path, method.lower(), "requestBody", "content", "application/json",
                                   "schema")
                problems += [f"body {e}" for e in self.errors(pointer, decoded)]
        return problems

    # ---- responses

    def response_problems(self, path: str, method: str, op: dict, status: int, headers, content: bytes) -> list[str]:
        responses = op["responses"]
        key = str(status) if str(status) in responses else f"{status // 100}XX"
        if key not in responses:
            key = "default"
        if key not in responses:
            return [f"status {status} is not documented (documented: {', '.join(responses)})"]
        response = self.deref(responses[key])
        problems = []
        for name, header in response.get("headers", {}).items():
            if self.deref(header).get("required") and name not in headers:
                problems.append(f"required header {name} is missing")
        content_types = response.get("content")
        if method.upper() == "HEAD" or not content_types:
            if content_types is None and content and method.upper() != "HEAD":
                problems.append("a body where the document has none")
            return problems
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in content_types:
            return problems + [f"Content-Type {media!r} is not documented ({', '.join(content_types)})"]
        if media != "application/json":
            return problems
        try:
            decoded = json.loads(content)
        except ValueError:
            return problems + ["the body is not JSON"]
        ref = responses[key].get("$ref")
        if ref:
            pointer = ref + "/" + "/".join(["content", "application~1json", "schema"])
        else:
            pointer = _pointer("paths", path, method.lower(), "responses", key, "content", "application/json",
                               "schema")
        return problems + [f"body {e}" for e in self.errors(pointer, decoded)]

    # ---- both

    def check(self, method: str, path: str, query: str, body: bytes | None, status: int, headers,
              content: bytes) -> None:
        """Raises ContractError naming every way this exchange departs from the document."""
        if method.upper() == "OPTIONS":
            return
        item, op = self.operation(path, method)
        if item is None:
            return
        where = f"{method.upper()} {path} -> {status}"
        if op is None:  # the common answers of a method the path does not serve
            if status in (401, 405):
                name = "Unauthorized" if status == 401 else "MethodNotAllowed"
                problems = self.response_problems(path, method, {"responses": {str(status): {
                    "$ref": f"#/components/responses/{name}"}}}, status, headers, content)
            else:
                problems = [f"a method the document does not list got {status}, not 401/405"]
            if problems:
                raise ContractError(f"OpenAPI contract: {where}: " + "; ".join(problems))
            return
        problems = self.response_problems(path, method, op, status, headers, content)
        if 200 <= status < 300:
            refused = self.request_problems(path, method, op, query, body)
            if refused:
                problems.append("the request is outside the document yet succeeded: " + "; ".join(refused))
        if problems:
            shown = content[:500].decode("utf-8", "replace")
            raise ContractError(f"OpenAPI contract: {where}: " + "; ".join(problems) + f"\n  response body: {shown}")


def _coerce(schema: dict, raw: str):
    """A query value as the document types it; a value that cannot be read stays a string (and
    so fails its schema)."""
    kind = schema.get("type")
    s = raw.strip()
    if kind == "integer":
        try:
            return int(s)
        except ValueError:
            return raw
    if kind == "boolean":
        return {"true": True, "1": True, "false": False, "0": False}.get(s.lower(), raw)
    return raw
