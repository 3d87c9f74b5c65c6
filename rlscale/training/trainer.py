"""The pure side of training, one ``Trainer`` for every algorithm (``--algo``: the agents of ``rlscale.agents``).

``Trainer.training_step(state, key)`` is one pure, jittable step: collect ``unroll_length`` steps in each of
``num_envs`` envs, insert them in the replay buffer, draw ``sgd_steps_per_collection`` relabelled minibatches
(the algorithm's sampler) and ``lax.scan`` its SGD steps over them. ``Trainer.training_steps`` scans a
slice of an epoch's training steps: the host side (``rlscale.training.loop``) calls it until the epoch is
done (a stop can come between calls), then evaluates, logs and checkpoints (docs/method.md#training-loop).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from rlscale import agents
from rlscale.config import Plan, TrainConfig, plan
from rlscale.data import datasets
from rlscale.data.buffer import EpisodeEnds, ReplayBuffer, init_buffer, insert
from rlscale.envs.wrappers import EpisodeEnv, EpisodeState
from rlscale.evaluation.rollout import make_unroll
from rlscale.training import parallel


@struct.dataclass
class TrainingState:
    learner: Any  # the algorithm's learner (rlscale.agents): its networks act, except in a collector run
    env_state: EpisodeState  # batched over num_envs
    buffer: ReplayBuffer
    collector: Any | None = None  # a collector run's acting CRL agent (``TrainConfig.collector_depth``)


class Trainer:
    """Everything static about a run: task, agent, plan, and the pure functions built from them."""

    def __init__(self, cfg: TrainConfig, mesh: Mesh | None = None):
        self.cfg = cfg
        self.mesh = mesh  # data parallelism over several devices (rlscale.training.parallel); None: one device
        parallel.check_divisible(cfg.num_envs, cfg.batch_size, mesh)
        self.plan: Plan = plan(cfg)
        self.task = cfg.make_task()
        self.spec = self.task.spec
        self.eval_task = cfg.make_task(cfg.eval_task_name(self.spec))
        eval_spec = self.eval_task.spec
        if (eval_spec.obs_size, eval_spec.action_size) != (self.spec.obs_size, self.spec.action_size):
            raise ValueError(
                f"eval task {eval_spec.name!r} (obs {eval_spec.obs_size}, action {eval_spec.action_size}) does not fit "
                f"task {self.spec.name!r} (obs {self.spec.obs_size}, action {self.spec.action_size})"
            )
        self.env = EpisodeEnv(self.task, cfg.episode_length, cfg.fixed_goals_per_env)
        self.agent = agents.build(cfg, self.spec)
        # A dataset run (docs/method.md#offline-training) never acts: its buffer is the dataset, read once.
        self.dataset = None
        self.num_devices = 1 if mesh is None else mesh.size  # a dataset's buffer slots split evenly over them
        if cfg.dataset is not None:
            self.dataset = datasets.read(cfg.dataset)
            datasets.check_fits(self.dataset, cfg.dataset, self.spec, cfg.resolved_window_length, cfg.batch_size,
                                self.num_devices)
        self.eval_unroll = make_unroll(self.eval_task, cfg.episode_length, cfg.num_eval_envs, self.agent.act)
        # A collector run (docs/method.md#collector-experiment): this agent acts, the run's own only learns.
        self.collector_agent = None if cfg.collector_depth is None else agents.build(cfg.collector_config(), self.spec)
        self.collector_eval_unroll = None if self.collector_agent is None else make_unroll(
            self.eval_task, cfg.episode_length, cfg.num_eval_envs, self.collector_agent.act)

    # --- pure functions ---

    def collect(self, acting, env_state: EpisodeState, key: jax.Array, length: int):
        """Unroll the stochastic actor of ``acting`` (the run's learner, or a collector run's collector)
        toward the commanded goals: ``(env_state, (obs, action, traj_id, episode ends))``, what ``insert`` takes."""
        agent = self.agent if self.collector_agent is None else self.collector_agent

        def step(env_state, step_key):
            obs = env_state.task.obs
            action = agent.act(acting.actor_params, obs, step_key)
            nxt, info = self.env.step_batch(env_state, action)
            return nxt, (obs, action, env_state.traj_id, EpisodeEnds.of_steps(info.done, info.terminated, info.next_state))

        return jax.lax.scan(step, env_state, jax.random.split(key, length))

    def empty_buffer(self) -> ReplayBuffer:
        """The run's buffer before any step: a dataset run's dataset, else an empty buffer of the run's size."""
        cfg = self.cfg
        if self.dataset is not None:
            return datasets.buffer_of(self.dataset, cfg.resolved_window_length, self.num_devices)
        final_state_size = self.spec.state_size if self.agent.needs_next_state else None
        return init_buffer(cfg.max_replay_size, cfg.num_envs, self.spec.obs_size, self.spec.action_size, final_state_size)

    def init_env_and_buffer(self, learner, key: jax.Array, collector=None) -> TrainingState:
        """Fresh envs and a buffer prefilled with ``min_replay_size`` steps per env of the current actor
        (a collector run's: the collector's)."""
        reset_key, prefill_key = jax.random.split(key)
        env_state = jax.vmap(self.env.reset)(jax.random.split(reset_key, self.cfg.num_envs))
        buffer = self.empty_buffer()
        if self.dataset is not None:  # the envs are never stepped; they keep the state's structure
            return TrainingState(learner=learner, env_state=env_state, buffer=buffer, collector=collector)
        acting = learner if collector is None else collector
        env_state, data = self.collect(acting, env_state, prefill_key, self.cfg.min_replay_size)
        return TrainingState(learner=learner, env_state=env_state, buffer=insert(buffer, *data), collector=collector)

    def init_learners(self, key: jax.Array) -> tuple[Any, Any]:
        """``(learner, collector)``: the run's learner and a collector run's collector (else None)."""
        alpha = self.cfg.initial_alpha
        if self.collector_agent is None:
            return self.agent.init(key, alpha), None
        # The collector takes the keys a run of its own with this seed takes (so it, and the data, are that
        # run's); the learner, which never acts, draws from a key of its own.
        collector = self.collector_agent.init(key, alpha)
        return self.agent.init(jax.random.fold_in(key, 1), alpha), collector

    def init(self, key: jax.Array) -> TrainingState:
        learner_key, env_key = jax.random.split(key)
        learner, collector = self.init_learners(learner_key)
        return self.init_env_and_buffer(learner, env_key, collector)

    def training_step(self, state: TrainingState, key: jax.Array) -> tuple[TrainingState, dict]:
        cfg = self.cfg
        collect_key, sample_key, sgd_key = jax.random.split(key, 3)
        acting = state.learner if state.collector is None else state.collector
        if self.dataset is None:
            env_state, data = self.collect(acting, state.env_state, collect_key, cfg.unroll_length)
            buffer = insert(state.buffer, *data)
        else:  # learner only: the dataset is the buffer
            env_state, buffer = state.env_state, state.buffer
        batches, resampled_fraction = self.agent.sample_minibatches(buffer, sample_key, cfg.sgd_steps_per_collection)
        batches = parallel.constrain_minibatches(batches, self.mesh)

        def sgd_steps(agent, learner, key: jax.Array):
            keys = jax.random.split(key, cfg.sgd_steps_per_collection)
            learner, metrics = agents.sgd_steps(agent, learner, batches, keys)
            return learner, jax.tree.map(jnp.mean, metrics)

        collector = state.collector
        if collector is None:
            learner, metrics = sgd_steps(self.agent, state.learner, sgd_key)
        else:
            # The collector learns as a run of its own would; the learner from the same minibatches.
            collector, collector_metrics = sgd_steps(self.collector_agent, collector, sgd_key)
            learner, metrics = sgd_steps(self.agent, state.learner, jax.random.fold_in(sgd_key, 1))
            metrics |= {f"collector_{k}": v for k, v in collector_metrics.items()}
        metrics["resampled_fraction"] = resampled_fraction
        return TrainingState(learner=learner, env_state=env_state, buffer=buffer, collector=collector), metrics

    def epoch_step_keys(self, epoch_key: jax.Array) -> jax.Array:
        """The keys of an epoch's training steps, one per step: however the epoch is cut into calls of
        ``training_steps``, each step draws the same randomness."""
        return jax.random.split(epoch_key, self.plan.training_steps_per_epoch)

    def training_steps(self, state: TrainingState, keys: jax.Array) -> tuple[TrainingState, dict, jax.Array]:
        """One training step per key: ``(state, metrics of each step (stacked), finite)``, ``finite`` whether
        the learner, the collector and the metrics are all finite."""
        state, metrics = jax.lax.scan(self.training_step, state, keys)
        leaves = jax.tree.leaves((state.learner, state.collector, metrics))
        return state, metrics, jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))

    def block_norms(self, learner, buffer: ReplayBuffer, key: jax.Array) -> dict[str, jax.Array]:
        """Mean activation norm of each residual block's output (``[num_blocks]`` per network: CRL's actor and
        critic encoders, a baseline's networks) on one minibatch drawn from the buffer (docs/metrics.md#block-norms)."""
        batches, _ = self.agent.sample_minibatches(buffer, key, 1)
        return self.agent.block_norms(learner, jax.tree.map(lambda x: x[0], batches))

    def evaluate(self, actor_params, key: jax.Array, collector_actor_params=None) -> dict:
        """Per-episode metrics of the run's actor; a collector run's collector is evaluated on the same
        episodes (its metrics prefixed ``collector_``)."""
        per_episode = self.eval_unroll(actor_params, key)
        if collector_actor_params is not None:
            per_episode |= {f"collector_{k}": v for k, v in self.collector_eval_unroll(collector_actor_params, key).items()}
        return per_episode
