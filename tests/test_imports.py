"""Who imports whom: ``launch/`` uses ``rlscale``, never the other way round, and the modules of ``rlscale``
import each other without a cycle. Every import statement counts, function-local ones included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlscale"


def _imported(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (``from a import b`` names ``a`` and
    ``a.b``, since ``b`` may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path.name}: relative import (write rlscale.<module>)")
    return names


def _modules() -> dict[str, set[str]]:
    return {f"rlscale.{p.stem}": _imported(p) for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


# The command line is the top of both packages: `rlscale sweep` hands its arguments to launch.launcher.
# It is the one module of rlscale that may import launch, and no module of rlscale imports it.
ENTRY_POINT = "rlscale.cli"


def test_rlscale_never_imports_launch():
    offenders = {
        module: sorted(n for n in names if n == "launch" or n.startswith("launch."))
        for module, names in {**_modules(), "rlscale": _imported(PACKAGE / "__init__.py")}.items()
        if module != ENTRY_POINT
    }
    assert {m: n for m, n in offenders.items() if n} == {}
    assert sorted(m for m, names in _modules().items() if ENTRY_POINT in names and m != ENTRY_POINT) == []


def test_the_rlscale_modules_import_each_other_without_a_cycle():
    modules = _modules()
    graph = {m: sorted(n for n in names if n in modules and n != m) for m, names in modules.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for other in graph[module]:
            visit(other, path + [module])
        done.add(module)

    for module in graph:
        visit(module, [])
