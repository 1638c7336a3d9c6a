"""Template rules: request parsing and validation with the contract's messages and order, the
update merge rule, translations and variant resolution, and the wire shapes of templates and
template blocks (templates-contract.md sections 1, 2 and 2.7). Pure: no I/O.

What the render engine (postroom.templates.render) decides, the tree rules of 3.2, the MJML a
tree generates, Liquid syntax and the compiled preview, is asked for in one place, the last
section of this module.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from postroom.contacts import model as contacts
from postroom.platform import jsonenc
from postroom.platform.errors import RuleError
from postroom.templates import render as engine

ID = re.compile(r"[A-Za-z0-9_-]+")
ID_MAX = 32
WORKSPACE_ID_MAX = 32
NAME_MAX = 255
CHANNEL_MAX = 20
CATEGORY_MAX = 20
MACRO_ID_MAX = 32
SUBJECT_MAX = 255
SOURCE_MAX_BYTES = 1_048_576   # mjml_source, text, and the MJML a tree generates (1.8)
BODY_MAX_DEPTH = 128           # JSON nesting of a request body, on the raw bytes (1.8)
CHANNELS = ("email", "web")
# Known categories; any other string of 1-20 characters is stored as well (Notifuse).
CATEGORIES = ("marketing", "transactional", "welcome", "opt_in", "unsubscribe", "bounce", "blocklist",
              "blog", "other")
LANGUAGES = ("ar", "ca", "cs", "da", "de", "el", "en", "es", "fi", "fr", "he", "hi", "hu", "id", "it", "ja",
             "ko", "nl", "nb", "pl", "pt", "pt-BR", "ro", "ru", "sv", "th", "tr", "uk", "vi", "zh", "zh-TW")
_LANGUAGES = frozenset(LANGUAGES)
DEFAULT_LANGUAGE = "en"

NOT_FOUND = "Template not found"
ID_TAKEN = "Template id already exists"
BLOCK_NOT_FOUND = "Template block not found"
INVALID_BODY = "Invalid request body"


class TemplateError(RuleError):
    """A template or template-block request refused: 400, or 404 for one that does not exist."""


# ---------------------------------------------------------------- the JSON type rule

# The JSON type of every request field outside the visual editor tree: a mismatch anywhere is
# 400 `Invalid request body`, checked before any other rule (Notifuse's decoder). null is
# accepted everywhere and means absent. Fields the server ignores (version, integration_id,
# compiled_preview, created_at...) are not looked at.
_STR, _OBJ, _BOOL, _INT = "string", "object", "boolean", "integer"


@dataclass(frozen=True)
class _Each:
    """An object whose every value has the type `of` (translations: code -> variant)."""
    of: object


EMAIL_TYPES = {"editor_mode": _STR, "mjml_source": _STR, "sender_id": _STR, "reply_to": _STR, "subject": _STR,
               "subject_preview": _STR, "visual_editor_tree": _OBJ, "text": _STR}
WEB_TYPES = {"content": _OBJ, "html": _STR, "plain_text": _STR}
TEMPLATE_TYPES = {"workspace_id": _STR, "id": _STR, "name": _STR, "channel": _STR, "category": _STR,
                  "template_macro_id": _STR, "email": EMAIL_TYPES, "web": WEB_TYPES, "test_data": _OBJ,
                  "settings": _OBJ, "translations": _Each({"email": EMAIL_TYPES, "web": WEB_TYPES})}
_UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
TRACKING_TYPES = {"enable_tracking": _BOOL, **{k: _STR for k in _UTM},
                  "endpoint": _STR, "workspace_id": _STR, "message_id": _STR}
COMPILE_TYPES = {"workspace_id": _STR, "message_id": _STR, "visual_editor_tree": _OBJ, "mjml_source": _STR,
                 "subject": _STR, "subject_preview": _STR, "subject_preview_override": _STR, "test_data": _OBJ,
                 "tracking_settings": TRACKING_TYPES, "channel": _STR, "preserve_liquid": _BOOL,
                 "template_id": _STR, "version": _INT, "language": _STR}
REF_TYPES = {"workspace_id": _STR, "id": _STR}
BLOCK_TYPES = {"workspace_id": _STR, "name": _STR}  # `block` is an object or "" (parse_block)
_INT64 = (-(2 ** 63), 2 ** 63 - 1)


def _typed(value, spec) -> bool:
    if value is None:
        return True
    if isinstance(spec, dict):
        return isinstance(value, dict) and all(_typed(value.get(k), s) for k, s in spec.items())
    if isinstance(spec, _Each):
        return isinstance(value, dict) and all(_typed(v, spec.of) for v in value.values())
    if spec == _STR:
        return isinstance(value, str)
    if spec == _OBJ:
        return isinstance(value, dict)
    if spec == _BOOL:
        return isinstance(value, bool)
    return isinstance(value, int) and not isinstance(value, bool) and _INT64[0] <= value <= _INT64[1]


def _check_types(body: dict, spec: dict) -> None:
    if not _typed(body, spec):
        raise TemplateError(INVALID_BODY)


# ---------------------------------------------------------------- fields

def _text(p: str, value, name: str, limit: int | None = None, required: bool = True):
    """A string field of an already type-checked body: `<name> is required` when absent, null or
    "" (if required), its length in characters, and no NUL (PostgreSQL cannot store one)."""
    if value is None or value == "":
        if required:
            raise TemplateError(f"{p}{name} is required")
        return value
    if limit is not None and len(value) > limit:
        raise TemplateError(f"{p}{name} length must be between 1 and {limit}")
    if "\x00" in value:
        raise TemplateError(f"{p}{name} contains a NUL character")
    return value


def _template_id(p: str, value) -> str:
    _text(p, value, "id", ID_MAX)
    if not ID.fullmatch(value):
        raise TemplateError(f"{p}id must contain only letters, numbers, underscores, and hyphens")
    return value


def _workspace(p: str, value, limited: bool = False) -> str:
    """workspace_id: required; at most 32 characters where the route says so (its 403 answers
    every other id no workspace can have)."""
    return _text(p, value, "workspace_id", WORKSPACE_ID_MAX if limited else None)


def _bytes_over(value: str | None, limit: int) -> bool:
    return value is not None and len(value) * 4 > limit and len(value.encode()) > limit


def _storable(p: str, value, name: str) -> None:
    """Free-form JSON that is stored: no NUL in any key or string (jsonb refuses them)."""
    problem = jsonenc.storage_problem(value)
    if problem:
        raise TemplateError(f"{p}{name} {problem}")


def _echo(value: str) -> str:
    """A value quoted back in an error, shortened when it is long."""
    return value if len(value) <= 100 else value[:100] + "..."


# ---------------------------------------------------------------- the email and web parts

def editor_mode(part: Mapping) -> str:
    """`visual` or `code`; "" (the default) means visual."""
    return part.get("editor_mode") or "visual"


def _email_part(pe: str, part: dict) -> dict:
    """The email part as stored (compiled_preview is added by with_previews). `pe` is the whole
    prefix, ending in `invalid email template: `. Order of 2.3 row 9."""
    mode = part.get("editor_mode") or ""
    if mode not in ("", "visual", "code"):
        raise TemplateError(f"{pe}editor_mode must be 'visual' or 'code'")
    subject = _text(pe, part.get("subject"), "subject", SUBJECT_MAX)
    source, tree = part.get("mjml_source"), part.get("visual_editor_tree")
    if mode == "code":
        if not source:
            raise TemplateError(f"{pe}mjml_source is required for code mode")
        if _bytes_over(source, SOURCE_MAX_BYTES):
            raise TemplateError(f"{pe}mjml_source exceeds {SOURCE_MAX_BYTES} bytes")
    else:
        _generate(pe, tree)
        tree = tree_wire(tree)
    _text(pe, source, "mjml_source", required=False)
    if tree is not None:
        _storable(pe, tree, "visual_editor_tree")
    sender_id = _text(pe, part.get("sender_id"), "sender_id", required=False) or ""
    reply_to = _text(pe, part.get("reply_to"), "reply_to", required=False) or ""
    if reply_to and not _valid_address(reply_to):
        raise TemplateError(f"{pe}reply_to is not a valid email")
    preview = _text(pe, part.get("subject_preview"), "subject_preview", SUBJECT_MAX, required=False)
    text = _text(pe, part.get("text"), "text", required=False)
    if _bytes_over(text, SOURCE_MAX_BYTES):
        raise TemplateError(f"{pe}text exceeds {SOURCE_MAX_BYTES} bytes")
    problem = engine.check_liquid(engine.Content(
        tree=tree if mode != "code" else None, mjml_source=source if mode == "code" else None,
        subject=subject, subject_preview=preview, text=text))
    if problem is not None:
        raise TemplateError(pe + problem.message)
    return {"editor_mode": mode, "mjml_source": source, "sender_id": sender_id, "reply_to": reply_to,
            "subject": subject, "subject_preview": preview, "visual_editor_tree": tree, "text": text}


def _valid_address(value: str) -> bool:
    """The contacts contract's syntax for an email address."""
    try:
        contacts.validate_email(value)
    except RuleError:
        return False
    return True


