import base64
import csv
import hashlib
import json
import re
import subprocess
import sys
import zlib

import pytest
from helpers import TINY, Countdown

from rlscale.cli import main
from rlscale.config import TrainConfig
from rlscale.storage import checkpoint as ckpt
from rlscale.storage import run_dir as rd
from rlscale.training.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny trained point-maze runs side by side, as in a sweep directory."""
    sweep = tmp_path_factory.mktemp("sweep")
    runs = [train(TrainConfig(**{**TINY, "seed": seed, "run_dir": str(sweep / f"run_s{seed}")})) for seed in (0, 1)]
    return sweep, runs


def _snapshot(path):
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


EVAL_KEYS = ("eval/episode_success", "eval/episode_success_any", "eval/episode_dist", "eval/avg_episode_length")


def test_eval_reproduces_the_runs_last_logged_score(trained, capsys):
    _, (run, _) = trained
    checkpoints_before = _snapshot(run / "checkpoints")
    assert main(["eval", str(run), "--episodes", str(TINY["num_eval_envs"])]) == 0
    assert "point_u_maze_eval" in capsys.readouterr().out
    entries = __import__("json").loads((run / "eval" / "point_u_maze_eval" / "000000000320.json").read_text())
    logged = rd.read_metrics(run)[-1]
    assert len(entries) == 1 and entries[0]["step"] == 320 and entries[0]["episodes"] == TINY["num_eval_envs"]
    assert {k: entries[0][k] for k in EVAL_KEYS} == {k: logged[k] for k in EVAL_KEYS}
    assert _snapshot(run / "checkpoints") == checkpoints_before  # evaluation never writes into checkpoints
    # Another setting adds an entry; the same setting again replaces its own entry only.
    assert main(["eval", str(run), "--episodes", "3", "--stochastic"]) == 0
    assert main(["eval", str(run), "--episodes", "3", "--stochastic"]) == 0
    entries = __import__("json").loads((run / "eval" / "point_u_maze_eval" / "000000000320.json").read_text())
    assert [(e["episodes"], e["stochastic"]) for e in entries] == [(4, False), (3, True)]


@pytest.mark.slow
def test_all_checkpoints_and_sweep_comparison(trained, capsys):
    sweep, runs = trained
    assert main(["eval", str(runs[1]), "--all-checkpoints", "--episodes", "2", "--task", "point_u_maze"]) == 0
    assert sorted(p.name for p in (runs[1] / "eval" / "point_u_maze").iterdir()) == [
        "000000000160.json", "000000000240.json", "000000000320.json",
    ]
    assert main(["eval", str(sweep), "--episodes", "2"]) == 0
    rows = list(csv.DictReader(open(sweep / "eval_summary.csv")))
    assert sorted(r["seed"] for r in rows) == ["0", "1"] and all(r["depth"] == "4" for r in rows)


@pytest.mark.slow
def test_load_policy_in_a_fresh_process_without_the_trainer(trained):
    _, (run, _) = trained
    code = (
        "import sys, numpy as np\n"
        "from rlscale import load_policy\n"
        f"policy, task = load_policy({str(run)!r})\n"
        "action = np.asarray(policy(np.zeros((5, 6), np.float32)))\n"
        "assert action.shape == (5, 2) and np.all(np.abs(action) <= 1), action\n"
        "assert 'rlscale.training.loop' not in sys.modules and 'rlscale.data.buffer' in sys.modules\n"  # its agents, not the trainer
        "print(task)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "point_u_maze"


def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, capsys):
    _, (run, _) = trained
    before = _snapshot(run)
    cases = [
        (["eval", str(tmp_path)], "is neither a run directory, a checkpoint nor a sweep directory"),
        (["eval", str(run), "--task", "reacher"], "task 'reacher' has observation size 13 and action size 2, but the policy"),
        (["eval", str(run), "--task", "nope"], "unknown task 'nope'; valid tasks:"),
        (["eval", str(run), "--episodes", "0"], "--episodes must be a positive integer, got 0"),
    ]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert _snapshot(run) == before


@pytest.mark.slow
def test_corrupt_checkpoint_and_run_without_checkpoint(tmp_path, capsys):
    run = train(TrainConfig(**{**TINY, "num_evals": 1, "total_env_steps": 160, "run_dir": str(tmp_path / "run")}))
    for path in (ckpt.step_path(run, 160) / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    before = _snapshot(run)
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "000000000160" in err and "\n" not in err
    assert _snapshot(run) == before
    empty = tmp_path / "empty_run"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert main(["eval", str(empty)]) == 2
    assert "has no checkpoint" in capsys.readouterr().err


def _png_size(path):
    import matplotlib.image

    image = matplotlib.image.imread(path)
    return image.shape[1], image.shape[0]


def test_pictures_of_a_point_maze_run(trained, tmp_path, capsys):
    from rlscale.envs.mazes import maze
    from rlscale.envs.render import figure_size

    sweep, (run, _) = trained
    traj, critic = tmp_path / "traj.png", tmp_path / "critic.png"
    assert main(["eval", str(run), "--episodes", "2", "--trajectories", str(traj), "--num-trajectories", "3",
                 "--critic-map", str(critic), "--goal", "12", "4"]) == 0
    width, height = figure_size(maze("u_maze_eval"))
    assert _png_size(traj) == (round(width * 100), round(height * 100))
    assert _png_size(critic)[1] == round(height * 100)
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("panel ")] == [
        f"panel depth 4, seed 0: {run}"]
    # A sweep directory: one panel per depth (both runs have depth 4: one panel).
    assert main(["eval", str(sweep), "--episodes", "2", "--trajectories", str(tmp_path / "sweep.png")]) == 0
    assert _png_size(tmp_path / "sweep.png") == (round(width * 100), round(height * 100))
    panel_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("panel ")]
    assert panel_lines == [f"panel depth 4, seed 0: {sweep / 'run_s0'}"]  # the title, and the run it shows
    # Viewer and video need a Brax task: a clear one-line error, and nothing written.
    assert main(["eval", str(run), "--render", str(tmp_path / "out.html")]) == 2
    assert "--render needs a Brax task" in capsys.readouterr().err
    assert not (tmp_path / "out.html").exists()


def test_embeddings_of_a_run(trained, tmp_path):
    """--embeddings: a PNG of the critic's representations along evaluation episodes; nothing else written."""
    _, (run, _) = trained
    out = tmp_path / "emb.png"
    before = _snapshot(run / "checkpoints")
    assert main(["eval", str(run), "--episodes", "2", "--embeddings", str(out), "--num-trajectories", "3"]) == 0
    assert _png_size(out) == (1000, 420)
    assert _snapshot(run / "checkpoints") == before


