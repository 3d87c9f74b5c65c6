"""The ant mazes (docs/tasks.md#ant-mazes): Brax's ant walking to a goal cell of a D4RL-style maze.

Tasks ``ant_<layout>`` for the layouts u_maze, big_maze, hardest_maze, u4_maze, u5_maze, and the far-goal
``ant_<layout>_eval`` layouts (same walls, only the far goal cells) of all but hardest_maze.

Model: brax's shipped ``ant.xml``, changed at construction (docs/tasks.md#ant-mazes): a 100 × 100 m floor, one
static 4 × 4 × 2 m box per wall cell (cell (i, j) centred at world (4i, 4j): rows map to x), conaffinity 1
on the torso sphere, the 4 hip-segment capsules and the 4 feet. So feet touch the floor and the walls,
torso and hip segments touch the walls, and the thigh and shin capsules touch nothing (as in the paper's
code, they pass through walls). No target body: the goal lives in the task state.

State, goal indices, success and termination as :class:`envs.brax_tasks.AntTask`. Start: the R cell's
centre plus the ±0.1 reset noise on every coordinate. Goal: a uniformly chosen G cell's centre, exactly.
With a ``sampler`` (the stitching mazes, :mod:`envs.stitching`) the sampler draws the start cell (the torso
moves there from R, keeping the noise) and the goal, and adds its metrics.
Reward: −dist + 1 − 0.5·Σa² (``reward_forward`` holds −dist). Physics: spring by default, 0.005 s × 10.
"""

from __future__ import annotations

from xml.etree import ElementTree

import jax
import jax.numpy as jnp

from rlscale.envs.base import TaskState
from rlscale.envs.brax_tasks import AntTask, add_maze_walls, ant_system, brax_asset, limit_wall_contact_pairs, set_floor_size
from rlscale.envs.mazes import Maze, maze

WALL_HEIGHT = 2.0  # metres (half the 4 m cell)
FLOOR_HALF_SIZE = 100.0
# Geoms of brax's ant that the mazes make collide with walls (docs/tasks.md#ant-mazes).
WALL_COLLIDING_GEOMS = (
    "torso_geom",
    *(f"aux_{k}_geom" for k in range(1, 5)),
    "left_foot_geom", "right_foot_geom", "third_foot_geom", "fourth_foot_geom",
)

# The largest group of wall-touching geoms of one type: 5 spheres (torso, feet); the 4 hip capsules are fewer.
WALL_GEOMS_PER_TYPE = 5


def ant_maze_xml(layout: Maze, broad_phase: bool = True) -> str:
    """Brax's ant model with the walls, floor, start and contacts of ``layout``.

    ``broad_phase``: test only the geom–wall pairs that can touch (see
    :func:`envs.brax_tasks.limit_wall_contact_pairs`; same physics, several times faster).
    """
    root = ElementTree.fromstring(brax_asset("ant.xml").read_text())
    root.set("model", f"ant_{layout.name}")
    worldbody = root.find("worldbody")
    set_floor_size(worldbody, FLOOR_HALF_SIZE)
    for name in WALL_COLLIDING_GEOMS:
        geom = worldbody.find(f".//geom[@name='{name}']")
        if geom is None:
            raise ValueError(f"brax's ant.xml has no geom {name!r}; cannot build the ant maze")
        geom.set("conaffinity", "1")
    add_maze_walls(worldbody, layout, WALL_HEIGHT)
    if broad_phase:
        limit_wall_contact_pairs(root, WALL_GEOMS_PER_TYPE)
    # The torso starts at the R cell's centre (the initial pose's first two coordinates are torso x, y).
    init_qpos = root.find("custom/numeric[@name='init_qpos']")
    values = init_qpos.get("data").split()
    values[:2] = [f"{layout.start[0]:g}", f"{layout.start[1]:g}"]
    init_qpos.set("data", " ".join(values))
    return ElementTree.tostring(root, encoding="unicode")


class AntMaze(AntTask):
    """Brax's ant in a maze (see the module docstring): obs 29 ⊕ 2, goal torso x, y, success < 0.5 m."""

    def __init__(
        self,
        layout: str = "u_maze",
        backend: str = "spring",
        episode_length: int = 1000,
        *,
        name: str | None = None,
        eval_task: str | None = None,
        sampler=None,
    ):
        """``sampler``: draws the start cell and goal and adds metrics, as the point twins'
        (:mod:`envs.stitching`); None: the R cell and a uniform G cell."""
        self.maze = maze(layout)
        self.sampler = sampler
        sys, n_frames = ant_system(backend, ant_maze_xml(self.maze))
        name = name or f"ant_{layout}"
        super().__init__(sys, n_frames, backend, name, eval_task or name, episode_length)
        self._goals = jnp.asarray(self.maze.goals)

    def sample_goal(self, key: jax.Array) -> jax.Array:
        if self.sampler is not None:
            return self.sampler.sample(key)[1]
        return self._goals[jax.random.randint(key, (), 0, self._goals.shape[0])]

    def sample_start_goal(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.sampler is None:
            return super().sample_start_goal(key)
        start, goal = self.sampler.sample(key)
        return start - jnp.asarray(self.maze.start), goal

    def _locomotion_state(self, pipeline_state, state_part, goal, reward, done, metrics) -> TaskState:
        state = super()._locomotion_state(pipeline_state, state_part, goal, reward, done, metrics)
        if self.sampler is None:
            return state
        return state.replace(metrics={**state.metrics, **self.sampler.metrics(goal, state.metrics["success"])})

    def _progress(self, x_velocity: jax.Array, dist: jax.Array) -> jax.Array:
        return -dist
