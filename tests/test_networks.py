import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlscale.networks import (
    HYPER_DENSE,
    NORMS,
    Actor,
    Critic,
    Trunk,
    TrunkConfig,
    param_count,
    project_weights,
    sample_action,
    trunk_param_count,
    unstack_block_params,
)


def _init(cfg, in_size=7, out_size=5, seed=0):
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), (3, in_size))
    params = Trunk(cfg, out_size).init(jax.random.PRNGKey(seed), x)["params"]
    return params, x


@pytest.mark.parametrize("norm", ["layernorm", "hyperspherical"])
@pytest.mark.parametrize("depth", [4, 16])
def test_scanned_equals_unrolled(depth, norm):
    scanned = TrunkConfig(depth=depth, width=32, norm=norm)
    params, x = _init(scanned)
    unrolled = TrunkConfig(depth=depth, width=32, scan_blocks=False, norm=norm)
    out_scan = Trunk(scanned, 5).apply({"params": params}, x)
    out_unrolled = Trunk(unrolled, 5).apply({"params": unstack_block_params(params)}, x)
    np.testing.assert_allclose(out_scan, out_unrolled, rtol=1e-6, atol=1e-6)
    # And the unrolled network's own parameters have the same structure as the converted ones.
    own = Trunk(unrolled, 5).init(jax.random.PRNGKey(0), x)["params"]
    assert jax.tree.structure(own) == jax.tree.structure(unstack_block_params(params))


@pytest.mark.parametrize("norm", ["layernorm", "hyperspherical", "none"])
def test_block_norms_one_per_block_scanned_or_unrolled(norm):
    """block_norms: the mean output norm of each residual block, the same for the scanned and the unrolled
    trunk; hyperspherical blocks end on the unit sphere (norm 1); the output is a block-by-block reduction
    of the trunk's own forward pass (the last block's norm is that of the features the output layer reads)."""
    from rlscale.networks import Critic, block_norms

    cfg = TrunkConfig(depth=12, width=16, norm=norm)
    critic = Critic(cfg, 8)
    s, a, g = (jax.random.normal(jax.random.PRNGKey(k), (6, n)) for k, n in ((1, 3), (2, 2), (3, 2)))
    params = critic.init(jax.random.PRNGKey(0), s, a, g)["params"]
    norms = block_norms(critic, params, s, a, g)
    assert sorted(norms) == ["g_encoder", "sa_encoder"] and all(v.shape == (3,) for v in norms.values())
    unrolled = Critic(TrunkConfig(depth=12, width=16, norm=norm, scan_blocks=False), 8)
    flat = {name: unstack_block_params(p) for name, p in params.items()}
    for name, values in block_norms(unrolled, flat, s, a, g).items():
        np.testing.assert_allclose(values, norms[name], rtol=1e-5)
    if norm == "hyperspherical":
        np.testing.assert_allclose(norms["sa_encoder"], 1.0, rtol=1e-5)
    else:  # the blocks' outputs, chained by hand through the unrolled layers, give the same norms
        from rlscale.networks import ResidualBlock, Unit

        unrolled_cfg = TrunkConfig(depth=12, width=16, norm=norm, scan_blocks=False)
        encoder = flat["sa_encoder"]
        h = Unit(unrolled_cfg).apply({"params": encoder["input"]}, jnp.concatenate([s, a], -1))
        for i in range(3):
            h, _ = ResidualBlock(unrolled_cfg).apply({"params": encoder[f"block_{i}"]}, h)
            assert float(jnp.mean(jnp.linalg.norm(h, axis=-1))) == pytest.approx(float(norms["sa_encoder"][i]), rel=1e-5)


@pytest.mark.parametrize("unroll", [2, 3, pytest.param(8, marks=pytest.mark.slow)])  # 8: 12 s to compile
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


