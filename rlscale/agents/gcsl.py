"""Goal-conditioned supervised learning (``--algo gcsl``) and, on a fixed dataset, goal-conditioned
behaviour cloning (``--algo gcbc``): docs/method.md#baselines."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from rlscale.agents.common import actor_param_count, adam_step, sampling_inference_fn
from rlscale.agents.crl import CRL
from rlscale.agents.registry import COLLECTS, DATASET, Algorithm, register
from rlscale.data.buffer import Transitions
from rlscale.networks import Actor, action_log_prob, block_norms

if TYPE_CHECKING:
    from rlscale.config import TrainConfig
    from rlscale.envs.base import TaskSpec


@struct.dataclass
class GCSLLearner:
    actor_params: dict
    actor_opt: optax.OptState


@dataclasses.dataclass(frozen=True)
class GCSL:
    """Goal-conditioned supervised learning: maximise log π(a | s, g) of the agent's own actions, g a future
    state of the same trajectory (CRL's relabelling, ``rlscale.data.buffer.sample_minibatches``). GCBC is the
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
    def build(cls, cfg: "TrainConfig", spec: "TaskSpec") -> "GCSL":
        return cls(Actor(cfg.network_trunk("actor"), spec.action_size), optax.adam(cfg.actor_lr), spec.state_size,
                   spec.goal_size, cfg.batch_size, cfg.resolved_window_length, cfg.gamma, spec.goal_indices)

    def init(self, key: jax.Array, initial_alpha: float = 1.0) -> GCSLLearner:
        del initial_alpha  # no entropy temperature
        params = self.actor.init(key, jnp.zeros((1, self.state_size)), jnp.zeros((1, self.goal_size)))["params"]
        return GCSLLearner(params, self.actor_optimizer.init(params))

    # CRL's acting and minibatches (the same attributes): (s, a, g), g a future state with P ∝ γ^offset.
    act = CRL.act
    sample_minibatches = CRL.sample_minibatches

    def log_likelihood(self, actor_params, batch: Transitions) -> jax.Array:
        """log π(a | s, g) of each row's action (``networks.action_log_prob``)."""
        mean, log_std = self.actor.apply({"params": actor_params}, batch.state, batch.goal)
        return action_log_prob(mean, log_std, batch.action)

    def sgd_step(self, learner: GCSLLearner, batch: Transitions, key: jax.Array) -> tuple[GCSLLearner, dict]:
        del key  # the loss draws nothing
        loss, grads = jax.value_and_grad(lambda p: -jnp.mean(self.log_likelihood(p, batch)))(learner.actor_params)
        actor_params, actor_opt = adam_step(self.actor_optimizer, grads, learner.actor_opt, learner.actor_params, self.actor.cfg)
        return GCSLLearner(actor_params, actor_opt), {"actor_loss": loss}

    def trained_params(self, learner: GCSLLearner):
        return learner.actor_params

    def block_norms(self, learner: GCSLLearner, batch: Transitions) -> dict[str, jax.Array]:
        return {"actor": block_norms(self.actor, learner.actor_params, batch.state, batch.goal)["trunk"]}


def sgd_step_flops(cfg: "TrainConfig", spec: "TaskSpec") -> dict[str, int]:
    """The actor's forward and backward, ``B (6 P_a − 2 (s + g) w)``; no critic."""
    from rlscale.flops import input_sizes, trunk_matmul_weights

    sizes = input_sizes(cfg, spec)
    p_a = trunk_matmul_weights(sizes.sg, 2 * spec.action_size, cfg.resolved_actor_depth, cfg.width)
    actor_loss = cfg.batch_size * (6 * p_a - 2 * sizes.sg * cfg.width)
    return {"total": actor_loss, "actor_loss": actor_loss, "critic_loss": 0}


ALGORITHM = register(Algorithm(
    name="gcsl", agent=GCSL, param_count=actor_param_count, sgd_step_flops=sgd_step_flops,
    make_inference_fn=sampling_inference_fn, defaults={"batch_size": 256}, data=COLLECTS,
    dataset_hint="gcsl on a fixed dataset is gcbc",
))
# GCBC is GCSL's loss and sampler on a fixed dataset (--dataset): only where the data comes from differs.
GCBC_ALGORITHM = register(dataclasses.replace(ALGORITHM, name="gcbc", data=DATASET, dataset_hint=""))
