"""Shared settings for tests that train."""

import time

import numpy as np

# A run small enough to train three epochs in seconds on a CPU.
TINY = dict(
    env="point_u_maze",
    episode_length=20,
    num_envs=4,
    unroll_length=10,
    sgd_steps_per_collection=4,
    batch_size=32,
    max_replay_size=100,
    min_replay_size=20,
    total_env_steps=320,  # 80 prefill + 3 epochs × 2 training steps × 40
    num_evals=3,
    num_eval_envs=4,
    width=32,
    tensorboard=False,
)

TIMING_KEYS = ("training/sps", "training/sgd_sps", "time/epoch_seconds", "time/eval_seconds", "time/compile_seconds", "walltime",
               "time/wallclock_seconds")


def without_timing(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


def assert_rows_close(rows, reference, rtol=1e-4, batch_size=TINY["batch_size"]):
    """Metrics rows equal to ``reference`` but for timings and float rounding: the same keys, values to
    ``rtol``. Rounding differs between programs (vmapped, sharded, fused) and between CPUs (XLA emits
    other instructions with and without AVX2), so numbers stored on one machine match another's only so."""
    assert len(rows) == len(reference)
    for row, ref in zip(rows, reference):
        row, ref = without_timing(row), without_timing(ref)
        assert row.keys() == ref.keys()
        for key in ref:
            # An argmax hit rate: a near-tie of two logits whose last bits differ can flip one sample;
            # allow two samples of a minibatch.
            atol = 2 / batch_size if key.endswith("categorical_accuracy") else 1e-5
            np.testing.assert_allclose(row[key], ref[key], rtol=rtol, atol=atol, err_msg=key)


def learn_point_u_maze(run_dir, **overrides):
    """The learning tests' run: depth 4, width 64, 650 k env steps on point_u_maze with its CPU preset;
    ``(metrics rows, seconds)``."""
    from rlscale.config import config_for
    from rlscale.storage import run_dir as rd
    from rlscale.training.loop import train

    cfg = config_for(
        "point_u_maze", depth=4, width=64, total_env_steps=650_000, num_evals=13, seed=0,
        run_dir=str(run_dir), tensorboard=False, **overrides,
    )
    assert cfg.batch_size == 256 and cfg.episode_length == 100  # the preset
    start = time.perf_counter()
    run = train(cfg)
    return rd.read_metrics(run), time.perf_counter() - start


class Countdown:
    """A task whose episode n ends (terminates) at step ``lifetime[n]`` (1 to 7, drawn at reset); success
    at even steps, distance = steps taken."""

    def __init__(self):
        from rlscale.envs.base import TaskSpec

        self.spec = TaskSpec(name="countdown", state_size=1, goal_indices=(0,), action_size=1,
                             success_threshold=0.5, episode_length=10, eval_task="countdown")

    def _state(self, t, lifetime, action_sum):
        import jax.numpy as jnp
        from rlscale.envs.base import TaskState

        return TaskState(sim={"t": t, "lifetime": lifetime, "action_sum": action_sum},
                         obs=jnp.stack([t.astype(jnp.float32), jnp.float32(0.0)]), goal=jnp.zeros(1),
                         reward=jnp.float32(0.0), terminated=t >= lifetime,
                         metrics={"success": (t % 2 == 0).astype(jnp.float32), "dist": t.astype(jnp.float32),
                                  "action": action_sum})

    def reset(self, key):
        import jax
        import jax.numpy as jnp

        return self._state(jnp.int32(0), jax.random.randint(key, (), 1, 8), jnp.float32(0.0))

    def step(self, state, action):
        return self._state(state.sim["t"] + 1, state.sim["lifetime"], action[0])
