import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlscale import envs
from rlscale.envs.mazes import LAYOUTS, maze
from rlscale.envs.wrappers import EpisodeEnv

POINT_TASKS = [n for n in envs.names() if n.startswith("point_")]
EXPECTED = {  # name: (obs size, goal indices, success threshold)
    **{n: (6, (0, 1), 0.5) for n in POINT_TASKS},
    "ant": (31, (0, 1), 0.5),
    "reacher": (13, (4, 5, 6), 0.05),
    "pusher": (23, (10, 11, 12), 0.1),
    # --- ant mazes and humanoids (docs/tasks.md#ant-mazes, #humanoid; humanoid state 246 = the paper's 268 without the target) ---
    **{
        f"ant_{layout}": (31, (0, 1), 0.5)
        for layout in ("u_maze", "big_maze", "hardest_maze", "u4_maze", "u5_maze")
        + ("u_maze_eval", "big_maze_eval", "u4_maze_eval", "u5_maze_eval", "u_maze_stitch", "u_maze_stitch_eval")
    },
    **{
        n: (249, (0, 1, 2), 0.5)
        for n in ("humanoid", "humanoid_u_maze", "humanoid_u_maze_eval", "humanoid_big_maze", "humanoid_big_maze_eval")
    },
    # --- end of ant mazes and humanoids ---
    # --- the arm family (docs/tasks.md#arm-tasks) ---
    "arm_reach": (16, (7, 8, 9), 0.1),
    **{n: (20, (0, 1, 2), 0.1) for n in ("arm_push_easy", "arm_push_hard", "arm_binpick_easy", "arm_binpick_hard")},
    # --- end of the arm family ---
}


def test_registry_names_and_unknown_task():
    assert set(EXPECTED) == set(envs.names())
    with pytest.raises(ValueError, match="unknown task 'point_v_maze'; valid tasks: .*point_u_maze"):
        envs.make("point_v_maze")
    with pytest.raises(ValueError, match="bad override for task 'point_u_maze'"):
        envs.make("point_u_maze", colour="red")


# The ant stitching twins differ from ant_u_maze only in their sampler (the point twins' sampler, tested in
# CI): their Brax compiles are in the long tier.
@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.long) if n.startswith("ant_") and "_stitch" in n else n
                                  for n in envs.names()])
def test_every_task_resets_and_steps_batched(name):
    task = envs.make(name, episode_length=20)
    obs_size, goal_indices, threshold = EXPECTED[name]
    spec = task.spec
    assert (spec.obs_size, spec.goal_indices, spec.success_threshold) == (obs_size, goal_indices, threshold)
    env = EpisodeEnv(task)
    num_envs = 4
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), num_envs))
    step = jax.jit(env.step_batch)  # the training collector's step
    key = jax.random.PRNGKey(1)
    traj_ids, dones = [], []
    for _ in range(50):
        key, k = jax.random.split(key)
        action = jax.random.uniform(k, (num_envs, spec.action_size), minval=-1, maxval=1)
        before = state
        state, info = step(state, action)
        assert state.task.obs.shape == (num_envs, obs_size)
        assert np.all(np.isfinite(state.task.obs))
        # success is computed with the task's threshold from the achieved goal.
        dist = np.asarray(info.metrics["dist"])
        np.testing.assert_array_equal(np.asarray(info.metrics["success"]), (dist < threshold).astype(np.float32))
        traj_ids.append(np.asarray(before.traj_id))
        dones.append(np.asarray(info.done))
    traj_ids, dones = np.array(traj_ids), np.array(dones)
    # The trajectory id increments exactly at resets.
    np.testing.assert_array_equal(np.diff(traj_ids, axis=0), dones[:-1].astype(int))
    assert dones.sum() >= 2 * num_envs  # 20-step episodes: at least two resets per env in 50 steps


@pytest.mark.parametrize("name", POINT_TASKS)
def test_point_dist_matches_observation(name):
    task = envs.make(name)
    state = task.reset(jax.random.PRNGKey(3))
    state = task.step(state, jnp.array([0.3, -0.7]))
    expected = np.linalg.norm(state.obs[:2] - state.obs[4:6])
    np.testing.assert_allclose(state.metrics["dist"], expected, rtol=1e-6)


@pytest.mark.parametrize("name", [n for n in POINT_TASKS if "_stitch" not in n])  # stitching: tests/test_stitching.py
def test_maze_goals_are_goal_cell_centres_and_start_in_reset_cell(name):
    task = envs.make(name)
    layout = task.maze
    states = jax.vmap(task.reset)(jax.random.split(jax.random.PRNGKey(0), 400))
    goals = np.asarray(states.goal)
    cells = {tuple(c) for c in layout.goals.tolist()}
    assert {tuple(g) for g in goals.tolist()} == cells  # every goal a G-cell centre, all of them drawn
    assert np.all(np.abs(states.obs[:, :2] - layout.start) <= 0.1 + 1e-6)


