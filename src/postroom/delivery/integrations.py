"""Workspace email integrations (delivery-contract 1): the request's outer checks in the
contract's order, the merge rule of updates, secrets sealed at rest and masked on the way out.
Pure but for the import of a kind's provider module: the settings object of each kind is checked
by that module's `Settings.parse` (one rule in one place).

Stored form: `settings` holds the kind's plain fields as its Settings normalised them; the secret
fields (the module's SECRETS) are one JSON object sealed with AES-GCM in `secrets`, bound to the
integration's (workspace, id), so a sealed value copied into another row does not open.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from postroom.delivery import providers
from postroom.delivery.model import DeliveryError
from postroom.delivery.providers.base import ProviderConfigError
from postroom.platform import fields, secrets as sealing

MASK = "********"
PREFIX = "invalid provider configuration: "
NAME_MAX = 255
FAKE = "fake"          # the in-memory provider: accepted only where the process's settings allow it
HTTP_CONCURRENCY, SMTP_CONCURRENCY = 8, 2
NOT_FOUND = "integration not found"
# The settings object's name in the "settings required" messages (Notifuse's spellings).
_SETTINGS_NAME = {"smtp": "SMTP", "ses": "SES", "sparkpost": "SparkPost"}
# Postroom-only fields: an update without them keeps the stored value, so a client that does not
# know them (the Notifuse console) cannot reset them.
POSTROOM_ONLY = {"smtp": ("tls_mode",)}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def config_error(message: str) -> DeliveryError:
    return DeliveryError(PREFIX + message)


def kind_module(kind: str, allow_fake: bool = False):
    """The provider module of `kind` (its Settings, SECRETS and Provider)."""
    if kind == FAKE and allow_fake:
        from postroom.delivery.providers import fake
        return fake
    return providers.load(kind)


def known_kind(kind, allow_fake: bool) -> bool:
    return isinstance(kind, str) and (kind in providers.KINDS or (allow_fake and kind == FAKE))


def default_concurrency(kind: str) -> int:
    return SMTP_CONCURRENCY if kind == "smtp" else HTTP_CONCURRENCY


# ---------------------------------------------------------------- the provider object of a write

@dataclass
class ProviderSpec:
    """A provider object of a write, checked. `secrets` holds what the request sets (a value) or
    clears (None); `keep` the secret fields the request leaves as stored."""
    kind: str
    plain: dict
    secrets: dict[str, str | None]
    keep: set[str]
    senders: list[dict]
    rate_limit_per_minute: int
    max_concurrency: int | None
    given: set[str] = field(default_factory=set)   # plain keys present in the request
    masked: set[str] = field(default_factory=set)  # secrets sent as "********" (email.testProvider fills them)


def _senders(raw) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise config_error("at least one sender is required")
    out = []
    for i, s in enumerate(raw):
        s = s if isinstance(s, dict) else {}
        email, name = s.get("email"), s.get("name")
        if not isinstance(email, str) or not email.strip():
            raise config_error(f"sender email is required for sender at index {i}")
        if "\x00" in email or not _EMAIL.match(email.strip()) or len(email) > 255:
            raise config_error(f"invalid sender email: {email} at index {i}")
        if not isinstance(name, str) or not name.strip():
            raise config_error(f"sender name is required for sender at index {i}")
        fields.at_most(fields.without_nul(name, "sender name", config_error), "sender name", NAME_MAX, config_error)
        sender_id = s.get("id")
        try:
            sender_id = str(uuid.UUID(sender_id)) if isinstance(sender_id, str) and sender_id else None
        except ValueError:
            sender_id = None   # not a UUID: replaced (Notifuse); empty: replaced too (Postroom)
        is_default = s.get("is_default", False)
        if not isinstance(is_default, bool):
            raise config_error(f"is_default must be a boolean for sender at index {i}")
        out.append({"id": sender_id or str(uuid.uuid4()), "email": email.strip(), "name": name,
                    "is_default": is_default})
    return out


def parse_provider(raw, allow_fake: bool = False, placeholder_kept: bool = False) -> ProviderSpec:
    """The provider object of createIntegration / updateIntegration / email.testProvider, checked
    in 1.2's order: kind present, rate limit, senders, each sender, kind known, its settings object,
    then the kind's own fields (its Settings.parse). Secrets left as stored are checked as set when
    `placeholder_kept` (an update: the stored value is only read once the caller is authorised)."""
    if not isinstance(raw, dict):
        raise config_error("provider must be an object")
    kind = raw.get("kind")
    if kind is None or kind == "":
        raise config_error("email provider kind is required")
    rate = raw.get("rate_limit_per_minute")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate != int(rate) or rate <= 0 \
            or rate > 10**9:
        raise config_error("rate limit per minute is required and must be greater than 0")
    senders = _senders(raw.get("senders"))
    concurrency = raw.get("max_concurrency")
    if concurrency is not None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 64:
            raise config_error("max concurrency must be between 1 and 64")
    if not known_kind(kind, allow_fake):
        raise config_error(f"invalid email provider kind: {kind}")
    settings = raw.get(kind)
    if not isinstance(settings, dict):
        raise config_error(f"{_SETTINGS_NAME.get(kind, kind)} settings required when email provider kind is {kind}")
    module = kind_module(kind, allow_fake)
    plain, sets, keep, masked = {}, {}, set(), set()
    for key, value in settings.items():
        if key.startswith("encrypted_"):
            continue                    # never taken from a request (1.3)
        if isinstance(value, str) and "\x00" in value or "\x00" in key:
            # no setting of any kind can hold one, and PostgreSQL text cannot store it
            raise config_error(f"{key} contains a NUL character")
        if key in module.SECRETS:
            if value is None:
                sets[key] = None
            elif value == "" or value == MASK:
                keep.add(key)
                if value == MASK:
                    masked.add(key)
            else:
                sets[key] = value
        else:
            plain[key] = value
    keep.update(k for k in module.SECRETS if k not in settings)
    check = {**plain, **{k: v for k, v in sets.items() if v is not None}}
    if placeholder_kept:
        check.update({k: MASK for k in keep})
    normalized = validate_settings(module, check)
    return ProviderSpec(kind, {k: v for k, v in normalized.items() if k not in module.SECRETS}, sets, keep,
                        senders, int(rate), concurrency, set(plain), masked)


def validate_settings(module, raw: dict) -> dict:
    """The kind's Settings.parse of `raw`, as a dict of the normalised fields (None dropped)."""
    try:
        parsed = module.Settings.parse(raw)
    except ProviderConfigError as exc:
        raise config_error(exc.message) from None
    if dataclasses.is_dataclass(parsed):
        return {k: v for k, v in dataclasses.asdict(parsed).items() if v is not None}
    return dict(raw)


