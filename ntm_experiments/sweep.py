"""Sweeps: a job's set-up and failure, the end-of-sweep summary, parallel-job sizing.

``run_job`` runs one job of a sweep: its device (``job_device``: GPUs spread over the jobs),
its CPU threads (joblib jobs share the cores: ``cpu_threads_per_job``), then training.

A job of a sweep that fails writes one line to ``<job folder>/FAILED`` (``mark_failed``) and
returns None, so Hydra's launchers (basic, joblib, submitit) and the Optuna sweeper (which marks
the trial failed) carry on with the other jobs. When the sweep ends, ``FailureReport`` (a Hydra
callback registered in ``conf/config.yaml``) reads those files back from the sweep folder, so it
sees jobs that ran in other processes or on other machines too, prints a summary, writes it to
``<sweep dir>/failed_jobs.txt``, and ``ntm-train`` exits with code 1.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .devices import job_device, resolve_device
from .errors import RunError

log = logging.getLogger("ntm_experiments.sweep")

FAILED_NAME = "FAILED"          # one line: why the job in this folder failed
SUMMARY_NAME = "failed_jobs.txt"  # in the sweep folder: one "<job folder>: <reason>" per failed job

# failed jobs of the last sweep this process ran, as (job folder relative to the sweep folder, reason)
LAST_SWEEP_FAILURES: list[tuple[str, str]] = []
# the folder of the sweep this process is running (set when it starts), for ntm-train's last word
CURRENT_SWEEP: list[Path] = []


def failure_line(error: BaseException) -> str:
    """One line for a job that failed: our own message, out of memory, or the error's type and text."""
    import torch

    if isinstance(error, RunError):
        return str(error)
    if isinstance(error, torch.OutOfMemoryError):
        return "out of memory (try a smaller train.batch_size or model, or fewer parallel jobs per GPU)"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_job(train: Callable[[DictConfig, Path], float], cfg: DictConfig, hydra_cfg: DictConfig,
            run_dir: Path) -> float | None:
    """One job of a sweep: ``train(cfg, run_dir)`` on the job's device and threads. A job that
    fails (a bad value, divergence, out of memory, ...) writes its one line to
    ``<job folder>/FAILED`` and its log and returns None, so the launcher and sweeper carry on;
    the sweep then ends with a summary of the failed jobs and exit code 1 (FailureReport)."""
    import torch

    try:
        resume_requeued_job(cfg, run_dir)
        job_num = hydra_cfg.job.get("num")
        step = cfg.train.batch_size, cfg.auto_cuda_min_sequences  # sequences a step, auto's CUDA minimum
        cfg.device = job_device(str(cfg.device), job_num, torch.cuda.device_count(), *step)
        if "joblib" in str(hydra_cfg.launcher.get("_target_", "")).lower() and resolve_device(str(cfg.device), *step) == "cpu":
            threads = cpu_threads_per_job(hydra_cfg.launcher.get("n_jobs"))  # the jobs share the cores
            torch.set_num_threads(threads)
            log.info("joblib job %s on the CPU: %d torch thread(s)", job_num, threads)
        return train(cfg, run_dir)
    except Exception as error:  # noqa: BLE001 - the sweep carries on; the job says why it failed
        line = failure_line(error)
        if isinstance(error, RunError):
            log.error("job failed: %s", line)
        else:
            log.exception("job failed: %s", line)  # unexpected: the traceback goes to the job's log
        mark_failed(run_dir, line)
        # None, not NaN: every launcher passes it back as it is, and the Optuna sweeper marks the
        # trial failed and goes on (a NaN makes optuna 2.x's study.tell raise, ending the search)
        return None


def run_stacked_jobs(cfgs: list[DictConfig], run_dirs: list[Path], log_format: str,
                     stack_number: int = 0) -> list[float | None]:
    """The jobs of one stack (hydra/launcher=stacked): trained together (train.train_stack), each
    run's messages in its own ``train.log``, a failed run's line in its FAILED file while the
    others go on; returns each job's objective (None: failed). With ``device=auto`` and several
    GPUs, stack n takes ``cuda:(n mod count)``."""
    import torch

    from .train import train_stack

    for cfg in cfgs:
        cfg.device = job_device(str(cfg.device), stack_number, torch.cuda.device_count(),
                                cfg.train.batch_size * len(cfgs), cfg.auto_cuda_min_sequences)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)  # the last job's train.log, which would get every run's lines
        handler.close()
    loggers, handlers = [], []
    for k, run_dir in enumerate(run_dirs):
        logger = logging.getLogger(f"ntm_experiments.stack.run{k}")
        logger.setLevel(logging.INFO)  # a submitit worker configures no logging of its own
        handler = logging.FileHandler(run_dir / "train.log")
        handler.setFormatter(logging.Formatter(log_format))
        logger.addHandler(handler)
        loggers.append(logger)
        handlers.append((logger, handler))
        resume_requeued_job(cfgs[k], run_dir, logger)  # the stack's submitit job requeued after a pre-emption

    def failed(k: int, error: BaseException) -> None:
        line = failure_line(error)
        loggers[k].error("job failed: %s", line)
        mark_failed(run_dirs[k], line)

    try:
        return train_stack(cfgs, run_dirs, on_failure=failed, loggers=loggers)
    except Exception as error:  # noqa: BLE001 - the stack as a whole failed: every run says why
        log.exception("stack failed: %s", failure_line(error))
        for k in range(len(cfgs)):
            failed(k, error)
        return [None] * len(cfgs)
    finally:
        for logger, handler in handlers:
            logger.removeHandler(handler)
            handler.close()