EVAL_GOALS = {  # docs/tasks.md#ant-mazes, world coordinates of the far cells
    "point_u4_maze_eval": {(16, 4), (20, 4), (20, 8), (20, 12)},
    "point_u5_maze_eval": {(16, 4), (16, 24)} | {(20, y) for y in range(4, 25, 4)},
    "point_big_maze_eval": {(4, 20), (4, 24), (8, 24), (20, 12), (20, 24), (24, 8), (24, 12), (24, 20), (24, 24)},
    "point_u_maze_eval": {(12, 4), (12, 8), (12, 12)},
}


@pytest.mark.parametrize("name", sorted(EVAL_GOALS))
def test_eval_layouts_hold_only_far_cells_and_same_walls(name):
    eval_maze = envs.make(name).maze
    assert {tuple(g) for g in eval_maze.goals.astype(int).tolist()} == EVAL_GOALS[name]
    train_maze = maze(name.removeprefix("point_").removesuffix("_eval"))
    np.testing.assert_array_equal(eval_maze.walls, train_maze.walls)
    assert envs.make(name.removesuffix("_eval")).spec.eval_task == name


def test_layout_goal_counts():
    counts = {"u_maze": 6, "big_maze": 25, "hardest_maze": 45, "u4_maze": 10, "u5_maze": 16}
    for layout, n in counts.items():
        assert len(maze(layout).goals) == n, layout
    assert set(counts) < set(LAYOUTS)


def test_point_driven_at_a_wall_does_not_pass_it():
    task = envs.make("point_u_maze")
    state = task.reset(jax.random.PRNGKey(0))  # start (4, 4); wall row 0 spans x < 2
    step = jax.jit(task.step)
    for _ in range(30):
        state = step(state, jnp.array([-1.0, 0.0]))
    sub_move = task.max_step / task.substeps  # the point stops within one sub-move of the wall face
    assert 2.0 + task.radius - 1e-5 <= float(state.obs[0]) <= 2.0 + task.radius + sub_move + 1e-5
    # Along the corridor it moves freely.
    for _ in range(5):
        state = step(state, jnp.array([0.0, 1.0]))
    assert float(state.obs[1]) > 8.0
    # Cell (2, 1) below the start is a wall: pushing +x from the start cell stops at its face (x = 6).
    state = task.reset(jax.random.PRNGKey(0))
    for _ in range(30):
        state = step(state, jnp.array([1.0, 0.0]))
    assert 6.0 - task.radius - sub_move - 1e-5 <= float(state.obs[0]) <= 6.0 - task.radius + 1e-5


def test_fresh_goals_each_episode_and_paper_flag():
    task = envs.make("point_big_maze", episode_length=3)

    def goals_seen(fixed):
        env = EpisodeEnv(task, fixed_goals_per_env=fixed)
        state = env.reset(jax.random.PRNGKey(0))
        step = jax.jit(env.step)
        seen = set()
        for _ in range(60):
            seen.add(tuple(np.asarray(state.task.goal).tolist()))
            state, _ = step(state, jnp.zeros(2))
        return seen

    assert len(goals_seen(False)) > 1
    assert len(goals_seen(True)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("fixed_goals", [False, True])
def test_batch_step_equals_vmapped_single_env_step(fixed_goals):
    # step_batch resets only on steps where some env is done; the result must be the per-env step's exactly,
    # also when envs end their episodes at different steps.
    task = envs.make("point_u_maze")
    env = EpisodeEnv(task, episode_length=4, fixed_goals_per_env=fixed_goals)
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 3))
    state = state.replace(steps=jnp.array([0, 1, 3], jnp.int32))  # staggered episode ends
    batched, per_env = state, state
    step_batch, step_vmapped = jax.jit(env.step_batch), jax.jit(jax.vmap(env.step))
    dones = []
    for t in range(10):
        action = jax.random.uniform(jax.random.PRNGKey(t), (3, 2), minval=-1, maxval=1)
        batched, info_b = step_batch(batched, action)
        per_env, info_v = step_vmapped(per_env, action)
        for a, b in zip(jax.tree.leaves(info_b), jax.tree.leaves(info_v), strict=True):  # pre-reset next states included
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        dones.append(np.asarray(info_b.done))
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(per_env)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    dones = np.array(dones)
    assert dones.any(axis=1).sum() < len(dones)  # some steps had no reset at all (the cheap branch)
    assert (dones.sum(axis=1) == 1).any()  # and some reset one env but not the others
    np.testing.assert_array_equal(batched.traj_id, dones.sum(axis=0))


@pytest.mark.slow
def test_state_part_does_not_depend_on_goal():
    for name in ("ant", "reacher", "pusher", "point_u_maze"):
        task = envs.make(name)
        a = task.reset(jax.random.PRNGKey(0))
        b = a.replace(goal=a.goal + 1.0)
        sa, sb = task.step(a, jnp.zeros(task.spec.action_size)), task.step(b, jnp.zeros(task.spec.action_size))
        n = task.spec.state_size
        np.testing.assert_array_equal(sa.obs[:n], sb.obs[:n])
        assert not np.allclose(sa.obs[n:], sb.obs[n:])


