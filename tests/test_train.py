import io
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization
from helpers import TINY, without_timing
from rich.console import Console

from rlscale.agents import contrastive
from rlscale.config import CONFIG_SCHEMA, TrainConfig, plan
from rlscale.storage import checkpoint as ckpt
from rlscale.storage import run_dir as rd
from rlscale.training import loop
from rlscale.training.loop import NonFiniteError, run_keys, train
from rlscale.training.trainer import Trainer

# A single-seed run of commit 457363c, whose final checkpoint was written before seed groups (tests/test_run_ids.py).
OLD_RUN = Path(__file__).parent / "fixtures" / "whole_config_ids" / "runs_root" / "whole_config_ids" / "point_u_maze_d4_w16_b32_s0_69228c99"


def _run(tmp_path, name, steps_per_call=1, **overrides):
    cfg = TrainConfig(**{**TINY, **overrides, "run_dir": str(tmp_path / name)})
    return train(cfg, steps_per_call=steps_per_call)


def _assert_saved_without_seed_axis(run):
    """The run's latest checkpoint holds the shapes of one seed's state: no leading seed axis, although
    the host loop stacks the state over seeds (a group of one for a run of its own)."""
    cfg = TrainConfig.from_dict(rd.read_config(run)["config"])
    state = jax.eval_shape(Trainer(cfg).init, run_keys(cfg.seed)["init"])
    expected = {"learner": state.learner, "rng": run_keys(cfg.seed)["init"]}
    if cfg.save_buffer:
        expected.update(env_state=state.env_state, buffer=state.buffer)
    saved, _ = ckpt.restore_raw(run, ckpt.latest_step(run))

    def shapes(tree):
        leaves = jax.tree_util.tree_leaves_with_path(serialization.to_state_dict(tree))
        return {jax.tree_util.keystr(path): (tuple(x.shape), str(x.dtype)) for path, x in leaves}

    assert shapes(saved) == shapes(expected)


def test_run_directory_is_self_describing(tmp_path):
    run = _run(tmp_path, "run", tensorboard=True)
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    info = json.loads((run / "config.json").read_text())
    assert info["config"]["depth"] == 4 and info["config"]["env"] == "point_u_maze"
    assert info["config_schema"] == CONFIG_SCHEMA  # what the saved values mean (launch.sweepfile.run_id)
    assert info["plan"]["total_env_steps"] == 320 and info["plan"]["total_sgd_steps"] == 3 * 2 * 4
    assert info["environment"]["packages"]["jax"] == jax.__version__
    assert "git_commit" in info["environment"] and info["environment"]["devices"]
    rows = rd.read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["training/env_steps"] for r in rows] == [160, 240, 320]
    for key in (
        "eval/episode_success", "eval/episode_success_any", "eval/episode_dist", "eval/avg_episode_length",
        "training/critic_loss", "training/actor_loss", "training/alpha", "training/logsumexp", "training/sps",
        "training/sgd_steps", "walltime",
    ):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert all(0 <= r["eval/episode_success"] <= 20 for r in rows)
    # One block norm per residual block (depth 4: one) of the actor and each critic encoder, every epoch.
    norms = sorted(k for k in rows[0] if k.startswith("training/block_norms/"))
    assert norms == [f"training/block_norms/{net}/0" for net in ("actor", "critic_g", "critic_sa")]
    assert all(r[k] > 0 and np.isfinite(r[k]) for r in rows for k in norms)
    assert ckpt.list_steps(run) == [160, 240, 320]
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name[0].isdigit()) == [
        "000000000160", "000000000240", "000000000320",
    ]


# Tiny runs on each kind of physics (Brax's ant, an ant maze with walls, the MJX arm): the task contract
# holds end to end. Two epochs where the budget allows, one for the slower-to-compile arm.
TINY_PHYSICS = dict(episode_length=10, num_envs=2, unroll_length=5, sgd_steps_per_collection=2, batch_size=8,
                    max_replay_size=30, min_replay_size=10, num_eval_envs=2, width=16, tensorboard=False)


