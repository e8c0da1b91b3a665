"""Models: NTM (feedforward or LSTM controller) and the plain LSTM baseline.

Models know nothing about tasks: they map an input sequence (T, B, I) to output logits
(T, B, O), given only the widths. This package is the paper, written plainly; the fast path's
cores (ntm_experiments/fast/) compute the same functions and are tested against these.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from .lstm import StackedLSTM
from .ntm import NTM, NTMState, Trace


def make_model(cfg: Mapping[str, Any], input_size: int, output_size: int) -> nn.Module:
    """Build a model from its config node (``cfg.model``): every key but ``name`` is one of the
    constructor's keyword arguments (all required: the values live in conf/model/ and conf/shared/ntm.yaml)."""
    settings = dict(cfg)
    settings.pop("name")  # the model group name; the keys left are the constructor's
    if "controller" in settings:
        return NTM(input_size, output_size, **settings)
    return StackedLSTM(input_size, output_size, **settings)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["NTM", "NTMState", "Trace", "StackedLSTM", "make_model", "count_parameters"]
