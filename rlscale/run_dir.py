"""The self-describing run directory.

``config.json`` (resolved config and its ``CONFIG_SCHEMA``, plan, package versions, git commit, device),
``metrics.jsonl`` (one JSON row per epoch, JaxGCRL/Brax metric names), TensorBoard events under ``tb/``,
checkpoints under ``checkpoints/``. Every file is written atomically or appended line by line; nothing is
overwritten by accident.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
PACKAGES = ("rlscale", "jax", "jaxlib", "flax", "optax", "brax", "mujoco", "orbax-checkpoint", "numpy")


class RunDirError(RuntimeError):
    pass


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
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_new(run_dir: str | os.PathLike) -> Path:
    """Refuse a run directory that exists and is not empty."""
    path = Path(run_dir)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunDirError(f"run directory {path} already exists; pass --resume {path} to continue it, or choose another --run-dir")
    return path


def create(run_dir: str | os.PathLike) -> Path:
    """Create a new run directory; refuse one that exists and is not empty."""
    path = check_new(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


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
        keep = [r for r in rows if r["training/env_steps"] <= env_steps]
        lines = "".join(json.dumps(r) + "\n" for r in keep)
        if self.path.exists() and self.path.read_text() != lines:
            write_atomic(self.path, lines)
        return len(rows) - len(keep)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        step = row["training/env_steps"]
        if self._tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "training/env_steps":
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
