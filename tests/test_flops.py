"""The matmul FLOPs of one SGD step (rlscale.flops) against XLA's cost analysis of the real step.

XLA counts every operation, so its count is the matmul FLOPs plus elementwise work (LayerNorm, Swish,
sampling, the B × B energies, the losses) plus the Adam updates. The Adam updates are measured
separately (XLA's count of the three optimizer updates on the same parameter trees) and subtracted.
The rest is isolated without modelling it:

* widths: with depth and batch fixed, elementwise work grows like the width and matmuls like its
  square (the residual units' ``w × w`` kernels), so the second difference over three equally spaced
  widths keeps only the matmuls' ``w²`` term;
* input sizes: widening the state and goal changes only the first layers' products (and a few
  concatenations), which tests the first-layer terms (no input gradient where the input is data).

The step is the real ``CRL.sgd_step`` with unrolled, non-rematerialised trunks (``--no-scan-blocks
--no-remat``: XLA counts a scanned loop's body once). XLA's count is taken from the lowered module
(``jit(...).lower(...).cost_analysis()``): the same products as the compiled program (checked on this
step, jax 0.10: the compiled CPU program's ``w²`` coefficient agrees to 1e-5) without compiling
(about 1.5 s a width on one CPU core instead of 6 s).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from rlscale.envs.base import TaskSpec

from rlscale.agents.crl import CRL
from rlscale.config import TrainConfig
from rlscale.data.buffer import Transitions
from rlscale.flops import cost_analysis_flops, trunk_matmul_weights
from rlscale.sizes import sgd_step_flops

BATCH = 64
WIDTHS = (64, 128, 192)  # equally spaced: the second difference of a quadratic is 2 · step² · (w² coefficient)


def spec(state_size: int = 4, goal_size: int = 2) -> TaskSpec:
    return TaskSpec("flops_probe", state_size, tuple(range(goal_size)), 2, 0.5, 50, "flops_probe")


def config(width: int, depth: int = 4, actor_depth: int = 4) -> TrainConfig:
    return TrainConfig(depth=depth, actor_depth=actor_depth, width=width, batch_size=BATCH,
                       scan_blocks=False, remat=False, dtype="float32")


def xla_flops_without_adam(cfg: TrainConfig, task: TaskSpec) -> float:
    """XLA's FLOPs of one ``CRL.sgd_step`` minus XLA's FLOPs of its three Adam updates."""
    agent = CRL.build(cfg, task)
    key = jax.eval_shape(jax.random.PRNGKey, 0)
    learner = jax.eval_shape(agent.init, key)
    rows = lambda size: jax.ShapeDtypeStruct((BATCH, size), jnp.float32)  # noqa: E731
    batch = Transitions(state=rows(task.state_size), action=rows(task.action_size), goal=rows(task.goal_size))
    step = cost_analysis_flops(jax.jit(agent.sgd_step).lower(learner, batch, key).cost_analysis())

    def adam_updates(learner):
        out = []
        for opt, params, state in ((agent.actor_optimizer, learner.actor_params, learner.actor_opt),
                                   (agent.critic_optimizer, learner.critic_params, learner.critic_opt),
                                   (agent.alpha_optimizer, learner.log_alpha, learner.alpha_opt)):
            updates, state = opt.update(params, state, params)  # gradients shaped like the parameters
            out.append((optax.apply_updates(params, updates), state))
        return out

    adam = cost_analysis_flops(jax.jit(adam_updates).lower(learner).cost_analysis())
    assert step is not None and adam is not None, "no FLOPs in XLA's cost analysis"
    return step - adam


def second_difference(values: list[float]) -> float:
    return values[2] - 2 * values[1] + values[0]


def wrong_twelve(cfg: TrainConfig, task: TaskSpec) -> int:
    """The formula that rlscale.analysis.sweeps used: φ forward and full backward in the actor loss too (12 P_φ)."""
    p_sa = trunk_matmul_weights(task.state_size + task.action_size, cfg.repr_dim, cfg.resolved_critic_depth, cfg.width)
    return sgd_step_flops(cfg, task)["total"] + 2 * cfg.batch_size * p_sa


def no_first_layer_correction(cfg: TrainConfig, task: TaskSpec) -> int:
    """B (6 P_a + 10 P_φ + 8 P_ψ): counts the first layers' input gradients, which nothing needs."""
    s, g, a, w = task.state_size, task.goal_size, task.action_size, cfg.width
    return sgd_step_flops(cfg, task)["total"] + 2 * cfg.batch_size * w * (2 * s + 2 * g + a)


def test_sgd_step_flops_match_xla():
    task = spec()
    xla = [xla_flops_without_adam(config(w), task) for w in WIDTHS]
    measured = second_difference(xla)
    formula = second_difference([sgd_step_flops(config(w), task)["total"] for w in WIDTHS])
    wrong = second_difference([wrong_twelve(config(w), task) for w in WIDTHS])
    # Matmuls are the only w² work left once Adam is subtracted (measured: relative error 1e-6, float
    # rounding); 12 P_φ is 8 % above.
    assert measured == pytest.approx(formula, rel=0.002), (measured, formula)
    assert wrong != pytest.approx(measured, rel=0.002), (wrong, measured)
    # The matmuls are part of all the work (the rest: 4-17 % here, shrinking with the width).
    assert all(x > sgd_step_flops(config(w), task)["total"] for x, w in zip(xla, WIDTHS))

    # The first layers: per extra input and row, 2 w FLOPs in each forward pass and each gradient that
    # is done: a state input 12 w (actor forward and weight gradient, φ forward and input gradient in
    # the actor loss, φ forward and weight gradient in the critic loss), a goal input 10 w (actor 4 w,
    # ψ forward 2 w, ψ forward and weight gradient 4 w). The elementwise work they add (concatenations)
    # is 0 in XLA's count (measured: equal). Counting the input gradients too would be 16 w and 14 w.
    wide = spec(state_size=36, goal_size=8)
    delta = xla_flops_without_adam(config(128), wide) - xla[1]
    delta_formula = sgd_step_flops(config(128), wide)["total"] - sgd_step_flops(config(128), task)["total"]
    delta_wrong = no_first_layer_correction(config(128), wide) - no_first_layer_correction(config(128), task)
    assert delta == pytest.approx(delta_formula, rel=0.01), (delta, delta_formula)
    assert delta_wrong != pytest.approx(delta, rel=0.01), (delta_wrong, delta)
