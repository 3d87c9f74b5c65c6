"""Gymnasium views of every rlscale task: a single CPU-friendly env and a JAX-batched vector env.

``import rlscale.envs`` registers (when gymnasium is installed) each task as ``rlscale/<CamelCaseName>-v0`` (``point_u_maze`` →
``rlscale/PointUMaze-v0``, ``ant_u4_maze_eval`` → ``rlscale/AntU4MazeEval-v0``); entry points are
strings, so nothing is built until ``make``::

    import gymnasium, envs
    env = gymnasium.make("rlscale/AntBigMaze-v0")                       # GoalTaskEnv
    env = gymnasium.make("rlscale/PointUMaze-v0", reward_type="dense", episode_length=200)
    vec = gymnasium.make_vec("rlscale/AntUMaze-v0", num_envs=64, vectorization_mode="vector_entry_point")

Observations are goal-env dicts: ``observation`` (the state part), ``achieved_goal`` (the state's goal
coordinates) and ``desired_goal`` (the commanded goal), all float32.

Reward (``reward_type``): ``"sparse"`` (default) is 0 within the task's success threshold and −1 outside
(the HER convention: −(dist ≥ threshold)); ``"dense"`` is −dist. Both come from
``compute_reward(achieved_goal, desired_goal, info)``, vectorised over leading axes, so relabelled goals
get the same reward as the env's. The task's own reward is in ``info["task_reward"]``.

``terminated``: the task's termination (ant and humanoid falls); ``truncated``: the episode reached
``episode_length`` steps (the task's default, 1000 for the Brax tasks; override with
``episode_length=``). Seeding: ``reset(seed=...)`` seeds the env's ``np_random``, from which every
reset draws its JAX key, so a seed fixes all later episodes.

The single env jits the task's ``reset`` and ``step`` once per (task, overrides) and shares them between
instances. The vector env steps all envs under ``jax.vmap`` in one jitted call with same-step auto-reset
(gymnasium's ``AutoresetMode.SAME_STEP``): a finished env's next start and goal are drawn fresh in the
step that ends it, and ``info["final_obs"]`` (with mask ``info["_final_obs"]``) holds its last observation.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlscale import envs
from rlscale.envs.base import GoalTask, TaskState

REWARD_TYPES = ("sparse", "dense")


def _goal_dict_space(task: GoalTask) -> spaces.Dict:
    def box(n: int) -> spaces.Box:
        return spaces.Box(-np.inf, np.inf, (n,), np.float32)

    spec = task.spec
    return spaces.Dict(
        {"observation": box(spec.state_size), "achieved_goal": box(spec.goal_size), "desired_goal": box(spec.goal_size)}
    )


@functools.cache
def _compiled(task_name: str, overrides: tuple[tuple[str, Any], ...]):
    """The task and its jitted single-env reset and step, built once per (task, overrides)."""
    task = envs.make(task_name, **dict(overrides))
    return task, jax.jit(task.reset), jax.jit(task.step)


def _check_reward_type(reward_type: str) -> None:
    if reward_type not in REWARD_TYPES:
        raise ValueError(f"unknown reward_type {reward_type!r}; valid: {', '.join(REWARD_TYPES)}")


class _GoalReward:
    """``compute_reward`` shared by the single and the vector env."""

    task: GoalTask
    reward_type: str

    def compute_reward(self, achieved_goal: Any, desired_goal: Any, info: Any = None) -> np.ndarray | float:
        """Reward of reaching ``achieved_goal`` when ``desired_goal`` was commanded (any leading axes)."""
        dist = np.linalg.norm(np.asarray(achieved_goal, np.float64) - np.asarray(desired_goal, np.float64), axis=-1)
        if self.reward_type == "dense":
            reward = -dist
        else:
            reward = -(dist >= self.task.spec.success_threshold).astype(np.float64)
        return float(reward) if np.ndim(reward) == 0 else reward


class GoalTaskEnv(_GoalReward, gymnasium.Env):
    """One rlscale task as a gymnasium goal env (see the module docstring).

    ``task``: a registered task name; ``reward_type``: ``"sparse"`` or ``"dense"``; ``render_mode``:
    ``"rgb_array"`` (maze tasks only: a top-down picture with the robot and the goal); other keyword
    arguments go to the task (``episode_length``, ``backend``, …).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, task: str, reward_type: str = "sparse", render_mode: str | None = None, **overrides: Any):
        _check_reward_type(reward_type)
        self.task_name = task
        self.task, self._reset_fn, self._step_fn = _compiled(task, tuple(sorted(overrides.items())))
        self.reward_type = reward_type
        self.episode_length = self.task.spec.episode_length
        self.observation_space = _goal_dict_space(self.task)
        n = self.task.spec.action_size
        self.action_space = spaces.Box(-1.0, 1.0, (n,), np.float32)
        if getattr(self.task, "maze", None) is None:  # only mazes have a picture
            self.metadata = {**self.metadata, "render_modes": []}
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not supported by {task!r} (supported: {self.metadata['render_modes']})")
        self.render_mode = render_mode
        self._state: TaskState | None = None
        self._steps = 0
        self._trajectory: list[np.ndarray] = []

    def _observation(self, state: TaskState) -> dict[str, np.ndarray]:
        obs = np.array(state.obs, dtype=np.float32)
        n = self.task.spec.state_size
        state_part = obs[:n]
        return {
            "observation": state_part,
            "achieved_goal": state_part[list(self.task.spec.goal_indices)].copy(),
            "desired_goal": obs[n:].copy(),
        }

    def _info(self, state: TaskState) -> dict[str, Any]:
        info = {k: float(v) for k, v in state.metrics.items()}
        info["is_success"] = info["success"]
        info["task_reward"] = float(state.reward)
        return info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        key = jax.random.PRNGKey(int(self.np_random.integers(0, 2**31 - 1)))
        self._state = self._reset_fn(key)
        self._steps = 0
        obs = self._observation(self._state)
        self._trajectory = [obs["achieved_goal"]]
        return obs, self._info(self._state)

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        self._state = self._step_fn(self._state, action)
        self._steps += 1
        obs = self._observation(self._state)
        info = self._info(self._state)
        reward = self.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
        terminated = bool(self._state.terminated)
        truncated = self._steps >= self.episode_length
        self._trajectory.append(obs["achieved_goal"])
        return obs, reward, terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        from rlscale.envs.render import draw_maze, to_rgb_array

        goal = None if self._state is None else np.asarray(self._state.goal)
        trajectories = [np.stack(self._trajectory)] if self._trajectory else None
        return to_rgb_array(draw_maze(self.task.maze, trajectories, goal, title=self.task_name))


