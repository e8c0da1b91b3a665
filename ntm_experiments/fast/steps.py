"""The training step, plain or fast (train.fast_path). Both compute the same function.

A training step is two halves, so the loop can skip a step whose loss or gradient is not
finite (train.max_bad_steps) without ever applying it:

  forward_backward(batch) -> cost (B,) in bits, gradient norm   (model, cost, backward)
  update(clip_value, measure)                                   (clip, RMSProp)

``update(..., measure=True)`` also returns how often clipping and RMSProp's epsilon acted in
that update (``optimizer_activity``): train.activity_every says which updates measure it.

PlainStep runs both in eager PyTorch. FastStep is the same arithmetic made cheap to launch:
  - NTM models run one of the cores in cores.CORES (``core``; default: native on the CPU, step
    on CUDA); each takes a batch of any length without recompiling. A core that cannot run here
    says why and its fallback runs (native -> sequence, triton -> the device's default).
    The plain LSTM baseline is left as it is: ``nn.LSTM`` is already a fused kernel.
  - The native core (CPU) runs each half with ATen on one thread and the core's work units on
    the threads torch was given (native.aten_on_one_thread): no OpenMP region outside the core
    whose threads could wait on a parked one when the machine is busy, and the same arithmetic,
    bit for bit, on any number of threads.
  - CUDA: each half is captured once as a CUDA graph and replayed, one launch instead of
    thousands. ``forward_backward`` is captured once per batch shape (T, B, width); the
    graphs share one memory pool. Gradients and optimiser state live in fixed tensors that
    every graph reads and writes in place.
Start-up: compiling takes tens of seconds (logged); the step compiles again only for a new
batch size (the last, partial batch of a run is run plain instead).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

import torch

from ..models import NTM
from ..tasks.base import Batch
from .cores import CORES, build_core, default_core

log = logging.getLogger("ntm_experiments.fast")

NATS_PER_BIT = math.log(2.0)


def use_fast_path(setting, model: torch.nn.Module, device: torch.device, sequences_to_train: int,
                  min_sequences_cpu: int, core_ready=False) -> bool:
    """Whether a run uses FastStep: ``train.fast_path`` true/false, or auto: always on CUDA;
    on the CPU for NTM models when the core starts at no cost (``core_ready``, a bool or a
    function asked only then: the native core, built and cached on this machine) or the run
    trains at least ``min_sequences_cpu`` sequences, so that a build or compilation (tens of
    seconds) pays for itself."""
    setting = str(setting).lower()  # Hydra reads true/false as booleans
    if setting in ("true", "false"):
        return setting == "true"
    if device.type == "cuda":
        return True
    if not isinstance(model, NTM):
        return False
    return sequences_to_train >= min_sequences_cpu or bool(core_ready() if callable(core_ready) else core_ready)


def core_ready(core_setting: str, device: torch.device) -> bool:
    """Whether the fast path's core for ``train.fast_path_core`` starts at no cost here: the native
    core (the CPU's default) once built and cached; a compiled core never (it compiles per process)."""
    if device.type != "cpu" or str(core_setting) not in ("auto", "native"):
        return False
    from .native import native_ready

    return native_ready()


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """The global 2-norm of the gradients, measured only (no clipping), without a host sync."""
    return torch.nn.utils.clip_grad_norm_(params, float("inf"))


def optimizer_activity(grads: torch.Tensor, square_avg: torch.Tensor, grad_avg: torch.Tensor, clip_value,
                       eps) -> torch.Tensor:
    """How often an update's two limits act, per run: (..., 2) = [the fraction of gradient
    elements beyond the clip value (before clipping; §4.6), the fraction of elements whose
    epsilon exceeds n - m^2, the running variance it is added to (after the update; eq. 40 of
    Graves 2013), so that epsilon, not the gradient's spread, sets most of the divisor].
    grads, square_avg, grad_avg: (..., P) flattened parameters (a run's, or K runs' rows);
    clip_value, eps: numbers or (..., 1) columns."""
    clipped = (grads.abs() > clip_value).sum(-1)
    eps_dominant = (square_avg.addcmul(grad_avg, grad_avg, value=-1) < eps).sum(-1)
    return torch.stack([clipped, eps_dominant], dim=-1).double() / grads.shape[-1]


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


class PlainStep:
    """Eager PyTorch: the reference the fast path is tested against."""

    def __init__(self, model: torch.nn.Module, task, optimizer, params: list[torch.Tensor]):
        self.model, self.task, self.optimizer, self.params = model, task, optimizer, params

    def _forward_backward(self, batch: Batch, forward=None, keep_grad_tensors: bool = False):
        """Gradients of the batch's loss into ``p.grad``, computed with ``forward`` (default: the
        model itself); returns (cost (B,) bits, grad norm). ``keep_grad_tensors`` zeroes the
        existing gradient tensors in place, which CUDA graphs read at fixed addresses, instead
        of dropping them."""
        if keep_grad_tensors:
            for p in self.params:
                p.grad.zero_()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        cost = self.task.cost((forward or self.model)(batch.inputs), batch)  # (B,) bits per sequence
        # objective: the batch mean of each sequence's summed cross-entropy, in nats
        (cost.mean() * NATS_PER_BIT).backward()
        return cost.detach(), _grad_norm(self.params)

    def forward_backward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the batch's loss into ``p.grad``; returns (cost (B,) bits, grad norm)."""
        return self._forward_backward(batch)

    def update(self, clip_value: float, measure: bool = False) -> torch.Tensor | None:
        """Clip element-wise (§4.6), one RMSProp step; with ``measure``, optimizer_activity (2,)."""
        clipped = _flat([p.grad for p in self.params]) if measure else None
        torch.nn.utils.clip_grad_value_(self.params, clip_value)  # element-wise, §4.6
        self.optimizer.step()
        return None if clipped is None else self._activity(clipped, clip_value)

    @torch.no_grad()
    def _activity(self, grads: torch.Tensor, clip_value: float) -> torch.Tensor:
        states = [self.optimizer.state[p] for p in self.params]
        eps = self.optimizer.param_groups[0]["eps"]
        return optimizer_activity(grads, _flat([s["square_avg"] for s in states]),
                                  _flat([s["grad_avg"] for s in states]), clip_value, eps)

    def optimizer_reloaded(self) -> None:
        """Called after ``optimizer.load_state_dict`` (a restore): nothing to redo here."""


class FastStep(PlainStep):
    """Compiled time step (NTM models) and, with ``graphs`` (default: on CUDA), both halves
    replayed as CUDA graphs."""

    compile_options = {"fullgraph": True, "dynamic": False}  # torch.compile's keywords for the compiled core

    def __init__(self, model: torch.nn.Module, task, optimizer, params: list[torch.Tensor], device: torch.device,
                 graphs: bool | None = None, core: str | None = None):
        super().__init__(model, task, optimizer, params)
        self.device = device
        self.graphs = device.type == "cuda" if graphs is None else graphs
        core = default_core(device) if core is None else core
        if core not in CORES:
            raise ValueError(f"core={core!r}: must be one of {', '.join(CORES)}")
        self.forward = None  # the model's forward on inputs (T, B, I); None: the model itself
        self.core = None     # the NTM core in use (a name in cores.CORES); None for the LSTM baseline
        if isinstance(model, NTM):
            self.forward, self.core = build_core(core, model, device, self.compile_options)
        self.threads = contextlib.nullcontext  # what each half runs in
        if self.core == "native":
            from .native import aten_on_one_thread
            self.threads = aten_on_one_thread
        self.batch_size: int | None = None  # the batch size the step was compiled/captured for
        if self.graphs:
            for p in params:  # fixed gradient tensors that every graph accumulates into
                p.grad = torch.zeros_like(p)
            optimizer.init_state()
            self.pool = torch.cuda.graph_pool_handle()
            self.captured: dict[tuple, tuple] = {}  # batch shape -> (graph, static batch, cost, norm)
            self.update_graph: torch.cuda.CUDAGraph | None = None
            self.update_clip: float | None = None

    def forward_backward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.batch_size is None
        if first:
            self.batch_size = batch.batch_size
        # the last, partial batch of a run goes plain, not worth a recompilation (the native and
        # triton cores compile nothing per shape and take it too, unless it would need a new graph)
        full = batch.batch_size == self.batch_size or (self.core is not None and not CORES[self.core].compiled
                                                        and not self.graphs)
        if self.graphs and full:
            return self._replay(batch)
        start = time.perf_counter()
        with self.threads():
            result = self._forward_backward(batch, self.forward if full else None, keep_grad_tensors=self.graphs)
        if first and self.core is not None and CORES[self.core].compiled:
            log.info("fast path: time step compiled in %.1f s", time.perf_counter() - start)
        return result

    def _replay(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(batch.inputs.shape)
        if key not in self.captured:
            self.captured[key] = self._capture(batch)
        graph, static, cost, norm = self.captured[key]
        for buffer, tensor in zip(static, batch):
            buffer.copy_(tensor, non_blocking=True)
        graph.replay()
        return cost, norm

    def _capture(self, batch: Batch):
        start = time.perf_counter()
        static = Batch(*(t.to(self.device).clone() for t in batch))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: compilation, library handles, allocator
            for _ in range(2):
                self._forward_backward(static, self.forward, keep_grad_tensors=True)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            cost, norm = self._forward_backward(static, self.forward, keep_grad_tensors=True)
        torch.cuda.synchronize()
        log.info("fast path: step for batch shape %s compiled and captured in %.1f s",
                 "x".join(map(str, batch.inputs.shape)), time.perf_counter() - start)
        return graph, static, cost, norm

    def update(self, clip_value: float, measure: bool = False) -> torch.Tensor | None:
        if not self.graphs:
            with self.threads():
                return super().update(clip_value, measure)
        clipped = _flat([p.grad for p in self.params]) if measure else None  # a copy, before the graph clips
        if self.update_graph is None or self.update_clip != clip_value:
            self.update_graph, self.update_clip = self._capture_update(clip_value), clip_value
        self.update_graph.replay()
        return None if clipped is None else self._activity(clipped, clip_value)

    def _capture_update(self, clip_value: float) -> torch.cuda.CUDAGraph:
        # Captured without a warm-up run (a run would change the weights): the optimiser's
        # state exists already (init_state) and its foreach kernels need no library handles.
        self.optimizer.init_state()
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph, pool=self.pool):
            PlainStep.update(self, clip_value)
        return graph

    def optimizer_reloaded(self) -> None:
        """``optimizer.load_state_dict`` made new state tensors: the update graph must be recaptured."""
        self.update_graph = None


def make_train_step(fast: bool, model: torch.nn.Module, task, optimizer, params: list[torch.Tensor],
                    device: torch.device, core: str | None = None) -> PlainStep:
    """FastStep (with ``core``, None: the device's default) or PlainStep."""
    if fast:
        return FastStep(model, task, optimizer, params, device, core=core)
    return PlainStep(model, task, optimizer, params)
