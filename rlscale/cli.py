"""``rlscale`` command line: ``rlscale train``, ``rlscale envs``."""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import io
import re
import sys
import warnings
from typing import Callable

USAGE = """usage: rlscale COMMAND [options]

commands:
  train   train a CRL agent or a baseline (--algo; rlscale train --help); resume with: rlscale train --resume RUN_DIR
  envs    list the registered tasks and their facts
  eval    evaluate checkpoints of a run, a checkpoint or a sweep (rlscale eval --help)
  sweep   launch or resume the runs of a sweep file (rlscale sweep --help; configs/sweeps/)
  plot    scaling figures, aggregates and depth fits of a sweep directory (rlscale plot --help)
  record  write episodes of a checkpoint's policy to a dataset file for --dataset (rlscale record --help)
"""


class CliError(Exception):
    pass


# Dependencies' import noise, silenced in the CLI (rlscale's own warnings and output are left alone):
# mujoco.mjx.warp prints these lines to stdout when the optional warp package is missing, and Brax warns
# that it is no longer maintained whenever a Brax system is loaded.
WARP_MODULE = "mujoco.mjx.warp"
WARP_NOISE = ("Failed to import warp: ", "Failed to import mujoco_warp: ")
BRAX_NOTICE = "Brax System, piplines and environments are not actively being maintained"