@pytest.mark.parametrize("norm", ["layernorm", "hyperspherical"])
@pytest.mark.parametrize("policy", ["dots", "full"])
def test_remat_does_not_change_values_or_gradients(policy, norm):
    plain = TrunkConfig(depth=8, width=16, remat=False, norm=norm)
    params, x = _init(plain)
    loss = lambda cfg: lambda p: jnp.sum(Trunk(cfg, 5).apply({"params": p}, x) ** 2)  # noqa: E731
    g_plain = jax.grad(loss(plain))(params)
    g_remat = jax.grad(loss(TrunkConfig(depth=8, width=16, remat=True, remat_policy=policy, norm=norm)))(params)
    for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert TrunkConfig().remat and TrunkConfig().remat_policy == "dots"  # the default (benchmarks/README.md)
    with pytest.raises(ValueError, match="unknown remat policy 'some'; valid: dots, full"):
        TrunkConfig(remat_policy="some")


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("depth,width", [(4, 256), (16, 64), (64, 32)])
def test_param_count_matches_formula(depth, width, norm):
    for residual in (True, False):
        params, _ = _init(TrunkConfig(depth=depth, width=width, norm=norm, residual=residual), in_size=11, out_size=64)
        assert param_count(params) == trunk_param_count(11, 64, depth, width, norm, residual)
    # One residual unit adds width² + 3·width (Dense + LayerNorm scale and bias); hyperspherical: no bias,
    # a scaler, and the block's α.
    extra = {"layernorm": 4 * (width**2 + 3 * width), "none": 4 * (width**2 + width), "hyperspherical": 4 * (width**2 + width) + width}
    assert trunk_param_count(11, 64, depth + 4, width, norm) - trunk_param_count(11, 64, depth, width, norm) == extra[norm]
    if norm == "layernorm":
        assert trunk_param_count(11, 64, depth, width) == trunk_param_count(11, 64, depth, width, norm)  # the default


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
    no_norm, x = _init(TrunkConfig(depth=4, width=16, norm="none"))
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


# Outputs of the trunk of depth 8, width 16 in _init, first row, computed by the code before norm replaced
# layer_norm (commit 00bb251) with layer_norm=True and False: the two norms are the same networks.
BEFORE_NORM = {
    "layernorm": [0.47965681552886963, -0.17569631338119507, 0.6622933149337769, -0.4854769706726074, -0.8296241760253906],
    "none": [0.0751718133687973, -0.007112264633178711, 0.2438650131225586, -0.11090508103370667, -0.13758720457553864],
}


@pytest.mark.parametrize("norm,layer_norm", [("layernorm", True), ("none", False)])
def test_layernorm_and_none_are_the_networks_of_layer_norm_true_and_false(norm, layer_norm):
    cfg = TrunkConfig(depth=8, width=16, norm=norm)
    assert TrunkConfig.from_options({"width": 16, "layer_norm": layer_norm}, 8) == cfg
    params, x = _init(cfg)
    np.testing.assert_allclose(Trunk(cfg, 5).apply({"params": params}, x)[0], BEFORE_NORM[norm], rtol=1e-5, atol=1e-7)
    names = {"/".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(params)}
    expected = {"output/kernel", "output/bias"} | {
        f"{unit}/{leaf}"
        for unit in ["input", *(f"blocks/unit_{i}" for i in range(4))]
        for leaf in ["Dense_0/kernel", "Dense_0/bias", *(["LayerNorm_0/scale", "LayerNorm_0/bias"] if layer_norm else [])]
    }
    assert names == expected  # the parameter tree of the checkpoints saved before


def test_bad_norm_options_are_rejected():
    with pytest.raises(ValueError, match="unknown norm 'batch'; valid: layernorm, hyperspherical, none"):
        TrunkConfig(norm="batch")
    with pytest.raises(ValueError, match="layer_norm=False .* contradicts norm='layernorm'"):
        TrunkConfig.from_options({"layer_norm": False, "norm": "layernorm"}, 4)
    with pytest.raises(ValueError, match="layer_norm: 'yes' is not one of True, False"):
        TrunkConfig.from_options({"layer_norm": "yes"}, 4)
    with pytest.raises(ValueError, match="unknown norm 'batch'"):
        trunk_param_count(3, 4, 4, 16, "batch")


