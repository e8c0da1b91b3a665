"""Stopping a run on a signal without losing work.

While a run trains (``StopSignals`` around train.py's loops: one run's, a stack's), SIGINT (Ctrl-C)
and SIGTERM (what Slurm and most schedulers send before a kill) only set a flag. The loop looks at
it after each complete step, never in the middle of an update, and ``StopSignals.act`` then, for
the run or for every live run of the stack:

- writes a checkpoint at the sequences seen (atomically, as every checkpoint; with the logging
  window's partial sums and the divergence guard's state, so the resumed curve equals the
  uninterrupted one), logs the interruption in train.log, and stops with one line and exit code
  128 + the signal's number (130 for SIGINT, 143 for SIGTERM): ``RunState.interrupt``;
- in a job of Hydra's submitit launcher (``hydra/launcher=slurm`` or ``submitit_local``):
  submitit's pre-emption signal (SIGUSR2 unless ``$SUBMITIT_PREEMPT_SIGNAL`` names another; Slurm
  sends it on a pre-emption and ``signal_delay_s`` before the time limit) writes the checkpoint,
  then hands over to submitit, which calls the launcher's ``checkpoint`` and requeues the job; the
  requeued job resumes its own folder (``sweep.resume_requeued_job``). SIGTERM in such a job
  writes a checkpoint and training goes on, as submitit itself ignores SIGTERM there (some
  clusters send it before the pre-emption signal); should a kill follow, a job that Slurm
  requeues resumes from that checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import TYPE_CHECKING, Any

from .errors import Interrupted

if TYPE_CHECKING:
    from .run_state import RunState


# what a signal outside a training loop means: before one started (set-up, the native core's build),
# between a sweep's jobs, or in a sweep's launcher process, whose jobs train in processes of their own
IDLE = " while no training loop was running in this process: nothing to save"

# Signals that arrived outside a training loop, in order. ntm-train's handlers (install_idle_handlers)
# raise at once; should library code on the way swallow that exception (a bare except, a __del__),
# the next training loop to start stops before its first step instead of training on.
PENDING: list[int] = []


def idle_message(signum: int) -> str:
    return f"{'interrupted' if signum == signal.SIGINT else 'stopped by ' + signal.Signals(signum).name}{IDLE}"


def _idle_signal(signum: int, frame: Any) -> None:
    """SIGINT or SIGTERM outside a training loop: remembered (PENDING), then raised as Interrupted."""
    PENDING.append(signum)
    raise Interrupted(idle_message(signum), signum)


def install_idle_handlers() -> None:
    """ntm-train's handlers for SIGINT and SIGTERM outside its training loops (StopSignals takes
    over inside one); installed first thing, so no signal finds Python's default."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _idle_signal)


def submitit_signal() -> int | None:
    """submitit's pre-emption signal when this process is a submitit job, else None (the variables
    submitit sets in its jobs, read as submitit reads them: ``JobEnvironment._usr_sig``)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


class StopSignals:
    """``with StopSignals() as stop:`` around a training loop: SIGINT, SIGTERM (and in a submitit
    job its pre-emption signal) set ``stop.signum``; the previous handlers come back on exit."""

    def __init__(self):
        self.signum: int | None = None
        self.preempt = submitit_signal()
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for signum in (signal.SIGINT, signal.SIGTERM, self.preempt):
                if signum is not None and signum not in self.previous:
                    self.previous[signum] = signal.signal(signum, self._note)
        if PENDING:  # a signal came before this loop and its exception was swallowed on the way here
            signum = PENDING[0]
            PENDING.clear()
            self.__exit__()
            raise Interrupted(idle_message(signum), signum)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _note(self, signum: int, frame: Any) -> None:  # a signal handler: only a flag
        if self.signum is None or signum != signal.SIGTERM:  # SIGTERM then pre-emption: the pre-emption
            self.signum = signum

    def act(self, runs: RunState | list[RunState], bar: Any) -> None:
        """Between two steps, after a signal: checkpoint every run (one, or the live runs of a
        stack), then stop (Interrupted), hand over to submitit, or go on (SIGTERM in a submitit job)."""
        signum, self.signum = self.signum, None
        runs = runs if isinstance(runs, list) else [runs]
        if self.preempt is not None and signum == signal.SIGTERM:
            for run in runs:
                run.log.warning("SIGTERM at %d sequences: %s; training goes on (in a submitit job the pre-emption "
                                "signal or a kill follows: a requeued job resumes from the latest checkpoint)",
                                run.seen, run.save_on_signal()[1])
            return
        submitit_handler = self.previous.get(signum) if signum == self.preempt else None
        if not callable(submitit_handler):
            bar.close()
            stops = [run.interrupt(signum) for run in runs]
            raise stops[0] if len(stops) == 1 else stack_interrupted(runs, stops, signum)
        for run in runs:
            run.log.warning("%s (submitit: pre-empted or near the time limit) at %d sequences: %s; submitit requeues "
                            "the job, which resumes this run", signal.Signals(signum).name, run.seen, run.save_on_signal()[1])
        self.__exit__()  # submitit's own handlers again, then its requeue: it exits this process
        try:
            submitit_handler(signum, None)
        except BaseException:
            bar.close()
            for run in runs:
                run.writer.close()
            raise
        self.__enter__()  # it did not exit (not the job's first task): training goes on


def stack_interrupted(runs: list[RunState], stops: list[Interrupted], signum: int) -> Interrupted:
    """One line for the runs of a stack stopped together (each run's own line is in its train.log)."""
    folder = os.path.commonpath([str(run.run_dir) for run in runs])
    written = [run for run, stop in zip(runs, stops) if stop.checkpointed]
    seen = sorted({run.seen for run in written})
    at = f"{seen[0]:,}" + (f" to {seen[-1]:,}" if len(seen) > 1 else "") if seen else ""
    what = (f"checkpoints written at {at} sequences" if len(written) == len(runs) else
            f"{len(written)} checkpoints written{f' at {at} sequences' if written else ''}, the other runs' "
            "train.log say why not")
    verb = "interrupted" if signum == signal.SIGINT else "stopped"
    return Interrupted(f"{verb} by {signal.Signals(signum).name}: {len(runs)} stacked runs under {folder}, {what}; "
                       f"the same sweep with {resume_override(folder).replace('resume=', 'hydra.sweep.dir=')} "
                       "resume=true continues them", signum)


def resume_override(run_dir: Any) -> str:
    """``resume=<run dir>`` as a shell argument: quoted when Hydra's grammar would read the path's
    ``=`` or ``,`` (a sweep job's folder) as syntax."""
    text = str(run_dir)
    if any(c in text for c in "=,' ()[]{}\"\\"):
        return f"\"resume='{text}'\""
    return f"resume={text}"


__all__ = ["StopSignals", "submitit_signal", "resume_override"]
