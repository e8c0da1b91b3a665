"""Dynamic N-grams (§4.4).

Each sequence draws a fresh table of 2^context probabilities from Beta(1/2, 1/2), one
per context of the previous ``context`` bits. The first ``context`` bits are fair coin
flips; each later bit is 1 with the probability its context gives. One input and one
output channel: the input at step t is bit t-1 (0 at step 0), the target is bit t, and
every bit is scored.
"""

from __future__ import annotations

import math

import torch

from .base import Batch, EvalSetting, Task


def beta_half(size: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Beta(1/2, 1/2) samples, by inverting its CDF (2/pi) asin(sqrt(p)): p = sin^2(pi u / 2)."""
    u = torch.rand(size, generator=generator, dtype=torch.float64)
    return torch.sin(0.5 * math.pi * u).pow(2).float()


def optimal_predictions(bits: torch.Tensor, context: int) -> torch.Tensor:
    """Bayes-optimal P(bit_t = 1 | bits before t) under the Beta(1/2, 1/2) prior (eq. 10):
    (N1 + 1/2) / (N1 + N0 + 1) with N1, N0 counted over earlier steps with the same context;
    1/2 while fewer than ``context`` bits have been seen.

    bits: (T, B) 0/1 floats. Returns (T, B) probabilities.
    """
    steps, batch = bits.shape
    ones = torch.zeros(batch, 2 ** context, dtype=torch.float64)
    seen = torch.zeros_like(ones)
    out = torch.full((steps, batch), 0.5, dtype=torch.float64)
    weights = 2 ** torch.arange(context)
    rows = torch.arange(batch)
    for t in range(context, steps):
        ctx = (bits[t - context:t].long() * weights[:, None]).sum(0)  # (B,)
        out[t] = (ones[rows, ctx] + 0.5) / (seen[rows, ctx] + 1.0)
        ones[rows, ctx] += bits[t].double()
        seen[rows, ctx] += 1.0
    return out.float()


class NGrams(Task):
    name = "ngrams"
    input_width = 1
    output_width = 1

    def __init__(self, *, context: int, length: int):
        self.context, self.length = context, length

    def suite(self, lengths: list[int] | None = None) -> list[EvalSetting]:
        """§4.4: a validation set of 1000 sequences of 200 bits (``lengths``: other lengths)."""
        if lengths:
            return [EvalSetting(f"length_{n}", {"length": n}, 1000) for n in lengths]
        return [EvalSetting("validation", {}, 1000)]

    def sample_bits(self, batch_size: int, generator: torch.Generator, length: int | None = None) -> torch.Tensor:
        """(T, B) bits drawn from fresh per-sequence N-gram tables."""
        steps = length or self.length
        table = beta_half((batch_size, 2 ** self.context), generator)
        draws = torch.rand(steps, batch_size, generator=generator)
        bits = torch.zeros(steps, batch_size)
        bits[: self.context] = (draws[: self.context] < 0.5).float()
        weights = 2 ** torch.arange(self.context)
        rows = torch.arange(batch_size)
        for t in range(self.context, steps):
            ctx = (bits[t - self.context:t].long() * weights[:, None]).sum(0)
            bits[t] = (draws[t] < table[rows, ctx]).float()
        return bits

    def max_steps(self) -> int:
        return self.length  # one step a bit

    def sample(self, batch_size: int, generator: torch.Generator, length: int | None = None) -> Batch:
        bits = self.sample_bits(batch_size, generator, length)
        inputs = torch.zeros_like(bits)
        inputs[1:] = bits[:-1]
        targets = bits[:, :, None]
        return Batch(inputs[:, :, None], targets, torch.ones_like(targets))
