"""The native CPU core (ntm_experiments/fast/native.py, native.cpp): its build says so before it
starts; its work units and its stacked form: K runs in one call compute each model's own function
and gradients; a run's results are bitwise the same in any stack and on any number of threads."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils import cpp_extension

from conftest import compose_config, graves_rmsprop
from test_fast import SMALL, VARIANTS, build
from ntm_experiments.fast import FastStep
from ntm_experiments.fast import native as ntm_native
from ntm_experiments.fast.native import SOURCE, NativeNTM, StackedNativeNTM, load_extension
from ntm_experiments.models import make_model
from ntm_experiments.tasks import make_task

STACKED_VARIANTS = ["lstm, 2 layers, 2 heads each", "ff, 3 layers, 1 read 3 write heads"]


def stack_of_models(variant: str, runs: int, batch_size: int, dtype=torch.float64, length: int = 4):
    """``runs`` models of one of test_fast's VARIANTS, each from its own seed (so their weights
    differ), inputs [(T_k, B, I)] with each run's own sequences and its own length (run k: copy
    length ``length`` + 2 (k mod 3), so T_k = 2 length + 1 + 4 (k mod 3)), and cotangents [(T_k, B, O)]."""
    cfg = compose_config("task=copy", *SMALL["ntm_lstm"], *VARIANTS[variant])
    task = make_task(cfg.task)
    models = []
    for run in range(runs):
        torch.manual_seed(run)
        models.append(make_model(cfg.model, task.input_width, task.output_width).to(dtype))
    generator = torch.Generator().manual_seed(1)
    inputs = [task.sample(batch_size, generator, length=length + 2 * (run % 3)).inputs.to(dtype) for run in range(runs)]
    cotangent = [torch.randn(*x.shape[:2], task.output_width, generator=generator, dtype=torch.float64).to(dtype)
                 for x in inputs]
    return models, inputs, cotangent


def run_and_gradients(models, forward, inputs, cotangent):
    """forward(inputs) and, per model, the gradient of (logits * cotangent).sum() at its parameters."""
    for model in models:
        model.zero_grad(set_to_none=True)
    logits = forward(inputs)
    sum((out * c).sum() for out, c in zip(logits, cotangent)).backward()
    return [out.detach() for out in logits], [{n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad} for m in models]


def plain(models):
    return lambda inputs: [model(x) for model, x in zip(models, inputs)]


@pytest.mark.parametrize("samples_per_unit", [8, 3])
@pytest.mark.parametrize("variant", STACKED_VARIANTS)
def test_stacked_core_is_each_models_function_in_float64(variant, samples_per_unit):
    """Three runs of different weights, data and sequence lengths (9, 13, 17 steps), 10 samples
    each (units of 8 + 2, or 3 + 3 + 3 + 1 samples, so a run's weight gradients are the sum of
    several units'): each run's logits and each of its model's gradients are NTM.forward's and
    autograd's to 1e-10."""
    models, inputs, cotangent = stack_of_models(variant, runs=3, batch_size=10)
    core = StackedNativeNTM(models)
    core.samples_per_unit = samples_per_unit
    logits_p, grads_p = run_and_gradients(models, plain(models), inputs, cotangent)
    logits_c, grads_c = run_and_gradients(models, core, inputs, cotangent)
    assert [x.shape[0] for x in logits_c] == [x.shape[0] for x in inputs] == [9, 13, 17]
    for mine, theirs in zip(logits_c, logits_p):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-10)
    for run, (mine, theirs) in enumerate(zip(grads_c, grads_p)):
        assert mine.keys() == theirs.keys()
        for name in theirs:
            torch.testing.assert_close(mine[name], theirs[name], rtol=1e-10, atol=1e-10, msg=f"run {run}: {name}")
    assert not torch.equal(grads_c[0]["heads.weight"], grads_c[1]["heads.weight"])  # the runs are not one run


