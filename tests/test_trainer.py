"""rlscale.training.trainer: the jitted training step, as a GPU would run it, holds no conditional and no
data-dependent loop (each reads a predicate back to the host on XLA:GPU; docs/method.md#no-host-syncs)."""

import jax
import numpy as np
import pytest
from helpers import TINY

from rlscale.agents.registry import scan_sgd_steps
from rlscale.config import config_for
from rlscale.training.trainer import Trainer

# Sub-jaxprs of these primitives run on every call; a cond's branches and a while's body are walked apart.
PLATFORM = "cuda"


def _sub_jaxprs(params):
    for value in params.values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if hasattr(item, "eqns"):
                yield item
            elif hasattr(item, "jaxpr"):
                yield item.jaxpr if hasattr(item.jaxpr, "eqns") else item.jaxpr.jaxpr


def host_syncs(jaxpr, platform: str = PLATFORM) -> list[str]:
    """Where the program, lowered for ``platform``, keeps a ``cond`` or a ``while`` (scan is a fixed-trip
    loop and fine). A ``platform_dependent`` choice is resolved as lowering resolves it: only the branch
    for ``platform`` is walked."""
    found: list[str] = []
    platform_indices = {}
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "platform_index":
            platform_indices[eqn.outvars[0]] = eqn.params["platforms"]
            continue
        if name == "cond" and eqn.invars[0] in platform_indices:
            platforms = platform_indices[eqn.invars[0]]
            chosen = next((i for i, group in enumerate(platforms) if group is not None and platform in group),
                          platforms.index(None))
            found += host_syncs(eqn.params["branches"][chosen].jaxpr, platform)
            continue
        if name == "cond":
            traceback = eqn.source_info.traceback
            frames = traceback.frames if traceback is not None else []
            if any(f.function_name == "platform_dependent" for f in frames):  # resolved inside JAX (jnp.diagonal)
                for branch in eqn.params["branches"]:
                    found += host_syncs(branch.jaxpr, platform)
                continue
        if name in ("cond", "while"):
            from jax._src import source_info_util

            found.append(f"{name} at {source_info_util.summarize(eqn.source_info)}")
        for sub in _sub_jaxprs(eqn.params):
            found += host_syncs(sub, platform)
    return found


def _training_step_jaxpr(cfg):
    trainer = Trainer(cfg)
    state = jax.eval_shape(trainer.init, jax.random.PRNGKey(0))
    return trainer, jax.make_jaxpr(trainer.training_step)(state, jax.random.PRNGKey(0)).jaxpr


@pytest.mark.parametrize("env, algo", [("point_u_maze", "crl"), ("ant", "crl"), ("point_u_maze", "td3_her")])
def test_the_training_step_on_a_gpu_holds_no_conditional_and_no_data_dependent_loop(env, algo):
    options = {k: v for k, v in TINY.items() if k != "env"}
    trainer, jaxpr = _training_step_jaxpr(config_for(env, **options, algo=algo))
    assert host_syncs(jaxpr) == []
    # The walk finds them where they are: on the CPU the auto-reset keeps its cond (it skips the resets' work).
    assert [s for s in host_syncs(jaxpr, "cpu") if "step_batch" in s] != []


@pytest.mark.slow  # four SGD programs to compile: 30 s
def test_td3_fixed_policy_delay_pattern_updates_as_the_conditional_step_does():
    """TD3's SGD steps in groups of ``policy_delay`` (no cond) against ``sgd_step`` scanned (a cond per step):
    the same updates, to float32 rounding (XLA fuses the two programs differently)."""
    options = {k: v for k, v in TINY.items() if k != "env"} | {"sgd_steps_per_collection": 6}
    trainer = Trainer(config_for("point_u_maze", **options, algo="td3_her"))
    state = jax.jit(trainer.init)(jax.random.PRNGKey(3))
    agent = trainer.agent
    batches, _ = jax.jit(agent.sample_minibatches, static_argnums=2)(state.buffer, jax.random.PRNGKey(4), 6)
    keys = jax.random.split(jax.random.PRNGKey(5), 6)
    grouped, grouped_metrics = jax.jit(agent.sgd_steps)(state.learner, batches, keys)
    scanned, scanned_metrics = jax.jit(lambda *a: scan_sgd_steps(agent, *a))(state.learner, batches, keys)
    np.testing.assert_array_equal(grouped_metrics["actor_updated"], [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(scanned_metrics["actor_updated"], grouped_metrics["actor_updated"])
    for a, b in zip(jax.tree.leaves(grouped), jax.tree.leaves(scanned)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(grouped.step) == 6
    # An odd count cannot fix the pattern: it falls back to the scanned steps, and stays exact.
    odd, _ = jax.jit(agent.sgd_steps)(state.learner, jax.tree.map(lambda x: x[:5], batches), keys[:5])
    exact, _ = jax.jit(lambda *a: scan_sgd_steps(agent, *a))(state.learner, jax.tree.map(lambda x: x[:5], batches), keys[:5])
    for a, b in zip(jax.tree.leaves(odd), jax.tree.leaves(exact)):
        np.testing.assert_array_equal(a, b)
