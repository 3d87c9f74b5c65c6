"""Matrix-product FLOPs of one SGD step (``sgd_step`` of an agent), counted from the Dense layers' weights.

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

Each algorithm counts its own step by these rules (``Algorithm.sgd_step_flops`` in ``rlscale/agents/``;
``rlscale.sizes.sgd_step_flops`` asks the registry for a config's): CRL's
above (``rlscale.agents.crl``), SAC's and TD3's twin-Q steps (``rlscale.agents.common.td_flops``) and GCSL's
actor-only step (``rlscale.agents.gcsl``); the baselines' are derived, not checked against XLA's count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from rlscale.envs.base import TaskSpec
    from rlscale.config import TrainConfig


def trunk_matmul_weights(in_size: int, out_size: int, depth: int, width: int) -> int:
    """Kernel weights of one trunk's Dense layers: input unit, ``depth`` residual units, output layer."""
    return in_size * width + depth * width * width + width * out_size


class InputSizes(NamedTuple):
    """What the first layer of each trunk reads: ``s + g`` (actor), ``s + a`` (φ), ``g`` (ψ), ``s + a + g``
    (a Q trunk); with ``--norm hyperspherical`` one more each (its input units also read a constant)."""

    sg: int
    sa: int
    g: int
    sag: int


def input_sizes(cfg: "TrainConfig", spec: "TaskSpec") -> InputSizes:
    shift = 1 if cfg.norm == "hyperspherical" else 0
    s, g, a = spec.state_size, spec.goal_size, spec.action_size
    return InputSizes(sg=s + g + shift, sa=s + a + shift, g=g + shift, sag=s + a + g + shift)


def cost_analysis_flops(analysis) -> float | None:
    """The ``flops`` of a ``cost_analysis()``: a dict in recent JAX, a list of per-module dicts in older ones."""
    if analysis is None:
        return None
    if isinstance(analysis, (list, tuple)):
        values = [a.get("flops") for a in analysis if isinstance(a, dict) and a.get("flops") is not None]
        return float(sum(values)) if values else None
    value = analysis.get("flops")
    return float(value) if value is not None else None
