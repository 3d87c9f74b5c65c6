"""The arm family on MJX: ``arm_reach``, ``arm_push_easy/hard``, ``arm_binpick_easy/hard`` (docs/tasks.md#arm-tasks).

The arm is rlscale's own 7-dof model built from primitive geoms (``envs/assets/arm.xml``), with the
kinematic chain, joint ranges, masses, hand and finger colliders of the paper's arm. It runs on
``mujoco.mjx`` directly (no Brax pipeline): 0.002 s × 25 substeps = 0.05 s per env step, implicitfast
integrator, Newton solver with 6 iterations and 12 line-search iterations, pyramidal cone, impratio 1
(10 for bin picking). Contacts come only from explicit pairs (hand, fingers, cube, table, bin walls),
friction 1.

**Actions** are absolute joint targets. The paper's servos had gain ≠ kp on joints 3–7, so its commands
landed at 0.571× (j4) and 0.5× (j6, j7) of the commanded angle; here the servos have gain = kp and the
actions map directly onto the *measured effective* ranges of the paper's arm: j1 [0.349, 2.793] ← a0,
j2 [0, 1.484] ← a1, j4 [−1.755, −0.040] ← a2, j6 [1.178, 1.876] ← a3, j3 = j5 = 0, j7 = 0.724 fixed.
Push and bin picking have a fifth action, the gripper: a4 > 0 closes both fingers, a4 ≤ 0 opens them
(0.08 m each). Reach has four actions and no fingers.

**Observations** (state ⊕ goal). Push/bin picking, 17 ⊕ 3: [0:3] cube position, [3:10] the 7 joint
angles, [10:13] the link7 frame origin ("eef"; the hand starts 0.107 m further along link7's z, the
finger-box centres ≈ 0.20 m, the tips ≈ 0.24 m), [13:16] that origin's linear velocity (world frame),
[16] the distance between the two finger bodies (0.16 open, 0 closed); goal = cube x, y, z
(``goal_indices = (0, 1, 2)``). Reach, 13 ⊕ 3: [0:7] joint angles, [7:10] link7 origin, [10:13] its
velocity; goal = link7 origin (``goal_indices = (7, 8, 9)``). Everything is computed at the state reached
after the step (the paper's Brax pipeline reported body positions one 2 ms substep late). The goal lives
in the task state; the goal marker is a mocap body (no degrees of freedom, no contacts) that only
renders it (:meth:`ArmTask.mujoco_data` places it), so nothing in the state part depends on the goal.

**Start and goal** (fresh every episode). The arm starts at the paper's deterministic posture
[1.571, 0.742, 0, −1.571, 0, 3.054, 1.449], fingers 0.04 each, at rest; it is not an equilibrium, so the
servos move it during the first steps. The cube starts at the variant's centre ± its spread on x and y,
at z 0.07 (it drops 4 cm onto the table), upright. The goal is on the table (z 0.03) at the variant's
goal centre ± spread; for reach it is (0, 0.5, 0.3) ± 0.2 on x, y and z.

**Success**: 3-D distance between the achieved goal and the goal < 0.1 m (``success_easy`` < 0.3,
``success_hard`` < 0.03); reward = success. No termination.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct

from rlscale.envs.base import GoalTask, TaskSpec, TaskState

with contextlib.redirect_stdout(io.StringIO()):  # mjx prints a notice when the optional warp backend is absent
    from mujoco import mjx

ASSET = Path(__file__).parent / "assets" / "arm.xml"

SUBSTEPS = 25  # 0.002 s × 25 = 0.05 s per env step

# The paper's reset posture (docs/tasks.md#arm-variants) and its fingers half open.
RESET_ARM_Q = (1.571, 0.742, 0.0, -1.571, 0.0, 3.054, 1.449)
RESET_FINGER_Q = 0.04
FINGER_OPEN = 0.08

# Effective target ranges of the paper's arm: its commanded ranges times gain/kp (1 for j1, j2; 2000/3500
# for j4; 1000/2000 for j6, j7): j4 [-1.755, -0.040], j6 [1.178, 1.876], j7 0.724 rounded
# (docs/tasks.md#arm-actions).
J1_RANGE = (0.3491, 2.7925)
J2_RANGE = (0.0, 1.48353)
J4_RANGE = (-3.0718 * 2000 / 3500, -0.0698 * 2000 / 3500)
J6_RANGE = (2.3562 * 0.5, 3.7525 * 0.5)
J7_TARGET = 1.4487 * 0.5
ACTION_RANGES = np.array([J1_RANGE, J2_RANGE, J4_RANGE, J6_RANGE])  # rows a0..a3
ACTION_JOINTS = (0, 1, 3, 5)  # joints (0-based) driven by a0..a3


@dataclasses.dataclass(frozen=True)
class ArmVariant:
    kind: str  # "reach" | "push" | "binpick"
    goal_centre: tuple[float, float, float]
    goal_spread: tuple[float, float, float]
    cube_centre: tuple[float, float] = (0.0, 0.0)
    cube_spread: float = 0.0
    plates: tuple[tuple[float, float, float, str], ...] = ()  # visual regions: (x, y, half size, rgba)
    bins: tuple[float, float] = ()  # bin centres' x (both at y = 0.6), bin picking only
    bin_half: float = 0.0  # distance from the bin centre to its walls' centre lines


BLUE, RED = "0.2 0.3 0.9 0.5", "0.9 0.2 0.2 0.5"

VARIANTS: dict[str, ArmVariant] = {
    "arm_reach": ArmVariant("reach", (0.0, 0.5, 0.3), (0.2, 0.2, 0.2), plates=((0.0, 0.5, 0.2, BLUE),)),
    "arm_push_easy": ArmVariant(
        "push", (0.1, 0.6, 0.03), (0.1, 0.1, 0.0), (-0.1, 0.6), 0.1,
        plates=((-0.1, 0.6, 0.1, BLUE), (0.1, 0.6, 0.1, RED)),
    ),
    "arm_push_hard": ArmVariant(
        "push", (0.25, 0.65, 0.03), (0.25, 0.25, 0.0), (-0.25, 0.65), 0.25,
        plates=((-0.25, 0.65, 0.25, BLUE), (0.25, 0.65, 0.25, RED)),
    ),
    "arm_binpick_easy": ArmVariant(
        "binpick", (0.17, 0.6, 0.03), (0.09, 0.09, 0.0), (-0.15, 0.6), 0.09, bins=(-0.17, 0.17), bin_half=0.14
    ),
    "arm_binpick_hard": ArmVariant(
        "binpick", (0.3, 0.6, 0.03), (0.15, 0.15, 0.0), (-0.3, 0.6), 0.15, bins=(-0.3, 0.3), bin_half=0.19
    ),
}

_PAIR = {"condim": "3", "friction": "1 1 0.005 0.0001 0.0001"}
BIN_WALL_HALF_HEIGHT = 0.033
BIN_WALL_HALF_THICKNESS = 0.005


def _fmt(*values: float) -> str:
    return " ".join(f"{v:.6g}" for v in values)


def scene_xml(variant: ArmVariant) -> str:
    """The MJCF of a variant: ``arm.xml`` (the push scene) with the variant's changes."""
    root = ET.parse(ASSET).getroot()
    world = root.find("worldbody")
    contact = root.find("contact")
    for x, y, half, rgba in variant.plates:  # visual only, 1 mm thick
        ET.SubElement(world, "geom", type="box", pos=_fmt(x, y, 0.0005), size=_fmt(half, half, 0.0005), rgba=rgba)
    if variant.kind == "reach":
        hand = root.find(".//body[@name='hand']")
        for finger in hand.findall("body"):
            hand.remove(finger)
        world.remove(world.find("body[@name='cube']"))
        root.remove(root.find("equality"))
        for pair in list(contact):
            if pair.get("name") != "table_hand":
                contact.remove(pair)
        actuators = root.find("actuator")
        for act in list(actuators):
            if act.get("name").startswith("finger"):
                actuators.remove(act)
        marker = root.find(".//geom[@name='goal_marker']")
        marker.set("type", "sphere")
        marker.set("size", "0.03")
    if variant.kind == "binpick":
        root.find("option").set("impratio", "10")
        h = variant.bin_half
        for b, cx in enumerate(variant.bins):
            cy = 0.6
            walls = [  # (x, y, half extents along x, y)
                (cx, cy - h, h + BIN_WALL_HALF_THICKNESS, BIN_WALL_HALF_THICKNESS),
                (cx, cy + h, h + BIN_WALL_HALF_THICKNESS, BIN_WALL_HALF_THICKNESS),
                (cx - h, cy, BIN_WALL_HALF_THICKNESS, h - BIN_WALL_HALF_THICKNESS),
                (cx + h, cy, BIN_WALL_HALF_THICKNESS, h - BIN_WALL_HALF_THICKNESS),
            ]
            for w, (x, y, hx, hy) in enumerate(walls):
                name = f"bin{b}_wall{w}"
                ET.SubElement(
                    world, "geom", name=name, type="box", pos=_fmt(x, y, BIN_WALL_HALF_HEIGHT),
                    size=_fmt(hx, hy, BIN_WALL_HALF_HEIGHT), rgba="0.6 0.6 0.65 1",
                )
                for other in ("cube", "left_finger", "right_finger", "hand"):
                    ET.SubElement(contact, "pair", name=f"{other}_{name}", geom1=name, geom2=other, **_PAIR)
    return ET.tostring(root, encoding="unicode")


