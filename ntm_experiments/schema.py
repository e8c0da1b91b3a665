"""Dataclass schemas behind the YAML in ``conf/``: the keys and their types, no values.

Every YAML file in ``conf/`` extends one of the schemas below, so a mistyped key or a
value of the wrong type fails when Hydra composes the config, before anything runs.
Each value, with the comment saying where it comes from, lives once, in the YAML; here
every key is ``MISSING`` (``???``), so a key the YAML forgot to set fails when read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


# ---------------------------------------------------------------- tasks (§4.1-4.5)
@dataclass
class TaskConfig:
    name: str = MISSING


@dataclass
class CopyConfig(TaskConfig):
    bits: int = MISSING
    min_length: int = MISSING
    max_length: int = MISSING
    spare_channels: int = MISSING


@dataclass
class RepeatCopyConfig(TaskConfig):
    bits: int = MISSING
    min_length: int = MISSING
    max_length: int = MISSING
    min_repeats: int = MISSING
    max_repeats: int = MISSING
    repeats_mean: float = MISSING
    repeats_std: float = MISSING


@dataclass
class AssociativeRecallConfig(TaskConfig):
    bits: int = MISSING
    item_length: int = MISSING
    min_items: int = MISSING
    max_items: int = MISSING


@dataclass
class NGramsConfig(TaskConfig):
    context: int = MISSING
    length: int = MISSING


@dataclass
class PrioritySortConfig(TaskConfig):
    bits: int = MISSING
    num_inputs: int = MISSING
    num_outputs: int = MISSING


# ---------------------------------------------------------------- models (§3, §4)
@dataclass
class ModelConfig:
    name: str = MISSING


@dataclass
class NTMConfig(ModelConfig):
    controller: str = MISSING
    controller_size: int = MISSING
    controller_layers: int = MISSING
    read_heads: int = MISSING
    write_heads: int = MISSING
    memory_rows: int = MISSING
    memory_width: int = MISSING
    shift_range: int = MISSING
    memory_init: str = MISSING
    memory_init_value: float = MISSING
    initial_focus: float = MISSING


@dataclass
class LSTMConfig(ModelConfig):
    hidden_size: int = MISSING
    layers: int = MISSING


# ---------------------------------------------------------------- training (§4.6)
@dataclass
class TrainConfig:
    lr: float = MISSING
    lr_batch_scaling: str = MISSING
    momentum: float = MISSING
    decay: float = MISSING
    eps: float = MISSING
    clip_value: float = MISSING
    max_bad_steps: int = MISSING
    max_restores: int = MISSING
    total_sequences: int = MISSING
    batch_size: int = MISSING
    log_every: int = MISSING
    checkpoint_every: int = MISSING
    fast_path: str = MISSING
    fast_path_core: str = MISSING
    fast_path_min_sequences: int = MISSING
    activity_every: int = MISSING


@dataclass
class EvalConfig:
    every: int = MISSING
    sequences: int = MISSING
    seed: int = MISSING
    lengths: Optional[list[int]] = MISSING
    pictures: bool = MISSING


@dataclass
class PaperRow:
    table: str = MISSING
    params: Optional[int] = MISSING


@dataclass
class Config:
    task: Any = MISSING
    model: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    paper: PaperRow = field(default_factory=PaperRow)
    seed: int = MISSING
    device: str = MISSING
    auto_cuda_min_sequences: int = MISSING
    resume: Any = MISSING
    progress: bool = MISSING
    budget: str = MISSING
    objective: str = MISSING


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="ntm_config_schema", node=Config)
    for name, node in {
        "copy_schema": CopyConfig,
        "repeat_copy_schema": RepeatCopyConfig,
        "associative_recall_schema": AssociativeRecallConfig,
        "ngrams_schema": NGramsConfig,
        "priority_sort_schema": PrioritySortConfig,
    }.items():
        cs.store(group="schema/task", name=name.removesuffix("_schema"), node=node)
    cs.store(group="schema/model", name="ntm", node=NTMConfig)
    cs.store(group="schema/model", name="lstm", node=LSTMConfig)


__all__ = ["Config", "register_configs"]
