"""One training run's state, apart from the step that trains it, so one step can drive one run
(train.py) or, later, a stack of them.

  build_run       task, model, optimiser and trained parameters from a config (the one place
                  they are built: ntm-train, scripts/bench.py, scripts/eval_overhead.py, tests)
  DataStream      the run's own training batches, drawn on the CPU one batch ahead
  LoggingWindow   the training cost and gradient norm summed between TensorBoard points
  DivergenceGuard the last good state, non-finite steps skipped, restores, and when to give up
  RunState        all of the above for one run folder: resume, writer, checkpoints, evaluations
"""

from __future__ import annotations

import copy
import logging
import math
import signal
from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from . import checkpoint
from .config import resume_kind
from .errors import ConfigError, Interrupted, RunError, TrainingDiverged
from .evaluate import capacity_warnings, eval_suite, log_evaluation
from .interrupts import resume_override
from .models import count_parameters, make_model
from .optim import GravesRMSprop, batch_scaled_lr
from .paper import paper_curve
from .runs import COST_TAG, EVAL_PREFIX, EVAL_SUFFIX  # the tags that ntm-aggregate and ntm-report read back
from .tasks import Batch, Task, make_task

log = logging.getLogger("ntm_experiments.train")

PAPER_TAG = "paper/cost_bits_per_sequence"      # the paper's curve for the run's task x model (paper.py)
CLIPPED_TAG = "train/clipped_fraction"            # gradient elements beyond train.clip_value, before clipping
EPS_DOMINANT_TAG = "train/eps_dominant_fraction"  # elements whose train.eps exceeds RMSProp's n - m^2


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


def owned(state: dict) -> dict:
    """A state dict whose tensors own their memory: a stacked run's weights are views of the
    stack's rows (fast/stacked.py), and saving a view would save every run's weights."""
    return {key: value.detach().clone() for key, value in state.items()}


class RunParts(NamedTuple):
    task: Task
    model: torch.nn.Module
    optimizer: GravesRMSprop
    params: list[torch.Tensor]  # the parameters that train (the LSTM baseline holds one bias fixed)


def step_lr(cfg: DictConfig) -> float:
    """The learning rate of a step: train.lr scaled for the batch by train.lr_batch_scaling."""
    return batch_scaled_lr(cfg.train.lr, cfg.train.batch_size, cfg.train.lr_batch_scaling)


def build_run(cfg: DictConfig, device: torch.device) -> RunParts:
    """The task, the model on ``device`` (its weights drawn from ``cfg.seed``) and the optimiser
    with ``cfg.train``'s settings (§4.6)."""
    torch.manual_seed(cfg.seed)
    task = make_task(cfg.task)
    model = make_model(cfg.model, task.input_width, task.output_width).to(device)
    optimizer = GravesRMSprop(model.parameters(), lr=step_lr(cfg), decay=cfg.train.decay,
                              momentum=cfg.train.momentum, eps=cfg.train.eps)
    return RunParts(task, model, optimizer, [p for p in model.parameters() if p.requires_grad])


class DataStream:
    """The run's training batches: drawn on the CPU from the run's own generator (so the CPU and
    the GPU see the same data), the next one drawn while the device trains on this one."""

    def __init__(self, task: Task, seed: int, batch_size: int, device: torch.device):
        self.task, self.batch_size, self.device = task, batch_size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.state = self.generator.get_state()  # before the batch drawn ahead: what a checkpoint saves
        self.ahead: Batch | None = None

    def _draw(self, remaining: int) -> Batch:
        return self.task.sample(min(self.batch_size, remaining), self.generator).to(self.device)

    def next(self, remaining: int) -> Batch:
        """The batch to train on now: at most ``remaining`` sequences."""
        batch = self.ahead if self.ahead is not None else self._draw(remaining)
        self.state, self.ahead = self.generator.get_state(), None
        return batch

    def draw_ahead(self, remaining: int) -> None:
        """Draw the next batch now (its copy to a GPU queued), if ``remaining`` sequences are left."""
        if remaining > 0:
            self.ahead = self._draw(remaining)

    def restore(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
        self.state, self.ahead = state, None


class LoggingWindow:
    """What a TensorBoard point averages: the cost per sequence over every sequence since the
    last point (so batches of different sizes weigh by their sequences), the mean gradient
    norm over its steps, and the mean optimiser activity (steps.optimizer_activity) over the
    steps that measured it."""

    def __init__(self):
        self.cost_sum = self.grad_norm_sum = 0.0
        self.steps = self.sequences = 0
        self.clipped_sum = self.eps_dominant_sum = 0.0
        self.measured = 0

    def add(self, cost: torch.Tensor, grad_norm: torch.Tensor, activity: torch.Tensor | None = None) -> None:
        """cost (B,) bits per sequence of one applied step, its gradient norm (), and when the
        step measured it its optimizer_activity (2,)."""
        self.cost_sum += cost.sum().item()
        self.grad_norm_sum += grad_norm.item()
        self.steps += 1
        self.sequences += cost.shape[0]
        if activity is not None:
            clipped, eps_dominant = activity.tolist()
            self.clipped_sum += clipped
            self.eps_dominant_sum += eps_dominant
            self.measured += 1

    def close(self) -> tuple[float, float, tuple[float, float] | None]:
        """(mean cost, bits per sequence; mean gradient norm; mean (clipped, epsilon-dominant)
        fractions, None when no step measured them), and start a new window."""
        activity = (self.clipped_sum / self.measured, self.eps_dominant_sum / self.measured) if self.measured else None
        means = self.cost_sum / self.sequences, self.grad_norm_sum / self.steps, activity
        self.__init__()
        return means

    def state_dict(self) -> dict[str, float]:
        """The partial sums, for a checkpoint written mid-window (on a signal)."""
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, float] | None) -> None:
        """Partial sums from a checkpoint; None (a checkpoint from before they were saved): empty."""
        self.__init__()
        if state:
            vars(self).update(state)


