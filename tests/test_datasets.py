"""Datasets (rlscale.data.datasets): what `rlscale record` writes, how --dataset trains from it without acting
(offline CRL and GCBC), and the errors for files and options that cannot work."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY, Countdown

from rlscale.config import TrainConfig, plan
from rlscale.data import datasets
from rlscale.data.datasets import DatasetError
from rlscale.storage import run_dir as rd

# Made by tests/make_datasets.py from a trained CRL run (docs/method.md#dataset-format).
COMMITTED = Path(__file__).parent / "data" / "point_u_maze_crl_d4.npz"


def _write(path: Path, **arrays) -> Path:
    base = {"observations": np.zeros((40, 6), np.float32), "actions": np.zeros((40, 2), np.float32),
            "trajectory_ids": np.repeat(np.arange(2, dtype=np.int32), 20), "task": np.array("point_u_maze"),
            "format_version": np.array(datasets.FORMAT_VERSION)}
    np.savez(path, **{k: v for k, v in {**base, **arrays}.items() if v is not None})
    return path


# --- the format -----------------------------------------------------------------------------------


def test_episode_steps_keep_each_episode_up_to_its_fall_in_episode_order():
    """Countdown episode n terminates at step lifetime[n]: its steps 0 … lifetime − 1 are kept (the last one
    leads into the fall), each with its own observation and action, episode after episode."""
    task, n, length = Countdown(), 8, 9
    act = lambda params, obs, key: obs[:, :1] * params  # noqa: E731  (action = 2 × the step index)
    data = datasets.episode_steps(task, act, jnp.float32(2.0), jax.random.PRNGKey(3), n, length, None)
    lifetime = np.asarray(jax.vmap(task.reset)(jax.random.split(jax.random.PRNGKey(3), n)).sim["lifetime"])
    assert len(set(lifetime)) > 2
    expected_t = np.concatenate([np.arange(min(life, length)) for life in lifetime])
    np.testing.assert_array_equal(data["trajectory_ids"], np.repeat(np.arange(n), np.minimum(lifetime, length)))
    np.testing.assert_array_equal(data["observations"][:, 0], expected_t)
    np.testing.assert_array_equal(data["actions"][:, 0], 2.0 * expected_t)
    assert data["observations"].dtype == data["actions"].dtype == np.float32


def test_buffer_of_lays_the_stream_out_slot_by_slot(tmp_path):
    """Steps s = 0 … 99 of 5 episodes of 20, window 20: 5 slots of 20 steps, slot k = steps 20k … 20k + 19;
    sampling it relabels only within an episode."""
    obs = np.arange(100, dtype=np.float32)[:, None] * np.ones((1, 6), np.float32)
    data = datasets.read(_write(tmp_path / "d.npz", observations=obs, actions=np.zeros((100, 2), np.float32),
                                trajectory_ids=np.repeat(np.arange(5, dtype=np.int32), 20)))
    buffer = datasets.buffer_of(data, window=20)
    assert buffer.obs.shape == (20, 5, 6) and int(buffer.size) == 20 and buffer.capacity == 20
    np.testing.assert_array_equal(np.asarray(buffer.obs[:, :, 0]), np.arange(100).reshape(5, 20).T)
    np.testing.assert_array_equal(np.asarray(buffer.traj_id), np.tile(np.arange(5), (20, 1)))
    # Windows longer than an episode: slots of 30 steps, 3 of them, the last 10 steps left out.
    assert datasets.layout(100, 30, 20) == (30, 3) and datasets.layout(100, 20, 20, multiple_of=2) == (20, 4)

    from rlscale.data.buffer import sample_minibatches

    batches, _ = sample_minibatches(buffer, jax.random.PRNGKey(0), num_batches=4, batch_size=32, window=20,
                                    gamma=0.9, state_size=4, goal_indices=(0, 1))
    state_step, goal_step = np.asarray(batches.state[..., 0]), np.asarray(batches.goal[..., 0])
    assert np.all(goal_step > state_step) and np.all(goal_step // 20 == state_step // 20)


def test_info_says_what_a_dataset_holds(tmp_path):
    data = datasets.read(_write(tmp_path / "d.npz", trajectory_ids=np.repeat(np.arange(4, dtype=np.int32), [5, 15, 10, 10])))
    assert datasets.info(data) == {"task": "point_u_maze", "steps": 40, "episodes": 4, "longest_episode": 15,
                                   "obs_size": 6, "action_size": 2}


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.write_bytes(b"not a zip archive at all"), p)[1], r"is not an .npz archive .* it starts with b'not '"),
    (lambda p: (p.write_bytes(b"PK\x03\x04 then garbage"), p)[1], "cannot be read .* corrupt or truncated"),
    (lambda p: (_write(p), p.write_bytes(p.read_bytes()[:300]), p)[2], "cannot be read .* corrupt or truncated"),
    (lambda p: _write(p, actions=None), "lacks actions"),
    (lambda p: _write(p, format_version=np.array(99)), "format version 99; this rlscale reads version 1"),
    (lambda p: _write(p, trajectory_ids=np.arange(40, dtype=np.int32)[::-1].copy()), "trajectory_ids must not decrease"),
    (lambda p: _write(p, actions=np.zeros((39, 2), np.float32)), "must be .* of one length"),
    (lambda p: _write(p, observations=np.full((40, 6), np.nan, np.float32)), "non-finite"),
    (lambda p: _write(p, actions=np.zeros((40, 2), np.int32)), "actions must be floating-point .* got int32"),
    (lambda p: _write(p, observations=np.full((40, 6), "x")), "observations must be floating-point .* got <U1"),
    (lambda p: _write(p, trajectory_ids=np.zeros(40, np.float32)), "trajectory_ids must be integers .* got float32"),
    (lambda p: _write(p, format_version=np.array("one")), "format_version must be one integer, got <U3"),
    (lambda p: _write(p, actions=np.zeros((40, 2), np.float32) + np.eye(40, 2, -7, dtype=np.float32) * 5),
     r"actions must lie in \[-1, 1\] .* step 7 holds \[5.0, 0.0\] \(2 such steps\)"),
])
def test_a_bad_dataset_file_is_a_one_line_error(tmp_path, make, message):
    path = make(tmp_path / "d.npz")
    with pytest.raises(DatasetError, match=message) as err:
        datasets.read(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_dataset_of_another_task_or_too_small_does_not_fit(tmp_path):
    from rlscale.envs import make

    spec = make("point_u_maze").spec
    good = datasets.read(_write(tmp_path / "good.npz"))
    datasets.check_fits(good, "good.npz", spec, window=20, batch_size=32)
    ant = datasets.read(_write(tmp_path / "ant.npz", observations=np.zeros((40, 31), np.float32),
                               actions=np.zeros((40, 8), np.float32), task=np.array("ant_u_maze")))
    with pytest.raises(DatasetError, match="observation size 31 and action size 8 .* task 'point_u_maze' has 6 and 2"):
        datasets.check_fits(ant, "ant.npz", spec, window=20, batch_size=32)
    other = datasets.read(_write(tmp_path / "big.npz", task=np.array("point_big_maze")))
    with pytest.raises(DatasetError, match="recorded on task 'point_big_maze'; this run trains on 'point_u_maze'"):
        datasets.check_fits(other, "big.npz", spec, window=20, batch_size=32)
    with pytest.raises(DatasetError, match="holds 40 steps: too few .* minibatches of 64"):
        datasets.check_fits(good, "good.npz", spec, window=20, batch_size=64)
    with pytest.raises(DatasetError, match="too few for windows of 50 steps"):
        datasets.check_fits(good, "good.npz", spec, window=50, batch_size=32)


# --- options ------------------------------------------------------------------------------------------


def _cfg(**overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "depth": 4, **overrides})


@pytest.mark.parametrize("overrides, message", [
    (dict(algo="gcbc"), "--algo gcbc learns from a fixed dataset: give --dataset"),
    (dict(algo="gcsl", dataset="d.npz"), "not gcsl \\(gcsl on a fixed dataset is gcbc\\)"),
    (dict(algo="sac_her", dataset="d.npz"), "--dataset trains --algo crl or gcbc, not sac_her"),
    (dict(dataset="d.npz", collector_depth=8), "--dataset and --collector-depth"),
    (dict(dataset="d.npz", save_buffer=True), "--save-buffer: a --dataset run's buffer is the dataset"),
])
def test_options_a_dataset_run_cannot_take(overrides, message):
    with pytest.raises(ValueError, match=message):
        plan(_cfg(**overrides))


def test_gcbc_without_a_dataset_or_with_a_bad_one_writes_nothing(tmp_path, capsys):
    from rlscale.cli import main

    run = tmp_path / "run"
    assert main(["train", "--algo", "gcbc", "--run-dir", str(run)]) == 2
    assert capsys.readouterr().err.strip() == (
        "rlscale train: error: --algo gcbc learns from a fixed dataset: give --dataset FILE.npz (made by rlscale record)")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 truncated")
    assert main(["train", "--algo", "gcbc", "--dataset", str(broken), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rlscale train: error: dataset {broken} cannot be read") and "\n" not in err
    assert not run.exists()


def test_run_names_of_dataset_runs():
    assert _cfg(algo="gcbc", dataset="d.npz").default_run_name() == "point_u_maze_gcbc_d4_w32_b32_s0"
    assert _cfg(dataset="d.npz").default_run_name() == "point_u_maze_d4_offline_w32_b32_s0"
    assert _cfg().default_run_name() == "point_u_maze_d4_w32_b32_s0"  # online CRL keeps its name


# --- end to end: record a tiny CRL run, train from it ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_recorded(tmp_path_factory):
    """A tiny CRL run and 8 recorded stochastic episodes of it (8 × 20 steps)."""
    from rlscale.evaluation.policy import load
    from rlscale.training.loop import train

    root = tmp_path_factory.mktemp("recorded")
    run = train(_cfg(run_dir=str(root / "crl")))
    held = datasets.record(load(run), 8, root / "data.npz")
    return run, root / "data.npz", held


@pytest.mark.slow
def test_record_writes_the_policys_episodes_and_never_overwrites(tiny_recorded, tmp_path):
    from rlscale.cli import main
    from rlscale.evaluation.policy import load

    run, path, held = tiny_recorded
    assert (held["task"], held["steps"], held["episodes"], held["deterministic"]) == ("point_u_maze", 160, 8, False)
    assert held["source"].endswith("checkpoints/000000000320")
    data = datasets.read(path)
    np.testing.assert_array_equal(data["trajectory_ids"], np.repeat(np.arange(8), 20))
    assert data["observations"].shape == (160, 6) and np.all(np.abs(data["actions"]) <= 1)
    before = path.read_bytes()
    with pytest.raises(DatasetError, match="exists; datasets are never overwritten"):
        datasets.record(load(run), 8, path)
    assert path.read_bytes() == before
    # Deterministic: the actions are the policy's tanh(mean) at the recorded observations.
    out = tmp_path / "det.npz"
    assert main(["record", str(run), "--episodes", "3", "--out", str(out), "--deterministic"]) == 0
    det = datasets.read(out)
    policy = load(run)
    expected = policy.act(policy.actor_params, jnp.asarray(det["observations"]), None)
    np.testing.assert_allclose(det["actions"], np.asarray(expected), atol=1e-6)
    assert bool(det["deterministic"]) and not np.allclose(det["actions"], data["actions"][:60])
    assert main(["record", str(run), "--episodes", "0", "--out", str(tmp_path / "none.npz")]) == 2
    assert not (tmp_path / "none.npz").exists()


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["gcbc", "crl"])
def test_a_dataset_run_learns_from_the_file_without_acting(tiny_recorded, tmp_path, algo):
    """Its buffer stays the dataset through training (nothing is collected), it runs on the env-step clock
    of a collecting run, config.json names the file and its SHA-256, and its checkpoint is a policy."""
    from rlscale.evaluation.policy import load_policy
    from rlscale.training.loop import train
    from rlscale.training.trainer import Trainer

    _, path, _ = tiny_recorded
    cfg = _cfg(algo=algo, dataset=str(path), batch_size=32, run_dir=str(tmp_path / algo))
    trainer = Trainer(cfg)
    state = trainer.init(jax.random.PRNGKey(0))
    after, metrics = jax.jit(trainer.training_step)(state, jax.random.PRNGKey(1))
    expected = datasets.buffer_of(datasets.read(path), cfg.resolved_window_length)
    for field in ("obs", "action", "traj_id"):
        np.testing.assert_array_equal(np.asarray(getattr(after.buffer, field)), np.asarray(getattr(expected, field)))
    assert float(metrics["resampled_fraction"]) == 0.0

    run = train(cfg)
    rows = rd.read_metrics(run)
    assert [r["training/env_steps"] for r in rows] == [160, 240, 320]
    assert all(np.isfinite(r["training/actor_loss"]) for r in rows)
    stored = json.loads((run / rd.CONFIG_FILE).read_text())
    assert stored["dataset"] == {"path": str(path.resolve()), "sha256": datasets.sha256(path)}
    policy, task = load_policy(run)
    assert task == "point_u_maze" and policy(jnp.zeros(6)).shape == (2,)


@pytest.mark.slow
def test_a_dataset_run_resumes_only_from_the_same_file(tiny_recorded, tmp_path):
    import shutil

    from rlscale.training.loop import train, train_seeds

    _, path, _ = tiny_recorded
    copy = tmp_path / "copy.npz"
    shutil.copy(path, copy)
    run = train(_cfg(algo="gcbc", dataset=str(copy), run_dir=str(tmp_path / "gcbc")))
    rows = rd.read_metrics(run)
    # Interrupted after epoch 2 (its last checkpoint dropped): the resume redoes epoch 3 to the same numbers.
    shutil.rmtree(run / "checkpoints" / "000000000320")
    train_seeds(resume=[run])
    assert [r["eval/episode_success"] for r in rd.read_metrics(run)] == [r["eval/episode_success"] for r in rows]
    data = dict(np.load(copy))
    data["actions"] = data["actions"] * 0.5
    copy.unlink()
    np.savez(copy, **data)
    shutil.rmtree(run / "checkpoints" / "000000000320")
    with pytest.raises(DatasetError, match="changed since .* started .* restore that file to resume"):
        train_seeds(resume=[run])
    assert len(rd.read_metrics(run)) == 3  # nothing written


@pytest.mark.slow
def test_gcbc_learns_point_u_maze_from_the_committed_dataset(tmp_path):
    """GCBC, depth 4, width 64, on 64 stochastic episodes of a depth-4 CRL agent (tests/make_datasets.py),
    108.8 k env steps on the clock of point_u_maze's CPU preset (3,200 SGD steps, 25 s). Measured on a 2-core
    CPU (seeds 0, 1, 2 vmapped), the best success-any of the last two evaluations: 0.66, 1.00, 0.67 (a random
    policy: 0.078); the threshold is about half the worst."""
    from rlscale.config import config_for
    from rlscale.training.loop import train

    cfg = config_for("point_u_maze", algo="gcbc", dataset=str(COMMITTED), depth=4, width=64,
                     total_env_steps=105_600, num_evals=4, seed=0, run_dir=str(tmp_path / "gcbc"), tensorboard=False)
    assert cfg.batch_size == 256
    rows = rd.read_metrics(train(cfg))
    assert max(r["eval/episode_success_any"] for r in rows[-2:]) >= 0.35
