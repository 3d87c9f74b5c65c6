"""Goal-conditioned tasks and their registry: ``envs.make(name, **overrides)``, ``envs.names()``."""

from __future__ import annotations

from typing import Any, Callable

from envs.base import GoalTask, TaskSpec, TaskState
from envs.wrappers import EpisodeEnv, EpisodeState, StepInfo

_POINT_LAYOUTS = ("u_maze", "big_maze", "hardest_maze", "u4_maze", "u5_maze")


def _point(layout: str, eval_layout: str | None) -> Callable[..., GoalTask]:
    def build(**overrides: Any) -> GoalTask:
        from envs.point_maze import PointMaze

        return PointMaze(layout, eval_task=f"point_{eval_layout}" if eval_layout else None, **overrides)

    return build


def _brax(cls_name: str) -> Callable[..., GoalTask]:
    def build(**overrides: Any) -> GoalTask:
        from envs import brax_tasks  # Brax is imported only when a Brax task is built.

        return getattr(brax_tasks, cls_name)(**overrides)

    return build


_REGISTRY: dict[str, Callable[..., GoalTask]] = {}
for _layout in _POINT_LAYOUTS:
    _eval_layout = f"{_layout}_eval" if _layout != "hardest_maze" else None
    _REGISTRY[f"point_{_layout}"] = _point(_layout, _eval_layout)
    if _eval_layout:
        _REGISTRY[f"point_{_eval_layout}"] = _point(_eval_layout, _eval_layout)
_REGISTRY["point_open_room"] = _point("open_room", None)
_REGISTRY["ant"] = _brax("AntGoal")
_REGISTRY["reacher"] = _brax("ReacherGoal")


def names() -> list[str]:
    """Every registered task name, sorted."""
    return sorted(_REGISTRY)


def make(name: str, **overrides: Any) -> GoalTask:
    """Build a task by name; ``overrides`` go to its constructor (e.g. ``episode_length=100``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(names())}")
    try:
        return _REGISTRY[name](**overrides)
    except TypeError as err:
        raise ValueError(f"bad override for task {name!r}: {err}") from None


__all__ = ["EpisodeEnv", "EpisodeState", "GoalTask", "StepInfo", "TaskSpec", "TaskState", "make", "names"]
