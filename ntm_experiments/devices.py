"""Which device a run or a sweep's job trains on."""

from __future__ import annotations

from .errors import ConfigError


def resolve_device(name: str) -> str:
    """``auto``: CUDA when present, else the CPU; a CUDA device asked for on a machine without
    CUDA is a ConfigError."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: CUDA is not available on this machine (use device=cpu or device=auto)")
    return name


def job_device(device: str, job_num: int | None, cuda_devices: int) -> str:
    """The device a job uses: with ``device=auto`` and several CUDA devices, job ``n`` of a
    sweep takes ``cuda:(n mod count)``, so parallel jobs spread over the GPUs; otherwise
    ``device`` is left as it is (``auto`` then means CUDA when present, else CPU)."""
    if device != "auto" or job_num is None or cuda_devices < 2:
        return device
    return f"cuda:{job_num % cuda_devices}"


__all__ = ["resolve_device", "job_device"]
