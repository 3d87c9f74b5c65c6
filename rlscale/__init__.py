"""rlscale: scaling self-supervised goal-conditioned RL in depth (contrastive RL with deep residual MLPs)."""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"

# The design card's top-level folders, installed as rlscale.envs, rlscale.launch and rlscale.configs
# (pyproject.toml's package-dir) so that rlscale claims no generic import name such as `envs`.
SOURCE_FOLDERS = {"rlscale.envs": "envs", "rlscale.launch": "launch", "rlscale.configs": "configs"}


class _SourceCheckoutFinder(importlib.abc.MetaPathFinder):
    """Maps those names onto the folders of the source checkout this ``rlscale`` was imported from: used
    without ``pip install`` (on PYTHONPATH, as on the GPU device), or beside an install of another
    checkout (a git worktree on PYTHONPATH), its own ``envs``, ``launch`` and ``configs`` go with it."""

    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        folder = SOURCE_FOLDERS.get(fullname)
        if folder is None:
            return None
        location = self.root / folder
        return importlib.util.spec_from_file_location(
            fullname, location / "__init__.py", submodule_search_locations=[str(location)]
        )


def _map_source_checkout() -> None:
    root = Path(__file__).resolve().parent.parent
    if not (root / "envs" / "__init__.py").is_file():  # an installed (non-editable) rlscale: its own mapping
        return
    if not any(isinstance(f, _SourceCheckoutFinder) and f.root == root for f in sys.meta_path):
        # Before the installed mapping, which may point at another checkout.
        sys.meta_path.insert(0, _SourceCheckoutFinder(root))


_map_source_checkout()


def load_policy(path, deterministic: bool = True):
    """A checkpoint's jitted policy ``obs -> action`` and its task name (see :mod:`rlscale.evaluation.policy`)."""
    from rlscale.evaluation.policy import load_policy as load

    return load(path, deterministic)