@pytest.mark.slow
@pytest.mark.parametrize("env,total_env_steps,num_evals,logged_env_steps", [
    ("ant", 40, 2, [30, 40]),
    pytest.param("ant_u_maze", 40, 2, [30, 40], marks=pytest.mark.long),  # ant's physics, a maze: out of CI's time
    ("arm_push_easy", 30, 1, [30]),
])
def test_a_tiny_run_trains_end_to_end_on_real_physics(tmp_path, env, total_env_steps, num_evals, logged_env_steps):
    cfg = TrainConfig(**TINY_PHYSICS, env=env, total_env_steps=total_env_steps, num_evals=num_evals,
                      run_dir=str(tmp_path / env))
    run = train(cfg)
    rows = rd.read_metrics(run)
    assert [r["training/env_steps"] for r in rows] == logged_env_steps
    assert all(np.isfinite(r["training/critic_loss"]) and 0 <= r["eval/episode_success"] <= 10 for r in rows)
    assert json.loads((run / "config.json").read_text())["config"]["env"] == env


def test_wandb_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail
    with pytest.raises(ValueError, match=r"--wandb needs the wandb package"):
        _run(tmp_path, "wb", wandb=True)
    assert not (tmp_path / "wb").exists()


def test_plan_never_floors_env_steps():
    cfg = TrainConfig(**{**TINY, "total_env_steps": 1000, "num_evals": 7})
    p = plan(cfg)
    assert p.total_env_steps >= 1000
    assert p.total_env_steps - 1000 < p.num_epochs * p.env_steps_per_training_step
    assert p.total_sgd_steps == p.total_training_steps * cfg.sgd_steps_per_collection


class Interrupted(Exception):
    pass


def _interrupt_second_checkpoint(monkeypatch):
    """Make the run die after writing epoch 2's metrics row but before its checkpoint."""
    original = ckpt.CheckpointWriter.save
    calls = {"n": 0}

    def save(self, step, state, meta):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupted()
        return original(self, step, state, meta)

    monkeypatch.setattr(ckpt.CheckpointWriter, "save", save)


@pytest.mark.slow
@pytest.mark.parametrize("save_buffer", [True, False])
def test_kill_and_resume(tmp_path, monkeypatch, save_buffer):
    reference = rd.read_metrics(_run(tmp_path, "reference", save_buffer=save_buffer))
    _assert_saved_without_seed_axis(tmp_path / "reference")
    with monkeypatch.context() as patch:
        _interrupt_second_checkpoint(patch)
        with pytest.raises(Interrupted):
            _run(tmp_path, "interrupted", save_buffer=save_buffer)
    run = tmp_path / "interrupted"
    assert len(rd.read_metrics(run)) == 2 and ckpt.list_steps(run) == [160]
    train(resume=run)
    rows = rd.read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # no duplicated or lost rows
    assert [r["training/env_steps"] for r in rows] == [r["training/env_steps"] for r in reference]
    assert [r["training/sgd_steps"] for r in rows] == [r["training/sgd_steps"] for r in reference]
    assert ckpt.list_steps(run) == [160, 240, 320]
    if save_buffer:  # the resumed run is exactly the uninterrupted one
        assert [without_timing(r) for r in rows] == [without_timing(r) for r in reference]
    else:  # same learner at the restart point, different (refilled) data afterwards
        assert without_timing(rows[0]) == without_timing(reference[0])
    assert rows[-1]["walltime"] >= rows[0]["walltime"]