class GoalTaskVectorEnv(_GoalReward, VectorEnv):
    """``num_envs`` copies of one task stepped together under ``jax.vmap`` (see the module docstring)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, task: str, num_envs: int = 1, reward_type: str = "sparse", **overrides: Any):
        _check_reward_type(reward_type)
        self.task_name = task
        self.task = envs.make(task, **overrides)
        self.num_envs = num_envs
        self.reward_type = reward_type
        self.episode_length = self.task.spec.episode_length
        self.single_observation_space = _goal_dict_space(self.task)
        self.single_action_space = spaces.Box(-1.0, 1.0, (self.task.spec.action_size,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._reset_fn = jax.jit(jax.vmap(self._reset_one))
        self._step_fn = jax.jit(jax.vmap(self._step_one))
        self._state = None

    # Pure per-env functions (vmapped and jitted above). Carry: (task state, steps, key).
    def _reset_one(self, key: jax.Array):
        key, reset_key = jax.random.split(key)
        return self.task.reset(reset_key), jnp.zeros((), jnp.int32), key

    def _step_one(self, carry, action: jax.Array):
        state, steps, key = carry
        nxt = self.task.step(state, jnp.clip(action, -1.0, 1.0))
        steps = steps + 1
        truncated = steps >= self.episode_length
        done = nxt.terminated | truncated
        key, reset_key = jax.random.split(key)
        fresh = self.task.reset(reset_key)
        state = jax.tree.map(lambda f, n: jnp.where(done, f, n), fresh, nxt)
        return (state, jnp.where(done, 0, steps), key), nxt, truncated

    def _observation(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        n = self.task.spec.state_size
        state_part = obs[:, :n]
        return {
            "observation": state_part.copy(),
            "achieved_goal": state_part[:, list(self.task.spec.goal_indices)],
            "desired_goal": obs[:, n:].copy(),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self._np_random is None:
            self._np_random, self._np_random_seed = gymnasium.utils.seeding.np_random()
        key = jax.random.PRNGKey(int(self._np_random.integers(0, 2**31 - 1)))
        self._state = self._reset_fn(jax.random.split(key, self.num_envs))
        return self._observation(np.asarray(self._state[0].obs, np.float32)), {}

    def step(self, actions):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        actions = jnp.asarray(np.asarray(actions, np.float32).reshape(self.num_envs, -1))
        self._state, final, truncated = self._step_fn(self._state, actions)
        final_obs = self._observation(np.asarray(final.obs, np.float32))
        terminated = np.asarray(final.terminated, bool)
        truncated = np.asarray(truncated, bool)
        rewards = self.compute_reward(final_obs["achieved_goal"], final_obs["desired_goal"])
        info: dict[str, Any] = {k: np.asarray(v) for k, v in final.metrics.items()}
        info["is_success"] = info["success"]
        info["task_reward"] = np.asarray(final.reward)
        done = terminated | truncated
        if done.any():
            info["final_obs"] = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                info["final_obs"][i] = {k: v[i] for k, v in final_obs.items()}
            info["_final_obs"] = done
        obs = self._observation(np.asarray(self._state[0].obs, np.float32))
        return obs, rewards, terminated, truncated, info
