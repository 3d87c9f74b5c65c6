"""The goal-conditioned task contract every rlscale environment follows.

A task is a pure-JAX, single-environment object (batch it with ``jax.vmap``):

* ``reset(key) -> TaskState`` and ``step(state, action) -> TaskState``;
* the observation is ``state ⊕ goal``: ``obs[:state_size]`` is the state part (it never depends on
  the commanded goal) and ``obs[state_size:]`` is the commanded goal;
* ``goal_indices`` are the coordinates of the state part that form the *achieved* goal, so a future
  state ``s`` relabels as the goal ``s[goal_indices]``;
* ``metrics`` always holds ``success`` (distance below ``success_threshold``) and ``dist``.

Episode bookkeeping (step counter, truncation, trajectory id, auto-reset) is not the task's job: it
lives in :mod:`envs.wrappers`, identically for every task.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TaskState:
    """One environment's state. ``sim`` is the task's own physics state (any pytree)."""

    sim: Any
    obs: jax.Array
    goal: jax.Array
    reward: jax.Array
    terminated: jax.Array
    metrics: dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Static facts about a task, shared by the trainer, the evaluator and the tests."""

    name: str
    state_size: int
    goal_indices: tuple[int, ...]
    action_size: int
    success_threshold: float
    episode_length: int
    # The task evaluated by default (a maze's ``*_eval`` layout, else the task itself).
    eval_task: str

    @property
    def goal_size(self) -> int:
        return len(self.goal_indices)

    @property
    def obs_size(self) -> int:
        return self.state_size + self.goal_size


class GoalTask:
    """Base class: subclasses set ``spec`` and implement ``reset`` and ``step``."""

    spec: TaskSpec

    def reset(self, key: jax.Array) -> TaskState:
        raise NotImplementedError

    def step(self, state: TaskState, action: jax.Array) -> TaskState:
        raise NotImplementedError

    def goal_of(self, state_part: jax.Array) -> jax.Array:
        """The achieved goal of a state (the coordinates a relabelled goal is made of)."""
        return state_part[..., jnp.asarray(self.spec.goal_indices)]

    def make_obs(self, state_part: jax.Array, goal: jax.Array) -> jax.Array:
        return jnp.concatenate([state_part, goal], axis=-1)

    def success_metrics(self, dist: jax.Array) -> dict[str, jax.Array]:
        return {"success": (dist < self.spec.success_threshold).astype(jnp.float32), "dist": dist}
