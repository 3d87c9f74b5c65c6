"""The ant and humanoid families, the gymnasium adapter and the maze pictures.

Brax compiles slowly on a CPU, so the tests share compiled functions (module fixtures) and keep batches
and rollouts small.
"""

import gymnasium
import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rlscale import envs
from rlscale.envs.mazes import HUMANOID_MAZE_SCALE, maze
from rlscale.envs.render import draw_maze, figure_size, save_maze_png
from rlscale.envs.wrappers import EpisodeEnv

ANT_MAZES = [n for n in envs.names() if n.startswith("ant_") and "maze" in n and "_stitch" not in n]  # stitching: tests/test_stitching.py
HUMANOID_MAZES = [n for n in envs.names() if n.startswith("humanoid_") and "maze" in n]
EVAL_GOALS = {  # docs/tasks.md#ant-mazes and #humanoid-mazes: world coordinates of the far cells
    "ant_u_maze_eval": {(12, 4), (12, 8), (12, 12)},
    "ant_u4_maze_eval": {(16, 4), (20, 4), (20, 8), (20, 12)},
    "ant_u5_maze_eval": {(16, 4), (16, 24)} | {(20, y) for y in range(4, 25, 4)},
    "ant_big_maze_eval": {(4, 20), (4, 24), (8, 24), (20, 12), (20, 24), (24, 8), (24, 12), (24, 20), (24, 24)},
    # The ant's big-maze goals at half the scale, plus cell (2, 5) (docs/tasks.md#humanoid-mazes).
    "humanoid_big_maze_eval": {(2, 10), (2, 12), (4, 10), (4, 12), (10, 6), (10, 12), (12, 4), (12, 6), (12, 10), (12, 12)},
    "humanoid_u_maze_eval": {(6, 2), (6, 4), (6, 6)},
}
EPISODE = 20  # steps per episode in the ant-maze rollouts
NUM_ENVS = 6


# --- maze facts (no physics compiled) -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ANT_MAZES + HUMANOID_MAZES)
def test_maze_goals_are_goal_cell_centres_and_start_is_the_reset_cell(name):
    task = envs.make(name)
    layout = task.maze
    sample = task.sample_goal if name.startswith("ant") else task.sample_goal_xy
    goals = np.asarray(jax.vmap(sample)(jax.random.split(jax.random.PRNGKey(0), 2000)))
    assert {tuple(g) for g in goals.tolist()} == {tuple(c) for c in layout.goals.tolist()}
    # The physics' initial pose puts the torso at the R cell's centre (reset adds only the ±0.1 noise).
    np.testing.assert_allclose(np.asarray(task.sys.init_q[:2]), layout.start)
    scale = 4.0 if name.startswith("ant") else HUMANOID_MAZE_SCALE
    assert layout.scale == scale
    np.testing.assert_array_equal(layout.goals, np.argwhere(np.array([list(r) for r in _rows(layout)]) == "G") * scale)


def _rows(layout):
    from rlscale.envs.mazes import LAYOUTS

    return LAYOUTS[layout.name].strip("\n").splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EVAL_GOALS))
def test_eval_layouts_hold_only_far_cells_with_the_same_walls(name):
    eval_maze = envs.make(name).maze
    assert {tuple(g) for g in eval_maze.goals.astype(int).tolist()} == EVAL_GOALS[name]
    train_name = name.removesuffix("_eval")
    train_maze = envs.make(train_name).maze
    np.testing.assert_array_equal(eval_maze.walls, train_maze.walls)
    np.testing.assert_array_equal(eval_maze.start, train_maze.start)
    assert {tuple(g) for g in eval_maze.goals.tolist()} < {tuple(g) for g in train_maze.goals.tolist()}
    # The ant mazes evaluate on their far-goal layout, the humanoid mazes on their training layout (the paper's runs).
    assert envs.make(train_name).spec.eval_task == (train_name if name.startswith("humanoid_") else name)


