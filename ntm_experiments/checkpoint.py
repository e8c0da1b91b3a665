"""One checkpoint dict per run, written atomically: temp file, fsync, rename; and the trained
model read back from one.

A kill at any moment leaves either the previous checkpoint or the new one at
``<run dir>/checkpoint.pt``, never a half-written file.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, Sequence

import numpy as np
import torch

from .errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from torch import nn

    from .tasks import Task

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


class Trained(NamedTuple):
    """A checkpoint's model with its task and its run's config."""
    model: nn.Module       # on the CPU, in training mode, with the checkpoint's weights
    task: Task
    config: DictConfig     # validated: the run's settings over today's defaults, then the overrides
    saved: dict[str, Any]  # the checkpoint itself (sequences_seen, ...)


def run_config(saved_config: dict[str, Any], overrides: Sequence[str] = (),
               keys: Iterable[str] | None = None) -> DictConfig:
    """A saved run's config: today's conf/ for its task and model (so a key added since the run has
    its default), the saved values (only ``keys`` of them, when given) over that, then the dotted
    ``overrides``; validated."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from .config import config_dir
    from .validation import validate

    pair = [f"task={saved_config['task']['name']}", f"model={saved_config['model']['name']}"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=pair)
    saved = saved_config if keys is None else {key: saved_config[key] for key in keys if key in saved_config}
    cfg = OmegaConf.merge(cfg, saved, OmegaConf.from_dotlist(list(overrides)))
    validate(cfg)
    return cfg


def load_model(source: Path | dict[str, Any], overrides: Sequence[str] = (),
               keys: Iterable[str] | None = None) -> Trained:
    """The trained model of a checkpoint (a file, a run directory, or what ``load`` returned), with
    its task and config (``run_config``: ``overrides`` and ``keys`` as there)."""
    from .models import make_model
    from .tasks import make_task

    saved = source if isinstance(source, dict) else load(source)
    cfg = run_config(saved["config"], overrides, keys)
    task = make_task(cfg.task)
    model = make_model(cfg.model, task.input_width, task.output_width)
    model.load_state_dict(saved["model"])
    return Trained(model, task, cfg, saved)
