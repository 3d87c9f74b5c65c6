import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlscale.agents import contrastive


def test_energy_l2_and_dot_by_hand():
    phi = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    psi = jnp.array([[3.0, 4.0], [1.0, 0.0]])
    np.testing.assert_allclose(contrastive.energy(phi, psi, "l2"), [[-5.0, -1.0], [-np.sqrt(13), -1.0]], rtol=1e-6)
    np.testing.assert_allclose(contrastive.energy(phi, psi, "dot"), [[0.0, 0.0], [7.0, 1.0]])
    np.testing.assert_allclose(contrastive.pair_energy(phi, psi, "l2"), [-5.0, -1.0], rtol=1e-6)
    np.testing.assert_allclose(contrastive.pair_energy(phi, psi, "dot"), [0.0, 1.0])
    for fn in (contrastive.energy, contrastive.pair_energy):
        with pytest.raises(ValueError, match="unknown energy 'bogus'; valid: l2, dot, mrn, cosine"):
            fn(phi, psi, "bogus")
    with pytest.raises(ValueError, match="the cosine energy needs a log-temperature"):
        contrastive.energy(phi, psi, "cosine")


def _l2_by_differences(phi, psi):
    """The definition, through the [B, B, D] tensor of differences (the slow form energy avoids)."""
    return -jnp.sqrt(jnp.sum(jnp.square(phi[:, None, :] - psi[None, :, :]), axis=-1) + 1e-12)


def test_l2_energy_matches_the_definition_in_values_and_gradients():
    # Representations of a trained critic's scale (norms about 8), positives near their goals.
    phi = jax.random.normal(jax.random.PRNGKey(0), (64, 64))
    psi = phi + 0.01 * jax.random.normal(jax.random.PRNGKey(1), (64, 64))
    fast, slow = contrastive.energy(phi, psi, "l2"), _l2_by_differences(phi, psi)
    np.testing.assert_array_equal(jnp.diagonal(fast), contrastive.pair_energy(phi, psi, "l2"))
    np.testing.assert_allclose(jnp.diagonal(fast), jnp.diagonal(slow), rtol=1e-6)
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    fast_grads = jax.grad(_infonce(lambda a, b: contrastive.energy(a, b, "l2")), argnums=(0, 1))(phi, psi)
    slow_grads = jax.grad(_infonce(_l2_by_differences), argnums=(0, 1))(phi, psi)
    for fast_grad, slow_grad in zip(fast_grads, slow_grads):
        np.testing.assert_allclose(fast_grad, slow_grad, atol=1e-4 * float(jnp.max(jnp.abs(slow_grad))))


def test_l2_energy_of_coinciding_negative_pairs_is_floored_not_noise():
    # The same goal twice in a batch: off-diagonal pairs at distance 0 and 8e-4, below the rounding
    # of the matrix-product form. They count as at the floor's distance with no gradient (the
    # definition with that floor, computed through differences), instead of a noisy distance whose
    # gradient spikes.
    phi = jax.random.normal(jax.random.PRNGKey(0), (64, 64))
    psi = phi + 0.01 * jax.random.normal(jax.random.PRNGKey(1), (64, 64))
    psi = psi.at[5].set(phi[9]).at[20].set(phi[3] + 1e-4)

    def floored_definition(a, b):
        squared = jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)
        norms = jnp.sum(jnp.square(a), -1)[:, None] + jnp.sum(jnp.square(b), -1)[None, :]
        floored = jnp.maximum(squared, jax.lax.stop_gradient(contrastive._CANCELLATION_FLOOR * norms))
        return jnp.fill_diagonal(-jnp.sqrt(floored + 1e-12), -jnp.sqrt(jnp.diagonal(squared) + 1e-12), inplace=False)

    fast = contrastive.energy(phi, psi, "l2")
    np.testing.assert_allclose(fast, floored_definition(phi, psi), atol=1e-5)
    floor_distance = np.sqrt(contrastive._CANCELLATION_FLOOR * 2 * 64)
    np.testing.assert_allclose(fast, _l2_by_differences(phi, psi), atol=1.5 * floor_distance)
    fast_grads = jax.grad(_infonce(lambda a, b: contrastive.energy(a, b, "l2")), argnums=(0, 1))(phi, psi)
    floored_grads = jax.grad(_infonce(floored_definition), argnums=(0, 1))(phi, psi)
    for fast_grad, floored_grad in zip(fast_grads, floored_grads):
        assert bool(jnp.all(jnp.isfinite(fast_grad)))
        np.testing.assert_allclose(fast_grad, floored_grad, atol=1e-4 * float(jnp.max(jnp.abs(floored_grad))))


