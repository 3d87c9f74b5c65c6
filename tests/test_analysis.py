"""Scaling analysis: statistics with known answers, critical depth, `rlscale plot` and the notebook."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from rlscale import analysis
from rlscale.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "scaling.ipynb"
EPISODE = 20


def make_run(sweep_dir: Path, times_at_goal: list[float], walltime: bool = True, extra: list[dict] | None = None,
             **config) -> Path:
    """A synthetic run directory: config.json and one metrics row per evaluation (``extra``: more keys per row)."""
    cfg = {"env": "point_u_maze", "depth": 4, "width": 32, "batch_size": 32, "seed": 0, "episode_length": EPISODE} | config
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{cfg['env']}_d{cfg['depth']}_w{cfg['width']}_b{cfg['batch_size']}_s{cfg['seed']}_{digest}"
    run_dir = sweep_dir / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": cfg, "plan": {"total_env_steps": 100 * len(times_at_goal)}}))
    rows = [
        {"epoch": i, "training/env_steps": 100 * (i + 1), "training/sgd_steps": 10 * (i + 1),
         "eval/episode_success": t, "eval/episode_success_any": float(t > 0), "eval/episode_dist": 1.0,
         **({"walltime": 2.0 * (i + 1)} if walltime else {}), **(extra[i] if extra else {})}
        for i, t in enumerate(times_at_goal)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def synthetic_sweep(root: Path, depths=(4, 8, 16, 32), seeds=3, tasks=("point_u_maze", "point_big_maze"), **config) -> Path:
    """Score rises from 0.1 to 0.8 of the episode between depth 8 and 16 on every task."""
    rng = np.random.default_rng(0)
    level = {4: 0.1, 8: 0.12, 16: 0.7, 32: 0.8}
    for task in tasks:
        for depth in depths:
            for seed in range(seeds):
                final = level[depth] + 0.02 * rng.standard_normal()
                curve = [final * EPISODE * f for f in (0.2, 0.5, 1, 1, 1, 1, 1)]
                make_run(root, curve, env=task, depth=depth, seed=seed, **config)
    return root


# --- statistics with known answers ---------------------------------------------------------------


def test_iqm_of_a_known_array():
    # 8 values: trimming 25 % each side keeps 3, 4, 5, 6.
    assert analysis.iqm(np.array([[1, 2, 3, 4], [5, 6, 7, 100]])) == pytest.approx(4.5)
    # rliable's aggregate_iqm agrees.
    from rliable import metrics

    x = np.arange(20.0).reshape(5, 4) ** 2
    assert analysis.iqm(x) == pytest.approx(metrics.aggregate_iqm(x))


def test_run_score_is_the_mean_of_the_last_five_normalised_evals(tmp_path):
    make_run(tmp_path, [20, 0, 2, 4, 6, 8, 10])  # the first two evals are not scored
    scores = analysis.run_scores(analysis.load_sweep(tmp_path))
    assert scores["score"].item() == pytest.approx(6 / EPISODE)
    assert scores["time_at_goal"].item() == pytest.approx(6)
    assert scores["num_evals"].item() == 7


def test_the_run_score_is_defined_once():
    """rlscale.analysis.scores, which summary.csv and rlscale plot share: known answers, missing values, short runs."""
    from rlscale.analysis import scores

    assert scores.LAST_EVALS == analysis.LAST_EVALS == 5
    got = scores.run_score([20, 0, 2, 4, 6, 8, 10], [1, 0, 0, 1, None, float("nan"), 1], EPISODE)
    assert got == {"score": pytest.approx(6 / EPISODE), "time_at_goal": 6.0, "success_any": pytest.approx(2 / 3), "num_evals": 7}
    assert scores.run_score([4, 8], [0, 1], EPISODE) == {"score": pytest.approx(0.3), "time_at_goal": 6.0,
                                                          "success_any": 0.5, "num_evals": 2}
    assert scores.run_score([], [], EPISODE) == {"score": None, "time_at_goal": None, "success_any": None, "num_evals": 0}
    # From metrics.jsonl rows: only evaluations count, in env-step order.
    rows = [{"training/env_steps": 300, "eval/episode_success": 10.0}, {"training/env_steps": 100},
            {"training/env_steps": 200, "eval/episode_success": 2.0, "eval/episode_success_any": 1.0}]
    assert [r["training/env_steps"] for r in scores.evaluations(rows)] == [200, 300]
    assert scores.score_of_metrics(rows, EPISODE, last=1) == {"score": 0.5, "time_at_goal": 10.0, "success_any": None,
                                                              "num_evals": 2}


def test_run_directories_are_found_one_way(tmp_path, capsys):
    """rlscale.storage.run_dir.find_run_dirs: a run directory stands for itself, a sweep directory for its runs;
    `rlscale plot` and `rlscale eval` both take either."""
    from rlscale.evaluation import evaluate as checkpoint_eval
    from rlscale.storage import run_dir as rd

    runs = [make_run(tmp_path / "sweep", [2, 4, 6], seed=seed) for seed in (1, 0)]
    (tmp_path / "sweep" / "logs").mkdir()
    (tmp_path / "sweep" / "notes.txt").write_text("not a run")
    assert rd.find_run_dirs(tmp_path / "sweep") == analysis.run_dirs(tmp_path / "sweep") == sorted(runs)
    assert rd.find_run_dirs(runs[0]) == analysis.run_dirs(runs[0]) == checkpoint_eval.run_dirs_of(runs[0]) == [runs[0]]
    assert rd.find_run_dirs(tmp_path / "sweep" / "logs") == rd.find_run_dirs(tmp_path / "nowhere") == []
    with pytest.raises(checkpoint_eval.EvalError, match="is neither a run directory"):
        checkpoint_eval.run_dirs_of(tmp_path / "sweep" / "logs")
    with pytest.raises(analysis.AnalysisError, match="holds no run directories"):
        analysis.run_dirs(tmp_path / "sweep" / "logs")
    scores = analysis.run_scores(analysis.load_sweep(runs[0]))
    assert list(scores["run"]) == [runs[0].name] and scores["time_at_goal"].item() == pytest.approx(4)


def test_saved_configs_are_rebuilt_as_every_config_is(tmp_path):
    """TrainConfig.from_dict rebuilds a config.json for rlscale plot and a checkpoint's trunks: options it
    lacks take their defaults, options of another version are dropped; elsewhere they are an error."""
    from rlscale.config import TrainConfig

    make_run(tmp_path, [2, 4], retired_option=3, actor_depth=8)  # a config.json of another version
    (row,) = analysis.run_scores(analysis.load_sweep(tmp_path)).to_dict("records")
    assert (row["actor_depth"], row["critic_depth"], row["width"], row["activation"]) == (8, 4, 32, "swish")
    saved = {"env": "point_u_maze", "depth": 4, "actor_depth": 8, "width": 32, "retired_option": 3}
    with pytest.raises(ValueError, match=r"unknown option\(s\) retired_option"):
        TrainConfig.from_dict(saved)
    cfg = TrainConfig.from_dict(saved, saved=True)
    assert cfg == TrainConfig(env="point_u_maze", depth=4, actor_depth=8, width=32)
    assert cfg.network_trunk("actor") == cfg.trunk(8)
    assert cfg.network_trunk("critic").depth == 4 and cfg.network_trunk("critic").width == 32


def test_score_matrix_is_runs_by_tasks(tmp_path):
    scores = analysis.run_scores(analysis.load_sweep(synthetic_sweep(tmp_path, depths=(4,), seeds=3)))
    m = analysis.score_matrix(scores)
    assert m.shape == (3, 2)  # 3 seeds (runs) × 2 tasks
    big = scores[scores["task"] == "point_big_maze"].sort_values("seed")["score"].to_numpy()
    assert np.allclose(m[:, 0], big)


def test_stratified_bootstrap_interval_covers_the_true_mean():
    """200 simulated sweeps (20 seeds × 3 tasks, true mean 0.5): the 95 % interval of the mean covers it."""
    rng = np.random.default_rng(1)
    matrices = {str(i): 0.5 + 0.1 * rng.standard_normal((20, 3)) for i in range(200)}
    out = analysis.interval_estimates(matrices, reps=200, seed=0)
    mean = out[out["metric"] == "mean"]
    coverage = ((mean["lo"] <= 0.5) & (0.5 <= mean["hi"])).mean()
    # The percentile bootstrap is narrow with few seeds (variance factor (n-1)/n): measured 93 % here,
    # 87 % with 10 seeds per task.
    assert coverage >= 0.88, coverage


def test_critical_depth_and_fit():
    depths = [4, 8, 16, 32, 64]
    spread = np.array([-0.02, 0.0, 0.02])
    jump = {d: list(m + spread) for d, m in zip(depths, [0.1, 0.12, 0.7, 0.8, 0.8])}
    assert analysis.critical_depth(jump) == 16
    # Steps of 0.02 inside a seed spread of ±0.1 never pass the test.
    flat = {d: list(m + 5 * spread) for d, m in zip(depths, [0.1, 0.12, 0.14, 0.16, 0.18])}
    assert analysis.critical_depth(flat) is None
    assert analysis.critical_depth({4: [0.1], 8: [0.9]}) is None  # one seed: no claim
    x = np.repeat(depths, 3)
    y = 0.1 + 0.7 / (1 + np.exp(-4 * (np.log2(x) - np.log2(12))))
    fit = analysis.saturating_fit(x, y)
    assert fit["fit_status"] == "ok"
    assert fit["fit_mid_depth"] == pytest.approx(12, rel=0.05)
    assert fit["fit_hi"] == pytest.approx(0.8, abs=0.02)
    assert analysis.saturating_fit([4, 8, 16], [0.1, 0.5, 0.9])["fit_status"] == "too few depths (3 < 4)"


def test_depth_effect_test_and_old_rule_with_hand_computed_intervals():
    import pandas as pd
    from scipy.stats import ttest_ind

    rows = []
    groups = {"a": ([0.10, 0.12, 0.11, 0.09], [0.50, 0.52, 0.49, 0.51]),
              "b": ([0.10, 0.30, 0.20, 0.00], [0.30, 0.50, 0.10, 0.40]),
              # Passes the Welch test, not the old rule: the case the old rule was too strict for.
              "c": ([0.20, 0.30, 0.25, 0.35, 0.15], [0.45, 0.35, 0.50, 0.40, 0.30])}
    for task, (shallow, deep) in groups.items():
        for depth, values in ((4, shallow), (16, deep)):
            for seed, v in enumerate(values):
                rows.append({"task": task, "critic_depth": depth, "actor_depth": depth, "width": 64,
                             "batch_size": 256, "activation": "swish", "norm": "layernorm", "residual": True,
                             "seed": seed, "score": v})
    rows.append(rows[0] | {"critic_depth": 8, "actor_depth": 8})  # a depth the test does not compare
    table = analysis.depth_effect(pd.DataFrame(rows), deep=16).set_index("task")
    t3 = 3.182446305284263  # t(0.975, 3)
    hw = lambda v: t3 * np.std(v, ddof=1) / 2.0  # noqa: E731
    a = table.loc["a"]
    assert a["mean_deep"] == pytest.approx(0.505) and a["mean_shallow"] == pytest.approx(0.105)
    assert a["halfwidth_deep"] == pytest.approx(hw([0.50, 0.52, 0.49, 0.51]))
    assert a["halfwidth_shallow"] == pytest.approx(hw([0.10, 0.12, 0.11, 0.09]))
    assert a["difference"] == pytest.approx(0.4) and bool(a["beats"]) and bool(a["holds"]) and a["seeds_deep"] == 4
    for task, (shallow, deep) in groups.items():  # the interval and p-value are scipy's Welch test's
        ref = ttest_ind(deep, shallow, equal_var=False)
        ci = ref.confidence_interval(0.95)
        assert table.loc[task, "p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert (table.loc[task, "low"], table.loc[task, "high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    # Means 0.325 vs 0.15: a difference of 0.175 inside both the interval [-0.14, 0.49] and the half-widths.
    b = table.loc["b"]
    assert b["difference"] == pytest.approx(0.175) and not bool(b["beats"]) and not bool(b["holds"])
    c = table.loc["c"]
    assert c["difference"] == pytest.approx(0.15) and bool(c["holds"]) and not bool(c["beats"])
    assert analysis.depth_effect(pd.DataFrame(rows), deep=32).empty  # depth 32 never ran
    # One seed on a side: an unbounded interval, never a claim.
    one = pd.DataFrame([r for r in rows if not (r["task"] == "a" and r["critic_depth"] == 4 and r["seed"] > 0)])
    a1 = analysis.depth_effect(one, deep=16).set_index("task").loc["a"]
    assert not bool(a1["beats"]) and not bool(a1["holds"]) and pd.isna(a1["p"])


def test_welch_edge_cases():
    from rlscale.analysis.scores import welch

    assert welch([0.5, 0.6], [])["holds"] is False and welch([0.5, 0.6], [])["diff"] is None
    same = welch([0.3, 0.3, 0.3], [0.1, 0.1])  # no spread: the difference itself, certain
    assert same["low"] == same["high"] == pytest.approx(0.2) and same["holds"] and same["p"] is None
    assert welch([0.1, 0.1], [0.3, 0.3])["holds"] is False
    assert welch([0.1, 0.2, 0.3], [0.2, 0.3, 0.4], confidence=0.5)["high"] < welch([0.1, 0.2, 0.3], [0.2, 0.3, 0.4])["high"]


def test_bootstrap_interval_of_the_mean_stays_in_the_data_range_and_repeats():
    rng = np.random.default_rng(3)
    values = rng.uniform(0, 1, size=(8, 5))
    values[:, 0] = [0, 0, 0, 0, 0, 0, 0, 0.01]  # near the floor: a t-interval would reach below 0
    lo, hi = analysis.bootstrap_mean_interval(values, reps=4000, seed=1)
    assert lo.shape == hi.shape == (5,)
    assert (lo >= values.min(axis=0)).all() and (hi <= values.max(axis=0)).all()
    assert (lo <= values.mean(axis=0)).all() and (values.mean(axis=0) <= hi).all()
    assert lo[0] >= 0 and analysis.t_halfwidth(values[:, 0]) > values[:, 0].mean()  # t would go below 0
    again = analysis.bootstrap_mean_interval(values, reps=4000, seed=1)
    np.testing.assert_array_equal(again[0], lo)
    # Coverage near 95 % for normal data with 16 seeds (the study's size).
    draws = np.random.default_rng(0).normal(0.5, 0.1, size=(400, 16))
    covered = [(l <= 0.5 <= h) for l, h in (analysis.bootstrap_mean_interval(d, reps=1000, seed=i) for i, d in enumerate(draws))]
    assert 0.88 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_sweep_summary_figure_draws_curves_score_vs_depth_and_the_shipped_study(tmp_path):
    from rlscale.configs import load_study, studies
    from rlscale.launch import summary

    sweep = synthetic_sweep(tmp_path / "sweep", depths=(4, 16), tasks=("point_u_maze",))
    table = [{"run_dir": str(p), "status": "done", "score": 0.5} for p in sorted(sweep.iterdir())]
    assert summary.plot(table, tmp_path / "alone.png", "demo") == f"plot: {tmp_path / 'alone.png'}"
    assert (tmp_path / "alone.png").read_bytes()[:4] == b"\x89PNG"
    evals = analysis.load_runs([Path(r["run_dir"]) for r in table])
    fig = analysis.fig_depth_summary(evals, reps=200)
    curves, by_depth = [ax for ax in fig.axes if ax.get_visible()]
    assert [line.get_label() for line in curves.get_lines()] == ["depth 4 (3 seeds)", "depth 16 (3 seeds)"]
    assert re.search(r"16 vs 4: \+0\.[56]\d \[\+0\.\d\d, \+0\.\d\d\] → yes", by_depth.get_title()), by_depth.get_title()
    # Every band (a PolyCollection) stays inside the score's range.
    for ax in (curves, by_depth):
        for band in ax.collections:
            for path in band.get_paths():
                assert (path.vertices[:, 1] >= -1e-9).all() and (path.vertices[:, 1] <= 1 + 1e-9).all()
    name = "depth_effect_cpu_confirm"
    assert name in studies()
    study = load_study(name)
    message = summary.plot(table, tmp_path / "study.png", "demo", name)
    assert message == f"plot: {tmp_path / 'study.png'} (beside the study {name})"
    fig = analysis.fig_depth_summary(evals, study=study, reps=200)
    panel = [ax for ax in fig.axes if ax.get_visible()][-1]
    assert panel.get_title() == study["label"] + "\n" + study["verdict"].replace("; ", "\n")
    assert panel.get_title().startswith("pre-registered study: point_u_maze, 16 seeds per arm")
    assert len(panel.get_lines()) == len(study["arms"]) == 3
    assert summary.study_verdict(name) == f"{study['label']}: {study['verdict']}".replace("\n", " ")
    with pytest.raises(ValueError, match="unknown study 'nope'; valid: depth_effect_cpu_confirm"):
        load_study("nope")


def test_fits_table_on_a_synthetic_sweep(tmp_path):
    scores = analysis.run_scores(analysis.load_sweep(synthetic_sweep(tmp_path)))
    table = analysis.fits(scores)
    assert list(table["task"]) == ["point_big_maze", "point_u_maze"]
    assert list(table["critical_depth"]) == [16, 16]
    assert (table["fit_status"] == "ok").all()


def test_flops_per_sgd_step_is_the_step_count():
    """The runs table's FLOPs (rlscale.sizes) are rlscale.flops' count (tested against XLA in test_flops.py)."""
    from rlscale import envs, sizes
    from rlscale.config import config_for
    from rlscale.sizes import sgd_step_flops

    cfg = config_for("point_u_maze", depth=4, width=32, batch_size=8)
    assert sizes.flops_per_sgd_step(cfg) == sgd_step_flops(cfg, envs.make("point_u_maze").spec)["total"] > 0


# --- rlscale plot --------------------------------------------------------------------------------


def test_plot_writes_supported_figures_and_reports_skipped(tmp_path, capsys):
    sweep = synthetic_sweep(tmp_path / "sweep", depths=(4, 8, 16, 32), seeds=2)
    synthetic_sweep(tmp_path / "sweep", depths=(4, 8), seeds=2, tasks=("point_u_maze",), batch_size=64)
    out = tmp_path / "figs"
    assert cli_main(["plot", str(sweep), "--out", str(out), "--reference", "--reps", "200"]) == 0
    text = capsys.readouterr().out
    for name in ("score_vs_depth", "learning_curves", "batch_depth", "wallclock"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    assert "skipped width_depth: one width only" in text
    assert "skipped actor_critic: actor depth always equals critic depth" in text
    assert "skipped stitching: no per-goal-distance metrics (no stitching runs)" in text
    assert "skipped collector: no collector runs (--collector-depth)" in text
    assert not (out / "width_depth.png").exists()
    for table in ("runs.csv", "aggregate.csv", "fits.csv"):
        assert (out / table).is_file()
    assert not (out / "collector.csv").exists()
    assert not list(out.glob(".*tmp"))


def test_plot_width_and_actor_critic_figures(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for width in (32, 64):
        synthetic_sweep(sweep, depths=(4, 8), seeds=2, tasks=("point_u_maze",), width=width)
    for actor in (8,):
        synthetic_sweep(sweep, depths=(4, 8), seeds=2, tasks=("point_u_maze",), actor_depth=actor, width=32)
    assert cli_main(["plot", str(sweep), "--reps", "100"]) == 0
    assert (sweep / "plots" / "width_depth.pdf").is_file()
    assert (sweep / "plots" / "actor_critic.png").is_file()


def test_block_norm_figure_draws_each_depths_last_norms_against_the_block_index(tmp_path):
    """block_norms.png: per network, one line per depth through the seeds' mean norm of each block at the
    runs' last evaluation (earlier evaluations do not count)."""
    def norms(depth, scale):  # last evaluation: block k of every network has norm scale·(k + 1)
        return [{f"training/block_norms/{net}/{k}": s * (k + 1) for net in ("actor", "critic_sa", "critic_g")
                 for k in range(depth // 4)} for s in (100.0, scale)]

    for depth in (4, 12):
        for seed, scale in enumerate((1.0, 3.0)):
            make_run(tmp_path, [1.0, 2.0], depth=depth, seed=seed, extra=norms(depth, scale))
    evals = analysis.load_sweep(tmp_path)
    table = analysis.block_norm_table(evals)
    at = table.set_index(["network", "critic_depth", "block"])["norm"]
    assert at[("actor", 12, 2)] == pytest.approx(2.0 * 3) and at[("critic_g", 4, 0)] == pytest.approx(2.0)
    assert len(table) == 3 * (1 + 3) and set(table["num_seeds"]) == {2}
    fig = analysis.fig_block_norms(evals)
    actor_panel = next(ax for ax in fig.axes if ax.get_title().endswith(": actor"))
    lines = {line.get_label(): list(line.get_ydata()) for line in actor_panel.get_lines()}
    assert lines == {"depth 4 (2 seeds)": [2.0], "depth 12 (2 seeds)": [2.0, 4.0, 6.0]}
    older = tmp_path / "older"
    make_run(older, [1.0, 2.0])
    assert "no block norms" in analysis.fig_block_norms(analysis.load_sweep(older))


def test_stitching_figure_bars_are_seed_means_of_the_last_five_evals_per_goal_distance(tmp_path, capsys):
    """Per run and distance d: time at goal over the episodes d cells away, mean of the last 5 of 6 evaluations,
    / episode length; bars: mean over 3 seeds per depth, 95 % Student-t half-widths."""
    sweep = tmp_path / "sweep"
    expected = {}
    for depth, base in ((4, 2.0), (16, 8.0)):
        for seed in range(3):
            per_eval = []
            for i in range(6):  # evaluation 0 is outside the last 5; d6 is missing (no episodes) in evaluation 5
                per_eval.append({"eval/episode_success_d4": 99.0 if i == 0 else base + seed,
                                 "eval/episode_success_any_d4": 1.0,
                                 "eval/episode_success_d5": 99.0 if i == 0 else base / 2 + i - 1,
                                 "eval/episode_success_any_d5": float(i % 2),
                                 "eval/episode_success_d6": float("nan") if i == 5 else (0.0 if i == 0 else float(seed))})
            make_run(sweep, [1.0] * 6, extra=per_eval, env="point_u_maze_stitch", depth=depth, seed=seed)
        seeds = range(3)
        expected[depth] = {4: [(base + s) / EPISODE for s in seeds], 5: [(base / 2 + 2) / EPISODE] * 3,
                           6: [s / EPISODE for s in seeds]}
    make_run(sweep, [1.0] * 6, env="point_u_maze", depth=4)  # no stitching metrics: not in the figure
    evals = analysis.load_sweep(sweep)
    table = analysis.goal_distance_table(evals).set_index(["critic_depth", "goal_distance"])
    assert set(table["task"]) == {"point_u_maze_stitch"} and len(table) == 6 and (table["num_seeds"] == 3).all()
    per_run = analysis.goal_distance_scores(evals)
    assert per_run.loc[per_run["goal_distance"] == 5, "success_any"].tolist() == [pytest.approx(0.6)] * 6  # 3 of the last 5
    for depth, by_d in expected.items():
        for d, values in by_d.items():
            assert table.loc[(depth, d), "mean"] == pytest.approx(np.mean(values))
            assert table.loc[(depth, d), "halfwidth"] == pytest.approx(analysis.t_halfwidth(values))
    fig = analysis.fig_stitching(evals)
    (ax,) = fig.axes
    heights = [p.get_height() for p in ax.patches]  # a bar series per distance, a bar per depth in it
    assert heights == pytest.approx([np.mean(expected[depth][d]) for d in (4, 5, 6) for depth in (4, 16)])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "16"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"goal {d} cells away" for d in (4, 5, 6)]
    assert analysis.fig_stitching(evals[evals["task"] == "point_u_maze"]) == "no per-goal-distance metrics (no stitching runs)"
    assert "stitching" in analysis.FIGURES
    assert cli_main(["plot", str(sweep), "--reps", "20"]) == 0
    assert (sweep / "plots" / "stitching.png").is_file() and "skipped stitching" not in capsys.readouterr().out


def test_collector_figure_and_table_split_the_learners_by_collector_depth(tmp_path, capsys):
    """A collector 2 x 2: per (collector, learner) depth the seeds' mean of the last 5 of 6 evaluations with
    95 % t half-widths; a run collecting its own data is neither in the table nor in the bars, and the
    learners of one depth are two variants (one per collector) in every other figure and table."""
    sweep = tmp_path / "sweep"
    level = {(4, 4): 2.0, (4, 16): 4.0, (16, 4): 6.0, (16, 16): 10.0}  # (collector, learner) -> time at goal
    for (collector, learner), base in level.items():
        for seed in range(3):
            make_run(sweep, [99.0] + [base + seed] * 5, depth=learner, seed=seed, collector_depth=collector)
    make_run(sweep, [20.0] * 6, depth=4)  # collects its own data
    evals = analysis.load_sweep(sweep)
    table = analysis.collector_table(analysis.run_scores(evals)).set_index(["collector_depth", "critic_depth"])
    assert len(table) == 4 and (table["num_seeds"] == 3).all()
    for key, base in level.items():
        values = [(base + s) / EPISODE for s in range(3)]
        assert table.loc[key, "mean"] == pytest.approx(np.mean(values))
        assert table.loc[key, "halfwidth"] == pytest.approx(analysis.t_halfwidth(values))
    scores = analysis.run_scores(evals)
    assert set(analysis.variants(scores)) == {"collector_depth=4", "collector_depth=16", "collector_depth=self"}
    (ax,) = analysis.fig_collector(scores).axes
    heights = [p.get_height() for p in ax.patches]  # a bar series per learner depth, a bar per collector in it
    assert heights == pytest.approx([table.loc[(c, d), "mean"] for d in (4, 16) for c in (4, 16)])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4", "16"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["learner depth 4", "learner depth 16"]
    plain = scores[scores["collector_depth"] == analysis.OWN_COLLECTOR]
    assert analysis.fig_collector(plain) == "no collector runs (--collector-depth)"
    assert cli_main(["plot", str(sweep), "--reps", "20"]) == 0
    out = capsys.readouterr().out
    assert (sweep / "plots" / "collector.png").is_file() and "skipped collector" not in out
    assert "collector experiment" in out and (sweep / "plots" / "collector.csv").read_text().count("\n") == 5


def test_plot_of_a_directory_without_runs_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["plot", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no run directories" in err
    assert list((tmp_path / "empty").iterdir()) == []


# --- the notebook --------------------------------------------------------------------------------


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert 'os.environ.get("RLSCALE_SWEEP_DIR", "runs/quickstart")' in "".join(code[0]["source"])


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """A real 4-run sweep of tiny training runs (2 depths × 2 seeds), through `rlscale sweep`."""
    import yaml
    from helpers import TINY

    root = tmp_path_factory.mktemp("runs")
    base = {k: v for k, v in TINY.items() if k != "env"}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "base": base,
                                    "grid": {"seed": [0, 1], "env": ["point_u_maze"], "depth": [4, 8]}}))
    assert cli_main(["sweep", str(path), "--runs-root", str(root), "--workers", "2"]) == 0
    return root / "tiny"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")
