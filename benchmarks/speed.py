"""Training speed of the paper's implementation ("baseline") against ours ("fast"), depth by depth.

Modes (all at the same depth, width, batch):

* ``baseline`` — the paper's choices: Python-unrolled residual blocks, float32 everywhere, no remat
  (``TrainConfig(scan_blocks=False, dtype="float32", remat=False)``).
* ``fast`` — rlscale's defaults: blocks under ``nn.scan`` with ``--fast-unroll`` blocks per scan
  iteration, rematerialised blocks keeping only the matrix products (``--fast-remat dots``), and
  ``--fast-dtype`` products (auto: bfloat16 on a GPU, float32 on a CPU, whose bfloat16 matmuls are slower).
* ``fast_other`` (``--also-other-dtype``) — the fast mode with the other dtype of products.
* ``fast_u<N>`` (``--unrolls``) — the fast mode at other scan unroll factors (SGD step only), to choose
  the default from data.

``--modes`` picks among baseline and fast (default both). ``--algos`` (default ``crl``) adds an
algorithm axis: CRL against the baselines (``rlscale.agents``: sac, sac_her, td3_her, gcsl; gcbc's
SGD step only, as it trains from a dataset). Every algorithm runs at the SAME settings given here (width,
batch, K, envs, unroll length, SGD steps per collection, replay sizes), not at its training defaults
(``config_for``'s algorithm defaults would double the TD baselines' SGD steps and set batch 256), so the
per-step costs compare at equal work; the algorithm defaults that remain (learning rates, target entropy,
relabel probability) change values, not the cost of a step. With several algorithms every row is
also divided by the reference algorithm's row of the same depth and mode (``algo_ratios``): CRL when it
is among ``--algos``, else the first of them.

Per (depth, algorithm, mode) it measures, each in a fresh subprocess (so peak memory and compile caches
do not mix): SGD steps/s (a jitted ``lax.scan`` of K ``sgd_step`` of the algorithm on one humanoid-sized
minibatch of its type: ``Transitions`` or, for the TD baselines, ``TDTransitions``),
whole-loop env steps/s (``Trainer.training_step`` at the paper's 1:40 update-to-data ratio, or a
proportionally scaled-down one), compile seconds of both programs, peak device memory (GPU) or peak
process RSS (CPU), and MFU against the device's measured matmul peak. The runs of one depth (each
algorithm's modes in turn) run back to back (``--pairs`` repeats them, interleaved; medians are reported).

    python benchmarks/speed.py                                  # all depths, paper UTD, humanoid (GPU)
    python benchmarks/speed.py --depths 4 16 --env point_u_maze --num-envs 64 --unroll-length 31 \\
        --sgd-steps-per-collection 50 --episode-length 50 --min-replay-size 50
    python benchmarks/speed.py --depths 16 64 --unrolls 1 2 4 --skip-loop   # choose the scan unroll
    python benchmarks/speed.py --depths 4 --num-seeds-check                 # 4 vmapped seeds vs 1
    python benchmarks/speed.py --depths 4 64 --modes fast --algos crl sac_her --env point_u_maze \\
        --num-envs 64 --unroll-length 31 --sgd-steps-per-collection 50 --episode-length 100 \\
        --min-replay-size 100 --batch-size 256                              # SAC+HER ÷ CRL per depth

Writes ``benchmarks/results/speed_<backend>.json`` (``--out``) and prints a markdown table
(``--markdown PATH`` also writes it; with several algorithms it has an algo column and their ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from rlscale.agents import names as algorithm_names  # noqa: E402 (after the path set-up above)

RESULT_PREFIX = "SPEED_JSON "  # marks the one result line a child prints among any log output
DEPTHS = [4, 16, 64, 256, 1024]
MODES = ("baseline", "fast")  # --modes; fast_other comes with --also-other-dtype, fast_u<N> with --unrolls


# --- configuration of one mode ------------------------------------------------------------------


def actor_depth_for(depth: int) -> int:
    # The paper's 1024-layer run used a 512-layer actor (a 1024-layer actor diverged).
    return 512 if depth == 1024 else depth


OTHER_DTYPE = {"float32": "bfloat16", "bfloat16": "float32"}


def mode_knobs(mode: str, unroll: int, remat: str, fast_dtype: str) -> dict:
    """The TrainConfig fields that differ between modes."""
    if mode == "baseline":
        return {"scan_blocks": False, "dtype": "float32", "remat": False, "scan_unroll": 1}
    dtype = fast_dtype if mode == "fast" else OTHER_DTYPE[fast_dtype]
    return {"scan_blocks": True, "dtype": dtype, "remat": remat != "off", "remat_policy": "full" if remat == "full" else "dots",
            "scan_unroll": unroll}


# --- measurements inside one child process ------------------------------------------------------


def _memory() -> dict:
    import jax

    stats = None
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # some backends raise instead of returning None
        stats = None
    return {
        "peak_device_bytes": int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None,
        # Linux reports ru_maxrss in KiB. Process-wide: this is why each measurement has its own process.
        "peak_process_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def _timed_calls(fn, state, keys):
    """Call ``fn(state, key)`` once per key, threading the state; wall seconds of each call."""
    import jax

    times = []
    for key in keys:
        t0 = time.perf_counter()
        state, out = fn(state, key)
        jax.block_until_ready((state, out))
        times.append(time.perf_counter() - t0)
    return state, times


def budgeted_repeats(repeats: int, budget_seconds: float, call_seconds: float) -> int:
    """At most ``repeats`` timed calls, fewer (at least 1) when they would exceed the time budget
    (deep networks on a CPU take tens of seconds per SGD step)."""
    if budget_seconds <= 0:
        return repeats
    return max(1, min(repeats, int(budget_seconds // max(call_seconds, 1e-9))))


def random_minibatch(algo: str, batch_size: int, spec, key):
    """A random minibatch of ``algo``'s type: ``TDTransitions`` (random next state, rewards in {0, 1},
    nothing terminal) for the TD baselines, ``Transitions`` for the others."""
    import jax
    import jax.numpy as jnp

    from rlscale.data.buffer import TDTransitions, Transitions

    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    state = jax.random.normal(k1, (batch_size, spec.state_size))
    action = jax.random.uniform(k2, (batch_size, spec.action_size), minval=-1, maxval=1)
    goal = jax.random.normal(k3, (batch_size, spec.goal_size))
    from rlscale import agents

    # A learner of next states (SAC, TD3) takes TD transitions (s, a, s', g, r, terminated); the others (s, a, g).
    if not agents.get(algo).agent.needs_next_state:
        return Transitions(state=state, action=action, goal=goal)
    return TDTransitions(
        state=state, action=action, next_state=jax.random.normal(k4, (batch_size, spec.state_size)), goal=goal,
        reward=jax.random.bernoulli(k5, 0.5, (batch_size,)).astype(jnp.float32),
        terminated=jnp.zeros((batch_size,), bool),
    )


def measure_sgd(args, depth: int, knobs: dict, algo: str = "crl") -> dict:
    """SGD steps/s of a jitted lax.scan of K sgd_steps of ``algo`` on a fixed minibatch (dispatch amortised
    over K). The config is TrainConfig's defaults plus the settings given, for every algorithm alike."""
    import jax

    from benchmarks.network import SPEC
    from rlscale import agents
    from rlscale.config import TrainConfig
    from rlscale.flops import cost_analysis_flops
    from rlscale.sizes import sgd_step_flops

    actor_depth = actor_depth_for(depth)
    cfg = TrainConfig(algo=algo, depth=depth, actor_depth=actor_depth, width=args.width, batch_size=args.batch_size, **knobs)
    agent = agents.build(cfg, SPEC)
    learner = jax.jit(agent.init)(jax.random.PRNGKey(0))
    batch = random_minibatch(algo, args.batch_size, SPEC, jax.random.PRNGKey(1))
    steps = args.sgd_steps_per_call

    def k_steps(learner, batch, key):
        def body(learner, step_key):
            learner, metrics = agent.sgd_step(learner, batch, step_key)
            return learner, metrics["critic_loss"] if "critic_loss" in metrics else metrics["actor_loss"]

        return jax.lax.scan(body, learner, jax.random.split(key, steps))

    key = jax.random.PRNGKey(2)
    t0 = time.perf_counter()
    lowered = jax.jit(k_steps, donate_argnums=0).lower(learner, batch, key)
    compiled = lowered.compile()
    compile_seconds = time.perf_counter() - t0
    # XLA's count of one step, from the un-scanned step's HLO (cheap: no compile). Loops in it (the
    # scanned blocks) are counted once, so it undercounts the fast mode; kept as a secondary figure.
    try:
        xla_step_flops = cost_analysis_flops(jax.jit(agent.sgd_step).lower(learner, batch, key).cost_analysis())
    except Exception as exc:  # cost analysis is best-effort across JAX versions
        xla_step_flops = None
        print(f"cost analysis failed: {exc!r}", file=sys.stderr)
    call = lambda state, k: compiled(state, batch, k)  # noqa: E731
    learner, warm = _timed_calls(call, learner, [jax.random.PRNGKey(3)])  # warm-up
    repeat_keys = [jax.random.PRNGKey(10 + i) for i in range(budgeted_repeats(args.sgd_repeats, args.budget_seconds, warm[0]))]
    learner, times = _timed_calls(call, learner, repeat_keys)
    step_seconds = float(np.median(times)) / steps
    analytic = sgd_step_flops(cfg, SPEC)
    return {
        "sgd_compile_seconds": compile_seconds,
        "sgd_step_seconds": step_seconds,
        "sgd_steps_per_second": 1.0 / step_seconds,
        "sgd_call_seconds": times,
        "sgd_steps_per_call": steps,
        "flops_per_sgd_step_analytic": analytic["total"],
        "flops_per_sgd_step_xla": xla_step_flops,
    }