def merged(spec: ProviderSpec, stored: Mapping | None, stored_secrets: dict, allow_fake: bool = False
           ) -> tuple[dict, dict, int | None]:
    """(plain settings, secrets, max_concurrency) to store for `spec` over the stored integration
    (None on create): secrets per 1.3 (kept ones come from the stored row when the kind is the
    same), Postroom-only fields kept when absent; the result is checked again by the kind."""
    same_kind = stored is not None and stored["kind"] == spec.kind
    secrets_out = {}
    module = kind_module(spec.kind, allow_fake)
    for key in module.SECRETS:
        if key in spec.secrets:
            if spec.secrets[key] is not None:
                secrets_out[key] = spec.secrets[key]
        elif same_kind and key in stored_secrets:
            secrets_out[key] = stored_secrets[key]
    plain = dict(spec.plain)
    if same_kind:
        for key in POSTROOM_ONLY.get(spec.kind, ()):
            if key not in spec.given and key in stored["settings"]:
                plain[key] = stored["settings"][key]
    concurrency = spec.max_concurrency
    if concurrency is None and stored is not None:
        concurrency = stored["max_concurrency"]
    normalized = validate_settings(module, {**plain, **secrets_out})
    return {k: v for k, v in normalized.items() if k not in module.SECRETS}, secrets_out, concurrency


# ---------------------------------------------------------------- the outer request (1.5)

def parse_create(body: dict, allow_fake: bool = False) -> tuple[str, ProviderSpec]:
    """(name, provider) of workspaces.createIntegration, in 1.5's order."""
    _workspace(body)
    name = _name(body.get("name"))
    kind = body.get("type")
    if kind is None or kind == "":
        raise DeliveryError("integration type is required")
    if kind != "email":
        raise DeliveryError(f"unsupported integration type: {kind}")
    return name, parse_provider(body.get("provider"), allow_fake)


