"""ntm-train: the training loop (sample, forward, masked cost, backward, clip, step).

    ntm-train task=copy model=ntm_lstm
    ntm-train task=copy model=ntm_lstm resume=true      # continue the newest such run
    ntm-train -m task=copy model=ntm_ff,lstm seed=1,2   # a sweep, one folder per job
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary
from tqdm import tqdm

from . import checkpoint
from .config import config_dir
from .devices import job_device, resolve_device
from .errors import ConfigError, RunError, TrainingDiverged
from .evaluate import capacity_warnings, log_evaluation
from .fast import make_train_step, use_fast_path
from .sweep import cpu_threads_per_job, mark_failed
from .models import count_parameters, make_model
from .optim import GravesRMSprop
from .runs import COST_TAG  # the training-cost tag that ntm-aggregate and ntm-report read back
from .tasks import make_task
from .validation import validate

log = logging.getLogger("ntm_experiments.train")


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """Flat {dotted key: scalar} view of the run's settings, for TensorBoard's hparams."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def check_resumable(saved: dict, cfg: DictConfig) -> None:
    """A run may only continue with the task, model and seed it started with."""
    for key in ("task", "model", "seed", "train.batch_size"):
        before, now = OmegaConf.select(OmegaConf.create(saved), key), OmegaConf.select(cfg, key)
        if OmegaConf.is_config(now):
            now = OmegaConf.to_container(now, resolve=True)
        if before != now:
            raise ConfigError(f"resume: the checkpoint was trained with {key}={before}, this run asks for "
                              f"{key}={now}; only train.total_sequences, the optimiser settings (train.lr, ...) and logging settings may change")


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
    validate(cfg)
    device = torch.device(resolve_device(str(cfg.device)))
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / checkpoint.CHECKPOINT_NAME
    for stale in run_dir.glob(f".{checkpoint.CHECKPOINT_NAME}.*.tmp"):  # a write cut short by a kill
        stale.unlink()
    torch.manual_seed(cfg.seed)
    data_rng = torch.Generator().manual_seed(cfg.seed)  # the training-data stream (CPU, so CPU and GPU see the same data)
    task = make_task(cfg.task)
    model = make_model(cfg.model, task.input_width, task.output_width).to(device)
    opt = GravesRMSprop(model.parameters(), lr=cfg.train.lr, decay=cfg.train.decay,
                        momentum=cfg.train.momentum, eps=cfg.train.eps)
    params = [p for p in model.parameters() if p.requires_grad]

    seen, last_cost, best_eval = 0, math.nan, math.inf
    resuming = cfg.resume not in (False, None, "false", "False")
    if resuming or ckpt_path.exists():
        if not resuming:
            raise ConfigError(f"{run_dir} already holds a checkpoint: pass resume=true to continue it, or use a new folder")
        saved = checkpoint.load(ckpt_path)
        check_resumable(saved["config"], cfg)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])  # this also brings back the saved lr, decay, ...
        settings = {"lr": cfg.train.lr, "momentum": cfg.train.momentum, "decay": cfg.train.decay, "eps": cfg.train.eps}
        for group in opt.param_groups:  # ... but the optimiser settings asked for now are the ones that apply
            changed = {k: (group[k], v) for k, v in settings.items() if group[k] != v}
            group.update(settings)
        if changed:
            log.info("resume: optimiser settings changed: %s",
                     ", ".join(f"train.{k} {a} -> {b}" for k, (a, b) in changed.items()))
        checkpoint.restore_rng_states(saved["rng"], data_rng)
        seen, last_cost = saved["sequences_seen"], saved["last_cost"]
        best_eval = saved.get("best_eval_cost", math.inf)
        log.info("resumed %s at %d sequences", ckpt_path, seen)

    for warning in capacity_warnings(task, cfg.model.get("memory_rows"), cfg.eval):
        log.warning(warning)
    n_params, paper_params = count_parameters(model), cfg.paper.params
    log.info("%s on %s: %d parameters (paper, %s: %s)", cfg.model.name, cfg.task.name, n_params,
             cfg.paper.table or "no table", f"{paper_params:,}" if paper_params else "n/a")
    # purge_step: on resume, TensorBoard drops anything a killed run logged after the checkpoint
    # (the checkpoint's own point, at step `seen`, stays)
    writer = SummaryWriter(str(run_dir), purge_step=seen + 1 if seen else None)
    if not seen:
        writer.add_text("model/parameters", f"{n_params:,} (paper: {paper_params or 'n/a'})", 0)
        writer.add_scalar("model/parameters", n_params, 0)
        if paper_params:
            writer.add_scalar("model/parameters_paper", paper_params, 0)
        for summary in hparams_summary({**hparams(cfg), "model.parameters": n_params}, {COST_TAG: math.nan}):
            writer.file_writer.add_summary(summary)

    # what a restore after repeated non-finite steps goes back to: the last checkpoint's state
    last_good = {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(opt.state_dict()), "seen": seen}

    def save_checkpoint() -> None:
        writer.flush()  # events up to this point reach disk before the checkpoint that vouches for them
        if not all(torch.isfinite(p).all() for p in params):  # a finite step can still overflow the weights
            log.warning("non-finite weights at %d sequences: checkpoint not written, the one at %d sequences is kept",
                        seen, last_good["seen"])
            return
        last_good.update(model=copy.deepcopy(model.state_dict()), optimizer=copy.deepcopy(opt.state_dict()), seen=seen)
        try:
            checkpoint.save(ckpt_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "sequences_seen": seen,
                "last_cost": last_cost, "best_eval_cost": best_eval, "config": OmegaConf.to_container(cfg, resolve=True),
                "rng": checkpoint.rng_states(data_rng, data_state)})
        except OSError as error:
            raise RunError(f"cannot write the checkpoint {ckpt_path}: {error.strerror or error}; "
                           "the previous checkpoint is kept") from error

    total, batch_size = cfg.train.total_sequences, cfg.train.batch_size
    fast = use_fast_path(cfg.train.fast_path, model, device, total - seen, cfg.train.fast_path_min_sequences)
    core = None if cfg.train.fast_path_core == "auto" else cfg.train.fast_path_core
    stepper = make_train_step(fast, model, task, opt, params, device, core)
    what = "plain eager"
    if fast:
        what = f"fast path ({stepper.core or 'nn.LSTM'} core{', CUDA graphs' if stepper.graphs else ''})"
    log.info("training step: %s on %s", what, device)
    log_every, ckpt_every = cfg.train.log_every, cfg.train.checkpoint_every
    cost_sum = grad_norm_sum = 0.0
    steps_in_window = seqs_in_window = 0
    skipped = bad_in_row = restores = skipped_at_checkpoint = 0
    bar = tqdm(total=total, initial=seen, unit="seq", unit_scale=True, dynamic_ncols=True,
               disable=not cfg.progress, mininterval=1.0, desc=f"{cfg.task.name}/{cfg.model.name}")
    model.train()
    data_state = data_rng.get_state()  # the data stream before the batch in hand: what a checkpoint saves
    ahead = None  # the next batch, drawn on the CPU while the device trains on this one
    while seen < total:
        batch = ahead if ahead is not None else task.sample(min(batch_size, total - seen), data_rng).to(device)
        b = batch.batch_size
        cost, grad_norm = stepper.forward_backward(batch)  # asynchronous on CUDA
        data_state, ahead = data_rng.get_state(), None
        if seen + b < total:  # draw the next batch now, while the GPU works, and queue its copy
            ahead = task.sample(min(batch_size, total - seen - b), data_rng).to(device)
        if not bool(torch.isfinite(cost.sum()) & torch.isfinite(grad_norm)):  # skip the step, count it
            skipped, bad_in_row = skipped + 1, bad_in_row + 1
            writer.add_scalar("train/skipped_steps", skipped, seen)
            if bad_in_row >= cfg.train.max_bad_steps:
                restores, bad_in_row = restores + 1, 0
                if restores > cfg.train.max_restores:
                    writer.close()
                    raise TrainingDiverged(
                        f"training diverged: {cfg.train.max_bad_steps} non-finite steps in a row after "
                        f"{cfg.train.max_restores} restores of the state at {last_good['seen']:,} sequences; "
                        + (f"checkpoint kept in {run_dir}" if ckpt_path.exists() else "no checkpoint written yet")
                        + " (try a lower train.lr)")
                model.load_state_dict(last_good["model"])
                opt.load_state_dict(last_good["optimizer"])
                stepper.optimizer_reloaded()
                writer.add_scalar("train/restores", restores, seen)
                log.warning("%d non-finite steps in a row: restored the checkpoint at %d sequences (restore %d of %d)",
                            cfg.train.max_bad_steps, last_good["seen"], restores, cfg.train.max_restores)
            continue
        bad_in_row = 0
        stepper.update(cfg.train.clip_value)  # clip element-wise to (-10, 10) (§4.6), RMSProp step

        before, seen = seen, seen + b
        cost_sum += cost.sum().item()
        grad_norm_sum += grad_norm.item()
        steps_in_window += 1
        seqs_in_window += b
        bar.update(b)
        crossed = lambda every: seen // every > before // every or seen == total  # noqa: E731
        if crossed(log_every):
            last_cost = cost_sum / seqs_in_window
            writer.add_scalar(COST_TAG, last_cost, seen)
            writer.add_scalar("train/grad_norm", grad_norm_sum / steps_in_window, seen)
            writer.add_scalar("train/lr", opt.param_groups[0]["lr"], seen)
            bar.set_postfix(cost=f"{last_cost:.3f} bits/seq")
            cost_sum = grad_norm_sum = 0.0
            steps_in_window = seqs_in_window = 0
        if crossed(cfg.eval.every):  # generalisation suite, on fixed sequences
            results = log_evaluation(writer, model, task, cfg.eval, seen, device)
            best_eval = min(best_eval, sum(r.cost_bits for r in results) / len(results))
        if crossed(ckpt_every):  # always a logging boundary too (validated)
            if skipped > skipped_at_checkpoint and seen < total:  # unstable since the last one: keep that one
                log.warning("%d non-finite steps since the last checkpoint: not overwriting it at %d sequences",
                            skipped - skipped_at_checkpoint, seen)
            else:
                save_checkpoint()
            skipped_at_checkpoint = skipped
    bar.close()
    if not ckpt_path.exists():  # resumed a run that had already finished
        save_checkpoint()
    writer.close()
    log.info("finished: %d sequences, final cost %.4f bits per sequence, best evaluation cost %.4f",
             seen, last_cost, best_eval)
    return float(last_cost if cfg.objective == "final_train_cost" else best_eval)


