"""``rlscale sweep FILE``: expand a sweep file, validate every run, then launch what is left to do.

Each run owns ``<runs root>/<sweep name>/<readable name>_<id>/`` (the id is a short hash of what defines
its experiment, ``launch.sweepfile.run_id``), or a directory of another name whose ``config.json`` holds
the same experiment, such as one named by an earlier version's ids, which keeps its name
(:func:`locate_run_dirs`). So a rerun of the same file finds its runs again: finished runs are skipped,
interrupted ones resumed (``rlscale train --resume``), failed ones skipped until ``--retry-failed``. Logs
and failed-run markers live in ``<sweep dir>/logs/``, each run's writer lock in its directory
(docs/runs.md#one-writer-per-run); ``summary.csv`` (and ``summary.png``) in the sweep dir.

Exit status: 0 when every run is done, 1 when some run failed or is unfinished, 2 for bad input, 75
when the launcher was stopped by SIGTERM or SIGINT (its runs were told to save and stop; rerun to resume).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import typing
from pathlib import Path

from rlscale.launch import runs, sweepfile
from rlscale.launch.sweepfile import SweepError

from rlscale.storage.run_dir import (
    CONFIG_FILE,
    RunDirError,
    is_started,
    read_config,
    run_dirs_in,
)

FORWARD_PREFIXES = ("JAX_", "XLA_", "RLSCALE_", "WANDB_", "TF_CPP_")
CACHE_DIR = ".jax_cache"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one-line errors, exit status 2 (through rlscale.cli)
        raise SweepError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rlscale sweep",
        description="Launch (or resume) the runs of a sweep file (configs/sweeps/*.yaml). Options given here "
        "override the file's launcher settings.",
    )
    p.add_argument("file", help="sweep file (YAML)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their exact commands; launch nothing")
    p.add_argument("--summarize", action="store_true", help="only rebuild summary.csv (and the plot) from the run dirs")
    p.add_argument("--retry-failed", action="store_true", help="also rerun runs recorded as failed")
    p.add_argument("--runs-root", default="runs", help="folder of the sweep folders (default: runs)")
    for setting in _flag_settings():
        if setting.type is bool:
            p.add_argument(setting.flag.name, action="store_true", help=setting.flag.help)
        else:
            p.add_argument(setting.flag.name, type=_flag_type(setting.type), choices=setting.check.choices,
                           help=setting.flag.help)
    return p


def _flag_settings() -> list[sweepfile.FlagSetting]:
    """The launcher settings that flags override, one per flag (a flag's first setting)."""
    first: dict[str, sweepfile.FlagSetting] = {}
    for setting in sweepfile.flag_settings():
        first.setdefault(setting.flag.name, setting)
    return list(first.values())


def _flag_type(hint) -> type | None:
    """``int`` or ``float`` for a setting of that type (or that or None); else None (a string)."""
    kinds = [a for a in typing.get_args(hint) or (hint,) if a is not type(None)]
    return kinds[0] if kinds in ([int], [float]) else None


def _apply_options(launcher: sweepfile.Launcher, args: argparse.Namespace) -> sweepfile.Launcher:
    """The file's launcher settings with the command line on top (checked like the file's), in the order the
    settings are declared (the backend first)."""
    launcher = copy.deepcopy(launcher)
    for setting in sweepfile.flag_settings():
        flag = setting.flag.name
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is None or value is False or (setting.flag.backend not in (None, launcher.backend)):
            continue
        if setting.type is bool:
            value = not flag.startswith("--no-")
        elif setting.type is int and isinstance(value, float):
            if not value.is_integer():
                raise SweepError(f"{flag} {value!r} is not a whole number")
            value = int(value)
        if not setting.check.test(value):
            raise SweepError(f"{flag} {value!r} is not {setting.check.description}")
        target = launcher
        for name in setting.path[:-1]:
            target = getattr(target, name)
        setattr(target, setting.path[-1], value)
    return launcher


def locate_run_dirs(run_list: list[sweepfile.Run], sweep_dir: Path) -> list[Path]:
    """Each run's directory: ``<name>_<id>`` when it holds a ``config.json``; else the one directory of
    the sweep whose ``config.json`` holds the same experiment (``sweepfile.saved_experiment_key``), such as
    one named by an earlier version's ids, kept under its name; else ``<name>_<id>``, to be created.

    Looking for the runs that have no ``<name>_<id>``, two directories holding one run's experiment, or a
    ``config.json`` that cannot be read, are errors: a guess could train a finished run again."""
    found = [sweep_dir / run.name for run in run_list]
    missing = {sweepfile.experiment_key(run.config): i for i, run in enumerate(run_list) if not is_started(found[i])}
    if not missing or not sweep_dir.is_dir():
        return found
    config_class = type(run_list[0].config)
    names = {run.name for run in run_list}
    claims: dict[int, list[Path]] = {}
    for path in run_dirs_in(sweep_dir):
        if path.name in names:
            continue
        try:
            key = sweepfile.saved_experiment_key(read_config(path), config_class)
        except (RunDirError, ValueError) as err:
            raise SweepError(
                f"{path / CONFIG_FILE}: {err}; cannot tell whether it is one of the sweep's runs: fix it, or move "
                f"{path.name} out of {sweep_dir}"
            ) from None
        if key in missing:
            claims.setdefault(missing[key], []).append(path)
    for i, paths in claims.items():
        if len(paths) > 1:
            raise SweepError(
                f"{sweep_dir}: {' and '.join(p.name for p in paths)} both hold run {i + 1} ({run_list[i].name}) by "
                f"their {CONFIG_FILE}: keep one and move the other out of the sweep directory"
            )
        found[i] = paths[0]
    return found


def make_specs(run_list: list[sweepfile.Run], sweep_dir: Path, compilation_cache: bool) -> list[runs.RunSpec]:
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARD_PREFIXES)}
    if compilation_cache and "JAX_COMPILATION_CACHE_DIR" not in env:
        env["JAX_COMPILATION_CACHE_DIR"] = str(sweep_dir / CACHE_DIR)
    env_items = tuple(sorted(env.items()))
    cwd = os.getcwd()
    return [
        runs.RunSpec(
            id=run.id,
            name=run_dir.name,
            run_dir=str(run_dir),
            train_args=tuple(run.train_args(str(run_dir))),
            env=env_items,
            cwd=cwd,
        )
        for run, run_dir in zip(run_list, locate_run_dirs(run_list, sweep_dir))
    ]


