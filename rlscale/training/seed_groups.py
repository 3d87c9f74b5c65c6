"""Seeds of one process split into groups that run at the same time, one host thread each
(docs/method.md#packed-seeds).

On a CPU the compiled training step of small networks runs on one core: XLA:CPU executes a program's
operations one after another in the calling thread, and at the widths a CPU trains (16-64) no single
operation is large enough for its intra-op threads. ``vmap`` over seeds batches each operation but does
not make it cheaper per seed (a packed SGD step costs 0.85-0.95 of the seeds run one by one,
benchmarks/README.md#packed-seeds), so the second core stays idle. Programs called from different
threads do run concurrently, so a process splits its seeds into one group per core; each group is one
``vmap``-ed program (a group of one runs the plain program, whose numbers equal a run of its own).

Group states live apart (a list, one stacked tree per group), so nothing is copied between epochs.
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any, Callable, Sequence

import numpy as np

# jax is imported inside the functions: the sweep launcher imports this module for SEED_THREADS_ENV and
# usable_cores without loading JAX.

# Read by train_seeds when --seed-threads is not given; the local sweep launcher sets it to its share of
# the cores (cores // workers), so that W worker processes do not start W x cores threads.
SEED_THREADS_ENV = "RLSCALE_SEED_THREADS"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_seed_threads(value: Any, label: str = "--seed-threads") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{label} must be a positive integer (host threads, one seed group each), got {value!r}")
    return value


def default_seed_threads(single_device: bool, environ: dict[str, str] | None = None) -> int:
    """Seed groups when none is asked (the caller caps them by its seeds): ``$RLSCALE_SEED_THREADS``, else
    one per usable core on a CPU; one on an accelerator, which runs the whole pack in one program, and with
    a device mesh (data parallelism owns the devices)."""
    import jax

    environ = os.environ if environ is None else environ
    if not single_device or jax.default_backend() != "cpu":
        return 1
    if environ.get(SEED_THREADS_ENV):
        raw = environ[SEED_THREADS_ENV]
        try:
            threads = check_seed_threads(int(raw), f"${SEED_THREADS_ENV}")
        except ValueError:
            raise ValueError(f"${SEED_THREADS_ENV} must be a positive integer, got {raw!r}") from None
        return threads
    return usable_cores()


class SeedGroups:
    """``num_seeds`` seeds in ``num_groups`` contiguous groups, sizes as equal as possible (larger first).

    ``split``/``concat`` move a tree stacked over all seeds to one tree per group and back; ``run`` calls a
    function once per group, concurrently on a thread pool when there are several groups."""

    def __init__(self, num_seeds: int, num_groups: int = 1, placement: Any = None):
        """``placement``: a sharding that ``split`` puts the one group's trees on (seeds across devices)."""
        check_seed_threads(num_groups)
        if placement is not None and num_groups != 1:
            raise ValueError("seeds split across devices run as one group")
        self.placement = placement
        if num_groups > num_seeds:
            raise ValueError(f"--seed-threads {num_groups} is more than the {num_seeds} seed(s) to split")
        base, extra = divmod(num_seeds, num_groups)
        sizes = [base + (g < extra) for g in range(num_groups)]
        starts = [sum(sizes[:g]) for g in range(num_groups)]
        self.num_seeds = num_seeds
        self.bounds: tuple[tuple[int, int], ...] = tuple((s, s + n) for s, n in zip(starts, sizes))
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(max_workers=num_groups, thread_name_prefix="seed-group")
            if num_groups > 1 else None
        )

    @property
    def sizes(self) -> list[int]:
        return [stop - start for start, stop in self.bounds]

    def __len__(self) -> int:
        return len(self.bounds)

    def split(self, tree: Any) -> list[Any]:
        """One tree per group from a tree stacked over all seeds."""
        import jax

        if len(self) == 1:
            return [tree if self.placement is None else jax.device_put(tree, self.placement)]
        return [jax.tree.map(lambda x, s=start, e=stop: x[s:e], tree) for start, stop in self.bounds]

    def concat(self, trees: Sequence[Any]) -> Any:
        """The tree stacked over all seeds from the groups' trees (host or device arrays alike)."""
        import jax
        import jax.numpy as jnp

        if len(trees) == 1:
            return trees[0]
        return jax.tree.map(lambda *xs: jnp.concatenate(xs) if isinstance(xs[0], jax.Array) else np.concatenate(xs), *trees)

    def locate(self, seed_index: int) -> tuple[int, int]:
        """``(group, index within the group)`` of the process's ``seed_index``-th seed."""
        for g, (start, stop) in enumerate(self.bounds):
            if start <= seed_index < stop:
                return g, seed_index - start
        raise IndexError(f"seed index {seed_index} out of range for {self.num_seeds} seeds")

    def seed(self, group_trees: Sequence[Any], seed_index: int) -> Any:
        """One seed's part (no seed axis) of per-group trees."""
        import jax

        g, j = self.locate(seed_index)
        return jax.tree.map(lambda x: x[j], group_trees[g])

    def run(self, fn: Callable[..., Any], *per_group_args: Sequence[Any]) -> list[Any]:
        """``[fn(g, args[0][g], args[1][g], ...) for each group g]``, the groups' calls concurrent; each
        result is fetched (blocked on) in its own thread so that the calls really overlap."""
        import jax

        def call(g: int):
            return jax.block_until_ready(fn(g, *(args[g] for args in per_group_args)))

        if self._pool is None:
            return [call(0)]
        return list(self._pool.map(call, range(len(self))))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

