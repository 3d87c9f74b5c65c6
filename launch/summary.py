"""The sweep's summary: ``<sweep dir>/summary.csv`` (one row per run, rebuilt from the run directories),
the depth-effect test's verdict (``rlscale.analysis.scores.depth_effect``) and, with the analysis extras (pandas),
``summary.png`` (``rlscale.analysis.sweeps.fig_depth_summary``: learning curves and score against depth, beside
the sweep's ``reference_study``).

Scores are ``rlscale.analysis.scores``' (docs/metrics.md#per-run-the-score), the numbers ``rlscale plot`` shows:
``score`` is the mean normalised time at goal (time at goal / episode length) over the run's last 5
evaluations; ``time_at_goal`` (in steps) and ``success_any`` are averaged over the same evaluations.
Parameter counts are closed-form (``rlscale.networks.trunk_param_count``, the actor and both critic
encoders), so no network is built.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from rlscale.launch import runs
from rlscale.launch.sweepfile import Run, Sweep

from rlscale import metric_keys
from rlscale.analysis.scores import depth_effect as scores_depth_effect
from rlscale.analysis.scores import score_of_metrics
from rlscale.sizes import agent_param_count
from rlscale.storage.run_dir import atomic_output, write_atomic

SCORE_COLUMNS = ["score", "time_at_goal", "success_any"]
COLUMNS = [
    "run_id", "run_name", "run_dir", "task", "algo", "depth", "actor_depth", "critic_depth", "width", "batch_size", "seed",
    "params", "env_steps", "total_env_steps", *SCORE_COLUMNS, "wallclock_s", "training_s", "status",
]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def rows(sweep: Sweep, run_list: list[Run], specs: list[runs.RunSpec], plans: dict) -> list[dict[str, Any]]:
    from rlscale.storage.run_dir import read_metrics, wallclock_seconds

    extra_axes = [a for a in sweep.axes if a not in COLUMNS and a not in ("env",)]
    table = []
    for run, spec in zip(run_list, specs):
        cfg = run.config
        metrics = read_metrics(spec.run_dir)
        last = metrics[-1] if metrics else {}
        plan = plans.get(run.id)
        score = score_of_metrics(metrics, cfg.episode_length)
        row = {
            "run_id": run.id,
            "run_name": spec.name,
            "run_dir": spec.run_dir,
            **cfg.scaling_knobs(),
            "params": agent_param_count(cfg),
            "env_steps": last.get(metric_keys.ENV_STEPS, 0),
            "total_env_steps": plan.total_env_steps if plan else None,
            **{k: score[k] for k in SCORE_COLUMNS},
            # Real elapsed time, start-up, compile and checkpoints included, all resumes summed (None: a run
            # begun before rlscale recorded it); and the time spent training and evaluating alone.
            "wallclock_s": wallclock_seconds(spec.run_dir, metrics),
            "training_s": last.get(metric_keys.TRAINING_TIME),
            "status": runs.state(spec),
        }
        for axis in extra_axes:
            row[axis] = getattr(cfg, axis)
        table.append(row)
    return table


def write_csv(table: list[dict[str, Any]], path: Path) -> None:

    columns = COLUMNS + [k for k in (table[0] if table else {}) if k not in COLUMNS]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, out.getvalue())


def _label(row: dict, varying: list[str]) -> str:
    parts = [row["task"]]
    for key in varying:
        parts.append(f"{key}={row[key]}")
    return " ".join(parts)


def plot_lines(done: list[dict[str, Any]], column: str = "score") -> dict[str, dict[int, list[float]]]:
    """label -> critic depth -> values of ``column`` (one per seed; runs without one are left out): one line
    per task, split by any knob that takes several values at one (task, depth) point (width, batch size,
    ablations, actor depth)."""
    ignore = {"run_id", "run_name", "run_dir", "task", "depth", "critic_depth", "seed", "params", "env_steps",
              "total_env_steps", *SCORE_COLUMNS, "wallclock_s", "training_s", "status"}
    points: dict[tuple, list[dict]] = {}
    for r in done:
        points.setdefault((r["task"], r["critic_depth"]), []).append(r)
    varying = [
        k for k in done[0]
        if k not in ignore and any(len({str(r[k]) for r in point}) > 1 for point in points.values())
    ]
    lines: dict[str, dict[int, list[float]]] = {}
    for r in done:
        if r.get(column) is not None:
            lines.setdefault(_label(r, varying), {}).setdefault(int(r["critic_depth"]), []).append(float(r[column]))
    return lines


def plot(table: list[dict[str, Any]], path: Path, title: str, study: str | None = None) -> str:
    """Write the PNG (``rlscale.analysis.sweeps.fig_depth_summary``: learning curves per depth, score against
    depth, and the shipped ``study``'s curves and verdict when the sweep names one); returns a one-line
    message saying what was done."""
    try:
        from rlscale import analysis
    except ImportError as err:
        return f"no plot: {err.name} is not installed (pip install 'rlscale[notebook]')"
    done = [r for r in table if r["status"] == "done" and r["score"] is not None]
    if not done:
        return "no finished run yet: no plot"
    from rlscale.configs import load_study

    fig = analysis.fig_depth_summary(analysis.load_runs([Path(r["run_dir"]) for r in done], title),
                                     study=load_study(study) if study else None, title=title)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        analysis._plt().close(fig)
    return f"plot: {path}" + (f" (beside the study {study})" if study else "")


def study_verdict(study: str | None) -> str | None:
    """The shipped study's verdict line, printed after the sweep's own."""
    if not study:
        return None
    from rlscale.configs import load_study

    data = load_study(study)
    return f"{data['label']}: {data['verdict']}".replace("\n", " ")


def depth_effect(table: list[dict[str, Any]], shallow: int = 4) -> list[dict[str, Any]]:
    """The depth-effect test (docs/metrics.md#across-seeds-intervals-and-the-depth-effect-test,
    ``rlscale.analysis.scores.depth_effect``) on the finished runs, per line of :func:`plot_lines`: every deeper
    depth D against ``shallow`` by the 95 % Welch interval of mean(D) − mean(shallow), and by the old rule."""
    done = [r for r in table if r["status"] == "done" and r["score"] is not None]
    return [{"line": label, **effect}
            for label, by_depth in (sorted(plot_lines(done).items()) if done else [])
            for effect in scores_depth_effect(by_depth, shallow)]


def format_depth_effect(effects: list[dict[str, Any]], source: str = "") -> str:
    """One line per comparison of :func:`depth_effect` (``source`` names whose runs they are)."""
    if not effects:
        return "depth effect: no line has finished runs at depth 4 and a deeper depth"
    lines = [f"depth effect{source} (does the 95 % Welch interval of mean(D) − mean(4) lie above zero?):"]
    for e in effects:
        if e["p"] is None:
            interval = "interval unbounded (needs ≥ 2 seeds each)"
        else:
            interval = f"95 % [{e['low']:+.3f}, {e['high']:+.3f}], p = {e['p']:.2g}"
        needed = "∞" if math.isinf(e["needed"]) else f"{e['needed']:.3f}"
        lines.append(f"  {e['line']}: depth {e['deep']} − depth {e['shallow']} = {e['difference']:+.3f}, {interval}, "
                     f"{e['seeds'][0]}/{e['seeds'][1]} seeds: {'yes' if e['holds'] else 'no'} "
                     f"(old rule, > {needed}: {'yes' if e['old_rule'] else 'no'})")
    return "\n".join(lines)


def format_table(table: list[dict[str, Any]]) -> str:
    header = f"{'status':8s} {'run':48s} {'params':>10s} {'env steps':>12s} {'score':>8s} {'any':>5s} {'wall s':>8s}"
    lines = [header]
    for r in table:
        score = "" if r["score"] is None else f"{r['score']:.3f}"
        anyv = "" if r["success_any"] is None else f"{r['success_any']:.2f}"
        wall = "unknown" if r["wallclock_s"] is None else f"{r['wallclock_s']:.0f}"
        params = "" if r["params"] is None else f"{r['params']:,}"
        lines.append(
            f"{r['status']:8s} {r['run_name']:48s} {params:>10s} {r['env_steps']:>12,} {score:>8s} {anyv:>5s} {wall:>8s}"
        )
    return "\n".join(lines)
