import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY

from rlscale import cli
from rlscale.cli import main
from rlscale.config import TrainConfig, validate
from rlscale.storage import checkpoint as ckpt
from rlscale.storage import run_dir as rd


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
    """Every file's hash, but the writer lock's: each process that takes the lock names itself in it."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != rd.LOCK_FILE}


@pytest.mark.slow
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


def test_a_bad_energy_or_an_odd_mrn_repr_dim_is_refused_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "bad"
    with pytest.raises(SystemExit) as refused:  # the command line's choices
        main(_args(run, energy="bogus"))
    said = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert refused.value.code == 2 and "invalid choice 'bogus' for argument '--energy'" in said
    assert "('l2', 'dot', 'mrn', 'cosine')" in said
    assert main(_args(run, energy="mrn", repr_dim=63)) == 2
    assert "--energy mrn needs an even --repr-dim (half asymmetric, half symmetric), got 63" in capsys.readouterr().err
    assert not run.exists()
    with pytest.raises(ValueError, match="unknown energy 'bogus'; valid: l2, dot, mrn, cosine"):  # sweep files, presets
        validate(TrainConfig.from_dict({**TINY, "energy": "bogus"}))


def test_existing_run_dir_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("precious")
    assert main(_args(run)) == 2
    err = capsys.readouterr().err.strip()
    assert f"run directory {run} already exists; pass --resume" in err and "\n" not in err
    assert _snapshot(run) == {"notes.txt": __import__("hashlib").sha256(b"precious").hexdigest()}


@pytest.mark.slow
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


def test_commands_print_none_of_the_dependencies_import_noise_but_rlscale_warnings_show():
    # `rlscale envs` builds every task, Brax's included: the noisy imports (mujoco.mjx.warp, Brax's
    # notice) run in it. Then warnings from rlscale's own modules, one with Brax's very message, still show.
    script = (
        "import sys, warnings\n"
        "from rlscale import cli\n"
        "code = cli.main(['envs'])\n"
        "print('imported', 'mujoco.mjx.warp' in sys.modules, 'brax' in sys.modules, file=sys.stderr)\n"
        "warnings.warn_explicit(cli.BRAX_NOTICE, UserWarning, 'rlscale/config.py', 1, module='rlscale.config')\n"
        "warnings.warn_explicit('another brax warning', UserWarning, 'brax/io/mjcf.py', 1, module='brax.io.mjcf')\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "point_u_maze" in proc.stdout and "ant " in proc.stdout
    assert "imported True True" in proc.stderr  # so the noise would have been printed
    output = proc.stdout + proc.stderr
    assert "Failed to import" not in output
    assert f"rlscale/config.py:1: UserWarning: {cli.BRAX_NOTICE}" in proc.stderr
    assert "brax/io/mjcf.py:1: UserWarning: another brax warning" in proc.stderr
    assert proc.stderr.count(cli.BRAX_NOTICE) == 1  # only rlscale's


def test_a_bad_norm_lists_the_choices_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "bad"
    with pytest.raises(SystemExit) as info:  # tyro's error, before any config exists
        main(_args(run, norm="bogus"))
    assert info.value.code == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").replace("─", " ").split())
    assert "invalid choice 'bogus' for argument '--norm'. Expected one of ('layernorm', 'hyperspherical', 'none')" in err
    assert not run.exists()


def test_the_old_layer_norm_flags_are_read_as_norm():
    """Scripts and queued sweep jobs of earlier versions say --no-layer-norm (rlscale.legacy_options)."""
    assert cli._legacy_flags(["--depth", "8", "--no-layer-norm", "--layer-norm"]) == [
        "--depth", "8", "--norm", "none", "--norm", "layernorm",
    ]
