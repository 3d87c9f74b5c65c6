"""What a stop boundary at every training step costs: an epoch trained as one compiled call per training
step (``--steps-per-call 1``, the default, so that a SIGTERM saves within one step) against one call for the
whole epoch (``--steps-per-call`` = the epoch's steps, the loop before stops inside epochs). Each call is
waited for and its metrics read back, as the training loop does; the two take turns, epoch by epoch, on the
same state and keys, and must end with identical parameters.

    python benchmarks/steps_per_call.py                   # the depth-effect study's point U-maze run, depth 4 and 16
    python benchmarks/steps_per_call.py --epochs 3        # fewer timed epochs

Writes ``benchmarks/results/steps_per_call_<backend>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from rlscale.config import config_for
from rlscale.storage.run_dir import write_atomic
from rlscale.training.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results"


def time_epoch(program, state, step_keys, steps_per_call: int):
    """``(state, seconds)`` of one epoch as calls of ``steps_per_call`` steps, each waited for."""
    start = time.perf_counter()
    for first in range(0, len(step_keys), steps_per_call):
        state, metrics, finite = program(state, step_keys[first:first + steps_per_call])
        jax.device_get((metrics, finite))
    return state, time.perf_counter() - start


def measure(depth: int, epochs: int) -> dict:
    # The pre-registered depth-effect study's setting (benchmarks/depth_effect_cpu.md), 1 M env steps.
    cfg = config_for("point_u_maze", depth=depth, width=16, batch_size=256, total_env_steps=1_000_000)
    trainer = Trainer(cfg)
    steps = trainer.plan.training_steps_per_epoch
    initial = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    program = jax.jit(trainer.training_steps, donate_argnums=0)
    states = {n: jax.tree.map(lambda x: x.copy(), initial) for n in (1, steps)}
    seconds = {1: [], steps: []}
    for epoch in range(epochs + 1):  # the first epoch compiles: not timed
        step_keys = trainer.epoch_step_keys(jax.random.PRNGKey(100 + epoch))
        for n in ((1, steps) if epoch % 2 else (steps, 1)):  # alternate who goes first
            states[n], took = time_epoch(program, states[n], step_keys, n)
            if epoch:
                seconds[n].append(took)
    same = all(bool(np.array_equal(a, b)) for a, b in zip(jax.tree.leaves(states[1].learner), jax.tree.leaves(states[steps].learner)))
    ratios = [a / b for a, b in zip(seconds[1], seconds[steps])]
    return {"depth": depth, "training_steps_per_epoch": steps, "sgd_steps_per_training_step": cfg.sgd_steps_per_collection,
            "epoch_seconds_per_step_calls": seconds[1], "epoch_seconds_one_call": seconds[steps],
            "ratio_median": statistics.median(ratios), "ratios": ratios, "identical_parameters": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    rows = []
    for depth in args.depths:
        row = measure(depth, args.epochs)
        print(f"depth {depth}: {row['training_steps_per_epoch']} training steps per epoch; per-step calls / one call "
              f"= {row['ratio_median']:.3f} (median of {len(row['ratios'])}: {', '.join(f'{r:.3f}' for r in row['ratios'])}); "
              f"identical parameters: {row['identical_parameters']}")
        rows.append(row)
    device = jax.devices()[0]
    out = RESULTS / f"steps_per_call_{jax.default_backend()}.json"
    write_atomic(out, json.dumps({"machine": {"device_kind": device.device_kind, "processor": platform.processor(),
                                              "jax": jax.__version__},
                                  "results": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
