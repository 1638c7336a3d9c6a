"""The OpenAPI part of templates: the template object, its parts and translations, the visual
editor's blocks, templates.compile's answer, template blocks, and their operations."""

from __future__ import annotations

from postroom.platform.openapi import BOOLEAN, INTEGER, STRING, TIME, Op, array, obj, param, ref
from postroom.templates import model

TEMPLATE_ID = {"type": "string", "pattern": f"^{model.ID.pattern}$", "maxLength": model.ID_MAX}
CHANNEL = {"type": "string", "enum": list(model.CHANNELS)}
LANGUAGE = {"type": "string", "enum": list(model.LANGUAGES)}
ANY_OBJECT = {"type": "object"}


def _nullable(schema: dict) -> dict:
    return {**schema, "type": [schema["type"], "null"]}


def _text(limit: int | None = None, description: str | None = None) -> dict:
    out: dict = {"type": "string"}
    if limit is not None:
        out["maxLength"] = limit
    if description:
        out["description"] = description
    return out


SCHEMAS = {
    "VisualBlock": obj(
        {"id": {"description": "the builder's identifier, as sent (not checked, not unique)"},
         "type": STRING,
         "children": array(ref("VisualBlock"), description="omitted when empty"),
         "attributes": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                        "description": "camelCase MJML attribute names; omitted when empty"},
         "content": STRING},
        ["type"], description="A block of the visual editor tree (templates contract section 3)."),
    "TemplateEmail": obj(
        {"editor_mode": {"type": "string", "enum": ["visual", "code"], "description": "omitted when \"\" (visual)"},
         "mjml_source": STRING, "sender_id": STRING, "reply_to": STRING, "subject": _text(model.SUBJECT_MAX),
         "subject_preview": _text(model.SUBJECT_MAX),
         "compiled_preview": _text(description="the MJML the render path starts from, Liquid left in place"),
         "visual_editor_tree": {"anyOf": [ref("VisualBlock"), ANY_OBJECT, {"type": "null"}],
                                "description": "visual mode: the checked tree; code mode: as sent"},
         "text": STRING},
        ["subject", "compiled_preview", "visual_editor_tree"]),
    "TemplateWeb": obj({"content": ANY_OBJECT, "html": STRING, "plain_text": STRING}, ["content"]),
    "TemplateTranslation": {**obj({"email": ref("TemplateEmail"), "web": ref("TemplateWeb")}),
                            "minProperties": 1, "maxProperties": 1},
    "Template": obj(
        {"id": TEMPLATE_ID, "name": _text(model.NAME_MAX), "version": {"type": "integer", "minimum": 1},
         "channel": CHANNEL, "email": ref("TemplateEmail"), "web": ref("TemplateWeb"),
         "category": _text(model.CATEGORY_MAX, "known: " + ", ".join(model.CATEGORIES)),
         "template_macro_id": STRING, "integration_id": STRING, "test_data": ANY_OBJECT, "settings": ANY_OBJECT,
         "translations": {"type": "object", "propertyNames": LANGUAGE,
                          "additionalProperties": ref("TemplateTranslation")},
         "created_at": TIME, "updated_at": TIME,
         "deleted_at": {**TIME, "description": "only on versions of a deleted template (templates.get with version)"}},
        ["id", "name", "version", "channel", "category", "created_at", "updated_at"]),
    "CompileResult": obj(
        {"success": BOOLEAN, "mjml": STRING, "html": STRING, "subject": STRING, "subject_preview": STRING,
         "text": STRING,
         "error": obj({"message": STRING, "details": array(obj(
             {"line": INTEGER, "column": INTEGER, "message": STRING, "tagName": STRING, "block_id": STRING},
             ["line", "column", "message", "tagName"]))}, ["message", "details"])},
        ["success"]),
    "TemplateBlock": obj(
        {"id": {"type": "string", "format": "uuid"}, "name": _text(model.NAME_MAX), "block": ref("VisualBlock"),
         "created": TIME, "updated": TIME},
        ["id", "name", "block", "created", "updated"]),
}

_TREE_INPUT = {"type": ["object", "null"], "description": "a visual editor tree (VisualBlock), checked by the server"}
_EMAIL_INPUT = obj(
    {"editor_mode": {"type": ["string", "null"], "enum": ["", "visual", "code", None]},
     "mjml_source": {"type": ["string", "null"]}, "sender_id": {"type": ["string", "null"]},
     "reply_to": {"type": ["string", "null"]}, "subject": _text(model.SUBJECT_MAX),
     "subject_preview": _nullable(_text(model.SUBJECT_MAX)), "visual_editor_tree": _TREE_INPUT,
     "text": {"type": ["string", "null"]}},
    ["subject"], closed=False)
_WEB_INPUT = obj({"content": ANY_OBJECT, "html": {"type": ["string", "null"]},
                  "plain_text": {"type": ["string", "null"]}}, ["content"], closed=False)
