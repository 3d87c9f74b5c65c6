"""rlscale.storage.run_dir: the writer lock of a run, the atomic claim of a new run directory, the wall-clock
record and the one-line file-system errors."""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from rlscale.storage import run_dir as rd

# Takes the lock of the run directory argv[1], says so, and holds it until killed.
HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from rlscale.storage import run_dir as rd
    lock = rd.RunLock.acquire(sys.argv[1])
    print("held", flush=True)
    time.sleep(600)
""")


def _holder(run_dir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_named_and_a_killed_holders_lock_is_taken_over(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(rd.RunBusyError, match=rf"being written by another process \(pid {holder.pid} on .* since "):
            rd.RunLock.acquire(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = rd.RunLock.acquire(tmp_path)  # the kernel released the dead process's lock
    assert f"pid {os.getpid()} on" in rd.holder(tmp_path)
    lock.release()


def test_a_launchers_lock_is_handed_down_and_no_other_process_gets_it(tmp_path):
    """The sweep launcher locks a run and starts the training process with the open lock file and its
    descriptor in $RLSCALE_HELD_RUN_LOCKS: that process writes the run; one without it is refused."""
    lock = rd.RunLock.acquire(tmp_path)
    child = "from rlscale.storage import run_dir as rd; import os, sys; rd.RunLock.acquire(sys.argv[1]); print(os.getpid())"
    handed = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True,
                            pass_fds=(lock.fileno(),), env={**os.environ, rd.HELD_LOCKS_ENV: str(lock.fileno())})
    assert handed.returncode == 0, handed.stderr
    assert f"pid {handed.stdout.strip()} on" in rd.holder(tmp_path)  # it named itself as the run's writer
    other = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != rd.HELD_LOCKS_ENV})
    assert other.returncode == 1 and f"RunBusyError: run directory {tmp_path} is being written by another process (pid {handed.stdout.strip()} " in other.stderr
    lock.release()


def test_claiming_new_run_directories(tmp_path):
    # A new directory, and an existing empty one, are claimed; their lock file is all they hold.
    (tmp_path / "empty").mkdir()
    locks = rd.claim_new([tmp_path / "new", tmp_path / "empty"])
    assert [p.name for p in (tmp_path / "new").iterdir()] == [rd.LOCK_FILE]
    for lock in locks:
        lock.release()
    # One that holds anything else is refused, and so is the whole claim: nothing is created.
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "config.json").write_text("{}")
    with pytest.raises(rd.RunDirError, match=r"used already exists; pass --resume"):
        rd.claim_new([tmp_path / "a", tmp_path / "used"])
    assert not (tmp_path / "a").exists()
    # A directory another process is claiming: refused, and the directories this claim made are removed.
    holder = _holder(tmp_path / "empty")
    try:
        with pytest.raises(rd.RunBusyError, match=f"pid {holder.pid}"):
            rd.claim_new([tmp_path / "b", tmp_path / "empty"])
        assert not (tmp_path / "b").exists() and (tmp_path / "empty" / rd.LOCK_FILE).exists()
    finally:
        holder.kill()
        holder.wait()


def test_wallclock_is_the_later_of_the_file_and_the_last_row_and_unknown_for_older_runs(tmp_path):
    assert rd.wallclock_seconds(tmp_path) is None  # a run begun before rlscale recorded it
    rd.write_wallclock(tmp_path, 12.5)
    assert rd.wallclock_seconds(tmp_path) == 12.5
    # A process killed with SIGKILL wrote a row after the file.
    (tmp_path / rd.METRICS_FILE).write_text(f'{{"epoch": 1, "{rd.WALLCLOCK_KEY}": 20.25}}\n')
    assert rd.wallclock_seconds(tmp_path) == 20.25


@pytest.mark.parametrize("code, path, expected", [
    (errno.EACCES, "/ro/run", "/ro/run: Permission denied; choose a folder you may write to"),
    (errno.ENOSPC, "/full/x", "/full/x: No space left on device; free some space"),
    (errno.EROFS, "/mnt/x", "/mnt/x: Read-only file system; the file system is read-only"),
    (errno.ELOOP, "/l", "/l: Too many levels of symbolic links; check the path and the file system"),
])
def test_file_system_errors_read_as_one_line(code, path, expected):
    text = rd.describe_os_error(OSError(code, os.strerror(code), path))
    assert text.startswith(expected) and "\n" not in text


def test_a_failed_write_names_its_file(tmp_path, monkeypatch):
    """A write or fsync that fails names no file by itself; the run-directory writers add it."""
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as err:
        rd.write_atomic(tmp_path / "config.json", "{}")
    assert err.value.filename == str(tmp_path / "config.json") and err.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(OSError) as err:
        rd.MetricsLog(tmp_path, tensorboard=False).append({"training/env_steps": 1})
    assert err.value.filename == str(tmp_path / rd.METRICS_FILE)


def test_diverted_stderr_passes_output_on_and_keeps_a_failures_noise_in_its_log(tmp_path):
    """Run in a process of its own: a failure leaves descriptor 2 diverted until the process exits."""
    script = textwrap.dedent(f"""
        import os, sys, threading
        from rlscale.storage import run_dir as rd
        with rd.diverted_stderr({str(tmp_path / 'ok.log')!r}):
            os.write(2, b"passed on\\n")
        try:
            with rd.diverted_stderr({str(tmp_path / 'fail.log')!r}):
                t = threading.Thread(target=lambda: os.write(2, b"thread noise\\n")); t.start(); t.join()
                raise ValueError("boom")
        except ValueError:
            pass
        os.write(2, b"late noise\\n")
        print("for the user", file=rd.terminal_stderr())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stderr == "passed on\nfor the user\n"
    assert not (tmp_path / "ok.log").exists()
    assert (tmp_path / "fail.log").read_text() == "thread noise\nlate noise\n"
