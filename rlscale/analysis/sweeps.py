"""Scaling analysis of a sweep: tidy tables, rliable aggregates, fits and figures.

Shared by ``rlscale plot SWEEP_DIR`` and ``notebooks/scaling.ipynb``.

Definitions (docs/metrics.md):

* **Normalised score** of an evaluation = time at goal (``eval/episode_success``) / ``episode_length``,
  in [0, 1]. The published numbers (``configs/paper_results.yaml``, out of 1000 steps) are normalised
  the same way.
* **Run score** = mean normalised score over the run's last 5 evaluations. Both are defined in
  :mod:`rlscale.analysis.scores` (``LAST_EVALS``), which ``rlscale sweep``'s ``summary.csv`` uses too.
  Evaluation episodes are already averaged within a run, so seeds are the unit of replication.
* **Aggregates** (rliable): for each setting (e.g. each depth) a score matrix of shape
  ``(num_runs, num_tasks)`` (rows: seeds, columns: tasks; never the other way round), IQM and mean with
  95 % stratified-bootstrap percentile intervals (resampling seeds within each task).
* **Per-task intervals**: mean over seeds ± the 95 % Student-t half-width ``t(0.975, n-1) · sd / sqrt(n)``
  (infinite with one seed).
* **Depth-effect test** (``rlscale.analysis.scores``, docs/metrics.md): depth D beats depth 4 when the two-sided
  95 % Welch interval of mean(D) − mean(4) lies above zero; :func:`depth_effect` applies it, and reports
  the old rule (``mean(a) - mean(b) > hw(a) + hw(b)``, the two 95 % half-widths summed) beside it.
* **Critical depth** of a task: the smallest depth d (in the sorted list of depths run) that beats the
  previous depth by the test (``critical_depth_old_rule``: by the old rule). None when no step qualifies.
* **Saturating fit**: ``score = lo + (hi - lo) / (1 + exp(-k (log2(depth) - x0)))`` fitted to the run
  scores with ``scipy.optimize.curve_fit``; needs at least 4 distinct depths, otherwise the table says why.
* **Score per goal distance** (the stitching mazes, docs/tasks.md#stitching-mazes): a run's score over
  the episodes whose goal was d cells away (``eval/episode_success_d<d>``, already averaged over those
  episodes by ``rlscale.evaluation.rollout``), normalised and averaged over the last 5 evaluations as the run score;
  mean over seeds with 95 % Student-t half-widths per depth and distance (:func:`goal_distance_table`).
* **FLOPs per SGD step**: the matrix products of one ``Agent.sgd_step``, counted from the Dense layers'
  weights, ``B (6 P_a + 10 P_φ + 8 P_ψ)`` less the first layers' unneeded input gradients
  (``rlscale.sizes.sgd_step_flops``; ``rlscale.flops``' docstring derives it and says what is not counted).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlscale import metric_keys
from rlscale.analysis import scores as run_scoring
from rlscale.analysis.scores import (  # noqa: F401 (part of this module's API)
    BLOCK_NORMS_PREFIX,
    LAST_EVALS,
    beats,
    critical_depth,
    t_halfwidth,
    welch,
)
from rlscale.storage.run_dir import (
    CONFIG_FILE,
    atomic_output,
    find_run_dirs,
    is_complete,
    read_config,
    read_metrics,
)

SCORE_COLUMNS = ["score", "time_at_goal", "success_any", "num_evals"]  # rlscale.analysis.scores.run_score's
CONFIG_COLUMNS = ["task", "algo", "depth", "actor_depth", "critic_depth", "width", "batch_size", "seed", "activation",
                  "norm", "residual", "episode_length", "collector_depth"]
# Knobs that may split a task's runs into separate lines (besides depth and seed); the algorithm first, so
# that a baselines sweep (configs/sweeps/paper_baselines.yaml) draws a line per algorithm, as the paper's Fig. 13.
VARIANT_KNOBS = ["algo", "width", "batch_size", "activation", "norm", "residual", "actor_depth", "collector_depth"]
# A run that collects its own data has no separate collector (docs/method.md#collector-experiment).
OWN_COLLECTOR = "self"
FIGURES = ["score_vs_depth", "learning_curves", "batch_depth", "width_depth", "actor_critic", "wallclock", "stitching",
           "block_norms", "collector"]
# The objective's options: a sweep comparing energies or InfoNCE variants (configs/sweeps/paper_quasimetric.yaml)
# draws one line for each.
OBJECTIVE_KNOBS = ["energy", "contrastive_loss"]
CONFIG_COLUMNS += OBJECTIVE_KNOBS
VARIANT_KNOBS += OBJECTIVE_KNOBS


class AnalysisError(ValueError):
    """Bad input to the analysis (e.g. a directory without runs); the message is one line."""


# --- loading ---------------------------------------------------------------------------------------


def run_dirs(sweep_dir: str | os.PathLike) -> list[Path]:
    """The run directories of a sweep directory, sorted by name, or a run directory itself
    (``rlscale.storage.run_dir.find_run_dirs``)."""
    path = Path(sweep_dir)
    if not path.is_dir():
        raise AnalysisError(f"{path} is not a directory")
    found = find_run_dirs(path)
    if not found:
        raise AnalysisError(f"{path} holds no run directories (no */{CONFIG_FILE}); run `rlscale sweep` first")
    return found


def load_sweep(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """Tidy table: one row per run × evaluation, with the run's settings, size, cost and scores."""
    return load_runs(run_dirs(sweep_dir), str(sweep_dir))


