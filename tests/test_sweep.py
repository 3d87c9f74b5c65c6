"""The sweep launcher: expansion and validation of sweep files, and every backend on tiny runs.

The runs share one XLA compilation cache (a session folder), and their configs differ only by seed and
number of epochs (never by the epoch's shape), so only the first run compiles.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import TINY
from rlscale.configs import load_study
from rlscale.launch import launcher, local_backend, runs, summary, sweepfile

from rlscale import sizes
from rlscale.cli import main as cli_main
from rlscale.storage import checkpoint as ckpt
from rlscale.storage import run_dir as rd

# Subprocesses are started after JAX initialised in this process (fork + exec: harmless).
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")

needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds training processes through /proc")

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "configs" / "sweeps"

# TINY with longer epochs (100 SGD steps per collection: a SIGTERM can land mid-run) and always 2
# training steps per epoch, so that runs of any number of epochs share compiled programs.
BASE = {k: v for k, v in TINY.items() if k != "env"} | {"sgd_steps_per_collection": 100}


def _budget(epochs: int) -> dict:
    return {"num_evals": epochs, "total_env_steps": 80 + epochs * 2 * 40}


def write_sweep(path: Path, grid: dict, base: dict | None = None, **extra) -> Path:
    data = {"name": path.stem, "base": {**BASE, **_budget(3), **(base or {})}, "grid": grid, **extra}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def expand(text: str, tmp_path: Path, name: str = "s.yaml") -> list[sweepfile.Run]:
    path = tmp_path / name
    path.write_text(text)
    return sweepfile.expand(sweepfile.load(path))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture
def compile_cache(cache_dir, monkeypatch):
    """One XLA compilation cache for every training process of the session."""
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(cache_dir))


def _specs(sweep_file: Path, root: Path) -> list[runs.RunSpec]:
    sweep = sweepfile.load(sweep_file)
    return launcher.make_specs(sweepfile.expand(sweep), root.absolute() / sweep.name, compilation_cache=False)


def _snapshot(run_dir: str) -> dict:
    return {
        str(p.relative_to(run_dir)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(Path(run_dir).rglob("*"))
        if p.is_file()
    }


def _summary_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the launcher exited ({proc.returncode}) before {what}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _children(pid: int) -> list[int]:
    """Processes started by ``pid`` (the training processes of a launcher)."""
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except FileNotFoundError:  # the process has exited
        pass
    return found


def _launch(sweep_file: Path, root: Path, *options: str, log: Path) -> subprocess.Popen:
    """``rlscale sweep`` in a new process group, as a user would start it."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "rlscale.cli", "sweep", str(sweep_file), "--runs-root", str(root), *options],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


# --- expansion ---------------------------------------------------------------------------------


def test_grid_zip_and_exclude_expand_in_file_order(tmp_path):
    text = """
name: demo
base: {width: 32, total_env_steps: 320}
zip:
  - env: [point_u_maze, point_big_maze]
    num_evals: [2, 4]
grid:
  depth: [4, 8, 16]
  seed: [0, 1]
exclude:
  - {env: point_big_maze, depth: 16}
  - {depth: 8, seed: 1}
"""
    run_list = expand(text, tmp_path)
    got = [(r.config.env, r.config.num_evals, r.config.depth, r.config.seed) for r in run_list]
    expected = [
        (env, evals, depth, seed)
        for env, evals in (("point_u_maze", 2), ("point_big_maze", 4))
        for depth in (4, 8, 16)
        for seed in (0, 1)
        if not (env == "point_big_maze" and depth == 16) and not (depth == 8 and seed == 1)
    ]
    assert got == expected and len(got) == 12 - 2 - 2
    assert all(r.config.width == 32 and r.config.run_dir is None for r in run_list)
    # The task's preset applies below the sweep's options.
    assert run_list[0].config.episode_length == sweepfile.config_for("point_u_maze").episode_length
    assert run_list[0].name == f"point_u_maze_d4_w32_b256_s0_{run_list[0].id}"
    assert len({r.id for r in run_list}) == len(run_list)


