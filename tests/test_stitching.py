"""Stitching mazes (docs/tasks.md#stitching-mazes): BFS distances, training pairs, far evaluation goals and the
per-goal-distance metrics, from the task through the evaluator to metrics.jsonl and `rlscale eval`'s table."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rlscale.envs.mazes import cell_distances, maze

from rlscale import envs
from rlscale.evaluation.rollout import rollout, summarize

POINT_ROBOTS = ("point", "point_inertia")
# The U-maze's free cells in row-major order and their place along its one corridor from R (1, 1).
U_CELLS = [(1, 1), (1, 2), (1, 3), (2, 3), (3, 1), (3, 2), (3, 3)]
U_CORRIDOR = {(1, 1): 0, (1, 2): 1, (1, 3): 2, (2, 3): 3, (3, 3): 4, (3, 2): 5, (3, 1): 6}
FAR = {(12, 12): 4, (12, 8): 5, (12, 4): 6}  # world (x, y) of the eval goals: cells away from R


def _cell(xy) -> tuple[int, int]:
    return tuple(int(v) for v in np.round(np.asarray(xy) / 4.0))


def test_bfs_distances_match_hand_computed_ones():
    u = maze("u_maze")
    assert [tuple(c) for c in u.free_cell_indices.tolist()] == U_CELLS and u.start_index == 0
    expected = np.array([[abs(U_CORRIDOR[a] - U_CORRIDOR[b]) for b in U_CELLS] for a in U_CELLS])
    np.testing.assert_array_equal(cell_distances(u.walls), expected)
    assert cell_distances(u.walls)[0].tolist() == [0, 1, 2, 3, 6, 5, 4]
    # A loop is measured by its short side; a walled-off cell is unreachable (-1).
    walls = np.array([list(r) for r in ["#####", "#...#", "#.#.#", "#...#", "#####", "#.###", "#####"]]) == "#"
    d = cell_distances(walls)
    cells = [tuple(c) for c in np.argwhere(~walls).tolist()]
    at = lambda a, b: d[cells.index(a), cells.index(b)]  # noqa: E731
    assert (at((1, 1), (3, 3)), at((1, 1), (2, 3)), at((1, 2), (3, 2))) == (4, 3, 4)
    assert at((5, 1), (1, 1)) == at((1, 1), (5, 1)) == -1 and at((5, 1), (5, 1)) == 0


@pytest.mark.parametrize("robot", POINT_ROBOTS)
@pytest.mark.parametrize("k", [1, 3])
def test_training_pairs_lie_within_k_cells_and_every_such_pair_occurs(robot, k):
    task = envs.make(f"{robot}_u_maze_stitch", max_goal_distance=k)
    states = jax.jit(jax.vmap(task.reset))(jax.random.split(jax.random.PRNGKey(0), 2000))
    starts, goals = np.asarray(states.obs[:, :2]), np.asarray(states.goal)
    start_cells = [_cell(s) for s in starts]
    # The start is a free cell's centre plus the usual noise; the goal is a cell centre exactly.
    np.testing.assert_allclose(np.abs(starts - 4.0 * np.array(start_cells)).max(), 0.1, atol=0.01)
    np.testing.assert_array_equal(goals, 4.0 * np.array([_cell(g) for g in goals]))
    pairs = {(s, _cell(g)) for s, g in zip(start_cells, goals)}
    within = {(a, b) for a in U_CELLS for b in U_CELLS if 1 <= abs(U_CORRIDOR[a] - U_CORRIDOR[b]) <= k}
    assert pairs == within and len(within) == {1: 12, 3: 30}[k]
    # The start cell is uniform over the 7 free cells.
    counts = np.unique(start_cells, axis=0, return_counts=True)[1]
    assert len(counts) == 7 and counts.min() > 2000 / 7 * 0.8


@pytest.mark.parametrize("robot", POINT_ROBOTS)
def test_eval_twin_starts_at_r_and_commands_only_the_far_cells(robot):
    name = f"{robot}_u_maze_stitch"
    assert envs.default_eval_task(name) == f"{name}_eval" == envs.default_eval_task(f"{name}_eval")
    task = envs.make(f"{name}_eval")
    states = jax.jit(jax.vmap(task.reset))(jax.random.split(jax.random.PRNGKey(1), 600))
    assert {tuple(g) for g in np.asarray(states.goal).astype(int).tolist()} == set(FAR)
    assert np.abs(np.asarray(states.obs[:, :2]) - np.asarray(maze("u_maze").start)).max() <= 0.1 + 1e-6
    # Every episode is in exactly the group of its goal's distance.
    for d in (4, 5, 6):
        expected = [float(FAR[tuple(g)] == d) for g in np.asarray(states.goal).astype(int).tolist()]
        np.testing.assert_array_equal(states.metrics[f"success_d{d}_count"], expected)
    only_five = envs.make(f"{name}_eval", goal_distances=[5])
    assert {tuple(g) for g in only_five.sampler.goal_cells.tolist()} == {(3, 2)}


@pytest.mark.parametrize("value", [0, -2, 2.5, True, "3", None])
def test_a_max_goal_distance_that_is_not_a_positive_integer_is_a_clear_error(value):
    with pytest.raises(ValueError, match=re.escape(f"max_goal_distance must be an integer number of cells, at least 1; got {value!r}")):
        envs.make("point_u_maze_stitch", max_goal_distance=value)


def test_bad_eval_distances_and_options_of_other_tasks_are_errors():
    with pytest.raises(ValueError, match=r"no free cell of layout 'u_maze' is 7 cells from its start cell R \(its free cells lie 0..6"):
        envs.make("point_u_maze_stitch_eval", goal_distances=(5, 7))
    with pytest.raises(ValueError, match="goal_distances must be an integer number of cells, at least 1; got 0"):
        envs.make("point_u_maze_stitch_eval", goal_distances=(0,))
    with pytest.raises(ValueError, match="bad override for task 'point_u_maze_stitch_eval'.*max_goal_distance"):
        envs.make("point_u_maze_stitch_eval", max_goal_distance=3)
    with pytest.raises(ValueError, match="bad override for task 'point_u_maze'.*max_goal_distance"):
        envs.make("point_u_maze", max_goal_distance=3)


def _toward_d5_goals(params, obs, key):
    """A scripted policy: along the U (right along row 1, down column 3, left along row 3) to its goal, but
    only on episodes whose goal is (12, 8), 5 cells from R; the others stand still."""
    x, y, goal_y = obs[:, 0], obs[:, 1], obs[:, 5]
    top = x < 11.0
    ax = jnp.where(top, jnp.where(y > 11.5, 1.0, 0.0), jnp.clip((12.0 - x) / 2, -1, 1))
    ay = jnp.where(top, jnp.where(y > 11.5, jnp.clip((12.0 - y) / 2, -1, 1), 1.0), jnp.clip((goal_y - y) / 2, -1, 1))
    go = (goal_y == 8.0)[:, None]
    return jnp.where(go, jnp.stack([ax, ay], -1), 0.0)


def test_an_episode_with_its_goal_five_cells_away_counts_only_in_the_d5_numbers():
    task = envs.make("point_u_maze_stitch_eval")
    per_episode, _ = jax.jit(lambda key: rollout(task, _toward_d5_goals, None, key, 12, 40))(jax.random.PRNGKey(3))
    host = {k: np.asarray(v) for k, v in per_episode.items()}
    goal_y = np.asarray(jax.vmap(task.reset)(jax.random.split(jax.random.PRNGKey(3), 12)).goal)[:, 1]
    five = goal_y == 8.0
    assert 0 < five.sum() < 12
    np.testing.assert_array_equal(host["episode_success_d5_count"], five)
    assert (host["episode_success"][five] >= 20).all() and (host["episode_success"][~five] == 0).all()  # it got there
    np.testing.assert_array_equal(host["episode_success_d5"], host["episode_success"] * five)
    assert not host["episode_success_d4"].any() and not host["episode_success_d6"].any()
    np.testing.assert_array_equal(host["episode_success_any_d5"], five)
    row = summarize(per_episode)
    assert row["eval/episode_success_d5"] == pytest.approx(host["episode_success"][five].mean())
    assert row["eval/episode_success_any_d5"] == 1.0 and row["eval/episode_success_d5_count"] == five.sum()
    for d, y in ((4, 12.0), (6, 4.0)):
        assert row[f"eval/episode_success_d{d}"] == 0.0 == row[f"eval/episode_success_any_d{d}"]
        assert row[f"eval/episode_success_d{d}_count"] == (goal_y == y).sum()
    assert row["eval/episode_success"] == pytest.approx(host["episode_success"].mean())


def test_grouped_metrics_average_over_their_group_only():
    """rlscale.evaluation.rollout.summarize: `<name>_count` divides `<name>`; an empty group is NaN; other keys are means."""
    per_episode = {
        "episode_success": np.array([10.0, 0.0, 4.0, 6.0]),
        "episode_success_any": np.array([1.0, 0.0, 1.0, 1.0]),
        "episode_success_g": np.array([10.0, 0.0, 0.0, 6.0]),
        "episode_success_g_count": np.array([1.0, 1.0, 0.0, 1.0]),
        "episode_success_h": np.zeros(4),
        "episode_success_h_count": np.zeros(4),
        "episode_dist": np.ones(4),
        "episode_length": np.full(4, 20.0),
    }
    row = summarize(per_episode)
    assert row["eval/episode_success_g"] == pytest.approx(16 / 3) and row["eval/episode_success_g_count"] == 3
    assert math.isnan(row["eval/episode_success_h"]) and row["eval/episode_success_h_count"] == 0
    assert row["eval/episode_success"] == 5.0 and row["eval/avg_episode_length"] == 20.0


def test_rlscale_eval_prints_time_at_goal_per_goal_distance():
    from rlscale.evaluation.evaluate import _format

    row = {"run": "r", "task": "point_u_maze_stitch_eval", "step": 100, "eval/episode_success": 5.0,
           "eval/episode_success_stderr": 1.0, "eval/episode_success_any": 0.5, "eval/episode_dist": 2.0,
           "eval/avg_episode_length": 20.0}
    for d, (t, n) in {10: (1.0, 2), 5: (7.25, 3), 4: (float("nan"), 0)}.items():
        row |= {f"eval/episode_success_d{d}": t, f"eval/episode_success_d{d}_count": n,
                f"eval/episode_success_any_d{d}": 1.0, f"eval/episode_success_any_d{d}_count": n}
    lines = _format([row]).splitlines()
    assert lines[2] == "    time@goal by group: d4 nan (any 1.00, 0 episodes), d5 7.2 (any 1.00, 3 episodes), d10 1.0 (any 1.00, 2 episodes)"
    del row["eval/episode_success_d5_count"], row["eval/episode_success_d10_count"], row["eval/episode_success_d4_count"]
    assert len(_format([row]).splitlines()) == 2  # no groups, no extra line


@pytest.mark.slow
def test_training_logs_the_per_distance_numbers(tmp_path):
    from helpers import TINY

    from rlscale.config import TrainConfig
    from rlscale.storage import run_dir as rd
    from rlscale.training.loop import train

    run = train(TrainConfig(**{**TINY, "env": "point_u_maze_stitch", "num_evals": 1, "total_env_steps": 160,
                               "num_eval_envs": 16, "run_dir": str(tmp_path / "run")}))
    (row,) = [r for r in rd.read_metrics(run) if "eval/episode_success" in r]
    counts = [row[f"eval/episode_success_d{d}_count"] for d in (4, 5, 6)]
    assert sum(counts) == 16 and all(c == row[f"eval/episode_success_any_d{d}_count"] for c, d in zip(counts, (4, 5, 6)))
    assert row["eval/episode_success"] == pytest.approx(sum(
        row[f"eval/episode_success_d{d}"] * c for c, d in zip(counts, (4, 5, 6)) if c) / 16)


def test_k_is_a_run_option_and_a_sweep_axis(tmp_path):
    """--stitch-max-goal-distance reaches the training task only (the eval task keeps its far goals), gives each
    k its own run id in a sweep, and is refused where it means nothing."""
    from helpers import TINY
    from rlscale.launch import sweepfile

    from rlscale.config import TrainConfig, plan
    from rlscale.training.trainer import Trainer

    trainer = Trainer(TrainConfig(**{**TINY, "env": "point_u_maze_stitch", "stitch_max_goal_distance": 1}))
    assert trainer.task.sampler.max_goal_distance == 1 and trainer.eval_task.spec.name == "point_u_maze_stitch_eval"
    default = Trainer(TrainConfig(**{**TINY, "env": "point_u_maze_stitch"}))
    assert default.task.sampler.max_goal_distance == 3
    (tmp_path / "k.yaml").write_text("name: k\nbase: {env: point_u_maze_stitch}\ngrid: {stitch_max_goal_distance: [null, 1, 2, 3]}\n")
    (tmp_path / "plain.yaml").write_text("name: plain\nbase: {env: point_u_maze_stitch}\n")
    ids = [run.id for run in sweepfile.expand(sweepfile.load(tmp_path / "k.yaml"))]
    (plain,) = [run.id for run in sweepfile.expand(sweepfile.load(tmp_path / "plain.yaml"))]
    assert len(set(ids)) == 4 and ids[0] == plain  # the default keeps the runs of sweeps without the axis
    with pytest.raises(ValueError, match="--stitch-max-goal-distance is an option of the stitching tasks .* 'point_u_maze'"):
        plan(TrainConfig(**{**TINY, "stitch_max_goal_distance": 2}))
    with pytest.raises(ValueError, match="--stitch-max-goal-distance must be an integer number of cells, at least 1; got 0"):
        plan(TrainConfig(**{**TINY, "env": "point_u_maze_stitch", "stitch_max_goal_distance": 0}))


# --- the ant twin (Brax builds and compiles slowly on a CPU: slow tier; its sampler is the point twin's) ---


@pytest.mark.slow
@pytest.mark.long
def test_ant_twins_reset_at_their_start_cells_and_report_the_per_distance_metrics():
    task = envs.make("ant_u_maze_stitch", episode_length=5)
    assert task.spec.eval_task == "ant_u_maze_stitch_eval" and task.spec.obs_size == 31
    with pytest.raises(ValueError, match="max_goal_distance must be an integer number of cells, at least 1; got 0"):
        envs.make("ant_u_maze_stitch", max_goal_distance=0)
    shifts, goals = jax.vmap(task.sample_start_goal)(jax.random.split(jax.random.PRNGKey(0), 2000))
    starts = np.asarray(shifts) + np.asarray(task.maze.start)
    pairs = {(_cell(s), _cell(g)) for s, g in zip(starts, np.asarray(goals))}
    assert pairs == {(a, b) for a in U_CELLS for b in U_CELLS if 1 <= abs(U_CORRIDOR[a] - U_CORRIDOR[b]) <= 3}
    keys = jax.random.split(jax.random.PRNGKey(0), 64)
    states = jax.jit(jax.vmap(task.reset))(keys)
    shifts, goals = jax.vmap(task.sample_start_goal)(jax.vmap(lambda k: jax.random.split(k)[1])(keys))
    torso = np.asarray(states.obs[:, :2])
    assert np.abs(torso - (np.asarray(shifts) + np.asarray(task.maze.start))).max() <= 0.1 + 1e-6
    np.testing.assert_array_equal(np.asarray(states.goal), np.asarray(goals))
    assert len({_cell(t) for t in torso}) == 7
    far = envs.make("ant_u_maze_stitch_eval", episode_length=5)
    state = jax.jit(jax.vmap(far.reset))(keys[:8])
    state = jax.jit(jax.vmap(far.step))(state, jnp.zeros((8, 8)))
    assert {tuple(g) for g in np.asarray(state.goal).astype(int).tolist()} <= set(FAR)
    assert np.abs(np.asarray(state.obs[:, :2]) - np.asarray(far.maze.start)).max() < 0.5
    total = sum(np.asarray(state.metrics[f"success_d{d}_count"]) for d in (4, 5, 6))
    np.testing.assert_array_equal(total, np.ones(8))


def test_recording_from_a_stitching_run_keeps_its_goal_distance(tmp_path):
    """`rlscale record` of a run trained with --stitch-max-goal-distance 2 rolls out that run's task: every
    recorded episode's goal is at most 2 cells from its start (the task's default would allow 3)."""
    from helpers import TINY

    from rlscale.config import TrainConfig
    from rlscale.data import datasets
    from rlscale.evaluation.policy import LoadedPolicy, make_eval_task
    from rlscale.networks import Actor

    cfg = TrainConfig(**{**TINY, "env": "point_u_maze_stitch", "stitch_max_goal_distance": 2})
    spec = envs.make(cfg.env).spec
    actor = Actor(cfg.network_trunk("actor"), spec.action_size)
    params = actor.init(jax.random.PRNGKey(0), jnp.zeros((1, spec.state_size)), jnp.zeros((1, spec.goal_size)))["params"]
    policy = LoadedPolicy(run_dir=tmp_path, step=0, config=cfg.to_dict(), meta={}, actor=actor, actor_params=params,
                          state_size=spec.state_size)
    assert make_eval_task(policy, policy.task).sampler.max_goal_distance == 2
    assert make_eval_task(policy).spec.name == "point_u_maze_stitch_eval"  # the eval twin keeps its far goals
    datasets.record(policy, 300, tmp_path / "d.npz")
    data = np.load(tmp_path / "d.npz")
    starts = data["observations"][:, :2][np.r_[True, np.diff(data["trajectory_ids"]) != 0]]
    goals = data["observations"][:, spec.state_size:][np.r_[True, np.diff(data["trajectory_ids"]) != 0]]
    distance = {(a, b): abs(U_CORRIDOR[a] - U_CORRIDOR[b]) for a in U_CELLS for b in U_CELLS}
    seen = {distance[_cell(s), _cell(g)] for s, g in zip(starts, goals)}
    assert seen == {1, 2}, seen
