"""The base of the Triton core (triton.py), whose forward and backward over a whole sequence are
written by hand in native.cpp's arrangement (the native core itself, native.py, also takes the
input and output layers into its one call).

Such a core gives, for the recurrence of recurrence.py's step 2, ``run_forward`` and
``run_backward``. The backward returns, in this order: the gradient at the input projection
(T, B, G), at the initial state (LSTM: d h and d c of every layer; then d reads (B, R M),
d weightings (B, R+W, N), d memory (B, N, M)), and at every loop weight (layer 0's recurrent
columns, then weight and bias of each other layer and of the heads), each weight's gradient one
GEMM over all T B rows.
"""

from __future__ import annotations

import torch

from .recurrence import SequenceCore


class _HandwrittenRecurrence(torch.autograd.Function):
    """x_projection (T, B, G), the initial state (controller tensors, reads (B, R, M), read and
    write weightings (B, R|W, N), memory (B, N, M)) and the loop's (weight, bias) pairs ->
    hidden (T, B, C), read vectors (T, B, R M)."""

    @staticmethod
    def forward(ctx, core: "HandwrittenCore", n_state: int, x_projection, *tensors):
        n_controller = n_state - 4
        controller = [t.contiguous() for t in tensors[:n_controller]]
        reads, read_weights, write_weights, memory = tensors[n_controller:n_state]
        flat_linears = tensors[n_state:]
        weights = [w.contiguous() for w in flat_linears[0::2]]
        biases = [b.contiguous() for b in flat_linears[3::2]]
        saved = core.run_forward(x_projection.contiguous(), controller, reads.flatten(-2).contiguous(),
                                 torch.cat([read_weights, write_weights], dim=-2).contiguous(), memory.contiguous(),
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
        d_linears = [grads[4 + n], None, *grads[5 + n:]]  # layer 0 has no bias here
        return (None, None, d_x_projection, *d_controller, d_reads0.unflatten(-1, (model.R, model.M)),
                d_weights0[..., :model.R, :], d_weights0[..., model.R:, :], d_memory0, *d_linears)


class HandwrittenCore(SequenceCore):
    """Subclasses give ``run_forward(x_projection, controller, reads0, weights0, memory0, weights,
    biases)``, which returns the tensors its backward needs, hidden (T, B, C) and reads (T, B, R M)
    first, and ``run_backward(saved, d_hidden, d_reads, weights)``, the gradients in the order the
    module's docstring gives. All arguments are contiguous; ``biases`` are every loop layer's but
    the first (the input projection holds it)."""

    recurrence = _HandwrittenRecurrence
