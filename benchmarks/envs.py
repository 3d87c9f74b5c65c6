"""Environment speed: env steps/s of every registered task at 1, 64 and 1024 parallel envs.

Each measurement jits one rollout of ``--steps`` env steps, ``lax.scan`` over
:meth:`envs.EpisodeEnv.step_batch` (the training collector's step: uniform random actions here, fresh-goal
auto-reset), compiles it ahead of time
(``compile_seconds``), then calls it repeatedly (the state carried over; one warm-up call) until
``--min-seconds`` have passed (at least 3 calls); steps/s = envs × steps / the median call's seconds.

For ``ant`` and ``humanoid`` it also times, at each batch size and interleaved call by call (so that load
from other processes hits them alike), the same rollout of

* ``bare_brax``: brax's own ``Ant`` / ``Humanoid`` env step (spring, same substep count, no goal, no
  auto-reset). The ant is the same model; brax's humanoid is not: ours lets every body geom touch the
  floor (docs/tasks.md#humanoid), 29 floor contacts instead of brax's 2 (feet only);
* ``task_step``: our task's ``step`` alone (no episode bookkeeping);
* ``physics``: our model's Brax pipeline step alone (no observation, reward or bookkeeping),

* ``reset_every_step``: the wrapped step with an episode length of 1 (fresh resets drawn at every step),

and reports ``overhead_vs_bare_brax`` = bare-Brax steps/s ÷ wrapped steps/s − 1, and
``overhead_vs_own_physics`` = physics steps/s ÷ wrapped steps/s − 1 (what the task and the wrapper cost on
top of stepping the same model). For these the wrapped rate is amortised: the steps where episodes end
(one in ``episode_length``) are charged at the ``reset_every_step`` rate, since a timed window of a few
hundred steps holds none.

    python benchmarks/envs.py                                      # every task, 1 64 1024 envs
    python benchmarks/envs.py --tasks ant humanoid --num-envs 1 64 --steps 50
    python benchmarks/envs.py --skip-eval-layouts --max-steps-1024 20

Writes JSON to ``benchmarks/results/envs_<jax backend>.json`` (``--out`` to change), naming the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from rlscale.envs.wrappers import EpisodeEnv

from rlscale import envs
from rlscale.storage.run_dir import write_atomic

BARE_BRAX = {"ant": "ant", "humanoid": "humanoid"}  # our task -> brax.envs name


def _compile_rollout(
    init: Callable[[jax.Array], Any], batch_step: Callable[[Any, jax.Array], Any], action_size: int, num_envs: int, steps: int
):
    """Initial states and a compiled rollout of ``steps`` steps of ``batch_step`` (all ``num_envs`` envs at once)."""

    def rollout(state, key):
        def body(s, k):
            action = jax.random.uniform(k, (num_envs, action_size), minval=-1.0, maxval=1.0)
            return batch_step(s, action), None

        state, _ = jax.lax.scan(body, state, jax.random.split(key, steps))
        return state

    state = jax.jit(jax.vmap(init))(jax.random.split(jax.random.PRNGKey(0), num_envs))
    t0 = time.perf_counter()
    compiled = jax.jit(rollout).lower(state, jax.random.PRNGKey(1)).compile()
    return state, compiled, time.perf_counter() - t0


class _Timer:
    """Calls a compiled rollout (state carried over) and keeps each call's seconds."""

    def __init__(self, kind: str, init, batch_step, action_size: int, num_envs: int, steps: int):
        self.kind, self.num_envs, self.steps = kind, num_envs, steps
        self.state, self.compiled, self.compile_seconds = _compile_rollout(init, batch_step, action_size, num_envs, steps)
        self.key = jax.random.PRNGKey(2)
        self.seconds: list[float] = []

    def call(self) -> None:
        self.key, k = jax.random.split(self.key)
        t0 = time.perf_counter()
        self.state = self.compiled(self.state, k)
        jax.block_until_ready(self.state)
        self.seconds.append(time.perf_counter() - t0)

    def row(self, task: str) -> dict:
        floats = [np.asarray(x) for x in jax.tree.leaves(self.state) if jnp.issubdtype(x.dtype, jnp.floating)]
        return {
            "task": task,
            "kind": self.kind,
            "num_envs": self.num_envs,
            "steps_per_call": self.steps,
            "calls": len(self.seconds),
            "compile_seconds": round(self.compile_seconds, 2),
            # The median call: robust to other processes on a shared machine.
            "steps_per_second": self.num_envs * self.steps / float(np.median(self.seconds)),
            "finite": bool(all(np.isfinite(x).all() for x in floats)),
        }


