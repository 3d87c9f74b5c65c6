"""Ray backend: one Ray task per run, with ``num_gpus`` / ``num_cpus`` resources.

The launcher connects to ``address`` (``auto``, ``ray://host:10001``), or uses the Ray instance this
process already initialised, or starts a local one (and stops it at the end). A task whose worker
process dies is retried by Ray (``max_retries``); the retry waits for the lock of the run, which the
orphaned training process holds until it has saved its checkpoint and exited, then resumes the run.
Ray sets ``CUDA_VISIBLE_DEVICES`` for each task; a fractional ``num_gpus`` also sets
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so that runs can share a GPU.
"""

from __future__ import annotations

from rlscale.launch import runs

from rlscale.training import seed_groups


def _execute(spec: runs.RunSpec, extra_env: dict[str, str]) -> int:
    return runs.execute(spec, extra_env)


class RayBackend:
    name = "ray"

    def __init__(self, settings, workers: int | None):
        """``settings``: the sweep's ``launch.sweepfile.Ray`` (address, num_gpus, num_cpus, max_retries)."""
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("the ray backend needs Ray: pip install 'rlscale[ray]'") from None
        self.address = settings.address
        self.num_gpus = settings.num_gpus
        self.num_cpus = settings.num_cpus
        self.max_retries = settings.max_retries
        self.workers = workers
        self._started_here = False

    def describe(self) -> str:
        where = self.address or "a local Ray instance"
        gpus = "auto" if self.num_gpus is None else self.num_gpus
        return f"ray on {where}, {gpus} GPU(s) and {self.num_cpus} CPU(s) per run, {self.max_retries} retries"

    def _connect(self):
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = self.address or "a new local instance"
                raise ValueError(f"cannot start Ray on {where}: {str(err).strip().splitlines()[0][:300]}") from None
            self._started_here = True
        return ray

    def run(self, specs: list[runs.RunSpec], report) -> dict[str, int | None]:
        ray = self._connect()
        try:
            return self._run(ray, specs, report)
        finally:
            if self._started_here:
                ray.shutdown()
                self._started_here = False

    def _run(self, ray, specs, report) -> dict[str, int | None]:
        num_gpus = self.num_gpus
        if num_gpus is None:
            num_gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        extra_env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if 0 < num_gpus < 1 else {}
        # A run's packed seeds take one host thread per CPU Ray gives it (rlscale.training.seed_groups; no effect on a GPU).
        extra_env.setdefault(seed_groups.SEED_THREADS_ENV, str(max(1, int(self.num_cpus or 1))))
        task = ray.remote(_execute)
        options = dict(num_gpus=num_gpus, num_cpus=self.num_cpus, max_retries=self.max_retries, retry_exceptions=False)
        limit = self.workers or len(specs)
        waiting = list(specs)
        in_flight: dict = {}
        results: dict[str, int | None] = {}
        cancelled = False
        while waiting or in_flight:
            if runs.stopping() and not cancelled:
                for ref in in_flight:
                    ray.cancel(ref)  # KeyboardInterrupt in the task: it stops its run with SIGTERM
                waiting, cancelled = [], True
            while waiting and len(in_flight) < limit:
                spec = waiting.pop(0)
                in_flight[task.options(name=spec.name, **options).remote(spec, extra_env)] = spec
                report.started(spec, None)
            if not in_flight:
                break
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in done:
                spec = in_flight.pop(ref)
                try:
                    code = ray.get(ref)
                    report.finished(spec, code)
                except ray.exceptions.TaskCancelledError:
                    code = runs.PREEMPTED
                    report.finished(spec, code)
                except ray.exceptions.RayError as err:
                    message = f"Ray task failed after {self.max_retries} retries: {str(err).strip().splitlines()[0][:300]}"
                    runs.mark_failed(spec, None, message)
                    report.finished(spec, None, message)
                    code = 1
                results[spec.id] = code
        return results
