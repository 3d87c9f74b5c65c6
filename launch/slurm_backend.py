"""Slurm backend: the runs as one submitit job array (``map_array``), one run per job.

Settings (sweep file ``launcher.slurm`` or the command line): partition, time, gpus, cpus, mem_gb,
array_parallelism, signal_delay_s, extra sbatch options, and ``cluster`` (``slurm``; ``local`` or
``debug`` run the same code path on this machine through submitit's local executors).

Preemption and time limits: submitit signals a job ``signal_delay_s`` before its time limit or when it
is preempted; :meth:`SlurmRun.checkpoint` then sends SIGTERM to the training process, waits for it to
save its checkpoint and exit (status 75), and has submitit requeue the job, which resumes the run. A job
that still ends with status 75 (its training process got SIGTERM from elsewhere) is resubmitted by the
launcher. Job logs go to ``<sweep dir>/slurm/``; each run's own log to ``<sweep dir>/logs/``.
"""

from __future__ import annotations

import time

import submitit
from rlscale.launch import runs

from rlscale.storage.run_dir import is_complete


class SlurmRun(submitit.helpers.Checkpointable):
    """The function each job runs; checkpointable, so that preempted jobs are requeued and resume."""

    def __init__(self, grace_s: float = 240.0):
        self.grace_s = grace_s

    def __call__(self, spec: runs.RunSpec) -> int:
        return runs.execute(spec)

    def checkpoint(self, spec: runs.RunSpec):
        runs.request_stop()  # SIGTERM to the training process: it saves after its training step
        runs.wait_for_children(self.grace_s)
        return submitit.helpers.DelayedSubmission(SlurmRun(self.grace_s), spec)


class SlurmBackend:
    name = "slurm"

    def __init__(self, settings, folder, job_name: str):
        self.settings = settings
        self.folder = folder
        self.job_name = job_name

    def describe(self) -> str:
        s = self.settings
        part = f"partition {s.partition}, " if s.partition else ""
        return (
            f"slurm ({s.cluster}), {part}{s.timeout_min} min, {s.gpus} GPU(s) and {s.cpus} CPU(s) per run, "
            f"{s.array_parallelism} jobs at once"
        )

    def executor(self):
        s = self.settings
        executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=s.cluster)
        params = dict(
            name=self.job_name,
            timeout_min=s.timeout_min,
            cpus_per_task=s.cpus if s.cluster == "slurm" else None,
            gpus_per_node=s.gpus or None,
            mem_gb=s.mem_gb if s.cluster == "slurm" else None,
            slurm_partition=s.partition,
            slurm_array_parallelism=s.array_parallelism,
            slurm_signal_delay_s=s.signal_delay_s,
            slurm_additional_parameters=dict(s.extra) or None,
        )
        if s.cluster != "slurm":
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        executor.update_parameters(**params)
        return executor

    def run(self, specs: list[runs.RunSpec], report) -> dict[str, int | None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        grace = max(10.0, self.settings.signal_delay_s - 30.0)
        jobs = self.executor().map_array(SlurmRun(grace), specs)
        pending = dict(zip((j.job_id for j in jobs), zip(jobs, specs)))
        for job, spec in zip(jobs, specs):
            report.started(spec, f"job {job.job_id}")
        results: dict[str, int | None] = {}
        while pending:
            if runs.stopping():
                if self.settings.cluster != "slurm":
                    for job, _ in pending.values():
                        job.cancel(check=False)
                report.note(f"stopped waiting; {len(pending)} job(s) keep their state (rerun the sweep to resume)")
                for _, spec in pending.values():
                    results[spec.id] = None
                break
            for job_id, (job, spec) in list(pending.items()):
                if not job.done():
                    continue
                del pending[job_id]
                try:
                    code = job.result()
                    report.finished(spec, code)
                except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as err:
                    message = f"job {job_id}: {str(err).strip().splitlines()[0][:300]}"
                    if all(is_complete(m.run_dir) for m in runs.members(spec)):
                        code = 0
                    else:
                        runs.mark_failed(spec, None, message)
                        code = 1
                    report.finished(spec, code, None if code == 0 else message)
                results[spec.id] = code
            time.sleep(1.0)
        return results
