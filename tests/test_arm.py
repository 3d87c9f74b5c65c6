"""The arm family on MJX (docs/tasks.md#arm-tasks): model, servos, gripper, cube, distributions, goals, training.

MJX compiles slowly on a CPU, so the physics tests share one compiled, batched push step (module fixture)
and one reach step; model facts are checked on the MuJoCo model without compiling anything.
"""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from rlscale import envs
from rlscale.envs import arm

ARM_TASKS = ["arm_reach", "arm_push_easy", "arm_push_hard", "arm_binpick_easy", "arm_binpick_hard"]
# Constant actions for the servo test: targets inside the joint ranges, gripper well above the table.
SERVO_ACTIONS = np.array([
    [0.0, 0.0, 0.0, 0.0, -1.0],
    [0.5, -0.5, 0.7, -0.3, 1.0],
    [-0.6, -0.3, -0.5, 0.5, -1.0],
    [0.3, 0.2, -0.2, 0.9, 1.0],
])
ZERO_ACTION_LINK7 = (0.0, 0.753, 0.545)  # measured on the paper's arm (docs/tasks.md#arm-actions)


@pytest.fixture(scope="module")
def push():
    task = envs.make("arm_push_easy")
    return task, jax.jit(jax.vmap(task.step))


@pytest.fixture(scope="module")
def servo_run(push):
    """40 steps of the constant SERVO_ACTIONS from four resets: the obs after every step."""
    task, step = push
    state = jax.vmap(task.reset)(jax.random.split(jax.random.PRNGKey(0), len(SERVO_ACTIONS)))
    obs = []
    for _ in range(40):
        state = step(state, jnp.asarray(SERVO_ACTIONS))
        obs.append(np.asarray(state.obs))
    return state, np.array(obs)


# --- the model (no compilation) -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ARM_TASKS)
def test_model_settings_and_explicit_contacts_only(name):
    task = envs.make(name)
    m = task.mj_model
    assert m.opt.timestep == pytest.approx(0.002) and arm.SUBSTEPS == 25
    assert (m.opt.iterations, m.opt.ls_iterations) == (6, 12)
    assert m.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    assert m.opt.solver == mujoco.mjtSolver.mjSOL_NEWTON and m.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
    assert m.opt.impratio == (10 if "binpick" in name else 1)
    assert not m.geom_contype.any() and not m.geom_conaffinity.any()
    pairs = {frozenset((m.geom(int(a)).name, m.geom(int(b)).name)) for a, b in zip(m.pair_geom1, m.pair_geom2)}
    if name == "arm_reach":
        assert pairs == {frozenset(("table", "hand"))}
        assert m.nu == 7 and m.nq == 7  # no fingers, no cube; the goal marker is a mocap body (no qpos)
    else:
        gripper = ("hand", "left_finger", "right_finger")
        expected = {frozenset(("cube", g)) for g in ("table", *gripper)}
        expected |= {frozenset(("table", g)) for g in gripper} | {frozenset(("left_finger", "right_finger"))}
        walls = [m.geom(i).name for i in range(m.ngeom) if m.geom(i).name.startswith("bin")]
        assert len(walls) == (8 if "binpick" in name else 0)
        expected |= {frozenset((w, g)) for w in walls for g in ("cube", *gripper)}
        assert pairs == expected
        assert m.nu == 9 and m.nq == 7 + 2 + 7
        assert m.body("cube").mass[0] == pytest.approx(0.216)
        np.testing.assert_allclose(m.geom("cube").size, 0.03)
    np.testing.assert_allclose(m.pair_friction[:, :2], 1.0)
    assert (m.pair_dim == 3).all()
    # Servo gain equals kp, so a target angle is an equilibrium (up to gravity).
    np.testing.assert_allclose(m.actuator_gainprm[:, 0], -m.actuator_biasprm[:, 1])
    masses = [m.body(f"link{i}").mass[0] for i in range(1, 8)]
    np.testing.assert_allclose(masses, [4.971, 0.647, 3.229, 3.588, 1.226, 1.667, 0.736])
    assert m.nmocap == 1  # the visual goal marker