def _infonce(energy_fn):
    return lambda a, b: contrastive.contrastive_loss(energy_fn(a, b), "forward_infonce", 0.1)[0]


# --- mrn and cosine ---------------------------------------------------------------------------------

LOG_TEMPERATURE = jnp.log(2.0)


def _temperature(kind):
    return LOG_TEMPERATURE if kind in contrastive.TEMPERATURE_ENERGIES else None


def _mrn_by_differences(phi, psi):
    """MRN's −d(φ_i, ψ_j) through the [B, B, D] tensor of differences (first half asymmetric, last symmetric)."""
    half = phi.shape[-1] // 2
    diff = phi[:, None, :] - psi[None, :, :]
    asym = jnp.max(jnp.maximum(diff[..., :half], 0.0), axis=-1)
    return -(asym + jnp.sqrt(jnp.sum(jnp.square(diff[..., half:]), axis=-1) + 1e-12))


def _by_differences(phi, psi, kind):
    """Every energy's [B, B] definition, pair by pair."""
    if kind == "l2":
        return _l2_by_differences(phi, psi)
    if kind == "mrn":
        return _mrn_by_differences(phi, psi)
    products = jnp.sum(phi[:, None, :] * psi[None, :, :], axis=-1)
    if kind == "dot":
        return products
    norms = jnp.linalg.norm(phi, axis=-1)[:, None] * jnp.linalg.norm(psi, axis=-1)[None, :]
    return jnp.exp(LOG_TEMPERATURE) * products / norms


