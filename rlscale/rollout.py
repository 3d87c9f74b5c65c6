"""Rollouts of a policy on fresh episodes with a jitted fixed-length unroll, and their summary: what an
evaluation measures (docs/metrics.md#per-evaluation), in training (``rlscale.train``) and in ``rlscale eval``
(``rlscale.checkpoint_eval``).

Per episode: time at goal (steps within the success threshold, counted until the episode ends or the
robot falls), success-any, final distance and episode length; every other metric the task reports is
summed over the episode's active steps. No key is assumed beyond ``success`` and ``dist``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rlscale.envs.base import GoalTask


def make_unroll(task: GoalTask, episode_length: int, num_episodes: int, act: Callable):
    """``unroll(policy_params, key) -> per-episode metrics`` as arrays of shape ``[num_episodes]``.

    ``act(policy_params, obs, key)`` returns actions; its key is ``None`` for the deterministic policy.
    """

    def unroll(policy_params, key, stochastic: bool = False):
        reset_key, act_key = jax.random.split(key)
        state = jax.vmap(task.reset)(jax.random.split(reset_key, num_episodes))
        metric_keys = [k for k in state.metrics if k != "dist"]
        zeros = jnp.zeros(num_episodes)

        def step(carry, step_key):
            state, active, sums, final_dist, length = carry
            action = act(policy_params, state.obs, step_key if stochastic else None)
            nxt = jax.vmap(task.step)(state, action)
            live = active.astype(jnp.float32)
            sums = {k: sums[k] + live * nxt.metrics[k] for k in metric_keys}
            final_dist = jnp.where(active, nxt.metrics["dist"], final_dist)
            length = length + live
            active = jnp.logical_and(active, jnp.logical_not(nxt.terminated))
            return (nxt, active, sums, final_dist, length), None

        init = (state, jnp.ones(num_episodes, bool), {k: zeros for k in metric_keys}, state.metrics["dist"], zeros)
        (_, _, sums, final_dist, length), _ = jax.lax.scan(
            step, init, jax.random.split(act_key, episode_length)
        )
        out = {f"episode_{k}": v for k, v in sums.items()}
        out["episode_success_any"] = (sums["success"] > 0).astype(jnp.float32)
        out["episode_dist"] = final_dist
        out["episode_length"] = length
        return out

    return unroll


def summarize(per_episode: dict[str, jax.Array], prefix: str = "eval/") -> dict[str, float]:
    """Means over episodes, plus the standard error of time at goal."""
    host = {k: np.asarray(v, dtype=np.float64) for k, v in per_episode.items()}
    out = {f"{prefix}{k}": float(v.mean()) for k, v in host.items()}
    out[f"{prefix}avg_episode_length"] = out.pop(f"{prefix}episode_length")
    success = host["episode_success"]
    out[f"{prefix}episode_success_stderr"] = float(success.std(ddof=1) / np.sqrt(len(success))) if len(success) > 1 else 0.0
    return out