@pytest.mark.slow
def test_resume_from_a_checkpoint_of_an_earlier_version(tmp_path):
    """A single-seed checkpoint written before seed groups (commit 457363c, no buffer) resumes; the copied
    run is given a third epoch (same epoch length) so that there is something left to train."""
    run = Path(shutil.copytree(OLD_RUN, tmp_path / "old"))
    info = json.loads((run / "config.json").read_text())
    info["config"].update(total_env_steps=560, num_evals=3)
    (run / "config.json").write_text(json.dumps(info))
    old_rows = (run / "metrics.jsonl").read_text()
    out = io.StringIO()
    train(resume=run, console=Console(file=out, soft_wrap=True))
    assert f"resuming {run} at epoch 2/3 from {ckpt.step_path(run, 400)}" in out.getvalue()
    assert (run / "metrics.jsonl").read_text().startswith(old_rows)  # its rows kept as written, not retrained
    rows = rd.read_metrics(run)
    assert [r["training/env_steps"] for r in rows] == [240, 400, 560] and np.isfinite(rows[-1]["training/critic_loss"])
    assert ckpt.list_steps(run) == [560]  # keep_checkpoints 1
    _assert_saved_without_seed_axis(run)


@pytest.mark.slow  # two tiny trainings: 180 s on a shared CPU core
def test_a_config_saved_with_layer_norm_false_resumes_as_norm_none(tmp_path):
    """config.json files written before ``norm`` say ``layer_norm`` (rlscale.legacy_options);
    resuming reads them strictly (TrainConfig.from_dict) as the norm they meant. The run is given a
    fourth epoch of the same length. (``layer_norm: true``: the fixture run that
    test_resume_from_a_checkpoint_of_an_earlier_version resumes.)"""
    layer_norm, norm = False, "none"
    run = _run(tmp_path, "run", norm=norm)
    info = json.loads((run / "config.json").read_text())
    del info["config"]["norm"]
    info["config"].update(layer_norm=layer_norm, total_env_steps=400, num_evals=4)
    (run / "config.json").write_text(json.dumps(info))
    assert TrainConfig.from_dict(info["config"]).norm == norm
    train(resume=run)
    rows = rd.read_metrics(run)
    assert [r["training/env_steps"] for r in rows] == [160, 240, 320, 400] and np.isfinite(rows[-1]["training/critic_loss"])


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    run = _run(tmp_path, "run")
    before = (run / "metrics.jsonl").read_text()
    train(resume=run)
    assert (run / "metrics.jsonl").read_text() == before
    assert ckpt.list_steps(run) == [160, 240, 320]


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_and_saves_nothing(tmp_path, monkeypatch):
    original = contrastive.contrastive_loss

    def poisoned(logits, *args, **kwargs):
        loss, metrics = original(logits, *args, **kwargs)
        return loss * np.nan, metrics

    monkeypatch.setattr(contrastive, "contrastive_loss", poisoned)
    with pytest.raises(NonFiniteError, match=r"epoch 1 \(training step 1 of 2\); nothing was saved for it; last good checkpoint: none"):
        _run(tmp_path, "nan")
    assert ckpt.list_steps(tmp_path / "nan") == []
    assert rd.read_metrics(tmp_path / "nan") == []


def _sigterm_after_call(monkeypatch, epoch: int, steps: int):
    """A real SIGTERM to this process as soon as the host loop has recorded ``steps`` training steps of
    epoch ``epoch`` (1-based): it lands between two calls, as a cluster's would during a long epoch."""
    original = loop._EpochProgress.add
    seen = {"epoch": 0}
    original_train_epoch = loop._train_epoch

    def train_epoch(trainer, programs, states, members, groups, epoch_index, *args):
        seen["epoch"] = epoch_index + 1
        return original_train_epoch(trainer, programs, states, members, groups, epoch_index, *args)

    def add(self, metrics, seconds):
        original(self, metrics, seconds)
        if seen["epoch"] == epoch and self.steps == steps:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop, "_train_epoch", train_epoch)
    monkeypatch.setattr(loop._EpochProgress, "add", add)


