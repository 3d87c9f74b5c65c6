"""Episode bookkeeping shared by every task: step counter, truncation, trajectory id, auto-reset.

The trajectory id starts at 0 and increments exactly when an episode ends (termination or truncation),
so the id stored with the transition ``s_t -> s_{t+1}`` is the id of the episode ``s_t`` belongs to and
relabelling never pairs states of different episodes.

Auto-reset draws a **fresh start and goal** for every episode. The paper's code instead replayed each
parallel env's first start and goal for the whole run (only ``num_envs`` distinct commanded goals);
``fixed_goals_per_env=True`` restores that behaviour.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs.base import GoalTask, TaskState


@struct.dataclass
class EpisodeState:
    task: TaskState
    steps: jax.Array  # steps taken in the current episode
    traj_id: jax.Array  # episode index of this env slot
    key: jax.Array
    initial: TaskState | None  # the first reset, kept only with fixed_goals_per_env


@struct.dataclass
class StepInfo:
    """What one step reports besides the next state (all per env)."""

    done: jax.Array
    truncated: jax.Array
    metrics: dict[str, jax.Array]


class EpisodeEnv:
    """Single-env episode wrapper around a :class:`GoalTask`; vmap it for parallel envs."""

    def __init__(self, task: GoalTask, episode_length: int | None = None, fixed_goals_per_env: bool = False):
        self.task = task
        self.episode_length = episode_length or task.spec.episode_length
        self.fixed_goals_per_env = fixed_goals_per_env

    def reset(self, key: jax.Array) -> EpisodeState:
        key, reset_key = jax.random.split(key)
        task_state = self.task.reset(reset_key)
        return EpisodeState(
            task=task_state,
            steps=jnp.zeros((), jnp.int32),
            traj_id=jnp.zeros((), jnp.int32),
            key=key,
            initial=task_state if self.fixed_goals_per_env else None,
        )

    def step(self, state: EpisodeState, action: jax.Array) -> tuple[EpisodeState, StepInfo]:
        nxt = self.task.step(state.task, action)
        steps = state.steps + 1
        truncated = steps >= self.episode_length
        done = jnp.logical_or(nxt.terminated, truncated)
        key, reset_key = jax.random.split(state.key)
        fresh = state.initial if self.fixed_goals_per_env else self.task.reset(reset_key)
        task_state = jax.tree.map(lambda f, n: jnp.where(done, f, n), fresh, nxt)
        new_state = EpisodeState(
            task=task_state,
            steps=jnp.where(done, 0, steps),
            traj_id=state.traj_id + done.astype(jnp.int32),
            key=key,
            initial=state.initial,
        )
        return new_state, StepInfo(done=done, truncated=truncated, metrics=nxt.metrics)
