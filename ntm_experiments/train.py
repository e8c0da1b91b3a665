"""ntm-train: the training loop (sample, forward, masked cost, backward, clip, step).

    ntm-train task=copy model=ntm_lstm
    ntm-train task=copy model=ntm_lstm resume=true      # continue the newest such run
    ntm-train -m task=copy model=ntm_ff,lstm seed=1,2   # a sweep, one folder per job
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .cli import discard_empty_run_dir, exit_with_error
from .config import config_dir
from .devices import auto_device_note, resolve_device
from .errors import ConfigError, RunError
from .fast import make_train_step, use_fast_path
from .fast.steps import core_ready
from .fast.stacked import StackedStep, stacked_forward
from .interrupts import StopSignals
from .run_state import RunState
from .runs import COST_TAG  # noqa: F401 - the training-cost tag, re-exported for the tests
from .sweep import run_job
from .validation import validate

log = logging.getLogger("ntm_experiments.train")


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Train as ``cfg`` says, writing everything under ``run_dir``; returns ``cfg.objective``:
    the final training cost (bits per sequence, averaged over the last logging interval) or
    the best evaluation cost (the lowest, over the run's evaluations, of the suite's mean cost).
    Running out of device memory is a RunError naming the batch size."""
    try:
        return _train(cfg, run_dir)
    except torch.OutOfMemoryError as error:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise RunError(f"out of memory on {resolve_device(str(cfg.device))} at train.batch_size={cfg.train.batch_size}: "
                       "try a smaller train.batch_size (or a smaller model, or fewer parallel jobs per GPU)") from error


def _train(cfg: DictConfig, run_dir: Path) -> float:
    """The loop: sample, forward, masked cost, backward; skip a non-finite step; clip, RMSProp
    (§4.6); log, evaluate and checkpoint at their boundaries (run_state.RunState.record)."""
    validate(cfg)
    device = torch.device(resolve_device(str(cfg.device), cfg.train.batch_size, cfg.auto_cuda_min_sequences))
    if note := auto_device_note(str(cfg.device), device, cfg.train.batch_size, cfg.auto_cuda_min_sequences):
        log.info(note)
    run = RunState(cfg, run_dir, device)
    fast = use_fast_path(cfg.train.fast_path, run.model, device, run.total - run.seen, cfg.train.fast_path_min_sequences,
                         lambda: core_ready(cfg.train.fast_path_core, device))
    core = None if cfg.train.fast_path_core == "auto" else cfg.train.fast_path_core
    stepper = make_train_step(fast, run.model, run.task, run.optimizer, run.params, device, core)
    what = f"fast path ({stepper.core or 'nn.LSTM'} core{', CUDA graphs' if stepper.graphs else ''})" if fast else "plain eager"
    log.info("training step: %s on %s", what, device)
    bar = tqdm(total=run.total, initial=run.seen, unit="seq", unit_scale=True, dynamic_ncols=True,
               disable=not cfg.progress, mininterval=1.0, desc=f"{cfg.task.name}/{cfg.model.name}")
    run.model.train()
    with StopSignals() as stop:  # SIGINT, SIGTERM: only a flag, looked at between steps (interrupts.py)
        while run.seen < run.total:
            if stop.signum is not None:  # checkpoint here, then stop (or hand over to submitit)
                stop.act(run, bar)
            batch = run.data.next(run.total - run.seen)
            cost, grad_norm = stepper.forward_backward(batch)  # cost (B,) bits; asynchronous on CUDA
            run.data.draw_ahead(run.total - run.seen - batch.batch_size)  # while the device trains
            if not bool(torch.isfinite(cost.sum()) & torch.isfinite(grad_norm)):
                if run.skip_step():  # skipped; after train.max_bad_steps in a row, the last good state
                    stepper.optimizer_reloaded()
                continue
            # clip element-wise to (-10, 10) (§4.6), RMSProp step; some steps measure how often each acts
            activity = stepper.update(cfg.train.clip_value, run.measures_activity())
            if run.record(cost, grad_norm, activity):  # counted; logged, evaluated, checkpointed at boundaries
                bar.set_postfix(cost=f"{run.last_cost:.3f} bits/seq")
            bar.update(batch.batch_size)
        bar.close()
        return run.finish()


def stack_key(cfg: DictConfig) -> tuple:
    """What runs must share to be stacked: the task, the model's shapes, the batch size and the
    device. Seeds, learning rates and the other optimiser settings, clip values, run lengths
    and logging may differ."""
    return (OmegaConf.to_yaml(cfg.task), OmegaConf.to_yaml(cfg.model), cfg.train.batch_size, str(cfg.device),
            cfg.auto_cuda_min_sequences, str(cfg.train.fast_path), str(cfg.train.fast_path_core))


