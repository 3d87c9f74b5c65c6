"""What a run will cost before it starts: parameters, FLOPs per SGD step, peak device memory and, where a
speed benchmark measured this device, hours (``rlscale train --dry-run``, ``rlscale sweep --dry-run``;
docs/runs.md#a-plan-before-launch).

Peak device memory is what the training program holds at once, per process (all its packed seeds):

* **state**: the learner (parameters, Adam's two moments, target copies), the envs and the replay buffer,
  their exact sizes from the trainer's own shapes (``jax.eval_shape``, nothing allocated);
* **minibatches**: the ``sgd_steps_per_collection`` minibatches one training step draws before its SGD
  scan, and the ``unroll_length`` steps it collects;
* **SGD step**: the learner once more (the SGD scan's carry: the step writes a new learner while the old one
  is read), the gradients (one more copy of the trained parameters) and the activations its backward pass
  keeps: per trunk and per residual block, the block's input and, under ``--remat-policy dots``, the
  outputs of its 4 matrix products (``full``: the input only; ``--no-remat``: every unit's product,
  normalisation and activation outputs), for ``batch_size`` rows, every trunk of the agent at once.

``benchmarks/memory_estimate.py`` checks the total against XLA's memory analysis of the compiled training
program.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlscale import sizes
from rlscale.config import Plan, TrainConfig, plan
from rlscale.networks import UNITS_PER_BLOCK

RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
# Saved activations per residual block and row, in units of the width (docs/runs.md#a-plan-before-launch).
SAVED_PER_BLOCK = {"dots": 1 + UNITS_PER_BLOCK, "full": 1, "off": 1 + 3 * UNITS_PER_BLOCK}
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Estimate:
    """One run's (or one packed-seed process's) cost. Bytes are device bytes; ``hours`` is None where no
    speed benchmark measured the device."""

    num_seeds: int
    param_count: int
    flops_per_sgd_step: int
    state_bytes: int  # learner, envs and replay buffer, every seed
    buffer_bytes: int
    minibatch_bytes: int
    sgd_bytes: int  # the learner's new copy, gradients and the activations the backward pass keeps
    plan: Plan
    hours: float | None = None
    hours_source: str | None = None

    @property
    def peak_bytes(self) -> int:
        return self.state_bytes + self.minibatch_bytes + self.sgd_bytes

    def line(self) -> str:
        bound, _, source = (self.hours_source or "").partition(" ")
        # A stop (SIGTERM) is acted on when the call in progress ends: one training step by default.
        step_seconds = None if self.hours is None else self.hours * 3600 / max(self.plan.total_training_steps, 1)
        time = (f"{bound} {hours_text(self.hours)} {source}; one training step {bound} {step_seconds:.3g} s "
                f"(a stop saves when the call of training steps in progress ends, one step by default)"
                if self.hours is not None else "hours: no measured speed for this device")
        return (f"{self.param_count:,} parameters, {flops_text(self.flops_per_sgd_step)} per SGD step, "
                f"{self.plan.total_sgd_steps:,} SGD steps; peak memory ≈ {self.peak_bytes / GIB:.2f} GiB "
                f"(buffer {self.buffer_bytes / GIB:.2f}, minibatches {self.minibatch_bytes / GIB:.2f}, "
                f"SGD step {self.sgd_bytes / GIB:.2f}); {time}")


def flops_text(flops: float) -> str:
    """``flops`` with the SI prefix that keeps 1 to 3 digits before the point: ``3.2 PFLOPs``."""
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if flops >= scale:
            return f"{flops / scale:,.1f} {prefix}FLOPs"
    return f"{flops:,.0f} FLOPs"


def hours_text(hours: float) -> str:
    return f"{hours:,.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def tree_bytes(tree: Any) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _trunks(params: Any) -> list[tuple[int, int]]:
    """``(num_blocks, width)`` of every trunk in a parameter tree: a subtree holding an ``input`` unit."""
    found = []

    def visit(tree):
        if isinstance(tree, (list, tuple)):
            for item in tree:
                visit(item)
            return
        if not isinstance(tree, dict):
            return
        if "input" in tree and ("blocks" in tree or "block_0" in tree):
            if "blocks" in tree:
                num_blocks = jax.tree.leaves(tree["blocks"])[0].shape[0]
            else:
                num_blocks = sum(1 for k in tree if k.startswith("block_"))
            width = max(leaf.shape[-1] for leaf in jax.tree.leaves(tree["input"]))
            found.append((num_blocks, width))
            return
        for value in tree.values():
            visit(value)

    visit(params)
    return found


def sgd_step_bytes(cfg: TrainConfig, learner: Any, trained_params: Any) -> int:
    """The learner's new copy, the gradients and the saved activations of one SGD step, one seed (see the
    module docstring)."""
    policy = cfg.remat_policy if cfg.remat else "off"
    matmul_bytes = jnp.dtype(cfg.dtype).itemsize
    activations = 0
    for num_blocks, width in _trunks(trained_params):
        # The block input (the scan carry) is float32; the saved products are in the matmul dtype.
        per_row = width * (4 + (SAVED_PER_BLOCK[policy] - 1) * matmul_bytes)
        activations += num_blocks * per_row * cfg.batch_size
    return tree_bytes(learner) + tree_bytes(trained_params) + activations


def estimate(cfg: TrainConfig, num_seeds: int = 1, device_kind: str | None = None, trainer=None) -> Estimate:
    """The cost of ``cfg`` trained as ``num_seeds`` packed seeds in one process (the trainer's shapes; builds
    the task unless given the run's ``Trainer``, allocates nothing)."""
    from rlscale.training.trainer import Trainer

    trainer = trainer or Trainer(cfg)
    key = jax.random.PRNGKey(0)
    learner, collector = jax.eval_shape(trainer.init_learners, key)
    env_state_bytes = _env_state_bytes(trainer, cfg)
    buffer = jax.eval_shape(trainer.empty_buffer)
    batches = jax.eval_shape(lambda b, k: trainer.agent.sample_minibatches(b, k, cfg.sgd_steps_per_collection)[0],
                             buffer, key)
    # A training step's collected steps hold what the buffer keeps per step and env.
    per_step = tree_bytes((buffer.obs, buffer.action, buffer.traj_id, buffer.ends)) // buffer.capacity
    collected = 0 if trainer.dataset is not None else per_step * cfg.unroll_length
    trained = trainer.agent.trained_params(learner)
    run_plan = plan(cfg)
    hours, source = estimate_hours(cfg, run_plan, num_seeds, device_kind)
    return Estimate(
        num_seeds=num_seeds,
        param_count=sizes.agent_param_count(cfg) or sum(math.prod(x.shape) for x in jax.tree.leaves(trained)),
        flops_per_sgd_step=sizes.sgd_step_flops(cfg, trainer.spec)["total"],
        state_bytes=num_seeds * (tree_bytes((learner, collector, buffer)) + env_state_bytes),
        buffer_bytes=num_seeds * tree_bytes(buffer),
        minibatch_bytes=num_seeds * (tree_bytes(batches) + collected),
        sgd_bytes=num_seeds * sgd_step_bytes(cfg, (learner, collector), trained),
        plan=run_plan,
        hours=hours,
        hours_source=source,
    )


# Env-state bytes by what sets them (the task as TrainConfig.make_task builds it, and the env count): a sweep's
# dry run traces each task's reset once, not once per depth.
_ENV_STATE_BYTES: dict[tuple, int] = {}


def _env_state_bytes(trainer, cfg: TrainConfig) -> int:
    key = (cfg.env, cfg.episode_length, cfg.backend, cfg.stitch_max_goal_distance, cfg.fixed_goals_per_env, cfg.num_envs)
    if key not in _ENV_STATE_BYTES:
        shapes = jax.eval_shape(lambda k: jax.vmap(trainer.env.reset)(jax.random.split(k, cfg.num_envs)), jax.random.PRNGKey(0))
        _ENV_STATE_BYTES[key] = tree_bytes(shapes)
    return _ENV_STATE_BYTES[key]


def local_device_kind() -> str:
    return jax.devices()[0].device_kind


def measured_speeds(results_dir: Path = RESULTS_DIR) -> list[dict]:
    """Rows of ``benchmarks/speed.py`` results (``speed_*.json``) that measured the fast SGD step, each with
    its file's ``device_kind``."""
    rows = []
    for path in sorted(results_dir.glob("speed_*.json")):
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        kind = payload.get("machine", {}).get("device_kind")
        loop = {k: payload.get("settings", {}).get(k) for k in ("env", "num_envs", "width", "batch_size")}
        for row in payload.get("results", []):
            if row.get("mode") == "fast" and row.get("achieved_flops_per_second") and kind:
                rows.append({**loop, **row, "device_kind": kind, "file": path.name})
    return rows


def estimate_hours(cfg: TrainConfig, run_plan: Plan, num_seeds: int, device_kind: str | None,
                   results_dir: Path = RESULTS_DIR) -> tuple[float | None, str | None]:
    """Hours of the run's SGD steps at the FLOP rate the speed benchmark achieved on this device kind, at the
    measured depth nearest this run's (same dtype), plus its env steps where the row's loop ran the same task
    with as many envs. None where no row measured the device. Packed seeds run one after another on a GPU's compute (a lower bound on the CPU)."""
    kind = device_kind or local_device_kind()
    rows = [r for r in measured_speeds(results_dir) if r["device_kind"] == kind and r.get("dtype") == cfg.dtype]
    if not rows:
        return None, None
    depth = cfg.resolved_critic_depth
    row = min(rows, key=lambda r: abs(math.log2(r["depth"]) - math.log2(depth)))
    flops = sizes.flops_per_sgd_step(cfg) or 0
    seconds = run_plan.total_sgd_steps * flops / row["achieved_flops_per_second"]
    what = "SGD steps only"
    same_envs = (row.get("env"), row.get("num_envs")) == (cfg.env, cfg.num_envs)
    if same_envs and row.get("loop_step_seconds") and row.get("env_steps_per_training_step"):
        # The benchmark's training step holds its SGD steps too: the env share is what remains of it.
        env_seconds = row["loop_step_seconds"] - row["sgd_steps_per_training_step"] * row["sgd_step_seconds"]
        if env_seconds > 0:
            seconds += run_plan.total_env_steps * env_seconds / row["env_steps_per_training_step"]
            what = "SGD and env steps"
    # Smaller matrices than the benchmark's run below its FLOP rate: then the hours are a lower bound.
    bound = "≈" if (row.get("width"), row.get("batch_size")) == (cfg.width, cfg.batch_size) else "≥"
    return num_seeds * seconds / 3600, (f"{bound} on {kind}, {what}, at the rate {row['file']} measured at depth "
                                        f"{row['depth']}, width {row.get('width')}, batch {row.get('batch_size')}")


def xla_training_memory(cfg: TrainConfig) -> dict[str, int]:
    """XLA's memory analysis of the training program (one call of one training step, what a run calls by
    default), compiled for the local backend as the trainer compiles it (one seed, state donated): its sizes
    and ``peak_bytes`` = arguments + outputs − aliased + temporaries. What the estimate is checked against
    (tests/test_estimates.py, benchmarks/memory_estimate.py)."""
    from rlscale.training.trainer import Trainer

    trainer = Trainer(cfg)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    state = jax.eval_shape(trainer.init, key)
    step_keys = jax.ShapeDtypeStruct((1, 2), jnp.uint32)
    compiled = jax.jit(trainer.training_steps, donate_argnums=0).lower(state, step_keys).compile()
    m = compiled.memory_analysis()
    fields = {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                                              "temp_size_in_bytes")}
    fields["peak_bytes"] = (fields["argument_size_in_bytes"] + fields["output_size_in_bytes"]
                            - fields["alias_size_in_bytes"] + fields["temp_size_in_bytes"])
    return fields
