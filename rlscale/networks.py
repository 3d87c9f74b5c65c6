"""The paper's residual MLP (docs/method.md#residual-trunk) and the CRL actor and critic built from it.

Network: an input unit ``Dense(width) → LayerNorm → Swish`` (not counted in depth), then ``depth / 4``
residual blocks of four such units whose output is added to the block's input (post-activation
residual, nothing after the add), then an output layer with no norm or activation. ``norm`` chooses the
normalisation: LayerNorm (the paper's), none (its ablation), or SimbaV2's hyperspherical normalisation
(docs/method.md#hyperspherical-normalisation), whose weights :func:`project_weights` puts back on the
unit sphere after every optimiser step.

The blocks run under ``nn.scan`` so that the compiled program, and so the compile time, does not grow
with depth; ``scan_blocks=False`` unrolls them in Python (the paper's implementation, kept as the
baseline for benchmarks). ``remat=True`` (the default) keeps only each block's matrix products for the
backward pass and recomputes the rest (``remat_policy="full"``: recompute everything).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any, Callable, Literal, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlscale.legacy_options import upgrade_options

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"swish": nn.swish, "relu": nn.relu}
UNITS_PER_BLOCK = 4
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0

# Variance scaling 1/3, fan-in, uniform: weights ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


# What a rematerialised residual block saves for the backward pass. "dots": the matrix products' outputs
# (LayerNorm and Swish are recomputed: cheap elementwise work); "full": nothing, the whole block is
# recomputed. Without remat a scanned block stores every intermediate in per-iteration buffers, which
# made the scanned SGD step 13-28 % slower than the unrolled one on the CPU (depth 16-64); with "dots"
# it is 13-29 % faster (benchmarks/README.md).
REMAT_POLICIES = {"dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable, "full": None}


DTYPES = ("float32", "bfloat16")
NORMS = ("layernorm", "hyperspherical", "none")

# SimbaV2's hyperspherical normalisation (docs/method.md#hyperspherical-normalisation).
SHIFT = 3.0  # the constant appended to the input before it is projected onto the sphere (SimbaV2's c_shift)
EPS = 1e-8  # smallest norm divided by


def option(default: Any, help: str, check: Callable[[Any, str], None] | None = None) -> Any:
    """A network option declared once: its default, its ``rlscale train --help`` text (``TrainConfig``
    takes the options from here) and its check, ``check(value, label)``, which raises ``ValueError``
    naming the option ``label``. A ``Literal`` option's check, its choices, comes from its type."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check})


