"""Goal-conditioned tasks on Brax physics: ``ant`` and ``reacher`` (docs/tasks.md#ant and #reacher), and the ant
machinery the ant mazes share (:class:`AntTask`, :func:`ant_system`).

The goal lives in the task state, not in the physics: the state part of the observation is computed
from the robot alone and never moves with the goal.
"""

from __future__ import annotations

from xml.etree import ElementTree

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from brax import base as brax_base
from brax import math as brax_math
from brax.envs.base import PipelineEnv
from brax.envs.reacher import Reacher as BraxReacher
from brax.io import mjcf
from etils import epath

from rlscale.envs.base import GoalTask, TaskSpec, TaskState
from rlscale.envs.mazes import Maze

BRAX_BACKENDS = ("spring", "positional", "generalized", "mjx")


def _check_backend(backend: str) -> None:
    if backend not in BRAX_BACKENDS:
        raise ValueError(f"unknown Brax backend {backend!r}; valid backends: {', '.join(BRAX_BACKENDS)}")


class BraxPhysics(PipelineEnv):
    """A bare Brax pipeline (``pipeline_init`` / ``pipeline_step`` / ``dt``): the tasks own reset and step."""

    def reset(self, rng: jax.Array):
        raise NotImplementedError("use the task's reset")

    def step(self, state, action: jax.Array):
        raise NotImplementedError("use the task's step")


def brax_asset(name: str) -> epath.Path:
    """A model shipped inside the installed brax package (never read relative to the working directory)."""
    return epath.resource_path("brax") / "envs" / "assets" / name


def with_mjx_solver(sys):
    """``sys`` with Brax's MJX solver settings (Newton, one iteration, four line-search steps, no Euler
    damping), the one place the Brax tasks on the mjx backend (ant, humanoid) set them."""
    return sys.tree_replace(
        {
            "opt.solver": mujoco.mjtSolver.mjSOL_NEWTON,
            "opt.disableflags": mujoco.mjtDisableBit.mjDSBL_EULERDAMP,
            "opt.iterations": 1,
            "opt.ls_iterations": 4,
        }
    )


def ant_system(backend: str, xml: str | None = None) -> tuple[brax_base.System, int]:
    """Brax's ant (``xml``: a modified copy of its shipped model) with brax's per-backend settings.

    Returns the system and the physics substeps per env step: spring and positional integrate
    0.005 s × 10, generalized and mjx the XML's 0.01 s × 5 (mjx with brax's Newton solver settings);
    positional uses gear 200. Every backend steps the env by 0.05 s.
    """
    _check_backend(backend)
    sys = mjcf.loads(xml) if xml is not None else mjcf.load(brax_asset("ant.xml"))
    n_frames = 5
    if backend in ("spring", "positional"):
        sys = sys.tree_replace({"opt.timestep": 0.005})
        n_frames = 10
    if backend == "mjx":
        sys = with_mjx_solver(sys)
    if backend == "positional":
        sys = sys.replace(actuator=sys.actuator.replace(gear=200 * jnp.ones_like(sys.actuator.gear)))
    return sys, n_frames


def add_maze_walls(worldbody: ElementTree.Element, layout: Maze, height: float) -> None:
    """One static box per wall cell of ``layout`` (docs/tasks.md#ant-mazes): a full cell's footprint, ``height`` tall,
    standing on the floor, colliding with everything that has contype or conaffinity 1."""
    half = 0.5 * layout.scale
    for i, j in np.argwhere(layout.walls):
        ElementTree.SubElement(
            worldbody,
            "geom",
            name=f"wall_{i}_{j}",
            type="box",
            pos=f"{layout.scale * i:g} {layout.scale * j:g} {0.5 * height:g}",
            size=f"{half:g} {half:g} {0.5 * height:g}",
            contype="1",
            conaffinity="1",
            rgba="0.7 0.5 0.3 1",
        )


