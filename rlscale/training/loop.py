"""The host side of training: runs each epoch of ``rlscale.training.trainer.Trainer`` as calls of a few
training steps (one program per seed group), and after it evaluates, logs a metrics row and saves a
checkpoint; start-up, resume, signals and the wall-clock record (docs/method.md#training-loop,
docs/runs.md). Keys derive from the seed, the epoch index and the step within the epoch alone, so a run
resumed at an epoch's end or in its middle draws the same randomness as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console

from rlscale import agents, metric_keys
from rlscale.config import CONFIG_SCHEMA, Plan, TrainConfig
from rlscale.data import datasets
from rlscale.evaluation.rollout import summarize
from rlscale.keys import eval_key, run_keys
from rlscale.storage import checkpoint as ckpt
from rlscale.storage import run_dir as rd
from rlscale.training import estimates, parallel
from rlscale.training.seed_groups import (
    SeedGroups,
    check_seed_threads,
    default_seed_threads,
)
from rlscale.training.trainer import Trainer, TrainingState

# Exit status of a run stopped by SIGTERM (Slurm preemption, Ray cancellation) after it saved a
# checkpoint: resume it, do not count it as failed. 75 is EX_TEMPFAIL ("try again later").
PREEMPTED_EXIT_CODE = 75
# The persistent XLA compilation cache of runs started without one, beside their run directories.
CACHE_DIR_NAME = ".jax_cache"
# Where a resumed --num-seeds group moves checkpoints one seed saved past the step common to all seeds.
SUPERSEDED_DIR = "superseded_checkpoints"


class NonFiniteError(RuntimeError):
    pass


class Preempted(Exception):
    """SIGTERM arrived; the run saved a checkpoint after the training steps in progress and stopped."""


def _saved_tree(state: TrainingState, rng: jax.Array | None, with_buffer: bool) -> dict:
    tree = {"learner": state.learner, "rng": rng}
    if state.collector is not None:
        tree["collector"] = state.collector
    if with_buffer:
        tree["env_state"] = state.env_state
        tree["buffer"] = state.buffer
    return tree


# The host loop keeps every seed's arrays stacked on a leading seed axis, one seed included; checkpoints
# and metric rows are per seed, without that axis (a seed's files are those of a run of its own).


def _stack(trees: list) -> Any:
    """Trees of identical structure, stacked on a new leading seed axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _seed_slice(tree: Any, i: int) -> Any:
    """Seed ``i``'s part of a tree stacked over seeds."""
    return jax.tree.map(lambda x: x[i], tree)


def _over_seeds(fn, num_seeds: int):
    """``fn`` mapped over the leading seed axis of its arguments and results.

    A group of one runs ``fn`` itself on the squeezed arguments (reshapes, free in XLA) rather than
    ``jax.vmap``: vmap's batched kernels round differently, and a run of one seed must reproduce the
    numbers of the same run trained before seed groups."""
    if num_seeds > 1:
        return jax.vmap(fn)

    @functools.wraps(fn)  # the program keeps fn's name (jit_training_steps, ...)
    def one_seed(*args):
        out = fn(*jax.tree.map(lambda x: jnp.squeeze(x, 0), args))
        return jax.tree.map(lambda x: jnp.expand_dims(x, 0), out)

    return one_seed


@dataclasses.dataclass
class _SeedRun:
    """One seed's run directory and what the host loop keeps for it."""

    cfg: TrainConfig
    path: Path
    keys: dict[str, jax.Array]
    walltime: float = 0.0  # training and evaluation seconds (metrics key "walltime"; docs/metrics.md#time)
    wallclock_before: float | None = 0.0  # wall-clock of earlier processes; None: unknown (an older run)
    process_start: float = 0.0
    counts_time: bool = True
    last_good: Path | None = None
    log: rd.MetricsLog | None = None
    writer: ckpt.CheckpointWriter | None = None


@dataclasses.dataclass
class _EpochProgress:
    """The training steps of an epoch done so far, every seed: their metrics and seconds. A stop in the
    middle of an epoch saves it in each seed's checkpoint (``saved``), and the resume continues it
    (``restored``), so that the epoch's metrics row is the one an uninterrupted run writes."""

    steps: int = 0  # the epoch's training steps done
    metrics: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # name -> [num_seeds, steps]
    seconds_before: float = 0.0  # training seconds of the steps an earlier process did
    steps_here: int = 0  # training steps done in this process
    seconds_here: float = 0.0  # and their training seconds

    def add(self, metrics: dict[str, np.ndarray], seconds: float) -> None:
        """Record a call's training steps: ``metrics`` name -> [num_seeds, steps of the call]."""
        added = next(iter(metrics.values())).shape[1]
        self.metrics = {k: np.concatenate([self.metrics[k], v], axis=1) if self.metrics else v for k, v in metrics.items()}
        self.steps += added
        self.steps_here += added
        self.seconds_here += seconds

    @property
    def seconds(self) -> float:
        """The epoch's training seconds so far, every process that trained part of it."""
        return self.seconds_before + self.seconds_here

    def means(self) -> dict[str, np.ndarray]:
        """Each seed's epoch metrics: the means over the epoch's training steps."""
        return {k: np.asarray(jnp.mean(jnp.asarray(v), axis=1)) for k, v in self.metrics.items()}

    def saved(self, i: int) -> dict:
        """Seed ``i``'s part, for its checkpoint's meta (JSON: float32 values round-trip exactly)."""
        return {"training_steps": self.steps, "train_seconds": self.seconds,
                "metrics": {k: {"dtype": str(v.dtype), "values": v[i].tolist()} for k, v in self.metrics.items()}}

    @classmethod
    def restored(cls, saved: list[dict]) -> "_EpochProgress":
        """The progress the seeds' checkpoints saved (``saved``: one per seed, in the seeds' order)."""
        names = saved[0]["metrics"]
        metrics = {k: np.stack([np.asarray(s["metrics"][k]["values"], dtype=s["metrics"][k]["dtype"]) for s in saved])
                   for k in names}
        return cls(steps=saved[0]["training_steps"], metrics=metrics, seconds_before=saved[0]["train_seconds"])


