"""One checkpoint dict per run, written atomically: temp file, fsync, rename.

A kill at any moment leaves either the previous checkpoint or the new one at
``<run dir>/checkpoint.pt``, never a half-written file.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def rng_states(data_generator: torch.Generator, data_state: torch.Tensor | None = None) -> dict[str, Any]:
    """The RNG states a resume needs; ``data_state`` (if given) replaces the data generator's
    current state, e.g. its state before a batch that was drawn ahead but not yet trained on."""
    states = {
        "torch": torch.get_rng_state(),
        "data": data_generator.get_state() if data_state is None else data_state,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], data_generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    data_generator.set_state(states["data"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` so that ``path`` is always whole or absent."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint; a missing, corrupt or foreign file raises ConfigError (one line)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ConfigError(f"{path}: no checkpoint there")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a damaged file
        raise ConfigError(f"{path}: not a readable checkpoint ({type(error).__name__}: {str(error).splitlines()[0]})")
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        found = payload.get("format_version") if isinstance(payload, dict) else type(payload).__name__
        raise ConfigError(f"{path}: checkpoint format {found}, this version reads format {FORMAT_VERSION}")
    return payload
