"""Pieces several algorithms share: the sampling inference function, the optimiser step with the
hyperspherical projection, Polyak targets, the clipped double-Q TD target and the twin-Q agent base of
SAC and TD3 (with its defaults, parameter count and critic FLOPs)."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from rlscale.agents.registry import ActFn, Scaled
from rlscale.data.buffer import (
    ReplayBuffer,
    TDTransitions,
    relabel_td_window,
    sample_relabelled,
)
from rlscale.networks import (
    Actor,
    TwinQ,
    act,
    block_norms,
    project_weights,
    trunk_param_count,
)

if TYPE_CHECKING:
    from rlscale.config import TrainConfig
    from rlscale.envs.base import TaskSpec


def sampling_inference_fn(cfg: "TrainConfig", actor: Actor, state_size: int) -> ActFn:
    """A tanh-Gaussian actor's acting: a sample with a key, tanh(mean) without (``rlscale.networks.act``)."""
    del cfg
    return lambda actor_params, obs, key: act(actor, actor_params, obs, state_size, key)


def adam_step(optimizer, grads, opt_state, params, trunk_cfg):
    """One optimiser step, then the hyperspherical projection (a no-op for the other norms)."""
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return project_weights(optax.apply_updates(params, updates), trunk_cfg), opt_state


def polyak(target, online, tau: float):
    """Target networks moved a fraction ``tau`` toward the online ones."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def td_target(reward: jax.Array, terminated: jax.Array, next_q1: jax.Array, next_q2: jax.Array, gamma: float,
              next_entropy_term: jax.Array | float = 0.0) -> jax.Array:
    """``r + γ (1 − terminated) (min(Q1', Q2') − α log π(a'|s', g))``, the clipped double-Q target (TD3: no
    entropy term).

    A terminal next state (the robot fell) has value 0, so its transition does not bootstrap; an episode
    cut by the time limit bootstraps, as the state would have continued (``rlscale.data.buffer.EpisodeEnds``)."""
    bootstrap = gamma * (jnp.minimum(next_q1, next_q2) - next_entropy_term)
    # where, not a product: a terminal state's next-state values, whatever they are, never reach the target.
    return jax.lax.stop_gradient(reward + jnp.where(terminated, 0.0, bootstrap))


# What the TD baselines change of the defaults. Deep TD critics are less stable than the contrastive one: a
# smaller step; JaxGCRL's SAC uses 1e-4 and batch 256. Twice the task's SGD steps: TD learning propagates
# the sparse reward one step per update.
TD_DEFAULTS: dict[str, Any] = {
    "actor_lr": 1e-4, "critic_lr": 1e-4, "alpha_lr": 1e-4, "batch_size": 256, "sgd_steps_per_collection": Scaled(2),
}


def actor_param_count(cfg: "TrainConfig", spec: "TaskSpec") -> int:
    """The tanh-Gaussian actor's parameters (mean and log-std heads) on ``state ⊕ goal``."""
    return trunk_param_count(spec.obs_size, 2 * spec.action_size, cfg.resolved_actor_depth,
                             width=cfg.width, norm=cfg.norm, residual=cfg.residual)


def twin_q_param_count(cfg: "TrainConfig", spec: "TaskSpec") -> int:
    """The actor and the two Q trunks on ``(s, a, g)`` of SAC and TD3 (target copies not counted)."""
    q = trunk_param_count(spec.obs_size + spec.action_size, 1, cfg.resolved_critic_depth,
                          width=cfg.width, norm=cfg.norm, residual=cfg.residual)
    return actor_param_count(cfg, spec) + 2 * q


