"""rlscale.agents: the registry is the only place that knows an algorithm's name; a new method is one
module and one ``register`` call."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_algorithm
from helpers import TINY

from rlscale import agents
from rlscale.agents import common
from rlscale.cli import main as cli_main
from rlscale.config import config_for
from rlscale.evaluation.policy import load
from rlscale.sizes import agent_param_count
from rlscale.storage import run_dir as rd

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_bc():
    registered = agents.register(tiny_algorithm.ALGORITHM)
    yield registered
    agents.unregister(registered.name)


def test_an_algorithm_from_one_file_trains_resumes_and_acts_from_its_checkpoint(tiny_bc, tmp_path, capsys):
    run = tmp_path / "run"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k != "tensorboard"]
    assert cli_main(["train", *args, "--no-tensorboard", "--algo", "tiny_bc", "--num-evals", "1",
                     "--total-env-steps", "160", "--run-dir", str(run)]) == 0
    assert "tiny_bc, point_u_maze" in capsys.readouterr().out
    (row,) = rd.read_metrics(run)
    assert row["epoch"] == 1 and np.isfinite(row["training/actor_loss"])
    assert rd.read_config(run)["config"]["actor_lr"] == 1e-3  # its own default
    assert config_for("point_u_maze", algo="tiny_bc", seed=3).default_run_name() == "point_u_maze_tiny_bc_d4_w256_b256_s3"
    policy = load(run)
    obs = jax.random.normal(jax.random.PRNGKey(0), (4, policy.obs_size))
    assert policy.act(policy.actor_params, obs, None).shape == (4, 2)
    assert agent_param_count(policy.train_config) == sum(x.size for x in jax.tree.leaves(policy.actor_params))
    assert cli_main(["train", "--resume", str(run)]) == 0  # complete: nothing to do


def test_a_name_is_registered_once_and_unknown_names_list_the_valid_ones(tiny_bc):
    with pytest.raises(ValueError, match="an algorithm named 'crl' is already registered"):
        agents.register(agents.Algorithm(name="crl", agent=None, param_count=None, sgd_step_flops=None, make_inference_fn=None))
    assert agents.register(tiny_bc) is tiny_bc  # registering the same entry again is harmless
    with pytest.raises(ValueError, match="unknown --algo 'ppo'; valid: crl, sac, sac_her, td3_her, gcsl, gcbc, tiny_bc"):
        agents.get("ppo")


# An algorithm's name as a string, or a comparison with the configured algorithm: a branch on the method.
ALGORITHM_BRANCH = re.compile(r"""["'](?:%s)["']|\balgo\s*(?:==|!=|\bin\b|\bnot in\b)""" % "|".join(agents.names()))


def test_no_module_outside_the_agents_branches_on_an_algorithms_name():
    """Config, sizes, FLOPs, the trainer, the policy loader, the launcher and the tasks ask the registry."""
    found = []
    for folder in ("rlscale", "envs", "launch"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.is_relative_to(REPO / "rlscale" / "agents"):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if ALGORITHM_BRANCH.search(line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert found == []


# The losses CRL and SAC share (rlscale.agents.common).
def test_actor_loss_by_hand_and_alpha_is_not_trained_by_it():
    log_prob, value = jnp.array([-1.0, 0.5]), jnp.array([-2.0, -4.0])
    np.testing.assert_allclose(common.actor_loss(log_prob, value, jnp.array(0.5)), np.mean([-0.5 + 2.0, 0.25 + 4.0]))
    grad_alpha = jax.grad(lambda a: common.actor_loss(log_prob, value, a))(jnp.array(0.5))
    assert grad_alpha == 0.0


def test_alpha_loss_direction():
    target = -1.0
    # Entropy (−log π = 3) above the target: gradient descent lowers α.
    grad = jax.grad(common.alpha_loss)(jnp.array(0.0), jnp.full(4, -3.0), target)
    assert grad > 0
    np.testing.assert_allclose(common.alpha_loss(jnp.array(0.0), jnp.full(4, -3.0), target), 3.0 - target)
    # Entropy below the target: α goes up.
    assert jax.grad(common.alpha_loss)(jnp.array(0.0), jnp.full(4, 2.0), target) < 0
