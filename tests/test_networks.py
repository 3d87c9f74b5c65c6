import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlscale.networks import (
    Actor,
    Critic,
    Trunk,
    TrunkConfig,
    param_count,
    sample_action,
    trunk_param_count,
    unstack_block_params,
)


def _init(cfg, in_size=7, out_size=5, seed=0):
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), (3, in_size))
    params = Trunk(cfg, out_size).init(jax.random.PRNGKey(seed), x)["params"]
    return params, x


@pytest.mark.parametrize("depth", [4, 16])
def test_scanned_equals_unrolled(depth):
    scanned = TrunkConfig(depth=depth, width=32)
    params, x = _init(scanned)
    unrolled = TrunkConfig(depth=depth, width=32, scan_blocks=False)
    out_scan = Trunk(scanned, 5).apply({"params": params}, x)
    out_unrolled = Trunk(unrolled, 5).apply({"params": unstack_block_params(params)}, x)
    np.testing.assert_allclose(out_scan, out_unrolled, rtol=1e-6, atol=1e-6)
    # And the unrolled network's own parameters have the same structure as the converted ones.
    own = Trunk(unrolled, 5).init(jax.random.PRNGKey(0), x)["params"]
    assert jax.tree.structure(own) == jax.tree.structure(unstack_block_params(params))


