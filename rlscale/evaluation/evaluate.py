"""``rlscale eval``: evaluate checkpoints without training and without touching them.

PATH is a run directory (its latest checkpoint, or every checkpoint with ``--all-checkpoints``), one
checkpoint directory, or a sweep directory (every run's latest checkpoint, compared in one table).
Results go to the console and to ``<run_dir>/eval/<task>/<step:012d>.json``: a list with one entry per
distinct setting (episodes, seed, stochastic), so a different setting never replaces another's result.

With the run's own seed, its eval task and ``--episodes`` equal to its ``num_eval_envs``, the numbers
are exactly those logged for that checkpoint's epoch during training (same policy, same episodes).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import jax

from rlscale import envs, metric_keys
from rlscale.evaluation.policy import LoadedPolicy, load, make_eval_task
from rlscale.evaluation.rollout import make_unroll, summarize
from rlscale.keys import eval_key
from rlscale.storage import checkpoint as ckpt
from rlscale.storage.run_dir import find_run_dirs, write_atomic


class EvalError(ValueError):
    pass


def evaluate(policy: LoadedPolicy, task: str | None = None, episodes: int = 128, seed: int | None = None,
             stochastic: bool = False) -> dict[str, Any]:
    """Evaluate a loaded policy; returns the summary row (also the content of the JSON entry)."""
    if episodes < 1:
        raise EvalError(f"--episodes must be a positive integer, got {episodes}")
    env = make_eval_task(policy, task)
    seed = policy.train_config.seed if seed is None else seed
    epoch = policy.meta["counters"]["epoch"]
    unroll = make_unroll(env, policy.train_config.episode_length, episodes, policy.act)
    # The key of the training-time evaluation after that epoch (a checkpoint from the middle of the first
    # epoch, saved by a stop, takes the first evaluation's).
    key = eval_key(seed, max(epoch - 1, 0))
    per_episode = jax.jit(unroll, static_argnums=2)(policy.actor_params, key, stochastic)
    return {
        "task": env.spec.name,
        "step": policy.step,
        "epoch": epoch,
        "episodes": episodes,
        "seed": seed,
        "stochastic": stochastic,
        "episode_length": policy.train_config.episode_length,
        **summarize(per_episode),
    }


def record(run_dir: Path, result: dict[str, Any]) -> Path:
    """Add ``result`` to ``eval/<task>/<step>.json``, replacing only an entry with the same settings."""
    out = run_dir / "eval" / result["task"] / f"{result['step']:012d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    entries = json.loads(out.read_text()) if out.exists() else []
    same = lambda e: all(e[k] == result[k] for k in ("episodes", "seed", "stochastic", "episode_length"))  # noqa: E731
    entries = [e for e in entries if not same(e)] + [result]
    write_atomic(out, json.dumps(entries, indent=2) + "\n")
    return out


def run_dirs_of(path: Path) -> list[Path]:
    """The run directories a PATH stands for (one, or every run of a sweep directory:
    ``rlscale.storage.run_dir.find_run_dirs``), or PATH itself when it is a checkpoint directory."""
    if path.parent.name == ckpt.CHECKPOINT_DIR:
        return [path]
    runs = find_run_dirs(path)
    if not runs:
        raise EvalError(f"{path} is neither a run directory, a checkpoint nor a sweep directory of runs")
    return runs


def _by_group(r: dict[str, Any]) -> str:
    """Time at goal and success-any per episode group (``rlscale.evaluation.rollout``'s ``<name>_count`` metrics, e.g.
    per goal distance on the stitching mazes), each over the group's episodes; '' for tasks without groups."""
    prefix, any_prefix = metric_keys.TIME_AT_GOAL + "_", metric_keys.SUCCESS_ANY
    groups = [k.removeprefix(prefix) for k in r
              if k.startswith(prefix) and not k.startswith(any_prefix) and not k.endswith("_count") and f"{k}_count" in r]
    groups.sort(key=lambda g: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", g)])
    parts = [f"{g} {r[prefix + g]:.1f} (any {r.get(f'{any_prefix}_{g}', float('nan')):.2f}, {r[f'{prefix}{g}_count']:.0f} episodes)"
             for g in groups]
    return "\n    time@goal by group: " + ", ".join(parts) if parts else ""


def _format(rows: list[dict[str, Any]]) -> str:
    head = f"{'run':44s} {'task':22s} {'step':>12s} {'time@goal':>10s} {'± s.e.':>7s} {'any':>5s} {'final dist':>10s} {'length':>7s}"
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['run'][-44:]:44s} {r['task']:22s} {r['step']:>12,d} {r[metric_keys.TIME_AT_GOAL]:>10.1f} "
            f"{r[metric_keys.TIME_AT_GOAL_STDERR]:>7.1f} {r[metric_keys.SUCCESS_ANY]:>5.2f} "
            f"{r[metric_keys.FINAL_DISTANCE]:>10.2f} {r[metric_keys.EPISODE_LENGTH]:>7.0f}" + _by_group(r)
        )
    return "\n".join(lines)


