"""Who imports whom: ``launch/`` (installed as ``rlscale.launch``) uses ``rlscale``, never the other way round,
the modules of ``rlscale`` (its subpackages' included) import each other without a cycle (imports for type
checking only aside), and nothing claims the generic top-level names
``envs``, ``launch`` or ``configs``. Every import statement counts, function-local ones included."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "rlscale"
# The design card's folders, installed under rlscale (pyproject.toml's package-dir).
FOLDERS = {"envs": "rlscale.envs", "launch": "rlscale.launch", "configs": "rlscale.configs"}


def _imported(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (``from a import b`` names ``a`` and
    ``a.b``, since ``b`` may be a module), except those under ``if TYPE_CHECKING:`` (never executed)."""
    names: set[str] = set()
    nodes = [ast.parse(path.read_text(), str(path))]
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            nodes.extend(node.orelse)
            continue
        nodes.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path.name}: relative import (write rlscale.<module>)")
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, set[str]]:
    """Every module of rlscale, its subpackages' included, except the top ``rlscale/__init__.py``."""
    return {_module_name(p): _imported(p) for p in sorted(PACKAGE.rglob("*.py")) if p != PACKAGE / "__init__.py"}


# The command line is the top of both packages: `rlscale sweep` hands its arguments to launch.launcher.
# It is the one module of rlscale that may import launch, and no module of rlscale imports it.
ENTRY_POINT = "rlscale.cli"


def test_rlscale_never_imports_launch():
    offenders = {
        module: sorted(n for n in names if n == "rlscale.launch" or n.startswith("rlscale.launch."))
        for module, names in {**_modules(), "rlscale": _imported(PACKAGE / "__init__.py")}.items()
        if module != ENTRY_POINT
    }
    assert {m: n for m, n in offenders.items() if n} == {}
    assert sorted(m for m, names in _modules().items() if ENTRY_POINT in names and m != ENTRY_POINT) == []


def test_the_rlscale_modules_import_each_other_without_a_cycle():
    modules = _modules()
    # A module's own packages are not counted: Python runs a package's __init__ before any module in it.
    graph = {m: sorted(n for n in names if n in modules and not (m + ".").startswith(n + ".")) for m, names in modules.items()}
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


def test_no_file_imports_the_folders_by_their_generic_top_level_names():
    files = [p for folder in ("rlscale", *FOLDERS, "tests", "benchmarks") for p in sorted((REPO / folder).rglob("*.py"))]
    offenders = {
        str(p.relative_to(REPO)): sorted(n for n in _imported(p) if n.split(".")[0] in FOLDERS)
        for p in files
    }
    assert {f: n for f, n in offenders.items() if n} == {}
    assert len(files) > 50  # the walk found the tree


def test_installed_package_claims_only_the_rlscale_name(tmp_path):
    # From a directory outside the repository (so the working directory cannot supply the names):
    # the folders import as rlscale.*, their data files are found, and `import envs` finds nothing.
    probe = (
        "import importlib.util, importlib.resources as r\n"
        "import rlscale.envs, rlscale.launch.launcher\n"
        "assert rlscale.envs.make('point_u_maze').spec.name == 'point_u_maze'\n"
        "assert r.files('rlscale.configs').joinpath('tasks', 'point_u_maze.yaml').is_file()\n"
        "assert r.files('rlscale.envs').joinpath('assets', 'arm.xml').is_file()\n"
        f"print([importlib.util.find_spec(n) for n in {sorted(FOLDERS)!r}])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[None, None, None]"


def test_a_source_checkout_without_install_maps_the_folders(tmp_path):
    # As on the GPU device: the working tree on sys.path, no installed mapping (the editable finder
    # removed): rlscale's own finder serves rlscale.envs and rlscale.launch from the checkout.
    probe = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '').lower()]\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import rlscale.envs, rlscale.launch.sweepfile\n"
        "from rlscale.envs.mazes import maze\n"
        "print(rlscale.envs.__file__, type(sys.meta_path[0]).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(REPO / "envs" / "__init__.py"), "_SourceCheckoutFinder"]


def test_another_checkout_on_pythonpath_uses_its_own_folders(tmp_path):
    """A second checkout (a git worktree) on PYTHONPATH beside the installed one: its rlscale imports its
    own rlscale.envs, rlscale.launch and rlscale.configs, not the installed checkout's."""
    import shutil

    other = tmp_path / "worktree"
    for folder in ("rlscale", "envs", "launch", "configs"):
        shutil.copytree(REPO / folder, other / folder, ignore=shutil.ignore_patterns("__pycache__"))
    probe = "import rlscale.envs, rlscale.launch, rlscale.configs as c, rlscale\nprint(rlscale.__file__, rlscale.envs.__file__, rlscale.launch.__file__, c.__file__)\n"
    env = {**os.environ, "PYTHONPATH": str(other)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(other / f / "__init__.py") for f in ("rlscale", "envs", "launch", "configs")]


def test_training_imports_without_gymnasium():
    """The GPU device image has no gymnasium: the trainer and the agents must import without it (the gymnasium
    ids are registered only where gymnasium is installed)."""
    code = (
        "import sys; sys.modules['gymnasium'] = None\n"  # `import gymnasium` now raises ImportError
        "import rlscale.agents, rlscale.training.loop, rlscale.evaluation.policy, rlscale.envs\n"
        "assert 'point_u_maze' in rlscale.envs.names()\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
