"""A 2-D point mass in the ant mazes' layouts, in pure JAX: velocity-commanded (:class:`PointMaze`, the
point twins) and acceleration-commanded (:class:`InertialPointMaze`); docs/tasks.md describes both.

The point is a stand-in for the ant that keeps the navigation problem (same walls, start cell and goal
cells as the ant mazes) and drops the locomotion, so that it steps thousands of times faster than Brax on
a CPU: tests and the CPU quickstart can show real learning in minutes.

Dynamics: the action ``a ∈ [-1, 1]^2`` is a velocity command; each env step moves the point by
``max_step · a`` in ``substeps`` sub-moves, each axis separately, and a sub-move whose square footprint
(half-size ``radius``) would overlap a wall cell is cancelled on that axis (the point slides along walls).
A sub-move (0.25 m by default) is far shorter than a wall (4 m), so nothing passes through walls.

State (4): ``[x, y, vx, vy]`` where ``v`` is the realised displacement per env step. Goal indices: x, y.
Success: 2-D distance below 0.5 m, as the ant mazes. Start: R-cell centre + U(-0.1, 0.1) on x and y.
Goal: a uniformly chosen G cell's centre, exactly. With a ``sampler`` (the stitching mazes,
:mod:`envs.stitching`) the sampler draws the start cell and the goal, and adds its metrics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlscale.envs.base import GoalTask, TaskSpec, TaskState
from rlscale.envs.mazes import maze


class PointMaze(GoalTask):
    def __init__(
        self,
        layout: str = "u_maze",
        *,
        name: str | None = None,
        eval_task: str | None = None,
        episode_length: int = 200,
        max_step: float = 2.0,
        substeps: int = 8,
        radius: float = 0.4,
        start_noise: float = 0.1,
        sampler=None,
    ):
        """``sampler``: draws the start cell and goal (``sample(key) -> (start_xy, goal_xy)``) and adds
        ``metrics(goal, success)`` (:mod:`envs.stitching`); None: the R cell and a uniform G cell."""
        self.maze = maze(layout)
        self.sampler = sampler
        self.max_step = max_step
        self.substeps = substeps
        self.radius = radius
        self.start_noise = start_noise
        name = name or f"point_{layout}"
        self.spec = TaskSpec(
            name=name,
            state_size=4,
            goal_indices=(0, 1),
            action_size=2,
            success_threshold=0.5,
            episode_length=episode_length,
            eval_task=eval_task or name,
        )
        self._walls = jnp.asarray(self.maze.walls)
        self._goals = jnp.asarray(self.maze.goals)
        self._start = jnp.asarray(self.maze.start)

    def blocked(self, xy: jax.Array) -> jax.Array:
        """Whether a square of half-size ``radius`` centred at ``xy`` overlaps a wall cell."""
        s = self.maze.scale
        offsets = jnp.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], jnp.float32) * self.radius
        corners = xy + offsets
        cells = jnp.floor((corners + 0.5 * s) / s).astype(jnp.int32)
        rows = jnp.clip(cells[:, 0], 0, self._walls.shape[0] - 1)
        cols = jnp.clip(cells[:, 1], 0, self._walls.shape[1] - 1)
        return self._walls[rows, cols].any()

    def _observe(self, xy, vel, goal) -> TaskState:
        dist = jnp.linalg.norm(xy - goal)
        state_part = jnp.concatenate([xy, vel])
        return TaskState(
            sim=state_part,
            obs=self.make_obs(state_part, goal),
            goal=goal,
            reward=-dist,
            terminated=jnp.zeros((), jnp.bool_),
            metrics=self._metrics(dist, goal),
        )

    def _metrics(self, dist, goal) -> dict[str, jax.Array]:
        metrics = self.success_metrics(dist)
        return metrics if self.sampler is None else {**metrics, **self.sampler.metrics(goal, metrics["success"])}

    def reset(self, key: jax.Array) -> TaskState:
        start_key, goal_key = jax.random.split(key)
        noise = jax.random.uniform(start_key, (2,), minval=-self.start_noise, maxval=self.start_noise)
        if self.sampler is None:
            start, goal = self._start, self._goals[jax.random.randint(goal_key, (), 0, self._goals.shape[0])]
        else:
            start, goal = self.sampler.sample(goal_key)
        xy = start + noise
        return self._observe(xy, jnp.zeros(2), goal)

    def step(self, state: TaskState, action: jax.Array) -> TaskState:
        delta = jnp.clip(action, -1.0, 1.0) * (self.max_step / self.substeps)
        start_xy = state.sim[:2]

        def sub_move(xy, _):
            for axis in range(2):
                moved = xy.at[axis].add(delta[axis])
                xy = jnp.where(self.blocked(moved), xy, moved)
            return xy, None

        xy, _ = jax.lax.scan(sub_move, start_xy, None, length=self.substeps)
        return self._observe(xy, xy - start_xy, state.goal)


class InertialPointMaze(PointMaze):
    """The point twins with inertia: the action commands an acceleration, not a velocity.

    Reaching a goal and *staying* there (the score counts steps within 0.5 m) needs braking ahead of
    the goal and of every turn, so the critic has to tell states apart by velocity as well as position
    (docs/tasks.md, "Inertial point mazes").

    Dynamics, per sub-step of length ``h = dt / substeps``: ``v ← (1 − friction·h)·v + accel·a·h``
    with ``a = clip(action, −1, 1)``, the speed capped at ``max_speed``; then each axis moves by
    ``v·h`` unless the square footprint would overlap a wall, in which case the move on that axis is
    cancelled and that velocity component set to zero (walls stop the point, no bounce). With zero
    action and no wall the velocity decays by ``(1 − friction·h)^substeps`` per env step.

    State (4): ``[x, y, vx, vy]``, velocity in m/s. Goals, starts, success and eval layouts are the
    point twins'. At full speed (4 m/s, 2 m per 0.5 s step) the point is as fast as the velocity-
    commanded twin.
    """

    def __init__(
        self,
        layout: str = "u_maze",
        *,
        name: str | None = None,
        dt: float = 0.5,
        substeps: int = 8,
        accel: float = 2.0,
        max_speed: float = 4.0,
        friction: float = 0.5,
        **point_options,
    ):
        """``point_options``: the point twin's ``eval_task``, ``episode_length``, ``radius``, ``start_noise``,
        ``sampler``."""
        if not 0.0 <= friction * dt / substeps < 1.0:
            raise ValueError(f"friction·dt/substeps must lie in [0, 1), got {friction}·{dt}/{substeps}")
        name = name or f"point_inertia_{layout}"
        super().__init__(layout, name=name, max_step=max_speed * dt, substeps=substeps, **point_options)
        self.dt = dt
        self.accel = accel
        self.max_speed = max_speed
        self.friction = friction

    def step(self, state: TaskState, action: jax.Array) -> TaskState:
        h = self.dt / self.substeps
        push = jnp.clip(action, -1.0, 1.0) * (self.accel * h)
        decay = 1.0 - self.friction * h

        def sub_step(carry, _):
            xy, vel = carry
            vel = decay * vel + push
            speed = jnp.linalg.norm(vel)
            vel = vel * jnp.minimum(1.0, self.max_speed / jnp.maximum(speed, 1e-9))
            for axis in range(2):
                moved = xy.at[axis].add(vel[axis] * h)
                hit = self.blocked(moved)
                xy = jnp.where(hit, xy, moved)
                vel = vel.at[axis].set(jnp.where(hit, 0.0, vel[axis]))
            return (xy, vel), None

        (xy, vel), _ = jax.lax.scan(sub_step, (state.sim[:2], state.sim[2:]), None, length=self.substeps)
        return self._observe(xy, vel, state.goal)
