"""The humanoid tasks (docs/tasks.md#humanoid, #humanoid-mazes): Brax's humanoid walking to a goal, in the open or in a maze.

Tasks: ``humanoid`` (goal at radius U(1, 5) m, angle U(0, 2π)), ``humanoid_u_maze``,
``humanoid_big_maze`` and their far-goal ``*_eval`` layouts (``humanoid_big_maze_eval`` has one goal cell
more than the ant's, docs/tasks.md#humanoid-mazes).

Model: brax's shipped ``humanoid.xml``, changed at construction: every body geom gets contype 1 (so it
collides with the floor and the walls, which have conaffinity 1; body–body contacts stay off), the floor
grows to 40 × 40 m (mazes: 100 × 100 m), and the mazes add one static 2 × 2 × 1 m box per wall cell
(cell (i, j) centred at world (2i, 2j)). No target body: the goal lives in the task state, so — unlike
the paper's code, whose 1 kg target body moved 110 state dimensions with the goal — the state part
never depends on the goal.

Physics (spring, the default): the env steps 0.03 s for ``humanoid`` (0.003 s × 10 substeps, the
paper's *effective* step: its 0.0015 s setting was ignored by brax 0.10's spring pipeline) and 0.015 s
for the mazes (0.0015 s × 10). Spring gears are 350 on the 11 leg/abdomen motors and 100 on the 6 arm
motors. Other backends use the XML's 0.003 s × 5 (= 0.015 s) and XML gears; mjx with brax's Newton
settings.

Reset: deterministic (torso at (0, 0, 1.4), mazes: at the R cell's centre; all joints 0; no noise).
Action a ∈ [−1, 1]^17 → ctrl = 0.4·a. Goal: torso x, y, z; commanded goal (tx, ty, 1.25). Success: 3-D
distance < 0.5 m (``success_easy`` < 2 m). Terminates when the torso leaves z ∈ [1.0, 2.0].
Reward: −dist + 5 − 0.1·Σctrl².
"""

from __future__ import annotations

from xml.etree import ElementTree

import jax
import jax.numpy as jnp
from brax import actuator as brax_actuator
from brax import base as brax_base

from rlscale.envs.base import TaskSpec, TaskState
from rlscale.envs.brax_tasks import (
    BraxPhysics,
    PipelineTask,
    _check_backend,
    add_maze_walls,
    brax_asset,
    limit_wall_contact_pairs,
    set_floor_size,
    with_mjx_solver,
)
from rlscale.envs.mazes import HUMANOID_MAZE_SCALE, Maze, maze

SPRING_GEAR = (350.0,) * 11 + (100.0,) * 6  # actuator order: abdomen and legs, then arms
TARGET_HEIGHT = 1.25
WALL_HEIGHT = 1.0
# The largest group of wall-touching geoms of one type: 12 capsules (torso, waists, butt, thighs, shins, arms);
# the spheres (head, feet, hands) are 5.
WALL_GEOMS_PER_TYPE = 12

# Names of the 11 links (feet are fused into the shins), in brax's order.
LINKS = (
    "torso", "lwaist", "pelvis", "right_thigh", "right_shin", "left_thigh", "left_shin",
    "right_upper_arm", "right_lower_arm", "left_upper_arm", "left_lower_arm",
)
STATE_LAYOUT = {  # name: slice of the state part (246 entries)
    "q": slice(0, 24),  # torso position (3), torso quaternion w, x, y, z (4), 17 joint angles
    "qd": slice(24, 47),  # torso linear (3) and angular (3) velocity, 17 joint velocities
    "com_inertia": slice(47, 157),  # per link (11): 3×3 inertia about the body's COM (row-major), mass
    "com_velocity": slice(157, 223),  # per link (11): COM linear velocity × mass / total mass, angular velocity
    "actuator_force": slice(223, 246),  # joint forces of the motors (23 = qd size; 0 on the free joint)
}
STATE_SIZE = 246


def humanoid_xml(layout: Maze | None = None, broad_phase: bool = True) -> str:
    """Brax's humanoid with colliding body geoms, a larger floor and, for a maze, its walls and start.

    ``broad_phase``: test only the geom–wall pairs that can touch (see
    :func:`envs.brax_tasks.limit_wall_contact_pairs`; same physics, several times faster).
    """
    root = ElementTree.fromstring(brax_asset("humanoid.xml").read_text())
    default_geom = root.find("default/geom")
    default_geom.set("contype", "1")
    worldbody = root.find("worldbody")
    if layout is None:
        set_floor_size(worldbody, 40.0)
        return ElementTree.tostring(root, encoding="unicode")
    root.set("model", f"humanoid_{layout.name}")
    set_floor_size(worldbody, 100.0)
    add_maze_walls(worldbody, layout, WALL_HEIGHT)
    if broad_phase:
        limit_wall_contact_pairs(root, WALL_GEOMS_PER_TYPE)
    torso = worldbody.find("body[@name='torso']")
    height = torso.get("pos").split()[2]
    torso.set("pos", f"{layout.start[0]:g} {layout.start[1]:g} {height}")
    return ElementTree.tostring(root, encoding="unicode")


