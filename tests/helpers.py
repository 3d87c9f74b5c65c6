"""Shared settings for tests that train."""

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

TIMING_KEYS = ("training/sps", "training/sgd_sps", "time/epoch_seconds", "time/eval_seconds", "time/compile_seconds", "walltime")


def without_timing(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}