@pytest.mark.slow
def test_bin_walls_collide_with_the_cube():
    """A cube dropped onto a bin wall rests on top of it (MuJoCo on the CPU, same model)."""
    task = envs.make("arm_binpick_hard")
    m, d = task.mj_model, mujoco.MjData(task.mj_model)
    wall = m.geom("bin1_wall0")  # the wall of bin B at y = 0.6 - 0.19
    d.qpos[task._arm_qpos] = arm.RESET_ARM_Q
    d.qpos[task._cube_qpos : task._cube_qpos + 7] = [*wall.pos[:2], 0.15, 1, 0, 0, 0]
    for _ in range(500):
        mujoco.mj_step(m, d)
    assert d.qpos[task._cube_qpos + 2] == pytest.approx(2 * arm.BIN_WALL_HALF_HEIGHT + 0.03, abs=3e-3)


def test_assets_load_from_the_package_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert arm.ASSET.is_file() and arm.ASSET.is_absolute()
    assert envs.make("arm_binpick_easy").mj_model.nbody > 0


# --- resets (cheap to compile) ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ARM_TASKS)
def test_start_and_goal_distributions(name):
    task = envs.make(name)
    variant = arm.VARIANTS[name]
    states = jax.jit(jax.vmap(task.reset))(jax.random.split(jax.random.PRNGKey(1), 4000))
    goals, obs = np.asarray(states.goal), np.asarray(states.obs)
    centre, spread = np.array(variant.goal_centre), np.array(variant.goal_spread)
    assert np.all(np.abs(goals - centre) <= spread + 1e-6)
    # The draws fill their ranges (uniform): the extremes come close to the bounds.
    np.testing.assert_allclose(goals.min(0), centre - spread, atol=0.02)
    np.testing.assert_allclose(goals.max(0), centre + spread, atol=0.02)
    np.testing.assert_allclose(obs[:, task.spec.state_size :], goals, atol=1e-6)
    state = obs[:, : task.spec.state_size]
    joints = state[:, 3:10] if task.has_cube else state[:, 0:7]
    np.testing.assert_allclose(joints, np.broadcast_to(arm.RESET_ARM_Q, joints.shape), atol=1e-6)
    if name == "arm_reach":
        np.testing.assert_allclose(goals.mean(0), (0.0, 0.5, 0.3), atol=0.02)
        return
    assert np.all(goals[:, 2] == pytest.approx(0.03))
    cube = state[:, 0:3]
    assert np.all(np.abs(cube[:, :2] - variant.cube_centre) <= variant.cube_spread + 1e-6)
    np.testing.assert_allclose(cube[:, :2].min(0), np.array(variant.cube_centre) - variant.cube_spread, atol=0.02)
    np.testing.assert_allclose(cube[:, :2].max(0), np.array(variant.cube_centre) + variant.cube_spread, atol=0.02)
    np.testing.assert_allclose(cube[:, 2], 0.07)
    np.testing.assert_allclose(state[:, 16], 2 * arm.RESET_FINGER_Q, atol=1e-6)  # fingers half open
    np.testing.assert_allclose(state[:, 13:16], 0.0)  # at rest


# --- physics (one compiled push step, one reach step) ----------------------------------------------------