def _pictures(args: argparse.Namespace, policies: list[LoadedPolicy]) -> None:
    """The optional pictures, from the latest checkpoint of each run (one panel per depth for a sweep)."""
    from rlscale.evaluation import visualize

    wanted = [args.trajectories, args.critic_map, args.embeddings, args.render, args.video]
    if not any(wanted):
        return
    latest: dict[Path, LoadedPolicy] = {}
    for p in policies:
        if p.run_dir not in latest or p.step > latest[p.run_dir].step:
            latest[p.run_dir] = p
    by_depth: dict[int, LoadedPolicy] = {}
    for p in sorted(latest.values(), key=lambda p: (p.train_config.depth, p.train_config.seed, str(p.run_dir))):
        by_depth.setdefault(p.train_config.depth, p)
    first = next(iter(by_depth.values()))
    key = jax.random.PRNGKey(args.seed if args.seed is not None else first.train_config.seed)
    for out in filter(None, wanted):
        out.parent.mkdir(parents=True, exist_ok=True)
    # Short titles (a run's name is wider than its panel); which run each panel shows is printed instead.
    panels = [(f"depth {d}, seed {p.train_config.seed}", p) for d, p in by_depth.items()]
    for title, p in panels:
        print(f"panel {title}: {p.run_dir}")
    if args.trajectories:
        print(f"wrote {visualize.trajectories_figure(panels, args.task, args.num_trajectories, key, args.trajectories)}")
    if args.critic_map:
        print(f"wrote {visualize.critic_map(panels, args.task, args.goal, args.critic_map)}")
    if args.embeddings:
        print(f"wrote {visualize.embeddings(panels, args.task, args.num_trajectories, key, args.embeddings)}")
    if args.render:
        print(f"wrote {visualize.render_html(first, args.task, args.num_trajectories, key, args.render)}")
    if args.video:
        print(f"wrote {visualize.render_video(first, args.task, args.num_trajectories, key, args.video)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rlscale eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="run directory, checkpoint directory or sweep directory")
    parser.add_argument("--task", default=None, help="task to evaluate on (default: the run's eval task)")
    parser.add_argument("--episodes", type=int, default=128, help="evaluation episodes (default 128)")
    parser.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the run's seed)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of tanh(mean)")
    parser.add_argument("--all-checkpoints", action="store_true", help="every saved checkpoint: a learning curve")
    parser.add_argument("--trajectories", type=Path, default=None, metavar="PNG",
                        help="maze tasks: the maze from above with trajectories (a sweep: one panel per depth)")
    parser.add_argument("--num-trajectories", type=int, default=8, help="episodes drawn by --trajectories/--embeddings/--render")
    parser.add_argument("--critic-map", type=Path, default=None, metavar="PNG",
                        help="maze tasks: the critic's value over the free positions for one goal (--goal); a sweep: one "
                             "panel per depth on one colour scale")
    parser.add_argument("--goal", type=float, nargs=2, default=None, metavar=("X", "Y"),
                        help="goal of --critic-map (default: the layout's last goal cell)")
    parser.add_argument("--embeddings", type=Path, default=None, metavar="PNG",
                        help="PCA of the critic's φ(s, a) and ψ(g) along --num-trajectories evaluation episodes, "
                             "coloured by distance to the goal (a sweep: one row per depth)")
    parser.add_argument("--render", type=Path, default=None, metavar="HTML", help="Brax tasks: interactive trajectory viewer")
    parser.add_argument("--video", type=Path, default=None, metavar="MP4", help="an MP4 when an offscreen renderer exists")
    args = parser.parse_args(argv)
    if args.num_trajectories < 1:
        raise EvalError(f"--num-trajectories must be a positive integer, got {args.num_trajectories}")
    if not args.path.exists():
        raise EvalError(f"{args.path} does not exist")
    if args.task is not None and args.task not in envs.names():
        raise EvalError(f"unknown task {args.task!r}; valid tasks: {', '.join(envs.names())}")
    targets: list[Path] = []
    for run in run_dirs_of(args.path):
        if args.all_checkpoints and run.parent.name != ckpt.CHECKPOINT_DIR:
            steps = ckpt.list_steps(run)
            if not steps:
                raise EvalError(f"{run} has no checkpoint")
            targets += [ckpt.step_path(run, s) for s in steps]
        else:
            targets.append(run)
    # Load and evaluate everything before writing anything, so a bad input writes nothing.
    results = []
    for target in targets:
        policy = load(target)
        results.append((policy, evaluate(policy, args.task, args.episodes, args.seed, args.stochastic)))
    _pictures(args, [p for p, _ in results])
    rows = [{"run": str(policy.run_dir), "depth": policy.train_config.depth, **result} for policy, result in results]
    print(_format(rows))  # first: the numbers reach the user even when they cannot be saved
    try:
        for policy, result in results:
            print(f"wrote {record(policy.run_dir, result)}")
        if len({r["run"] for r in rows}) > 1:  # a sweep: one comparison table
            table = args.path / "eval_summary.csv"
            keys = ["run", "task", "depth", "seed", "step", metric_keys.TIME_AT_GOAL, metric_keys.TIME_AT_GOAL_STDERR,
                    metric_keys.SUCCESS_ANY, metric_keys.FINAL_DISTANCE]
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            write_atomic(table, buf.getvalue())
            print(f"wrote {table}")
    except OSError as err:
        err.add_note("the evaluation above is printed but not saved")
        raise
    return 0

