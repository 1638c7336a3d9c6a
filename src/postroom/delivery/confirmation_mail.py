"""The built-in double opt-in confirmation email, sent when a double opt-in list names no
`double_optin_template` of its own, and the rules a confirmation message follows. Pure: no I/O.

The default is MJML with Liquid, rendered through the one render path like any template, with
the template data every list mail gets (`list`, `contact`, `confirm_subscription_url`...). The
list's name is escaped in the HTML body (the render path escapes contact values only). It is
written in English, French, German and Spanish; the language is the contact's when the workspace
works in it (its `languages` or `default_language`), else the workspace's default language, else
English.
"""

from __future__ import annotations

import uuid
from typing import Mapping

from postroom.templates import render as engine

# The message history's template_id of a mail rendered from the built-in default: a template id
# is letters, digits, `_` and `-`, so no workspace template can have this one.
DEFAULT_TEMPLATE_ID = "builtin:double_optin"
DEFAULT_TEMPLATE_VERSION = 0

# The setting without which no confirmation can be sent (delivery-contract 1.4).
PROVIDER_SETTING = "marketing_email_provider_id"
NO_PROVIDER = f"no marketing email provider configured ({PROVIDER_SETTING} is empty): confirmation email not sent"


# Links need an absolute base: the workspace's custom_endpoint_url, POSTROOM_API_ENDPOINT, or the URL
# the subscription came in by (carried by the list.pending event).
NO_ENDPOINT = ("no public URL for the confirmation link (set POSTROOM_API_ENDPOINT or the workspace's "
               "custom_endpoint_url): confirmation email not sent")


def provider_missing(provider_id: str) -> str:
    return f"marketing email provider not found: {provider_id} ({PROVIDER_SETTING}): confirmation email not sent"


# One namespace for the ids of confirmation messages: uuid5(namespace, "<workspace>/<event id>").
_MESSAGE_IDS = uuid.UUID("6f1d2a4e-8c3b-5e7f-9a10-2b3c4d5e6f70")


def message_id(workspace_id: str, event_id: int) -> str:
    """The id of the confirmation message of one list.pending event: the same however often the
    event is handed out, so that a second hand-out finds its message and sends nothing."""
    return str(uuid.uuid5(_MESSAGE_IDS, f"{workspace_id}/{event_id}"))


def endpoint_of_link(confirm_url: str | None) -> str:
    """The server URL a list.pending event's signed link was built on (lists.api: the API endpoint,
    or the URL the subscriber's request came in by): `<base>/confirm?...` -> `<base>`."""
    if not confirm_url or "/confirm?" not in confirm_url:
        return ""
    return confirm_url.rsplit("/confirm?", 1)[0]


# ---------------------------------------------------------------- the default, per language

_TEXTS = {
    "en": {
        "subject": "Please confirm your subscription to {{ list.name }}",
        "preview": "One click to confirm, and you are on the list.",
        "title": "Confirm your subscription",
        "body": "You asked to receive <strong>{{ list.name | escape }}</strong> at {{ contact.email }}. Please confirm "
                "that this address is yours by clicking the button below.",
        "body_text": "You asked to receive {{ list.name }} at {{ contact.email }}. Please confirm that this "
                     "address is yours by opening the link below.",
        "button": "Confirm my subscription",
        "fallback": "If the button does not work, copy this link into your browser:",
        "ignore": "If you did not ask for this, ignore this email: you will not be subscribed.",
    },
    "fr": {
        "subject": "Merci de confirmer votre inscription à {{ list.name }}",
        "preview": "Un clic pour confirmer votre inscription.",
        "title": "Confirmez votre inscription",
        "body": "Vous avez demandé à recevoir <strong>{{ list.name | escape }}</strong> à l'adresse {{ contact.email }}. "
                "Merci de confirmer que cette adresse est bien la vôtre en cliquant sur le bouton ci-dessous.",
        "body_text": "Vous avez demandé à recevoir {{ list.name }} à l'adresse {{ contact.email }}. Merci de "
                     "confirmer que cette adresse est bien la vôtre en ouvrant le lien ci-dessous.",
        "button": "Confirmer mon inscription",
        "fallback": "Si le bouton ne fonctionne pas, copiez ce lien dans votre navigateur :",
        "ignore": "Si vous n'êtes pas à l'origine de cette demande, ignorez cet e-mail : aucune inscription "
                  "ne sera enregistrée.",
    },
    "de": {
        "subject": "Bitte bestätigen Sie Ihre Anmeldung für {{ list.name }}",
        "preview": "Ein Klick, und Ihre Anmeldung ist bestätigt.",
        "title": "Anmeldung bestätigen",
        "body": "Sie haben sich mit der Adresse {{ contact.email }} für <strong>{{ list.name | escape }}</strong> "
                "angemeldet. Bitte bestätigen Sie, dass diese Adresse Ihnen gehört, indem Sie auf die "
                "Schaltfläche unten klicken.",
        "body_text": "Sie haben sich mit der Adresse {{ contact.email }} für {{ list.name }} angemeldet. Bitte "
                     "bestätigen Sie, dass diese Adresse Ihnen gehört, indem Sie den folgenden Link öffnen.",
        "button": "Anmeldung bestätigen",
        "fallback": "Falls die Schaltfläche nicht funktioniert, kopieren Sie diesen Link in Ihren Browser:",
        "ignore": "Falls Sie sich nicht angemeldet haben, ignorieren Sie diese E-Mail einfach: Sie werden nicht "
                  "in die Liste aufgenommen.",
    },
    "es": {
        "subject": "Confirma tu suscripción a {{ list.name }}",
        "preview": "Un clic para confirmar tu suscripción.",
        "title": "Confirma tu suscripción",
        "body": "Has solicitado recibir <strong>{{ list.name | escape }}</strong> en {{ contact.email }}. Confirma que "
                "esta dirección es tuya haciendo clic en el botón de abajo.",
        "body_text": "Has solicitado recibir {{ list.name }} en {{ contact.email }}. Confirma que esta dirección "
                     "es tuya abriendo el siguiente enlace.",
        "button": "Confirmar mi suscripción",
        "fallback": "Si el botón no funciona, copia este enlace en tu navegador:",
        "ignore": "Si no lo has solicitado, ignora este correo: no se realizará ninguna suscripción.",
    },
}
LANGUAGES = tuple(_TEXTS)

