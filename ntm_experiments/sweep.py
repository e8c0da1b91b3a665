"""Sweeps: what a failed job leaves behind, the end-of-sweep summary, parallel-job sizing.

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
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("ntm_experiments.sweep")

FAILED_NAME = "FAILED"          # one line: why the job in this folder failed
SUMMARY_NAME = "failed_jobs.txt"  # in the sweep folder: one "<job folder>: <reason>" per failed job

# failed jobs of the last sweep this process ran, as (job folder relative to the sweep folder, reason)
LAST_SWEEP_FAILURES: list[tuple[str, str]] = []
# the folder of the sweep this process is running (set when it starts), for ntm-train's last word
CURRENT_SWEEP: list[Path] = []


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
