"""The optimiser: RMSProp in the form of Graves (2013), eqs. 38-41, epsilon inside the square root."""

from __future__ import annotations

import pytest
import torch

from ntm_experiments.optim import GravesRMSprop


def test_graves_rmsprop_by_hand():
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = GravesRMSprop([w], lr=0.1, decay=0.95, momentum=0.9, eps=1e-4)
    n = m = delta = 0.0
    value = 1.0
    for g in (2.0, -1.0):  # loss = g * w, so dloss/dw = g
        opt.zero_grad()
        (g * w).sum().backward()
        opt.step()
        n = 0.95 * n + 0.05 * g * g
        m = 0.95 * m + 0.05 * g
        delta = 0.9 * delta - 0.1 * g / (n - m * m + 1e-4) ** 0.5  # epsilon inside the root
        value += delta
        assert w.item() == pytest.approx(value, rel=1e-12)
        if g == 2.0:  # first step, spelled out: n = 0.2, m = 0.1, D = -0.1 * 2 / sqrt(0.2 - 0.01 + 1e-4)
            assert w.item() == pytest.approx(1 - 0.2 / 0.1901 ** 0.5, rel=1e-12)


def test_graves_rmsprop_differs_from_torch_rmsprop():
    a = torch.nn.Parameter(torch.tensor([1.0]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    ours = GravesRMSprop([a], lr=1e-2, decay=0.95, momentum=0.9, eps=1e-4)
    theirs = torch.optim.RMSprop([b], lr=1e-2, alpha=0.95, momentum=0.9, eps=1e-4, centered=True)
    for opt, p in ((ours, a), (theirs, b)):
        p.grad = torch.tensor([1e-3])
        opt.step()
    # n = 0.05 g^2 = 5e-8, m = 0.05 g = 5e-5, n - m^2 = 4.75e-8
    ours_expected = 1 - 1e-2 * 1e-3 / (4.75e-8 + 1e-4) ** 0.5          # eps inside the root
    theirs_expected = 1 - 1e-2 * 1e-3 / ((4.75e-8) ** 0.5 + 1e-4)       # eps outside (torch)
    assert a.item() == pytest.approx(ours_expected, rel=1e-6)
    assert b.item() == pytest.approx(theirs_expected, rel=1e-6)
    # with a small gradient, eps inside the root (sqrt(1e-4) = 1e-2) damps the step far more
    assert abs(a.item() - 1.0) < 0.2 * abs(b.item() - 1.0)
