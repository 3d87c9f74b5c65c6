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
        return self.free_cell_indices.astype(np.float32) * self.scale

    @property
    def free_cell_indices(self) -> np.ndarray:
        """(row, column) of every non-wall cell, row-major (the order of :attr:`free_cells`)."""
        return np.argwhere(~self.walls)

    @property
    def start_index(self) -> int:
        """Position of the R cell in :attr:`free_cells`."""
        cell = np.round(self.start / self.scale).astype(int)
        return int(np.flatnonzero((self.free_cell_indices == cell).all(axis=1))[0])


def cell_distances(walls: np.ndarray) -> np.ndarray:
    """Shortest-path distances in cells between every two free cells of a grid (``walls``: bool [rows, cols]).

    Breadth-first search over the 4-connected free cells. Returns int [n, n] with n free cells in
    row-major order (that of :attr:`Maze.free_cells`); -1 where a cell cannot reach the other.
    """
    walls = np.asarray(walls, dtype=bool)
    cells = np.argwhere(~walls)
    index = {tuple(c): i for i, c in enumerate(cells.tolist())}
    out = np.full((len(cells), len(cells)), -1, dtype=np.int64)
    for source, cell in enumerate(cells.tolist()):
        out[source, source] = 0
        frontier = [tuple(cell)]
        while frontier:
            nxt = []
            for r, c in frontier:
                for neighbour in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                    j = index.get(neighbour)
                    if j is not None and out[source, j] < 0:
                        out[source, j] = out[source, index[(r, c)]] + 1
                        nxt.append(neighbour)
            frontier = nxt
    return out


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
