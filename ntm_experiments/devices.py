"""Which device a run or a sweep's job trains on."""

from __future__ import annotations

from .errors import ConfigError


def resolve_device(name: str, sequences_per_step: int | None = None, cuda_min_sequences: int = 0) -> str:
    """``auto``: CUDA when present and a training step trains at least ``cuda_min_sequences``
    sequences (``sequences_per_step``: the batch size times the runs of a stack; None: any step,
    e.g. an evaluation), else the CPU; a CUDA device asked for on a machine without CUDA is a
    ConfigError."""
    import torch

    if name == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        return "cuda" if sequences_per_step is None or sequences_per_step >= cuda_min_sequences else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: CUDA is not available on this machine (use device=cpu or device=auto)")
    return name


def auto_device_note(name: str, device, sequences_per_step: int, cuda_min_sequences: int) -> str | None:
    """One line for the log when ``device=auto`` chose the CPU on a machine with CUDA (the step
    is too small for a GPU); None otherwise."""
    import torch

    if name != "auto" or str(device) != "cpu" or not torch.cuda.is_available():
        return None
    return (f"device=auto: training on the CPU, not CUDA: a step of {sequences_per_step} sequences is below "
            f"auto_cuda_min_sequences={cuda_min_sequences} (so small a GPU step is bound by kernel launches; "
            "stack runs with hydra/launcher=stacked, or pass device=cuda)")


def job_device(device: str, job_num: int | None, cuda_devices: int, sequences_per_step: int | None = None,
               cuda_min_sequences: int = 0) -> str:
    """The device a job uses: with ``device=auto``, several CUDA devices and steps large enough
    for a GPU (resolve_device), job ``n`` of a sweep takes ``cuda:(n mod count)``, so parallel
    jobs spread over the GPUs; otherwise ``device`` is left as it is (``auto`` then means what
    resolve_device says)."""
    small = sequences_per_step is not None and sequences_per_step < cuda_min_sequences
    if device != "auto" or job_num is None or cuda_devices < 2 or small:
        return device
    return f"cuda:{job_num % cuda_devices}"


__all__ = ["auto_device_note", "resolve_device", "job_device"]