def parse_update(body: dict, allow_fake: bool = False) -> tuple[str, str, ProviderSpec | None]:
    """(integration id, name, provider or None) of workspaces.updateIntegration."""
    _workspace(body)
    integration_id = integration_id_of(body)
    name = _name(body.get("name"))
    raw = body.get("provider")
    return integration_id, name, None if raw is None else parse_provider(raw, allow_fake, placeholder_kept=True)


TEST_SUBJECT = "Postroom: Test Email Provider"
TEST_HTML = "<p>This test email from Postroom shows that your email provider settings work.</p>"
MASKED_SECRET = "provider secret is masked: pass integration_id"


def parse_test(body: dict, allow_fake: bool = False) -> tuple[str, ProviderSpec, str | None]:
    """(to, provider, integration_id) of email.testProvider, in 1.5's order; masked secrets pass
    here and are filled from a stored integration once the caller is authorised."""
    to = body.get("to")
    if to is None or to == "":
        raise DeliveryError("Missing recipient email (to)")
    fields.required_string(body.get("workspace_id"), "workspace_id", DeliveryError, "Missing workspace ID")
    if not isinstance(to, str) or "\x00" in to or len(to) > 255 or not _EMAIL.match(to.strip()):
        raise DeliveryError("Invalid recipient email (to)")
    spec = parse_provider(body.get("provider"), allow_fake, placeholder_kept=True)
    integration_id = body.get("integration_id")
    if integration_id is not None and integration_id != "":
        integration_id = integration_id_of(body)
    return to.strip(), spec, integration_id or None


def same_settings(spec: ProviderSpec, row: Mapping) -> bool:
    """A stored integration a masked test request stands for: same kind, same plain settings."""
    return row["kind"] == spec.kind and dict(row["settings"]) == spec.plain


def parse_delete(body: dict) -> str:
    _workspace(body)
    return integration_id_of(body)


def _workspace(body: dict) -> None:
    fields.required_string(body.get("workspace_id"), "workspace_id", DeliveryError, "workspace ID is required")


def integration_id_of(body: dict) -> str:
    value = fields.required_string(body.get("integration_id"), "integration_id", DeliveryError,
                                   "integration ID is required")
    return fields.without_nul(value, "integration_id", DeliveryError, fields.NUL_IN_PARAM)


def _name(value) -> str:
    name = fields.required_string(value, "integration name", DeliveryError, "integration name is required")
    if not name.strip():
        raise DeliveryError("integration name is required")
    fields.without_nul(name, "integration name", DeliveryError)
    return fields.at_most(name, "integration name", NAME_MAX, DeliveryError)


def as_uuid(value: str) -> str | None:
    """Integration ids are UUIDs; anything else names nothing."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


# ---------------------------------------------------------------- at rest and on the wire

def secrets_context(workspace_id: str, integration_id: str) -> bytes:
    return f"email_integration:{workspace_id}:{integration_id}".encode()


def seal(key_bytes: bytes, workspace_id: str, integration_id: str, values: dict) -> bytes:
    return sealing.encrypt(key_bytes, json.dumps(values).encode(), secrets_context(workspace_id, integration_id))


def unseal(key_bytes: bytes, workspace_id: str, integration_id: str, blob: bytes | None) -> dict:
    if not blob:
        return {}
    return json.loads(sealing.decrypt(key_bytes, blob, secrets_context(workspace_id, integration_id)))


def wire(row: Mapping, allow_fake: bool = True) -> dict:
    """The integration object (1.1): secrets that are set as `********`, unset ones omitted,
    nothing sealed ever included. Which secrets are set is stored in clear (`secret_fields`), so
    reading a workspace needs no decryption."""
    settings = dict(row["settings"])
    for key in row["secret_fields"]:
        settings[key] = MASK
    provider: dict[str, Any] = {"kind": row["kind"], row["kind"]: settings, "senders": row["senders"],
                                "rate_limit_per_minute": row["rate_limit_per_minute"]}
    if row["max_concurrency"] is not None:
        provider["max_concurrency"] = row["max_concurrency"]
    return {"id": row["id"], "name": row["name"], "type": "email", "email_provider": provider,
            "created_at": row["created_at"], "updated_at": row["updated_at"]}
