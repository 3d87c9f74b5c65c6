"""The CRL training loop.

``Trainer.training_step(state, key)`` is one pure, jittable step: collect ``unroll_length`` steps in
each of ``num_envs`` envs, insert them in the replay buffer, draw ``sgd_steps_per_collection``
relabelled minibatches and ``lax.scan`` the SGD steps over them. ``Trainer.epoch`` scans training steps;
the host loop (:func:`train`) runs epochs and, after each, evaluates, logs a metrics row and saves a
checkpoint. Keys derive from the seed and the epoch index alone, so a resumed run draws the same
randomness as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from rich.console import Console

import envs
from envs.wrappers import EpisodeEnv, EpisodeState
from rlscale import checkpoint as ckpt
from rlscale import run_dir as rd
from rlscale.agent import Agent, Learner
from rlscale.buffer import ReplayBuffer, init_buffer, insert, sample_minibatches
from rlscale.config import Plan, TrainConfig, plan
from rlscale.evaluation import eval_key, make_unroll, run_keys, summarize


# Exit status of a run stopped by SIGTERM (Slurm preemption, Ray cancellation) after it saved a
# checkpoint: resume it, do not count it as failed. 75 is EX_TEMPFAIL ("try again later").
PREEMPTED_EXIT_CODE = 75


class NonFiniteError(RuntimeError):
    pass


class Preempted(Exception):
    """SIGTERM arrived; the run saved a checkpoint at the end of the current epoch and stopped."""


@struct.dataclass
class TrainingState:
    learner: Learner
    env_state: EpisodeState  # batched over num_envs
    buffer: ReplayBuffer


def make_task(cfg: TrainConfig, name: str | None = None) -> envs.GoalTask:
    overrides: dict[str, Any] = {"episode_length": cfg.episode_length}
    if cfg.backend is not None:
        overrides["backend"] = cfg.backend
    return envs.make(name or cfg.env, **overrides)


class Trainer:
    """Everything static about a run: task, agent, plan, and the pure functions built from them."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.plan: Plan = plan(cfg)
        self.task = make_task(cfg)
        self.spec = self.task.spec
        self.eval_task = make_task(cfg, cfg.eval_env or self.spec.eval_task)
        eval_spec = self.eval_task.spec
        if (eval_spec.obs_size, eval_spec.action_size) != (self.spec.obs_size, self.spec.action_size):
            raise ValueError(
                f"eval task {eval_spec.name!r} (obs {eval_spec.obs_size}, action {eval_spec.action_size}) does not fit "
                f"task {self.spec.name!r} (obs {self.spec.obs_size}, action {self.spec.action_size})"
            )
        self.env = EpisodeEnv(self.task, cfg.episode_length, cfg.fixed_goals_per_env)
        self.agent = Agent.build(cfg, self.spec)
        self.eval_unroll = make_unroll(self.eval_task, cfg.episode_length, cfg.num_eval_envs, self.agent.act)

    # --- pure functions ---

    def collect(self, learner: Learner, env_state: EpisodeState, key: jax.Array, length: int):
        """Unroll the stochastic actor toward the commanded goals: ``(env_state, (obs, action, traj_id))``."""

        def step(env_state, step_key):
            obs = env_state.task.obs
            action = self.agent.act(learner.actor_params, obs, step_key)
            nxt, _ = jax.vmap(self.env.step)(env_state, action)
            return nxt, (obs, action, env_state.traj_id)

        return jax.lax.scan(step, env_state, jax.random.split(key, length))

    def init_env_and_buffer(self, learner: Learner, key: jax.Array) -> TrainingState:
        """Fresh envs and a buffer prefilled with ``min_replay_size`` steps per env of the current actor."""
        reset_key, prefill_key = jax.random.split(key)
        cfg = self.cfg
        env_state = jax.vmap(self.env.reset)(jax.random.split(reset_key, cfg.num_envs))
        buffer = init_buffer(cfg.max_replay_size, cfg.num_envs, self.spec.obs_size, self.spec.action_size)
        env_state, data = self.collect(learner, env_state, prefill_key, cfg.min_replay_size)
        return TrainingState(learner=learner, env_state=env_state, buffer=insert(buffer, *data))

    def init(self, key: jax.Array) -> TrainingState:
        learner_key, env_key = jax.random.split(key)
        return self.init_env_and_buffer(self.agent.init(learner_key, self.cfg.initial_alpha), env_key)

    def training_step(self, state: TrainingState, key: jax.Array) -> tuple[TrainingState, dict]:
        cfg = self.cfg
        collect_key, sample_key, sgd_key = jax.random.split(key, 3)
        env_state, data = self.collect(state.learner, state.env_state, collect_key, cfg.unroll_length)
        buffer = insert(state.buffer, *data)
        batches, resampled_fraction = sample_minibatches(
            buffer,
            sample_key,
            num_batches=cfg.sgd_steps_per_collection,
            batch_size=cfg.batch_size,
            window=cfg.resolved_window_length,
            gamma=cfg.gamma,
            state_size=self.spec.state_size,
            goal_indices=self.spec.goal_indices,
        )

        def sgd(learner, inputs):
            batch, step_key = inputs
            return self.agent.sgd_step(learner, batch, step_key)

        sgd_keys = jax.random.split(sgd_key, cfg.sgd_steps_per_collection)
        learner, metrics = jax.lax.scan(sgd, state.learner, (batches, sgd_keys))
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["resampled_fraction"] = resampled_fraction
        return TrainingState(learner=learner, env_state=env_state, buffer=buffer), metrics

    def epoch(self, state: TrainingState, key: jax.Array) -> tuple[TrainingState, dict]:
        keys = jax.random.split(key, self.plan.training_steps_per_epoch)
        state, metrics = jax.lax.scan(self.training_step, state, keys)
        metrics = jax.tree.map(jnp.mean, metrics)
        leaves = jax.tree.leaves((state.learner, metrics))
        metrics["all_finite"] = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        return state, metrics

    def evaluate(self, actor_params, key: jax.Array) -> dict:
        return self.eval_unroll(actor_params, key)


