"""The training loop, in-process: every pair trains, curves are reproducible, main returns the cost,
the settings logged as TensorBoard hparams."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from conftest import MODELS, TASKS, compose_config, scalars
from ntm_experiments.train import COST_TAG, hparams, train

SHORT = ["train.total_sequences=4", "train.batch_size=2", "train.log_every=2", "train.checkpoint_every=4", "eval.sequences=4",
         "progress=false"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_pair_trains_with_the_papers_row(tmp_path, task, model):
    """Two optimiser steps of each full-size paper configuration, checkpoint included."""
    cfg = compose_config(f"task={task}", f"model={model}", *SHORT)
    cost = train(cfg, tmp_path)
    assert math.isfinite(cost) and cost > 0
    assert (tmp_path / "checkpoint.pt").is_file()
    assert [s for s, _ in scalars(tmp_path, COST_TAG)] == [2, 4]


def test_same_seed_same_curve_and_main_returns_the_final_cost(tmp_path):
    tiny = ["task=repeat_copy", "model=ntm_lstm", "model.controller_size=12", "model.memory_rows=12",
            "train.total_sequences=48", "train.batch_size=4", "train.log_every=8", "train.checkpoint_every=16",
            "progress=false"]
    first = train(compose_config(*tiny, "seed=5"), tmp_path / "a")
    again = train(compose_config(*tiny, "seed=5"), tmp_path / "b")
    other = train(compose_config(*tiny, "seed=6"), tmp_path / "c")
    curve = scalars(tmp_path / "a", COST_TAG)
    assert curve == scalars(tmp_path / "b", COST_TAG)
    assert curve != scalars(tmp_path / "c", COST_TAG)
    assert first == again != other
    assert first == pytest.approx(curve[-1][1])  # the value sweepers minimise is the last logged cost


def test_uneven_last_batch_stops_exactly_at_the_total(tmp_path):
    cfg = compose_config("task=copy", "model=lstm", "model.hidden_size=8", "train.total_sequences=10",
                         "train.batch_size=4", "train.log_every=5", "train.checkpoint_every=10", "progress=false")
    train(cfg, tmp_path)
    assert [s for s, _ in scalars(tmp_path, COST_TAG)] == [8, 10]


def test_hparams_are_flat_scalars():
    flat = hparams(compose_config("task=priority_sort", "model=ntm_lstm"))
    assert flat["model.read_heads"] == 5 and flat["train.lr"] == 3e-5 and flat["task.name"] == "priority_sort"
    assert all(isinstance(v, (int, float, str, bool)) for v in flat.values())
    assert OmegaConf.is_config(compose_config()) is True
