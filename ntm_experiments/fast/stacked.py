"""Stacked runs: K independent runs of one model shape trained as one computation.

Every run keeps its own model (its weights drawn from its own seed, as a run alone draws them),
its own data, optimiser settings, clip value and optimiser state. What is shared is the storage
and the arithmetic:
  - ``FlatParameters``: the K runs' trainable parameters (and their gradients) as the rows of
    one (K, P) buffer each; every model's parameters become views of its row, so the models,
    their forward and backward and their checkpoints are the same objects as in a run alone;
  - ``StackedGravesRMSprop``: Graves's RMSProp (optim.py, eqs. 38-41 of Graves 2013) over the
    (K, P) rows, each run's settings a (K, 1) column, in GravesRMSprop's order of operations;
    a run whose step is not finite is left untouched, its optimiser state too;
  - ``StackedStep``: the training step of all runs: forward and backward (each run through its
    own model or core), per-run gradient norms and finiteness, per-run element-wise clipping,
    one optimiser step for the whole stack.
A run's arithmetic never reads another run's values, so a run in a stack of K is bitwise the same
run in a stack of one; against the run trained alone (optim.GravesRMSprop, foreach over the
parameters) it agrees to float32 rounding.

Each row is padded to a multiple of ``ROW_ALIGN`` floats, so every run's elements sit at the same
place in the vectorised loops whatever K is (no run ever falls into a loop's scalar tail).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from ..models.ntm import NTM
from ..tasks.base import Batch
from .cores import build_core, default_core
from .steps import NATS_PER_BIT, FastStep, optimizer_activity

ROW_ALIGN = 64  # floats: a row's length is a multiple of every vector loop's block on the CPU


class FlatParameters:
    """K runs' trainable parameters as views of the rows of ``values`` (K, P), their gradients
    as views of the rows of ``grads`` (K, P)."""

    def __init__(self, param_lists: Sequence[Sequence[torch.nn.Parameter]]):
        first = param_lists[0]
        shapes = [tuple(p.shape) for p in first]
        for k, params in enumerate(param_lists):
            if [tuple(p.shape) for p in params] != shapes:
                raise ValueError(f"run {k} of the stack has other parameter shapes than run 0: "
                                 "only runs of the same task, model and sizes can be stacked")
        size = sum(p.numel() for p in first)
        self.K, self.P = len(param_lists), -(-size // ROW_ALIGN) * ROW_ALIGN
        self.values = first[0].new_zeros(self.K, self.P)
        self.grads = torch.zeros_like(self.values)
        self.size = size  # a row's parameters; the rest of a row (to P) is padding
        self.offsets = []  # (offset, size, shape) of each parameter in a row, the same in every row
        offset = 0
        for p in first:
            self.offsets.append((offset, p.numel(), tuple(p.shape)))
            offset += p.numel()
        with torch.no_grad():
            for k, params in enumerate(param_lists):
                for p, (offset, n, shape) in zip(params, self.offsets):
                    self.values[k, offset:offset + n].copy_(p.reshape(-1))
                    p.data = self.values[k, offset:offset + n].view(shape)
                    p.grad = self.grads[k, offset:offset + n].view(shape)  # backward accumulates in place
        self.param_lists = [list(params) for params in param_lists]


class StackedGravesRMSprop:
    """RMSProp in Graves's centred form with momentum, each run with its own settings:
        n = d n + (1-d) g^2;  m = d m + (1-d) g;  D = mom D - lr g / sqrt(n - m^2 + eps);  w += D
    state n, m, D: (K, P); settings: (K, 1) columns (lr, decay, momentum, eps as given per run;
    1 - decay and -lr computed in double, as GravesRMSprop's Python scalars are)."""

    KEYS = ("square_avg", "grad_avg", "delta")  # GravesRMSprop's state names for n, m, D

    def __init__(self, flat: FlatParameters, settings: Sequence[dict]):
        self.flat = flat
        self.state = {key: torch.zeros_like(flat.values) for key in self.KEYS}
        self.settings = [dict(s) for s in settings]
        self._columns()

    def _columns(self) -> None:
        def column(values):
            return torch.tensor(values, dtype=self.flat.values.dtype, device=self.flat.values.device)[:, None]

        s = self.settings
        self.decay = column([x["decay"] for x in s])
        self.one_minus_decay = column([1 - x["decay"] for x in s])
        self.momentum = column([x["momentum"] for x in s])
        self.eps = column([x["eps"] for x in s])
        self.minus_lr = column([-x["lr"] for x in s])
        # the same per run as one (K, 5) matrix, for the native core's update (native.cpp's rmsprop)
        self.matrix = torch.cat([self.decay, self.one_minus_decay, self.momentum, self.eps, self.minus_lr], dim=1)

    def set_settings(self, k: int, **values) -> None:
        self.settings[k].update(values)
        self._columns()

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One update of the runs where ``active`` (K,) bool is set; the others keep their weights
        and state exactly."""
        keep = None if bool(active.all()) else (~active).nonzero().flatten()
        if keep is not None:
            saved = {key: t[keep].clone() for key, t in (*self.state.items(), ("values", self.flat.values))}
        g, n, m, delta = self.flat.grads, self.state["square_avg"], self.state["grad_avg"], self.state["delta"]
        n.mul_(self.decay)
        n.addcmul_(self.one_minus_decay * g, g)      # n + ((1-d) g) g: addcmul's (value g) g
        m.mul_(self.decay)
        m.add_(self.one_minus_decay * g)             # m + (1-d) g
        denom = n.addcmul(m, m, value=-1)            # n - m^2
        denom.add_(self.eps)
        denom.sqrt_()
        delta.mul_(self.momentum)
        delta.addcdiv_(self.minus_lr * g, denom)     # D + (-lr g) / sqrt(...): addcdiv's (value g) / d
        self.flat.values.add_(delta)
        if keep is not None:
            for key, t in (*self.state.items(), ("values", self.flat.values)):
                t[keep] = saved[key]

    @torch.no_grad()
    def clip_and_step_native(self, extension, active: torch.Tensor, clip: torch.Tensor, threads: int) -> torch.Tensor:
        """Clipping and ``step`` in one pass of the native extension (native.cpp's rmsprop), a run
        per work unit on ``threads`` threads, in the same order of operations; returns each run's
        optimizer_activity (K, 2)."""
        s, flat = self.state, self.flat
        return extension.rmsprop(flat.values, flat.grads, s["square_avg"], s["grad_avg"], s["delta"], self.matrix,
                                 clip.to(flat.values).contiguous(), active.to(torch.bool).contiguous(), flat.size,
                                 threads)


class RunOptimizer:
    """One run's row of a StackedGravesRMSprop, with GravesRMSprop's ``state_dict`` format, so
    a stacked run's checkpoint is a run's checkpoint (a run alone can resume it, and back)."""

    def __init__(self, stacked: StackedGravesRMSprop, k: int, model: torch.nn.Module):
        self.stacked, self.k = stacked, k
        all_params = list(model.parameters())
        trained = {id(p) for p in stacked.flat.param_lists[k]}
        self.indices = [i for i, p in enumerate(all_params) if id(p) in trained]  # GravesRMSprop's numbering
        self.n_params = len(all_params)
        self.offsets = stacked.flat.offsets

    @property
    def param_groups(self) -> list[dict]:
        return [self.stacked.settings[self.k]]

    def state_dict(self) -> dict:
        state = {}
        for index, (offset, n, shape) in zip(self.indices, self.offsets):
            state[index] = {key: self.stacked.state[key][self.k, offset:offset + n].view(shape).clone()
                            for key in StackedGravesRMSprop.KEYS}
        return {"state": state, "param_groups": [{**self.stacked.settings[self.k], "params": list(range(self.n_params))}]}

    @torch.no_grad()
    def load_state_dict(self, saved: dict) -> None:
        for index, (offset, n, shape) in zip(self.indices, self.offsets):
            entry = saved["state"].get(index) or saved["state"].get(str(index))
            for key in StackedGravesRMSprop.KEYS:
                row = self.stacked.state[key][self.k, offset:offset + n]
                row.copy_(entry[key].reshape(-1)) if entry else row.zero_()
        group = saved["param_groups"][0]
        self.stacked.set_settings(self.k, **{key: group[key] for key in ("lr", "decay", "momentum", "eps")})


def run_memory_bytes(task, model: torch.nn.Module, batch_size: int) -> int:
    """An estimate of the memory one run takes in a stack, in bytes: its parameters four times over
    (values, gradients, RMSProp's n, m and D: the model's own tensors are views of them) plus the
    values a step keeps per sample and time step for the backward, for its longest batch
    (``task.max_steps()``), doubled for the backward's own buffers. The NTM counts the native
    core's saved intermediates (native.cpp: heads' outputs, memory, weightings, addressing work,
    row norms, every controller layer's inputs and activations, the input projection, the logits,
    h and reads); the LSTM baseline nn.LSTM's (about six values a cell a layer)."""
    floats = 5 * sum(p.numel() for p in model.parameters())
    if isinstance(model, NTM):
        H, N, M, R = model.R + model.W, model.N, model.M, model.R
        C = model.controller.output_size if hasattr(model.controller, "output_size") else model.heads.in_features
        lstm = hasattr(model.controller, "cells")
        layers = len(model.controller.cells) if lstm else len(model.controller.layers)
        G = 4 * C if lstm else C
        per_step = model.heads.out_features + N * M + H * N + H * (4 * N + model.K + 4) + N
        for layer in range(layers):
            width = (R * M if layer == 0 else C) + (C if lstm else 0)
            per_step += width + G + (2 * C if lstm else 0)
        per_step += G + model.output.out_features + C + R * M
    else:
        per_step = 6 * sum(p.shape[0] // 4 for name, p in model.named_parameters() if "weight_hh" in name)
    return 4 * (floats + 2 * per_step * (task.max_steps() + 1) * batch_size)


def stacked_forward(fast: bool, model: torch.nn.Module, device: torch.device, core: str | None):
    """A run's forward in a stack: with the fast path, an NTM's core (cores.py; None: the device's
    default); otherwise (or for the LSTM baseline, already fused) None, the model itself."""
    if not fast or not isinstance(model, NTM):
        return None
    return build_core(core or default_core(device), model, device, FastStep.compile_options)[0]


def adopt_optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(settings, state_dict) of a run's own GravesRMSprop, to carry into a stack."""
    group = opt.param_groups[0]
    return {key: group[key] for key in ("lr", "decay", "momentum", "eps")}, opt.state_dict()


class StackedStep:
    """The training step of K runs (``models``, ``tasks``: one per run) as one computation, in two
    halves like PlainStep: ``forward_backward(batches)`` -> ([cost (B_k,) bits] per run, gradient
    norms (K,)), then ``update(active, clip_values)``. ``forwards`` (one per run; None: the model
    itself) is each run's core. A run with no batch (finished or failed) is skipped."""

    def __init__(self, models: Sequence[torch.nn.Module], tasks: Sequence, optimizers: Sequence[torch.optim.Optimizer],
                 params: Sequence[Sequence[torch.nn.Parameter]], forwards: Sequence | None = None):
        self.models, self.tasks = list(models), list(tasks)
        settings, saved = zip(*(adopt_optimizer_state(opt) for opt in optimizers))
        self.flat = FlatParameters(params)
        self.optimizer = StackedGravesRMSprop(self.flat, settings)
        self.run_optimizers = [RunOptimizer(self.optimizer, k, model) for k, model in enumerate(self.models)]
        for view, state in zip(self.run_optimizers, saved):
            if state["state"]:  # a resumed run brings its optimiser state
                view.load_state_dict(state)
        self.forwards = list(forwards) if forwards is not None else [None] * len(self.models)
        self.stacked_core, self.threads = None, contextlib.nullcontext  # the native core's stacked form
        from .native import NativeNTM  # loads no extension: NativeNTM(...) in stacked_forward did

        if self.forwards and all(isinstance(f, NativeNTM) for f in self.forwards):
            from .native import StackedNativeNTM, aten_on_one_thread

            # built and checked once; each step runs the subsets whose batches share a shape
            self.stacked_core, self.threads = StackedNativeNTM(self.models, self.flat), aten_on_one_thread

    def forward_backward(self, batches: Sequence[Batch | None]) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        with self.threads():
            self.flat.grads.zero_()
            costs: list[torch.Tensor | None] = [None] * len(batches)
            for group in self._groups(batches):
                if len(group) > 1:  # runs of one core and one batch size: one call of the stacked core
                    logits = self.stacked_core([batches[k].inputs for k in group], group)  # [(T_k, B, O)]
                else:
                    (k,) = group
                    logits = (self.forwards[k] or self.models[k])(batches[k].inputs)[None]
                loss = 0.0
                for k, run_logits in zip(group, logits):
                    cost = self.tasks[k].cost(run_logits, batches[k])  # (B,) bits per sequence
                    costs[k] = cost.detach()
                    loss = loss + cost.mean() * NATS_PER_BIT  # each run's batch mean of summed cross-entropy, nats
                loss.backward()  # runs share no parameter: each run's gradient is its own term's
            return costs, torch.linalg.vector_norm(self.flat.grads, dim=1)  # (K,): each run's gradient norm

    def _groups(self, batches: Sequence[Batch | None]) -> list[list[int]]:
        """The runs with a batch, grouped for one call each: runs on the native core whose batches
        have one batch size and width go together, each at its own sequence length (each run's
        arithmetic is the same in any group: native.py); every other run alone."""
        groups: dict[tuple, list[int]] = {}
        for k, batch in enumerate(batches):
            if batch is None:
                continue
            key = (tuple(batch.inputs.shape[1:]),) if self.stacked_core is not None else (k,)
            groups.setdefault(key, []).append(k)
        return list(groups.values())

    @torch.no_grad()
    def update(self, active: torch.Tensor, clip_values: torch.Tensor, measure: bool = False) -> torch.Tensor | None:
        """Clip each run's gradient element-wise to (-clip_k, clip_k) (§4.6), then one RMSProp step
        of the runs where ``active`` (K,) is set; with ``measure``, each run's optimizer_activity
        (K, 2) (steps.py)."""
        if self.stacked_core is not None:  # the native core's stack: clip and update in one pass, a run a thread
            from .native import core_threads

            with self.threads():
                activity = self.optimizer.clip_and_step_native(self.stacked_core.extension, active, clip_values,
                                                               self.stacked_core.threads or core_threads())
            return activity if measure else None
        with self.threads():
            clip = clip_values.to(self.flat.grads)[:, None]
            size = self.flat.size
            clipped = self.flat.grads[:, :size].clone() if measure else None
            self.flat.grads.clamp_(min=-clip, max=clip)
            self.optimizer.step(active.to(self.flat.grads.device))
            if clipped is None:
                return None
            state = self.optimizer.state
            return optimizer_activity(clipped, state["square_avg"][:, :size], state["grad_avg"][:, :size], clip,
                                      self.optimizer.eps)
