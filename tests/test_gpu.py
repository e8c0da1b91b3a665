"""GPU runs; skipped on machines without CUDA (such as CI's)."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config, scalars
from ntm_experiments.models import NTM
from ntm_experiments.train import COST_TAG, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_ntm_gives_the_same_outputs_on_gpu_and_cpu():
    torch.manual_seed(0)
    model = NTM(10, 9, controller="lstm")
    x = torch.randn(21, 8, 10)
    assert torch.allclose(model(x), model.cuda()(x.cuda()).cpu(), atol=1e-4)


def test_device_auto_trains_on_the_gpu(tmp_path):
    cfg = compose_config("task=copy", "model=ntm_lstm", "train.total_sequences=64", "train.log_every=32",
                         "train.checkpoint_every=64", "eval.sequences=4", "progress=false")
    cost = train(cfg, tmp_path)
    assert cost == pytest.approx(scalars(tmp_path, COST_TAG)[-1][1])
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert next(iter(saved["model"].values())).is_cuda