def load_runs(dirs: list[Path], source: str = "the runs") -> pd.DataFrame:
    """:func:`load_sweep`'s table for the run directories ``dirs``."""
    from rlscale.config import TrainConfig
    from rlscale.sizes import agent_param_count, flops_per_sgd_step

    rows = []
    for run_dir in map(Path, dirs):
        cfg = TrainConfig.from_dict(read_config(run_dir)["config"], source=str(run_dir / CONFIG_FILE), saved=True)
        base = {
            "run": run_dir.name,
            **cfg.scaling_knobs(),
            "activation": cfg.activation,
            "norm": cfg.norm,
            "residual": cfg.residual,
            "episode_length": cfg.episode_length,
            "collector_depth": OWN_COLLECTOR if cfg.collector_depth is None else cfg.collector_depth,
            **{knob: getattr(cfg, knob) for knob in OBJECTIVE_KNOBS},
            "params": agent_param_count(cfg),
            "flops_per_sgd_step": flops_per_sgd_step(cfg),
            "complete": is_complete(run_dir),
        }
        for m in run_scoring.evaluations(read_metrics(run_dir)):
            rows.append(base | {
                "epoch": m.get("epoch"),
                "env_steps": m.get(metric_keys.ENV_STEPS),
                "sgd_steps": m.get(metric_keys.SGD_STEPS),
                "training_s": m.get(metric_keys.TRAINING_TIME),  # training and evaluation alone
                "wallclock_s": m.get(metric_keys.WALLCLOCK),  # real elapsed time (docs/metrics.md#time); NaN: unknown
                "time_at_goal": float(m[metric_keys.TIME_AT_GOAL]),
                "score": run_scoring.normalised(m[metric_keys.TIME_AT_GOAL], cfg.episode_length),
                "success_any": m.get(metric_keys.SUCCESS_ANY),
                "dist": m.get(metric_keys.FINAL_DISTANCE),
                **_goal_distance_columns(m),
                **{key: value for key, value in m.items() if key.startswith(BLOCK_NORMS_PREFIX)},
            })
    if not rows:
        raise AnalysisError(f"{source}: no run has an evaluation yet (metrics.jsonl rows with eval/episode_success)")
    table = pd.DataFrame(rows)
    for key in ("params", "flops_per_sgd_step", "training_s", "wallclock_s", "success_any", "dist"):
        table[key] = pd.to_numeric(table[key], errors="coerce")
    return table


BLOCK_NORM_NETWORKS = {"actor": "actor", "critic_sa": "critic φ(s, a)", "critic_g": "critic ψ(g)"}


# Time at goal over the episodes d cells away.
GOAL_DISTANCE_KEY = re.compile(re.escape(metric_keys.TIME_AT_GOAL + metric_keys.GOAL_DISTANCE_SUFFIX) + r"(\d+)")


def _goal_distance_columns(m: dict[str, Any]) -> dict[str, float]:
    """An evaluation's time at goal and success-any per goal distance d: ``time_at_goal_d<d>``,
    ``success_any_d<d>`` (the stitching mazes; none for other tasks)."""
    out = {}
    for key, value in m.items():
        match = GOAL_DISTANCE_KEY.fullmatch(key)
        if match:
            d = match.group(1)
            out[f"time_at_goal_d{d}"] = float("nan") if value is None else float(value)
            any_d = m.get(metric_keys.per_goal_distance(metric_keys.SUCCESS_ANY, int(d)))
            out[f"success_any_d{d}"] = float("nan") if any_d is None else float(any_d)
    return out


def goal_distances(evals: pd.DataFrame) -> list[int]:
    """The goal distances that a sweep's evaluations report (``time_at_goal_d<d>`` columns), sorted."""
    return sorted(int(c.removeprefix("time_at_goal_d")) for c in evals.columns if re.fullmatch(r"time_at_goal_d\d+", c))


def goal_distance_scores(evals: pd.DataFrame, last: int = LAST_EVALS) -> pd.DataFrame:
    """One row per run and goal distance: the run's settings and its score over the episodes whose goal was
    that far (``rlscale.analysis.scores.run_score`` of the per-distance times at goal and success-any)."""
    scores = run_scores(evals, last)
    settings = scores.assign(variant=variants(scores)).set_index("run")[["task", "variant", "critic_depth", "seed"]]
    rows = []
    for run, g in evals.sort_values(["run", "env_steps"], kind="stable").groupby("run", sort=True):
        for d in goal_distances(evals):
            if g[f"time_at_goal_d{d}"].isna().all():
                continue
            score = run_scoring.run_score(g[f"time_at_goal_d{d}"].tolist(), g[f"success_any_d{d}"].tolist(),
                                          int(g["episode_length"].iloc[0]), last)
            rows.append({"run": run, **settings.loc[run].to_dict(), "goal_distance": d, **score})
    return pd.DataFrame(rows, columns=["run", "task", "variant", "critic_depth", "seed", "goal_distance", *SCORE_COLUMNS])


def goal_distance_table(evals: pd.DataFrame, last: int = LAST_EVALS) -> pd.DataFrame:
    """Per task, variant, depth and goal distance: the seeds' mean score, its 95 % t half-width, the seeds."""
    per_run = goal_distance_scores(evals, last).dropna(subset=["score"])
    rows = [{"task": task, "variant": variant, "critic_depth": depth, "goal_distance": d, "mean": g["score"].mean(),
             "halfwidth": t_halfwidth(g["score"]), "num_seeds": len(g)}
            for (task, variant, depth, d), g in per_run.groupby(["task", "variant", "critic_depth", "goal_distance"])]
    return pd.DataFrame(rows, columns=["task", "variant", "critic_depth", "goal_distance", "mean", "halfwidth", "num_seeds"])


