"""Several devices, with JAX's sharding API, in one of two ways (a plain run uses one device):

* **Seeds across devices** (``--num-seeds N`` on a host with several devices; mesh axis ``seeds``): the
  packed seeds' stacked state and keys are split on their leading seed axis, so each device trains its
  own seeds and no array crosses devices.
* **Data parallelism** (``--num-devices N``; mesh axis ``data``): parameters, optimiser states and α are
  replicated; the parallel envs (and the replay buffer's env axis) and every minibatch are split across
  devices. XLA inserts the cross-device reductions of the gradients, so a sharded SGD step computes the
  single-device step's update (up to floating-point summation order).
"""

from __future__ import annotations

from typing import Any

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
SEED_AXIS = "seeds"


def make_mesh(num_devices: int | None = None) -> Mesh | None:
    """The data-parallel mesh over the first ``num_devices`` devices; ``None`` (one device) when not asked."""
    devices = jax.devices()
    n = 1 if num_devices is None else num_devices
    if not isinstance(n, int) or not 1 <= n <= len(devices):
        raise ValueError(f"--num-devices must be between 1 and the {len(devices)} visible device(s), got {num_devices!r}")
    return None if n == 1 else Mesh(np.array(devices[:n]), (DATA_AXIS,))


def make_seed_mesh(num_seeds: int, seed_devices: int | None = None) -> Mesh | None:
    """The devices ``num_seeds`` packed seeds are split over: ``seed_devices`` of them, which must divide the
    seeds, or by default as many of the visible devices as divide them evenly (all of them when the seeds
    are a multiple of their count). ``None`` for one device."""
    devices = jax.devices()
    if seed_devices is None:
        n = math.gcd(num_seeds, len(devices))
    else:
        n = seed_devices
        if not isinstance(n, int) or not 1 <= n <= len(devices):
            raise ValueError(f"--seed-devices must be between 1 and the {len(devices)} visible device(s), got {seed_devices!r}")
        if num_seeds % n:
            raise ValueError(f"--seed-devices {n} does not divide the {num_seeds} seeds; choose a divisor of {num_seeds}")
    return None if n == 1 else Mesh(np.array(devices[:n]), (SEED_AXIS,))


def seed_split(mesh: Mesh) -> NamedSharding:
    """Arrays split across the seed mesh on their leading (seed) axis."""
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def check_divisible(num_envs: int, batch_size: int, mesh: Mesh | None) -> None:
    if mesh is None:
        return
    n = mesh.size
    for name, value in (("--num-envs", num_envs), ("--batch-size", batch_size)):
        if value % n:
            raise ValueError(
                f"{name} {value} does not split over {n} devices; choose a multiple of {n} or pass --num-devices "
                f"with a divisor of {value} (1 trains on one device)"
            )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def split_axis(mesh: Mesh, axis: int) -> NamedSharding:
    """Arrays split across devices along ``axis``."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), DATA_AXIS))


def training_state_shardings(state: Any, mesh: Mesh, seed_axes: int = 0) -> Any:
    """Shardings of a ``TrainingState`` (``seed_axes`` leading seed axes, for ``--num-seeds``): learner
    replicated, env states split on their env axis, buffer arrays ``[capacity, num_envs, ...]`` split on
    their env axis, the buffer's counters replicated (a collector run's collector too: replicated)."""
    per_step = jax.tree.map(lambda _: split_axis(mesh, seed_axes + 1), state.buffer)  # episode ends included
    return type(state)(
        learner=jax.tree.map(lambda _: replicated(mesh), state.learner),
        env_state=jax.tree.map(lambda _: split_axis(mesh, seed_axes), state.env_state),
        buffer=per_step.replace(insert_pos=replicated(mesh), size=replicated(mesh)),
        collector=jax.tree.map(lambda _: replicated(mesh), state.collector),
    )


def constrain_minibatches(batches: Any, mesh: Mesh | None) -> Any:
    """Split ``[num_batches, batch_size, ...]`` minibatches across devices on their batch axis."""
    if mesh is None:
        return batches
    return jax.lax.with_sharding_constraint(batches, split_axis(mesh, 1))
