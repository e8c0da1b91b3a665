"""Neural Turing Machine (§3) with a feedforward or LSTM controller.

One time step (``NTM.step``):
  1. the controller reads the external input and the previous read vectors;
  2. one linear layer maps the controller output to every head's parameters (§3.3):
     key k (identity), strength beta (softplus), gate g (sigmoid), shift s (softmax over
     -S..S), sharpening gamma (1 + softplus); write heads also erase e (sigmoid) and add a
     (identity);
  3. all heads address the memory as it was before this step (Fig. 2), the read heads
     read it (eq. 2), then the write heads erase and add (eqs. 3-4);
  4. the output is sigmoid(W [controller output, new read vectors] + b).
Choice (paper silent): reading before writing lets one addressing pass serve every head.

All dynamic state lives in ``NTMState`` and is reset per sequence to learned biases (§4):
controller state, read vectors, weightings; the memory too when memory_init="learned".
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import addressing


class NTMState(NamedTuple):
    controller: tuple[torch.Tensor, ...]  # LSTM: (h_1, c_1, ..., h_L, c_L), each (B, C); FF: ()
    reads: torch.Tensor            # (B, R, M) read vectors of the last step
    read_weights: torch.Tensor     # (B, R, N)
    write_weights: torch.Tensor    # (B, W, N)
    memory: torch.Tensor           # (B, N, M)


class Trace(NamedTuple):
    """What the NTM did over a sequence, for pictures (Figs 6, 9, 12)."""
    read_weights: torch.Tensor   # (T, B, R, N)
    write_weights: torch.Tensor  # (T, B, W, N)
    adds: torch.Tensor           # (T, B, W, M)


class FeedforwardController(nn.Module):
    """One tanh hidden layer; no state."""

    def __init__(self, input_size: int, size: int, layers: int):
        super().__init__()
        sizes = [input_size] + [size] * layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.output_size = size

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        return ()

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x, state


class LSTMController(nn.Module):
    """Stacked LSTM cells with a learned initial (h, c) per layer; the top layer's h is the output."""

    def __init__(self, input_size: int, size: int, layers: int):
        super().__init__()
        self.cells = nn.ModuleList(nn.LSTMCell(input_size if i == 0 else size, size) for i in range(layers))
        self.h0 = nn.Parameter(torch.zeros(layers, size))  # learned initial state (§4)
        self.c0 = nn.Parameter(torch.zeros(layers, size))
        self.output_size = size

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        state = []
        for layer in range(len(self.cells)):
            state += [self.h0[layer].expand(batch_size, -1), self.c0[layer].expand(batch_size, -1)]
        return tuple(state)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]):
        new_state = []
        for layer, cell in enumerate(self.cells):
            h, c = cell(x, (state[2 * layer], state[2 * layer + 1]))
            new_state += [h, c]
            x = h
        return x, tuple(new_state)


class NTM(nn.Module):
    def __init__(self, input_size: int, output_size: int, *, controller: str, controller_size: int,
                 controller_layers: int, read_heads: int, write_heads: int, memory_rows: int, memory_width: int,
                 shift_range: int, memory_init: str, memory_init_value: float, initial_focus: float):
        super().__init__()
        self.R, self.W, self.N, self.M = read_heads, write_heads, memory_rows, memory_width
        self.K = 2 * shift_range + 1
        ctrl_cls = {"ff": FeedforwardController, "lstm": LSTMController}[controller]
        self.controller = ctrl_cls(input_size + self.R * self.M, controller_size, controller_layers)
        # per head: key M, beta 1, gate 1, shift K, gamma 1; write heads add erase M, add M
        self.address_size = self.M + 3 + self.K
        self.heads = nn.Linear(controller_size, (self.R + self.W) * self.address_size + self.W * 2 * self.M)
        self.output = nn.Linear(controller_size + self.R * self.M, output_size)

        # learned initial values of the per-sequence state (§4)
        self.read0 = nn.Parameter(torch.randn(self.R, self.M) * 0.01)
        focus = torch.zeros(self.R + self.W, self.N)
        focus[:, 0] = initial_focus
        self.weight_logits0 = nn.Parameter(focus)
        self.memory_init = memory_init
        if memory_init == "learned":
            bound = 1.0 / (self.N + self.M) ** 0.5
            self.memory0 = nn.Parameter(torch.empty(self.N, self.M).uniform_(-bound, bound))
        else:
            self.register_buffer("memory0", torch.full((self.N, self.M), float(memory_init_value)))

    def initial_state(self, batch_size: int) -> NTMState:
        weights = torch.softmax(self.weight_logits0, dim=-1)
        return NTMState(
            controller=self.controller.initial_state(batch_size),
            reads=self.read0.expand(batch_size, -1, -1),
            read_weights=weights[: self.R].expand(batch_size, -1, -1),
            write_weights=weights[self.R:].expand(batch_size, -1, -1),
            memory=self.memory0.expand(batch_size, -1, -1),
        )

    def step(self, x: torch.Tensor, state: NTMState):
        """x (B, I) -> logits (B, O), next state, add vectors (B, W, M)."""
        B = x.shape[0]
        hidden, ctrl_state = self.controller(torch.cat([x, state.reads.reshape(B, -1)], dim=-1), state.controller)
        reads, read_w, write_w, memory, add = self.memory_step(self.heads(hidden), state)
        logits = self.output(torch.cat([hidden, reads.reshape(B, -1)], dim=-1))
        return logits, NTMState(ctrl_state, reads, read_w, write_w, memory), add

    def memory_step(self, params: torch.Tensor, state: NTMState):
        """Steps 2-3 of a time step: the heads' linear outputs params (B, P) and the previous
        state -> reads (B, R, M), read weights (B, R, N), write weights (B, W, N), the new
        memory (B, N, M) and the add vectors (B, W, M)."""
        B = params.shape[0]
        H = self.R + self.W
        addr = params[:, : H * self.address_size].view(B, H, self.address_size)
        key, beta, gate, shifts, gamma = addr.split([self.M, 1, 1, self.K, 1], dim=-1)
        previous = torch.cat([state.read_weights, state.write_weights], dim=1)  # (B, R+W, N)
        weights = addressing.address(state.memory, previous, key, F.softplus(beta), torch.sigmoid(gate),
                                     torch.softmax(shifts, dim=-1), 1.0 + F.softplus(gamma))
        read_w, write_w = weights[:, : self.R], weights[:, self.R:]
        reads = addressing.read(state.memory, read_w)  # (B, R, M)
        erase, add = params[:, H * self.address_size:].view(B, self.W, 2 * self.M).split(self.M, dim=-1)
        memory = addressing.write(state.memory, write_w, torch.sigmoid(erase), add)
        return reads, read_w, write_w, memory, add

    def forward(self, inputs: torch.Tensor, trace: bool = False):
        """inputs (T, B, I) -> logits (T, B, O); with trace=True also a Trace."""
        state = self.initial_state(inputs.shape[1])
        outputs, reads, writes, adds = [], [], [], []
        for x in inputs:
            logits, state, add = self.step(x, state)
            outputs.append(logits)
            if trace:
                reads.append(state.read_weights)
                writes.append(state.write_weights)
                adds.append(add)
        logits = torch.stack(outputs)
        if trace:
            return logits, Trace(torch.stack(reads), torch.stack(writes), torch.stack(adds))
        return logits