def _web_part(pw: str, part: dict) -> dict:
    """`pw` ends in `invalid web template: `."""
    content = part.get("content")
    if not content:
        raise TemplateError(f"{pw}content is required")
    _storable(pw, content, "content")
    return {"content": content, "html": _text(pw, part.get("html"), "html", required=False) or "",
            "plain_text": _text(pw, part.get("plain_text"), "plain_text", required=False) or ""}


def _part(p: str, channel: str, part: dict) -> dict:
    if channel == "email":
        return _email_part(p + "invalid email template: ", part)
    return _web_part(p + "invalid web template: ", part)


def _translations(p: str, channel: str, value) -> dict:
    """code -> {channel: part}, checked in ascending code order (1.4)."""
    out = {}
    for code in sorted(value or {}):
        if code not in _LANGUAGES:
            raise TemplateError(f"{p}invalid translation language code: {_echo(code)}")
        variant = value[code] or {}
        t = f"{p}translation '{code}': "
        email, web = variant.get("email"), variant.get("web")
        if email is None and web is None:
            raise TemplateError(t + "must have either email or web content")
        if channel == "email" and web is not None:
            raise TemplateError(t + "web content not allowed for email channel")
        if channel == "web" and email is not None:
            raise TemplateError(t + "email content not allowed for web channel")
        out[code] = {channel: _part(t, channel, email if channel == "email" else web)}
    return out