def test_notebook_runs_top_to_bottom_on_a_fixture_sweep(tiny_sweep, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"RLSCALE_SWEEP_DIR": str(tiny_sweep), "RLSCALE_OUT_DIR": str(tmp_path / "out"), "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(nb, timeout=170, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert (tmp_path / "out" / "score_vs_depth.png").is_file()
    assert (tmp_path / "out" / "fits.csv").is_file()


@pytest.mark.slow
def test_plot_of_a_real_sweep(tiny_sweep, tmp_path, capsys):
    assert cli_main(["plot", str(tiny_sweep), "--out", str(tmp_path), "--reps", "100"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("4 runs, 12 evaluations, 1 task(s)\n")
    assert "skipped batch_depth: one batch size only" in text
    runs = analysis.pd.read_csv(tmp_path / "runs.csv")
    assert runs["complete"].all() and runs["params"].gt(0).all() and runs["flops_per_sgd_step"].gt(0).all()
    assert sorted(runs["critic_depth"]) == [4, 4, 8, 8] and runs["training_s"].gt(0).all()
    assert runs["wallclock_s"].gt(runs["training_s"]).all()  # it counts start-up, compile and checkpoints too
    for name in ("score_vs_depth", "learning_curves", "wallclock"):
        assert (tmp_path / f"{name}.pdf").is_file()


def test_score_vs_depth_draws_one_line_per_energy(tmp_path):
    """A sweep comparing critics (configs/sweeps/paper_quasimetric.yaml) splits each task's runs by energy
    and InfoNCE variant; a table made without those columns still gets its variants."""
    sweep = synthetic_sweep(tmp_path, depths=(4, 8), seeds=2, tasks=("point_u_maze",))
    synthetic_sweep(sweep, depths=(4, 8), seeds=2, tasks=("point_u_maze",), energy="mrn", contrastive_loss="backward_infonce")
    scores = analysis.run_scores(analysis.load_sweep(sweep))
    lines = ["energy=l2 contrastive_loss=forward_infonce", "energy=mrn contrastive_loss=backward_infonce"]
    assert sorted(analysis.variants(scores).unique()) == lines
    fig = analysis.fig_score_vs_depth(scores, reps=50)
    assert sorted(fig.axes[0].get_legend_handles_labels()[1]) == lines  # the task's panel
    assert sorted(fig.axes[1].get_legend_handles_labels()[1]) == [f"IQM {line}" for line in lines]  # the aggregate
    assert set(analysis.variants(scores.drop(columns=["energy", "contrastive_loss"]))) == {""}


def test_a_baselines_sweep_draws_one_line_per_algorithm(tmp_path, capsys):
    """Two algorithms × two depths (configs/sweeps/paper_baselines.yaml's shape): each task's panel has a
    line per algorithm, and rlscale plot writes the figure; a config saved before --algo existed is CRL's."""
    sweep = synthetic_sweep(tmp_path, depths=(4, 8), seeds=2, tasks=("point_u_maze",))
    synthetic_sweep(sweep, depths=(4, 8), seeds=2, tasks=("point_u_maze",), algo="sac_her")
    scores = analysis.run_scores(analysis.load_sweep(sweep))
    assert sorted(scores["algo"]) == ["crl"] * 4 + ["sac_her"] * 4
    assert sorted(analysis.variants(scores).unique()) == ["algo=crl", "algo=sac_her"]
    fig = analysis.fig_score_vs_depth(scores, reps=50)
    assert sorted(fig.axes[0].get_legend_handles_labels()[1]) == ["algo=crl", "algo=sac_her"]
    assert cli_main(["plot", str(sweep), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "score_vs_depth.pdf").is_file()


@pytest.mark.parametrize("no_norm", [{"norm": "none"}, {"layer_norm": False}])  # today's config.json, an old one's
def test_paper_results_and_reference_matching(tmp_path, no_norm):
    paper = analysis.paper_results()
    assert paper["depth"]["humanoid"][16] == 522.4 and paper["batch_depth"]["humanoid"][16][1024] == 588.7
    assert len(paper["depth"]) == 10 and paper["ablations"]["humanoid"]["relu"][64] == 185.3
    assert analysis.paper_depth("humanoid")[64] == pytest.approx(0.6495)
    assert analysis.paper_depth("point_u_maze") is None
    synthetic_sweep(tmp_path, depths=(4, 8), seeds=1, tasks=("humanoid",), **no_norm)
    scores = analysis.run_scores(analysis.load_sweep(tmp_path))
    assert [label for label, _ in analysis.paper_references("humanoid", scores)] == ["paper", "paper, no LayerNorm"]
    assert analysis.paper_references("point_u_maze", scores) == []
