"""Soft actor-critic on the sparse goal reward (``--algo sac``), and with HER relabelling (``--algo sac_her``):
docs/method.md#baselines."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlscale.agents import common
from rlscale.agents.common import (
    TD_DEFAULTS,
    TDAgent,
    adam_step,
    polyak,
    sampling_inference_fn,
    td_flops,
    td_target,
    twin_q_param_count,
)
from rlscale.agents.registry import Algorithm, register
from rlscale.data.buffer import TDTransitions
from rlscale.networks import sample_action

if TYPE_CHECKING:
    from rlscale.config import TrainConfig
    from rlscale.envs.base import TaskSpec


@struct.dataclass
class SACLearner:
    actor_params: dict
    critic_params: dict
    target_critic_params: dict
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState


@dataclasses.dataclass(frozen=True)
class SAC(TDAgent):
    """Soft actor-critic on the sparse goal reward: twin Q, Polyak target critics, α auto-tuned
    (``common.alpha_loss``), the tanh-Gaussian actor of CRL. SAC+HER is SAC with ``relabel_probability`` > 0."""

    alpha_optimizer: optax.GradientTransformation
    target_entropy: float

    @classmethod
    def build(cls, cfg: "TrainConfig", spec: "TaskSpec") -> "SAC":
        return cls(**cls._fields_of(cfg, spec), alpha_optimizer=optax.adam(cfg.alpha_lr),
                   target_entropy=cfg.target_entropy_per_action_dim * spec.action_size)

    def init(self, key: jax.Array, initial_alpha: float = 1.0) -> SACLearner:
        actor_params, critic_params = self._init_networks(key)
        log_alpha = jnp.asarray(jnp.log(initial_alpha), jnp.float32)
        return SACLearner(actor_params, critic_params, critic_params, log_alpha, self.actor_optimizer.init(actor_params),
                          self.critic_optimizer.init(critic_params), self.alpha_optimizer.init(log_alpha))

    def act(self, actor_params, obs: jax.Array, key: jax.Array | None) -> jax.Array:
        """The tanh-Gaussian actor: a sample with a key, tanh(mean) without."""
        return sampling_inference_fn(None, self.actor, self.state_size)(actor_params, obs, key)

    def target(self, learner: SACLearner, batch: TDTransitions, key: jax.Array) -> jax.Array:
        """The soft TD target, a' ~ π(s', g) with its log-probability."""
        mean, log_std = self.actor.apply({"params": learner.actor_params}, batch.next_state, batch.goal)
        next_action, next_log_prob = sample_action(mean, log_std, key)
        next_q1, next_q2 = self.q_values(learner.target_critic_params, batch.next_state, next_action, batch.goal)
        return td_target(batch.reward, batch.terminated, next_q1, next_q2, self.gamma, jnp.exp(learner.log_alpha) * next_log_prob)

    def sgd_step(self, learner: SACLearner, batch: TDTransitions, key: jax.Array) -> tuple[SACLearner, dict]:
        target_key, actor_key = jax.random.split(key)
        critic_params, critic_opt, metrics = self._critic_step(learner, batch, self.target(learner, batch, target_key))

        def actor_loss_fn(actor_params):
            mean, log_std = self.actor.apply({"params": actor_params}, batch.state, batch.goal)
            action, log_prob = sample_action(mean, log_std, actor_key)
            q1, q2 = self.q_values(critic_params, batch.state, action, batch.goal)
            return common.actor_loss(log_prob, jnp.minimum(q1, q2), jnp.exp(learner.log_alpha)), log_prob

        (actor_loss, log_prob), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(learner.actor_params)
        actor_params, actor_opt = adam_step(self.actor_optimizer, grads, learner.actor_opt, learner.actor_params, self.actor.cfg)
        alpha_loss, alpha_grad = jax.value_and_grad(common.alpha_loss)(learner.log_alpha, log_prob, self.target_entropy)
        updates, alpha_opt = self.alpha_optimizer.update(alpha_grad, learner.alpha_opt, learner.log_alpha)
        log_alpha = optax.apply_updates(learner.log_alpha, updates)
        new = SACLearner(actor_params, critic_params, polyak(learner.target_critic_params, critic_params, self.tau),
                         log_alpha, actor_opt, critic_opt, alpha_opt)
        return new, {**metrics, "actor_loss": actor_loss, "alpha_loss": alpha_loss, "alpha": jnp.exp(log_alpha),
                     "entropy": -jnp.mean(log_prob)}


def sgd_step_flops(cfg: "TrainConfig", spec: "TaskSpec") -> dict[str, int]:
    """Its two Q trunks in the actor loss (``rlscale.agents.common.td_flops``)."""
    return td_flops(cfg, spec, actor_q_passes=4)


# SAC's step from the brief tuning (benchmarks/baselines_cpu.md): at depth 4 on the point U-maze 1e-3 scored
# 0.93 where 1e-4 scored 0.16, and it stayed stable at depth 16. The target entropy is SAC's −|A|.
SAC_DEFAULTS = {**TD_DEFAULTS, "actor_lr": 1e-3, "critic_lr": 1e-3, "alpha_lr": 1e-3, "target_entropy_per_action_dim": -1.0}
ALGORITHM = register(Algorithm(
    name="sac", agent=SAC, param_count=twin_q_param_count, sgd_step_flops=sgd_step_flops,
    make_inference_fn=sampling_inference_fn, defaults={**SAC_DEFAULTS, "relabel_probability": 0.0},
))
# SAC+HER: SAC whose transitions get a future state of their trajectory as goal with probability 0.8.
HER_ALGORITHM = register(dataclasses.replace(ALGORITHM, name="sac_her", defaults={**SAC_DEFAULTS, "relabel_probability": 0.8}))
