"""Rollouts you can watch and what the critic learned: trajectory pictures, critic maps, HTML viewer, video.

All of these take a checkpoint loaded with :func:`rlscale.evaluation.policy.load` and never train or write into it.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rlscale import envs
from rlscale.agents import contrastive
from rlscale.evaluation.policy import LoadedPolicy, make_eval_task
from rlscale.evaluation.rollout import rollout as episodes_rollout
from rlscale.networks import Critic, critic_log_temperature
from rlscale.storage.checkpoint import restore_raw
from rlscale.storage.run_dir import atomic_output


class RenderError(ValueError):
    pass


def rollout(policy: LoadedPolicy, task: envs.GoalTask, episodes: int, key: jax.Array, length: int | None = None):
    """Deterministic episodes (``key`` seeds the resets): ``(task_states [T+1, N, ...], active [T+1, N])``
    on the host, from :func:`rlscale.evaluation.rollout.rollout`, the rollout that evaluates."""
    length = length or task.spec.episode_length

    @jax.jit
    def run(params, key):
        return episodes_rollout(task, policy.act, params, key, episodes, length, trajectory=True)[1][:2]

    return jax.device_get(run(policy.actor_params, key))


def _maze(task: envs.GoalTask):
    layout = getattr(task, "maze", None)
    if layout is None:
        raise RenderError(f"task {task.spec.name!r} has no maze; trajectory pictures and critic maps need a maze task")
    return layout


def trajectories_figure(panels: list[tuple[str, LoadedPolicy]], task_name: str | None, episodes: int, key, path: Path):
    """One panel per (title, policy): the maze from above with ``episodes`` trajectories and their goals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from rlscale.envs.render import draw_maze, figure_size

    tasks = [make_eval_task(p, task_name) for _, p in panels]
    layout = _maze(tasks[0])
    width, height = figure_size(layout)
    fig = Figure(figsize=(width * len(panels), height), dpi=100)
    FigureCanvasAgg(fig)
    for k, ((title, policy), task) in enumerate(zip(panels, tasks)):
        states, active = rollout(policy, task, episodes, key)
        xy = np.asarray(states.obs[..., :2])  # maze tasks: the state starts with world x, y
        trajs = [xy[active[:, n], n] for n in range(episodes)]
        ax = fig.add_subplot(1, len(panels), k + 1)
        draw_maze(layout, trajectories=trajs, ax=ax, title=title)
        for n, goal in enumerate(np.asarray(states.goal[0])):
            ax.plot(goal[1], goal[0], "*", color=f"C{n % 10}", markersize=12, markeredgecolor="black", markeredgewidth=0.5)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _critic(policy: LoadedPolicy) -> tuple[Critic, dict]:
    """The critic of ``policy``'s checkpoint (``LoadedPolicy`` holds only the actor) and its parameters."""
    cfg = policy.train_config
    saved, _ = restore_raw(policy.run_dir, policy.step)
    critic_params = saved["learner"].get("critic_params", {})
    if "sa_encoder" not in critic_params:  # a contrastive critic's φ(s, a) encoder (CRL's); a Q critic has none
        raise RenderError(f"critic maps and embeddings draw a contrastive critic (φ(s, a), ψ(g)); {policy.run_dir} "
                          f"is a {cfg.algo} run, which has none")
    critic = Critic(cfg.network_trunk("critic"), cfg.repr_dim, cfg.energy)
    return critic, jax.tree.map(jnp.asarray, critic_params)


def _critic_values(policy: LoadedPolicy, task: envs.GoalTask, goal_xy: np.ndarray, resolution: float):
    """The critic's value f(s, π(s, g), g) on a grid over ``task``'s maze (NaN on walls), with the grid's
    x and y coordinates (``[len(xs), len(ys)]``, ``xs``, ``ys``)."""
    layout = _maze(task)
    critic, critic_params = _critic(policy)

    s = layout.scale
    rows, cols = layout.walls.shape
    xs = np.arange(-0.5 * s + resolution / 2, (rows - 0.5) * s, resolution)
    ys = np.arange(-0.5 * s + resolution / 2, (cols - 0.5) * s, resolution)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    cell = np.floor((grid + 0.5 * s) / s).astype(int)
    free = ~layout.walls[cell[:, 0], cell[:, 1]]
    # A typical state (a reset) with its x, y moved to each grid point; the goal is the goal's x, y.
    reference = task.reset(jax.random.PRNGKey(0))
    state_part = np.repeat(np.asarray(reference.obs[: policy.state_size])[None], len(grid), 0)
    state_part[:, :2] = grid
    goal = np.asarray(reference.goal).copy()
    goal[:2] = goal_xy
    goals = np.repeat(goal[None], len(grid), 0)

    @jax.jit
    def values(state, goal):
        action = policy.act(policy.actor_params, jnp.concatenate([state, goal], -1), None)
        sa, g = critic.apply({"params": critic_params}, state, action, goal)
        return contrastive.pair_energy(sa, g, policy.train_config.energy, critic_log_temperature(critic_params))

    value = np.asarray(values(jnp.asarray(state_part), jnp.asarray(goals)))
    image = np.full(len(grid), np.nan)
    image[free] = value[free]
    return image.reshape(len(xs), len(ys)), xs, ys


