"""The self-describing run directory.

``config.json`` (resolved config and its ``CONFIG_SCHEMA``, plan, package versions, git commit, device),
``metrics.jsonl`` (one JSON row per epoch, JaxGCRL/Brax metric names), TensorBoard events under ``tb/``,
checkpoints under ``checkpoints/``. Every file is written atomically or appended line by line; nothing is
overwritten by accident.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from rlscale import metric_keys

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
# The run's writer lock (docs/runs.md#one-writer-per-run): an exclusive flock on this file, held by the one
# process that writes the run; its text names that process. The only file a new run's directory may hold.
LOCK_FILE = ".lock"
# File descriptors of run locks a launcher already holds and hands to the training process it starts
# (comma-separated): that process writes the runs under the launcher's lock instead of taking its own.
HELD_LOCKS_ENV = "RLSCALE_HELD_RUN_LOCKS"
# The run's wall-clock seconds so far, all its processes together (docs/metrics.md#time): written when the
# run is created, after each checkpoint and when a process ends; each metrics row carries it as WALLCLOCK_KEY.
WALLCLOCK_FILE = "wallclock.json"
WALLCLOCK_KEY = metric_keys.WALLCLOCK
PACKAGES = ("rlscale", "jax", "jaxlib", "flax", "optax", "brax", "mujoco", "orbax-checkpoint", "numpy")


class RunDirError(RuntimeError):
    pass


class RunBusyError(RunDirError):
    """Another live process writes this run (it holds the run's lock)."""


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; when the block succeeds it is renamed onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; use the usual mode
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and a rename."""
    with naming(path), atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def naming(path: str | os.PathLike):
    """File-system errors inside name ``path`` (a failed write or fsync names no file by itself)."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def check_can_create(path: str | os.PathLike) -> None:
    """Fail before a long computation, naming ``path``, when no new file can be created beside it (a
    read-only or full folder): create and remove a probe there."""
    path = Path(path)
    try:
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    os.close(fd)
    os.unlink(probe)


# The user's terminal while the process's own stderr (descriptor 2) is diverted into a log: see
# ``diverted_stderr``. Error messages meant for the user go here (``terminal_stderr``).
_terminal = None


def terminal_stderr():
    """Where a message for the user goes: the terminal, even while a library's noise is diverted."""
    return _terminal or sys.stderr


@contextlib.contextmanager
def diverted_stderr(log_path: str | os.PathLike):
    """Divert descriptor 2 (every thread's writes, Python's and native code's) into ``log_path`` inside.

    When the block succeeds, what was written is passed on to stderr. When it fails, stderr stays diverted
    until the process exits: the failing library's threads keep printing tracebacks while they wind
    down; the user's messages go to :func:`terminal_stderr`."""
    global _terminal
    if _terminal is not None:  # already diverted by an earlier failure
        yield
        return
    sys.stderr.flush()
    try:
        log = open(log_path, "w+b")
    except OSError:  # nowhere to put it (a full temp folder): leave stderr alone
        yield
        return
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    try:
        yield
    except BaseException:
        sys.stderr.flush()
        _terminal = open(saved, "w", buffering=1, closefd=False)
        raise
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    log.seek(0)
    captured = log.read()
    log.close()
    os.unlink(log_path)
    if captured:
        sys.stderr.write(captured.decode(errors="replace"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_new(run_dir: str | os.PathLike) -> Path:
    """Refuse a run directory that exists and holds anything but its lock file."""
    path = Path(run_dir)
    if path.exists() and (not path.is_dir() or any(p.name != LOCK_FILE for p in path.iterdir())):
        raise RunDirError(f"run directory {path} already exists; pass --resume {path} to continue it, or choose another --run-dir")
    return path


class RunLock:
    """The exclusive lock of one run directory, held by the process that writes the run.

    One mechanism for everyone: an ``flock`` on ``<run dir>/.lock``. ``rlscale train`` takes it itself; the
    sweep launcher takes it before it starts the training process and hands the open file down (its
    descriptor in ``$RLSCALE_HELD_RUN_LOCKS``), so the lock outlives a launcher that dies. The kernel
    releases a lock when its last holder exits, so a killed holder's lock is free for the next writer."""

    def __init__(self, path: Path, file, inherited: bool):
        self.path = path
        self._file = file
        self.inherited = inherited

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike, wait: bool = False, on_wait=None) -> "RunLock":
        """Lock ``run_dir`` (which must exist); :class:`RunBusyError` naming the holder when another process
        holds it and ``wait`` is false; with ``wait``, ``on_wait(holder)`` is called once and the call blocks."""
        path = Path(run_dir) / LOCK_FILE
        inherited = _inherited_lock(path)
        if inherited is not None:
            lock = cls(path, inherited, inherited=True)
        else:
            file = open(path, "a+")
            try:
                _flock(file, path, wait, on_wait)
            except BaseException:
                file.close()
                raise
            lock = cls(path, file, inherited=False)
        lock._write_holder()
        return lock

    def _write_holder(self) -> None:
        """Name this process in the lock file, for the message a second writer gets."""
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        try:
            os.ftruncate(self._file.fileno(), 0)
            os.pwrite(self._file.fileno(), json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": since}).encode(), 0)
        except OSError:  # the name is a courtesy: a full disk must not stop a run from taking its lock
            pass

    def fileno(self) -> int:
        return self._file.fileno()

    def release(self) -> None:
        """Give the lock up (an inherited one stays with the launcher that handed it down)."""
        if not self.inherited and not self._file.closed:
            self._file.close()


def holder(run_dir: str | os.PathLike) -> str:
    """Who holds (or last held) ``run_dir``'s lock: ``pid N on HOST since TIME``, as its lock file says."""
    try:
        info = json.loads((Path(run_dir) / LOCK_FILE).read_text())
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not named itself yet"


def _flock(file, path: Path, wait: bool, on_wait) -> None:
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        if not wait:
            raise RunBusyError(
                f"run directory {path.parent} is being written by another process ({holder(path.parent)}); "
                f"one writer per run: wait for it to end (or stop it), then resume with --resume {path.parent}"
            ) from None
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            # A file system without locks (Lustre mounted with noflock, say): run unguarded, and say so.
            print(f"warning: {path.parent}: the file system does not support locks ({err.strerror}); "
                  "nothing stops a second process from writing this run (docs/runs.md#one-writer-per-run)", file=sys.stderr)
            return
        raise
    if on_wait is not None:
        on_wait(holder(path.parent))
    fcntl.flock(file, fcntl.LOCK_EX)


def _inherited_lock(path: Path):
    """The open lock file of ``path`` a launcher handed down (``$RLSCALE_HELD_RUN_LOCKS``), if any."""
    try:
        wanted = os.stat(path)
    except OSError:
        return None
    for fd in filter(None, os.environ.get(HELD_LOCKS_ENV, "").split(",")):
        try:
            held = os.fstat(int(fd))
        except (OSError, ValueError):
            continue
        if (held.st_dev, held.st_ino) == (wanted.st_dev, wanted.st_ino):
            return os.fdopen(int(fd), "a+", closefd=False)
    return None


def claim_new(run_dirs: list[str | os.PathLike]) -> list[RunLock]:
    """Claim new run directories atomically: each created (or found empty) and locked, then checked empty
    under its lock, so of two processes starting runs in one directory exactly one gets it. Refuses all
    before creating any when one exists; on failure, removes the directories it created."""
    paths = [check_new(d) for d in run_dirs]
    locks: list[RunLock] = []
    created: list[Path] = []  # made by this call and locked by it: removed again if the claim fails
    try:
        for path in paths:
            made = not path.exists()
            if made:
                path.mkdir(parents=True, exist_ok=True)
            locks.append(RunLock.acquire(path))
            if made:
                created.append(path)
            check_new(path)  # another process may have claimed it between the check and the lock
        return locks
    except BaseException:
        for path in created:
            with contextlib.suppress(OSError):
                (path / LOCK_FILE).unlink(missing_ok=True)
                path.rmdir()
        for lock in locks:
            lock.release()
        raise


# What to do about a file-system error, by errno (the message names the path and the system's reason).
_OS_ERROR_HINTS = {
    errno.EACCES: "choose a folder you may write to, or change its permissions",
    errno.EPERM: "choose a folder you may write to, or change its permissions",
    errno.EROFS: "the file system is read-only: choose a folder on a writable one",
    errno.ENOSPC: "free some space (or choose another disk), then run again: a training run resumes from its last "
                  "complete checkpoint with --resume",
    errno.EDQUOT: "you are over your disk quota: free some space, then run again (a training run: --resume)",
    errno.ENOENT: "check the path; a folder on the way does not exist",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def describe_os_error(err: OSError) -> str:
    """One line for a file-system error: the path, the system's reason, and what to do."""
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f) or "a file"
    hint = _OS_ERROR_HINTS.get(err.errno, "check the path and the file system")
    notes = "".join(f"; {note}" for note in getattr(err, "__notes__", ()))
    return f"{where}: {err.strerror or err}; {hint}{notes}"


def environment_info() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import jax

        devices = [str(d) for d in jax.devices()]
        backend = jax.default_backend()
    except Exception:  # pragma: no cover - jax always imports here
        devices, backend = [], None
    return {
        "packages": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "jax_backend": backend,
        "devices": devices,
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a run directory: it has no {CONFIG_FILE}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON: {err}") from None


def is_started(run_dir: str | os.PathLike) -> bool:
    """The run has written its ``config.json`` (training started there, so a launch resumes it)."""
    return (Path(run_dir) / CONFIG_FILE).is_file()


def run_dirs_in(path: str | os.PathLike) -> list[Path]:
    """The run directories directly inside ``path`` (sub-directories holding a ``config.json``: a sweep
    directory's runs), sorted by name; none when ``path`` is not a directory."""
    path = Path(path)
    return sorted(p for p in path.iterdir() if is_started(p)) if path.is_dir() else []


def find_run_dirs(path: str | os.PathLike) -> list[Path]:
    """The run directories ``path`` stands for: ``[path]`` when it is one (it holds a ``config.json``), else
    :func:`run_dirs_in` (a sweep directory's runs); empty when there are none. Callers say why none is an
    error (``rlscale eval``, ``rlscale plot``)."""
    return [Path(path)] if is_started(path) else run_dirs_in(path)


def read_wallclock(run_dir: str | os.PathLike) -> float | None:
    """The wall-clock seconds recorded in ``wallclock.json``; None when there is none (runs begun before
    rlscale recorded it) or it is unreadable."""
    try:
        return float(json.loads((Path(run_dir) / WALLCLOCK_FILE).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def wallclock_seconds(run_dir: str | os.PathLike, rows: list[dict[str, Any]] | None = None) -> float | None:
    """A run's wall-clock so far: the later of ``wallclock.json`` and its last metrics row's figure (a
    process killed with SIGKILL wrote the row, not the file); None when neither has one (an older run)."""
    rows = read_metrics(run_dir) if rows is None else rows
    known = [x for x in (read_wallclock(run_dir), rows[-1].get(WALLCLOCK_KEY) if rows else None) if x is not None]
    return max(known) if known else None


def write_wallclock(run_dir: str | os.PathLike, seconds: float) -> None:
    write_atomic(Path(run_dir) / WALLCLOCK_FILE, json.dumps({"seconds": round(seconds, 3)}) + "\n")


def is_complete(run_dir: str | os.PathLike) -> bool:
    """The run's final checkpoint (its plan's total env steps) exists.

    orbax writes a checkpoint under a temporary name and renames it when complete, so a directory named
    exactly by the step is a complete checkpoint (the check reads no checkpoint and imports no JAX).
    """
    path = Path(run_dir) / CONFIG_FILE
    try:
        total = json.loads(path.read_text())["plan"]["total_env_steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (Path(run_dir) / "checkpoints" / f"{int(total):012d}").is_dir()


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a killed process
    return rows


class MetricsLog:
    """Appends one JSON row per epoch to ``metrics.jsonl``, mirrored to TensorBoard and wandb if asked."""

    def __init__(self, run_dir: Path, tensorboard: bool, wandb_run=None):
        self.path = run_dir / METRICS_FILE
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tb"))
        self._wandb = wandb_run

    def truncate_after(self, env_steps: int) -> int:
        """Drop rows past ``env_steps`` (written after the last checkpoint); returns how many."""
        rows = read_metrics(self.path.parent)
        keep = [r for r in rows if r[metric_keys.ENV_STEPS] <= env_steps]
        lines = "".join(json.dumps(r) + "\n" for r in keep)
        if self.path.exists() and self.path.read_text() != lines:
            write_atomic(self.path, lines)
        return len(rows) - len(keep)

    def append(self, row: dict[str, Any]) -> None:
        with naming(self.path), open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        step = row[metric_keys.ENV_STEPS]
        if self._tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != metric_keys.ENV_STEPS:
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(row, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def dumps_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
