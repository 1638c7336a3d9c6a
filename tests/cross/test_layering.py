"""The import order of the code, checked by walking every module's imports with `ast`.

    platform <- auth, workspaces <- events <- timeline <- contacts <- lists <- customevents <- segments
             <- templates <- delivery <- tracking, inbound <- preferences <- broadcasts <- console

`platform/` imports no capability; a capability's model and store modules import only their own
layer and those below; no two modules import each other through any chain (imports inside
functions count: a late import hides a cycle, it does not remove it). `api.py` modules, the read
planners they call, `app.py`, `cli.py` and `workers/` sit above every store and may import any
capability.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "postroom"
ORDER = ["platform", ("auth", "workspaces"), "events", "timeline", "contacts", "lists", "customevents", "segments",
         "templates", "delivery", ("tracking", "inbound"), "preferences", "broadcasts", "console"]
RANK = {name: i for i, names in enumerate(ORDER) for name in ((names,) if isinstance(names, str) else names)}
LOWER_LEVEL = ("model", "store", "bulk", "bulk_store", "secrets", "dispatch")  # modules below the api level



def _module_name(path: Path) -> str:
    parts = ["postroom", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the postroom modules it imports anywhere in its body."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("postroom"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("postroom"):
                for alias in node.names:  # `from postroom.lists import store` names a module
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
        found.discard(name)
        out[name] = {m for m in found if m in modules}
    return out


def _capability(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def _wrong_way(importer: str, imported: str) -> bool:
    here, there = _capability(importer), _capability(imported)
    if here == "platform":
        return there != "platform"
    if here not in RANK or here == there or importer.rsplit(".", 1)[1] not in LOWER_LEVEL:
        return False
    return there is None or there not in RANK or RANK[there] > RANK[here]


def test_no_module_imports_upward():
    graph = _imports()
    wrong = {(a, b) for a, targets in graph.items() for b in targets if _wrong_way(a, b)}
    assert wrong == set(), "imports pointing up the layers (see this module's docstring)"


def test_no_import_cycles():
    graph = _imports()
    edges = graph
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_walk_sees_a_late_import():
    # webhooks.capability imports webhooks.delivery inside a function (start_loops): the walk must find it
    assert "postroom.webhooks.delivery" in _imports()["postroom.webhooks.capability"]


def test_the_timeline_imports_no_capability():
    # the timeline sits under contacts and lists and records for them all: it knows only the
    # platform and the outbox, its api module included
    graph = _imports()
    found = {b for a, targets in graph.items() if _capability(a) == "timeline" for b in targets}
    assert {_capability(b) for b in found} <= {"platform", "events", "timeline"}
