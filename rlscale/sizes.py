"""Sizes of a run computed from its config alone, without building a network: the agent's parameter count
(``rlscale.networks.trunk_param_count``) and the matmul FLOPs of one SGD step (``rlscale.flops``).

Both need only the task's sizes (its ``TaskSpec``); for a task that is not registered they are None, so a
summary of a sweep over tasks still to come never fails for want of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlscale.envs.base import TaskSpec
    from rlscale.config import TrainConfig

_specs: dict[str, "TaskSpec | None"] = {}


def task_spec(task: str) -> "TaskSpec | None":
    """The task's spec (built once per process), or None for an unregistered task."""
    if task not in _specs:
        from rlscale import envs

        if task not in envs.names():
            _specs[task] = None
        else:
            try:
                _specs[task] = envs.make(task).spec
            except Exception:  # noqa: BLE001 - a summary never fails for want of a parameter count
                _specs[task] = None
    return _specs[task]


def agent_param_count(cfg: "TrainConfig") -> int | None:
    """Parameters the run trains (its algorithm's ``param_count``: CRL's actor, two critic encoders and the
    cosine energy's temperature; a baseline's actor and, SAC and TD3, its two Q trunks, target copies not
    counted). None for an unregistered task."""
    from rlscale import agents

    spec = task_spec(cfg.env)
    return None if spec is None else agents.get(cfg.algo).param_count(cfg, spec)


def sgd_step_flops(cfg: "TrainConfig", spec: "TaskSpec") -> dict[str, int]:
    """Matmul FLOPs of one SGD step of ``cfg.algo`` on a task of this spec: ``total``, ``actor_loss`` and
    ``critic_loss`` (its algorithm's count, by the rules of ``rlscale.flops``)."""
    from rlscale import agents

    return agents.get(cfg.algo).sgd_step_flops(cfg, spec)


def flops_per_sgd_step(cfg: "TrainConfig") -> int | None:
    """Matmul FLOPs of one SGD step (:func:`sgd_step_flops`); None for an unregistered task."""
    spec = task_spec(cfg.env)
    return None if spec is None else sgd_step_flops(cfg, spec)["total"]
