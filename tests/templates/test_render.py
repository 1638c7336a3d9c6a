"""The one render path (4.2-4.7) and what templates.compile must return for it (checks 34-52)."""

from __future__ import annotations

import copy
import re

import pytest

from postroom.templates.render import (Content, Options, RenderError, check_liquid, clear_cache, compiled_preview,
                                       render, signed_tracking)
from postroom.templates.render import tokens
from postroom.templates.render.document import clean_liquid, fix_markup, head_overrides
from postroom.templates.render.tree import TreeError
from contract_example import T, T_MJML

EP = "https://links.acme.test"
KEY = b"k" * 32


def with_t1(content: str) -> dict:
    t = copy.deepcopy(T)
    t["children"][1]["children"][0]["children"][0]["children"][0]["content"] = content
    return t


def hrefs(html: str) -> list[str]:
    return re.findall(r'<a href="([^"]*)"', html)


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()


# ---------------------------------------------------------------- previews and compiled_preview (1.2)

def test_preserve_liquid_returns_the_thirteen_lines_and_is_deterministic():
    first = render(Content(tree=T), {}, Options(preserve_liquid=True))
    second = render(Content(tree=copy.deepcopy(T)), {}, Options(preserve_liquid=True))
    assert first.mjml == T_MJML and first.wire() == second.wire()  # check 35
    assert first.success and "{{ contact.first_name" in first.html


def test_compiled_preview_has_the_overrides_and_no_data():
    content = Content(tree=T, subject="Hi {{ contact.first_name }}", subject_preview="Welcome aboard")
    preview = compiled_preview(content)
    assert preview.startswith("<mjml>")  # check 1
    assert "<mj-title>Hi {{ contact.first_name }}</mj-title>" in preview
    assert "<mj-preview>Welcome aboard</mj-preview>" in preview and "old preview" not in preview
    assert preview == render(content, {"contact": {"first_name": "Ann"}}, Options(preserve_liquid=True)).mjml  # 52


# ---------------------------------------------------------------- a successful render (checks 36-40, 34)

def test_subject_preview_title_and_preheader_render_with_the_data():
    result = render(Content(tree=T, subject="Hi {{ contact.first_name }}", subject_preview="For {{ contact.first_name }}"),
                    {"contact": {"first_name": "Ann"}})
    assert result.success and result.error is None  # check 36
    assert (result.subject, result.subject_preview) == ("Hi Ann", "For Ann")
    assert "Hello Ann" in result.html and "<title>Hi Ann</title>" in result.html
    assert ">For Ann</div>" in result.html and "old preview" not in result.html
    assert "Hello Ann" in result.text and "<" not in result.text
    assert list(result.wire()) == ["success", "mjml", "html", "subject", "subject_preview", "text"]


def test_no_data_renders_defaults_and_no_liquid_survives():
    result = render(Content(tree=T), {})
    assert "Hello there" in result.html and "{{" not in result.html  # check 37
    assert result.subject is None and result.subject_preview is None


def test_contact_strings_are_escaped_in_html_not_in_the_subject():
    result = render(Content(tree=T, subject="Hi {{ contact.first_name }}"), {"contact": {"first_name": "<b>Ann</b>"}})
    assert "Hello &lt;b&gt;Ann&lt;/b&gt;" in result.html and "<b>Ann" not in result.html  # check 38
    assert result.subject == "Hi <b>Ann</b>"


@pytest.mark.parametrize("note, expected", [
    ("<i>x</i>", "<i>x</i>"), ("{{ 1 | plus: 1 }}", "{{ 1 | plus: 1 }}"), ("5 < 6", "5 &lt; 6")])
def test_data_is_inserted_as_it_is_and_never_parsed(note, expected):
    result = render(Content(tree=with_t1("<p>{{ note }}</p>")), {"note": note})
    assert result.success and f"<p>{expected}</p>" in result.html  # check 39


def test_void_elements_and_named_entities_from_the_editor():
    result = render(Content(tree=with_t1("<p>a<br>b&nbsp;c</p>")), {})
    assert result.success and "a<br />b" in result.html  # check 40


def test_mj_attributes_apply():
    t = copy.deepcopy(T)
    t["children"][0]["children"].append(
        {"id": "a", "type": "mj-attributes", "children": [{"id": "x", "type": "mj-text", "attributes": {"fontFamily": "Georgia"}}]})
    t["children"][1]["children"][0]["children"][0]["children"][0]["attributes"].pop("fontFamily", None)
    html = render(Content(tree=t), {}).html
    assert "font-family:Georgia" in html[html.rindex("<div", 0, html.index("Hello")):html.index("Hello")]  # check 34


