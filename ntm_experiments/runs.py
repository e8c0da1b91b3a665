"""Reading finished (or checkpointed) runs back: find run folders, their composed config and scalars.

Shared by ``ntm-aggregate`` and ``ntm-report``. A run folder is any folder holding Hydra's
``.hydra/config.yaml`` and at least one ``events.out.tfevents.*`` file; a sweep folder is any
tree of such folders (``outputs/multirun/<time>/...``, ``outputs/<task>/<model>/...``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

COST_TAG = "train/cost_bits_per_sequence"  # the training cost train.py logs, bits per sequence
EVAL_PREFIX, EVAL_SUFFIX = "eval/", "/cost_bits_per_sequence"
OPTIMAL_SUFFIX = "/optimal_cost_bits_per_sequence"


@dataclass
class Run:
    path: Path
    config: DictConfig
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return str(self.config.task.name)

    @property
    def model(self) -> str:
        return str(self.config.model.name)

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def budget(self) -> str:
        """The composed config's top-level ``budget`` (a name, or a group with a ``name``); "custom" if absent."""
        budget = self.config.get("budget", None)
        if budget is None:
            return "custom"
        if isinstance(budget, DictConfig):
            return str(budget.get("name", "custom"))
        return str(budget)

    @property
    def curve(self) -> list[tuple[int, float]]:
        """Training cost in bits per sequence against sequences seen."""
        return self.scalars.get(COST_TAG, [])

    @property
    def sequences(self) -> int:
        """Sequences seen at the last logged training point (0 if none)."""
        return self.curve[-1][0] if self.curve else 0

    def last(self, tag: str) -> float | None:
        values = self.scalars.get(tag)
        return values[-1][1] if values else None

    def generalisation(self) -> dict[str, float]:
        """Last evaluation of each ``eval/<setting>/cost_bits_per_sequence``, by setting."""
        return {tag[len(EVAL_PREFIX):-len(EVAL_SUFFIX)]: values[-1][1] for tag, values in self.scalars.items()
                if tag.startswith(EVAL_PREFIX) and tag.endswith(EVAL_SUFFIX) and not tag.endswith(OPTIMAL_SUFFIX)
                and values}

    def checkpoint(self) -> Path | None:
        from .checkpoint import CHECKPOINT_NAME  # imports torch: only when a checkpoint is asked for

        path = self.path / CHECKPOINT_NAME
        return path if path.is_file() else None


def _is_run(folder: Path) -> bool:
    return (folder / ".hydra" / "config.yaml").is_file() and any(folder.glob("events.out.tfevents.*"))


def find_run_dirs(root: Path) -> list[Path]:
    """Run folders at or under ``root``, sorted; raises ConfigError for a missing path or no runs."""
    if not root.exists():
        raise ConfigError(f"{root}: no such file or directory (give a run folder or a sweep folder)")
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder (give a run folder or a sweep folder)")
    found = sorted({p.parent.parent for p in root.rglob(".hydra/config.yaml") if _is_run(p.parent.parent)})
    if not found:
        raise ConfigError(f"{root}: no runs found (a run folder holds .hydra/config.yaml and events.out.tfevents.*)")
    return found


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a run's event files, as (step, value) pairs sorted by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # a resumed run's purge of re-logged steps is expected: no warning for it
    logging.getLogger("tensorboard").setLevel(logging.ERROR)

    # keep every scalar; skip the pictures and histograms, which we do not need
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1, "histograms": 1,
                                                         "tensors": 1, "compressedHistograms": 1, "audio": 1})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get("scalars", []):
        points: dict[int, float] = {}
        for event in acc.Scalars(tag):
            points[int(event.step)] = float(event.value)  # a resumed run's re-logged step: the newest wins
        out[tag] = sorted(points.items())
    return out


def load_run(run_dir: Path) -> Run:
    try:
        config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    except Exception as error:  # YAML and OmegaConf raise many types for a damaged file
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{run_dir / '.hydra' / 'config.yaml'}: not a readable config ({first})") from None
    if not isinstance(config, DictConfig) or "task" not in config or "model" not in config:
        raise ConfigError(f"{run_dir / '.hydra' / 'config.yaml'}: not an ntm-train config (no task/model)")
    return Run(run_dir, config, read_scalars(run_dir))


def load_runs(roots: Iterable[Path]) -> list[Run]:
    """All runs under the given folders (each must hold at least one), without duplicates."""
    dirs: dict[Path, None] = {}
    for root in roots:
        for d in find_run_dirs(Path(root)):
            dirs[d.resolve()] = None
    return [load_run(d) for d in dirs]