def limit_wall_contact_pairs(root: ElementTree.Element, geoms_per_type: int) -> None:
    """Test only the geom–wall pairs that can touch (a broad phase; the physics is unchanged).

    Without it every geom that touches walls is tested against every wall cell at each substep (hundreds
    of convex collisions in the big mazes). MuJoCo's ``max_geom_pairs`` keeps, per pair of geom types
    (sphere–box, capsule–box, …), the k pairs whose bounding spheres are closest. A pair can only touch
    when its bounding spheres overlap, i.e. when the geom's centre lies within (wall bounding radius +
    geom bounding radius) of the wall's centre horizontally; that disk is narrower than two cells for
    both robots (ant: 2 × 3.25 m < 8 m, humanoid: 2 × 1.75 m < 4 m), so it covers at most a 2 × 2 block
    of cell centres: at most 4 walls per geom. k = 4 × ``geoms_per_type`` (the largest number of
    wall-touching geoms of one type) keeps every pair that can touch, and every body–body group of the
    robots is smaller than k, so nothing else is culled.
    """
    custom = root.find("custom")
    if custom is None:
        custom = ElementTree.SubElement(root, "custom")
    # First of the custom numerics: mjx reads this setting at index (numeric id) of the numeric data rather
    # than at its address, which agree only for the first numeric.
    custom.insert(0, ElementTree.Element("numeric", name="max_geom_pairs", data=str(4 * geoms_per_type)))


def set_floor_size(worldbody: ElementTree.Element, half_size: float) -> None:
    floor = worldbody.find("geom[@name='floor']")
    sizes = floor.get("size").split()
    floor.set("size", " ".join([f"{half_size:g}", f"{half_size:g}", *sizes[2:]]))


class PipelineTask(GoalTask):
    """A task stepping its own Brax pipeline (``self.pipeline``): the ant and humanoid families."""

    pipeline: BraxPhysics

    @property
    def sys(self) -> brax_base.System:
        return self.pipeline.sys

    @property
    def dt(self) -> float:
        return float(self.pipeline.dt)

    def _locomotion_state(self, pipeline_state, state_part, goal, reward, done, metrics) -> TaskState:
        """Task state of a robot that walks to a goal: success and "easy" success (< 2 m) from the distance
        between the state's achieved goal and the goal; terminated where ``done`` (the robot fell)."""
        dist = jnp.linalg.norm(self.goal_of(state_part) - goal)
        metrics = {**metrics, **self.success_metrics(dist), "success_easy": (dist < 2.0).astype(jnp.float32)}
        return TaskState(
            sim=pipeline_state,
            obs=self.make_obs(state_part, goal),
            goal=goal,
            reward=reward,
            terminated=done > 0,
            metrics=metrics,
        )