# ---------------------------------------------------------------- templates.create / update

OPTIONAL = ("template_macro_id", "test_data", "settings", "translations")  # the merge rule's fields


@dataclass(frozen=True)
class Draft:
    """A checked create or update request: the new version's fields, and which of the optional
    fields the request named (an update copies the others from the latest version)."""
    workspace_id: str
    fields: dict
    given: frozenset


def parse_template(body: dict, verb: str = "create") -> Draft:
    """templates.create / templates.update (verb "update"): checks 1-10 of 2.3, in order."""
    p = f"invalid {verb} template request: "
    _check_types(body, TEMPLATE_TYPES)
    workspace_id = _workspace(p, body.get("workspace_id"))
    template_id = _template_id(p, body.get("id"))
    name = _text(p, body.get("name"), "name", NAME_MAX)
    channel = _text(p, body.get("channel"), "channel", CHANNEL_MAX)
    if channel not in CHANNELS:
        raise TemplateError(f"{p}channel must be either 'email' or 'web'")
    category = _text(p, body.get("category"), "category", CATEGORY_MAX)
    macro = body.get("template_macro_id")
    if macro is not None and len(macro) > MACRO_ID_MAX:
        raise TemplateError(f"{p}template_macro_id must not exceed {MACRO_ID_MAX} characters")
    _text(p, macro, "template_macro_id", required=False)
    other = "web" if channel == "email" else "email"
    part = body.get(channel)
    if part is None:
        raise TemplateError(f"{p}{channel} is required for channel '{channel}'")
    if body.get(other) is not None:
        raise TemplateError(f"{p}{other} must be nil for channel '{channel}'")
    parts = {channel: _part(p, channel, part), other: None}
    translations = _translations(p, channel, body.get("translations"))
    for key in ("test_data", "settings"):
        if body.get(key) is not None:
            _storable(p, body[key], key)
    fields = {"id": template_id, "name": name, "channel": channel, "category": category, **parts,
              "template_macro_id": macro, "test_data": body.get("test_data"), "settings": body.get("settings"),
              "translations": translations}
    return Draft(workspace_id, fields, frozenset(k for k in OPTIONAL if k in body))


