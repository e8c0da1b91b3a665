"""The fast path's native core on the CPU: the NTM over a whole sequence as one hand-written C++
call forward and one backward (``ntm_experiments/csrc/ntm_cpu.cpp``), the same function as
``NTM.forward``.

Like the sequence core (ntm_sequence.py), the input layer and the output layer are one GEMM
each over all T B rows, outside the loop, and each weight's gradient is one GEMM after the
reverse loop. Unlike it, nothing is compiled per process, no time step goes through Python,
and the backward reads the forward's saved intermediates instead of recomputing them.

The extension is built by ``torch.utils.cpp_extension`` the first time it is needed on a
machine (about half a minute, with the C++ compiler that torch.compile also needs on the CPU)
and cached by torch (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``);
later processes only load it.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .ntm import NTM, LSTMController
from .ntm_sequence import recurrent_weights

SOURCE = Path(__file__).resolve().parents[1] / "csrc" / "ntm_cpu.cpp"

_extension = None


class NativeUnavailable(RuntimeError):
    """The C++ core cannot be built or does not apply; the message is one line saying why."""


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
    start = time.perf_counter()
    try:
        extension = cpp_extension.load(name=name, sources=[str(source)], extra_cflags=["-O3", "-fopenmp"],
                                       extra_ldflags=["-fopenmp"])
    except Exception as error:  # a missing compiler or ninja, a failed build: say which, in one line
        lines = [line for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        raise NativeUnavailable(f"the native CPU core could not be built: {lines[0][:300]}") from None
    extension.build_seconds = time.perf_counter() - start
    if source == SOURCE:
        _extension = extension
    return extension


def check_supported(model: NTM, device: torch.device) -> None:
    """NativeUnavailable unless the native core can run this model here."""
    if device.type != "cpu":
        raise NativeUnavailable(f"the native core runs on the CPU only, not {device.type}")
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float64):
        raise NativeUnavailable(f"the native core runs float32 and float64, not {dtype}")


class NativeNTM:
    """``NativeNTM(model)(inputs)`` = ``model(inputs)``: inputs (T, B, I) -> logits (T, B, O)."""

    def __init__(self, model: NTM):
        check_supported(model, next(model.parameters()).device)
        self.model = model
        self.extension = load_extension()
        self.lstm = isinstance(model.controller, LSTMController)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        model = self.model
        x_weight, x_bias, linears = recurrent_weights(model, inputs.shape[2])
        x_projection = F.linear(inputs, x_weight, x_bias)  # (T, B, G): one GEMM for every time step
        state = model.initial_state(inputs.shape[1])
        flat_linears = [t for pair in linears for t in pair]
        hidden, reads = _NativeRecurrence.apply(self, x_projection, *state.controller, state.reads,
                                                state.read_weights, state.write_weights, state.memory, *flat_linears)
        return model.output(torch.cat([hidden, reads], dim=-1))  # (T, B, C + R M) -> (T, B, O), one GEMM


class _NativeRecurrence(torch.autograd.Function):
    """x_projection (T, B, G), the initial state (controller tensors, reads (B, R, M), read and
    write weightings (B, R|W, N), memory (B, N, M)) and the loop's (weight, bias) pairs ->
    hidden (T, B, C), read vectors (T, B, R M)."""

    @staticmethod
    def forward(ctx, core: NativeNTM, x_projection, *tensors):
        model = core.model
        n_controller = 2 * len(model.controller.cells) if core.lstm else 0
        controller = [t.contiguous() for t in tensors[:n_controller]]
        reads, read_weights, write_weights, memory = tensors[n_controller:n_controller + 4]
        flat_linears = tensors[n_controller + 4:]
        weights = [w.contiguous() for w in flat_linears[0::2]]
        biases = [b.contiguous() for b in flat_linears[3::2]]  # every layer's but the first (x_projection holds it)
        B = x_projection.shape[1]
        saved = core.extension.forward(
            x_projection.contiguous(), controller, reads.reshape(B, -1).contiguous(),
            torch.cat([read_weights, write_weights], dim=1).contiguous(), memory.contiguous(),
            weights, biases, model.R, model.W, model.K, core.lstm)
        ctx.core, ctx.saved, ctx.weights, ctx.n_controller = core, saved, weights, n_controller
        return saved[0], saved[1]

    @staticmethod
    def backward(ctx, d_hidden, d_reads):
        core, model = ctx.core, ctx.core.model
        grads = core.extension.backward(ctx.saved, d_hidden.contiguous(), d_reads.contiguous(), ctx.weights,
                                        model.R, model.W, model.K, core.lstm)
        ctx.saved = ctx.weights = None
        n = ctx.n_controller
        d_x_projection, d_controller = grads[0], grads[1:1 + n]
        d_reads0, d_weights0, d_memory0 = grads[1 + n:4 + n]
        B = d_reads0.shape[0]
        d_linears = [grads[4 + n], None, *grads[5 + n:]]  # layer 0 has no bias here
        return (None, d_x_projection, *d_controller, d_reads0.view(B, model.R, model.M),
                d_weights0[:, :model.R], d_weights0[:, model.R:], d_memory0, *d_linears)