@pytest.mark.slow
def test_servos_reach_the_effective_targets(push, servo_run):
    task, _ = push
    _, obs = servo_run
    targets = np.asarray(jax.vmap(task.ctrl)(jnp.asarray(SERVO_ACTIONS)))[:, :7]
    joints = obs[-1][:, 3:10]
    sag = joints[:, 1] - targets[:, 1]  # j2 holds the arm's weight: it sags ~0.01 rad (docs/tasks.md#arm-actions)
    assert np.all((sag > 0) & (sag < 0.02)), sag
    others = [0, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(joints[:, others], targets[:, others], atol=0.01)
    # The mapping: a0..a3 span the measured effective ranges; j3 = j5 = 0 and j7 = 0.724 are fixed.
    lo = np.asarray(task.ctrl(-jnp.ones(5)))
    hi = np.asarray(task.ctrl(jnp.ones(5)))
    np.testing.assert_allclose(lo[[0, 1, 3, 5]], [0.349, 0.0, -1.755, 1.178], atol=1e-3)
    np.testing.assert_allclose(hi[[0, 1, 3, 5]], [2.793, 1.484, -0.040, 1.876], atol=1e-3)
    np.testing.assert_allclose(lo[[2, 4, 6]], [0.0, 0.0, 0.724], atol=1e-3)
    # Zero action holds link7 where the paper's arm held it.
    np.testing.assert_allclose(obs[-1][0, 10:13], ZERO_ACTION_LINK7, atol=0.01)
    # No contact: the cube lies where it landed.
    np.testing.assert_allclose(obs[-1][:, 0:3], obs[10][:, 0:3], atol=1e-3)


@pytest.mark.slow
def test_gripper_opens_and_closes(servo_run):
    _, obs = servo_run
    closing = SERVO_ACTIONS[:, 4] > 0
    np.testing.assert_allclose(obs[-1][~closing, 16], 0.16, atol=2e-3)
    np.testing.assert_allclose(obs[-1][closing, 16], 0.0, atol=2e-3)


@pytest.mark.slow
def test_cube_falls_onto_the_table_and_rests(servo_run):
    _, obs = servo_run
    assert np.all(obs[0][:, 2] < 0.07)  # it was falling from 0.07
    np.testing.assert_allclose(obs[-1][:, 2], 0.03, atol=2e-3)


@pytest.mark.slow
def test_observation_matches_mujoco_and_success_metrics(push, servo_run):
    """link7 position and velocity are those MuJoCo computes at the state reached; dist/success follow."""
    task, _ = push
    state, _ = servo_run
    m = task.mj_model
    link7 = m.body("link7").id
    for i in range(len(SERVO_ACTIONS)):
        d = task.mujoco_data(jax.tree.map(lambda x: x[i], state))
        np.testing.assert_allclose(d.xpos[m.body("goal_marker").id], np.asarray(state.goal[i]), atol=1e-6)
        vel = np.zeros(6)
        mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_XBODY, link7, vel, 0)
        obs = np.asarray(state.obs[i])
        np.testing.assert_allclose(obs[10:13], d.xpos[link7], atol=1e-5)
        np.testing.assert_allclose(obs[13:16], vel[3:], atol=1e-4)
        fingers = d.xpos[m.body("left_finger").id] - d.xpos[m.body("right_finger").id]
        np.testing.assert_allclose(obs[16], np.linalg.norm(fingers), atol=1e-5)
    dist = np.linalg.norm(np.asarray(state.obs[:, 0:3]) - np.asarray(state.goal), axis=1)
    np.testing.assert_allclose(np.asarray(state.metrics["dist"]), dist, rtol=1e-5)
    for key, threshold in (("success", 0.1), ("success_easy", 0.3), ("success_hard", 0.03)):
        np.testing.assert_array_equal(np.asarray(state.metrics[key]), (dist < threshold).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(state.reward), np.asarray(state.metrics["success"]))
    assert not np.asarray(state.terminated).any()


def test_kinematics_matches_mujoco():
    """The CPU-friendly kinematics pass equals MuJoCo's (random arm, finger and cube poses)."""
    task = envs.make("arm_push_hard")
    m = task.mj_model
    rng = np.random.default_rng(0)
    d = mujoco.MjData(m)
    d.qpos[:] = task._template.qpos
    d.qpos[:9] += rng.uniform(-1, 1, 9) * [1, 1, 1, 1, 1, 1, 1, 0.04, 0.04]
    quat = np.array([0.3, -0.2, 0.5, 0.8]) / np.linalg.norm([0.3, -0.2, 0.5, 0.8])
    d.qpos[task._cube_qpos : task._cube_qpos + 7] = [0.1, 0.5, 0.2, *quat]
    ours = jax.jit(lambda q: arm._kinematics(m, task._template.replace(qpos=q)))(jnp.asarray(d.qpos, jnp.float32))
    mujoco.mj_kinematics(m, d)
    for field in ("qpos", "xpos", "xquat", "xmat", "xipos", "ximat", "xanchor", "xaxis", "geom_xpos", "geom_xmat"):
        ours_field = np.asarray(getattr(ours, field)).reshape(-1)
        np.testing.assert_allclose(ours_field, getattr(d, field).reshape(-1), atol=2e-5, err_msg=field)


