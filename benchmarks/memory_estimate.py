"""The dry run's peak-memory estimate (``rlscale.training.estimates``) against XLA's memory analysis of the
compiled training program (one call of one training step), as the trainer compiles it (state donated): arguments + outputs − aliased +
temporaries. Compiles for the local backend; nothing is allocated.

    python benchmarks/memory_estimate.py                       # the paper's humanoid at depth 64 and 1024/512
    python benchmarks/memory_estimate.py --cases point16       # one small case

Writes ``benchmarks/results/memory_estimate_<backend>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import jax

from rlscale.config import config_for
from rlscale.storage.run_dir import write_atomic
from rlscale.training.estimates import GIB, estimate, xla_training_memory

PAPER = dict(batch_size=512, num_envs=512, max_replay_size=10_000)
CASES = {
    "humanoid_d64": ("humanoid", dict(depth=64, **PAPER)),
    "humanoid_d1024_a512": ("humanoid", dict(depth=1024, actor_depth=512, **PAPER)),
    "point16": ("point_u_maze", dict(depth=16, batch_size=256, num_envs=64, max_replay_size=1000)),
    "point16_td3": ("point_u_maze", dict(algo="td3_her", depth=16, batch_size=256, num_envs=64, max_replay_size=1000)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["humanoid_d64", "humanoid_d1024_a512"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for name in args.cases:
        env, options = CASES[name]
        cfg = config_for(env, **options)
        ours = estimate(cfg)
        xla = xla_training_memory(cfg)
        row = {"case": name, "env": env, **options, "estimate_bytes": ours.peak_bytes,
               "estimate_parts": {"state": ours.state_bytes, "buffer": ours.buffer_bytes,
                                  "minibatches": ours.minibatch_bytes, "sgd_step": ours.sgd_bytes},
               "xla": xla, "estimate_over_xla": ours.peak_bytes / xla["peak_bytes"]}
        rows.append(row)
        print(f"{name}: estimate {ours.peak_bytes / GIB:.2f} GiB, XLA {xla['peak_bytes'] / GIB:.2f} GiB "
              f"(temporaries {xla['temp_size_in_bytes'] / GIB:.2f}), ratio {row['estimate_over_xla']:.3f}", flush=True)
    backend = jax.default_backend()
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"memory_estimate_{backend}.json"
    payload = {"benchmark": "memory_estimate", "machine": {"device_kind": jax.devices()[0].device_kind,
                                                         "platform": platform.platform()},
               "jax": jax.__version__, "results": rows}
    write_atomic(out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