class _QuietLoader(importlib.abc.Loader):
    """Runs a module's import with its stdout captured, and passes on all but the ``WARP_NOISE`` lines."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured):
                self.loader.exec_module(module)
        finally:
            kept = [line for line in captured.getvalue().splitlines(keepends=True) if not line.startswith(WARP_NOISE)]
            sys.stdout.write("".join(kept))


class _QuietWarpImport(importlib.abc.MetaPathFinder):
    """Finds ``mujoco.mjx.warp`` as usual, with a :class:`_QuietLoader`; no other module."""

    def find_spec(self, name, path=None, target=None):
        if name != WARP_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_dependencies() -> None:
    """Silence the dependencies' import noise (``WARP_NOISE`` lines, Brax's ``BRAX_NOTICE``) in this process."""
    warnings.filterwarnings("ignore", message=re.escape(BRAX_NOTICE), category=UserWarning, module=r"brax\.")
    if not any(isinstance(finder, _QuietWarpImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietWarpImport())


def _host_options(args: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Options of the training process, not of the experiment (kept out of config.json)."""
    # No abbreviations: --run-dir (a config option) must not be taken for --run-dirs.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--num-seeds", type=int, default=1)
    parser.add_argument("--compilation-cache-dir", default=None)
    parser.add_argument("--no-compilation-cache", action="store_true")
    parser.add_argument("--num-devices", type=int, default=None)
    parser.add_argument("--seed-devices", type=int, default=None)
    parser.add_argument("--seed-threads", type=int, default=None)
    parser.add_argument("--steps-per-call", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true")
    # Used by the sweep launcher to pack runs: explicit seeds and run directories (one per seed).
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--run-dirs", nargs="+", default=None)
    return parser.parse_known_args(args)


HOST_OPTIONS_HELP = """
process options (not part of the run's config):
  --num-seeds N               train seeds --seed … --seed+N-1 in one process, one program vmapped over
                              seeds; run directories <run-dir>/seed<k> (default 1)
  --compilation-cache-dir DIR persistent XLA compilation cache (default: <run dir's parent>/.jax_cache,
                              or $JAX_COMPILATION_CACHE_DIR when set)
  --no-compilation-cache      do not use a persistent compilation cache
  --num-devices N             split envs and minibatches over the first N devices (default: one device)
  --seed-devices N            with --num-seeds: split the seeds over the first N devices (default: as many
                              of the visible devices as divide the seeds evenly; 1 keeps them on one)
  --seed-threads N            run the seeds as N groups at once, one host thread each (default: one per
                              CPU core, or $RLSCALE_SEED_THREADS; 1 on a GPU); changes speed, not the run
  --steps-per-call N          training steps per compiled call (default 1): a SIGTERM or Ctrl-C is acted on
                              when the call in progress ends, with a checkpoint in the middle of the epoch;
                              changes neither the numbers nor the run
  --dry-run                   print the plan and the cost (parameters, FLOPs per SGD step, peak device
                              memory, hours where benchmarks/results measured this device); train nothing
  --seeds S1 S2 … --run-dirs D1 D2 …
                              train these seeds together, seed Si in run directory Di (sweep packing)
  --resume DIR [DIR …]        resume a run, a --num-seeds group directory, or runs trained together
"""


def _legacy_flags(args: list[str]) -> list[str]:
    """``args`` with the flags of renamed true/false options (``rlscale.legacy_options``) written as
    today's: ``--no-layer-norm`` → ``--norm none``, ``--layer-norm`` → ``--norm layernorm``, so that old
    scripts and old sweep jobs keep working (the old flags are no longer listed in ``--help``)."""
    from rlscale.legacy_options import LEGACY_OPTIONS

    flags = {}
    for old, (new, values) in LEGACY_OPTIONS.items():
        if set(values) == {True, False}:
            flag, option = old.replace("_", "-"), "--" + new.replace("_", "-")
            flags.update({f"--{flag}": [option, values[True]], f"--no-{flag}": [option, values[False]]})
    return [part for arg in args for part in flags.get(arg, [arg])]


def _train(args: list[str]) -> None:
    import tyro

    from rlscale.config import TrainConfig, config_for
    from rlscale.training.loop import dry_run, resume_paths, train_seeds

    if "-h" in args or "--help" in args:
        print(HOST_OPTIONS_HELP)
    host, args = _host_options(_legacy_flags(args))
    cache = False if host.no_compilation_cache else host.compilation_cache_dir
    if "--resume" in args or any(a.startswith("--resume=") for a in args):
        parser = argparse.ArgumentParser(prog="rlscale train", add_help=False, allow_abbrev=False)
        parser.add_argument("--resume", required=True, nargs="+")
        known, extra = parser.parse_known_args(args)
        if host.dry_run:
            raise CliError("--dry-run plans a new run: give its options, not --resume (a resumed run keeps its plan)")
        if extra or host.num_seeds != 1 or host.seeds or host.run_dirs:
            raise CliError(
                f"with --resume the run's options come from {known.resume[0]}/config.json (a --num-seeds group: "
                f"its seed*/config.json); unexpected: {' '.join(extra) or '--num-seeds/--seeds/--run-dirs'}"
            )
        paths = [p for path in known.resume for p in resume_paths(path)]
        train_seeds(resume=paths, compilation_cache=cache, num_devices=host.num_devices, seed_threads=host.seed_threads,
                    started_at=_started_at(), seed_devices=host.seed_devices, steps_per_call=host.steps_per_call)
        return
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--env", default=TrainConfig.env)
    pre.add_argument("--algo", default=TrainConfig.algo)
    known, _ = pre.parse_known_args(args)
    from rlscale import agents
    from rlscale.envs import names

    if known.env not in names():
        raise CliError(f"unknown task {known.env!r}; valid tasks: {', '.join(names())}")
    agents.get(known.algo)  # an unknown --algo: a ValueError naming the valid ones
    # The algorithm's defaults (its Algorithm.defaults), shown by --help; the options given win over them.
    defaults = config_for(known.env, algo=known.algo)
    cfg = tyro.cli(
        TrainConfig,
        default=defaults,
        args=args,
        prog="rlscale train",
        description=(
            "Train contrastive RL, or a baseline (--algo). Defaults are the paper's, then the task's preset in "
            "configs/tasks/, then the algorithm's (shown as the defaults below for the chosen --env and --algo). Resume a run with: rlscale train --resume RUN_DIR. "
            "Process options --num-seeds, --seed-threads, --compilation-cache-dir, --no-compilation-cache are listed above."
        ),
    )
    if (host.seeds is None) != (host.run_dirs is None) or (host.seeds and len(host.seeds) != len(host.run_dirs)):
        raise CliError(f"--seeds and --run-dirs go together, one run directory per seed; got seeds {host.seeds}, run dirs {host.run_dirs}")
    if host.seeds and host.num_seeds != 1:
        raise CliError("give either --num-seeds or --seeds/--run-dirs, not both")
    if host.dry_run:
        dry_run(cfg, host.num_seeds, seeds=host.seeds, run_dirs=host.run_dirs)
        return
    train_seeds(cfg, host.num_seeds, compilation_cache=cache, num_devices=host.num_devices,
                seeds=host.seeds, run_dirs=host.run_dirs, seed_threads=host.seed_threads, started_at=_started_at(),
                seed_devices=host.seed_devices, steps_per_call=host.steps_per_call)


_AS_PROGRAM = False  # main() was called as the program (argv from the command line), not from Python


def _started_at() -> float | None:
    """Where a run's wall-clock starts: the process's start when this is the program (its imports count),
    else (an in-process call) when training is called."""
    if not _AS_PROGRAM:
        return None
    from rlscale.training.loop import process_start_time

    return process_start_time()


def _eval(args: list[str]) -> int:
    from rlscale.evaluation.evaluate import main as evaluate

    return evaluate(args)


def _envs(args: list[str]) -> None:
    from rlscale import envs

    if args:
        raise CliError(f"rlscale envs takes no options, got {' '.join(args)}")
    for name in envs.names():
        spec = envs.make(name).spec
        print(
            f"{name:24s} obs {spec.obs_size:4d} (state {spec.state_size}, goal idx {list(spec.goal_indices)})  "
            f"action {spec.action_size:2d}  success < {spec.success_threshold} m  eval: {spec.eval_task}"
        )


def _sweep(args: list[str]) -> int:
    from rlscale.launch.launcher import main as sweep

    # 0 all done, 1 some run failed or is unfinished (reported), 2 bad input, 75 stopped by a signal.
    return sweep(args)


def _plot(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rlscale plot",
        description="Figures (PNG and PDF), per-run scores, rliable aggregates and depth fits of a sweep directory.",
    )
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep directory, e.g. runs/quickstart (or one run directory)")
    parser.add_argument("--out", default=None, help="output folder (default: SWEEP_DIR/plots)")
    parser.add_argument("--reference", action="store_true", help="overlay the paper's numbers (configs/paper_results.yaml)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples per interval (default 2000)")
    known = parser.parse_args(args)
    try:
        from rlscale.analysis.sweeps import plot_sweep
    except ImportError as err:
        raise CliError(f"{err}; rlscale plot needs pandas and rliable: pip install -e \".[notebook]\"") from None

    plot_sweep(known.sweep_dir, known.out, reference=known.reference, reps=known.reps)
    return 0


def _record(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rlscale record",
        description="Roll out a checkpoint's policy on fresh episodes of its training task and write them to a new "
                    "dataset file (docs/method.md#dataset-format), to train from with rlscale train --dataset FILE.",
    )
    parser.add_argument("path", metavar="RUN_DIR", help="a run directory (its latest checkpoint) or one checkpoint directory")
    parser.add_argument("--episodes", type=int, required=True, help="how many episodes to record")
    parser.add_argument("--out", required=True, help="the new .npz file (never overwritten)")
    parser.add_argument("--deterministic", action="store_true",
                        help="record the deterministic tanh(mean) actions (default: the stochastic policy's samples)")
    parser.add_argument("--task", default=None, help="task to record on (default: the run's training task)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the resets and actions (default: the run's seed)")
    known = parser.parse_args(args)
    from rlscale.data import datasets
    from rlscale.evaluation.policy import load

    held = datasets.record(load(known.path), known.episodes, known.out, task=known.task,
                           deterministic=known.deterministic, seed=known.seed)
    print(f"{known.out}: {held['episodes']} episodes, {held['steps']:,} steps of task {held['task']} from "
          f"{held['source']} ({'deterministic' if held['deterministic'] else 'stochastic'} policy), {held['bytes']:,} bytes")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int | None]] = {
    "train": _train, "envs": _envs, "eval": _eval, "sweep": _sweep, "plot": _plot, "record": _record,
}