def run_scores(evals: pd.DataFrame, last: int = LAST_EVALS) -> pd.DataFrame:
    """One row per run: its settings and its score (``rlscale.analysis.scores.run_score``: the mean normalised score
    over its last ``last`` evaluations, time at goal and success-any over the same ones)."""
    evals = evals.sort_values(["run", "env_steps"], kind="stable")
    runs = evals.groupby("run", sort=True)
    settings = runs.last()[CONFIG_COLUMNS + ["params", "flops_per_sgd_step", "complete", "env_steps", "wallclock_s", "training_s"]]
    scores = pd.DataFrame.from_dict({
        run: run_scoring.run_score(g["time_at_goal"].tolist(), g["success_any"].tolist(), int(g["episode_length"].iloc[0]), last)
        for run, g in runs
    }, orient="index", columns=SCORE_COLUMNS)
    for key in ("score", "time_at_goal", "success_any"):
        scores[key] = pd.to_numeric(scores[key], errors="coerce")
    return settings.join(scores).reset_index()


def variants(scores: pd.DataFrame) -> pd.Series:
    """A label per run naming the knobs (other than depth and seed) that vary within a task, '' if none.

    Actor depth is a knob only where it differs from the critic depth somewhere."""
    knobs = []
    for knob in VARIANT_KNOBS:
        if knob not in scores.columns:  # a table made without it (by hand, or by an older rlscale)
            continue
        if knob == "actor_depth" and (scores["actor_depth"] == scores["critic_depth"]).all():
            continue
        if (scores.groupby(["task", "critic_depth"])[knob].nunique() > 1).any() or (
            knob != "actor_depth" and scores.groupby("task")[knob].nunique().gt(1).any()
        ):
            knobs.append(knob)
    if not knobs:
        return pd.Series([""] * len(scores), index=scores.index)
    return scores.apply(lambda r: " ".join(f"{k}={r[k]}" for k in knobs), axis=1)


# --- statistics ------------------------------------------------------------------------------------