def test_subject_line_breaks_become_spaces():
    subject = render(Content(tree=T, subject="a\rb {{ x }}"), {"x": "\nc\r\nd"}).subject
    assert "\r" not in subject and "\n" not in subject and subject.split() == ["a", "b", "c", "d"]


def test_own_text_part_renders_in_text_mode():
    result = render(Content(tree=T, text="Hi {{ contact.first_name }} & {{ x }}"),
                    {"contact": {"first_name": "<Ann>"}, "x": 1.0})
    assert result.text == "Hi <Ann> & 1"


# ---------------------------------------------------------------- head overrides (4.6)

def test_title_and_preview_are_replaced_in_place_any_case_and_self_closing():
    source = '<mjml><mj-head><MJ-TITLE class="t">old</MJ-TITLE><mj-preview/></mj-head><mj-body></mj-body></mjml>'
    text, _ = head_overrides(source, "A & {{ b }} <c>", "P {% if x > 1 %}y{% endif %}")
    assert text == ('<mjml><mj-head><mj-title class="t">A &amp; {{ b }} &lt;c&gt;</mj-title>'
                    '<mj-preview>P {% if x > 1 %}y{% endif %}</mj-preview></mj-head><mj-body></mj-body></mjml>')


def test_missing_elements_are_inserted_title_first():
    text, lines = head_overrides(T_MJML.replace("    <mj-preview>old preview</mj-preview>\n", ""), "S", "P")
    assert text.startswith("<mjml>\n  <mj-head>\n    <mj-title>S</mj-title>\n    <mj-preview>P</mj-preview>\n  </mj-head>")
    assert [lines.old_line(n) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 2, 2, 3, 4]
    no_head, _ = head_overrides("<mjml lang=\"en\"><mj-body></mj-body></mjml>", "S", None)
    assert no_head == '<mjml lang="en">\n  <mj-head>\n    <mj-title>S</mj-title>\n  </mj-head><mj-body></mj-body></mjml>'
    closed, _ = head_overrides("<mjml><mj-head /><mj-body /></mjml>", None, "P")
    assert closed == "<mjml><mj-head>\n    <mj-preview>P</mj-preview>\n  </mj-head><mj-body /></mjml>"


def test_overrides_win_and_the_document_preview_is_the_last_fallback():
    content = Content(tree=T, subject="Template", subject_preview="Variant")
    overridden = render(content, {"x": "X"}, Options(subject_override="Sub {{ x }}", preheader_override="Pre {{ x }}"))
    assert overridden.subject == "Sub X" and "<title>Sub X</title>" in overridden.html and ">Pre X</div>" in overridden.html
    assert overridden.subject_preview == "Variant"  # the variant's own preview, as compile returns it
    assert ">Variant</div>" in render(content, {}).html
    assert ">old preview</div>" in render(Content(tree=T), {}).html


# ---------------------------------------------------------------- clean-up and fix-up (steps 4, 7)

def test_liquid_spans_are_cleaned_of_editor_entities_and_invisible_characters():
    dirty = "a&nbsp;&amp; {% if a &gt; b&#160;%}x{% endif %} {{\u200bname&#xA0;| default:&nbsp;&quot;y&quot; }}\ufeff"
    assert clean_liquid(dirty) == "a&nbsp;&amp; {% if a > b %}x{% endif %} {{name | default: \"y\" }}\ufeff"
    result = render(Content(tree=with_t1("<p>{% if 2 &gt; 1 %}yes{% endif %} {{&nbsp;x }}</p>")), {"x": "X"})
    assert "<p>yes X</p>" in result.html


def test_markup_fix_up_outside_comments():
    assert fix_markup("<p>5 < 6 <!-- < --> a<b>c</b> <3 <!x> </p>") == "<p>5 &lt; 6 <!-- < --> a<b>c</b> &lt;3 <!x> </p>"
    assert fix_markup("<p>漢> é> éZ> <a title=\"é\">x</a></p>") == "<p>漢&gt; é&gt; éZ&gt; <a title=\"é\">x</a></p>"


# ---------------------------------------------------------------- links, UTM, pixel (4.5, checks 47-49, 51)