def revise(draft: Draft, latest: Mapping) -> dict:
    """The fields of the version an update writes after `latest` (2.4): the editor mode may not
    change; optional fields the request left out are copied, null clears them; integration_id
    and created_at always come from `latest`. Translations of another channel are not copied."""
    new = dict(draft.fields)
    if new["email"] is not None and latest["email"] is not None:
        was = editor_mode(latest["email"])
        if editor_mode(new["email"]) != was:
            raise TemplateError(f"cannot change editor mode: template was created in '{was}' mode")
    for name in OPTIONAL:
        if name not in draft.given:
            new[name] = latest[name]
    if "translations" not in draft.given and latest["channel"] != new["channel"]:
        new["translations"] = {}
    new["translations"] = new["translations"] or {}
    new["integration_id"] = latest["integration_id"]
    new["created_at"] = latest["created_at"]
    return new


def workspace_languages(settings: Mapping | None) -> tuple[list[str], str]:
    """The workspace's `languages` and `default_language` (`en` when unset), from its settings."""
    settings = settings or {}
    languages = settings.get("languages")
    languages = [x for x in languages if isinstance(x, str)] if isinstance(languages, list) else []
    default = settings.get("default_language")
    return languages, default if isinstance(default, str) and default else DEFAULT_LANGUAGE


def check_languages(verb: str, translations: Mapping, settings: Mapping | None) -> None:
    """Each translation's code is one of the workspace's languages (its default language alone
    when it lists none): check 12 of 2.3, after the permission check."""
    languages, default = workspace_languages(settings)
    allowed = set(languages) if languages else {default}
    for code in sorted(translations):
        if code not in allowed:
            raise TemplateError(f"invalid {verb} template request: translation language '{code}' "
                                "is not in workspace's configured languages")


def with_previews(draft: Draft) -> Draft:
    """The draft with `compiled_preview` computed for the email part and every email variant."""
    out = dict(draft.fields)
    if out.get("email") is not None:
        out["email"] = {**out["email"], "compiled_preview": compiled_preview(out["email"])}
    translations = {}
    for code, variant in (out.get("translations") or {}).items():
        email = variant.get("email")
        translations[code] = {"email": {**email, "compiled_preview": compiled_preview(email)}} if email else variant
    out["translations"] = translations
    return Draft(draft.workspace_id, out, draft.given)


def check_deletable(latest: Mapping) -> None:
    """An integration-managed template may not be deleted (2.5; Notifuse answers 500)."""
    if latest["integration_id"]:
        raise TemplateError("cannot delete integration-managed template: template is managed by integration "
                            f"{latest['integration_id']}")


# ---------------------------------------------------------------- reads and deletes

def parse_list(param: Callable[[str], str | None]) -> dict:
    """templates.list: {category, channel} filters (None: any)."""
    p = "invalid get templates request: "
    _workspace(p, param("workspace_id"), limited=True)
    return {"category": _text(p, param("category"), "category", CATEGORY_MAX, required=False),
            "channel": _text(p, param("channel"), "channel", CHANNEL_MAX, required=False)}


_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_get(param: Callable[[str], str | None]) -> tuple[str, int | None]:
    """templates.get: (id, version); version None means the latest (also for version <= 0)."""
    p = "invalid get template request: "
    _workspace(p, param("workspace_id"))
    template_id = _template_id(p, param("id"))
    raw = param("version")
    if raw is None:
        return template_id, None
    if not _INTEGER.fullmatch(raw) or not _INT64[0] <= int(raw) <= _INT64[1]:
        raise TemplateError(f"{p}version must be a valid integer")
    version = int(raw)
    return template_id, version if version > 0 else None