def make_backend(launcher: sweepfile.Launcher, sweep_dir: Path, sweep_name: str):
    if launcher.backend == "local":
        from rlscale.launch.local_backend import LocalBackend

        return LocalBackend(launcher.workers, launcher.runs_per_gpu)
    if launcher.backend == "ray":
        from rlscale.launch.ray_backend import RayBackend

        return RayBackend(launcher.ray, launcher.workers)
    try:
        from rlscale.launch.slurm_backend import SlurmBackend
    except ImportError:
        raise SweepError("the slurm backend needs submitit: pip install 'rlscale[slurm]'") from None
    return SlurmBackend(launcher.slurm, sweep_dir / "slurm", f"rlscale-{sweep_name}")


def pack_seeds(todo: list[runs.RunSpec], run_list: list[sweepfile.Run], specs: list[runs.RunSpec], size: int) -> list:
    """Group not-yet-started runs whose configs differ only in seed into packs of up to ``size`` runs
    (:class:`launch.runs.PackSpec`); started runs resume alone, from their own checkpoints."""
    if size <= 1:
        return todo
    config_of = {spec.id: run.config for spec, run in zip(specs, run_list)}
    groups: dict[str, list[runs.RunSpec]] = {}
    out: list = []
    for spec in todo:
        if is_started(spec.run_dir):
            out.append(spec)
            continue
        key = json.dumps({k: v for k, v in config_of[spec.id].to_dict().items() if k not in ("seed", "run_dir")}, sort_keys=True)
        groups.setdefault(key, []).append(spec)
    for members in groups.values():
        for i in range(0, len(members), size):
            chunk = members[i : i + size]
            if len(chunk) == 1:
                out.append(chunk[0])
            else:
                out.append(runs.PackSpec(tuple(chunk), tuple(config_of[m.id].seed for m in chunk)))
    return out


class Reporter:
    """Progress lines, one per event (thread-safe)."""

    def __init__(self, specs: list[runs.RunSpec], out=None):
        self.position = {s.id: i + 1 for i, s in enumerate(specs)}
        self.total = len(specs)
        self.started_at: dict[str, float] = {}
        self.failed: list[runs.RunSpec] = []
        self._lock = threading.Lock()
        self._out = out or sys.stdout

    def _print(self, text: str) -> None:
        with self._lock:
            print(text, file=self._out, flush=True)

    def _tag(self, spec: runs.RunSpec | runs.PackSpec) -> str:
        first = spec.members[0] if isinstance(spec, runs.PackSpec) else spec
        return f"[{self.position[first.id]:>{len(str(self.total))}}/{self.total}]"

    def note(self, text: str) -> None:
        self._print(text)

    def started(self, spec: runs.RunSpec, where: str | None) -> None:
        self.started_at[spec.id] = time.monotonic()
        how = "resume" if is_started(spec.run_dir) else "start "
        self._print(f"{self._tag(spec)} {how}   {spec.name}{f' ({where})' if where else ''}")

    def finished(self, spec: runs.RunSpec, code: int | None, message: str | None = None) -> None:
        took = time.monotonic() - self.started_at.get(spec.id, time.monotonic())
        if code == runs.FINISHED_ELSEWHERE:
            self._print(f"{self._tag(spec)} done     {spec.name}: finished by another process while this launcher "
                        f"waited for it ({took:.0f} s)")
            return
        if code == 0:
            self._print(f"{self._tag(spec)} done     {spec.name} ({took:.0f} s)")
            return
        if code == runs.PREEMPTED:
            self._print(f"{self._tag(spec)} stopped  {spec.name}: it will resume from its last checkpoint ({took:.0f} s)")
            return
        self.failed.append(spec)
        reason = message or runs.describe_exit(code)
        tail = runs.log_tail(spec.log_path)
        indented = "\n".join("      | " + line for line in tail.splitlines())
        self._print(f"{self._tag(spec)} FAILED   {spec.name}: {reason}; log: {spec.log_path}\n{indented}")


