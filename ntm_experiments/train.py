"""ntm-train: the training loop (sample, forward, masked cost, backward, clip, step).

    ntm-train task=copy model=ntm_lstm
    ntm-train task=copy model=ntm_lstm resume=true      # continue the newest such run
    ntm-train -m task=copy model=ntm_ff,lstm seed=1,2   # a sweep, one folder per job
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from tqdm import tqdm

from .cli import discard_empty_run_dir, exit_with_error
from .config import config_dir
from .devices import resolve_device
from .errors import RunError
from .fast import make_train_step, use_fast_path
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
    device = torch.device(resolve_device(str(cfg.device)))
    run = RunState(cfg, run_dir, device)
    fast = use_fast_path(cfg.train.fast_path, run.model, device, run.total - run.seen, cfg.train.fast_path_min_sequences)
    core = None if cfg.train.fast_path_core == "auto" else cfg.train.fast_path_core
    stepper = make_train_step(fast, run.model, run.task, run.optimizer, run.params, device, core)
    what = f"fast path ({stepper.core or 'nn.LSTM'} core{', CUDA graphs' if stepper.graphs else ''})" if fast else "plain eager"
    log.info("training step: %s on %s", what, device)
    bar = tqdm(total=run.total, initial=run.seen, unit="seq", unit_scale=True, dynamic_ncols=True,
               disable=not cfg.progress, mininterval=1.0, desc=f"{cfg.task.name}/{cfg.model.name}")
    run.model.train()
    while run.seen < run.total:
        batch = run.data.next(run.total - run.seen)
        cost, grad_norm = stepper.forward_backward(batch)  # cost (B,) bits; asynchronous on CUDA
        run.data.draw_ahead(run.total - run.seen - batch.batch_size)  # while the device trains
        if not bool(torch.isfinite(cost.sum()) & torch.isfinite(grad_norm)):
            if run.skip_step():  # skipped; after train.max_bad_steps in a row, the last good state
                stepper.optimizer_reloaded()
            continue
        stepper.update(cfg.train.clip_value)  # clip element-wise to (-10, 10) (§4.6), RMSProp step
        if run.record(cost, grad_norm):  # counted; logged, evaluated, checkpointed at boundaries
            bar.set_postfix(cost=f"{run.last_cost:.3f} bits/seq")
        bar.update(batch.batch_size)
    bar.close()
    return run.finish()


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