def loop_config(args, depth: int, knobs: dict, algo: str = "crl"):
    """The whole loop's config. Batch size, SGD steps per collection and the other loop settings are given
    explicitly, so config_for's algorithm defaults (which change only options not given) leave them as
    they are for every algorithm; what they still set (learning rates, target entropy, relabel
    probability) does not change the cost of a step."""
    from rlscale.config import config_for

    return config_for(
        args.env,
        algo=algo,
        depth=depth,
        actor_depth=actor_depth_for(depth),
        width=args.width,
        batch_size=args.batch_size,
        num_envs=args.num_envs,
        unroll_length=args.unroll_length,
        sgd_steps_per_collection=args.sgd_steps_per_collection,
        min_replay_size=args.min_replay_size,
        max_replay_size=args.max_replay_size,
        episode_length=args.episode_length,
        **knobs,
    )


def measure_loop(args, depth: int, knobs: dict, algo: str = "crl") -> dict:
    """Env steps/s of the whole training step: collect, insert, sample, scan the SGD steps."""
    import jax

    from rlscale.training.trainer import Trainer

    cfg = loop_config(args, depth, knobs, algo)
    trainer = Trainer(cfg)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    step = jax.jit(trainer.training_step, donate_argnums=0).lower(state, jax.random.PRNGKey(1)).compile()
    compile_seconds = time.perf_counter() - t0
    state, warm = _timed_calls(step, state, [jax.random.PRNGKey(2)])  # warm-up
    repeats = budgeted_repeats(args.loop_repeats, args.budget_seconds, warm[0])
    state, times = _timed_calls(step, state, [jax.random.PRNGKey(10 + i) for i in range(repeats)])
    seconds = float(np.median(times))
    env_steps = trainer.plan.env_steps_per_training_step
    return {
        "loop_compile_seconds": compile_seconds,
        "loop_step_seconds": seconds,
        "loop_call_seconds": times,
        "env_steps_per_training_step": env_steps,
        "sgd_steps_per_training_step": cfg.sgd_steps_per_collection,
        "env_steps_per_second": env_steps / seconds,
        "loop_sgd_steps_per_second": cfg.sgd_steps_per_collection / seconds,
    }


