"""Turn a checkpoint into a policy without importing the trainer.

    from rlscale.evaluation.policy import load_policy
    policy, task = load_policy("runs/demo")          # a run directory (latest checkpoint) or a checkpoint
    action = policy(obs)                              # obs = state ⊕ goal, batched or not
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp

from rlscale.config import TrainConfig
from rlscale.networks import Actor
from rlscale.storage import checkpoint as ckpt

if TYPE_CHECKING:
    from rlscale import envs


class PolicyTaskError(ValueError):
    """A task whose observation or action size does not fit the policy."""


@dataclasses.dataclass(frozen=True)
class LoadedPolicy:
    """A checkpoint's actor with what is needed to run it."""

    run_dir: Path
    step: int
    config: dict[str, Any]
    meta: dict[str, Any]
    actor: Actor
    actor_params: Any
    state_size: int

    @property
    def task(self) -> str:
        return self.train_config.env

    @property
    def eval_task(self) -> str:
        """The task the run evaluated on in training: the checkpoint's record, else resolved from its config
        as the trainer resolves it (``TrainConfig.eval_task_name``)."""
        return self.meta.get("eval_task") or self.train_config.eval_task_name()

    @property
    def obs_size(self) -> int:
        return self.actor_params["trunk"]["input"]["Dense_0"]["kernel"].shape[0]

    @functools.cached_property
    def train_config(self) -> TrainConfig:
        """The saved config rebuilt as every saved config is (``TrainConfig.from_dict``)."""
        return TrainConfig.from_dict(self.config, source=f"{self.run_dir}'s config", saved=True)

    def act(self, actor_params, obs: jax.Array, key: jax.Array | None) -> jax.Array:
        """The run's algorithm's inference function (``Algorithm.make_inference_fn``, the one its agent acts
        with in training): deterministic without a key, exploring with one (a tanh-Gaussian sample, or TD3's
        Gaussian noise on tanh(mean))."""
        from rlscale import agents

        cfg = self.train_config
        return agents.get(cfg.algo).make_inference_fn(cfg, self.actor, self.state_size)(actor_params, obs, key)


def load(path: str | os.PathLike) -> LoadedPolicy:
    """Load the actor of a run directory's latest checkpoint, or of one checkpoint directory."""
    run_dir, step = ckpt.locate(path)
    saved, meta = ckpt.restore_raw(run_dir, step)
    config = meta["config"]
    cfg = TrainConfig.from_dict(config, source=f"{run_dir}'s checkpoint config", saved=True)
    params = saved["learner"]["actor_params"]
    output_kernel = params["trunk"]["output"]["kernel"]
    action_size = output_kernel.shape[1] // 2
    return LoadedPolicy(
        run_dir=run_dir,
        step=step,
        config=config,
        meta=meta,
        actor=Actor(cfg.network_trunk("actor"), action_size),
        actor_params=jax.tree.map(jnp.asarray, params),
        state_size=meta["state_size"] if "state_size" in meta else _state_size(cfg.env),
    )


def _state_size(task: str) -> int:
    from rlscale import (
        envs,  # only for checkpoints written before the state size was stored in them
    )

    return envs.make(task).spec.state_size


def load_policy(path: str | os.PathLike, deterministic: bool = True) -> tuple[Callable, str]:
    """A jitted function ``obs -> action`` (``(obs, key) -> action`` when not deterministic) and the task name."""
    loaded = load(path)
    params = loaded.actor_params
    if deterministic:
        fn = jax.jit(lambda obs: loaded.act(params, obs, None))
    else:
        fn = jax.jit(lambda obs, key: loaded.act(params, obs, key))
    return fn, loaded.task


def make_eval_task(policy: LoadedPolicy, task: str | None = None) -> envs.GoalTask:
    """The task ``task`` (default: the run's eval task) built as in training (``TrainConfig.make_task``: a
    stitching run's own task keeps its goal distance), checked to fit the policy."""

    name = task or policy.eval_task
    env = policy.train_config.make_task(name)
    action_size = policy.actor_params["trunk"]["output"]["kernel"].shape[1] // 2
    if (env.spec.obs_size, env.spec.action_size) != (policy.obs_size, action_size):
        raise PolicyTaskError(
            f"task {name!r} has observation size {env.spec.obs_size} and action size {env.spec.action_size}, but the "
            f"policy in {ckpt.step_path(policy.run_dir, policy.step)} takes {policy.obs_size} and gives {action_size}"
        )
    return env
