"""Files shipped with rlscale, read through ``importlib.resources`` (never the working directory): task
presets (``tasks/``), sweep files (``sweeps/``), the paper's published numbers (``paper_results.yaml``) and
studies (``studies/``): the per-seed learning curves and the verdict of finished experiments, such as the
pre-registered depth-effect confirmation (benchmarks/depth_effect_cpu.md), that a sweep's figure draws
beside the user's own runs (a sweep file's ``reference_study``)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def studies() -> list[str]:
    """Names of the shipped studies (``studies/<name>.json``)."""
    folder = resources.files(__name__) / "studies"
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_study(name: str) -> dict[str, Any]:
    """A shipped study by name; a ``ValueError`` naming the valid ones for an unknown name."""
    if name not in studies():
        raise ValueError(f"unknown study {name!r}; valid: {', '.join(studies()) or 'none'}")
    return json.loads((resources.files(__name__) / "studies" / f"{name}.json").read_text())