@pytest.mark.slow  # MJX physics of the pusher: 30 s to compile
def test_pusher_starts_and_goals():
    task = envs.make("pusher")
    states = jax.jit(jax.vmap(task.reset))(jax.random.split(jax.random.PRNGKey(0), 2000))
    obj, goal = np.asarray(states.obs[:, 10:13]), np.asarray(states.obs[:, 20:23])
    # The object starts at least 0.17 m from the goal, at the goal's height (goals are reachable states).
    assert np.linalg.norm(obj - goal, axis=-1).min() >= 0.17 - 1e-5
    np.testing.assert_allclose(obj[:, 2], goal[:, 2])
    # Easy goals: offsets (U(-0.55, -0.25), U(-0.2, 0.2)) in q order (y slide first) from the rest point
    # (0.45, -0.05): world y in [-0.6, -0.3], x in [0.25, 0.65].
    assert goal[:, 1].min() >= -0.6 - 1e-5 and goal[:, 1].max() <= -0.3 + 1e-5
    assert goal[:, 0].min() >= 0.25 - 1e-5 and goal[:, 0].max() <= 0.65 + 1e-5
    hard = envs.make("pusher", difficulty="hard")
    hard_goals = np.asarray(jax.jit(jax.vmap(hard.reset))(jax.random.split(jax.random.PRNGKey(0), 2000)).goal)
    assert hard_goals[:, 1].max() > -0.2  # hard goals reach past the easy band
    with pytest.raises(ValueError, match="unknown pusher difficulty 'medium'; valid: easy, hard"):
        envs.make("pusher", difficulty="medium")


def _inertial_at(task, xy, vel):
    state = task.reset(jax.random.PRNGKey(0))
    sim = jnp.asarray([*xy, *vel], jnp.float32)
    return state.replace(sim=sim, obs=task.make_obs(sim, state.goal))


def test_inertial_point_coasts_with_friction_only():
    task = envs.make("point_inertia_u_maze")  # corridor of row 1: x = 4, y from 2.4 to 13.6 is free
    state = _inertial_at(task, (4.0, 5.0), (0.0, 1.5))
    nxt = jax.jit(task.step)(state, jnp.zeros(2))
    h = task.dt / task.substeps
    decay = 1.0 - task.friction * h
    np.testing.assert_allclose(nxt.sim[2:], [0.0, 1.5 * decay**task.substeps], rtol=1e-6)
    travelled = sum(1.5 * decay**k * h for k in range(1, task.substeps + 1))
    np.testing.assert_allclose(nxt.sim[:2], [4.0, 5.0 + travelled], rtol=1e-6)
    # Braking (full action against the motion) slows it more than coasting; pushing along speeds it up.
    braked = task.step(state, jnp.array([0.0, -1.0]))
    pushed = task.step(state, jnp.array([0.0, 1.0]))
    assert float(braked.sim[3]) < float(nxt.sim[3]) < 1.5 < float(pushed.sim[3])


def test_inertial_point_is_stopped_by_walls_and_capped_in_speed():
    task = envs.make("point_inertia_u_maze")
    step = jax.jit(task.step)
    # Driven at the wall of row 0 (x < 2) from the start: it stops at the wall face, velocity zeroed there.
    state = _inertial_at(task, (4.0, 4.0), (-3.0, 0.0))
    xs = []
    for _ in range(20):
        state = step(state, jnp.array([-1.0, 0.0]))
        xs.append(float(state.sim[0]))
    assert min(xs) >= 2.0 + task.radius - 1e-5
    assert xs[-1] <= 2.0 + task.radius + task.max_speed * task.dt / task.substeps + 1e-5
    assert float(state.sim[2]) == 0.0  # every sub-step pressed into the wall and was cancelled
    # Released from the wall with zero action it stays put: no bounce.
    rest = _inertial_at(task, (float(state.sim[0]), 4.0), (0.0, 0.0))
    np.testing.assert_array_equal(step(rest, jnp.zeros(2)).sim, rest.sim)
    # Without friction, full acceleration saturates at max_speed and never exceeds it.
    fast = envs.make("point_inertia_big_maze", friction=0.0, accel=50.0)  # free cells +x and +y of the start
    state = _inertial_at(fast, tuple(np.asarray(fast.maze.start)), (0.0, 0.0))
    state = jax.jit(fast.step)(state, jnp.array([0.6, 0.8]))
    assert np.linalg.norm(np.asarray(state.sim[2:])) <= fast.max_speed + 1e-5
    with pytest.raises(ValueError, match=r"friction·dt/substeps must lie in \[0, 1\), got 20.0"):
        envs.make("point_inertia_u_maze", friction=20.0)
