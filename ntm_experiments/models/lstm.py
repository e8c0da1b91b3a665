"""The paper's plain LSTM baseline (§4, Table 3).

Stacked layers where the external input feeds every layer and each upper layer is also
fed by the one below; no peepholes; one bias per gate; a learned initial h and c per
layer; the output layer reads the hidden state of every layer. Per layer l:
4 (fan_in H + H H + H) + 2H parameters with fan_in = I (l = 1) or I + H (l > 1), plus
O (L H) + O for the output: exactly Table 3's counts for the paper's task widths.

Each layer runs over the whole sequence at once as one ``nn.LSTM`` (PyTorch's fused
kernels, forward and backward) fed with [input, hidden states of the layer below]; its
second bias vector (``bias_hh``) is held at zero and not trained, so every gate has the
one bias Table 3 counts.
"""

from __future__ import annotations

import torch
from torch import nn


class StackedLSTM(nn.Module):
    def __init__(self, input_size: int, output_size: int, *, hidden_size: int, layers: int):
        super().__init__()
        self.H, self.L = hidden_size, layers
        self.layers = nn.ModuleList(
            nn.LSTM(input_size if layer == 0 else input_size + hidden_size, hidden_size) for layer in range(layers))
        for lstm in self.layers:  # one bias per gate (Table 3): bias_ih trains, bias_hh stays 0
            nn.init.zeros_(lstm.bias_hh_l0)
            lstm.bias_hh_l0.requires_grad_(False)
        self.h0 = nn.Parameter(torch.zeros(layers, hidden_size))  # learned initial state (§4)
        self.c0 = nn.Parameter(torch.zeros(layers, hidden_size))
        self.output = nn.Linear(layers * hidden_size, output_size)

    def initial_state(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, c), each (L, B, H)."""
        return self.h0[:, None].expand(-1, batch_size, -1), self.c0[:, None].expand(-1, batch_size, -1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (T, B, I) -> logits (T, B, O)."""
        h0, c0 = self.initial_state(inputs.shape[1])
        hidden, below = [], None
        for layer, lstm in enumerate(self.layers):
            x = inputs if below is None else torch.cat([inputs, below], dim=-1)  # (T, B, I [+ H])
            below, _ = lstm(x, (h0[layer:layer + 1].contiguous(), c0[layer:layer + 1].contiguous()))  # (T, B, H)
            hidden.append(below)
        return self.output(torch.cat(hidden, dim=-1))  # reads every layer: (T, B, L H) -> (T, B, O)
