"""Tables of the CPU depth-effect study (issues 11 and 25) from finished sweep directories.

For every sweep directory given: per configuration (task × depth × width) the seeds' scores (the mean
normalised time at goal over each run's last 5 evaluations, docs/metrics.md), their mean and 95 %
Student-t half-width, success-any, parameter count and wall-clock per run; the depth-effect rule for
every deeper depth against depth 4 at the same width; and the per-depth learning curve (mean score per
evaluation across seeds). Prints markdown and writes one JSON with everything.

    python benchmarks/depth_effect_cpu/report.py runs/point_twins_step1 runs/pilot_narrow_u_maze \
        --out benchmarks/results/depth_effect_cpu.json
    python benchmarks/depth_effect_cpu/report.py runs/pilot_narrow_u_maze_2m --keep \
        --out benchmarks/results/depth_effect_cpu.json       # add a sweep, keep the others' tables

``--confirm`` reads a confirmation sweep (issue 25, pre-registered in benchmarks/depth_effect_cpu.md): per
task, depth 16 against depth 4 at the narrow width (the primary test: the 95 % Welch interval of the
difference of the mean scores above zero) and against depth 4 at the width of depth 16's parameter count
(the size control), each also by the old rule, rliable's probability of improvement with its 95 %
stratified-bootstrap interval, success-any, and depth 16's score at depth 4's wall-clock.

    python benchmarks/depth_effect_cpu/report.py --confirm runs/confirm_u_maze_1m \
        --out benchmarks/results/depth_effect_cpu_confirm.json
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
            "walltime_min": [round(float(w) / 60, 2) for w in g["training_s"]],
            "complete": bool(g["complete"].all()),
        })
    effects = []
    for deep in sorted(d for d in scores["critic_depth"].unique() if d != 4):
        for width, at_width in scores.groupby("width"):
            table = analysis.depth_effect(at_width, deep=int(deep))
            effects += [{**row, "width": int(width)} for row in table.to_dict("records")]
    curves = (evals.groupby(["task", "critic_depth", "width", "epoch"])
              .agg(env_steps=("env_steps", "mean"), score=("score", "mean"), training_s=("training_s", "mean"))
              .reset_index())
    return {
        "sweep": sweep_dir.name,
        "configs": configs,
        "depth_effect": effects,
        "learning_curves": [
            {"task": t, "depth": int(d), "width": int(w), "env_steps": g["env_steps"].astype(int).tolist(),
             "score": [round(float(s), 4) for s in g["score"]],
             "walltime_min": [round(float(s) / 60, 2) for s in g["training_s"]]}
            for (t, d, w), g in curves.groupby(["task", "critic_depth", "width"], sort=True)
        ],
    }


def probability_of_improvement(deep: list[float], shallow: list[float], reps: int = 2000, seed: int = 0) -> dict:
    """rliable's P(a run of ``deep`` scores above a run of ``shallow``; ties count half), with its 95 %
    stratified-bootstrap interval (one task: a one-column score matrix per side)."""
    import numpy as np
    from rliable import library as rly
    from rliable import metrics

    pair = {"deep,shallow": (np.asarray(deep, float)[:, None], np.asarray(shallow, float)[:, None])}
    state = np.random.get_state()  # rliable 1.2 resamples with NumPy's global generator: seed it, then restore
    np.random.seed(seed)
    try:
        point, interval = rly.get_interval_estimates(pair, metrics.probability_of_improvement, reps=reps,
                                                     random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(state)
    low, high = np.ravel(interval["deep,shallow"])
    return {"estimate": float(np.ravel(point["deep,shallow"])[0]), "low": float(low), "high": float(high)}


def score_at_training_time(evals, runs: list[str], training_s: float):
    """Each run's score (mean normalised score of its last LAST_EVALS evaluations) counted up to its last
    evaluation whose training (and evaluation) time is at most ``training_s``; with the evaluation's env steps."""
    out = []
    for run in runs:
        g = evals[(evals["run"] == run) & (evals["training_s"] <= training_s)].sort_values("env_steps")
        if g.empty:
            out.append((None, 0))
            continue
        tail = g.tail(analysis.LAST_EVALS)
        out.append((float(tail["score"].mean()), int(g["env_steps"].iloc[-1])))
    return out