@dataclasses.dataclass
class _EpochResult:
    """One epoch of every seed, on the host: metrics stacked over seeds, and its timing."""

    done: int  # epochs complete after this one
    training: _EpochProgress  # its training steps, complete
    train_metrics: dict  # each seed's means over them
    per_episode: dict
    block_norms: dict  # network -> [num_seeds, num_blocks]
    eval_seconds: float


def seed_configs(
    cfg: TrainConfig, num_seeds: int = 1, seeds: list[int] | None = None, run_dirs: list[str] | None = None
) -> list[TrainConfig]:
    """Configs of ``num_seeds`` consecutive seeds from ``cfg.seed``, run directories ``<run_dir>/seed<k>``;
    or of explicit ``seeds`` with their ``run_dirs``."""
    if seeds is not None:
        if run_dirs is None or len(run_dirs) != len(seeds):
            raise ValueError(f"one run directory per seed: seeds {seeds}, run directories {run_dirs}")
        return [dataclasses.replace(cfg, seed=seed, run_dir=str(d)) for seed, d in zip(seeds, run_dirs)]
    if not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"--num-seeds must be a positive integer, got {num_seeds!r}")
    if num_seeds == 1:
        return [dataclasses.replace(cfg, run_dir=cfg.run_dir or str(Path("runs") / cfg.default_run_name()))]
    seeds = range(cfg.seed, cfg.seed + num_seeds)
    group = Path(cfg.run_dir or Path("runs") / f"{cfg.default_run_name().rsplit('_s', 1)[0]}_seeds{seeds[0]}-{seeds[-1]}")
    return [dataclasses.replace(cfg, seed=seed, run_dir=str(group / f"seed{seed}")) for seed in seeds]


def _seed_devices(num_seeds: int, mesh, seed_devices: int | None, seed_threads: int | None):
    """``(seed mesh or None, seed threads)``: packed seeds split over devices unless the envs are
    (``--num-devices``); seed groups on host threads only on one CPU device."""
    if mesh is not None and seed_devices not in (None, 1):
        raise ValueError(f"--seed-devices {seed_devices} with --num-devices {mesh.size}: the devices split either the "
                         f"seeds or the envs; pass one of them")
    seeds_mesh = None if mesh is not None else parallel.make_seed_mesh(num_seeds, seed_devices)
    if seed_threads is None:
        return seeds_mesh, default_seed_threads(single_device=mesh is None and seeds_mesh is None)
    if check_seed_threads(seed_threads) > 1 and (mesh or seeds_mesh) is not None:
        devices = (mesh or seeds_mesh).size
        raise ValueError(f"--seed-threads {seed_threads} with {devices} devices: the seeds run as one group there; "
                         f"leave --seed-threads out" + (", or pass --num-devices 1" if mesh is not None else ", or pass --seed-devices 1"))
    return seeds_mesh, seed_threads


def dry_run(cfg: TrainConfig, num_seeds: int = 1, seeds: list[int] | None = None, run_dirs: list[str] | None = None,
            console: Console | None = None) -> "estimates.Estimate":
    """Print the plan ``train_seeds`` would follow for these arguments and what it would cost (parameters,
    FLOPs, peak device memory, hours where measured); train nothing, write nothing."""
    console = console or Console(soft_wrap=True)
    cfgs = seed_configs(cfg, num_seeds, seeds, run_dirs)
    trainer = Trainer(cfgs[0])
    _print_plan(console, cfgs[0], trainer.plan, trainer, Path(cfgs[0].run_dir))
    if len(cfgs) > 1:
        console.print(f"{len(cfgs)} seeds in one process: " + ", ".join(c.run_dir for c in cfgs))
    cost = estimates.estimate(cfgs[0], num_seeds=len(cfgs), trainer=trainer)
    console.print("cost" + (f" (all {len(cfgs)} seeds)" if len(cfgs) > 1 else "") + ": " + cost.line())
    console.print("dry run: nothing trained, nothing written")
    return cost


def resume_paths(path: str | Path) -> list[Path]:
    """The run directories to resume: ``path`` itself, or the ``seed*`` runs of a ``--num-seeds`` group."""
    path = Path(path)
    if rd.is_started(path) or not path.is_dir():
        return [path]
    members = [p for p in rd.run_dirs_in(path) if p.name.startswith("seed") and p.name[4:].isdigit()]
    return sorted(members, key=lambda p: int(p.name[4:])) or [path]


def check_same_but_seed(cfgs: list[TrainConfig]) -> None:
    """Seeds trained in one process share one compiled program: their configs may differ only in seed."""
    first = cfgs[0].to_dict()
    for other in cfgs[1:]:
        diff = [k for k, v in other.to_dict().items() if k not in ("seed", "run_dir") and v != first[k]]
        if diff:
            raise ValueError(f"runs trained together may differ only in --seed; {other.run_dir} differs in {', '.join(diff)}")
    seeds = [c.seed for c in cfgs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"runs trained together need distinct seeds, got {seeds}")


