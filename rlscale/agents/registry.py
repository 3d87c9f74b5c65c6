"""The registry of algorithms and the interface each one implements (docs/method.md#baselines).

The rest of rlscale knows an algorithm only through its :class:`Algorithm` entry: ``--algo`` names it,
the trainer builds its agent, the config applies its defaults and checks where its data may come from,
``rlscale.sizes`` asks it for its parameter count and FLOPs, and ``rlscale.evaluation.policy`` for its inference
function. Nothing outside ``rlscale/agents/`` branches on an algorithm's name (``tests/test_agents.py``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

import jax

if TYPE_CHECKING:
    from rlscale.config import TrainConfig
    from rlscale.data.buffer import ReplayBuffer
    from rlscale.envs.base import TaskSpec
    from rlscale.networks import Actor

# The algorithm of a config that names none (and of configs saved before --algo existed).
DEFAULT = "crl"

# ``(actor_params, obs, key) -> action``: deterministic without a key, the exploring action with one.
ActFn = Callable[[Any, jax.Array, "jax.Array | None"], jax.Array]


class Agent(Protocol):
    """The static part of an algorithm for one (config, task), what ``Algorithm.agent.build`` returns.

    The trainer (``rlscale.training.trainer.Trainer``) collects with ``act``, inserts into the replay buffer,
    draws ``sample_minibatches`` and runs the SGD steps over them: the agent's ``sgd_steps(learner, batches,
    keys)`` where it has one (optional: TD3 fixes its policy-delay pattern in it), else :func:`scan_sgd_steps`."""

    needs_next_state: bool  # its minibatches pair a step with its next state (the buffer keeps episode ends)

    def init(self, key: jax.Array, initial_alpha: float = 1.0) -> Any:
        """The learner: a pytree with ``actor_params`` (a ``networks.Actor``'s) and all else it trains."""

    def act(self, actor_params, obs: jax.Array, key: jax.Array | None) -> jax.Array:
        """The algorithm's inference function (``Algorithm.make_inference_fn``) on this agent's actor."""

    def sample_minibatches(self, buffer: "ReplayBuffer", key: jax.Array, num_batches: int) -> tuple[Any, jax.Array]:
        """``(batches, resampled_fraction)``: ``num_batches`` minibatches stacked on a leading axis."""

    def sgd_step(self, learner, batch, key: jax.Array) -> tuple[Any, dict]:
        """One update: ``(learner, metrics)``, the metrics scalars (logged as ``training/<name>``)."""

    # Optional: def sgd_steps(self, learner, batches, keys) -> (learner, metrics stacked over the steps).

    def trained_params(self, learner) -> Any:
        """The parameters the run trains (what its parameter count counts; target copies are not)."""

    def block_norms(self, learner, batch) -> dict[str, jax.Array]:
        """Each network's per-block mean output norm on ``batch`` (docs/metrics.md#block-norms)."""


def sgd_steps(agent: Agent, learner, batches, keys: jax.Array) -> tuple[Any, dict]:
    """The agent's SGD steps over ``batches`` (one key each): ``(learner, metrics stacked over the steps)``."""
    own = getattr(agent, "sgd_steps", None)
    return own(learner, batches, keys) if own is not None else scan_sgd_steps(agent, learner, batches, keys)


def scan_sgd_steps(agent: Agent, learner, batches, keys: jax.Array) -> tuple[Any, dict]:
    """``sgd_step`` scanned over the minibatches, the steps of every algorithm without a pattern of its own."""
    return jax.lax.scan(lambda learner, inputs: agent.sgd_step(learner, *inputs), learner, (batches, keys))


@dataclasses.dataclass(frozen=True)
class Scaled:
    """A default that is a multiple of the value below it (the task preset's, else the paper's)."""

    factor: int


# Where an algorithm's data comes from: its own collection, a fixed --dataset, or either.
COLLECTS, DATASET, COLLECTS_OR_DATASET = "collects", "dataset", "collects or dataset"


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One algorithm as the rest of rlscale sees it; its module (``rlscale/agents/<module>.py``) holds the rest."""

    name: str  # the --algo value
    agent: Any  # a class whose ``build(cfg, spec)`` returns an :class:`Agent`
    param_count: Callable[["TrainConfig", "TaskSpec"], int]  # the parameters ``trained_params`` holds
    sgd_step_flops: Callable[["TrainConfig", "TaskSpec"], dict[str, int]]  # total, actor_loss, critic_loss
    make_inference_fn: Callable[["TrainConfig", "Actor", int], ActFn]  # (cfg, actor, state_size) -> act
    # Options it changes from the paper's defaults and the task's preset, where the user set none.
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data: str = COLLECTS
    dataset_hint: str = ""  # said when it is given a --dataset it cannot take
    collector_experiment: bool = False  # it can learn from a collector run's data (--collector-depth)
    run_name_tag: str | None = None  # in run names after the task; default "_<name>"
    dataset_run_tag: str = ""  # in a --dataset run's name, where a collector run's says _col<depth>

    @property
    def tag(self) -> str:
        return f"_{self.name}" if self.run_name_tag is None else self.run_name_tag

    def build(self, cfg: "TrainConfig", spec: "TaskSpec") -> Agent:
        return self.agent.build(cfg, spec)


_registry: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    """Add ``algorithm`` under its name (a name is registered once; :func:`unregister` frees it)."""
    if algorithm.name in _registry and _registry[algorithm.name] is not algorithm:
        raise ValueError(f"an algorithm named {algorithm.name!r} is already registered ({_registry[algorithm.name].agent})")
    _registry[algorithm.name] = algorithm
    return algorithm


def unregister(name: str) -> None:
    _registry.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered algorithms, in registration order."""
    return tuple(_registry)


def build(cfg: "TrainConfig", spec: "TaskSpec") -> Agent:
    """The agent of ``cfg.algo`` for this config and task."""
    return get(cfg.algo).build(cfg, spec)


def get(name: Any) -> Algorithm:
    """The algorithm ``name``; a ``ValueError`` naming the valid ones otherwise."""
    if name not in _registry:
        raise ValueError(f"unknown --algo {name!r}; valid: {', '.join(_registry)}")
    return _registry[name]
