"""Liquid (section 6 and 4.3): tags, filters, limits, HTML and text modes."""

from __future__ import annotations

import time

import pytest

from postroom.templates.render import liquid
from postroom.templates.render.liquid import LiquidFailure, LiquidProblem


def run(source: str, data=None, html: bool = True) -> str:
    template = liquid.parse(source)
    assert not isinstance(template, LiquidProblem), template
    data = data or {}
    return liquid.render(template, liquid.html_data(data) if html else data, html=html, source=source)


def failure(source: str, data=None) -> LiquidProblem:
    with pytest.raises(LiquidFailure) as caught:
        run(source, data)
    return caught.value.problem


# ---------------------------------------------------------------- check (save time)

def test_check_reports_line_column_and_reason():
    problem = liquid.check("Hi {{ contact.first_name ")
    assert (problem.line, problem.column, problem.reason) == (1, 4, "expected '}}', found end of file")
    assert problem.summary == "liquid syntax error at line 1, column 4: expected '}}', found end of file"
    assert liquid.check("a\nb\n  {% foo %}").summary == "liquid syntax error at line 3, column 6: unexpected tag 'foo'"
    assert liquid.check("{{ contact.first_name | default: 'x' }}{% if a %}b{% endif %}") is None


@pytest.mark.parametrize("source, reason", [
    ("<mj-raw>{% include 'x' %}</mj-raw>", "tag 'include' is not allowed"),
    ("{% render 'x' %}", "tag 'render' is not allowed"),
    ("{% liquid\n  include 'x' %}", "tag 'include' is not allowed"),
    ("x {{ x | nofilter }}", "unknown filter 'nofilter'"),
    ("{% if false %}{{ x | upcase | nofilter: 1 }}{% endif %}", "unknown filter 'nofilter'"),  # never runs
    ("{% assign y = x | t %}", "unknown filter 't'"),
])
def test_refused_at_parse(source, reason):
    problem = liquid.check(source)
    assert problem is not None and problem.reason == reason and problem.kind == "syntax"
    assert problem.summary.startswith("liquid syntax error at line ")


def test_the_tag_and_filter_sets_are_the_contracts():
    assert set(liquid.ENV.filters) == liquid.FILTERS
    source = ("{% assign a = 1 %}{% capture c %}x{% endcapture %}{% case a %}{% when 1 %}one{% else %}n{% endcase %}"
              "{% comment %}no{% endcomment %}{% # inline %}{% doc %}d{% enddoc %}{% cycle 'p', 'q' %}"
              "{% increment i %}{% decrement j %}{% echo c %}{% for k in (1..3) %}{% if k == 2 %}{% continue %}"
              "{% endif %}{{ forloop.index }}{% else %}e{% endfor %}{% unless a == 2 %}u{% endunless %}"
              "{% ifchanged %}i{% endifchanged %}{% liquid echo 'L' %}{% raw %}{{ raw }}{% endraw %}"
              "{% tablerow t in (1..1) %}{{ t }}{% endtablerow %}")
    assert run(source).startswith("onep0-1x13uiL{{ raw }}<tr class=\"row1\">")


def test_filters_added_and_kept():
    assert run("{{ '<a>' | h }}|{{ '<a>' | escape }}|{{ ' a  b ' | squish }}|{{ \"it's\" | escapejs }}") == \
        "&lt;a&gt;|&lt;a&gt;|a b|it\\u0027s"


# ---------------------------------------------------------------- semantics

def test_whole_numbers_render_without_a_fraction():
    assert run("{{ 5 | times: 1.0 }} {{ x }} {{ 10 | divided_by: 4.0 }} {{ 0.1 | plus: 0.2 }} {{ big }}",
               {"x": 42.0, "big": 1e20}) == "5 42 2.5 0.3 100000000000000000000"


def test_date_works_in_utc():
    assert run("{{ 'now' | date: '%z' }} {{ 'today' | date: '%z' }} {{ 0 | date: '%Y-%m-%d %H:%M %z' }} "
               "{{ '86400' | date: '%d' }}") == "+0000 +0000 1970-01-01 00:00 +0000 02"
    assert run("{{ d | date: '%d.%m.%Y' }}", {"d": "2025-03-14T09:30:00Z"}) == "14.03.2025"


def test_undefined_renders_empty_and_runtime_errors_fail_with_their_place():
    assert run("[{{ nope.deeper }}]{% for x in nope %}x{% endfor %}") == "[]"
    problem = failure("a\n  {{ 1 | divided_by: 0 }}")
    assert problem.kind == "runtime" and (problem.line, problem.column) == (2, 10)
    assert problem.summary == "liquid error at line 2, column 10: divided_by: can't divide by 0"


