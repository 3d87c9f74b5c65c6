import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization
from scipy import stats

from rlscale.data.buffer import (
    EpisodeEnds,
    future_offsets,
    init_buffer,
    insert,
    relabel_window,
    sample_minibatches,
    sample_windows,
)
from rlscale.storage import checkpoint as ckpt


def _chunk(start, steps, num_envs, traj=None):
    """Observations whose first coordinate is the global time index, second the env index."""
    t = np.arange(start, start + steps, dtype=np.float32)[:, None].repeat(num_envs, 1)
    e = np.arange(num_envs, dtype=np.float32)[None, :].repeat(steps, 0)
    obs = np.stack([t, e, t * 0], axis=-1)
    action = obs[..., :1] * 2
    traj_id = np.zeros((steps, num_envs), np.int32) if traj is None else traj
    return jnp.asarray(obs), jnp.asarray(action), jnp.asarray(traj_id)


def test_fifo_wraps_and_windows_are_in_time_order():
    buf = init_buffer(capacity=10, num_envs=3, obs_size=3, action_size=1)
    for start in range(0, 24, 6):
        buf = insert(buf, *_chunk(start, 6, 3))
    assert int(buf.size) == 10
    # The last 10 steps (14..23) remain; every window is consecutive and inside them.
    for seed in range(20):
        obs, action, _, ends = sample_windows(buf, jax.random.PRNGKey(seed), window=4)
        assert ends is None  # a buffer without episode ends (CRL's)
        times = np.asarray(obs[..., 0])
        assert times.min() >= 14 and times.max() <= 23
        np.testing.assert_array_equal(np.diff(times, axis=1), 1)
        np.testing.assert_array_equal(obs[..., 1], np.arange(3)[:, None].repeat(4, 1))  # each row one env
        np.testing.assert_array_equal(action[..., 0], 2 * times)


def test_insert_rejects_more_than_capacity():
    buf = init_buffer(capacity=4, num_envs=1, obs_size=3, action_size=1)
    with pytest.raises(ValueError, match="cannot insert 5 steps into a buffer of capacity 4"):
        insert(buf, *_chunk(0, 5, 1))


def test_goals_strictly_future_and_never_across_trajectories():
    window = 40
    traj = np.repeat(np.arange(6), [3, 10, 1, 15, 6, 5]).astype(np.int32)  # trajectory ids along a window
    obs = np.stack([np.arange(window), traj, np.zeros(window)], -1).astype(np.float32)
    for seed in range(50):
        batch, has_future = relabel_window(
            jax.random.PRNGKey(seed), jnp.asarray(obs), jnp.zeros((window, 1)), jnp.asarray(traj), 0.9, 3, (0, 1)
        )
        goal_time, goal_traj = np.asarray(batch.goal[:, 0]), np.asarray(batch.goal[:, 1])
        now = np.arange(window)
        has_future = np.asarray(has_future)
        last_of_traj = np.r_[traj[1:] != traj[:-1], True]
        np.testing.assert_array_equal(has_future, ~last_of_traj)
        assert np.all(goal_time[has_future] > now[has_future])
        np.testing.assert_array_equal(goal_traj, traj)
        np.testing.assert_array_equal(goal_time[~has_future], now[~has_future])  # self goal when no future


def test_offsets_follow_the_truncated_geometric_law():
    gamma, horizon, draws = 0.9, 12, 200_000
    traj = jnp.zeros(horizon + 1, jnp.int32)  # step 0 has exactly `horizon` future steps
    keys = jax.random.split(jax.random.PRNGKey(1), draws)
    offsets = np.asarray(jax.vmap(lambda k: future_offsets(k, traj, gamma)[0][0])(keys))
    m = np.arange(1, horizon + 1)
    expected = gamma**m / np.sum(gamma**m)
    observed = np.bincount(offsets, minlength=horizon + 1)[1:]
    assert observed.sum() == draws  # nothing outside 1..horizon
    _, p_value = stats.chisquare(observed, expected * draws)
    assert p_value > 0.01, (observed, expected * draws)
    # A visibly wrong law (untruncated geometric with another γ) is rejected by the same test.
    wrong = 0.8**m / np.sum(0.8**m)
    assert stats.chisquare(observed, wrong * draws)[1] < 1e-6