@pytest.mark.parametrize("kind", contrastive.ENERGIES)
def test_every_energy_is_its_pairwise_definition_and_pair_energy_its_diagonal(kind):
    phi = jax.random.normal(jax.random.PRNGKey(0), (32, 16))
    psi = jax.random.normal(jax.random.PRNGKey(1), (32, 16))
    logits = contrastive.energy(phi, psi, kind, _temperature(kind))
    np.testing.assert_allclose(jnp.diagonal(logits), contrastive.pair_energy(phi, psi, kind, _temperature(kind)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, _by_differences(phi, psi, kind), rtol=1e-5, atol=1e-5)


def test_mrn_is_a_quasimetric():
    """Triangle inequality on every triple, d(x, x) = 0, d ≥ 0, and not symmetric."""
    x = jax.random.normal(jax.random.PRNGKey(0), (24, 8))
    d = -contrastive.energy(x, x, "mrn")  # d[i, j] = d(x_i, x_j)
    np.testing.assert_allclose(jnp.diagonal(d), 0.0, atol=1e-5)
    assert bool(jnp.all(d >= 0))
    triangle = d[:, None, :] - (d[:, :, None] + d[None, :, :])  # d(x_i, x_k) − d(x_i, x_j) − d(x_j, x_k)
    assert float(jnp.max(triangle)) <= 1e-5
    assert float(jnp.max(jnp.abs(d - d.T))) > 0.1
    # By hand: the asymmetric half counts only where x exceeds y.
    x, y = jnp.array([[2.0, 0.0, 3.0, 0.0]]), jnp.array([[0.0, 1.0, 0.0, 4.0]])
    np.testing.assert_allclose(-contrastive.pair_energy(x, y, "mrn"), [2.0 + 5.0], rtol=1e-6)
    np.testing.assert_allclose(-contrastive.pair_energy(y, x, "mrn"), [1.0 + 5.0], rtol=1e-6)


def test_cosine_is_the_temperature_times_the_cosine_by_hand():
    phi = jnp.array([[3.0, 4.0], [1.0, 0.0]])
    psi = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(contrastive.energy(phi, psi, "cosine", LOG_TEMPERATURE), [[1.2, 1.6], [2.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(contrastive.pair_energy(phi, psi, "cosine", LOG_TEMPERATURE), [1.2, 0.0], rtol=1e-6, atol=1e-7)


def test_cosine_normalises_each_sample_not_the_batch():
    """Scaling one sample's φ leaves every logit as it was. Normalising the whole [B, D] tensor at once
    (JaxGCRL's cosine before its PR #64) fails this: the other rows' logits change too."""
    phi = jax.random.normal(jax.random.PRNGKey(0), (8, 16))
    psi = jax.random.normal(jax.random.PRNGKey(1), (8, 16))
    scaled = phi.at[3].multiply(7.0)
    before, after = (contrastive.energy(p, psi, "cosine", LOG_TEMPERATURE) for p in (phi, scaled))
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(contrastive.pair_energy(scaled, psi, "cosine", LOG_TEMPERATURE), jnp.diagonal(before), rtol=1e-6, atol=1e-6)

    def whole_tensor(a, b):  # the bug, for contrast
        return jnp.exp(LOG_TEMPERATURE) * (a / jnp.linalg.norm(a)) @ (b / jnp.linalg.norm(b)).T

    change = jnp.abs(whole_tensor(scaled, psi) - whole_tensor(phi, psi))
    assert float(jnp.min(jnp.max(change, axis=1))) > 0.01  # every row of the batch moves (10⁴ × the tolerance)


@pytest.mark.parametrize("kind", contrastive.ENERGIES)
def test_gradients_are_finite_where_a_representation_meets_a_goal(kind):
    """φ_i = ψ_j on and off the diagonal, and a representation of zeros."""
    phi = jax.random.normal(jax.random.PRNGKey(0), (16, 8))
    psi = jax.random.normal(jax.random.PRNGKey(1), (16, 8)).at[0].set(phi[0]).at[5].set(phi[9]).at[7].set(0.0)
    phi = phi.at[7].set(0.0)

    def loss(a, b, t):
        logits = contrastive.energy(a, b, kind, t if kind in contrastive.TEMPERATURE_ENERGIES else None)
        actor = contrastive.pair_energy(a, b, kind, t if kind in contrastive.TEMPERATURE_ENERGIES else None)
        return contrastive.contrastive_loss(logits, "backward_infonce", 0.1)[0] - jnp.mean(actor)

    for grad in jax.grad(loss, argnums=(0, 1, 2))(phi, psi, LOG_TEMPERATURE):
        assert bool(jnp.all(jnp.isfinite(grad)))


LOGITS = jnp.array([[1.0, 0.0], [0.0, 2.0]])


def _lse(v):
    return np.log(np.sum(np.exp(v)))


def test_forward_infonce_by_hand():
    row0, row1 = _lse([1.0, 0.0]), _lse([0.0, 2.0])
    nce = -0.5 * ((1.0 - row0) + (2.0 - row1))
    penalty = 0.5 * (row0**2 + row1**2)
    loss, metrics = contrastive.contrastive_loss(LOGITS, "forward_infonce", 0.1)
    np.testing.assert_allclose(loss, nce + 0.1 * penalty, rtol=1e-6)
    np.testing.assert_allclose(metrics["logsumexp"], 0.5 * (row0 + row1), rtol=1e-6)
    assert metrics["categorical_accuracy"] == 1.0


def test_backward_and_symmetric_infonce_by_hand():
    logits = jnp.array([[1.0, 3.0], [0.0, 2.0]])
    col0, col1 = _lse([1.0, 0.0]), _lse([3.0, 2.0])
    row0, row1 = _lse([1.0, 3.0]), _lse([0.0, 2.0])
    backward = -0.5 * ((1.0 - col0) + (2.0 - col1))
    forward = -0.5 * ((1.0 - row0) + (2.0 - row1))
    loss, _ = contrastive.contrastive_loss(logits, "backward_infonce", 0.0)
    np.testing.assert_allclose(loss, backward, rtol=1e-6)
    loss, _ = contrastive.contrastive_loss(logits, "symmetric_infonce", 0.0)
    np.testing.assert_allclose(loss, 0.5 * (forward + backward), rtol=1e-6)
    loss, metrics = contrastive.contrastive_loss(logits, "forward_infonce", 0.0)
    assert metrics["categorical_accuracy"] == 0.5  # row 0 prefers the wrong goal
    with pytest.raises(ValueError, match="unknown contrastive loss 'nce'"):
        contrastive.contrastive_loss(logits, "nce")