def check_positive(value: Any, label: str, hint: str | None = None) -> None:
    """``value`` is a positive integer; ``hint`` (what it counts) is said when ``label`` names the option
    in words, not as a flag (a flag's ``--help`` says it)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        said = f" ({hint})" if hint and not label.startswith("--") else ""
        raise ValueError(f"{label} must be a positive integer{said}, got {value!r}")


def check_depth(depth: Any, label: str = "depth") -> None:
    if not isinstance(depth, int) or depth < UNITS_PER_BLOCK or depth % UNITS_PER_BLOCK:
        raise ValueError(
            f"{label} must be a positive multiple of {UNITS_PER_BLOCK} (it counts the Dense layers inside "
            f"residual blocks of {UNITS_PER_BLOCK}), got {depth!r}; e.g. 4, 8, 16, 64, 1024"
        )


@dataclasses.dataclass(frozen=True)
class TrunkConfig:
    """Shape and ablation switches of one residual MLP; all but ``depth`` are also ``TrainConfig``'s
    options (:data:`TRUNK_OPTIONS`), shared by the actor and both critic encoders. The choices of the
    ``Literal`` options are the keys of ``ACTIVATIONS``, ``REMAT_POLICIES`` and ``DTYPES``."""

    depth: int = option(4, "Dense layers in residual blocks (a multiple of 4).", check_depth)
    width: int = option(256, "Hidden width of every layer.", check_positive)
    activation: Literal[tuple(ACTIVATIONS)] = option("swish", "Activation after each LayerNorm.")
    norm: Literal[NORMS] = option(
        "layernorm",
        "Normalisation of every unit: LayerNorm (the paper's), hyperspherical (SimbaV2: unit-norm features and "
        "weights, learned scales, interpolating residual), or none (ablation).",
    )
    residual: bool = option(True, "Residual connections around each block of 4 units (ablation: off).")
    scan_blocks: bool = option(
        True, "Run residual blocks under nn.scan (compile time independent of depth); off = Python-unrolled."
    )
    scan_unroll: int = option(
        1,
        "Residual blocks per iteration of the block scan (fewer loop iterations, longer compile).",
        functools.partial(check_positive, hint="blocks per scan iteration"),
    )
    remat: bool = option(
        True,
        "Rematerialise residual blocks in the backward pass: less memory, and a faster scanned step "
        "(off: store every intermediate).",
    )
    remat_policy: Literal[tuple(REMAT_POLICIES)] = option(
        "dots",
        "With --remat: keep the matrix products' outputs and recompute LayerNorm and Swish (dots), or "
        "recompute everything (full).",
    )
    dtype: Literal[DTYPES] = option(
        "float32", "Dtype of matrix products (parameters, LayerNorm statistics, losses and the input layer stay float32)."
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check_option(f.name, getattr(self, f.name))

    @property
    def num_blocks(self) -> int:
        return self.depth // UNITS_PER_BLOCK

    @classmethod
    def from_options(cls, options: Mapping[str, Any], depth: int) -> "TrunkConfig":
        """The trunk of ``depth`` with the :data:`TRUNK_OPTIONS` of a training config (``vars`` of a
        ``TrainConfig``, or a saved ``config.json``'s mapping: options it lacks, added since the run was
        saved, take their defaults; they change speed, not the parameters; old names, ``rlscale.legacy_options``,
        are read under their new ones)."""
        options = upgrade_options(options, "trunk options")
        return cls(depth=depth, **{name: options[name] for name in TRUNK_OPTIONS if name in options})


_FIELDS = {f.name: f for f in dataclasses.fields(TrunkConfig)}
_TYPES = typing.get_type_hints(TrunkConfig)
# The options every trunk of a training config shares: all but depth, which TrainConfig sets per network.
TRUNK_OPTIONS = tuple(name for name in _FIELDS if name != "depth")


def check_option(name: str, value: Any, label: str | None = None) -> None:
    """The one check of ``TrunkConfig`` option ``name``, for every caller (``TrunkConfig`` itself and
    ``rlscale.config.validate``); the error names the option ``label`` (default: its name in words)."""
    words = name.replace("_", " ")
    choices = typing.get_args(_TYPES[name]) if typing.get_origin(_TYPES[name]) is Literal else None
    if choices is not None and value not in choices:
        raise ValueError(f"unknown {words} {value!r}; valid: {', '.join(choices)}")
    check = _FIELDS[name].metadata["check"]
    if check is not None:
        check(value, label or words)


def l2normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    """``x`` projected onto the unit sphere along ``axis`` (a zero vector stays zero), in ``x``'s dtype."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), EPS)


def _unit_columns_init(key, shape, dtype=jnp.float32):
    """Orthogonal kernel (SimbaV2's HyperDense init) with each column, one output's weights, of unit norm
    (orthogonal alone leaves columns shorter when the kernel is wider than tall, as the input unit's is)."""
    return l2normalize(nn.initializers.orthogonal()(key, shape, dtype), axis=-2)


class Scaler(nn.Module):
    """SimbaV2's learned scaling vector: ``x · s · start / scale``, ``s`` a parameter that starts at ``scale``
    (so the factor starts at ``start``; ``scale`` sets how far one optimiser step moves it)."""

    dim: int
    start: float
    scale: float

    @nn.compact
    def __call__(self, x):
        s = self.param("scaler", nn.initializers.constant(self.scale), (self.dim,), jnp.float32)
        return x * s * (self.start / self.scale)


# The Dense layers of the hyperspherical trunk whose kernels project_weights keeps on the sphere.
HYPER_DENSE = "hyper_dense"