def compare(evals, scores, deep: dict, shallow: dict) -> dict:
    """The pre-registered comparison of arm ``deep`` against arm ``shallow`` (each a dict of depth, width)."""
    from rlscale.analysis.scores import beats, t_halfwidth, welch

    def arm(spec):
        g = scores[(scores["critic_depth"] == spec["depth"]) & (scores["width"] == spec["width"])].sort_values("seed")
        return g

    a, b = arm(deep), arm(shallow)
    if a.empty or b.empty:
        return {"deep": deep, "shallow": shallow, "missing": True}
    test = welch(a["score"], b["score"])
    success = welch(a["success_any"], b["success_any"])
    hw_a, hw_b = t_halfwidth(a["score"]), t_halfwidth(b["score"])
    shallow_wall = float(b["training_s"].median())
    at_wall = score_at_training_time(evals, a["run"].tolist(), shallow_wall)
    at_wall_scores = [s for s, _ in at_wall if s is not None]
    return {
        "deep": deep, "shallow": shallow,
        "seeds_deep": [int(s) for s in a["seed"]], "seeds_shallow": [int(s) for s in b["seed"]],
        "mean_deep": float(a["score"].mean()), "mean_shallow": float(b["score"].mean()),
        "sd_deep": float(a["score"].std(ddof=1)), "sd_shallow": float(b["score"].std(ddof=1)),
        "welch": test, "holds": bool(test["holds"]),
        "old_rule": {"halfwidth_deep": hw_a, "halfwidth_shallow": hw_b,
                     "beats": beats(a["score"].mean(), hw_a, b["score"].mean(), hw_b)},
        "probability_of_improvement": probability_of_improvement(a["score"].tolist(), b["score"].tolist()),
        "success_any": {"mean_deep": float(a["success_any"].mean()), "mean_shallow": float(b["success_any"].mean()),
                        "welch": success},
        "equal_walltime": {
            "shallow_median_walltime_min": shallow_wall / 60,
            "deep_median_walltime_min": float(a["training_s"].median()) / 60,
            "deep_env_steps_at_it": [steps for _, steps in at_wall],
            "deep_scores_at_it": at_wall_scores,
            "welch": welch(at_wall_scores, b["score"]),
        },
    }


def confirmation(sweep_dir: Path) -> dict:
    """The confirmation sweep's tables and its pre-registered comparisons (depth 16 against both depth-4 arms)."""
    result = sweep_tables(sweep_dir)
    evals = analysis.load_sweep(sweep_dir)
    scores = analysis.run_scores(evals)
    arms = sorted({(int(d), int(w)) for d, w in zip(scores["critic_depth"], scores["width"])})
    deep = [a for a in arms if a[0] == 16]
    shallow = sorted((a for a in arms if a[0] == 4), key=lambda a: a[1])
    if len(deep) != 1 or len(shallow) != 2:
        raise SystemExit(f"{sweep_dir}: expected one depth-16 arm and two depth-4 arms (narrow, size control); got {arms}")
    d16 = {"depth": 16, "width": deep[0][1]}
    result["primary"] = compare(evals, scores, d16, {"depth": 4, "width": shallow[0][1]})
    result["size_control"] = compare(evals, scores, d16, {"depth": 4, "width": shallow[1][1]})
    result["task"] = str(scores["task"].iloc[0])
    result["arms"] = []
    for (depth, width), control in ((deep[0], False), (shallow[0], False), (shallow[1], True)):
        g = evals[(evals["critic_depth"] == depth) & (evals["width"] == width)]
        steps, matrix = analysis._curve_matrix(g)
        seeds = sorted(int(x) for x in g["seed"].unique())
        result["arms"].append({"depth": int(depth), "width": int(width), "control": control, "seeds": seeds,
                               "params": int(g["params"].iloc[0]), "env_steps": [int(x) for x in steps],
                               "curves": [[round(float(v), 4) for v in row] for row in matrix]})
    return result


