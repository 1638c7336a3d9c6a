"""The visual editor tree: validation (3.2, exact messages) and MJML emission (3.3-3.5)."""

from __future__ import annotations

import copy

import pytest

from contract_example import T, T_MJML

from postroom.templates.render import tree
from postroom.templates.render.tree import TreeError

C1 = "visual_editor_tree.children[1].children[0].children[0]"


def t_with(change) -> dict:
    t = copy.deepcopy(T)
    change(t)
    return t


def column(t):
    return t["children"][1]["children"][0]["children"][0]


def message(t, check=tree.validate) -> str:
    with pytest.raises(TreeError) as caught:
        check(t)
    return caught.value.message


def test_the_example_tree_is_valid_and_emits_the_thirteen_lines_byte_for_byte():
    tree.validate(T)
    generated = tree.to_mjml(T)
    assert generated.text == T_MJML
    assert generated.text.count("\n") == 12 and not generated.text.endswith("\n")


# ---------------------------------------------------------------- rules 1-4 (no path)

@pytest.mark.parametrize("t, expected", [
    (None, "visual_editor_tree must have type 'mjml'"),
    ("x", "visual_editor_tree must have type 'mjml'"),
    ({"id": "r", "type": "mj-body", "children": []}, "visual_editor_tree must have type 'mjml'"),
    ({"id": "r", "type": "mjml"}, "visual_editor_tree root block must have children"),
    ({"id": "r", "type": "mjml", "children": []}, "visual_editor_tree root block must have children"),
    ({"id": "r", "type": "mjml", "children": [{"id": "h", "type": "mj-head"}]},
     "mjml document must contain an mj-body"),
    ({"id": "r", "type": "mjml", "children": [{"id": "b", "type": "mj-body"}, {"id": "x", "type": "mj-section"}]},
     "mjml can only contain mj-head and mj-body, found mj-section"),
    ({"id": "r", "type": "mjml", "children": [{"id": "b", "type": "mj-body"}, {"id": "c", "type": "mj-body"}]},
     "mjml document must contain at most one mj-head and one mj-body"),
    ({"id": "r", "type": "mjml", "children": [{"id": "h", "type": "mj-head"}, {"id": "g", "type": "mj-head"},
                                              {"id": "b", "type": "mj-body"}]},
     "mjml document must contain at most one mj-head and one mj-body"),
])
def test_document_rules(t, expected):
    assert message(t) == expected


def _nested_sections(levels: int) -> dict:
    node = {"id": "leaf", "type": "mj-section"}
    for i in range(levels):
        node = {"id": f"s{i}", "type": "mj-section", "children": [node]}
    return {"id": "r", "type": "mjml", "children": [{"id": "b", "type": "mj-body", "children": [node]}]}


def test_depth_limit_is_measured_before_the_other_rules():
    # check 25: mjml > mj-body > 58 sections = 60 levels; the sections' nesting is also wrong,
    # but depth is measured over the whole tree first.
    assert message(_nested_sections(57)) == "visual_editor_tree exceeds maximum depth of 50"
    deep = _nested_sections(10_000)  # iterative: no recursion limit is reached
    assert message(deep) == "visual_editor_tree exceeds maximum depth of 50"


def test_a_tree_of_exactly_fifty_levels_passes_the_limit():
    # root (1) > body (2) > sections: 48 more levels, nested wrongly, so rule 14 is what fails
    assert "cannot be a child of mj-section" in message(_nested_sections(47))


def test_block_count_limit():
    sections = [{"id": f"s{i}", "type": "mj-section"} for i in range(9_998)]
    t = {"id": "r", "type": "mjml", "children": [{"id": "b", "type": "mj-body", "children": sections}]}
    tree.validate(t)  # 10,000 blocks
    sections.append({"id": "x", "type": "mj-section"})
    assert message(t) == "visual_editor_tree exceeds 10000 blocks"


# ---------------------------------------------------------------- rules 5-14 (with path), checks 22-24