def enable_compilation_cache(run_path: Path, directory: str | os.PathLike | None | bool) -> Path | None:
    """The persistent XLA compilation cache: ``JAX_COMPILATION_CACHE_DIR`` if set (sweeps, tests), else
    ``directory``, else ``<run dir's parent>/.jax_cache``; ``False`` turns it off."""
    if directory is False:
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    cache = Path(directory) if directory not in (None, True) else run_path.resolve().parent / CACHE_DIR_NAME
    jax.config.update("jax_compilation_cache_dir", str(cache))
    return cache


def train(
    cfg: TrainConfig | None = None,
    resume: str | Path | None = None,
    console: Console | None = None,
    compilation_cache: str | os.PathLike | None | bool = None,
    num_devices: int | None = None,
    steps_per_call: int = 1,
) -> Path:
    """Run (or resume) one training run; returns its run directory."""
    (path,) = train_seeds(cfg, 1, resume=[resume] if resume is not None else None, console=console,
                          compilation_cache=compilation_cache, num_devices=num_devices, steps_per_call=steps_per_call)
    return path


def train_seeds(
    cfg: TrainConfig | None = None,
    num_seeds: int = 1,
    resume: list[str | Path] | None = None,
    console: Console | None = None,
    compilation_cache: str | os.PathLike | None | bool = None,
    num_devices: int | None = None,
    seeds: list[int] | None = None,
    run_dirs: list[str] | None = None,
    seed_threads: int | None = None,
    started_at: float | None = None,
    seed_devices: int | None = None,
    steps_per_call: int = 1,
) -> list[Path]:
    """Train (or resume) seeds of one configuration in one process: the seeds in ``seed_threads`` groups
    (default: one per CPU core, :mod:`rlscale.training.seed_groups`), each group one compiled program ``vmap``-ed over
    its seeds and run on its own host thread, with independent keys; each seed writes its own run directory
    (config, metrics, checkpoints), exactly as a run of its own would. Returns the run directories.

    Devices (:mod:`rlscale.training.parallel`): one by default; several seeds on a host with several devices
    are split over them (``seed_devices``, default as many as divide the seeds evenly), one group; with
    ``num_devices`` the envs and minibatches are split across that many devices instead.

    ``started_at`` (Unix time; default: now) is where this process's share of the runs' wall-clock begins:
    the command line passes the process's start (:func:`process_start_time`).

    ``steps_per_call``: the training steps of one compiled call; a stop (SIGTERM) is acted on when the call
    in progress ends, with a checkpoint in the middle of the epoch (docs/runs.md#stopping-and-resuming)."""
    check_steps_per_call(steps_per_call)
    console = console or Console(soft_wrap=True)
    process_start = time.time() if started_at is None else started_at
    locks: list[rd.RunLock] = []
    members: list[_SeedRun] = []
    groups = None
    training = False  # in the epoch loop
    stop = _StopSignals()
    try:
        with stop:
            mesh = parallel.make_mesh(num_devices)
            if resume is not None:
                cfgs = _stored_configs([Path(p) for p in resume])
                paths = [Path(c.run_dir) for c in cfgs]
                for path in paths:  # before any work: a second writer stops here
                    locks.append(rd.RunLock.acquire(path))
                seeds_mesh, seed_threads = _seed_devices(len(cfgs), mesh, seed_devices, seed_threads)
                trainer = Trainer(cfgs[0], mesh)
            else:
                assert cfg is not None
                cfgs = seed_configs(cfg, num_seeds, seeds, run_dirs)
                check_same_but_seed(cfgs)
                seeds_mesh, seed_threads = _seed_devices(len(cfgs), mesh, seed_devices, seed_threads)
                trainer = Trainer(cfgs[0], mesh)  # validates everything before a file is written
                if cfg.wandb:
                    _import_wandb()
                with stop.deferred():  # a directory is claimed and described whole, or not at all
                    locks = rd.claim_new([c.run_dir for c in cfgs])
                    paths = _write_run_configs(cfgs, trainer.plan)
            run_plan = trainer.plan
            enable_compilation_cache(paths[0], compilation_cache)
            members = [_SeedRun(cfg=c, path=p, keys=run_keys(c.seed)) for c, p in zip(cfgs, paths)]
            for m in members:
                m.wallclock_before = _wallclock_before(m.path) if resume is not None else 0.0
                m.process_start = process_start

            t_start = time.perf_counter()
            # Restore before anything is written, so that a bad checkpoint leaves the run directories untouched.
            state, start_epoch, progress = _initial_state(trainer, members, resume is not None, console)
            for m in members:
                m.log = rd.MetricsLog(m.path, m.cfg.tensorboard, _wandb_run(m.cfg, m.path))
                dropped = m.log.truncate_after(run_plan.env_steps_after(start_epoch, progress.steps) if m.last_good else -1)
                if dropped:
                    console.print(f"{m.path}: dropped {dropped} metric rows written after the last checkpoint")
                m.writer = ckpt.CheckpointWriter(m.path, m.cfg.keep_checkpoints)

            grouped = len(members) > 1
            groups = SeedGroups(len(members), min(seed_threads, len(members)),
                                None if seeds_mesh is None else parallel.seed_split(seeds_mesh))
            _print_plan(console, members[0].cfg, run_plan, trainer, paths[0].parent if grouped else paths[0])
            if grouped:
                where = ("one vmapped program" + ("" if seeds_mesh is None else
                                                  f" split over {seeds_mesh.size} devices") if len(groups) == 1 else
                         f"{len(groups)} vmapped programs of {'/'.join(map(str, groups.sizes))} seeds, one host thread each")
                console.print(f"{len(members)} seeds ({', '.join(str(m.cfg.seed) for m in members)}) in {where}")
            if start_epoch >= run_plan.num_epochs:
                console.print(f"[green]{', '.join(map(str, paths))}: already complete ({run_plan.num_epochs} epochs)")
                for m in members:
                    m.counts_time = False  # nothing was trained: the run's wall-clock does not grow
                return paths
            call_lengths = {b - a for offset in (progress.steps, 0)
                            for a, b in _call_bounds(run_plan.training_steps_per_epoch, steps_per_call, offset)}
            states, programs, compile_seconds = _compile(trainer, groups.split(state), members, groups, call_lengths, console)
            del state
            stop.stop_if_requested()
            training = True
            with stop.deferred(stop_after=False):
                for epoch_index in range(start_epoch, run_plan.num_epochs):
                    states, progress = _train_epoch(trainer, programs, states, members, groups, epoch_index, progress,
                                                    steps_per_call, stop)
                    if progress.steps < run_plan.training_steps_per_epoch:  # stopped in the middle of the epoch
                        _stop_mid_epoch(trainer, members, groups, states, epoch_index, progress, stop.requested, console)
                    result = _evaluate_epoch(programs, states, members, groups, epoch_index, progress)
                    progress = _EpochProgress()
                    checkpoint_now = (result.done % members[0].cfg.checkpoint_every == 0
                                      or result.done == run_plan.num_epochs or stop.requested is not None)
                    for i, m in enumerate(members):  # each seed's row, then its checkpoint
                        m.walltime += result.training.seconds_here + result.eval_seconds
                        row = _metrics_row(result, i, run_plan, len(members), m, compile_seconds)
                        _log_epoch(console, m, row, run_plan, time.perf_counter() - t_start, result.done - start_epoch, grouped)
                        if checkpoint_now:
                            _save_checkpoint(trainer, m, groups.seed([_saved_tree(s, None, m.cfg.save_buffer) for s in states], i), result.done)
                    if stop.requested is not None and result.done < run_plan.num_epochs:
                        _stopped(members, stop.requested, f"after epoch {result.done}", console)
            stop.deferring = True  # the run is complete: a signal from now on changes nothing
    except Preempted:
        if not training:  # the loop reports its own stops
            saved = "" if any(m.last_good for m in members) else ", before any checkpoint"
            where = " ".join(str(m.path) for m in members)
            console.print(f"[yellow]{stop.requested}: stopped during start-up{saved}"
                          + (f"; continue with: rlscale train --resume {where}" if members else ""))
        raise
    except BaseException:
        if not training:  # bad input or a failed start-up: the run directories stay exactly as they were
            for m in members:
                m.counts_time = False
        raise
    finally:
        if groups is not None:
            groups.close()
        for m in members:
            if m.writer is not None:
                m.writer.close()
            if m.log is not None:
                m.log.close()
            _record_wallclock(m)
        for lock in locks:
            lock.release()
    console.print(f"[green]done: {', '.join(map(str, paths))} ({run_plan.total_env_steps:,} env steps, {run_plan.total_sgd_steps:,} SGD steps)")
    return paths


