"""The eval task is decided in one place, the registry (``TaskSpec.eval_task``, ``envs.default_eval_task``):
the humanoid mazes evaluate on their training layout (as the paper's runs did) through every path that
resolves it: ``rlscale train``, a sweep's runs (``eval_env: null`` included) and ``rlscale eval``."""

from __future__ import annotations

from pathlib import Path

import pytest
from rlscale.launch import sweepfile

from rlscale import envs
from rlscale.cli import main as cli_main
from rlscale.config import config_for, load_preset, preset_names
from rlscale.evaluation.policy import LoadedPolicy
from rlscale.training import loop as train_module

HUMANOID_MAZES = ("humanoid_u_maze", "humanoid_big_maze")
SWEEPS = Path(__file__).resolve().parents[1] / "configs" / "sweeps"


def test_the_registry_decides_and_no_preset_repeats_it():
    assert {name: envs.default_eval_task(name) for name in HUMANOID_MAZES} == {name: name for name in HUMANOID_MAZES}
    assert envs.default_eval_task("humanoid_u_maze_eval") == "humanoid_u_maze_eval"
    assert envs.default_eval_task("ant_big_maze") == "ant_big_maze_eval"  # the ant mazes keep their far goals
    assert [task for task in preset_names() if task.startswith("humanoid") and "eval_env" in load_preset(task)] == []


@pytest.mark.parametrize("task", HUMANOID_MAZES)
def test_rlscale_train_resolves_the_training_layout(task, monkeypatch):
    seen = []
    monkeypatch.setattr(train_module, "train_seeds", lambda cfg, *a, **k: seen.append(cfg))
    assert cli_main(["train", "--env", task]) == 0
    assert seen[0].eval_env is None and seen[0].eval_task_name() == task
    assert config_for(task).eval_task_name() == task
    assert cli_main(["train", "--env", task, "--eval-env", f"{task}_eval"]) == 0
    assert seen[1].eval_task_name() == f"{task}_eval"  # an explicit choice still wins


def test_sweep_runs_of_the_humanoid_mazes_evaluate_on_the_training_layout():
    seen = {}
    for path in sorted(SWEEPS.glob("paper_*.yaml")):
        for run in sweepfile.expand(sweepfile.load(path)):
            if run.config.env in HUMANOID_MAZES:
                seen[path.stem] = seen.get(path.stem, 0) + 1
                assert run.config.eval_task_name() == run.config.env, (path.name, run.name)
    assert {"paper_depth", "paper_depth_1024"} <= set(seen)  # paper_depth sets eval_env: null in its zip
    assert seen["paper_depth"] == 2 * 25


@pytest.mark.parametrize("task", HUMANOID_MAZES)
def test_rlscale_eval_defaults_to_the_training_layout(task):
    def policy(meta, eval_env=None):
        return LoadedPolicy(Path("run"), 0, {"env": task, "eval_env": eval_env}, meta, None, None, 0)

    assert policy({}).eval_task == task  # a checkpoint without its eval task recorded: the registry's default
    assert policy({"eval_task": task}).eval_task == task  # what training recorded
    assert policy({}, f"{task}_eval").eval_task == f"{task}_eval"