def train_stack(cfgs: list[DictConfig], run_dirs: list[Path], on_failure=None,
                loggers: list[logging.Logger] | None = None) -> list[float | None]:
    """Train several runs as one computation (fast/stacked.py): each run with its own folder,
    weights, data, optimiser settings, clip value, events, checkpoints and evaluations, as if it
    ran alone. Returns each run's ``cfg.objective``, or None for a run that failed: it stops
    alone (``on_failure(k, error)`` is told, e.g. to write its FAILED file) and the others go on.
    ``loggers``: one per run for its own messages (default: this module's)."""
    keys = {stack_key(cfg) for cfg in cfgs}
    if len(keys) != 1:
        raise ConfigError("train_stack: the runs differ in task, model, train.batch_size, device or fast path; "
                          "only runs that share them can be stacked")
    for cfg in cfgs:
        validate(cfg)
    step = cfgs[0].train.batch_size * len(cfgs), cfgs[0].auto_cuda_min_sequences  # sequences a step, auto's minimum
    device = torch.device(resolve_device(str(cfgs[0].device), *step))
    if note := auto_device_note(str(cfgs[0].device), device, *step):
        log.info(note)
    results: list[float | None] = [None] * len(cfgs)
    runs: list[RunState | None] = []
    for k, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs)):
        try:
            runs.append(RunState(cfg, run_dir, device, loggers[k] if loggers else None))
        except RunError as error:  # a run that cannot start fails alone too
            runs.append(None)
            if on_failure is None:
                raise
            on_failure(k, error)
    live = [k for k, run in enumerate(runs) if run is not None]
    if not live:
        return results
    first = runs[live[0]]
    fast = use_fast_path(first.cfg.train.fast_path, first.model, device,
                         max(runs[k].total - runs[k].seen for k in live), first.cfg.train.fast_path_min_sequences,
                         lambda: core_ready(first.cfg.train.fast_path_core, device))
    core = None if first.cfg.train.fast_path_core == "auto" else first.cfg.train.fast_path_core
    forwards = [stacked_forward(fast, runs[k].model, device, core) for k in live]
    stepper = StackedStep([runs[k].model for k in live], [runs[k].task for k in live],
                          [runs[k].optimizer for k in live], [runs[k].params for k in live], forwards)
    for view, k in zip(stepper.run_optimizers, live):  # each run now steps with its row of the stack
        runs[k].optimizer = runs[k].guard.optimizer = view
    group = [runs[k] for k in live]
    clip = torch.tensor([run.cfg.train.clip_value for run in group])
    active = [run.seen < run.total for run in group]
    for i, run in enumerate(group):
        if not active[i]:  # resumed a run that had already finished
            results[live[i]] = run.finish()
    what = f"fast path ({stepper_core(forwards)})" if fast else "plain eager"
    for run in group:
        run.log.info("training step: %d runs stacked, %s on %s", len(group), what, device)
    bar = tqdm(total=sum(run.total for run in group), initial=sum(run.seen for run in group), unit="seq",
               unit_scale=True, dynamic_ncols=True, disable=not first.cfg.progress, mininterval=1.0,
               desc=f"{first.cfg.task.name}/{first.cfg.model.name} x{len(group)}")
    for run in group:
        run.model.train()

    def stop_run(i: int, error: RunError) -> None:  # run i failed: it stops alone, the others go on
        active[i] = False
        if on_failure is None:
            raise error
        on_failure(live[i], error)

    with StopSignals() as stop:  # SIGINT, SIGTERM: only a flag, looked at between steps
        while any(active):
            if stop.signum is not None:  # every live run checkpointed where it stands, then stop (interrupts.py)
                stop.act([run for run, on in zip(group, active) if on], bar)
            batches = [run.data.next(run.total - run.seen) if on else None for run, on in zip(group, active)]
            costs, grad_norms = stepper.forward_backward(batches)  # [cost (B,) bits] per run, norms (K,)
            finite = [on and bool(torch.isfinite(c.sum()) & torch.isfinite(n)) for on, c, n in zip(active, costs, grad_norms)]
            for i, (run, batch) in enumerate(zip(group, batches)):
                if batch is None:
                    continue
                run.data.draw_ahead(run.total - run.seen - batch.batch_size)
                if not finite[i]:
                    try:  # skipped; after train.max_bad_steps in a row, the last good state, loaded into its row
                        run.skip_step()
                    except RunError as error:
                        stop_run(i, error)
            measure = any(run.measures_activity() for run in group)  # the runs step in lockstep
            # clip each run's gradient (§4.6), RMSProp the finite ones
            activity = stepper.update(torch.tensor(finite), clip, measure)
            for i, run in enumerate(group):
                if not finite[i]:
                    continue
                try:
                    measured = activity[i] if measure and run.measures_activity() else None
                    run.record(costs[i], grad_norms[i], measured)  # counted; logged, evaluated, checkpointed at boundaries
                    bar.update(costs[i].shape[0])
                    if run.seen >= run.total:
                        results[live[i]], active[i] = run.finish(), False
                except RunError as error:
                    stop_run(i, error)
            logged = [run.last_cost for run in group if run.last_cost == run.last_cost]
            if logged:
                bar.set_postfix(median=f"{statistics.median(logged):.3f}", worst=f"{max(logged):.3f} bits/seq", refresh=False)
        bar.close()
        return results


def stepper_core(forwards) -> str:
    cores = {type(forward).__name__ for forward in forwards if forward is not None}
    return ", ".join(sorted(cores)) or "nn.LSTM"


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.objective`` (the final training cost by default) so
    sweepers (e.g. Optuna) can minimise it.

    A single run that fails prints one line and exits 2, leaving no empty run folder (cli.py).
    In a sweep, a failing job is reported and the sweep carries on (sweep.run_job).
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.RUN:
        try:
            return train(cfg, run_dir)
        except RunError as error:  # here, not in cli.py: Hydra would print a line of its own first
            discard_empty_run_dir(run_dir)
            exit_with_error("ntm-train", error)
    return run_job(train, cfg, hydra_cfg, run_dir)
