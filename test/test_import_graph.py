"""The package's import graph: the robot runtime never imports training, no cycles.

Static (every ``import`` statement, also those inside functions) and dynamic (what
importing the runtime really loads) walks over the installed `fit3d_ros` package.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fit3d_ros

PKG = Path(fit3d_ros.__file__).resolve().parent
RUNTIME = ("fit3d_ros.pipeline", "fit3d_ros.nodes", "fit3d_ros.sensors", "fit3d_ros.msgs",
           "fit3d_ros.logs", "fit3d_ros.mapping")
TRAINING = "fit3d_ros.training"


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (through its sub-package links)."""
    found = {}
    files = [Path(d) / f for d, _, fs in os.walk(PKG, followlinks=True) for f in fs]
    for path in sorted(p for p in files if p.suffix == ".py"):
        parts = path.relative_to(PKG).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(("fit3d_ros",) + parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The longest known module prefix of `name` (``pkg.mod.Symbol`` -> ``pkg.mod``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, top_level_only: bool) -> set[str]:
    """Package modules that `module` imports (relative imports resolved)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for n in names:
            hit = _resolve(n)
            if hit is not None and hit != module:
                out.add(hit)
    return out


def _closure(start: str) -> dict[str, str]:
    """Every module reachable from `start` -> the module that first imported it."""
    seen, todo = {start: ""}, [start]
    while todo:
        m = todo.pop()
        for dep in _imports(m, top_level_only=False):
            if dep not in seen:
                seen[dep] = m
                todo.append(dep)
    return seen


def _chain(seen: dict[str, str], end: str) -> list[str]:
    chain = [end]
    while seen[chain[-1]]:
        chain.append(seen[chain[-1]])
    return chain[::-1]


def test_the_walk_sees_the_package():
    assert "fit3d_ros.training.fit3d.lift" in MODULES
    assert "fit3d_ros.models.checkpoint" in MODULES
    # the walk finds real edges (so an empty result below means something)
    assert "fit3d_ros.models.checkpoint" in _closure("fit3d_ros.pipeline.segmenter")
    assert "fit3d_ros.training.ditr.train" in _closure("fit3d_ros.cli.seg")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(RUNTIME)))
def test_runtime_module_never_reaches_training(module):
    seen = _closure(module)
    bad = sorted(m for m in seen if m == TRAINING or m.startswith(TRAINING + "."))
    assert not bad, f"{module} imports training: {' -> '.join(_chain(seen, bad[0]))}"


def test_no_import_cycles_at_module_level():
    graph = {m: _imports(m, top_level_only=True) for m in MODULES}
    # a package's __init__ importing its own sub-modules is not a cycle for Python
    for m in graph:
        graph[m] = {d for d in graph[m] if not (MODULES[m].name == "__init__.py"
                                                and d.startswith(m + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_importing_the_runtime_loads_no_training_module():
    runtime = sorted(m for m in MODULES if m.startswith(RUNTIME)
                     and not m.endswith("__main__"))
    code = ("import importlib, sys\n"
            f"for m in {runtime!r}:\n"
            "    try:\n"
            "        importlib.import_module(m)\n"
            "    except ImportError as exc:\n"  # nodes need rclpy: still no training
            "        print('skip', m, exc, file=sys.stderr)\n"
            f"print(sorted(m for m in sys.modules if m.startswith({TRAINING!r})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
