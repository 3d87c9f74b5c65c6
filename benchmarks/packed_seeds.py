"""What a packed seed costs: 8 seeds in one process against 8 single runs, per SGD step and per training step.

For each (depth, width) it times, interleaved call by call in one process (so every variant sees the same
machine load):

* ``single`` — one seed, the plain program (a run of its own);
* ``packed_one_thread`` — 8 seeds ``vmap``-ed into one program on one host thread (rlscale before seed
  groups);
* ``packed_threads`` — 8 seeds as ``--seed-threads`` groups (default: one per usable core), each group one
  ``vmap``-ed program on its own host thread (``rlscale.training.seed_groups``, what ``rlscale train --num-seeds 8``
  does now).

Two programs are timed: ``sgd`` — a ``lax.scan`` of K CRL SGD steps on a fixed minibatch; ``loop`` — the
whole training step (collect, insert, sample, the SGD steps) at the task's preset. The ratio reported is
``packed time / (8 x single time)``: 0.5 means a packed seed costs half a run of its own.

``--profile`` also records one XLA trace of the SGD program alone and packed and sums its operations' time
by kind, to show where a packed seed's time goes.

    python benchmarks/packed_seeds.py                        # depths 4 16 x widths 16 64, point_u_maze
    python benchmarks/packed_seeds.py --depths 16 --widths 16 --profile

Writes ``benchmarks/results/packed_seeds_<backend>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.speed import machine_info  # noqa: E402
from rlscale.config import config_for  # noqa: E402
from rlscale.data.buffer import Transitions  # noqa: E402
from rlscale.training.loop import _over_seeds  # noqa: E402
from rlscale.training.seed_groups import SeedGroups, default_seed_threads  # noqa: E402
from rlscale.training.trainer import Trainer  # noqa: E402

VARIANTS = ("single", "packed_one_thread", "packed_threads")


def minibatch(spec, batch_size: int, key):
    k1, k2, k3 = jax.random.split(key, 3)
    return Transitions(
        state=jax.random.normal(k1, (batch_size, spec.state_size)),
        action=jax.random.uniform(k2, (batch_size, spec.action_size), minval=-1, maxval=1),
        goal=jax.random.normal(k3, (batch_size, spec.goal_size)),
    )


class Variant:
    """One way to run ``num_seeds`` seeds of a program ``fn(state, key) -> (state, out)``: its groups, their
    compiled programs and their states."""

    def __init__(self, fn, init, num_seeds: int, threads: int):
        self.groups = SeedGroups(num_seeds, threads)
        self.programs = {}
        self.states = []
        for g, size in enumerate(self.groups.sizes):
            keys = jax.random.split(jax.random.PRNGKey(g), size)
            state = jax.jit(_over_seeds(init, size))(keys)
            if size not in self.programs:
                self.programs[size] = jax.jit(_over_seeds(fn, size), donate_argnums=0).lower(state, keys).compile()
            self.states.append(state)

    def call(self, i: int) -> float:
        t0 = time.perf_counter()
        keys = [jax.random.split(jax.random.PRNGKey(1000 + i), n) for n in self.groups.sizes]
        out = self.groups.run(lambda g, s, k: self.programs[self.groups.sizes[g]](s, k)[0], self.states, keys)
        self.states = out
        return time.perf_counter() - t0


def measure(args, depth: int, width: int) -> dict:
    cfg = config_for(args.env, depth=depth, width=width, batch_size=args.batch_size)
    trainer = Trainer(cfg)
    agent = trainer.agent
    batch = minibatch(trainer.spec, cfg.batch_size, jax.random.PRNGKey(7))

    def sgd(learner, key):
        def body(l, k):
            l, metrics = agent.sgd_step(l, batch, k)
            return l, metrics["critic_loss"]

        return jax.lax.scan(body, learner, jax.random.split(key, args.sgd_steps))

    def loop(state, key):
        return trainer.training_step(state, key)

    threads = args.threads or default_seed_threads(single_device=True)
    row = {"depth": depth, "width": width, "batch_size": cfg.batch_size, "num_seeds": args.num_seeds, "threads": threads,
           "sgd_steps_per_call": args.sgd_steps, "sgd_steps_per_training_step": cfg.sgd_steps_per_collection,
           "env_steps_per_training_step": cfg.num_envs * cfg.unroll_length}
    for name, fn, init in (("sgd", sgd, agent.init), ("loop", loop, trainer.init)):
        variants = {
            "single": Variant(fn, init, 1, 1),
            "packed_one_thread": Variant(fn, init, args.num_seeds, 1),
            "packed_threads": Variant(fn, init, args.num_seeds, min(threads, args.num_seeds)),
        }
        for v in variants.values():
            v.call(-1)  # warm-up
        times = {k: [] for k in variants}
        deadline = time.perf_counter() + args.budget_seconds
        i = 0
        while i < args.repeats and (i < 3 or time.perf_counter() < deadline):
            for k, v in variants.items():
                times[k].append(v.call(i))
            i += 1
        med = {k: float(np.median(t)) for k, t in times.items()}
        for v in variants.values():
            v.groups.close()
        per = args.sgd_steps if name == "sgd" else cfg.sgd_steps_per_collection
        row[name] = {
            "calls": i,
            **{f"{k}_ms_per_sgd_step": med[k] / per * 1e3 for k in variants},
            "ratio_packed_one_thread": med["packed_one_thread"] / (args.num_seeds * med["single"]),
            "ratio_packed_threads": med["packed_threads"] / (args.num_seeds * med["single"]),
        }
        print(f"depth {depth:>3} width {width:>3} {name:>4}: single {row[name]['single_ms_per_sgd_step']:.2f} ms, "
              f"ratio one thread {row[name]['ratio_packed_one_thread']:.3f}, {threads} threads {row[name]['ratio_packed_threads']:.3f}",
              flush=True)
    if args.profile:
        row["profile"] = {str(n): profile_by_kind(sgd, agent.init, n) for n in (1, args.num_seeds)}
    return row


def profile_by_kind(fn, init, num_seeds: int, calls: int = 3) -> dict:
    """Milliseconds per SGD step and operations per step of one XLA trace of the program on one thread,
    summed by kind of operation (the fusion's name without its number)."""
    v = Variant(fn, init, num_seeds, 1)
    v.call(-1)
    steps = calls * ARGS.sgd_steps
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for i in range(calls):
                v.call(i)
        events = json.load(gzip.open(glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)[0]))["traceEvents"]
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or name.startswith("$") or "Execute" in name or "Pjit" in name or name.startswith("end:"):
            continue
        kind = re.sub(r"\.\d+$", "", name)
        total[kind] += e["dur"] / 1e3 / steps
        count[kind] += 1 / steps
    top = total.most_common(12)
    return {"ms_per_step_all_ops": sum(total.values()),
            "top": [{"kind": k, "ms_per_step": t, "ops_per_step": count[k], "us_per_op": 1e3 * t / count[k]} for k, t in top]}


