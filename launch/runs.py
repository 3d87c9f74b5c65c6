"""One run of a sweep, as every backend executes it: state on disk, locking, the subprocess, markers.

:func:`execute` is the only code that starts ``rlscale train``. Backends call it where the run executes:
in a thread of the launcher (local), in a Ray worker (ray) or in a Slurm job (slurm). It

1. takes the run's writer lock, ``<run dir>/.lock`` (``rlscale.storage.run_dir.RunLock``: the one lock that
   ``rlscale train`` itself takes), waiting while another process holds it; the training process inherits
   it, so a run is never trained by two processes at once, even when the process that started it died;
2. returns at once if the run is complete (:data:`FINISHED_ELSEWHERE` when another process finished it
   while this one waited);
3. starts ``python -m rlscale.cli train ...`` fresh, or ``train --resume RUN_DIR`` when the run
   directory already has a ``config.json``, with stdout and stderr appended to ``logs/<run>.log``;
4. records a failed-run marker ``logs/<run>.failed.json`` (exit status, command, log tail) when the run
   fails, and removes it when the run completes.

Exit status 75 (``rlscale.training.loop.PREEMPTED_EXIT_CODE``: SIGTERM, checkpoint saved) is not a failure; nor is
a run killed by SIGTERM, SIGINT or SIGHUP before it could save (both are reported as 75 and resumed).

The training process is started through ``launch/_child.py``, which asks Linux to send it SIGTERM when
the process that started it dies (a killed Ray worker, a cancelled Slurm job): it then finishes its
epoch, saves a checkpoint and exits, releasing the lock for the retry.

Nothing here imports JAX: the launcher must not touch the accelerators.

Fault injection for tests: with ``RLSCALE_SWEEP_FAULT=kill_worker_once:<marker file>`` in the
environment, the first :func:`execute` that manages to create the marker file kills its own process
with SIGKILL right after starting the training process (a worker dying mid-run).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from rlscale.storage.run_dir import HELD_LOCKS_ENV, RunLock, is_complete, is_started

PREEMPTED = 75  # rlscale.training.loop.PREEMPTED_EXIT_CODE (not imported: that module imports JAX)
# What execute returns for a run that another process (a second launcher, a user's resume) finished while
# this one waited for its lock: done, but not by us. Not an exit status (those are below 256).
FINISHED_ELSEWHERE = 256
INTERRUPTING_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FAULT_ENV = "RLSCALE_SWEEP_FAULT"
LOG_DIR = "logs"
TAIL_LINES = 20
# The exec wrapper, run by path with -S (it needs only the standard library): nothing in the working
# directory can shadow it, and it starts in milliseconds.
CHILD = str(Path(__file__).with_name("_child.py"))

_live: dict[int, subprocess.Popen] = {}  # pid -> training process started by this process
_stopping = threading.Event()


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything needed to execute one run anywhere (picklable for Ray and submitit)."""

    id: str
    name: str
    run_dir: str  # absolute
    train_args: tuple[str, ...]  # options of a fresh `rlscale train`, including --run-dir
    env: tuple[tuple[str, str], ...] = ()  # environment variables for the training process
    cwd: str | None = None

    @property
    def log_dir(self) -> Path:
        return Path(self.run_dir).parent / LOG_DIR

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    @property
    def marker_path(self) -> Path:
        return self.log_dir / f"{self.name}.failed.json"


    def command(self, resume: bool, python: str | None = None) -> list[str]:
        python = python or sys.executable
        if resume:
            return [python, "-m", "rlscale.cli", "train", "--resume", self.run_dir]
        return [python, "-m", "rlscale.cli", "train", *self.train_args]


# --- state on disk -----------------------------------------------------------------------------


def read_marker(spec: RunSpec) -> dict | None:
    try:
        return json.loads(spec.marker_path.read_text())
    except (OSError, ValueError):
        return None


def state(spec: RunSpec) -> str:
    """done, failed (a failed-run marker), partial (started, not complete) or pending."""
    if is_complete(spec.run_dir):
        return "done"
    if spec.marker_path.exists():
        return "failed"
    if is_started(spec.run_dir):
        return "partial"
    return "pending"


