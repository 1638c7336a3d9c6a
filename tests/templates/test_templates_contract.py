"""The checks of templates-contract.md section 8, through the API, as the contract words them:
templates 1-15, validation errors 16-30, translations 31-33, compile 34-52 (34-49 are the render
engine's rules; here they are held through templates.compile) and template blocks 53-57.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import fixtures_api
import httpx
import pytest
from helpers import assert_json_error

from contract_example import T, T_MJML
from fixtures_api import create, create_w, get, listed, node, ok, tree

C = "invalid create template request: "
E = C + "invalid email template: "
P = "invalid compile template request: "
WRITE = "Insufficient permissions: write access to templates required"
READ = "Insufficient permissions: read access to templates required"
fx, default_limit_client = fixtures_api.fx, fixtures_api.default_limit_client  # this module's fixtures


async def create_raw(client, fx, body: dict, headers: dict | None = None) -> httpx.Response:
    return await client.post("/api/templates.create", headers=headers or fx.owner, json=body)


async def update(client, fx, body: dict) -> httpx.Response:
    return await client.post("/api/templates.update", headers=fx.owner, json=body)


def with_email(fx, **email) -> dict:
    """Create W with its email part changed (None removes a key)."""
    body = create_w(fx.ws1.id)
    for key, value in email.items():
        if value is None:
            body["email"].pop(key, None)
        else:
            body["email"][key] = value
    return body


def code_w(fx, source: str) -> dict:
    return with_email(fx, editor_mode="code", mjml_source=source, visual_editor_tree=None)


async def compile_c(client, fx, headers: dict | None = None, **fields) -> httpx.Response:
    body = {"workspace_id": fx.ws1.id, "message_id": "preview", "visual_editor_tree": tree(), **fields}
    return await client.post("/api/templates.compile", headers=headers or fx.owner, json=body)


async def compiled(client, fx, **fields) -> dict:
    return await ok(await compile_c(client, fx, **fields))


def with_t1(content: str) -> dict:
    t = tree()
    node(t, "t1")["content"] = content
    return t


# ---------------------------------------------------------------- templates (1-15)

async def test_01_create(client, fx):
    made = await create(client, fx.ws1, create_w(fx.ws1.id))
    assert made["version"] == 1 and made["created_at"] == made["updated_at"]
    assert "deleted_at" not in made and "translations" not in made
    preview = made["email"]["compiled_preview"]
    assert preview.startswith("<mjml>")
    assert "<mj-title>Hi {{ contact.first_name }}</mj-title>" in preview
    assert "<mj-preview>Welcome aboard</mj-preview>" in preview
    assert "Ann" not in preview


async def test_02_get(client, fx):
    made = await create(client, fx.ws1, create_w(fx.ws1.id))
    got = (await ok(await get(client, fx.ws1, "welcome")))["template"]
    assert got == made and got["email"]["visual_editor_tree"] == T


async def test_03_ids(client, fx):
    await create(client, fx.ws1, create_w(fx.ws1.id))
    assert_json_error(await create_raw(client, fx, create_w(fx.ws1.id)), 400, "Template id already exists")
    await create(client, fx.ws2, create_w(fx.ws2.id))


async def test_04_list(client, fx):
    assert (await ok(await client.get("/api/templates.list", headers=fx.owner,
                                      params={"workspace_id": fx.ws2.id}))) == {"templates": []}
    await create(client, fx.ws1, create_w(fx.ws1.id))
    (one,) = await listed(client, fx.ws1)
    assert one["version"] == 1
    assert await listed(client, fx.ws1, category="marketing") == []
    assert await listed(client, fx.ws1, channel="web") == []


async def test_05_update(client, fx):
    first = await create(client, fx.ws1, create_w(fx.ws1.id))
    second = (await ok(await update(client, fx, create_w(fx.ws1.id, name="Welcome 2"))))["template"]
    assert second["version"] == 2 and second["created_at"] == first["created_at"]
    assert second["updated_at"] > first["updated_at"]
    assert (await ok(await get(client, fx.ws1, "welcome", version="1")))["template"]["name"] == "Welcome"
    assert (await ok(await get(client, fx.ws1, "welcome")))["template"]["version"] == 2
    assert [t["version"] for t in await listed(client, fx.ws1)] == [2]


async def test_06_get_errors(client, fx):
    await create(client, fx.ws1, create_w(fx.ws1.id))
    assert_json_error(await get(client, fx.ws1, "welcome", version="9"), 404, "Template not found")
    assert_json_error(await get(client, fx.ws1, "welcome", version="abc"), 400,
                      "invalid get template request: version must be a valid integer")
    assert_json_error(await get(client, fx.ws1, "nope"), 404, "Template not found")
    assert_json_error(await get(client, fx.ws2, "welcome"), 404, "Template not found")


async def test_07_concurrent_updates(client, fx):
    await create(client, fx.ws1, create_w(fx.ws1.id))
    rs = await asyncio.gather(*[update(client, fx, create_w(fx.ws1.id, name=f"W{i}")) for i in range(10)])
    assert [r.status_code for r in rs] == [200] * 10
    assert sorted(r.json()["template"]["version"] for r in rs) == list(range(2, 12))
    assert (await ok(await get(client, fx.ws1, "welcome")))["template"]["version"] == 11


async def test_08_test_data_merge(client, fx):
    await create(client, fx.ws1, create_w(fx.ws1.id))
    body = create_w(fx.ws1.id)
    del body["test_data"]
    kept = (await ok(await update(client, fx, body)))["template"]
    assert kept["test_data"]["contact"]["first_name"] == "Ann"
    cleared = (await ok(await update(client, fx, create_w(fx.ws1.id, test_data=None))))["template"]
    assert "test_data" not in cleared


async def test_09_editor_mode_is_fixed(client, fx):
    await create(client, fx.ws1, create_w(fx.ws1.id))
    r = await update(client, fx, code_w(fx, "<mjml><mj-body></mj-body></mjml>"))
    assert_json_error(r, 400, "cannot change editor mode: template was created in 'visual' mode")


async def test_10_update_unknown(client, fx):
    assert_json_error(await update(client, fx, create_w(fx.ws1.id, id="nope")), 404, "Template not found")


async def test_11_delete(client, fx):
    await create(client, fx.ws1, create_w(fx.ws1.id))
    ref = {"workspace_id": fx.ws1.id, "id": "welcome"}
    assert (await ok(await client.post("/api/templates.delete", headers=fx.owner, json=ref))) == {"success": True}
    assert_json_error(await get(client, fx.ws1, "welcome"), 404, "Template not found")
    assert "deleted_at" in (await ok(await get(client, fx.ws1, "welcome", version="1")))["template"]
    assert await listed(client, fx.ws1) == []
    assert_json_error(await client.post("/api/templates.delete", headers=fx.owner, json=ref), 404, "Template not found")
    assert_json_error(await update(client, fx, create_w(fx.ws1.id)), 404, "Template not found")
    assert_json_error(await create_raw(client, fx, create_w(fx.ws1.id)), 400, "Template id already exists")


async def test_12_long_workspace_id(client, fx):
    r = await client.get("/api/templates.list", headers=fx.owner, params={"workspace_id": fx.ws24.id})
    assert (await ok(r)) == {"templates": []}


async def test_13_to_15_lengths(client, fx):
    await create(client, fx.ws1, create_w(fx.ws1.id, name="n" * 40))
    assert_json_error(await create_raw(client, fx, create_w(fx.ws1.id, id="w2", name="n" * 256)), 400,
                      C + "name length must be between 1 and 255")
    await create(client, fx.ws1, create_w(fx.ws1.id, id="w3", category="newsletter"))
    assert_json_error(await create_raw(client, fx, create_w(fx.ws1.id, id="w4", category="c" * 21)), 400,
                      C + "category length must be between 1 and 20")
    await create(client, fx.ws1, {**with_email(fx, subject="é" * 255), "id": "w5"})
    assert_json_error(await create_raw(client, fx, {**with_email(fx, subject="s" * 256), "id": "w6"}), 400,
                      E + "subject length must be between 1 and 255")


# ---------------------------------------------------------------- validation errors (16-30)

async def refused(client, fx, body, message, status=400):
    r = await create_raw(client, fx, body)
    assert_json_error(r, status, message)


async def test_16_17_ids_and_fields(client, fx):
    w = create_w(fx.ws1.id)
    for change, message in (({"workspace_id": None}, "workspace_id is required"), ({"id": None}, "id is required"),
                            ({"id": "bad id!"}, "id must contain only letters, numbers, underscores, and hyphens"),
                            ({"id": "i" * 33}, "id length must be between 1 and 32"),
                            ({"name": None}, "name is required"), ({"channel": None}, "channel is required"),
                            ({"channel": "sms"}, "channel must be either 'email' or 'web'"),
                            ({"category": None}, "category is required")):
        body = {k: v for k, v in {**w, **change}.items() if v is not None}
        await refused(client, fx, body, C + message)


async def test_18_parts(client, fx):
    body = create_w(fx.ws1.id)
    del body["email"]
    await refused(client, fx, body, C + "email is required for channel 'email'")
    await refused(client, fx, create_w(fx.ws1.id, web={"content": {"type": "doc"}}),
                  C + "web must be nil for channel 'email'")
    web = {**body, "channel": "web", "web": {}}
    await refused(client, fx, web, C + "invalid web template: content is required")


async def test_19_to_21_email_part(client, fx):
    await refused(client, fx, with_email(fx, subject=None), E + "subject is required")
    await refused(client, fx, with_email(fx, editor_mode="wysiwyg"), E + "editor_mode must be 'visual' or 'code'")
    await refused(client, fx, with_email(fx, editor_mode="code"), E + "mjml_source is required for code mode")
    await refused(client, fx, with_email(fx, visual_editor_tree=None), E + "visual_editor_tree must have type 'mjml'")
    await refused(client, fx, with_email(fx, visual_editor_tree={"id": "r", "type": "mjml"}),
                  E + "visual_editor_tree root block must have children")
    await refused(client, fx, with_email(fx, visual_editor_tree={"id": "r", "type": "mj-body", "children": []}),
                  E + "visual_editor_tree must have type 'mjml'")
    await refused(client, fx, with_email(fx, reply_to="nope"), E + "reply_to is not a valid email")
    await refused(client, fx, with_email(fx, subject_preview="p" * 256),
                  E + "subject_preview length must be between 1 and 255")


async def test_22_to_24_tree_paths(client, fx):
    t = tree()
    node(t, "b1")["type"] = "mj-foo"
    await refused(client, fx, with_email(fx, visual_editor_tree=t),
                  E + "visual_editor_tree.children[1].children[0].children[0].children[1]: unknown block type 'mj-foo'")
    t = tree()
    c1, s1 = node(t, "c1"), node(t, "s1")
    s1["children"].append(c1["children"].pop(0))
    await refused(client, fx, with_email(fx, visual_editor_tree=t),
                  E + "visual_editor_tree.children[1].children[0].children[1]: component mj-text cannot be a child of "
                      "mj-section")
    t = tree()
    node(t, "t1")["children"] = [{"id": "x", "type": "mj-text"}]
    await refused(client, fx, with_email(fx, visual_editor_tree=t),
                  E + "visual_editor_tree.children[1].children[0].children[0].children[0]: component mj-text cannot "
                      "have children")
    t = tree()
    node(t, "t1")["attributes"]["padding"] = {"top": 1}
    await refused(client, fx, with_email(fx, visual_editor_tree=t),
                  E + "visual_editor_tree.children[1].children[0].children[0].children[0]: attribute 'padding' must "
                      "be a string, number or boolean")
    t = tree()
    node(t, "c1")["children"] = "x"
    await refused(client, fx, with_email(fx, visual_editor_tree=t),
                  E + "visual_editor_tree.children[1].children[0].children[0]: children must be an array")


def nested_sections(levels: int) -> dict:
    """mjml > mj-body > sections nested `levels - 2` deep."""
    inner: dict = {"id": "s", "type": "mj-section"}
    for i in range(levels - 3):
        inner = {"id": f"s{i}", "type": "mj-section", "children": [inner]}
    return {"id": "r", "type": "mjml", "children": [{"id": "b", "type": "mj-body", "children": [inner]}]}


async def test_25_depth(client, fx):
    await refused(client, fx, with_email(fx, visual_editor_tree=nested_sections(60)),
                  E + "visual_editor_tree exceeds maximum depth of 50")
    # 10,000 levels: written out as bytes (an encoder recurses per level too)
    levels = 10_000 - 2
    deep = b'{"id": "r", "type": "mjml", "children": [{"id": "b", "type": "mj-body", "children": [' + \
        b'{"type": "mj-section", "children": [' * levels + b"]}" * levels + b"]}]}"
    body = json.dumps(with_email(fx, visual_editor_tree="@")).encode().replace(b'"@"', deep)
    started = time.monotonic()
    r = await client.post("/api/templates.create", headers=fx.owner, content=body)
    assert time.monotonic() - started < 2
    assert_json_error(r, 400, "Invalid request body")


async def test_26_source_size(default_limit_client, fx):
    for size in (1_048_577, 5_000_000):
        r = await default_limit_client.post("/api/templates.create", headers=fx.owner, json=code_w(fx, "x" * size))
        assert_json_error(r, 400, E + "mjml_source exceeds 1048576 bytes")


async def test_27_28_liquid_at_save(client, fx):
    r = await create_raw(client, fx, with_email(fx, subject="Hi {{ contact.first_name "))
    assert r.status_code == 400
    assert r.json()["error"].startswith(E + "subject: liquid syntax error at line 1, column ")
    assert_json_error(await get(client, fx.ws1, "welcome"), 404, "Template not found")
    r = await create_raw(client, fx, code_w(fx, "<mjml><mj-body><mj-raw>{% include 'x' %}</mj-raw></mj-body></mjml>"))
    message = r.json()["error"]
    assert r.status_code == 400 and "mjml_source: liquid syntax error at line 1, column " in message
    assert "tag 'include' is not allowed" in message
    r = await create_raw(client, fx, code_w(fx, "<mjml><mj-body><mj-raw>{{ x | nofilter }}</mj-raw></mj-body></mjml>"))
    assert r.status_code == 400 and "unknown filter 'nofilter'" in r.json()["error"]


async def test_liquid_at_save_names_the_block_of_a_tree(client, fx):
    r = await create_raw(client, fx, with_email(fx, visual_editor_tree=with_t1("<p>{{ oops </p>")))
    assert r.status_code == 400
    assert r.json()["error"].startswith(
        E + "visual_editor_tree.children[1].children[0].children[0].children[0]: liquid syntax error at line 8, column ")
    for field in ("subject_preview", "text"):
        r = await create_raw(client, fx, with_email(fx, **{field: "{% if %}"}))
        assert r.status_code == 400 and r.json()["error"].startswith(E + f"{field}: liquid syntax error"), r.text


async def test_29_edge(client, fx):
    r = await client.post("/api/templates.create", headers=fx.owner, content=b"not json")
    assert_json_error(r, 400, "Invalid request body")
    assert_json_error(await client.get("/api/templates.create", headers=fx.owner), 405, "Method not allowed")
    r = await client.post("/api/templates.create", json=create_w(fx.ws1.id))
    assert_json_error(r, 401, "Authorization header is required")


async def test_30_permissions(client, fx):
    assert_json_error(await create_raw(client, fx, create_w(fx.ws1.id), fx.reader), 403, WRITE)
    r = await client.get("/api/templates.list", headers=fx.none, params={"workspace_id": fx.ws1.id})
    assert_json_error(r, 403, READ)
    await create(client, fx.ws1, create_w(fx.ws1.id))
    for r in (await client.get("/api/templates.get", headers=fx.reader, params={"workspace_id": fx.ws1.id,
                                                                               "id": "welcome"}),
              await client.get("/api/templates.list", headers=fx.reader, params={"workspace_id": fx.ws1.id}),
              await compile_c(client, fx, fx.reader)):
        assert r.status_code == 200, r.text


# ---------------------------------------------------------------- translations (31-33)

FR = {"fr": {"email": {"subject": "Salut {{ contact.first_name }}", "visual_editor_tree": T}}}


async def test_31_translation(client, fx):
    await create(client, fx.ws1, create_w(fx.ws1.id, translations=FR))
    got = (await ok(await get(client, fx.ws1, "welcome")))["template"]
    fr = got["translations"]["fr"]["email"]
    assert fr["subject"] == "Salut {{ contact.first_name }}"
    assert "<mj-title>Salut" in fr["compiled_preview"]


async def test_32_translation_errors(client, fx):
    fr = FR["fr"]
    for translations, message in (
            ({"xx": fr}, "invalid translation language code: xx"),
            ({"it": fr}, "translation language 'it' is not in workspace's configured languages"),
            ({"fr": {}}, "translation 'fr': must have either email or web content"),
            ({"fr": {"web": {"content": {"type": "doc"}}}}, "translation 'fr': web content not allowed for email channel"),
            ({"fr": {"email": {"visual_editor_tree": T}}}, "translation 'fr': invalid email template: subject is required"),
            ({"zz": fr, "aa": fr}, "invalid translation language code: aa")):
        await refused(client, fx, create_w(fx.ws1.id, translations=translations), C + message)


@pytest.mark.parametrize("language, subject", [("fr", "Salut Ann"), ("fr-CA", "Salut Ann"), ("FR", "Salut Ann"),
                                               ("fr_CA", "Salut Ann"), ("de", "Hi Ann"), ("en", "Hi Ann"),
                                               ("", "Hi Ann")])
async def test_33_variant_of_a_compile(client, fx, language, subject):
    await create(client, fx.ws1, create_w(fx.ws1.id, translations=FR))
    r = await client.post("/api/templates.compile", headers=fx.owner, json={
        "workspace_id": fx.ws1.id, "message_id": "p", "template_id": "welcome", "language": language})
    assert (await ok(r))["subject"] == subject


# ---------------------------------------------------------------- compile (34-52)

async def test_34_mj_attributes_apply(client, fx):
    t = tree()
    node(t, "head")["children"].append({"id": "a", "type": "mj-attributes", "children": [
        {"id": "at", "type": "mj-text", "attributes": {"fontFamily": "Georgia"}}]})
    out = await compiled(client, fx, visual_editor_tree=t)
    assert out["success"] is True
    hello = out["html"][:out["html"].index("Hello")]
    assert "font-family:Georgia" in hello[hello.rindex("<div"):]


async def test_35_preserve_liquid(client, fx):
    first = await compile_c(client, fx, preserve_liquid=True)
    assert (await ok(first))["mjml"] == T_MJML
    assert (await compile_c(client, fx, preserve_liquid=True)).content == first.content


async def test_36_rendered(client, fx):
    out = await compiled(client, fx, test_data={"contact": {"first_name": "Ann"}}, subject="Hi {{ contact.first_name }}",
                         subject_preview="For {{ contact.first_name }}")
    assert out["success"] is True and "error" not in out
    assert (out["subject"], out["subject_preview"]) == ("Hi Ann", "For Ann")
    assert "Hello Ann" in out["html"] and "<title>Hi Ann</title>" in out["html"] and "For Ann" in out["html"]
    assert "old preview" not in out["html"]
    assert "Hello Ann" in out["text"] and "<" not in out["text"]
    assert list(out) == ["success", "mjml", "html", "subject", "subject_preview", "text"]


async def test_37_38_data(client, fx):
    out = await compiled(client, fx)
    assert "Hello there" in out["html"] and "{{" not in out["html"]
    out = await compiled(client, fx, test_data={"contact": {"first_name": "<b>Ann</b>"}})
    assert "Hello &lt;b&gt;Ann&lt;/b&gt;" in out["html"] and "<b>Ann" not in out["html"]


async def test_39_40_content(client, fx):
    t = with_t1("<p>{{ note }}</p>")
    assert "<i>x</i>" in (await compiled(client, fx, visual_editor_tree=t, test_data={"note": "<i>x</i>"}))["html"]
    out = await compiled(client, fx, visual_editor_tree=t, test_data={"note": "{{ 1 | plus: 1 }}"})
    assert "{{ 1 | plus: 1 }}" in out["html"]
    out = await compiled(client, fx, visual_editor_tree=t, test_data={"note": "5 < 6"})
    assert out["success"] is True and "5 &lt; 6" in out["html"]
    out = await compiled(client, fx, visual_editor_tree=with_t1("<p>a<br>b&nbsp;c</p>"))
    assert out["success"] is True and "a<br />b" in out["html"]


async def test_41_to_43_failures(client, fx):
    out = await compiled(client, fx, subject="{{ x ")
    assert out["success"] is False and "html" not in out
    assert out["error"]["message"].startswith("subject: liquid syntax error at line 1, column ")
    assert out["error"]["details"][0]["line"] == 1
    out = await compiled(client, fx, visual_editor_tree=with_t1("{{ 1 | divided_by: 0 }}"))
    assert out["success"] is False
    assert out["error"]["message"].startswith("visual_editor_tree: liquid error at line 8, column ")
    detail = out["error"]["details"][0]
    assert (detail["tagName"], detail["block_id"]) == ("mj-text", "t1")
    assert "divided_by" in out["mjml"]
    src = "<mjml><mj-body><mj-section><mj-column><mj-text>x</mj-column></mj-section></mj-body></mjml>"
    out = await compiled(client, fx, mjml_source=src)
    assert out["success"] is False and out["error"]["message"].startswith("mjml: ")
    assert out["error"]["details"][0]["tagName"] == "mjml" and "mjml" in out


async def test_44_to_46_limits(client, fx):
    loops = "{% for i in (1..999999) %}{% endfor %}" * 100
    started = time.monotonic()
    out = await compiled(client, fx, mjml_source=f"<mjml><mj-body><mj-raw>{loops}</mj-raw></mj-body></mjml>")
    assert time.monotonic() - started < 7
    assert out["success"] is False and "liquid rendering timeout after 5s" in out["error"]["message"]
    nested = "{% for i in (1..2000) %}{% for j in (1..2000) %}{% endfor %}{% endfor %}"
    out = await compiled(client, fx, mjml_source=f"<mjml><mj-body><mj-raw>{nested}</mj-raw></mj-body></mjml>")
    assert out["success"] is False and "liquid loop iteration limit exceeded" in out["error"]["message"]
    out = await compiled(client, fx, mjml_source='<mjml><mj-body><mj-include path="/etc/passwd" /></mj-body></mjml>')
    assert out["success"] is False and out["error"]["message"].startswith("mjml: ") and "html" not in out


def button_href(html: str) -> str:
    """The href of the mj-button's link (the one that goes to the shop, tracked or not)."""
    for match in re.finditer(r'<a [^>]*href="([^"]*)"[^>]*>', html):
        if "Shop" in html[match.end():match.end() + 200] or "shop.test" in match.group(1):
            return match.group(1)
    raise AssertionError("no button link")


