"""Stitching mazes (docs/tasks.md#stitching-mazes): train on short start–goal pairs, evaluate on long ones.

``<robot>_<layout>_stitch`` trains with a start cell drawn uniformly among the layout's free cells and a
commanded goal drawn uniformly among the free cells 1 to ``max_goal_distance`` (k, default 3) cells away
along the maze's shortest path (never the start cell itself). ``<robot>_<layout>_stitch_eval`` starts in
the usual start cell R and commands only the goals ``goal_distances`` (default 4, 5, 6) cells away from R,
pairs that training never commands, and reports per goal distance d the metrics ``success_d<d>`` (success on
episodes whose goal is d cells away, else 0) and ``success_d<d>_count`` (1 on such episodes): the evaluation
(``rlscale.evaluation.rollout``) turns each pair into time at goal and success-any averaged over those episodes only.

The distances are a breadth-first search over the layout's 4-connected free cells
(:func:`envs.mazes.cell_distances`), computed once in NumPy at construction; reset samples from them in JAX,
so it stays jittable and vmappable. Only the commanded goals change: hindsight relabelling still draws
goals from the agent's own trajectory.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from rlscale.envs.base import GoalTask
from rlscale.envs.mazes import Maze, cell_distances, maze

MAX_GOAL_DISTANCE = 3
EVAL_GOAL_DISTANCES = (4, 5, 6)


def check_distance(option: str, value: Any) -> int:
    """``value`` as a distance in cells (an int of at least 1), else a ValueError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{option} must be an integer number of cells, at least 1; got {value!r}")
    return int(value)


class StitchGoals:
    """Training starts and goals: a free cell uniformly, then a free cell 1..k cells away uniformly."""

    def __init__(self, layout: Maze, max_goal_distance: int = MAX_GOAL_DISTANCE):
        self.max_goal_distance = check_distance("max_goal_distance", max_goal_distance)
        self.distances = cell_distances(layout.walls)
        self.allowed = (self.distances >= 1) & (self.distances <= self.max_goal_distance)  # [start, goal]
        if not self.allowed.any(axis=1).all():
            cell = layout.free_cell_indices[np.flatnonzero(~self.allowed.any(axis=1))[0]]
            raise ValueError(f"free cell {tuple(cell.tolist())} of layout {layout.name!r} has no other free cell within "
                             f"{self.max_goal_distance} cells")
        self._cells = jnp.asarray(layout.free_cells)
        self._logits = jnp.asarray(np.where(self.allowed, 0.0, -np.inf), jnp.float32)

    def sample(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """World xy of the start cell's centre and of the goal cell's centre."""
        start_key, goal_key = jax.random.split(key)
        start = jax.random.randint(start_key, (), 0, self._cells.shape[0])
        goal = jax.random.categorical(goal_key, self._logits[start])
        return self._cells[start], self._cells[goal]

    def metrics(self, goal: jax.Array, success: jax.Array) -> dict[str, jax.Array]:
        return {}


class FarGoals:
    """Evaluation starts and goals: the R cell, and a goal cell drawn uniformly among the free cells whose
    distance from R is one of ``goal_distances``; :meth:`metrics` splits success by the goal's distance."""

    def __init__(self, layout: Maze, goal_distances: tuple[int, ...] = EVAL_GOAL_DISTANCES):
        if isinstance(goal_distances, (int, np.integer)):
            goal_distances = (goal_distances,)
        self.goal_distances = tuple(sorted({check_distance("goal_distances", d) for d in goal_distances}))
        if not self.goal_distances:
            raise ValueError("goal_distances must name at least one distance")
        from_start = cell_distances(layout.walls)[layout.start_index]
        for d in self.goal_distances:
            if not (from_start == d).any():
                raise ValueError(f"no free cell of layout {layout.name!r} is {d} cells from its start cell R "
                                 f"(its free cells lie 0..{from_start.max()} cells away)")
        chosen = np.isin(from_start, self.goal_distances)
        self.goal_cells = layout.free_cell_indices[chosen]
        grid = np.full(layout.walls.shape, -1, np.int32)
        grid[tuple(layout.free_cell_indices.T)] = from_start
        self._grid = jnp.asarray(grid)
        self._goals = jnp.asarray(layout.free_cells[chosen])
        self._start = jnp.asarray(layout.start)
        self._scale = layout.scale

    def sample(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._start, self._goals[jax.random.randint(key, (), 0, self._goals.shape[0])]

    def goal_distance(self, goal: jax.Array) -> jax.Array:
        """Cells from R to the cell whose centre is ``goal`` (-1 for a wall cell)."""
        row, col = jnp.round(goal / self._scale).astype(jnp.int32)
        return self._grid[row, col]

    def metrics(self, goal: jax.Array, success: jax.Array) -> dict[str, jax.Array]:
        at = self.goal_distance(goal)
        out = {}
        for d in self.goal_distances:
            here = (at == d).astype(jnp.float32)
            out[f"success_d{d}"] = success * here
            out[f"success_d{d}_count"] = here
        return out


def _task(robot: str, layout: str, name: str, sampler, overrides: dict[str, Any]) -> GoalTask:
    if robot == "ant":
        from rlscale.envs.ant_maze import (
            AntMaze as cls,  # Brax is imported only when an ant task is built.
        )
    else:
        from rlscale.envs.point_maze import InertialPointMaze, PointMaze

        cls = InertialPointMaze if robot == "point_inertia" else PointMaze
    return cls(layout, name=name, eval_task=f"{robot}_{layout}_stitch_eval", sampler=sampler, **overrides)


def stitch_task(robot: str, layout: str, max_goal_distance: int = MAX_GOAL_DISTANCE, **overrides: Any) -> GoalTask:
    """``<robot>_<layout>_stitch``: training pairs at most ``max_goal_distance`` cells apart."""
    return _task(robot, layout, f"{robot}_{layout}_stitch", StitchGoals(maze(layout), max_goal_distance), overrides)


def stitch_eval_task(robot: str, layout: str, goal_distances: tuple[int, ...] = EVAL_GOAL_DISTANCES,
                     **overrides: Any) -> GoalTask:
    """``<robot>_<layout>_stitch_eval``: from R to the goals ``goal_distances`` cells away."""
    return _task(robot, layout, f"{robot}_{layout}_stitch_eval", FarGoals(maze(layout), goal_distances), overrides)
