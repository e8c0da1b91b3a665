"""Priority sort (§4.5).

Input channels: ``bits`` data bits, the priority (uniform in [-1, 1]), a delimiter flag.
Output: ``bits`` data bits. With n inputs and k outputs a sequence takes n + 1 + k steps::

    step   0..n-1                  n           n+1 .. n+k
    input  x_i with its priority   delimiter   nothing
    target -                       -           the k highest-priority x_i, highest first

Whole vectors are sorted by their priority (not each bit column on its own).
"""

from __future__ import annotations

import torch

from .base import Batch, EvalSetting, Task, random_bits


class PrioritySort(Task):
    name = "priority_sort"

    def __init__(self, *, bits: int, num_inputs: int, num_outputs: int):
        self.bits, self.num_inputs, self.num_outputs = bits, num_inputs, num_outputs
        self.input_width = bits + 2
        self.output_width = bits

    def suite(self, lengths: list[int] | None = None) -> list[EvalSetting]:
        """The training distribution, plus 30 inputs / 24 outputs (an extension the paper did
        not try). ``lengths`` gives input counts, each sorting its top 80 %."""
        sizes = [(n, max(1, round(0.8 * n))) for n in lengths] if lengths else [(self.num_inputs, self.num_outputs), (30, 24)]
        return [EvalSetting(f"inputs_{n}_outputs_{k}", {"num_inputs": n, "num_outputs": k}) for n, k in sizes]

    def vectors_to_store(self, num_inputs: int | None = None, num_outputs: int | None = None) -> int:
        return num_inputs or self.num_inputs

    def max_steps(self) -> int:
        return self.num_inputs + 1 + self.num_outputs  # the inputs, the delimiter, the sorted outputs

    def sample(self, batch_size: int, generator: torch.Generator, num_inputs: int | None = None,
               num_outputs: int | None = None) -> Batch:
        n = num_inputs or self.num_inputs
        k = num_outputs or self.num_outputs
        vectors = random_bits((n, batch_size, self.bits), generator)
        priority = torch.rand(n, batch_size, generator=generator) * 2 - 1
        steps = n + 1 + k
        inputs = torch.zeros(steps, batch_size, self.input_width)
        inputs[:n, :, : self.bits] = vectors
        inputs[:n, :, self.bits] = priority
        inputs[n, :, self.bits + 1] = 1.0
        order = priority.argsort(dim=0, descending=True)[:k]  # (k, B): input steps, best first
        targets = torch.zeros(steps, batch_size, self.output_width)
        targets[n + 1:] = vectors.gather(0, order[:, :, None].expand(-1, -1, self.bits))
        mask = torch.zeros_like(targets)
        mask[n + 1:] = 1.0
        return Batch(inputs, targets, mask)
