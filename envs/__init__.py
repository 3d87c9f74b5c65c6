"""Goal-conditioned tasks and their registry: ``envs.make(name, **overrides)``, ``envs.names()``."""

from __future__ import annotations

from typing import Any, Callable

from rlscale.envs.base import GoalTask, TaskSpec, TaskState
from rlscale.envs.wrappers import EpisodeEnv, EpisodeState, StepInfo

_POINT_LAYOUTS = ("u_maze", "big_maze", "hardest_maze", "u4_maze", "u5_maze")


def _point(layout: str, eval_layout: str | None, inertial: bool = False) -> Callable[..., GoalTask]:
    prefix = "point_inertia_" if inertial else "point_"

    def build(**overrides: Any) -> GoalTask:
        from rlscale.envs.point_maze import InertialPointMaze, PointMaze

        cls = InertialPointMaze if inertial else PointMaze
        return cls(layout, eval_task=f"{prefix}{eval_layout}" if eval_layout else None, **overrides)

    return build


def _brax(cls_name: str) -> Callable[..., GoalTask]:
    def build(**overrides: Any) -> GoalTask:
        from rlscale.envs import brax_tasks  # Brax is imported only when a Brax task is built.

        return getattr(brax_tasks, cls_name)(**overrides)

    return build


_REGISTRY: dict[str, Callable[..., GoalTask]] = {}
for _layout in _POINT_LAYOUTS:
    _eval_layout = f"{_layout}_eval" if _layout != "hardest_maze" else None
    for _inertial, _prefix in ((False, "point_"), (True, "point_inertia_")):
        _REGISTRY[f"{_prefix}{_layout}"] = _point(_layout, _eval_layout, _inertial)
        if _eval_layout:
            _REGISTRY[f"{_prefix}{_eval_layout}"] = _point(_eval_layout, _eval_layout, _inertial)
_REGISTRY["point_open_room"] = _point("open_room", None)
_REGISTRY["ant"] = _brax("AntGoal")
_REGISTRY["reacher"] = _brax("ReacherGoal")
_REGISTRY["pusher"] = _brax("PusherGoal")


# --- ant mazes and humanoids (docs/tasks.md#ant-mazes, #humanoid, #humanoid-mazes); each ant maze evaluates on its far-goal layout ---
def _ant_maze(layout: str, eval_layout: str | None) -> Callable[..., GoalTask]:
    def build(**overrides: Any) -> GoalTask:
        from rlscale.envs.ant_maze import AntMaze

        return AntMaze(layout, eval_task=f"ant_{eval_layout}" if eval_layout else None, **overrides)

    return build


def _humanoid(layout: str | None, eval_task: str | None) -> Callable[..., GoalTask]:
    def build(**overrides: Any) -> GoalTask:
        from rlscale.envs import humanoid

        if layout is None:
            return humanoid.Humanoid(**overrides)
        return humanoid.HumanoidMaze(layout, eval_task=eval_task, **overrides)

    return build


for _layout in _POINT_LAYOUTS:  # the ant mazes have the point mazes' layouts
    _eval_layout = f"{_layout}_eval" if _layout != "hardest_maze" else None
    _REGISTRY[f"ant_{_layout}"] = _ant_maze(_layout, _eval_layout)
    if _eval_layout:
        _REGISTRY[f"ant_{_eval_layout}"] = _ant_maze(_eval_layout, _eval_layout)
_REGISTRY["humanoid"] = _humanoid(None, None)
# The humanoid mazes evaluate on their training layout, as the paper's runs did (docs/tasks.md#humanoid-mazes);
# their far-goal layouts are tasks of their own (--eval-env humanoid_u_maze_eval).
_REGISTRY["humanoid_u_maze"] = _humanoid("u_maze", "humanoid_u_maze")
_REGISTRY["humanoid_u_maze_eval"] = _humanoid("u_maze_eval", "humanoid_u_maze_eval")
_REGISTRY["humanoid_big_maze"] = _humanoid("big_maze", "humanoid_big_maze")
_REGISTRY["humanoid_big_maze_eval"] = _humanoid("humanoid_big_maze_eval", "humanoid_big_maze_eval")
# --- end of ant mazes and humanoids ---


# --- stitching mazes (docs/tasks.md#stitching-mazes): short training pairs, far evaluation goals ---
def _stitch(robot: str, layout: str, evaluation: bool) -> Callable[..., GoalTask]:
    def build(**overrides: Any) -> GoalTask:
        from rlscale.envs import stitching

        return (stitching.stitch_eval_task if evaluation else stitching.stitch_task)(robot, layout, **overrides)

    return build


for _robot in ("point", "point_inertia", "ant"):
    _REGISTRY[f"{_robot}_u_maze_stitch"] = _stitch(_robot, "u_maze", False)
    _REGISTRY[f"{_robot}_u_maze_stitch_eval"] = _stitch(_robot, "u_maze", True)
# --- end of stitching mazes ---


# --- the arm family on MJX (docs/tasks.md#arm-tasks) ---
def _arm(name: str) -> Callable[..., GoalTask]:
    def build(**overrides: Any) -> GoalTask:
        from rlscale.envs.arm import ArmTask  # MuJoCo/MJX is imported only when an arm task is built.

        return ArmTask(name, **overrides)

    return build


for _name in ("arm_reach", "arm_push_easy", "arm_push_hard", "arm_binpick_easy", "arm_binpick_hard"):
    _REGISTRY[_name] = _arm(_name)
# --- end of the arm family ---


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


def default_eval_task(name: str) -> str:
    """The task that ``name`` evaluates on when no eval task is given (its ``TaskSpec.eval_task``, the one
    place this is decided): mazes their far-goal ``*_eval`` layout, but the humanoid mazes their training
    layout (as the paper's runs); other tasks themselves."""
    return make(name).spec.eval_task


__all__ = ["EpisodeEnv", "EpisodeState", "GoalTask", "StepInfo", "TaskSpec", "TaskState", "default_eval_task", "make", "names"]


# --- gymnasium ids (envs/gym_adapter.py): registered by name only, nothing is built or imported here ---
def gym_id(name: str) -> str:
    """The gymnasium id of a task: ``point_u_maze`` → ``rlscale/PointUMaze-v0``."""
    return "rlscale/" + "".join(part[:1].upper() + part[1:] for part in name.split("_")) + "-v0"


def _register_gymnasium() -> None:
    try:
        import gymnasium
    except ImportError:  # an image without gymnasium (the GPU device's): no registry to put ids in
        return

    for name in _REGISTRY:
        if gym_id(name) not in gymnasium.registry:
            gymnasium.register(
                id=gym_id(name),
                entry_point="rlscale.envs.gym_adapter:GoalTaskEnv",
                vector_entry_point="rlscale.envs.gym_adapter:GoalTaskVectorEnv",
                kwargs={"task": name},
            )


_register_gymnasium()
# --- end of gymnasium ids ---
