import hashlib
import json
from pathlib import Path

import pytest
from helpers import TINY

from rlscale import checkpoint as ckpt
from rlscale.cli import main


def _args(run_dir, **overrides):
    opts = {**TINY, **overrides, "run_dir": str(run_dir)}
    args = ["train"]
    for key, value in opts.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


def _snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def test_train_and_resume_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "cli"
    assert main(_args(run)) == 0
    out = capsys.readouterr().out
    assert "320 env steps" in out.replace(",", "") and "epoch    3/3" in out
    assert main(["train", "--resume", str(run)]) == 0
    assert ckpt.list_steps(run) == [160, 240, 320]


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"env": "point_v_maze"}, "unknown task 'point_v_maze'; valid tasks: "),
        ({"depth": 6}, "--depth must be a positive multiple of 4"),
        ({"actor_depth": 10}, "--actor-depth must be a positive multiple of 4"),
        ({"total_env_steps": -5}, "--total-env-steps must be a positive integer, got -5"),
        ({"batch_size": 100}, "--batch-size 100 is larger than the buffer"),
        ({"gamma": 1.5}, "--gamma must lie in (0, 1), got 1.5"),
    ],
)
def test_bad_input_gives_one_line_error_and_writes_nothing(tmp_path, capsys, overrides, message):
    run = tmp_path / "bad"
    assert main(_args(run, **overrides)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not run.exists()


def test_existing_run_dir_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("precious")
    assert main(_args(run)) == 2
    err = capsys.readouterr().err.strip()
    assert f"run directory {run} already exists; pass --resume" in err and "\n" not in err
    assert _snapshot(run) == {"notes.txt": __import__("hashlib").sha256(b"precious").hexdigest()}


def test_corrupt_checkpoint_is_reported_and_nothing_changes(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_args(run, num_evals=1, total_env_steps=160)) == 0
    capsys.readouterr()
    step_dir = ckpt.step_path(run, 160)
    for path in (step_dir / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    # Pretend the run wants more epochs so that resuming would train.
    info = json.loads((run / "config.json").read_text())
    info["config"]["num_evals"], info["config"]["total_env_steps"] = 2, 240
    (run / "config.json").write_text(json.dumps(info))
    before = _snapshot(run)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint" in err and "000000000160" in err and "\n" not in err
    assert _snapshot(run) == before


def test_resume_rejects_other_options_and_missing_dirs(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--depth", "8"]) == 2
    assert "unexpected: --depth 8" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_unknown_command_and_envs_listing(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'; valid commands: train, envs" in capsys.readouterr().err
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "point_u_maze" in out and "ant " in out