def test_pca_finds_the_known_directions():
    import numpy as np

    from rlscale.evaluation.visualize import _pca

    rng = np.random.default_rng(0)
    # Variance 9 along (1, 1, 0)/√2, 1 along (0, 0, 1), none along (1, −1, 0)/√2.
    coords = rng.normal(size=(4000, 2)) * np.array([3.0, 1.0])
    axes = np.array([[1, 1, 0], [0, 0, 1]]) / np.array([[np.sqrt(2)], [1.0]])
    directions, explained = _pca(coords @ axes + 5.0)
    assert abs(directions[0] @ axes[0]) == pytest.approx(1.0, abs=1e-3)
    assert abs(directions[1] @ axes[1]) == pytest.approx(1.0, abs=1e-3)
    assert explained == pytest.approx([0.9, 0.1], abs=0.01)


@pytest.mark.slow  # trains a two-depth sweep: 90 s
def test_critic_maps_of_a_sweep_share_one_colour_scale(trained, tmp_path, capsys):
    """A sweep of two depths: one critic-map panel per depth, both on the colour scale of all their values."""
    import numpy as np
    from rlscale.envs.mazes import maze
    from rlscale.envs.render import figure_size

    from rlscale.evaluation import visualize
    from rlscale.evaluation.policy import load, make_eval_task

    _, (shallow, _) = trained
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / shallow.name).symlink_to(shallow, target_is_directory=True)
    deep = train(TrainConfig(**{**TINY, "depth": 8, "run_dir": str(sweep / "run_d8")}))
    out = tmp_path / "critic.png"
    assert main(["eval", str(sweep), "--episodes", "2", "--critic-map", str(out), "--goal", "12", "4"]) == 0
    width, height = figure_size(maze("u_maze_eval"))
    assert _png_size(out) == (round((2 * width + 1) * 100), round(height * 100))

    emb = tmp_path / "embeddings.png"
    assert main(["eval", str(sweep), "--episodes", "2", "--embeddings", str(emb), "--num-trajectories", "3"]) == 0
    assert _png_size(emb) == (1000, 2 * 420)  # one row of two panels per depth

    panels = [("depth 4", load(shallow)), ("depth 8", load(deep))]
    fig = visualize.critic_map_figure(panels, None, (12.0, 4.0))
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2
    values = [visualize._critic_values(p, make_eval_task(p, None), np.float32([12, 4]), 0.5)[0] for _, p in panels]
    assert not np.allclose(np.nanmin(values[0]), np.nanmin(values[1]))  # the two critics differ
    for image in images:
        assert image.norm.vmin == pytest.approx(min(np.nanmin(v) for v in values))
        assert image.norm.vmax == pytest.approx(max(np.nanmax(v) for v in values))
    capsys.readouterr()
    # Runs that evaluate on different mazes are not drawn side by side: a clear error, nothing written.
    assert main(["eval", str(sweep), "--episodes", "2", "--critic-map", str(tmp_path / "mixed.png"),
                 "--task", "point_u_maze"]) == 0  # one --task: one maze for every panel
    big = train(TrainConfig(**{**TINY, "env": "point_big_maze", "run_dir": str(sweep / "run_big")}))
    assert big.exists()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["eval", str(sweep), "--episodes", "2", "--critic-map", str(tmp_path / "bad.png")]) == 2
    err = capsys.readouterr().err
    assert "one maze" in err and "--task" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.slow
