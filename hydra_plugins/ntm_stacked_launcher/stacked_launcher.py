"""``ntm-train -m hydra/launcher=stacked <sweep>``: the sweep's jobs that can share one computation
(the same task, model shapes, batch size, device and fast path) are trained as one stack
(ntm_experiments.train.train_stack), at most ``max_stack`` runs at a time; a job that fits no
group runs as Hydra's basic launcher runs it.

Each job keeps what Hydra gives a job: its composed config, its folder with ``.hydra/`` and
``train.log``, its overrides, and a JobReturn with its objective (or its failure). Hydra's per-job
set-up (``run_job``: folders, ``.hydra/``, logging, job callbacks) is done for every job first;
its ``on_job_end`` callbacks therefore run before the stack trains (this project's
FailureReport reads the FAILED files at the end of the sweep, so it is not affected).
This module imports nothing heavy: Hydra imports every plugin at start-up (and runs it before it is
in sys.modules, which a dataclass cannot take).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("ntm_experiments.stacked_launcher")
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format


class _Job(NamedTuple):  # not a dataclass: Hydra's plugin scan runs this module outside sys.modules
    index: int
    config: DictConfig   # the job's config, without hydra
    run_dir: Path
    result: JobReturn


class StackedLauncher(Launcher):
    """``max_stack``: most runs in one stack; ``max_memory_gb``: the most memory a stack may take by
    the estimate of fast/stacked.py's ``run_memory_bytes`` (a group is split into stacks that fit
    both). ``submitit``: None to train the stacks here, one after another; or a submitit
    launcher's settings (hydra/launcher/stacked_slurm.yaml includes the slurm preset's), and each
    stack becomes one job of a submitit job array."""

    def __init__(self, max_stack: int = 64, max_memory_gb: float = 8.0, submitit: Any = None) -> None:
        if not isinstance(max_stack, int) or max_stack < 1:
            raise ValueError(f"hydra.launcher.max_stack={max_stack}: must be a positive integer")
        if not isinstance(max_memory_gb, (int, float)) or not max_memory_gb > 0:
            raise ValueError(f"hydra.launcher.max_memory_gb={max_memory_gb}: must be a positive number of GB")
        self.max_stack, self.max_memory_gb, self.submitit = max_stack, float(max_memory_gb), submitit
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from ntm_experiments.train import stack_key

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for offset, overrides in enumerate(job_overrides):
            index = initial_job_idx + offset
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = index
                sweep_config.hydra.job.num = index
            configs.append((index, overrides, sweep_config))
        groups: dict[tuple, list] = {}
        for job in configs:
            task_config = OmegaConf.masked_copy(job[2], [k for k in job[2] if k != "hydra"])
            groups.setdefault(stack_key(task_config), []).append(job)
        chunks = []
        for jobs in groups.values():
            size = self._stack_size(jobs[0][2]) if len(jobs) > 1 else 1
            chunks += [jobs[i:i + size] for i in range(0, len(jobs), size)]
        log.info("Launching %d jobs as %d stack(s) of at most %d", len(configs), len(chunks), self.max_stack)
        for chunk in chunks:
            for index, overrides, _ in chunk:
                log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
        if self.submitit is not None:
            returns = self._submit(chunks)
            return [returns[index] for index, _, _ in configs]
        returns: dict[int, JobReturn] = {}
        for number, chunk in enumerate(chunks):
            if len(chunk) == 1:
                index, _, sweep_config = chunk[0]
                returns[index] = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                         config=sweep_config, job_dir_key="hydra.sweep.dir",
                                         job_subdir_key="hydra.sweep.subdir")
            else:
                returns.update(self._run_stack(chunk, number))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[index] for index, _, _ in configs]

    def _stack_size(self, sweep_config: DictConfig) -> int:
        """The most runs of this group in one stack: max_stack, and as many as fit max_memory_gb by
        the estimate of one run (fast/stacked.py's run_memory_bytes; it says so when that binds)."""
        from ntm_experiments.fast.stacked import run_memory_bytes
        from ntm_experiments.models import make_model
        from ntm_experiments.tasks import make_task

        task = make_task(sweep_config.task)
        model = make_model(sweep_config.model, task.input_width, task.output_width)
        per_run = run_memory_bytes(task, model, int(sweep_config.train.batch_size))
        fits = max(1, int(self.max_memory_gb * 2**30 // per_run))
        if fits < self.max_stack:
            log.info("Stacks of %s x %s at batch %d: at most %d runs each (about %.0f MiB a run by the estimate; "
                     "hydra.launcher.max_memory_gb=%g)", sweep_config.task.name, sweep_config.model.name,
                     sweep_config.train.batch_size, fits, per_run / 2**20, self.max_memory_gb)
        return min(self.max_stack, fits)

    def _prepare(self, chunk: list) -> list[_Job]:
        """Hydra's per-job set-up (run_job: the job's folder, .hydra/, logging, callbacks) for every
        job of a stack, here; the training comes after, for all of them at once."""
        jobs: list[_Job] = []
        for index, _, sweep_config in chunk:
            seen: dict[str, Any] = {}

            def prepare(task_config: DictConfig, seen=seen) -> None:  # Hydra's per-job set-up, then this
                from hydra.core.hydra_config import HydraConfig

                seen["config"], seen["run_dir"] = task_config, Path(HydraConfig.get().runtime.output_dir)

            result = run_job(hydra_context=self.hydra_context, task_function=prepare, config=sweep_config,
                             job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            jobs.append(_Job(index, seen["config"], seen["run_dir"], result))
        return jobs

    def _run_stack(self, chunk: list, number: int) -> dict[int, JobReturn]:
        """Stack ``number`` of the sweep (with several GPUs, stack n takes cuda:(n mod count)), here."""
        from ntm_experiments.sweep import run_stacked_jobs

        jobs = self._prepare(chunk)
        outcomes = run_stacked_jobs([job.config for job in jobs], [job.run_dir for job in jobs], LOG_FORMAT,
                                    stack_number=number)
        return _completed(jobs, outcomes)

    def _submit(self, chunks: list) -> dict[int, JobReturn]:
        """Each stack as one job of a submitit job array (Slurm, or submitit's local executor), with
        the submitit launcher's settings mapped as hydra-submitit-launcher maps them."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        from ntm_experiments.sweep import run_stacked_jobs

        settings = self.submitit
        params = dict(settings.params) if hasattr(settings, "params") else OmegaConf.to_container(settings, resolve=True)
        params.pop("_target_", None)
        cluster = getattr(settings, "_EXECUTOR", None) or params.pop("cluster", "slurm")
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{cluster}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=cluster, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{key if key in base else f"{cluster}_{key}": value for key, value in params.items()})
        prepared = [self._prepare(chunk) for chunk in chunks]
        log.info("Submitting %d stack(s) as a submitit job array (%s)", len(prepared), cluster)
        futures = executor.map_array(run_stacked_jobs, [[job.config for job in jobs] for jobs in prepared],
                                     [[job.run_dir for job in jobs] for jobs in prepared],
                                     [LOG_FORMAT] * len(prepared), list(range(len(prepared))))
        returns: dict[int, JobReturn] = {}
        for jobs, future in zip(prepared, futures):
            try:
                outcomes = future.results()[0]
            except Exception as error:  # noqa: BLE001 - the stack's job died: each of its runs failed
                from ntm_experiments.sweep import failure_line, mark_failed

                for job in jobs:
                    mark_failed(job.run_dir, f"the stack's submitit job failed: {failure_line(error)}")
                outcomes = [None] * len(jobs)
            returns.update(_completed(jobs, outcomes))
        return returns


def _completed(jobs: list[_Job], outcomes: list) -> dict[int, JobReturn]:
    """Each job's JobReturn with its run's objective (None: the run failed, its FAILED file says why)."""
    for job, outcome in zip(jobs, outcomes):
        job.result.return_value = outcome
        job.result.status = JobStatus.COMPLETED
    return {job.index: job.result for job in jobs}
