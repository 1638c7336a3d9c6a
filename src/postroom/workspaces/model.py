"""Workspace rules: ids, names, settings, API key e-mail names. Pure."""

from __future__ import annotations

import re

from postroom.platform import fields, jsonenc
from postroom.platform.errors import RuleError
from postroom.platform.http import WORKSPACE_ID

EMAIL_PREFIX = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class WorkspaceError(RuleError):
    """A workspace id, name or key prefix refused (400)."""


def validate_new(body: dict) -> tuple[str, str, dict]:
    ws_id, name, settings = body.get("id"), body.get("name"), body.get("settings")
    if ws_id is None or ws_id == "":
        raise WorkspaceError("id is required")
    if not isinstance(ws_id, str) or not WORKSPACE_ID.match(ws_id):
        raise WorkspaceError("invalid id: must be 1-32 characters of a-z, 0-9, _ and -")
    name = fields.text(name, "name", 255, WorkspaceError)
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise WorkspaceError("settings must be an object")
    problem = jsonenc.storage_problem(settings)
    if problem:
        raise WorkspaceError(f"settings {problem}")
    return ws_id, name, settings


# Settings delivery reads (delivery-contract 1.4): checked when an update sets them.
PROVIDER_KEYS = {"transactional_email_provider_id": "transactional", "marketing_email_provider_id": "marketing"}
URL_KEYS = ("custom_endpoint_url", "website_url")


def validate_update(body: dict) -> tuple[str | None, dict | None]:
    """workspaces.update: (the new name or None to keep it, the settings to merge or None).
    Settings are merged key by key into what is stored (Notifuse replaces the whole object, so
    a client that knows fewer keys than the server wipes the rest); `template_blocks` is the
    templates capability's and is ignored (templates contract 2.7)."""
    name = body.get("name")
    if name is not None:
        name = fields.text(name, "name", 255, WorkspaceError)
    settings = body.get("settings")
    if settings is None:
        return name, None
    if not isinstance(settings, dict):
        raise WorkspaceError("settings must be an object")
    problem = jsonenc.storage_problem(settings)
    if problem:
        raise WorkspaceError(f"settings {problem}")
    settings = {k: v for k, v in settings.items() if k != "template_blocks"}
    for key in PROVIDER_KEYS:
        if key in settings and not isinstance(settings[key], str):
            raise WorkspaceError(f"settings.{key} must be a string")
    if "email_tracking_enabled" in settings and not isinstance(settings["email_tracking_enabled"], bool):
        raise WorkspaceError("settings.email_tracking_enabled must be a boolean")
    for key in URL_KEYS:
        value = settings.get(key)
        if value not in (None, "") and not (isinstance(value, str) and
                                            value.lower().startswith(("http://", "https://")) and "\n" not in value):
            raise WorkspaceError(f"settings.{key} must be an http or https URL")
    return name, settings


def api_key_email(workspace_id: str, prefix) -> str:
    if not isinstance(prefix, str) or not prefix.strip():
        raise WorkspaceError("email_prefix is required")
    prefix = prefix.strip().lower()
    if not EMAIL_PREFIX.match(prefix):
        raise WorkspaceError("invalid email_prefix: use up to 64 of a-z, 0-9, '.', '_' and '-'")
    return f"{prefix}@{workspace_id}.api.postroom"


def to_wire(row, template_blocks=()) -> dict:
    """`template_blocks` (the templates capability's, in their wire form) are shown in the
    settings as `template_blocks`, where Notifuse keeps them; a key of that name stored with the
    settings is not shown (the blocks' own table is the truth)."""
    settings = {k: v for k, v in row["settings"].items() if k != "template_blocks"}
    if template_blocks:
        settings["template_blocks"] = list(template_blocks)
    return {"id": row["id"], "name": row["name"], "settings": settings,
            "created_at": row["created_at"], "updated_at": row["updated_at"]}