@pytest.mark.parametrize("change, expected", [
    (lambda t: column(t)["children"].__setitem__(1, "x"), f"{C1}.children[1]: block must be an object"),
    (lambda t: column(t)["children"][1].__setitem__("type", ""), f"{C1}.children[1]: block type is required"),
    (lambda t: column(t)["children"][1].pop("type"), f"{C1}.children[1]: block type is required"),
    (lambda t: column(t)["children"][1].__setitem__("type", "mj-foo"), f"{C1}.children[1]: unknown block type 'mj-foo'"),
    (lambda t: column(t)["children"][1].__setitem__("type", "Div"), f"{C1}.children[1]: unknown block type 'Div'"),
    (lambda t: column(t).__setitem__("children", "x"), f"{C1}: children must be an array"),
    (lambda t: column(t).__setitem__("attributes", ["a"]), f"{C1}: attributes must be an object"),
    (lambda t: column(t).__setitem__("attributes", {"1bad": "x"}), f"{C1}: attribute name '1bad' is invalid"),
    (lambda t: column(t).__setitem__("attributes", {"a b": "x"}), f"{C1}: attribute name 'a b' is invalid"),
    (lambda t: column(t)["children"][0]["attributes"].__setitem__("padding", {"top": 1}),
     f"{C1}.children[0]: attribute 'padding' must be a string, number or boolean"),
    (lambda t: column(t)["children"][0]["attributes"].__setitem__("padding", [1]),
     f"{C1}.children[0]: attribute 'padding' must be a string, number or boolean"),
    (lambda t: column(t)["children"][0].__setitem__("content", 5), f"{C1}.children[0]: content must be a string"),
    (lambda t: column(t)["children"][0].__setitem__("children", [{"id": "x", "type": "mj-text"}]),
     f"{C1}.children[0]: component mj-text cannot have children"),
    (lambda t: t["children"][1]["children"][0]["children"].append(column(t)["children"][0]),
     "visual_editor_tree.children[1].children[0].children[1]: component mj-text cannot be a child of mj-section"),
    (lambda t: column(t)["children"].append({"id": "d", "type": "div"}),
     f"{C1}.children[2]: component div cannot be a child of mj-column"),
    (lambda t: column(t)["children"].append({"id": "m", "type": "mjml"}),
     f"{C1}.children[2]: component mjml cannot be a child of mj-column"),
])
def test_block_rules_name_the_path(change, expected):
    assert message(t_with(change)) == expected


def test_first_failure_in_document_order_wins():
    def two_faults(t):
        column(t)["children"][0]["content"] = 5  # t1, earlier in document order
        column(t)["children"][1]["type"] = "mj-foo"  # b1
    assert message(t_with(two_faults)) == f"{C1}.children[0]: content must be a string"


def test_accepted_shapes():
    def extras(t):
        t1 = column(t)["children"][0]
        t1["attributes"].update(backgroundColor="#fff", fullWidth=True, lineHeight=1.5, hidden=None, x_y=False)
        t1["children"] = []  # an empty list on a leaf is no child
        column(t)["children"].append({"id": "tb", "type": "mj-table", "children": [
            {"id": "tr", "type": "tr", "children": [{"id": "td", "type": "td", "content": "x",
                                                     "children": [{"id": "sp", "type": "span"}]}]}]})
        t["children"][0]["children"].append({"id": "a", "type": "mj-attributes", "children": [
            {"id": "all", "type": "mj-all", "attributes": {"fontFamily": "Georgia"}},
            {"id": "sec", "type": "mj-section", "attributes": {"padding": "0"}}]})
    tree.validate(t_with(extras))


def test_defaults_inside_mj_attributes_are_leaves():
    def nested(t):
        t["children"][0]["children"].append({"id": "a", "type": "mj-attributes", "children": [
            {"id": "sec", "type": "mj-section", "children": [{"id": "c", "type": "mj-column"}]}]})
    assert message(t_with(nested)) == \
        "visual_editor_tree.children[0].children[1].children[0]: component mj-section cannot have children"


def test_template_block_fragments():
    assert message({"id": "x", "type": ""}, tree.validate_block) == "block kind is required"
    assert message({"id": "x"}, tree.validate_block) == "block kind is required"
    fragment = {"id": "s", "type": "mj-section", "children": [{"id": "c", "type": "mj-foo"}]}
    assert message(fragment, tree.validate_block) == "block.children[0]: unknown block type 'mj-foo'"
    assert message({"id": "m", "type": "mjml"}, tree.validate_block) == "block: component mjml cannot be a template block"
    assert message({"id": "x", "type": "mj-foo"}, tree.validate_block) == "block: unknown block type 'mj-foo'"
    tree.validate_block(copy.deepcopy(T["children"][1]["children"][0]))  # T's s1 (check 53)


# ---------------------------------------------------------------- encoding (3.4)

