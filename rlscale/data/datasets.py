"""Datasets of recorded episodes: what ``rlscale record`` writes and ``--dataset`` trains from
(docs/method.md#offline-training; the file format: docs/method.md#dataset-format).

A dataset is one ``.npz`` file of time steps in episode order, flat over episodes:

* ``observations`` ``[steps, obs_size]`` float32: state ⊕ commanded goal, as the task observes;
* ``actions`` ``[steps, action_size]`` float32: the action taken there, in [-1, 1];
* ``trajectory_ids`` ``[steps]`` int32: the episode each step belongs to, non-decreasing;
* ``task`` (str), ``format_version`` (int, :data:`FORMAT_VERSION`), and what made it: ``source``
  (checkpoint path), ``deterministic`` (bool), ``episode_length`` (int).

Only the steps of an episode up to and including the one where the robot fell are kept, so no step
pairs states across a fall. :func:`buffer_of` lays the stream out as a full replay buffer, which the
trainer samples exactly as it samples its own (``rlscale.data.buffer``).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlscale.data.buffer import ReplayBuffer, init_buffer
from rlscale.envs.base import TaskSpec
from rlscale.storage.run_dir import check_can_create, naming

FORMAT_VERSION = 1
ARRAY_KEYS = ("observations", "actions", "trajectory_ids")
ACTION_BOUND = 1.0 + 1e-6  # actions are in [-1, 1]; the slack admits float rounding of a recorded tanh
# Episodes rolled out at once by record (the rollout holds every task state of them: humanoid's are large).
EPISODES_PER_ROLLOUT = 256
INFO_KEYS = ("task", "format_version", "source", "deterministic", "episode_length")


class DatasetError(ValueError):
    pass


def record(policy, num_episodes: int, out: str | os.PathLike, *, task: str | None = None,
           deterministic: bool = False, seed: int | None = None) -> dict[str, Any]:
    """Roll out a loaded checkpoint's policy (``rlscale.evaluation.policy.load``) for ``num_episodes`` fresh episodes
    of its training task (or ``task``) and write them to ``out``; returns the file's info and its size."""
    from rlscale.evaluation.policy import make_eval_task
    from rlscale.storage import checkpoint as ckpt

    out = Path(out)
    if num_episodes < 1:
        raise DatasetError(f"--episodes must be a positive integer, got {num_episodes}")
    if out.suffix != ".npz":
        raise DatasetError(f"the dataset file must end in .npz (numpy's archive, which np.savez writes), got {out}")
    if out.exists():
        raise DatasetError(f"{out} exists; datasets are never overwritten: choose another --out or remove it")
    if not out.parent.is_dir():
        raise DatasetError(f"the folder of --out {out} does not exist")
    check_can_create(out)  # before the rollouts, which may take minutes
    env = make_eval_task(policy, task or policy.task)
    length = policy.train_config.episode_length
    seed = policy.train_config.seed if seed is None else seed
    chunks = []
    for first in range(0, num_episodes, EPISODES_PER_ROLLOUT):  # bounded memory: the rollout keeps every state
        count = min(EPISODES_PER_ROLLOUT, num_episodes - first)
        reset_key, act_key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), first))
        chunk = episode_steps(env, policy.act, policy.actor_params, reset_key, count, length,
                              None if deterministic else act_key)
        chunks.append({**chunk, "trajectory_ids": chunk["trajectory_ids"] + first})
    steps = {k: np.concatenate([c[k] for c in chunks]) for k in ARRAY_KEYS}
    data = {
        **steps,
        "task": np.array(env.spec.name),
        "format_version": np.array(FORMAT_VERSION),
        "source": np.array(str(ckpt.step_path(policy.run_dir, policy.step))),
        "deterministic": np.array(deterministic),
        "episode_length": np.array(length),
    }
    _write_new(out, data)
    return {**info(read(out)), "bytes": out.stat().st_size}