# --- the host loop ------------------------------------------------------------------------------


def _saved_tree(state: TrainingState, rng: jax.Array, with_buffer: bool) -> dict:
    tree = {"learner": state.learner, "rng": rng}
    if with_buffer:
        tree["env_state"] = state.env_state
        tree["buffer"] = state.buffer
    return tree


def train(cfg: TrainConfig | None = None, resume: str | Path | None = None, console: Console | None = None) -> Path:
    """Run (or resume) a training run; returns its run directory."""
    console = console or Console(soft_wrap=True)
    if resume is not None:
        run_path = Path(resume)
        stored = rd.read_config(run_path)
        cfg = TrainConfig.from_dict(stored["config"], source=str(run_path / rd.CONFIG_FILE))
        trainer = Trainer(cfg)
    else:
        assert cfg is not None
        cfg = dataclasses.replace(cfg, run_dir=cfg.run_dir or str(Path("runs") / cfg.default_run_name()))
        trainer = Trainer(cfg)  # validates everything before a file is written
        if cfg.wandb:
            _import_wandb()
        run_path = rd.create(cfg.run_dir)
        info = {"config": cfg.to_dict(), "plan": dataclasses.asdict(trainer.plan), "environment": rd.environment_info()}
        rd.write_atomic(run_path / rd.CONFIG_FILE, rd.dumps_json(info))
    run_plan = trainer.plan

    keys = run_keys(cfg.seed)
    t_start = time.perf_counter()
    # Restore before anything is written, so that a bad checkpoint leaves the run directory untouched.
    state, start_epoch, walltime, last_good = _initial_state(trainer, run_path, resume is not None, keys, console)
    log = rd.MetricsLog(run_path, cfg.tensorboard, _wandb_run(cfg, run_path))
    dropped = log.truncate_after(run_plan.env_steps_after(start_epoch) if last_good else -1)
    if dropped:
        console.print(f"dropped {dropped} metric rows written after the last checkpoint")
    writer = ckpt.CheckpointWriter(run_path, cfg.keep_checkpoints)

    _print_plan(console, cfg, run_plan, trainer, run_path)
    if start_epoch >= run_plan.num_epochs:
        writer.close()
        log.close()
        console.print(f"[green]{run_path} is already complete ({run_plan.num_epochs} epochs)")
        return run_path
    compile_start = time.perf_counter()
    epoch_fn = jax.jit(trainer.epoch, donate_argnums=0).lower(state, keys["train"]).compile()
    eval_fn = jax.jit(trainer.evaluate).lower(state.learner.actor_params, keys["eval"]).compile()
    compile_seconds = time.perf_counter() - compile_start
    console.print(f"compiled the epoch and evaluation in {compile_seconds:.1f} s")

    sigterm = threading.Event()
    try:
        with _sigterm_sets(sigterm):
            for epoch in range(start_epoch, run_plan.num_epochs):
                t0 = time.perf_counter()
                state, train_metrics = epoch_fn(state, jax.random.fold_in(keys["train"], epoch))
                train_metrics = jax.device_get(train_metrics)
                t1 = time.perf_counter()
                if not bool(train_metrics.pop("all_finite")):
                    raise NonFiniteError(
                        f"non-finite loss or parameters in epoch {epoch + 1}; nothing was saved for it; "
                        f"last good checkpoint: {last_good or 'none'}"
                    )
                eval_metrics = summarize(eval_fn(state.learner.actor_params, eval_key(cfg.seed, epoch)))
                t2 = time.perf_counter()
                walltime += t2 - t0
                done = epoch + 1
                env_steps = run_plan.env_steps_after(done)
                epoch_steps = run_plan.training_steps_per_epoch
                row = {
                    "epoch": done,
                    "training/env_steps": env_steps,
                    "training/sgd_steps": run_plan.sgd_steps_after(done),
                    **{f"training/{k}": float(v) for k, v in train_metrics.items()},
                    "training/sps": epoch_steps * run_plan.env_steps_per_training_step / (t1 - t0),
                    "training/sgd_sps": epoch_steps * run_plan.sgd_steps_per_training_step / (t1 - t0),
                    **eval_metrics,
                    "time/epoch_seconds": t1 - t0,
                    "time/eval_seconds": t2 - t1,
                    "time/compile_seconds": compile_seconds,
                    "walltime": walltime,
                }
                log.append(row)
                _print_row(console, row, run_plan, time.perf_counter() - t_start, epoch - start_epoch + 1)
                if done % cfg.checkpoint_every == 0 or done == run_plan.num_epochs or sigterm.is_set():
                    meta = {
                        "config": cfg.to_dict(),
                        "counters": {"epoch": done, "env_steps": env_steps, "sgd_steps": run_plan.sgd_steps_after(done)},
                        "walltime": walltime,
                        "has_buffer": cfg.save_buffer,
                        "task": cfg.env,
                        "eval_task": trainer.eval_task.spec.name,
                        "state_size": trainer.spec.state_size,
                    }
                    last_good = writer.save(env_steps, _saved_tree(state, keys["init"], cfg.save_buffer), meta)
                if sigterm.is_set() and done < run_plan.num_epochs:
                    console.print(f"[yellow]SIGTERM: stopped after epoch {done} with checkpoint {last_good}; resume with --resume")
                    raise Preempted(str(last_good))
    finally:
        writer.close()
        log.close()
    console.print(f"[green]done: {run_path} ({run_plan.total_env_steps:,} env steps, {run_plan.total_sgd_steps:,} SGD steps)")
    return run_path


