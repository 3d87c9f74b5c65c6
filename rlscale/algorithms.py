"""The learners the one trainer runs (``--algo``; docs/method.md#baselines): CRL (``rlscale.agent``) and the
baselines SAC, SAC+HER, TD3+HER, GCSL and GCBC, every network a trunk of ``rlscale.networks``.

``build(cfg, spec)`` returns the algorithm's static part, a frozen dataclass with:

* ``needs_next_state``: whether its minibatches pair a step with its next state, so that the buffer
  keeps what the auto-reset overwrites (``rlscale.buffer.EpisodeEnds``): the TD baselines do;
* ``init(key, initial_alpha) -> learner``: a pytree holding ``actor_params`` (a ``networks.Actor``: it
  acts in training, in evaluation and from a checkpoint) and whatever else the algorithm trains;
* ``act(actor_params, obs, key)``: the exploring action with a key, the deterministic tanh(mean) without;
* ``sample_minibatches(buffer, key, num_batches) -> (batches, resampled_fraction)``: its minibatches;
* ``sgd_step(learner, batch, key) -> (learner, metrics)``: one update;
* ``trained_params(learner)`` (what the parameter count counts) and ``block_norms(learner, batch)``.

``rlscale.train.Trainer`` collects, inserts, samples and scans ``sgd_step`` the same way for all of them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlscale import losses
from rlscale.acting import exploring_act
from rlscale.agent import Agent
from rlscale.buffer import ReplayBuffer, TDTransitions, Transitions, relabel_td_window, sample_relabelled
from rlscale.config import ALGORITHMS, TrainConfig
from rlscale.envs.base import TaskSpec
from rlscale.networks import Actor, TwinQ, act, action_log_prob, block_norms, project_weights, sample_action


def polyak(target, online, tau: float):
    """Target networks moved a fraction ``tau`` toward the online ones."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def td_target(reward: jax.Array, terminated: jax.Array, next_q1: jax.Array, next_q2: jax.Array, gamma: float,
              next_entropy_term: jax.Array | float = 0.0) -> jax.Array:
    """``r + γ (1 − terminated) (min(Q1', Q2') − α log π(a'|s', g))``, the clipped double-Q target (TD3: no
    entropy term).

    A terminal next state (the robot fell) has value 0, so its transition does not bootstrap; an episode
    cut by the time limit bootstraps, as the state would have continued (``rlscale.buffer.EpisodeEnds``)."""
    bootstrap = gamma * (jnp.minimum(next_q1, next_q2) - next_entropy_term)
    # where, not a product: a terminal state's next-state values, whatever they are, never reach the target.
    return jax.lax.stop_gradient(reward + jnp.where(terminated, 0.0, bootstrap))


def smoothed_target_action(mean: jax.Array, key: jax.Array, noise: float, noise_clip: float) -> jax.Array:
    """TD3's target policy smoothing: tanh(mean) plus Gaussian noise clipped to ±``noise_clip``, in [-1, 1]."""
    eps = jnp.clip(noise * jax.random.normal(key, mean.shape, mean.dtype), -noise_clip, noise_clip)
    return jnp.clip(jnp.tanh(mean) + eps, -1.0, 1.0)


def _adam_step(optimizer, grads, opt_state, params, trunk_cfg):
    """One optimiser step, then the hyperspherical projection (a no-op for the other norms)."""
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return project_weights(optax.apply_updates(params, updates), trunk_cfg), opt_state