def measure_seeds(args) -> dict:
    """One training step of ``--num-seeds-count`` vmapped seeds against 1 seed, fast mode, depth 4, calls
    interleaved."""
    import jax

    from rlscale.training.trainer import Trainer

    depth, seeds = 4, args.num_seeds_count
    trainer = Trainer(loop_config(args, depth, mode_knobs("fast", args.fast_unroll, args.fast_remat, args.fast_dtype), "crl"))
    one = jax.jit(trainer.init)(jax.random.PRNGKey(0))
    many = jax.jit(jax.vmap(trainer.init))(jax.random.split(jax.random.PRNGKey(0), seeds))
    step_one = jax.jit(trainer.training_step, donate_argnums=0).lower(one, jax.random.PRNGKey(1)).compile()
    many_keys = jax.random.split(jax.random.PRNGKey(1), seeds)
    step_many = jax.jit(jax.vmap(trainer.training_step), donate_argnums=0).lower(many, many_keys).compile()
    one, _ = _timed_calls(step_one, one, [jax.random.PRNGKey(2)])  # warm-ups
    many, _ = _timed_calls(step_many, many, [many_keys])
    t_one, t_many = [], []
    for i in range(args.loop_repeats):  # interleaved: both see the same machine load
        one, t = _timed_calls(step_one, one, [jax.random.PRNGKey(20 + i)])
        t_one += t
        many, t = _timed_calls(step_many, many, [jax.random.split(jax.random.PRNGKey(20 + i), seeds)])
        t_many += t
    return {
        "depth": depth,
        "mode": "fast",
        "num_seeds": seeds,
        "one_seed_seconds": float(np.median(t_one)),
        "many_seeds_seconds": float(np.median(t_many)),
        "time_ratio": float(np.median(t_many) / np.median(t_one)),
        "one_seed_call_seconds": t_one,
        "many_seeds_call_seconds": t_many,
        **_memory(),
    }