def measure(name: str, num_envs: int, steps: int, min_seconds: float, max_calls: int, overhead: bool) -> list[dict]:
    """The wrapped rollout of a task; with ``overhead`` (ant, humanoid) also the bare Brax env and our task's
    step alone, their calls interleaved so that load from other processes hits all three alike."""
    task = envs.make(name)
    env = EpisodeEnv(task)
    size = task.spec.action_size
    timers = [_Timer("wrapped", env.reset, lambda s, a: env.step_batch(s, a)[0], size, num_envs, steps)]
    if overhead:
        from brax import envs as brax_envs

        bare = brax_envs.get_environment(BARE_BRAX[name], backend="spring")
        timers.append(_Timer("bare_brax", bare.reset, jax.vmap(bare.step), size, num_envs, steps))
        timers.append(_Timer("task_step", task.reset, jax.vmap(task.step), size, num_envs, steps))
        # Our model's physics alone (pipeline step, no observation, reward or bookkeeping).
        scale = getattr(task, "_ctrl_high", 1.0)  # humanoid: ctrl = 0.4·a

        def physics_step(sim, action):
            return task.pipeline.pipeline_step(sim, action * scale)

        timers.append(_Timer("physics", lambda k: task.reset(k).sim, jax.vmap(physics_step), size, num_envs, steps))
        # Every env ending its episode at every step: the price of the steps where fresh resets are drawn.
        every_step = EpisodeEnv(task, episode_length=1)
        timers.append(_Timer("reset_every_step", every_step.reset, lambda s, a: every_step.step_batch(s, a)[0], size, num_envs, steps))
    for timer in timers:
        timer.call()  # warm-up, not counted
        timer.seconds.clear()
    while len(timers[0].seconds) < max_calls and (len(timers[0].seconds) < 3 or sum(timers[0].seconds) < min_seconds):
        for timer in timers:
            timer.call()
    rows = [t.row(name) for t in timers]
    if overhead:
        rate = {r["kind"]: r["steps_per_second"] for r in rows}
        # The timed window holds no episode end (fewer steps than an episode), so add the reset steps'
        # cost at their real frequency, one step in episode_length.
        length = env.episode_length
        amortized = 1.0 / ((length - 1) / length / rate["wrapped"] + 1 / length / rate["reset_every_step"])
        rows[0]["amortized_steps_per_second"] = amortized
        rows[0]["overhead_vs_bare_brax"] = rate["bare_brax"] / amortized - 1
        rows[0]["overhead_vs_own_physics"] = rate["physics"] / amortized - 1
        rows[0]["overhead_task_step_vs_own_physics"] = rate["physics"] / rate["task_step"] - 1
    return rows


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every registered task")
    parser.add_argument("--skip-eval-layouts", action="store_true", help="skip *_eval tasks (same model as their train layout)")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--steps", type=int, default=100, help="env steps per timed call")
    parser.add_argument("--max-steps-1024", type=int, default=None, help="cap the steps per call at 1024 envs and more")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="time calls until at least this long (≥ 3 calls)")
    parser.add_argument("--max-calls", type=int, default=20)
    parser.add_argument("--no-overhead", action="store_true", help="skip the bare-Brax comparison for ant and humanoid")
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/envs_<backend>.json)")
    args = parser.parse_args()

    names = args.tasks or envs.names()
    if args.skip_eval_layouts:
        names = [n for n in names if not n.endswith("_eval")]
    load_before = os.getloadavg()
    results = []
    for name in names:
        for n in args.num_envs:
            steps = args.steps if n < 1024 or args.max_steps_1024 is None else min(args.steps, args.max_steps_1024)
            rows = measure(name, n, steps, args.min_seconds, args.max_calls, name in BARE_BRAX and not args.no_overhead)
            for row in rows:
                results.append(row)
                extra = ""
                if "overhead_vs_bare_brax" in row:
                    extra = f"  overhead vs bare Brax {row['overhead_vs_bare_brax']:+.1%}, vs own physics {row['overhead_vs_own_physics']:+.1%}"
                print(
                    f"{name:24s} {row['kind']:9s} envs {n:5d}  compile {row['compile_seconds']:7.1f} s  "
                    f"{row['steps_per_second']:12,.0f} steps/s{extra}",
                    flush=True,
                )
    device = jax.devices()[0]
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"envs_{jax.default_backend()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "envs",
        "machine": {
            "device": device.device_kind,
            "platform": platform.platform(),
            "processor": platform.processor() or _cpu_model(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "jax": jax.__version__,
        "settings": vars(args),
        "results": results,
    }
    write_atomic(out, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
