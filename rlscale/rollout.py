"""Rollouts of a policy on fresh episodes with a jitted fixed-length unroll, and their summary: what an
evaluation measures (docs/metrics.md#per-evaluation), in training (``rlscale.train``) and in ``rlscale eval``
(``rlscale.checkpoint_eval``); the same rollout, with its states, draws ``rlscale.visualize``'s pictures.

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


def rollout(task: GoalTask, act: Callable, policy_params, reset_key: jax.Array, num_episodes: int, length: int,
            act_key: jax.Array | None = None, trajectory: bool = False):
    """``num_episodes`` fresh episodes of ``length`` steps: ``(per_episode, steps)``, the one rollout of a
    policy (evaluation in training and in ``rlscale eval``, and the pictures of ``rlscale.visualize``).

    ``act(policy_params, obs, key)`` returns actions; without ``act_key`` the key is ``None`` (the
    deterministic policy), with one each step gets its own key. A step counts while no earlier state of
    its episode has terminated (the robot fell). ``per_episode``: metrics as arrays of shape
    ``[num_episodes]`` (module docstring). ``steps`` with ``trajectory=True``: ``(states, active)``, the
    task states ``[length + 1, num_episodes, ...]`` from the reset on and whether each counts
    ``[length + 1, num_episodes]``; else ``None``. Pure: jit it.
    """
    state = jax.vmap(task.reset)(jax.random.split(reset_key, num_episodes))
    metric_keys = [k for k in state.metrics if k != "dist"]
    zeros = jnp.zeros(num_episodes)

    def step(carry, step_key):
        state, active, sums, final_dist, counted = carry
        action = act(policy_params, state.obs, step_key)
        nxt = jax.vmap(task.step)(state, action)
        live = active.astype(jnp.float32)
        sums = {k: sums[k] + live * nxt.metrics[k] for k in metric_keys}
        final_dist = jnp.where(active, nxt.metrics["dist"], final_dist)
        counted = counted + live
        still = jnp.logical_and(active, jnp.logical_not(nxt.terminated))
        return (nxt, still, sums, final_dist, counted), ((nxt, active) if trajectory else None)

    init = (state, jnp.ones(num_episodes, bool), {k: zeros for k in metric_keys}, state.metrics["dist"], zeros)
    step_keys = None if act_key is None else jax.random.split(act_key, length)
    (_, _, sums, final_dist, counted), steps = jax.lax.scan(step, init, step_keys, length=length)
    out = {f"episode_{k}": v for k, v in sums.items()}
    out["episode_success_any"] = (sums["success"] > 0).astype(jnp.float32)
    out["episode_dist"] = final_dist
    out["episode_length"] = counted
    if not trajectory:
        return out, None
    states, active = steps
    states = jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), state, states)
    return out, (states, jnp.concatenate([jnp.ones((1, num_episodes), bool), active]))


def make_unroll(task: GoalTask, episode_length: int, num_episodes: int, act: Callable):
    """``unroll(policy_params, key, stochastic=False) -> per-episode metrics`` as arrays of shape
    ``[num_episodes]``: :func:`rollout` of fresh episodes, ``key`` split into the reset's and the actions'.

    ``act(policy_params, obs, key)`` returns actions; its key is ``None`` for the deterministic policy.
    """

    def unroll(policy_params, key, stochastic: bool = False):
        reset_key, act_key = jax.random.split(key)
        per_episode, _ = rollout(task, act, policy_params, reset_key, num_episodes, episode_length,
                                 act_key if stochastic else None)
        return per_episode

    return unroll


def summarize(per_episode: dict[str, jax.Array], prefix: str = "eval/") -> dict[str, float]:
    """Means over episodes, plus the standard error of time at goal."""
    host = {k: np.asarray(v, dtype=np.float64) for k, v in per_episode.items()}
    out = {f"{prefix}{k}": float(v.mean()) for k, v in host.items()}
    out[f"{prefix}avg_episode_length"] = out.pop(f"{prefix}episode_length")
    success = host["episode_success"]
    out[f"{prefix}episode_success_stderr"] = float(success.std(ddof=1) / np.sqrt(len(success))) if len(success) > 1 else 0.0
    return out