class AntTask(PipelineTask):
    """What every ant task shares (docs/tasks.md#ant, #ant-mazes): physics, reset noise, state part, health,
    metrics.

    State (29): torso position (3), torso quaternion (4), 8 joint angles, torso linear (3) and angular
    (3) velocity, 8 joint velocities. Goal: torso x, y (``goal_indices = (0, 1)``). Success: 2-D
    distance < 0.5 m (``success_easy``: < 2 m). Terminates when the torso leaves z ∈ [0.2, 1.0].
    Reset: q = init_q + U(−0.1, 0.1) on every coordinate, qd = 0.1·N(0, 1). Reward: the subclass's
    task term (``_progress``) + 1 − 0.5·Σa².

    Subclasses implement ``sample_goal(key)`` and ``_progress(x_velocity, dist)``; ``sample_start_goal(key)``
    may also move the start (the stitching mazes).
    """

    healthy_z_range = (0.2, 1.0)
    healthy_reward = 1.0
    ctrl_cost_weight = 0.5
    reset_noise_scale = 0.1
    _metric_keys = (
        "reward_forward", "reward_survive", "reward_ctrl", "reward_contact", "x_position", "y_position",
        "distance_from_origin", "x_velocity", "y_velocity", "forward_reward",
    )

    def __init__(self, sys: brax_base.System, n_frames: int, backend: str, name: str, eval_task: str, episode_length: int):
        self.pipeline = BraxPhysics(sys=sys, backend=backend, n_frames=n_frames)
        self.spec = TaskSpec(
            name=name,
            state_size=29,
            goal_indices=(0, 1),
            action_size=8,
            success_threshold=0.5,
            episode_length=episode_length,
            eval_task=eval_task,
        )

    def sample_goal(self, key: jax.Array) -> jax.Array:
        raise NotImplementedError

    def sample_start_goal(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The torso's x, y shift from the model's initial pose, and the goal (default: no shift)."""
        return jnp.zeros(2), self.sample_goal(key)

    def _progress(self, x_velocity: jax.Array, dist: jax.Array) -> jax.Array:
        raise NotImplementedError

    def _task_state(self, pipeline_state, goal, reward, done, metrics) -> TaskState:
        state_part = jnp.concatenate([pipeline_state.q, pipeline_state.qd])
        return self._locomotion_state(pipeline_state, state_part, goal, reward, done, metrics)

    def reset(self, key: jax.Array) -> TaskState:
        physics_key, goal_key = jax.random.split(key)
        _, q_key, qd_key = jax.random.split(physics_key, 3)
        noise = self.reset_noise_scale
        q = self.sys.init_q + jax.random.uniform(q_key, (self.sys.q_size(),), minval=-noise, maxval=noise)
        qd = noise * jax.random.normal(qd_key, (self.sys.qd_size(),))
        shift, goal = self.sample_start_goal(goal_key)
        q = q.at[:2].add(shift)
        zero = jnp.zeros(())
        metrics = {k: zero for k in self._metric_keys}
        return self._task_state(self.pipeline.pipeline_init(q, qd), goal, zero, zero, metrics)

    def step(self, state: TaskState, action: jax.Array) -> TaskState:
        before = state.sim
        after = self.pipeline.pipeline_step(before, action)
        velocity = (after.x.pos[0] - before.x.pos[0]) / self.pipeline.dt
        z = after.x.pos[0, 2]
        low, high = self.healthy_z_range
        healthy = jnp.where((z < low) | (z > high), 0.0, 1.0)
        ctrl_cost = self.ctrl_cost_weight * jnp.sum(jnp.square(action))
        dist = jnp.linalg.norm(after.q[:2] - state.goal)
        progress = self._progress(velocity[0], dist)
        reward = progress + self.healthy_reward - ctrl_cost - 0.0  # no contact cost (docs/tasks.md#ant)
        metrics = {
            "reward_forward": progress,
            "reward_survive": jnp.asarray(self.healthy_reward),
            "reward_ctrl": -ctrl_cost,
            "reward_contact": jnp.zeros(()),
            "x_position": after.x.pos[0, 0],
            "y_position": after.x.pos[0, 1],
            "distance_from_origin": brax_math.safe_norm(after.x.pos[0]),
            "x_velocity": velocity[0],
            "y_velocity": velocity[1],
            "forward_reward": velocity[0],
        }
        return self._task_state(after, state.goal, reward, 1.0 - healthy, metrics)


class AntGoal(AntTask):
    """Brax's ant reaching a goal at radius 10 m in a uniformly random direction (docs/tasks.md#ant).

    State, goal, success and termination: see :class:`AntTask`. Reward: torso x-velocity + 1 − 0.5·Σa².
    Physics: spring backend, 0.005 s × 10 substeps = 0.05 s per step.
    """

    goal_radius = 10.0

    def __init__(self, backend: str = "spring", episode_length: int = 1000, name: str = "ant"):
        sys, n_frames = ant_system(backend)
        super().__init__(sys, n_frames, backend, name, name, episode_length)

    def sample_goal(self, key: jax.Array) -> jax.Array:
        angle = jax.random.uniform(key, (), maxval=2 * jnp.pi)
        return self.goal_radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])

    def _progress(self, x_velocity: jax.Array, dist: jax.Array) -> jax.Array:
        return x_velocity


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


# Goal x, y ranges of the pusher (docs/tasks.md#pusher): "easy" is the paper's default.
PUSHER_GOAL_RANGES = {"easy": ((-0.55, -0.25), (-0.2, 0.2)), "hard": ((-0.65, 0.35), (-0.55, 0.45))}


class PusherGoal(GoalTask):
    """Brax's 7-dof pusher: push the cylinder to the goal (the intended specification, docs/tasks.md#pusher).

    Physics: spring 0.001 s × 50 with gear 20 on all 7 motors (brax's own pusher settings; the paper's
    code crashed at construction). Actions in [-1, 1] map linearly onto the motors' control ranges.
    State (20): joint angles q[0:7], the wrist-flex link's centre of mass (the "tip"), the object's
    centre of mass, joint velocities qd[0:7]; achieved goal = object position (``goal_indices`` 10–12).
    Reset: object slide offsets (U(−0.3, 0), U(−0.2, 0.2)); goal offsets from ``difficulty`` ("easy":
    (U(−0.55, −0.25), U(−0.2, 0.2)); "hard": (U(−0.65, 0.35), U(−0.55, 0.45))); arm velocities U(±0.005).
    Offsets are in q order, as brax and Gymnasium write them: the first moves the body along world y
    (pusher.xml declares the y slide first), from the bodies' common rest point x, y = (0.45, −0.05). Reward (on the pre-step state) −‖obj − goal‖ − 0.1·Σctrl² − 0.5·‖tip − obj‖; success:
    3-D distance < 0.1 m (``success_hard`` < 0.05 m); no termination.

    Two deliberate differences from the old code, both so that the commanded goal is a state the object
    can reach: the goal's height is the object's centre height (the old goal marker sat 4.8 cm lower,
    so a pushed object could never be closer than that), and an object drawn within 0.17 m of the goal is
    moved along the goal→object direction to 0.17 m (the old code scaled the object's position vector,
    which keeps 0.17 m only for a goal at the origin).
    """

    min_start_distance = 0.17

    def __init__(self, backend: str = "spring", episode_length: int = 1000, difficulty: str = "easy", name: str = "pusher"):
        from brax.envs.pusher import Pusher as BraxPusher

        _check_backend(backend)
        if difficulty not in PUSHER_GOAL_RANGES:
            raise ValueError(f"unknown pusher difficulty {difficulty!r}; valid: {', '.join(PUSHER_GOAL_RANGES)}")
        self.brax_env = BraxPusher(backend=backend)
        self.goal_range = PUSHER_GOAL_RANGES[difficulty]
        names = self.brax_env.sys.link_names
        self._tip, self._object, self._goal = (names.index(n) for n in ("r_wrist_flex_link", "object", "goal"))
        ctrl = np.asarray(self.brax_env.sys.actuator.ctrl_range)
        self._ctrl_low, self._ctrl_high = jnp.asarray(ctrl[:, 0]), jnp.asarray(ctrl[:, 1])
        self.spec = TaskSpec(
            name=name,
            state_size=20,
            goal_indices=(10, 11, 12),
            action_size=7,
            success_threshold=0.1,
            episode_length=episode_length,
            eval_task=name,
        )

    def _centres(self, pipeline_state) -> jax.Array:
        inertia = brax_base.Transform.create(pos=self.brax_env.sys.link.inertia.transform.pos)
        return pipeline_state.x.vmap().do(inertia).pos

    def _task_state(self, pipeline_state, goal, reward, ctrl_cost) -> TaskState:
        centres = self._centres(pipeline_state)
        state_part = jnp.concatenate([pipeline_state.q[:7], centres[self._tip], centres[self._object], pipeline_state.qd[:7]])
        dist = jnp.linalg.norm(centres[self._object] - goal)
        return TaskState(
            sim=pipeline_state,
            obs=self.make_obs(state_part, goal),
            goal=goal,
            reward=reward,
            terminated=jnp.zeros((), jnp.bool_),
            metrics={
                **self.success_metrics(dist),
                "success_hard": (dist < 0.05).astype(jnp.float32),
                "reward_ctrl": ctrl_cost,
            },
        )

    def reset(self, key: jax.Array) -> TaskState:
        object_key, goal_key, qd_key = jax.random.split(key, 3)
        env = self.brax_env
        obj = jax.random.uniform(object_key, (2,), minval=jnp.array([-0.3, -0.2]), maxval=jnp.array([0.0, 0.2]))
        (x_low, x_high), (y_low, y_high) = self.goal_range
        goal_xy = jax.random.uniform(goal_key, (2,), minval=jnp.array([x_low, y_low]), maxval=jnp.array([x_high, y_high]))
        offset = obj - goal_xy
        norm = jnp.maximum(jnp.linalg.norm(offset), 1e-6)
        obj = jnp.where(norm < self.min_start_distance, goal_xy + offset * self.min_start_distance / norm, obj)
        # The draws are slide offsets in q order (pusher.xml declares each body's y slide before its x
        # slide), written as brax's and Gymnasium's Pusher write them.
        q = env.sys.init_q.at[-4:].set(jnp.concatenate([obj, goal_xy]))
        qd = jax.random.uniform(qd_key, (env.sys.qd_size(),), minval=-0.005, maxval=0.005).at[-4:].set(0.0)
        pipeline_state = env.pipeline_init(q, qd)
        centres = self._centres(pipeline_state)
        # The goal marker's x, y; the object's centre height (see the class docstring).
        goal = jnp.concatenate([centres[self._goal][:2], centres[self._object][2:]])
        zero = jnp.zeros(())
        return self._task_state(pipeline_state, goal, zero, zero)

    def step(self, state: TaskState, action: jax.Array) -> TaskState:
        ctrl = self._ctrl_low + (action + 1.0) * 0.5 * (self._ctrl_high - self._ctrl_low)
        before = self._centres(state.sim)
        reward_dist = -jnp.linalg.norm(before[self._object] - state.goal)
        reward_near = -jnp.linalg.norm(before[self._object] - before[self._tip])
        ctrl_cost = -jnp.square(ctrl).sum()
        reward = reward_dist + 0.1 * ctrl_cost + 0.5 * reward_near
        return self._task_state(self.brax_env.pipeline_step(state.sim, ctrl), state.goal, reward, ctrl_cost)