def main(argv: list[str] | None = None) -> int:
    global _AS_PROGRAM
    quiet_dependencies()
    _AS_PROGRAM = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"rlscale: error: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from rlscale.storage.checkpoint import CheckpointError
    from rlscale.storage.run_dir import (
        RunBusyError,
        RunDirError,
        describe_os_error,
        terminal_stderr,
    )
    from rlscale.training.loop import PREEMPTED_EXIT_CODE, NonFiniteError, Preempted

    # Exit status: 0 done, 1 the run diverged (non-finite), 2 bad input or a file-system error (one line
    # naming the path), 75 stopped by a signal or the run is busy (another process writes it): resume later.
    try:
        return COMMANDS[command](rest) or 0
    except Preempted:
        return PREEMPTED_EXIT_CODE
    except RunBusyError as err:
        print(f"rlscale {command}: {err}", file=terminal_stderr())
        return PREEMPTED_EXIT_CODE
    except (CliError, ValueError, RunDirError, CheckpointError, NonFiniteError) as err:
        print(f"rlscale {command}: error: {err}", file=terminal_stderr())
        return 1 if isinstance(err, NonFiniteError) else 2
    except OSError as err:
        print(f"rlscale {command}: error: {describe_os_error(err)}", file=terminal_stderr())
        return 2


if __name__ == "__main__":
    sys.exit(main())