def parse_delete(body: dict) -> str:
    p = "invalid delete template request: "
    _check_types(body, REF_TYPES)
    _workspace(p, body.get("workspace_id"))
    return _template_id(p, body.get("id"))


# ---------------------------------------------------------------- the template object

def template_wire(row: Mapping) -> dict:
    """A stored version as the API returns it: keys in the order of 1.1, omitted where it says."""
    out = {"id": row["id"], "name": row["name"], "version": row["version"], "channel": row["channel"]}
    if row["email"] is not None:
        out["email"] = email_wire(row["email"])
    if row["web"] is not None:
        out["web"] = web_wire(row["web"])
    out["category"] = row["category"]
    for name in ("template_macro_id", "integration_id"):
        if row[name] is not None:
            out[name] = row[name]
    for name in ("test_data", "settings"):
        if row[name]:
            out[name] = row[name]
    if row["translations"]:
        out["translations"] = {code: _variant_wire(variant) for code, variant in sorted(row["translations"].items())}
    out["created_at"] = row["created_at"]
    out["updated_at"] = row["updated_at"]
    if row["deleted_at"] is not None:
        out["deleted_at"] = row["deleted_at"]
    return out


def _variant_wire(variant: Mapping) -> dict:
    if variant.get("email") is not None:
        return {"email": email_wire(variant["email"])}
    return {"web": web_wire(variant["web"])}


def email_wire(part: Mapping) -> dict:
    """Order of 1.2; a visual tree in the block order of 3.1 (jsonb keeps no key order)."""
    out = {}
    if part.get("editor_mode"):
        out["editor_mode"] = part["editor_mode"]
    if part.get("mjml_source") is not None:
        out["mjml_source"] = part["mjml_source"]
    for name in ("sender_id", "reply_to"):
        if part.get(name):
            out[name] = part[name]
    out["subject"] = part["subject"]
    if part.get("subject_preview") is not None:
        out["subject_preview"] = part["subject_preview"]
    out["compiled_preview"] = part.get("compiled_preview", "")
    tree = part.get("visual_editor_tree")
    out["visual_editor_tree"] = tree_wire(tree) if tree is not None and editor_mode(part) == "visual" else tree
    if part.get("text") is not None:
        out["text"] = part["text"]
    return out


def web_wire(part: Mapping) -> dict:
    out = {"content": part["content"]}
    for name in ("html", "plain_text"):
        if part.get(name):
            out[name] = part[name]
    return out


def tree_wire(node: Mapping) -> dict:
    """A block of a checked tree (3.1): `id, type, children, attributes, content`, empty
    children and attributes and a null content left out, unknown keys dropped. Recursion is
    bounded by the tree depth limit (50)."""
    out = {}
    if "id" in node:
        out["id"] = node["id"]
    out["type"] = node["type"]
    if node.get("children"):
        out["children"] = [tree_wire(child) for child in node["children"]]
    if node.get("attributes"):
        out["attributes"] = node["attributes"]
    if node.get("content") is not None:
        out["content"] = node["content"]
    return out


# ---------------------------------------------------------------- variants (1.4)

def variant(template: Mapping, language: str | None, default_language: str) -> dict:
    """The part of `template` (a stored version) that a sender uses for a contact or request
    language: the base, or a translation, by the steps of 1.4 (normalised, case-insensitive,
    with the primary-subtag fallback). An email variant takes the base's sender_id and
    reply_to where its own are empty."""
    channel = template["channel"]
    base = template[channel]
    wanted = (language or "").strip().replace("_", "-").lower()
    default = default_language.lower()
    if not wanted or wanted == default:
        return base
    translations = template["translations"] or {}
    codes = {code.lower(): code for code, v in translations.items() if v.get(channel) is not None}
    code = codes.get(wanted)
    if code is None and "-" in wanted:
        primary = wanted.partition("-")[0]
        if primary == default:
            return base
        code = codes.get(primary)
    if code is None:
        return base
    part = dict(translations[code][channel])
    if channel == "email":
        for name in ("sender_id", "reply_to"):
            if not part.get(name):
                part[name] = base.get(name) or ""
    return part


