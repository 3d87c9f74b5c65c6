"""Tables of the CPU depth-effect study (issue 11) from finished sweep directories.

For every sweep directory given: per configuration (task × depth × width) the seeds' scores (the mean
normalised time at goal over each run's last 5 evaluations, docs/metrics.md), their mean and 95 %
Student-t half-width, success-any, parameter count and wall-clock per run; the depth-effect rule for
every deeper depth against depth 4 at the same width; and the per-depth learning curve (mean score per
evaluation across seeds). Prints markdown and writes one JSON with everything.

    python benchmarks/depth_effect_cpu/report.py runs/point_twins_step1 runs/pilot_narrow_u_maze \
        --out benchmarks/results/depth_effect_cpu.json
    python benchmarks/depth_effect_cpu/report.py runs/pilot_narrow_u_maze_2m --keep \
        --out benchmarks/results/depth_effect_cpu.json       # add a sweep, keep the others' tables
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from rlscale import analysis


def sweep_tables(sweep_dir: Path) -> dict:
    evals = analysis.load_sweep(sweep_dir)
    scores = analysis.run_scores(evals)
    configs = []
    for (task, depth, width), g in scores.groupby(["task", "critic_depth", "width"], sort=True):
        g = g.sort_values("seed")
        configs.append({
            "task": task, "depth": int(depth), "width": int(width), "params": int(g["params"].iloc[0]),
            "seeds": [int(s) for s in g["seed"]], "scores": [round(float(s), 4) for s in g["score"]],
            "mean": float(g["score"].mean()), "halfwidth": analysis.t_halfwidth(g["score"]),
            "success_any": float(g["success_any"].mean()),
            "walltime_min": [round(float(w) / 60, 2) for w in g["walltime_s"]],
            "complete": bool(g["complete"].all()),
        })
    effects = []
    for deep in sorted(d for d in scores["critic_depth"].unique() if d != 4):
        for width, at_width in scores.groupby("width"):
            table = analysis.depth_effect(at_width, deep=int(deep))
            effects += [{**row, "width": int(width)} for row in table.to_dict("records")]
    curves = (evals.groupby(["task", "critic_depth", "width", "epoch"])
              .agg(env_steps=("env_steps", "mean"), score=("score", "mean"), walltime_s=("walltime_s", "mean"))
              .reset_index())
    return {
        "sweep": sweep_dir.name,
        "configs": configs,
        "depth_effect": effects,
        "learning_curves": [
            {"task": t, "depth": int(d), "width": int(w), "env_steps": g["env_steps"].astype(int).tolist(),
             "score": [round(float(s), 4) for s in g["score"]],
             "walltime_min": [round(float(s) / 60, 2) for s in g["walltime_s"]]}
            for (t, d, w), g in curves.groupby(["task", "critic_depth", "width"], sort=True)
        ],
    }


def markdown(result: dict) -> str:
    lines = [f"### {result['sweep']}", "",
             "| task | depth | width | params | seeds | scores per seed | mean ± 95 % hw | success-any | min per run |",
             "|---|---:|---:|---:|---|---|---|---:|---|"]
    for c in result["configs"]:
        lines.append(f"| {c['task']} | {c['depth']} | {c['width']} | {c['params']:,} | {','.join(map(str, c['seeds']))} | "
                     f"{', '.join(f'{s:.3f}' for s in c['scores'])} | {c['mean']:.3f} ± {c['halfwidth']:.3f} | "
                     f"{c['success_any']:.2f} | {', '.join(f'{w:.1f}' for w in c['walltime_min'])} |")
    if result["depth_effect"]:
        lines += ["", "| task | width | D | mean(D) − mean(4) | hw(D) + hw(4) | D beats 4 |", "|---|---:|---:|---:|---:|---|"]
        for e in result["depth_effect"]:
            lines.append(f"| {e['task']} | {e['width']} | {e['deep']} | {e['difference']:+.3f} | "
                         f"{e['halfwidth_deep'] + e['halfwidth_shallow']:.3f} | {'yes' if e['beats'] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: print only)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the sweeps already in --out that are not given here (their run directories may be gone)")
    parser.add_argument("--machine", default=f"{platform.machine()} CPU, {os.cpu_count()} cores",
                        help="what the runs ran on, recorded in the JSON")
    args = parser.parse_args()
    results = [sweep_tables(d) for d in args.sweep_dirs]
    for r in results:
        print(markdown(r), end="\n\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        kept = []
        if args.keep and args.out.exists():
            given = {r["sweep"] for r in results}
            kept = [r for r in json.loads(args.out.read_text())["sweeps"] if r["sweep"] not in given]
        tmp.write_text(json.dumps({"machine": args.machine, "sweeps": kept + results}, indent=1))
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
