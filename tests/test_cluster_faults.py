"""What a shared cluster does to a run, end to end on tiny CPU runs: two writers on one run, signals during
start-up, file-system errors (permissions, read-only folders, a full disk), the wall-clock of a run, and
the compilation cache of a resumed run (docs/runs.md#faults)."""

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import TINY

from rlscale.cli import main as cli_main
from rlscale.storage import checkpoint as ckpt
from rlscale.storage import run_dir as rd

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "crl_save_buffer_5a7fc95"
PREEMPTED = 75


def tiny_args(**overrides) -> list[str]:
    args = []
    for key, value in {**TINY, **overrides}.items():
        flag = "--" + key.replace("_", "-")
        if value is False:
            args.append(flag.replace("--", "--no-", 1))
        elif value is not True:
            args += [flag, str(value)]
    return args


# `rlscale train` whose compile takes argv[1] seconds longer (a sleep inside the compile step): start-up
# is long enough to land a signal or a second writer in it.
SLOW_COMPILE = textwrap.dedent("""
    import sys, time
    from rlscale.training import loop as train
    delay = float(sys.argv[1])
    compile_programs = train._compile
    def slow(*args):
        time.sleep(delay)
        return compile_programs(*args)
    train._compile = slow
    from rlscale.cli import main
    sys.argv = ["rlscale", *sys.argv[2:]]
    sys.exit(main())
""")


def start_train(args: list[str], compile_delay: float, log: Path, cwd: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-c", SLOW_COMPILE, str(compile_delay), "train", *args],
                                stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlscale.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def epochs(run: Path) -> list[int]:
    return [row["epoch"] for row in rd.read_metrics(run)]


# --- one writer per run -----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_new_runs_on_one_directory_one_wins_and_a_resume_beside_it_is_refused(tmp_path):
    run = tmp_path / "run"
    args = tiny_args(run_dir=run)
    started = time.time()
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_train(args, 12, log, tmp_path) for log in logs]
    # The winner claimed the directory, wrote its config and is compiling (12 s longer than usual).
    wait_for(lambda: (run / rd.CONFIG_FILE).exists(), 120, "a process to claim the run directory")
    winner_pid = json.loads((run / rd.LOCK_FILE).read_text())["pid"]
    resume = run_cli("train", "--resume", str(run), cwd=tmp_path)
    assert resume.returncode == PREEMPTED
    assert resume.stderr.strip().splitlines() == [
        f"rlscale train: run directory {run} is being written by another process (pid {winner_pid} on "
        f"{os.uname().nodename} since {resume.stderr.split(' since ')[1].split(')')[0]}); one writer per run: wait for "
        f"it to end (or stop it), then resume with --resume {run}"]
    codes = [proc.wait(timeout=300) for proc in procs]
    elapsed = time.time() - started
    winner = [proc.pid for proc in procs].index(winner_pid)
    assert codes[winner] == 0
    loser_code, loser_log = codes[1 - winner], logs[1 - winner].read_text()
    # Refused either while the winner held the empty directory (busy: 75) or once its config was there (2).
    assert (loser_code, loser_log.count("\n")) in ((PREEMPTED, 1), (2, 1)), loser_log
    assert "is being written by another process" in loser_log or "already exists; pass --resume" in loser_log
    assert epochs(run) == [1, 2, 3]  # each epoch once
    # The run's wall-clock counts the 12 s in compile: it is the process's whole life, not the training's.
    wall, rows = rd.read_wallclock(run), rd.read_metrics(run)
    # A process's start is known to a clock tick (10 ms) each way, from its age since boot.
    assert rows[-1]["walltime"] + 12 < rows[-1][rd.WALLCLOCK_KEY] <= wall <= elapsed + 0.05