# ---------------------------------------------------------------- HTML and text modes (4.3, check 38)

CONTACT = {"contact": {"first_name": "<b>Ann</b>", "tags": ["<x>", "y"], "custom_json_1": {"deep": ["O'Neil & \"co\""]},
                       "email": "a@x.test"}, "note": "<i>prepared</i>"}


@pytest.mark.parametrize("source, expected", [
    ("{{ contact.first_name }}", "&lt;b&gt;Ann&lt;/b&gt;"),
    ("{{ contact.custom_json_1.deep[0] }}", "O&#39;Neil &amp; &quot;co&quot;"),
    ("{{ contact.first_name | upcase }}", "&lt;B&gt;ANN&lt;/B&gt;"),
    ("{{ contact.first_name | append: '!' }}", "&lt;b&gt;Ann&lt;/b&gt;!"),
    ("{{ 'Dear ' | append: contact.first_name }}", "Dear &lt;b&gt;Ann&lt;/b&gt;"),
    ("{{ contact.first_name | split: 'n' | first }}", "&lt;b&gt;A"),
    ("{{ contact.tags | join: ', ' }}", "&lt;x&gt;, y"),
    ("{% assign n = contact.first_name %}{{ n }}", "&lt;b&gt;Ann&lt;/b&gt;"),
    ("{% capture c %}{{ contact.first_name }}{% endcapture %}{{ c }}", "&lt;b&gt;Ann&lt;/b&gt;"),
    ("{% for t in contact.tags %}{{ t }}{% endfor %}", "&lt;x&gt;y"),
    ("{% echo contact.first_name %}", "&lt;b&gt;Ann&lt;/b&gt;"),
    ("{{ contact.first_name | safe }}", "<b>Ann</b>"),
    ("{{ contact.first_name | escape }}", "&lt;b&gt;Ann&lt;/b&gt;"),  # escaped once, not twice
    ("{{ contact.missing | default: '<i>there</i>' }}", "<i>there</i>"),
    ("{{ note }} {{ '<u>lit</u>' }} {{ note | upcase }}", "<i>prepared</i> <u>lit</u> <I>PREPARED</I>"),
    ("{% if contact.first_name == '<b>Ann</b>' %}same{% endif %}", "same"),  # filters and tags see the value
    ("{{ contact.email | url_encode }}", "a%40x.test"),
])
def test_html_mode_escapes_contact_strings_only(source, expected):
    assert run(source, CONTACT) == expected


def test_text_mode_escapes_nothing():
    assert run("{{ contact.first_name }} {{ contact.tags | join: ',' }}", CONTACT, html=False) == "<b>Ann</b> <x>,y"


def test_data_is_never_parsed_as_liquid():
    assert run("{{ note }}", {"note": "{{ 1 | plus: 1 }}{% for i in (1..99999999) %}{% endfor %}"}) == \
        "{{ 1 | plus: 1 }}{% for i in (1..99999999) %}{% endfor %}"


# ---------------------------------------------------------------- limits (section 6, checks 44-45)

def test_loop_limit_multiplies_nested_loops():
    problem = failure("{% for i in (1..2000) %}{% for j in (1..2000) %}{% endfor %}{% endfor %}")
    assert problem.kind == "limit" and problem.summary == "liquid loop iteration limit exceeded (1000000)"
    assert run("{% for i in (1..1000) %}{% for j in (1..1000) %}{% endfor %}{% endfor %}x") == "x"


def test_output_limit():
    problem = failure("{% for i in (1..200000) %}{{ s }}{% endfor %}", {"s": "x" * 100})
    assert problem.summary == "liquid output limit exceeded (10485760 bytes)"


def test_memory_limit_on_assigned_data():
    problem = failure("{% assign s = 'x' %}{% for i in (1..30) %}{% assign s = s | append: s %}{% endfor %}")
    assert problem.summary == "liquid memory limit exceeded (10485760 bytes)"


def test_timeout_stops_the_work_within_seven_seconds():
    source = "<mj-raw>" + "{% for i in (1..999999) %}{% endfor %}" * 100 + "</mj-raw>"
    started = time.monotonic()
    problem = failure(source)
    elapsed = time.monotonic() - started
    assert problem.summary == liquid.TIMEOUT_REASON
    assert 4.9 < elapsed < 7, elapsed  # 100 M iterations would take minutes: the loop was stopped
