"""The fast path's "native" core on the CPU: the NTM over a whole sequence as one hand-written C++
call forward and one backward (``native.cpp``, beside this file), the same function as
``NTM.forward``; and its stacked form, several independent runs in one call.

The input layer, the recurrence and the output layer are one autograd Function (inputs ->
logits), whose forward and backward are one native call each. Unlike the sequence core
(sequence.py), nothing is compiled per process, no time step goes through Python, and the
backward reads the forward's saved intermediates instead of recomputing them.

Threads: the unit of work is one run's slice of SAMPLES_PER_UNIT samples, which one thread
carries from the first time step to the last, forward and backward; units go to whichever
thread is free (the core's own threads, asleep between calls), and each weight's gradient is
each unit's GEMM over its own T x slice rows, a run's units summed in order. No thread waits
for another at any time step, so a machine that is doing something else slows the core by the
share of the cores it takes, not by a parked thread at every step; and the results are the
same, bit for bit, on any number of threads and for a run in any stack of runs. Around the
core, a training step runs ATen on one thread (``aten_on_one_thread``, FastStep does).

  NativeNTM(model)            inputs (T, B, I) -> logits (T, B, O): one run (a stack of one)
  StackedNativeNTM(models)    inputs [(T_k, B, I)] -> logits [(T_k, B, O)]: K runs of one
                              structure, each with its own weights, state and data; each run's
                              gradients reach its own model's parameters

The extension is built by ``torch.utils.cpp_extension`` the first time it is needed on a
machine (half a minute to a minute and a half, with the C++ compiler that torch.compile also
needs on the CPU) and cached by torch (``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``); later processes only load it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sysconfig
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import torch

from ..models.ntm import NTM, LSTMController
from .recurrence import CoreUnavailable, flatten_state, recurrent_weights

SOURCE = Path(__file__).resolve().with_name("native.cpp")

# Samples per work unit (see the module's docstring): fixed, so that results do not depend on the
# number of threads. Measured on the 2-core machine of BENCHMARKS.md (see there).
SAMPLES_PER_UNIT = 8

_given_threads: int | None = None  # inside aten_on_one_thread(): torch's thread count on entering it


def core_threads() -> int:
    """The threads a native core uses (at most one per work unit): torch's count, or inside
    ``aten_on_one_thread()`` the count torch had on entering it."""
    return _given_threads or torch.get_num_threads()


@contextmanager
def aten_on_one_thread():
    """Runs the enclosed training step's ATen work (the input and output layers, autograd around
    the core, clipping, the optimiser) on one thread, while the native cores in it keep the
    threads torch had. Each ATen operation on more than 32k elements would otherwise be an
    OpenMP region whose threads meet at its end: dozens a step, and on a machine that is doing
    something else each can wait for a thread the OS has parked (measured on the 2-core machine
    of BENCHMARKS.md: 35 such regions a step at batch 1, and one competing process took the
    3.1 ms step to 42 ms). The core's own work units meet once a forward and once a backward.
    It also makes a step's arithmetic the same on any number of threads (MKL splits long
    reductions across its threads). torch's thread count is restored on leaving; nested uses
    keep the outer count. FastStep (steps.py) runs its native steps in it."""
    global _given_threads
    if _given_threads is not None:
        yield
        return
    threads = torch.get_num_threads()
    _given_threads = threads
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)
        _given_threads = None


_extension = None


class NativeUnavailable(CoreUnavailable):
    """The C++ core cannot be built or does not apply."""


def _cached(source: Path, name: str) -> tuple[bool, str]:
    """(whether torch's extension cache holds a build of ``source`` newer than it, the cache's folder)."""
    from torch.utils import cpp_extension

    try:
        where = cpp_extension._get_build_directory(name, verbose=False)
        built = Path(where, f"{name}.so")
        return built.is_file() and built.stat().st_mtime >= source.stat().st_mtime, where
    except Exception:  # noqa: BLE001 - torch's cache layout unknown: better said once too often
        return False, "torch's extension cache"


def native_ready() -> bool:
    """Whether the native core starts at no cost here: loaded in this process, or built and cached
    on this machine (a load takes a fraction of a second; a build 30 to 90 s)."""
    return _extension is not None or _cached(SOURCE, "ntm_native_cpu")[0]


def load_extension(source: Path = SOURCE, name: str = "ntm_native_cpu"):
    """The compiled extension (built on first use, then cached by torch); NativeUnavailable if
    it cannot be built here."""
    global _extension
    if _extension is not None and source == SOURCE:
        return _extension
    from torch.utils import cpp_extension

    scripts = sysconfig.get_path("scripts")  # the environment's own ninja (a dependency) when PATH lacks it
    if shutil.which("ninja") is None and scripts and Path(scripts, "ninja").exists():
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    cached, where = _cached(source, name)
    if not cached:  # a build, not a load, is silent for 30 to 90 s: say so before it starts
        logging.getLogger("ntm_experiments.fast").info(
            "fast path: building the native CPU core from %s, once per machine (30 to 90 s; then cached in %s)",
            source.name, where)
    start = time.perf_counter()
    try:
        extension = cpp_extension.load(name=name, sources=[str(source)],
                                       extra_cflags=["-O3", "-fopenmp", "-fno-math-errno"],
                                       extra_ldflags=["-fopenmp"])
    except Exception as error:  # a missing compiler or ninja, a failed build: say which, in one line
        raise NativeUnavailable(f"the native CPU core could not be built: {_reason(error)}") from None
    extension.build_seconds = time.perf_counter() - start
    if source == SOURCE:
        _extension = extension
    return extension


def _reason(error: Exception) -> str:
    """The line of a failed build that says what failed (the compiler's error, a missing
    program), not the build command torch's message starts with."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    telling = [line for line in lines[1:] if "error" in line.lower() or "not found" in line.lower()]
    return (telling or lines)[0][:300]