class Unit(nn.Module):
    """``Dense → LayerNorm → activation`` (``norm="none"``: no LayerNorm); hyperspherical:
    ``Dense (unit-norm columns, no bias) → Scaler → activation → ℓ2-normalise``."""

    cfg: TrunkConfig

    @nn.compact
    def __call__(self, x):
        if self.cfg.norm == "hyperspherical":
            x = nn.Dense(self.cfg.width, use_bias=False, kernel_init=_unit_columns_init,
                         dtype=jnp.dtype(self.cfg.dtype), name=HYPER_DENSE)(x)
            # Starts at sqrt(width): unit-variance pre-activations, Swish's working range, as after LayerNorm.
            # SimbaV2 starts it at its scale sqrt(2 / width); with its ReLU, l2n(relu(c·z)) does not depend on
            # c > 0, so that only the scale (its relative step) mattered, and that is SimbaV2's.
            x = Scaler(self.cfg.width, self.cfg.width**0.5, (2 / self.cfg.width) ** 0.5, name="scaler")(
                x.astype(jnp.float32)
            )
            return l2normalize(ACTIVATIONS[self.cfg.activation](x))
        x = nn.Dense(self.cfg.width, kernel_init=kernel_init, dtype=jnp.dtype(self.cfg.dtype))(x)
        if self.cfg.norm == "layernorm":
            # Statistics in float32 whatever the matmul dtype.
            x = nn.LayerNorm(epsilon=1e-6, dtype=jnp.float32)(x)
        return ACTIVATIONS[self.cfg.activation](x)


class ResidualBlock(nn.Module):
    cfg: TrunkConfig

    @nn.compact
    def __call__(self, x, _=None):
        h = x
        for i in range(UNITS_PER_BLOCK):
            h = Unit(self.cfg, name=f"unit_{i}")(h)
        if self.cfg.residual and self.cfg.norm == "hyperspherical":
            # SimbaV2's interpolation towards the block's output, back onto the sphere.
            alpha = Scaler(self.cfg.width, 1 / (self.cfg.num_blocks + 1), self.cfg.width**-0.5, name="alpha")
            h = l2normalize(x + alpha(h - x))
        elif self.cfg.residual:
            h = h + x
        # The block's mean output norm, a per-block scan output that only block_norms reads (unused in
        # training, so XLA drops it).
        return h, jnp.mean(jnp.linalg.norm(h.astype(jnp.float32), axis=-1))


class Trunk(nn.Module):
    """Input unit, residual blocks, output layer of ``out_size`` (or several heads)."""

    cfg: TrunkConfig
    out_size: int

    @nn.compact
    def __call__(self, x):
        if self.cfg.norm == "hyperspherical":
            # SimbaV2's input: a constant appended, so that the projection keeps the input's norm in its angle.
            shift = jnp.full(x.shape[:-1] + (1,), SHIFT, x.dtype)
            x = l2normalize(jnp.concatenate([x, shift], axis=-1).astype(jnp.float32))
        # The input unit multiplies in float32 whatever --dtype says: raw observations (maze coordinates up to
        # 64 m) would round to 0.25 m in bfloat16, and its in_size × width product is a negligible share of
        # the FLOPs (docs/method.md#precision).
        x = Unit(dataclasses.replace(self.cfg, dtype="float32"), name="input")(x)
        block = nn.remat(ResidualBlock, policy=REMAT_POLICIES[self.cfg.remat_policy]) if self.cfg.remat else ResidualBlock
        if self.cfg.scan_blocks:
            blocks = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=self.cfg.num_blocks,
                unroll=min(self.cfg.scan_unroll, self.cfg.num_blocks),
            )(self.cfg, name="blocks")
            x, norms = blocks(x, None)
        else:
            norms = []
            for i in range(self.cfg.num_blocks):
                x, norm = block(self.cfg, name=f"block_{i}")(x)
                norms.append(norm)
            norms = jnp.stack(norms)
        # Mean activation norm of each block's output ([num_blocks]), read by block_norms.
        self.sow(BLOCK_NORMS, "block_norms", norms)
        if self.cfg.norm == "hyperspherical":
            x = x * self.cfg.width**0.5  # the output layer reads features of LayerNorm's scale (RMS 1)
        return nn.Dense(self.out_size, kernel_init=kernel_init, dtype=jnp.float32, name="output")(
            x.astype(jnp.float32)
        )