_TEMPLATE_INPUT = {
    "id": TEMPLATE_ID, "name": _text(model.NAME_MAX), "channel": CHANNEL, "category": _text(model.CATEGORY_MAX),
    "email": {"anyOf": [_EMAIL_INPUT, {"type": "null"}], "description": "required for channel email"},
    "web": {"anyOf": [_WEB_INPUT, {"type": "null"}], "description": "required for channel web"},
    "template_macro_id": _nullable(_text(model.MACRO_ID_MAX)),
    "test_data": _nullable(ANY_OBJECT), "settings": _nullable(ANY_OBJECT),
    "translations": {"type": ["object", "null"], "propertyNames": LANGUAGE,
                     "additionalProperties": {"type": ["object", "null"], "properties": {
                         "email": {"anyOf": [_EMAIL_INPUT, {"type": "null"}]},
                         "web": {"anyOf": [_WEB_INPUT, {"type": "null"}]}}}},
}
_TEMPLATE_REQUIRED = ["id", "name", "channel", "category"]
_OPTIONAL_TEXT = {"type": ["string", "null"]}
_TRACKING = obj({"enable_tracking": {"type": ["boolean", "null"]},
                 **{name: _OPTIONAL_TEXT for name in ("utm_source", "utm_medium", "utm_campaign", "utm_content",
                                                      "utm_term", "endpoint", "workspace_id", "message_id")}},
                closed=False, description="endpoint, workspace_id and message_id are ignored")
_COMPILE_INPUT = {
    "message_id": STRING, "visual_editor_tree": _TREE_INPUT, "mjml_source": _OPTIONAL_TEXT,
    "subject": _OPTIONAL_TEXT, "subject_preview": _OPTIONAL_TEXT, "subject_preview_override": _OPTIONAL_TEXT,
    "test_data": _nullable(ANY_OBJECT), "tracking_settings": {"anyOf": [_TRACKING, {"type": "null"}]},
    "channel": _OPTIONAL_TEXT, "preserve_liquid": {"type": ["boolean", "null"]},
    "template_id": {"anyOf": [TEMPLATE_ID, {"enum": ["", None]}]},
    "version": {"type": ["integer", "null"], "description": "absent or <= 0: the latest"},
    "language": _OPTIONAL_TEXT,
}
_BLOCK_INPUT = {"name": _text(model.NAME_MAX), "block": {"type": "object", "description": "a VisualBlock (not mjml)"}}
_ONE_TEMPLATE = obj({"template": ref("Template")}, ["template"])
_ONE_BLOCK = obj({"block": ref("TemplateBlock")}, ["block"])
_ID_PARAM = param("id", TEMPLATE_ID, True)
_BLOCK_ID_PARAM = param("id", STRING, True, "the block's uuid")

OPERATIONS = {
    "/api/templates.list": Op(
        "The latest version of every live template, newest first", id="listTemplates", tag="templates",
        params=[param("category", _text(model.CATEGORY_MAX)), param("channel", _text(model.CHANNEL_MAX))],
        ok=obj({"templates": array(ref("Template"))}, ["templates"])),
    "/api/templates.get": Op(
        "A template: its latest version, or the version asked for (deleted templates included)",
        id="getTemplate", tag="templates",
        params=[_ID_PARAM, param("version", INTEGER, description="absent or <= 0: the latest")],
        ok=_ONE_TEMPLATE, errors=[404]),
    "/api/templates.create": Op(
        "Create a template (version 1)", id="createTemplate", tag="templates", body=_TEMPLATE_INPUT,
        required=_TEMPLATE_REQUIRED, status=201, ok=_ONE_TEMPLATE),
    "/api/templates.update": Op(
        "Write the next version of a template (optional fields left out are kept)", id="updateTemplate",
        tag="templates", body=_TEMPLATE_INPUT, required=_TEMPLATE_REQUIRED, ok=_ONE_TEMPLATE, errors=[404]),
    "/api/templates.delete": Op(
        "Delete a template (soft: its versions stay readable by version)", id="deleteTemplate", tag="templates",
        body={"id": TEMPLATE_ID}, required=["id"], ok=ref("Success"), errors=[404]),
    "/api/templates.compile": Op(
        "Render a template body without storing it; a template that does not render is success false",
        id="compileTemplate", tag="templates", body=_COMPILE_INPUT, required=["message_id"],
        ok=ref("CompileResult"), errors=[404]),
    "/api/templateBlocks.list": Op(
        "The workspace's template blocks, in creation order", id="listTemplateBlocks", tag="templateBlocks",
        ok=obj({"blocks": array(ref("TemplateBlock"))}, ["blocks"])),
    "/api/templateBlocks.get": Op(
        "One template block", id="getTemplateBlock", tag="templateBlocks", params=[_BLOCK_ID_PARAM],
        ok=_ONE_BLOCK, errors=[404]),
    "/api/templateBlocks.create": Op(
        "Save a template block", id="createTemplateBlock", tag="templateBlocks", body=_BLOCK_INPUT,
        required=["name", "block"], status=201, ok=_ONE_BLOCK),
    "/api/templateBlocks.update": Op(
        "Replace a template block's name and block", id="updateTemplateBlock", tag="templateBlocks",
        body={"id": STRING, **_BLOCK_INPUT}, required=["id", "name", "block"], ok=_ONE_BLOCK, errors=[404]),
    "/api/templateBlocks.delete": Op(
        "Delete a template block", id="deleteTemplateBlock", tag="templateBlocks", body={"id": STRING},
        required=["id"], ok=ref("Success"), errors=[404]),
}
