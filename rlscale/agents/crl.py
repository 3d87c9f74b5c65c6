"""Contrastive RL (``--algo crl``, the default): networks, learner state, minibatches and one SGD step
(docs/method.md#objective), its parameter count and FLOPs.

Everything here is a pure function of its arguments; ``sgd_step`` updates the actor and α first, then
the critic, on the same minibatch.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlscale.agents import common, contrastive
from rlscale.agents.common import actor_param_count, sampling_inference_fn
from rlscale.agents.registry import COLLECTS_OR_DATASET, Algorithm, register
from rlscale.data.buffer import ReplayBuffer, Transitions, sample_minibatches
from rlscale.networks import (
    Actor,
    Critic,
    block_norms,
    critic_log_temperature,
    project_weights,
    sample_action,
    trunk_param_count,
)

if TYPE_CHECKING:
    from rlscale.config import TrainConfig
    from rlscale.envs.base import TaskSpec


@struct.dataclass
class Learner:
    actor_params: dict
    critic_params: dict
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState


@dataclasses.dataclass(frozen=True)
class CRL:
    """The CRL agent for one (config, task): the ``rlscale.agents.Agent`` interface."""

    needs_next_state: ClassVar[bool] = False  # goals are future states of the window: no next state needed

    actor: Actor
    critic: Critic
    actor_optimizer: optax.GradientTransformation
    critic_optimizer: optax.GradientTransformation
    alpha_optimizer: optax.GradientTransformation
    state_size: int
    goal_size: int
    action_size: int
    target_entropy: float
    energy: str
    contrastive_loss: str
    logsumexp_penalty: float
    batch_size: int
    window: int
    gamma: float
    goal_indices: tuple[int, ...]

    @classmethod
    def build(cls, cfg: "TrainConfig", spec: "TaskSpec") -> "CRL":
        return cls(
            actor=Actor(cfg.network_trunk("actor"), spec.action_size),
            critic=Critic(cfg.network_trunk("critic"), cfg.repr_dim, cfg.energy),
            actor_optimizer=optax.adam(cfg.actor_lr),
            critic_optimizer=optax.adam(cfg.critic_lr),
            alpha_optimizer=optax.adam(cfg.alpha_lr),
            state_size=spec.state_size,
            goal_size=spec.goal_size,
            action_size=spec.action_size,
            target_entropy=cfg.target_entropy_per_action_dim * spec.action_size,
            energy=cfg.energy,
            contrastive_loss=cfg.contrastive_loss,
            logsumexp_penalty=cfg.logsumexp_penalty,
            batch_size=cfg.batch_size,
            window=cfg.resolved_window_length,
            gamma=cfg.gamma,
            goal_indices=spec.goal_indices,
        )

    def init(self, key: jax.Array, initial_alpha: float = 1.0) -> Learner:
        actor_key, critic_key = jax.random.split(key)
        state = jnp.zeros((1, self.state_size))
        goal = jnp.zeros((1, self.goal_size))
        action = jnp.zeros((1, self.action_size))
        actor_params = self.actor.init(actor_key, state, goal)["params"]
        critic_params = self.critic.init(critic_key, state, action, goal)["params"]
        log_alpha = jnp.asarray(jnp.log(initial_alpha), jnp.float32)
        return Learner(
            actor_params=actor_params,
            critic_params=critic_params,
            log_alpha=log_alpha,
            actor_opt=self.actor_optimizer.init(actor_params),
            critic_opt=self.critic_optimizer.init(critic_params),
            alpha_opt=self.alpha_optimizer.init(log_alpha),
        )

    # --- acting ---

    def act(self, actor_params, obs: jax.Array, key: jax.Array | None) -> jax.Array:
        """Action for observations ``state ⊕ goal``: a sample with a key, tanh(mean) without (the
        inference function that a loaded checkpoint uses too)."""
        return sampling_inference_fn(None, self.actor, self.state_size)(actor_params, obs, key)

    # --- learning ---

    def sample_minibatches(self, buffer: ReplayBuffer, key: jax.Array, num_batches: int) -> tuple[Transitions, jax.Array]:
        """Minibatches of ``(s, a, g)``, g a future state with P ∝ γ^offset (``rlscale.data.buffer.sample_minibatches``)."""
        return sample_minibatches(buffer, key, num_batches=num_batches, batch_size=self.batch_size, window=self.window,
                                  gamma=self.gamma, state_size=self.state_size, goal_indices=self.goal_indices)

    def trained_params(self, learner: Learner):
        """The parameters the run trains (what its parameter count counts)."""
        return learner.actor_params, learner.critic_params

    def block_norms(self, learner: Learner, batch: Transitions) -> dict[str, jax.Array]:
        """Each residual block's mean output norm on ``batch``: the actor and the critic's two encoders."""
        actor = block_norms(self.actor, learner.actor_params, batch.state, batch.goal)
        critic = block_norms(self.critic, learner.critic_params, batch.state, batch.action, batch.goal)
        return {"actor": actor["trunk"], "critic_sa": critic["sa_encoder"], "critic_g": critic["g_encoder"]}

    def critic_values(self, critic_params, state, action, goal):
        sa_repr, g_repr = self.critic.apply({"params": critic_params}, state, action, goal)
        return sa_repr, g_repr

    def critic_loss(self, critic_params, batch: Transitions):
        sa_repr, g_repr = self.critic_values(critic_params, batch.state, batch.action, batch.goal)
        logits = contrastive.energy(sa_repr, g_repr, self.energy, critic_log_temperature(critic_params))
        return contrastive.contrastive_loss(logits, self.contrastive_loss, self.logsumexp_penalty)

    def actor_loss(self, actor_params, critic_params, log_alpha, batch: Transitions, key):
        mean, log_std = self.actor.apply({"params": actor_params}, batch.state, batch.goal)
        action, log_prob = sample_action(mean, log_std, key)
        sa_repr, g_repr = self.critic_values(critic_params, batch.state, action, batch.goal)
        value = contrastive.pair_energy(sa_repr, g_repr, self.energy, critic_log_temperature(critic_params))
        loss = common.actor_loss(log_prob, value, jnp.exp(log_alpha))
        return loss, log_prob

    def sgd_step(self, learner: Learner, batch: Transitions, key: jax.Array) -> tuple[Learner, dict]:
        (actor_loss, log_prob), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            learner.actor_params, learner.critic_params, learner.log_alpha, batch, key
        )
        alpha_loss, alpha_grad = jax.value_and_grad(common.alpha_loss)(learner.log_alpha, log_prob, self.target_entropy)
        updates, actor_opt = self.actor_optimizer.update(actor_grads, learner.actor_opt, learner.actor_params)
        actor_params = project_weights(optax.apply_updates(learner.actor_params, updates), self.actor.cfg)
        updates, alpha_opt = self.alpha_optimizer.update(alpha_grad, learner.alpha_opt, learner.log_alpha)
        log_alpha = optax.apply_updates(learner.log_alpha, updates)

        (_, critic_metrics), critic_grads = jax.value_and_grad(self.critic_loss, has_aux=True)(
            learner.critic_params, batch
        )
        updates, critic_opt = self.critic_optimizer.update(critic_grads, learner.critic_opt, learner.critic_params)
        critic_params = project_weights(optax.apply_updates(learner.critic_params, updates), self.critic.cfg)

        metrics = {
            **critic_metrics,
            "actor_loss": actor_loss,
            "alpha_loss": alpha_loss,
            "alpha": jnp.exp(log_alpha),
            "entropy": -jnp.mean(log_prob),
        }
        new = Learner(actor_params, critic_params, log_alpha, actor_opt, critic_opt, alpha_opt)
        return new, metrics


def param_count(cfg: "TrainConfig", spec: "TaskSpec") -> int:
    """The actor, the critic's φ(s, a) and ψ(g) encoders and the cosine energy's temperature."""
    shape = {"width": cfg.width, "norm": cfg.norm, "residual": cfg.residual}
    sa = trunk_param_count(spec.state_size + spec.action_size, cfg.repr_dim, cfg.resolved_critic_depth, **shape)
    g = trunk_param_count(spec.goal_size, cfg.repr_dim, cfg.resolved_critic_depth, **shape)
    temperature = 1 if cfg.energy == "cosine" else 0  # the critic's log_temperature
    return actor_param_count(cfg, spec) + sa + g + temperature


def sgd_step_flops(cfg: "TrainConfig", spec: "TaskSpec") -> dict[str, int]:
    """Matmul FLOPs of one ``CRL.sgd_step`` (derived in ``rlscale.flops``, checked against XLA's count by
    ``tests/test_flops.py``): ``B (6 P_a + 10 P_φ + 8 P_ψ) − 2 B w (2 s + 2 g + a)``."""
    from rlscale.flops import input_sizes, trunk_matmul_weights

    sizes, batch, w = input_sizes(cfg, spec), cfg.batch_size, cfg.width
    p_a = trunk_matmul_weights(sizes.sg, 2 * spec.action_size, cfg.resolved_actor_depth, w)
    p_sa = trunk_matmul_weights(sizes.sa, cfg.repr_dim, cfg.resolved_critic_depth, w)
    p_g = trunk_matmul_weights(sizes.g, cfg.repr_dim, cfg.resolved_critic_depth, w)
    actor_loss = batch * (6 * p_a - 2 * sizes.sg * w + 4 * p_sa + 2 * p_g)
    critic_loss = batch * (6 * p_sa - 2 * sizes.sa * w + 6 * p_g - 2 * sizes.g * w)
    return {"total": actor_loss + critic_loss, "actor_loss": actor_loss, "critic_loss": critic_loss}


ALGORITHM = register(Algorithm(
    name="crl", agent=CRL, param_count=param_count, sgd_step_flops=sgd_step_flops,
    make_inference_fn=sampling_inference_fn,
    defaults={},  # CRL changes none of the paper's defaults: its runs and run ids stay as they were
    data=COLLECTS_OR_DATASET, collector_experiment=True,
    run_name_tag="",  # CRL runs keep the names they had before --algo existed
    dataset_run_tag="_offline",  # offline CRL beside the online runs of the same options
))
