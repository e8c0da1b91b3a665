"""The fast path's "step" core: ``NTM.step`` compiled by ``torch.compile``, run over the sequence
here, autograd recording every time step (CUDA's default, where FastStep replays the whole
training step as CUDA graphs)."""

from __future__ import annotations

import torch

from ..models.ntm import NTM
from .recurrence import contiguous_state


class StepNTM:
    """``StepNTM(model, compile_options)(inputs)`` = ``model(inputs)``: inputs (T, B, I) -> logits (T, B, O)."""

    def __init__(self, model: NTM, compile_options: dict):
        self.model = model
        self.step = torch.compile(model.step, **compile_options)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        # the initial state made contiguous, so every time step sees the layout the compiled step returns
        state = contiguous_state(self.model.initial_state(inputs.shape[1]))
        outputs = []
        for x in inputs:  # x (B, I)
            logits, state, _ = self.step(x, state)
            outputs.append(logits)
        return torch.stack(outputs)
