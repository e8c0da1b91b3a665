"""Dataclass schemas behind the YAML in ``conf/``.

Every YAML file in ``conf/`` extends one of the schemas below, so a mistyped key or a
value of the wrong type fails when Hydra composes the config, before anything runs.
The values themselves (and the comments saying where each comes from) live in the
YAML; the defaults here are only what the schema falls back to.
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
    name: str = "copy"
    bits: int = 8
    min_length: int = 1
    max_length: int = 20
    spare_channels: int = 1


@dataclass
class RepeatCopyConfig(TaskConfig):
    name: str = "repeat_copy"
    bits: int = 6
    min_length: int = 1
    max_length: int = 10
    min_repeats: int = 1
    max_repeats: int = 10
    repeats_mean: float = 5.5
    repeats_std: float = 2.872


@dataclass
class AssociativeRecallConfig(TaskConfig):
    name: str = "associative_recall"
    bits: int = 6
    item_length: int = 3
    min_items: int = 2
    max_items: int = 6


@dataclass
class NGramsConfig(TaskConfig):
    name: str = "ngrams"
    context: int = 5
    length: int = 200


@dataclass
class PrioritySortConfig(TaskConfig):
    name: str = "priority_sort"
    bits: int = 8
    num_inputs: int = 20
    num_outputs: int = 16


# ---------------------------------------------------------------- models (§3, §4)
@dataclass
class ModelConfig:
    name: str = MISSING


@dataclass
class NTMConfig(ModelConfig):
    controller: str = "lstm"
    controller_size: int = 100
    controller_layers: int = 1
    read_heads: int = 1
    write_heads: int = 1
    memory_rows: int = 128
    memory_width: int = 20
    shift_range: int = 1
    memory_init: str = "learned"
    memory_init_value: float = 1e-6
    initial_focus: float = 8.0


@dataclass
class LSTMConfig(ModelConfig):
    hidden_size: int = 256
    layers: int = 3


# ---------------------------------------------------------------- training (§4.6)
@dataclass
class TrainConfig:
    lr: float = 1e-4
    momentum: float = 0.9
    decay: float = 0.95
    eps: float = 1e-4
    clip_value: float = 10.0
    max_bad_steps: int = 10
    max_restores: int = 3
    total_sequences: int = 1_000_000
    batch_size: int = 16
    log_every: int = 1_000
    checkpoint_every: int = 10_000
    fast_path: str = "auto"
    fast_path_core: str = "auto"
    fast_path_min_sequences: int = 5_000


@dataclass
class EvalConfig:
    every: int = 10_000
    sequences: int = 64
    seed: int = 1234
    lengths: Optional[list[int]] = None
    pictures: bool = True


@dataclass
class PaperRow:
    table: str = ""
    params: Optional[int] = None


@dataclass
class Config:
    task: Any = MISSING
    model: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    paper: PaperRow = field(default_factory=PaperRow)
    seed: int = 0
    device: str = "auto"
    resume: Any = False
    progress: bool = True
    budget: str = "custom"                  # which budget (conf/budget/) set the run's length; "custom" if none
    objective: str = "final_train_cost"     # what main() returns for sweepers to minimise


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
