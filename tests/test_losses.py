import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlscale import losses


def test_energy_l2_and_dot_by_hand():
    phi = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    psi = jnp.array([[3.0, 4.0], [1.0, 0.0]])
    np.testing.assert_allclose(losses.energy(phi, psi, "l2"), [[-5.0, -1.0], [-np.sqrt(13), -1.0]], rtol=1e-6)
    np.testing.assert_allclose(losses.energy(phi, psi, "dot"), [[0.0, 0.0], [7.0, 1.0]])
    np.testing.assert_allclose(losses.pair_energy(phi, psi, "l2"), [-5.0, -1.0], rtol=1e-6)
    np.testing.assert_allclose(losses.pair_energy(phi, psi, "dot"), [0.0, 1.0])
    with pytest.raises(ValueError, match="unknown energy 'cosine'; valid: l2, dot"):
        losses.energy(phi, psi, "cosine")


LOGITS = jnp.array([[1.0, 0.0], [0.0, 2.0]])


def _lse(v):
    return np.log(np.sum(np.exp(v)))


def test_forward_infonce_by_hand():
    row0, row1 = _lse([1.0, 0.0]), _lse([0.0, 2.0])
    nce = -0.5 * ((1.0 - row0) + (2.0 - row1))
    penalty = 0.5 * (row0**2 + row1**2)
    loss, metrics = losses.contrastive_loss(LOGITS, "forward_infonce", 0.1)
    np.testing.assert_allclose(loss, nce + 0.1 * penalty, rtol=1e-6)
    np.testing.assert_allclose(metrics["logsumexp"], 0.5 * (row0 + row1), rtol=1e-6)
    assert metrics["categorical_accuracy"] == 1.0


def test_backward_and_symmetric_infonce_by_hand():
    logits = jnp.array([[1.0, 3.0], [0.0, 2.0]])
    col0, col1 = _lse([1.0, 0.0]), _lse([3.0, 2.0])
    row0, row1 = _lse([1.0, 3.0]), _lse([0.0, 2.0])
    backward = -0.5 * ((1.0 - col0) + (2.0 - col1))
    forward = -0.5 * ((1.0 - row0) + (2.0 - row1))
    loss, _ = losses.contrastive_loss(logits, "backward_infonce", 0.0)
    np.testing.assert_allclose(loss, backward, rtol=1e-6)
    loss, _ = losses.contrastive_loss(logits, "symmetric_infonce", 0.0)
    np.testing.assert_allclose(loss, 0.5 * (forward + backward), rtol=1e-6)
    loss, metrics = losses.contrastive_loss(logits, "forward_infonce", 0.0)
    assert metrics["categorical_accuracy"] == 0.5  # row 0 prefers the wrong goal
    with pytest.raises(ValueError, match="unknown contrastive loss 'nce'"):
        losses.contrastive_loss(logits, "nce")


def test_actor_loss_by_hand_and_alpha_is_not_trained_by_it():
    log_prob, value = jnp.array([-1.0, 0.5]), jnp.array([-2.0, -4.0])
    np.testing.assert_allclose(losses.actor_loss(log_prob, value, jnp.array(0.5)), np.mean([-0.5 + 2.0, 0.25 + 4.0]))
    grad_alpha = jax.grad(lambda a: losses.actor_loss(log_prob, value, a))(jnp.array(0.5))
    assert grad_alpha == 0.0


def test_alpha_loss_direction():
    target = -1.0
    # Entropy (−log π = 3) above the target: gradient descent lowers α.
    grad = jax.grad(losses.alpha_loss)(jnp.array(0.0), jnp.full(4, -3.0), target)
    assert grad > 0
    np.testing.assert_allclose(losses.alpha_loss(jnp.array(0.0), jnp.full(4, -3.0), target), 3.0 - target)
    # Entropy below the target: α goes up.
    assert jax.grad(losses.alpha_loss)(jnp.array(0.0), jnp.full(4, 2.0), target) < 0
