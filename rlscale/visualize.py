"""Rollouts you can watch and what the critic learned: trajectory pictures, critic maps, HTML viewer, video.

All of these take a checkpoint loaded with :func:`rlscale.policy.load` and never train or write into it.
"""

from __future__ import annotations

from pathlib import Path
import jax
import jax.numpy as jnp
import numpy as np

from rlscale import envs
from rlscale import losses
from rlscale.checkpoint import restore_raw
from rlscale.networks import Critic, critic_log_temperature
from rlscale.policy import LoadedPolicy, make_eval_task, trunk_config
from rlscale.rollout import rollout as episodes_rollout
from rlscale.run_dir import atomic_output


class RenderError(ValueError):
    pass


def rollout(policy: LoadedPolicy, task: envs.GoalTask, episodes: int, key: jax.Array, length: int | None = None):
    """Deterministic episodes (``key`` seeds the resets): ``(task_states [T+1, N, ...], active [T+1, N])``
    on the host, from :func:`rlscale.rollout.rollout`, the rollout that evaluates."""
    length = length or task.spec.episode_length

    @jax.jit
    def run(params, key):
        return episodes_rollout(task, policy.act, params, key, episodes, length, trajectory=True)[1]

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


def critic_map(policy: LoadedPolicy, task_name: str | None, goal_xy: tuple[float, float] | None, path: Path,
               resolution: float = 0.5) -> Path:
    """f(s, π(s, g), g), the critic's value under its energy (−‖φ − ψ‖ by default), over the maze's free
    positions, for one goal."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from rlscale.envs.render import draw_maze, figure_size

    task = make_eval_task(policy, task_name)
    layout = _maze(task)
    goal_xy = np.asarray(goal_xy if goal_xy is not None else layout.goals[-1], np.float32)
    saved, _ = restore_raw(policy.run_dir, policy.step)
    cfg = policy.config
    trunk = trunk_config(cfg, "critic")
    critic = Critic(trunk, cfg["repr_dim"], cfg["energy"])
    critic_params = jax.tree.map(jnp.asarray, saved["learner"]["critic_params"])

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
        return losses.pair_energy(sa, g, cfg["energy"], critic_log_temperature(critic_params))

    value = np.asarray(values(jnp.asarray(state_part), jnp.asarray(goals)))
    image = np.full(len(grid), np.nan)
    image[free] = value[free]
    image = image.reshape(len(xs), len(ys))
    width, height = figure_size(layout)
    fig = Figure(figsize=(width + 1.0, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw_maze(layout, ax=ax, title=f"critic value, goal ({goal_xy[0]:.1f}, {goal_xy[1]:.1f}), depth {trunk.depth}")
    mesh = ax.imshow(image, extent=(ys[0] - resolution / 2, ys[-1] + resolution / 2, xs[-1] + resolution / 2, xs[0] - resolution / 2),
                     cmap="viridis", alpha=0.85, zorder=2)
    ax.plot(goal_xy[1], goal_xy[0], "*", color="#d62728", markersize=14, markeredgecolor="black", zorder=3)
    fig.colorbar(mesh, ax=ax, label="f(s, π(s, g), g)")
    fig.tight_layout()
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
