"""On-device replay buffer with hindsight relabelling (docs/method.md#goal-sampling).

Storage is a per-env FIFO ring of the last ``capacity`` time steps of every parallel env: arrays of
shape ``[capacity, num_envs, ...]``. Each stored step holds the full observation (state ⊕ commanded
goal), the action taken, and the trajectory id of the episode the step belongs to.

Sampling takes, for each env, a window of ``window`` consecutive steps in time order; every step ``i``
of a window gets a goal from a strictly later step ``j`` of the same trajectory with
``P(j) ∝ γ^(j - i)`` (a geometric law truncated at the trajectory's last step in the window). The goal
is the future state's achieved goal (``obs[j][goal_indices]``). A step that is the last of its
trajectory in the window has no future and is kept out of minibatches: when too few steps with a
future were drawn, some of those are used twice (counted in ``resampled_fraction``); only a buffer
with no such step at all would give self goals.

The TD baselines (docs/method.md#baselines) draw :class:`TDTransitions` from the same windows
(:func:`relabel_td_window`): a step's next observation is the next stored step when it shares the step's
trajectory id. The last step of an episode has none (auto-reset overwrote its next observation with the
next episode's first one), and neither has the newest step in the buffer: those are kept out of
minibatches as the steps without a future are, so no transition is paired with a wrong next state and
the buffer stores nothing more than for CRL.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ReplayBuffer:
    obs: jax.Array  # [capacity, num_envs, obs_size]
    action: jax.Array  # [capacity, num_envs, action_size]
    traj_id: jax.Array  # [capacity, num_envs]
    insert_pos: jax.Array  # physical index of the next write
    size: jax.Array  # valid steps per env

    @property
    def capacity(self) -> int:
        return self.obs.shape[0]


@struct.dataclass
class Transitions:
    state: jax.Array
    action: jax.Array
    goal: jax.Array


@struct.dataclass
class TDTransitions:
    """``(s, a, s', g, r)`` with the sparse reward ``r = 1`` where ``s'`` reaches ``g`` (:func:`success_reward`)."""

    state: jax.Array
    action: jax.Array
    next_state: jax.Array
    goal: jax.Array
    reward: jax.Array


def init_buffer(capacity: int, num_envs: int, obs_size: int, action_size: int) -> ReplayBuffer:
    return ReplayBuffer(
        obs=jnp.zeros((capacity, num_envs, obs_size), jnp.float32),
        action=jnp.zeros((capacity, num_envs, action_size), jnp.float32),
        traj_id=jnp.zeros((capacity, num_envs), jnp.int32),
        insert_pos=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def insert(buffer: ReplayBuffer, obs: jax.Array, action: jax.Array, traj_id: jax.Array) -> ReplayBuffer:
    """Append ``[T, num_envs, ...]`` steps, overwriting the oldest once full."""
    steps = obs.shape[0]
    if steps > buffer.capacity:
        raise ValueError(f"cannot insert {steps} steps into a buffer of capacity {buffer.capacity}")
    rows = (buffer.insert_pos + jnp.arange(steps)) % buffer.capacity
    return buffer.replace(
        obs=buffer.obs.at[rows].set(obs),
        action=buffer.action.at[rows].set(action),
        traj_id=buffer.traj_id.at[rows].set(traj_id),
        insert_pos=(buffer.insert_pos + steps) % buffer.capacity,
        size=jnp.minimum(buffer.size + steps, buffer.capacity),
    )


def sample_windows(buffer: ReplayBuffer, key: jax.Array, window: int):
    """One window of ``window`` consecutive steps per env, in time order: arrays ``[num_envs, window, ...]``."""
    num_envs = buffer.obs.shape[1]
    oldest = (buffer.insert_pos - buffer.size) % buffer.capacity
    first = jax.random.randint(key, (num_envs,), 0, buffer.size - window + 1)
    rows = (oldest + first[:, None] + jnp.arange(window)[None, :]) % buffer.capacity  # [E, W]
    envs = jnp.arange(num_envs)[:, None]
    return buffer.obs[rows, envs], buffer.action[rows, envs], buffer.traj_id[rows, envs]


def future_offsets(key: jax.Array, traj_id: jax.Array, gamma: float) -> tuple[jax.Array, jax.Array]:
    """Goal offsets for one env's window.

    Returns ``(offset, has_future)`` of shape ``[W]``: ``offset ≥ 1`` is drawn with P ∝ γ^offset
    (uniformly for ``gamma=1``, HER's "future" strategy), truncated so that ``i + offset`` stays inside
    step ``i``'s trajectory; it is 0 where step ``i`` is the last of its trajectory in the window.
    Trajectory ids never decrease along a window, so the trajectory's last step is found by a sorted search.
    """
    window = traj_id.shape[0]
    last = jnp.searchsorted(traj_id, traj_id, side="right") - 1
    horizon = last - jnp.arange(window)  # how many future steps share the trajectory
    u = jax.random.uniform(key, (window,))
    has_future = horizon > 0
    if gamma == 1.0:
        offset = 1 + jnp.floor(u * horizon).astype(jnp.int32)
        return jnp.where(has_future, jnp.clip(offset, 1, jnp.maximum(horizon, 1)), 0), has_future
    # Inverse CDF of P(m) ∝ γ^m on m = 1..K:  F(m) = (1 - γ^m) / (1 - γ^K).
    tail = 1.0 - jnp.power(gamma, horizon.astype(jnp.float32))
    offset = jnp.ceil(jnp.log1p(-u * tail) / jnp.log(gamma)).astype(jnp.int32)
    offset = jnp.where(has_future, jnp.clip(offset, 1, jnp.maximum(horizon, 1)), 0)
    return offset, has_future


def relabel_window(key, obs, action, traj_id, gamma: float, state_size: int, goal_indices: tuple[int, ...]):
    """Relabel one env's window: ``(Transitions [W], has_future [W])``."""
    offset, has_future = future_offsets(key, traj_id, gamma)
    goal_rows = jnp.arange(obs.shape[0]) + offset
    goal = obs[goal_rows][:, jnp.asarray(goal_indices)]
    return Transitions(state=obs[:, :state_size], action=action, goal=goal), has_future


def success_reward(next_state: jax.Array, goal: jax.Array, goal_indices: tuple[int, ...], threshold: float) -> jax.Array:
    """1 where the achieved goal of ``next_state`` lies within the task's success threshold of ``goal``
    (the task's own success test, ``GoalTask.success_metrics``), else 0."""
    dist = jnp.linalg.norm(next_state[..., jnp.asarray(goal_indices)] - goal, axis=-1)
    return (dist < threshold).astype(jnp.float32)


def relabel_td_window(key, obs, action, traj_id, relabel_probability: float, state_size: int,
                      goal_indices: tuple[int, ...], success_threshold: float):
    """One env's window as TD transitions: ``(TDTransitions [W], has_next [W])``. With probability
    ``relabel_probability`` a step's goal is the achieved goal of a uniformly drawn later step of its
    trajectory (HER, "future"), else its commanded goal; the reward is recomputed for the goal used."""
    offset_key, relabel_key = jax.random.split(key)
    offset, has_next = future_offsets(offset_key, traj_id, 1.0)
    rows = jnp.arange(obs.shape[0])
    next_state = obs[jnp.minimum(rows + 1, obs.shape[0] - 1), :state_size]  # unused where not has_next
    future_goal = obs[rows + offset][:, jnp.asarray(goal_indices)]
    relabel = jax.random.uniform(relabel_key, rows.shape) < relabel_probability
    goal = jnp.where(relabel[:, None], future_goal, obs[:, state_size:])
    reward = success_reward(next_state, goal, goal_indices, success_threshold)
    return TDTransitions(obs[:, :state_size], action, next_state, goal, reward), has_next


def windows_needed(num_transitions: int, num_envs: int, window: int) -> int:
    """How many rounds of window sampling cover ``num_transitions`` (with room for no-future steps)."""
    per_round = num_envs * window
    return max(1, math.ceil(num_transitions * (1 + 1 / window) / per_round))


def sample_minibatches(
    buffer: ReplayBuffer,
    key: jax.Array,
    *,
    num_batches: int,
    batch_size: int,
    window: int,
    gamma: float,
    state_size: int,
    goal_indices: tuple[int, ...],
) -> tuple[Transitions, jax.Array]:
    """``num_batches`` shuffled, relabelled minibatches ``[num_batches, batch_size, ...]`` of CRL's
    :class:`Transitions` (:func:`relabel_window`; :func:`sample_relabelled`)."""
    relabel = functools.partial(relabel_window, gamma=gamma, state_size=state_size, goal_indices=goal_indices)
    return sample_relabelled(buffer, key, relabel, num_batches=num_batches, batch_size=batch_size, window=window)


def sample_relabelled(
    buffer: ReplayBuffer, key: jax.Array, relabel: Callable, *, num_batches: int, batch_size: int, window: int
) -> tuple[Any, jax.Array]:
    """``num_batches`` shuffled minibatches ``[num_batches, batch_size, ...]`` of what ``relabel(key, obs,
    action, traj_id)`` makes of each env's window: ``(transitions [W], usable [W])``.

    Exactly ``num_batches`` are always returned (the minibatch count is never silently reduced): as many
    rounds of windows are drawn as needed. Returns the batches and the fraction of minibatch rows that repeat a transition.
    """
    num_envs = buffer.obs.shape[1]
    needed = num_batches * batch_size
    rounds = windows_needed(needed, num_envs, window)
    round_keys = jax.random.split(key, rounds + 1)

    def one_round(k):
        window_key, relabel_key = jax.random.split(k)
        obs, action, traj_id = sample_windows(buffer, window_key, window)
        keys = jax.random.split(relabel_key, num_envs)
        return jax.vmap(relabel)(keys, obs, action, traj_id)

    transitions, has_future = jax.vmap(one_round)(round_keys[:-1])
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[3:]), transitions)
    has_future = has_future.reshape(-1)
    # Steps with a future first, in random order; if there are fewer than needed, wrap around them.
    order = jnp.argsort(jax.random.uniform(round_keys[-1], has_future.shape) - has_future.astype(jnp.float32))
    num_valid = jnp.sum(has_future)
    chosen = order[jnp.arange(needed) % jnp.maximum(num_valid, 1)]
    batches = jax.tree.map(lambda x: x[chosen].reshape((num_batches, batch_size) + x.shape[1:]), flat)
    resampled_fraction = jnp.maximum(needed - num_valid, 0) / needed
    return batches, resampled_fraction
