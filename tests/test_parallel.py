"""Several seeds in one process, several devices for one run, the persistent compilation cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from helpers import TINY, assert_rows_close, without_timing

from rlscale.cli import main
from rlscale.config import TrainConfig
from rlscale.storage import checkpoint as ckpt
from rlscale.storage import run_dir as rd
from rlscale.training.loop import (
    CACHE_DIR_NAME,
    enable_compilation_cache,
    resume_paths,
    train,
    train_seeds,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seed_group(tmp_path_factory):
    """Seeds 3 and 4 trained together (one vmapped program, one thread) and the same seeds trained alone."""
    root = tmp_path_factory.mktemp("seeds")
    group = train_seeds(TrainConfig(**{**TINY, "seed": 3, "save_buffer": True, "run_dir": str(root / "group")}), 2, seed_threads=1)
    alone = [train(TrainConfig(**{**TINY, "seed": s, "save_buffer": True, "run_dir": str(root / f"alone{s}")})) for s in (3, 4)]
    return root, group, alone


@pytest.mark.slow
def test_vmapped_seeds_match_seeds_trained_alone(seed_group):
    root, group, alone = seed_group
    assert group == [root / "group" / "seed3", root / "group" / "seed4"]
    for path, reference, seed in zip(group, alone, (3, 4)):
        stored = rd.read_config(path)
        assert stored["config"]["seed"] == seed and stored["trained_with_seeds"] == [3, 4]
        assert ckpt.list_steps(path) == [160, 240, 320]
        assert_rows_close(rd.read_metrics(path), rd.read_metrics(reference))
    # Independent keys: the two seeds did not learn the same thing.
    a, b = (rd.read_metrics(p)[-1]["training/actor_loss"] for p in group)
    assert abs(a - b) > 1e-3
    # `rlscale eval` treats the group directory as a sweep: one row per seed.
    assert main(["eval", str(root / "group"), "--episodes", "4"]) == 0
    assert all((p / "eval").is_dir() for p in group)


@pytest.mark.slow
def test_seed_groups_on_threads_equal_their_programs_run_alone(seed_group, tmp_path, capsys):
    """Three seeds on two threads: seeds 3 and 4 form one vmapped group (the very program of the one-thread
    group of 3 and 4), seed 5 runs alone in the other (the program of a run of its own): each seed's
    numbers are those programs' numbers, digit for digit, whatever ran beside them."""
    root, group, _ = seed_group
    cfg = TrainConfig(**{**TINY, "seed": 3, "save_buffer": True, "run_dir": str(tmp_path / "threads")})
    paths = train_seeds(cfg, 3, seed_threads=2)
    assert "3 seeds (3, 4, 5) in 2 vmapped programs of 2/1 seeds, one host thread each" in capsys.readouterr().out
    alone5 = train(TrainConfig(**{**TINY, "seed": 5, "save_buffer": True, "run_dir": str(tmp_path / "alone5")}))
    for path, reference in zip(paths, [*group, alone5]):
        assert [without_timing(r) for r in rd.read_metrics(path)] == [without_timing(r) for r in rd.read_metrics(reference)]
        assert ckpt.list_steps(path) == [160, 240, 320]


@pytest.mark.slow
def test_a_group_trained_on_one_thread_resumes_on_two(tmp_path):
    cfg = TrainConfig(**{**TINY, "seed": 3, "save_buffer": True, "run_dir": str(tmp_path / "g")})
    paths = train_seeds(cfg, 2, seed_threads=1)
    before = [rd.read_metrics(p) for p in paths]
    for path in paths:  # back to the second checkpoint
        ckpt_dir = ckpt.step_path(path, 320)
        for f in sorted(ckpt_dir.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        ckpt_dir.rmdir()
    assert main(["train", "--resume", str(tmp_path / "g"), "--seed-threads", "2"]) == 0
    for path, rows in zip(paths, before):
        assert [r["epoch"] for r in rd.read_metrics(path)] == [1, 2, 3]
        assert_rows_close(rd.read_metrics(path), rows)


@pytest.mark.slow
def test_group_resumes_from_the_last_checkpoint_common_to_its_seeds(seed_group, tmp_path):
    root, _, alone = seed_group
    cfg = TrainConfig(**{**TINY, "seed": 3, "save_buffer": True, "checkpoint_every": 1, "run_dir": str(tmp_path / "g")})
    paths = train_seeds(cfg, 2)
    # A stop between the seeds' saves: seed 4 lacks the last checkpoint and its last metrics row.
    ckpt_dir = ckpt.step_path(paths[1], 320)
    for f in sorted(ckpt_dir.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    ckpt_dir.rmdir()
    metrics = paths[1] / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:2]))
    assert resume_paths(tmp_path / "g") == paths
    assert main(["train", "--resume", str(tmp_path / "g")]) == 0
    # Seed 3's own last checkpoint was kept aside, not overwritten or deleted.
    assert [p.name[:12] for p in (paths[0] / "superseded_checkpoints").iterdir()] == ["000000000320"]
    for path, reference in zip(paths, alone):
        rows = rd.read_metrics(path)
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        assert_rows_close(rows, rd.read_metrics(reference))