def cpu_model() -> dict:
    """The CPU's model and its widest vector instructions (XLA:CPU's kernels, and so timings, depend on them)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.*)$", info, re.M) or [None, ""])[1].split())
    return {"cpu_model": model.group(1) if model else None, "avx2": "avx2" in flags, "avx512f": "avx512f" in flags}


def markdown(rows: list[dict]) -> str:
    lines = ["| depth | width | program | single (ms / SGD step) | packed, 1 thread ÷ 8 singles | packed, threads ÷ 8 singles |",
             "|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        for name in ("sgd", "loop"):
            m = r[name]
            lines.append(f"| {r['depth']} | {r['width']} | {name} | {m['single_ms_per_sgd_step']:.2f} | "
                         f"{m['ratio_packed_one_thread']:.3f} | {m['ratio_packed_threads']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="point_u_maze")
    p.add_argument("--depths", type=int, nargs="+", default=[4, 16])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-seeds", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="seed groups of the threaded variant (default: one per core)")
    p.add_argument("--sgd-steps", type=int, default=50, help="SGD steps per timed call of the sgd program")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--budget-seconds", type=float, default=40.0, help="stop repeating (after 3) past this per program")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out", default=None)
    ARGS = args = p.parse_args(argv)
    rows = [measure(args, d, w) for d in args.depths for w in args.widths]
    payload = {"machine": {**machine_info(), **cpu_model()}, "backend": jax.default_backend(), "env": args.env,
               "date": time.strftime("%Y-%m-%d"), "rows": rows}
    out = Path(args.out or Path(__file__).parent / "results" / f"packed_seeds_{jax.default_backend()}.json")
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, out)
    print(markdown(rows))
    print(f"wrote {out}")


ARGS: argparse.Namespace


if __name__ == "__main__":
    main()
