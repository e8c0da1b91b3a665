"""The registry of the fast path's NTM cores: one name per core, everywhere (``train.fast_path_core``,
``scripts/bench.py --paths/--core``, logs). Each core computes ``NTM.forward`` (models/ntm.py),
inputs (T, B, I) -> logits (T, B, O), and its gradient; tests/test_fast.py checks each against it.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

import torch

from ..models.ntm import NTM
from .recurrence import CoreUnavailable  # noqa: F401 (re-exported)

log = logging.getLogger("ntm_experiments.fast")


@dataclass(frozen=True)
class Core:
    name: str
    module: str         # the module under ntm_experiments.fast that holds it (imported on first use)
    cls: str            # its class there: cls(model) or, when compiled, cls(model, compile_options)
    compiled: bool      # built with torch.compile (compile_options), tens of seconds per process
    where: str          # where it runs
    summary: str


CORES: dict[str, Core] = {core.name: core for core in (
    Core("native", "native", "NativeNTM", False, "CPU",
         "the whole recurrence as one hand-written C++ call forward and one backward (native.cpp)"),
    Core("sequence", "sequence", "SequenceNTM", True, "CPU or CUDA",
         "the time step compiled by torch.compile, a compiled forward loop and a compiled reverse loop"),
    Core("step", "step", "StepNTM", True, "CPU or CUDA",
         "NTM.step compiled by torch.compile, autograd recording every time step"),
    Core("triton", "triton", "TritonNTM", False, "CUDA",
         "the native core's arrangement as fused Triton kernels (memory step, LSTM pointwise work)"),
)}


def default_core(device: torch.device) -> str:
    """The core a device runs unless told otherwise: native on the CPU, step on CUDA."""
    return "step" if device.type == "cuda" else "native"


def fallback_core(name: str, device: torch.device) -> str | None:
    """The core tried when ``name`` cannot run here: native -> sequence; triton -> the device's default."""
    return {"native": "sequence", "triton": default_core(device)}.get(name)


def build_core(name: str, model: NTM, device: torch.device, compile_options: dict):
    """(the core's forward, the core's name). A core that cannot run here says why, once, in the
    log, and its fallback is built instead."""
    while True:
        if name not in CORES:
            raise ValueError(f"core={name!r}: must be one of {', '.join(CORES)}")
        core = CORES[name]
        try:
            cls = getattr(importlib.import_module(f"{__package__}.{core.module}"), core.cls)
            if not core.compiled:
                forward = cls(model)
                if name == "native":
                    log.info("fast path: native CPU core (built or loaded in %.1f s)", forward.extension.build_seconds)
                return forward, name
            # one compiled entry per model shape: a process that builds several models (a benchmark,
            # the tests) must not hit dynamo's default limit of 8 entries per compiled function
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            return cls(model, compile_options), name
        except CoreUnavailable as why:
            fallback = fallback_core(name, device)
            if fallback is None:
                raise
            log.warning("fast path: %s; using the %s core instead", why, fallback)
            name = fallback
