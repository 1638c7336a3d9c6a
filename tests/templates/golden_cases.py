"""The golden templates under golden/: loading a case and rendering it the way the tests and the
render bench do. A case is `golden/<name>/case.json`: `content` (Content's fields), `data`,
`options` (Options' fields; with `tracking`, deterministic hooks stand in for engagement's)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from postroom.templates.render import Content, Options

GOLDEN = Path(__file__).resolve().parent / "golden"
NAMES = sorted(p.parent.name for p in GOLDEN.glob("*/case.json"))


def load(name: str) -> dict:
    return json.loads((GOLDEN / name / "case.json").read_text())


def hooks(endpoint: str) -> dict:
    """Tracking hooks whose URLs show the destination (UTM included), so the golden HTML is
    stable and readable; engagement's tokens take their place in real sends."""
    return {"click_url": lambda url, index: f"{endpoint}/r/{quote(url, safe='')}",
            "open_url": lambda: f"{endpoint}/t/open"}


def content(case: dict) -> Content:
    return Content(**case["content"])


def options(case: dict) -> Options:
    spec = dict(case["options"])
    if spec.get("tracking"):
        spec.update(hooks(spec["endpoint"]))
    return Options(**spec)