# --- wall-clock: a run's real elapsed time, start-up, compile and checkpoints included, summed over the
# processes that trained it (docs/metrics.md#time). ---


def process_start_time() -> float:
    """When this process started (Unix time), so that Python's start-up and imports count too. On Linux its
    age from ``/proc/self/stat`` (start, in clock ticks since boot) and ``/proc/uptime``, both to 10 ms
    (the boot time in ``/proc/stat`` is whole seconds: up to a second off); elsewhere, when this module was
    imported."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5), counted from field 3 after the command name
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return _IMPORTED_AT


_IMPORTED_AT = time.time()


def _wallclock_before(path: Path) -> float | None:
    """The wall-clock the run's earlier processes spent on it; None for a run begun before rlscale
    recorded it (it has no ``wallclock.json``): unknown, not guessed."""
    if rd.read_wallclock(path) is None:
        return None
    return rd.wallclock_seconds(path)


def _wallclock(m: "_SeedRun") -> float | None:
    return None if m.wallclock_before is None else m.wallclock_before + time.time() - m.process_start


def _record_wallclock(m: "_SeedRun") -> None:
    """Write the run's wall-clock so far (at a checkpoint and when the process ends, however it ends)."""
    seconds = _wallclock(m)
    if seconds is not None and m.counts_time:
        with contextlib.suppress(OSError):  # a full disk must not hide the error that ended the run
            rd.write_wallclock(m.path, seconds)


def _stored_configs(paths: list[Path]) -> list[TrainConfig]:
    """The configs of runs to resume, from their ``config.json``, each with its run directory."""
    cfgs = []
    for path in paths:
        stored = rd.read_config(path)
        dataset = datasets.check_unchanged(stored.get("dataset"), path)
        cfg = TrainConfig.from_dict(stored["config"], source=str(path / rd.CONFIG_FILE))
        cfgs.append(dataclasses.replace(cfg, run_dir=str(path), dataset=dataset or cfg.dataset))
    check_same_but_seed(cfgs)
    return cfgs


