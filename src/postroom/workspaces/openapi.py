"""The OpenAPI part of workspaces: the workspace object and its operations."""

from __future__ import annotations

from postroom.platform.openapi import STRING, TIME, WORKSPACE_ID_SCHEMA, Op, array, obj, param, ref

SCHEMAS = {
    "Workspace": obj(
        {"id": WORKSPACE_ID_SCHEMA, "name": STRING, "settings": {"type": "object"}, "created_at": TIME,
         "updated_at": TIME, "integrations": array(ref("EmailIntegration"))},
        ["id", "name", "settings", "created_at", "updated_at"]),
}

OPERATIONS = {
    "/api/workspaces.list": Op(
        "The workspaces the caller is a member of (a bare array)", id="listWorkspaces", tag="workspaces",
        ok=array(ref("Workspace"))),
    "/api/workspaces.get": Op(
        "One workspace of the caller", id="getWorkspace", tag="workspaces",
        params=[param("id", WORKSPACE_ID_SCHEMA, True)],
        ok=obj({"workspace": ref("Workspace")}, ["workspace"]), errors=[400, 403]),
    "/api/workspaces.create": Op(
        "Create a workspace (root user only); the caller becomes its owner", id="createWorkspace", tag="workspaces",
        body={"id": WORKSPACE_ID_SCHEMA, "name": {"type": "string", "maxLength": 255},
              "settings": {"type": ["object", "null"]}},
        required=["id", "name"],
        ok=obj({"workspace": ref("Workspace")}, ["workspace"]), errors=[403, 409]),
    "/api/workspaces.update": Op(
        "Rename a workspace and change its settings (owners only)", id="updateWorkspace", tag="workspaces",
        description="Settings are merged key by key into the stored ones; `template_blocks` is ignored. "
                    "`transactional_email_provider_id` and `marketing_email_provider_id` must name an email "
                    "integration of the workspace, or be empty. The answer is the workspace object itself.",
        body={"name": {"type": "string", "maxLength": 255}, "settings": {"type": ["object", "null"]}},
        ok=ref("Workspace"), errors=[404]),
    "/api/workspaces.createAPIKey": Op(
        "Create an API key of the workspace (owners only)", id="createWorkspaceAPIKey", tag="workspaces",
        body={"email_prefix": {"type": "string", "description": "up to 64 of a-z, 0-9, '.', '_' and '-'"}},
        required=["email_prefix"],
        ok=obj({"token": STRING, "email": STRING}, ["token", "email"]), errors=[409]),
}
