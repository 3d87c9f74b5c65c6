"""TD3 with HER relabelling (``--algo td3_her``): docs/method.md#baselines."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlscale.agents.common import (
    TD_DEFAULTS,
    TDAgent,
    adam_step,
    polyak,
    td_flops,
    td_target,
    twin_q_param_count,
)
from rlscale.agents.registry import ActFn, Algorithm, register, scan_sgd_steps
from rlscale.data.buffer import TDTransitions
from rlscale.networks import Actor, act

if TYPE_CHECKING:
    from rlscale.config import TrainConfig
    from rlscale.envs.base import TaskSpec


def exploring_act(actor: Actor, actor_params, obs: jax.Array, state_size: int, key: jax.Array | None,
                  exploration_noise: float) -> jax.Array:
    """tanh(mean) without a key; with one, plus Gaussian noise of scale ``exploration_noise``, clipped to [-1, 1].
    (Its actor's log-std head is never trained, so TD3 never samples the tanh-Gaussian.)"""
    action = act(actor, actor_params, obs, state_size, None)
    if key is None:
        return action
    return jnp.clip(action + exploration_noise * jax.random.normal(key, action.shape, action.dtype), -1.0, 1.0)


def smoothed_target_action(mean: jax.Array, key: jax.Array, noise: float, noise_clip: float) -> jax.Array:
    """TD3's target policy smoothing: tanh(mean) plus Gaussian noise clipped to ±``noise_clip``, in [-1, 1]."""
    eps = jnp.clip(noise * jax.random.normal(key, mean.shape, mean.dtype), -noise_clip, noise_clip)
    return jnp.clip(jnp.tanh(mean) + eps, -1.0, 1.0)


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
class TD3(TDAgent):
    """TD3 (with HER relabelling by default): deterministic actor tanh(mean) of the ``Actor``'s mean head,
    twin Q, target policy smoothing, actor and Polyak target updates every ``policy_delay`` critic updates,
    Gaussian exploration noise when collecting."""

    policy_delay: int
    exploration_noise: float
    target_noise: float
    target_noise_clip: float

    @classmethod
    def build(cls, cfg: "TrainConfig", spec: "TaskSpec") -> "TD3":
        return cls(**cls._fields_of(cfg, spec), policy_delay=cfg.policy_delay, exploration_noise=cfg.exploration_noise,
                   target_noise=cfg.target_noise, target_noise_clip=cfg.target_noise_clip)

    def init(self, key: jax.Array, initial_alpha: float = 1.0) -> TD3Learner:
        del initial_alpha  # TD3 has no entropy temperature
        actor_params, critic_params = self._init_networks(key)
        return TD3Learner(actor_params, critic_params, actor_params, critic_params, self.actor_optimizer.init(actor_params),
                          self.critic_optimizer.init(critic_params), jnp.zeros((), jnp.int32))

    def act(self, actor_params, obs: jax.Array, key: jax.Array | None) -> jax.Array:
        return exploring_act(self.actor, actor_params, obs, self.state_size, key, self.exploration_noise)

    @classmethod
    def make_inference_fn(cls, cfg: "TrainConfig", actor: Actor, state_size: int) -> ActFn:
        """Its acting, for a loaded checkpoint as in training: tanh(mean), plus its noise with a key."""
        noise = cfg.exploration_noise
        return lambda actor_params, obs, key: exploring_act(actor, actor_params, obs, state_size, key, noise)

    def target(self, learner: TD3Learner, batch: TDTransitions, key: jax.Array) -> jax.Array:
        mean, _ = self.actor.apply({"params": learner.target_actor_params}, batch.next_state, batch.goal)
        next_action = smoothed_target_action(mean, key, self.target_noise, self.target_noise_clip)
        next_q1, next_q2 = self.q_values(learner.target_critic_params, batch.next_state, next_action, batch.goal)
        return td_target(batch.reward, batch.terminated, next_q1, next_q2, self.gamma)

    def sgd_step(self, learner: TD3Learner, batch: TDTransitions, key: jax.Array) -> tuple[TD3Learner, dict]:
        """One critic update, and the actor's when ``(step + 1) % policy_delay == 0`` (a ``cond``: the trainer
        uses :meth:`sgd_steps`, whose pattern is fixed)."""
        delayed = (learner.step + 1) % self.policy_delay == 0
        return jax.lax.cond(delayed, lambda: self._step(learner, batch, key, True), lambda: self._step(learner, batch, key, False))

    def sgd_steps(self, learner: TD3Learner, batches: TDTransitions, keys: jax.Array) -> tuple[TD3Learner, dict]:
        """The SGD steps of one collection. When their number is a multiple of ``policy_delay`` (800 and 2 by
        default) every collection starts at a step that is a multiple of it too, so which steps update the
        actor is fixed: the steps run in groups of ``policy_delay``, the actor in the group's last. No
        ``cond`` then, which on a GPU reads its predicate back to the host on every step
        (docs/method.md#no-host-syncs); the updates are those of :meth:`sgd_step` in the same order."""
        delay, num_steps = self.policy_delay, keys.shape[0]
        if num_steps % delay:
            return scan_sgd_steps(self, learner, batches, keys)

        def group_of_steps(learner, inputs):
            group_batches, group_keys = inputs
            metrics = []
            for i in range(delay):
                batch = jax.tree.map(lambda x: x[i], group_batches)
                learner, step_metrics = self._step(learner, batch, group_keys[i], i == delay - 1)
                metrics.append(step_metrics)
            return learner, jax.tree.map(lambda *xs: jnp.stack(xs), *metrics)

        grouped = jax.tree.map(lambda x: x.reshape((num_steps // delay, delay) + x.shape[1:]), (batches, keys))
        learner, metrics = jax.lax.scan(group_of_steps, learner, grouped)
        return learner, jax.tree.map(lambda x: x.reshape((num_steps,) + x.shape[2:]), metrics)

    def _step(self, learner: TD3Learner, batch: TDTransitions, key: jax.Array, update_actor: bool) -> tuple[TD3Learner, dict]:
        critic_params, critic_opt, metrics = self._critic_step(learner, batch, self.target(learner, batch, key))
        if update_actor:
            def actor_loss_fn(actor_params):
                mean, _ = self.actor.apply({"params": actor_params}, batch.state, batch.goal)
                q1, _ = self.q_values(critic_params, batch.state, jnp.tanh(mean), batch.goal)
                return -jnp.mean(q1)

            actor_loss, grads = jax.value_and_grad(actor_loss_fn)(learner.actor_params)
            actor_params, actor_opt = adam_step(self.actor_optimizer, grads, learner.actor_opt, learner.actor_params, self.actor.cfg)
            target_actor = polyak(learner.target_actor_params, actor_params, self.tau)
            target_critic = polyak(learner.target_critic_params, critic_params, self.tau)
        else:
            actor_params, actor_opt, actor_loss = learner.actor_params, learner.actor_opt, jnp.zeros((), jnp.float32)
            target_actor, target_critic = learner.target_actor_params, learner.target_critic_params
        new = TD3Learner(actor_params, critic_params, target_actor, target_critic, actor_opt, critic_opt, learner.step + 1)
        # × policy_delay: the mean over a collection's SGD steps (a multiple of policy_delay) is the mean actor loss.
        return new, {**metrics, "actor_loss": actor_loss * self.policy_delay,
                     "actor_updated": jnp.asarray(float(update_actor), jnp.float32)}


def sgd_step_flops(cfg: "TrainConfig", spec: "TaskSpec") -> dict[str, int]:
    """Q1 only in the actor loss, once every ``policy_delay`` steps (``rlscale.agents.common.td_flops``)."""
    return td_flops(cfg, spec, actor_q_passes=2, policy_delay=cfg.policy_delay)


ALGORITHM = register(Algorithm(
    name="td3_her", agent=TD3, param_count=twin_q_param_count, sgd_step_flops=sgd_step_flops,
    make_inference_fn=TD3.make_inference_fn, defaults={**TD_DEFAULTS, "relabel_probability": 0.8},  # TD3 was not tuned
))
