"""Copy (§4.1).

Input channels: ``bits`` data bits, a delimiter flag, then ``spare_channels`` always-zero
channels. Output channels: ``bits`` data bits, then ``spare_channels`` never-scored ones.
A sequence of length L takes 2L + 1 steps::

    step   0 .. L-1     L           L+1 .. 2L
    input  x_0..x_L-1   delimiter   nothing
    target -            -           x_0..x_L-1   (scored: L x bits)
"""

from __future__ import annotations

import torch

from .base import Batch, EvalSetting, Task, randint, random_bits


class Copy(Task):
    name = "copy"

    def __init__(self, *, bits: int, min_length: int, max_length: int, spare_channels: int):
        self.bits, self.min_length, self.max_length = bits, min_length, max_length
        self.spare_channels = spare_channels
        self.input_width = bits + 1 + spare_channels
        self.output_width = bits + spare_channels

    def suite(self, lengths: list[int] | None = None) -> list[EvalSetting]:
        """Figs 4-5: sequence lengths 10, 20, 30, 50, 120."""
        return [EvalSetting(f"length_{n}", {"length": n}) for n in (lengths or (10, 20, 30, 50, 120))]

    def vectors_to_store(self, length: int | None = None) -> int:
        return length or self.max_length

    def max_steps(self) -> int:
        return 2 * self.max_length + 1  # the sequence, the delimiter, the copy

    def sample(self, batch_size: int, generator: torch.Generator, length: int | None = None) -> Batch:
        if length is None:
            lengths = randint(self.min_length, self.max_length, (batch_size,), generator)
        else:
            lengths = torch.full((batch_size,), length)
        longest = int(lengths.max())
        steps = 2 * longest + 1
        seq = random_bits((longest, batch_size, self.bits), generator)  # (Lmax, B, bits)
        t = torch.arange(steps)[:, None]  # (T, 1)
        L = lengths[None, :]  # (1, B)

        inputs = torch.zeros(steps, batch_size, self.input_width)
        in_seq = t < L  # (T, B)
        inputs[:longest, :, : self.bits] = seq * in_seq[:longest, :, None]
        inputs[:, :, self.bits] = (t == L).float()

        src = t - L - 1  # which sequence element each step reproduces
        in_out = (src >= 0) & (src < L)
        targets = torch.zeros(steps, batch_size, self.output_width)
        gathered = seq.gather(0, src.clamp(0, longest - 1)[:, :, None].expand(-1, -1, self.bits))
        targets[:, :, : self.bits] = gathered * in_out[:, :, None]
        mask = torch.zeros_like(targets)
        mask[:, :, : self.bits] = in_out[:, :, None].float()
        return Batch(inputs, targets, mask)
