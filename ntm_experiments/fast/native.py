"""The fast path's "native" core on the CPU: the NTM over a whole sequence as one hand-written C++
call forward and one backward (``native.cpp``, beside this file), the same function as
``NTM.forward``; and its stacked form, several independent runs in one call.

Like the sequence core (sequence.py), the input layer and the output layer are one GEMM
each over all T B rows, outside the loop. Unlike it, nothing is compiled per process, no time
step goes through Python, and the backward reads the forward's saved intermediates instead of
recomputing them.

Threads: the unit of work is one run's slice of SAMPLES_PER_UNIT samples, which one thread
carries from the first time step to the last, forward and backward; units go to whichever
thread is free (the core's own threads, asleep between calls), and each weight's gradient is
each unit's GEMM over its own T x slice rows, a run's units summed in order. No thread waits
for another at any time step, so a machine that is doing something else slows the core by the
share of the cores it takes, not by a parked thread at every step; and the results are the
same, bit for bit, on any number of threads and for a run in any stack of runs. Around the
core, a training step runs ATen on one thread (``aten_on_one_thread``, FastStep does).

  NativeNTM(model)            inputs (T, B, I) -> logits (T, B, O): one run (a stack of one)
  StackedNativeNTM(models)    inputs (K, T, B, I) -> logits (K, T, B, O): K runs of one
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
import torch.nn.functional as F

from ..models.ntm import NTM, LSTMController
from .handwritten import HandwrittenCore, _HandwrittenRecurrence
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
    try:  # a build, not a load, is silent for 30 to 90 s: say so before it starts
        where = cpp_extension._get_build_directory(name, verbose=False)
        built = Path(where, f"{name}.so")
        cached = built.is_file() and built.stat().st_mtime >= source.stat().st_mtime
    except Exception:  # noqa: BLE001 - torch's cache layout unknown: better said once too often
        cached, where = False, "torch's extension cache"
    if not cached:
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


class NativeNTM(HandwrittenCore):
    """``NativeNTM(model)(inputs)`` = ``model(inputs)``: inputs (T, B, I) -> logits (T, B, O)."""

    samples_per_unit = SAMPLES_PER_UNIT
    threads: int | None = None  # the most threads the core uses; None: core_threads()

    def __init__(self, model: NTM):
        check_supported(model, next(model.parameters()).device)
        super().__init__(model)
        self.extension = load_extension()

    def run_forward(self, x_projection, controller, reads0, weights0, memory0, weights, biases):
        """The stacked call with a stack of one: every tensor gets a leading runs dimension of 1."""
        model = self.model
        saved = self.extension.forward(x_projection[None], torch.tensor([x_projection.shape[0]]),
                                       [t[None] for t in controller], reads0[None],
                                       weights0[None], memory0[None], [w[None] for w in weights],
                                       [b[None] for b in biases], model.R, model.W, model.K, self.lstm,
                                       self.samples_per_unit, self.threads or core_threads())
        return [saved[0][0], saved[1][0], *saved[2:]]

    def run_backward(self, saved, d_hidden, d_reads, weights):
        model = self.model
        grads = self.extension.backward([saved[0][None], saved[1][None], *saved[2:]], d_hidden[None], d_reads[None],
                                        [w[None] for w in weights], model.R, model.W, model.K, self.lstm,
                                        self.threads or core_threads())
        return [g[0] for g in grads]


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


class StackedNativeNTM:
    """K independent runs in one native call. ``StackedNativeNTM(models)(inputs)`` =
    ``[model(x) for model, x in zip(models, inputs)]``: inputs [(T_k, B, I)] -> logits
    [(T_k, B, O)], every run with the same B and I and its own sequence length T_k; autograd gives
    each run's gradients to its own model's parameters. The models must share one structure
    (sizes, heads, controller, dtype; their values are their own).

    Per run, the input layer and the output layer are that model's own ``F.linear`` over its
    T_k B rows; the recurrence is one autograd Function over the stacked tensors (the runs' input
    projections padded to the longest T, the models' loop weights stacked (K, out, in)), whose
    work units span (run, slice of samples) and stop at their run's own length. A run's results
    are bitwise those of the same run in a stack of one (and so of ``NativeNTM``)."""

    recurrence = _HandwrittenRecurrence
    samples_per_unit = SAMPLES_PER_UNIT
    threads: int | None = None  # the most threads the core uses; None: core_threads()

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
            x_weights, x_biases, flat_linears = self._stacked_weights(input_size)
            flat_state = self._stacked_state(batch_size)
        else:
            x_weights, x_biases, flat_linears, flat_state = self._weights_of(models, input_size, batch_size)
        x_projections = []
        for x, x_weight, x_bias in zip(inputs, x_weights, x_biases):
            projection = F.linear(x, x_weight, x_bias)  # (T_k, B, G): one GEMM per run, padded to the longest
            x_projections.append(F.pad(projection, (0, 0, 0, 0, 0, longest - x.shape[0])))
        self.lengths = torch.tensor(lengths)  # for run_forward, inside the Function's forward
        hidden, reads = self.recurrence.apply(self, len(flat_state), torch.stack(x_projections), *flat_state,
                                              *flat_linears)
        return [model.output(torch.cat([h[:t], r[:t]], dim=-1)) for model, h, r, t in zip(models, hidden, reads, lengths)]

    @staticmethod
    def _weights_of(models, input_size: int, batch_size: int):
        """Each model's x weight and bias, the loop's (K, out, in) weights and (K, out) biases and the
        initial state (each (K, B, ...)), stacked from the models' own tensors."""
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
        return x_weights, x_biases, flat_linears, flat_state

    def _stacked_weights(self, input_size: int):
        """recurrent_weights for every run at once, from the (K, ...) views of the parameter rows:
        per run the x weight and bias, then the loop's [weight, bias or None, ...]."""
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
        return list(x_weight.unbind(0)), list(x_bias.unbind(0)), linears

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

    def run_forward(self, x_projection, controller, reads0, weights0, memory0, weights, biases):
        model = self.model
        return self.extension.forward(x_projection, self.lengths, controller, reads0, weights0, memory0, weights, biases,
                                      model.R, model.W, model.K, self.lstm, self.samples_per_unit,
                                      self.threads or core_threads())

    def run_backward(self, saved, d_hidden, d_reads, weights):
        model = self.model
        return self.extension.backward(saved, d_hidden, d_reads, weights, model.R, model.W, model.K, self.lstm,
                                       self.threads or core_threads())