# What makes two runs the same run, repeated: the composed config but these, which only say how long
# it ran, where, how fast and what it logged or evaluated (the training curve does not depend on them).
NOT_SETTINGS = ("resume", "device", "progress", "budget", "objective", "eval", "train.total_sequences",
                "train.log_every", "train.checkpoint_every", "train.fast_path", "train.fast_path_core",
                "train.fast_path_min_sequences")


def settings(run: Run) -> str:
    """The run's task, model, seed and training settings (all but NOT_SETTINGS), as one string."""
    config = OmegaConf.to_container(run.config, resolve=False)
    for key in NOT_SETTINGS:
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node.get(parent, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return json.dumps(config, sort_keys=True, default=str)


@dataclass
class Repeat:
    """A run left out because it repeats ``kept``: the same task, model, seed and settings."""
    run: Run
    kept: Run

    def why(self) -> str:
        mine, theirs = self.run.sequences, self.kept.sequences
        reached = (f"which reached more sequences ({theirs:,} against {mine:,})" if theirs > mine else
                   f"both reached {mine:,} sequences; the later folder is kept")
        return f"{_shown(self.run.path)}: the same task, model, seed and settings as {_shown(self.kept.path)}, {reached}"


def _shown(path: Path) -> str:
    """A path as the user likely gave it: relative to the working folder when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def distinct(runs: Iterable[Run]) -> tuple[list[Run], list[Repeat]]:
    """Runs of the same task, model, seed and settings (an aborted run and its rerun, a duplicate)
    are one seed: the one that reached the most sequences is kept (of equals, the last folder by
    name, which for outputs/<task>/<model>/<date>_<time> is the newest). Returns (kept, left out)."""
    runs = list(runs)
    by_settings: dict[str, list[Run]] = {}
    for run in runs:
        by_settings.setdefault(settings(run), []).append(run)
    kept, repeats = [], []
    for same in by_settings.values():
        best = max(same, key=lambda r: (r.sequences, str(r.path)))
        kept.append(best)
        repeats += [Repeat(r, best) for r in same if r is not best]
    order = {id(r): i for i, r in enumerate(runs)}
    return sorted(kept, key=lambda r: order[id(r)]), sorted(repeats, key=lambda r: order[id(r.run)])


def group(runs: Iterable[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (task, model), each group sorted by seed then path."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.task, run.model), []).append(run)
    return {key: sorted(value, key=lambda r: (r.seed, str(r.path))) for key, value in sorted(groups.items())}


# ---------------------------------------------------------------- statistics across seeds
@dataclass
class Band:
    """Median and quartiles across seeds on the union of logged steps (sequences seen)."""
    x: np.ndarray
    median: np.ndarray
    q25: np.ndarray
    q75: np.ndarray
    count: np.ndarray  # seeds with data at each x

    def at(self, sequences: float) -> float | None:
        """The median curve at ``sequences`` (linear between logged points); None outside the data."""
        if len(self.x) == 0 or not self.x[0] <= sequences <= self.x[-1]:
            return None
        return float(np.interp(sequences, self.x, self.median))

    def mean_over(self, lo: float, hi: float) -> float | None:
        inside = (self.x >= lo) & (self.x <= hi)
        return float(self.median[inside].mean()) if inside.any() else None


def band(curves: list[list[tuple[int, float]]]) -> Band:
    """Each seed's curve enters only where it has data: linear between its own logged points,
    nothing before its first or after its last."""
    curves = [c for c in curves if c]
    x = np.array(sorted({s for c in curves for s, _ in c}), dtype=float)
    grid = np.full((len(curves), len(x)), np.nan)
    for i, c in enumerate(curves):
        steps, values = np.array([s for s, _ in c], float), np.array([v for _, v in c], float)
        inside = (x >= steps[0]) & (x <= steps[-1])
        grid[i, inside] = np.interp(x[inside], steps, values)
    count = np.sum(np.isfinite(grid), axis=0)
    if len(x) == 0:
        empty = np.array([])
        return Band(x, empty, empty, empty, count)
    median, q25, q75 = (np.nanpercentile(grid, q, axis=0) for q in (50, 25, 75))
    return Band(x, median, q25, q75, count)


def sequences_to_threshold(curve: list[tuple[int, float]], threshold: float) -> int | None:
    """Sequences seen at the first logged point below ``threshold`` bits; None if never."""
    for step, value in curve:
        if math.isfinite(value) and value < threshold:
            return step
    return None


def median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(kept)) if kept else None


# ---------------------------------------------------------------- writing
def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temp file beside ``path`` and rename, so a killed process leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def save_figure(fig, path: Path, dpi: int = 100) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    os.replace(tmp, path)
