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
(:func:`relabel_td_window`). A step's next state is the next stored step when it shares the step's
trajectory id. An episode's last step has no such row: the auto-reset overwrote its next observation
with the next episode's first. So a buffer built for an algorithm that needs next states
(``final_state_size``) also keeps, per step, the :class:`EpisodeEnds`: whether the step ended its
episode with its real (pre-reset) next state kept, that state, and whether it was terminal (a fall, as
opposed to the time limit). Every episode's last transition is then usable, and a terminal one does not
bootstrap. Steps with no known next state (the newest stored step of a running episode, a window's last
step inside an episode) are kept out like the steps without a future. CRL and GCSL keep no episode ends
(``ReplayBuffer.ends`` is ``None``): their buffers and checkpoints are unchanged. A TD buffer saved
before it kept episode ends restores with none known, so its old episodes' last steps stay out as they
used to.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import serialization, struct


@struct.dataclass
class EpisodeEnds:
    """Per stored step, what the auto-reset overwrites (arrays ``[capacity, num_envs, ...]`` in a buffer)."""

    terminated: jax.Array  # bool: the step's next state is terminal (the task ended, not the time limit)
    final_valid: jax.Array  # bool: the step is its episode's last and final_state holds its real next state
    final_state: jax.Array  # [..., state_size]: that next state's state part (zeros where not final_valid)

    @classmethod
    def of_steps(cls, done: jax.Array, terminated: jax.Array, next_state: jax.Array) -> "EpisodeEnds":
        """From what the env reports per step (``envs.wrappers.StepInfo``): the pre-reset next state is
        kept where the episode ended, the only steps whose next state the buffer cannot read from the next row."""
        return cls(terminated, done, jnp.where(done[..., None], next_state, 0.0))


@struct.dataclass
class ReplayBuffer:
    obs: jax.Array  # [capacity, num_envs, obs_size]
    action: jax.Array  # [capacity, num_envs, action_size]
    traj_id: jax.Array  # [capacity, num_envs]
    insert_pos: jax.Array  # physical index of the next write
    size: jax.Array  # valid steps per env
    ends: EpisodeEnds | None = None  # kept only for the algorithms whose minibatches need next states

    @property
    def capacity(self) -> int:
        return self.obs.shape[0]


def _buffer_from_state_dict(target: ReplayBuffer, state: dict) -> ReplayBuffer:
    """flax's restore of a struct dataclass, except that a buffer saved before it kept episode ends
    (``--save-buffer`` checkpoints of earlier versions) restores with none known: no step is terminal or
    has a kept final state, so its episodes' last steps stay out of TD minibatches, as they did."""
    if "ends" not in state:
        none_known = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), target.ends)
        state = {**state, "ends": serialization.to_state_dict(none_known)}
    names = [f.name for f in dataclasses.fields(target)]
    unknown = set(state) - set(names)
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)} in a saved replay buffer")
    return target.replace(**{n: serialization.from_state_dict(getattr(target, n), state[n], name=n) for n in names})


serialization.register_serialization_state(
    ReplayBuffer, lambda b: {f.name: serialization.to_state_dict(getattr(b, f.name)) for f in dataclasses.fields(b)},
    _buffer_from_state_dict, override=True,
)


@struct.dataclass
class Transitions:
    state: jax.Array
    action: jax.Array
    goal: jax.Array


@struct.dataclass
class TDTransitions:
    """``(s, a, s', g, r)`` with the sparse reward ``r = 1`` where ``s'`` reaches ``g`` (:func:`success_reward`),
    and whether ``s'`` is terminal (then the TD target does not bootstrap)."""

    state: jax.Array
    action: jax.Array
    next_state: jax.Array
    goal: jax.Array
    reward: jax.Array
    terminated: jax.Array


def init_buffer(capacity: int, num_envs: int, obs_size: int, action_size: int,
                final_state_size: int | None = None) -> ReplayBuffer:
    """An empty buffer; with ``final_state_size`` (the task's state size) it also keeps :class:`EpisodeEnds`."""
    steps = (capacity, num_envs)
    ends = None if final_state_size is None else EpisodeEnds(
        terminated=jnp.zeros(steps, jnp.bool_),
        final_valid=jnp.zeros(steps, jnp.bool_),
        final_state=jnp.zeros(steps + (final_state_size,), jnp.float32),
    )
    return ReplayBuffer(
        obs=jnp.zeros(steps + (obs_size,), jnp.float32),
        action=jnp.zeros(steps + (action_size,), jnp.float32),
        traj_id=jnp.zeros(steps, jnp.int32),
        insert_pos=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
        ends=ends,
    )


def insert(buffer: ReplayBuffer, obs: jax.Array, action: jax.Array, traj_id: jax.Array,
           ends: EpisodeEnds | None = None) -> ReplayBuffer:
    """Append ``[T, num_envs, ...]`` steps, overwriting the oldest once full; ``ends`` are dropped by a
    buffer that keeps none."""
    steps = obs.shape[0]
    if steps > buffer.capacity:
        raise ValueError(f"cannot insert {steps} steps into a buffer of capacity {buffer.capacity}")
    if buffer.ends is not None and ends is None:
        raise ValueError("this buffer keeps episode ends (terminations, final states): insert needs them")
    rows = (buffer.insert_pos + jnp.arange(steps)) % buffer.capacity
    return buffer.replace(
        obs=buffer.obs.at[rows].set(obs),
        action=buffer.action.at[rows].set(action),
        traj_id=buffer.traj_id.at[rows].set(traj_id),
        insert_pos=(buffer.insert_pos + steps) % buffer.capacity,
        size=jnp.minimum(buffer.size + steps, buffer.capacity),
        ends=None if buffer.ends is None else jax.tree.map(lambda kept, new: kept.at[rows].set(new), buffer.ends, ends),
    )