# No Liquid tags in the MJML (only `{{ }}` outputs): the render path then renders it with mrml once
# and puts each recipient's values in (templates.render.once), 1.4 ms a mail instead of 5.6 here.
# That is why there is no "Hello {{ contact.first_name }}" line, which needs an `if` for contacts
# without a name (most of a public form's).

_MJML = """<mjml>
  <mj-head>
    <mj-attributes>
      <mj-all font-family="Helvetica, Arial, sans-serif" />
      <mj-text font-size="16px" line-height="24px" color="#1f2933" />
    </mj-attributes>
  </mj-head>
  <mj-body background-color="#f4f5f7">
    <mj-section background-color="#ffffff" padding="32px 24px">
      <mj-column>
        <mj-text font-size="22px" line-height="30px" font-weight="bold">{title}</mj-text>
        <mj-text>{body}</mj-text>
        <mj-button href="{{{{ confirm_subscription_url }}}}" background-color="#2563eb" color="#ffffff"
                   font-size="16px" font-weight="bold" border-radius="6px" inner-padding="14px 28px">{button}</mj-button>
        <mj-text font-size="14px" line-height="20px" color="#52606d">{fallback}<br />
          <a href="{{{{ confirm_subscription_url }}}}" style="color:#2563eb;word-break:break-all">{{{{ confirm_subscription_url }}}}</a></mj-text>
        <mj-text font-size="14px" line-height="20px" color="#52606d">{ignore}</mj-text>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""

_TEXT = """{title}

{body_text}

{{{{ confirm_subscription_url }}}}

{ignore}
"""


def language_for(contact_language: str | None, workspace_languages: list[str], default_language: str) -> str:
    """The contact's language (its primary subtag) when the workspace works in it and the default
    is written in it; else the workspace's default language when the default is written in it;
    else English."""
    wanted = (contact_language or "").strip().replace("_", "-").lower().partition("-")[0]
    default = (default_language or "").strip().lower().partition("-")[0]
    allowed = {x.strip().lower().partition("-")[0] for x in workspace_languages} | {default}
    if wanted in _TEXTS and wanted in allowed:
        return wanted
    return default if default in _TEXTS else "en"


def default_content(language: str) -> engine.Content:
    """The built-in confirmation email in `language` (one of LANGUAGES; English otherwise)."""
    t = _TEXTS.get(language, _TEXTS["en"])
    return engine.Content(mjml_source=_MJML.format(**t), subject=t["subject"], subject_preview=t["preview"],
                          text=_TEXT.format(**t))


def list_context(data: Mapping) -> dict:
    """The `list` of a list.pending event's data ({"id", "name"})."""
    membership = data.get("contact_list") or {}
    return {"id": membership.get("list_id") or "", "name": membership.get("list_name") or ""}
