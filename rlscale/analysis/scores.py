"""A run's score (docs/metrics.md#per-run-the-score), defined once: ``rlscale sweep``'s ``summary.csv`` and
``summary.png`` (``launch/summary.py``), ``rlscale plot`` and the notebook (``rlscale.analysis.sweeps``) all take it
from here, so they show the same number for the same run.

* **Normalised score** of an evaluation: time at goal (``eval/episode_success``, in steps) divided by the
  episode length, in [0, 1].
* **Run score**: the mean normalised score over the run's last :data:`LAST_EVALS` evaluations (all of them
  when it has fewer). Time at goal in steps and success-any are averaged over the same evaluations.
* **Across seeds** (docs/metrics.md#across-seeds-intervals-and-the-depth-effect-test): the 95 % Student-t
  half-width of the seeds' mean (:func:`t_halfwidth`); the depth-effect test (:func:`welch`, applied by
  :func:`depth_effect` and :func:`critical_depth`): depth D beats depth 4 when the two-sided 95 % Welch
  interval of mean(D) − mean(4) lies above zero; and the rule used before it (:func:`beats`: the
  difference of the means exceeds the two half-widths added), still reported beside it.

Plain Python (no pandas), so that a sweep's summary needs none of the analysis extras.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from rlscale.metric_keys import BLOCK_NORMS_PREFIX, ENV_STEPS, SUCCESS_ANY, TIME_AT_GOAL  # noqa: F401 (re-exported)

LAST_EVALS = 5


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def normalised(time_at_goal: float, episode_length: int) -> float:
    """The normalised score of one evaluation: the fraction of the episode spent at the goal."""
    return float(time_at_goal) / episode_length


def evaluations(metrics: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` that hold an evaluation (a numeric time at goal), in env-step
    order (file order among rows without ``training/env_steps``)."""
    rows = [m for m in metrics if _number(m.get(TIME_AT_GOAL))]
    return sorted(rows, key=lambda m: m.get(ENV_STEPS) if _number(m.get(ENV_STEPS)) else -1)


def _mean(values: Sequence[Any]) -> float | None:
    numbers = [float(v) for v in values if _number(v)]
    return sum(numbers) / len(numbers) if numbers else None


def run_score(time_at_goal: Sequence[float], success_any: Sequence[float | None], episode_length: int,
              last: int = LAST_EVALS) -> dict[str, Any]:
    """The score of a run from its evaluations in order (time at goal in steps, success-any; a missing
    success-any is None or NaN): ``score`` (normalised), ``time_at_goal`` (steps) and ``success_any``, each
    the mean over the last ``last`` evaluations (None without evaluations), and ``num_evals``."""
    if len(success_any) != len(time_at_goal):
        raise ValueError(f"{len(time_at_goal)} times at goal but {len(success_any)} success-any values")
    tail = slice(max(0, len(time_at_goal) - last), None)
    return {
        "score": _mean([normalised(t, episode_length) for t in time_at_goal[tail]]),
        "time_at_goal": _mean(time_at_goal[tail]),
        "success_any": _mean(success_any[tail]),
        "num_evals": len(time_at_goal),
    }


def score_of_metrics(metrics: Iterable[dict[str, Any]], episode_length: int, last: int = LAST_EVALS) -> dict[str, Any]:
    """:func:`run_score` of a run's ``metrics.jsonl`` rows (``rlscale.storage.run_dir.read_metrics``)."""
    evals = evaluations(metrics)
    return run_score([m[TIME_AT_GOAL] for m in evals], [m.get(SUCCESS_ANY) for m in evals], episode_length, last)


def t_halfwidth(values: Sequence[float]) -> float:
    """95 % Student-t half-width of the mean of ``values`` (infinite with fewer than 2 values)."""
    from scipy.stats import t

    values = [float(v) for v in values]
    if len(values) < 2:
        return math.inf
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return float(t.ppf(0.975, len(values) - 1) * std / math.sqrt(len(values)))


