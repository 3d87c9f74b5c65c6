"""How each algorithm's actor acts (docs/method.md#baselines): the one function that its agent's ``act`` (training,
evaluation) and a loaded checkpoint (``rlscale.policy``: ``rlscale eval``, ``record``, ``load_policy``) call.

Light on purpose (networks only): loading a policy imports no learner code.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rlscale.config import TrainConfig
from rlscale.networks import Actor, act

# Algorithms that explore with Gaussian noise on tanh(mean) (TD3's; its actor's log-std head is never trained);
# the others sample their tanh-Gaussian (rlscale.networks.act). tests/test_eval.py checks every algorithm's
# loaded acting against its agent's.
NOISE_EXPLORERS = frozenset({"td3_her"})


def exploring_act(actor: Actor, actor_params, obs: jax.Array, state_size: int, key: jax.Array | None,
                  exploration_noise: float) -> jax.Array:
    """tanh(mean) without a key; with one, plus Gaussian noise of scale ``exploration_noise``, clipped to [-1, 1]."""
    action = act(actor, actor_params, obs, state_size, None)
    if key is None:
        return action
    return jnp.clip(action + exploration_noise * jax.random.normal(key, action.shape, action.dtype), -1.0, 1.0)


def inference_fn(cfg: TrainConfig, actor: Actor, state_size: int) -> Callable:
    """``(actor_params, obs, key) -> action`` for ``cfg.algo``: deterministic without a key, exploring with one."""
    if cfg.algo in NOISE_EXPLORERS:
        noise = cfg.exploration_noise
        return lambda actor_params, obs, key: exploring_act(actor, actor_params, obs, state_size, key, noise)
    return lambda actor_params, obs, key: act(actor, actor_params, obs, state_size, key)
