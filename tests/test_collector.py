"""The collector experiment (docs/method.md#collector-experiment): a collector of one depth acts and fills
the buffer; the run's own networks, of another depth, learn only from that data."""

import json

import jax
import numpy as np
import pytest
from helpers import TINY

from rlscale.cli import main
from rlscale.config import TrainConfig
from rlscale.storage import checkpoint as ckpt
from rlscale.storage import run_dir as rd
from rlscale.training.loop import train


def _saved(run):
    saved, _ = ckpt.restore_raw(run, ckpt.latest_step(run))
    return saved


def _run(root, name, **overrides):
    return train(TrainConfig(**{**TINY, "save_buffer": True, "seed": 5, **overrides, "run_dir": str(root / name)}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("collector")
    return {
        "alone": _run(root, "alone", depth=8),  # the collector as a run of its own
        "learner4": _run(root, "learner4", depth=4, collector_depth=8),
        "learner12": _run(root, "learner12", depth=12, collector_depth=8),
    }


@pytest.mark.slow  # its fixture trains collector runs: 90 s
def test_the_learner_never_touches_the_data(runs):
    """The buffer of a collector run is the buffer of the collector trained alone with the same seed,
    whatever the learner: the learner's parameters never reach the environment."""
    alone, four, twelve = (_saved(runs[k]) for k in ("alone", "learner4", "learner12"))
    for learner in (four, twelve):
        for key in ("obs", "action", "traj_id"):
            # Equal up to float rounding of the collector's SGD in a bigger program (XLA fuses it with the learner's).
            np.testing.assert_allclose(learner["buffer"][key], alone["buffer"][key], rtol=0, atol=1e-5)
        for a, b in zip(jax.tree.leaves(learner["collector"]["actor_params"]), jax.tree.leaves(alone["learner"]["actor_params"])):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # The learners themselves are other networks (depths 4 and 12), trained: their parameters moved.
    assert four["learner"]["actor_params"]["trunk"]["blocks"]["unit_0"]["Dense_0"]["kernel"].shape[0] == 1
    assert twelve["learner"]["actor_params"]["trunk"]["blocks"]["unit_0"]["Dense_0"]["kernel"].shape[0] == 3


@pytest.mark.slow  # shares the 90 s fixture above; the fast tier keeps the bad-depth test below
def test_a_learner_run_directory_evaluates_and_logs_both_agents(runs, capsys):
    run = runs["learner4"]
    logged = rd.read_metrics(run)[-1]
    for key in ("eval/episode_success", "eval/collector_episode_success", "training/critic_loss",
                "training/collector_critic_loss"):
        assert np.isfinite(logged[key]), key
    # rlscale eval evaluates the learner (the run's own depth-4 actor) and reproduces its logged numbers.
    assert main(["eval", str(run), "--episodes", str(TINY["num_eval_envs"])]) == 0
    entry = json.loads((run / "eval" / "point_u_maze_eval" / "000000000320.json").read_text())[0]
    assert entry["eval/episode_success"] == logged["eval/episode_success"]
    assert entry["eval/episode_success_any"] == logged["eval/episode_success_any"]


@pytest.mark.slow
def test_an_interrupted_collector_run_resumes_to_the_same_result(tmp_path):
    """Resume restores the collector too: a run stopped after epoch 2 and resumed ends where an uninterrupted one does."""
    full = _run(tmp_path, "full", depth=4, collector_depth=8)
    cut = _run(tmp_path, "cut", depth=4, collector_depth=8, total_env_steps=240, num_evals=2)
    config = rd.read_config(cut)
    config["config"].update(total_env_steps=320, num_evals=3)
    (cut / rd.CONFIG_FILE).write_text(json.dumps(config))
    train(resume=cut)
    a, b = rd.read_metrics(full)[-1], rd.read_metrics(cut)[-1]
    for key in ("eval/episode_success", "eval/collector_episode_success", "training/critic_loss", "training/collector_critic_loss"):
        assert a[key] == pytest.approx(b[key], abs=1e-5), key


def test_a_bad_collector_depth_fails_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "bad"
    assert main(["train", "--env", "point_u_maze", "--collector-depth", "6", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "--collector-depth must be a positive multiple of 4" in err and "6" in err
    assert not run.exists()
