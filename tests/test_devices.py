"""Which device a run or a sweep's job trains on."""

from __future__ import annotations

import pytest
import torch

from ntm_experiments.devices import auto_device_note, job_device, resolve_device
from ntm_experiments.errors import ConfigError


def test_jobs_spread_over_gpus_by_job_number():
    assert [job_device("auto", n, 4) for n in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert job_device("auto", 5, 1) == "auto"      # one GPU (or none): auto picks it, or the CPU
    assert job_device("auto", 5, 0) == "auto"
    assert job_device("auto", None, 4) == "auto"   # a single run is not a sweep job
    assert job_device("cpu", 3, 4) == "cpu"        # an explicit device is kept
    assert job_device("cuda:1", 2, 4) == "cuda:1"


def test_auto_is_cuda_when_present_and_a_missing_cuda_is_one_line():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"^device=cuda:1: CUDA is not available"):
            resolve_device("cuda:1")


def test_auto_takes_cuda_only_for_steps_large_enough_for_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", 1, 16) == "cpu"       # one batch-1 run: launch-bound on a GPU
    assert resolve_device("auto", 16, 16) == "cuda"     # a batch of 16, or 16 stacked batch-1 runs
    assert resolve_device("auto") == "cuda"             # no step size given (an evaluation)
    assert resolve_device("cpu", 64, 16) == "cpu" and resolve_device("cuda", 1, 16) == "cuda"  # asked for: kept
    assert job_device("auto", 3, 4, 1, 16) == "auto"    # too small for a GPU: not spread over them
    assert job_device("auto", 3, 4, 32, 16) == "cuda:3"
    assert "below auto_cuda_min_sequences=16" in auto_device_note("auto", "cpu", 4, 16)
    assert auto_device_note("cpu", "cpu", 4, 16) is None and auto_device_note("auto", "cuda", 32, 16) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", 64, 16) == "cpu" and auto_device_note("auto", "cpu", 4, 16) is None
