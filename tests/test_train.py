"""The training loop, in-process: every pair trains, curves are reproducible, main returns the cost,
training lowers the cost, and each logged point is the mean of its window."""

from __future__ import annotations

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import ntm_experiments.train as train_module
from conftest import MODELS, TASKS, compose_config, scalars
from ntm_experiments.fast.steps import optimizer_activity
from ntm_experiments.run_state import CLIPPED_TAG, EPS_DOMINANT_TAG
from ntm_experiments.train import COST_TAG, train

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


def test_points_fall_at_the_first_step_past_each_boundary_and_the_log_says_so(tmp_path, caplog):
    """Batches of 8, a point every 12 sequences: no batch is split to log at 12, 24, 36; the points
    fall at 16, 24, 40, 48, and the run says so once at its start (and says nothing when they agree)."""
    tiny = ["task=copy", "model=lstm", "model.hidden_size=8", "train.total_sequences=48", "train.batch_size=8",
            "eval.sequences=4", "eval.pictures=false", "progress=false"]
    with caplog.at_level("INFO", logger="ntm_experiments.train"):
        train(compose_config(*tiny, "train.log_every=12", "train.checkpoint_every=24", "eval.every=24"), tmp_path / "a")
    assert [s for s, _ in scalars(tmp_path / "a", COST_TAG)] == [16, 24, 40, 48]
    said = [r.getMessage() for r in caplog.records if "not a multiple" in r.getMessage()]
    assert said == ["train.log_every=12 is not a multiple of train.batch_size=8: its points fall at the first step "
                    "past each boundary (16, 24, 40, ...)"]
    caplog.clear()
    with caplog.at_level("INFO", logger="ntm_experiments.train"):
        train(compose_config(*tiny, "train.log_every=16", "train.checkpoint_every=16", "eval.every=16"), tmp_path / "b")
    assert [s for s, _ in scalars(tmp_path / "b", COST_TAG)] == [16, 32, 48]
    assert not [r for r in caplog.records if "not a multiple" in r.getMessage()]


def test_training_lowers_the_cost(tmp_path):
    """1,920 sequences of a small copy task (4-bit vectors, lengths 1 to 3) on a small NTM-FF,
    plain path: the last logged cost is under half the first, and under half of knowing nothing
    (one bit per scored bit, 2 x 4 bits per sequence on average): the model learnt to copy."""
    cfg = compose_config("task=copy", "task.bits=4", "task.max_length=3", "model=ntm_ff", "model.controller_size=16",
                         "model.memory_rows=8", "model.memory_width=6", "train.lr=3e-3", "train.fast_path=false",
                         "train.lr_batch_scaling=none",  # 3e-3 is the step's rate this test was tuned at
                         "train.total_sequences=1920", "train.batch_size=8", "train.log_every=192",
                         "train.checkpoint_every=1920", "eval.every=1920", "eval.sequences=4", "eval.pictures=false",
                         "progress=false")
    train(cfg, tmp_path)
    curve = [v for _, v in scalars(tmp_path, COST_TAG)]
    assert len(curve) == 10
    first, last = curve[0], curve[-1]
    assert last < first / 2 and last < 8 / 2, curve


def test_logged_cost_is_the_sequence_weighted_mean_of_the_windows_batch_costs(tmp_path, monkeypatch):
    """Batches of 4, 22 sequences, a point every 12: the windows hold batches of 4, 4, 4 and
    4, 4, 2 (the run's last, partial batch). Each logged cost is the sum of the window's
    sequences' costs over its sequences; the gradient norm the mean of its steps' norms."""
    real = train_module.make_train_step
    costs, norms = [], []

    def recording(*args, **kwargs):
        stepper = real(*args, **kwargs)
        forward_backward = stepper.forward_backward

        def record(batch):
            cost, norm = forward_backward(batch)
            costs.append(cost.detach().double().clone())
            norms.append(float(norm))
            return cost, norm
        stepper.forward_backward = record
        return stepper

    monkeypatch.setattr(train_module, "make_train_step", recording)
    cfg = compose_config("task=copy", "model=lstm", "model.hidden_size=8", "train.total_sequences=22",
                         "train.batch_size=4", "train.log_every=12", "train.checkpoint_every=24", "eval.sequences=4",
                         "eval.pictures=false", "progress=false")
    final = train(cfg, tmp_path)
    assert [len(c) for c in costs] == [4, 4, 4, 4, 4, 2]
    logged = scalars(tmp_path, COST_TAG)
    assert [s for s, _ in logged] == [12, 22]
    for (_, value), window in zip(logged, (costs[:3], costs[3:])):
        weighted = float(torch.cat(window).sum()) / sum(len(c) for c in window)
        assert value == pytest.approx(weighted, rel=1e-6)
    assert final == pytest.approx(logged[-1][1], rel=1e-6)
    for (_, value), steps in zip(scalars(tmp_path, "train/grad_norm"), (norms[:3], norms[3:])):
        assert value == pytest.approx(sum(steps) / len(steps), rel=1e-6)
    # the mixed window tells the sequence-weighted mean from its stand-ins
    window = costs[3:]
    last_batch, mean_of_means = float(window[-1].mean()), sum(float(c.mean()) for c in window) / len(window)
    assert logged[-1][1] != pytest.approx(last_batch, rel=1e-3)
    assert logged[-1][1] != pytest.approx(mean_of_means, rel=1e-3)