def iqm(x) -> float:
    """Interquartile mean (25 % trimmed mean of all entries), as rliable's ``aggregate_iqm``."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(x, dtype=float), proportiontocut=0.25, axis=None))


def score_matrix(scores: pd.DataFrame, tasks: list[str] | None = None) -> np.ndarray:
    """Shape (num_runs, num_tasks): column j holds the seeds' scores on task j. Tasks with more seeds
    than others are cut to the smallest count (stratified bootstrap resamples within a column)."""
    tasks = tasks or sorted(scores["task"].unique())
    columns = [scores.loc[scores["task"] == t].sort_values("seed")["score"].to_numpy(float) for t in tasks]
    n = min(len(c) for c in columns)
    return np.stack([c[:n] for c in columns], axis=1)


def interval_estimates(matrices: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """IQM and mean of each (num_runs × num_tasks) matrix with 95 % stratified-bootstrap intervals (rliable)."""
    from rliable import library as rly
    from rliable import metrics

    func = lambda m: np.array([metrics.aggregate_iqm(m), metrics.aggregate_mean(m)])  # noqa: E731
    # rliable 1.2 draws its resampling indices from NumPy's global generator (np.random.choice) whatever
    # random_state says: seed the global generator for reproducible intervals, then restore it.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # rliable passes arch a RandomState the deprecated way
            warnings.simplefilter("ignore", FutureWarning)
            points, intervals = rly.get_interval_estimates(
                dict(matrices), func, reps=reps, random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(state)
    rows = []
    for key, m in matrices.items():
        for i, name in enumerate(("IQM", "mean")):
            rows.append({"group": key, "metric": name, "estimate": float(points[key][i]),
                         "lo": float(intervals[key][0, i]), "hi": float(intervals[key][1, i]),
                         "num_runs": m.shape[0], "num_tasks": m.shape[1]})
    return pd.DataFrame(rows)


def aggregate(scores: pd.DataFrame, by: str = "critic_depth", reps: int = 2000, seed: int = 0) -> pd.DataFrame:
    """IQM and mean over tasks of each value of ``by`` (and each variant), with 95 % bootstrap intervals."""
    scores = scores.assign(variant=variants(scores))
    matrices, keys = {}, {}
    for (variant, value), group in scores.groupby(["variant", by]):
        label = f"{variant} {by}={value}".strip()
        matrices[label] = score_matrix(group)
        keys[label] = (variant, value)
    out = interval_estimates(matrices, reps=reps, seed=seed)
    out.insert(0, "variant", [keys[g][0] for g in out["group"]])
    out.insert(1, by, [keys[g][1] for g in out["group"]])
    return out.drop(columns="group")


def per_task(scores: pd.DataFrame, by: str = "critic_depth") -> pd.DataFrame:
    """Mean score over seeds and its 95 % t half-width per task, variant and value of ``by``."""
    scores = scores.assign(variant=variants(scores))
    rows = []
    for (task, variant, value), g in scores.groupby(["task", "variant", by]):
        rows.append({"task": task, "variant": variant, by: value, "mean": g["score"].mean(),
                     "halfwidth": t_halfwidth(g["score"]), "num_seeds": len(g)})
    return pd.DataFrame(rows)


def depth_effect(scores: pd.DataFrame, deep: int, shallow: int = 4, by: str = "critic_depth") -> pd.DataFrame:
    """Per task (and variant): does depth ``deep`` beat depth ``shallow`` by the depth-effect test
    (``rlscale.analysis.scores.depth_effect``: the 95 % Welch interval of the difference above zero; docs/metrics.md)?

    One row per task and variant that ran both depths: their means, 95 % Student-t half-widths and seed
    counts, the difference of the means, its Welch interval and p-value, ``holds`` (the test's verdict) and
    ``beats`` (the old rule's, kept for readers of earlier results; both False with fewer than 2 seeds on
    either side)."""
    scores = scores.assign(variant=variants(scores))
    rows = []
    for (task, variant), g in scores.groupby(["task", "variant"], sort=True):
        by_depth = {int(d): gd["score"].tolist() for d, gd in g.groupby(by)}
        if deep not in by_depth or shallow not in by_depth:
            continue
        effect = next(e for e in run_scoring.depth_effect({shallow: by_depth[shallow], deep: by_depth[deep]}, shallow))
        d, s_ = by_depth[deep], by_depth[shallow]
        rows.append({
            "task": task, "variant": variant, "deep": deep, "shallow": shallow,
            "mean_deep": float(np.mean(d)), "halfwidth_deep": t_halfwidth(d), "seeds_deep": len(d),
            "mean_shallow": float(np.mean(s_)), "halfwidth_shallow": t_halfwidth(s_), "seeds_shallow": len(s_),
            "difference": effect["difference"], "low": effect["low"], "high": effect["high"], "p": effect["p"],
            "holds": effect["holds"], "beats": effect["old_rule"],
        })
    columns = ["task", "variant", "deep", "shallow", "mean_deep", "halfwidth_deep", "seeds_deep", "mean_shallow",
               "halfwidth_shallow", "seeds_shallow", "difference", "low", "high", "p", "holds", "beats"]
    return pd.DataFrame(rows, columns=columns)


def _logistic(x, lo, hi, k, x0):
    return lo + (hi - lo) / (1.0 + np.exp(-k * (x - x0)))


def saturating_fit(depths, scores) -> dict[str, Any]:
    """Logistic fit of score against log2(depth) (module docstring); ``status`` says 'ok' or why not."""
    x = np.log2(np.asarray(depths, dtype=float))
    y = np.asarray(scores, dtype=float)
    nan = {"fit_lo": np.nan, "fit_hi": np.nan, "fit_slope": np.nan, "fit_mid_depth": np.nan}
    if len(np.unique(x)) < 4:
        return nan | {"fit_status": f"too few depths ({len(np.unique(x))} < 4)"}
    from scipy.optimize import curve_fit

    p0 = [y.min(), y.max(), 1.0, float(np.median(x))]
    bounds = ([-0.5, -0.5, 0.0, x.min() - 4], [1.5, 1.5, 50.0, x.max() + 4])
    try:
        p, _ = curve_fit(_logistic, x, y, p0=p0, bounds=bounds, maxfev=10000)
    except (RuntimeError, ValueError) as err:
        return nan | {"fit_status": f"fit failed: {str(err).splitlines()[0]}"}
    return {"fit_lo": p[0], "fit_hi": p[1], "fit_slope": p[2], "fit_mid_depth": float(2 ** p[3]), "fit_status": "ok"}


def fits(scores: pd.DataFrame) -> pd.DataFrame:
    """Per task (and variant): the depths run, the critical depth and the saturating fit."""
    summary = per_task(scores)
    scores = scores.assign(variant=variants(scores))
    rows = []
    for (task, variant), g in summary.groupby(["task", "variant"]):
        runs_ = scores[(scores["task"] == task) & (scores["variant"] == variant)]
        by_depth = {int(d): gd["score"].tolist() for d, gd in runs_.groupby("critic_depth")}
        row = {"task": task, "variant": variant, "depths": " ".join(str(int(d)) for d in sorted(g["critic_depth"])),
               "critical_depth": critical_depth(by_depth),
               "critical_depth_old_rule": critical_depth(by_depth, old_rule=True)}
        rows.append(row | saturating_fit(runs_["critic_depth"], runs_["score"]))
    out = pd.DataFrame(rows)
    out["critical_depth"] = out["critical_depth"].astype("Int64")
    out["critical_depth_old_rule"] = out["critical_depth_old_rule"].astype("Int64")
    return out


# --- published numbers -----------------------------------------------------------------------------


def paper_results() -> dict[str, Any]:
    """``configs/paper_results.yaml`` (docs/method.md#published-results)."""
    import yaml

    return yaml.safe_load(resources.files("rlscale.configs").joinpath("paper_results.yaml").read_text())


def paper_depth(task: str) -> dict[int, float] | None:
    """Published normalised score against depth for ``task``, or None."""
    paper = paper_results()
    table = paper["depth"].get(task)
    return None if table is None else {int(d): v / paper["episode_length"] for d, v in table.items()}


def paper_references(task: str, runs: pd.DataFrame) -> list[tuple[str, dict[int, float]]]:
    """(label, depth -> normalised score) curves of the paper that match ``task`` and the runs' settings:
    the main depth table; the deeper runs when the sweep goes past depth 64; the ablations (no
    LayerNorm, ReLU) when the sweep has such runs."""
    paper = paper_results()
    scale = 1.0 / paper["episode_length"]
    out = []
    main = paper_depth(task)
    if main:
        out.append(("paper", main))
    deep = paper["depth_deep"].get(task)
    if deep and (runs["critic_depth"] > 64).any():
        out.append((f"paper ({deep['env_steps'] / 1e6:.0f} M steps)", {int(d): v * scale for d, v in deep["scores"].items()}))
    ablations = paper["ablations"].get(task, {})
    for key, label, present in (("no_layer_norm", "paper, no LayerNorm", runs["norm"] == "none"),
                                ("relu", "paper, ReLU", runs["activation"] == "relu")):
        if key in ablations and present.any():
            out.append((label, {int(d): v * scale for d, v in ablations[key].items()}))
    return out


# --- figures -------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log2_axis(ax, depths):
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(depths), [str(int(d)) for d in sorted(depths)])
    ax.minorticks_off()


def _panels(n: int):
    plt = _plt()
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def fig_score_vs_depth(scores: pd.DataFrame, reference: bool = False, reps: int = 2000):
    """Score against log2 depth, one panel per task and an aggregate (IQM) panel; a str when skipped."""
    if scores["critic_depth"].nunique() < 2:
        return "one depth only"
    summary = per_task(scores)
    agg = aggregate(scores, reps=reps)
    tasks = sorted(scores["task"].unique())
    fig, axes = _panels(len(tasks) + 1)
    depths = sorted(scores["critic_depth"].unique())
    for ax, task in zip(axes, tasks):
        for variant, g in summary[summary["task"] == task].groupby("variant"):
            hw = np.where(np.isfinite(g["halfwidth"]), g["halfwidth"], 0.0)
            ax.errorbar(g["critic_depth"], g["mean"], yerr=hw, marker="o", capsize=3, label=variant or "mean ± 95 % CI")
        shown = set(depths)
        refs = paper_references(task, scores[scores["task"] == task]) if reference else []
        for (label, ref), marker in zip(refs, ("*", "P", "X", "D")):
            ax.plot(list(ref), list(ref.values()), marker=marker, color="k", linestyle=":", label=label)
            shown |= set(ref)
        ax.set_title(task)
        _log2_axis(ax, sorted(shown))
    ax = axes[-1]
    for variant, g in agg[agg["metric"] == "IQM"].groupby("variant"):
        ax.plot(g["critic_depth"], g["estimate"], marker="o", label=f"IQM {variant}".strip())
        ax.fill_between(g["critic_depth"], g["lo"], g["hi"], alpha=0.25)
    ax.set_title(f"aggregate over {len(tasks)} task(s)")
    _log2_axis(ax, depths)
    for ax in axes:
        ax.set_xlabel("depth (critic; log2)")
        ax.set_ylabel("time at goal / episode")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def _curves(evals: pd.DataFrame, x: str, xlabel: str):
    scores = run_scores(evals)
    label = dict(zip(scores["run"], variants(scores)))
    evals = evals.assign(variant=evals["run"].map(label))
    tasks = sorted(evals["task"].unique())
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        for (variant, depth), g in evals[evals["task"] == task].groupby(["variant", "critic_depth"]):
            # Seeds share a plan: evaluation i sits at the same env step in every seed.
            g = g.sort_values(["run", "env_steps"]).assign(i=lambda d: d.groupby("run").cumcount())
            stats = g.groupby("i").agg(x=(x, "mean"), mean=("score", "mean"), sd=("score", "std"), n=("score", "size"))
            se = (stats["sd"] / np.sqrt(stats["n"])).fillna(0.0)
            line, = ax.plot(stats["x"], stats["mean"], label=f"depth {depth} {variant}".strip())
            ax.fill_between(stats["x"], stats["mean"] - 1.96 * se, stats["mean"] + 1.96 * se,
                            color=line.get_color(), alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("time at goal / episode")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def fig_learning_curves(evals: pd.DataFrame):
    """Score against env steps, one line per depth, shaded mean ± 1.96 s.e. across seeds."""
    if evals.groupby("run").size().max() < 2:
        return "one evaluation per run only"
    return _curves(evals, "env_steps", "env steps")


def fig_wallclock(evals: pd.DataFrame):
    """Score against wall-clock time (start-up, compile and checkpoints included), one line per depth; for
    sweeps run before rlscale recorded it, against the training and evaluation time, and the axis says so."""
    column, label = ("wallclock_s", "wall-clock (s)") if evals["wallclock_s"].notna().any() else (
        "training_s", "training and evaluation time (s; wall-clock not recorded)")
    if evals[column].isna().all():
        return "no times in metrics.jsonl"
    if evals.groupby("run").size().max() < 2:
        return "one evaluation per run only"
    return _curves(evals.dropna(subset=[column]), column, label)


def bootstrap_mean_interval(values, reps: int = 2000, seed: int = 0, confidence: float = 0.95):
    """Percentile-bootstrap interval of the mean over seeds, per column of ``values`` (``[seeds, k]``),
    resampling seeds: rliable's stratified bootstrap for one task, vectorised over the columns (a learning
    curve needs one interval per evaluation). The interval of a mean of scores in [0, 1] stays in [0, 1]."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    n = values.shape[0]
    if n < 2:
        return values[0].copy(), values[0].copy()
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, n, size=(reps, n))].mean(axis=1)  # [reps, k]
    tail = (1 - confidence) / 2 * 100
    return np.percentile(means, tail, axis=0), np.percentile(means, 100 - tail, axis=0)


def _curve_matrix(g: pd.DataFrame):
    """``(env steps per evaluation, scores [seeds, evaluations])`` of one configuration's runs, cut to the
    evaluations every seed has (seeds share a plan: evaluation i sits at the same env step in each)."""
    g = g.sort_values(["run", "env_steps"]).assign(i=lambda d: d.groupby("run").cumcount())
    per_run = [r["score"].to_numpy(float) for _, r in g.groupby("run")]
    k = min(len(r) for r in per_run)
    steps = g[g["i"] < k].groupby("i")["env_steps"].mean().to_numpy()
    return steps, np.stack([r[:k] for r in per_run])


def _band(ax, steps, matrix, label: str, reps: int, **style):
    lo, hi = bootstrap_mean_interval(matrix, reps=reps)
    line, = ax.plot(steps, matrix.mean(axis=0), label=label, **style)
    ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)


def _verdict_text(effects: list[dict]) -> str:
    return "; ".join(
        f"{e['deep']} vs {e['shallow']}: {e['difference']:+.2f}"
        + ("" if e["p"] is None else f" [{e['low']:+.2f}, {e['high']:+.2f}]") + f" → {'yes' if e['holds'] else 'no'}"
        for e in effects) or "no depth-4 runs to compare"


def fig_depth_summary(evals: pd.DataFrame, study: dict | None = None, reps: int = 2000, title: str = ""):
    """A sweep's one-glance figure (``summary.png``): per task, the learning curves of each depth (mean
    over seeds, 95 % bootstrap band); the score against depth (mean and 95 % bootstrap interval over seeds)
    with the depth-effect test's verdict; and, given a shipped ``study`` (``rlscale.configs.load_study``),
    its curves and verdict, labelled as the study's."""
    scores = run_scores(evals)
    label = dict(zip(scores["run"], variants(scores)))
    evals = evals.assign(variant=evals["run"].map(label))
    scores = scores.assign(variant=variants(scores))
    tasks = sorted(evals["task"].unique())
    fig, axes = _panels(len(tasks) + 1 + (study is not None))
    # One colour per depth in every panel, the study's included.
    depths = sorted({int(d) for d in evals["critic_depth"]} | {int(a["depth"]) for a in (study or {}).get("arms", [])})
    colour = {d: f"C{i}" for i, d in enumerate(depths)}
    for ax, task in zip(axes, tasks):
        for (variant, depth), g in evals[evals["task"] == task].groupby(["variant", "critic_depth"]):
            steps, matrix = _curve_matrix(g)
            _band(ax, steps, matrix, " ".join(filter(None, [f"depth {depth}", variant, f"({matrix.shape[0]} seeds)"])), reps,
                  color=colour[int(depth)])
        ax.set_title(f"your runs: {task}", fontsize="medium")
        ax.set_xlabel("env steps")
    ax = axes[len(tasks)]
    verdicts = []
    for (task, variant), g in scores.groupby(["task", "variant"]):
        by_depth = {int(d): gd["score"].to_numpy(float) for d, gd in g.groupby("critic_depth")}
        depths = sorted(by_depth)
        intervals = [bootstrap_mean_interval(by_depth[d], reps=reps) for d in depths]
        means = np.array([by_depth[d].mean() for d in depths])
        lo, hi = np.array([i[0][0] for i in intervals]), np.array([i[1][0] for i in intervals])
        ax.errorbar(depths, means, yerr=[means - lo, hi - means], marker="o", capsize=3, label=f"{task} {variant}".strip())
        verdicts.append(_verdict_text(run_scoring.depth_effect({d: list(v) for d, v in by_depth.items()})))
    _log2_axis(ax, sorted(scores["critic_depth"].unique()))
    ax.set_xlabel("depth (critic; log2)")
    ax.set_title("your runs: score vs depth\n" + "\n".join(verdicts), fontsize="small")
    if study is not None:
        ax = axes[-1]
        for i, arm in enumerate(study["arms"]):
            curves = np.asarray(arm["curves"], dtype=float)
            # A size control (same parameters, other shape) is dashed, in a colour of its own.
            style = ({"linestyle": "--", "color": f"C{len(depths) + i}"} if arm.get("control")
                     else {"color": colour[int(arm["depth"])]})
            _band(ax, np.asarray(arm["env_steps"], float), curves,
                  f"depth {arm['depth']} width {arm['width']} ({curves.shape[0]} seeds)", reps, **style)
        ax.set_title(f"{study['label']}\n" + study["verdict"].replace("; ", "\n"), fontsize="x-small")
        ax.set_xlabel("env steps")
    for ax in axes:
        ax.set_ylabel(f"score (time at goal / episode;\nrun score: mean of last {LAST_EVALS} evals)", fontsize="small")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper left")
    fig.suptitle((title + ": " if title else "") + "mean over seeds; bands and bars: 95 % bootstrap intervals of the mean "
                 "(verdict: 95 % Welch interval of the difference, docs/metrics.md)", fontsize="small")
    fig.tight_layout()
    return fig


def _heatmaps(scores: pd.DataFrame, row: str, col: str, title: str, reference: dict | None = None):
    tasks = [task for task, g in scores.groupby("task") if g[row].nunique() > 1 and g[col].nunique() > 1]
    tasks = tasks or sorted(scores["task"].unique())  # panels only for the tasks that vary both
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        table = scores[scores["task"] == task].pivot_table(index=row, columns=col, values="score", aggfunc="mean")
        im = ax.imshow(table.to_numpy(float), origin="lower", cmap="viridis", vmin=0, aspect="auto")
        ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns])
        ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index])
        ref = (reference or {}).get(task, {})
        for i, r in enumerate(table.index):
            for j, c in enumerate(table.columns):
                text = "" if np.isnan(table.iloc[i, j]) else f"{table.iloc[i, j]:.2f}"
                paper = ref.get(int(r), {}).get(int(c))
                if paper is not None:
                    text += f"\n(paper {paper / 1000:.2f})"
                ax.text(j, i, text, ha="center", va="center", color="w", fontsize="x-small")
        ax.set_xlabel(col.replace("_", " "))
        ax.set_ylabel(row.replace("_", " "))
        ax.set_title(f"{task}: {title}")
        fig.colorbar(im, ax=ax, label="time at goal / episode")
    fig.tight_layout()
    return fig