# --- MJX step with a CPU-friendly kinematics pass ---------------------------------------------------
# mjx.kinematics (MJX 3.17 on jax 0.10) is pathological on the CPU: XLA's CPU fusion emitters recompute
# the body chain for every output element, so kinematics took ~95 % of a substep (10 ms of 11 ms for one
# env, 150 ms for four batched envs; XLA_FLAGS=--xla_cpu_use_fusion_emitters=false avoids it too).
# ``_kinematics`` computes the same quantities body by body, quaternion algebra as small dot products and
# an optimisation barrier after each body; ``_step`` is mjx.step (forward dynamics, then the implicitfast
# integrator) around it. One substep then takes ~0.9 ms for one env, the results equal MJX's.


W, X, Y, Z = range(4)
# Quaternion product as a constant bilinear form, (u v)_i = Σ_jk QUAT_MUL[i, j, k] u_j v_k, and the rotation
# matrix of a unit quaternion as a constant quadratic form, R_ab = Σ_kl QUAT_MAT[a, b, k, l] q_k q_l: a few
# dot products compile and run faster on the CPU than the same algebra written out element by element.
QUAT_MUL = np.zeros((4, 4, 4), np.float32)
for _i, _terms in enumerate([
    [(W, W, 1), (X, X, -1), (Y, Y, -1), (Z, Z, -1)],
    [(W, X, 1), (X, W, 1), (Y, Z, 1), (Z, Y, -1)],
    [(W, Y, 1), (X, Z, -1), (Y, W, 1), (Z, X, 1)],
    [(W, Z, 1), (X, Y, 1), (Y, X, -1), (Z, W, 1)],
]):
    for _j, _k, _sign in _terms:
        QUAT_MUL[_i, _j, _k] = _sign