def test_optimizer_activity_counts_clipped_elements_and_where_epsilon_exceeds_the_variance():
    grads = torch.tensor([[0.5, -12.0, 10.0, 11.0], [0.0, 0.0, 0.0, -30.0]])  # two runs' rows
    square_avg = torch.tensor([[1.0, 1e-5, 4.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    grad_avg = torch.tensor([[0.0, 0.0, 1.9, 0.0], [1.414, 0.0, 0.0, 0.0]])  # n - m^2: 1, 1e-5, 0.39, 0 | 6e-4, 2, 2, 2
    activity = optimizer_activity(grads, square_avg, grad_avg, torch.tensor([[10.0], [40.0]]), 1e-4)
    # run 0: |g| > 10 for -12 and 11 (10 itself is not clipped); eps 1e-4 > 1e-5 and > 0
    # run 1: nothing beyond 40; 2 - 1.414^2 = 6.1e-4 is above eps
    assert activity.tolist() == [[0.5, 0.5], [0.0, 0.0]]


@pytest.mark.parametrize("clip, every, expect", [("1e-12", 1, "all"), ("1e9", 2, "none"), ("10", 0, "absent")])
def test_a_run_logs_how_often_the_clip_and_epsilon_act(tmp_path, clip, every, expect):
    cfg = compose_config("task=copy", "task.max_length=4", "model=ntm_ff", "model.controller_size=8",
                         "model.memory_rows=8", "model.memory_width=4", "train.total_sequences=64",
                         "train.batch_size=4", "train.log_every=32", "train.checkpoint_every=64", f"train.clip_value={clip}",
                         f"train.activity_every={every}", "eval.every=64", "eval.sequences=4", "eval.pictures=false",
                         "progress=false")
    train(cfg, tmp_path)
    if expect == "absent":
        assert scalars(tmp_path, COST_TAG) and not {CLIPPED_TAG, EPS_DOMINANT_TAG} & set(scalar_tags(tmp_path))
        return
    clipped, eps_dominant = scalars(tmp_path, CLIPPED_TAG), scalars(tmp_path, EPS_DOMINANT_TAG)
    assert [s for s, _ in clipped] == [s for s, _ in eps_dominant] == [32, 64]
    values = [v for _, v in clipped]
    # a clip of 1e-12 acts on every element with a gradient: most of them (a few parameters get none)
    assert all(v > 0.5 for v in values) if expect == "all" else values == [0.0, 0.0]
    # the first update's n - m^2 is d (1 - d) g^2 ~ 0.05 g^2: below eps for every small gradient
    assert all(0.0 < v <= 1.0 for _, v in eps_dominant)


def scalar_tags(run_dir) -> list[str]:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator.Tags()["scalars"]


def test_a_run_logs_the_papers_curve_beside_its_own_and_keeps_it_on_resume(tmp_path):
    """paper/cost_bits_per_sequence: the paper's Fig 3 NTM-LSTM curve (its points on the figure's
    axes) in every run of copy x ntm_lstm, and one Custom Scalars chart drawing it with the run's
    cost; a resumed run still holds every point (the writer's purge drops those past the checkpoint)."""
    from ntm_experiments.paper import paper_curve
    from ntm_experiments.run_state import PAPER_TAG

    small = ["task=copy", "task.max_length=3", "model=ntm_lstm", "model.controller_size=8", "model.memory_rows=8",
             "model.memory_width=4", "train.batch_size=4", "train.log_every=32", "train.checkpoint_every=32",
             "eval.every=64", "eval.sequences=4", "eval.pictures=false", "progress=false"]
    train(compose_config(*small, "train.total_sequences=32"), tmp_path)
    expected = paper_curve("copy", "ntm_lstm")
    assert len(expected) > 90 and all(c < 10 for _, c in expected)  # Fig 3's axis top is 10 bits
    assert [(s, pytest.approx(v)) for s, v in scalars(tmp_path, PAPER_TAG)] == expected
    train(compose_config(*small, "train.total_sequences=64", f"resume={tmp_path}"), tmp_path)
    assert [s for s, _ in scalars(tmp_path, PAPER_TAG)] == [s for s, _ in expected]
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert "custom_scalars__config__" in accumulator.Tags()["tensors"]
    assert paper_curve("copy", "no_such_model") == [] and paper_curve("no_such_task", "ntm_ff") == []