class DivergenceGuard:
    """Non-finite steps (train.max_bad_steps, train.max_restores; conf/config.yaml): a step whose
    loss or gradient is not finite is skipped and counted; after max_bad_steps in a row the model
    and optimiser go back to the last good state (the last checkpoint's); after max_restores such
    restores the run stops."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, seen: int,
                 max_bad_steps: int, max_restores: int):
        self.model, self.optimizer = model, optimizer
        self.max_bad_steps, self.max_restores = max_bad_steps, max_restores
        self.skipped = self.bad_in_row = self.restores = self.skipped_at_checkpoint = 0
        self.remember(seen)

    def remember(self, seen: int) -> None:
        """The state a restore goes back to: the model and optimiser as they are now, at ``seen``."""
        self.good = {"model": owned(self.model.state_dict()),
                     "optimizer": copy.deepcopy(self.optimizer.state_dict()), "seen": seen}

    @property
    def good_seen(self) -> int:
        return self.good["seen"]

    def finite_step(self) -> None:
        self.bad_in_row = 0

    def bad_step(self) -> bool:
        """Count a skipped step; True when it restored the last good state. TrainingDiverged
        when the restores are used up."""
        self.skipped, self.bad_in_row = self.skipped + 1, self.bad_in_row + 1
        if self.bad_in_row < self.max_bad_steps:
            return False
        self.restores, self.bad_in_row = self.restores + 1, 0
        if self.restores > self.max_restores:
            raise TrainingDiverged(f"training diverged: {self.max_bad_steps} non-finite steps in a row after "
                                   f"{self.max_restores} restores of the state at {self.good_seen:,} sequences")
        self.model.load_state_dict(self.good["model"])
        self.optimizer.load_state_dict(self.good["optimizer"])
        return True

    def skipped_since_checkpoint(self) -> int:
        """Steps skipped since the last call (one per checkpoint boundary)."""
        since, self.skipped_at_checkpoint = self.skipped - self.skipped_at_checkpoint, self.skipped
        return since

    COUNTERS = ("skipped", "bad_in_row", "restores", "skipped_at_checkpoint")

    def state_dict(self, seen: int) -> dict[str, Any]:
        """The counters, and the last good state when it is not the run's state at ``seen`` (a
        checkpoint written on a signal keeps the one a restore would go back to)."""
        return {**{k: getattr(self, k) for k in self.COUNTERS}, "good": self.good if self.good_seen != seen else None}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Counters (and a last good state) from a checkpoint; None (an older checkpoint): as they are."""
        if state:
            for k in self.COUNTERS:
                setattr(self, k, state[k])
            if state["good"] is not None:
                self.good = state["good"]