# The collection Trunk sows its blocks' output norms into: Flax's "intermediates", which init leaves out.
BLOCK_NORMS = "intermediates"


def block_norms(module: nn.Module, params: Any, *inputs: jax.Array) -> dict[str, jax.Array]:
    """The mean activation norm (over the batch of ``inputs``) of every residual block's output of each trunk
    of ``module`` (the actor: ``{"trunk": [num_blocks]}``; the critic: ``{"sa_encoder": …, "g_encoder": …}``),
    block 0 first (docs/metrics.md#block-norms)."""
    _, sown = module.apply({"params": params}, *inputs, mutable=[BLOCK_NORMS])
    return {name: values["block_norms"][0] for name, values in sown[BLOCK_NORMS].items()}


def project_weights(params: Any, cfg: TrunkConfig) -> Any:
    """``params`` (of a trunk, or of any module made of trunks of ``cfg``'s norm: the actor, the critic)
    with every hyperspherical kernel's columns projected back onto the unit sphere (each output's incoming
    weights, axis -2, the input axis, also of the scanned blocks' stacked kernels); unchanged for the other
    norms. Every algorithm's learner calls it on the parameters after each optimiser step."""
    if cfg.norm != "hyperspherical":
        return params

    def project(path, leaf):
        names = [getattr(k, "key", None) for k in path]
        return l2normalize(leaf, axis=-2) if names[-2:] == [HYPER_DENSE, "kernel"] else leaf

    return jax.tree_util.tree_map_with_path(project, params)


def unstack_block_params(params: dict) -> dict:
    """Scanned-trunk params (blocks stacked on a leading axis) → the unrolled layout (``block_i``)."""
    params = dict(params)
    stacked = params.pop("blocks")
    num_blocks = jax.tree.leaves(stacked)[0].shape[0]
    for i in range(num_blocks):
        params[f"block_{i}"] = jax.tree.map(lambda leaf: leaf[i], stacked)
    return params


class Actor(nn.Module):
    """π(a | s, g): trunk on concat(state, goal) with mean and log-std heads."""

    cfg: TrunkConfig
    action_size: int

    @nn.compact
    def __call__(self, state, goal):
        out = Trunk(self.cfg, 2 * self.action_size, name="trunk")(jnp.concatenate([state, goal], axis=-1))
        mean, raw_log_std = jnp.split(out, 2, axis=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw_log_std) + 1)
        return mean, log_std


# Initial log-temperature of the cosine energy: CLIP's, 1 / 0.07 (docs/method.md#critic).
COSINE_INITIAL_LOG_TEMPERATURE = math.log(1 / 0.07)


class Critic(nn.Module):
    """Two encoders with their own parameters: φ(s, a) and ψ(g), each of ``repr_dim`` outputs; with the
    ``cosine`` energy also a scalar ``log_temperature`` parameter (:func:`critic_log_temperature`)."""

    cfg: TrunkConfig
    repr_dim: int = 64
    energy: str = "l2"

    def setup(self):
        self.sa_encoder = Trunk(self.cfg, self.repr_dim)
        self.g_encoder = Trunk(self.cfg, self.repr_dim)
        if self.energy == "cosine":
            self.log_temperature = self.param(
                "log_temperature", nn.initializers.constant(COSINE_INITIAL_LOG_TEMPERATURE), (), jnp.float32
            )

    def __call__(self, state, action, goal):
        return self.encode_sa(state, action), self.encode_goal(goal)

    def encode_sa(self, state, action):
        return self.sa_encoder(jnp.concatenate([state, action], axis=-1))

    def encode_goal(self, goal):
        return self.g_encoder(goal)


