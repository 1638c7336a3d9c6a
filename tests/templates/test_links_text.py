"""Links, UTM and the open pixel (4.5), and the plain-text part (4.6), on HTML directly."""

from __future__ import annotations

import pytest

from postroom.templates.render import links, text
from postroom.templates.render.links import LinkRules

UTM = links.utm_pairs({"utm_source": "news", "utm_medium": "", "utm_campaign": "spring sale"})
EP = "https://links.acme.test"


def tracked(url: str, index: int) -> str:
    return f"{EP}/r/T({url})"


@pytest.mark.parametrize("href", [
    "", "#top", "mailto:h@acme.test", "tel:+331", "sms:1", "javascript:alert(1)", "data:text/plain,x",
    "blob:x", "file:///etc/passwd", "/path", "www.acme.test", "ftp://x.test/",
    "https://a.test/{{ url }}", "https://a.test/{% if x %}", f"{EP}/notification-center?x=1", f"{EP}/r/abc",
])
def test_links_left_unchanged(href):
    page = f'<p><a href="{href}">x</a></p>'
    assert links.rewrite(page, LinkRules(UTM, EP, tracked)) == (page, [href])


@pytest.mark.parametrize("url, expected", [
    ("https://shop.test/offer?x=1", "https://shop.test/offer?x=1&utm_source=news&utm_campaign=spring+sale"),
    ("https://shop.test/", "https://shop.test/?utm_source=news&utm_campaign=spring+sale"),
    ("https://shop.test/a?", "https://shop.test/a?utm_source=news&utm_campaign=spring+sale"),
    ("https://shop.test/a?b=%2f&c=a+b&", "https://shop.test/a?b=%2f&c=a+b&utm_source=news&utm_campaign=spring+sale"),
    ("https://shop.test/a?z=1&a=2#frag?x", "https://shop.test/a?z=1&a=2&utm_source=news&utm_campaign=spring+sale#frag?x"),
    ("HTTP://shop.test/x#", "HTTP://shop.test/x?utm_source=news&utm_campaign=spring+sale#"),
    ("https://a.test/?utm_source=x", "https://a.test/?utm_source=x"),
    ("https://a.test/?a=1&UTM_Term=x", "https://a.test/?a=1&UTM_Term=x"),
])
def test_utm_is_appended_after_the_query_as_it_is_and_before_the_fragment(url, expected):
    assert links.with_utm(url, UTM) == expected


def test_rewritten_hrefs_keep_their_quote_and_are_written_back_escaped():
    page = ("<A HREF='https://a.test/?x=1&amp;y=&quot;2&quot;'>a</A> <abbr href=\"https://no.test\">b</abbr>"
            "<area href=\"https://no.test\"><!--[if mso]><a href=\"https://b.test/\"><![endif]-->"
            '<a class="btn" title="t>" href="https://c.test/">c</a><a name="x">no href</a>')
    out, hrefs = links.rewrite(page, LinkRules(UTM, EP))
    assert "HREF='https://a.test/?x=1&amp;y=&quot;2&quot;&amp;utm_source=news&amp;utm_campaign=spring+sale'" in out
    assert '<abbr href="https://no.test">' in out and '<area href="https://no.test">' in out
    assert '<a href="https://b.test/?utm_source=news&amp;utm_campaign=spring+sale">' in out  # in a conditional comment
    assert 'title="t>" href="https://c.test/?utm_source' in out
    assert len(hrefs) == 3  # the <a name> has none


def test_click_tracking_wraps_the_destination_with_utm():
    out, _ = links.rewrite('<a href="https://shop.test/offer?x=1">s</a>', LinkRules(UTM, EP, tracked))
    assert out == ('<a href="https://links.acme.test/r/T(https://shop.test/offer?x=1&amp;utm_source=news'
                   '&amp;utm_campaign=spring+sale)">s</a>')
    assert not LinkRules().active and links.rewrite('<a href="https://x.test/">', LinkRules())[0] == '<a href="https://x.test/">'


def test_the_pixel_goes_once_before_the_last_body_end():
    page = "<html><body>a</body><!-- </body> --></BODY ></html>"
    out = links.add_pixel(page, f"{EP}/t/tok&1")
    assert out.count("<img") == 1 and out.index("<img") < out.rindex("</BODY")
    assert out.endswith('<img src="https://links.acme.test/t/tok&amp;1" alt="" style="border:0;margin:0;padding:0;">'
                        "</td></tr></table></BODY ></html>")
    assert links.add_pixel("<p>no body</p>", "u").startswith("<p>no body</p><table border=\"0\"")


# ---------------------------------------------------------------- plain text (4.6)

PAGE = """<!doctype html><html><head><title>Subject</title><style>p { color: red }</style></head>
<body><div style="display:none;max-height:0px;">Hidden preheader <b>here</b></div>
<!--[if mso]><table><tr><td>Outlook only</td></tr></table><![endif]-->
<div><h1>Hello&nbsp;Ann</h1><p>First   line<br>second &amp; &lt;third&gt;</p>


<p>Read <a href="https://x.test/a?b=1&amp;c=2">the story</a>, or <a href="https://x.test/">https://x.test/</a>.</p>
<ul><li>one</li><li>two</li></ul><table><tr><td>cell a</td><td>cell b</td></tr></table>
<a href="https://logo.test/"><img src="l.png" alt="Acme logo"></a><a href="https://icon.test/"><img src="i.png"></a>
<a href="#top">Back up</a><a>no href</a><script>var x = "<p>no</p>";</script>
<table><tr><td><img src="https://links.acme.test/t/tok" alt=""></td></tr></table></div></body></html>"""


def test_text_from_html():
    assert text.from_html(PAGE) == (
        "Hello Ann\n\nFirst line\nsecond & <third>\n\n"
        "Read the story (https://x.test/a?b=1&c=2), or https://x.test/.\n\n"
        "one\ntwo\ncell a cell b\nAcme logo (https://logo.test/) Back upno href")


def test_text_drops_what_a_reader_does_not_see():
    out = text.from_html(PAGE)
    for hidden in ("Subject", "color: red", "Hidden preheader", "Outlook only", "var x", "<p>", "icon.test", "/t/tok"):
        assert hidden not in out
    assert "\n\n\n" not in out and out == out.strip()