@pytest.mark.slow
def test_bad_seed_groups_are_refused_and_write_nothing(tmp_path, capsys):
    with pytest.raises(ValueError, match="--num-seeds must be a positive integer, got 0"):
        train_seeds(TrainConfig(**{**TINY, "run_dir": str(tmp_path / "zero")}), 0)
    assert not (tmp_path / "zero").exists()
    # One seed's directory exists already: nothing is created for the others either.
    (tmp_path / "g" / "seed1").mkdir(parents=True)
    (tmp_path / "g" / "seed1" / "keep.txt").write_text("mine")
    args = ["train", "--env", "point_u_maze", "--num-seeds", "2", "--run-dir", str(tmp_path / "g")]
    assert main(args) == 2
    assert "seed1 already exists" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["seed1"]
    assert (tmp_path / "g" / "seed1" / "keep.txt").read_text() == "mine"
    # Seed threads: a positive integer, from the flag or the launcher's variable; refused before any file.
    for flag in ("0", "-1"):
        assert main(["train", "--env", "point_u_maze", "--num-seeds", "2", "--seed-threads", flag, "--run-dir", str(tmp_path / "t")]) == 2
        assert f"--seed-threads must be a positive integer (host threads, one seed group each), got {flag}" in capsys.readouterr().err
    os.environ["RLSCALE_SEED_THREADS"] = "two"
    try:
        assert main(["train", "--env", "point_u_maze", "--num-seeds", "2", "--run-dir", str(tmp_path / "t")]) == 2
    finally:
        del os.environ["RLSCALE_SEED_THREADS"]
    assert "$RLSCALE_SEED_THREADS must be a positive integer, got 'two'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    # Runs that differ in more than the seed cannot share one program.
    a = train(TrainConfig(**{**TINY, "total_env_steps": 160, "num_evals": 1, "run_dir": str(tmp_path / "a")}))
    b = train(TrainConfig(**{**TINY, "total_env_steps": 160, "num_evals": 1, "seed": 1, "width": 16, "run_dir": str(tmp_path / "b")}))
    with pytest.raises(ValueError, match="may differ only in --seed; .* differs in width"):
        train_seeds(resume=[a, b])


def test_persistent_compilation_cache_defaults_beside_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "from_env"))
    assert enable_compilation_cache(tmp_path / "runs" / "r1", None) == tmp_path / "from_env"  # sweeps and tests
    assert enable_compilation_cache(tmp_path / "runs" / "r1", False) is None
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    previous = jax.config.jax_compilation_cache_dir
    try:
        assert enable_compilation_cache(tmp_path / "runs" / "r1", None) == (tmp_path / "runs" / CACHE_DIR_NAME).resolve()
        assert jax.config.jax_compilation_cache_dir == str((tmp_path / "runs" / CACHE_DIR_NAME).resolve())
        assert enable_compilation_cache(tmp_path / "runs" / "r1", tmp_path / "mine") == tmp_path / "mine"
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


@pytest.mark.slow
def test_four_cpu_devices_split_envs_or_seeds_and_match_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, str(REPO / "tests" / "multidevice_check.py")], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # The state the 4-device run trained is placed on the mesh; the 1-device run's is not, so the
    # check can fail.
    assert result["placement"]["4"] == {"buffer_split_over_4": True, "learner_replicated_on_4": True}
    assert result["placement"]["1"] == {"buffer_split_over_4": False, "learner_replicated_on_4": False}
    # The sharded SGD step's update is the single-device one (up to summation order) and not a no-op.
    assert result["params_moved"] > 1e-5
    assert result["relative_gap"] < 1e-4 and result["loss_gap"] < 1e-5
    # A run trained on 4 devices logs what the same run on one device logs.
    assert_rows_close(result["rows"]["4"], result["rows"]["1"], rtol=1e-4)
    assert result["indivisible_error"].startswith("--num-envs 6 does not split over 4 devices")
    # 4 packed seeds on 4 devices: the state is split over them, and each seed logs what it logs in the same
    # vmapped group on one device.
    assert result["seed_placement"] == {"None": True, "1": False}
    for sharded, single in zip(result["seed_rows"]["None"], result["seed_rows"]["1"]):
        assert_rows_close(sharded, single, rtol=1e-4)
    assert result["seed_devices_error"] == "--seed-devices 3 does not divide the 4 seeds; choose a divisor of 4"
    assert not result["three_written"]


def test_num_devices_bad_values(tmp_path):
    with pytest.raises(ValueError, match=r"--num-devices must be between 1 and the 1 visible device\(s\), got 4"):
        train(TrainConfig(**{**TINY, "run_dir": str(tmp_path / "r")}), num_devices=4)
    assert not (tmp_path / "r").exists()