class TwinQ(nn.Module):
    """The clipped double-Q critic of SAC and TD3 (docs/method.md#baselines): two trunks with their own
    parameters, ``q1`` and ``q2``, each Q(s, a, g) on concat(state, action, goal)."""

    cfg: TrunkConfig

    def setup(self):
        self.q1 = Trunk(self.cfg, 1)
        self.q2 = Trunk(self.cfg, 1)

    def __call__(self, state, action, goal):
        x = jnp.concatenate([state, action, goal], axis=-1)
        return self.q1(x)[..., 0], self.q2(x)[..., 0]


def critic_log_temperature(critic_params) -> jax.Array | None:
    """The critic's learned log-temperature (``cosine`` energy), None for the energies without one: the
    ``log_temperature`` argument of ``rlscale.agents.contrastive.energy`` / ``pair_energy``, for every caller."""
    return critic_params.get("log_temperature")


def trunk_param_count(in_size: int, out_size: int, depth: int, width: int, norm: str = "layernorm",
                      residual: bool = True) -> int:
    """Closed-form parameter count of one trunk (docs/method.md#parameter-counts). Hyperspherical units
    have no bias and a scaler of ``width``; the input unit sees one more input (the shift), and each
    residual block has its ``width`` interpolation rates α."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    output = width * out_size + out_size
    if norm == "hyperspherical":
        unit = lambda fan_in: fan_in * width + width  # noqa: E731
        alphas = (depth // UNITS_PER_BLOCK) * width if residual else 0
        return unit(in_size + 1) + depth * unit(width) + alphas + output
    extra = 2 * width if norm == "layernorm" else 0
    unit = lambda fan_in: fan_in * width + width + extra  # noqa: E731
    return unit(in_size) + depth * unit(width) + output


def param_count(tree) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


# --- the tanh-squashed Gaussian policy ---------------------------------------------------------


def _tanh_log_det(pre_tanh: jax.Array) -> jax.Array:
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|.
    return 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


def sample_action(mean: jax.Array, log_std: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reparameterised tanh-Gaussian sample and its log-probability (with the tanh correction)."""
    std = jnp.exp(log_std)
    noise = jax.random.normal(key, mean.shape, mean.dtype)
    pre_tanh = mean + std * noise
    log_prob = _squashed_log_prob(noise, log_std, pre_tanh)
    return jnp.tanh(pre_tanh), log_prob


def _squashed_log_prob(noise: jax.Array, log_std: jax.Array, pre_tanh: jax.Array) -> jax.Array:
    """log-density of tanh(pre_tanh), pre_tanh = mean + std · noise: the Gaussian's, less the tanh's log-Jacobian."""
    gaussian_log_prob = -0.5 * jnp.square(noise) - log_std - 0.5 * jnp.log(2 * jnp.pi)
    return jnp.sum(gaussian_log_prob - _tanh_log_det(pre_tanh), axis=-1)


# Largest |action| whose atanh is taken: float32 tanh samples reach ±1 exactly, where atanh is infinite.
_ACTION_BOUND = 1.0 - 1e-6


def action_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array) -> jax.Array:
    """log π(action) of the tanh-Gaussian of :func:`sample_action` (with the tanh correction), for a given
    action in (-1, 1)."""
    pre_tanh = jnp.arctanh(jnp.clip(action, -_ACTION_BOUND, _ACTION_BOUND))
    return _squashed_log_prob((pre_tanh - mean) * jnp.exp(-log_std), log_std, pre_tanh)


def deterministic_action(mean: jax.Array) -> jax.Array:
    return jnp.tanh(mean)


def act(actor: Actor, actor_params, obs: jax.Array, state_size: int, key: jax.Array | None) -> jax.Array:
    """The policy's action for observations ``state ⊕ goal`` (the first ``state_size`` entries are the
    state), batched or not: tanh(mean) without a key, a tanh-Gaussian sample with one. How the tanh-Gaussian
    policies (CRL, SAC, GCSL) act; each algorithm's ``Algorithm.make_inference_fn`` (``rlscale.agents``) is its
    acting, for training and for a loaded checkpoint alike (TD3's is its own)."""
    mean, log_std = actor.apply({"params": actor_params}, obs[..., :state_size], obs[..., state_size:])
    return deterministic_action(mean) if key is None else sample_action(mean, log_std, key)[0]
