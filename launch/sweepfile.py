"""Sweep files: a compiler from a YAML grid to a deterministic, ordered list of runs.

A sweep file (``configs/sweeps/*.yaml``) has these keys:

``name``
    Folder of the sweep under the runs root (default: the file's stem).
``base``
    ``TrainConfig`` options shared by every run.
``grid``
    Axes (any ``TrainConfig`` option) mapped to lists of values; the runs are their product.
``zip``
    A list of groups; each group maps axes to equal-length lists whose i-th entries go together
    (e.g. a task and its env-step budget). Each group is one more factor of the product.
``exclude``
    A list of partial assignments (``{env: humanoid, depth: 64}``); runs matching one are dropped.
``launcher``
    Defaults for ``rlscale sweep`` (backend, workers, Ray and Slurm settings; see :class:`Launcher`).
``reference_study``
    The name of a study shipped with rlscale (``configs/studies/<name>.json``, ``rlscale.analysis.sweeps.load_study``)
    whose curves and verdict the sweep's ``summary.png`` draws beside the sweep's own runs.

The factors of the product (grid axes and zip groups) nest in the order they appear in the file, the
first one varying slowest. Every error names the file and line of the bad key or value.

Unregistered tasks: :func:`expand` never validates, so a sweep over tasks that are not registered yet
(the paper's Brax tasks) still parses and expands. :func:`check` validates every run with
``rlscale.config.validate``; a run whose task is not registered is reported apart from the other
errors (:attr:`Check.unregistered`), its other options validated as far as possible. ``rlscale sweep
--dry-run`` lists such runs with a note; launching them is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from rlscale.config import CONFIG_SCHEMA, Plan, TrainConfig, config_for, plan
from rlscale.legacy_options import LEGACY_OPTIONS, legacy_form, upgrade_options

TOP_KEYS = ("name", "description", "base", "grid", "zip", "exclude", "launcher", "reference_study")
FIELDS: dict[str, Any] = typing.get_type_hints(TrainConfig)
FIELD_ORDER = [f.name for f in dataclasses.fields(TrainConfig)]
# Options a sweep may not set: the launcher owns the run directories.
RESERVED = {"run_dir": "run directories are chosen by the launcher (<runs root>/<sweep name>/<run name>_<id>)"}
# Options that change how a run is computed, logged or saved, not what it trains and measures: they do not
# enter its id, and a run directory saved with other values of them still holds the same experiment.
NOT_EXPERIMENT = frozenset({
    "run_dir", "scan_blocks", "scan_unroll", "remat", "remat_policy",
    "checkpoint_every", "keep_checkpoints", "save_buffer", "tensorboard", "wandb", "wandb_project",
})
BACKENDS = ("local", "ray", "slurm")
SLURM_CLUSTERS = ("slurm", "local", "debug")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class SweepError(ValueError):
    """A bad sweep file or option; the message is one line naming the file and line."""


# --- reading YAML with line numbers ------------------------------------------------------------


class _Source:
    """The parsed file and the line of every key and value in it, addressed by path tuples."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.value_lines: dict[tuple, int] = {}
        self.key_lines: dict[tuple, int] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise SweepError(f"{path}{line}: invalid YAML: {problem}") from None
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple) -> None:
        self.value_lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise SweepError(f"{self.path}:{line}: duplicate key {key!r} (first at line {seen[key]})")
                seen[key] = line
                self.key_lines[path + (key,)] = line
                self._walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, path + (i,))

    def line(self, path: tuple, key: bool = False) -> int | None:
        """Line of the value at ``path`` (of its key with ``key=True``), else of the closest parent."""
        path = tuple(str(p) if not isinstance(p, int) else p for p in path)
        while path:
            table = self.key_lines if key else self.value_lines
            if path in table:
                return table[path]
            path = path[:-1]
            key = False
        return self.value_lines.get(())

    def error(self, path: tuple, message: str, key: bool = False) -> SweepError:
        line = self.line(path, key)
        return SweepError(f"{self.path}{f':{line}' if line else ''}: {message}")


