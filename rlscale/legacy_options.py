"""Options renamed since runs were saved: the one table of them, and the conversions between old and new
names. Plain Python, without JAX: the CLI and the sweep parser read it too."""

from __future__ import annotations

from typing import Any, Mapping

# Options renamed since runs were saved: old name -> (new name, old value -> new value). The one table of
# them, read wherever options arrive as a mapping (TrunkConfig.from_options, TrainConfig.from_dict, sweep
# files, the CLI's old flags) and, backwards, where a run's id is hashed (launch.sweepfile.experiment), so
# that every config.json, checkpoint, sweep file and run id written with an old name keeps its meaning.
LEGACY_OPTIONS: dict[str, tuple[str, dict[Any, Any]]] = {
    "layer_norm": ("norm", {True: "layernorm", False: "none"}),
}


def upgrade_options(options: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """``options`` with every :data:`LEGACY_OPTIONS` name replaced by its new name and value. An old value
    the table does not know, or an old and a new name that disagree, is a ``ValueError`` naming ``source``."""
    out = dict(options)
    for old, (new, values) in LEGACY_OPTIONS.items():
        if old not in out:
            continue
        value = out.pop(old)
        if not any(value is known or (type(value) is type(known) and value == known) for known in values):
            raise ValueError(f"{source}: {old}: {value!r} is not one of {', '.join(map(repr, values))}")
        if new in out and out[new] != values[value]:
            raise ValueError(
                f"{source}: {old}={value!r} (the old name of {new}: {new}={values[value]!r}) contradicts {new}={out[new]!r}"
            )
        out[new] = values[value]
    return out


def legacy_form(name: str, value: Any) -> tuple[str, Any]:
    """``(name, value)`` as :data:`LEGACY_OPTIONS` wrote it before ``name`` was renamed, where the old name
    could say ``value``; else unchanged (a value that is new, e.g. ``norm="hyperspherical"``)."""
    for old, (new, values) in LEGACY_OPTIONS.items():
        if new == name:
            for old_value, new_value in values.items():
                if new_value == value:
                    return old, old_value
    return name, value