def test_tracking_rewrites_links_but_not_own_relative_or_mailto_ones():
    tracker = signed_tracking(KEY, EP, "preview", "ws1", 1700000000)
    click, opened = tracker.click_url, tracker.open_url
    content = Content(tree=with_t1('<p><a href="mailto:h@acme.test">m</a> <a href="https://links.acme.test/notification-center?x=1">p</a>'
                                   ' <a href="/path">r</a></p>'))
    html = render(content, {}, Options(tracking=True, utm={"utm_source": "news"}, endpoint=EP,
                                       click_url=click, open_url=opened)).html
    found = hrefs(html)
    assert found[:3] == ["mailto:h@acme.test", "https://links.acme.test/notification-center?x=1", "/path"]  # 47
    assert found[3].startswith("https://links.acme.test/r/")
    plain = tokens.decrypt([KEY], tokens.CLICK, found[3].rsplit("/", 1)[1])
    assert tokens.split(tokens.CLICK, plain) == ["preview", "ws1", "1700000000", "0",
                                                 "https://shop.test/offer?x=1&utm_source=news"]
    assert html.count('<img src="https://links.acme.test/t/') == 1
    assert html.index('<img src="https://links.acme.test/t/') < html.rindex("</body>")


def test_utm_without_tracking():
    html = render(Content(tree=with_t1('<p><a href="https://a.test/?utm_source=x">a</a></p>')), {},
                  Options(utm={"utm_source": "news", "utm_campaign": "spring", "utm_medium": ""})).html
    assert hrefs(html) == ["https://a.test/?utm_source=x",  # check 48
                           "https://shop.test/offer?x=1&amp;utm_source=news&amp;utm_campaign=spring"]
    assert hrefs(render(Content(tree=T), {}).html) == ["https://shop.test/offer?x=1"]  # check 49


def test_web_channel_renders_no_liquid_and_rewrites_no_link():
    tracker = signed_tracking(KEY, EP, "p", "ws1", 1700000000)
    click, opened = tracker.click_url, tracker.open_url
    result = render(Content(tree=T, subject="Hi {{ x }}"), {"contact": {"first_name": "Ann"}},
                    Options(channel="web", tracking=True, click_url=click, open_url=opened, utm={"utm_source": "a"}))
    assert result.success and "{{ contact.first_name" in result.html and "/r/" not in result.html  # check 51
    assert "/t/" not in result.html and result.subject == "Hi {{ x }}"


def test_tracking_without_hooks_is_a_programming_error():
    with pytest.raises(ValueError):
        render(Content(tree=T), {}, Options(tracking=True))


# ---------------------------------------------------------------- errors (4.7, checks 41-46)

def test_subject_error_ends_the_render_first():
    result = render(Content(tree=with_t1("{{ 1 | divided_by: 0 }}"), subject="{{ x ", subject_preview="{{ y"), {})
    assert not result.success and result.html is None and result.mjml is None and result.subject is None  # 41
    assert result.error.message == "subject: liquid syntax error at line 1, column 1: expected '}}', found end of file"
    assert result.error.details == [{"line": 1, "column": 1, "message": "expected '}}', found end of file",
                                     "tagName": "subject"}]
    assert list(result.wire()) == ["success", "error"]


def test_preview_error_keeps_the_subject():
    result = render(Content(tree=T, subject="S", subject_preview="ok {{ 1 | divided_by: 0 }}"), {})
    assert result.subject == "S" and result.error.message.startswith("subject_preview: liquid error at line 1, column ")
    assert result.error.details[0]["tagName"] == "subject_preview" and "block_id" not in result.error.details[0]


def test_body_liquid_error_points_at_the_block():
    result = render(Content(tree=with_t1("{{ 1 | divided_by: 0 }}")), {})
    assert not result.success and result.html is None  # check 42
    assert result.error.message == "visual_editor_tree: liquid error at line 8, column 58: divided_by: can't divide by 0"
    assert result.error.details == [{"line": 8, "column": 58, "message": "divided_by: can't divide by 0",
                                     "tagName": "mj-text", "block_id": "t1"}]
    assert "divided_by" in result.mjml and result.mjml.count("\n") == 12  # the MJML before Liquid


def test_body_error_lines_count_in_the_overridden_mjml_and_blocks_still_match():
    result = render(Content(tree=with_t1("{% if %}"), subject="S {{ x }}"), {})  # a title is inserted: +1 line
    assert result.error.message.startswith("visual_editor_tree: liquid syntax error at line 9, column ")
    assert result.error.details[0]["block_id"] == "t1" and "<mj-title>S {{ x }}</mj-title>" in result.mjml


