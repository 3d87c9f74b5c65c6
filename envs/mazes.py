"""Maze layouts shared by the point, ant and humanoid maze tasks (docs/tasks.md#maze-layouts).

``#`` wall, ``R`` start cell, ``G`` goal cell, ``.`` free cell. Cell (row i, column j) has its centre at
world ``(x, y) = (scale * i, scale * j)``: rows map to x, columns to y, as in the paper's code.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MAZE_SCALE = 4.0  # ant and point mazes: metres per cell
HUMANOID_MAZE_SCALE = 2.0  # humanoid mazes (docs/tasks.md#humanoid-mazes)

LAYOUTS: dict[str, str] = {
    "u_maze": """
#####
#RGG#
###G#
#GGG#
#####""",
    "u_maze_eval": """
#####
#R..#
###.#
#GGG#
#####""",
    "big_maze": """
########
#RG##GG#
#GG#GGG#
##GGG###
#GG#GGG#
#G#GG#G#
#GGG#GG#
########""",
    "big_maze_eval": """
########
#R.##GG#
#..#..G#
##...###
#..#...#
#.#G.#G#
#.GG#GG#
########""",
    "hardest_maze": """
############
#RGGG#GGGGG#
#G##G#G#G#G#
#GGGGGG#GGG#
#G####G###G#
#GG#G#GGGGG#
##G#G#G#G###
#GG#GGG#GGG#
############""",
    "u4_maze": """
#####
#GGG#
#R#G#
###G#
#G#G#
#GGG#
#####""",
    "u4_maze_eval": """
#####
#...#
#R#.#
###.#
#G#.#
#GGG#
#####""",
    "u5_maze": """
########
#GGGGGG#
#R####G#
######G#
#G####G#
#GGGGGG#
########""",
    "u5_maze_eval": """
########
#......#
#R####.#
######.#
#G####G#
#GGGGGG#
########""",
    # The humanoid mazes' far-goal layout of big_maze: one goal cell more than the ant's (cell (2, 5);
    # docs/tasks.md#humanoid-mazes).
    "humanoid_big_maze_eval": """
########
#R.##GG#
#..#.GG#
##...###
#..#...#
#.#G.#G#
#.GG#GG#
########""",
    # An open 5x5 room with the start in the middle; every free cell is a goal.
    "open_room": """
#######
#GGGGG#
#GGGGG#
#GGRGG#
#GGGGG#
#GGGGG#
#######""",
}


@dataclasses.dataclass(frozen=True)
class Maze:
    name: str
    walls: np.ndarray  # bool [rows, cols]
    start: np.ndarray  # world xy of the R cell
    goals: np.ndarray  # world xy of each G cell, row-major
    scale: float = MAZE_SCALE

    @property
    def free_cells(self) -> np.ndarray:
        """World xy of every non-wall cell centre, row-major."""
        rows, cols = np.nonzero(~self.walls)
        return np.stack([rows, cols], axis=1).astype(np.float32) * self.scale


def maze(layout: str, scale: float = MAZE_SCALE) -> Maze:
    """The layout named ``layout`` with cells ``scale`` metres wide."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown maze layout {layout!r}; valid layouts: {', '.join(sorted(LAYOUTS))}")
    rows = LAYOUTS[layout].strip("\n").splitlines()
    grid = np.array([list(r) for r in rows])
    walls = grid == "#"
    start = np.argwhere(grid == "R")
    goals = np.argwhere(grid == "G")
    if len(start) != 1 or len(goals) == 0 or not walls[[0, -1], :].all() or not walls[:, [0, -1]].all():
        raise ValueError(f"layout {layout!r} needs one R cell, at least one G cell and a wall border")
    return Maze(
        name=layout,
        walls=walls,
        start=start[0].astype(np.float32) * scale,
        goals=goals.astype(np.float32) * scale,
        scale=scale,
    )