@dataclasses.dataclass(frozen=True)
class TDAgent:
    """What SAC and TD3 share: the actor, the twin Q critic and the TD minibatches of ``rlscale.data.buffer``."""

    needs_next_state: ClassVar[bool] = True

    actor: Actor
    critic: TwinQ
    actor_optimizer: optax.GradientTransformation
    critic_optimizer: optax.GradientTransformation
    state_size: int
    goal_size: int
    action_size: int
    batch_size: int
    window: int
    gamma: float
    tau: float
    relabel_probability: float
    goal_indices: tuple[int, ...]
    success_threshold: float

    @classmethod
    def _fields_of(cls, cfg: "TrainConfig", spec: "TaskSpec") -> dict:
        return dict(
            actor=Actor(cfg.network_trunk("actor"), spec.action_size),
            critic=TwinQ(cfg.network_trunk("critic")),
            actor_optimizer=optax.adam(cfg.actor_lr),
            critic_optimizer=optax.adam(cfg.critic_lr),
            state_size=spec.state_size,
            goal_size=spec.goal_size,
            action_size=spec.action_size,
            batch_size=cfg.batch_size,
            window=cfg.resolved_window_length,
            gamma=cfg.gamma,
            tau=cfg.tau,
            relabel_probability=cfg.relabel_probability,
            goal_indices=spec.goal_indices,
            success_threshold=spec.success_threshold,
        )

    def _init_networks(self, key: jax.Array):
        actor_key, critic_key = jax.random.split(key)
        state, goal = jnp.zeros((1, self.state_size)), jnp.zeros((1, self.goal_size))
        actor_params = self.actor.init(actor_key, state, goal)["params"]
        critic_params = self.critic.init(critic_key, state, jnp.zeros((1, self.action_size)), goal)["params"]
        return actor_params, critic_params

    def q_values(self, critic_params, state, action, goal):
        return self.critic.apply({"params": critic_params}, state, action, goal)

    def sample_minibatches(self, buffer: ReplayBuffer, key: jax.Array, num_batches: int) -> tuple[TDTransitions, jax.Array]:
        """Minibatches of ``(s, a, s', g, r, terminated)`` (``rlscale.data.buffer.relabel_td_window``)."""
        if buffer.ends is None:
            raise ValueError("the TD baselines need a replay buffer that keeps episode ends (init_buffer's final_state_size)")
        relabel = functools.partial(
            relabel_td_window, relabel_probability=self.relabel_probability, state_size=self.state_size,
            goal_indices=self.goal_indices, success_threshold=self.success_threshold,
        )
        return sample_relabelled(buffer, key, relabel, num_batches=num_batches, batch_size=self.batch_size, window=self.window)

    def trained_params(self, learner):
        """The online actor and twin critic (the target copies are not counted)."""
        return learner.actor_params, learner.critic_params

    def block_norms(self, learner, batch: TDTransitions) -> dict[str, jax.Array]:
        actor = block_norms(self.actor, learner.actor_params, batch.state, batch.goal)
        critic = block_norms(self.critic, learner.critic_params, batch.state, batch.action, batch.goal)
        return {"actor": actor["trunk"], "critic_q1": critic["q1"], "critic_q2": critic["q2"]}

    def _critic_step(self, learner, batch: TDTransitions, target: jax.Array):
        """The twin critic's regression onto ``target``: ``(critic_params, critic_opt, metrics)``."""

        def loss_fn(params):
            q1, q2 = self.q_values(params, batch.state, batch.action, batch.goal)
            return jnp.mean(jnp.square(q1 - target)) + jnp.mean(jnp.square(q2 - target)), q1

        (loss, q1), grads = jax.value_and_grad(loss_fn, has_aux=True)(learner.critic_params)
        params, opt = adam_step(self.critic_optimizer, grads, learner.critic_opt, learner.critic_params, self.critic.cfg)
        return params, opt, {"critic_loss": loss, "q_mean": jnp.mean(q1), "reward_mean": jnp.mean(batch.reward)}


def td_flops(cfg: "TrainConfig", spec: "TaskSpec", actor_q_passes: int, policy_delay: int = 1) -> dict[str, int]:
    """Matmul FLOPs of one SAC or TD3 step (docs/method.md#baselines; the rules of ``rlscale.flops``), with
    ``P_q`` the Dense weights of one Q trunk on ``(s, a, g)`` (``q = s + a + g``; both Q trunks run on every row):

    * the critic loss ``B (2 P_a + 4 P_q + 12 P_q − 4 q w)``: the actor (or TD3's target actor) on s' and
      the two target Q forward; the two online Q trained;
    * the actor loss ``B (6 P_a − 2 (s + g) w + 2 k P_q)``, the Q trunks forward and input gradients down to
      the action: k = 4 for SAC's two, 2 for TD3's Q1 only; TD3's once every ``policy_delay`` steps
      (``lax.cond``; counted as its average share of a step).

    Derived, not checked against XLA's count as CRL's is."""
    from rlscale.flops import input_sizes, trunk_matmul_weights

    sizes = input_sizes(cfg, spec)
    batch, w = cfg.batch_size, cfg.width
    p_a = trunk_matmul_weights(sizes.sg, 2 * spec.action_size, cfg.resolved_actor_depth, w)
    p_q = trunk_matmul_weights(sizes.sag, 1, cfg.resolved_critic_depth, w)
    actor_loss = batch * (6 * p_a - 2 * sizes.sg * w + 2 * actor_q_passes * p_q) // policy_delay
    critic_loss = batch * (2 * p_a + 16 * p_q - 4 * sizes.sag * w)
    return {"total": actor_loss + critic_loss, "actor_loss": actor_loss, "critic_loss": critic_loss}


# The actor and temperature losses of CRL and SAC (docs/method.md#objective).
def actor_loss(log_prob: jax.Array, critic_value: jax.Array, alpha: jax.Array) -> jax.Array:
    """mean(α · log π(a|s, g) − f(s, a, g)), a ~ π reparameterised, g the relabelled goal."""
    return jnp.mean(jax.lax.stop_gradient(alpha) * log_prob - critic_value)


def alpha_loss(log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float) -> jax.Array:
    """SAC temperature loss: α is pushed up when the entropy −log π falls below the target."""
    return jnp.exp(log_alpha) * jnp.mean(jax.lax.stop_gradient(-log_prob - target_entropy))
