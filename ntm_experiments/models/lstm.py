"""The paper's plain LSTM baseline (§4, Table 3).

Stacked layers where the external input feeds every layer and each upper layer is also
fed by the one below; no peepholes; one bias per gate; a learned initial h and c per
layer; the output layer reads the hidden state of every layer. Per layer l:
4 (fan_in H + H H + H) + 2H parameters with fan_in = I (l = 1) or I + H (l > 1), plus
O (L H) + O for the output: exactly Table 3's counts for the paper's task widths.
"""

from __future__ import annotations

import torch
from torch import nn


class StackedLSTM(nn.Module):
    def __init__(self, input_size: int, output_size: int, hidden_size: int = 256, layers: int = 3, **_):
        super().__init__()
        self.H, self.L = hidden_size, layers
        # the input-to-gates weights of all layers in one matrix (one matmul for the whole sequence)
        self.from_input = nn.Linear(input_size, layers * 4 * hidden_size)
        self.recurrent = nn.ModuleList(nn.Linear(hidden_size, 4 * hidden_size, bias=False) for _ in range(layers))
        self.from_below = nn.ModuleList(nn.Linear(hidden_size, 4 * hidden_size, bias=False) for _ in range(layers - 1))
        self.h0 = nn.Parameter(torch.zeros(layers, hidden_size))  # learned initial state (§4)
        self.c0 = nn.Parameter(torch.zeros(layers, hidden_size))
        self.output = nn.Linear(layers * hidden_size, output_size)

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, c), each (L, B, H)."""
        return self.h0[:, None].expand(-1, batch_size, -1), self.c0[:, None].expand(-1, batch_size, -1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (T, B, I) -> logits (T, B, O)."""
        T, B, _ = inputs.shape
        gates_in = self.from_input(inputs).view(T, B, self.L, 4 * self.H)
        h0, c0 = self.initial_state(B)
        h, c = list(h0.unbind(0)), list(c0.unbind(0))
        tops = []
        for t in range(T):
            below = None
            for layer in range(self.L):
                gates = gates_in[t, :, layer] + self.recurrent[layer](h[layer])
                if below is not None:
                    gates = gates + self.from_below[layer - 1](below)
                i, f, g, o = gates.chunk(4, dim=-1)
                c[layer] = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
                h[layer] = torch.sigmoid(o) * torch.tanh(c[layer])
                below = h[layer]
            tops.append(torch.cat(h, dim=-1))
        return self.output(torch.stack(tops))