def _print_dry_run(sweep, run_list, specs, checked, launcher, sweep_dir) -> None:
    _cpu_only_jax()
    costs = _Costs()
    print(f"sweep {sweep.name} ({sweep.path}): {len(run_list)} runs in {sweep_dir}")
    print(f"backend: {launcher.backend}" + (f", {launcher.workers} worker(s)" if launcher.workers else ""))
    if specs and specs[0].env:
        print("environment of the runs: " + " ".join(f"{k}={v}" for k, v in specs[0].env))
    width = len(str(len(run_list)))
    counts: dict[str, int] = {}
    for run, spec in zip(run_list, specs):
        status = runs.state(spec)
        counts[status] = counts.get(status, 0) + 1
        p = checked.plans.get(run.id)
        budget = f"{p.total_env_steps:,} env steps, {p.num_epochs} epochs" if p else ""
        action = {"done": "skip (done)", "failed": "skip (failed; --retry-failed)", "partial": "resume", "pending": "start"}[status]
        print(f"[{run.index + 1:>{width}}/{len(run_list)}] {status:8s} {spec.name}  {budget}  -> {action}")
        if status != "done":
            print("    " + " ".join(spec.command(resume=status == "partial" or is_started(spec.run_dir))))
        if p is not None and run.config.env not in checked.unregistered:
            print("    cost: " + costs.line(run.config))
    print(f"{len(run_list)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if costs.runs:
        print("sweep cost: " + costs.totals())
    for task, task_runs in sorted(checked.unregistered.items()):
        print("note: " + sweepfile.unregistered_note(task, task_runs))


class _Costs:
    """The dry run's cost of each run (rlscale.training.estimates), estimated once per configuration: seeds
    and run directories do not change it."""

    def __init__(self):
        self.estimates: dict[str, typing.Any] = {}
        self.runs: list[typing.Any] = []
        self.not_estimated = 0

    def line(self, cfg) -> str:
        from rlscale.training.estimates import estimate

        key = json.dumps(dataclasses.asdict(dataclasses.replace(cfg, seed=0, run_dir=None)), sort_keys=True, default=str)
        if key not in self.estimates:
            try:
                self.estimates[key] = estimate(cfg)
            except (OSError, ValueError) as err:  # e.g. a dataset run's dataset not recorded yet
                self.estimates[key] = f"not estimated: {err}"
        cost = self.estimates[key]
        if isinstance(cost, str):
            self.not_estimated += 1
            return cost
        self.runs.append(cost)
        return cost.line()

    def totals(self) -> str:
        from rlscale.training.estimates import GIB, flops_text, hours_text

        timed = [c.hours for c in self.runs if c.hours is not None]
        bound = "≥ " if any(c.hours_source.startswith("≥") for c in self.runs if c.hours is not None) else ""
        hours = (f"{bound}{hours_text(sum(timed))} of device time" + ("" if len(timed) == len(self.runs) else
                 f" for the {len(timed)} runs with a measured speed")) if timed else "no measured speed for this device"
        sgd = sum(c.plan.total_sgd_steps * c.flops_per_sgd_step for c in self.runs)
        unknown = f" ({self.not_estimated} runs not estimated)" if self.not_estimated else ""
        return (f"{len(self.runs)} runs{unknown}, {flops_text(sgd)} of SGD steps, largest peak memory "
                f"{max(c.peak_bytes for c in self.runs) / GIB:.2f} GiB per run; {hours}")


def _cpu_only_jax() -> None:
    """Building a task for its parameter count initialises JAX in this process: keep it off the GPUs
    (this process only; the runs' environments are untouched)."""
    import jax

    try:
        jax.config.update("jax_platforms", "cpu")
    except Exception:  # noqa: BLE001 - backends already initialised (a launcher called in-process)
        pass


def _summarize(sweep, run_list, specs, checked, sweep_dir: Path, show: bool) -> list[dict]:
    from rlscale.launch import summary

    _cpu_only_jax()

    table = summary.rows(sweep, run_list, specs, checked.plans)
    path = sweep_dir / "summary.csv"
    summary.write_csv(table, path)
    if show:
        print(summary.format_table(table))
    print(f"summary: {path}")
    print(summary.plot(table, sweep_dir / "summary.png", sweep.name, sweep.reference_study))
    print(summary.format_depth_effect(summary.depth_effect(table), " of your runs"))
    study = summary.study_verdict(sweep.reference_study)
    if study:
        print(study)
    return table


@dataclasses.dataclass
class _Signals:
    count: int = 0
    previous: dict = dataclasses.field(default_factory=dict)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1:
            message = (f"\n{signal.Signals(signum).name}: starting no more runs; running ones save a checkpoint at the "
                       "end of their epoch and stop (again to kill them now)\n")
            os.write(sys.stderr.fileno(), message.encode())  # unbuffered: print is not reentrant
            runs.request_stop(signal.SIGTERM)
        else:
            runs.request_stop(signal.SIGKILL)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    sweep = sweepfile.load(args.file)
    launcher = _apply_options(sweep.launcher, args)
    run_list = sweepfile.expand(sweep)
    checked = sweepfile.check(sweep, run_list)
    if checked.errors:
        more = f" (and {len(checked.errors) - 1} more invalid runs)" if len(checked.errors) > 1 else ""
        raise SweepError(checked.errors[0] + more)
    sweep_dir = Path(args.runs_root).absolute() / sweep.name
    specs = make_specs(run_list, sweep_dir, launcher.compilation_cache)
    kept = sum(spec.name != run.name for spec, run in zip(specs, run_list))
    if kept:
        print(f"{kept} run(s) found by their {CONFIG_FILE} in directories of other names (earlier versions' ids): "
              "kept under those names")

    if args.summarize:
        _summarize(sweep, run_list, specs, checked, sweep_dir, show=True)
        return 0
    if args.dry_run:
        _print_dry_run(sweep, run_list, specs, checked, launcher, sweep_dir)
        return 0
    if checked.unregistered:
        notes = "; ".join(sweepfile.unregistered_note(t, r) for t, r in sorted(checked.unregistered.items()))
        raise SweepError(f"{sweep.path}: nothing launched: {notes}")

    reporter = Reporter(specs)
    todo = []
    for spec in specs:
        status = runs.state(spec)
        if status == "done":
            reporter.note(f"{reporter._tag(spec)} done     {spec.name} (skipped)")
        elif status == "failed" and not args.retry_failed:
            marker = runs.read_marker(spec) or {}
            reporter.note(
                f"{reporter._tag(spec)} failed   {spec.name} earlier ({marker.get('message', 'see log')}): skipped; "
                f"--retry-failed to rerun it; log: {spec.log_path}"
            )
        else:
            todo.append(spec)

    backend = make_backend(launcher, sweep_dir, sweep.name)
    for spec in todo:
        runs.clear_marker(spec)  # --retry-failed
    todo = pack_seeds(todo, run_list, specs, launcher.pack_seeds)
    start = time.monotonic()
    signals = _Signals()
    runs.reset_stop()
    if todo:
        print(f"sweep {sweep.name}: {len(todo)} of {len(specs)} runs to do in {sweep_dir}; {backend.describe()}", flush=True)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        signals.install()
        try:
            queue = todo
            for _ in range(launcher.max_preemptions + 1):
                results = backend.run(queue, reporter)
                again = [s for s in queue if results.get(s.id) == runs.PREEMPTED]
                if runs.stopping() or not again:
                    break
                reporter.note(f"resubmitting {len(again)} run(s) stopped by SIGTERM: they resume from their checkpoints")
                queue = again
        finally:
            signals.restore()
    stopped = runs.stopping()
    runs.reset_stop()

    states = [runs.state(s) for s in specs]
    counts = {s: states.count(s) for s in ("done", "failed", "partial", "pending") if states.count(s)}
    _summarize(sweep, run_list, specs, checked, sweep_dir, show=False)
    minutes = (time.monotonic() - start) / 60
    print(f"sweep {sweep.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" ({minutes:.1f} min)")
    failed = [s for s, st in zip(specs, states) if st == "failed"]
    for spec in failed:
        print(f"  failed: {spec.name} (log: {spec.log_path})")
    if stopped:
        print("stopped: rerun the same command to resume")
        return runs.PREEMPTED
    return 0 if all(st == "done" for st in states) else 1
