"""The sweep's summary: ``<sweep dir>/summary.csv`` (one row per run, rebuilt from the run directories)
and, when matplotlib is installed, ``summary.png`` (score against depth, one line per task).

Scores are ``rlscale.scores``' (docs/metrics.md#per-run-the-score), the numbers ``rlscale plot`` shows:
``score`` is the mean normalised time at goal (time at goal / episode length) over the run's last 5
evaluations; ``time_at_goal`` (in steps) and ``success_any`` are averaged over the same evaluations.
Parameter counts are closed-form (``rlscale.networks.trunk_param_count``, the actor and both critic
encoders), so no network is built.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any

from rlscale.launch import runs
from rlscale.launch.sweepfile import Run, Sweep
from rlscale.run_dir import atomic_output, write_atomic
from rlscale.scores import LAST_EVALS, beats, score_of_metrics, t_halfwidth
from rlscale.sizes import agent_param_count

SCORE_COLUMNS = ["score", "time_at_goal", "success_any"]
COLUMNS = [
    "run_id", "run_name", "run_dir", "task", "algo", "depth", "actor_depth", "critic_depth", "width", "batch_size", "seed",
    "params", "env_steps", "total_env_steps", *SCORE_COLUMNS, "walltime_s", "status",
]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def rows(sweep: Sweep, run_list: list[Run], specs: list[runs.RunSpec], plans: dict) -> list[dict[str, Any]]:
    from rlscale.run_dir import read_metrics

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
            "env_steps": last.get("training/env_steps", 0),
            "total_env_steps": plan.total_env_steps if plan else None,
            **{k: score[k] for k in SCORE_COLUMNS},
            "walltime_s": last.get("walltime"),
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
              "total_env_steps", *SCORE_COLUMNS, "walltime_s", "status"}
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


# The figure's two panels: the run score, and success-any (did an episode reach its goal at all), which
# shows learning before a policy holds its goals (docs/metrics.md).
PLOT_PANELS = (
    ("score", f"score: time at goal / episode length\n(mean of last {LAST_EVALS} evals)"),
    ("success_any", f"success-any: fraction of episodes\nreaching the goal (mean of last {LAST_EVALS} evals)"),
)


def plot(table: list[dict[str, Any]], path: Path, title: str) -> str:
    """Write the PNG; returns a one-line message saying what was done."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    done = [r for r in table if r["status"] == "done" and r["score"] is not None]
    if not done:
        return "no finished run yet: no plot"
    all_depths = sorted({int(r["critic_depth"]) for r in done})
    fig, axes = plt.subplots(1, len(PLOT_PANELS), figsize=(12, 4.5))
    for ax, (column, ylabel) in zip(axes, PLOT_PANELS):
        for label, by_depth in sorted(plot_lines(done, column).items()):
            depths = sorted(by_depth)
            means = [statistics.fmean(by_depth[d]) for d in depths]
            # The protocol's 95 % Student-t intervals (none drawn for a single seed: its interval is unbounded).
            errors = [t_halfwidth(by_depth[d]) if len(by_depth[d]) > 1 else 0.0 for d in depths]
            seeds = sorted({len(v) for v in by_depth.values()})
            ax.errorbar(depths, means, yerr=errors, marker="o", capsize=3,
                        label=f"{label} ({'/'.join(map(str, seeds))} seeds)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_depths, [str(d) for d in all_depths])
        ax.set_xlabel("depth (critic; log2 scale)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{title}: mean over seeds, bars: 95 % Student-t interval of the mean", fontsize="medium")
    fig.tight_layout()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)
    return f"plot: {path}"


def depth_effect(table: list[dict[str, Any]], shallow: int = 4) -> list[dict[str, Any]]:
    """The depth-effect rule (docs/metrics.md#across-seeds-intervals-and-the-depth-effect-rule) on the finished
    runs, per line of :func:`plot_lines`: for every deeper depth D, mean(D) − mean(shallow) against
    hw(D) + hw(shallow), the 95 % Student-t half-widths over seeds, and whether D beats ``shallow``."""
    done = [r for r in table if r["status"] == "done" and r["score"] is not None]
    out = []
    for label, by_depth in sorted(plot_lines(done).items()) if done else []:
        if shallow not in by_depth:
            continue
        base = by_depth[shallow]
        for depth in sorted(d for d in by_depth if d > shallow):
            deep = by_depth[depth]
            mean_deep, mean_shallow = statistics.fmean(deep), statistics.fmean(base)
            needed = t_halfwidth(deep) + t_halfwidth(base)
            out.append({
                "line": label, "deep": depth, "shallow": shallow, "seeds": (len(deep), len(base)),
                "difference": mean_deep - mean_shallow, "needed": needed,
                "beats": beats(mean_deep, t_halfwidth(deep), mean_shallow, t_halfwidth(base)),
            })
    return out


def format_depth_effect(effects: list[dict[str, Any]]) -> str:
    """One line per comparison of :func:`depth_effect`."""
    if not effects:
        return "depth effect: no line has finished runs at depth 4 and a deeper depth"
    lines = ["depth effect (mean(D) − mean(4) > hw(D) + hw(4), 95 % Student-t half-widths over seeds):"]
    for e in effects:
        needed = "∞ (needs ≥ 2 seeds each)" if math.isinf(e["needed"]) else f"{e['needed']:.3f}"
        verdict = "yes" if e["beats"] else "no"
        lines.append(f"  {e['line']}: depth {e['deep']} − depth {e['shallow']} = {e['difference']:+.3f}, "
                     f"needs > {needed}, {e['seeds'][0]}/{e['seeds'][1]} seeds: {verdict}")
    return "\n".join(lines)


def format_table(table: list[dict[str, Any]]) -> str:
    header = f"{'status':8s} {'run':48s} {'params':>10s} {'env steps':>12s} {'score':>8s} {'any':>5s} {'wall s':>8s}"
    lines = [header]
    for r in table:
        score = "" if r["score"] is None else f"{r['score']:.3f}"
        anyv = "" if r["success_any"] is None else f"{r['success_any']:.2f}"
        wall = "" if r["walltime_s"] is None else f"{r['walltime_s']:.0f}"
        params = "" if r["params"] is None else f"{r['params']:,}"
        lines.append(
            f"{r['status']:8s} {r['run_name']:48s} {params:>10s} {r['env_steps']:>12,} {score:>8s} {anyv:>5s} {wall:>8s}"
        )
    return "\n".join(lines)
