"""What the fast path's sequence-level cores share: the recurrence's weights as explicit
arguments, and the autograd Function around a core whose forward and backward over the whole
sequence are written by hand (ntm_native.py: C++ on the CPU; ntm_triton.py: Triton kernels).

Such a core computes ``NTM.forward`` as: the external input's share of the first controller
layer, one GEMM over all T B rows; the recurrence (controller, heads, memory step) by hand,
returning the top controller layer's h (T, B, C) and the read vectors (T, B, R M) of every
step; the output layer, one GEMM over all T B rows. Its backward returns, in this order: the
gradient at the input projection (T, B, G), at the initial state (LSTM: d h and d c of every
layer; then d reads (B, R M), d weightings (B, R+W, N), d memory (B, N, M)), and at every
loop weight (layer 0's recurrent columns, then weight and bias of each other layer and of the
heads), each weight's gradient one GEMM over all T B rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .ntm import NTM, LSTMController


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


class HandwrittenCore:
    """``core(inputs)`` = ``model(inputs)``: inputs (T, B, I) -> logits (T, B, O). Subclasses
    give ``run_forward(x_projection, controller, reads0, weights0, memory0, weights, biases)``,
    which returns the tensors its backward needs, hidden (T, B, C) and reads (T, B, R M) first,
    and ``run_backward(saved, d_hidden, d_reads, weights)``, the gradients in the order the
    module's docstring gives. All arguments are contiguous; ``biases`` are every loop layer's
    but the first (the input projection holds it)."""

    def __init__(self, model: NTM):
        self.model = model
        self.lstm = isinstance(model.controller, LSTMController)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        model = self.model
        x_weight, x_bias, linears = recurrent_weights(model, inputs.shape[2])
        x_projection = F.linear(inputs, x_weight, x_bias)  # (T, B, G): one GEMM for every time step
        state = model.initial_state(inputs.shape[1])
        flat_linears = [t for pair in linears for t in pair]
        hidden, reads = _HandwrittenRecurrence.apply(self, x_projection, *state.controller, state.reads,
                                                     state.read_weights, state.write_weights, state.memory,
                                                     *flat_linears)
        return model.output(torch.cat([hidden, reads], dim=-1))  # (T, B, C + R M) -> (T, B, O), one GEMM


class _HandwrittenRecurrence(torch.autograd.Function):
    """x_projection (T, B, G), the initial state (controller tensors, reads (B, R, M), read and
    write weightings (B, R|W, N), memory (B, N, M)) and the loop's (weight, bias) pairs ->
    hidden (T, B, C), read vectors (T, B, R M)."""

    @staticmethod
    def forward(ctx, core: HandwrittenCore, x_projection, *tensors):
        model = core.model
        n_controller = 2 * len(model.controller.cells) if core.lstm else 0
        controller = [t.contiguous() for t in tensors[:n_controller]]
        reads, read_weights, write_weights, memory = tensors[n_controller:n_controller + 4]
        flat_linears = tensors[n_controller + 4:]
        weights = [w.contiguous() for w in flat_linears[0::2]]
        biases = [b.contiguous() for b in flat_linears[3::2]]
        B = x_projection.shape[1]
        saved = core.run_forward(x_projection.contiguous(), controller, reads.reshape(B, -1).contiguous(),
                                 torch.cat([read_weights, write_weights], dim=1).contiguous(), memory.contiguous(),
                                 weights, biases)
        ctx.core, ctx.saved, ctx.weights, ctx.n_controller = core, saved, weights, n_controller
        return saved[0], saved[1]

    @staticmethod
    def backward(ctx, d_hidden, d_reads):
        core, model = ctx.core, ctx.core.model
        grads = core.run_backward(ctx.saved, d_hidden.contiguous(), d_reads.contiguous(), ctx.weights)
        ctx.saved = ctx.weights = None
        n = ctx.n_controller
        d_x_projection, d_controller = grads[0], grads[1:1 + n]
        d_reads0, d_weights0, d_memory0 = grads[1 + n:4 + n]
        B = d_reads0.shape[0]
        d_linears = [grads[4 + n], None, *grads[5 + n:]]  # layer 0 has no bias here
        return (None, d_x_projection, *d_controller, d_reads0.view(B, model.R, model.M),
                d_weights0[:, :model.R], d_weights0[:, model.R:], d_memory0, *d_linears)
