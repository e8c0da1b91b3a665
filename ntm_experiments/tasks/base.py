"""What every task is: a batch generator, a cost in bits, and its input/output widths.

Tasks know nothing about models. A batch is time-major, ``(T, B, width)``: T is the
longest sequence in the batch, and each sequence's own length is carried by ``mask``,
which is 1 exactly on the target bits that are scored and 0 on padding, on the input
phase and on unscored channels. Padding comes after a sequence ends, so a recurrent
model's outputs on a sequence's scored steps never depend on it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Batch(NamedTuple):
    inputs: torch.Tensor   # (T, B, input_width) float
    targets: torch.Tensor  # (T, B, output_width) float, 0/1 (or probabilities)
    mask: torch.Tensor     # (T, B, output_width) float, 1 on scored target bits

    def to(self, device: torch.device | str) -> "Batch":
        """The batch on ``device``; a copy to a GPU goes through pinned memory, so it does not
        wait for the work already queued there."""
        device = torch.device(device)
        if device.type == "cuda" and self.inputs.device.type == "cpu":
            return Batch(*(t.pin_memory().to(device, non_blocking=True) for t in self))
        return Batch(*(t.to(device, non_blocking=True) for t in self))

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[1]


def cost_bits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cost per sequence in bits (§4): the binary cross-entropy of the sigmoid outputs,
    in log base 2, summed over the scored target bits of each sequence.

    logits, targets, mask: (T, B, O). Returns (B,). A model that always outputs 1/2
    scores exactly one bit per scored target bit; a perfect one scores 0.
    """
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (bce * mask).sum(dim=(0, 2)) / math.log(2.0)


def randint(low: int, high: int, size: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Integers uniform in low..high inclusive."""
    return torch.randint(low, high + 1, size, generator=generator)


def random_bits(size: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Independent fair bits as floats."""
    return torch.randint(0, 2, size, generator=generator).float()


class EvalSetting(NamedTuple):
    """One generalisation setting: a name for logs and files, and the ``sample`` keywords."""
    name: str
    setting: dict
    sequences: int | None = None  # how many sequences to score; None: the run's eval.sequences


class Task:
    """Base class: subclasses set the widths and implement ``sample`` and ``suite``."""

    name: str = ""
    input_width: int = 0
    output_width: int = 0

    def sample(self, batch_size: int, generator: torch.Generator, **setting) -> Batch:
        """A batch drawn from the task's training distribution; keyword settings (a fixed
        length, a number of repeats, ...) pin a parameter for generalisation tests."""
        raise NotImplementedError

    def suite(self, lengths: list[int] | None = None) -> list[EvalSetting]:
        """The task's generalisation settings (as in the paper's figures); ``lengths``
        replaces the default values of the task's main size parameter."""
        raise NotImplementedError

    def max_steps(self) -> int:
        """The most time steps a training batch can have (its longest possible sequence): what a
        stack's memory estimate is sized by."""
        raise NotImplementedError

    def vectors_to_store(self, **setting) -> int:
        """How many input vectors a model must hold at once to answer exactly, at most, for
        ``setting`` (no keywords: the training distribution). Past a memory's rows, a model can
        still score, but cannot be exact. 0 for tasks that need no positional storage."""
        return 0

    def cost(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Cost per sequence in bits, (B,)."""
        return cost_bits(logits, batch.targets, batch.mask)

    def example(self, seed: int = 0, **setting) -> Batch:
        """One reproducible example (batch of one), e.g. for pictures."""
        return self.sample(1, torch.Generator().manual_seed(seed), **setting)