def fig_batch_depth(scores: pd.DataFrame, reference: bool = False):
    """Heatmap of mean score over batch size × depth, per task (paper values annotated with --reference)."""
    if scores["batch_size"].nunique() < 2:
        return "one batch size only"
    if scores["critic_depth"].nunique() < 2:
        return "one depth only"
    ref = paper_results()["batch_depth"] if reference else None
    return _heatmaps(scores, "critic_depth", "batch_size", "batch × depth", ref)


def fig_actor_critic(scores: pd.DataFrame):
    """Heatmap of mean score over actor depth × critic depth, per task."""
    if (scores["actor_depth"] == scores["critic_depth"]).all():
        return "actor depth always equals critic depth"
    if scores["actor_depth"].nunique() < 2 or scores["critic_depth"].nunique() < 2:
        return "one actor depth or one critic depth only"
    return _heatmaps(scores, "actor_depth", "critic_depth", "actor × critic depth")


def fig_width_depth(scores: pd.DataFrame):
    """Score against parameters and FLOPs per SGD step, one line per width (points: depths)."""
    if scores["width"].nunique() < 2:
        return "one width only"
    if scores["params"].isna().all():
        return "parameter counts unknown (unregistered tasks)"
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    mean = scores.groupby(["task", "width", "critic_depth"], as_index=False)[
        ["score", "params", "flops_per_sgd_step"]].mean()
    for ax, x, label in zip(axes, ("params", "flops_per_sgd_step"), ("parameters", "FLOPs per SGD step")):
        for (task, width), g in mean.groupby(["task", "width"]):
            g = g.sort_values("critic_depth")
            ax.plot(g[x], g["score"], marker="o", label=f"{task} width {width}")
            for _, r in g.iterrows():
                ax.annotate(f"d{int(r['critic_depth'])}", (r[x], r["score"]), fontsize="x-small")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("time at goal / episode")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle("width against depth")
    fig.tight_layout()
    return fig