def _write_run_configs(cfgs: list[TrainConfig], run_plan: Plan) -> list[Path]:
    """Each seed's ``config.json`` (and a wall-clock of 0) in its claimed, empty run directory."""
    paths = [Path(c.run_dir) for c in cfgs]
    for c, path in zip(cfgs, paths):
        info = {"config": c.to_dict(), "config_schema": CONFIG_SCHEMA, "plan": dataclasses.asdict(run_plan),
                "environment": rd.environment_info()}
        if len(cfgs) > 1:
            info["trained_with_seeds"] = [other.seed for other in cfgs]
        if c.dataset is not None:  # what the run learns from, so that a resume can tell the file changed
            info["dataset"] = datasets.file_record(c.dataset)
        rd.write_wallclock(path, 0.0)
        rd.write_atomic(path / rd.CONFIG_FILE, rd.dumps_json(info))
    return paths


@dataclasses.dataclass
class _GroupPrograms:
    """The compiled programs of one seed-group size: the training steps (one per call length), the
    evaluation and the block norms."""

    training_steps: dict[int, Any]
    evaluate: Any
    block_norms: Any


def check_steps_per_call(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"--steps-per-call must be a positive integer (training steps per compiled call), got {value!r}")
    return value


def _call_bounds(steps_per_epoch: int, steps_per_call: int, offset: int = 0) -> list[tuple[int, int]]:
    """``(first, end)`` training steps of each call that trains an epoch from step ``offset`` on."""
    return [(a, min(a + steps_per_call, steps_per_epoch)) for a in range(offset, steps_per_epoch, steps_per_call)]


def _step_keys(trainer: Trainer, members: list[_SeedRun], epoch_index: int) -> jax.Array:
    """``[num_seeds, training steps per epoch]`` keys of epoch ``epoch_index``'s training steps."""
    epoch_keys = _stack([jax.random.fold_in(m.keys["train"], epoch_index) for m in members])
    return jax.vmap(trainer.epoch_step_keys)(epoch_keys)


def _compile(trainer: Trainer, states: list[TrainingState], members: list[_SeedRun], groups: SeedGroups,
             call_lengths: set[int], console: Console):
    """``(states, programs, compile_seconds)``: each group's programs (one compile per distinct group size,
    the sizes compiled concurrently; the training steps once per length in ``call_lengths``), compiled ahead
    of the loop; with a mesh, the state placed on it."""
    mesh = trainer.mesh
    sharded = {}
    if mesh is not None:
        shardings = parallel.training_state_shardings(states[0], mesh, seed_axes=1)
        states = [jax.device_put(states[0], shardings)]
        sharded = {"out_shardings": (shardings, parallel.replicated(mesh), parallel.replicated(mesh))}
        console.print(f"data parallel over {mesh.size} devices: {mesh.devices.tolist()}")
    elif groups.placement is not None:  # seeds across devices: split already (SeedGroups.split), as the keys
        sharded = {"in_shardings": groups.placement}
        console.print(f"{len(members)} seeds over {len(groups.placement.device_set)} devices")
    else:
        # Committed to the device, as a restored state is: a program's cache key records whether its inputs
        # are committed, so only then does a resumed run find the fresh run's programs in the cache.
        states = [jax.device_put(s, jax.devices()[0]) for s in states]
    # Keys of the kind, shape and placement each program is called with.
    step_keys = _step_keys(trainer, members, 0)
    call_keys = {n: groups.split(step_keys[:, :n]) for n in sorted(call_lengths)}
    keys = [{"eval": eval_keys, "calls": {n: call_keys[n][g] for n in call_keys}}
            for g, eval_keys in enumerate(groups.split(_stack([m.keys["eval"] for m in members])))]
    first_of_size = {size: g for g, size in reversed(list(enumerate(groups.sizes)))}

    def compile_group(g: int, state: TrainingState, group_keys: dict) -> _GroupPrograms:
        size = groups.sizes[g]
        steps = jax.jit(_over_seeds(trainer.training_steps, size), donate_argnums=0, **sharded)
        # Seeds across devices: every input split on its seed axis, so each device evaluates its own seeds.
        on_seeds = {} if groups.placement is None else {"in_shardings": groups.placement}
        evaluate = jax.jit(_over_seeds(trainer.evaluate, size), **on_seeds)
        norms = jax.jit(_over_seeds(trainer.block_norms, size), **on_seeds)
        return _GroupPrograms(
            training_steps={n: steps.lower(state, call_keys).compile() for n, call_keys in group_keys["calls"].items()},
            evaluate=evaluate.lower(state.learner.actor_params, group_keys["eval"], _collector_actor(state)).compile(),
            block_norms=norms.lower(state.learner, state.buffer, group_keys["eval"]).compile(),
        )

    start = time.perf_counter()
    compiled = groups.run(lambda g, state, group_keys: compile_group(g, state, group_keys) if first_of_size[groups.sizes[g]] == g else None,
                          states, keys)
    programs = [compiled[first_of_size[size]] for size in groups.sizes]
    compile_seconds = time.perf_counter() - start
    console.print(f"compiled the epoch and evaluation in {compile_seconds:.1f} s")
    return states, programs, compile_seconds


