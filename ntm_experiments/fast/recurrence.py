"""What every sequence-level core of the fast path shares: the recurrence's weights as explicit
arguments, the state as a flat list, and the call that wraps a core's autograd Function.

A sequence-level core computes ``NTM.forward`` (models/ntm.py) as:
  1. the external input's share of the first controller layer, x W_x^T + b: one GEMM over all
     T B rows, before the loop (``recurrent_weights`` gives W_x and b);
  2. the recurrence (controller, heads, memory step, §3) inside the core's autograd Function,
     which returns the top controller layer's h (T, B, C) and the read vectors (T, B, R M) of
     every step, and whose backward gives each loop weight's gradient as one GEMM over T B rows;
  3. the output layer: one GEMM over all T B rows.
Steps 1 and 3 are ``SequenceCore.__call__``; each core (sequence.py, handwritten.py's native
and triton subclasses) supplies step 2 as ``recurrence``, an autograd Function called as
``recurrence.apply(core, n_state, x_projection, *flat_state, *flat_linears)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.ntm import NTM, LSTMController, NTMState


class CoreUnavailable(RuntimeError):
    """A fast-path core cannot run this model here; the message is one line saying why."""


def recurrent_weights(model: NTM, input_size: int):
    """(x weight (G, I), x bias (G,), [(weight, bias or None)] of every linear layer inside the
    recurrence, in the order a time step applies them), all views of the model's parameters: the
    first controller layer's columns for the external input (hoisted out of the loop, with that
    layer's bias) and for the recurrent part ([reads, own h] for an LSTM, reads for a
    feedforward controller), the other controller layers, the heads."""
    linears = []
    if isinstance(model.controller, LSTMController):
        cells = model.controller.cells
        first = cells[0]
        x_weight, x_bias = first.weight_ih[:, :input_size], first.bias_ih + first.bias_hh
        linears.append((torch.cat([first.weight_ih[:, input_size:], first.weight_hh], dim=1), None))
        linears += [(torch.cat([c.weight_ih, c.weight_hh], dim=1), c.bias_ih + c.bias_hh) for c in cells[1:]]
    else:
        layers = model.controller.layers
        x_weight, x_bias = layers[0].weight[:, :input_size], layers[0].bias
        linears.append((layers[0].weight[:, input_size:], None))
        linears += [(layer.weight, layer.bias) for layer in layers[1:]]
    linears.append((model.heads.weight, model.heads.bias))
    return x_weight, x_bias, linears


def flatten_state(state: NTMState) -> list[torch.Tensor]:
    """[controller tensors..., reads (B, R, M), read weights (B, R, N), write weights (B, W, N), memory (B, N, M)]."""
    return [*state.controller, state.reads, state.read_weights, state.write_weights, state.memory]


def unflatten_state(tensors) -> NTMState:
    *controller, reads, read_weights, write_weights, memory = tensors
    return NTMState(tuple(controller), reads, read_weights, write_weights, memory)


def contiguous_state(state: NTMState) -> NTMState:
    return unflatten_state([t.contiguous() for t in flatten_state(state)])


class SequenceCore:
    """``core(inputs)`` = ``model(inputs)``: inputs (T, B, I) -> logits (T, B, O), with the
    recurrence run by the subclass's autograd Function ``recurrence``."""

    recurrence: type[torch.autograd.Function]

    def __init__(self, model: NTM):
        self.model = model
        self.lstm = isinstance(model.controller, LSTMController)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        model = self.model
        x_weight, x_bias, linears = recurrent_weights(model, inputs.shape[2])
        x_projection = F.linear(inputs, x_weight, x_bias)  # (T, B, G): one GEMM for every time step
        flat_state = flatten_state(model.initial_state(inputs.shape[1]))
        flat_linears = [t for pair in linears for t in pair]
        hidden, reads = self.recurrence.apply(self, len(flat_state), x_projection, *flat_state, *flat_linears)
        return model.output(torch.cat([hidden, reads], dim=-1))  # (T, B, C + R M) -> (T, B, O), one GEMM