def _grouped_bars(ax, table: pd.DataFrame, group: str, series: str, label) -> None:
    """Bars of ``table``'s ``mean`` with its 95 % ``halfwidth`` as error bars: a bar group per integer value of
    ``group`` (the x ticks), a bar per value of ``series`` in each (``label(value)`` in the legend)."""
    table = table.assign(halfwidth=table["halfwidth"].where(np.isfinite(table["halfwidth"]), 0.0))  # one seed: no bar
    groups, members = sorted(table[group].unique()), sorted(table[series].unique())
    width = 0.8 / len(members)
    for k, value in enumerate(members):
        at = table[table[series] == value].set_index(group).reindex(groups)
        ax.bar(np.arange(len(groups)) + (k - (len(members) - 1) / 2) * width, at["mean"], width,
               yerr=at["halfwidth"].fillna(0.0), capsize=3, label=label(value))
    ax.set_xticks(range(len(groups)), [str(int(g)) for g in groups])
    ax.grid(alpha=0.3, axis="y")
    top = np.nanmax((table["mean"] + table["halfwidth"]).to_numpy(float))
    if np.isfinite(top) and top > 0:
        ax.set_ylim(top=1.4 * top)  # headroom above the bars for the legend
    ax.legend(fontsize="x-small", title="mean ± 95 % CI", title_fontsize="x-small", loc="upper right", ncols=2)


