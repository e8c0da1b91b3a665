"""Stacked runs (fast/stacked.py, train.train_stack): several runs as one computation, each the
run it would be alone."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import compose_config, scalars
from ntm_experiments.errors import TrainingDiverged
from ntm_experiments.run_state import CLIPPED_TAG, EPS_DOMINANT_TAG
from ntm_experiments.train import COST_TAG, train, train_stack

TINY = ["task=copy", "task.max_length=5", "model=ntm_lstm", "model.controller_size=12", "model.memory_rows=8",
        "model.memory_width=5", "train.batch_size=2", "train.total_sequences=96", "train.log_every=16",
        "train.checkpoint_every=32", "eval.every=96", "eval.sequences=4", "eval.pictures=false", "progress=false"]


def configs(seeds, *extra):
    return [compose_config(*TINY, f"seed={seed}", *extra) for seed in seeds]


def weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]


@pytest.mark.parametrize("fast_path", ["false", "true"])
def test_a_run_in_a_stack_is_bitwise_the_run_in_a_stack_of_one(tmp_path, fast_path):
    seeds = [1, 2, 3, 4]
    stacked_dirs = [tmp_path / "stack" / f"seed{s}" for s in seeds]
    results = train_stack(configs(seeds, f"train.fast_path={fast_path}"), stacked_dirs)
    alone_dir = tmp_path / "one" / "seed3"
    (alone,) = train_stack(configs([3], f"train.fast_path={fast_path}"), [alone_dir])
    assert results[2] == alone
    for tag in (COST_TAG, CLIPPED_TAG, EPS_DOMINANT_TAG):
        assert scalars(stacked_dirs[2], tag) == scalars(alone_dir, tag)
    stacked_w, alone_w = weights(stacked_dirs[2]), weights(alone_dir)
    assert all(torch.equal(stacked_w[name], alone_w[name]) for name in alone_w)
    # each run is its own: other seeds, other curves; each checkpoint holds its run's weights only
    curves = [tuple(v for _, v in scalars(d, COST_TAG)) for d in stacked_dirs]
    assert len(set(curves)) == 4
    assert sum(t.numel() for t in stacked_w.values()) == sum(t.untyped_storage().nbytes() // 4
                                                               for t in stacked_w.values())


@pytest.mark.parametrize("fast_path", ["false", "true"])
def test_a_stacked_run_is_the_run_trained_alone_to_float32_rounding(tmp_path, fast_path):
    cfgs = configs([5, 6], f"train.fast_path={fast_path}", "train.total_sequences=400", "train.log_every=40",
                   "train.checkpoint_every=400", "eval.every=400")
    train_stack(cfgs, [tmp_path / "stack5", tmp_path / "stack6"])
    train(cfgs[1], tmp_path / "alone6")
    stacked, alone = scalars(tmp_path / "stack6", COST_TAG), scalars(tmp_path / "alone6", COST_TAG)
    assert [s for s, _ in stacked] == [s for s, _ in alone] == list(range(40, 401, 40))
    for (_, a), (_, b) in zip(stacked, alone):  # 200 updates
        assert a == pytest.approx(b, rel=1e-4)
    for tag in (CLIPPED_TAG, EPS_DOMINANT_TAG):  # the same updates measured, the same counts to a rounding
        stacked, alone = scalars(tmp_path / "stack6", tag), scalars(tmp_path / "alone6", tag)
        assert [s for s, _ in stacked] == [s for s, _ in alone] == list(range(40, 401, 40))
        assert [v for _, v in stacked] == pytest.approx([v for _, v in alone], abs=2e-3)
    stacked_w, alone_w = weights(tmp_path / "stack6"), weights(tmp_path / "alone6")
    for name in alone_w:
        torch.testing.assert_close(stacked_w[name], alone_w[name], rtol=1e-4, atol=1e-5)


def test_settings_are_per_run_and_a_diverging_run_fails_alone(tmp_path):
    cfgs = configs([1, 2, 3])
    cfgs[1] = compose_config(*TINY, "seed=2", "train.lr=1e38", "train.max_bad_steps=2", "train.max_restores=1")
    cfgs[2] = compose_config(*TINY, "seed=3", "train.lr=3e-3", "train.clip_value=0.5")
    failures = []
    results = train_stack(cfgs, [tmp_path / f"r{k}" for k in range(3)],
                          on_failure=lambda k, error: failures.append((k, error)))
    assert [k for k, _ in failures] == [1] and isinstance(failures[0][1], TrainingDiverged)
    assert results[1] is None and all(math.isfinite(results[k]) for k in (0, 2))
    for k in (0, 2):
        assert [s for s, _ in scalars(tmp_path / f"r{k}", COST_TAG)][-1] == 96
    # run 2's own settings: the same run alone with lr 3e-3 and clip 0.5 gives its curve
    train(cfgs[2], tmp_path / "alone2")
    for (_, a), (_, b) in zip(scalars(tmp_path / "r2", COST_TAG), scalars(tmp_path / "alone2", COST_TAG)):
        assert a == pytest.approx(b, rel=1e-4)
    saved = torch.load(tmp_path / "r2" / "checkpoint.pt", weights_only=False)
    # the step's rate: train.lr scaled for the batch of 2 by the default lr_batch_scaling=linear
    assert saved["optimizer"]["param_groups"][0]["lr"] == 3e-3 * 2


def test_a_stacked_runs_checkpoint_resumes_alone_and_the_curve_goes_on(tmp_path):
    cfgs = configs([1, 2], "train.total_sequences=64")
    train_stack(cfgs, [tmp_path / "a", tmp_path / "b"])
    more = compose_config(*TINY, "seed=2", "train.total_sequences=96", "resume=true")
    train(more, tmp_path / "b")  # alone now
    straight = compose_config(*TINY, "seed=2")
    train(straight, tmp_path / "straight")
    resumed, whole = scalars(tmp_path / "b", COST_TAG), scalars(tmp_path / "straight", COST_TAG)
    assert [s for s, _ in resumed] == [s for s, _ in whole]
    for (_, a), (_, b) in zip(resumed, whole):
        assert a == pytest.approx(b, rel=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_native_update_is_the_aten_update_with_its_activity(dtype):
    """native.cpp's rmsprop (clip and Graves's RMSProp in one pass, a run per work unit) against
    StackedGravesRMSprop.step after clamping (the ATen form): three runs with their own settings,
    clip values and gradients, one of them inactive (left untouched, state too), over three
    updates; the same weights and state to rounding, and each run's activity counted as
    optimizer_activity counts it. (ATen's vectorised kernels round a few elements an ulp apart.)"""
    from ntm_experiments.fast.native import load_extension
    from ntm_experiments.fast.stacked import FlatParameters, StackedGravesRMSprop
    from ntm_experiments.fast.steps import optimizer_activity

    generator = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (3,), (70,)]  # 108 values: rows padded to 128
    rows = [[torch.nn.Parameter(torch.randn(*shape, generator=generator, dtype=dtype)) for shape in shapes]
            for _ in range(3)]
    settings = [dict(lr=1e-2, decay=0.95, momentum=0.9, eps=1e-4), dict(lr=3e-3, decay=0.9, momentum=0.5, eps=1e-2),
                dict(lr=1e-1, decay=0.99, momentum=0.0, eps=1e-6)]
    pair = []
    for _ in range(2):
        flat = FlatParameters([[torch.nn.Parameter(p.detach().clone()) for p in run] for run in rows])
        pair.append((flat, StackedGravesRMSprop(flat, settings)))
    (flat_a, aten), (flat_n, native) = pair
    clip = torch.tensor([1.0, 0.5, 100.0], dtype=dtype)
    active = torch.tensor([True, False, True])
    extension = load_extension()
    for step in range(3):
        grads = torch.randn(3, flat_a.size, generator=generator, dtype=dtype) * 2
        for flat in (flat_a, flat_n):
            flat.grads.zero_()
            flat.grads[:, :flat.size] = grads
        clipped = flat_a.grads[:, :flat_a.size].clone()
        flat_a.grads.clamp_(min=-clip[:, None], max=clip[:, None])
        aten.step(active)
        activity = native.clip_and_step_native(extension, active, clip, threads=2)
        for a, b in [(flat_a.values, flat_n.values), *((aten.state[k], native.state[k]) for k in aten.KEYS)]:
            torch.testing.assert_close(b, a, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-7 if dtype == torch.float32 else 1e-16)
        expected = optimizer_activity(clipped, aten.state["square_avg"][:, :flat_a.size],
                                      aten.state["grad_avg"][:, :flat_a.size], clip[:, None], aten.eps)
        assert activity[1].tolist() == [0.0, 0.0]  # the inactive run
        torch.testing.assert_close(activity[[0, 2]], expected[[0, 2]], rtol=0, atol=1.5 / flat_a.size)
        assert activity[0, 0] > 0.3 and activity[2, 0] == 0.0  # a clip of 1 acts on N(0, 4) gradients, 100 does not
    assert torch.equal(flat_n.values[1], torch.cat([p.detach().reshape(-1) for p in rows[1]]).new_zeros(128).index_copy(
        0, torch.arange(flat_n.size), torch.cat([p.detach().reshape(-1) for p in rows[1]])))  # untouched