def _train_epoch(trainer: Trainer, programs: list[_GroupPrograms], states: list[TrainingState], members: list[_SeedRun],
                 groups: SeedGroups, epoch_index: int, progress: "_EpochProgress", steps_per_call: int,
                 stop: "_StopSignals") -> tuple[list[TrainingState], "_EpochProgress"]:
    """``(states, progress)`` after the training steps of epoch ``epoch_index`` (0-based) that ``progress``
    has not done, ``steps_per_call`` per call, the seed groups concurrently; a stop requested during a call
    ends the epoch's training when that call ends (``progress.steps`` tells how far it got). A seed whose
    loss or parameters went non-finite stops the run before anything is written."""
    step_keys = _step_keys(trainer, members, epoch_index)
    steps_per_epoch = trainer.plan.training_steps_per_epoch
    for first, end in _call_bounds(steps_per_epoch, steps_per_call, progress.steps):
        t0 = time.perf_counter()
        calls = groups.run(lambda g, state, keys: programs[g].training_steps[end - first](state, keys),
                           states, groups.split(step_keys[:, first:end]))
        states = [state for state, _, _ in calls]
        metrics = groups.concat([jax.device_get(metrics) for _, metrics, _ in calls])
        finite = groups.concat([jax.device_get(finite) for _, _, finite in calls])
        for m, seed_finite in zip(members, finite):
            if not bool(seed_finite):
                raise NonFiniteError(
                    f"non-finite loss or parameters in epoch {epoch_index + 1} ({_steps_text(first, end, steps_per_epoch)}); "
                    f"nothing was saved for it; last good checkpoint: {m.last_good or 'none'}"
                    + (f" (seed {m.cfg.seed}, {m.path})" if len(members) > 1 else "")
                )
        progress.add(metrics, time.perf_counter() - t0)
        if stop.requested is not None:
            break
    return states, progress


def _steps_text(first: int, end: int, steps_per_epoch: int) -> str:
    """``training step 3 of 8`` or ``training steps 3-4 of 8``: a call's steps (0-based ``first``, ``end``)."""
    steps = f"step {end}" if end - first == 1 else f"steps {first + 1}-{end}"
    return f"training {steps} of {steps_per_epoch}"


def _evaluate_epoch(programs: list[_GroupPrograms], states: list[TrainingState], members: list[_SeedRun],
                    groups: SeedGroups, epoch_index: int, progress: "_EpochProgress") -> _EpochResult:
    """Epoch ``epoch_index``'s result: its training (``progress``, complete) and the evaluation of every
    seed's actor, the seed groups concurrently."""
    t1 = time.perf_counter()
    eval_keys = groups.split(_stack([eval_key(m.cfg.seed, epoch_index) for m in members]))
    # Its own stream (not the evaluation's, which `rlscale eval` reproduces).
    norms_keys = groups.split(_stack([jax.random.fold_in(eval_key(m.cfg.seed, epoch_index), 1) for m in members]))

    def evaluate(g: int, state: TrainingState, keys, n_keys):
        per_episode = programs[g].evaluate(state.learner.actor_params, keys, _collector_actor(state))
        return per_episode, programs[g].block_norms(state.learner, state.buffer, n_keys)

    evaluated = groups.run(evaluate, states, eval_keys, norms_keys)
    per_episode = groups.concat([jax.device_get(p) for p, _ in evaluated])
    norms = groups.concat([jax.device_get(n) for _, n in evaluated])
    t2 = time.perf_counter()
    return _EpochResult(epoch_index + 1, progress, progress.means(), per_episode, norms, eval_seconds=t2 - t1)


def _collector_actor(state: TrainingState):
    return None if state.collector is None else state.collector.actor_params


def _metrics_row(result: _EpochResult, i: int, p: Plan, num_seeds: int, m: _SeedRun, compile_seconds: float) -> dict:
    """Seed ``i``'s metrics row of the epoch."""
    trained = result.training
    return {
        "epoch": result.done,
        metric_keys.ENV_STEPS: p.env_steps_after(result.done),
        metric_keys.SGD_STEPS: p.sgd_steps_after(result.done),
        **{f"{metric_keys.TRAINING_PREFIX}{k}": float(v[i]) for k, v in result.train_metrics.items()},
        # Throughput of the whole process (all its seeds together), over the epoch's steps it trained.
        metric_keys.ENV_SPS: num_seeds * trained.steps_here * p.env_steps_per_training_step / trained.seconds_here,
        metric_keys.SGD_SPS: num_seeds * trained.steps_here * p.sgd_steps_per_training_step / trained.seconds_here,
        **summarize(_seed_slice(result.per_episode, i)),
        **{f"{metric_keys.BLOCK_NORMS_PREFIX}{net}/{b}": float(v) for net, values in result.block_norms.items() for b, v in enumerate(values[i])},
        metric_keys.EPOCH_SECONDS: trained.seconds,
        metric_keys.EVAL_SECONDS: result.eval_seconds,
        metric_keys.COMPILE_SECONDS: compile_seconds,
        metric_keys.TRAINING_TIME: m.walltime,
        metric_keys.WALLCLOCK: _wallclock(m),
    }


def _log_epoch(console: Console, m: _SeedRun, row: dict, p: Plan, elapsed: float, epochs_done_here: int, grouped: bool) -> None:
    """Append a seed's metrics row to its run's logs and print it (prefixed by the seed in a group)."""
    m.log.append(row)
    _print_row(console, row, p, elapsed, epochs_done_here, f"seed {m.cfg.seed}: " if grouped else "")


def _save_checkpoint(trainer: Trainer, m: _SeedRun, saved: dict, done: int, partial: dict | None = None) -> None:
    """Checkpoint one seed's ``saved`` tree (``_saved_tree`` without its key, sliced out of the stacked state:
    without --save-buffer the buffer is never copied; no seed axis: the shapes of a run trained alone)
    after ``done`` epochs and, in the middle of the next, the training steps of it that ``partial`` holds
    (``_EpochProgress.saved``)."""
    p = trainer.plan
    steps_into_epoch = 0 if partial is None else partial["training_steps"]
    env_steps = p.env_steps_after(done, steps_into_epoch)
    meta = {
        "config": m.cfg.to_dict(),
        "counters": {"epoch": done, "env_steps": env_steps, "sgd_steps": p.sgd_steps_after(done, steps_into_epoch),
                     "epoch_training_steps": steps_into_epoch},
        "walltime": m.walltime,
        "has_buffer": m.cfg.save_buffer,
        "task": m.cfg.env,
        "eval_task": trainer.eval_task.spec.name,
        "state_size": trainer.spec.state_size,
        **({} if partial is None else {"partial_epoch": partial}),
    }
    m.last_good = m.writer.save(env_steps, {**saved, "rng": m.keys["init"]}, meta)
    _record_wallclock(m)


