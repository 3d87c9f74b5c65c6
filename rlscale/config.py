"""Training configuration: one typed dataclass whose field docstrings are the CLI's ``--help``; the
network options shared by every trunk are ``rlscale.networks.TrunkConfig``'s, inserted in it.

Defaults are the paper's (its Table 7; docs/method.md#defaults). Per-task presets in
``configs/tasks/<task>.yaml`` sit on top of them, and command-line options on top of the presets.
Derived quantities (how many training steps, SGD steps and env steps the run will really do) are
computed once, by :func:`plan`, and validated before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from typing_extensions import Doc

from rlscale import agents
from rlscale.legacy_options import upgrade_options
from rlscale.networks import TRUNK_OPTIONS, TrunkConfig, check_option, check_positive

# Version of what TrainConfig's values mean, saved in every config.json. Bump it only when an option keeps
# its value but changes meaning (a default of None that comes to stand for something else): runs saved
# before then describe another experiment. Adding an option with a default needs no bump.
CONFIG_SCHEMA = 1


def _with_trunk_options(after: str):
    """Class decorator, below ``@dataclass``: ``TrunkConfig``'s options but depth (``TRUNK_OPTIONS``), with
    their types, defaults and help (as ``Annotated[type, Doc(help)]``, which tyro shows), inserted after
    the field ``after``."""

    def insert(cls):
        trunk_fields = {f.name: f for f in dataclasses.fields(TrunkConfig)}
        types = typing.get_type_hints(TrunkConfig)
        annotations = {}
        for name, hint in cls.__dict__["__annotations__"].items():
            annotations[name] = hint
            if name == after:
                for option in TRUNK_OPTIONS:
                    field = trunk_fields[option]
                    annotations[option] = Annotated[types[option], Doc(field.metadata["help"])]
                    setattr(cls, option, dataclasses.field(default=field.default, metadata=field.metadata))
        cls.__annotations__ = annotations
        return cls

    return insert


@dataclasses.dataclass
@_with_trunk_options(after="critic_depth")
class TrainConfig:
    """Contrastive RL (CRL), or a baseline (--algo), with residual MLP networks."""

    algo: str = agents.DEFAULT
    """Learning algorithm: crl (the default), sac, sac_her, td3_her, gcsl or gcbc (rlscale/agents/; docs/method.md#baselines; gcbc needs --dataset). An algorithm may change some defaults: the values shown below are those of the chosen --algo. Options the user sets win."""

    # --- task ---
    env: str = "point_u_maze"
    """Task to train on (see `rlscale envs`)."""
    eval_env: str | None = None
    """Task to evaluate on; default: the task's eval task (mazes: the far-goal `*_eval` layout; humanoid mazes: the training layout)."""
    episode_length: int = 1000
    """Steps per episode, in training and evaluation."""
    backend: str | None = None
    """Brax backend for Brax tasks (spring, positional, generalized, mjx); default: the task's."""
    stitch_max_goal_distance: int | None = None
    """Stitching tasks (`*_stitch`): training goals at most this many cells from the start along the maze's shortest path; default: the task's (3). A sweep axis for the stitching study (docs/tasks.md#stitching-mazes)."""
    fixed_goals_per_env: bool = False
    """Paper-code behaviour: every parallel env replays its first start and goal after auto-reset."""

    # --- networks ---
    depth: int = 4
    """Depth (Dense layers in residual blocks, a multiple of 4) of actor and critic encoders."""
    actor_depth: int | None = None
    """Actor depth if different from --depth."""
    critic_depth: int | None = None
    """Critic encoder depth if different from --depth."""
    # Here come TrunkConfig's options but depth (rlscale.networks.TRUNK_OPTIONS: width, activation, …, dtype),
    # declared there with their types, defaults, help and checks.
    repr_dim: int = 64
    """Dimension of the critic's representations φ(s, a) and ψ(g)."""
    collector_depth: int | None = None
    """Collector experiment: a CRL agent of this depth acts and fills the buffer, and the run's own networks (--depth) learn only from that data, never acting (docs/method.md#collector-experiment)."""

    # --- objective ---
    contrastive_loss: Literal["forward_infonce", "backward_infonce", "symmetric_infonce"] = "forward_infonce"
    """Critic objective."""
    energy: Literal["l2", "dot", "mrn", "cosine"] = "l2"
    """Critic value: negative L2 distance (paper), dot product, negative MRN quasimetric from φ(s, a) to ψ(g) (needs an even --repr-dim), or cosine similarity times a learned temperature."""
    logsumexp_penalty: float = 0.1
    """Weight of the mean squared logsumexp regulariser."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of both critic encoders."""
    alpha_lr: float = 3e-4
    """Adam learning rate of log α."""
    initial_alpha: float = 1.0
    """Starting entropy temperature α (auto-tuned)."""
    target_entropy_per_action_dim: float = -0.5
    """Target entropy = this × action dimension."""

    # --- baselines (docs/method.md#baselines; unused by crl) ---
    relabel_probability: float = 0.8
    """sac, sac_her, td3_her: probability that a transition's goal is replaced by a future state of its trajectory (HER's "future" strategy); 0 keeps the commanded goal."""
    tau: float = 0.005
    """sac, sac_her, td3_her: Polyak rate of the target networks (target ← τ·online + (1 − τ)·target)."""
    policy_delay: int = 2
    """td3_her: actor and target updates once every this many critic updates."""
    exploration_noise: float = 0.1
    """td3_her: std of the Gaussian noise added to the deterministic action when collecting."""
    target_noise: float = 0.2
    """td3_her: std of the target policy smoothing noise."""
    target_noise_clip: float = 0.5
    """td3_her: the target policy smoothing noise is clipped to ±this."""

    # --- data ---
    dataset: str | None = None
    """Train from this dataset (`rlscale record`'s .npz) without collecting: offline CRL, or gcbc (docs/method.md#offline-training). The env-step clock runs as if collecting, so curves line up with online runs'."""
    batch_size: int = 512
    """Minibatch size of each SGD step (also the number of contrastive negatives + 1)."""
    num_envs: int = 512
    """Parallel environments collecting data."""
    unroll_length: int = 62
    """Steps each env collects per training step."""
    sgd_steps_per_collection: int = 800
    """Minibatch SGD steps after each collection (never silently reduced)."""
    max_replay_size: int = 10_000
    """Replay capacity, in time steps per env."""
    min_replay_size: int = 1_000
    """Steps per env collected before training starts."""
    gamma: float = 0.99
    """Discount of the geometric goal-offset law (crl, gcsl); the TD discount of sac, sac_her, td3_her."""
    window_length: int | None = None
    """Length of the sampled trajectory windows; default: episode_length."""

    # --- run ---
    total_env_steps: int = 100_000_000
    """Environment steps to train for (the run does at least this many; the exact count is reported)."""
    num_evals: int = 50
    """Number of epochs; each ends with an evaluation, a metrics row and a checkpoint."""
    num_eval_envs: int = 128
    """Fresh evaluation episodes per epoch (deterministic actor)."""
    seed: int = 0
    """Seed of every random draw of the run (init, envs, sampling, evaluation)."""
    run_dir: str | None = None
    """Run directory; default: runs/<env>_d<depth>_w<width>_b<batch>_s<seed>. Never overwritten."""
    checkpoint_every: int = 1
    """Save a checkpoint every this many epochs (the last epoch is always saved)."""
    keep_checkpoints: int = 5
    """How many checkpoints to keep (oldest deleted first); 0 keeps all."""
    save_buffer: bool = False
    """Also checkpoint the replay buffer and env states, so that a resumed run equals an uninterrupted one."""
    tensorboard: bool = True
    """Write TensorBoard event files in the run directory."""
    wandb: bool = False
    """Log to Weights & Biases (set WANDB_MODE=offline to log offline)."""
    wandb_project: str = "rlscale"

    @property
    def resolved_actor_depth(self) -> int:
        return self.actor_depth if self.actor_depth is not None else self.depth

    @property
    def resolved_critic_depth(self) -> int:
        return self.critic_depth if self.critic_depth is not None else self.depth

    @property
    def resolved_window_length(self) -> int:
        return self.window_length if self.window_length is not None else self.episode_length

    def collector_config(self) -> "TrainConfig":
        """The config of the collector of a collector run (``collector_depth``): this run's options at the
        collector's depth, as a run of its own that acts with its networks."""
        if self.collector_depth is None:
            raise ValueError("not a collector run: --collector-depth is not set")
        return dataclasses.replace(self, depth=self.collector_depth, actor_depth=None, critic_depth=None, collector_depth=None)

    def trunk(self, depth: int) -> TrunkConfig:
        return TrunkConfig.from_options(vars(self), depth)

    def network_trunk(self, network: Literal["actor", "critic"]) -> TrunkConfig:
        """The trunk of the ``"actor"`` or of both ``"critic"`` encoders, at its resolved depth."""
        depths = {"actor": self.resolved_actor_depth, "critic": self.resolved_critic_depth}
        if network not in depths:
            raise ValueError(f"unknown network {network!r}; valid: {', '.join(depths)}")
        return self.trunk(depths[network])

    def eval_task_name(self, spec=None) -> str:
        """The task the run evaluates on, the one resolution of it: ``--eval-env``, else the task's own choice
        (its ``TaskSpec.eval_task``: a maze's far-goal layout; docs/tasks.md). ``spec``: the training task's,
        when it is built already."""
        if self.eval_env is not None:
            return self.eval_env
        from rlscale import envs

        return (spec or envs.make(self.env).spec).eval_task

    def make_task(self, name: str | None = None):
        """The run's task (or the task ``name``, e.g. its eval task) built as in training: the one task builder
        from a config (the trainer, evaluation, recording and rendering all call it). The episode length and
        physics backend apply to every task; the stitching distance only to the training task itself."""
        from rlscale import envs

        overrides: dict[str, Any] = {"episode_length": self.episode_length}
        if self.backend is not None:
            overrides["backend"] = self.backend
        if self.stitch_max_goal_distance is not None and (name or self.env) == self.env:
            overrides["max_goal_distance"] = self.stitch_max_goal_distance
        return envs.make(name or self.env, **overrides)

    def scaling_knobs(self) -> dict[str, Any]:
        """The settings a scaling study varies, as one row of a results table."""
        return {
            "task": self.env,
            "algo": self.algo,
            "depth": self.depth,
            "actor_depth": self.resolved_actor_depth,
            "critic_depth": self.resolved_critic_depth,
            "width": self.width,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    def default_run_name(self) -> str:
        depth = (
            f"d{self.depth}"
            if self.actor_depth is None and self.critic_depth is None
            else f"a{self.resolved_actor_depth}c{self.resolved_critic_depth}"
        )
        algorithm = agents.get(self.algo)
        collector = "" if self.collector_depth is None else f"_col{self.collector_depth}"
        if self.dataset is not None:
            collector = algorithm.dataset_run_tag
        return f"{self.env}{algorithm.tag}_{depth}{collector}_w{self.width}_b{self.batch_size}_s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config", saved: bool = False) -> "TrainConfig":
        """The config of ``data`` (option: value), the one way a config is rebuilt: presets, sweep files,
        ``--resume``, ``rlscale plot``, loaded checkpoints. Options ``data`` lacks take their defaults (an
        option added since a run was saved; ``CONFIG_SCHEMA`` says when a default changed meaning). An
        unknown option is an error naming ``source``, except with ``saved=True``: a ``config.json`` or a
        checkpoint's config read to describe a saved run or to act with its policy (``rlscale plot``,
        ``rlscale eval``) drops the options of another version. Resuming a run stays strict. Options saved
        under an old name (``layer_norm``; ``rlscale.legacy_options``) are read under the new one."""
        data = upgrade_options(data, source)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown and not saved:
            raise ValueError(f"{source}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run will really do, derived once from the config."""

    prefill_env_steps: int
    env_steps_per_training_step: int
    training_steps_per_epoch: int
    num_epochs: int
    sgd_steps_per_training_step: int
    total_training_steps: int
    total_sgd_steps: int
    total_env_steps: int  # ≥ the requested total_env_steps

    def env_steps_after(self, epoch: int, training_steps: int = 0) -> int:
        """Env steps done once ``epoch`` epochs (0 = none, only the prefill) and ``training_steps`` of the next
        are complete."""
        return self.prefill_env_steps + (epoch * self.training_steps_per_epoch + training_steps) * self.env_steps_per_training_step

    def sgd_steps_after(self, epoch: int, training_steps: int = 0) -> int:
        return (epoch * self.training_steps_per_epoch + training_steps) * self.sgd_steps_per_training_step


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def validate(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` with a one-line message naming the first bad value."""
    from rlscale.agents import contrastive
    from rlscale.envs import names

    algorithm = agents.get(cfg.algo)
    if cfg.collector_depth is not None and not algorithm.collector_experiment:
        able = " or ".join(a for a in agents.names() if agents.get(a).collector_experiment)
        raise ValueError(f"--collector-depth is an experiment of --algo {able}; it cannot be combined with --algo {cfg.algo}")
    check_dataset_options(cfg)
    if cfg.stitch_max_goal_distance is not None:
        if not cfg.env.endswith("_stitch"):
            raise ValueError(f"--stitch-max-goal-distance is an option of the stitching tasks (*_stitch), not of {cfg.env!r}")
        from rlscale.envs.stitching import check_distance

        check_distance("--stitch-max-goal-distance", cfg.stitch_max_goal_distance)
    if cfg.env not in names():
        raise ValueError(f"unknown task {cfg.env!r}; valid tasks: {', '.join(names())}")
    if cfg.eval_env is not None and cfg.eval_env not in names():
        raise ValueError(f"unknown eval task {cfg.eval_env!r}; valid tasks: {', '.join(names())}")
    check_option("depth", cfg.depth, "--depth")
    check_option("depth", cfg.resolved_actor_depth, "--actor-depth")
    check_option("depth", cfg.resolved_critic_depth, "--critic-depth")
    if cfg.collector_depth is not None:
        check_option("depth", cfg.collector_depth, "--collector-depth")
    for name in TRUNK_OPTIONS:
        check_option(name, getattr(cfg, name), _flag(name))
    for name in (
        "episode_length", "repr_dim", "batch_size", "num_envs", "unroll_length",
        "sgd_steps_per_collection", "max_replay_size", "min_replay_size", "total_env_steps",
        "num_evals", "num_eval_envs", "checkpoint_every",
    ):
        check_positive(getattr(cfg, name), _flag(name))
    if cfg.energy not in contrastive.ENERGIES:
        raise ValueError(f"unknown energy {cfg.energy!r}; valid: {', '.join(contrastive.ENERGIES)}")
    if cfg.energy == "mrn" and cfg.repr_dim % 2:
        raise ValueError(
            f"--energy mrn needs an even --repr-dim (half asymmetric, half symmetric), got {cfg.repr_dim}"
        )
    if cfg.contrastive_loss not in contrastive.CONTRASTIVE_LOSSES:
        raise ValueError(
            f"unknown contrastive loss {cfg.contrastive_loss!r}; valid: {', '.join(contrastive.CONTRASTIVE_LOSSES)}"
        )
    if cfg.keep_checkpoints < 0:
        raise ValueError(f"--keep-checkpoints must be ≥ 0, got {cfg.keep_checkpoints}")
    if not 0.0 < cfg.gamma < 1.0:
        raise ValueError(f"--gamma must lie in (0, 1), got {cfg.gamma}")
    for name in ("actor_lr", "critic_lr", "alpha_lr", "initial_alpha"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{_flag(name)} must be positive, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.relabel_probability <= 1.0:
        raise ValueError(f"--relabel-probability must lie in [0, 1], got {cfg.relabel_probability}")
    if not 0.0 < cfg.tau <= 1.0:
        raise ValueError(f"--tau must lie in (0, 1], got {cfg.tau}")
    check_positive(cfg.policy_delay, "--policy-delay")
    for name in ("exploration_noise", "target_noise", "target_noise_clip"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{_flag(name)} must be ≥ 0, got {getattr(cfg, name)}")
    if cfg.logsumexp_penalty < 0:
        raise ValueError(f"--logsumexp-penalty must be ≥ 0, got {cfg.logsumexp_penalty}")
    window = cfg.resolved_window_length
    check_positive(window, "--window-length")
    if cfg.min_replay_size > cfg.max_replay_size:
        raise ValueError(f"--min-replay-size {cfg.min_replay_size} exceeds --max-replay-size {cfg.max_replay_size}")
    if window > cfg.min_replay_size:
        raise ValueError(
            f"the sampling window ({window} steps, --window-length or --episode-length) exceeds "
            f"--min-replay-size {cfg.min_replay_size}: windows could not be drawn when training starts"
        )
    if cfg.unroll_length > cfg.max_replay_size:
        raise ValueError(f"--unroll-length {cfg.unroll_length} exceeds --max-replay-size {cfg.max_replay_size}")
    buffer_steps = cfg.num_envs * cfg.min_replay_size
    if cfg.batch_size > buffer_steps:
        raise ValueError(
            f"--batch-size {cfg.batch_size} is larger than the buffer at the start of training "
            f"(--num-envs {cfg.num_envs} × --min-replay-size {cfg.min_replay_size} = {buffer_steps} steps)"
        )


def plan(cfg: TrainConfig) -> Plan:
    validate(cfg)
    prefill = cfg.num_envs * cfg.min_replay_size
    per_step = cfg.num_envs * cfg.unroll_length
    remaining = max(0, cfg.total_env_steps - prefill)
    training_steps = math.ceil(remaining / per_step)
    # At least one training step per epoch; round up so the run never does fewer steps than asked.
    per_epoch = max(1, math.ceil(training_steps / cfg.num_evals))
    total_training_steps = per_epoch * cfg.num_evals
    return Plan(
        prefill_env_steps=prefill,
        env_steps_per_training_step=per_step,
        training_steps_per_epoch=per_epoch,
        num_epochs=cfg.num_evals,
        sgd_steps_per_training_step=cfg.sgd_steps_per_collection,
        total_training_steps=total_training_steps,
        total_sgd_steps=total_training_steps * cfg.sgd_steps_per_collection,
        total_env_steps=prefill + total_training_steps * per_step,
    )


# --- presets ---------------------------------------------------------------------------------------


def preset_names() -> list[str]:
    folder = resources.files("rlscale.configs") / "tasks"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(task: str) -> dict[str, Any]:
    """The preset overrides of a task (empty when the task has no preset file)."""
    path = resources.files("rlscale.configs") / "tasks" / f"{task}.yaml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"preset configs/tasks/{task}.yaml must be a mapping of option: value")
    TrainConfig.from_dict({**data, "env": task}, source=f"configs/tasks/{task}.yaml")  # check the keys
    return data


# --- per-algorithm defaults -------------------------------------------------------------------------

def check_dataset_options(cfg: "TrainConfig") -> None:
    """The options a --dataset run (learner-only: it never acts) can and must combine with; the file itself
    is checked against the task by ``rlscale.data.datasets.check_fits``."""
    algorithm = agents.get(cfg.algo)
    if cfg.dataset is None:
        if algorithm.data == agents.registry.DATASET:
            raise ValueError(f"--algo {cfg.algo} learns from a fixed dataset: give --dataset FILE.npz (made by rlscale record)")
        return
    if algorithm.data == agents.registry.COLLECTS:
        able = " or ".join(a for a in agents.names() if agents.get(a).data != agents.registry.COLLECTS)
        hint = f" ({algorithm.dataset_hint})" if algorithm.dataset_hint else ""
        raise ValueError(f"--dataset trains --algo {able}, not {cfg.algo}{hint}")
    if cfg.collector_depth is not None:
        raise ValueError("--dataset and --collector-depth both say where the data comes from; give one")
    if cfg.save_buffer:
        raise ValueError("--save-buffer: a --dataset run's buffer is the dataset, reloaded on resume; there is nothing to save")


def algorithm_defaults(algo: str, below: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The options ``algo`` sets (its ``Algorithm.defaults``) on top of ``below`` (a preset's options over the
    paper defaults), leaving out those in ``overrides`` (set by the user)."""
    out = {}
    for option, value in agents.get(algo).defaults.items():
        if option in overrides:
            continue
        if isinstance(value, agents.Scaled):
            value = value.factor * below.get(option, getattr(TrainConfig, option))
        out[option] = value
    return out


def config_for(task: str, **overrides: Any) -> TrainConfig:
    """Paper defaults, then the task's preset, then the algorithm's defaults (``Algorithm.defaults``, for
    options not in ``overrides``), then ``overrides``."""
    preset = load_preset(task)
    algo = overrides.get("algo", TrainConfig.algo)
    return TrainConfig.from_dict({**preset, **algorithm_defaults(algo, preset, overrides), **overrides, "env": task})


