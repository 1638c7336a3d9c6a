"""Golden templates: real-world mails (visual and code mode, five languages, every block kind of
3.3) rendered and compared with the checked-in output on every run.

Regenerate after a deliberate change with `POSTROOM_REGENERATE_GOLDEN=1 pytest
tests/templates/test_golden.py`, then read the diff before committing it.
"""

from __future__ import annotations

import copy
import json
import os
import random

import pytest

import golden_cases as golden
from postroom.templates.render import clear_cache, liquid, path, render, tree

REGENERATE = os.environ.get("POSTROOM_REGENERATE_GOLDEN") == "1"


def _files(result) -> dict[str, str]:
    head = {"success": result.success, "subject": result.subject, "subject_preview": result.subject_preview,
            "error": None if result.error is None else {"message": result.error.message,
                                                        "details": result.error.details}}
    return {"result.json": json.dumps(head, indent=1, ensure_ascii=False) + "\n",
            "out.mjml": result.mjml or "", "out.html": result.html or "", "out.txt": result.text or ""}


@pytest.mark.parametrize("name", golden.NAMES)
def test_golden_output(name):
    case = golden.load(name)
    result = render(golden.content(case), case["data"], golden.options(case))
    for file, text in _files(result).items():
        target = golden.GOLDEN / name / file
        if REGENERATE:
            target.write_text(text)
        assert target.read_text() == text, f"{name}/{file} differs (see this module's docstring)"
    assert result.success, result.error


def test_golden_set_covers_every_block_kind():
    seen = set()

    def walk(node):
        seen.add(node["type"] if tree.kind_of(node["type"]) is not tree._HTML_KIND else "<html kind>")
        for child in node.get("children") or ():
            walk(child)

    for name in golden.NAMES:
        case = golden.load(name)
        if case["content"].get("tree"):
            walk(case["content"]["tree"])
    assert set(tree.KINDS) | {"<html kind>"} <= seen, sorted(set(tree.KINDS) - seen)
    modes = {"code" if golden.load(n)["content"].get("mjml_source") else "visual" for n in golden.NAMES}
    assert modes == {"code", "visual"}


# ---------------------------------------------------------------- the once path is the full path

_ALPHABET = ["a", "Z", "7", " ", "  ", "é", "漢", "-", ".", "/", ":", "?", "=", "%", "#", "&", "<", ">",
             '"', "'", ";", "{{ 1 }}", "\n", "\t", "\u00a0", ""]


# Values a mail really gets: names in several scripts, with the characters HTML mode escapes
# (contact strings), URLs with queries. Most are inert, so the once path is what gets compared.
_USUAL = ["Ann", "Zoë O'Neil", "Jean-Luc", "山田 太郎", "ليلى", "A & B <Ltd>", "\"Quoted\"", "42",
          "https://a.test/x?y=1&z=2", "$12.50", "50%", "x;y", "éa"]


def _value(rng: random.Random, usual: bool) -> str:
    if usual:
        return rng.choice(_USUAL)
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(0, 6)))


def _strings(data, rng, usual: bool):
    """The data with every string replaced by another (same shape, same non-strings)."""
    if isinstance(data, dict):
        return {k: _strings(v, rng, usual) for k, v in data.items()}
    if isinstance(data, list):
        return [_strings(v, rng, usual) for v in data]
    return _value(rng, usual) if isinstance(data, str) and not data.startswith("http") else data


def _full_path(monkeypatch, case, data):
    with monkeypatch.context() as patch:
        patch.setattr(path, "_plan", lambda doc: None)
        return render(golden.content(case), data, golden.options(case)).wire()


@pytest.mark.parametrize("name", golden.NAMES)
def test_rendering_once_gives_the_full_path_output(name, monkeypatch):
    case = golden.load(name)
    rng = random.Random(name)
    clear_cache()
    render(golden.content(case), case["data"], golden.options(case))  # the plan is made on the 2nd render
    planned = 0
    for i in range(60):
        data = case["data"] if i == 0 else _strings(copy.deepcopy(case["data"]), rng, usual=i % 2 == 0)
        fast = render(golden.content(case), data, golden.options(case)).wire()
        assert fast == _full_path(monkeypatch, case, data), (name, data)
        doc = path._document_of(golden.content(case), golden.options(case))
        if doc.plan is not path._NO_PLAN and doc.plan is not None:
            planned += doc.template is None or doc.plan.values(doc.template, liquid.html_data(data)) is not None
    # Documents with Liquid tags have no plan; the others must take it for most recipients, or
    # this test would compare the full path with itself.
    if name in ("newsletter_en", "promo_ar", "reset_ja"):
        assert planned >= 15, planned
