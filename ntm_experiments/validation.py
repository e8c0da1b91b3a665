"""The checks across values that Hydra's types alone cannot express, run before anything starts."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .fast.cores import CORES
from .optim import LR_BATCH_SCALINGS, batch_scaled_lr

# what the Hydra task function returns (and sweepers such as Optuna minimise), bits per sequence
OBJECTIVES = ("final_train_cost", "best_eval_cost")
FLOAT32_MAX = torch.finfo(torch.float32).max  # a learning rate beyond it cannot be applied to float32 weights
FAST_PATH_VALUES = ("auto", "true", "false")  # train.fast_path
FAST_PATH_CORES = ("auto", *CORES)  # train.fast_path_core: auto (the device's default) or a core of fast/cores.py


def _positive(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{key}={value}: must be > 0")


def validate(cfg: DictConfig) -> None:
    """Checks across values that a type alone cannot express; raises ConfigError."""
    for key in ("train.lr", "train.clip_value", "train.total_sequences", "train.batch_size", "train.max_bad_steps",
                "train.log_every", "train.checkpoint_every", "train.eps"):
        _positive(cfg, key)
    for key in ("eval.every", "eval.sequences"):
        _positive(cfg, key)
    for value in cfg.eval.lengths or []:
        if value <= 0:
            raise ConfigError(f"eval.lengths={list(cfg.eval.lengths)}: every entry must be a positive integer")
    if cfg.train.lr_batch_scaling not in LR_BATCH_SCALINGS:
        raise ConfigError(f"train.lr_batch_scaling={cfg.train.lr_batch_scaling}: must be one of {', '.join(LR_BATCH_SCALINGS)}")
    scaled = batch_scaled_lr(cfg.train.lr, cfg.train.batch_size, cfg.train.lr_batch_scaling)
    if scaled > FLOAT32_MAX:  # the optimiser multiplies float32 tensors by it
        raise ConfigError(f"train.lr={cfg.train.lr}: scaled for the batch of {cfg.train.batch_size} "
                          f"(train.lr_batch_scaling={cfg.train.lr_batch_scaling}) it is {scaled:.3g}, beyond float32's "
                          f"largest value {FLOAT32_MAX:.3g}; must be smaller")
    if str(cfg.train.fast_path).lower() not in FAST_PATH_VALUES:
        raise ConfigError(f"train.fast_path={cfg.train.fast_path}: must be one of {', '.join(FAST_PATH_VALUES)}")
    if str(cfg.train.fast_path_core) not in FAST_PATH_CORES:
        raise ConfigError(f"train.fast_path_core={cfg.train.fast_path_core}: must be one of {', '.join(FAST_PATH_CORES)}")
    if cfg.train.fast_path_min_sequences < 0:
        raise ConfigError(f"train.fast_path_min_sequences={cfg.train.fast_path_min_sequences}: must be >= 0")
    if cfg.train.max_restores < 0:
        raise ConfigError(f"train.max_restores={cfg.train.max_restores}: must be >= 0")
    for key in ("train.momentum", "train.decay"):
        value = OmegaConf.select(cfg, key)
        if not 0 <= value < 1:
            raise ConfigError(f"{key}={value}: must be in [0, 1)")
    if cfg.train.checkpoint_every % cfg.train.log_every:
        raise ConfigError(f"train.checkpoint_every={cfg.train.checkpoint_every}: must be a multiple of "
                          f"train.log_every={cfg.train.log_every} (so a resumed curve joins exactly)")
    for key, value in cfg.task.items():
        if isinstance(value, int) and not isinstance(value, bool) and key != "spare_channels" and value <= 0:
            raise ConfigError(f"task.{key}={value}: must be a positive integer")
    for lo, hi in (("min_length", "max_length"), ("min_repeats", "max_repeats"), ("min_items", "max_items")):
        if lo in cfg.task and cfg.task[lo] > cfg.task[hi]:
            raise ConfigError(f"task.{lo}={cfg.task[lo]} is larger than task.{hi}={cfg.task[hi]}")
    if cfg.task.name == "associative_recall" and cfg.task.min_items < 2:
        raise ConfigError(f"task.min_items={cfg.task.min_items}: must be at least 2 (the query needs a next item)")
    if cfg.task.name == "priority_sort" and cfg.task.num_outputs > cfg.task.num_inputs:
        raise ConfigError(f"task.num_outputs={cfg.task.num_outputs}: must be at most task.num_inputs={cfg.task.num_inputs}")
    if cfg.task.get("spare_channels", 0) < 0:
        raise ConfigError(f"task.spare_channels={cfg.task.spare_channels}: must be >= 0")
    model = cfg.model
    for key, value in model.items():
        if isinstance(value, int) and not isinstance(value, bool) and key not in ("shift_range",) and value <= 0:
            raise ConfigError(f"model.{key}={value}: must be a positive integer")
    if "controller" in model:
        if model.controller not in ("ff", "lstm"):
            raise ConfigError(f"model.controller={model.controller}: allowed values are ff, lstm")
        if model.memory_init not in ("learned", "constant"):
            raise ConfigError(f"model.memory_init={model.memory_init}: allowed values are learned, constant")
        if model.memory_init == "constant" and model.memory_init_value == 0:
            raise ConfigError("model.memory_init_value=0: must be non-zero (zero memory makes cosine similarity undefined)")
        if not 0 <= model.shift_range < model.memory_rows / 2:
            raise ConfigError(f"model.shift_range={model.shift_range}: must be in [0, {model.memory_rows / 2:g}) (less than half of model.memory_rows={model.memory_rows})")
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"objective={cfg.objective}: allowed values are {', '.join(OBJECTIVES)}")
    device = str(cfg.device)
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device={device}: allowed values are auto, cpu, cuda, cuda:N")


__all__ = ["validate", "OBJECTIVES", "FAST_PATH_VALUES", "FAST_PATH_CORES"]