def _unit_outputs(cfg, params, x):
    """The features after the input unit, each unit and each block of an unrolled trunk."""
    _, state = Trunk(cfg, 5).apply({"params": params}, x, capture_intermediates=True)
    found = {}
    for path, value in jax.tree_util.tree_leaves_with_path(state["intermediates"]):
        if any(getattr(k, "idx", 0) for k in path):  # a block returns (features, its norm): features only
            continue
        names = [str(k.key) for k in path if hasattr(k, "key")]
        if names[-1] == "__call__" and len(names) > 1 and re.fullmatch(r"input|block_\d+|unit_\d+", names[-2]):
            found["/".join(names[:-1])] = value
    return found


def _kernel_column_norms(params):
    return {
        jax.tree_util.keystr(path): np.linalg.norm(np.asarray(leaf, np.float64), axis=-2)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if jax.tree_util.keystr(path).endswith(f"['{HYPER_DENSE}']['kernel']")
    }


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_hyperspherical_features_lie_on_the_unit_sphere(dtype):
    cfg = TrunkConfig(depth=8, width=16, norm="hyperspherical", scan_blocks=False, dtype=dtype)
    params, x = _init(cfg)
    x = x * 40.0  # features are unit-norm whatever the input's scale
    outputs = _unit_outputs(cfg, params, x)
    assert sorted(outputs) == ["block_0", "block_0/unit_0", "block_0/unit_1", "block_0/unit_2", "block_0/unit_3",
                               "block_1", "block_1/unit_0", "block_1/unit_1", "block_1/unit_2", "block_1/unit_3", "input"]
    for name, value in outputs.items():
        assert value.dtype == jnp.float32, name  # normalisation in float32 whatever the matmul dtype
        np.testing.assert_allclose(np.linalg.norm(value, axis=-1), 1.0, atol=1e-5, err_msg=name)
    # Weights start on the sphere too, and the learned scales at SimbaV2's values.
    for name, norms in _kernel_column_norms(params).items():
        np.testing.assert_allclose(norms, 1.0, atol=1e-5, err_msg=name)
    assert params["block_1"]["alpha"]["scaler"] == pytest.approx(np.full(16, 16**-0.5))  # α = 1/3 after its 1/√w scale
    np.testing.assert_allclose(params["input"]["scaler"]["scaler"], np.sqrt(2 / 16))
    out = Trunk(cfg, 5).apply({"params": params}, x)
    assert out.dtype == jnp.float32 and np.all(np.isfinite(out))


def test_project_weights_moves_only_the_hyperspherical_kernels():
    cfg = TrunkConfig(depth=8, width=16, norm="hyperspherical")
    params, _ = _init(cfg)
    stretched = jax.tree.map(lambda leaf: leaf * 3.0, params)
    projected = project_weights(stretched, cfg)
    for name, norms in _kernel_column_norms(projected).items():
        assert norms.shape[-1] == 16 and (norms.ndim == 1 or norms.shape[0] == 2)  # the scanned blocks stacked
        np.testing.assert_allclose(norms, 1.0, atol=1e-6, err_msg=name)
    before = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(stretched)}
    for path, leaf in jax.tree_util.tree_leaves_with_path(projected):
        if HYPER_DENSE not in jax.tree_util.keystr(path):  # scalers, α and the output layer are left alone
            np.testing.assert_array_equal(leaf, before[jax.tree_util.keystr(path)])
    other, _ = _init(TrunkConfig(depth=4, width=16))
    assert project_weights(other, TrunkConfig(depth=4, width=16)) is other