def _geoms(task):
    m = task.sys.mj_model
    return {m.geom(i).name: m.geom(i) for i in range(m.ngeom)}


@pytest.mark.slow
def test_maze_models_walls_and_contacts():
    ant = envs.make("ant_big_maze")
    geoms = _geoms(ant)
    walls = {n: g for n, g in geoms.items() if n.startswith("wall_")}
    assert len(walls) == ant.maze.walls.sum()
    for name, g in walls.items():  # 4 × 4 m footprint, 2 m tall, standing on the floor at its cell's centre
        i, j = map(int, name.split("_")[1:])
        np.testing.assert_allclose(g.size, [2.0, 2.0, 1.0])
        np.testing.assert_allclose(g.pos, [4.0 * i, 4.0 * j, 1.0])
        assert (g.contype[0], g.conaffinity[0]) == (1, 1)
    np.testing.assert_allclose(geoms["floor"].size[:2], [100.0, 100.0])
    # Feet, torso and hip segments touch the walls; thighs and shins touch nothing (docs/tasks.md#ant-mazes).
    touching = {n for n, g in geoms.items() if g.conaffinity[0] == 1 and not n.startswith("wall_") and n != "floor"}
    assert touching == {"torso_geom", "aux_1_geom", "aux_2_geom", "aux_3_geom", "aux_4_geom", "left_foot_geom",
                        "right_foot_geom", "third_foot_geom", "fourth_foot_geom"}
    assert all(geoms[n].contype[0] == 0 and geoms[n].conaffinity[0] == 0 for n in ("left_leg_geom", "left_ankle_geom"))
    humanoid = envs.make("humanoid_u_maze")
    geoms = _geoms(humanoid)
    body = {n: g for n, g in geoms.items() if not n.startswith("wall_") and n != "floor"}
    assert len(body) == 17 and all((g.contype[0], g.conaffinity[0]) == (1, 0) for g in body.values())
    np.testing.assert_allclose(geoms["wall_0_0"].size, [1.0, 1.0, 0.5])
    np.testing.assert_allclose(geoms["wall_0_0"].pos, [0.0, 0.0, 0.5])
    np.testing.assert_allclose(_geoms(envs.make("humanoid"))["floor"].size[:2], [40.0, 40.0])


@pytest.mark.slow
def test_hardest_maze_has_no_eval_layout_and_physics_settings():
    assert envs.make("ant_hardest_maze").spec.eval_task == "ant_hardest_maze"
    assert len(envs.make("ant_hardest_maze").maze.goals) == 45
    assert envs.make("ant_u_maze").dt == pytest.approx(0.05)
    assert envs.make("humanoid").dt == pytest.approx(0.03)  # the paper's effective 0.003 s × 10
    assert envs.make("humanoid_u_maze").dt == pytest.approx(0.015)  # 0.0015 s × 10
    spec = envs.make("humanoid_u_maze").spec
    assert (spec.state_size, spec.goal_indices, spec.action_size) == (246, (0, 1, 2), 17)
    with pytest.raises(ValueError, match="unknown Brax backend 'bullet'"):
        envs.make("ant_u_maze", backend="bullet")


# --- the wall broad phase keeps every pair that touches -------------------------------------------------


def _touching_pairs(sys, poses):
    """Per pose, the minimum contact distance of every geom pair (inf where no contact was computed)."""
    from brax import contact, kinematics

    def one(q):
        x, _ = kinematics.forward(sys, q, jnp.zeros(sys.qd_size()))
        c = contact.get(sys, x)
        return jnp.full((sys.ngeom, sys.ngeom), jnp.inf).at[c.geom1, c.geom2].min(c.dist)

    return np.asarray(jax.jit(jax.vmap(one))(poses))


