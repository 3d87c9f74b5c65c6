"""The CRL agent: networks, parameters, optimisers, its minibatches and one SGD step
(docs/method.md#objective); one implementation of the learner interface of ``rlscale.algorithms``.

Everything here is a pure function of its arguments; ``sgd_step`` updates the actor and α first, then
the critic, on the same minibatch.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlscale.envs.base import TaskSpec
from rlscale import losses
from rlscale.buffer import ReplayBuffer, Transitions, sample_minibatches
from rlscale.config import TrainConfig
from rlscale.networks import Actor, Critic, act, block_norms, critic_log_temperature, project_weights, sample_action


@struct.dataclass
class Learner:
    actor_params: dict
    critic_params: dict
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState


@dataclasses.dataclass(frozen=True)
class Agent:
    """Static structure of the agent for one (config, task) pair."""

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
    def build(cls, cfg: TrainConfig, spec: TaskSpec) -> "Agent":
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
        """Action for observations ``state ⊕ goal``: stochastic with a key, tanh(mean) without
        (``rlscale.networks.act``)."""
        return act(self.actor, actor_params, obs, self.state_size, key)

    # --- learning ---

    def sample_minibatches(self, buffer: ReplayBuffer, key: jax.Array, num_batches: int) -> tuple[Transitions, jax.Array]:
        """Minibatches of ``(s, a, g)``, g a future state with P ∝ γ^offset (``rlscale.buffer.sample_minibatches``)."""
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
        logits = losses.energy(sa_repr, g_repr, self.energy, critic_log_temperature(critic_params))
        return losses.contrastive_loss(logits, self.contrastive_loss, self.logsumexp_penalty)

    def actor_loss(self, actor_params, critic_params, log_alpha, batch: Transitions, key):
        mean, log_std = self.actor.apply({"params": actor_params}, batch.state, batch.goal)
        action, log_prob = sample_action(mean, log_std, key)
        sa_repr, g_repr = self.critic_values(critic_params, batch.state, action, batch.goal)
        value = losses.pair_energy(sa_repr, g_repr, self.energy, critic_log_temperature(critic_params))
        loss = losses.actor_loss(log_prob, value, jnp.exp(log_alpha))
        return loss, log_prob

    def sgd_step(self, learner: Learner, batch: Transitions, key: jax.Array) -> tuple[Learner, dict]:
        (actor_loss, log_prob), actor_grads = jax.value_and_grad(self.actor_loss, has_aux=True)(
            learner.actor_params, learner.critic_params, learner.log_alpha, batch, key
        )
        alpha_loss, alpha_grad = jax.value_and_grad(losses.alpha_loss)(learner.log_alpha, log_prob, self.target_entropy)
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
