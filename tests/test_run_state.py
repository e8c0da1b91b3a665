"""One run's state: its hyperparameter view, logging window and divergence guard, on their own."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config
from ntm_experiments.errors import TrainingDiverged
from ntm_experiments.run_state import DivergenceGuard, LoggingWindow, build_run, hparams


def test_hparams_are_flat_scalars():
    flat = hparams(compose_config("task=priority_sort", "model=ntm_lstm"))
    assert flat["model.read_heads"] == 5 and flat["train.lr"] == 3e-5 and flat["task.name"] == "priority_sort"
    assert all(isinstance(v, (int, float, str, bool)) for v in flat.values())
    assert OmegaConf.is_config(compose_config()) is True


@pytest.mark.parametrize("scaling, factor", [("none", 1.0), ("sqrt", 4.0), ("linear", 16.0)])
def test_a_step_uses_the_tables_rate_scaled_for_the_batch(scaling, factor):
    cfg = compose_config("task=copy", "model=ntm_ff", "train.batch_size=16", f"train.lr_batch_scaling={scaling}")
    assert cfg.train.lr == 1e-4  # the table's rate, unchanged in the config
    _, _, optimizer, _ = build_run(cfg, torch.device("cpu"))
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(1e-4 * factor)]
    one = compose_config("task=copy", "model=ntm_ff", "train.batch_size=1", f"train.lr_batch_scaling={scaling}")
    assert build_run(one, torch.device("cpu")).optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_the_logging_window_weighs_each_sequence_once_and_starts_again():
    window = LoggingWindow()
    window.add(torch.tensor([1.0, 3.0, 5.0]), torch.tensor(2.0))
    window.add(torch.tensor([11.0]), torch.tensor(4.0))
    assert window.close() == (pytest.approx(20.0 / 4), pytest.approx(3.0), None)  # not (3 + 11) / 2
    window.add(torch.tensor([7.0]), torch.tensor(1.0))
    assert window.close() == (pytest.approx(7.0), pytest.approx(1.0), None)


def test_the_guard_restores_the_remembered_state_and_gives_up_after_max_restores():
    cfg = compose_config("task=copy", "model=lstm", "model.hidden_size=4")
    _, model, optimizer, params = build_run(cfg, torch.device("cpu"))
    guard = DivergenceGuard(model, optimizer, seen=32, max_bad_steps=2, max_restores=1)
    good = [p.detach().clone() for p in params]
    with torch.no_grad():
        params[0].add_(1.0)  # what a bad run did to the weights since
    assert guard.bad_step() is False  # the first of two in a row: skipped only
    guard.finite_step()               # a finite step breaks the row
    assert guard.bad_step() is False
    assert guard.bad_step() is True   # two in a row: back to the state at 32 sequences
    assert all(torch.equal(p, g) for p, g in zip(params, good))
    assert (guard.skipped, guard.restores, guard.skipped_since_checkpoint()) == (3, 1, 3)
    assert guard.skipped_since_checkpoint() == 0
    guard.bad_step()
    with pytest.raises(TrainingDiverged, match="after 1 restores of the state at 32 sequences"):
        guard.bad_step()
