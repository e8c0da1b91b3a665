"""GPU runs; skipped on machines without CUDA (such as CI's)."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_config, conf_settings, scalars
from ntm_experiments.models import NTM
from ntm_experiments.train import COST_TAG, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_ntm_gives_the_same_outputs_on_gpu_and_cpu():
    torch.manual_seed(0)
    model = NTM(10, 9, **conf_settings("model", "ntm_lstm"))
    x = torch.randn(21, 8, 10)
    assert torch.allclose(model(x), model.cuda()(x.cuda()).cpu(), atol=1e-4)


def test_device_auto_trains_on_the_gpu(tmp_path):
    cfg = compose_config("task=copy", "model=ntm_lstm", "train.total_sequences=64", "train.log_every=32",
                         "train.checkpoint_every=64", "eval.sequences=4", "progress=false")
    cost = train(cfg, tmp_path)
    assert cost == pytest.approx(scalars(tmp_path, COST_TAG)[-1][1])
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert next(iter(saved["model"].values())).is_cuda


def _fast_and_plain(task_name: str, model_name: str, core: str | None = None):
    """Two identical models on the GPU, one trained by PlainStep, one by FastStep (CUDA graphs)."""
    from ntm_experiments.fast import FastStep, PlainStep
    from ntm_experiments.run_state import build_run

    cfg = compose_config(f"task={task_name}", f"model={model_name}")
    steppers = []
    for kind in (PlainStep, FastStep):
        task, model, opt, params = build_run(cfg, torch.device("cuda"))
        steppers.append(kind(model, task, opt, params) if kind is PlainStep else
                        kind(model, task, opt, params, torch.device("cuda"), core=core))
    return task, steppers


@pytest.mark.parametrize("model_name, core", [("ntm_lstm", None), ("ntm_ff", None), ("lstm", None),
                                              ("ntm_lstm", "sequence"), ("ntm_ff", "sequence"),
                                              ("ntm_lstm", "triton"), ("ntm_ff", "triton")])
def test_fast_path_with_cuda_graphs_trains_like_the_plain_path(model_name, core):
    task, (plain, fast) = _fast_and_plain("copy", model_name, core)
    generator = torch.Generator().manual_seed(3)
    for length in (5, 9, 5, 9, 5):  # two captured shapes, each replayed with new data
        batch = task.sample(8, generator, length=length).to("cuda")
        cost_p, norm_p = plain.forward_backward(batch)
        cost_f, norm_f = fast.forward_backward(batch)
        torch.testing.assert_close(cost_f, cost_p, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(norm_f, norm_p, rtol=1e-4, atol=1e-5)
        for p_plain, p_fast in zip(plain.params, fast.params):
            torch.testing.assert_close(p_fast.grad, p_plain.grad, rtol=1e-3, atol=1e-5)
        plain.update(10.0)
        fast.update(10.0)
        for p_plain, p_fast in zip(plain.params, fast.params):
            torch.testing.assert_close(p_fast, p_plain, rtol=1e-4, atol=1e-6)
    assert len(fast.captured) == 2
    assert fast.core == (core or ("step" if model_name != "lstm" else None))  # no silent fallback


def test_fast_path_recaptures_the_update_after_a_restore():
    task, (plain, fast) = _fast_and_plain("copy", "ntm_lstm")
    generator = torch.Generator().manual_seed(4)
    saved = {k: v.clone() for k, v in fast.model.state_dict().items()}
    import copy
    saved_opt = copy.deepcopy(fast.optimizer.state_dict())
    for _ in range(2):
        fast.forward_backward(task.sample(8, generator, length=6).to("cuda"))
        fast.update(10.0)
    fast.model.load_state_dict(saved)
    fast.optimizer.load_state_dict(saved_opt)  # new state tensors: the captured update is stale
    fast.optimizer_reloaded()
    batch = task.sample(8, generator, length=6).to("cuda")
    for stepper in (plain, fast):
        stepper.forward_backward(batch)
        stepper.update(10.0)
    for p_plain, p_fast in zip(plain.params, fast.params):
        torch.testing.assert_close(p_fast, p_plain, rtol=1e-4, atol=1e-6)
