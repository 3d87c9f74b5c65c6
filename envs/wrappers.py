"""Episode bookkeeping shared by every task: step counter, truncation, trajectory id, auto-reset.

The trajectory id starts at 0 and increments exactly when an episode ends (termination or truncation),
so the id stored with the transition ``s_t -> s_{t+1}`` is the id of the episode ``s_t`` belongs to and
relabelling never pairs states of different episodes.

Auto-reset draws a **fresh start and goal** for every episode. The paper's code instead replayed each
parallel env's first start and goal for the whole run (only ``num_envs`` distinct commanded goals);
``fixed_goals_per_env=True`` restores that behaviour.

Training steps all parallel envs with :meth:`EpisodeEnv.step_batch`, which draws fresh resets only on
steps where some episode ended; :meth:`EpisodeEnv.step` is the single-env form (same results).

The auto-reset replaces an ended episode's last observation by the next episode's first, so each step
also reports the state part of the observation it reached before any reset (``StepInfo.next_state``)
and whether that state is terminal (``StepInfo.terminated``: the task ended, not the time limit): what
a TD learner needs to use an episode's last transition (``rlscale.data.buffer``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from rlscale.envs.base import GoalTask, TaskState


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

    done: jax.Array  # the episode ended (termination or truncation); the env continues from a fresh reset
    terminated: jax.Array  # the task terminated (the robot fell): the next state is terminal, its value is 0
    next_state: jax.Array  # the state part of the observation the step reached, before any auto-reset
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
        """One env's step; under ``vmap`` the fresh reset is computed for every env at every step."""
        nxt = self.task.step(state.task, action)
        done = self._done(state, nxt)
        return self._advance(state, nxt, done, self._continue_from(state, nxt, done))

    def step_batch(self, states: EpisodeState, actions: jax.Array) -> tuple[EpisodeState, StepInfo]:
        """All parallel envs' step (leading axis = env), equal to ``jax.vmap(self.step)``.

        On the CPU, fresh resets are drawn only on steps where some env's episode ended: with synchronised
        truncation that is one step in ``episode_length``, so a fresh reset's cost (forward kinematics of a
        random pose for the ant: 3 to 7 % of the ant's env steps/s at 64 to 1024 envs,
        benchmarks/results/envs_overhead_cpu.json) no longer lands on every step. On accelerators they are
        drawn on every step and selected: there a ``cond`` reads its predicate back to the host on every env
        step (docs/method.md#no-host-syncs). Both give the same result: where no episode ended the select
        keeps the stepped state and the key. Under an outer ``vmap`` (several seeds) the ``cond`` becomes a
        select too.
        """
        nxt = jax.vmap(self.task.step)(states.task, actions)
        done = jax.vmap(self._done)(states, nxt)

        def draw_resets():
            return jax.vmap(self._continue_from)(states, nxt, done)

        def draw_resets_when_needed():
            return jax.lax.cond(done.any(), draw_resets, lambda: (nxt, states.key))

        continued = jax.lax.platform_dependent(cpu=draw_resets_when_needed, default=draw_resets)
        return jax.vmap(self._advance)(states, nxt, done, continued)

    def _done(self, state: EpisodeState, nxt: TaskState) -> jax.Array:
        return jnp.logical_or(nxt.terminated, state.steps + 1 >= self.episode_length)

    def _continue_from(self, state: EpisodeState, nxt: TaskState, done: jax.Array) -> tuple[TaskState, jax.Array]:
        """The task state the env continues from, and its next key: a fresh reset where the episode ended."""
        if self.fixed_goals_per_env:
            fresh, key = state.initial, state.key
        else:
            key, reset_key = jax.random.split(state.key)
            fresh = self.task.reset(reset_key)
        task_state = jax.tree.map(lambda f, n: jnp.where(done, f, n), fresh, nxt)
        return task_state, jnp.where(done, key, state.key)

    def _advance(
        self, state: EpisodeState, nxt: TaskState, done: jax.Array, continued: tuple[TaskState, jax.Array]
    ) -> tuple[EpisodeState, StepInfo]:
        """Episode bookkeeping after the task stepped."""
        task_state, key = continued
        steps = jnp.where(done, 0, state.steps + 1)
        new_state = EpisodeState(
            task=task_state,
            steps=steps,
            traj_id=state.traj_id + done.astype(jnp.int32),
            key=key,
            initial=state.initial,
        )
        info = StepInfo(done=done, terminated=nxt.terminated,
                        next_state=nxt.obs[: self.task.spec.state_size], metrics=nxt.metrics)
        return new_state, info