async def test_47_tracking_uses_the_workspace_endpoint(client, fx):
    links = ('<p><a href="mailto:h@acme.test">m</a> <a href="https://links.acme.test/notification-center?x=1">p</a> '
             '<a href="/path">r</a></p>')
    out = await compiled(client, fx, visual_editor_tree=with_t1(links),
                         tracking_settings={"enable_tracking": True, "endpoint": "https://evil.test", "utm_source": "news"})
    html = out["html"]
    assert button_href(html).startswith("https://links.acme.test/r/")
    for href in ("mailto:h@acme.test", "https://links.acme.test/notification-center?x=1", "/path"):
        assert f'href="{href}"' in html
    assert html.count('<img src="https://links.acme.test/t/') == 1
    assert html.index('<img src="https://links.acme.test/t/') < html.rindex("</body>")
    assert "evil.test" not in html


async def test_48_49_utm(client, fx):
    out = await compiled(client, fx, visual_editor_tree=with_t1('<p><a href="https://a.test/?utm_source=x">a</a></p>'),
                         tracking_settings={"enable_tracking": False, "utm_source": "news", "utm_campaign": "spring"})
    assert 'href="https://shop.test/offer?x=1&amp;utm_source=news&amp;utm_campaign=spring"' in out["html"]
    assert 'href="https://a.test/?utm_source=x"' in out["html"]
    out = await compiled(client, fx, tracking_settings={"enable_tracking": False})
    assert 'href="https://shop.test/offer?x=1"' in out["html"]


