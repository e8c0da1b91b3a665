"""The fused GPU core (ntm_experiments/fast/triton.py) computes the model's function. Without CUDA its
Triton kernels run in Triton's interpreter on the CPU (conftest sets TRITON_INTERPRET=1), so
their arithmetic is checked here on every machine; tests/test_gpu.py runs them compiled."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")  # an optional dependency of the package (the test extra installs it)

from conftest import compose_config, graves_rmsprop  # noqa: E402
from test_fast import (VARIANTS, assert_is_the_models_function_in_float64, assert_small_and_zero_rows_keep_eq_6,  # noqa: E402
                       assert_steps_agree, build)
from ntm_experiments.fast import FastStep, PlainStep  # noqa: E402
from ntm_experiments.run_state import build_run  # noqa: E402
from ntm_experiments.fast.triton import TritonNTM  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_core_is_exactly_the_models_function_in_float64(variant):
    """Every kernel's forward and hand-written backward, against NTM.forward and autograd:
    several layers, several read and write heads, shift ranges 0 to 2."""
    assert_is_the_models_function_in_float64(TritonNTM, variant, DEVICE)


def test_fused_core_is_the_models_function_at_saturated_heads():
    """As tests/test_fast.py's saturated case: softplus past its threshold, saturated gates."""
    assert_is_the_models_function_in_float64(TritonNTM, "lstm, 2 layers, 2 heads each", DEVICE, saturate=True)


def test_fused_core_keeps_eq_6_at_small_and_zero_rows():
    assert_small_and_zero_rows_keep_eq_6(TritonNTM, lambda saved, B, H, X: saved[5][0], DEVICE)


@pytest.mark.parametrize("task_name, model_name", [("repeat_copy", "ntm_lstm"), ("associative_recall", "ntm_ff")])
def test_fast_path_with_the_fused_core_agrees_with_plain(task_name, model_name):
    """In float32, through FastStep as ntm-train runs it (train.fast_path_core=triton)."""
    _, task, model, params = build(task_name, model_name)
    model.to(DEVICE)
    opt = graves_rmsprop(params)
    fast = FastStep(model, task, opt, params, DEVICE, graphs=False, core="triton")
    assert fast.core == "triton"
    batch = task.sample(4, torch.Generator().manual_seed(1)).to(DEVICE)
    assert_steps_agree(PlainStep(model, task, opt, params), fast, batch)


def test_fused_core_at_the_papers_size_agrees_with_plain():
    """The memory tile at its real size (128 x 20, padded to 128 x 32), float32."""
    cfg = compose_config("task=copy", "model=ntm_lstm")
    task, model, _, params = build_run(cfg, DEVICE)
    opt = graves_rmsprop(params)
    fast = FastStep(model, task, opt, params, DEVICE, graphs=False, core="triton")
    batch = task.sample(2, torch.Generator().manual_seed(5), length=4).to(DEVICE)
    assert_steps_agree(PlainStep(model, task, opt, params), fast, batch)


def test_fused_core_elsewhere_falls_back_with_one_line(monkeypatch, caplog):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # compiled kernels: CUDA only
    _, task, model, params = build("copy", "ntm_lstm")
    with caplog.at_level("WARNING", logger="ntm_experiments.fast"):
        fast = FastStep(model, task, graves_rmsprop(params), params, torch.device("cpu"), core="triton")
    assert fast.core == "native"
    assert "the fused GPU core runs on CUDA, not cpu; using the native core instead" in caplog.text