def episode_steps(env, act, params, reset_key: jax.Array, num_episodes: int, length: int,
                  act_key: jax.Array | None) -> dict[str, np.ndarray]:
    """The dataset arrays of ``num_episodes`` fresh episodes of ``act`` (``rlscale.evaluation.rollout.rollout``; no
    ``act_key``: the deterministic policy): each step's observation and action, episode after episode, up
    to and including the step on which the robot fell."""
    from rlscale.evaluation.rollout import rollout

    @jax.jit
    def run(params):
        _, (states, active, actions) = rollout(env, act, params, reset_key, num_episodes, length, act_key, trajectory=True)
        # Step t is kept when the state it leads to counts (active[t + 1]): state t had not fallen.
        return states.obs[:-1], actions, active[1:]

    obs, actions, active = (np.asarray(x) for x in run(params))  # [T, N, ...]
    keep = active.T.reshape(-1)  # episode-major order: all of episode 0, then episode 1, …
    episode = np.broadcast_to(np.arange(num_episodes, dtype=np.int32), active.shape)
    return {
        "observations": obs.transpose(1, 0, 2).reshape(-1, obs.shape[-1])[keep].astype(np.float32),
        "actions": actions.transpose(1, 0, 2).reshape(-1, actions.shape[-1])[keep].astype(np.float32),
        "trajectory_ids": episode.T.reshape(-1)[keep],
    }


