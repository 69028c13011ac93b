"""Imports run only downwards, floor by floor, as ``ARCHITECTURE.md`` lays the house out; and no
module imports itself back through others at import time (no import circles)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

#: Floors, lowest first: a module may import from its own floor and the floors below.
FLOORS = {
    1: ("exengine.kernel",),
    2: (
        "exengine.device_types",
        "exengine.processors",
        "exengine.channel_colors",
        "exengine.dask_location",
        "exengine.dask_processing",
        "exengine.storage",
    ),
    3: ("exengine.events", "exengine.devices", "exengine.backends"),
    4: (
        "exengine.acquisition",
        "exengine.acquisition_status",
        "exengine.plans",
        "exengine.plan_helpers",
        "exengine.resumed_plan",
    ),
    5: ("napari_exengine",),
}
#: Modules that only re-export (their floor is that of what they import).
RE_EXPORTS = (
    "exengine",
    "exengine.base_classes",
    "exengine.data",
    "exengine.notifications",
    "exengine.storage_backends",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def imports(name: str, top_level_only: bool = False) -> set[str]:
    """The project's modules that ``name`` imports (at import time only, when asked)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def re_exports(name: str) -> bool:
    return any(name == r or name.startswith(r + ".") for r in RE_EXPORTS[1:]) or name == "exengine"


def floor(name: str) -> float:
    if re_exports(name):
        return max((floor(target) for target in imports(name)), default=1)
    for level, prefixes in FLOORS.items():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{name} is on no floor: add it to FLOORS")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_downwards(name):
    own = floor(name)
    upward = sorted(target for target in imports(name) if floor(target) > own)
    assert not upward, f"{name} (floor {own}) imports from above: {upward}"


def test_events_never_import_the_runner():
    for name in MODULES:
        if name.startswith("exengine.events"):
            assert "exengine.acquisition" not in imports(name), name


def test_no_import_circles_at_import_time():
    graph = {name: imports(name, top_level_only=True) for name in MODULES}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError(f"import circle: {' -> '.join(cycle)}")
        if name in done:
            return
        for target in graph[name]:
            if not name.startswith(target + "."):  # a module of a package imports its package
                visit(target, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])
