"""Personalised renders of a newsletter through the one render path, against mrml alone, in one run.

    python bench/render.py [--contacts 10000]

What it does (no server, no database: the render path is pure):
1. takes the golden newsletter (tests/templates/golden/newsletter_en: a visual tree of ~40 body
   blocks, Liquid in eleven output statements, UTM values, tracking on) and makes `--contacts`
   different contacts (names in several scripts, some with characters HTML mode escapes);
2. renders it for each contact with `render`, each with its own tracking hooks
   (`unsigned_tracking` for that contact's message id): subject, preheader, MJML, HTML with
   every link rewritten and the open pixel, and the plain text;
3. keeps each contact's MJML after Liquid (what mrml has to render) and times `mrml.to_html` on
   those documents alone: the baseline;
4. prints renders/s per core (CPU time of this one-threaded process) and by the wall clock, the
   ratio render/mrml, how many renders took the once-per-version path, and PASS/MISS against
   the targets of templates-contract 4.8: >= 2,000 renders/s on one core, <= 2x bare mrml.
The exit code is 0 whether targets are met or not.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import mrml

import _common as bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "templates"))
import golden_cases  # noqa: E402

from postroom.templates.render import Options, clear_cache, render, unsigned_tracking  # noqa: E402

RATE_TARGET = 2_000
RATIO_TARGET = 2.0
FIRST = ["Ann", "Bob", "Zoë", "Jean-Luc", "Łukasz", "山田", "ليلى", "Chloé", "O'Neil", "Dana & Co"]
LAST = ["Smith", "Müller", "Rossi", "Kim", "Nguyen", "Silva", "Dubois", "Novak", "<Khan>", "Sato"]
TIERS = ["Pro customer", "member", "", "early adopter"]


def contacts(count: int) -> list[dict]:
    out = []
    for i in range(count):
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
        contact = {"email": f"user{i}@example.com", "first_name": first, "last_name": last}
        if TIERS[i % len(TIERS)]:
            contact["custom_string_1"] = TIERS[i % len(TIERS)]
        out.append(contact)
    return out


def cpu_and_wall(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=10_000)
    args = parser.parse_args()
    print(bench.machine())
    case = golden_cases.load("newsletter_en")
    content = golden_cases.content(case)
    spec = {k: v for k, v in case["options"].items() if k != "tracking"}
    people = contacts(args.contacts)
    datas = [{**case["data"], "contact": person} for person in people]

    def options(i: int) -> Options:
        click, opened = unsigned_tracking(spec["endpoint"], f"msg-{i}", "bench")
        return Options(**spec, tracking=True, click_url=click, open_url=opened)

    clear_cache()
    render(content, datas[0], options(0))  # a version's first render (the plan is made on the second)
    mjml_docs: list[str] = []
    ok = 0

    def run_render() -> None:
        nonlocal ok
        for i, data in enumerate(datas):
            result = render(content, data, options(i))
            ok += result.success
            mjml_docs.append(result.mjml)

    render_cpu, render_wall = cpu_and_wall(run_render)

    def run_mrml() -> None:
        for doc in mjml_docs:
            mrml.to_html(doc)

    mrml_cpu, mrml_wall = cpu_and_wall(run_mrml)
    planned = _planned(content, datas)
    n = len(datas)
    rate = n / render_cpu
    ratio = render_cpu / mrml_cpu
    print(f"render      {n / render_cpu:8.0f} renders/s per core  ({n / render_wall:.0f}/s wall)   "
          f"{render_cpu / n * 1e6:7.0f} us each   {ok}/{n} succeeded, {planned} by the once-per-version path")
    print(f"mrml alone  {n / mrml_cpu:8.0f} renders/s per core  ({n / mrml_wall:.0f}/s wall)   "
          f"{mrml_cpu / n * 1e6:7.0f} us each")
    print(f"ratio render/mrml {ratio:.2f}")
    print(f"{bench.verdict(rate >= RATE_TARGET)}  >= {RATE_TARGET} renders/s per core")
    print(f"{bench.verdict(ratio <= RATIO_TARGET)}  <= {RATIO_TARGET:.0f}x bare mrml")


def _planned(content, datas) -> int:
    """How many of these recipients the once-per-version path serves (the rest take the full one)."""
    from postroom.templates.render import liquid, path
    doc = path._document_of(content, Options())
    if not isinstance(doc.plan, path.once.Plan):
        return 0
    return sum(doc.plan.values(doc.template, liquid.html_data(d)) is not None for d in datas)


if __name__ == "__main__":
    main()