def _write_new(out: Path, data: dict[str, np.ndarray]) -> None:
    """Write the archive beside ``out`` and link it into place: never replaces a file that appeared meanwhile."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with naming(out):
            with open(tmp, "wb") as f:
                np.savez(f, **data)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, out)  # fails if out exists
    except FileExistsError:
        raise DatasetError(f"{out} exists; datasets are never overwritten: choose another --out or remove it") from None
    finally:
        tmp.unlink(missing_ok=True)


def read(path: str | os.PathLike) -> dict[str, Any]:
    """A dataset file's arrays and info, checked; :class:`DatasetError` with a one-line reason otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(b"PK"):  # np.load would take any other file for pickled data
        raise DatasetError(f"dataset {path} is not an .npz archive (numpy's zip of arrays, which np.savez writes): "
                           f"it starts with {head!r}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ARRAY_KEYS + ("task", "format_version") if k not in archive.files]
            if missing:
                raise DatasetError(f"dataset {path} lacks {', '.join(missing)} (keys: {', '.join(archive.files)})")
            data = {k: archive[k] for k in archive.files if k in ARRAY_KEYS + INFO_KEYS}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # truncated, corrupt, not an npz
        raise DatasetError(f"dataset {path} cannot be read ({type(err).__name__}: {err}); it is corrupt or truncated") from None
    version = data["format_version"]
    if version.shape != () or not np.issubdtype(version.dtype, np.integer):
        raise DatasetError(f"dataset {path}: format_version must be one integer, got {version.dtype} {version.shape}")
    version = int(version)
    if version != FORMAT_VERSION:
        raise DatasetError(f"dataset {path} has format version {version}; this rlscale reads version {FORMAT_VERSION}")
    obs, actions, ids = data["observations"], data["actions"], data["trajectory_ids"]
    if obs.ndim != 2 or actions.ndim != 2 or ids.ndim != 1 or not len(obs) == len(actions) == len(ids):
        raise DatasetError(
            f"dataset {path}: observations {obs.shape}, actions {actions.shape} and trajectory_ids {ids.shape} "
            f"must be [steps, obs], [steps, action] and [steps] of one length"
        )
    for key, kind, name in (("observations", np.floating, "floating-point"), ("actions", np.floating, "floating-point"),
                            ("trajectory_ids", np.integer, "integers")):
        if not np.issubdtype(data[key].dtype, kind):
            raise DatasetError(f"dataset {path}: {key} must be {name} (docs/method.md#dataset-format), got {data[key].dtype}")
    if len(ids) == 0:
        raise DatasetError(f"dataset {path} holds no steps")
    if np.any(np.diff(ids) < 0):
        raise DatasetError(f"dataset {path}: trajectory_ids must not decrease (steps are stored episode after episode)")
    if not (np.isfinite(obs).all() and np.isfinite(actions).all()):
        raise DatasetError(f"dataset {path} holds non-finite observations or actions")
    outside = np.flatnonzero(np.abs(actions).max(axis=1) > ACTION_BOUND)
    if len(outside):
        raise DatasetError(f"dataset {path}: actions must lie in [-1, 1] (every task's action range); step {outside[0]} "
                           f"holds {actions[outside[0]].tolist()} ({len(outside)} such steps)")
    data["task"] = str(data["task"])
    return data


def info(data: dict[str, Any]) -> dict[str, Any]:
    """What a dataset holds, for the console and ``config.json``."""
    return {
        "task": data["task"],
        "steps": int(len(data["trajectory_ids"])),
        "episodes": int(len(np.unique(data["trajectory_ids"]))),
        "longest_episode": _longest_episode(data),
        "obs_size": int(data["observations"].shape[1]),
        "action_size": int(data["actions"].shape[1]),
        **{k: data[k].item() for k in ("source", "deterministic", "episode_length") if k in data},
    }


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def layout(num_steps: int, window: int, longest_episode: int, multiple_of: int = 1) -> tuple[int, int]:
    """``(slot_length, num_slots)`` of the buffer a stream of ``num_steps`` steps fills: each slot (a buffer
    "env") holds a contiguous piece of the stream, at least a sampling window and the longest episode long,
    so that most episodes lie whole in one slot; the steps past ``num_slots × slot_length`` are left out."""
    slot_length = max(window, longest_episode)
    num_slots = (num_steps // slot_length) // multiple_of * multiple_of
    return slot_length, num_slots


def check_fits(data: dict[str, Any], path: str | os.PathLike, spec: TaskSpec, window: int, batch_size: int,
               multiple_of: int = 1) -> None:
    """Refuse a dataset that the run cannot train from: another task, or too few steps."""
    if (data["observations"].shape[1], data["actions"].shape[1]) != (spec.obs_size, spec.action_size):
        raise DatasetError(
            f"dataset {path} has observation size {data['observations'].shape[1]} and action size "
            f"{data['actions'].shape[1]} (task {data['task']!r}), but task {spec.name!r} has {spec.obs_size} and {spec.action_size}"
        )
    if data["task"] != spec.name:
        raise DatasetError(f"dataset {path} was recorded on task {data['task']!r}; this run trains on {spec.name!r} (--env)")
    slot_length, num_slots = layout(len(data["trajectory_ids"]), window, _longest_episode(data), multiple_of)
    if num_slots == 0 or slot_length * num_slots < batch_size:
        raise DatasetError(
            f"dataset {path} holds {len(data['trajectory_ids'])} steps: too few for windows of {slot_length} steps"
            f"{'' if multiple_of == 1 else f' on {multiple_of} devices'} and minibatches of {batch_size}; record more --episodes"
        )


def _longest_episode(data: dict[str, Any]) -> int:
    return int(np.max(np.unique(data["trajectory_ids"], return_counts=True)[1]))


def buffer_of(data: dict[str, Any], window: int, multiple_of: int = 1) -> ReplayBuffer:
    """The dataset as a full replay buffer ``[slot_length, num_slots, ...]`` (:func:`layout`). A slot's border
    may cut an episode; its two pieces lie in different slots, so relabelling still pairs only steps of one
    piece of one episode."""
    slot_length, num_slots = layout(len(data["trajectory_ids"]), window, _longest_episode(data), multiple_of)
    used = slot_length * num_slots

    def slots(x: np.ndarray) -> jax.Array:  # [steps, ...] -> [slot_length, num_slots, ...]
        return jnp.asarray(np.swapaxes(x[:used].reshape((num_slots, slot_length) + x.shape[1:]), 0, 1))

    empty = init_buffer(slot_length, num_slots, data["observations"].shape[1], data["actions"].shape[1])
    return empty.replace(
        obs=slots(data["observations"].astype(np.float32)),
        action=slots(data["actions"].astype(np.float32)),
        traj_id=slots(data["trajectory_ids"].astype(np.int32)),
        size=jnp.asarray(slot_length, jnp.int32),
    )


def file_record(path: str) -> dict[str, Any]:
    """The ``dataset`` entry of a dataset run's ``config.json``: where the file was and its SHA-256."""
    return {"path": str(Path(path).resolve()), "sha256": sha256(path)}


def check_unchanged(saved: dict[str, Any] | None, run_path: Path) -> str | None:
    """The dataset file a dataset run resumes from (``saved``: its ``config.json``'s ``dataset`` entry, from
    :func:`file_record`): the very file it started with (absolute path and SHA-256, so the resume may run
    from another folder); None for a run without a dataset."""
    if saved is None:
        return None
    path = saved["path"]
    if not Path(path).is_file():
        raise DatasetError(f"{run_path} trains from dataset {path}, which no longer exists; restore it to resume")
    now = sha256(path)
    if now != saved["sha256"]:
        raise DatasetError(
            f"dataset {path} changed since {run_path} started (SHA-256 {saved['sha256'][:12]}… then, {now[:12]}… now): "
            f"restore that file to resume, or start a new run"
        )
    return path