def test_minibatch_count_is_exact_and_goals_always_in_the_future():
    buf = init_buffer(capacity=50, num_envs=4, obs_size=3, action_size=1)
    traj = np.repeat(np.arange(5), 10)[:, None].repeat(4, 1).astype(np.int32)
    buf = insert(buf, *_chunk(0, 50, 4, traj))
    # 37 batches of 16 = 592 transitions > one round of windows (4 envs × 20): several rounds are drawn.
    batches, resampled_fraction = sample_minibatches(
        buf, jax.random.PRNGKey(0), num_batches=37, batch_size=16, window=20, gamma=0.99, state_size=2, goal_indices=(0,)
    )
    assert batches.state.shape == (37, 16, 2)
    assert batches.goal.shape == (37, 16, 1)
    assert batches.action.shape == (37, 16, 1)
    # A window of 20 over 10-step trajectories holds 2 or 3 trajectory ends (steps without a future):
    # 8 rounds draw 640 steps, 544 to 576 of them usable, so 16 to 48 of the 592 rows are repeats.
    assert 16 / 592 <= float(resampled_fraction) <= 48 / 592
    assert np.all(batches.goal[..., 0] > batches.state[..., 0])


def _td_buffer():
    """A buffer that keeps episode ends (a TD baseline's): 2 envs, 3-step episodes; env 1's end by termination."""
    buf = init_buffer(capacity=6, num_envs=2, obs_size=3, action_size=1, final_state_size=2)
    traj = np.repeat(np.arange(2), 3)[:, None].repeat(2, 1).astype(np.int32)
    obs, action, traj_id = _chunk(0, 6, 2, traj)
    done = np.repeat([[False, False, True]], 2, 0).reshape(6, 1).repeat(2, 1)
    terminated = done & np.array([False, True])
    return insert(buf, obs, action, traj_id, EpisodeEnds.of_steps(jnp.asarray(done), jnp.asarray(terminated), obs[..., :2] + 0.5))


def test_insert_keeps_final_states_only_where_an_episode_ended():
    buf = _td_buffer()
    final_rows = np.array([False, False, True, False, False, True])
    np.testing.assert_array_equal(buf.ends.final_valid, final_rows[:, None].repeat(2, 1))
    np.testing.assert_array_equal(buf.ends.terminated, final_rows[:, None] & np.array([False, True]))
    expected = np.where(final_rows[:, None, None], np.asarray(buf.obs[..., :2]) + 0.5, 0.0)
    np.testing.assert_array_equal(buf.ends.final_state, expected)
    with pytest.raises(ValueError, match="this buffer keeps episode ends"):
        insert(buf, *_chunk(6, 1, 2))
    crl = insert(init_buffer(capacity=6, num_envs=2, obs_size=3, action_size=1), *_chunk(0, 6, 2), buf.ends)
    assert crl.ends is None  # a buffer that keeps none drops them


def _save(run_dir, tree):
    writer = ckpt.CheckpointWriter(run_dir)
    writer.save(1, tree, {})
    writer.close()


def test_a_td_buffer_saved_before_it_kept_episode_ends_restores_with_none_known(tmp_path):
    """A --save-buffer checkpoint of an earlier version holds no episode ends: the buffer restores with no
    step terminal and no final state kept (so its episodes' last steps stay out of TD minibatches, as
    they did); one saved with them gets them back, and a buffer that keeps none (CRL's) restores as it was."""
    buf = _td_buffer()
    old_format = {k: v for k, v in serialization.to_state_dict(buf).items() if k != "ends"}
    _save(tmp_path / "old", {"buffer": old_format})
    restored = ckpt.restore(tmp_path / "old", 1, {"buffer": jax.eval_shape(_td_buffer)})[0]["buffer"]
    for name in ("obs", "action", "traj_id", "insert_pos", "size"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(buf, name))
    assert not restored.ends.final_valid.any() and not restored.ends.terminated.any()
    assert restored.ends.final_state.shape == (6, 2, 2) and not restored.ends.final_state.any()

    _save(tmp_path / "new", {"buffer": buf})
    restored = ckpt.restore(tmp_path / "new", 1, {"buffer": jax.eval_shape(_td_buffer)})[0]["buffer"]
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(buf), strict=True):
        np.testing.assert_array_equal(a, b)

    crl = insert(init_buffer(capacity=6, num_envs=2, obs_size=3, action_size=1), *_chunk(0, 6, 2))
    _save(tmp_path / "crl", {"buffer": crl})
    restored = ckpt.restore(tmp_path / "crl", 1, {"buffer": jax.eval_shape(lambda: crl)})[0]["buffer"]
    assert restored.ends is None
    np.testing.assert_array_equal(restored.obs, crl.obs)
    # Reading only what a checkpoint holds lets nothing else go missing unnoticed.
    with pytest.raises(ckpt.CheckpointError, match="does not fit this config"):
        ckpt.restore(tmp_path / "crl", 1, {"buffer": jax.eval_shape(lambda: crl), "rng": jax.random.PRNGKey(0)})