def test_ids_do_not_depend_on_key_order_or_number_spelling(tmp_path):
    a = expand("name: a\nbase: {width: 32, gamma: 0.99, actor_lr: 3e-4}\ngrid: {env: [point_u_maze], seed: [0, 1]}\n", tmp_path, "a.yaml")
    b = expand("grid: {seed: [0, 1], env: [point_u_maze]}\nbase: {actor_lr: 0.0003, gamma: 0.99, width: 32}\nname: b\n", tmp_path, "b.yaml")
    assert [r.id for r in a] == [r.id for r in b]
    assert a[0].config.actor_lr == 3e-4  # YAML reads 3e-4 as a string; the launcher reads a number
    c = expand("name: c\nbase: {width: 32, seed: 0}\ngrid: {env: [point_u_maze], gamma: [0.99]}\n", tmp_path, "c.yaml")
    assert c[0].id == a[0].id  # where a value is set does not matter, only the resolved config
    d = expand("name: d\nbase: {width: 64}\ngrid: {env: [point_u_maze], seed: [0]}\n", tmp_path, "d.yaml")
    assert d[0].id != a[0].id


@pytest.mark.parametrize(
    "text,line,message",
    [
        ("name: x\ngrid:\n  env: [point_u_maze]\n  dept: [4]\n", 4, "unknown option 'dept' in grid (did you mean 'depth'?)"),
        ("name: x\ngrids:\n  env: [point_u_maze]\n", 2, "unknown key 'grids' (did you mean 'grid'?)"),
        ("name: x\ngrid:\n  env: [point_u_maze]\n  depth: [4,\n    eight]\n", 5, "depth: 'eight' is not an integer"),
        ("name: x\nbase:\n  layer_norm: no_thanks\ngrid: {env: [point_u_maze]}\n", 3, "layer_norm: 'no_thanks' is not true or false"),
        ("name: x\nbase: {activation: gelu}\ngrid: {env: [point_u_maze]}\n", 2, "activation: 'gelu' is not one of 'swish', 'relu'"),
        ("name: x\nbase: {norm: batch}\ngrid: {env: [point_u_maze]}\n", 2, "norm: 'batch' is not one of 'layernorm', 'hyperspherical', 'none'"),
        ("name: x\nbase: {norm: none, layer_norm: false}\ngrid: {env: [point_u_maze]}\n", 2, "norm is set twice in base (layer_norm is its old name)"),
        ("name: x\nbase: {norm: none}\ngrid: {env: [point_u_maze], layer_norm: [true]}\n", 3, "norm is set in base (line 2) and varied here"),
        ("name: x\nzip:\n  - env: [point_u_maze, point_big_maze]\n    seed: [0]\n", 3, "zip group 1: lists must have equal lengths, got env: 2, seed: 1"),
        ("name: x\ngrid:\n  env: [point_u_maze]\n  depth: [4, 8]\nexclude:\n  - {depth: 12}\n", 6, "exclude entry 1: depth=12 is not one of the axis's values"),
        ("name: x\ngrid:\n  env: [point_u_maze]\n  env: [point_big_maze]\n", 4, "duplicate key 'env' (first at line 3)"),
        ("name: x\nbase: {run_dir: here}\ngrid: {env: [point_u_maze]}\n", 2, "run_dir cannot be set in a sweep"),
        ("name: x\nbase: {depth: 4}\ngrid: {env: [point_u_maze], depth: [8]}\n", 3, "depth is set in base (line 2) and varied here"),
        ("name: x\ngrid: {env: [point_u_maze]}\nlauncher:\n  backend: local\n  slurm: {partition: a, gpu: 1}\n", 5, "unknown setting 'gpu' in launcher.slurm"),
        ("name: x\ngrid: {env: [point_u_maze]}\nlauncher: {backend: kubernetes}\n", 3, "launcher.backend: 'kubernetes' is not one of local, ray, slurm"),
        ("name: x\ngrid:\n  env: [point_u_maze\n", 4, "invalid YAML"),
        ("name: x\ngrid:\n  depth: [4]\n", 1, "no task: set env in base, grid or zip"),
    ],
)
def test_bad_sweep_files_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(sweepfile.SweepError) as info:
        sweepfile.expand(sweepfile.load(path))
    assert str(info.value).startswith(f"{path}:{line}: ") and message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_runs_are_reported_with_the_line_of_the_value_before_anything_runs(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nbase: {width: 32}\ngrid:\n  env: [point_u_maze]\n  depth: [4, 6]\n  batch_size: [256]\n")
    assert cli_main(["sweep", str(path), "--runs-root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rlscale sweep: error: {path}:5: run 2 (point_u_maze_d6_w32_b256_s0_")
    assert "--depth must be a positive multiple of 4" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


PAPER_COUNTS = {
    "paper_depth": 10 * 5 * 5,
    "paper_batch_size": 4 * 5 * 3,
    "paper_width_vs_depth": 3 * 8 * 3,
    "paper_actor_vs_critic": 3 * 3 * 3 * 3,
    "paper_depth_1024": 8 * 3,
    "paper_ablations": 4 * 4 * 3,
    "paper_hyperspherical": 2 * 4 * 3,
    "paper_collector": 2 * 2 * 3,
    "paper_baselines": 3 * 5 * 5 * 3,
    "paper_baselines_gcbc": 3 * 5 * 3,
}


@pytest.mark.parametrize("name,count", sorted(PAPER_COUNTS.items()))
def test_paper_sweeps_expand_and_validate_all_but_the_missing_tasks(name, count):
    sweep = sweepfile.load(SWEEPS / f"{name}.yaml")
    run_list = sweepfile.expand(sweep)
    assert len(run_list) == count and sweep.name == name
    checked = sweepfile.check(sweep, run_list)
    assert checked.errors == []  # every option of every run is valid; only the tasks are missing
    assert len(checked.plans) == count


def test_paper_depth_budgets_and_eval_tasks():
    run_list = sweepfile.expand(sweepfile.load(SWEEPS / "paper_depth.yaml"))
    budgets = {r.config.env: (r.config.total_env_steps, r.config.eval_env) for r in run_list}
    assert budgets["ant_u5_maze"] == (400_000_000, "ant_u5_maze_eval")
    assert budgets["ant_hardest_maze"] == (200_000_000, None)
    assert budgets["humanoid"] == (100_000_000, None)
    assert {r.config.depth for r in run_list} == {4, 8, 16, 32, 64} and {r.config.width for r in run_list} == {256}
    deep = sweepfile.expand(sweepfile.load(SWEEPS / "paper_depth_1024.yaml"))
    assert max((r.config.resolved_critic_depth, r.config.resolved_actor_depth) for r in deep) == (1024, 512)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_paper_sweeps_dry_run(name, tmp_path, capsys):
    assert cli_main(["sweep", str(SWEEPS / f"{name}.yaml"), "--dry-run", "--runs-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{PAPER_COUNTS[name]} runs: {PAPER_COUNTS[name]} pending" in out
    assert out.count(" -m rlscale.cli train --env ") == PAPER_COUNTS[name]
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def test_dry_run_lists_commands_and_notes_unregistered_tasks(tmp_path, capsys):
    path = tmp_path / "future.yaml"
    path.write_text(
        "name: future\nbase: {total_env_steps: 1000000}\n"
        "zip:\n  - layer_norm: [true, false]\n    activation: [swish, relu]\n"
        "grid:\n  env: [teleport_maze, point_u_maze]\n  depth: [4, 16]\n"
    )
    root = tmp_path / "runs"
    assert cli_main(["sweep", str(path), "--dry-run", "--runs-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "8 runs: 8 pending" in out and "note: task teleport_maze is not registered yet: 4 run(s) can be listed" in out
    # The file's old name layer_norm (rlscale.legacy_options) is launched as today's option.
    assert f"-m rlscale.cli train --env teleport_maze --depth 16 --activation relu --norm none --total-env-steps 1000000 " \
           f"--run-dir {root / 'future' / 'teleport_maze_d16_w256_b512_s0_'}" in out
    assert not root.exists()
    # Launching them is refused before anything runs.
    assert cli_main(["sweep", str(path), "--runs-root", str(root)]) == 2
    assert "nothing launched: task teleport_maze is not registered yet" in capsys.readouterr().err
    assert not root.exists()


@pytest.mark.parametrize("path", sorted((REPO / "benchmarks").rglob("*.yaml")), ids=lambda p: p.stem)
def test_benchmark_sweep_files_stay_valid(path):
    """The sweeps behind benchmarks/*.md must still expand and validate, so their tables can be rerun."""
    sweep = sweepfile.load(path)
    checked = sweepfile.check(sweep, sweepfile.expand(sweep))
    assert not checked.errors and not checked.unregistered


def test_quickstart_is_valid_and_small():
    sweep = sweepfile.load(SWEEPS / "quickstart.yaml")
    run_list = sweepfile.expand(sweep)
    checked = sweepfile.check(sweep, run_list)
    assert len(run_list) == 16 and not checked.errors and not checked.unregistered
    assert {r.config.depth for r in run_list} == {4, 16} and {r.config.seed for r in run_list} == set(range(8))
    # The README's budget (at most 10 minutes on 2 CPU cores) was measured with these sizes.
    assert all(r.config.width <= 16 and checked.plans[r.id].total_env_steps <= 410_000 for r in run_list)
    assert sweep.launcher.pack_seeds == 4 and sweep.launcher.workers == 2
    # The study drawn beside the runs is the one at the same task, width and batch.
    assert sweep.reference_study == "depth_effect_cpu_confirm"
    study = load_study(sweep.reference_study)
    assert study["task"] == "point_u_maze" and {a["width"] for a in study["arms"] if not a["control"]} == {16}


def test_gpu_detection_and_slots():
    assert local_backend.detect_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert local_backend.detect_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert local_backend.detect_gpus({"CUDA_VISIBLE_DEVICES": "0,-1,1"}) == ["0"]
    assert local_backend.detect_gpus({"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "0"}) == []
    # CPU: each worker's share of the cores for its process's seed groups, at least one; a user's value is kept.
    assert local_backend.slots([], None, cores=2, environ={}) == [{"RLSCALE_SEED_THREADS": "2"}]
    assert local_backend.slots([], 2, cores=2, environ={}) == [{"RLSCALE_SEED_THREADS": "1"}] * 2
    assert local_backend.slots([], 3, cores=2, environ={}) == [{"RLSCALE_SEED_THREADS": "1"}] * 3
    assert local_backend.slots([], 2, cores=16, environ={}) == [{"RLSCALE_SEED_THREADS": "8"}] * 2
    assert local_backend.slots([], 3, cores=16, environ={"RLSCALE_SEED_THREADS": "1"}) == [{}, {}, {}]
    assert local_backend.slots(["0", "1"], None) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    shared = local_backend.slots(["0", "1"], None, runs_per_gpu=2)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in shared] == ["0", "1", "0", "1"]
    assert all(s["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for s in shared)


def test_param_count_matches_the_networks():
    import jax

    from rlscale import envs
    from rlscale.agents.crl import CRL
    from rlscale.config import config_for
    from rlscale.networks import param_count

    for overrides in ({"depth": 8, "width": 32}, {"actor_depth": 4, "critic_depth": 12, "width": 16, "norm": "none"},
                      {"actor_depth": 8, "critic_depth": 4, "width": 16, "norm": "hyperspherical"},
                      {"depth": 8, "width": 16, "norm": "hyperspherical", "residual": False}):
        cfg = config_for("point_u_maze", **overrides)
        agent = CRL.build(cfg, envs.make("point_u_maze").spec)
        learner = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
        assert sizes.agent_param_count(cfg) == param_count((learner.actor_params, learner.critic_params))


def test_param_count_counts_the_cosine_energys_temperature():
    import jax

    from rlscale import envs
    from rlscale.agents.crl import CRL
    from rlscale.config import config_for
    from rlscale.networks import param_count

    cfg = config_for("point_u_maze", width=16, energy="cosine")
    learner = jax.eval_shape(CRL.build(cfg, envs.make("point_u_maze").spec).init, jax.random.PRNGKey(0))
    assert learner.critic_params["log_temperature"].shape == ()
    assert sizes.agent_param_count(cfg) == param_count((learner.actor_params, learner.critic_params))
    assert sizes.agent_param_count(cfg) == sizes.agent_param_count(config_for("point_u_maze", width=16)) + 1


def _table(**knobs) -> list[dict]:
    return [
        {"task": task, "depth": d, "critic_depth": d, "actor_depth": d, "width": 256, "seed": seed,
         "score": float(d * (seed + 1)), "success_any": d / 16 if seed else None, "status": "done",
         **{k: f(d, seed) for k, f in knobs.items()}}
        for task in ("point_u_maze", "point_big_maze") for d in (4, 8, 16) for seed in (0, 1)
    ]


def test_plot_has_one_line_per_task_unless_another_knob_varies():
    lines = summary.plot_lines(_table())  # actor depth follows depth: not a knob of its own
    assert lines == {
        "point_u_maze": {4: [4.0, 8.0], 8: [8.0, 16.0], 16: [16.0, 32.0]},
        "point_big_maze": {4: [4.0, 8.0], 8: [8.0, 16.0], 16: [16.0, 32.0]},
    }
    # The success-any panel: the same lines, a run without the value left out (not drawn as 0).
    assert summary.plot_lines(_table(), "success_any")["point_u_maze"] == {4: [0.25], 8: [0.5], 16: [1.0]}
    lines = summary.plot_lines(_table(norm=lambda d, seed: ("none", "hyperspherical")[seed]))
    assert sorted(lines) == [f"{t} norm={v}" for t in ("point_big_maze", "point_u_maze") for v in ("hyperspherical", "none")]


def test_t_halfwidth_and_the_rule_known_answers():
    from rlscale.analysis.scores import beats, t_halfwidth

    assert t_halfwidth([1.0, 2.0, 3.0]) == pytest.approx(4.302653 / 3**0.5, rel=1e-6)  # t(0.975, 2) · s / √n
    assert t_halfwidth([0.5]) == float("inf")
    assert beats(0.9, 0.1, 0.5, 0.2) and not beats(0.8, 0.1, 0.5, 0.2)  # 0.4 > 0.3; 0.3 is not


def test_summary_applies_the_depth_effect_test_and_the_old_rule():
    from scipy.stats import ttest_ind

    scores = {4: [0.10, 0.20, 0.15, 0.12], 8: [0.10, 0.90, 0.20, 0.80], 16: [0.80, 0.85, 0.90, 0.82]}
    table = [{"task": "point_u_maze", "depth": d, "critic_depth": d, "actor_depth": d, "width": 16, "seed": seed,
              "score": v, "status": "done"} for d, values in scores.items() for seed, v in enumerate(values)]
    table.append({**table[0], "seed": 9, "score": 1.0, "status": "running"})  # unfinished runs do not count
    effects = {e["deep"]: e for e in summary.depth_effect(table)}
    assert sorted(effects) == [8, 16]
    hw = lambda v: 3.182446 * np.std(v, ddof=1) / 2  # noqa: E731  t(0.975, 3) · s / √4
    for depth in (8, 16):
        ref = ttest_ind(scores[depth], scores[4], equal_var=False)
        assert effects[depth]["difference"] == pytest.approx(np.mean(scores[depth]) - np.mean(scores[4]))
        assert effects[depth]["needed"] == pytest.approx(hw(scores[depth]) + hw(scores[4]), rel=1e-5)
        assert effects[depth]["p"] == pytest.approx(ref.pvalue) and effects[depth]["seeds"] == (4, 4)
        assert effects[depth]["low"] == pytest.approx(ref.confidence_interval().low)
    assert effects[16]["holds"] and effects[16]["old_rule"]
    assert not effects[8]["holds"] and not effects[8]["old_rule"]
    text = summary.format_depth_effect(list(effects.values()), " of your runs")
    assert text.startswith("depth effect of your runs (does the 95 % Welch interval")
    assert "point_u_maze: depth 16 − depth 4 = +0.700, 95 % [+0.625, +0.775], p = 4.7e-07, 4/4 seeds: yes (old rule, > 0.138: yes)" in text
    assert "depth 8 − depth 4 = +0.357" in text and "4/4 seeds: no (old rule" in text
    assert "no line" in summary.format_depth_effect(summary.depth_effect(table[:4]))  # only depth 4
    one_seed = [r for r in table if r["seed"] == 0 and r["status"] == "done"]
    assert "interval unbounded (needs ≥ 2 seeds each)" in summary.format_depth_effect(summary.depth_effect(one_seed))


def test_a_sweep_names_only_a_shipped_reference_study(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nreference_study: nope\nbase: {env: point_u_maze}\n")
    with pytest.raises(sweepfile.SweepError, match="reference_study: 'nope' is not a shipped study; valid: depth_effect_cpu_confirm"):
        sweepfile.load(path)
    path.write_text("name: s\nreference_study: depth_effect_cpu_confirm\nbase: {env: point_u_maze}\n")
    assert sweepfile.load(path).reference_study == "depth_effect_cpu_confirm"


# --- backends on tiny runs ---------------------------------------------------------------------


@pytest.mark.slow
@needs_proc
def test_local_sweep_survives_sigkill_reports_failures_and_retries_them(tmp_path, compile_cache, capsys):
    sweep_file = write_sweep(tmp_path / "kill.yaml", {"env": ["point_u_maze"], "seed": [0, 1, 2, 3]})
    root = tmp_path / "runs"
    specs = _specs(sweep_file, root)
    sweep_dir = root / "kill"

    # 1. One worker: wait until the first run finished and the second started, then kill everything
    #    (launcher and training process, which runs in its own process group) as a crash would.
    proc = _launch(sweep_file, root, "--workers", "1", log=tmp_path / "first.log")
    try:
        _wait_for(lambda: rd.is_complete(specs[0].run_dir) and rd.is_started(specs[1].run_dir), 240,
                  "run 1 to finish and run 2 to start", proc)
    finally:
        training = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in training:
            os.kill(pid, signal.SIGKILL)
        proc.wait()
    finished = [s for s in specs if rd.is_complete(s.run_dir)]
    before = {s.id: _snapshot(s.run_dir) for s in finished}
    assert runs.state(specs[0]) == "done" and not rd.is_started(specs[3].run_dir)

    # 2. Rerun, with run 4's directory blocked by a stray file: it fails, the others complete.
    Path(specs[3].run_dir).mkdir(parents=True)
    (Path(specs[3].run_dir) / "stray.txt").write_text("not a run")
    assert launcher.main([str(sweep_file), "--runs-root", str(root), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert f"FAILED   {specs[3].name}: exit status 2; log: {specs[3].log_path}" in out
    assert "already exists; pass --resume" in out  # the tail of the failed run's log
    assert [runs.state(s) for s in specs] == ["done", "done", "done", "failed"]
    assert {s.id: _snapshot(s.run_dir) for s in finished} == before  # finished runs were not touched
    assert "resume: " in specs[1].log_path.read_text()  # the interrupted run was resumed, not restarted
    marker = json.loads(specs[3].marker_path.read_text())
    assert marker["exit_code"] == 2 and "already exists" in marker["tail"]
    names = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name not in ("logs",))
    assert names == sorted(s.name for s in specs)
    rows = _summary_rows(sweep_dir)
    assert [r["run_id"] for r in rows] == [s.id for s in specs]
    assert [r["status"] for r in rows] == ["done", "done", "done", "failed"]
    assert all(r["env_steps"] == "320" and r["params"] == str(sizes.agent_param_count(sweepfile.config_for("point_u_maze", width=32))) for r in rows[:3])

    # 3. Without --retry-failed the failed run is skipped; with it, it is rerun.
    log_size = specs[3].log_path.stat().st_size
    assert launcher.main([str(sweep_file), "--runs-root", str(root)]) == 1
    assert "--retry-failed to rerun it" in capsys.readouterr().out
    assert specs[3].log_path.stat().st_size == log_size
    (Path(specs[3].run_dir) / "stray.txt").unlink()
    assert launcher.main([str(sweep_file), "--runs-root", str(root), "--retry-failed"]) == 0
    assert [runs.state(s) for s in specs] == ["done"] * 4 and not specs[3].marker_path.exists()
    rows = _summary_rows(sweep_dir)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
    assert all(r["score"] != "" and r["time_at_goal"] != "" and r["success_any"] != "" for r in rows)
    assert {s.id: _snapshot(s.run_dir) for s in finished} == before

    # 4. The summary is rebuilt from the run directories alone.
    text = (sweep_dir / "summary.csv").read_text()
    (sweep_dir / "summary.csv").unlink()
    assert cli_main(["sweep", str(sweep_file), "--runs-root", str(root), "--summarize"]) == 0
    assert (sweep_dir / "summary.csv").read_text() == text


@pytest.mark.slow
@needs_proc
def test_sigterm_saves_a_checkpoint_and_the_run_is_resumed_not_restarted(tmp_path, compile_cache):
    epochs = 20
    sweep_file = write_sweep(tmp_path / "term.yaml", {"env": ["point_u_maze"]}, base=_budget(epochs))
    root = tmp_path / "runs"
    (spec,) = _specs(sweep_file, root)
    metrics = Path(spec.run_dir) / "metrics.jsonl"

    def rows() -> int:
        return metrics.read_text().count("\n") if metrics.exists() else 0

    proc = _launch(sweep_file, root, log=tmp_path / "launcher.log")
    try:
        # 1. SIGTERM to the training process alone (a preempted worker): it saves and exits 75, and the
        #    launcher resubmits it at once.
        _wait_for(lambda: rows() >= 1, 240, "the first epoch", proc)
        (child,) = _children(proc.pid)
        os.kill(child, signal.SIGTERM)
        _wait_for(lambda: spec.log_path.read_text().count("] resume: ") == 1, 120, "the resubmission", proc)
        first_stop = ckpt.read_meta(spec.run_dir, ckpt.latest_step(spec.run_dir))["counters"]["epoch"]
        # 2. SIGTERM to launcher and training process together (a preempted node): both stop.
        _wait_for(lambda: rows() > first_stop, 240, "an epoch after resuming", proc)
        (child,) = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)
        os.kill(child, signal.SIGTERM)
        assert proc.wait(timeout=120) == runs.PREEMPTED
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "resubmitting 1 run(s) stopped by SIGTERM" in (tmp_path / "launcher.log").read_text()
    step = ckpt.latest_step(spec.run_dir)
    done_epochs = ckpt.read_meta(spec.run_dir, step)["counters"]["epoch"]  # a loadable checkpoint
    assert first_stop < done_epochs < epochs, "the SIGTERMs should land before the last epoch"
    assert runs.state(spec) == "partial" and not spec.marker_path.exists()
    assert spec.log_path.read_text().count("exit status 75") == 2
    kept = metrics.read_text()
    assert kept.count("\n") == done_epochs

    # 3. The next launcher invocation resumes the run from its checkpoint.
    assert launcher.main([str(sweep_file), "--runs-root", str(root)]) == 0
    log = spec.log_path.read_text()
    assert f"resuming {spec.run_dir} at epoch {first_stop}/{epochs}" in log
    assert f"resuming {spec.run_dir} at epoch {done_epochs}/{epochs}" in log
    lines = metrics.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, epochs + 1))  # no row twice
    assert metrics.read_text().startswith(kept)  # the rows from before were kept as they were
    assert runs.state(spec) == "done"


@pytest.mark.slow
def test_two_launchers_on_one_sweep_train_each_run_once_and_say_who_finished_it(tmp_path, compile_cache):
    """The second launcher waits on the run's writer lock (rlscale.storage.run_dir.RunLock) while the first trains
    it, and then reports the run as finished by another process, not as started and done by itself."""
    sweep_file = write_sweep(tmp_path / "two.yaml", {"env": ["point_u_maze"]}, base=_budget(20))
    root = tmp_path / "runs"
    (spec,) = _specs(sweep_file, root)
    first = _launch(sweep_file, root, log=tmp_path / "first.log")
    try:
        _wait_for(lambda: Path(spec.run_dir, "metrics.jsonl").exists(), 240, "the first launcher's first epoch", first)
        second = _launch(sweep_file, root, log=tmp_path / "second.log")
        assert second.wait(timeout=300) == 0 and first.wait(timeout=300) == 0
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert "finished by another process while this launcher waited" in (tmp_path / "second.log").read_text()
    assert "finished by another process" not in (tmp_path / "first.log").read_text()
    log = spec.log_path.read_text()
    assert log.count("] start: ") == 1 and "] resume: " not in log  # trained once, by one process
    assert "waiting for the process that writes" in log
    assert [row["epoch"] for row in rd.read_metrics(spec.run_dir)] == list(range(1, 21))


@pytest.mark.slow
def test_ray_backend_retries_a_run_whose_worker_died(tmp_path, compile_cache, monkeypatch):
    ray = pytest.importorskip("ray")
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(runs.FAULT_ENV, f"kill_worker_once:{marker}")
    sweep_file = write_sweep(tmp_path / "ray.yaml", {"env": ["point_u_maze"], "seed": [0, 1]})
    root = tmp_path / "runs"
    specs = _specs(sweep_file, root)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024**2)
    try:
        assert ray.is_initialized()
        code = launcher.main([str(sweep_file), "--runs-root", str(root), "--backend", "ray", "--max-retries", "2"])
    finally:
        ray.shutdown()
    assert code == 0 and marker.exists()
    assert [runs.state(s) for s in specs] == ["done", "done"]
    logs = [s.log_path.read_text() for s in specs]
    killed = [log for log in logs if "killing this worker" in log]
    assert len(killed) == 1
    attempts = [line for line in killed[0].splitlines() if "] start: " in line or "] resume: " in line]
    assert len(attempts) == 2  # the first attempt, and Ray's retry
    assert len(_summary_rows(root / "ray")) == 2


@pytest.mark.slow
def test_slurm_backend_runs_a_job_array_through_submitit(tmp_path, compile_cache):
    pytest.importorskip("submitit")
    sweep_file = write_sweep(tmp_path / "slurm.yaml", {"env": ["point_u_maze"], "seed": [0, 1]})
    root = tmp_path / "runs"
    specs = _specs(sweep_file, root)
    code = launcher.main([
        str(sweep_file), "--runs-root", str(root), "--backend", "slurm", "--slurm-cluster", "local",
        "--gpus-per-run", "0", "--time", "20",
    ])
    assert code == 0
    assert [runs.state(s) for s in specs] == ["done", "done"]
    assert any((root / "slurm" / "slurm").iterdir())  # submitit's job folders
    assert [r["status"] for r in _summary_rows(root / "slurm")] == ["done", "done"]


@pytest.mark.slow
def test_pack_seeds_trains_runs_differing_only_in_seed_in_one_process(tmp_path, compile_cache, capsys):
    sweep_file = write_sweep(tmp_path / "packed.yaml", {"env": ["point_u_maze"], "gamma": [0.99, 0.9], "seed": [0, 1, 2]})
    root = tmp_path / "runs"
    specs = _specs(sweep_file, root)
    run_list = sweepfile.expand(sweepfile.load(sweep_file))
    packed = launcher.pack_seeds(specs, run_list, specs, 2)
    # Per gamma: seeds 0 and 1 in one process, seed 2 alone.
    assert [type(p).__name__ for p in packed] == ["PackSpec", "RunSpec", "PackSpec", "RunSpec"]
    assert [p.seeds for p in packed if isinstance(p, runs.PackSpec)] == [(0, 1), (0, 1)]
    assert runs.members(packed[0]) == (specs[0], specs[1])
    command = packed[0].command(list(packed[0].members), resume=False)
    assert command[command.index("--seeds") + 1 : command.index("--run-dirs")] == ["0", "1"]
    assert command.count("--run-dir") == 0 and command[-2:] == [specs[0].run_dir, specs[1].run_dir]

    assert launcher.main([str(sweep_file), "--runs-root", str(root), "--pack-seeds", "2"]) == 0
    assert [runs.state(s) for s in specs] == ["done"] * 6
    out = capsys.readouterr().out
    assert out.count("seeds packed") >= 2
    stored = [json.loads((Path(s.run_dir) / "config.json").read_text()) for s in specs]
    assert [c["config"]["seed"] for c in stored] == [0, 1, 2, 0, 1, 2]
    assert [c["config"]["gamma"] for c in stored] == [0.99, 0.99, 0.99, 0.9, 0.9, 0.9]
    assert [c.get("trained_with_seeds") for c in stored] == [[0, 1], [0, 1], None] * 2
    assert "trained with 1 other seed(s) in one process" in Path(specs[1].log_path).read_text()
    assert [r["status"] for r in _summary_rows(root / "packed")] == ["done"] * 6
    # A rerun finds everything done and trains nothing.
    before = {s.run_dir: _snapshot(s.run_dir) for s in specs}
    assert launcher.main([str(sweep_file), "--runs-root", str(root), "--pack-seeds", "2"]) == 0
    assert {s.run_dir: _snapshot(s.run_dir) for s in specs} == before
    with pytest.raises(sweepfile.SweepError, match="--pack-seeds 0 is not a positive integer"):
        launcher.main([str(sweep_file), "--runs-root", str(root), "--pack-seeds", "0"])


def test_ray_and_slurm_backends_describe_their_settings_and_build_their_jobs(tmp_path):
    """The cluster backends' set-up without a cluster (their real runs are the slow tests above)."""
    pytest.importorskip("ray")
    pytest.importorskip("submitit")
    from rlscale.launch.ray_backend import RayBackend
    from rlscale.launch.slurm_backend import SlurmBackend

    ray = RayBackend(sweepfile.Ray(address="ray://head:10001", num_gpus=0.5, num_cpus=4, max_retries=2), workers=None)
    assert ray.describe() == "ray on ray://head:10001, 0.5 GPU(s) and 4 CPU(s) per run, 2 retries"
    slurm = SlurmBackend(sweepfile.Slurm(cluster="local", partition="gpu", time="1:30:00", gpus=0, cpus=2),
                         tmp_path / "slurm", "job")
    parallelism = sweepfile.Slurm().array_parallelism
    assert slurm.describe() == f"slurm (local), partition gpu, 90 min, 0 GPU(s) and 2 CPU(s) per run, {parallelism} jobs at once"
    executor = slurm.executor()
    assert executor.parameters["timeout_min"] == 90
    assert not any(k.startswith("slurm_") for k in executor.parameters)  # a local executor gets no sbatch options


def test_the_child_wrapper_execs_its_command_and_refuses_an_orphan(tmp_path):
    """launch/_child.py, which starts every training process: it execs the command with the parent's
    death signal set, and exits 75 (resubmit) when the parent it was given is not its parent."""
    out = subprocess.run([sys.executable, "-S", runs.CHILD, str(os.getpid()), sys.executable, "-c", "print('ran')"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "ran\n"
    orphan = subprocess.run([sys.executable, "-S", runs.CHILD, "1", sys.executable, "-c", "print('ran')"],
                            capture_output=True, text=True, timeout=60)
    assert orphan.returncode == 75 and orphan.stdout == ""
