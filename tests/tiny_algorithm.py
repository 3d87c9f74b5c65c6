"""A method added to rlscale from this one file: goal-conditioned regression of the actor's mean onto the
buffer's actions (behaviour cloning with future-state goals, a squared loss instead of GCSL's likelihood).
Registered by tests/test_agents.py as ``--algo tiny_bc``; everything it needs is here."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlscale.agents import Algorithm
from rlscale.agents.common import actor_param_count, adam_step, sampling_inference_fn
from rlscale.data.buffer import sample_minibatches
from rlscale.networks import Actor, block_norms


@struct.dataclass
class TinyLearner:
    actor_params: dict
    actor_opt: optax.OptState


@dataclasses.dataclass(frozen=True)
class TinyBC:
    needs_next_state: ClassVar[bool] = False

    actor: Actor
    optimizer: optax.GradientTransformation
    state_size: int
    goal_size: int
    batch_size: int
    window: int
    gamma: float
    goal_indices: tuple[int, ...]

    @classmethod
    def build(cls, cfg, spec) -> "TinyBC":
        return cls(Actor(cfg.network_trunk("actor"), spec.action_size), optax.adam(cfg.actor_lr), spec.state_size,
                   spec.goal_size, cfg.batch_size, cfg.resolved_window_length, cfg.gamma, spec.goal_indices)

    def init(self, key, initial_alpha: float = 1.0) -> TinyLearner:
        params = self.actor.init(key, jnp.zeros((1, self.state_size)), jnp.zeros((1, self.goal_size)))["params"]
        return TinyLearner(params, self.optimizer.init(params))

    def act(self, actor_params, obs, key):
        return sampling_inference_fn(None, self.actor, self.state_size)(actor_params, obs, key)

    def sample_minibatches(self, buffer, key, num_batches):
        return sample_minibatches(buffer, key, num_batches=num_batches, batch_size=self.batch_size, window=self.window,
                                  gamma=self.gamma, state_size=self.state_size, goal_indices=self.goal_indices)

    def sgd_step(self, learner: TinyLearner, batch, key):
        def loss_fn(params):
            mean, _ = self.actor.apply({"params": params}, batch.state, batch.goal)
            return jnp.mean(jnp.square(jnp.tanh(mean) - batch.action))

        loss, grads = jax.value_and_grad(loss_fn)(learner.actor_params)
        params, opt = adam_step(self.optimizer, grads, learner.actor_opt, learner.actor_params, self.actor.cfg)
        return TinyLearner(params, opt), {"actor_loss": loss}

    def trained_params(self, learner: TinyLearner):
        return learner.actor_params

    def block_norms(self, learner: TinyLearner, batch):
        return {"actor": block_norms(self.actor, learner.actor_params, batch.state, batch.goal)["trunk"]}


def sgd_step_flops(cfg, spec) -> dict[str, int]:
    return {"total": 0, "actor_loss": 0, "critic_loss": 0}  # not counted: a test's method


ALGORITHM = Algorithm(name="tiny_bc", agent=TinyBC, param_count=actor_param_count, sgd_step_flops=sgd_step_flops,
                      make_inference_fn=sampling_inference_fn, defaults={"actor_lr": 1e-3})