# ---------------------------------------------------------------- templates.compile (2.6)

@dataclass(frozen=True)
class CompileRequest:
    workspace_id: str
    message_id: str
    template_id: str | None
    version: int | None         # None: the latest
    language: str
    tree: dict | None
    mjml_source: str | None
    subject: str | None
    subject_preview: str | None
    preheader_override: str | None
    test_data: dict | None      # None: absent or null (with a template: the template's)
    tracking: bool
    utm: dict
    channel: str                # "email" or "web"
    preserve_liquid: bool


def parse_compile(body: dict) -> CompileRequest:
    """Validation in the order of 2.6; NUL in a string is refused last (what cannot be saved is
    not previewed either)."""
    p = "invalid compile template request: "
    _check_types(body, COMPILE_TYPES)
    workspace_id = _workspace(p, body.get("workspace_id"))
    message_id = _text(p, body.get("message_id"), "message_id")
    template_id = body.get("template_id") or None
    source = body.get("mjml_source") or None
    tree = None
    if template_id is not None:
        _template_id(p, template_id)
    elif source is None:
        _generate(p, body.get("visual_editor_tree"))
        tree = body["visual_editor_tree"]
    elif _bytes_over(source, SOURCE_MAX_BYTES):
        raise TemplateError(f"{p}mjml_source exceeds {SOURCE_MAX_BYTES} bytes")
    tracking = body.get("tracking_settings") or {}
    for name in ("mjml_source", "subject", "subject_preview", "subject_preview_override", "channel", "language"):
        _text(p, body.get(name), name, required=False)
    for name in _UTM:
        _text(p, tracking.get(name), f"tracking_settings.{name}", required=False)
    version = body.get("version")
    return CompileRequest(
        workspace_id, message_id, template_id, version if version and version > 0 else None,
        body.get("language") or "", tree, source, body.get("subject") or None, body.get("subject_preview") or None,
        body.get("subject_preview_override") or None, body.get("test_data"), bool(tracking.get("enable_tracking")),
        {name: tracking[name] for name in _UTM if tracking.get(name)},
        "web" if body.get("channel") == "web" else "email", bool(body.get("preserve_liquid")))


def public_endpoint(workspace_settings: Mapping | None, server_endpoint: str) -> str:
    """The base of tracking and preference links: the workspace's custom_endpoint_url, else the
    server's public API endpoint, without a trailing `/` (5.2)."""
    custom = (workspace_settings or {}).get("custom_endpoint_url")
    base = custom if isinstance(custom, str) and custom.strip() else server_endpoint
    return base.strip().rstrip("/")


def web_compile_wire(part: Mapping) -> dict:
    """templates.compile of a stored web template: channel web renders nothing, so the answer is
    the stored HTML and plain text as they are."""
    out: dict = {"success": True, "html": part.get("html") or ""}
    if part.get("plain_text"):
        out["text"] = part["plain_text"]
    return out


# ---------------------------------------------------------------- template blocks (2.7)

def _block_prefix(verb: str) -> str:
    return f"invalid {verb} template block request: "


def parse_block(body: dict, verb: str = "create") -> dict:
    """templateBlocks.create / .update: {name, block} (and id for update), in the order of 2.7."""
    p = _block_prefix(verb)
    block = body.get("block")
    types = {**BLOCK_TYPES, "id": _STR} if verb == "update" else BLOCK_TYPES
    if not _typed(body, types) or not (block is None or block == "" or isinstance(block, dict)):
        raise TemplateError(INVALID_BODY)
    _workspace(p, body.get("workspace_id"), limited=True)
    out = {}
    if verb == "update":
        out["id"] = _text(p, body.get("id"), "id")
    out["name"] = _text(p, body.get("name"), "name", NAME_MAX)
    if not block:
        raise TemplateError(f"{p}block is required")
    _check_block(p, block)
    out["block"] = tree_wire(block)
    _storable(p, out["block"], "block")
    return out