def measure_peak(args) -> dict:
    """Best-of-N seconds of a large square matmul in float32 and bfloat16: the machine's matmul peak."""
    import jax
    import jax.numpy as jnp

    n = args.peak_matmul_size or (8192 if jax.default_backend() == "gpu" else 2048)
    out = {"matmul_size": n}
    for dtype in ("float32", "bfloat16"):
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.dtype(dtype))
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.dtype(dtype))
        # Accumulate several products per call so dispatch does not count (matters on the GPU).
        reps = 10 if jax.default_backend() == "gpu" else 1
        f = jax.jit(lambda a, b: sum(jnp.dot(a + i, b) for i in range(reps)))
        f(a, b).block_until_ready()
        best = float("inf")
        for _ in range(args.peak_repeats):
            t0 = time.perf_counter()
            f(a, b).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        out[f"{dtype}_flops_per_second"] = reps * 2 * n**3 / best
    return out


def child_main(args) -> None:
    import jax

    result: dict = {}
    try:
        if args.one == "peak":
            result = measure_peak(args)
        elif args.one == "seeds":
            result = measure_seeds(args)
        else:
            knobs = mode_knobs(args.mode, args.unroll, args.fast_remat, args.fast_dtype)
            result = {"depth": args.depth, "actor_depth": actor_depth_for(args.depth), "algo": args.algo,
                      "mode": args.mode, **knobs}
            result.update(measure_sgd(args, args.depth, knobs, args.algo))
            if args.skip_loop_here:
                result["loop_skipped"] = args.skip_loop_here
            else:
                result.update(measure_loop(args, args.depth, knobs, args.algo))
            result.update(_memory())
        result["backend"] = jax.default_backend()
    except Exception as exc:  # reported to the parent as a failed row, never a crash of the whole run
        result["skipped"] = result["failed"] = f"error: {type(exc).__name__}: {str(exc)[:500]}"
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --- the parent: run children, collect, summarise -----------------------------------------------


