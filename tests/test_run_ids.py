"""Run ids that survive new options, and run directories from earlier versions found by their config.

The fixture ``fixtures/whole_config_ids`` was written by the launcher whose ids hashed the whole resolved
config (commit 457363c): a sweep file that sets every option, and its two finished runs (config.json,
metrics, final checkpoint; run s1's checkpoint keeps only orbax's small marker files).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from rlscale.launch import launcher, sweepfile

from rlscale import config as config_module
from rlscale.cli import main as cli_main
from rlscale.config import CONFIG_SCHEMA, TrainConfig
from rlscale.storage import run_dir as rd

FIXTURE = Path(__file__).parent / "fixtures" / "whole_config_ids"
SWEEP_FILE = FIXTURE / "whole_config_ids.yaml"
OLD_DIRS = ["point_u_maze_d4_w16_b32_s0_69228c99", "point_u_maze_d4_w16_b32_s1_c8207922"]
# The fixture's runs under today's rule: pinned, so that a change of the rule that renames runs fails here.
IDS = ["e2252459", "295ef754"]
PAPER_DEPTH = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "paper_depth.yaml"


@pytest.fixture
def root(tmp_path) -> Path:
    """A copy of the fixture's runs root (the sweep directory is ``root / whole_config_ids``)."""
    return Path(shutil.copytree(FIXTURE / "runs_root", tmp_path / "runs_root"))


def _expand(path: Path = SWEEP_FILE) -> list[sweepfile.Run]:
    return sweepfile.expand(sweepfile.load(path))


def _located(path: Path, root: Path) -> list[str]:
    sweep = sweepfile.load(path)
    return [p.name for p in launcher.locate_run_dirs(sweepfile.expand(sweep), root / sweep.name)]


