"""templates.model without a database: the type rule, the order and text of every check that runs
before the render engine is asked, translations, the update merge rule, variant resolution and the
wire shapes (templates-contract.md sections 1, 2 and 2.7). Checks that need the engine (trees,
Liquid, compiled_preview) are in test_templates_contract.py."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from postroom.platform.jsonenc import nesting_exceeds
from postroom.templates import model
from postroom.templates.render import RenderError, Result
from postroom.templates.model import TemplateError

from contract_example import T

C = "invalid create template request: "
E = C + "invalid email template: "
CODE = {"editor_mode": "code", "subject": "Hi", "mjml_source": "<mjml><mj-body></mj-body></mjml>"}


def web_body(**changes) -> dict:
    return {"workspace_id": "ws1", "id": "post", "name": "Post", "channel": "web", "category": "blog",
            "web": {"content": {"type": "doc"}}, **changes}


def code_body(**email) -> dict:
    """An email template in code mode, which these tests stop before its Liquid check."""
    return {"workspace_id": "ws1", "id": "welcome", "name": "Welcome", "channel": "email",
            "category": "transactional", "email": {**CODE, **email}}


def refused(body: dict, verb: str = "create") -> str:
    with pytest.raises(TemplateError) as caught:
        model.parse_template(body, verb)
    assert caught.value.status == 400
    return caught.value.message


# ---------------------------------------------------------------- the JSON type rule

TYPE_MISMATCHES = [
    {"workspace_id": 5}, {"id": ["welcome"]}, {"name": 5}, {"channel": True}, {"category": {}},
    {"template_macro_id": 1}, {"test_data": "x"}, {"settings": []}, {"web": "x"}, {"email": {"subject": 1}},
    {"translations": []}, {"translations": {"fr": "x"}}, {"translations": {"fr": {"web": {"content": "doc"}}}},
    {"web": {"content": {"type": "doc"}, "html": 1}}, {"web": {"content": {"type": "doc"}, "plain_text": False}},
]


@pytest.mark.parametrize("change", TYPE_MISMATCHES, ids=[str(c) for c in TYPE_MISMATCHES])
def test_a_type_mismatch_outside_trees_is_invalid_request_body(change):
    assert refused({**web_body(), **change}) == "Invalid request body"


@pytest.mark.parametrize("email", [{"subject": 1}, {"mjml_source": 1}, {"visual_editor_tree": "x"},
                                   {"visual_editor_tree": []}, {"text": {}}, {"reply_to": 5},
                                   {"editor_mode": None, "sender_id": 3}, {"subject_preview": []}])
def test_type_mismatch_in_the_email_part_comes_before_every_other_check(email):
    body = code_body(**email)
    body["workspace_id"] = ""  # a later check that would fail too
    assert refused(body) == "Invalid request body"


def test_the_type_rule_comes_first_and_ignores_what_the_server_ignores():
    assert refused({"name": 5}) == "Invalid request body"  # before workspace_id is required
    body = web_body(version="x", integration_id=7, created_at=1, email=None)
    body["web"]["compiled_preview"] = 3  # not a field of the web part
    assert model.parse_template(body).fields["name"] == "Post"


def test_null_is_absent():
    assert refused(web_body(name=None)) == C + "name is required"
    draft = model.parse_template(web_body(test_data=None, settings=None, translations=None, template_macro_id=None))
    assert draft.fields["test_data"] is None and draft.fields["translations"] == {}
    assert draft.given == {"test_data", "settings", "translations", "template_macro_id"}


# ---------------------------------------------------------------- the checks of 2.3, in order

ORDER = [
    ({"workspace_id": ""}, "workspace_id is required"),
    ({"id": None}, "id is required"),
    ({"id": "x" * 33}, "id length must be between 1 and 32"),
    ({"id": "bad id!"}, "id must contain only letters, numbers, underscores, and hyphens"),
    ({"id": "é"}, "id must contain only letters, numbers, underscores, and hyphens"),
    ({"name": ""}, "name is required"),
    ({"name": "n" * 256}, "name length must be between 1 and 255"),
    ({"channel": ""}, "channel is required"),
    ({"channel": "c" * 21}, "channel length must be between 1 and 20"),
    ({"channel": "sms"}, "channel must be either 'email' or 'web'"),
    ({"category": None}, "category is required"),
    ({"category": "c" * 21}, "category length must be between 1 and 20"),
    ({"template_macro_id": "m" * 33}, "template_macro_id must not exceed 32 characters"),
    ({"web": None}, "web is required for channel 'web'"),
    ({"email": {}}, "email must be nil for channel 'web'"),
    ({"web": {}}, "invalid web template: content is required"),
    ({"web": {"content": {}}}, "invalid web template: content is required"),
]


@pytest.mark.parametrize("change, message", ORDER, ids=[m for _, m in ORDER])
def test_create_checks(change, message):
    assert refused(web_body(**change)) == C + message


def test_each_check_wins_over_the_later_ones():
    """Break every field at once, then repair them one by one: the messages come in the order of 2.3."""
    body = {"workspace_id": "", "id": "bad id!", "name": "", "channel": "sms", "category": "",
            "template_macro_id": "m" * 33, "email": {}}
    repairs = [("workspace_id", "ws1"), ("id", "post"), ("name", "Post"), ("channel", "web"), ("category", "blog"),
               ("template_macro_id", None), ("web", {"content": {"type": "doc"}}), ("email", None)]
    seen = []
    for key, value in repairs:
        seen.append(refused(body).removeprefix(C))
        body[key] = value
    assert seen == ["workspace_id is required", "id must contain only letters, numbers, underscores, and hyphens",
                    "name is required", "channel must be either 'email' or 'web'", "category is required",
                    "template_macro_id must not exceed 32 characters", "web is required for channel 'web'",
                    "email must be nil for channel 'web'"]
    assert model.parse_template(body).fields["id"] == "post"


def test_lengths_count_characters():
    draft = model.parse_template(web_body(name="é" * 255, category="é" * 20, id="i" * 32, template_macro_id="m" * 32))
    assert draft.fields["name"] == "é" * 255
    assert refused(code_body(subject="é" * 255, mjml_source=None)) == E + "mjml_source is required for code mode"
    assert refused(code_body(subject="é" * 256)) == E + "subject length must be between 1 and 255"


def test_email_channel_needs_email_and_no_web():
    body = code_body()
    assert refused({**body, "email": None}) == C + "email is required for channel 'email'"
    assert refused({**body, "web": {"content": {"type": "doc"}}}) == C + "web must be nil for channel 'email'"


EMAIL_ORDER = [
    ({"editor_mode": "wysiwyg"}, "editor_mode must be 'visual' or 'code'"),
    ({"subject": None}, "subject is required"),
    ({"subject": "s" * 256}, "subject length must be between 1 and 255"),
    ({"mjml_source": ""}, "mjml_source is required for code mode"),
    ({"mjml_source": "x" * 1_048_577}, "mjml_source exceeds 1048576 bytes"),
    ({"mjml_source": "é" * 524_289}, "mjml_source exceeds 1048576 bytes"),  # fewer characters, more bytes
    ({"sender_id": "s\x00"}, "sender_id contains a NUL character"),
    ({"reply_to": "nope"}, "reply_to is not a valid email"),
    ({"reply_to": "a@b"}, "reply_to is not a valid email"),
    ({"subject_preview": "p" * 256}, "subject_preview length must be between 1 and 255"),
    ({"text": "t" * 1_048_577}, "text exceeds 1048576 bytes"),
    ({"subject": "Hi\x00"}, "subject contains a NUL character"),
]


@pytest.mark.parametrize("change, message", EMAIL_ORDER, ids=[m for _, m in EMAIL_ORDER])
def test_email_part_checks(change, message):
    assert refused(code_body(**change)) == E + message


def test_a_visual_template_without_a_tree_is_an_answer():
    for email in ({"subject": "Hi"}, {"subject": "Hi", "editor_mode": "visual", "visual_editor_tree": None},
                  {"subject": "Hi", "editor_mode": ""}):
        body = {**code_body(), "email": email}
        assert refused(body) == E + "visual_editor_tree must have type 'mjml'"


def test_mjml_source_of_exactly_the_limit_passes_the_size_check():
    with pytest.raises(TemplateError) as caught:
        model.parse_template(code_body(mjml_source="x" * 1_048_576, reply_to="nope"))
    assert caught.value.message == E + "reply_to is not a valid email"


def test_update_uses_its_own_prefix():
    assert refused(web_body(name=""), "update") == "invalid update template request: name is required"
    assert refused(code_body(subject=""), "update") == \
        "invalid update template request: invalid email template: subject is required"


def test_nul_in_stored_json_is_refused_naming_the_field():
    assert refused(web_body(test_data={"a": ["\x00"]})) == C + "test_data contains a NUL character"
    assert refused(web_body(settings={"k\x00": 1})) == C + "settings contains a NUL character"
    assert refused(web_body(web={"content": {"t": "\x00"}})) == C + "invalid web template: content contains a NUL character"
    assert refused(web_body(name="a\x00b")) == C + "name contains a NUL character"


# ---------------------------------------------------------------- translations (1.4)

def test_translation_checks_in_ascending_code_order():
    fr = {"web": {"content": {"type": "doc"}}}
    assert refused(web_body(translations={"zz": fr, "aa": fr})) == C + "invalid translation language code: aa"
    assert refused(web_body(translations={"xx": fr})) == C + "invalid translation language code: xx"
    assert refused(web_body(translations={"FR": fr})) == C + "invalid translation language code: FR"
    assert refused(web_body(translations={"fr": {}})) == C + "translation 'fr': must have either email or web content"
    assert refused(web_body(translations={"fr": None})) == C + "translation 'fr': must have either email or web content"
    assert refused(web_body(translations={"fr": {"email": {}}})) == \
        C + "translation 'fr': email content not allowed for web channel"
    assert refused(web_body(translations={"fr": {"web": {}}})) == \
        C + "translation 'fr': invalid web template: content is required"
    assert refused(web_body(translations={"de": fr, "fr": {"web": {}}})) == \
        C + "translation 'fr': invalid web template: content is required"
    draft = model.parse_template(web_body(translations={"pt-BR": fr, "zh-TW": fr}))
    assert set(draft.fields["translations"]) == {"pt-BR", "zh-TW"}
    assert draft.fields["translations"]["pt-BR"] == {"web": {"content": {"type": "doc"}, "html": "", "plain_text": ""}}


def test_translations_of_an_email_template():
    assert refused(code_body() | {"translations": {"fr": {"web": {"content": {"type": "doc"}}}}}) == \
        C + "translation 'fr': web content not allowed for email channel"
    assert refused(code_body() | {"translations": {"fr": {"email": {"editor_mode": "code"}}}}) == \
        C + "translation 'fr': invalid email template: subject is required"
    assert refused(code_body() | {"translations": {"fr": {"email": {**CODE, "reply_to": "x"}}}}) == \
        C + "translation 'fr': invalid email template: reply_to is not a valid email"


def test_supported_codes_are_notifuses():
    assert len(model.LANGUAGES) == 31 and "pt-BR" in model.LANGUAGES and "nb" in model.LANGUAGES


def test_languages_of_the_workspace():
    assert model.workspace_languages(None) == ([], "en")
    assert model.workspace_languages({"languages": ["fr", 3], "default_language": "fr"}) == (["fr"], "fr")
    assert model.workspace_languages({"languages": "fr", "default_language": ""}) == ([], "en")
    settings = {"languages": ["en", "fr", "de"], "default_language": "en"}
    model.check_languages("create", {"fr": {}, "de": {}}, settings)
    with pytest.raises(TemplateError) as caught:
        model.check_languages("create", {"it": {}, "ar": {}}, settings)
    assert caught.value.message == C + "translation language 'ar' is not in workspace's configured languages"
    model.check_languages("update", {"en": {}}, {})  # no languages: the default language alone
    with pytest.raises(TemplateError) as caught:
        model.check_languages("update", {"fr": {}}, {"default_language": "de"})
    assert caught.value.message == \
        "invalid update template request: translation language 'fr' is not in workspace's configured languages"


# ---------------------------------------------------------------- the update merge rule (2.4)

NOW = dt.datetime(2025, 2, 1, 10, 0, tzinfo=dt.timezone.utc)


def latest(**changes) -> dict:
    row = {"id": "post", "version": 3, "name": "Post", "channel": "web", "category": "blog", "email": None,
           "web": {"content": {"type": "doc"}, "html": "", "plain_text": ""}, "template_macro_id": "m1",
           "integration_id": "supabase", "test_data": {"a": 1}, "settings": {"s": 1},
           "translations": {"fr": {"web": {"content": {"type": "doc"}}}}, "created_at": NOW, "updated_at": NOW,
           "deleted_at": None}
    return {**row, **changes}


def test_absent_optional_fields_are_copied():
    new = model.revise(model.parse_template(web_body(), "update"), latest())
    assert (new["template_macro_id"], new["test_data"], new["settings"]) == ("m1", {"a": 1}, {"s": 1})
    assert new["translations"] == latest()["translations"]
    assert new["integration_id"] == "supabase" and new["created_at"] == NOW


def test_null_clears_and_a_value_replaces():
    body = web_body(template_macro_id=None, test_data=None, settings=None, translations=None)
    new = model.revise(model.parse_template(body, "update"), latest())
    assert (new["template_macro_id"], new["test_data"], new["settings"], new["translations"]) == (None, None, None, {})
    body = web_body(template_macro_id="m2", test_data={"b": 2}, settings={}, translations={})
    new = model.revise(model.parse_template(body, "update"), latest())
    assert (new["template_macro_id"], new["test_data"], new["settings"], new["translations"]) == ("m2", {"b": 2}, {}, {})


def test_requests_cannot_set_integration_id_or_created_at():
    body = web_body(integration_id="mine", created_at="2020-01-01T00:00:00Z", version=99)
    new = model.revise(model.parse_template(body, "update"), latest())
    assert new["integration_id"] == "supabase" and new["created_at"] == NOW
    assert "integration_id" not in model.parse_template(body).fields


def email_draft(mode: str) -> model.Draft:
    """An update request of an email template as parse_template makes it (built here: parsing a
    valid email part asks the render engine)."""
    email = {"editor_mode": mode, "mjml_source": CODE["mjml_source"], "sender_id": "", "reply_to": "",
             "subject": "Hi", "subject_preview": None, "visual_editor_tree": None, "text": None}
    fields = {"id": "post", "name": "Post", "channel": "email", "category": "blog", "email": email, "web": None,
              "template_macro_id": None, "test_data": None, "settings": None, "translations": {}}
    return model.Draft("ws1", fields, frozenset())


def test_the_editor_mode_is_fixed_at_creation():
    email = {"editor_mode": "", "subject": "Hi", "visual_editor_tree": copy.deepcopy(T)}
    draft = email_draft("code")
    with pytest.raises(TemplateError) as caught:
        model.revise(draft, latest(channel="email", web=None, email=email))
    assert caught.value.message == "cannot change editor mode: template was created in 'visual' mode"
    fake = model.Draft("ws1", {**draft.fields, "email": {**draft.fields["email"], "editor_mode": "visual"}}, draft.given)
    with pytest.raises(TemplateError) as caught:
        model.revise(fake, latest(channel="email", web=None, email={**email, "editor_mode": "code"}))
    assert caught.value.message == "cannot change editor mode: template was created in 'code' mode"
    same = model.Draft("ws1", {**draft.fields, "email": {**draft.fields["email"], "editor_mode": ""}}, draft.given)
    assert model.revise(same, latest(channel="email", web=None, email={**email, "editor_mode": "visual"}))


def test_changing_the_channel_is_allowed_and_drops_the_other_channels_translations():
    new = model.revise(email_draft("code"), latest())  # web -> email
    assert new["channel"] == "email" and new["web"] is None and new["translations"] == {}


# ---------------------------------------------------------------- variant resolution (1.4)

BASE = {"subject": "Hi", "sender_id": "s1", "reply_to": "help@acme.test"}
FR = {"subject": "Salut", "sender_id": "", "reply_to": ""}
PT = {"subject": "Olá", "sender_id": "s9", "reply_to": "pt@acme.test"}
STORED = {"channel": "email", "email": BASE, "web": None,
          "translations": {"fr": {"email": FR}, "pt-BR": {"email": PT}, "de": {"web": {"content": {}}}}}


@pytest.mark.parametrize("language, subject", [
    ("fr", "Salut"), ("fr-CA", "Salut"), ("FR", "Salut"), ("fr_CA", "Salut"), (" fr ", "Salut"),
    ("de", "Hi"), ("en", "Hi"), ("", "Hi"), (None, "Hi"), ("en-GB", "Hi"), ("pt-br", "Olá"), ("pt_BR", "Olá"),
    ("pt", "Hi"), ("it", "Hi"), ("zz-fr", "Hi")])
def test_variant_resolution(language, subject):
    assert model.variant(STORED, language, "en")["subject"] == subject


def test_the_default_language_and_its_regions_get_the_base():
    assert model.variant(STORED, "fr", "fr") is BASE
    assert model.variant(STORED, "fr-BE", "FR") is BASE


def test_a_variant_inherits_the_bases_sender_and_reply_to_where_its_own_are_empty():
    fr = model.variant(STORED, "fr", "en")
    assert (fr["subject"], fr["sender_id"], fr["reply_to"]) == ("Salut", "s1", "help@acme.test")
    assert FR["sender_id"] == ""  # the stored variant is not changed
    pt = model.variant(STORED, "pt-BR", "en")
    assert (pt["sender_id"], pt["reply_to"]) == ("s9", "pt@acme.test")


def test_web_variants():
    stored = {"channel": "web", "web": {"content": {"a": 1}}, "email": None,
              "translations": {"fr": {"web": {"content": {"b": 2}}}}}
    assert model.variant(stored, "fr-FR", "en") == {"content": {"b": 2}}
    assert model.variant(stored, "de", "en") == {"content": {"a": 1}}


# ---------------------------------------------------------------- wire shapes

def test_template_wire_order_and_omissions():
    row = latest(template_macro_id=None, integration_id=None, test_data={}, settings=None, translations={})
    out = model.template_wire(row)
    assert list(out) == ["id", "name", "version", "channel", "web", "category", "created_at", "updated_at"]
    assert out["web"] == {"content": {"type": "doc"}}
    out = model.template_wire(latest(deleted_at=NOW))
    assert list(out) == ["id", "name", "version", "channel", "web", "category", "template_macro_id",
                         "integration_id", "test_data", "settings", "translations", "created_at", "updated_at",
                         "deleted_at"]


def test_email_wire_order_and_omissions():
    part = {"text": None, "visual_editor_tree": copy.deepcopy(T), "compiled_preview": "<mjml />", "subject": "Hi",
            "subject_preview": None, "reply_to": "", "sender_id": "", "mjml_source": None, "editor_mode": ""}
    out = model.email_wire(part)
    assert list(out) == ["subject", "compiled_preview", "visual_editor_tree"]
    assert out["visual_editor_tree"] == T
    part.update(text="t", subject_preview="", reply_to="r@acme.test", sender_id="s", mjml_source="<mjml/>",
                editor_mode="visual")
    assert list(model.email_wire(part)) == ["editor_mode", "mjml_source", "sender_id", "reply_to", "subject",
                                            "subject_preview", "compiled_preview", "visual_editor_tree", "text"]


def test_a_code_mode_tree_is_returned_as_stored():
    odd = {"whatever": [1, {"children": "x"}]}
    out = model.email_wire({"editor_mode": "code", "mjml_source": "<mjml/>", "subject": "s", "visual_editor_tree": odd})
    assert out["visual_editor_tree"] == odd


def test_tree_wire():
    block = {"content": None, "attributes": {}, "children": [], "type": "mj-section", "extra": 1, "id": "s"}
    assert list(model.tree_wire(block)) == ["id", "type"]
    block = {"attributes": {"a": 1}, "children": [{"type": "mj-column", "content": ""}], "type": "mj-section"}
    assert model.tree_wire(block) == {"type": "mj-section", "children": [{"type": "mj-column", "content": ""}],
                                      "attributes": {"a": 1}}
    assert list(model.tree_wire(block)) == ["type", "children", "attributes"]


def test_integration_managed_templates_are_not_deletable():
    model.check_deletable(latest(integration_id=None))
    with pytest.raises(TemplateError) as caught:
        model.check_deletable(latest(integration_id="supabase_1"))
    assert caught.value.message == \
        "cannot delete integration-managed template: template is managed by integration supabase_1"


# ---------------------------------------------------------------- reads

def params(**values):
    return lambda name: values.get(name)


def test_parse_get():
    g = "invalid get template request: "
    assert model.parse_get(params(workspace_id="w", id="a")) == ("a", None)
    for raw, version in (("3", 3), ("+2", 2), ("0", None), ("-4", None), ("007", 7)):
        assert model.parse_get(params(workspace_id="w", id="a", version=raw)) == ("a", version)
    for raw in ("abc", "1.5", "1e2", " 1", "9" * 19, "0x1", "١"):
        with pytest.raises(TemplateError) as caught:
            model.parse_get(params(workspace_id="w", id="a", version=raw))
        assert caught.value.message == g + "version must be a valid integer"
    for values, message in (({"id": "a"}, "workspace_id is required"), ({"workspace_id": "w"}, "id is required"),
                            ({"workspace_id": "w", "id": "a" * 33}, "id length must be between 1 and 32"),
                            ({"workspace_id": "w", "id": "a.b"},
                             "id must contain only letters, numbers, underscores, and hyphens")):
        with pytest.raises(TemplateError) as caught:
            model.parse_get(params(**values))
        assert caught.value.message == g + message


def test_parse_list():
    g = "invalid get templates request: "
    assert model.parse_list(params(workspace_id="w")) == {"category": None, "channel": None}
    assert model.parse_list(params(workspace_id="w", category="marketing", channel="web")) == \
        {"category": "marketing", "channel": "web"}
    for values, message in (({}, "workspace_id is required"),
                            ({"workspace_id": "w" * 33}, "workspace_id length must be between 1 and 32"),
                            ({"workspace_id": "w", "category": "c" * 21}, "category length must be between 1 and 20"),
                            ({"workspace_id": "w", "channel": "c" * 21}, "channel length must be between 1 and 20")):
        with pytest.raises(TemplateError) as caught:
            model.parse_list(params(**values))
        assert caught.value.message == g + message


def test_parse_delete():
    d = "invalid delete template request: "
    assert model.parse_delete({"workspace_id": "w", "id": "a"}) == "a"
    for body, message in (({"workspace_id": 1}, "Invalid request body"), ({"id": "a"}, d + "workspace_id is required"),
                          ({"workspace_id": "w"}, d + "id is required"),
                          ({"workspace_id": "w", "id": "a b"},
                           d + "id must contain only letters, numbers, underscores, and hyphens")):
        with pytest.raises(TemplateError) as caught:
            model.parse_delete(body)
        assert caught.value.message == message


# ---------------------------------------------------------------- compile (2.6)

P = "invalid compile template request: "


def compile_refused(body: dict) -> str:
    with pytest.raises(TemplateError) as caught:
        model.parse_compile(body)
    return caught.value.message


def test_compile_checks_in_order():
    src = {"mjml_source": "<mjml/>"}
    assert compile_refused({"workspace_id": "w", "message_id": "p", "version": "1"}) == "Invalid request body"
    assert compile_refused({"workspace_id": "w", "message_id": "p", "version": 1.5}) == "Invalid request body"
    assert compile_refused({"workspace_id": "w", "message_id": "p", "version": 2 ** 63}) == "Invalid request body"
    assert compile_refused({"workspace_id": "w", "preserve_liquid": "yes"}) == "Invalid request body"
    assert compile_refused({"tracking_settings": {"enable_tracking": 1}}) == "Invalid request body"
    assert compile_refused({"tracking_settings": {"utm_source": 1}}) == "Invalid request body"
    assert compile_refused({"message_id": "p", **src}) == P + "workspace_id is required"
    assert compile_refused({"workspace_id": "w", **src}) == P + "message_id is required"
    assert compile_refused({"workspace_id": "w", "message_id": "p", "template_id": "a b", **src}) == \
        P + "id must contain only letters, numbers, underscores, and hyphens"
    assert compile_refused({"workspace_id": "w", "message_id": "p", "template_id": "a" * 33}) == \
        P + "id length must be between 1 and 32"
    assert compile_refused({"workspace_id": "w", "message_id": "p"}) == P + "visual_editor_tree must have type 'mjml'"
    assert compile_refused({"workspace_id": "w", "message_id": "p", "mjml_source": "x" * 1_048_577}) == \
        P + "mjml_source exceeds 1048576 bytes"
    assert compile_refused({"workspace_id": "w", "message_id": "p", "subject": "a\x00", **src}) == \
        P + "subject contains a NUL character"
    assert compile_refused({"workspace_id": "w", "message_id": "p", "tracking_settings": {"utm_term": "\x00"},
                            **src}) == P + "tracking_settings.utm_term contains a NUL character"


def test_compile_request_values():
    req = model.parse_compile({"workspace_id": "w", "message_id": "p", "mjml_source": "<mjml/>", "subject": "",
                               "subject_preview_override": "over", "channel": "web", "version": 0,
                               "tracking_settings": {"enable_tracking": True, "utm_source": "news", "utm_medium": "",
                                                     "endpoint": "https://evil.test", "message_id": "x"}})
    assert (req.template_id, req.version, req.subject, req.preheader_override, req.channel) == \
        (None, None, None, "over", "web")
    assert req.tracking is True and req.utm == {"utm_source": "news"}
    req = model.parse_compile({"workspace_id": "w", "message_id": "p", "template_id": "welcome", "version": 3,
                               "language": "fr", "channel": "sms", "test_data": None})
    assert (req.template_id, req.version, req.language, req.channel, req.test_data, req.tracking) == \
        ("welcome", 3, "fr", "email", None, False)


def test_public_endpoint():
    assert model.public_endpoint({"custom_endpoint_url": "https://links.acme.test/"}, "https://api.test") == \
        "https://links.acme.test"
    assert model.public_endpoint({"custom_endpoint_url": " "}, "https://api.test/") == "https://api.test"
    assert model.public_endpoint(None, "http://postroom.test/") == "http://postroom.test"


def test_compile_answer_keys_follow_the_contract_order():
    detail = {"line": 8, "column": 51, "message": "divided_by: can't divide by 0", "tagName": "mj-text",
              "block_id": "t1"}
    result = Result(success=False, subject="Hi", mjml="<mjml/>",
                    error=RenderError("visual_editor_tree: liquid error", [detail]))
    out = result.wire()
    assert list(out) == ["success", "mjml", "subject", "error"]
    assert out["error"] == {"message": "visual_editor_tree: liquid error", "details": [detail]}
    result = Result(success=True, subject_preview="p", mjml="m", html="h", text="t")
    assert list(result.wire()) == ["success", "mjml", "html", "subject_preview", "text"]


def test_web_compile_wire():
    assert model.web_compile_wire({"content": {}, "html": "<p>x</p>", "plain_text": ""}) == \
        {"success": True, "html": "<p>x</p>"}


# ---------------------------------------------------------------- template blocks (2.7)

def test_block_checks_before_the_tree():
    b = "invalid create template block request: "
    for body, message in (({"workspace_id": "w", "name": 1}, "Invalid request body"),
                          ({"workspace_id": "w", "name": "n", "block": "x"}, "Invalid request body"),
                          ({"workspace_id": "w", "name": "n", "block": []}, "Invalid request body"),
                          ({"name": "n"}, b + "workspace_id is required"),
                          ({"workspace_id": "w" * 33}, b + "workspace_id length must be between 1 and 32"),
                          ({"workspace_id": "w"}, b + "name is required"),
                          ({"workspace_id": "w", "name": "n" * 256}, b + "name length must be between 1 and 255"),
                          ({"workspace_id": "w", "name": "n"}, b + "block is required"),
                          ({"workspace_id": "w", "name": "n", "block": None}, b + "block is required"),
                          ({"workspace_id": "w", "name": "n", "block": ""}, b + "block is required"),
                          ({"workspace_id": "w", "name": "n", "block": {}}, b + "block is required")):
        with pytest.raises(TemplateError) as caught:
            model.parse_block(body)
        assert caught.value.message == message, body
    with pytest.raises(TemplateError) as caught:
        model.parse_block({"workspace_id": "w", "name": "n"}, "update")
    assert caught.value.message == "invalid update template block request: id is required"
    with pytest.raises(TemplateError) as caught:
        model.parse_block({"workspace_id": "w", "id": 5}, "update")
    assert caught.value.message == "Invalid request body"
    assert model.parse_block_get(params(workspace_id="w", id="x")) == "x"
    with pytest.raises(TemplateError) as caught:
        model.parse_block_get(params(workspace_id="w"))
    assert caught.value.message == "invalid get template block request: id is required"
    with pytest.raises(TemplateError) as caught:
        model.parse_block_delete({"workspace_id": "w" * 40, "id": "x"})
    assert caught.value.message == "invalid delete template block request: workspace_id length must be between 1 and 32"
    with pytest.raises(TemplateError) as caught:
        model.parse_block_list(params())
    assert caught.value.message == "invalid list template blocks request: workspace_id is required"


def test_block_key():
    assert str(model.block_key("3F0C6F5E-9A43-4E0B-A0DE-0B3CBBD8E0A1")) == "3f0c6f5e-9a43-4e0b-a0de-0b3cbbd8e0a1"
    assert model.block_key("nope") is None


# ---------------------------------------------------------------- the raw nesting limit (1.8)

def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def test_nesting_is_measured_on_the_raw_bytes():
    assert not nesting_exceeds(deep(128), 128) and nesting_exceeds(deep(129), 128)
    assert not nesting_exceeds(b'{"a": "' + b"[" * 500 + b'", "b": "\\"{{{{"}', 1)
    assert nesting_exceeds(b'{"a": {"b": [{}]}}', 3) and not nesting_exceeds(b'{"a": {"b": [{}]}}', 4)
    assert not nesting_exceeds(b'["[", "]", "\\\\", [[]]]', 3)
    # a wide body of many shallow values is not deep
    assert not nesting_exceeds(b"[" + b",".join([deep(100)] * 1000) + b"]", 128)
    assert nesting_exceeds(b"[" + b",".join([deep(100)] * 1000 + [deep(128)]) + b"]", 128)