def _differences(key: str, before: Any, now: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, before, now) for every leaf that differs; a key on one side only is "(absent)"."""
    if isinstance(before, dict) and isinstance(now, dict):
        keys = [*now, *(k for k in before if k not in now)]
        return [d for k in keys for d in _differences(f"{key}.{k}", before.get(k, "(absent)"), now.get(k, "(absent)"))]
    return [] if before == now else [(key, before, now)]


def check_resumable(saved: dict, cfg: DictConfig) -> None:
    """A run may only continue with the task, model and seed it started with; the error names the
    settings that differ (``model.controller_size=16``), not the whole group."""
    differ = []
    for key in ("task", "model", "seed", "train.batch_size"):
        before, now = OmegaConf.select(OmegaConf.create(saved), key), OmegaConf.select(cfg, key)
        before, now = (OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for v in (before, now))
        differ += _differences(key, before, now)
    if differ:
        raise ConfigError(f"resume: the checkpoint was trained with {', '.join(f'{k}={b}' for k, b, _ in differ)}, "
                          f"this run asks for {', '.join(f'{k}={n}' for k, _, n in differ)}; only train.total_sequences, "
                          "the optimiser settings (train.lr, ...) and logging settings may change")


class RunState:
    """One run in its folder: its parts, data stream, counters, TensorBoard writer, logging
    window, divergence guard and checkpoint. ``RunState(cfg, run_dir, device)`` builds the run,
    resumes it when ``cfg.resume`` asks, and opens its writer."""

    def __init__(self, cfg: DictConfig, run_dir: Path, device: torch.device, logger: logging.Logger | None = None):
        """``logger``: where the run's own messages go (default: ntm_experiments.train; a stack
        gives each run its own, writing to the run's train.log)."""
        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.log = logger or log
        run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = run_dir / checkpoint.CHECKPOINT_NAME
        for stale in run_dir.glob(f".{checkpoint.CHECKPOINT_NAME}.*.tmp"):  # a write cut short by a kill
            stale.unlink()
        self.task, self.model, self.optimizer, self.params = build_run(cfg, device)
        if cfg.train.lr_batch_scaling != "none":
            self.log.info("learning rate %.6g: train.lr=%g scaled by %s of the batch (train.lr_batch_scaling=%s, "
                          "train.batch_size=%d)", step_lr(cfg), cfg.train.lr,
                          {"sqrt": "the square root", "linear": "the size"}[cfg.train.lr_batch_scaling],
                          cfg.train.lr_batch_scaling, cfg.train.batch_size)
        self.data = DataStream(self.task, cfg.seed, cfg.train.batch_size, device)
        self.total = cfg.train.total_sequences
        self.seen, self.last_cost, self.best_eval = 0, math.nan, math.inf
        saved = self._resume()
        self.guard = DivergenceGuard(self.model, self.optimizer, self.seen, cfg.train.max_bad_steps,
                                     cfg.train.max_restores)
        self.window = LoggingWindow()
        if saved is not None:  # a checkpoint written mid-window (on a signal) carries both
            self.guard.load_state_dict(saved.get("guard"))
            self.window.load_state_dict(saved.get("window"))
        self._open_writer()

    def _resume(self) -> dict | None:
        cfg = self.cfg
        kind = resume_kind(cfg.resume)
        if kind == "no" and self.checkpoint_path.exists():
            raise ConfigError(f"{self.run_dir} already holds a checkpoint: pass resume=true to continue it, or use a new folder")
        if kind == "no":
            return None
        if kind == "newest" and not self.checkpoint_path.exists():  # a sweep's job (hydra.sweep.dir given
            self.log.info("resume=true: no checkpoint in %s yet; starting this run afresh", self.run_dir)
            return None  # again) killed before its first checkpoint; a single run's resume=true always finds one
        saved = checkpoint.load(self.checkpoint_path)
        check_resumable(saved["config"], cfg)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])  # this also brings back the saved lr, decay, ...
        settings = {"lr": step_lr(cfg), "momentum": cfg.train.momentum, "decay": cfg.train.decay, "eps": cfg.train.eps}
        for group in self.optimizer.param_groups:  # ... but the optimiser settings asked for now are the ones that apply
            changed = {k: (group[k], v) for k, v in settings.items() if group[k] != v}
            group.update(settings)
        if changed:
            self.log.info("resume: optimiser settings changed: %s",
                          ", ".join(f"train.{k} {a} -> {b}" for k, (a, b) in changed.items()))
        checkpoint.restore_rng_states(saved["rng"], self.data.generator)
        self.data.restore(self.data.generator.get_state())
        self.seen, self.last_cost = saved["sequences_seen"], saved["last_cost"]
        self.best_eval = saved.get("best_eval_cost", math.inf)
        self.log.info("resumed %s at %d sequences", self.checkpoint_path, self.seen)
        return saved

    def _open_writer(self) -> None:
        cfg = self.cfg
        for warning in capacity_warnings(self.task, cfg.model.get("memory_rows"), cfg.eval):
            self.log.warning(warning)
        for key in ("train.log_every", "eval.every", "train.checkpoint_every"):  # batches are never split to land on one
            every, size = OmegaConf.select(cfg, key), cfg.train.batch_size
            if every % size:
                at = ", ".join(f"{-(-k * every // size) * size:,}" for k in (1, 2, 3))
                self.log.info("%s=%d is not a multiple of train.batch_size=%d: its points fall at the first step past each "
                              "boundary (%s, ...)", key, every, size, at)
        n_params, paper_params = count_parameters(self.model), cfg.paper.params
        self.log.info("%s on %s: %d parameters (paper, %s: %s)", cfg.model.name, cfg.task.name, n_params,
                      cfg.paper.table or "no table", f"{paper_params:,}" if paper_params else "n/a")
        # purge_step: on resume, TensorBoard drops anything a killed run logged after the checkpoint
        # (the checkpoint's own point, at step `seen`, stays)
        self.writer = SummaryWriter(str(self.run_dir), purge_step=self.seen + 1 if self.seen else None)
        self.paper_curve_from = self.seen  # logged at the first point this process logs (_log_paper_curve)
        if not self.seen:
            self.writer.add_text("model/parameters", f"{n_params:,} (paper: {paper_params or 'n/a'})", 0)
            self.writer.add_scalar("model/parameters", n_params, 0)
            if paper_params:
                self.writer.add_scalar("model/parameters_paper", paper_params, 0)
            # the HParams tab's metrics: the training cost and every evaluation setting's cost
            metrics = {COST_TAG: math.nan, **{f"{EVAL_PREFIX}{s.name}{EVAL_SUFFIX}": math.nan
                                              for s in eval_suite(self.task, cfg.eval)}}
            for summary in hparams_summary({**hparams(cfg), "model.parameters": n_params}, metrics):
                self.writer.file_writer.add_summary(summary)

    def _log_paper_curve(self) -> None:
        """The paper's curve for this task x model (paper.paper_curve), as its own series beside the
        run's training cost and one chart drawing both (TensorBoard's Custom Scalars tab), so a
        run shows while it trains whether it tracks the paper. Written at the first point this
        process logs, inside the training loop, where a signal only sets a flag (about a hundred
        events at once at start-up, with a signal arriving then, left the fresh-clone CI's
        SIGINT test waiting on a child that never exited); on a resume, the points past the
        checkpoint again (the writer's purge drops every series' points past it)."""
        start, self.paper_curve_from = self.paper_curve_from, None
        curve = paper_curve(self.cfg.task.name, self.cfg.model.name)
        if not curve:
            return
        for sequences, cost in curve:
            if sequences > start:
                self.writer.add_scalar(PAPER_TAG, cost, sequences)
        if not start:
            chart = f"{self.cfg.task.name} {self.cfg.model.name}: training cost and the paper's (bits per sequence)"
            self.writer.add_custom_scalars({"paper": {chart: ["Multiline", [COST_TAG, PAPER_TAG]]}})

    # ------------------------------------------------------------ one step's outcome
    def skip_step(self) -> bool:
        """A non-finite step: counted, never applied; True when the last good state was restored
        (a step holding optimiser state must then be told: ``optimizer_reloaded``)."""
        try:
            restored = self.guard.bad_step()
        except TrainingDiverged as error:
            self.writer.add_scalar("train/skipped_steps", self.guard.skipped, self.seen)
            self.writer.close()
            kept = f"checkpoint kept in {self.run_dir}" if self.checkpoint_path.exists() else "no checkpoint written yet"
            raise TrainingDiverged(f"{error}; {kept} (try a lower train.lr)") from None
        self.writer.add_scalar("train/skipped_steps", self.guard.skipped, self.seen)
        if restored:
            self.writer.add_scalar("train/restores", self.guard.restores, self.seen)
            self.log.warning("%d non-finite steps in a row: restored the checkpoint at %d sequences (restore %d of %d)",
                             self.guard.max_bad_steps, self.guard.good_seen, self.guard.restores, self.guard.max_restores)
        return restored

    def measures_activity(self) -> bool:
        """Whether the next update measures the optimiser's activity: every train.activity_every-th
        update, counted from the run's start (so a resumed run measures the same updates)."""
        every = self.cfg.train.activity_every
        return every > 0 and (self.seen // self.cfg.train.batch_size) % every == 0

    def record(self, cost: torch.Tensor, grad_norm: torch.Tensor, activity: torch.Tensor | None = None) -> bool:
        """An applied step of cost (B,) bits per sequence (and its optimizer activity (2,) when it
        measured it): count it, and at the boundaries it crosses log the window's means, evaluate
        and checkpoint. True when it logged a point."""
        self.guard.finite_step()
        before = self.seen
        self.seen += cost.shape[0]
        self.window.add(cost, grad_norm, activity)
        crossed = lambda every: self.seen // every > before // every or self.seen == self.total  # noqa: E731
        cfg, logged = self.cfg, crossed(self.cfg.train.log_every)
        if logged:
            if self.paper_curve_from is not None:
                self._log_paper_curve()
            self.last_cost, mean_grad_norm, activity = self.window.close()
            self.writer.add_scalar(COST_TAG, self.last_cost, self.seen)
            self.writer.add_scalar("train/grad_norm", mean_grad_norm, self.seen)
            if activity is not None:  # how often the clip and epsilon acted (steps.optimizer_activity)
                self.writer.add_scalar(CLIPPED_TAG, activity[0], self.seen)
                self.writer.add_scalar(EPS_DOMINANT_TAG, activity[1], self.seen)
            self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.seen)
        if crossed(cfg.eval.every):  # generalisation suite, on fixed sequences
            results = log_evaluation(self.writer, self.model, self.task, cfg.eval, self.seen, self.device)
            self.best_eval = min(self.best_eval, sum(r.cost_bits for r in results) / len(results))
        if crossed(cfg.train.checkpoint_every):  # always a logging boundary too (validated)
            skipped = self.guard.skipped_since_checkpoint()
            if skipped and self.seen < self.total:  # unstable since the last one: keep that one
                self.log.warning("%d non-finite steps since the last checkpoint: not overwriting it at %d sequences",
                                 skipped, self.seen)
            else:
                self.save_checkpoint()
        return logged

    # ------------------------------------------------------------ checkpoints and the end
    def save_checkpoint(self, remember: bool = True) -> bool:
        """The run as it stands, atomically (checkpoint.save); skipped (False) when a weight is not
        finite. ``remember``: the state a restore goes back to becomes this one (not so for a
        checkpoint written on a signal, so that a resumed run restores what an uninterrupted one would)."""
        self.writer.flush()  # events up to this point reach disk before the checkpoint that vouches for them
        if not all(torch.isfinite(p).all() for p in self.params):  # a finite step can still overflow the weights
            self.log.warning("non-finite weights at %d sequences: checkpoint not written, the one at %d sequences is kept",
                             self.seen, self.guard.good_seen)
            return False
        if remember:
            self.guard.remember(self.seen)
        try:
            checkpoint.save(self.checkpoint_path, {
                "model": owned(self.model.state_dict()), "optimizer": self.optimizer.state_dict(),
                "sequences_seen": self.seen, "last_cost": self.last_cost, "best_eval_cost": self.best_eval,
                "window": self.window.state_dict(), "guard": self.guard.state_dict(self.seen),
                "config": OmegaConf.to_container(self.cfg, resolve=True),
                "rng": checkpoint.rng_states(self.data.generator, self.data.state)})
        except OSError as error:
            raise RunError(f"cannot write the checkpoint {self.checkpoint_path}: {error.strerror or error}; "
                           "the previous checkpoint is kept") from error
        return True

    def save_on_signal(self) -> tuple[bool, str]:
        """A checkpoint at the sequences seen, between two steps, on a signal (interrupts.py):
        (whether it was written, what was done in words)."""
        if self.seen == 0:
            return False, "nothing trained yet, no checkpoint written"
        if self.save_checkpoint(remember=False):
            return True, f"checkpoint written to {self.run_dir}"
        earlier = "the previous checkpoint is kept" if self.checkpoint_path.exists() else "there is no earlier one"
        return False, f"the weights are not finite, so no checkpoint was written; {earlier}"

    def interrupt(self, signum: int) -> Interrupted:
        """Stop on SIGINT or SIGTERM between two steps: checkpoint, log, close; the Interrupted to
        raise (its message says what is true)."""
        name = signal.Signals(signum).name
        written, what = self.save_on_signal()
        self.log.warning("stopped by %s at %d sequences: %s", name, self.seen, what)
        self.writer.close()
        then = f" ({resume_override(self.run_dir)} continues it)" if self.checkpoint_path.exists() else ""
        return Interrupted(f"{'interrupted' if signum == signal.SIGINT else 'stopped'} by {name} at {self.seen:,} "
                           f"sequences; {what}{then}", signum, checkpointed=written)

    def finish(self) -> float:
        """Close the run; returns ``cfg.objective`` (bits per sequence)."""
        if not self.checkpoint_path.exists():  # resumed a run that had already finished
            self.save_checkpoint()
        self.writer.close()
        self.log.info("finished: %d sequences, final cost %.4f bits per sequence, best evaluation cost %.4f",
                      self.seen, self.last_cost, self.best_eval)
        return float(self.last_cost if self.cfg.objective == "final_train_cost" else self.best_eval)
