"""rlscale.training.estimates and the dry runs: what a run will cost, before it starts."""

import json

import pytest

from rlscale.cli import main as cli_main
from rlscale.config import config_for
from rlscale.sizes import agent_param_count, flops_per_sgd_step
from rlscale.training import estimates


def test_the_estimate_counts_the_buffer_and_the_learner_exactly():
    cfg = config_for("point_u_maze", depth=8, width=64, batch_size=128, num_envs=16, max_replay_size=300)
    cost = estimates.estimate(cfg)
    obs_size, action_size = 4 + 2, 2  # the point maze: position and velocity, goal position; a 2-d force
    assert cost.buffer_bytes == 300 * 16 * (obs_size + action_size + 1) * 4 + 2 * 4
    assert cost.param_count == agent_param_count(cfg)
    assert cost.flops_per_sgd_step == flops_per_sgd_step(cfg)
    # Parameters and Adam's two moments, plus α and its moments and the step counts.
    learner_floats = 3 * cost.param_count
    assert learner_floats * 4 <= cost.state_bytes - cost.buffer_bytes <= learner_floats * 4 + 10_000
    # Two packed seeds cost twice one.
    assert estimates.estimate(cfg, num_seeds=2).peak_bytes == 2 * cost.peak_bytes


@pytest.mark.parametrize("remat, policy, saved_per_block", [(True, "dots", 5), (True, "full", 1), (False, "dots", 13)])
def test_the_sgd_step_keeps_the_learner_copy_the_gradients_and_each_blocks_activations(remat, policy, saved_per_block):
    import jax

    from rlscale.training.trainer import Trainer

    cfg = config_for("point_u_maze", depth=8, width=64, batch_size=128, remat=remat, remat_policy=policy)
    trainer = Trainer(cfg)
    learner = jax.eval_shape(trainer.agent.init, jax.random.PRNGKey(0))
    trained = trainer.agent.trained_params(learner)
    # 3 trunks (actor, φ, ψ) of 8 / 4 = 2 blocks, 128 rows of 64 floats per saved tensor.
    activations = 3 * 2 * saved_per_block * 64 * 4 * 128
    expected = estimates.tree_bytes(learner) + 4 * agent_param_count(cfg) + activations
    assert estimates.sgd_step_bytes(cfg, learner, trained) == expected


def test_hours_come_from_a_speed_result_of_the_same_device_kind(tmp_path):
    cfg = config_for("point_u_maze", depth=16)
    row = {"mode": "fast", "depth": 16, "dtype": "float32", "achieved_flops_per_second": 1e12, "sgd_step_seconds": 1.0}
    (tmp_path / "speed_gpu.json").write_text(json.dumps({"machine": {"device_kind": "Test GPU"}, "settings": {"env": "humanoid"},
                                                         "results": [row]}))
    plan = estimates.plan(cfg)
    hours, source = estimates.estimate_hours(cfg, plan, 1, "Test GPU", tmp_path)
    assert hours == pytest.approx(plan.total_sgd_steps * flops_per_sgd_step(cfg) / 1e12 / 3600)
    assert "SGD steps only" in source and "speed_gpu.json" in source and source.startswith("≥ on Test GPU")
    assert estimates.estimate_hours(cfg, plan, 1, "Other GPU", tmp_path) == (None, None)
    assert estimates.estimate_hours(cfg, plan, 3, "Test GPU", tmp_path)[0] == pytest.approx(3 * hours)


def test_train_dry_run_prints_the_plan_and_the_cost_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli_main(["train", "--env", "point_u_maze", "--depth", "8", "--width", "64", "--run-dir", str(run_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "plan: " in out and "cost: " in out and "FLOPs per SGD step" in out and "peak memory ≈" in out
    assert "nothing trained, nothing written" in out
    assert not run_dir.exists() and list(tmp_path.iterdir()) == []


def test_train_dry_run_refuses_resume(tmp_path, capsys):
    assert cli_main(["train", "--resume", str(tmp_path), "--dry-run"]) == 2
    assert "--dry-run plans a new run" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # two humanoid epochs to compile (about 30 s each), nothing allocated
@pytest.mark.parametrize("depth, actor_depth", [(64, None), (1024, 512)])
def test_peak_memory_is_within_20_percent_of_xlas_analysis_at_the_papers_humanoid_scale(depth, actor_depth):
    cfg = config_for("humanoid", depth=depth, actor_depth=actor_depth, batch_size=512, num_envs=512, max_replay_size=10_000)
    ours = estimates.estimate(cfg).peak_bytes
    xla = estimates.xla_training_memory(cfg)["peak_bytes"]
    assert 0.8 <= ours / xla <= 1.2, (ours / 2**30, xla / 2**30)