# TINY with 3 training steps per epoch: 80 prefill + 3 epochs x 3 steps x 40 env steps.
THREE_STEP_EPOCHS = dict(total_env_steps=440)


@pytest.mark.slow  # three tiny trainings each: 30-45 s
@pytest.mark.parametrize("save_buffer", [True, False])
def test_sigterm_mid_epoch_saves_within_a_call_and_the_resume_is_exact(tmp_path, monkeypatch, save_buffer):
    """SIGTERM during epoch 2 stops the run when the call in progress ends (2 of the epoch's 3 training
    steps, calls of 2), with a checkpoint at that step; the resume (calls of 1) finishes the epoch. With
    --save-buffer the run's metrics are exactly those of the uninterrupted run (one call per epoch): the
    call length changes nothing. Without it the checkpoint holds no buffer and the resume refills one."""
    options = {**THREE_STEP_EPOCHS, "save_buffer": save_buffer}
    reference = rd.read_metrics(_run(tmp_path, "reference", steps_per_call=3, **options))
    with monkeypatch.context() as patch:
        _sigterm_after_call(patch, epoch=2, steps=2)
        with pytest.raises(loop.Preempted):
            _run(tmp_path, "stopped", steps_per_call=2, **options)
    run = tmp_path / "stopped"
    mid_epoch = 80 + (3 + 2) * 40
    assert ckpt.list_steps(run) == [200, mid_epoch] and len(rd.read_metrics(run)) == 1
    meta = ckpt.read_meta(run, mid_epoch)
    assert meta["counters"] == {"epoch": 1, "env_steps": mid_epoch, "sgd_steps": 5 * 4, "epoch_training_steps": 2}
    assert [len(v["values"]) for v in meta["partial_epoch"]["metrics"].values()] == [2] * len(meta["partial_epoch"]["metrics"])
    _assert_saved_without_seed_axis(run)  # no buffer copied without --save-buffer
    out = io.StringIO()
    train(resume=run, steps_per_call=1, console=Console(file=out, soft_wrap=True))
    assert f"at epoch 1/3 and 2/3 training steps from {ckpt.step_path(run, mid_epoch)}" in out.getvalue()
    rows = rd.read_metrics(run)
    assert [r["training/env_steps"] for r in rows] == [r["training/env_steps"] for r in reference] == [200, 320, 440]
    if save_buffer:
        assert [without_timing(r) for r in rows] == [without_timing(r) for r in reference]
    else:  # the first epoch was trained before the stop; the rest on refilled data
        assert without_timing(rows[0]) == without_timing(reference[0]) and without_timing(rows[1]) != without_timing(reference[1])
    assert rows[1]["walltime"] >= rows[0]["walltime"]
    assert ckpt.list_steps(run) == [200, mid_epoch, 320, 440]


def test_a_checkpoint_from_the_middle_of_the_first_epoch_evaluates(tmp_path, monkeypatch):
    """A stop after the first training step saves a checkpoint that `rlscale eval` loads (epoch 0)."""
    from rlscale.evaluation.evaluate import evaluate
    from rlscale.evaluation.policy import load

    with monkeypatch.context() as patch:
        _sigterm_after_call(patch, epoch=1, steps=1)
        with pytest.raises(loop.Preempted):
            _run(tmp_path, "run", **THREE_STEP_EPOCHS)
    run = tmp_path / "run"
    assert ckpt.list_steps(run) == [120] and not rd.read_metrics(run)
    result = evaluate(load(run), episodes=4)
    assert result["epoch"] == 0 and result["step"] == 120 and 0.0 <= result["eval/episode_success"] <= 1.0


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_steps_per_call_must_be_a_positive_integer(tmp_path, bad):
    with pytest.raises(ValueError, match=rf"--steps-per-call must be a positive integer .*got {bad!r}"):
        _run(tmp_path, "run", steps_per_call=bad)
    assert not (tmp_path / "run").exists()