def beats(mean_a: float, halfwidth_a: float, mean_b: float, halfwidth_b: float) -> bool:
    """Whether setting a beats setting b: its mean exceeds b's by more than the two 95 % half-widths summed."""
    return bool(mean_a - mean_b > halfwidth_a + halfwidth_b)


def welch(deep: Sequence[float], shallow: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """The depth-effect test (docs/metrics.md#across-seeds-intervals-and-the-depth-effect-test): the two-sided
    ``confidence`` Welch interval of mean(deep) − mean(shallow), seeds independent, variances unequal.

    Returns ``diff``, ``low``, ``high``, ``df`` (Welch–Satterthwaite), ``p`` (two-sided), ``n_deep``,
    ``n_shallow`` and ``holds``: the interval lies above zero. With fewer than 2 seeds on a side, or no
    spread on both, the interval is infinite (or degenerate at the difference) and ``p`` is None."""
    from scipy.stats import t

    a, b = [float(v) for v in deep], [float(v) for v in shallow]
    out: dict[str, Any] = {"n_deep": len(a), "n_shallow": len(b)}
    if not a or not b:
        return {**out, "diff": None, "low": None, "high": None, "df": None, "p": None, "holds": False}
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    diff = mean_a - mean_b
    if len(a) < 2 or len(b) < 2:
        return {**out, "diff": diff, "low": -math.inf, "high": math.inf, "df": None, "p": None, "holds": False}
    var_a = sum((v - mean_a) ** 2 for v in a) / (len(a) - 1) / len(a)
    var_b = sum((v - mean_b) ** 2 for v in b) / (len(b) - 1) / len(b)
    se = math.sqrt(var_a + var_b)
    if se == 0:
        return {**out, "diff": diff, "low": diff, "high": diff, "df": None, "p": None, "holds": diff > 0}
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    half = float(t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * t.sf(abs(diff) / se, df))
    return {**out, "diff": diff, "low": diff - half, "high": diff + half, "df": df, "p": p, "holds": diff - half > 0}


def depth_effect(by_depth: dict[int, Sequence[float]], shallow: int = 4) -> list[dict[str, Any]]:
    """The depth-effect test of every depth deeper than ``shallow`` against it, from the seeds' scores per
    depth: one dict per deeper depth with ``deep``, ``shallow``, the seed counts, ``difference``, the Welch
    result (``low``, ``high``, ``p``, ``holds``) and the old rule's ``needed`` (the two half-widths added) and
    ``old_rule`` (its verdict). Empty without ``shallow``."""
    if shallow not in by_depth:
        return []
    base = [float(v) for v in by_depth[shallow]]
    out = []
    for depth in sorted(d for d in by_depth if d > shallow):
        deep = [float(v) for v in by_depth[depth]]
        test = welch(deep, base)
        hw_deep, hw_shallow = t_halfwidth(deep), t_halfwidth(base)
        out.append({
            "deep": depth, "shallow": shallow, "seeds": (len(deep), len(base)),
            "difference": test["diff"], "low": test["low"], "high": test["high"], "p": test["p"], "holds": test["holds"],
            "needed": hw_deep + hw_shallow, "old_rule": beats(test["diff"], hw_deep, 0.0, hw_shallow),
        })
    return out


def critical_depth(by_depth: dict[int, Sequence[float]], old_rule: bool = False) -> int | None:
    """The smallest depth whose seeds beat those of the previous depth run by the depth-effect test (its 95 %
    Welch interval of the difference above zero); None when no step does. ``old_rule``: by the rule used
    before the test (the mean above the previous depth's by more than the two 95 % half-widths added),
    reported beside it for readers of earlier results."""
    depths = sorted(by_depth)
    for prev, depth in zip(depths, depths[1:]):
        deep, shallow = [float(v) for v in by_depth[depth]], [float(v) for v in by_depth[prev]]
        if old_rule:
            holds = beats(sum(deep) / len(deep), t_halfwidth(deep), sum(shallow) / len(shallow), t_halfwidth(shallow))
        else:
            holds = welch(deep, shallow)["holds"]
        if holds:
            return int(depth)
    return None