def _stop_mid_epoch(trainer: Trainer, members: list[_SeedRun], groups: SeedGroups, states: list[TrainingState],
                    epoch_index: int, progress: _EpochProgress, signal_name: str, console: Console) -> None:
    """Save every seed's checkpoint at the point ``progress`` reached in epoch ``epoch_index``, then stop."""
    for i, m in enumerate(members):
        m.walltime += progress.seconds_here
        saved = groups.seed([_saved_tree(s, None, m.cfg.save_buffer) for s in states], i)
        _save_checkpoint(trainer, m, saved, epoch_index, progress.saved(i))
    _stopped(members, signal_name, f"in epoch {epoch_index + 1} after training step {progress.steps}/"
                                   f"{trainer.plan.training_steps_per_epoch}", console)


def _stopped(members: list[_SeedRun], signal_name: str, when: str, console: Console) -> None:
    """Report a stop after the seeds' checkpoints (``when``: where in the run) and raise :class:`Preempted`."""
    where = ", ".join(str(m.last_good) for m in members)
    console.print(f"[yellow]{signal_name}: stopped {when} with checkpoint {where}; resume with --resume")
    raise Preempted(where)


class _StopSignals:
    """SIGTERM and SIGINT at any moment of a run end it with :class:`Preempted` and a directory that
    ``--resume`` continues (docs/runs.md#stopping-and-resuming).

    Outside the epoch loop (start-up, restore, compile) the run stops at once: there is nothing to save.
    In the loop, and in the ``deferred`` sections (claiming run directories, writing their configs), the
    signal is noted and the run stops at the next safe point: when the call of training steps in progress
    ends, with a checkpoint in the middle of the epoch (or, in the epoch's evaluation, after the epoch's
    checkpoint). A second
    SIGINT (Ctrl-C twice) stops at once; a checkpoint it interrupts is a temporary one, which orbax never
    lists and the resume cleans up."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested: str | None = None  # the name of the signal that asked to stop
        self.deferring = False
        self._raised = False
        self._previous: dict = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        again = self.requested is not None
        self.requested = signal.Signals(signum).name
        if self._raised:
            return
        if not self.deferring or (again and signum == signal.SIGINT):
            self._raised = True
            raise Preempted(self.requested)
        os.write(2, f"\n{self.requested}: stopping after the training steps in progress and a checkpoint "
                    f"(Ctrl-C again to stop now)\n".encode())

    @contextlib.contextmanager
    def deferred(self, stop_after: bool = True):
        """A section a signal must not cut: the stop waits for its end (``stop_after``), or the section
        stops by itself (the epoch loop, after a checkpoint; a run that completed just exits)."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if stop_after:
            self.stop_if_requested()

    def stop_if_requested(self) -> None:
        if self.requested is not None and not self._raised:
            self._raised = True
            raise Preempted(self.requested)


def _initial_state(trainer: Trainer, members: list[_SeedRun], resuming: bool, console: Console):
    """``(state, start_epoch, progress)`` from the latest checkpoints (common to all seeds), or fresh;
    ``progress``: the training steps of epoch ``start_epoch`` a checkpoint in its middle already holds. Sets
    each member's walltime and last good checkpoint. The state is stacked over the seeds (a leading axis,
    also for one seed); checkpoints are per seed, without it."""
    num_seeds = len(members)
    latest = [ckpt.latest_step(m.path) if resuming else None for m in members]
    if any(step is None for step in latest):
        if resuming:
            console.print(f"{', '.join(str(m.path) for m in members)}: no complete checkpoint; starting from the beginning")
        init = jax.jit(_over_seeds(trainer.init, num_seeds))
        return init(_stack([m.keys["init"] for m in members])), 0, _EpochProgress()
    # Seeds save together; if a stop came between their saves, go back to the last step they all have.
    step = min(latest)
    missing = [str(m.path) for m in members if step not in ckpt.list_steps(m.path)]
    if missing:
        raise ckpt.CheckpointError(f"no checkpoint at env step {step} (the latest common to the seeds) in {', '.join(missing)}")
    state_template = jax.eval_shape(trainer.init, members[0].keys["init"])
    restored = []
    for m in members:
        meta = ckpt.read_meta(m.path, step)
        saved, meta = ckpt.restore(m.path, step, _saved_tree(state_template, m.keys["init"], meta["has_buffer"]))
        restored.append((saved, meta))
        m.walltime = meta["walltime"]
        m.last_good = ckpt.step_path(m.path, step)
    start_epoch = restored[0][1]["counters"]["epoch"]
    # A checkpoint in the middle of an epoch (a stop) holds its steps so far; older versions saved none.
    partial = [meta.get("partial_epoch") for _, meta in restored]
    progress = _EpochProgress.restored(partial) if partial[0] else _EpochProgress()
    for m in members:  # a seed that saved past the common step: keep its newer checkpoints, out of the way
        for newer in [s for s in ckpt.list_steps(m.path) if s > step]:
            moved = m.path / SUPERSEDED_DIR / f"{newer:012d}_{time.strftime('%Y%m%dT%H%M%S')}"
            moved.parent.mkdir(exist_ok=True)
            ckpt.step_path(m.path, newer).rename(moved)
            console.print(f"[yellow]{m.path}: checkpoint {newer} is past the seeds' common step {step}; moved to {moved}")
    if restored[0][1]["has_buffer"]:
        state = _stack([TrainingState(s["learner"], s["env_state"], s["buffer"], s.get("collector")) for s, _ in restored])
    else:
        refill = jax.jit(_over_seeds(trainer.init_env_and_buffer, num_seeds))
        refill_keys = _stack([_refill_key(m.keys["refill"], start_epoch, progress.steps) for m in members])
        collectors = None if trainer.collector_agent is None else _stack([s["collector"] for s, _ in restored])
        state = refill(_stack([s["learner"] for s, _ in restored]), refill_keys, collectors)
        if trainer.dataset is None:
            console.print(
                f"[yellow]no buffer in the checkpoint: refilled it with {trainer.plan.prefill_env_steps:,} fresh env steps (not counted)"
            )
    into_epoch = f" and {progress.steps}/{trainer.plan.training_steps_per_epoch} training steps" if progress.steps else ""
    console.print(
        f"resuming {', '.join(str(m.path) for m in members)} at epoch {start_epoch}/{trainer.plan.num_epochs}{into_epoch} "
        f"from {', '.join(str(m.last_good) for m in members)}"
    )
    return state, start_epoch, progress


