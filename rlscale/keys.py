"""The run's RNG scheme: every random draw of a run derives from its seed through these keys, so a resumed
run draws what an uninterrupted one would, and ``rlscale eval`` (``rlscale.evaluation.evaluate``) reproduces an
epoch's evaluation with :func:`eval_key`. Light on purpose: evaluation imports it, not the trainer."""

from __future__ import annotations

import jax

RUN_KEYS = ("init", "train", "eval", "refill")


def run_keys(seed: int) -> dict[str, jax.Array]:
    """The root keys of a run; every random draw of training and evaluation derives from these."""
    return dict(zip(RUN_KEYS, jax.random.split(jax.random.PRNGKey(seed), len(RUN_KEYS))))


def eval_key(seed: int, epoch_index: int) -> jax.Array:
    """The key of the evaluation after epoch ``epoch_index`` (0-based) of a run with this seed."""
    return jax.random.fold_in(run_keys(seed)["eval"], epoch_index)
