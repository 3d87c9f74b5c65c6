"""CRL's critic objective as pure functions: the energies f(s, a, g) and the contrastive losses over them
(docs/method.md#objective). No rewards, no target networks. The actor and α losses CRL shares with SAC are in
``rlscale.agents.common``.

Logits ``L[i, j] = f(s_i, a_i, g_j)``; the diagonal holds the positive pairs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ENERGIES = ("l2", "dot", "mrn", "cosine")
CONTRASTIVE_LOSSES = ("forward_infonce", "backward_infonce", "symmetric_infonce")
# Energies whose value needs the critic's learned log-temperature (rlscale.networks.Critic).
TEMPERATURE_ENERGIES = ("cosine",)
# Keeps the gradient of the norm finite where φ_i = ψ_j.
_NORM_EPSILON = 1e-12
# Squared distances below this fraction of ‖φ‖² + ‖ψ‖² are rounding in float32's matrix-product form
# (about 10× its error for 64-dimensional representations).
_CANCELLATION_FLOOR = 1e-6


def _check_kind(kind: str, log_temperature: jax.Array | None) -> None:
    if kind not in ENERGIES:
        raise ValueError(f"unknown energy {kind!r}; valid: {', '.join(ENERGIES)}")
    if (kind in TEMPERATURE_ENERGIES) != (log_temperature is not None):
        need = "needs" if kind in TEMPERATURE_ENERGIES else "takes no"
        raise ValueError(f"the {kind} energy {need} a log-temperature (the critic's log_temperature parameter)")


def _l2_distances(sa_repr: jax.Array, g_repr: jax.Array) -> jax.Array:
    """``[B, B]`` ‖φ_i − ψ_j‖₂ from one matrix product; the diagonal is not exact (the callers replace it)."""
    norms = jnp.sum(jnp.square(sa_repr), axis=-1)[:, None] + jnp.sum(jnp.square(g_repr), axis=-1)[None, :]
    products = jnp.matmul(sa_repr, g_repr.T, precision=jax.lax.Precision.HIGHEST)  # not TF32 on a GPU
    floor = jax.lax.stop_gradient(_CANCELLATION_FLOOR * norms)
    return jnp.sqrt(jnp.maximum(norms - 2.0 * products, floor) + _NORM_EPSILON)


def mrn_halves(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The (asymmetric, symmetric) halves of an MRN representation: its first and its last D/2 entries."""
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


def _unit(x: jax.Array) -> jax.Array:
    """Each row divided by its own L2 norm (per sample, over the representation dimension)."""
    return x / jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + _NORM_EPSILON)


def energy(sa_repr: jax.Array, g_repr: jax.Array, kind: str = "l2", log_temperature: jax.Array | None = None) -> jax.Array:
    """Pairwise critic values ``[B, B]``, ``L[i, j] = f(φ_i, ψ_j)`` (docs/method.md#critic):

    - ``l2``: −‖φ_i − ψ_j‖₂ (plain, not squared);
    - ``dot``: φ_i · ψ_j;
    - ``mrn``: −d(φ_i, ψ_j), the Metric Residual Network quasimetric from state-action to goal,
      d(x, y) = max_k ReLU(x_k − y_k) over the first (asymmetric) halves + ‖x − y‖₂ over the last
      (symmetric) halves (:func:`mrn_halves`);
    - ``cosine``: exp(log_temperature) · φ̂_i · ψ̂_j, each row normalised to unit length on its own.

    The L2 distances (``l2``, and ``mrn``'s symmetric half) come from one matrix product,
    ‖φ_i‖² + ‖ψ_j‖² − 2 φ_i·ψ_j, instead of the ``[B, B, D]`` tensor of differences: on a CPU that tensor
    is 40–65 % of a CPU-sized network's SGD step at batch 256 and makes the step 9–50× slower at batch
    1024 (benchmarks/README.md#pairwise-energy). The product form loses about ε·(‖φ_i‖² + ‖ψ_j‖²) to
    cancellation, so the diagonal (the positives, driven towards distance 0) is computed directly
    (:func:`pair_energy`), and an off-diagonal pair closer than that rounding (below
    ``_CANCELLATION_FLOOR``) counts as at the floor's distance, with no gradient: its computed distance
    would be noise, and its gradient a spike. ``mrn``'s asymmetric half, a max over dimensions, has no
    matrix-product form: it builds the ``[B, B, D/2]`` tensor of differences.
    """
    _check_kind(kind, log_temperature)
    if kind == "dot":
        return sa_repr @ g_repr.T
    if kind == "cosine":
        products = jnp.matmul(_unit(sa_repr), _unit(g_repr).T, precision=jax.lax.Precision.HIGHEST)
        return jnp.exp(log_temperature) * products
    if kind == "l2":
        distance = _l2_distances(sa_repr, g_repr)
    else:  # mrn
        (sa_asym, sa_sym), (g_asym, g_sym) = mrn_halves(sa_repr), mrn_halves(g_repr)
        asym = jnp.max(jax.nn.relu(sa_asym[:, None, :] - g_asym[None, :, :]), axis=-1)
        distance = asym + _l2_distances(sa_sym, g_sym)
    return jnp.fill_diagonal(-distance, pair_energy(sa_repr, g_repr, kind, log_temperature), inplace=False)