@pytest.mark.slow
def test_one_env_step_matches_mujoco_on_the_cpu(push, servo_run):
    """25 MJX substeps of a small move agree with MuJoCo's own stepping (arm and fingers).

    The move is small enough that no servo saturates: with a clamped force MuJoCo's implicitfast drops
    the servo's velocity derivative while MJX keeps it, so large moves differ between the two engines.
    """
    task, step = push
    m = task.mj_model
    state, _ = servo_run
    action = jnp.asarray(SERVO_ACTIONS + [0.01, 0.01, 0.02, 0.01, 0.0])
    after = step(state, action)
    for i in range(len(SERVO_ACTIONS)):
        d = mujoco.MjData(m)
        d.qpos[:], d.qvel[:] = np.asarray(state.sim.qpos[i]), np.asarray(state.sim.qvel[i])
        d.ctrl[:] = np.asarray(task.ctrl(action[i]))
        for _ in range(arm.SUBSTEPS):
            mujoco.mj_step(m, d)
        moved = np.abs(np.asarray(after.sim.qpos[i, :7]) - np.asarray(state.sim.qpos[i, :7])).max()
        assert moved > 5e-3
        np.testing.assert_allclose(np.asarray(after.sim.qpos[i, :9]), d.qpos[:9], atol=5e-4)


@pytest.mark.slow
def test_goal_never_enters_the_state_part(push):
    task, step = push
    one = task.reset(jax.random.PRNGKey(4))
    batch = jax.tree.map(lambda x: jnp.stack([x] * 4), one)
    batch = batch.replace(goal=batch.goal + jnp.arange(4.0)[:, None] * 0.1)
    out = step(batch, jnp.asarray(SERVO_ACTIONS[[1, 1, 1, 1]]))
    n = task.spec.state_size
    state_parts = np.asarray(out.obs[:, :n])
    np.testing.assert_array_equal(state_parts, np.broadcast_to(state_parts[0], state_parts.shape))
    np.testing.assert_allclose(np.asarray(out.obs[:, n:]), np.asarray(batch.goal))


@pytest.mark.slow
def test_reach_holds_link7_and_measures_its_distance():
    task = envs.make("arm_reach")
    assert (task.spec.state_size, task.spec.goal_indices, task.spec.action_size) == (13, (7, 8, 9), 4)
    step = jax.jit(jax.vmap(task.step))
    state = jax.vmap(task.reset)(jax.random.split(jax.random.PRNGKey(5), 2))
    actions = jnp.array([[0.0, 0.0, 0.0, 0.0], [0.5, -0.5, 0.7, -0.3]])
    for _ in range(40):
        state = step(state, actions)
    obs = np.asarray(state.obs)
    np.testing.assert_allclose(obs[0, 7:10], ZERO_ACTION_LINK7, atol=0.01)
    targets = np.asarray(jax.vmap(task.ctrl)(actions))
    np.testing.assert_allclose(obs[:, [0, 2, 3, 4, 5, 6]], targets[:, [0, 2, 3, 4, 5, 6]], atol=0.01)
    np.testing.assert_allclose(obs[:, 10:13], 0.0, atol=1e-3)  # settled
    dist = np.linalg.norm(obs[:, 7:10] - np.asarray(state.goal), axis=1)
    np.testing.assert_allclose(np.asarray(state.metrics["dist"]), dist, rtol=1e-5)