def check_supported(model: NTM, device: torch.device) -> None:
    """NativeUnavailable unless the native core can run this model here."""
    if device.type != "cpu":
        raise NativeUnavailable(f"the native core runs on the CPU only, not {device.type}")
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float64):
        raise NativeUnavailable(f"the native core runs float32 and float64, not {dtype}")


def _runs_contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t`` (K, ...) as the extension takes weights: each run's values contiguous, the runs at any
    stride (a view of the stack's parameter rows stays a view)."""
    if t[0].is_contiguous() and (t.shape[0] == 1 or t.stride(0) >= t[0].numel()):
        return t
    return t.contiguous()


class _NativeSequence(torch.autograd.Function):
    """inputs (K, T, B, I) and each run's length, the input layer's (K, G, I) weight and (K, G) bias,
    the output layer's (K, O, C + R M) weight and (K, O) bias, the initial state (controller
    tensors, reads (K, B, R, M), read and write weightings (K, B, R|W, N), memory (K, B, N, M))
    and the loop's (weight, bias) pairs (K, out, in) and (K, out) -> logits (K, T, B, O), zero past
    each run's length. Forward and backward are one native call each (native.cpp)."""

    @staticmethod
    def forward(ctx, core, n_state: int, inputs, lengths, x_weight, x_bias, out_weight, out_bias, *tensors):
        n_controller = n_state - 4
        controller = [t.contiguous() for t in tensors[:n_controller]]
        reads, read_weights, write_weights, memory = tensors[n_controller:n_state]
        flat_linears = tensors[n_state:]
        weights = [_runs_contiguous(w) for w in flat_linears[0::2]]
        biases = [_runs_contiguous(b) for b in flat_linears[3::2]]
        out_weight = _runs_contiguous(out_weight)
        result = core.run_forward(inputs, lengths, _runs_contiguous(x_weight), _runs_contiguous(x_bias), controller,
                                  reads.flatten(-2).contiguous(),
                                  torch.cat([read_weights, write_weights], dim=-2).contiguous(), memory.contiguous(),
                                  weights, biases, out_weight, _runs_contiguous(out_bias))
        ctx.core, ctx.saved, ctx.inputs, ctx.weights, ctx.out_weight = core, result[1:], inputs, weights, out_weight
        ctx.n_controller = n_controller
        return result[0]

    @staticmethod
    def backward(ctx, d_logits):
        core, model = ctx.core, ctx.core.model
        grads = core.run_backward(ctx.saved, ctx.inputs, d_logits.contiguous(), ctx.weights, ctx.out_weight)
        ctx.saved = ctx.inputs = ctx.weights = ctx.out_weight = None
        n = ctx.n_controller
        d_controller = grads[:n]
        d_reads0, d_weights0, d_memory0 = grads[n:n + 3]
        d_linears = [grads[n + 3], None, *grads[n + 4:-4]]  # layer 0 has no bias here
        d_x_weight, d_x_bias, d_out_weight, d_out_bias = grads[-4:]
        return (None, None, None, None, d_x_weight, d_x_bias, d_out_weight, d_out_bias, *d_controller,
                d_reads0.unflatten(-1, (model.R, model.M)), d_weights0[..., :model.R, :], d_weights0[..., model.R:, :],
                d_memory0, *d_linears)


class _NativeCall:
    """What both native cores share: the extension's two calls with the model's sizes."""

    samples_per_unit = SAMPLES_PER_UNIT
    threads: int | None = None  # the most threads the core uses; None: core_threads()

    def run_forward(self, *args):
        model = self.model
        return self.extension.forward(*args, model.R, model.W, model.K, self.lstm, self.samples_per_unit,
                                      self.threads or core_threads())

    def run_backward(self, saved, inputs, d_logits, weights, out_weight):
        model = self.model
        return self.extension.backward(saved, inputs, d_logits, weights, out_weight, model.R, model.W, model.K,
                                       self.lstm, self.threads or core_threads())


class NativeNTM(_NativeCall):
    """``NativeNTM(model)(inputs)`` = ``model(inputs)``: inputs (T, B, I) -> logits (T, B, O), the
    input layer, the recurrence and the output layer in one native call (a stack of one)."""

    def __init__(self, model: NTM):
        check_supported(model, next(model.parameters()).device)
        self.model = model
        self.lstm = isinstance(model.controller, LSTMController)
        self.extension = load_extension()

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        model = self.model
        x_weight, x_bias, linears = recurrent_weights(model, inputs.shape[2])
        flat_state = flatten_state(model.initial_state(inputs.shape[1]))
        flat_linears = [None if t is None else t[None] for pair in linears for t in pair]
        logits = _NativeSequence.apply(self, len(flat_state), inputs[None].contiguous(), torch.tensor([inputs.shape[0]]),
                                       x_weight[None], x_bias[None], model.output.weight[None],
                                       model.output.bias[None], *[t[None] for t in flat_state], *flat_linears)
        return logits[0]


def _structure(model: NTM) -> tuple:
    """What runs stacked in one native call must share: every parameter's and buffer's shape, the
    dtype, the device, the heads and the controller's kind."""
    return (type(model.controller), model.R, model.W, model.K, model.N, model.M,
            [(name, tuple(t.shape), t.dtype, t.device)
             for name, t in [*model.named_parameters(), *model.named_buffers()]])


# A stacked leaf's gradient is a view of the (K, P) gradient rows, by design: autograd says once that
# its strides are not a fresh tensor's (a performance hint for optimisers, which read flat.grads here).
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


def _stacked_parameters(models: list[NTM], flat) -> dict[str, torch.Tensor]:
    """Every trained parameter of the K runs as one (K, ...) leaf: a view of ``flat.values`` rows
    whose gradient is the matching view of ``flat.grads`` rows, into which autograd accumulates
    in place (where each model's own parameters' gradients also live)."""
    names = {id(p): name for name, p in models[0].named_parameters()}
    stacked = {}
    for index, (offset, size, shape) in enumerate(flat.offsets):
        name = names[id(flat.param_lists[0][index])]
        leaf = flat.values[:, offset:offset + size].view(len(models), *shape).detach().requires_grad_()
        leaf.grad = flat.grads[:, offset:offset + size].view(len(models), *shape)
        stacked[name] = leaf
    return stacked


class StackedNativeNTM(_NativeCall):
    """K independent runs in one native call. ``StackedNativeNTM(models)(inputs)`` =
    ``[model(x) for model, x in zip(models, inputs)]``: inputs [(T_k, B, I)] -> logits
    [(T_k, B, O)], every run with the same B and I and its own sequence length T_k; autograd gives
    each run's gradients to its own model's parameters. The models must share one structure
    (sizes, heads, controller, dtype; their values are their own).

    The whole model (input layer, recurrence, output layer) is one autograd Function over the
    stacked tensors (the runs' inputs padded to the longest T, each weight stacked (K, out, in)),
    whose work units span (run, slice of samples) and stop at their run's own length. A run's
    results are bitwise those of the same run in a stack of one (and so of ``NativeNTM``)."""

    def __init__(self, models: list[NTM], flat=None):
        """``flat``: the models' parameters as rows of one buffer (stacked.FlatParameters, whose
        rows every model's parameters are views of); with it, a call of all the runs reads each
        weight of every run as one (K, ...) view of those rows instead of stacking the models'
        tensors at every call (a subset of the runs still stacks them)."""
        self.models = list(models)
        if not self.models:
            raise ValueError("StackedNativeNTM needs at least one model")
        for model in self.models:
            check_supported(model, next(model.parameters()).device)
        first = _structure(self.models[0])
        for index, model in enumerate(self.models[1:], start=1):
            if _structure(model) != first:
                raise ValueError(f"StackedNativeNTM: model {index} differs in structure from model 0 "
                                 "(every stacked run needs the same sizes, heads, controller and dtype)")
        self.model = self.models[0]  # the shared structure (R, M: the recurrence's backward reads them)
        self.lstm = isinstance(self.model.controller, LSTMController)
        self.extension = load_extension()
        self.stacked = None if flat is None else _stacked_parameters(self.models, flat)
        if self.stacked is not None and "memory0" not in self.stacked:  # memory_init=constant: a buffer
            self.memory0 = torch.stack([model.memory0 for model in self.models])

    def __call__(self, inputs: Sequence[torch.Tensor], runs: Sequence[int] | None = None) -> list[torch.Tensor]:
        """``runs``: which of the models the inputs are for (default: all, in order), so a stack
        built and checked once can run any subset of its runs."""
        models = self.models if runs is None else [self.models[k] for k in runs]
        if len(inputs) != len(models) or any(x.dim() != 3 or x.shape[1:] != inputs[0].shape[1:] for x in inputs):
            raise ValueError(f"inputs must be {len(models)} tensors (T_k, B, I) of one B and I, not "
                             f"{[tuple(x.shape) for x in inputs]}")
        batch_size, input_size = inputs[0].shape[1], inputs[0].shape[2]
        lengths = [x.shape[0] for x in inputs]
        longest = max(lengths)
        if self.stacked is not None and (runs is None or list(runs) == list(range(len(self.models)))):
            x_weight, x_bias, out_weight, out_bias, flat_linears = self._stacked_weights(input_size)
            flat_state = self._stacked_state(batch_size)
        else:
            x_weight, x_bias, out_weight, out_bias, flat_linears, flat_state = self._weights_of(models, input_size,
                                                                                                batch_size)
        padded = torch.nn.utils.rnn.pad_sequence(list(inputs), batch_first=True)  # (K, T, B, I), zeros past T_k
        logits = _NativeSequence.apply(self, len(flat_state), padded, torch.tensor(lengths), x_weight, x_bias, out_weight,
                                       out_bias, *flat_state, *flat_linears)
        return [run[:t] for run, t in zip(logits.unbind(0), lengths)]

    @staticmethod
    def _weights_of(models, input_size: int, batch_size: int):
        """The input layer's (K, G, I) weight and (K, G) bias, the output layer's weight and bias,
        the loop's (K, out, in) weights and (K, out) biases and the initial state (each (K, B,
        ...)), stacked from the models' own tensors."""
        x_weights, x_biases, states, linears = [], [], [], []
        for model in models:
            x_weight, x_bias, pairs = recurrent_weights(model, input_size)
            x_weights.append(x_weight)
            x_biases.append(x_bias)
            states.append(flatten_state(model.initial_state(batch_size)))
            linears.append(pairs)
        flat_state = [torch.stack(column) for column in zip(*states)]
        flat_linears = []
        for layer in zip(*linears):  # one layer, every run: (K, out, in) and (K, out) or None
            flat_linears.append(torch.stack([weight for weight, _ in layer]))
            flat_linears.append(None if layer[0][1] is None else torch.stack([bias for _, bias in layer]))
        return (torch.stack(x_weights), torch.stack(x_biases), torch.stack([m.output.weight for m in models]),
                torch.stack([m.output.bias for m in models]), flat_linears, flat_state)

    def _stacked_weights(self, input_size: int):
        """_weights_of's weights for every run at once, from the (K, ...) views of the parameter
        rows: the input layer's, the output layer's, then the loop's [weight, bias or None, ...]."""
        p = self.stacked
        if self.lstm:
            layers = len(self.model.controller.cells)
            w_ih, w_hh = p["controller.cells.0.weight_ih"], p["controller.cells.0.weight_hh"]
            x_weight = w_ih[:, :, :input_size]
            x_bias = p["controller.cells.0.bias_ih"] + p["controller.cells.0.bias_hh"]
            linears = [torch.cat([w_ih[:, :, input_size:], w_hh], dim=2), None]
            for l in range(1, layers):
                cell = f"controller.cells.{l}."
                linears += [torch.cat([p[cell + "weight_ih"], p[cell + "weight_hh"]], dim=2),
                            p[cell + "bias_ih"] + p[cell + "bias_hh"]]
        else:
            layers = len(self.model.controller.layers)
            w0 = p["controller.layers.0.weight"]
            x_weight, x_bias = w0[:, :, :input_size], p["controller.layers.0.bias"]
            linears = [w0[:, :, input_size:].contiguous(), None]
            for l in range(1, layers):
                linears += [p[f"controller.layers.{l}.weight"], p[f"controller.layers.{l}.bias"]]
        linears += [p["heads.weight"], p["heads.bias"]]
        return x_weight, x_bias, p["output.weight"], p["output.bias"], linears

    def _stacked_state(self, batch_size: int) -> list[torch.Tensor]:
        """NTM.initial_state for every run at once: [controller (K, B, C)..., reads (K, B, R, M),
        read and write weightings (K, B, R|W, N), memory (K, B, N, M)]."""
        p, model = self.stacked, self.model
        K = len(self.models)
        controller = []
        if self.lstm:
            for l in range(len(model.controller.cells)):
                controller += [p["controller.h0"][:, l, None].expand(K, batch_size, -1),
                               p["controller.c0"][:, l, None].expand(K, batch_size, -1)]
        weights = torch.softmax(p["weight_logits0"], dim=-1)  # (K, H, N)
        memory = p["memory0"] if "memory0" in p else self.memory0
        return [*controller, p["read0"][:, None].expand(K, batch_size, -1, -1),
                weights[:, None, :model.R].expand(K, batch_size, -1, -1),
                weights[:, None, model.R:].expand(K, batch_size, -1, -1), memory[:, None].expand(K, batch_size, -1, -1)]