async def test_50_compile_checks(client, fx):
    r = await client.post("/api/templates.compile", headers=fx.owner,
                          json={"workspace_id": fx.ws1.id, "visual_editor_tree": T})
    assert_json_error(r, 400, P + "message_id is required")
    t = tree()
    t["type"] = "mj-body"
    assert_json_error(await compile_c(client, fx, visual_editor_tree=t), 400, P + "visual_editor_tree must have type 'mjml'")
    r = await client.post("/api/templates.compile", headers=fx.owner, json={
        "workspace_id": fx.ws1.id, "message_id": "p", "mjml_source": "<mjml><mj-body></mj-body></mjml>"})
    assert r.status_code == 200, r.text


async def test_51_web_channel(client, fx):
    out = await compiled(client, fx, channel="web", test_data={"contact": {"first_name": "Ann"}},
                         tracking_settings={"enable_tracking": True})
    assert out["success"] is True and "{{ contact.first_name" in out["html"] and "/r/" not in out["html"]


async def test_52_compiled_preview_is_the_preserved_mjml(client, fx):
    made = await create(client, fx.ws1, create_w(fx.ws1.id))
    r = await client.post("/api/templates.compile", headers=fx.owner, json={
        "workspace_id": fx.ws1.id, "message_id": "p", "template_id": "welcome", "preserve_liquid": True})
    assert (await ok(r))["mjml"] == made["email"]["compiled_preview"]