# --- signals during start-up ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_signal_during_compile_stops_with_the_preemption_code_and_resume_continues(tmp_path):
    """Ctrl-C during the first process's compile, SIGTERM during the resume's: each stops at once with 75
    (not after the 120 s compile) and keeps its time; a third process completes the run."""
    run = tmp_path / "run"
    walls = [0.0]
    for attempt, (sig, args) in enumerate([(signal.SIGINT, tiny_args(run_dir=run)), (signal.SIGTERM, ["--resume", str(run)])]):
        log = tmp_path / f"attempt{attempt}.log"
        proc = start_train(args, 120, log, tmp_path)
        wait_for(lambda: "plan:" in log.read_text(), 120, "start-up")
        time.sleep(0.5)  # inside the compile step
        sent = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == PREEMPTED
        assert time.monotonic() - sent < 30, "it stopped at once, not after the 120 s compile"
        text = log.read_text()
        assert f"{sig.name}: stopped during start-up, before any checkpoint; continue with: rlscale train --resume {run}" in text
        assert "Traceback" not in text
        walls.append(rd.read_wallclock(run))
        assert walls[-1] > walls[-2]  # each stopped process's time is kept
    resumed = run_cli("train", "--resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "no complete checkpoint; starting from the beginning" in resumed.stdout
    assert epochs(run) == [1, 2, 3]
    assert rd.read_wallclock(run) > walls[-1] + rd.read_metrics(run)[-1]["walltime"]  # summed over the processes


# --- file-system errors -------------------------------------------------------------------------------


def deny_writes(monkeypatch, folder: Path, code: int) -> None:
    """Make ``folder`` refuse every write with ``code`` (EACCES: a folder without write permission; EROFS:
    a read-only mount), the way the OS would. Patched, not chmod-ed: the tests may run as root, whom
    permissions do not stop, and CI cannot mount file systems."""
    import builtins

    folder = os.path.realpath(folder)

    def inside(path) -> bool:
        path = os.path.realpath(os.fsdecode(path)) if isinstance(path, (str, bytes, os.PathLike)) else ""
        return path == folder or path.startswith(folder + os.sep)

    def refuse(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    real = {name: getattr(os, name) for name in ("open", "mkdir", "link", "replace", "rename")}
    real_open = builtins.open

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            refuse(path)
        return real["open"](path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if inside(path):
            refuse(path)
        return real["mkdir"](path, *args, **kwargs)

    def two_paths(name):
        def call(src, dst, *args, **kwargs):
            if inside(dst):
                refuse(dst)
            return real[name](src, dst, *args, **kwargs)
        return call

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and inside(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    for name in ("link", "replace", "rename"):
        monkeypatch.setattr(os, name, two_paths(name))
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_file_system_errors_are_one_line_exit_2_and_write_nothing(tmp_path, monkeypatch, capsys):
    # A run directory under a folder without write permission.
    locked = tmp_path / "locked"
    locked.mkdir()
    deny_writes(monkeypatch, locked, errno.EACCES)
    assert cli_main(["train", *tiny_args(run_dir=locked / "run")]) == 2
    err = capsys.readouterr().err
    assert err == (f"rlscale train: error: {locked / 'run'}: Permission denied; choose a folder you may write to, "
                   "or change its permissions\n")
    assert files_under(locked) == []
    # A dataset recorded into a read-only folder: refused before any episode is rolled out.
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    deny_writes(monkeypatch, readonly, errno.EROFS)
    assert cli_main(["record", str(FIXTURE_RUN), "--episodes", "2", "--out", str(readonly / "d.npz")]) == 2
    err = capsys.readouterr().err
    assert err == (f"rlscale record: error: {readonly / 'd.npz'}: Read-only file system; the file system is read-only: "
                   "choose a folder on a writable one\n")
    assert files_under(readonly) == []


def test_eval_of_a_read_only_run_prints_its_table_and_says_it_was_not_saved(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE_RUN, run)
    before = files_under(run)
    deny_writes(monkeypatch, run, errno.EROFS)
    assert cli_main(["eval", str(run), "--episodes", "4"]) == 2
    captured = capsys.readouterr()
    table = captured.out.splitlines()
    assert table[0].split()[:3] == ["run", "task", "step"] and str(run)[-44:] in table[1]
    (line,) = captured.err.splitlines()
    assert line.startswith(f"rlscale eval: error: {run / 'eval'}") and ": Read-only file system; " in line
    assert line.endswith("; the evaluation above is printed but not saved")
    assert files_under(run) == before


# Makes orbax's second checkpoint fail as a full disk does: its threads print tracebacks to stderr
# (descriptor 2) while the save raises TensorStore's error text.
FULL_DISK_AT_SECOND_CHECKPOINT = textwrap.dedent("""
    import os, sys, threading
    import orbax.checkpoint as ocp
    save = ocp.CheckpointManager.save
    calls = []
    def full_disk(self, step, *args, **kwargs):
        calls.append(step)
        if len(calls) < 2:
            return save(self, step, *args, **kwargs)
        noise = lambda: os.write(2, b"Traceback (most recent call last):\\n  orbax thread noise\\n" * 50)
        thread = threading.Thread(target=noise)
        thread.start()
        thread.join()
        raise ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device [os_error_code='28']")
    ocp.CheckpointManager.save = full_disk
    from rlscale.cli import main
    sys.argv = ["rlscale", *sys.argv[1:]]
    sys.exit(main())
""")


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_run_resumes_from_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"  # this test's own compilation cache: what the resume adds to it is seen
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(cache))
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-c", FULL_DISK_AT_SECOND_CHECKPOINT, "train", *tiny_args(run_dir=run)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    assert line.startswith(f"rlscale train: error: {ckpt.step_path(run, 240)}: No space left on device; free some space")
    log = line.split("orbax's own messages: ")[1]
    assert Path(log).read_text().count("orbax thread noise") == 50
    Path(log).unlink()
    assert ckpt.list_steps(run) == [160]  # the checkpoint before is intact
    fresh = set(os.listdir(cache))
    resumed = run_cli("train", "--resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert epochs(run) == [1, 2, 3] and ckpt.list_steps(run) == [160, 240, 320]
    # The resume compiled only what a resume alone runs (stacking the restored seeds, refilling the buffer);
    # the training steps, the evaluation and the block norms came from the cache.
    assert {"jit_training_steps", "jit_evaluate", "jit_block_norms"} <= {name.split("-")[0] for name in fresh}
    assert {name.split("-")[0] for name in set(os.listdir(cache)) - fresh} == {"jit_stack", "jit_init_env_and_buffer"}


def test_a_process_knows_when_it_started_to_within_clock_ticks():
    """The wall-clock of a run starts at its process's start: before the interpreter ran any of this, and
    not before the parent launched it (the boot time in /proc/stat alone is up to a second off)."""
    code = ("import time; t = time.time(); from rlscale.training.loop import process_start_time; "
            "print(t - process_start_time())")
    launched = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    returned = time.time()
    age_at_first_line = float(out.stdout.strip().splitlines()[-1])
    assert -0.03 < age_at_first_line < returned - launched + 0.03

