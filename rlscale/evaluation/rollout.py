"""Rollouts of a policy on fresh episodes with a jitted fixed-length unroll, and their summary: what an
evaluation measures (docs/metrics.md#per-evaluation), in training (``rlscale.training.loop``) and in ``rlscale eval``
(``rlscale.evaluation.evaluate``); the same rollout, with its states, draws ``rlscale.evaluation.visualize``'s pictures.

Per episode: time at goal (steps within the success threshold, counted until the episode ends or the
robot falls), success-any, final distance and episode length; every other metric the task reports is
summed over the episode's active steps. No key is assumed beyond ``success`` and ``dist``.

Episode groups (docs/metrics.md#per-goal-distance): a task metric named ``<name>_count`` is a group
indicator (1 where the episode belongs to the group, e.g. its goal is 5 cells away; ``<name>`` is zero
outside the group). It is not summed: each episode keeps its value at the reset, ``episode_<name>_count``;
a ``success<suffix>_count`` also gives the group's success-any ``episode_success_any<suffix>`` (with its
``_count``). :func:`summarize` then averages each ``<name>`` over the group's episodes only.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rlscale.envs.base import GoalTask
from rlscale.metric_keys import COUNT_SUFFIX, EVAL_PREFIX

COUNT = COUNT_SUFFIX  # suffix of a group indicator metric (module docstring)


def rollout(task: GoalTask, act: Callable, policy_params, reset_key: jax.Array, num_episodes: int, length: int,
            act_key: jax.Array | None = None, trajectory: bool = False):
    """``num_episodes`` fresh episodes of ``length`` steps: ``(per_episode, steps)``, the one rollout of a
    policy (evaluation in training and in ``rlscale eval``, and the pictures of ``rlscale.evaluation.visualize``).

    ``act(policy_params, obs, key)`` returns actions; without ``act_key`` the key is ``None`` (the
    deterministic policy), with one each step gets its own key. A step counts while no earlier state of
    its episode has terminated (the robot fell). ``per_episode``: metrics as arrays of shape
    ``[num_episodes]`` (module docstring). ``steps`` with ``trajectory=True``: ``(states, active, actions)``,
    the task states ``[length + 1, num_episodes, ...]`` from the reset on, whether each counts
    ``[length + 1, num_episodes]`` and the action taken from each but the last ``[length, num_episodes, ...]``
    (what ``rlscale record`` writes); else ``None``. Pure: jit it.
    """
    state = jax.vmap(task.reset)(jax.random.split(reset_key, num_episodes))
    metric_keys = [k for k in state.metrics if k != "dist" and not k.endswith(COUNT)]
    groups = {k: state.metrics[k].astype(jnp.float32) for k in state.metrics if k.endswith(COUNT)}
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
        return (nxt, still, sums, final_dist, counted), ((nxt, active, action) if trajectory else None)

    init = (state, jnp.ones(num_episodes, bool), {k: zeros for k in metric_keys}, state.metrics["dist"], zeros)
    step_keys = None if act_key is None else jax.random.split(act_key, length)
    (_, _, sums, final_dist, counted), steps = jax.lax.scan(step, init, step_keys, length=length)
    out = {f"episode_{k}": v for k, v in sums.items()}
    out["episode_success_any"] = (sums["success"] > 0).astype(jnp.float32)
    for key, indicator in groups.items():
        base = key.removesuffix(COUNT)
        out[f"episode_{key}"] = indicator
        if base.startswith("success") and base in sums:
            suffix = base.removeprefix("success")
            out[f"episode_success_any{suffix}"] = (sums[base] > 0).astype(jnp.float32)
            out[f"episode_success_any{suffix}{COUNT}"] = indicator
    out["episode_dist"] = final_dist
    out["episode_length"] = counted
    if not trajectory:
        return out, None
    states, active, actions = steps
    states = jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), state, states)
    return out, (states, jnp.concatenate([jnp.ones((1, num_episodes), bool), active]), actions)


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


def summarize(per_episode: dict[str, jax.Array], prefix: str = EVAL_PREFIX) -> dict[str, float]:
    """Means over episodes, plus the standard error of time at goal. A grouped metric (module docstring)
    is its mean over the group's episodes (NaN when the group has none) and ``<name>_count`` the number of
    those episodes."""
    host = {k: np.asarray(v, dtype=np.float64) for k, v in per_episode.items()}
    out = {f"{prefix}{k}": float(v.mean()) for k, v in host.items()}
    for key in [k for k in host if k.endswith(COUNT) and k.removesuffix(COUNT) in host]:
        base, count = key.removesuffix(COUNT), float(host[key].sum())
        out[f"{prefix}{base}"] = float(host[base].sum() / count) if count else float("nan")
        out[f"{prefix}{key}"] = count
    out[f"{prefix}avg_episode_length"] = out.pop(f"{prefix}episode_length")
    success = host["episode_success"]
    out[f"{prefix}episode_success_stderr"] = float(success.std(ddof=1) / np.sqrt(len(success))) if len(success) > 1 else 0.0
    return out