# --- option values -----------------------------------------------------------------------------


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}.get(
        hint, str(hint)
    )


def _coerce(hint: Any, value: Any) -> tuple[bool, Any]:
    """``(ok, value)``: whether ``value`` fits the type ``hint``, and the value normalised to it.

    Integers given for float options become floats (so that ``gamma: 1`` and ``gamma: 1.0`` give one
    run id), and strings such as ``3e-4`` (YAML 1.1 reads exponents without a dot as strings) become
    numbers.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, out = _coerce(arg, value)
            if ok:
                return True, out
        return False, value
    if origin is Literal:
        return value in typing.get_args(hint), value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return isinstance(value, (int, float)) and not isinstance(value, bool), float(value) if isinstance(
            value, (int, float)
        ) and not isinstance(value, bool) else value
    if hint is str:
        return isinstance(value, str), value
    return True, value


def _option_value(src: _Source, path: tuple, option: str, value: Any, written: Any = None) -> Any:
    """The value of ``option`` given in the file as ``value`` under the key ``written`` (default: the
    option's name); under an old name (:data:`LEGACY_OPTIONS`) an old value, read as the new one."""
    if isinstance(written, str) and written in LEGACY_OPTIONS:
        old_values = tuple(LEGACY_OPTIONS[written][1])
        hint = bool if all(isinstance(v, bool) for v in old_values) else Literal[old_values]
        ok, _ = _coerce(hint, value)
        if not ok:
            raise src.error(path, f"{written}: {value!r} is not {_describe(hint)}")
        return upgrade_options({written: value}, str(src.path))[option]
    ok, out = _coerce(FIELDS[option], value)
    if not ok:
        raise src.error(path, f"{option}: {value!r} is not {_describe(FIELDS[option])}")
    return out


def _option_name(src: _Source, path: tuple, option: Any) -> str:
    """The ``TrainConfig`` option of the file's key ``option``: itself, or the new name of an old one."""
    if isinstance(option, str) and option in LEGACY_OPTIONS:
        return LEGACY_OPTIONS[option][0]
    if not isinstance(option, str) or option not in FIELDS:
        close = difflib.get_close_matches(str(option), FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; valid options: {', '.join(FIELD_ORDER)}"
        raise src.error(path, f"unknown option {option!r} in {'.'.join(str(p) for p in path[:-1])}{hint}", key=True)
    if option in RESERVED:
        raise src.error(path, f"{option} cannot be set in a sweep: {RESERVED[option]}", key=True)
    return option


def _mapping(src: _Source, path: tuple, value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise src.error(path, f"{what} must be a mapping, got {type(value).__name__}")
    return value


# --- launcher settings -------------------------------------------------------------------------


def _is_int(v: Any, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def _parse_minutes(value: Any) -> int | None:
    """Minutes from an integer or ``[D-]HH:MM[:SS]``; ``None`` when not understood."""
    if _is_int(value, 1):
        return value
    if not isinstance(value, str):
        return None
    if value.strip().isdigit():
        return int(value) or None
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?", value.strip())
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    total = days * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    return total if total > 0 else None


@dataclasses.dataclass(frozen=True)
class Check:
    """The values a launcher setting takes: ``test(value)``, described for errors (``<where> <value> is
    not <description>``, in the sweep file and on the command line alike); ``choices`` for the flag."""

    test: Callable[[Any], bool]
    description: str
    choices: tuple[str, ...] | None = None


def _one_of(values: tuple[str, ...]) -> Check:
    return Check(lambda v: v in values, f"one of {', '.join(values)}", values)


def _integer(low: int) -> Check:
    return Check(lambda v: _is_int(v, low), "a positive integer" if low == 1 else f"an integer ≥ {low}")


def _or_none(check: Check, description: str | None = None) -> Check:
    return Check(lambda v: v is None or check.test(v), description or check.description)


_NUMBER = Check(_is_number, "a number ≥ 0")
_STRING = Check(lambda v: isinstance(v, str), "a string")


@dataclasses.dataclass(frozen=True)
class Flag:
    """The ``rlscale sweep`` option that overrides a launcher setting (``launch.launcher.build_parser``).
    One flag may set settings of several backends: give each the same flag, the help is the first one's;
    with ``backend``, the flag sets that setting only when the sweep runs on that backend."""

    name: str
    help: str
    backend: str | None = None


_GPUS_PER_RUN = Flag("--gpus-per-run", "ray: num_gpus per run (fractions share a GPU); slurm: GPUs per job")
_CPUS_PER_RUN = Flag("--cpus-per-run", "ray: num_cpus per run; slurm: CPUs per job")


def _setting(default: Any, check: Check, flag: Flag | None = None) -> Any:
    """A launcher setting declared once: its default (a mapping is copied for each instance), the check of
    its values (sweep file and command line) and the command-line flag that overrides it, if any."""
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata={"check": check, "flag": flag})
    return dataclasses.field(default=default, metadata={"check": check, "flag": flag})


@dataclasses.dataclass
class Ray:
    address: str | None = _setting(
        None,
        _or_none(_STRING, "a string (e.g. auto or ray://host:10001)"),
        Flag("--ray-address", "Ray cluster address (default: start a local Ray instance)"),
    )
    """Cluster to connect to (``auto``, ``ray://host:10001``); default: start a local Ray instance."""
    num_gpus: float | None = _setting(None, _or_none(_NUMBER), _GPUS_PER_RUN)
    """GPUs per run (fractions share a GPU); default: 1 when the cluster has GPUs, else 0."""
    num_cpus: float = _setting(1, _NUMBER, _CPUS_PER_RUN)
    max_retries: int = _setting(3, _integer(-1), Flag("--max-retries", "ray: retries of a run whose worker died"))
    """Retries of a run whose worker process died (-1: forever)."""


@dataclasses.dataclass
class Slurm:
    cluster: str = _setting(
        "slurm", _one_of(SLURM_CLUSTERS), Flag("--slurm-cluster", "submitit executor (local: this machine)")
    )
    """submitit executor: slurm, or local/debug to run the same code path on this machine."""
    partition: str | None = _setting(None, _or_none(_STRING), Flag("--partition", "slurm partition"))
    time: int | str = _setting(
        1440,
        Check(lambda v: _parse_minutes(v) is not None, "minutes or [D-]HH:MM[:SS]"),
        Flag("--time", "slurm time limit per job: minutes or [D-]HH:MM[:SS]"),
    )
    """Time limit per job, in minutes or [D-]HH:MM[:SS]."""
    gpus: int = _setting(1, _integer(0), dataclasses.replace(_GPUS_PER_RUN, backend="slurm"))
    cpus: int = _setting(8, _integer(1), dataclasses.replace(_CPUS_PER_RUN, backend="slurm"))
    mem_gb: float | None = _setting(None, _or_none(_NUMBER, "a number of GB"))
    array_parallelism: int = _setting(
        64, _integer(1), Flag("--array-parallelism", "slurm: jobs of the array running at once")
    )
    """How many jobs of the array run at once."""
    signal_delay_s: int = _setting(300, _integer(0))
    """Seconds before the time limit at which a job is told to checkpoint and requeue."""
    extra: dict = _setting({}, Check(lambda v: isinstance(v, dict), "a mapping of extra sbatch options"))
    """Other sbatch options (submitit's slurm_additional_parameters)."""

    @property
    def timeout_min(self) -> int:
        return _parse_minutes(self.time) or _parse_minutes(Slurm.time)


@dataclasses.dataclass
class Launcher:
    backend: str = _setting("local", _one_of(BACKENDS), Flag("--backend", "local (default), ray or slurm"))
    workers: int | None = _setting(None, _or_none(_integer(1)), Flag("--workers", "runs at once (local; ray: in flight)"))
    """Runs at once; default: one per GPU (× runs_per_gpu), or 1 on a CPU-only machine (Ray: no limit)."""
    runs_per_gpu: int = _setting(1, _integer(1), Flag("--runs-per-gpu", "local: runs sharing one GPU"))
    """Local backend: runs sharing one GPU (then with XLA_PYTHON_CLIENT_PREALLOCATE=false)."""
    compilation_cache: bool = _setting(
        True,
        Check(lambda v: isinstance(v, bool), "true or false"),
        Flag("--no-compilation-cache", "do not share XLA compilations between runs"),
    )
    """Share XLA compilations between the sweep's runs (JAX persistent cache in <sweep dir>/.jax_cache)."""
    max_preemptions: int = _setting(20, _integer(0))
    """How many times one launcher invocation resubmits a run that stopped for a SIGTERM (exit 75)."""
    pack_seeds: int = _setting(
        1, _integer(1), Flag("--pack-seeds", "train up to N new runs differing only in seed in one process (vmapped)")
    )
    """Train up to this many not-yet-started runs that differ only in seed in one process (one program
    vmapped over seeds), so that small models fill a GPU; 1: one process per run."""
    ray: Ray = dataclasses.field(default_factory=Ray)
    slurm: Slurm = dataclasses.field(default_factory=Slurm)


@dataclasses.dataclass(frozen=True)
class FlagSetting:
    """A launcher setting that a command-line flag overrides: where it is (``("ray", "num_gpus")``), its
    type, check and flag."""

    path: tuple[str, ...]
    type: Any
    check: Check
    flag: Flag


def flag_settings(cls: type = Launcher, path: tuple[str, ...] = ()) -> list[FlagSetting]:
    """The settings of :class:`Launcher` (and of its ``ray`` and ``slurm`` groups) that a flag overrides,
    in the order they are declared."""
    types = typing.get_type_hints(cls)
    out: list[FlagSetting] = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(types[f.name]):
            out += flag_settings(types[f.name], path + (f.name,))
        elif f.metadata["flag"] is not None:
            out.append(FlagSetting(path + (f.name,), types[f.name], f.metadata["check"], f.metadata["flag"]))
    return out


def _settings(src: _Source, path: tuple, data: Any, target: Any) -> None:
    """Set the settings of the file's mapping ``data`` (at ``path``) on ``target`` (a :class:`Launcher`,
    or its ``ray`` or ``slurm`` group, whose mappings come first), each checked by its declaration."""
    where = ".".join(map(str, path))
    fields = {f.name: f for f in dataclasses.fields(target)}
    groups = {name for name in fields if dataclasses.is_dataclass(getattr(target, name))}
    for key, value in sorted(_mapping(src, path, data, where).items(), key=lambda item: item[0] not in groups):
        if key not in fields:
            raise src.error(path + (key,), f"unknown setting {key!r} in {where}; valid: {', '.join(fields)}", key=True)
        if key in groups:
            _settings(src, path + (key,), value, getattr(target, key))
            continue
        check = fields[key].metadata["check"]
        if not check.test(value):
            raise src.error(path + (key,), f"{where}.{key}: {value!r} is not {check.description}")
        setattr(target, key, value)


def _launcher(src: _Source, data: Any) -> Launcher:
    launcher = Launcher()
    _settings(src, ("launcher",), data, launcher)
    return launcher


# --- the sweep ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Factor:
    """One factor of the product: a grid axis or a zip group; ``rows`` are its alternatives."""

    axes: tuple[str, ...]
    rows: list[tuple]
    paths: list[tuple[tuple, ...]]  # for each row, the source path of each axis value
    line: int


@dataclasses.dataclass
class Sweep:
    path: Path
    name: str
    description: str
    base: dict[str, Any]
    factors: list[Factor]
    exclude: list[dict[str, Any]]
    launcher: Launcher
    source: _Source
    reference_study: str | None = None

    @property
    def axes(self) -> list[str]:
        return [a for f in self.factors for a in f.axes]


@dataclasses.dataclass(frozen=True)
class Run:
    """One resolved run of a sweep."""

    index: int
    id: str
    name: str  # <readable name>_<id>: the name of a new run directory (launch.launcher.locate_run_dirs)
    config: TrainConfig  # resolved (paper defaults, task preset, base, assignment); run_dir unset
    overrides: dict[str, Any]  # what the sweep sets (base and assignment), in TrainConfig field order
    assignment: dict[str, Any]  # the values of the varying axes
    lines: dict[str, int | None]  # for each override, the line that set it

    def train_args(self, run_dir: str) -> list[str]:
        """Options of ``rlscale train`` for a fresh start of this run (the task's preset applies below them)."""
        args = ["--env", self.config.env]
        for key, value in self.overrides.items():
            if key == "env":
                continue
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + key.replace("_", "-"))
            else:
                args += [flag, "None" if value is None else str(value)]
        return args + ["--run-dir", run_dir]


def load(path: str | Path) -> Sweep:
    """Parse and check a sweep file (keys, value types, zip lengths, exclusions); no run is validated yet."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SweepError(f"cannot read sweep file {path}: {err.strerror}") from None
    src = _Source(path, text)
    data = src.data
    if not isinstance(data, dict):
        raise src.error((), "a sweep file must be a mapping with keys " + ", ".join(TOP_KEYS))
    for key in data:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; valid keys: {', '.join(TOP_KEYS)}"
            raise src.error((key,), f"unknown key {key!r}{hint}", key=True)

    name = data.get("name", path.stem)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise src.error(("name",), f"name: {name!r} is not a folder name (letters, digits, _ . -)")
    description = data.get("description") or ""

    base = {}
    for key, value in _mapping(src, ("base",), data.get("base"), "base").items():
        option = _option_name(src, ("base", key), key)
        if option in base:
            raise src.error(("base", key), f"{option} is set twice in base ({key} is its old name)", key=True)
        base[option] = _option_value(src, ("base", key), option, value, key)

    factors: list[Factor] = []
    seen_axes: dict[str, int | None] = {}

    def claim(axis: str, p: tuple) -> None:
        if axis in base:
            raise src.error(p, f"{axis} is set in base (line {src.line(('base', axis))}) and varied here", key=True)
        if axis in seen_axes:
            raise src.error(p, f"axis {axis} is varied twice (first at line {seen_axes[axis]})", key=True)
        seen_axes[axis] = src.line(p, key=True)

    for axis, values in _mapping(src, ("grid",), data.get("grid"), "grid").items():
        p = ("grid", axis)
        option = _option_name(src, p, axis)
        claim(option, p)
        if not isinstance(values, list) or not values:
            raise src.error(p, f"grid.{option} must be a non-empty list of values, got {values!r}")
        rows = [(_option_value(src, p + (i,), option, v, axis),) for i, v in enumerate(values)]
        factors.append(Factor((option,), rows, [((*p, i),) for i in range(len(values))], src.line(p, key=True) or 0))

    groups = data.get("zip") or []
    if not isinstance(groups, list):
        raise src.error(("zip",), "zip must be a list of groups (mappings of axis: [values])")
    for g, group in enumerate(groups):
        gp = ("zip", g)
        if not isinstance(group, dict) or not group:
            raise src.error(gp, f"zip group {g + 1} must be a mapping of axis: [values]")
        axes, columns, lengths = [], [], {}
        for axis, values in group.items():
            p = gp + (axis,)
            option = _option_name(src, p, axis)
            claim(option, p)
            if not isinstance(values, list) or not values:
                raise src.error(p, f"zip group {g + 1}: {option} must be a non-empty list of values")
            axes.append(option)
            columns.append([_option_value(src, p + (i,), option, v, axis) for i, v in enumerate(values)])
            lengths[option] = len(values)
        if len(set(lengths.values())) > 1:
            described = ", ".join(f"{a}: {n}" for a, n in lengths.items())
            raise src.error(gp, f"zip group {g + 1}: lists must have equal lengths, got {described}")
        n = len(columns[0])
        rows = [tuple(col[i] for col in columns) for i in range(n)]
        paths = [tuple((*gp, a, i) for a in axes) for i in range(n)]
        factors.append(Factor(tuple(axes), rows, paths, src.line(gp) or 0))
    factors.sort(key=lambda f: f.line)  # nest in the order of the file

    if "env" not in base and "env" not in seen_axes:
        raise src.error((), "no task: set env in base, grid or zip")

    exclude = []
    entries = data.get("exclude") or []
    if not isinstance(entries, list):
        raise src.error(("exclude",), "exclude must be a list of partial assignments ({axis: value, ...})")
    values_of = {a: {r[f.axes.index(a)] for r in f.rows} for f in factors for a in f.axes}
    for e, entry in enumerate(entries):
        ep = ("exclude", e)
        if not isinstance(entry, dict) or not entry:
            raise src.error(ep, f"exclude entry {e + 1} must be a mapping of axis: value")
        clean = {}
        for axis, value in entry.items():
            p = ep + (axis,)
            option = _option_name(src, p, axis)
            if option not in values_of:
                raise src.error(p, f"exclude entry {e + 1}: {option} is not a varied axis (axes: {', '.join(values_of)})", key=True)
            value = _option_value(src, p, option, value, axis)
            if value not in values_of[option]:
                raise src.error(p, f"exclude entry {e + 1}: {option}={value!r} is not one of the axis's values")
            clean[option] = value
        exclude.append(clean)

    launcher = _launcher(src, data.get("launcher"))
    study = data.get("reference_study")
    if study is not None:
        from rlscale.configs import studies  # noqa: PLC0415 (the study list is read only when named)

        known = studies()
        if study not in known:
            raise src.error(("reference_study",), f"reference_study: {study!r} is not a shipped study; valid: {', '.join(known) or 'none'}")
    return Sweep(path, name, str(description), base, factors, exclude, launcher, src, study)


def experiment(cfg: TrainConfig) -> dict[str, Any]:
    """The options that define the run's experiment (all but :data:`NOT_EXPERIMENT`) and differ from
    the defaults of its ``TrainConfig`` class; a renamed option under its old name and value where the old
    name could say it (``norm: none`` as ``layer_norm: false``), so that renaming changes no run id."""
    cfg, defaults = _normalise(cfg), _normalise(type(cfg)())
    return dict(
        legacy_form(f.name, getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if f.name not in NOT_EXPERIMENT and getattr(cfg, f.name) != getattr(defaults, f.name)
    )


def experiment_key(cfg: TrainConfig, schema: int = CONFIG_SCHEMA) -> str:
    """Canonical text of the run's experiment, what :func:`run_id` hashes: equal keys, same experiment."""
    return json.dumps({"schema": schema, "options": experiment(cfg)}, sort_keys=True, separators=(",", ":"))


def run_id(cfg: TrainConfig) -> str:
    """Short hash of what defines the run's experiment.

    The rule: hash ``CONFIG_SCHEMA`` and the options whose resolved value (paper defaults, task preset,
    base, assignment) differs from the ``TrainConfig`` default, leaving out :data:`NOT_EXPERIMENT`. So
    adding an option with a default changes no id; changing a default changes the ids of exactly the
    runs that relied on it (they are other experiments); ``CONFIG_SCHEMA`` is bumped when a value
    changes meaning. Directories named by other ids are recognised by their ``config.json``
    (:func:`saved_experiment_key`, ``launch.launcher.locate_run_dirs``).
    """
    return hashlib.sha256(experiment_key(cfg).encode()).hexdigest()[:8]


def saved_experiment_key(saved: Any, config_class: type = TrainConfig) -> str:
    """The experiment key of a run directory's ``config.json`` content: options that the saved config
    lacks (added since) take their defaults. ``ValueError`` when it is not a config of this version."""
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ValueError("it holds no config")
    # Files from before config_schema was saved use schema 1's meanings.
    return experiment_key(config_class.from_dict(saved["config"], source="its config"), saved.get("config_schema", 1))


def _normalise(cfg: TrainConfig) -> TrainConfig:
    """Floats as floats (a preset may write ``gamma: 1``), so that the id depends on values only."""
    changes = {}
    for name, hint in FIELDS.items():
        value = getattr(cfg, name)
        ok, out = _coerce(hint, value)
        if ok and out is not value and type(out) is not type(value):
            changes[name] = out
    return dataclasses.replace(cfg, **changes) if changes else cfg


def expand(sweep: Sweep) -> list[Run]:
    """The ordered list of runs (product of the factors, minus exclusions); nothing is validated."""
    import itertools

    runs: list[Run] = []
    by_id: dict[str, Run] = {}
    src = sweep.source
    for combo in itertools.product(*(range(len(f.rows)) for f in sweep.factors)):
        assignment: dict[str, Any] = {}
        lines: dict[str, int | None] = {k: src.line(("base", k)) for k in sweep.base}
        for factor, i in zip(sweep.factors, combo):
            for axis, value, p in zip(factor.axes, factor.rows[i], factor.paths[i]):
                assignment[axis] = value
                lines[axis] = src.line(p)
        if any(all(assignment.get(k) == v for k, v in e.items()) for e in sweep.exclude):
            continue
        merged = {**sweep.base, **assignment}
        overrides = {k: merged[k] for k in FIELD_ORDER if k in merged}
        task = overrides["env"]
        try:
            cfg = config_for(task, **{k: v for k, v in overrides.items() if k != "env"})
        except (ValueError, TypeError) as err:  # a preset file with a bad key
            raise SweepError(f"{sweep.path}: task {task!r}: {err}") from None
        cfg = _normalise(cfg)
        rid = run_id(cfg)
        run = Run(len(runs), rid, f"{cfg.default_run_name()}_{rid}", cfg, overrides, assignment, lines)
        if rid in by_id:
            other = by_id[rid]
            where = ", ".join(f"{k}={v!r}" for k, v in assignment.items())
            raise SweepError(
                f"{sweep.path}: runs {other.index + 1} and {len(runs) + 1} ({where}) resolve to the same experiment "
                f"(id {rid}; {', '.join(sorted(NOT_EXPERIMENT - set(RESERVED)))} do not count); remove the duplicate value"
            )
        by_id[rid] = run
        runs.append(run)
    if not runs:
        raise src.error(("exclude",) if sweep.exclude else (), "the sweep has no runs left after exclusions")
    return runs


# --- validation --------------------------------------------------------------------------------


@dataclasses.dataclass
class Check:
    errors: list[str]
    unregistered: dict[str, list[Run]]  # task -> runs that use it (as env or eval_env)
    plans: dict[str, Plan]  # run id -> plan (for runs whose other options are valid)


def _flag_of(message: str) -> str | None:
    if message.startswith("unknown eval task"):
        return "eval_env"
    if message.startswith("unknown task"):
        return "env"
    for token in re.findall(r"--([a-z0-9-]+)", message):
        name = token.replace("-", "_")
        if name in FIELDS:
            return name
    return None


def check(sweep: Sweep, runs: list[Run]) -> Check:
    """Validate every run with ``rlscale.config.validate`` (through ``plan``)."""
    from rlscale.envs import names

    registered = set(names())
    errors: list[str] = []
    unregistered: dict[str, list[Run]] = {}
    plans: dict[str, Plan] = {}
    for run in runs:
        cfg = run.config
        missing = [t for t in (cfg.env, cfg.eval_env) if t is not None and t not in registered]
        for task in missing:
            unregistered.setdefault(task, []).append(run)
        if missing:
            # Validate everything else: validate() only looks the task names up in the registry.
            stand_in = sorted(registered)[0]
            cfg = dataclasses.replace(cfg, env=stand_in, eval_env=None)
        try:
            plans[run.id] = plan(cfg)
        except ValueError as err:
            option = _flag_of(str(err))
            line = run.lines.get(option) if option else None
            where = f"{sweep.path}:{line}" if line else str(sweep.path)
            errors.append(f"{where}: run {run.index + 1} ({run.name}): {err}")
    return Check(errors, unregistered, plans)


def unregistered_note(task: str, runs: list[Run]) -> str:
    from rlscale.envs import names

    close = difflib.get_close_matches(task, names(), n=1, cutoff=0.9)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"task {task} is not registered yet{hint}: {len(runs)} run(s) can be listed but not launched"
