"""Which device a run or a sweep's job trains on."""

from __future__ import annotations

import pytest
import torch

from ntm_experiments.devices import job_device, resolve_device
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