QUAT_MAT = np.zeros((3, 3, 4, 4), np.float32)
for (_a, _b), _terms in {
    (0, 0): [(W, W, 1), (X, X, 1), (Y, Y, -1), (Z, Z, -1)],
    (0, 1): [(X, Y, 2), (W, Z, -2)],
    (0, 2): [(X, Z, 2), (W, Y, 2)],
    (1, 0): [(X, Y, 2), (W, Z, 2)],
    (1, 1): [(W, W, 1), (X, X, -1), (Y, Y, 1), (Z, Z, -1)],
    (1, 2): [(Y, Z, 2), (W, X, -2)],
    (2, 0): [(X, Z, 2), (W, Y, -2)],
    (2, 1): [(Y, Z, 2), (W, X, 2)],
    (2, 2): [(W, W, 1), (X, X, -1), (Y, Y, -1), (Z, Z, 1)],
}.items():
    for _k, _l, _sign in _terms:
        QUAT_MAT[_a, _b, _k, _l] = _sign


def _quat_mul(u: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.einsum("ijk,...j,...k->...i", QUAT_MUL, u, v)


def _quat_to_mat(q: jax.Array) -> jax.Array:
    return jnp.einsum("abkl,...k,...l->...ab", QUAT_MAT, q, q)


def _rotate(vec: jax.Array, quat: jax.Array) -> jax.Array:
    return jnp.einsum("...ab,...b->...a", _quat_to_mat(quat), vec)


def _normalize(x: jax.Array) -> jax.Array:
    n = jnp.linalg.norm(x)
    return x / (n + 1e-6 * (n == 0.0))


def _local_to_global(pos, quat, local_pos, local_quat):
    return pos + _rotate(local_pos, quat), _quat_to_mat(_quat_mul(quat, local_quat))


def _kinematics(m: mujoco.MjModel, d: mjx.Data) -> mjx.Data:
    """What mjx.kinematics computes (body, joint, geom and site frames; normalised free-joint
    quaternions), for trees of hinge, slide and free joints and mocap bodies."""
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    qpos = d.qpos
    xpos, xquat = [jnp.zeros(3)], [jnp.array([1.0, 0.0, 0.0, 0.0])]
    anchors, axes = [None] * m.njnt, [None] * m.njnt
    for b in range(1, m.nbody):
        parent = m.body_parentid[b]
        if m.body_mocapid[b] >= 0:
            pos, quat = d.mocap_pos[m.body_mocapid[b]], _normalize(d.mocap_quat[m.body_mocapid[b]])
        else:
            pos = xpos[parent] + _rotate(f32(m.body_pos[b]), xquat[parent])
            quat = _quat_mul(xquat[parent], f32(m.body_quat[b]))
        for j in range(m.body_jntadr[b], m.body_jntadr[b] + m.body_jntnum[b]):
            a, typ = m.jnt_qposadr[j], m.jnt_type[j]
            if typ == mujoco.mjtJoint.mjJNT_FREE:
                pos, quat = qpos[a : a + 3], _normalize(qpos[a + 3 : a + 7])
                qpos = qpos.at[a + 3 : a + 7].set(quat)
                anchors[j], axes[j] = pos, jnp.array([0.0, 0.0, 1.0])
                continue
            anchor = _rotate(f32(m.jnt_pos[j]), quat) + pos
            axis = _rotate(f32(m.jnt_axis[j]), quat)
            anchors[j], axes[j] = anchor, axis
            if typ == mujoco.mjtJoint.mjJNT_HINGE:
                half = 0.5 * (qpos[a] - m.qpos0[a])
                local = jnp.concatenate([jnp.cos(half)[None], f32(m.jnt_axis[j]) * jnp.sin(half)])
                quat = _quat_mul(quat, local)
                pos = anchor - _rotate(f32(m.jnt_pos[j]), quat)
            elif typ == mujoco.mjtJoint.mjJNT_SLIDE:
                pos = pos + axis * (qpos[a] - m.qpos0[a])
            else:
                raise NotImplementedError("ball joints are not used by the arm")
        pos, quat = jax.lax.optimization_barrier((pos, quat))
        xpos.append(pos)
        xquat.append(quat)
    xpos, xquat = jnp.stack(xpos), jnp.stack(xquat)
    xipos, ximat = _local_to_global(xpos, xquat, f32(m.body_ipos), f32(m.body_iquat))
    d = d.replace(
        qpos=qpos,
        xanchor=jnp.stack(anchors) if m.njnt else jnp.zeros((0, 3)),
        xaxis=jnp.stack(axes) if m.njnt else jnp.zeros((0, 3)),
        xpos=xpos,
        xquat=xquat,
        xmat=_quat_to_mat(xquat),
        xipos=xipos,
        ximat=ximat,
    )
    if m.ngeom:
        g = m.geom_bodyid
        geom_xpos, geom_xmat = _local_to_global(xpos[g], xquat[g], f32(m.geom_pos), f32(m.geom_quat))
        d = d.replace(geom_xpos=geom_xpos, geom_xmat=geom_xmat)
    if m.nsite:
        s = m.site_bodyid
        site_xpos, site_xmat = _local_to_global(xpos[s], xquat[s], f32(m.site_pos), f32(m.site_quat))
        d = d.replace(site_xpos=site_xpos, site_xmat=site_xmat)
    return d


def _forward(m: mujoco.MjModel, mx: mjx.Model, d: mjx.Data) -> mjx.Data:
    """mjx.forward with :func:`_kinematics` (the arm has no tendons, sensors or cameras to update)."""
    d = _kinematics(m, d)
    for fn in (mjx.com_pos, mjx.camlight, mjx.tendon, mjx.crb, mjx.tendon_armature, mjx.factor_m, mjx.collision,
               mjx.make_constraint, mjx.transmission, mjx.fwd_velocity, mjx.fwd_actuation, mjx.fwd_acceleration):
        d = fn(mx, d)
    # mjx.forward skips the solver when there are no constraint rows, a test on the private
    # ``Data._impl``; the arm always has rows (7-9 joint limits, 1-40 contact pairs), and mjx.solve on
    # none returns qacc_smooth anyway.
    return mjx.solve(mx, d)


def _step(m: mujoco.MjModel, mx: mjx.Model, d: mjx.Data) -> mjx.Data:
    """mjx.step for the arm's implicitfast integrator."""
    return mjx.implicit(mx, _forward(m, mx, d))


@struct.dataclass
class ArmSim:
    """The physics state kept between env steps; everything else MJX recomputes each substep."""

    qpos: jax.Array
    qvel: jax.Array
    qacc_warmstart: jax.Array


class ArmTask(GoalTask):
    """One arm task (see the module docstring). ``name`` is one of :data:`VARIANTS`."""

    def __init__(self, name: str = "arm_push_easy", episode_length: int = 1000):
        if name not in VARIANTS:
            raise ValueError(f"unknown arm task {name!r}; valid: {', '.join(VARIANTS)}")
        self.variant = variant = VARIANTS[name]
        self.has_cube = variant.kind != "reach"
        self.mj_model = mujoco.MjModel.from_xml_string(scene_xml(variant))
        self.mjx_model = mjx.put_model(self.mj_model)
        m = self.mj_model
        self._arm_qpos = np.array([m.joint(f"joint{i}").qposadr[0] for i in range(1, 8)])
        self._link7 = m.body("link7").id
        self._arm_joints = np.array([m.joint(f"joint{i}").id for i in range(1, 8)])
        self._arm_dofs = np.array([m.joint(f"joint{i}").dofadr[0] for i in range(1, 8)])
        if self.has_cube:
            self._finger_qpos = np.array([m.joint(f"finger_joint{i}").qposadr[0] for i in (1, 2)])
            self._cube_qpos = int(m.joint("cube").qposadr[0])
        # The data at the reset posture (arm at rest, cube in the air): MJX recomputes every derived
        # quantity at each substep, so only qpos, qvel, the warm start and the mocap marker vary.
        d = mujoco.MjData(m)
        d.qpos[self._arm_qpos] = RESET_ARM_Q
        if self.has_cube:
            d.qpos[self._finger_qpos] = RESET_FINGER_Q
        mujoco.mj_forward(m, d)
        self._template = mjx.put_data(m, d)
        self._reset_qpos = jnp.asarray(d.qpos, jnp.float32)
        self._reset_link7 = jnp.asarray(d.xpos[self._link7], jnp.float32)
        self._action_mid = jnp.asarray(ACTION_RANGES.mean(axis=1), jnp.float32)
        self._action_half = jnp.asarray((ACTION_RANGES[:, 1] - ACTION_RANGES[:, 0]) / 2, jnp.float32)
        self.spec = TaskSpec(
            name=name,
            state_size=17 if self.has_cube else 13,
            goal_indices=(0, 1, 2) if self.has_cube else (7, 8, 9),
            action_size=5 if self.has_cube else 4,
            success_threshold=0.1,
            episode_length=episode_length,
            eval_task=name,
        )

    # --- actions --------------------------------------------------------------------------------------
    def ctrl(self, action: jax.Array) -> jax.Array:
        """Actuator targets for an action: 7 joint angles (+ 2 finger openings)."""
        a = jnp.clip(action, -1.0, 1.0)
        driven = self._action_mid + a[:4] * self._action_half
        arm = jnp.zeros(7).at[jnp.asarray(ACTION_JOINTS)].set(driven).at[6].set(J7_TARGET)
        if not self.has_cube:
            return arm
        finger = jnp.where(a[4] > 0, 0.0, FINGER_OPEN)
        return jnp.concatenate([arm, jnp.stack([finger, finger])])

    # --- observations ---------------------------------------------------------------------------------
    def _state_part(self, qpos: jax.Array, link7_pos: jax.Array, link7_vel: jax.Array) -> jax.Array:
        joints = qpos[self._arm_qpos]
        if not self.has_cube:
            return jnp.concatenate([joints, link7_pos, link7_vel])
        cube = qpos[self._cube_qpos : self._cube_qpos + 3]
        finger_dist = qpos[self._finger_qpos].sum(keepdims=True)  # = distance between the finger bodies
        return jnp.concatenate([cube, joints, link7_pos, link7_vel, finger_dist])

    def _link7_velocity(self, data: mjx.Data) -> jax.Array:
        """Linear velocity of link7's frame origin: the sum over joints 1–7 of axis × (origin − anchor) · q̇."""
        arm = self._arm_joints
        lever = data.xpos[self._link7] - data.xanchor[arm]
        return (jnp.cross(data.xaxis[arm], lever) * data.qvel[self._arm_dofs, None]).sum(axis=0)

    def _task_state(self, sim: ArmSim, state_part: jax.Array, goal: jax.Array) -> TaskState:
        achieved = self.goal_of(state_part)
        dist = jnp.linalg.norm(achieved - goal)
        metrics = {
            **self.success_metrics(dist),
            "success_easy": (dist < 0.3).astype(jnp.float32),
            "success_hard": (dist < 0.03).astype(jnp.float32),
        }
        return TaskState(
            sim=sim,
            obs=self.make_obs(state_part, goal),
            goal=goal,
            reward=metrics["success"],
            terminated=jnp.zeros((), jnp.bool_),
            metrics=metrics,
        )

    # --- reset and step -------------------------------------------------------------------------------
    def reset(self, key: jax.Array) -> TaskState:
        cube_key, goal_key = jax.random.split(key)
        v = self.variant
        goal = jnp.asarray(v.goal_centre) + jnp.asarray(v.goal_spread) * jax.random.uniform(
            goal_key, (3,), minval=-1.0, maxval=1.0
        )
        qpos = self._reset_qpos
        if self.has_cube:
            cube_xy = jnp.asarray(v.cube_centre) + v.cube_spread * jax.random.uniform(
                cube_key, (2,), minval=-1.0, maxval=1.0
            )
            cube = jnp.concatenate([cube_xy, jnp.array([0.07, 1.0, 0.0, 0.0, 0.0])])
            qpos = jax.lax.dynamic_update_slice(qpos, cube, (self._cube_qpos,))
        sim = ArmSim(qpos=qpos, qvel=jnp.zeros(self.mj_model.nv), qacc_warmstart=jnp.zeros(self.mj_model.nv))
        # The arm starts at rest at a fixed posture, so its link7 position at reset is a constant.
        state_part = self._state_part(qpos, self._reset_link7, jnp.zeros(3))
        return self._task_state(sim, state_part, goal)

    def physics(self, sim: ArmSim, ctrl: jax.Array) -> mjx.Data:
        """Run one env step (25 substeps) of MJX from ``sim`` with ``ctrl``; the data after the step."""
        data = self._template.replace(qpos=sim.qpos, qvel=sim.qvel, qacc_warmstart=sim.qacc_warmstart, ctrl=ctrl)
        m, mx = self.mj_model, self.mjx_model
        data = jax.lax.fori_loop(0, SUBSTEPS, lambda _, d: _step(m, mx, d), data)
        # Frames at the state reached (a step leaves them one substep behind).
        return _kinematics(m, data)

    def step(self, state: TaskState, action: jax.Array) -> TaskState:
        data = self.physics(state.sim, self.ctrl(action))
        sim = ArmSim(qpos=data.qpos, qvel=data.qvel, qacc_warmstart=data.qacc_warmstart)
        state_part = self._state_part(data.qpos, data.xpos[self._link7], self._link7_velocity(data))
        return self._task_state(sim, state_part, state.goal)

    def mujoco_data(self, state: TaskState) -> mujoco.MjData:
        """One env's state as MuJoCo data on the CPU (to render or inspect it), goal marker at the goal."""
        d = mujoco.MjData(self.mj_model)
        d.qpos[:], d.qvel[:] = np.asarray(state.sim.qpos), np.asarray(state.sim.qvel)
        d.mocap_pos[0] = np.asarray(state.goal)
        mujoco.mj_forward(self.mj_model, d)
        return d
