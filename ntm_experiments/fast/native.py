"""The fast path's "native" core on the CPU: the NTM over a whole sequence as one hand-written C++
call forward and one backward (``native.cpp``, beside this file), the same function as
``NTM.forward``.

Like the sequence core (sequence.py), the input layer and the output layer are one GEMM
each over all T B rows, outside the loop, and each weight's gradient is one GEMM after the
reverse loop. Unlike it, nothing is compiled per process, no time step goes through Python,
and the backward reads the forward's saved intermediates instead of recomputing them.

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
from pathlib import Path

import torch

from ..models.ntm import NTM
from .handwritten import HandwrittenCore
from .recurrence import CoreUnavailable

SOURCE = Path(__file__).resolve().with_name("native.cpp")

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

    def __init__(self, model: NTM):
        check_supported(model, next(model.parameters()).device)
        super().__init__(model)
        self.extension = load_extension()

    def run_forward(self, x_projection, controller, reads0, weights0, memory0, weights, biases):
        model = self.model
        return self.extension.forward(x_projection, controller, reads0, weights0, memory0, weights, biases,
                                      model.R, model.W, model.K, self.lstm)

    def run_backward(self, saved, d_hidden, d_reads, weights):
        model = self.model
        return self.extension.backward(saved, d_hidden, d_reads, weights, model.R, model.W, model.K, self.lstm)