async def test_compile_of_a_stored_code_template_and_its_test_data(client, fx):
    src = "<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ contact.first_name }}</mj-text></mj-column>" \
          "</mj-section></mj-body></mjml>"
    await create(client, fx.ws1, code_w(fx, src))
    body = {"workspace_id": fx.ws1.id, "message_id": "p", "template_id": "welcome", "mjml_source": "<mjml/>"}
    out = await ok(await client.post("/api/templates.compile", headers=fx.owner, json=body))
    assert out["success"] is True and "Hi Ann" in out["html"]  # the template's test data, its source
    out = await ok(await client.post("/api/templates.compile", headers=fx.owner,
                                     json={**body, "test_data": {"contact": {"first_name": "Bo"}}}))
    assert "Hi Bo" in out["html"]


# ---------------------------------------------------------------- template blocks (53-57)

def s1() -> dict:
    return node(tree(), "s1")


async def create_block(client, ws, block=None, name="Footer", headers=None) -> httpx.Response:
    return await client.post("/api/templateBlocks.create", headers=headers or ws.headers,
                             json={"workspace_id": ws.id, "name": name, "block": block or s1()})


async def test_53_blocks(client, fx):
    ws = fx.ws24
    made = (await ok(await create_block(client, ws), 201))["block"]
    assert list(made) == ["id", "name", "block", "created", "updated"]
    assert uuid.UUID(made["id"]).version == 4 and made["name"] == "Footer" and made["block"] == s1()
    r = await client.get("/api/templateBlocks.list", headers=ws.headers, params={"workspace_id": ws.id})
    assert (await ok(r))["blocks"] == [made]
    r = await client.get("/api/templateBlocks.get", headers=ws.headers, params={"workspace_id": ws.id, "id": made["id"]})
    assert (await ok(r))["block"] == made