def test_pictures_and_viewer_of_an_ant_maze_run(tmp_path, capsys, monkeypatch):
    """Trajectories, critic map and the HTML viewer of a (barely) trained ant-maze run, on the CPU."""
    from html.parser import HTMLParser

    from rlscale.envs.mazes import maze
    from rlscale.envs.render import figure_size

    run = train(TrainConfig(**{**TINY, "env": "ant_u_maze", "total_env_steps": 160, "num_evals": 1,
                               "run_dir": str(tmp_path / "ant_run")}))
    before = _snapshot(run)
    traj, critic, viewer = tmp_path / "traj.png", tmp_path / "critic.png", tmp_path / "viewer.html"
    assert main(["eval", str(run), "--episodes", "2", "--trajectories", str(traj), "--num-trajectories", "2",
                 "--critic-map", str(critic), "--render", str(viewer)]) == 0
    width, height = figure_size(maze("u_maze_eval"))  # the run's eval task is ant_u_maze_eval
    assert _png_size(traj) == (round(width * 100), round(height * 100))
    assert _png_size(critic)[1] == round(height * 100)

    class Scripts(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.scripts = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

        def handle_data(self, data):
            if self.tags and self.tags[-1] == "script":
                self.scripts.append(data)

    page = Scripts()
    page.feed(viewer.read_text())
    assert {"html", "body", "script"} <= set(page.tags)
    # Brax's viewer embeds the system and frames as base64 zlib-compressed JSON.
    encoded = next(re.search(r'var system = "([^"]+)"', s) for s in page.scripts if "var system" in s).group(1)
    system = json.loads(zlib.decompress(base64.b64decode(encoded)))
    assert len(system["states"]["x"]) == 2 * (TINY["episode_length"] + 1)  # both episodes, start included
    box_walls = [g for g in system["geoms"]["world"] if g["name"] == "Box"]
    assert len(box_walls) == maze("u_maze_eval").walls.sum()  # one box per wall cell of the layout
    # The run directory only gained evaluation results; checkpoints and metrics are untouched.
    after = _snapshot(run)
    assert {k: v for k, v in after.items() if k in before} == before
    assert all(k.startswith("eval/") for k in set(after) - set(before))
    capsys.readouterr()
    # A video: an MP4 where an offscreen renderer exists (probed here, independently of the command),
    # else one clear line and nothing written.
    video = tmp_path / "out.mp4"
    code = main(["eval", str(run), "--episodes", "1", "--video", str(video)])
    if _offscreen_renderer_available():
        assert code == 0 and video.read_bytes()[4:8] == b"ftyp"
    else:
        assert code == 2 and "no offscreen renderer available for --video" in capsys.readouterr().err
        assert not video.exists()
    _check_video_frames_without_a_renderer(run, tmp_path, monkeypatch)


def _offscreen_renderer_available() -> bool:
    try:
        import imageio.v3  # noqa: F401
        import mujoco

        mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 8, 8)
        return True
    except Exception:  # noqa: BLE001 - any failure means no renderer, as for the command
        return False


