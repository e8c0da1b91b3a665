"""The fast path's "sequence" core: the NTM over a whole sequence with a sequence-level backward,
the same function as ``NTM.forward``, arranged so that little happens per time step.

What NTM.forward does per time step, and what this does instead:
  - the external input's share of the first controller layer, x W_x^T + b, is one GEMM over
    all T B rows before the loop, and the output layer is one GEMM over all T B rows after it;
  - the loop runs only the recurrent part (``_core``: controller, heads, addressing, read,
    write), compiled, forward without autograd;
  - the backward is one reverse loop over the time steps (``_core_backward``: the core's
    vector-Jacobian product, recomputing the step's forward from its saved input state), and
    it returns the gradient at each linear layer's output instead of the weights' gradient;
  - each weight's gradient is then one GEMM over all T B rows, sum_t dy_t^T a_t, not T small
    GEMMs and T accumulations.
The recurrent weights enter as explicit arguments: the controller's recurrent linear layers
take [reads or the layer below, own h] against [W_r | W_hh] (LSTM) or reads against W_r
(feedforward), with the same parameters as the modules (slices and concatenations of them,
so autograd delivers each gradient to the module's own parameter).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.ntm import NTM, NTMState
from .recurrence import SequenceCore, contiguous_state, flatten_state, unflatten_state


class _Recurrence(torch.autograd.Function):
    """x_projection (T, B, G), the initial state and the loop's weights -> hidden (T, B, C),
    read vectors (T, B, R M); the backward as described in the module's docstring."""

    @staticmethod
    def forward(ctx, core: "SequenceNTM", n_state: int, x_projection, *tensors):
        tensors = [None if t is None else t.detach() for t in tensors]  # no autograd inside: same guards every call
        # the initial state in the layout the compiled step returns (an expanded batch of 1 has stride 0)
        state = unflatten_state([torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)
                                 for t in tensors[:n_state]])
        flat_linears = tensors[n_state:]
        linears = list(zip(flat_linears[0::2], flat_linears[1::2]))
        states, hiddens = [state], []
        for x in x_projection:
            hidden, state = core.core_forward(x, state, linears)
            states.append(state)
            hiddens.append(hidden)
        ctx.core, ctx.states, ctx.linears = core, states, linears
        ctx.save_for_backward(x_projection)
        reads = torch.stack([s.reads.flatten(1) for s in states[1:]])
        return torch.stack(hiddens), reads

    @staticmethod
    def backward(ctx, d_hidden, d_reads):
        (x_projection,) = ctx.saved_tensors
        core, states, linears = ctx.core, ctx.states, ctx.linears
        T = x_projection.shape[0]
        d_state = unflatten_state([torch.zeros_like(t) for t in flatten_state(states[-1])])
        d_x_projection = torch.empty_like(x_projection)
        d_outputs, layer_inputs = [[] for _ in linears], [[] for _ in linears]
        for t in range(T - 1, -1, -1):
            d_x_projection[t], d_state, d_outs, ins = core.core_backward(x_projection[t], states[t], linears,
                                                                         d_hidden[t], d_reads[t], d_state)
            for k in range(len(linears)):
                d_outputs[k].append(d_outs[k])
                layer_inputs[k].append(ins[k])
        d_linears = []
        for (weight, bias), d_out, ins in zip(linears, d_outputs, layer_inputs):
            d_out, ins = torch.cat(d_out), torch.cat(ins)  # (T B, out), (T B, in)
            d_linears += [d_out.t() @ ins, None if bias is None else d_out.sum(0)]
        ctx.states = ctx.linears = None
        return None, None, d_x_projection, *flatten_state(d_state), *d_linears


class SequenceNTM(SequenceCore):
    """``SequenceNTM(model)(inputs)`` = ``model(inputs)``: inputs (T, B, I) -> logits (T, B, O)."""

    recurrence = _Recurrence

    def __init__(self, model: NTM, compile_options: dict | None = None):
        """``compile_options``: torch.compile's keywords for both loops' bodies (FastStep passes
        its compile_options); None runs them eagerly."""
        super().__init__(model)
        self.core_forward, self.core_backward = self._core_forward, self._core_backward
        if compile_options is not None:
            options = dict(compile_options)
            # the compiled code's glue (allocations, library calls) in C++ instead of Python: on the
            # 2-core CPU, 9.6-11.2 against 12.9 ms per batch-1 training step (scripts/bench.py);
            # torch.compile refuses a mode (bench.py --compile-mode) together with options
            if next(model.parameters()).device.type == "cpu" and "mode" not in options:
                options["options"] = {"cpp_wrapper": True}
            self.core_forward = torch.compile(self._core_forward, **options)
            self.core_backward = torch.compile(self._core_backward, **options)

    def _core(self, x_projection, state: NTMState, linears, probes=None):
        """One time step without the input and output layers: x_projection (B, G), the
        previous state -> (hidden (B, C), next state, [input of each linear layer]). A probe
        (B, out), zero, is added to each linear layer's output, so that the vector-Jacobian
        product with respect to the probes is the gradient at those outputs."""
        B = x_projection.shape[0]
        layer_inputs = []

        def linear(k, a):
            layer_inputs.append(a)
            weight, bias = linears[k]
            y = F.linear(a, weight, bias)
            return y if probes is None else y + probes[k]

        reads = state.reads.reshape(B, -1)
        controller = []
        if self.lstm:  # nn.LSTMCell's arithmetic, gates in its order (input, forget, cell, output)
            below = reads
            for layer in range(len(state.controller) // 2):
                h, c = state.controller[2 * layer], state.controller[2 * layer + 1]
                gates = linear(layer, torch.cat([below, h], dim=-1))
                if layer == 0:
                    gates = gates + x_projection
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                below = torch.sigmoid(o) * torch.tanh(c)
                controller += [below, c]
            hidden = below
        else:
            hidden = torch.tanh(x_projection + linear(0, reads))
            for layer in range(1, len(linears) - 1):
                hidden = torch.tanh(linear(layer, hidden))
        reads, read_w, write_w, memory, _ = self.model.memory_step(linear(len(linears) - 1, hidden), state)
        return hidden, NTMState(tuple(controller), reads, read_w, write_w, memory), layer_inputs

    def _core_forward(self, x_projection, state: NTMState, linears):
        hidden, state, _ = self._core(x_projection, state, linears)
        return hidden, contiguous_state(state)  # every step then sees the first step's layout: no recompilation

    def _core_backward(self, x_projection, state: NTMState, linears, d_hidden, d_reads, d_next):
        """The vector-Jacobian product of one time step: the cotangents of its outputs
        (d_hidden (B, C) and d_reads (B, R M) from the output layer, d_next from the next
        step) -> (d x_projection, d previous state, [d output of each linear layer] (B, out),
        [input of each linear layer] (B, in))."""
        B = x_projection.shape[0]
        d_next = d_next._replace(reads=d_next.reads + d_reads.view_as(d_next.reads))
        probes = [x_projection.new_zeros(B, weight.shape[0]) for weight, _ in linears]

        def step(x_projection, state, probes):
            hidden, next_state, layer_inputs = self._core(x_projection, state, linears, probes)
            return (hidden, next_state), layer_inputs

        _, vjp, layer_inputs = torch.func.vjp(step, x_projection, state, probes, has_aux=True)
        d_x_projection, d_state, d_outputs = vjp((d_hidden, d_next))
        return d_x_projection, contiguous_state(d_state), d_outputs, layer_inputs