def _block_ref(p: str, workspace_id, block_id) -> str:
    _workspace(p, workspace_id, limited=True)
    return _text(p, block_id, "id")


def parse_block_get(param: Callable[[str], str | None]) -> str:
    return _block_ref(_block_prefix("get"), param("workspace_id"), param("id"))


def parse_block_delete(body: dict) -> str:
    _check_types(body, REF_TYPES)
    return _block_ref(_block_prefix("delete"), body.get("workspace_id"), body.get("id"))


def parse_block_list(param: Callable[[str], str | None]) -> None:
    _workspace("invalid list template blocks request: ", param("workspace_id"), limited=True)


def block_key(value: str) -> uuid.UUID | None:
    """The stored key of a block id; None for an id no block can have (its answer is a 404)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def block_wire(row: Mapping) -> dict:
    return {"id": str(row["id"]), "name": row["name"], "block": tree_wire(row["block"]),
            "created": row["created"], "updated": row["updated"]}


# ---------------------------------------------------------------- what the render engine decides

def _generate(prefix: str, tree):
    """A visual tree checked by the rules of 3.2 (a missing one included), whose MJML is at most
    SOURCE_MAX_BYTES."""
    if tree is None:  # rule 1 of 3.2 for a tree that is not there (Notifuse drops the connection)
        raise TemplateError(f"{prefix}visual_editor_tree must have type 'mjml'")
    try:
        engine.tree.validate(tree, path="visual_editor_tree")
    except engine.tree.TreeError as exc:
        raise TemplateError(prefix + exc.message) from None
    generated = engine.tree.to_mjml(tree)
    if _bytes_over(generated.text, SOURCE_MAX_BYTES):
        raise TemplateError(f"{prefix}visual_editor_tree produces more than {SOURCE_MAX_BYTES} bytes of MJML")


def _check_block(prefix: str, block) -> None:
    try:
        engine.tree.validate_block(block, path="block")
    except engine.tree.TreeError as exc:
        raise TemplateError(prefix + exc.message) from None


def content(part: Mapping):
    """The render Content of an email part (a base or a resolved variant): the tree in visual
    mode, the source in code mode (the other is stored as given and never rendered)."""
    visual = editor_mode(part) == "visual"
    return engine.Content(tree=part.get("visual_editor_tree") if visual else None,
                             mjml_source=None if visual else part.get("mjml_source"),
                             subject=part.get("subject"), subject_preview=part.get("subject_preview"),
                             text=part.get("text"))


def compiled_preview(part: Mapping) -> str:
    return engine.compiled_preview(content(part))


def compile_job(req: CompileRequest, template: Mapping | None, default_language: str, endpoint: str,
                key_bytes: bytes, now: int) -> tuple:
    """What templates.compile renders, (content, data, options): the request's content, or with
    template_id the stored email template's variant for `language` (test data defaulting to the
    template's). Tracking URLs use the workspace's endpoint and ids, never the request's, and are
    signed as a send's are (`key_bytes`: the installation's); the request's message id names no
    message, so following them records nothing."""
    data = req.test_data
    if template is None:
        piece = engine.Content(tree=req.tree, mjml_source=req.mjml_source, subject=req.subject,
                               subject_preview=req.subject_preview, text=None)
    else:
        piece = content(variant(template, req.language, default_language))
        data = template["test_data"] if data is None else data
    click_url = open_url = None
    if req.tracking:
        tracker = engine.signed_tracking(key_bytes, endpoint, req.message_id, req.workspace_id, now)
        click_url, open_url = tracker.click_url, tracker.open_url
    options = engine.Options(channel=req.channel if template is None else "email", preserve_liquid=req.preserve_liquid,
                             preheader_override=req.preheader_override, tracking=req.tracking, utm=req.utm,
                             endpoint=endpoint, click_url=click_url, open_url=open_url)
    return piece, data or {}, options


def compile_answer(piece, data: dict, options) -> dict:
    """The render of a compile job as templates.compile answers it."""
    return engine.render(piece, data, options).wire()