@pytest.mark.slow
@pytest.mark.parametrize("robot", ["ant", "humanoid"])
def test_wall_broad_phase_keeps_every_touching_pair(robot):
    """Random poses all over the biggest maze, many of them against or inside walls: culling the geom–wall
    pairs finds exactly the touching pairs (and distances) that testing every pair finds."""
    from rlscale.envs.ant_maze import ant_maze_xml
    from rlscale.envs.brax_tasks import ant_system
    from rlscale.envs.humanoid import humanoid_system, humanoid_xml

    if robot == "ant":
        layout = maze("hardest_maze")
        full, culled = (ant_system("spring", ant_maze_xml(layout, broad_phase=b))[0] for b in (False, True))
    else:
        layout = maze("big_maze", HUMANOID_MAZE_SCALE)
        full, culled = (humanoid_system("spring", humanoid_xml(layout, broad_phase=b), 0.0015)[0] for b in (False, True))
    n, rng = 256, np.random.default_rng(0)
    cells = layout.free_cells[rng.integers(0, len(layout.free_cells), n)]
    quat = rng.normal(size=(n, 4))
    q = np.tile(np.asarray(full.init_q), (n, 1))
    q[:, :2] = cells + rng.uniform(-0.6, 0.6, (n, 2)) * layout.scale  # often against or inside a wall
    q[:, 2] = rng.uniform(0.2, 1.5, n)
    q[:, 3:7] = quat / np.linalg.norm(quat, axis=1, keepdims=True)
    d_full, d_culled = _touching_pairs(full, jnp.asarray(q)), _touching_pairs(culled, jnp.asarray(q))
    touching = d_full < 0.01
    assert touching.sum() > n  # the poses do press against walls and the floor
    np.testing.assert_allclose(d_culled[touching], d_full[touching], atol=1e-5)


# --- ant maze physics (one compiled rollout per goal mode) ----------------------------------------------


@pytest.fixture(scope="module")
def ant_u_maze():
    task = envs.make("ant_u_maze", episode_length=EPISODE)
    rollouts = {}

    def rollout(fixed_goals: bool):
        if fixed_goals not in rollouts:
            env = EpisodeEnv(task, fixed_goals_per_env=fixed_goals)

            def run(state, actions):
                def body(s, a):
                    nxt, info = jax.vmap(env.step)(s, a)
                    torso = jnp.stack([info.metrics["x_position"], info.metrics["y_position"]], -1)
                    return nxt, (s.task.goal, torso, info.done)

                return jax.lax.scan(body, state, actions)

            rollouts[fixed_goals] = (env, jax.jit(run))
        return rollouts[fixed_goals]

    return task, rollout


@pytest.mark.slow
def test_ant_maze_starts_in_the_reset_cell(ant_u_maze):
    task, rollout = ant_u_maze
    env, _ = rollout(False)
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 64))
    assert np.all(np.abs(np.asarray(states.task.obs[:, :2]) - task.maze.start) <= 0.1 + 1e-6)
    assert states.task.obs.shape == (64, 31)


@pytest.mark.slow
def test_ant_maze_fresh_goals_each_episode_and_paper_flag(ant_u_maze):
    _, rollout = ant_u_maze
    actions = jnp.zeros((3 * EPISODE, NUM_ENVS, 8))
    goals = {}
    for fixed in (False, True):
        env, run = rollout(fixed)
        state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), NUM_ENVS))
        _, (goal, _, done) = run(state, actions)
        assert np.asarray(done).sum() >= 2 * NUM_ENVS  # every env finished at least two episodes
        goals[fixed] = np.asarray(goal)
    per_env = [{tuple(g) for g in goals[True][:, i].tolist()} for i in range(NUM_ENVS)]
    assert all(len(s) == 1 for s in per_env)  # the paper's behaviour: each env replays its first goal
    fresh = [{tuple(g) for g in goals[False][:, i].tolist()} for i in range(NUM_ENVS)]
    assert sum(len(s) > 1 for s in fresh) >= NUM_ENVS // 2


