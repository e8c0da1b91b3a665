"""Associative recall (§4.3).

Input channels: ``bits`` data bits, the item delimiter, the query delimiter. Output:
``bits`` data bits. With k items of ``item_length`` (m) vectors, a sequence takes
k(m+1) + (m+2) + m steps::

    [item delim, item 1 (m steps)] ... [item delim, item k]
    query delim, query item (m steps), query delim, answer (m steps, scored: m x bits)

The query is item q, uniform in 1..k-1 (1-based); the answer is item q+1.
"""

from __future__ import annotations

import torch

from .base import Batch, EvalSetting, Task, randint, random_bits


class AssociativeRecall(Task):
    name = "associative_recall"

    def __init__(self, *, bits: int, item_length: int, min_items: int, max_items: int):
        self.bits, self.item_length = bits, item_length
        self.min_items, self.max_items = min_items, max_items
        self.input_width = bits + 2
        self.output_width = bits

    def suite(self, lengths: list[int] | None = None) -> list[EvalSetting]:
        """Fig 11: 6, 10, 15 and 20 items (``lengths`` gives item counts)."""
        return [EvalSetting(f"items_{k}", {"items": k}) for k in (lengths or (6, 10, 15, 20))]

    def vectors_to_store(self, items: int | None = None) -> int:
        return (items or self.max_items) * self.item_length

    def max_steps(self) -> int:
        return self.max_items * (self.item_length + 1) + 2 * self.item_length + 2  # the list, the query, the answer

    def sample(self, batch_size: int, generator: torch.Generator, items: int | None = None) -> Batch:
        m = self.item_length
        counts = (randint(self.min_items, self.max_items, (batch_size,), generator) if items is None
                  else torch.full((batch_size,), items))
        most = int(counts.max())
        # (most, m, B, bits): item i's vectors
        item_bits = random_bits((most, m, batch_size, self.bits), generator)
        # query index uniform in 0..k-2 (0-based), without a Python loop over the batch
        query = (torch.rand(batch_size, generator=generator) * (counts - 1)).long()
        list_steps = counts * (m + 1)  # (B,)
        steps = int((list_steps + 2 * m + 2).max())
        t = torch.arange(steps)[:, None]
        k_steps = list_steps[None, :]
        batch_index = torch.arange(batch_size)[None, :].expand(steps, -1)

        def vectors(item: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
            """item, row: (T, B) indices -> (T, B, bits)"""
            return item_bits[item.clamp(0, most - 1), row.clamp(0, m - 1), batch_index]

        inputs = torch.zeros(steps, batch_size, self.input_width)
        in_list = t < k_steps
        pos = torch.remainder(t, m + 1)
        inputs[:, :, self.bits] = (in_list & (pos == 0)).float()
        list_data = in_list & (pos > 0)
        inputs[:, :, : self.bits] = vectors(t // (m + 1), pos - 1) * list_data[:, :, None]

        q_off = t - k_steps  # 0: delim, 1..m: query, m+1: delim, m+2..2m+1: answer
        inputs[:, :, self.bits + 1] = ((q_off == 0) | (q_off == m + 1)).float()
        q_data = (q_off >= 1) & (q_off <= m)
        q = query[None, :].expand(steps, -1)
        inputs[:, :, : self.bits] += vectors(q, q_off - 1) * q_data[:, :, None]

        answering = (q_off >= m + 2) & (q_off <= 2 * m + 1)
        targets = vectors(q + 1, q_off - m - 2) * answering[:, :, None]
        mask = answering.float()[:, :, None].expand(-1, -1, self.output_width).contiguous()
        return Batch(inputs, targets, mask)
