"""rlscale.training.seed_groups: how a process's seeds split into groups, and the groups' concurrent calls."""

import threading
import time

import jax.numpy as jnp
import numpy as np
import pytest

from rlscale.training.seed_groups import SeedGroups, default_seed_threads, usable_cores


def test_groups_are_contiguous_and_as_equal_as_possible():
    assert SeedGroups(8, 2).bounds == ((0, 4), (4, 8))
    assert SeedGroups(5, 2).sizes == [3, 2]
    assert SeedGroups(7, 3).bounds == ((0, 3), (3, 5), (5, 7))
    assert SeedGroups(4, 1).bounds == ((0, 4),)
    groups = SeedGroups(5, 2)
    assert [groups.locate(i) for i in range(5)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    with pytest.raises(IndexError, match="seed index 5 out of range for 5 seeds"):
        groups.locate(5)


def test_split_and_concat_are_inverse_and_seed_picks_one_seed():
    groups = SeedGroups(5, 2)
    tree = {"a": jnp.arange(10.0).reshape(5, 2), "b": np.arange(5)}
    parts = groups.split(tree)
    assert [p["a"].shape for p in parts] == [(3, 2), (2, 2)]
    back = groups.concat(parts)
    np.testing.assert_array_equal(back["a"], tree["a"])
    np.testing.assert_array_equal(back["b"], tree["b"])
    assert isinstance(back["b"], np.ndarray)  # host arrays stay on the host
    np.testing.assert_array_equal(groups.seed(parts, 3)["a"], [6.0, 7.0])
    assert int(groups.seed(parts, 4)["b"]) == 4


def test_run_calls_every_group_concurrently_and_keeps_their_order():
    groups = SeedGroups(4, 2)
    both_inside = threading.Barrier(2, timeout=10)  # passes only if the two calls overlap in time

    def call(g, x):
        both_inside.wait()
        time.sleep(0.01 * (1 - g))  # group 0 finishes last: the results keep the groups' order anyway
        return x * 10 + g

    try:
        assert groups.run(call, [jnp.asarray(1), jnp.asarray(2)]) == [10, 21]
    finally:
        groups.close()
    assert SeedGroups(3, 1).run(lambda g, x: x + g, [5]) == [5]


def test_bad_group_counts_are_refused():
    with pytest.raises(ValueError, match="--seed-threads must be a positive integer .* got 0"):
        SeedGroups(4, 0)
    with pytest.raises(ValueError, match="--seed-threads 3 is more than the 2 seed"):
        SeedGroups(2, 3)


def test_default_threads_one_per_core_on_a_cpu_the_launchers_share_or_one_with_a_mesh():
    assert default_seed_threads(single_device=True, environ={}) == usable_cores()
    assert default_seed_threads(single_device=True, environ={"RLSCALE_SEED_THREADS": "3"}) == 3
    assert default_seed_threads(single_device=False, environ={"RLSCALE_SEED_THREADS": "3"}) == 1
    for bad in ("0", "x", "1.5"):
        with pytest.raises(ValueError, match=r"\$RLSCALE_SEED_THREADS must be a positive integer"):
            default_seed_threads(single_device=True, environ={"RLSCALE_SEED_THREADS": bad})