def _text_block(**node) -> str:
    t = t_with(lambda t: column(t)["children"].__setitem__(0, {"id": "t1", "type": "mj-text", **node}))
    tree.validate(t)
    return tree.to_mjml(t).text.split("\n")[7].strip()


def test_attribute_names_become_kebab_case_and_are_sorted():
    line = _text_block(attributes={"paddingTop": "1px", "fullWidthBackgroundColor": "red", "cssClass": "c",
                                   "backgroundPositionX": "left", "align": "left", "font-size": "2px"})
    assert line == ('<mj-text align="left" background-position-x="left" css-class="c" font-size="2px" '
                    'full-width-background-color="red" padding-top="1px" />')


def test_attribute_values_skips_booleans_numbers_and_escaping():
    line = _text_block(attributes={"visibility": "desktop", "a": None, "b": "", "c": False, "fullWidth": True,
                                   "width": 600, "lineHeight": 1.5, "height": 600.0,
                                   "title": "Tom & \"Jerry\" <'x'>"})
    assert line == ('<mj-text full-width="full-width" height="600" line-height="1.5" '
                    'title="Tom &amp; &quot;Jerry&quot; &lt;&#39;x&#39;&gt;" width="600" />')


def test_liquid_spans_are_copied_verbatim_in_attributes_and_text():
    line = _text_block(attributes={"color": "{{ brand | default: '#000' }}", "title": "a&b {% if a > b %}x{% endif %}"})
    assert line == '<mj-text color="{{ brand | default: \'#000\' }}" title="a&amp;b {% if a > b %}x{% endif %}" />'
    t = t_with(lambda t: t["children"][0]["children"][0].__setitem__("content", "A & B {% if a > b %}<x>{% endif %}"))
    assert "<mj-preview>A &amp; B {% if a > b %}&lt;x&gt;{% endif %}</mj-preview>" in tree.to_mjml(t).text


def test_raw_content_gets_the_two_xml_fix_ups_outside_liquid_spans():
    line = _text_block(content='<p>a<br>b&nbsp;c<img src="{{ u }}"><hr/><br >&amp;&lt;&copy;&eacute;&notanentity;'
                               '{{ "&nbsp;<br>" }}</p>')
    assert line == ('<mj-text><p>a<br />b&#160;c<img src="{{ u }}" /><hr/><br />&amp;&lt;&#169;&#233;&notanentity;'
                    '{{ "&nbsp;<br>" }}</p></mj-text>')


def test_content_kinds():
    t = t_with(lambda t: column(t)["children"].extend([
        {"id": "soc", "type": "mj-social", "children": [
            {"id": "se", "type": "mj-social-element", "attributes": {"name": "x"}, "content": "A & <B>"}]},
        {"id": "img", "type": "mj-image", "content": "ignored", "attributes": {"src": "a.png"}},
        {"id": "lq", "type": "mj-liquid", "content": "{% for i in list %}\n<mj-raw>{{ i }}</mj-raw>\n{% endfor %}"}]))
    t["children"][0]["children"].append({"id": "ha", "type": "mj-html-attributes", "attributes": {"x": "y"}})
    t["children"][0]["children"].append({"id": "st", "type": "mj-style", "content": "a > b { color: red }"})
    tree.validate(t)
    text = tree.to_mjml(t).text
    assert '<mj-social-element name="x">A &amp; &lt;B&gt;</mj-social-element>' in text
    assert '<mj-image src="a.png" />' in text and "ignored" not in text
    assert "\n{% for i in list %}\n<mj-raw>{{ i }}</mj-raw>\n{% endfor %}\n" in text  # no tag, no indent
    assert "mj-html-attributes" not in text and "\n\n" not in text
    assert "<mj-style>a > b { color: red }</mj-style>" in text


def test_block_lines_give_the_innermost_block():
    t = t_with(lambda t: column(t)["children"].insert(1, {"id": "lq", "type": "mj-liquid", "content": "a\nb\nc"}))
    generated = tree.to_mjml(t)
    assert generated.block_at(8).id == "t1" and generated.block_at(8).path == f"{C1}.children[0]"
    assert [generated.block_at(n).id for n in (9, 10, 11)] == ["lq", "lq", "lq"]
    assert generated.block_at(12).kind == "mj-button"
    assert generated.block_at(7).id == "c1" and generated.block_at(1).id == "root"
    assert generated.block_at(99) is None
