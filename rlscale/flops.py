"""Matrix-product FLOPs of one SGD step (``Agent.sgd_step``), counted from the Dense layers' weights.

A Dense layer of ``m`` weights (kernel ``in × out``) on ``B`` rows costs ``2 B m`` FLOPs forward,
``2 B m`` for the gradient with respect to its weights and ``2 B m`` for the gradient with respect
to its input; a backward pass does only the products something downstream needs. With ``P_a``,
``P_φ``, ``P_ψ`` the Dense weights of the actor, φ(s, a) and ψ(g) trunks (``trunk_matmul_weights``)
and ``s``, ``g``, ``a``, ``w`` the state, goal and action sizes and the width, one step does:

* actor loss, differentiated with respect to the actor's parameters only:
  the actor forward, weight and input gradients (``6 P_a``) except the first layer's input
  gradient (its input is data: ``- 2 (s + g) w``); φ(s, π(s, g)) forward and input gradients only,
  down to the action, its parameters being constant here (``4 P_φ``; the first layer's input
  gradient is one product with the whole ``(s + a) × w`` kernel); ψ(g) forward only, it does not
  depend on the actor (``2 P_ψ``; it is computed again in the critic loss, XLA keeps both);
* critic loss: φ and ψ forward and weight gradients on their B rows each, input gradients except the
  first layers' (``6 P_φ - 2 (s + a) w + 6 P_ψ - 2 g w``).

So ``FLOPs = B (6 P_a + 10 P_φ + 8 P_ψ) - 2 B w (2 s + 2 g + a)`` (with ``--norm hyperspherical`` every
input unit reads one more input, the shift: ``s + g``, ``s + a`` and ``g`` are one larger, and the last term
is ``2 B w (2 s + 2 g + a + 3)``). Not counted: biases, LayerNorm, the hyperspherical scalings, projections
and interpolations (and its weight projection after the step), activations and residual adds, the tanh-Gaussian sampling, the B × B critic values (the L2 energy is
elementwise, ≈ 3 B² · repr_dim per pass; the dot and cosine energies' B × B × repr_dim products and
mrn's are left out too),
the losses, and the Adam updates (≈ 13 FLOPs a parameter in XLA's count). The dtype of the products
does not change the count. ``tests/test_flops.py`` checks it against XLA's cost analysis of the real
unrolled step.

The baselines (``--algo``, ``rlscale.algorithms``), by the same rules, with ``P_q`` the Dense weights of one
Q trunk on ``(s, a, g)`` (``q = s + a + g``; both Q trunks run on every row):

* SAC: critic loss ``B (2 P_a + 4 P_q + 12 P_q - 4 q w)`` (the actor on s' and the two target Q forward;
  the two online Q trained), actor loss ``B (6 P_a - 2 (s + g) w + 8 P_q)`` (the two Q forward and input
  gradients down to the action);
* TD3: the same critic loss (its target actor in place of the actor), and the actor loss with Q1 only,
  ``B (6 P_a - 2 (s + g) w + 4 P_q)``, once every ``policy_delay`` steps (``lax.cond``; counted as its
  average share of a step);
* GCSL: the actor's forward and backward, ``B (6 P_a - 2 (s + g) w)``.

These three are derived, not checked against XLA's count as CRL's is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlscale.envs.base import TaskSpec
    from rlscale.config import TrainConfig


def trunk_matmul_weights(in_size: int, out_size: int, depth: int, width: int) -> int:
    """Kernel weights of one trunk's Dense layers: input unit, ``depth`` residual units, output layer."""
    return in_size * width + depth * width * width + width * out_size


def sgd_step_flops(cfg: "TrainConfig", spec: "TaskSpec") -> dict[str, int]:
    """Matmul FLOPs of one SGD step of ``cfg.algo`` (module docstring): ``total``, ``actor_loss`` and ``critic_loss``."""
    from rlscale.config import SUPERVISED_ALGORITHMS

    s, g, a, w, batch = spec.state_size, spec.goal_size, spec.action_size, cfg.width, cfg.batch_size
    shift = 1 if cfg.norm == "hyperspherical" else 0  # its input units read the input and a constant
    sag = s + a + g + shift
    sg, sa, g = s + g + shift, s + a + shift, g + shift
    p_a = trunk_matmul_weights(sg, 2 * a, cfg.resolved_actor_depth, w)
    if cfg.algo != "crl":
        p_q = trunk_matmul_weights(sag, 1, cfg.resolved_critic_depth, w)
        actor_training = 6 * p_a - 2 * sg * w
        if cfg.algo in SUPERVISED_ALGORITHMS:
            actor_loss, critic_loss = batch * actor_training, 0
        elif cfg.algo == "td3_her":
            actor_loss = batch * (actor_training + 4 * p_q) // cfg.policy_delay
            critic_loss = batch * (2 * p_a + 16 * p_q - 4 * sag * w)
        else:  # sac, sac_her
            actor_loss = batch * (actor_training + 8 * p_q)
            critic_loss = batch * (2 * p_a + 16 * p_q - 4 * sag * w)
        return {"total": actor_loss + critic_loss, "actor_loss": actor_loss, "critic_loss": critic_loss}
    p_sa = trunk_matmul_weights(sa, cfg.repr_dim, cfg.resolved_critic_depth, w)
    p_g = trunk_matmul_weights(g, cfg.repr_dim, cfg.resolved_critic_depth, w)
    actor_loss = batch * (6 * p_a - 2 * sg * w + 4 * p_sa + 2 * p_g)
    critic_loss = batch * (6 * p_sa - 2 * sa * w + 6 * p_g - 2 * g * w)
    return {"total": actor_loss + critic_loss, "actor_loss": actor_loss, "critic_loss": critic_loss}


def cost_analysis_flops(analysis) -> float | None:
    """The ``flops`` of a ``cost_analysis()``: a dict in recent JAX, a list of per-module dicts in older ones."""
    if analysis is None:
        return None
    if isinstance(analysis, (list, tuple)):
        values = [a.get("flops") for a in analysis if isinstance(a, dict) and a.get("flops") is not None]
        return float(sum(values)) if values else None
    value = analysis.get("flops")
    return float(value) if value is not None else None