def study_record(result: dict, machine: str, commit: str | None) -> dict:
    """What rlscale ships of a confirmation (configs/studies/<name>.json): per-seed curves of each arm and
    the verdict, for summary.png to draw beside a user's runs (rlscale.analysis.sweeps.fig_depth_summary)."""
    p, c = result["primary"], result["size_control"]
    w, wc = p["welch"], c["welch"]
    arms = result["arms"]
    steps = arms[0]["env_steps"][-1]
    verdict = (f"depth 16 − 4 (width {p['shallow']['width']}): {w['diff']:+.3f} [{w['low']:+.3f}, {w['high']:+.3f}] → "
               f"{'yes' if w['holds'] else 'no'}; vs depth 4 width {c['shallow']['width']} (same size): {wc['diff']:+.3f} "
               f"[{wc['low']:+.3f}, {wc['high']:+.3f}] → {'yes' if wc['holds'] else 'no'}")
    return {
        "label": (f"pre-registered study: {result['task']}, {len(arms[0]['seeds'])} seeds per arm,\n"
                  f"{steps / 1e6:.2f} M env steps, {machine.split(';')[0].split(' (')[0]}"),
        "verdict": verdict, "task": result["task"], "machine": machine, "commit": commit,
        "source": "benchmarks/depth_effect_cpu.md",
        "arms": arms,
    }


def confirmation_markdown(result: dict) -> str:
    lines = [markdown(result), "", "| comparison | mean(16) − mean(4) | 95 % Welch interval | p | holds | old rule | "
             "P(16 > 4) [95 % CI] | success-any diff [95 % Welch] | at depth 4's wall-clock: diff [95 % Welch] |",
             "|---|---:|---|---:|---|---|---|---|---|"]
    for name in ("primary", "size_control"):
        c = result[name]
        if c.get("missing"):
            lines.append(f"| {name} | missing arm | | | | | | | |")
            continue
        w, poi, sa, ew = c["welch"], c["probability_of_improvement"], c["success_any"]["welch"], c["equal_walltime"]["welch"]
        label = f"{name}: d16 w{c['deep']['width']} vs d4 w{c['shallow']['width']}"
        lines.append(
            f"| {label} | {w['diff']:+.3f} | [{w['low']:+.3f}, {w['high']:+.3f}] | {w['p']:.3g} | {'yes' if w['holds'] else 'no'} | "
            f"{'yes' if c['old_rule']['beats'] else 'no'} | {poi['estimate']:.2f} [{poi['low']:.2f}, {poi['high']:.2f}] | "
            f"{sa['diff']:+.3f} [{sa['low']:+.3f}, {sa['high']:+.3f}] | {ew['diff']:+.3f} [{ew['low']:+.3f}, {ew['high']:+.3f}] |")
    return "\n".join(lines)


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
    parser.add_argument("--confirm", action="store_true",
                        help="the sweeps are confirmations (issue 25): add the pre-registered comparisons")
    parser.add_argument("--commit", default=None, help="the commit the runs were trained at, recorded in the JSON")
    parser.add_argument("--study-out", type=Path, default=None,
                        help="with --confirm: also write the study rlscale ships (configs/studies/<name>.json)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: print only)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the sweeps already in --out that are not given here (their run directories may be gone)")
    parser.add_argument("--machine", default=f"{platform.machine()} CPU, {os.cpu_count()} cores",
                        help="what the runs ran on, recorded in the JSON")
    args = parser.parse_args()
    results = [confirmation(d) if args.confirm else sweep_tables(d) for d in args.sweep_dirs]
    for r in results:
        print(confirmation_markdown(r) if args.confirm else markdown(r), end="\n\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        kept = []
        if args.keep and args.out.exists():
            given = {r["sweep"] for r in results}
            kept = [r for r in json.loads(args.out.read_text())["sweeps"] if r["sweep"] not in given]
        tmp.write_text(json.dumps({"machine": args.machine, "commit": args.commit, "sweeps": kept + results}, indent=1))
        tmp.replace(args.out)
    if args.study_out:
        if not args.confirm or len(results) != 1:
            raise SystemExit("--study-out needs --confirm and one sweep")
        tmp = args.study_out.with_suffix(".tmp")
        tmp.write_text(json.dumps(study_record(results[0], args.machine, args.commit), indent=1))
        tmp.replace(args.study_out)


if __name__ == "__main__":
    main()