@pytest.mark.parametrize("variant", STACKED_VARIANTS)
def test_a_run_in_a_stack_is_bitwise_the_run_alone(variant):
    """float32: run k of a stack of 3 (each run its own length) gives the same logits and gradients,
    bit for bit, as the same model in a stack of one and as NativeNTM (the single-run core, also a
    stack of one)."""
    models, inputs, cotangent = stack_of_models(variant, runs=3, batch_size=10, dtype=torch.float32)
    logits, grads = run_and_gradients(models, StackedNativeNTM(models), inputs, cotangent)
    for run, model in enumerate(models):
        alone = run_and_gradients([model], StackedNativeNTM([model]), inputs[run:run + 1], cotangent[run:run + 1])
        single = run_and_gradients([model], lambda x: [NativeNTM(model)(x[0])], inputs[run:run + 1],
                                   cotangent[run:run + 1])
        for other_logits, other_grads in ((alone[0][0], alone[1][0]), (single[0][0], single[1][0])):
            assert torch.equal(logits[run], other_logits), f"run {run}: logits"
            for name, grad in grads[run].items():
                assert torch.equal(grad, other_grads[name]), f"run {run}: {name}"


@pytest.mark.parametrize("variant", STACKED_VARIANTS)
def test_native_results_do_not_depend_on_the_thread_count(variant):
    """float32, 20 samples (units of 8, 8 and 4): one thread or two, the same logits and gradients
    bit for bit, for one run and for a stack, so a config and seed give one curve on any machine."""
    models, inputs, cotangent = stack_of_models(variant, runs=2, batch_size=20, dtype=torch.float32)
    threads = torch.get_num_threads()
    results = {}
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            results[count] = (run_and_gradients(models[:1], lambda x: [NativeNTM(models[0])(x[0])], inputs[:1],
                                                cotangent[:1]),
                              run_and_gradients(models, StackedNativeNTM(models), inputs, cotangent))
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(results[1], results[2]):
        assert all(torch.equal(a, b) for a, b in zip(one[0], two[0]))
        for grads_one, grads_two in zip(one[1], two[1]):
            for name in grads_one:
                assert torch.equal(grads_one[name], grads_two[name]), name


def test_stacked_core_takes_only_one_structure_and_its_own_stack():
    models, inputs, _ = stack_of_models("lstm, 2 layers, 2 heads each", runs=2, batch_size=2)
    others, _, _ = stack_of_models("ff, 3 layers, 1 read 3 write heads", runs=1, batch_size=2)
    with pytest.raises(ValueError, match="model 1 differs in structure from model 0"):
        StackedNativeNTM([models[0], others[0]])
    with pytest.raises(ValueError, match="needs at least one model"):
        StackedNativeNTM([])
    with pytest.raises(ValueError, match=r"inputs must be 2 tensors \(T_k, B, I\) of one B and I"):
        StackedNativeNTM(models)(inputs[:1])
    with pytest.raises(ValueError, match=r"inputs must be 2 tensors"):
        StackedNativeNTM(models)([inputs[0], inputs[1][:, :1]])


def test_work_units_are_a_fixed_number_of_samples():
    """The slice size is a constant, not a function of the thread count or the batch."""
    assert isinstance(ntm_native.SAMPLES_PER_UNIT, int) and ntm_native.SAMPLES_PER_UNIT >= 1
    assert NativeNTM.samples_per_unit == StackedNativeNTM.samples_per_unit == ntm_native.SAMPLES_PER_UNIT


def test_fast_step_runs_aten_on_one_thread_and_the_native_core_on_the_given_threads(monkeypatch):
    """FastStep's native steps: ATen single-threaded around the core (no OpenMP region outside it
    that a parked thread could stall), the core on the threads torch was given, torch's count
    restored after each half."""
    _, task, model, params = build("copy", "ntm_lstm")
    seen = []
    run_forward = NativeNTM.run_forward

    def recording(self, *args):
        seen.append((torch.get_num_threads(), ntm_native.core_threads()))
        return run_forward(self, *args)

    monkeypatch.setattr(NativeNTM, "run_forward", recording)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        fast = FastStep(model, task, graves_rmsprop(params), params, torch.device("cpu"))
        fast.forward_backward(task.sample(4, torch.Generator().manual_seed(1)))
        assert torch.get_num_threads() == 2
        fast.update(0.01)
        assert torch.get_num_threads() == 2
        with ntm_native.aten_on_one_thread():
            with ntm_native.aten_on_one_thread():  # nested: the outer count stays the core's
                assert (torch.get_num_threads(), ntm_native.core_threads()) == (1, 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert seen == [(1, 2)]


def test_fast_training_steps_are_the_same_on_one_and_two_threads():
    """Three FastStep training steps (native core, 20 samples: three work units) from the same
    seed on one thread and on two: the same costs and weights, bit for bit."""
    results = {}
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            _, task, model, params = build("repeat_copy", "ntm_lstm")
            fast = FastStep(model, task, graves_rmsprop(params), params, torch.device("cpu"))
            generator = torch.Generator().manual_seed(5)
            costs = []
            for _ in range(3):
                cost, _ = fast.forward_backward(task.sample(20, generator))
                fast.update(0.01)
                costs.append(cost)
            results[count] = (costs, [p.detach().clone() for p in params])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(results[1][0], results[2][0]))
    assert all(torch.equal(a, b) for a, b in zip(results[1][1], results[2][1]))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_native_core_runs_in_a_forked_child_after_its_threads_started():
    """The core's own threads (native.cpp's UnitPool) do not survive a fork: a child forked after
    the parent started them (a sweep's forked jobs) runs the core, with the same result, instead
    of waiting for threads that are not there."""
    models, inputs, cotangent = stack_of_models("lstm, 2 layers, 2 heads each", runs=2, batch_size=10,
                                                dtype=torch.float32)
    core = StackedNativeNTM(models)
    core.threads = 2  # two units a run, two threads: the pool's thread starts here
    expected = run_and_gradients(models, core, inputs, cotangent)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if the core ran and agreed
        code = 1
        try:
            again = run_and_gradients(models, core, inputs, cotangent)
            code = 0 if all(torch.equal(a, b) for a, b in zip(again[0], expected[0])) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung in the native core")