def sample_windows(buffer: ReplayBuffer, key: jax.Array, window: int):
    """One window of ``window`` consecutive steps per env, in time order: ``(obs, action, traj_id, ends)``,
    arrays ``[num_envs, window, ...]`` (``ends`` ``None`` for a buffer that keeps none)."""
    num_envs = buffer.obs.shape[1]
    oldest = (buffer.insert_pos - buffer.size) % buffer.capacity
    first = jax.random.randint(key, (num_envs,), 0, buffer.size - window + 1)
    rows = (oldest + first[:, None] + jnp.arange(window)[None, :]) % buffer.capacity  # [E, W]
    envs = jnp.arange(num_envs)[:, None]
    per_step = (buffer.obs, buffer.action, buffer.traj_id, buffer.ends)
    return jax.tree.map(lambda x: x[rows, envs], per_step)


def future_offsets(key: jax.Array, traj_id: jax.Array, gamma: float,
                   final_valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Goal offsets for one env's window.

    Returns ``(offset, has_future)`` of shape ``[W]``: ``offset ≥ 1`` is drawn with P ∝ γ^offset
    (uniformly for ``gamma=1``, HER's "future" strategy), truncated so that ``i + offset`` stays inside
    step ``i``'s trajectory; it is 0 where step ``i`` is the last of its trajectory in the window.
    With ``final_valid`` (:class:`EpisodeEnds`), a trajectory whose last step in the window ended its
    episode with its final state kept has one more future state: offset ``last - i + 1`` is that state.
    Trajectory ids never decrease along a window, so the trajectory's last step is found by a sorted search.
    """
    window = traj_id.shape[0]
    last = jnp.searchsorted(traj_id, traj_id, side="right") - 1
    horizon = last - jnp.arange(window)  # how many future steps share the trajectory
    if final_valid is not None:
        horizon = horizon + final_valid[last].astype(horizon.dtype)
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


def relabel_td_window(key, obs, action, traj_id, ends: EpisodeEnds, relabel_probability: float, state_size: int,
                      goal_indices: tuple[int, ...], success_threshold: float):
    """One env's window as TD transitions: ``(TDTransitions [W], has_next [W])``.

    A step's next state is the next row where that row is of the same trajectory, else the kept final
    state where the step ended its episode (``ends.final_valid``); ``has_next`` is false for the others.
    With probability ``relabel_probability`` a step's goal is the achieved goal of a uniformly drawn
    later state of its trajectory (HER, "future": the next state of a step ``j ≥ i``, so an episode's last
    step may take its final state's), else its commanded goal; the reward is recomputed for the goal used."""
    offset_key, relabel_key = jax.random.split(key)
    offset, has_next = future_offsets(offset_key, traj_id, 1.0, ends.final_valid)
    rows = jnp.arange(obs.shape[0])
    next_row = obs[jnp.minimum(rows + 1, obs.shape[0] - 1), :state_size]
    next_state = jnp.where(ends.final_valid[:, None], ends.final_state, next_row)  # unused where not has_next
    # Offset m's future state is step i + m - 1's next state (step i + m's own state inside the trajectory).
    future_goal = next_state[rows + jnp.maximum(offset - 1, 0)][:, jnp.asarray(goal_indices)]
    relabel = jax.random.uniform(relabel_key, rows.shape) < relabel_probability
    goal = jnp.where(relabel[:, None], future_goal, obs[:, state_size:])
    reward = success_reward(next_state, goal, goal_indices, success_threshold)
    return TDTransitions(obs[:, :state_size], action, next_state, goal, reward, ends.terminated), has_next


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

    def relabel(key, obs, action, traj_id, ends):
        del ends  # None: CRL's and GCSL's buffers keep no episode ends
        return relabel_window(key, obs, action, traj_id, gamma, state_size, goal_indices)

    return sample_relabelled(buffer, key, relabel, num_batches=num_batches, batch_size=batch_size, window=window)


def sample_relabelled(
    buffer: ReplayBuffer, key: jax.Array, relabel: Callable, *, num_batches: int, batch_size: int, window: int
) -> tuple[Any, jax.Array]:
    """``num_batches`` shuffled minibatches ``[num_batches, batch_size, ...]`` of what ``relabel(key, obs,
    action, traj_id, ends)`` makes of each env's window (:func:`sample_windows`): ``(transitions [W], usable [W])``.

    Exactly ``num_batches`` are always returned (the minibatch count is never silently reduced): as many
    rounds of windows are drawn as needed. Returns the batches and the fraction of minibatch rows that repeat a transition.
    """
    num_envs = buffer.obs.shape[1]
    needed = num_batches * batch_size
    rounds = windows_needed(needed, num_envs, window)
    round_keys = jax.random.split(key, rounds + 1)

    def one_round(k):
        window_key, relabel_key = jax.random.split(k)
        keys = jax.random.split(relabel_key, num_envs)
        return jax.vmap(relabel)(keys, *sample_windows(buffer, window_key, window))

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