@dataclasses.dataclass(frozen=True)
class _TDAgent:
    """What SAC and TD3 share: the actor, the twin Q critic and the TD minibatches of ``rlscale.buffer``."""

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
    def _fields_of(cls, cfg: TrainConfig, spec: TaskSpec) -> dict:
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
        """Minibatches of ``(s, a, s', g, r, terminated)`` (``rlscale.buffer.relabel_td_window``)."""
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
        params, opt = _adam_step(self.critic_optimizer, grads, learner.critic_opt, learner.critic_params, self.critic.cfg)
        return params, opt, {"critic_loss": loss, "q_mean": jnp.mean(q1), "reward_mean": jnp.mean(batch.reward)}


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
class SAC(_TDAgent):
    """Soft actor-critic on the sparse goal reward: twin Q, Polyak target critics, α auto-tuned
    (``losses.alpha_loss``), the tanh-Gaussian actor of CRL. SAC+HER is SAC with ``relabel_probability`` > 0."""

    alpha_optimizer: optax.GradientTransformation
    target_entropy: float

    @classmethod
    def build(cls, cfg: TrainConfig, spec: TaskSpec) -> "SAC":
        return cls(**cls._fields_of(cfg, spec), alpha_optimizer=optax.adam(cfg.alpha_lr),
                   target_entropy=cfg.target_entropy_per_action_dim * spec.action_size)

    def init(self, key: jax.Array, initial_alpha: float = 1.0) -> SACLearner:
        actor_params, critic_params = self._init_networks(key)
        log_alpha = jnp.asarray(jnp.log(initial_alpha), jnp.float32)
        return SACLearner(actor_params, critic_params, critic_params, log_alpha, self.actor_optimizer.init(actor_params),
                          self.critic_optimizer.init(critic_params), self.alpha_optimizer.init(log_alpha))

    act = Agent.act  # the tanh-Gaussian actor: a sample with a key, tanh(mean) without

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
            return losses.actor_loss(log_prob, jnp.minimum(q1, q2), jnp.exp(learner.log_alpha)), log_prob

        (actor_loss, log_prob), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(learner.actor_params)
        actor_params, actor_opt = _adam_step(self.actor_optimizer, grads, learner.actor_opt, learner.actor_params, self.actor.cfg)
        alpha_loss, alpha_grad = jax.value_and_grad(losses.alpha_loss)(learner.log_alpha, log_prob, self.target_entropy)
        updates, alpha_opt = self.alpha_optimizer.update(alpha_grad, learner.alpha_opt, learner.log_alpha)
        log_alpha = optax.apply_updates(learner.log_alpha, updates)
        new = SACLearner(actor_params, critic_params, polyak(learner.target_critic_params, critic_params, self.tau),
                         log_alpha, actor_opt, critic_opt, alpha_opt)
        return new, {**metrics, "actor_loss": actor_loss, "alpha_loss": alpha_loss, "alpha": jnp.exp(log_alpha),
                     "entropy": -jnp.mean(log_prob)}


@struct.dataclass
class TD3Learner:
    actor_params: dict
    critic_params: dict
    target_actor_params: dict
    target_critic_params: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    step: jax.Array  # critic updates done; the actor and targets move when (step + 1) % policy_delay == 0


@dataclasses.dataclass(frozen=True)
class TD3(_TDAgent):
    """TD3 (with HER relabelling by default): deterministic actor tanh(mean) of the ``Actor``'s mean head,
    twin Q, target policy smoothing, actor and Polyak target updates every ``policy_delay`` critic updates,
    Gaussian exploration noise when collecting."""

    policy_delay: int
    exploration_noise: float
    target_noise: float
    target_noise_clip: float

    @classmethod
    def build(cls, cfg: TrainConfig, spec: TaskSpec) -> "TD3":
        return cls(**cls._fields_of(cfg, spec), policy_delay=cfg.policy_delay, exploration_noise=cfg.exploration_noise,
                   target_noise=cfg.target_noise, target_noise_clip=cfg.target_noise_clip)

    def init(self, key: jax.Array, initial_alpha: float = 1.0) -> TD3Learner:
        del initial_alpha  # TD3 has no entropy temperature
        actor_params, critic_params = self._init_networks(key)
        return TD3Learner(actor_params, critic_params, actor_params, critic_params, self.actor_optimizer.init(actor_params),
                          self.critic_optimizer.init(critic_params), jnp.zeros((), jnp.int32))

    def act(self, actor_params, obs: jax.Array, key: jax.Array | None) -> jax.Array:
        return exploring_act(self.actor, actor_params, obs, self.state_size, key, self.exploration_noise)

    def target(self, learner: TD3Learner, batch: TDTransitions, key: jax.Array) -> jax.Array:
        mean, _ = self.actor.apply({"params": learner.target_actor_params}, batch.next_state, batch.goal)
        next_action = smoothed_target_action(mean, key, self.target_noise, self.target_noise_clip)
        next_q1, next_q2 = self.q_values(learner.target_critic_params, batch.next_state, next_action, batch.goal)
        return td_target(batch.reward, batch.terminated, next_q1, next_q2, self.gamma)

    def sgd_step(self, learner: TD3Learner, batch: TDTransitions, key: jax.Array) -> tuple[TD3Learner, dict]:
        critic_params, critic_opt, metrics = self._critic_step(learner, batch, self.target(learner, batch, key))

        def actor_loss_fn(actor_params):
            mean, _ = self.actor.apply({"params": actor_params}, batch.state, batch.goal)
            q1, _ = self.q_values(critic_params, batch.state, jnp.tanh(mean), batch.goal)
            return -jnp.mean(q1)

        def update_actor(_):
            loss, grads = jax.value_and_grad(actor_loss_fn)(learner.actor_params)
            actor_params, actor_opt = _adam_step(self.actor_optimizer, grads, learner.actor_opt, learner.actor_params, self.actor.cfg)
            targets = (polyak(learner.target_actor_params, actor_params, self.tau),
                       polyak(learner.target_critic_params, critic_params, self.tau))
            return actor_params, actor_opt, targets, loss

        def keep_actor(_):
            targets = (learner.target_actor_params, learner.target_critic_params)
            return learner.actor_params, learner.actor_opt, targets, jnp.zeros((), jnp.float32)

        delayed = (learner.step + 1) % self.policy_delay == 0
        actor_params, actor_opt, (target_actor, target_critic), actor_loss = jax.lax.cond(delayed, update_actor, keep_actor, None)
        new = TD3Learner(actor_params, critic_params, target_actor, target_critic, actor_opt, critic_opt, learner.step + 1)
        # × policy_delay: the mean over a collection's SGD steps (a multiple of policy_delay) is the mean actor loss.
        return new, {**metrics, "actor_loss": actor_loss * self.policy_delay, "actor_updated": delayed.astype(jnp.float32)}


