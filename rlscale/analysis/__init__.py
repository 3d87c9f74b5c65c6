"""Analysis of finished runs: the per-run score and the depth-effect test (``scores``, no pandas), and the
tables, aggregates, fits and figures of a sweep (``sweeps``, needs pandas), shared by ``rlscale plot``,
``rlscale sweep``'s summary and ``notebooks/scaling.ipynb``. Definitions: docs/metrics.md.

``from rlscale import analysis; analysis.load_sweep(...)`` reaches the sweep API without importing pandas
until a name of it is used, so that ``rlscale.analysis.scores`` stays importable without the extras."""

import importlib

_SUBMODULES = ("scores", "sweeps")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    sweeps = importlib.import_module(f"{__name__}.sweeps")
    try:
        return getattr(sweeps, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