def _files(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _variant(tmp_path: Path, base: dict | None = None, grid: dict | None = None) -> Path:
    """The fixture's sweep file with some options changed (same sweep name, so the same directory)."""
    data = yaml.safe_load(SWEEP_FILE.read_text())
    data["base"].update(base or {})
    data["grid"].update(grid or {})
    for axis in data["grid"]:
        data["base"].pop(axis, None)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.slow
def test_the_fixture_sweep_retrains_nothing_and_summarises_every_old_directory(root, capsys):
    sweep_dir = root / "whole_config_ids"
    before = _files(root)
    folders = sorted(p for p in root.rglob("*") if p.is_dir())

    assert cli_main(["sweep", str(SWEEP_FILE), "--runs-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 run(s) found by their config.json in directories of other names" in out
    assert all(f"done     {name} (skipped)" in out for name in OLD_DIRS)
    after = _files(root)
    assert {k: v for k, v in after.items() if k in before} == before  # no file touched
    assert sorted(set(after) - set(before)) == ["whole_config_ids/summary.csv", "whole_config_ids/summary.png"]
    assert sorted(p for p in root.rglob("*") if p.is_dir()) == folders  # no new directory, not even logs/

    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run_name"] for r in rows] == OLD_DIRS and [r["run_id"] for r in rows] == IDS
    assert [r["run_dir"] for r in rows] == [str(sweep_dir / name) for name in OLD_DIRS]
    assert all(r["status"] == "done" and r["env_steps"] == "400" and r["score"] != "" for r in rows)

    assert cli_main(["sweep", str(SWEEP_FILE), "--runs-root", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert all(f"done     {name}  400 env steps, 2 epochs  -> skip (done)" in out for name in OLD_DIRS)


@pytest.mark.slow
def test_a_fixture_checkpoint_still_evaluates_to_the_numbers_logged_in_training(root):
    from rlscale.evaluation.evaluate import evaluate
    from rlscale.evaluation.policy import load
    from rlscale.storage.run_dir import read_metrics

    run_dir = root / "whole_config_ids" / OLD_DIRS[0]
    policy = load(run_dir)
    assert policy.step == 400 and policy.meta["counters"]["epoch"] == 2
    result = evaluate(policy, episodes=policy.config["num_eval_envs"])
    logged = read_metrics(run_dir)[-1]
    assert result["eval/episode_success"] == logged["eval/episode_success"]
    assert result["eval/episode_dist"] == pytest.approx(logged["eval/episode_dist"], rel=1e-4)


def test_summary_csv_and_rlscale_plot_give_a_run_the_same_score(root):
    """One score (rlscale.analysis.scores): summary.csv's ``score`` is ``rlscale plot``'s, normalised; ``time_at_goal``
    is the same mean in steps. The copied runs get 7 evaluations, so that only the last 5 count."""
    pytest.importorskip("pandas")
    from rlscale import analysis

    sweep_dir = root / "whole_config_ids"
    times = {OLD_DIRS[0]: [20, 0, 2, 4, 6, 8, 10], OLD_DIRS[1]: [1, 1, 2, 2, 3, 3, 20]}
    for name, values in times.items():
        rows = [{"epoch": i + 1, "training/env_steps": 40 * (i + 4), "eval/episode_success": float(v),
                 "eval/episode_success_any": float(v > 2)} for i, v in enumerate(values)]
        (sweep_dir / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli_main(["sweep", str(SWEEP_FILE), "--runs-root", str(root), "--summarize"]) == 0
    with open(sweep_dir / "summary.csv") as f:
        summary = {Path(r["run_dir"]).name: r for r in csv.DictReader(f)}
    plotted = analysis.run_scores(analysis.load_sweep(sweep_dir)).set_index("run")
    episode = json.loads((sweep_dir / OLD_DIRS[0] / "config.json").read_text())["config"]["episode_length"]
    expected = {OLD_DIRS[0]: (6.0, 0.8), OLD_DIRS[1]: (6.0, 0.6)}  # the last 5: mean time at goal, success-any
    for name, (time_at_goal, success_any) in expected.items():
        row = summary[name]
        assert float(row["score"]) == pytest.approx(plotted.loc[name, "score"], rel=1e-6)
        assert float(row["score"]) == pytest.approx(time_at_goal / episode, rel=1e-6)
        assert float(row["time_at_goal"]) == pytest.approx(plotted.loc[name, "time_at_goal"]) == time_at_goal
        assert float(row["success_any"]) == pytest.approx(plotted.loc[name, "success_any"]) == success_any


def test_ids_hash_only_what_differs_from_the_defaults():
    assert [r.id for r in _expand()] == IDS
    assert sweepfile.experiment(TrainConfig()) == {}
    # An option given at its default value, or one that does not define the experiment, changes nothing.
    assert sweepfile.run_id(TrainConfig(width=256, gamma=0.99)) == sweepfile.run_id(TrainConfig())
    assert sweepfile.run_id(TrainConfig(tensorboard=False, remat=False, keep_checkpoints=0)) == sweepfile.run_id(TrainConfig())
    assert sweepfile.experiment(TrainConfig(width=64, gamma=1)) == {"width": 64, "gamma": 1.0}
    assert sweepfile.run_id(TrainConfig(width=64)) != sweepfile.run_id(TrainConfig())


def test_a_new_option_with_a_default_keeps_every_id_and_every_old_directory(root, monkeypatch):
    paper_ids = [r.id for r in _expand(PAPER_DEPTH)]
    extended = dataclasses.make_dataclass(
        "TrainConfig", [("future_option", int, dataclasses.field(default=3))], bases=(TrainConfig,)
    )
    monkeypatch.setattr(config_module, "TrainConfig", extended)  # what config_for builds

    run_list = _expand()
    assert all(type(r.config) is extended and r.config.future_option == 3 for r in run_list)
    assert [r.id for r in run_list] == IDS
    assert [r.id for r in _expand(PAPER_DEPTH)] == paper_ids
    # The old config.json files lack the option: it takes its default, and they are still recognised.
    assert [p.name for p in launcher.locate_run_dirs(run_list, root / "whole_config_ids")] == OLD_DIRS
    cfg = run_list[0].config
    assert sweepfile.run_id(dataclasses.replace(cfg, future_option=4)) != run_list[0].id


def test_a_run_that_really_differs_gets_another_id_and_no_old_directory(root, tmp_path):
    changed = _variant(tmp_path, base={"gamma": 0.95})
    run_list = _expand(changed)
    assert not set(r.id for r in run_list) & set(IDS)
    assert _located(changed, root) == [r.name for r in run_list]
    assert not any((root / "whole_config_ids" / r.name).exists() for r in run_list)
    # Seed 0 is the old run; seed 2 is new.
    more_seeds = _variant(tmp_path, grid={"seed": [0, 2]})
    assert _located(more_seeds, root) == [OLD_DIRS[0], _expand(more_seeds)[1].name]
    # Options that do not define the experiment do not separate a run from its old directory.
    operational = _variant(tmp_path, base={"tensorboard": True, "keep_checkpoints": 3, "remat": False, "scan_unroll": 2})
    assert [r.id for r in _expand(operational)] == IDS and _located(operational, root) == OLD_DIRS


@pytest.mark.parametrize("layer_norm,norm", [(False, "none"), (True, "layernorm")])
def test_configs_saved_with_layer_norm_are_the_experiments_of_norm(root, tmp_path, layer_norm, norm):
    """``norm`` replaced the true/false ``layer_norm`` (rlscale.legacy_options): a config.json that
    says ``layer_norm`` loads as ``norm`` (strictly, as resume reads it), keeps its experiment key and run
    id, and its directory is found by a sweep file that says ``norm``."""
    path = root / "whole_config_ids" / OLD_DIRS[0] / "config.json"
    saved = json.loads(path.read_text())
    assert saved["config"]["layer_norm"] is True  # the fixture's, written before norm
    saved["config"]["layer_norm"] = layer_norm
    path.write_text(json.dumps(saved))
    cfg = TrainConfig.from_dict(saved["config"])
    assert cfg.norm == norm and not hasattr(cfg, "layer_norm")
    assert sweepfile.saved_experiment_key(saved) == sweepfile.experiment_key(cfg)
    # The key, and so the id, of norm=none is the one layer_norm=false had: {"layer_norm": false} hashed.
    before = json.dumps({"schema": CONFIG_SCHEMA, "options": {} if layer_norm else {"layer_norm": False}},
                        sort_keys=True, separators=(",", ":"))
    assert sweepfile.experiment_key(TrainConfig(norm=norm)) == before
    assert sweepfile.run_id(TrainConfig(norm="hyperspherical")) not in {sweepfile.run_id(TrainConfig(norm=n)) for n in ("none", "layernorm")}
    new_file = _variant(tmp_path, base={"norm": norm})
    data = yaml.safe_load(new_file.read_text())
    data["base"].pop("layer_norm")
    new_file.write_text(yaml.safe_dump(data, sort_keys=False))
    run_list = _expand(new_file)
    assert [r.config.norm for r in run_list] == [norm, norm]
    # Seed 0's directory is recognised, not retrained; seed 1's (layer_norm true) only where norm is layernorm.
    assert _located(new_file, root) == [OLD_DIRS[0], OLD_DIRS[1] if layer_norm else run_list[1].name]
    with pytest.raises(ValueError, match="layer_norm=False .*contradicts norm='layernorm'"):
        TrainConfig.from_dict({**saved["config"], "layer_norm": False, "norm": "layernorm"})


def test_a_directory_named_by_the_current_id_comes_first(root):
    sweep_dir = root / "whole_config_ids"
    run_list = _expand()
    shutil.copytree(sweep_dir / OLD_DIRS[0], sweep_dir / run_list[0].name)
    assert [p.name for p in launcher.locate_run_dirs(run_list, sweep_dir)] == [run_list[0].name, OLD_DIRS[1]]


def test_a_config_saved_under_another_schema_is_another_experiment(root):
    path = root / "whole_config_ids" / OLD_DIRS[1] / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "config_schema": CONFIG_SCHEMA + 1}))
    assert _located(SWEEP_FILE, root) == [OLD_DIRS[0], _expand()[1].name]


def test_runs_differing_only_in_options_that_do_not_define_the_experiment_are_one_run(tmp_path):
    with pytest.raises(sweepfile.SweepError, match=r"runs 1 and 2 \(seed=0, tensorboard=False\) resolve to the same experiment"):
        _expand(_variant(tmp_path, grid={"tensorboard": [True, False]}))


@pytest.mark.parametrize(
    "damage,message",
    [
        ("copy", f"{OLD_DIRS[1]} and {OLD_DIRS[1]}_copy both hold run 2 (point_u_maze_d4_w16_b32_s1_{IDS[1]}) by their config.json"),
        ("not json", "config.json is not valid JSON"),
        ("unknown option", "unknown option(s) dropped_option"),
    ],
)
def test_ambiguous_or_unreadable_directories_are_refused_before_anything_runs(root, capsys, damage, message):
    sweep_dir = root / "whole_config_ids"
    copy = Path(shutil.copytree(sweep_dir / OLD_DIRS[1], sweep_dir / f"{OLD_DIRS[1]}_copy"))
    if damage == "not json":
        (copy / "config.json").write_text("{")
    elif damage == "unknown option":
        saved = json.loads((copy / "config.json").read_text())
        saved["config"]["dropped_option"] = 1
        (copy / "config.json").write_text(json.dumps(saved))
    before = _files(root)

    assert cli_main(["sweep", str(SWEEP_FILE), "--runs-root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    if damage != "copy":
        assert err.startswith(f"rlscale sweep: error: {copy / 'config.json'}: ") and f"move {copy.name} out of {sweep_dir}" in err
    assert _files(root) == before  # nothing launched, no summary
    assert [rd.is_complete(sweep_dir / name) for name in OLD_DIRS] == [True, True]


# Digest of the sorted run ids of every shipped sweep file, as first released with stable ids (commit
# 70f2e47). A change to a preset, a registry default or a sweep file that renames any of these runs
# fails here: users' directories of those sweeps would no longer be found by name.
SHIPPED_SWEEP_IDS = {
    "paper_ablations": (48, "6b08c9bc7e"),
    "paper_actor_vs_critic": (81, "7d19daf9b8"),
    "paper_baselines": (225, "b0ab3a1d2e"),  # new with --algo (issue 12); SAC runs renamed by the tuned lr 1e-3 (36470c9abd before)
    "paper_baselines_gcbc": (45, "6367c2707c"),  # new with --dataset (issue 12)
    "paper_batch_size": (60, "8a168b70a6"),
    "paper_depth": (250, "953880d390"),
    "paper_depth_1024": (24, "390a340c01"),
    "paper_quasimetric": (96, "c0644afffd"),  # first shipped with --energy mrn
    "paper_hyperspherical": (24, "51b329f12c"),  # new with norm (issue 13): its LayerNorm half has paper_ablations' ids
    "paper_stitching": (9, "31c217d3d2"),
    "paper_collector": (12, "ef379cd3a4"),  # new with --collector-depth (issue 13)
    "paper_width_vs_depth": (72, "63a0a5140d"),
    "quickstart": (16, "aa053e0925"),  # depth 4 vs 16 at the depth-effect study's setting (issue 25)
}
# Sweeps that left configs/sweeps for benchmarks/ keep their runs' ids there.
MOVED_SWEEP_IDS = {
    "benchmarks/analyses_cpu/quickstart_250k.yaml": (12, "b4d3882adb"),  # the quickstart of issue 11 (until issue 25)
}


@pytest.mark.parametrize("name", sorted(SHIPPED_SWEEP_IDS))
def test_shipped_sweeps_keep_their_run_ids(name):
    path = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / f"{name}.yaml"
    ids = sorted(run.id for run in sweepfile.expand(sweepfile.load(path)))
    digest = hashlib.sha1(" ".join(ids).encode()).hexdigest()[:10]
    assert (len(ids), digest) == SHIPPED_SWEEP_IDS[name]


@pytest.mark.parametrize("relative", sorted(MOVED_SWEEP_IDS))
def test_moved_sweeps_keep_their_run_ids(relative):
    path = Path(__file__).resolve().parents[1] / relative
    ids = sorted(run.id for run in sweepfile.expand(sweepfile.load(path)))
    assert (len(ids), hashlib.sha1(" ".join(ids).encode()).hexdigest()[:10]) == MOVED_SWEEP_IDS[relative]
