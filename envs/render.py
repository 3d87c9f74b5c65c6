"""Top-down pictures of the maze tasks (point, ant and humanoid mazes), drawn with matplotlib's Agg canvas.

The picture reads like the layouts in :mod:`rlscale.envs.mazes`: layout columns (world y) run left to right and
layout rows (world x) top to bottom, so world x points *down*. Walls are dark, the start cell blue, goal
cells green; a commanded goal is a red star and each trajectory (an array of world x, y rows) a line
from a circle (start) to a cross (end).

    from rlscale.envs.render import draw_maze, save_maze_png
    save_maze_png("ant_big_maze", "big_maze.png")
    fig = draw_maze(task.maze, trajectories=[xy_0, xy_1], goal=goal_xy, path="episode.png")

No pyplot: figures are made directly (never shown, no global backend switch), so this works headless
and inside notebooks alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from rlscale.envs.mazes import Maze

CELL_INCHES = 0.5  # figure inches per maze cell
MARGIN_INCHES = (1.0, 0.8)  # extra width, height for axis labels
WALL_COLOUR = "#4a4a4a"
START_COLOUR = "#9ecae1"
GOAL_COLOUR = "#a1d99b"


def figure_size(maze: Maze) -> tuple[float, float]:
    """Width and height in inches of :func:`draw_maze`'s own figure (PNG pixels = these × dpi)."""
    rows, cols = maze.walls.shape
    return cols * CELL_INCHES + MARGIN_INCHES[0], rows * CELL_INCHES + MARGIN_INCHES[1]


def maze_of(task_name: str) -> Maze:
    """The maze of a registered maze task (``ValueError`` for tasks without one)."""
    from rlscale import envs

    layout = getattr(envs.make(task_name), "maze", None)
    if layout is None:
        raise ValueError(f"task {task_name!r} has no maze; maze tasks: point_*, ant_*_maze*, humanoid_*_maze*")
    return layout


def _cell(ax: Axes, maze: Maze, i: int, j: int, colour: str) -> None:
    s = maze.scale
    ax.add_patch(Rectangle((s * (j - 0.5), s * (i - 0.5)), s, s, facecolor=colour, edgecolor="none"))


def draw_maze(
    maze: Maze | str,
    trajectories: Sequence[np.ndarray] | None = None,
    goal: np.ndarray | Sequence[float] | None = None,
    path: str | Path | None = None,
    ax: Axes | None = None,
    *,
    dpi: int = 100,
    title: str | None = None,
) -> Figure:
    """Draw ``maze`` (a :class:`~envs.mazes.Maze` or a maze task's name) from above.

    ``trajectories``: arrays whose rows start with world x, y (more columns are ignored). ``goal``: a
    commanded goal (world x, y, …). ``path``: also save the figure there as a PNG. ``ax``: draw into these
    axes instead of a new figure. Returns the figure.
    """
    if isinstance(maze, str):
        title = maze if title is None else title
        maze = maze_of(maze)
    if ax is None:
        fig = Figure(figsize=figure_size(maze), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    s = maze.scale
    rows, cols = maze.walls.shape
    start_cell = tuple(np.round(maze.start / s).astype(int))
    for i, j in np.argwhere(maze.walls):
        _cell(ax, maze, i, j, WALL_COLOUR)
    for x, y in maze.goals:
        _cell(ax, maze, round(x / s), round(y / s), GOAL_COLOUR)
    _cell(ax, maze, *start_cell, START_COLOUR)
    ax.text(maze.start[1], maze.start[0], "R", ha="center", va="center", fontsize=9, color="#08519c")
    for k, traj in enumerate(trajectories or []):
        xy = np.asarray(traj, dtype=float).reshape(len(traj), -1)[:, :2]
        colour = f"C{k % 10}"
        ax.plot(xy[:, 1], xy[:, 0], color=colour, linewidth=1.2)
        ax.plot(xy[0, 1], xy[0, 0], "o", color=colour, markersize=4)
        ax.plot(xy[-1, 1], xy[-1, 0], "x", color=colour, markersize=6)
    if goal is not None:
        g = np.asarray(goal, dtype=float)
        ax.plot(g[1], g[0], "*", color="#d62728", markersize=14, markeredgecolor="black", markeredgewidth=0.5)
    ax.set_xlim(-0.5 * s, (cols - 0.5) * s)
    ax.set_ylim((rows - 0.5) * s, -0.5 * s)  # world x downwards, as the layout is written
    ax.set_aspect("equal")
    ax.set_xlabel("y (m)")
    ax.set_ylabel("x (m)")
    ax.set_title(title or maze.name, fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def save_maze_png(
    task_name: str,
    path: str | Path,
    trajectories: Sequence[np.ndarray] | None = None,
    goal: np.ndarray | Sequence[float] | None = None,
    dpi: int = 100,
) -> Path:
    """Write a top-down PNG of a maze task (size: :func:`figure_size` × ``dpi`` pixels); returns the path."""
    path = Path(path)
    draw_maze(task_name, trajectories, goal, path=path, dpi=dpi)
    return path


def to_rgb_array(fig: Figure) -> np.ndarray:
    """The figure's pixels as an (height, width, 3) uint8 array."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