def _refill_key(refill_key: jax.Array, epoch: int, steps_into_epoch: int) -> jax.Array:
    """The key of the buffer refilled on resuming after ``epoch`` epochs and ``steps_into_epoch`` steps of the next."""
    key = jax.random.fold_in(refill_key, epoch)
    return key if steps_into_epoch == 0 else jax.random.fold_in(key, steps_into_epoch)


def _import_wandb():
    try:
        import wandb
    except ImportError:
        raise ValueError("--wandb needs the wandb package: pip install 'rlscale[wandb]'") from None
    return wandb


def _wandb_run(cfg: TrainConfig, run_path: Path):
    if not cfg.wandb:
        return None
    wandb = _import_wandb()
    return wandb.init(project=cfg.wandb_project, name=run_path.name, dir=str(run_path), config=cfg.to_dict(), resume="allow", id=run_path.name)


def _print_plan(console: Console, cfg: TrainConfig, p: Plan, trainer: Trainer, run_path: Path) -> None:
    from rlscale.networks import param_count

    learner = jax.eval_shape(trainer.agent.init, jax.random.PRNGKey(0))
    algo = f"{cfg.algo}, " if agents.get(cfg.algo).tag else ""  # as in run names: CRL's says nothing
    console.print(
        f"[bold]{run_path}[/]: {algo}{cfg.env} (eval {trainer.eval_task.spec.name}), actor depth {cfg.resolved_actor_depth}, "
        f"critic depth {cfg.resolved_critic_depth}, width {cfg.width}, batch {cfg.batch_size}, seed {cfg.seed}; "
        f"{param_count(trainer.agent.trained_params(learner)):,} parameters"
        + ("" if cfg.collector_depth is None else
           f"; learns only from the data of a depth-{cfg.collector_depth} collector, which acts")
        + ("" if trainer.dataset is None else _dataset_line(cfg.dataset, trainer)) + "\n"
        f"plan: {p.prefill_env_steps:,} prefill + {p.num_epochs} epochs × {p.training_steps_per_epoch} training steps × "
        f"{p.env_steps_per_training_step:,} env steps = {p.total_env_steps:,} env steps (asked {cfg.total_env_steps:,}); "
        f"{p.sgd_steps_per_training_step} SGD steps per collection, {p.total_sgd_steps:,} in all"
    )


def _dataset_line(path: str, trainer: Trainer) -> str:
    held = datasets.info(trainer.dataset)
    slot_length, num_slots = datasets.layout(held["steps"], trainer.cfg.resolved_window_length, held["longest_episode"],
                                             trainer.num_devices)
    return (f"; learns only from dataset {path} ({held['episodes']:,} episodes, {held['steps']:,} steps, "
            f"{slot_length * num_slots:,} of them used), never acting: env steps count as a collecting run's would")


def _print_row(console: Console, row: dict, p: Plan, elapsed: float, epochs_done_here: int, prefix: str = "") -> None:
    remaining = p.num_epochs - row["epoch"]
    eta = elapsed / epochs_done_here * remaining
    console.print(
        f"{prefix}epoch {row['epoch']:>4}/{p.num_epochs}  steps {row[metric_keys.ENV_STEPS]:>12,}  "
        f"env/s {row[metric_keys.ENV_SPS]:>9,.0f}  sgd/s {row[metric_keys.SGD_SPS]:>7,.1f}  "
        f"time@goal {row[metric_keys.TIME_AT_GOAL]:>7.1f}  success_any {row[metric_keys.SUCCESS_ANY]:.2f}  "
        + "".join(f"{label} {row[key]:{spec}}  " for label, key, spec in _LOSS_COLUMNS if key in row)
        + f"ETA {eta / 60:.1f} min"
    )


# The training metrics a printed row shows, where the algorithm reports them (GCSL has no critic or α).
_LOSS_COLUMNS = tuple((label, metric_keys.TRAINING_PREFIX + name, spec)
                      for label, name, spec in (("critic", "critic_loss", ".3f"), ("actor", "actor_loss", ".3f"), ("α", "alpha", ".3g")))