async def test_54_block_checks(client, fx):
    b = "invalid create template block request: "
    ws = fx.ws1
    for body, message in (({"block": s1()}, b + "name is required"), ({"name": "F"}, b + "block is required"),
                          ({"name": "F", "block": {"id": "x", "type": ""}}, b + "block kind is required"),
                          ({"name": "F", "block": {"id": "x", "type": "mj-section", "children": [
                              {"id": "y", "type": "mj-foo"}]}}, b + "block.children[0]: unknown block type 'mj-foo'")):
        r = await client.post("/api/templateBlocks.create", headers=ws.headers, json={"workspace_id": ws.id, **body})
        assert_json_error(r, 400, message)


async def test_55_block_lookups(client, fx):
    ws = fx.ws1
    r = await client.get("/api/templateBlocks.get", headers=ws.headers, params={"workspace_id": ws.id, "id": "nope"})
    assert_json_error(r, 404, "Template block not found")
    r = await client.post("/api/templateBlocks.update", headers=ws.headers,
                          json={"workspace_id": ws.id, "id": "nope", "name": "F", "block": s1()})
    assert_json_error(r, 404, "Template block not found")
    made = (await ok(await create_block(client, ws), 201))["block"]
    updated = (await ok(await client.post("/api/templateBlocks.update", headers=ws.headers, json={
        "workspace_id": ws.id, "id": made["id"], "name": "Footer 2", "block": {"id": "z", "type": "mj-section"}})))
    updated = updated["block"]
    assert (updated["name"], updated["block"], updated["created"]) == ("Footer 2", {"id": "z", "type": "mj-section"},
                                                                       made["created"])
    assert updated["updated"] > made["updated"]
    r = await client.post("/api/templateBlocks.delete", headers=ws.headers, json={"workspace_id": ws.id, "id": made["id"]})
    assert (await ok(r)) == {"success": True}
    r = await client.get("/api/templateBlocks.get", headers=ws.headers, params={"workspace_id": ws.id, "id": made["id"]})
    assert_json_error(r, 404, "Template block not found")