@pytest.mark.slow  # one SGD step, but compiling it takes ~80 s on a shared CPU core
def test_an_sgd_step_keeps_every_hyperspherical_weight_on_the_sphere():
    """CRL.sgd_step projects the actor's and both critic encoders' kernels after Adam's update."""
    from rlscale.envs.base import TaskSpec

    from rlscale.agents.crl import CRL
    from rlscale.config import TrainConfig
    from rlscale.data.buffer import Transitions

    spec = TaskSpec("probe", 4, (0, 1), 2, 0.5, 50, "probe")  # point_u_maze's sizes, without building it
    cfg = TrainConfig(depth=4, width=16, batch_size=8, norm="hyperspherical", actor_lr=0.1, critic_lr=0.1)
    agent = CRL.build(cfg, spec)
    learner = agent.init(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batch = Transitions(
        state=jax.random.normal(keys[0], (8, spec.state_size)),
        action=jax.random.uniform(keys[1], (8, spec.action_size), minval=-1, maxval=1),
        goal=jax.random.normal(keys[2], (8, spec.goal_size)),
    )
    new, metrics = jax.jit(agent.sgd_step)(learner, batch, jax.random.PRNGKey(2))
    assert np.isfinite(metrics["critic_loss"]) and np.isfinite(metrics["actor_loss"])
    for params in (new.actor_params, new.critic_params):
        norms = _kernel_column_norms(params)
        assert len(norms) == (5 if params is new.actor_params else 10)  # input unit + one scanned entry of 4 units each
        for name, n in norms.items():
            np.testing.assert_allclose(n, 1.0, atol=1e-5, err_msg=name)
    # The step did move the weights (the large learning rate takes them well off the sphere before the projection).
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.critic_params, learner.critic_params)
    assert min(jax.tree.leaves(moved)) > 1e-3


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
    """The scanned trunk compiles as fast at depth 256 as at 16. The bound leaves room for a busy CPU (the
    other test worker): the unrolled trunk, what this guards against, took 18.0 s at depth 256 against
    1.4 s at 16 here, over 3x + 1.5 s; the scanned one about 0.9 s at both."""
    _compile_seconds(8)  # warm up tracing machinery
    times = {16: [], 256: []}
    for _ in range(3):  # interleaved, so that a burst of load falls on both depths
        for depth in times:
            times[depth].append(_compile_seconds(depth))
    shallow, deep = min(times[16]), min(times[256])
    assert deep <= 3 * shallow + 1.5, (shallow, deep)


def test_under_bfloat16_the_input_layer_keeps_a_30_m_coordinate_to_within_a_millimetre():
    """Raw maze coordinates reach tens of metres, where bfloat16 keeps steps of 0.125 m: the input unit
    multiplies in float32 (docs/method.md#precision), so 1 mm at 30 m still moves its output as it should."""
    cfg = TrunkConfig(depth=4, width=16, dtype="bfloat16", scan_blocks=False)
    params, x = _init(cfg)
    x = x.at[:, 0].set(30.0)
    moved = x.at[:, 0].add(0.001)

    def input_products(inputs):
        _, state = Trunk(cfg, 5).apply({"params": params}, inputs, capture_intermediates=True)
        products = state["intermediates"]["input"]["Dense_0"]["__call__"][0]
        assert products.dtype == jnp.float32
        return np.asarray(products, np.float64)

    kernel = np.asarray(params["input"]["Dense_0"]["kernel"], np.float64)
    difference = input_products(moved) - input_products(x)
    expected = np.broadcast_to(0.001 * kernel[0], difference.shape)
    np.testing.assert_allclose(difference, expected, atol=2e-5)  # float32 at 30 m: steps of 2e-6
    # The blocks still multiply in bfloat16.
    _, state = Trunk(cfg, 5).apply({"params": params}, x, capture_intermediates=True)
    assert state["intermediates"]["block_0"]["unit_0"]["Dense_0"]["__call__"][0].dtype == jnp.bfloat16