@pytest.mark.slow
def test_ant_pushed_at_a_wall_does_not_enter_it(ant_u_maze):
    """Torsos thrown at the wall below the start (x < 2 m) at 4 m/s, with random actions, stay out of it."""
    task, rollout = ant_u_maze
    env, run = rollout(False)
    keys = jax.random.split(jax.random.PRNGKey(1), NUM_ENVS)
    state = jax.vmap(env.reset)(keys)

    def next_to_wall(sim, key):
        q = sim.q.at[0].set(3.0).at[1].add(jax.random.uniform(key, (), minval=-1.0, maxval=1.0))
        return task.pipeline.pipeline_init(q, sim.qd.at[0].set(-4.0))

    sims = jax.jit(jax.vmap(next_to_wall))(state.task.sim, keys)
    state = state.replace(task=state.task.replace(sim=sims))
    # As many steps as the goal test (same compiled rollout); only the thrown episode is checked.
    actions = jax.random.uniform(jax.random.PRNGKey(2), (3 * EPISODE, NUM_ENVS, 8), minval=-1, maxval=1)
    _, (_, torso, done) = run(state, actions)
    torso, done = np.asarray(torso), np.asarray(done)
    alive = np.cumsum(done, axis=0) == 0  # steps of the thrown episode (before any fall)
    assert alive.sum() >= NUM_ENVS  # the check below looked at real steps
    # The torso sphere (radius 0.25) touches the wall face at x = 2; it never gets past it.
    assert torso[..., 0][alive].min() >= 2.0 + 0.25 - 0.1
    # Nor does it enter any wall cell anywhere.
    cells = np.floor((torso[alive] + 2.0) / 4.0).astype(int)
    assert not task.maze.walls[cells[:, 0], cells[:, 1]].any()
    # It did reach the wall (so the test pushed against it).
    assert torso[..., 0][alive].min() < 2.8


# --- humanoid -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_humanoid_state_part_does_not_depend_on_the_goal():
    task = envs.make("humanoid")
    step = jax.jit(task.step)
    a = task.reset(jax.random.PRNGKey(0))
    assert a.obs.shape == (249,)
    np.testing.assert_allclose(np.asarray(a.obs[:3]), [0.0, 0.0, 1.4], atol=1e-6)  # deterministic start
    assert float(a.goal[2]) == pytest.approx(1.25) and 1.0 <= float(jnp.linalg.norm(a.goal[:2])) <= 5.0
    b = a.replace(goal=a.goal + jnp.array([3.0, -2.0, 0.0]))
    action = jax.random.uniform(jax.random.PRNGKey(1), (17,), minval=-1, maxval=1)
    sa, sb = step(a, action), step(b, action)
    n = task.spec.state_size
    np.testing.assert_array_equal(np.asarray(sa.obs[:n]), np.asarray(sb.obs[:n]))
    assert not np.allclose(np.asarray(sa.obs[n:]), np.asarray(sb.obs[n:]))
    # dist and success are 3-D distances of the torso to (tx, ty, 1.25).
    expected = np.linalg.norm(np.asarray(sa.obs[:3]) - np.asarray(sa.goal))
    np.testing.assert_allclose(float(sa.metrics["dist"]), expected, rtol=1e-5)
    assert float(sa.metrics["success"]) == float(expected < 0.5)
    assert np.isfinite(np.asarray(sa.obs)).all() and not bool(sa.terminated)


# --- gymnasium adapter --------------------------------------------------------------------------------


def test_every_task_has_a_gymnasium_id():
    assert envs.gym_id("point_u_maze") == "rlscale/PointUMaze-v0"
    assert envs.gym_id("ant_u4_maze_eval") == "rlscale/AntU4MazeEval-v0"
    for name in envs.names():
        assert envs.gym_id(name) in gymnasium.registry