def log_tail(path: str | Path, lines: int = TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def members(spec: "RunSpec | PackSpec") -> tuple[RunSpec, ...]:
    """The runs a spec trains: itself, or a pack's runs."""
    return spec.members if isinstance(spec, PackSpec) else (spec,)


def mark_failed(spec: "RunSpec | PackSpec", code: int | None, message: str, command: list[str] | None = None) -> None:
    from rlscale.storage.run_dir import write_atomic

    if isinstance(spec, PackSpec):
        for member in spec.members:
            mark_failed(member, code, message, command)
        return

    spec.log_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "run": spec.name,
        "exit_code": code,
        "message": message,
        "command": command,
        "log": str(spec.log_path),
        "time": _now(),
        "tail": log_tail(spec.log_path),
    }
    write_atomic(spec.marker_path, json.dumps(record, indent=2) + "\n")


def clear_marker(spec: RunSpec) -> None:
    spec.marker_path.unlink(missing_ok=True)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# --- stopping ----------------------------------------------------------------------------------


def stopping() -> bool:
    return _stopping.is_set()


def request_stop(sig: int = signal.SIGTERM) -> None:
    """Start no more runs; send ``sig`` to the training processes this process started."""
    _stopping.set()
    for proc in list(_live.values()):
        try:
            proc.send_signal(sig)
        except (ProcessLookupError, OSError):
            pass


def reset_stop() -> None:
    _stopping.clear()


def wait_for_children(deadline_s: float) -> None:
    """Wait (without reaping) until this process's training processes have exited, or the deadline."""
    end = time.monotonic() + deadline_s
    for pid in list(_live):
        while time.monotonic() < end:
            try:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if info is not None:
                break
            time.sleep(0.5)


# --- executing a run ---------------------------------------------------------------------------


def _log(log, text: str) -> None:
    log.write(f"=== {_now()} [pid {os.getpid()}] {text}\n".encode())
    log.flush()


def _fault(env: dict[str, str]) -> str | None:
    value = env.get(FAULT_ENV, "")
    kind, _, marker = value.partition(":")
    if kind != "kill_worker_once" or not marker:
        return None
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    return kind


def execute(spec: "RunSpec | PackSpec", extra_env: dict[str, str] | None = None) -> int:
    """Run (or resume) one run to its end; returns 0, 75 (stopped; resume it) or the failing status."""
    if isinstance(spec, PackSpec):
        return _execute_pack(spec, extra_env)
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **dict(spec.env), **(extra_env or {})}
    with open(spec.log_path, "ab") as log:
        lock, waited = _lock(spec, log)
        try:
            if is_complete(spec.run_dir):
                _log(log, "already complete" + (" (finished by the process this one waited for)" if waited else ""))
                clear_marker(spec)
                return FINISHED_ELSEWHERE if waited else 0
            if stopping():
                return PREEMPTED
            command = spec.command(is_started(spec.run_dir))
            code = _run_training(command, env, spec.cwd, log, [lock])
        finally:
            lock.release()
    return _outcome([spec], code, command)


@dataclasses.dataclass(frozen=True)
class PackSpec:
    """Runs of a sweep that differ only in their seed, trained by one process: ``rlscale train … --seeds
    S1 S2 … --run-dirs D1 D2 …`` (one program vmapped over the seeds), or ``--resume D1 D2 …``. Each run
    keeps its own run directory, lock and failure marker; the pack's output goes to its first run's log."""

    members: tuple[RunSpec, ...]
    seeds: tuple[int, ...]

    @property
    def id(self) -> str:
        return "+".join(m.id for m in self.members)

    @property
    def name(self) -> str:
        return f"{self.members[0].name} (+{len(self.members) - 1} seeds packed)"

    @property
    def run_dir(self) -> str:
        return self.members[0].run_dir

    @property
    def log_path(self) -> Path:
        return self.members[0].log_path

    def command(self, todo: list[RunSpec], resume: bool, python: str | None = None) -> list[str]:
        python = python or sys.executable
        if resume:
            return [python, "-m", "rlscale.cli", "train", "--resume", *(m.run_dir for m in todo)]
        seeds = [self.seeds[self.members.index(m)] for m in todo]
        first = [a for a in todo[0].train_args]
        cut = first.index("--run-dir")
        del first[cut : cut + 2]
        return [python, "-m", "rlscale.cli", "train", *first, "--seeds", *map(str, seeds), "--run-dirs", *(m.run_dir for m in todo)]