def humanoid_system(backend: str, xml: str, timestep: float) -> tuple[brax_base.System, int]:
    """The system and substeps per env step: spring/positional ``timestep`` × 10 with the spring gears,
    generalized/mjx the XML's 0.003 s × 5 (mjx with brax's Newton settings)."""
    from brax.io import mjcf

    _check_backend(backend)
    sys = mjcf.loads(xml)
    if backend in ("spring", "positional"):
        sys = sys.tree_replace({"opt.timestep": timestep})
        sys = sys.replace(actuator=sys.actuator.replace(gear=jnp.array(SPRING_GEAR)))
        return sys, 10
    if backend == "mjx":
        sys = with_mjx_solver(sys)
    return sys, 5


class Humanoid(PipelineTask):
    """Brax's humanoid reaching a goal (see the module docstring).

    State part (246 = 24 + 23 + 110 + 66 + 23; ``STATE_LAYOUT``): q (24: torso position, torso quaternion,
    17 joint angles in the XML's order abdomen_z, abdomen_y, abdomen_x, right_hip_x/z/y, right_knee,
    left_hip_x/z/y, left_knee, right_shoulder1/2, right_elbow, left_shoulder1/2, left_elbow) | qd (23) |
    com-inertia (11 links × 10) | com-velocity (11 links × 6) | actuator joint forces (23; zero at reset).
    The com blocks are taken about the humanoid's own centre of mass; under spring every link's rotational
    inertia is the identity (brax's spring_inertia_scale = 1). The paper's 268-dim state also held the
    target body's 2 slide positions, 2 slide velocities, its com-inertia (10) and com-velocity (6) rows,
    and 2 actuator-force zeros (268 − 22 = 246). Goal indices (0, 1, 2): torso x, y, z.
    """

    healthy_z_range = (1.0, 2.0)
    healthy_reward = 5.0
    ctrl_cost_weight = 0.1
    forward_reward_weight = 1.25

    def __init__(
        self,
        backend: str = "spring",
        episode_length: int = 1000,
        *,
        name: str = "humanoid",
        eval_task: str | None = None,
        layout: Maze | None = None,
        timestep: float = 0.003,
    ):
        self.maze = layout
        sys, n_frames = humanoid_system(backend, humanoid_xml(layout), timestep)
        self.pipeline = BraxPhysics(sys=sys, backend=backend, n_frames=n_frames)
        self.backend = backend
        self.spec = TaskSpec(
            name=name,
            state_size=STATE_SIZE,
            goal_indices=(0, 1, 2),
            action_size=17,
            success_threshold=0.5,
            episode_length=episode_length,
            eval_task=eval_task or name,
        )
        inertia = sys.link.inertia
        if backend in ("spring", "positional"):  # the inertia the spring pipeline integrates with
            inertia = inertia.replace(
                i=jax.vmap(jnp.diag)(jax.vmap(jnp.diagonal)(inertia.i) ** (1 - sys.spring_inertia_scale)),
                mass=inertia.mass ** (1 - sys.spring_mass_scale),
            )
        self._inertia = inertia
        self._ctrl_low = sys.actuator.ctrl_range[:, 0]
        self._ctrl_high = sys.actuator.ctrl_range[:, 1]
        self._start_cache = None

    def sample_goal_xy(self, key: jax.Array) -> jax.Array:
        radius_key, angle_key = jax.random.split(key)
        radius = jax.random.uniform(radius_key, (), minval=1.0, maxval=5.0)
        angle = jax.random.uniform(angle_key, (), maxval=2 * jnp.pi)
        return radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])

    def _com(self, pipeline_state) -> tuple[jax.Array, brax_base.Transform]:
        """The humanoid's centre of mass and each link's COM frame."""
        com_frames = pipeline_state.x.vmap().do(self._inertia.transform)
        mass = self._inertia.mass
        return (mass[:, None] * com_frames.pos).sum(axis=0) / mass.sum(), com_frames

    def _state_part(self, pipeline_state, ctrl: jax.Array, com=None) -> jax.Array:
        com, com_frames = com or self._com(pipeline_state)
        mass = self._inertia.mass
        about_com = com_frames.replace(pos=com_frames.pos - com).vmap().do(self._inertia)
        com_inertia = jnp.concatenate([about_com.i.reshape(len(LINKS), 9), mass[:, None]], axis=1)
        offsets = brax_base.Transform.create(pos=com_frames.pos - pipeline_state.x.pos)
        link_com_motion = offsets.vmap().do(pipeline_state.xd)
        com_velocity = jnp.concatenate([link_com_motion.vel * mass[:, None] / mass.sum(), link_com_motion.ang], axis=1)
        forces = brax_actuator.to_tau(self.sys, ctrl, pipeline_state.q, pipeline_state.qd)
        return jnp.concatenate(
            [pipeline_state.q, pipeline_state.qd, com_inertia.ravel(), com_velocity.ravel(), forces]
        )

    def _start(self):
        """The start's physics state and state part. Reset is deterministic, so they are computed once,
        eagerly, and enter compiled code as constants: an auto-reset then costs only the goal draw."""
        if self._start_cache is None:
            with jax.ensure_compile_time_eval():
                pipeline_state = self.pipeline.pipeline_init(self.sys.init_q, jnp.zeros(self.sys.qd_size()))
                state_part = self._state_part(pipeline_state, jnp.zeros(self.sys.act_size()))
            self._start_cache = (pipeline_state, state_part)
        return self._start_cache

    def reset(self, key: jax.Array) -> TaskState:
        pipeline_state, state_part = self._start()
        goal = jnp.concatenate([self.sample_goal_xy(key), jnp.array([TARGET_HEIGHT])])
        zero = jnp.zeros(())
        metrics = {
            k: zero
            for k in (
                "forward_reward", "reward_linvel", "reward_quadctrl", "reward_alive", "x_position",
                "y_position", "distance_from_origin", "x_velocity", "y_velocity",
            )
        }
        return self._locomotion_state(pipeline_state, state_part, goal, zero, zero, metrics)

    def step(self, state: TaskState, action: jax.Array) -> TaskState:
        ctrl = self._ctrl_low + (action + 1) * 0.5 * (self._ctrl_high - self._ctrl_low)  # = 0.4·a
        before = state.sim
        after = self.pipeline.pipeline_step(before, ctrl)
        com_before, _ = self._com(before)
        com_after, com_frames = self._com(after)
        velocity = (com_after - com_before) / self.pipeline.dt
        forward_reward = self.forward_reward_weight * velocity[0]
        z = after.x.pos[0, 2]
        low, high = self.healthy_z_range
        healthy = jnp.where((z < low) | (z > high), 0.0, 1.0)
        ctrl_cost = self.ctrl_cost_weight * jnp.sum(jnp.square(ctrl))
        dist = jnp.linalg.norm(after.q[:3] - state.goal)
        reward = -dist + self.healthy_reward - ctrl_cost
        metrics = {
            "forward_reward": forward_reward,
            "reward_linvel": forward_reward,
            "reward_quadctrl": -ctrl_cost,
            "reward_alive": jnp.asarray(self.healthy_reward),
            "x_position": com_after[0],
            "y_position": com_after[1],
            "distance_from_origin": jnp.linalg.norm(com_after),
            "x_velocity": velocity[0],
            "y_velocity": velocity[1],
        }
        state_part = self._state_part(after, ctrl, (com_after, com_frames))
        return self._locomotion_state(after, state_part, state.goal, reward, 1.0 - healthy, metrics)


class HumanoidMaze(Humanoid):
    """Brax's humanoid in a maze of 2 m cells (docs/tasks.md#humanoid-mazes); state, goal, success, reward as
    :class:`Humanoid`. Start: the R cell's centre. Goal: a uniformly chosen G cell's centre at height
    1.25. Physics: spring, 0.0015 s × 10 = 0.015 s per env step."""

    def __init__(
        self,
        layout: str = "u_maze",
        backend: str = "spring",
        episode_length: int = 1000,
        *,
        name: str | None = None,
        eval_task: str | None = None,
        timestep: float = 0.0015,
    ):
        layout_maze = maze(layout, scale=HUMANOID_MAZE_SCALE)
        name = name or f"humanoid_{layout.removeprefix('humanoid_')}"
        super().__init__(backend, episode_length, name=name, eval_task=eval_task, layout=layout_maze, timestep=timestep)
        self._goals = jnp.asarray(layout_maze.goals)

    def sample_goal_xy(self, key: jax.Array) -> jax.Array:
        return self._goals[jax.random.randint(key, (), 0, self._goals.shape[0])]
