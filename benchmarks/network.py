"""SGD-step speed and compile time of the CRL update against depth, scanned vs unrolled blocks.

One SGD step = the full CRL update (actor, α and both critic encoders) on one minibatch, as in
training. For each depth it reports compile seconds (lower + compile of a jitted step) and SGD steps/s
(median of timed repeats after a warm-up), writing JSON to ``benchmarks/results/``.

    python benchmarks/network.py                          # depths 4 16 64 256 1024, batch 512, width 256
    python benchmarks/network.py --depths 4 16 --batch-size 64 --width 64 --steps 5
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np
from rlscale.envs.base import TaskSpec

from rlscale.agents.crl import CRL
from rlscale.config import TrainConfig
from rlscale.data.buffer import Transitions
from rlscale.networks import param_count
from rlscale.storage.run_dir import write_atomic

# Humanoid-sized inputs (docs/method.md#parameter-counts): state 268, goal 3, action 17.
SPEC = TaskSpec("humanoid_sized", 268, (0, 1, 2), 17, 0.5, 1000, "humanoid_sized")


def measure(depth: int, scan: bool, batch: int, width: int, steps: int, actor_depth: int | None = None) -> dict:
    cfg = TrainConfig(depth=depth, actor_depth=actor_depth, width=width, batch_size=batch, scan_blocks=scan)
    agent = CRL.build(cfg, SPEC)
    learner = agent.init(jax.random.PRNGKey(0))
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    batch_data = Transitions(
        state=jax.random.normal(k1, (batch, SPEC.state_size)),
        action=jax.random.uniform(k2, (batch, SPEC.action_size), minval=-1, maxval=1),
        goal=jax.random.normal(k3, (batch, SPEC.goal_size)),
    )
    t0 = time.perf_counter()
    step = jax.jit(agent.sgd_step).lower(learner, batch_data, jax.random.PRNGKey(2)).compile()
    compile_seconds = time.perf_counter() - t0
    learner, metrics = step(learner, batch_data, jax.random.PRNGKey(2))  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        learner, metrics = step(learner, batch_data, jax.random.PRNGKey(3 + i))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    return {
        "depth": depth,
        "actor_depth": actor_depth or depth,
        "scan_blocks": scan,
        "batch_size": batch,
        "width": width,
        "params": param_count((learner.actor_params, learner.critic_params)),
        "compile_seconds": compile_seconds,
        "sgd_steps_per_second": 1.0 / float(np.median(times)),
        "timed_steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 16, 64, 256, 1024])
    parser.add_argument("--max-unrolled-depth", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/network_<backend>.json)")
    args = parser.parse_args()

    results = []
    for depth in args.depths:
        # The paper's 1024-layer run used a 512-layer actor (a 1024-layer actor diverged).
        actor_depth = 512 if depth == 1024 else None
        for scan in (True, False):
            if not scan and depth > args.max_unrolled_depth:
                continue
            row = measure(depth, scan, args.batch_size, args.width, args.steps, actor_depth)
            results.append(row)
            print(
                f"depth {depth:5d} {'scanned ' if scan else 'unrolled'}  params {row['params']:>11,}  "
                f"compile {row['compile_seconds']:7.2f} s  {row['sgd_steps_per_second']:8.2f} SGD steps/s",
                flush=True,
            )
    device = jax.devices()[0]
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"network_{jax.default_backend()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "network",
        "machine": {"device": device.device_kind, "platform": platform.platform(), "processor": platform.processor(), "cpu_count": __import__("os").cpu_count()},
        "jax": jax.__version__,
        "results": results,
    }
    write_atomic(out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