@struct.dataclass
class GCSLLearner:
    actor_params: dict
    actor_opt: optax.OptState


@dataclasses.dataclass(frozen=True)
class GCSL:
    """Goal-conditioned supervised learning: maximise log π(a | s, g) of the agent's own actions, g a future
    state of the same trajectory (CRL's relabelling, ``rlscale.buffer.sample_minibatches``). GCBC is the
    same loss on a fixed dataset."""

    needs_next_state: ClassVar[bool] = False

    actor: Actor
    actor_optimizer: optax.GradientTransformation
    state_size: int
    goal_size: int
    batch_size: int
    window: int
    gamma: float
    goal_indices: tuple[int, ...]

    @classmethod
    def build(cls, cfg: TrainConfig, spec: TaskSpec) -> "GCSL":
        return cls(Actor(cfg.network_trunk("actor"), spec.action_size), optax.adam(cfg.actor_lr), spec.state_size,
                   spec.goal_size, cfg.batch_size, cfg.resolved_window_length, cfg.gamma, spec.goal_indices)

    def init(self, key: jax.Array, initial_alpha: float = 1.0) -> GCSLLearner:
        del initial_alpha  # no entropy temperature
        params = self.actor.init(key, jnp.zeros((1, self.state_size)), jnp.zeros((1, self.goal_size)))["params"]
        return GCSLLearner(params, self.actor_optimizer.init(params))

    # CRL's acting and minibatches (the same attributes): (s, a, g), g a future state with P ∝ γ^offset.
    act = Agent.act
    sample_minibatches = Agent.sample_minibatches

    def log_likelihood(self, actor_params, batch: Transitions) -> jax.Array:
        """log π(a | s, g) of each row's action (``networks.action_log_prob``)."""
        mean, log_std = self.actor.apply({"params": actor_params}, batch.state, batch.goal)
        return action_log_prob(mean, log_std, batch.action)

    def sgd_step(self, learner: GCSLLearner, batch: Transitions, key: jax.Array) -> tuple[GCSLLearner, dict]:
        del key  # the loss draws nothing
        loss, grads = jax.value_and_grad(lambda p: -jnp.mean(self.log_likelihood(p, batch)))(learner.actor_params)
        actor_params, actor_opt = _adam_step(self.actor_optimizer, grads, learner.actor_opt, learner.actor_params, self.actor.cfg)
        return GCSLLearner(actor_params, actor_opt), {"actor_loss": loss}

    def trained_params(self, learner: GCSLLearner):
        return learner.actor_params

    def block_norms(self, learner: GCSLLearner, batch: Transitions) -> dict[str, jax.Array]:
        return {"actor": block_norms(self.actor, learner.actor_params, batch.state, batch.goal)["trunk"]}


# GCBC is GCSL's loss and sampler on a fixed dataset (``--dataset``): only where the data comes from differs.
ALGORITHM_CLASSES = {"crl": Agent, "sac": SAC, "sac_her": SAC, "td3_her": TD3, "gcsl": GCSL, "gcbc": GCSL}
assert tuple(ALGORITHM_CLASSES) == ALGORITHMS, "config.ALGORITHMS and ALGORITHM_CLASSES list the same algorithms"


def build(cfg: TrainConfig, spec: TaskSpec):
    """The static part of ``cfg.algo``'s learner for this task (module docstring)."""
    return ALGORITHM_CLASSES[cfg.algo].build(cfg, spec)