def _execute_pack(pack: PackSpec, extra_env: dict[str, str] | None) -> int:
    first = pack.members[0]
    first.log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **dict(first.env), **(extra_env or {})}
    locks = []
    waited = False
    try:
        with open(pack.log_path, "ab") as log:
            for member in pack.members:  # always in pack order: two packs never wait on each other crosswise
                lock, member_waited = _lock(member, log)
                locks.append(lock)
                waited |= member_waited
            todo = [m for m in pack.members if not is_complete(m.run_dir)]
            for member in pack.members:
                if member not in todo:
                    clear_marker(member)
            if not todo:
                _log(log, "already complete")
                return FINISHED_ELSEWHERE if waited else 0
            if stopping():
                return PREEMPTED
            started = [is_started(m.run_dir) for m in todo]
            if any(started) and not all(started):
                _log(log, "some runs of the pack started alone: running them one by one")
                individually = True
            else:
                individually = False
                command = pack.command(todo, resume=all(started))
                for member in todo[1:]:
                    with open(member.log_path, "ab") as other:
                        _log(other, f"trained with {len(todo) - 1} other seed(s) in one process; output in {pack.log_path}")
                code = _run_training(command, env, first.cwd, log, locks)
    finally:
        for lock in locks:
            lock.release()
    if individually:
        codes = [execute(member, extra_env) for member in todo]
        return next((c for c in codes if c not in (0, PREEMPTED)), PREEMPTED if PREEMPTED in codes else 0)
    return _outcome(todo, code, command)


def _lock(spec: RunSpec, log) -> tuple[RunLock, bool]:
    """``(lock, waited)``: the run's writer lock (its directory created, empty, when new), waiting while
    another process (a previous attempt, another launcher, a user's ``--resume``) holds it."""
    Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
    waits = []

    def on_wait(holder: str) -> None:
        waits.append(holder)
        _log(log, f"waiting for the process that writes {spec.run_dir} ({holder})")

    return RunLock.acquire(spec.run_dir, wait=True, on_wait=on_wait), bool(waits)


def _run_training(command: list[str], env: dict[str, str], cwd: str | None, log, locks: list) -> int:
    """Start the training process (holding ``locks`` until it exits), wait for it, return its exit status."""
    _log(log, f"{'resume' if '--resume' in command else 'start'}: {' '.join(command)}")
    proc = subprocess.Popen(
        [sys.executable, "-S", CHILD, str(os.getpid()), *command],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**env, HELD_LOCKS_ENV: ",".join(str(lock.fileno()) for lock in locks)},
        cwd=cwd if cwd and os.path.isdir(cwd) else None,
        pass_fds=tuple(lock.fileno() for lock in locks),  # the training process holds the locks until it exits
        # Its own process group: a Ctrl-C at the terminal reaches only the launcher, which asks the run
        # to stop cleanly (SIGTERM: save after the training step in progress) instead of losing its work.
        process_group=0,
    )
    _live[proc.pid] = proc
    if stopping():  # a stop request that came while the process was being started
        proc.send_signal(signal.SIGTERM)
    try:
        if _fault(env):
            _log(log, f"{FAULT_ENV}: killing this worker (pid {os.getpid()})")
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            code = proc.wait()
        except BaseException:  # KeyboardInterrupt (Ray cancellation): stop the run cleanly
            proc.send_signal(signal.SIGTERM)
            while True:
                try:
                    proc.wait()
                    break
                except BaseException:
                    continue
            raise
    finally:
        _live.pop(proc.pid, None)
    _log(log, describe_exit(code))
    return code


def _outcome(specs: list[RunSpec], code: int, command: list[str]) -> int:
    if code == 0:
        for spec in specs:
            clear_marker(spec)
        return 0
    if code == PREEMPTED or -code in INTERRUPTING_SIGNALS:
        return PREEMPTED
    for spec in specs:
        mark_failed(spec, code, describe_exit(code), command)
    return code
