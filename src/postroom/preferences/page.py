"""The notification-center page as HTML: Jinja2 templates in preferences/templates, autoescaped,
no JavaScript. Every button is a form that POSTs to /preferences/form; the answer is a 303 back
to the page with a notice (post/redirect/get), so reloading never repeats an action.

The page's URL carries the email_hmac: the answer tells browsers not to send it on as a
Referer, not to cache the page and not to frame it."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from postroom.contacts import model as contacts_model
from postroom.preferences import model, texts
from postroom.templates import model as templates_model

ENV = Environment(loader=PackageLoader("postroom.preferences", "templates"),
                  autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
                                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
}

STATUS_WORDS = {None: "status_none", "active": "status_active", "pending": "status_pending",
                "unsubscribed": "status_unsubscribed", "bounced": "status_bounced", "complained": "status_complained"}


def base_path(request) -> str:
    """Where the app is mounted (a proxy's prefix), for the page's own links and forms."""
    return request.scope.get("root_path", "").rstrip("/")


def _render(template: str, status: int, headers: dict | None = None, **context) -> HTMLResponse:
    html = ENV.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})


def _language(request, contact_language: str | None, accept: str | None, ws_settings: dict | None) -> str:
    default = templates_model.workspace_languages(ws_settings)[1]
    return model.ui_language(list(texts.UI_LANGUAGES), request.query_params.get("lang"), contact_language,
                             accept, default)


def screen(request, kind: str, status: int, accept: str | None, ws_settings: dict | None = None,
           headers: dict | None = None) -> HTMLResponse:
    """A page without lists: missing parameters, invalid link, not found, too many requests, preview."""
    lang = _language(request, None, accept, ws_settings)
    return _render("screen.html", status, headers, lang=lang, rtl=lang in texts.RTL, t=texts.words(lang),
                   kind=kind, website=(ws_settings or {}).get("website_url") or "")


def center(request, who: model.Identity, ws_settings: dict, contact: dict, rows: list[model.Row],
           accept: str | None) -> HTMLResponse:
    params = request.query_params
    lang = _language(request, contact.get("language"), accept, ws_settings)
    t = texts.words(lang)
    languages, default = templates_model.workspace_languages(ws_settings)
    choices = list(dict.fromkeys(languages or texts.UI_LANGUAGES))
    current = contact.get("language")
    if current and current not in choices:
        choices.append(current)
    by_id = {row.list_id: row for row in rows}
    action, list_id = params.get("action"), params.get("lid")
    ask = None
    if action in model.ACTIONS and list_id in by_id:
        row = by_id[list_id]
        # The email's link asks; the button does it: a link checker's GET changes nothing.
        if (action == "unsubscribe" and row.status in ("active", "pending")) or \
                (action == "confirm" and row.status in (None, "pending", "unsubscribed")):
            ask = {"action": action, "row": row}
    notice = params.get("notice")
    return _render(
        "center.html", 200, lang=lang, rtl=lang in texts.RTL, t=t, base=base_path(request),
        who=who, name=contact.get("first_name") or contact.get("email"), rows=rows, ask=ask,
        mid=model.message_id(params.get("mid")) or "",
        notice=notice if notice in model.NOTICES else None, status_words=STATUS_WORDS,
        languages=[(code, texts.LANGUAGE_NAMES.get(code, code)) for code in choices],
        contact_language=current or "", contact_timezone=contact.get("timezone") or "",
        timezones=contacts_model.ZONE_NAMES, logo=ws_settings.get("logo_url") or "",
        website=ws_settings.get("website_url") or "")
