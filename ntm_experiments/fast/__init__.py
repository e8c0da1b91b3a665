"""The fast path (``train.fast_path``): the same function as the plain eager model, made cheap
to train. models/ is the paper; everything here is speed, each piece checked against it.

  steps.py        the training step, plain (PlainStep, the reference) or fast (FastStep: a core
                  per device, CUDA graphs), and when a run takes the fast path
  cores.py        the registry of NTM cores, one name each (train.fast_path_core, bench.py)
  recurrence.py   what the sequence-level cores share: the hoisted input and output layers, the
                  loop's weights as explicit arguments, the flat state
  step.py         "step": NTM.step compiled, autograd per time step (CUDA's default)
  sequence.py     "sequence": the time step compiled, a sequence-level backward
  handwritten.py  the base of the cores written by hand, forward and backward paired
  native.py       "native": native.cpp, the recurrence in C++ (the CPU's default)
  triton.py       "triton": the recurrence as fused Triton kernels (GPU)
"""

from .cores import CORES, CoreUnavailable, build_core, default_core
from .steps import FastStep, PlainStep, make_train_step, use_fast_path

__all__ = ["CORES", "CoreUnavailable", "FastStep", "PlainStep", "build_core", "default_core", "make_train_step",
           "use_fast_path"]
