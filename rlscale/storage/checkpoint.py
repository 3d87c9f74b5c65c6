"""Checkpoints with orbax: ``<run_dir>/checkpoints/{env_step:012d}/``.

A checkpoint holds everything needed to resume: parameters, optimiser states, α, the RNG key, the
counters and the config (and, with ``save_buffer``, the replay buffer and env states). orbax writes
each step to a temporary directory and renames it when complete, so a half-written checkpoint is never
listed, and so never taken as the latest.

This module imports no trainer code, so a checkpoint can be turned into a policy on its own.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import serialization

from rlscale.storage.run_dir import diverted_stderr

CHECKPOINT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the requested structure."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed for a file-system reason (a full disk, say); its note names the log that
    holds orbax's own messages."""


# orbax (through TensorStore) reports a file-system failure as text: "... [os_error_code='28']".
_OS_ERROR_CODE = re.compile(r"os_error_code='(\d+)'")


def _manager(run_dir: str | os.PathLike, keep: int | None = None, read_only: bool = False,
             state_handler: bool = False) -> ocp.CheckpointManager:
    """``state_handler``: the items' handlers registered up front, so that the state's metadata (the saved tree) can be read."""
    directory = Path(run_dir).absolute() / CHECKPOINT_DIR
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep or None,
        step_format_fixed_length=12,
        enable_async_checkpointing=False,
        create=not read_only,
        read_only=read_only,
    )
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()} if state_handler else None
    return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def _only_saved(tree: Any, saved: Any) -> Any:
    """``tree`` (a state dict) without the dict keys that the checkpoint's saved tree lacks."""
    if isinstance(tree, dict) and isinstance(saved, dict):
        return {k: _only_saved(v, saved[k]) for k, v in tree.items() if k in saved}
    return tree


class CheckpointWriter:
    def __init__(self, run_dir: str | os.PathLike, keep: int = 0):
        self.run_dir = Path(run_dir)
        self._manager = _manager(run_dir, keep)

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> Path:
        """Write the checkpoint of ``step``; a failure is one :class:`CheckpointWriteError` (file system) or
        :class:`CheckpointError`, while orbax's threads' tracebacks go to a log in the temp folder (the
        run's own disk may be the full one)."""
        tree = serialization.to_state_dict(state)
        meta = {**meta, "version": CHECKPOINT_VERSION}
        log = Path(tempfile.gettempdir()) / f"rlscale-checkpoint-{os.getpid()}.log"
        try:
            with diverted_stderr(log):
                self._manager.save(
                    step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True
                )
                self._manager.wait_until_finished()
        except Exception as err:  # orbax raises ValueError, RuntimeError, OSError, ... for one failed write
            code = err.errno if isinstance(err, OSError) and err.errno else None
            found = _OS_ERROR_CODE.search(str(err))
            code = code or (int(found.group(1)) if found else None)
            if code is None:
                raise CheckpointError(f"writing checkpoint {step_path(self.run_dir, step)} failed: {_short(err)} "
                                      f"(orbax's messages: {log})") from None
            failure = CheckpointWriteError(code, os.strerror(code), str(step_path(self.run_dir, step)))
            failure.add_note(f"orbax's own messages: {log}")
            raise failure from None
        return step_path(self.run_dir, step)

    def close(self) -> None:
        self._manager.close()


def step_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"{step:012d}"


def list_steps(run_dir: str | os.PathLike) -> list[int]:
    """Completed checkpoint steps of a run, oldest first (temporary, half-written ones excluded)."""
    if not (Path(run_dir) / CHECKPOINT_DIR).is_dir():
        return []
    manager = _manager(run_dir, read_only=True)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def latest_step(run_dir: str | os.PathLike) -> int | None:
    steps = list_steps(run_dir)
    return steps[-1] if steps else None


def read_meta(run_dir: str | os.PathLike, step: int) -> dict[str, Any]:
    manager = _manager(run_dir, read_only=True)
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as err:  # orbax raises many types for unreadable files
        raise CheckpointError(f"checkpoint {step_path(run_dir, step)} is unreadable: {_short(err)}") from None
    finally:
        manager.close()
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {step_path(run_dir, step)} has version {meta.get('version')!r}; this rlscale reads {CHECKPOINT_VERSION}"
        )
    return meta


def restore(run_dir: str | os.PathLike, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    """Restore ``(state, meta)``; ``target`` is a state of the same structure (its values are unused).

    Only what the checkpoint holds is read: a field added to the state since it was written is left to
    the target's type, whose restore fails on it unless it knows a value for older checkpoints (the replay
    buffer's episode ends, ``rlscale.data.buffer``)."""
    meta = read_meta(run_dir, step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, serialization.to_state_dict(target))
    manager = _manager(run_dir, read_only=True, state_handler=True)
    try:
        abstract = _only_saved(abstract, manager.item_metadata(step)["state"].tree)
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    except Exception as err:
        raise CheckpointError(f"checkpoint {step_path(run_dir, step)} cannot be restored: {_short(err)}") from None
    finally:
        manager.close()
    try:
        state = serialization.from_state_dict(target, restored)
    except Exception as err:
        raise CheckpointError(f"checkpoint {step_path(run_dir, step)} does not fit this config: {_short(err)}") from None
    return state, meta


def restore_raw(run_dir: str | os.PathLike, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, meta)`` as saved, without a target structure (for loading a policy alone)."""
    meta = read_meta(run_dir, step)
    manager = _manager(run_dir, read_only=True)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    except Exception as err:
        raise CheckpointError(f"checkpoint {step_path(run_dir, step)} cannot be restored: {_short(err)}") from None
    finally:
        manager.close()
    return restored, meta


def locate(path: str | os.PathLike) -> tuple[Path, int]:
    """``(run_dir, step)`` for a run directory (its latest checkpoint) or one checkpoint's directory."""
    path = Path(path)
    if path.parent.name == CHECKPOINT_DIR and path.name.isdigit():
        run_dir, step = path.parent.parent, int(path.name)
        if step not in list_steps(run_dir):
            raise CheckpointError(f"{path} is not a complete checkpoint")
        return run_dir, step
    step = latest_step(path)
    if step is None:
        raise CheckpointError(f"{path} has no checkpoint (expected a run directory with {CHECKPOINT_DIR}/ or a checkpoint directory)")
    return path, step


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]
