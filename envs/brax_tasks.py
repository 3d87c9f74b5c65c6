"""Goal-conditioned tasks on Brax physics: ``ant`` and ``reacher`` (ENV_SPECS §1 and §7).

The goal lives in the task state, not in the physics: the state part of the observation is computed
from the robot alone and never moves with the goal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from brax import base as brax_base
from brax.envs.ant import Ant as BraxAnt
from brax.envs.reacher import Reacher as BraxReacher

from envs.base import GoalTask, TaskSpec, TaskState

BRAX_BACKENDS = ("spring", "positional", "generalized", "mjx")


def _check_backend(backend: str) -> None:
    if backend not in BRAX_BACKENDS:
        raise ValueError(f"unknown Brax backend {backend!r}; valid backends: {', '.join(BRAX_BACKENDS)}")


class AntGoal(GoalTask):
    """Brax's ant reaching a goal at radius 10 m in a uniformly random direction.

    State (29): torso position (3), torso quaternion (4), 8 joint angles, torso linear (3) and angular
    (3) velocity, 8 joint velocities. Goal: torso x, y (``goal_indices = (0, 1)``). Success: 2-D
    distance < 0.5 m (``success_easy``: < 2 m). Terminates when the torso leaves z ∈ [0.2, 1.0].
    Physics: spring backend, 0.005 s × 10 substeps = 0.05 s per step.
    """

    goal_radius = 10.0

    def __init__(self, backend: str = "spring", episode_length: int = 1000, name: str = "ant"):
        _check_backend(backend)
        self.brax_env = BraxAnt(
            backend=backend,
            exclude_current_positions_from_observation=False,
            terminate_when_unhealthy=True,
        )
        self.spec = TaskSpec(
            name=name,
            state_size=29,
            goal_indices=(0, 1),
            action_size=8,
            success_threshold=0.5,
            episode_length=episode_length,
            eval_task=name,
        )

    def _task_state(self, brax_state, goal) -> TaskState:
        dist = jnp.linalg.norm(brax_state.obs[:2] - goal)
        metrics = {**brax_state.metrics, **self.success_metrics(dist), "success_easy": (dist < 2.0).astype(jnp.float32)}
        return TaskState(
            sim=brax_state,
            obs=self.make_obs(brax_state.obs, goal),
            goal=goal,
            reward=brax_state.reward,
            terminated=brax_state.done > 0,
            metrics=metrics,
        )

    def reset(self, key: jax.Array) -> TaskState:
        physics_key, goal_key = jax.random.split(key)
        angle = jax.random.uniform(goal_key, (), maxval=2 * jnp.pi)
        goal = self.goal_radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        return self._task_state(self.brax_env.reset(physics_key), goal)

    def step(self, state: TaskState, action: jax.Array) -> TaskState:
        return self._task_state(self.brax_env.step(state.sim, action), state.goal)


class ReacherGoal(GoalTask):
    """Brax's planar two-link reacher with the fingertip as the achieved goal.

    State (10): cos and sin of both joint angles, fingertip position (3) and linear velocity (3).
    Goal: fingertip x, y, z (``goal_indices = (4, 5, 6)``), drawn at radius 0.2·U(0, 1) and angle
    U(0, 2π), height 0.01. Success: 3-D distance < 0.05 m. No termination.
    Physics: the paper's runs stepped at an effective 0.01 s × 4 = 0.04 s per env step (its 0.005 s
    setting was ignored by the spring pipeline of brax 0.10). The spring pipeline of current brax diverges
    (NaN within a few steps) at 0.01 s, so we keep the env step of 0.04 s with 0.005 s × 8 substeps.
    """

    tip_offset = 0.11

    def __init__(self, backend: str = "spring", episode_length: int = 1000, name: str = "reacher"):
        _check_backend(backend)
        # Spring/positional: 0.005 s × 8 = 0.04 s per env step (see above); other backends: brax's own.
        self.brax_env = BraxReacher(backend=backend, **({"n_frames": 8} if backend in ("spring", "positional") else {}))
        self.spec = TaskSpec(
            name=name,
            state_size=10,
            goal_indices=(4, 5, 6),
            action_size=2,
            success_threshold=0.05,
            episode_length=episode_length,
            eval_task=name,
        )

    def _state_part(self, pipeline_state) -> jax.Array:
        theta = pipeline_state.q[:2]
        tip = brax_base.Transform.create(pos=jnp.array([self.tip_offset, 0.0, 0.0]))
        tip_pos = pipeline_state.x.take(1).do(tip).pos
        tip_vel = tip.do(pipeline_state.xd.take(1)).vel
        return jnp.concatenate([jnp.cos(theta), jnp.sin(theta), tip_pos, tip_vel])

    def _task_state(self, pipeline_state, goal, action) -> TaskState:
        state_part = self._state_part(pipeline_state)
        dist = jnp.linalg.norm(state_part[4:7] - goal)
        return TaskState(
            sim=pipeline_state,
            obs=self.make_obs(state_part, goal),
            goal=goal,
            reward=-dist,
            terminated=jnp.zeros((), jnp.bool_),
            metrics={**self.success_metrics(dist), "reward_ctrl": -jnp.square(action).sum()},
        )

    def reset(self, key: jax.Array) -> TaskState:
        q_key, qd_key, radius_key, angle_key = jax.random.split(key, 4)
        env = self.brax_env
        q = env.sys.init_q + jax.random.uniform(q_key, (env.sys.q_size(),), minval=-0.1, maxval=0.1)
        qd = jax.random.uniform(qd_key, (env.sys.qd_size(),), minval=-0.005, maxval=0.005)
        radius = 0.2 * jax.random.uniform(radius_key)
        angle = jax.random.uniform(angle_key, maxval=2 * jnp.pi)
        goal_xy = radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        # The target body is visual only (no contacts); placing it at the goal keeps renders truthful.
        q = q.at[2:].set(goal_xy)
        qd = qd.at[2:].set(0.0)
        goal = jnp.concatenate([goal_xy, jnp.array([0.01])])
        return self._task_state(env.pipeline_init(q, qd), goal, jnp.zeros(self.spec.action_size))

    def step(self, state: TaskState, action: jax.Array) -> TaskState:
        return self._task_state(self.brax_env.pipeline_step(state.sim, action), state.goal, action)