@pytest.mark.parametrize("unroll", [2, 3, 8])
def test_scan_unroll_changes_nothing_but_the_loop(unroll):
    # 12 blocks: unroll 3 divides them, 8 does not (XLA adds a remainder), 2 divides them.
    base = TrunkConfig(depth=48, width=16, remat=False)
    params, x = _init(base)
    loss = lambda cfg: lambda p: jnp.sum(Trunk(cfg, 5).apply({"params": p}, x) ** 2)  # noqa: E731
    tuned = TrunkConfig(depth=48, width=16, scan_unroll=unroll, remat=True)
    assert jax.tree.structure(Trunk(tuned, 5).init(jax.random.PRNGKey(0), x)["params"]) == jax.tree.structure(params)
    np.testing.assert_allclose(loss(base)(params), loss(tuned)(params), rtol=1e-6)
    # 48 layers: fusion differences reach a few 1e-6 in gradients of magnitude ~5.
    for a, b in zip(jax.tree.leaves(jax.grad(loss(base))(params)), jax.tree.leaves(jax.grad(loss(tuned))(params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="scan unroll must be a positive integer .* got 0"):
        TrunkConfig(depth=8, scan_unroll=0)


@pytest.mark.parametrize("policy", ["dots", "full"])
def test_remat_does_not_change_values_or_gradients(policy):
    plain = TrunkConfig(depth=8, width=16, remat=False)
    params, x = _init(plain)
    loss = lambda cfg: lambda p: jnp.sum(Trunk(cfg, 5).apply({"params": p}, x) ** 2)  # noqa: E731
    g_plain = jax.grad(loss(plain))(params)
    g_remat = jax.grad(loss(TrunkConfig(depth=8, width=16, remat=True, remat_policy=policy)))(params)
    for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert TrunkConfig().remat and TrunkConfig().remat_policy == "dots"  # the default (benchmarks/README.md)
    with pytest.raises(ValueError, match="unknown remat policy 'some'; valid: dots, full"):
        TrunkConfig(remat_policy="some")


@pytest.mark.parametrize("depth,width", [(4, 256), (16, 64), (64, 32)])
def test_param_count_matches_formula(depth, width):
    params, _ = _init(TrunkConfig(depth=depth, width=width), in_size=11, out_size=64)
    assert param_count(params) == trunk_param_count(11, 64, depth, width)
    # One residual unit adds width² + 3·width (Dense + LayerNorm scale and bias).
    assert trunk_param_count(11, 64, depth + 4, width) - trunk_param_count(11, 64, depth, width) == 4 * (width**2 + 3 * width)


def test_paper_parameter_counts_humanoid_sized():
    """docs/method.md#parameter-counts: actor + both critic encoders at width 256 for humanoid-sized inputs."""
    state, goal, action = 268, 3, 17

    def total(depth):
        return (
            trunk_param_count(state + goal, 2 * action, depth, 256)
            + trunk_param_count(state + action, 64, depth, 256)
            + trunk_param_count(goal, 64, depth, 256)
        )

    assert total(4) == pytest.approx(0.98e6, rel=0.01)
    assert total(64) == pytest.approx(12.9e6, rel=0.01)
    assert total(1024) == pytest.approx(204e6, rel=0.01)
    actor = Actor(TrunkConfig(depth=4), action)
    critic = Critic(TrunkConfig(depth=4))
    s, g, a = jnp.zeros((1, state)), jnp.zeros((1, goal)), jnp.zeros((1, action))
    n = param_count(jax.eval_shape(actor.init, jax.random.PRNGKey(0), s, g)) + param_count(
        jax.eval_shape(critic.init, jax.random.PRNGKey(0), s, a, g)
    )
    assert n == total(4)


@pytest.mark.parametrize("depth", [0, 6, -4, 3, 1022])
def test_bad_depth_is_rejected(depth):
    with pytest.raises(ValueError, match=f"multiple of 4.*got {depth}"):
        TrunkConfig(depth=depth)


def test_ablation_switches():
    no_norm, x = _init(TrunkConfig(depth=4, width=16, layer_norm=False))
    assert not any("LayerNorm" in "/".join(map(str, path)) for path, _ in jax.tree_util.tree_leaves_with_path(no_norm))
    with_norm, _ = _init(TrunkConfig(depth=4, width=16))
    assert param_count(with_norm) - param_count(no_norm) == 5 * 2 * 16  # input unit + 4 block units
    # Same parameters, residual on/off and swish/relu give different functions.
    outs = {
        key: Trunk(TrunkConfig(depth=4, width=16, **kw), 5).apply({"params": with_norm}, x)
        for key, kw in {"base": {}, "no_res": {"residual": False}, "relu": {"activation": "relu"}}.items()
    }
    assert not np.allclose(outs["base"], outs["no_res"])
    assert not np.allclose(outs["base"], outs["relu"])
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        TrunkConfig(activation="gelu")


def test_init_bounds():
    params, _ = _init(TrunkConfig(depth=4, width=64), in_size=10)
    kernel = params["input"]["Dense_0"]["kernel"]
    assert np.abs(kernel).max() <= 1 / np.sqrt(10) + 1e-7
    assert np.abs(kernel).max() > 0.8 / np.sqrt(10)  # uniform over the whole bound
    assert np.all(params["input"]["Dense_0"]["bias"] == 0)


def test_actor_log_std_range_and_log_prob():
    actor = Actor(TrunkConfig(depth=4, width=16), 3)
    s, g = jax.random.normal(jax.random.PRNGKey(0), (64, 4)) * 50, jnp.ones((64, 2))
    params = actor.init(jax.random.PRNGKey(1), s, g)
    mean, log_std = actor.apply(params, s, g)
    assert np.all(log_std >= -5.0) and np.all(log_std <= 2.0)
    # log π from sample_action equals the change-of-variables density computed directly.
    action, log_prob = sample_action(mean, log_std, jax.random.PRNGKey(2))
    pre_tanh = jnp.arctanh(jnp.clip(action, -1 + 1e-6, 1 - 1e-6))
    gauss = jax.scipy.stats.norm.logpdf(pre_tanh, mean, jnp.exp(log_std)).sum(-1)
    direct = gauss - jnp.log(1 - action**2).sum(-1)
    np.testing.assert_allclose(log_prob, direct, rtol=1e-3, atol=1e-3)
    assert np.all(np.abs(action) <= 1)


def _compile_seconds(depth):
    cfg = TrunkConfig(depth=depth, width=32)
    params, x = _init(cfg)
    loss = lambda p: jnp.sum(Trunk(cfg, 5).apply({"params": p}, x) ** 2)  # noqa: E731
    t0 = time.perf_counter()
    jax.jit(jax.grad(loss)).lower(params).compile()
    return time.perf_counter() - t0


@pytest.mark.slow
def test_compile_time_does_not_grow_with_depth():
    _compile_seconds(8)  # warm up tracing machinery
    shallow = min(_compile_seconds(16) for _ in range(2))
    deep = min(_compile_seconds(256) for _ in range(2))
    assert deep <= 2 * shallow + 0.5, (shallow, deep)