# settings that may differ between a job and its requeued self without making it another run
RUN_LOCAL_KEYS = ("resume", "device", "progress")


def resume_requeued_job(cfg: DictConfig, run_dir: Path, logger: logging.Logger | None = None) -> bool:
    """A submitit job (hydra/launcher=slurm or submitit_local) whose folder already holds a
    checkpoint of the same settings is the same job again: requeued by submitit after a
    pre-emption or at its time limit (interrupts.py writes the checkpoint first), or rerun by Slurm
    after a kill. It resumes that checkpoint (``cfg.resume`` set to its folder); True when so.
    Anywhere else, or with other settings, a folder holding a checkpoint is refused as before."""
    from omegaconf import OmegaConf

    from . import checkpoint
    from .config import resume_kind

    path = run_dir / checkpoint.CHECKPOINT_NAME
    if not (os.environ.get("SUBMITIT_EXECUTOR") and resume_kind(cfg.resume) == "no" and path.is_file()):
        return False
    try:
        saved = checkpoint.load(path)
    except RunError:  # unreadable: left to the run itself to refuse, in one line
        return False

    def settings(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in RUN_LOCAL_KEYS}

    if settings(saved["config"]) != settings(OmegaConf.to_container(cfg, resolve=True)):
        return False
    cfg.resume = str(run_dir)
    (logger or log).info("this job's folder holds its checkpoint at %d sequences (a requeued submitit job): resuming it",
                         saved["sequences_seen"])
    return True


def mark_failed(job_dir: Path, line: str) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / FAILED_NAME).write_text(line.strip() + "\n")


def failed_jobs(sweep_dir: Path) -> list[tuple[str, str]]:
    """(job folder relative to ``sweep_dir``, reason) for every job under it that failed."""
    found = []
    for marker in sorted(sweep_dir.rglob(FAILED_NAME)):
        reason = marker.read_text().strip()
        found.append((str(marker.parent.relative_to(sweep_dir)) or ".", reason))
    return found


def parallel_jobs(cuda_devices: int | None = None, cpus: int | None = None) -> int:
    """Jobs the joblib launcher runs at once: one per GPU when there are GPUs, else one per CPU
    core (each CPU job then trains with one thread, see ``cpu_threads_per_job``)."""
    if cuda_devices is None:
        import torch

        cuda_devices = torch.cuda.device_count()
    if cuda_devices > 0:
        return cuda_devices
    return max(1, cpus if cpus is not None else (os.cpu_count() or 1))


def cpu_threads_per_job(n_jobs: Any, cpus: int | None = None) -> int:
    """Torch threads for one of ``n_jobs`` CPU jobs running at once, so they share the cores."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    try:
        n = int(n_jobs)
    except (TypeError, ValueError):
        n = cpus
    if n <= 0:  # joblib: -1 means as many jobs as cores
        n = cpus
    return max(1, cpus // n)


def report_failures(sweep_dir: Path) -> list[tuple[str, str]]:
    """Print (stderr) and write ``<sweep dir>/failed_jobs.txt``: the failed jobs of a sweep."""
    failures = failed_jobs(sweep_dir) if sweep_dir.is_dir() else []
    LAST_SWEEP_FAILURES[:] = failures
    if failures:
        lines = [f"{job}: {reason}" for job, reason in failures]
        (sweep_dir / SUMMARY_NAME).write_text("\n".join(lines) + "\n")
        jobs = sum(1 for _ in sweep_dir.rglob(".hydra"))
        print(f"ntm-train: {len(failures)} of {jobs} jobs of the sweep in {sweep_dir} failed "
              f"(listed in {sweep_dir / SUMMARY_NAME}):", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
    return failures


class FailureReport(Callback):
    """At the end of a multirun, report the jobs that failed (read from their FAILED files)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        LAST_SWEEP_FAILURES.clear()
        CURRENT_SWEEP[:] = [Path(str(config.hydra.sweep.dir))]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        report_failures(Path(str(config.hydra.sweep.dir)))