def fig_stitching(evals: pd.DataFrame):
    """Score per goal distance (the stitching mazes' far goals), one panel per task (and variant), one bar
    group per depth, a bar per distance: mean over seeds with 95 % Student-t intervals."""
    table = goal_distance_table(evals)
    if table.empty:
        return "no per-goal-distance metrics (no stitching runs)"
    panels = sorted(table.groupby(["task", "variant"]).groups)
    fig, axes = _panels(len(panels))
    for ax, (task, variant) in zip(axes, panels):
        g = table[(table["task"] == task) & (table["variant"] == variant)]
        _grouped_bars(ax, g, "critic_depth", "goal_distance", lambda d: f"goal {d} cells away")
        ax.set_xlabel("depth (critic)")
        ax.set_ylabel("time at goal / episode")
        ax.set_title(f"{task} {variant}".strip() + ": far goals")
    fig.tight_layout()
    return fig


def block_norm_table(evals: pd.DataFrame) -> pd.DataFrame:
    """Per task, variant, critic depth, network and block: the mean over seeds of each run's block norm at
    its last evaluation (docs/metrics.md#block-norms); empty when no run logged block norms."""
    columns = [c for c in evals.columns if c.startswith(BLOCK_NORMS_PREFIX)]
    if not columns:
        return pd.DataFrame(columns=["task", "variant", "critic_depth", "network", "block", "norm", "num_seeds"])
    last = evals.sort_values(["run", "env_steps"], kind="stable").groupby("run", sort=True).last()
    last["variant"] = variants(last).values
    rows = []
    for column in columns:
        network, block = column[len(BLOCK_NORMS_PREFIX):].rsplit("/", 1)
        for (task, variant, depth), g in last.groupby(["task", "variant", "critic_depth"]):
            values = pd.to_numeric(g[column], errors="coerce").dropna()
            if len(values):
                rows.append({"task": task, "variant": variant, "critic_depth": int(depth), "network": network,
                             "block": int(block), "norm": float(values.mean()), "num_seeds": len(values)})
    return pd.DataFrame(rows).sort_values(["task", "variant", "network", "critic_depth", "block"], ignore_index=True)