def _check_video_frames_without_a_renderer(run, tmp_path, monkeypatch):
    """The video's path where no GL context exists: a stand-in renderer and writer receive what the real
    ones would, the active physics states of each episode in turn, and the file is written whole."""
    import types

    import mujoco
    import numpy as np
    from brax.io import image

    written = {}
    monkeypatch.setattr(mujoco, "Renderer", lambda model, height, width: None)
    monkeypatch.setattr(image, "render_array", lambda system, frames, height, width: np.zeros((len(frames), height, width, 3), np.uint8))
    fake_v3 = types.SimpleNamespace(imwrite=lambda path, pixels, extension, fps: (
        written.update(shape=pixels.shape, extension=extension, fps=fps), open(path, "wb").write(b"\0\0\0\0ftyp")))
    monkeypatch.setitem(sys.modules, "imageio", types.SimpleNamespace(v3=fake_v3))
    monkeypatch.setitem(sys.modules, "imageio.v3", fake_v3)
    video = tmp_path / "stand_in.mp4"
    assert main(["eval", str(run), "--num-trajectories", "2", "--video", str(video)]) == 0
    assert video.read_bytes() == b"\0\0\0\0ftyp" and not list(tmp_path.glob("*.tmp*"))
    # Two episodes of the tiny ant maze, none ending early: every step and the start state of each.
    assert written["shape"] == (2 * (TINY["episode_length"] + 1), 240, 320, 3) and written["extension"] == ".mp4"
    assert written["fps"] > 0


# --- one way to act, one rollout ---------------------------------------------------------------


def test_a_loaded_policy_acts_as_the_trainers_agent(trained):
    """LoadedPolicy.act and CRL.act are one function (rlscale.networks.act), on networks built alike from
    the saved config (TrainConfig.from_dict): the same actions, bit for bit, deterministic and sampled."""
    import jax
    import numpy as np

    from rlscale import envs
    from rlscale.agents.crl import CRL
    from rlscale.evaluation.policy import load

    _, (run, _) = trained
    policy = load(run)
    cfg = TrainConfig.from_dict(rd.read_config(run)["config"])
    agent = CRL.build(cfg, envs.make(cfg.env).spec)
    assert policy.actor == agent.actor and policy.state_size == agent.state_size
    assert policy.train_config.network_trunk("critic") == agent.critic.cfg
    obs = jax.random.normal(jax.random.PRNGKey(0), (5, policy.obs_size))
    for key in (None, jax.random.PRNGKey(1)):
        ours, theirs = policy.act(policy.actor_params, obs, key), agent.act(policy.actor_params, obs, key)
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    assert not np.array_equal(np.asarray(policy.act(policy.actor_params, obs, None)),
                              np.asarray(policy.act(policy.actor_params, obs, jax.random.PRNGKey(1))))


def test_the_rollout_with_its_states_is_the_rollout_that_evaluates():
    """rlscale.evaluation.rollout.rollout: its per-episode metrics are those of its trajectory's active steps (a step
    counts until and including the one that terminates), and make_unroll is it with the key split."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rlscale.evaluation.rollout import make_unroll, rollout

    task, n, length = Countdown(), 16, 6
    act = lambda params, obs, key: jnp.full((obs.shape[0], 1), params) if key is None else jax.random.normal(key, (obs.shape[0], 1))  # noqa: E731
    key = jax.random.PRNGKey(0)
    per_episode, (states, active, actions) = jax.jit(
        lambda p, k: rollout(task, act, p, k, n, length, trajectory=True))(jnp.float32(0.5), key)
    lifetime = np.asarray(states.sim["lifetime"][0])
    assert len(set(lifetime)) > 3 and (lifetime < length).any() and (lifetime >= length).any()
    assert states.obs.shape == (length + 1, n, 2) and active.shape == (length + 1, n)
    t = np.arange(length + 1)[:, None]
    np.testing.assert_array_equal(np.asarray(active), t <= lifetime)  # the reset, then up to the terminal step
    live = np.asarray(active)[1:]
    metrics = jax.tree.map(np.asarray, states.metrics)
    np.testing.assert_array_equal(per_episode["episode_length"], live.sum(0))
    np.testing.assert_array_equal(per_episode["episode_success"], (live * metrics["success"][1:]).sum(0))
    np.testing.assert_array_equal(per_episode["episode_action"], 0.5 * live.sum(0))
    np.testing.assert_array_equal(np.asarray(actions), np.full((length, n, 1), 0.5, np.float32))  # what was taken
    np.testing.assert_array_equal(per_episode["episode_dist"], np.minimum(lifetime, length))
    np.testing.assert_array_equal(per_episode["episode_success_any"], (per_episode["episode_success"] > 0))
    # Without trajectory: the same metrics and no states; make_unroll = rollout of the split key.
    alone, none = rollout(task, act, jnp.float32(0.5), key, n, length)
    assert none is None and jax.tree.map(np.asarray, alone).keys() == per_episode.keys()
    reset_key, act_key = jax.random.split(key)
    for stochastic in (False, True):
        unrolled = make_unroll(task, length, n, act)(jnp.float32(0.5), key, stochastic)
        direct, _ = rollout(task, act, jnp.float32(0.5), reset_key, n, length, act_key if stochastic else None)
        for k in direct:
            np.testing.assert_array_equal(np.asarray(unrolled[k]), np.asarray(direct[k]))
    assert not np.array_equal(unrolled["episode_action"], per_episode["episode_action"])  # sampled actions


def test_pictures_roll_out_the_episodes_that_eval_scores(trained):
    """visualize.rollout's states are the evaluation's episodes: their time at goal over the active steps
    is rlscale eval's, episode by episode."""
    import jax
    import numpy as np

    from rlscale.evaluation import visualize
    from rlscale.evaluation.policy import load, make_eval_task
    from rlscale.evaluation.rollout import make_unroll

    _, (run, _) = trained
    policy = load(run)
    task = make_eval_task(policy)
    key = jax.random.PRNGKey(4)
    per_episode = make_unroll(task, policy.config["episode_length"], 3, policy.act)(policy.actor_params, key)
    states, active = visualize.rollout(policy, task, 3, jax.random.split(key)[0], policy.config["episode_length"])
    np.testing.assert_array_equal(per_episode["episode_success"], (active[1:] * states.metrics["success"][1:]).sum(0))
    np.testing.assert_array_equal(per_episode["episode_dist"], states.metrics["dist"][-1])


