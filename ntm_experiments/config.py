"""Dataclass schemas behind the YAML in ``conf/``, and the checks Hydra cannot express.

Every YAML file in ``conf/`` extends one of the schemas below, so a mistyped key or a
value of the wrong type fails when Hydra composes the config, before anything runs.
The values themselves (and the comments saying where each comes from) live in the
YAML; the defaults here are only what the schema falls back to.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from .fast.cores import CORES


class RunError(Exception):
    """A problem the user can act on; the CLI prints its one-line message and exits 2."""


class ConfigError(RunError, ValueError):
    """A bad setting, path or checkpoint."""


class TrainingDiverged(RunError):
    """Training kept producing non-finite values after restoring the last good state."""


# what the Hydra task function returns (and sweepers such as Optuna minimise), bits per sequence
OBJECTIVES = ("final_train_cost", "best_eval_cost")


def config_dir() -> str:
    """Absolute path of the Hydra config tree.

    A regular install ships ``conf/`` inside the package (``ntm_experiments/conf``, see
    ``pyproject.toml``); an editable install or a source checkout reads the top-level
    ``conf/`` beside the package. The packaged copy wins when both exist.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise ConfigError(f"no Hydra config tree found (looked in {package / 'conf'} and {package.parent / 'conf'})")


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


FAST_PATH_VALUES = ("auto", "true", "false")
FAST_PATH_CORES = ("auto", *CORES)  # auto: the device's default core (ntm_experiments/fast/cores.py)


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


def _resolve_run_dir(resume: Any, fresh: str) -> str:
    """Hydra run directory: ``fresh`` for a new run; for ``resume=true`` the newest run of
    the same task and model that holds a checkpoint; for ``resume=<dir>`` that directory."""
    if resume is False or resume is None or str(resume).lower() == "false":
        return fresh
    if resume is True or str(resume).lower() == "true":
        parent = Path(fresh).parent
        runs = sorted(p for p in parent.glob("*") if (p / "checkpoint.pt").is_file()) if parent.is_dir() else []
        if not runs:
            raise ConfigError(f"resume=true: no run with a checkpoint.pt under {parent}/ (start a fresh run, or pass resume=<run dir>)")
        return str(runs[-1])
    path = Path(str(resume)).expanduser()
    if not (path / "checkpoint.pt").is_file():
        raise ConfigError(f"resume={resume}: no checkpoint.pt in that directory (allowed: true, false, or a run directory holding checkpoint.pt)")
    return str(path)


def paper_seeds(budget: str) -> str:
    """The seeds a paper experiment sweeps (conf/experiment/): one for the smoke budget, else three."""
    return "1" if str(budget) == "smoke" else "1,2,3"


# conf/hydra/launcher/joblib.yaml stands in for the joblib plugin's config of the same name on
# purpose (a sensible n_jobs) and is still checked against the plugin's schema: not news to users
warnings.filterwarnings("ignore", message=r"(?s).*hydra/launcher/joblib' is validated against ConfigStore schema")


def _parallel_jobs() -> int:
    from .sweep import parallel_jobs  # jobs the joblib launcher runs at once (conf/hydra/launcher/joblib.yaml)

    return parallel_jobs()


if not OmegaConf.has_resolver("ntm_parallel_jobs"):
    OmegaConf.register_new_resolver("ntm_parallel_jobs", _parallel_jobs)
if not OmegaConf.has_resolver("ntm_paper_seeds"):
    OmegaConf.register_new_resolver("ntm_paper_seeds", paper_seeds)
if not OmegaConf.has_resolver("ntm_run_dir"):
    OmegaConf.register_new_resolver("ntm_run_dir", _resolve_run_dir)
register_configs()


# ---------------------------------------------------------------- checks at start
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


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: CUDA is not available on this machine (use device=cpu or device=auto)")
    return name


def hparams(cfg: DictConfig) -> dict[str, Any]:
    """Flat {dotted key: scalar} view of the run's settings, for TensorBoard's hparams."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node if isinstance(node, (int, float, str, bool)) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


__all__ = ["Config", "RunError", "ConfigError", "TrainingDiverged", "config_dir", "validate", "resolve_device", "hparams"]