def record_row(args, kind: str, row: dict) -> None:
    """Append one measurement to ``--rows-out`` (JSON lines) the moment it exists: a run cut short keeps
    every row measured before the cut."""
    if not args.rows_out:
        return
    with open(args.rows_out, "a") as f:
        f.write(json.dumps({"kind": kind, **row}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_child(args, extra: list[str]) -> dict:
    """Run one measurement in a fresh interpreter; a timeout or a crash becomes a skipped row."""
    shared = [
        "--width", str(args.width), "--batch-size", str(args.batch_size),
        "--sgd-steps-per-call", str(args.sgd_steps_per_call), "--sgd-repeats", str(args.sgd_repeats),
        "--loop-repeats", str(args.loop_repeats), "--env", args.env, "--num-envs", str(args.num_envs),
        "--unroll-length", str(args.unroll_length), "--sgd-steps-per-collection", str(args.sgd_steps_per_collection),
        "--min-replay-size", str(args.min_replay_size), "--max-replay-size", str(args.max_replay_size),
        "--episode-length", str(args.episode_length), "--fast-unroll", str(args.fast_unroll),
        "--fast-remat", args.fast_remat, "--fast-dtype", args.fast_dtype, "--peak-repeats", str(args.peak_repeats),
        "--peak-matmul-size", str(args.peak_matmul_size), "--budget-seconds", str(args.budget_seconds),
        "--num-seeds-count", str(args.num_seeds_count),
    ]
    command = [sys.executable, str(Path(__file__).resolve()), *extra, *shared]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        reason = f"timeout: no result within --timeout {args.timeout} s"
        return {"skipped": reason, "failed": reason}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            row = json.loads(line[len(RESULT_PREFIX):])
            row["process_seconds"] = time.perf_counter() - t0
            return row
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    reason = f"crashed (exit {proc.returncode}): {' | '.join(tail)[:500]}"
    return {"skipped": reason, "failed": reason}


def median_rows(rows: list[dict]) -> dict:
    """Merge the repeats of one (depth, mode): medians of numbers, the first row's other fields."""
    good = [r for r in rows if "skipped" not in r]
    if not good:
        return rows[0]
    merged = dict(good[0])
    for key, value in good[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in good if isinstance(r.get(key), (int, float))]
            if len(set(values)) > 1:  # settings (depth, unroll) are equal across repeats and stay as they are
                merged[key] = float(np.median(values))
    merged["repeats"] = len(good)
    return merged


def best_peak(start: dict, end: dict) -> dict:
    out = {"matmul_size": start.get("matmul_size", end.get("matmul_size")), "start": start, "end": end}
    for dtype in ("float32", "bfloat16"):
        values = [p.get(f"{dtype}_flops_per_second") for p in (start, end) if p.get(f"{dtype}_flops_per_second")]
        out[f"{dtype}_flops_per_second"] = max(values) if values else None
    return out


def add_mfu(row: dict, peak: dict) -> None:
    if "sgd_step_seconds" not in row:
        return
    dtype = row.get("dtype", "float32")
    peak_flops = peak.get(f"{dtype}_flops_per_second")
    achieved = row["flops_per_sgd_step_analytic"] / row["sgd_step_seconds"]
    row["achieved_flops_per_second"] = achieved
    row["flops_source"] = "analytic matmul FLOPs (rlscale.sizes.sgd_step_flops); XLA cost analysis kept as flops_per_sgd_step_xla"
    row["mfu"] = achieved / peak_flops if peak_flops else None
    row["mfu_peak_dtype"] = dtype
    if row.get("flops_per_sgd_step_xla"):
        row["xla_over_analytic_flops"] = row["flops_per_sgd_step_xla"] / row["flops_per_sgd_step_analytic"]


def _algo(row: dict) -> str:
    return row.get("algo", "crl")


def ratios(rows: list[dict]) -> list[dict]:
    """fast/baseline (and fast_other/baseline) per (depth, algo): > 1 means faster for speeds, slower for compile."""
    out = []
    for depth in sorted({r["depth"] for r in rows}):
        for algo in dict.fromkeys(_algo(r) for r in rows if r["depth"] == depth):
            same = [r for r in rows if r["depth"] == depth and _algo(r) == algo and "skipped" not in r]
            base = next((r for r in same if r["mode"] == "baseline"), None)
            if base is None:
                continue
            for other in [r for r in same if r["mode"] != "baseline"]:
                entry = {"depth": depth, "algo": algo, "mode": other["mode"], "vs": "baseline"}
                for key in ("sgd_steps_per_second", "env_steps_per_second", "sgd_compile_seconds", "loop_compile_seconds"):
                    if base.get(key) and other.get(key):
                        entry[key] = other[key] / base[key]
                out.append(entry)
    return out


def reference_algo(algos: list[str]) -> str:
    """The algorithm the others are divided by: CRL when it was measured, else the first of --algos."""
    return "crl" if "crl" in algos else algos[0]


def algo_ratios(rows: list[dict], reference: str) -> list[dict]:
    """Each other algorithm ÷ ``reference`` per (depth, mode): > 1 means that algorithm is faster."""
    out = []
    for ref in [r for r in rows if _algo(r) == reference and "skipped" not in r]:
        for other in rows:
            if other["depth"] != ref["depth"] or other["mode"] != ref["mode"] or _algo(other) == reference or "skipped" in other:
                continue
            entry = {"depth": ref["depth"], "mode": ref["mode"], "algo": _algo(other), "vs": reference}
            for key in ("sgd_steps_per_second", "env_steps_per_second"):
                if ref.get(key) and other.get(key):
                    entry[key] = other[key] / ref[key]
            out.append(entry)
    return out


def fmt(value, spec: str, missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def markdown(payload: dict) -> str:
    rows = payload["results"]
    several = len({_algo(r) for r in rows}) > 1  # an algo column and the ÷ reference ratios
    with_base = any(r["mode"] == "baseline" for r in rows)  # the fast ÷ baseline column
    reference = payload.get("algo_reference", "crl")
    header = ["depth", *(["algo"] if several else []), "mode", "SGD steps/s", "env steps/s (loop)",
              "compile SGD / loop (s)", "peak mem", "MFU"]
    align = ["---:", *(["---"] if several else []), "---", "---:", "---:", "---:", "---:", "---:"]
    if with_base:
        header.append("fast ÷ baseline: SGD, env, compile SGD")
        align.append("---")
    if several:
        header.append(f"÷ {reference}: SGD, env")
        align.append("---")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    ratio_of = {(r["depth"], r.get("algo", "crl"), r["mode"]): r for r in payload["ratios"]}
    algo_ratio_of = {(r["depth"], r["algo"], r["mode"]): r for r in payload.get("algo_ratios", [])}

    def ratio_text(r, keys):
        return "" if r is None else ", ".join(fmt(r.get(k), ".2f") + ("×" if r.get(k) is not None else "") for k in keys)

    for row in rows:
        depth = f"{row['depth']}" + (f" (actor {row['actor_depth']})" if row.get("actor_depth", row["depth"]) != row["depth"] else "")
        mode = row["mode"] + (f" u{row['scan_unroll']}" if row.get("scan_blocks") and row["mode"] != "baseline" else "")
        mode += f" remat {row.get('remat_policy', '')}" if row.get("remat") else ""
        mode += f" {row['dtype']}" if row["mode"] != "baseline" and row.get("dtype") else ""
        first = f"| {depth} | " + (f"{_algo(row)} | " if several else "") + f"{mode} |"
        if "skipped" in row:
            lines.append(f"{first} skipped: {row['skipped']} |" + " |" * (len(header) - (4 if several else 3)))
            continue
        if row.get("peak_device_bytes") is not None:
            mem = f"{row['peak_device_bytes'] / 2**30:.2f} GiB dev"
        else:
            mem = f"{row['peak_process_rss_kib'] / 2**20:.2f} GiB RSS"
        compile_s = f"{row['sgd_compile_seconds']:.1f} / {fmt(row.get('loop_compile_seconds'), '.1f')}"
        ratio = ratio_text(ratio_of.get((row["depth"], _algo(row), row["mode"])),
                           ("sgd_steps_per_second", "env_steps_per_second", "sgd_compile_seconds"))
        env_sps = fmt(row.get("env_steps_per_second"), ",.0f") if "loop_skipped" not in row else "skipped"
        mfu = fmt(row.get("mfu") * 100 if row.get("mfu") is not None else None, ".1f") + " %"
        cells = [f"{row['sgd_steps_per_second']:.3g}", env_sps, compile_s, mem, mfu]
        if with_base:
            cells.append(ratio)
        if several:
            cells.append(ratio_text(algo_ratio_of.get((row["depth"], _algo(row), row["mode"])),
                                    ("sgd_steps_per_second", "env_steps_per_second")))
        lines.append(f"{first} " + " | ".join(cells) + " |")
    if several:
        lines.append(f"\nalgo ÷ {reference} (same depth and mode, measured in this run): "
                     + "; ".join(f"depth {r['depth']} {r['mode']} {r['algo']}: SGD steps/s "
                                 f"{fmt(r.get('sgd_steps_per_second'), '.2f')}×, env steps/s "
                                 f"{fmt(r.get('env_steps_per_second'), '.2f')}×"
                                 for r in payload.get("algo_ratios", [])))
    if payload.get("num_seeds_check"):
        s = payload["num_seeds_check"]
        if "skipped" in s:
            lines.append(f"\nnum-seeds check: skipped: {s['skipped']}")
        else:
            lines.append(
                f"\nnum-seeds check (depth 4, fast, one training step): 1 seed {s['one_seed_seconds']:.3f} s, "
                f"{s['num_seeds']} vmapped seeds {s['many_seeds_seconds']:.3f} s, ratio {s['time_ratio']:.2f}"
            )
    return "\n".join(lines) + "\n"


def plan_runs(args) -> list[tuple[int, str, str, int, str | None, str | None]]:
    """(depth, algo, mode, unroll, skip_reason, loop_skip_reason) in run order: per depth, each algorithm's
    modes in turn, all back to back."""
    runs = []
    for depth in args.depths:
        for algo in args.algos:
            loop_skip = None
            if args.skip_loop:
                loop_skip = "--skip-loop"
            elif args.max_loop_depth is not None and depth > args.max_loop_depth:
                loop_skip = f"depth {depth} > --max-loop-depth {args.max_loop_depth}"
            elif algo == "gcbc":
                loop_skip = "gcbc trains from a --dataset: no collection loop"
            modes = [(mode, 1 if mode == "baseline" else args.fast_unroll) for mode in MODES if mode in args.modes]
            if args.also_other_dtype:
                modes.append(("fast_other", args.fast_unroll))
            for mode, unroll in modes:
                skip = None
                if mode == "baseline" and depth > args.max_baseline_depth:
                    skip = f"depth {depth} > --max-baseline-depth {args.max_baseline_depth} (unrolled compile too slow here)"
                runs.append((depth, algo, mode, unroll, skip, loop_skip))
            if args.unrolls and (not args.unroll_depths or depth in args.unroll_depths):
                for unroll in args.unrolls:
                    if unroll != args.fast_unroll:
                        runs.append((depth, algo, f"fast_u{unroll}", unroll, None, "unroll sweep: SGD step only"))
    return runs


def machine_info() -> dict:
    import jax

    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def parent_main(args) -> None:
    import jax

    from rlscale.storage.run_dir import write_atomic

    started = time.time()
    info = {**machine_info(), "load_average_before": os.getloadavg()}
    backend = jax.default_backend()
    print(f"machine: {info['device_kind']} ({backend}), {info['cpu_count']} CPUs, jax {info['jax']}, load {info['load_average_before']}", flush=True)

    peak = {} if args.skip_peak else run_child(args, ["--one", "peak"])
    if peak:
        record_row(args, "matmul_peak", peak)
        print(f"matmul peak: {json.dumps(peak)}", flush=True)

    rows: list[dict] = []
    runs = plan_runs(args)
    several = len(args.algos) > 1
    for depth in args.depths:
        depth_runs = [r for r in runs if r[0] == depth]
        repeats: dict[tuple[str, str], list[dict]] = {(algo, mode): [] for _, algo, mode, _, _, _ in depth_runs}
        for pair in range(args.pairs):
            for _, algo, mode, unroll, skip, loop_skip in depth_runs:
                if skip:
                    repeats[algo, mode].append({"skipped": skip})
                    continue
                extra = ["--one", "config", "--depth", str(depth), "--algo", algo, "--mode", "baseline" if mode == "baseline" else
                         ("fast_other" if mode == "fast_other" else "fast"), "--unroll", str(unroll)]
                if loop_skip:
                    extra.append(f"--skip-loop-here={loop_skip}")  # "=": the reason may start with "--"
                row = run_child(args, extra)
                summary = row.get("skipped") or (
                    f"{row['sgd_steps_per_second']:.3g} SGD steps/s, "
                    f"{fmt(row.get('env_steps_per_second'), ',.0f')} env steps/s, "
                    f"compile {row['sgd_compile_seconds']:.1f} / {fmt(row.get('loop_compile_seconds'), '.1f')} s"
                )
                label = f"{algo:8s} {mode:10s}" if several else f"{mode:10s}"
                print(f"depth {depth:5d} {label} pair {pair + 1}/{args.pairs}: {summary}", flush=True)
                record_row(args, "config", {"depth": depth, "algo": algo, "mode": mode, "pair": pair + 1, **row})
                repeats[algo, mode].append(row)
        for _, algo, mode, unroll, _, _ in depth_runs:
            row = median_rows(repeats[algo, mode])
            row.setdefault("depth", depth)
            row.setdefault("actor_depth", actor_depth_for(depth))
            row["algo"] = algo
            row["mode"] = mode
            rows.append(row)

    seeds = run_child(args, ["--one", "seeds"]) if args.num_seeds_check else None
    if seeds:
        record_row(args, "seeds", seeds)
        print(f"num-seeds check: {json.dumps({k: v for k, v in seeds.items() if not k.endswith('call_seconds')})}", flush=True)

    # The peak again at the end, best of both: on a shared machine one short measurement can be loaded.
    if not args.skip_peak:
        peak_end = run_child(args, ["--one", "peak"])
        peak = best_peak(peak, peak_end)
        print(f"matmul peak (best of start and end): {json.dumps(peak)}", flush=True)
    for row in rows:
        add_mfu(row, peak)

    info["load_average_after"] = os.getloadavg()
    payload = {
        "benchmark": "speed",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": time.time() - started,
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k not in ("one", "depth", "algo", "mode", "unroll", "skip_loop_here")},
        "modes": {
            "baseline": "scan_blocks=False, dtype=float32, remat=False (the paper's implementation)",
            "fast": f"scan_blocks=True, dtype={args.fast_dtype}, scan_unroll={args.fast_unroll}, remat={args.fast_remat}",
            "fast_other": f"fast with dtype={OTHER_DTYPE[args.fast_dtype]}",
            "fast_u<N>": "fast with scan_unroll=N (SGD step only)",
        },
        "matmul_peak": peak,
        "results": rows,
        "ratios": ratios(rows),
        "num_seeds_check": seeds,
    }
    if several:
        reference = reference_algo(args.algos)
        payload["algo_reference"] = reference
        payload["algo_ratios"] = algo_ratios(rows, reference)
        payload["algo_settings"] = ("every algorithm at the same width, batch, K, envs, unroll length, SGD steps per "
                                    "collection and replay sizes (not its training defaults)")
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"speed_{backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(payload, indent=2) + "\n")
    table = markdown(payload)
    print(table)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.markdown, table)
    print(f"wrote {out}" + (f" and {args.markdown}" if args.markdown else ""), flush=True)
    failed = [f"depth {r.get('depth')} {r.get('mode')}: {r['failed']}" for r in rows if r.get("failed")]
    others = (("matmul peak at the start", peak.get("start", {})), ("matmul peak at the end", peak.get("end", {})),
              ("num-seeds check", seeds or {}))
    failed += [f"{name}: {r['failed']}" for name, r in others if r.get("failed")]
    for line in failed:
        print(f"FAILED {line}", flush=True)
    if failed and args.strict:
        sys.exit(1)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--depths", type=int, nargs="*", default=DEPTHS, help="critic depths (actor 512 at 1024); none: only --num-seeds-check")
    add("--width", type=int, default=256)
    add("--batch-size", type=int, default=512)
    add("--fast-unroll", type=int, default=1, help="scan unroll factor of the fast mode")
    add("--fast-remat", choices=("dots", "full", "off"), default="dots", help="remat policy of the fast mode (off: none)")
    add("--fast-dtype", choices=("auto", "float32", "bfloat16"), default="auto", help="auto: bfloat16 on a GPU, else float32")
    add("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to measure (fast_other: --also-other-dtype)")
    add("--algos", nargs="+", choices=algorithm_names(), default=["crl"],
        help="algorithms, all at the settings given here; with several, each ÷ crl (else ÷ the first) per depth and mode")
    add("--also-other-dtype", action="store_true", help="also measure the fast mode with the other dtype")
    add("--unrolls", type=int, nargs="*", default=[], help="also measure the fast SGD step at these scan unrolls")
    add("--unroll-depths", type=int, nargs="*", default=[], help="depths of the --unrolls sweep (default: all)")
    add("--sgd-steps-per-call", type=int, default=10, help="K: SGD steps scanned in one timed call")
    add("--sgd-repeats", type=int, default=5, help="timed calls of the K-step program (median)")
    add("--loop-repeats", type=int, default=3, help="timed training steps (median)")
    add("--pairs", type=int, default=1, help="repeat each depth's runs (all algos and modes) this often, interleaved (medians)")
    add("--max-baseline-depth", type=int, default=1024, help="skip baseline rows deeper than this")
    add("--max-loop-depth", type=int, default=None, help="skip the whole-loop measurement deeper than this")
    add("--skip-loop", action="store_true", help="SGD step only")
    add("--budget-seconds", type=float, default=0, help="cap each timed phase near this many seconds (≥ 1 call; 0: no cap)")
    add("--timeout", type=float, default=1800, help="seconds per measurement subprocess")
    # Whole loop: the paper's 512 envs × 62 steps per 800 SGD steps (1:40); scale down proportionally.
    add("--env", default="humanoid")
    add("--num-envs", type=int, default=512)
    add("--unroll-length", type=int, default=62)
    add("--sgd-steps-per-collection", type=int, default=800)
    add("--episode-length", type=int, default=1000)
    add("--min-replay-size", type=int, default=1000, help="≥ --episode-length (the sampling window)")
    add("--max-replay-size", type=int, default=10_000)
    add("--num-seeds-check", action="store_true", help="also time --num-seeds-count vmapped seeds against 1 (depth 4, fast)")
    add("--num-seeds-count", type=int, default=4, help="seeds of the --num-seeds-check")
    add("--rows-out", default=None, help="append each measurement to this JSON-lines file as soon as it is measured")
    add("--skip-peak", action="store_true", help="do not measure the matmul peak (no MFU in the rows)")
    add("--strict", action="store_true", help="exit 1 if any measurement failed (crash, error or timeout)")
    add("--peak-repeats", type=int, default=5)
    add("--peak-matmul-size", type=int, default=0, help="default: 8192 on GPU, 2048 on CPU")
    add("--out", default=None, help="JSON path (default: benchmarks/results/speed_<backend>.json)")
    add("--markdown", default=None, help="also write the markdown table here")
    # Internal: one measurement in this process (the parent starts these).
    add("--one", choices=("config", "peak", "seeds"), help=argparse.SUPPRESS)
    add("--depth", type=int, help=argparse.SUPPRESS)
    add("--mode", choices=("baseline", "fast", "fast_other"), help=argparse.SUPPRESS)
    add("--algo", choices=algorithm_names(), default="crl", help=argparse.SUPPRESS)
    add("--unroll", type=int, default=1, help=argparse.SUPPRESS)
    add("--skip-loop-here", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.fast_dtype == "auto":
        import jax

        args.fast_dtype = "bfloat16" if jax.default_backend() == "gpu" else "float32"
    if args.one:
        child_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