def critic_map_figure(panels: list[tuple[str, LoadedPolicy]], task_name: str | None,
                      goal_xy: tuple[float, float] | None, resolution: float = 0.5):
    """One panel per (title, policy) (a sweep: one per depth): the critic's value f(s, π(s, g), g) over the
    maze's free positions for one goal, every panel on the same colour scale so that depths compare
    (the paper's picture: shallow critics follow straight-line distance through walls, deep ones the maze)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from rlscale.envs.render import draw_maze, figure_size

    tasks = [make_eval_task(p, task_name) for _, p in panels]
    layout = _maze(tasks[0])
    others = sorted({_maze(t).name for t in tasks} - {layout.name})
    if others:
        raise RenderError(f"--critic-map compares runs on one maze; these runs evaluate on {layout.name} and "
                          f"{', '.join(others)}: choose one with --task")
    goal_xy = np.asarray(goal_xy if goal_xy is not None else layout.goals[-1], np.float32)
    maps = [_critic_values(policy, task, goal_xy, resolution) for (_, policy), task in zip(panels, tasks)]
    finite = np.concatenate([image[np.isfinite(image)] for image, _, _ in maps])
    scale = Normalize(vmin=float(finite.min()), vmax=float(finite.max()))
    width, height = figure_size(layout)
    fig = Figure(figsize=(width * len(panels) + 1.0, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, len(panels), k + 1) for k in range(len(panels))]
    for ax, (title, _), (image, xs, ys) in zip(axes, panels, maps):
        draw_maze(layout, ax=ax, title=title)
        mesh = ax.imshow(image, extent=(ys[0] - resolution / 2, ys[-1] + resolution / 2, xs[-1] + resolution / 2, xs[0] - resolution / 2),
                         cmap="viridis", norm=scale, alpha=0.85, zorder=2)
        ax.plot(goal_xy[1], goal_xy[0], "*", color="#d62728", markersize=14, markeredgecolor="black", zorder=3)
    fig.colorbar(mesh, ax=axes, label=f"f(s, π(s, g), g), goal ({goal_xy[0]:.1f}, {goal_xy[1]:.1f})")
    return fig


def critic_map(panels: list[tuple[str, LoadedPolicy]], task_name: str | None, goal_xy: tuple[float, float] | None,
               path: Path, resolution: float = 0.5) -> Path:
    """:func:`critic_map_figure`, written as a PNG at ``path`` (atomically)."""
    fig = critic_map_figure(panels, task_name, goal_xy, resolution)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _pca(points: np.ndarray, components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Principal directions ``[components, D]`` of ``points`` ``[N, D]`` and the fraction of the variance
    each explains."""
    centred = points - points.mean(0)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    return directions[:components], variance[:components] / max(float(variance.sum()), 1e-30)