async def test_56_concurrent_block_creates(client, fx):
    ws = fx.ws1
    first = (await ok(await create_block(client, ws, name="first"), 201))["block"]
    rs = await asyncio.gather(*[create_block(client, ws, name=f"b{i}") for i in range(20)])
    assert [r.status_code for r in rs] == [201] * 20
    blocks = (await ok(await client.get("/api/templateBlocks.list", headers=ws.headers,
                                        params={"workspace_id": ws.id})))["blocks"]
    assert len(blocks) == 21 and blocks[0] == first
    assert {b["id"] for b in blocks[1:]} == {r.json()["block"]["id"] for r in rs}
    last = (await ok(await create_block(client, ws, name="last"), 201))["block"]
    blocks = (await ok(await client.get("/api/templateBlocks.list", headers=ws.headers,
                                        params={"workspace_id": ws.id})))["blocks"]
    assert blocks[-1] == last


async def test_57_block_permissions(client, fx):
    r = await create_block(client, fx.ws1, headers=fx.reader)
    assert_json_error(r, 403, WRITE)
    r = await client.get("/api/templateBlocks.list", headers=fx.owner)
    assert_json_error(r, 400, "invalid list template blocks request: workspace_id is required")


async def test_code_template_whose_mjml_does_not_parse_is_saved_as_a_draft_and_compile_names_the_line(client, fx):
    # MJML is not checked at save (a draft may be incomplete); templates.compile reports it (2.3)
    src = "<mjml>\n<mj-head>\n<mj-body><mj-section></mj-section></mj-body></mj-head>\n</mjml>"
    made = await create(client, fx.ws1, code_w(fx, src))
    assert made["email"]["mjml_source"] == src
    out = await compiled(client, fx, template_id="welcome", visual_editor_tree=None)
    assert out["success"] is False and "html" not in out
    # the line counts in the MJML the engine saw (returned as `mjml`): the subject's title and the
    # preheader were inserted into the head before it
    assert out["error"]["message"] == "mjml: unexpected element at line 5, column 2"
    assert out["error"]["details"] == [{"line": 5, "column": 2, "message": "unexpected element", "tagName": "mjml"}]
    assert out["mjml"].split("\n")[4].startswith("<mj-body>")