def test_a_build_is_announced_before_it_starts_and_a_cached_load_is_not(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))  # a machine that never built it
    source = tmp_path / "core.cpp"
    source.write_text(SOURCE.read_text())
    said_before: list[list[str]] = []

    def build(name, sources, **kwargs):  # stands in for the compiler: what had been said when it started
        said_before.append(list(caplog.messages))
        return SimpleNamespace()

    monkeypatch.setattr(cpp_extension, "load", build)
    with caplog.at_level(logging.INFO, logger="ntm_experiments.fast"):
        load_extension(source, name="ntm_test_core")
        (line,) = said_before[0]
        assert line.startswith("fast path: building the native CPU core from core.cpp, once per machine (30 to 90 s")
        assert str(tmp_path / "extensions" / "ntm_test_core") in line

        built = Path(cpp_extension._get_build_directory("ntm_test_core", verbose=False), "ntm_test_core.so")
        built.write_bytes(b"")  # what the build leaves, newer than its source: the next process only loads it
        caplog.clear()
        load_extension(source, name="ntm_test_core")
        assert said_before[1] == [] and caplog.messages == []

        source.write_text(source.read_text() + "\n// edited\n")  # an edited source is built again, and said so
        os.utime(source, ns=(built.stat().st_mtime_ns + 10**9,) * 2)  # newer than the build
        load_extension(source, name="ntm_test_core")
        assert any("building the native CPU core" in m for m in said_before[2])


@pytest.mark.parametrize("variant", STACKED_VARIANTS)
@pytest.mark.parametrize("memory_init", ["learned", "constant"])
def test_a_stack_reading_its_weights_from_the_parameter_rows_is_the_stack_of_the_models(variant, memory_init):
    """float32: with the runs' parameters as rows of one buffer (stacked.FlatParameters), a call of
    every run reads each weight as one (K, ...) view of the rows; logits and gradients are bit
    for bit those of stacking the models' own tensors (a call of a subset of the runs still does)."""
    from ntm_experiments.fast.stacked import FlatParameters

    models, inputs, cotangent = stack_of_models(variant, runs=3, batch_size=10, dtype=torch.float32)
    if memory_init == "constant":
        for model in models:
            del model.memory0
            model.register_buffer("memory0", torch.full((model.N, model.M), 1e-6))
    expected = run_and_gradients(models, StackedNativeNTM(models), inputs, cotangent)
    flat = FlatParameters([[p for p in model.parameters() if p.requires_grad] for model in models])
    core = StackedNativeNTM(models, flat)
    assert core.stacked is not None and ("memory0" in core.stacked) == (memory_init == "learned")
    logits = core(inputs)  # every parameter's .grad is now a view of flat.grads, where both paths accumulate
    sum((out * c).sum() for out, c in zip(logits, cotangent)).backward()
    for run in range(3):
        assert torch.equal(logits[run].detach(), expected[0][run])
        for name, grad in expected[1][run].items():
            assert torch.equal(models[run].get_parameter(name).grad, grad), f"run {run}: {name}"