@pytest.mark.slow
def test_a_cosine_run_saves_its_trained_temperature_and_draws_its_critic_map(tmp_path):
    """The cosine energy's log-temperature is a critic parameter: trained by the critic's optimiser, saved
    in the checkpoint, and used by `rlscale eval --critic-map`."""
    from rlscale.networks import COSINE_INITIAL_LOG_TEMPERATURE

    run = train(TrainConfig(**{**TINY, "energy": "cosine", "total_env_steps": 160, "num_evals": 1,
                               "run_dir": str(tmp_path / "cosine")}))
    saved, _ = ckpt.restore_raw(run, ckpt.latest_step(run))
    log_temperature = float(saved["learner"]["critic_params"]["log_temperature"])
    assert log_temperature != pytest.approx(COSINE_INITIAL_LOG_TEMPERATURE, abs=1e-6)  # moved by its 8 Adam steps
    critic = tmp_path / "critic.png"
    assert main(["eval", str(run), "--episodes", "2", "--critic-map", str(critic)]) == 0
    assert _png_size(critic)[1] > 0


def test_a_loaded_td3_policy_explores_as_td3_did_in_training(tmp_path):
    """TD3 acts with clipped Gaussian noise on tanh(mean); its actor's log-std head is never trained. A loaded
    TD3+HER checkpoint acting stochastically (rlscale record, eval --stochastic) must draw TD3's actions, not
    a tanh-Gaussian sample through the untrained head."""
    import jax
    import numpy as np

    from rlscale import agents, envs
    from rlscale.evaluation.policy import LoadedPolicy

    cfg = TrainConfig(**{**TINY, "algo": "td3_her", "exploration_noise": 0.3})
    spec = envs.make(cfg.env).spec
    agent = agents.build(cfg, spec)
    params = agent.init(jax.random.PRNGKey(0)).actor_params
    policy = LoadedPolicy(run_dir=tmp_path, step=0, config=cfg.to_dict(), meta={}, actor=agent.actor,
                          actor_params=params, state_size=spec.state_size)
    obs = jax.random.normal(jax.random.PRNGKey(1), (64, spec.obs_size))
    for key in (None, jax.random.PRNGKey(2)):
        np.testing.assert_array_equal(np.asarray(policy.act(params, obs, key)), np.asarray(agent.act(params, obs, key)))
    # The noise is the configured 0.3 around tanh(mean) (clipped at the bounds only).
    noise = np.asarray(policy.act(params, obs, jax.random.PRNGKey(2)) - policy.act(params, obs, None))
    assert 0.25 < noise.std() < 0.35
    # Every algorithm: a loaded checkpoint acts as its agent does in training, deterministic and exploring.
    for algo in agents.names():
        cfg = TrainConfig(**{**TINY, "algo": algo})
        agent = agents.build(cfg, spec)
        params = agent.init(jax.random.PRNGKey(0)).actor_params
        policy = LoadedPolicy(run_dir=tmp_path, step=0, config=cfg.to_dict(), meta={}, actor=agent.actor,
                              actor_params=params, state_size=spec.state_size)
        for key in (None, jax.random.PRNGKey(3)):
            np.testing.assert_array_equal(np.asarray(policy.act(params, obs, key)), np.asarray(agent.act(params, obs, key)),
                                          err_msg=algo)
