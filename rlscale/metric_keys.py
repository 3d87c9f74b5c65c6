"""The metrics schema: the keys of a ``metrics.jsonl`` row and of ``rlscale eval``'s entries, the one place
they are spelled (docs/metrics.md). Writers (the trainer, ``rlscale.evaluation.rollout.summarize``) and readers (scores,
analysis, ``rlscale eval``, the sweep's summary) use these names. Plain strings: the launcher reads them
without JAX."""

EVAL_PREFIX = "eval/"  # an evaluation's per-episode means (rlscale.evaluation.rollout.summarize)
TRAINING_PREFIX = "training/"  # the SGD step's metrics, averaged over the epoch (an agent's sgd_step names them)

ENV_STEPS = "training/env_steps"  # env steps done when the row was written (the x axis of every curve)
SGD_STEPS = "training/sgd_steps"
ENV_SPS = "training/sps"  # env steps per second of the epoch, all the process's seeds together
SGD_SPS = "training/sgd_sps"

TIME_AT_GOAL = "eval/episode_success"  # steps at the goal in an episode (the score's numerator)
TIME_AT_GOAL_STDERR = "eval/episode_success_stderr"  # its standard error over the episodes
SUCCESS_ANY = "eval/episode_success_any"  # the fraction of episodes that were at the goal at least once
FINAL_DISTANCE = "eval/episode_dist"  # distance to the goal at the episode's last active step
EPISODE_LENGTH = "eval/avg_episode_length"  # steps before the episode ended (a fall ends it early)

# Per goal distance d (the stitching mazes; docs/metrics.md#per-goal-distance): "<key>_d<d>" and "<key>_d<d>_count".
GOAL_DISTANCE_SUFFIX = "_d"
COUNT_SUFFIX = "_count"

# The residual blocks' output norms: <prefix><network>/<block index> (docs/metrics.md#block-norms).
BLOCK_NORMS_PREFIX = "training/block_norms/"

# Time (docs/metrics.md#time).
EPOCH_SECONDS = "time/epoch_seconds"
EVAL_SECONDS = "time/eval_seconds"
COMPILE_SECONDS = "time/compile_seconds"
TRAINING_TIME = "walltime"  # training and evaluation seconds, summed over resumes (its earlier name kept)
WALLCLOCK = "time/wallclock_seconds"  # the run's real elapsed time, all its processes


def per_goal_distance(key: str, distance: int) -> str:
    """The key of ``key`` over the episodes whose goal was ``distance`` cells away."""
    return f"{key}{GOAL_DISTANCE_SUFFIX}{distance}"