def pair_energy(
    sa_repr: jax.Array, g_repr: jax.Array, kind: str = "l2", log_temperature: jax.Array | None = None
) -> jax.Array:
    """Row-wise critic values ``f(φ_i, ψ_i)`` (``[B]``), without the B×B matrix (definitions: :func:`energy`)."""
    _check_kind(kind, log_temperature)
    if kind == "l2":
        return -jnp.sqrt(jnp.sum(jnp.square(sa_repr - g_repr), axis=-1) + _NORM_EPSILON)
    if kind == "dot":
        return jnp.sum(sa_repr * g_repr, axis=-1)
    if kind == "cosine":
        return jnp.exp(log_temperature) * jnp.sum(_unit(sa_repr) * _unit(g_repr), axis=-1)
    (sa_asym, sa_sym), (g_asym, g_sym) = mrn_halves(sa_repr), mrn_halves(g_repr)
    asym = jnp.max(jax.nn.relu(sa_asym - g_asym), axis=-1)
    return -(asym + jnp.sqrt(jnp.sum(jnp.square(sa_sym - g_sym), axis=-1) + _NORM_EPSILON))


def contrastive_loss(
    logits: jax.Array, kind: str = "forward_infonce", logsumexp_penalty: float = 0.1
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """InfoNCE over a ``[B, B]`` logit matrix plus ``penalty · mean(logsumexp²)``.

    forward: softmax over goals (each row), the paper's default; backward: softmax over state-action
    pairs (each column); symmetric: the mean of the two. The penalty uses the logsumexp of the
    softmax's own normaliser (both, averaged, for symmetric).
    """
    diag = jnp.diagonal(logits)
    lse_rows = jax.nn.logsumexp(logits, axis=1)
    lse_cols = jax.nn.logsumexp(logits, axis=0)
    if kind == "forward_infonce":
        nce = -jnp.mean(diag - lse_rows)
        penalty = jnp.mean(jnp.square(lse_rows))
        lse = lse_rows
    elif kind == "backward_infonce":
        nce = -jnp.mean(diag - lse_cols)
        penalty = jnp.mean(jnp.square(lse_cols))
        lse = lse_cols
    elif kind == "symmetric_infonce":
        nce = -0.5 * (jnp.mean(diag - lse_rows) + jnp.mean(diag - lse_cols))
        penalty = 0.5 * (jnp.mean(jnp.square(lse_rows)) + jnp.mean(jnp.square(lse_cols)))
        lse = 0.5 * (lse_rows + lse_cols)
    else:
        raise ValueError(f"unknown contrastive loss {kind!r}; valid: {', '.join(CONTRASTIVE_LOSSES)}")
    loss = nce + logsumexp_penalty * penalty
    is_top = jnp.argmax(logits, axis=1) == jnp.arange(logits.shape[0])
    metrics = {
        "critic_loss": loss,
        "infonce": nce,
        "logsumexp": jnp.mean(lse),
        "categorical_accuracy": jnp.mean(is_top.astype(jnp.float32)),
        "logits_pos": jnp.mean(diag),
        "logits_neg": (jnp.sum(logits) - jnp.sum(diag)) / (logits.size - diag.size),
    }
    return loss, metrics
