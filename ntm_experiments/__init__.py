"""ntm-experiments: a reproduction of Graves, Wayne & Danihelka (2014), Neural Turing Machines."""

import os

# Determinism (same config and seed, same curve on the CPU; a stacked run bitwise the run alone):
# MKL's AVX-512 sgemm kernels sum in an order that depends on the operands' memory alignment, so a
# run's gradient changed with where its rows sat in a stack (seen on an AVX-512 machine, 2026-12-04;
# not on AVX2 ones). MKL's conditional numerical reproducibility mode fixes the kernels (AVX2 code
# path, alignment-independent); set before MKL's first call. An MKL_CBWR the user set is kept.
os.environ.setdefault("MKL_CBWR", "AVX2,STRICT")

__version__ = "0.1.0"