def embeddings_figure(panels: list[tuple[str, LoadedPolicy]], task_name: str | None, episodes: int, key):
    """The critic's representations along deterministic evaluation episodes, one row per (title, policy):
    φ(s, π(s, g)) of each visited state (left) and ψ of each visited state's achieved goal (right),
    projected on the two principal directions of both sets together (one basis, so that distances between
    the panels' points are the critic's), coloured by the distance to the commanded goal; stars: ψ(g) of
    the commanded goals. The paper's Fig. 10 picture: a deep critic's φ spreads along the way to the goal."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.2 * len(panels)), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(hspace=0.45, wspace=0.3)
    for row, (title, policy) in enumerate(panels):
        task = make_eval_task(policy, task_name)
        states, active = rollout(policy, task, episodes, key)
        critic, critic_params = _critic(policy)
        obs = np.asarray(states.obs)[active]  # [visited states, obs]: every episode's active steps
        dist = np.asarray(states.metrics["dist"])[active]
        state_part, goal = obs[:, : policy.state_size], obs[:, policy.state_size :]
        achieved = task.goal_of(jnp.asarray(state_part))

        @jax.jit
        def encode(state, goal, achieved):
            action = policy.act(policy.actor_params, jnp.concatenate([state, goal], -1), None)
            apply = lambda method, *x: critic.apply({"params": critic_params}, *x, method=method)  # noqa: E731
            return apply(Critic.encode_sa, state, action), apply(Critic.encode_goal, achieved), apply(Critic.encode_goal, goal)

        sa, visited, commanded = (np.asarray(x, np.float64) for x in encode(jnp.asarray(state_part), jnp.asarray(goal), achieved))
        directions, explained = _pca(np.concatenate([sa, visited]))
        centre = np.concatenate([sa, visited]).mean(0)
        project = lambda x: (x - centre) @ directions.T  # noqa: E731
        colours = Normalize(vmin=0.0, vmax=float(dist.max()) or 1.0)
        first = None
        for col, (points, what) in enumerate(((sa, "φ(s, π(s, g))"), (visited, "ψ(achieved goal of s)"))):
            # Both panels of a row on the same axes: one basis, one scale.
            ax = fig.add_subplot(len(panels), 2, 2 * row + col + 1, sharex=first, sharey=first)
            first = first or ax
            xy = project(points)
            dots = ax.scatter(xy[:, 0], xy[:, 1], c=dist, cmap="viridis", norm=colours, s=6)
            stars = project(np.unique(commanded, axis=0))
            ax.plot(stars[:, 0], stars[:, 1], "*", color="#d62728", markersize=12, markeredgecolor="black")
            ax.set_title(f"{title}: {what}", fontsize=9)
            ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
            ax.set_ylabel(f"PC 2 ({explained[1]:.0%})" if len(explained) > 1 else "PC 2")
        fig.colorbar(dots, ax=fig.axes[-2:], label="distance to the commanded goal")
    return fig


def embeddings(panels: list[tuple[str, LoadedPolicy]], task_name: str | None, episodes: int, key, path: Path) -> Path:
    """:func:`embeddings_figure`, written as a PNG at ``path`` (atomically)."""
    fig = embeddings_figure(panels, task_name, episodes, key)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _brax_system(task: envs.GoalTask):
    system = getattr(task, "sys", None)
    if system is None and hasattr(task, "brax_env"):
        system = task.brax_env.sys
    return system


def _physics_frames(policy: LoadedPolicy, task: envs.GoalTask, episodes: int, key) -> list:
    """The physics states of deterministic episodes, one episode after the other (active steps only)."""
    states, active = rollout(policy, task, episodes, key)
    return [jax.tree.map(lambda x: x[t, n], states.sim) for n in range(episodes) for t in np.nonzero(active[:, n])[0]]


def render_html(policy: LoadedPolicy, task_name: str | None, episodes: int, key, path: Path) -> Path:
    """Brax's interactive trajectory viewer, the episodes one after the other."""
    from brax.io import html

    task = make_eval_task(policy, task_name)
    system = _brax_system(task)
    if system is None:
        raise RenderError(f"task {task.spec.name!r} is not simulated by Brax: --render needs a Brax task; use --trajectories for mazes")
    frames = _physics_frames(policy, task, episodes, key)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(html.render(system, frames))
    return path


def render_video(policy: LoadedPolicy, task_name: str | None, episodes: int, key, path: Path) -> Path:
    """An MP4 through MuJoCo's offscreen renderer, where one is available."""
    task = make_eval_task(policy, task_name)
    system = _brax_system(task)
    if system is None:
        raise RenderError(f"task {task.spec.name!r} is not simulated by Brax/MuJoCo: no video; use --trajectories")
    try:
        import imageio.v3 as iio  # noqa: F401
        import mujoco

        mujoco.Renderer(system.mj_model, 240, 320)
    except Exception as err:  # no GL context (set MUJOCO_GL=egl or osmesa), or imageio missing
        raise RenderError(
            f"no offscreen renderer available for --video ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}); "
            "install imageio[ffmpeg] and set MUJOCO_GL=egl (GPU) or MUJOCO_GL=osmesa, or use --render out.html"
        ) from None
    from brax.io import image

    frames = _physics_frames(policy, task, episodes, key)
    pixels = image.render_array(system, frames, 240, 320)
    with atomic_output(path) as tmp:
        iio.imwrite(tmp, np.asarray(pixels), extension=".mp4", fps=int(round(1 / task.dt)) if hasattr(task, "dt") else 20)
    return path