@pytest.mark.slow
@pytest.mark.parametrize("name", ["point_u_maze", "ant_u_maze"])
def test_gymnasium_env_passes_check_env(name):
    env = gymnasium.make(envs.gym_id(name), episode_length=5)
    check_env(env.unwrapped)
    obs, info = env.reset(seed=7)
    again, _ = env.reset(seed=7)
    np.testing.assert_array_equal(obs["desired_goal"], again["desired_goal"])
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
    for t in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert reward == env.unwrapped.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
        assert reward in (0.0, -1.0) and reward == -float(info["dist"] >= env.unwrapped.task.spec.success_threshold)
    assert truncated  # episode_length 5
    if env.unwrapped.metadata["render_modes"]:
        frame = gymnasium.make(envs.gym_id(name), render_mode="rgb_array", episode_length=5)  # compiled above
        frame.reset(seed=0)
        assert frame.render().shape[2] == 3


def test_compute_reward_is_vectorised_and_dense_reward():
    env = gymnasium.make("rlscale/PointUMaze-v0", reward_type="dense").unwrapped
    achieved, desired = np.zeros((5, 3, 2)), np.ones((5, 3, 2))
    np.testing.assert_allclose(env.compute_reward(achieved, desired, None), -np.sqrt(2) * np.ones((5, 3)))
    sparse = gymnasium.make("rlscale/PointUMaze-v0").unwrapped
    assert sparse.compute_reward(achieved, desired + [[0.0, -0.7]], None).tolist() == [[-1.0] * 3] * 5
    assert sparse.compute_reward(np.zeros(2), np.array([0.3, 0.0]), None) == 0.0
    with pytest.raises(ValueError, match="unknown reward_type 'shaped'"):
        gymnasium.make("rlscale/PointUMaze-v0", reward_type="shaped")
    with pytest.raises(ValueError, match="render_mode 'rgb_array' is not supported by 'reacher'"):
        gymnasium.make("rlscale/Reacher-v0", render_mode="rgb_array")


@pytest.mark.slow
def test_vector_env_steps_with_same_step_autoreset():
    vec = gymnasium.make_vec("rlscale/PointUMaze-v0", num_envs=4, vectorization_mode="vector_entry_point", episode_length=3)
    obs, _ = vec.reset(seed=0)
    again, _ = vec.reset(seed=0)
    np.testing.assert_array_equal(obs["desired_goal"], again["desired_goal"])
    assert obs["observation"].shape == (4, 4) and obs["desired_goal"].shape == (4, 2)
    assert obs in vec.observation_space
    for t in range(3):
        before = obs
        obs, reward, terminated, truncated, info = vec.step(np.tile([[0.0, 1.0]], (4, 1)))  # along the corridor
        assert reward.shape == (4,) and not terminated.any()
    assert truncated.all() and info["_final_obs"].all()
    final = info["final_obs"][0]
    # The final observation continues the episode; the returned one starts a fresh episode at R.
    assert final["observation"][1] > before["observation"][0][1]
    np.testing.assert_allclose(obs["observation"][:, :2], np.tile(envs.make("point_u_maze").maze.start, (4, 1)), atol=0.1 + 1e-6)
    np.testing.assert_array_equal(reward, vec.compute_reward(np.stack([f["achieved_goal"] for f in info["final_obs"]]), np.stack([f["desired_goal"] for f in info["final_obs"]])))
    vec.close()


# --- pictures -----------------------------------------------------------------------------------------


def test_maze_png_has_the_expected_size(tmp_path):
    path = save_maze_png("ant_big_maze", tmp_path / "big.png", trajectories=[np.array([[4.0, 4.0], [8.0, 4.0], [8.0, 8.0]])], goal=[4.0, 20.0])
    width, height = figure_size(maze("big_maze"))
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (round(height * 100), round(width * 100))
    assert image[..., :3].std() > 0.05  # not blank
    fig = draw_maze("humanoid_big_maze_eval", trajectories=[np.zeros((3, 3))], goal=[4.0, 10.0, 1.25], dpi=50)
    assert tuple(fig.get_size_inches()) == pytest.approx(figure_size(maze("humanoid_big_maze_eval", 2.0)))
    with pytest.raises(ValueError, match="task 'reacher' has no maze"):
        save_maze_png("reacher", tmp_path / "r.png")