@contextlib.contextmanager
def _sigterm_sets(event: threading.Event):
    """While inside, SIGTERM sets ``event`` instead of killing the process (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _initial_state(trainer: Trainer, run_path: Path, resuming: bool, keys: dict, console: Console):
    """``(state, start_epoch, walltime, last_good_checkpoint)`` from the latest checkpoint, or fresh."""
    latest = ckpt.latest_step(run_path) if resuming else None
    if latest is None:
        if resuming:
            console.print(f"{run_path} has no complete checkpoint: starting it from the beginning")
        return jax.jit(trainer.init)(keys["init"]), 0, 0.0, None
    meta = ckpt.read_meta(run_path, latest)
    state_template = jax.eval_shape(trainer.init, keys["init"])
    saved, meta = ckpt.restore(run_path, latest, _saved_tree(state_template, keys["init"], meta["has_buffer"]))
    start_epoch = meta["counters"]["epoch"]
    if meta["has_buffer"]:
        state = TrainingState(saved["learner"], saved["env_state"], saved["buffer"])
    else:
        state = jax.jit(trainer.init_env_and_buffer)(saved["learner"], jax.random.fold_in(keys["refill"], start_epoch))
        console.print(
            f"[yellow]no buffer in the checkpoint: refilled it with {trainer.plan.prefill_env_steps:,} fresh env steps (not counted)"
        )
    last_good = ckpt.step_path(run_path, latest)
    console.print(f"resuming {run_path} at epoch {start_epoch}/{trainer.plan.num_epochs} from {last_good}")
    return state, start_epoch, meta["walltime"], last_good


def _import_wandb():
    try:
        import wandb
    except ImportError:
        raise ValueError("--wandb needs the wandb package: pip install 'rlscale[wandb]'") from None
    return wandb


def _wandb_run(cfg: TrainConfig, run_path: Path):
    if not cfg.wandb:
        return None
    wandb = _import_wandb()
    return wandb.init(project=cfg.wandb_project, name=run_path.name, dir=str(run_path), config=cfg.to_dict(), resume="allow", id=run_path.name)


def _print_plan(console: Console, cfg: TrainConfig, p: Plan, trainer: Trainer, run_path: Path) -> None:
    from rlscale.networks import param_count

    params = jax.eval_shape(trainer.agent.init, jax.random.PRNGKey(0))
    console.print(
        f"[bold]{run_path}[/]: {cfg.env} (eval {trainer.eval_task.spec.name}), actor depth {cfg.resolved_actor_depth}, "
        f"critic depth {cfg.resolved_critic_depth}, width {cfg.width}, batch {cfg.batch_size}, seed {cfg.seed}; "
        f"{param_count((params.actor_params, params.critic_params)):,} parameters\n"
        f"plan: {p.prefill_env_steps:,} prefill + {p.num_epochs} epochs × {p.training_steps_per_epoch} training steps × "
        f"{p.env_steps_per_training_step:,} env steps = {p.total_env_steps:,} env steps (asked {cfg.total_env_steps:,}); "
        f"{p.sgd_steps_per_training_step} SGD steps per collection, {p.total_sgd_steps:,} in all"
    )


def _print_row(console: Console, row: dict, p: Plan, elapsed: float, epochs_done_here: int) -> None:
    remaining = p.num_epochs - row["epoch"]
    eta = elapsed / epochs_done_here * remaining
    console.print(
        f"epoch {row['epoch']:>4}/{p.num_epochs}  steps {row['training/env_steps']:>12,}  "
        f"env/s {row['training/sps']:>9,.0f}  sgd/s {row['training/sgd_sps']:>7,.1f}  "
        f"time@goal {row['eval/episode_success']:>7.1f}  success_any {row['eval/episode_success_any']:.2f}  "
        f"critic {row['training/critic_loss']:.3f}  actor {row['training/actor_loss']:.3f}  "
        f"α {row['training/alpha']:.3g}  ETA {eta / 60:.1f} min"
    )
