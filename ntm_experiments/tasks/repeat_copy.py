"""Repeat copy (§4.2).

Input channels: ``bits`` data bits, a delimiter flag, the normalised repeat count.
Output channels: ``bits`` data bits, the end marker. A sequence of length L repeated n
times takes L + 1 + nL + 1 steps::

    step   0..L-1      L                        L+1 .. L+nL          L+nL+1
    input  x_0..x_L-1  delimiter + (n-5.5)/2.872  nothing             nothing
    target -           -                        x repeated n times   end marker
                                                (all bits+1 channels scored on these steps)
"""

from __future__ import annotations

import torch

from .base import Batch, EvalSetting, Task, randint, random_bits


class RepeatCopy(Task):
    name = "repeat_copy"

    def __init__(self, *, bits: int, min_length: int, max_length: int, min_repeats: int, max_repeats: int,
                 repeats_mean: float, repeats_std: float):
        self.bits, self.min_length, self.max_length = bits, min_length, max_length
        self.min_repeats, self.max_repeats = min_repeats, max_repeats
        self.repeats_mean, self.repeats_std = repeats_mean, repeats_std
        self.input_width = bits + 2
        self.output_width = bits + 1

    def suite(self, lengths: list[int] | None = None) -> list[EvalSetting]:
        """Fig 8: length 10 x 20 repeats and length 20 x 10 repeats, plus the training range.
        ``lengths`` gives sequence lengths, each at max_repeats repeats."""
        if lengths:
            return [EvalSetting(f"length_{n}_repeats_{self.max_repeats}", {"length": n, "repeats": self.max_repeats})
                    for n in lengths]
        return [EvalSetting("training_range", {}),
                EvalSetting("length_10_repeats_20", {"length": 10, "repeats": 20}),
                EvalSetting("length_20_repeats_10", {"length": 20, "repeats": 10})]

    def vectors_to_store(self, length: int | None = None, repeats: int | None = None) -> int:
        return length or self.max_length

    def max_steps(self) -> int:
        return self.max_length + 1 + self.max_repeats * self.max_length + 1  # sequence, count, repeats, end marker

    def sample(self, batch_size: int, generator: torch.Generator, length: int | None = None,
               repeats: int | None = None) -> Batch:
        lengths = (randint(self.min_length, self.max_length, (batch_size,), generator) if length is None
                   else torch.full((batch_size,), length))
        counts = (randint(self.min_repeats, self.max_repeats, (batch_size,), generator) if repeats is None
                  else torch.full((batch_size,), repeats))
        longest = int(lengths.max())
        steps = int((lengths + 1 + counts * lengths + 1).max())
        seq = random_bits((longest, batch_size, self.bits), generator)
        t = torch.arange(steps)[:, None]
        L, n = lengths[None, :], counts[None, :]

        inputs = torch.zeros(steps, batch_size, self.input_width)
        inputs[:longest, :, : self.bits] = seq * (t[:longest] < L)[:, :, None]
        at_delimiter = (t == L).float()
        inputs[:, :, self.bits] = at_delimiter
        inputs[:, :, self.bits + 1] = at_delimiter * (n - self.repeats_mean) / self.repeats_std

        out_start = L + 1
        src = t - out_start
        repeating = (src >= 0) & (src < n * L)
        end = src == n * L
        targets = torch.zeros(steps, batch_size, self.output_width)
        index = torch.remainder(src.clamp(min=0), L)[:, :, None].expand(-1, -1, self.bits)
        targets[:, :, : self.bits] = seq.gather(0, index) * repeating[:, :, None]
        targets[:, :, self.bits] = end.float()
        mask = (repeating | end).float()[:, :, None].expand(-1, -1, self.output_width).contiguous()
        return Batch(inputs, targets, mask)
