"""The OpenAPI part of auth: root sign-in and the user object."""

from __future__ import annotations

from postroom.platform.openapi import STRING, TIME, Op, obj, ref

SCHEMAS = {
    "User": obj(
        {"id": {"type": "string", "format": "uuid"}, "email": STRING, "name": STRING,
         "type": {"type": "string", "enum": ["user", "api_key"]}, "created_at": TIME, "updated_at": TIME},
        ["id", "email", "name", "type", "created_at", "updated_at"]),
}

OPERATIONS = {
    "/api/user.rootSignin": Op(
        "Sign in as the root user with a signed timestamp", id="rootSignin", tag="auth",
        body={"email": STRING, "timestamp": {"type": "integer", "description": "unix seconds, within 60 s"},
              "signature": {"type": "string", "description": "hex HMAC-SHA256 of \"{email}:{timestamp}\" "
                                                             "under SECRET_KEY"}},
        required=["email", "timestamp", "signature"],
        ok=obj({"token": STRING, "user": ref("User")}, ["token", "user"]), errors=[401]),
}