def _failure_line(error: BaseException) -> str:
    """One line for a job that failed: our own message, out of memory, or the error's type and text."""
    if isinstance(error, RunError):
        return str(error)
    if isinstance(error, torch.OutOfMemoryError):
        return "out of memory (try a smaller train.batch_size or model, or fewer parallel jobs per GPU)"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.objective`` (the final training cost by default) so
    sweepers (e.g. Optuna) can minimise it.

    A single run that fails prints one line and exits 2. In a sweep, a failing job (a bad
    value, divergence, out of memory, ...) writes that line to ``<job folder>/FAILED`` and its
    log and returns None, so the launcher and sweeper carry on; the sweep then ends with a
    summary of the failed jobs and exit code 1 (ntm_experiments.sweep.FailureReport).
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.RUN:
        try:
            return train(cfg, run_dir)
        except (RunError, torch.OutOfMemoryError) as error:  # one line and exit 2
            if not any(run_dir.glob("events.out.tfevents.*")) and not (run_dir / checkpoint.CHECKPOINT_NAME).exists():
                shutil.rmtree(run_dir, ignore_errors=True)  # leave no empty run folder behind,
                for parent in run_dir.resolve().parents:  # nor the empty outputs/<task>/<model>/ above it
                    if parent == Path.cwd() or Path.cwd() not in parent.parents:
                        break
                    try:
                        parent.rmdir()  # only succeeds when empty
                    except OSError:
                        break
            print(f"ntm-train: error: {_failure_line(error)}", file=sys.stderr)
            sys.exit(2)
    try:
        job_num = hydra_cfg.job.get("num")
        cfg.device = job_device(str(cfg.device), job_num, torch.cuda.device_count())
        if "joblib" in str(hydra_cfg.launcher.get("_target_", "")).lower() and resolve_device(str(cfg.device)) == "cpu":
            threads = cpu_threads_per_job(hydra_cfg.launcher.get("n_jobs"))  # the jobs share the cores
            torch.set_num_threads(threads)
            log.info("joblib job %s on the CPU: %d torch thread(s)", job_num, threads)
        return train(cfg, run_dir)
    except Exception as error:  # noqa: BLE001 - the sweep carries on; the job says why it failed
        line = _failure_line(error)
        if isinstance(error, RunError):
            log.error("job failed: %s", line)
        else:
            log.exception("job failed: %s", line)  # unexpected: the traceback goes to the job's log
        mark_failed(run_dir, line)
        # None, not NaN: every launcher passes it back as it is, and the Optuna sweeper marks the
        # trial failed and goes on (a NaN makes optuna 2.x's study.tell raise, ending the search)
        return None
