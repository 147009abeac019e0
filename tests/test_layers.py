"""The package's architecture: runtime imports only go down the layers, there is no import cycle, modules stay small,
one atomic writer. Read from the source with ``ast`` (function-level imports count; ``if TYPE_CHECKING:`` does not)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lang2net"

# prefix -> layer; a module may import its own layer and those below. The root package imports nothing at run time
# (its names load lazily), so every module may read from it (``__version__``).
LAYERS = {
    "lang2net": -1,
    "lang2net.utils": 0,
    "lang2net.engine": 1,
    "lang2net.config": 2,
    "lang2net.backbones": 2,
    "lang2net.text": 2,
    "lang2net.heads": 2,
    "lang2net.generator": 3,
    "lang2net.data": 3,
    "lang2net.io": 4,
    "lang2net.task": 5,
    "lang2net.adapter": 6,
    "lang2net.explain": 7,
    "lang2net.workflows": 8,
    "lang2net.apps": 9,
}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    if not base.startswith("lang2net"):
        return []
    # "from pkg import submodule" imports the submodule; "from module import name" the module
    out = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return sorted(set(out))


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lang2net"))
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, path, node))
    return {m for m in found if m != module}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_import_target_exists():
    missing = sorted((m, i) for m, deps in GRAPH.items() for i in deps if i not in MODULES)
    assert missing == []


def test_imports_only_go_down_the_layers():
    upward = sorted(
        f"{m} (layer {_layer(m)}) imports {i} (layer {_layer(i)})"
        for m, deps in GRAPH.items()
        for i in deps
        if _layer(i) > _layer(m)
    )
    assert upward == []


def test_the_root_package_imports_nothing_at_run_time():
    assert GRAPH["lang2net"] == set()


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize(
    ("module", "deps", "expected"),
    [
        ("lang2net.io.folders", {"lang2net.task"}, "upward"),
        ("lang2net.engine.injection", {"lang2net.config"}, "upward"),
        ("lang2net.task", {"lang2net.io.folders"}, "down"),
    ],
)
def test_the_layer_rule_itself(module, deps, expected):
    """The checker flags what it must (a check that cannot fail would pass an io -> task import too)."""
    upward = any(_layer(d) > _layer(module) for d in deps)
    assert upward == (expected == "upward")


def test_the_checker_sees_function_level_imports_and_skips_type_checking(tmp_path):
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..task import TaskAdaptation\n"
        "def f():\n    from ..adapter import LanguageConditionedAdapter\n"
    )
    tree = ast.parse(source)
    names = {
        n.module for n in _runtime_nodes(tree) if isinstance(n, ast.ImportFrom) and n.module not in (None, "typing")
    }
    assert names == {"adapter"}


def test_modules_stay_small():
    big = {m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert big == {}


def test_one_atomic_writer():
    """Every rename-into-place goes through lang2net.utils.atomic (at most two os.replace call sites in all)."""
    sites = [
        (m, node.lineno)
        for m, p in MODULES.items()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("replace", "rename")
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "os"
    ]
    assert len(sites) <= 2 and {m for m, _ in sites} <= {"lang2net.utils.atomic"}, sites
