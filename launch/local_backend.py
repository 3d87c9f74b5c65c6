"""Local backend: a pool of worker threads, each running one training process at a time.

With GPUs, each worker slot owns one GPU through ``CUDA_VISIBLE_DEVICES`` (several slots per GPU with
``runs_per_gpu``, then with ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so that they share its memory).
GPUs are found without importing JAX: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``;
``JAX_PLATFORMS=cpu`` means none.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import re
import shutil
import subprocess

from rlscale.launch import runs

from rlscale.training import seed_groups


def detect_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """Ids of the visible GPUs, as CUDA_VISIBLE_DEVICES entries."""
    environ = os.environ if environ is None else environ
    platforms = environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms and all(p.strip() == "cpu" for p in platforms.split(",")):
        return []
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = []
        for entry in visible.split(","):
            entry = entry.strip()
            if not entry or entry == "-1":
                break  # CUDA ignores everything from an invalid entry on
            ids.append(entry)
        return ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, flags=re.M)]


def slots(gpus: list[str], workers: int | None, runs_per_gpu: int = 1, cores: int | None = None,
          environ: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Environment of each worker slot: one GPU each, round-robin. CPU-only (1 slot by default): each slot's
    share of the ``cores`` for its process's seed groups (``$RLSCALE_SEED_THREADS``, rlscale.training.seed_groups),
    so that the workers together start one thread per core; a value the user exported is kept."""
    environ = os.environ if environ is None else environ
    if not gpus:
        count = workers or 1
        if seed_groups.SEED_THREADS_ENV in environ:
            return [{} for _ in range(count)]
        share = max(1, (cores or seed_groups.usable_cores()) // count)
        return [{seed_groups.SEED_THREADS_ENV: str(share)} for _ in range(count)]
    count = workers or len(gpus) * runs_per_gpu
    owners = [gpus[i % len(gpus)] for i in range(count)]
    envs = []
    for gpu in owners:
        env = {"CUDA_VISIBLE_DEVICES": gpu}
        if owners.count(gpu) > 1:
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        envs.append(env)
    return envs


class LocalBackend:
    name = "local"

    def __init__(self, workers: int | None, runs_per_gpu: int):
        self.gpus = detect_gpus()
        self.slots = slots(self.gpus, workers, runs_per_gpu)

    def describe(self) -> str:
        where = f"GPUs {','.join(self.gpus)}" if self.gpus else "CPU"
        return f"local, {len(self.slots)} worker(s) on {where}"

    def run(self, specs: list[runs.RunSpec], report) -> dict[str, int | None]:
        free: queue.Queue = queue.Queue()
        for slot in self.slots:
            free.put(slot)

        def job(spec: runs.RunSpec) -> int | None:
            if runs.stopping():
                return None
            slot = free.get()
            try:
                if runs.stopping():
                    return None
                report.started(spec, slot.get("CUDA_VISIBLE_DEVICES"))
                code = runs.execute(spec, slot)
                report.finished(spec, code)
                return code
            finally:
                free.put(slot)

        results: dict[str, int | None] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.slots), thread_name_prefix="run") as pool:
            futures = {pool.submit(job, spec): spec for spec in specs}
            pending = set(futures)
            while pending:  # short waits keep the main thread responsive to signals
                done, pending = concurrent.futures.wait(pending, timeout=0.5)
                for future in done:
                    spec = futures[future]
                    try:
                        results[spec.id] = future.result()
                    except Exception as err:  # noqa: BLE001 - report, never stop the other runs
                        runs.mark_failed(spec, None, f"launcher error: {err}")
                        report.finished(spec, None, f"launcher error: {err}")
                        results[spec.id] = 1
        return results