def fig_block_norms(evals: pd.DataFrame):
    """Mean activation norm of each residual block's output against the block's index, one line per depth,
    one panel per task (and variant) and network, at each run's last evaluation (mean over seeds)."""
    table = block_norm_table(evals)
    if table.empty:
        return "no block norms logged (runs of rlscale versions before training/block_norms)"
    panels = sorted(table.groupby(["task", "variant", "network"]).groups,
                    key=lambda k: (k[0], k[1], list(BLOCK_NORM_NETWORKS).index(k[2]) if k[2] in BLOCK_NORM_NETWORKS else 99))
    fig, axes = _panels(len(panels))
    for ax, (task, variant, network) in zip(axes, panels):
        g = table[(table["task"] == task) & (table["variant"] == variant) & (table["network"] == network)]
        for depth, line in g.groupby("critic_depth"):
            ax.plot(line["block"], line["norm"], marker="o" if len(line) < 20 else None, markersize=3,
                    label=f"depth {depth} ({line['num_seeds'].min()} seeds)")
        ax.set_xlabel("residual block (0 = first)")
        ax.xaxis.get_major_locator().set_params(integer=True)  # block indices are whole numbers
        ax.set_ylabel("mean ‖block output‖")
        ax.set_title(f"{task} {variant}".strip() + f": {BLOCK_NORM_NETWORKS.get(network, network)}", fontsize="small")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def collector_table(scores: pd.DataFrame) -> pd.DataFrame:
    """The collector experiment's table (docs/method.md#collector-experiment): per task, collector depth and
    learner (critic) depth, the seeds' mean score with its 95 % Student-t half-width, over the learner runs
    only (runs that collect their own data are left out)."""
    learners = scores[scores["collector_depth"] != OWN_COLLECTOR]
    rows = [{"task": task, "collector_depth": int(collector), "critic_depth": int(depth), "mean": g["score"].mean(),
             "halfwidth": t_halfwidth(g["score"]), "num_seeds": len(g)}
            for (task, collector, depth), g in learners.groupby(["task", "collector_depth", "critic_depth"])]
    return pd.DataFrame(rows, columns=["task", "collector_depth", "critic_depth", "mean", "halfwidth", "num_seeds"])


def fig_collector(scores: pd.DataFrame):
    """The collector experiment (the paper's Fig. 8): one panel per task, one bar group per collector depth,
    a bar per learner depth, mean over seeds with 95 % Student-t intervals."""
    table = collector_table(scores)
    if table.empty:
        return "no collector runs (--collector-depth)"
    tasks = sorted(table["task"].unique())
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        _grouped_bars(ax, table[table["task"] == task], "collector_depth", "critic_depth", lambda d: f"learner depth {d}")
        ax.set_xlabel("collector depth (acts and fills the buffer)")
        ax.set_ylabel("learner's time at goal / episode")
        ax.set_title(f"{task}: collector × learner depth")
    fig.tight_layout()
    return fig


def figures(evals: pd.DataFrame, reference: bool = False, reps: int = 2000) -> dict[str, Any]:
    """Every figure name -> a matplotlib Figure, or a str saying why it was skipped."""
    scores = run_scores(evals)
    return {
        "score_vs_depth": fig_score_vs_depth(scores, reference=reference, reps=reps),
        "learning_curves": fig_learning_curves(evals),
        "batch_depth": fig_batch_depth(scores, reference=reference),
        "width_depth": fig_width_depth(scores),
        "actor_critic": fig_actor_critic(scores),
        "wallclock": fig_wallclock(evals),
        "stitching": fig_stitching(evals),
        "block_norms": fig_block_norms(evals),
        "collector": fig_collector(scores),
    }


def save_figure(fig, out_dir: Path, name: str) -> list[Path]:
    """PNG and PDF, each written atomically."""
    paths = []
    for fmt in ("png", "pdf"):
        path = out_dir / f"{name}.{fmt}"
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120)
        paths.append(path)
    _plt().close(fig)
    return paths


def save_csv(table: pd.DataFrame, path: Path) -> Path:
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return path


def plot_sweep(sweep_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, reference: bool = False,
               reps: int = 2000, echo=print) -> dict[str, Any]:
    """Everything ``rlscale plot`` does: tables (runs.csv, aggregate.csv, fits.csv; collector.csv for a
    collector sweep) and figures under
    ``out_dir`` (default ``SWEEP_DIR/plots``). Reads everything before writing anything."""
    evals = load_sweep(sweep_dir)
    scores = run_scores(evals)
    agg = aggregate(scores, reps=reps)
    fit = fits(scores)
    figs = figures(evals, reference=reference, reps=reps)
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    incomplete = int((~scores["complete"]).sum())
    echo(f"{len(scores)} runs, {len(evals)} evaluations, {scores['task'].nunique()} task(s)"
         + (f"; {incomplete} run(s) unfinished (scored on the evaluations so far)" if incomplete else ""))
    written = [save_csv(scores, out / "runs.csv"), save_csv(agg, out / "aggregate.csv"), save_csv(fit, out / "fits.csv")]
    collector = collector_table(scores)
    if not collector.empty:
        written.append(save_csv(collector, out / "collector.csv"))
        echo("collector experiment (learners' scores, mean ± 95 % Student-t half-width over seeds):")
        echo(collector.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    skipped = {}
    for name, fig in figs.items():
        if isinstance(fig, str):
            skipped[name] = fig
            echo(f"skipped {name}: {fig}")
        else:
            written += save_figure(fig, out, name)
    echo("fits (critical depth: first depth whose 95 % Welch interval of the difference from the previous depth lies above zero; old rule beside it):")
    echo(fit.to_string(index=False))
    for path in written:
        echo(f"wrote {path}")
    return {"written": written, "skipped": skipped, "scores": scores, "aggregate": agg, "fits": fit}