def test_body_error_outside_any_block_and_in_code_mode():
    broken_title = render(Content(tree=T, subject="{% if x %}"), {"x": 1}, Options(subject_override=None))
    assert broken_title.error.message.startswith("subject: ")
    code = render(Content(mjml_source="<mjml>\n<mj-body>{{ x | nofilter }}</mj-body></mjml>"), {})
    assert code.error.message == "mjml_source: liquid syntax error at line 2, column 17: unknown filter 'nofilter'"
    assert code.error.details[0]["tagName"] == "mjml_source" and "block_id" not in code.error.details[0]


def test_mjml_errors_name_the_engine_position_or_none():
    result = render(Content(mjml_source="<mjml><mj-body><mj-section><mj-column><mj-text>x</mj-column></mj-section>"
                                        "</mj-body></mjml>"), {})
    assert not result.success and result.error.message == "mjml: unexpected end of stream"  # check 43
    assert result.error.details == [{"line": 0, "column": 0, "message": "unexpected end of stream", "tagName": "mjml"}]
    assert result.mjml is not None and result.html is None
    placed = render(Content(mjml_source="<mjml>\n  <mj-bodyx></mj-bodyx></mjml>"), {})
    assert placed.error.message == "mjml: unexpected element at line 2, column 3"


def test_mj_include_is_an_error_and_reads_nothing():
    result = render(Content(mjml_source='<mjml><mj-body><mj-include path="/etc/passwd" /></mj-body></mjml>'), {})
    assert not result.success and result.html is None  # check 46
    assert result.error.message == "mjml: unable to load included template at line 1, column 17"


def test_limits_of_the_document():
    loops = render(Content(mjml_source="<mjml><mj-body><mj-raw>{% for i in (1..2000) %}{% for j in (1..2000) %}"
                                       "{% endfor %}{% endfor %}</mj-raw></mj-body></mjml>"), {})
    assert loops.error.message == "mjml_source: liquid loop iteration limit exceeded (1000000)"  # check 45
    big = render(Content(mjml_source="<mjml><mj-body><mj-raw>" + "é" * 600_000 + "</mj-raw></mj-body></mjml>"), {})
    assert big.error.message == ("mjml_source: template size (1200049 bytes) exceeds maximum allowed size "
                                 "(1048576 bytes)")


def test_text_error_is_a_failure_after_the_body():
    result = render(Content(tree=T, subject="S", text="{{ 1 | divided_by: 0 }}"), {})
    assert not result.success and result.subject == "S" and result.html is None
    assert result.error.message.startswith("text: liquid error at line 1, column ")


def test_an_invalid_tree_is_refused_with_its_path():
    with pytest.raises(TreeError) as caught:
        render(Content(tree=with_t1("x") | {"type": "mj-body"}), {})
    assert caught.value.message == "visual_editor_tree must have type 'mjml'"
    with pytest.raises(TreeError):
        render(Content(), {})


# ---------------------------------------------------------------- save-time checks (2.3)

def test_check_liquid_in_field_order_with_block_paths():
    assert check_liquid(Content(tree=T, subject="Hi {{ x }}", subject_preview="p", text="t")) is None
    assert check_liquid(Content(tree=T, subject="Hi {{ x ")).message.startswith("subject: liquid syntax error at line 1")
    assert check_liquid(Content(tree=T, subject="ok", subject_preview="{% if %}")).message.startswith("subject_preview: ")
    body = check_liquid(Content(tree=with_t1("<p>{% if 1 &gt; 0 %}ok{% endif %}{{ x | nope }}</p>"), subject="s",
                                text="{{ y "))
    assert isinstance(body, RenderError)
    assert body.message == ("visual_editor_tree.children[1].children[0].children[0].children[0]: liquid syntax error "
                            "at line 8, column 88: unknown filter 'nope'")
    assert body.details[0]["block_id"] == "t1"
    code = check_liquid(Content(mjml_source="<mjml><mj-body><mj-raw>{% include 'x' %}</mj-raw></mj-body></mjml>", subject="s"))
    assert code.message == "mjml_source: liquid syntax error at line 1, column 27: tag 'include' is not allowed"  # 28
    assert check_liquid(Content(tree=T, subject="s", text="{{ y ")).message.startswith("text: ")
