"""What the render path does for tracking (engagement contract 1.1-1.5, checks 1 and 2): links
rewritten to signed /r/ URLs numbered in document order, the workspace's own and non-web links
left alone, one pixel before the last </body>, tracking_opens_url, UTM kept; and with tracking off
no /r/ link and no pixel."""

from __future__ import annotations

import re

from trackkit import E, add_notification, ok, send, tokens_of, workspace

from postroom.templates.render import tokens
from postroom.tracking import model

UTM = {"utm_source": "nl"}


def hrefs(html: str) -> list[str]:
    return re.findall(r'<a href="([^"]*)"', html)


async def test_tracking_on_rewrites_links_and_adds_one_pixel(client, pool, settings):
    ws = await workspace(pool, settings)
    await add_notification(client, ws, utm=UTM)
    mid, html = await send(client, pool, ws)
    links = hrefs(html)
    assert links[0].startswith(E + "/r/") and links[1].startswith(E + "/r/")  # check 1
    assert links[2:4] == ["mailto:a@b.c", "#top"]
    assert links[4].startswith(E + "/notification-center?email=ana%40example.com&email_hmac=")  # own link
    found = tokens_of(html)
    destinations = []
    for index, token in enumerate(found["r"]):
        hit = model.read_click([settings.key_bytes], token)
        assert (hit.message_id, hit.workspace_id, hit.link_index) == (mid, ws.id, index)
        destinations.append(hit.url)
    # the query as written, UTM appended (content defaults to the template id); a link already
    # tagged keeps its own
    assert destinations == ["https://x.test/a?b=2&a=1&utm_source=nl&utm_content=news_tpl",
                            "https://x.test/b?utm_campaign=x"]
    assert html.count(f'<img src="{E}/t/') == 1 and html.index(f'<img src="{E}/t/') < html.rindex("</body>")
    pixel_token, = found["t"]
    assert model.read_open([settings.key_bytes], pixel_token).message_id == mid
    opens_url = re.search(r"o:\[([^\]]*)\]", html).group(1)  # tracking_opens_url (1.5)
    assert opens_url == f"{E}/t/{pixel_token}"
    assert "/opens?" not in html and "x.test" not in html  # destinations only inside the tokens


async def test_tracking_off_renders_no_pixel_and_no_tracked_link_but_keeps_utm(client, pool, settings):
    ws = await workspace(pool, settings, tracking=False)
    await add_notification(client, ws, utm=UTM)
    _, html = await send(client, pool, ws)
    assert "/r/" not in html and "/t/" not in html and "<img" not in html  # check 2
    assert hrefs(html)[:4] == ["https://x.test/a?b=2&amp;a=1&amp;utm_source=nl&amp;utm_content=news_tpl",
                               "https://x.test/b?utm_campaign=x", "mailto:a@b.c", "#top"]
    assert "o:[]" in html  # tracking_opens_url is empty when off


async def test_compile_previews_mint_signed_tokens_of_the_requests_message_id(client, pool, settings):
    ws = await workspace(pool, settings, tracking=False)
    await add_notification(client, ws)
    body = await ok(await client.post("/api/templates.compile", headers=ws.headers, json={
        "workspace_id": ws.id, "message_id": "preview", "template_id": "news_tpl", "test_data": {},
        "tracking_settings": {"enable_tracking": True, "endpoint": "https://evil.test"}}))
    found = tokens_of(body["html"])
    assert len(found["r"]) == 2 and len(found["t"]) == 1 and "evil.test" not in body["html"]
    hit = model.read_click([settings.key_bytes], found["r"][1])
    assert (hit.message_id, hit.workspace_id, hit.link_index, hit.url) == \
        ("preview", ws.id, 1, "https://x.test/b?utm_campaign=x")
    assert tokens.decrypt([b"not the installation key"], "r", found["r"][1]) is None


async def test_a_destination_over_2048_bytes_keeps_its_link(client, pool, settings):
    long_url = "https://x.test/" + "a" * 2100
    ws = await workspace(pool, settings)
    await add_notification(client, ws, mjml=f'<mjml><mj-body><mj-text><a href="{long_url}">L</a> '
                                            '<a href="https://x.test/short">S</a></mj-text></mj-body></mjml>')
    _, html = await send(client, pool, ws)
    first, second = hrefs(html)
    assert first == long_url and second.startswith(E + "/r/")
    assert model.read_click([settings.key_bytes], tokens_of(html)["r"][0]).link_index == 0  # numbered among tracked


def test_links_are_numbered_alike_by_the_full_render_and_the_once_per_version_path():
    """The second render of a document goes through the once-per-version plan (templates 4.8):
    its tokens must number the links as the first render did."""
    from postroom.templates.render import Content, Options, clear_cache, render, signed_tracking

    clear_cache()
    content = Content(mjml_source='<mjml><mj-body><mj-text><p>{{ name }}</p><a href="https://x.test/1">1</a>'
                                  '<a href="mailto:a@b.c">m</a><a href="https://x.test/2?n={{ name }}">2</a>'
                                  "</mj-text></mj-body></mjml>")
    key = b"k" * 32
    seen = []
    for name in ("Ana", "Bob", "Cy"):
        tracker = signed_tracking(key, E, f"m-{name}", "ws_1", 1_700_000_000)
        html = render(content, {"name": name}, Options(tracking=True, endpoint=E, click_url=tracker.click_url,
                                                       open_url=tracker.open_url)).html
        hits = [model.read_click([key], token) for token in tokens_of(html)["r"]]
        seen.append([(h.message_id, h.link_index, h.url) for h in hits])
    assert seen == [[(f"m-{n}", 0, "https://x.test/1"), (f"m-{n}", 1, f"https://x.test/2?n={n}")]
                    for n in ("Ana", "Bob", "Cy")]
