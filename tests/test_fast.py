"""The fast path (train.fast_path) computes the same function as the plain eager path."""

from __future__ import annotations

import copy
import math
import platform
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from conftest import MODELS, TASKS, compose_config, conf_settings, graves_rmsprop, scalars
from ntm_experiments.errors import ConfigError
from ntm_experiments.fast import CORES, FastStep, PlainStep, use_fast_path
from ntm_experiments.fast.native import load_extension
from ntm_experiments.fast import native as ntm_native
from ntm_experiments.fast.native import NativeNTM, NativeUnavailable
from ntm_experiments.fast.sequence import SequenceNTM
from ntm_experiments.models import NTM, make_model
from ntm_experiments.run_state import build_run
from ntm_experiments.tasks import Batch, make_task
from ntm_experiments.train import COST_TAG, train
from ntm_experiments.validation import validate

# the pair's own structure (controller kind, heads, shift range, task widths) at a small size,
# so compiling each of the 15 pairs stays quick
SMALL = {"ntm_ff": ["model.controller_size=24", "model.memory_rows=16", "model.memory_width=6"],
         "ntm_lstm": ["model.controller_size=24", "model.memory_rows=16", "model.memory_width=6"],
         "lstm": ["model.hidden_size=24"]}
NTM_MODELS = [m for m in MODELS if m != "lstm"]


def build(task_name: str, model_name: str, seed: int = 0):
    cfg = compose_config(f"task={task_name}", f"model={model_name}", *SMALL[model_name], f"seed={seed}")
    task, model, _, params = build_run(cfg, torch.device("cpu"))
    return cfg, task, model, params


def gradients(stepper, batch):
    cost, norm = stepper.forward_backward(batch)
    return cost, norm, [p.grad.clone() for p in stepper.params]


def assert_close_to_float32_rounding(fast: torch.Tensor, plain: torch.Tensor, what: str) -> None:
    scale = plain.abs().max().clamp_min(1e-3)
    error = (fast - plain).abs().max() / scale
    assert error < 2e-4, f"{what}: largest difference {error:.2e} of the largest value"


def assert_steps_agree(plain: PlainStep, fast: FastStep, batch) -> None:
    """Both steps' cost, gradient norm and every parameter's gradient on one batch."""
    cost_p, norm_p, grads_p = gradients(plain, batch)
    cost_f, norm_f, grads_f = gradients(fast, batch)
    assert_close_to_float32_rounding(cost_f, cost_p, "cost")
    assert_close_to_float32_rounding(norm_f, norm_p, "gradient norm")
    for (name, _), g_f, g_p in zip(plain.model.named_parameters(), grads_f, grads_p):
        assert_close_to_float32_rounding(g_f, g_p, f"gradient of {name}")


def test_plain_step_is_the_hand_computed_cost_gradient_clip_and_graves_update():
    """Two PlainSteps on hand-built batches, in float64, against every stage written out here:
    the masked cross-entropy in bits per sequence, the gradient of the batch mean of each
    sequence's summed cross-entropy in nats, its norm before clipping, each element clipped to
    +-clip_value, and Graves's RMSProp (n, m and the momentum carried into the second step)."""
    clip, lr, decay, momentum, eps = 0.01, 3e-3, 0.95, 0.9, 1e-4
    torch.manual_seed(0)
    model = NTM(4, 3, **conf_settings("model", "ntm_lstm", controller_size=5, memory_rows=6, memory_width=3)).double()
    params = [p for p in model.parameters() if p.requires_grad]
    task = make_task(compose_config("task=copy").task)  # only its cost is used: Task.cost
    step = PlainStep(model, task, graves_rmsprop(params, lr=lr, decay=decay, momentum=momentum, eps=eps), params)

    reference = copy.deepcopy(model)
    weights = [p.detach().clone() for p in reference.parameters() if p.requires_grad]
    n, m, delta = ([torch.zeros_like(w) for w in weights] for _ in range(3))
    generator = torch.Generator().manual_seed(7)
    clipped_elements = unclipped_elements = 0
    for _ in range(2):
        T, B = 5, 3
        inputs = torch.randn(T, B, 4, generator=generator, dtype=torch.float64) * 2
        targets = torch.randint(0, 2, (T, B, 3), generator=generator).double()
        mask = torch.zeros(T, B, 3, dtype=torch.float64)
        mask[2:, 0, :2] = 1  # sequences of different lengths, an unscored channel,
        mask[3:, 1, :2] = 1  # unscored steps before the answer
        mask[1:, 2, :] = 1
        batch = Batch(inputs, targets, mask)

        # by hand, on the reference copy
        logits = reference(inputs)
        bce = -(targets * torch.nn.functional.logsigmoid(logits) + (1 - targets) * torch.nn.functional.logsigmoid(-logits))
        expected_cost = (bce * mask).sum(dim=(0, 2)) / math.log(2)  # bits per sequence
        objective = (bce * mask).sum() / B  # the batch mean of each sequence's summed cross-entropy, nats
        ref_params = [p for p in reference.parameters() if p.requires_grad]
        grads = torch.autograd.grad(objective, ref_params)
        expected_norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        clipped_elements += sum(int((g.abs() > clip).sum()) for g in grads)
        unclipped_elements += sum(int((g.abs() < clip).sum()) for g in grads)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(ref_params, grads)):
                g = g.clamp(-clip, clip)
                n[i] = decay * n[i] + (1 - decay) * g * g
                m[i] = decay * m[i] + (1 - decay) * g
                delta[i] = momentum * delta[i] - lr * g / torch.sqrt(n[i] - m[i] * m[i] + eps)
                p += delta[i]

        cost, norm = step.forward_backward(batch)
        step.update(clip)
        torch.testing.assert_close(cost, expected_cost, rtol=1e-12, atol=0)
        torch.testing.assert_close(norm, expected_norm, rtol=1e-12, atol=0)
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-15, msg=name)
    # the clip mattered (and did not clip everything): a missing or wrong clip would show above
    assert clipped_elements > 0 and unclipped_elements > 0
    assert max(g.abs().max() for g in grads) > 10 * clip


@pytest.mark.parametrize("model_name", NTM_MODELS)
@pytest.mark.parametrize("task_name", TASKS)
def test_fast_and_plain_paths_agree_on_cost_and_gradients(task_name, model_name):
    """The NTMs only: on the CPU the fast path leaves the LSTM baseline as it is (next test)."""
    cfg, task, model, params = build(task_name, model_name)
    opt = graves_rmsprop(params)
    plain, fast = PlainStep(model, task, opt, params), FastStep(model, task, opt, params, torch.device("cpu"))
    assert fast.forward is not None and fast.core == "native"  # a core of its own, not the model's forward
    generator = torch.Generator().manual_seed(1)
    for _ in range(2):  # two batches of different lengths (where the task varies them), same compiled step
        batch = task.sample(4, generator)
        assert_steps_agree(plain, fast, batch)


def test_on_the_cpu_the_fast_path_runs_the_lstm_baselines_own_forward():
    """nn.LSTM is a fused kernel already: FastStep keeps the model's forward (no core, no graphs on
    the CPU), so its step is the plain step itself, bit for bit; there is nothing more to compare."""
    _, task, model, params = build("copy", "lstm")
    opt = graves_rmsprop(params)
    plain, fast = PlainStep(model, task, opt, params), FastStep(model, task, opt, params, torch.device("cpu"))
    assert fast.forward is None and fast.core is None and not fast.graphs
    batch = task.sample(4, torch.Generator().manual_seed(1))
    (cost_p, norm_p, grads_p), (cost_f, norm_f, grads_f) = gradients(plain, batch), gradients(fast, batch)
    assert torch.equal(cost_f, cost_p) and torch.equal(norm_f, norm_p)
    assert all(torch.equal(a, b) for a, b in zip(grads_f, grads_p))


@pytest.mark.parametrize("task_name, model_name", [("repeat_copy", "ntm_lstm"), ("priority_sort", "ntm_ff")])
def test_the_per_step_core_that_cuda_uses_also_agrees_with_plain(task_name, model_name):
    cfg, task, model, params = build(task_name, model_name)
    opt = graves_rmsprop(params)
    plain = PlainStep(model, task, opt, params)
    fast = FastStep(model, task, opt, params, torch.device("cpu"), core="step")
    assert_steps_agree(plain, fast, task.sample(4, torch.Generator().manual_seed(1)))


VARIANTS = {  # structures no paper row has, so the sequence core's bookkeeping is tested on them too
    "lstm, 2 layers, 2 heads each": ["model=ntm_lstm", "model.controller_layers=2", "model.read_heads=2",
                                     "model.write_heads=2"],
    "ff, 3 layers, 1 read 3 write heads": ["model=ntm_ff", "model.controller_layers=3", "model.write_heads=3"],
    "lstm, constant memory, shift 0": ["model=ntm_lstm", "model.memory_init=constant", "model.shift_range=0"],
    "ff, 2 read 1 write heads, shift 2": ["model=ntm_ff", "model.read_heads=2", "model.shift_range=2"],
}


def saturate_heads(model: NTM) -> None:
    """The heads' layer times 40 and the key strengths' and sharpenings' biases raised by 20:
    those straddle softplus's threshold of 20 (its two branches), the gates and erase vectors
    saturate, the weightings are nearly one-hot."""
    with torch.no_grad():
        model.heads.weight.mul_(40.0)
        model.heads.bias.mul_(40.0)
        for head in range(model.R + model.W):
            start = head * model.address_size
            model.heads.bias[start + model.M] += 20.0  # beta
            model.heads.bias[start + model.address_size - 1] += 20.0  # gamma


def float64_model(variant: str, device=torch.device("cpu"), *overrides: str):
    """One of VARIANTS at SMALL's size in float64 (seed 0), its task, 3 inputs of length 4 and a
    cotangent for the logits."""
    cfg = compose_config("task=copy", *SMALL["ntm_lstm"], *VARIANTS[variant], *overrides)
    task = make_task(cfg.task)
    torch.manual_seed(0)
    model = make_model(cfg.model, task.input_width, task.output_width).double().to(device)
    inputs = task.sample(3, torch.Generator().manual_seed(1), length=4).inputs.double().to(device)
    cotangent = torch.randn(inputs.shape[0], 3, task.output_width, dtype=torch.float64, device=device)
    return model, inputs, cotangent


def outputs_and_gradients(model: NTM, forward, inputs, cotangent):
    """forward(inputs), and the gradient of (logits * cotangent).sum() at each of model's parameters."""
    model.zero_grad(set_to_none=True)
    logits = forward(inputs)
    (logits * cotangent).sum().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def assert_core_is_the_models_function(core, model: NTM, inputs, cotangent, of_largest: bool = False) -> None:
    """``core(model)`` gives NTM.forward's outputs and every parameter's gradient to 1e-10 (float64);
    with ``of_largest``, each gradient's error to 1e-10 of its largest entry (for gradients of
    1e7, whose rounding alone is 1e-9)."""
    logits_p, grads_p = outputs_and_gradients(model, model, inputs, cotangent)
    logits_c, grads_c = outputs_and_gradients(model, core(model), inputs, cotangent)
    torch.testing.assert_close(logits_c, logits_p, rtol=0, atol=1e-10)
    assert grads_c.keys() == grads_p.keys()
    for name in grads_p:
        assert grads_c[name] is not None, f"no gradient reached {name}"
        scale = max(1.0, grads_p[name].abs().max().item()) if of_largest else 1.0
        torch.testing.assert_close(grads_c[name], grads_p[name], rtol=1e-10, atol=1e-10 * scale, msg=name)


def assert_is_the_models_function_in_float64(core, variant: str, device=torch.device("cpu"),
                                             saturate: bool = False) -> None:
    """``core(model)`` gives NTM.forward's outputs and every parameter's gradient to 1e-10 in
    float64, on one of VARIANTS, so any bookkeeping or calculus error shows up far above rounding."""
    model, inputs, cotangent = float64_model(variant, device)
    if saturate:
        saturate_heads(model)
    assert_core_is_the_models_function(core, model, inputs, cotangent)


def assert_small_and_zero_rows_keep_eq_6(core, first_similarities, device=torch.device("cpu")) -> None:
    """Cosine similarity (eq. 6, §3.3.1) at small and zero vectors, in float64, through a
    hand-written core: a learned memory of rows of 1e-6 (squared norm 6e-12 in 6 columns) with one
    row exactly zero, the heads' layer zeroed so every step's keys are its bias, the first head's
    key positive and the second's exactly zero. At the first step the core's saved similarities
    (its workspace, native.cpp's Work: ``first_similarities(saved, B, H, X)`` gives it, (B, H, X)
    with the N similarities first) are the true cosine to 1e-6 for the small rows and 0 for
    the zero row and the zero key; the logits and every gradient are finite and the model's to
    1e-10 (of each gradient's largest entry)."""
    model, inputs, cotangent = float64_model("lstm, 2 layers, 2 heads each", device, "model.memory_init=learned")
    N, M, A = model.N, model.M, model.address_size
    key = torch.linspace(0.2, 1.0, M, dtype=torch.float64, device=device)
    with torch.no_grad():
        model.memory0.fill_(1e-6)
        model.memory0[3] = 0.0
        model.heads.weight.zero_()
        model.heads.bias[:M] = key
        model.heads.bias[A:A + M] = 0.0
    forward = core(model)
    saved = []
    run_forward = forward.run_forward
    forward.run_forward = lambda *args: saved.append(run_forward(*args)) or saved[-1]
    logits, grads = outputs_and_gradients(model, forward, inputs, cotangent)
    H, X = model.R + model.W, 4 * N + model.K + 4
    similarity = first_similarities(saved[0], inputs.shape[1], H, X)[..., :N]  # (B, H, N) at t = 0
    exact = key.sum() / (key.norm() * M ** 0.5)  # a constant row's cosine with the key
    small = [i for i in range(N) if i != 3]
    torch.testing.assert_close(similarity[:, 0, small], exact.expand(3, N - 1), rtol=1e-6, atol=0)
    assert (similarity[:, 0, 3] == 0).all() and (similarity[:, 1] == 0).all()
    assert torch.isfinite(logits).all()
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), name
    assert grads["memory0"][3].abs().max() > 0  # the zero row's gradient is there, and finite
    # a zero key against rows of 1e-6 has gradient row / COSINE_EPS, about 1e6 per unit of d sim
    assert_core_is_the_models_function(core, model, inputs, cotangent, of_largest=True)


@pytest.mark.parametrize("core", [SequenceNTM, NativeNTM], ids=["sequence", "native"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_sequence_cores_are_exactly_the_models_function_in_float64(variant, core):
    """The sequence core (uncompiled) and the native C++ core, with their hand-arranged
    backwards (hoisted layers, reverse loop, weight gradients as one GEMM; the native one also
    every equation's gradient by hand)."""
    assert_is_the_models_function_in_float64(core, variant)


@pytest.mark.parametrize("core", [SequenceNTM, NativeNTM], ids=["sequence", "native"])
def test_sequence_cores_are_the_models_function_at_saturated_heads(core):
    assert_is_the_models_function_in_float64(core, "lstm, 2 layers, 2 heads each", saturate=True)


def test_native_core_keeps_eq_6_at_small_and_zero_rows():
    def first_similarities(saved, B, H, X):  # one work unit, whose first B rows are its samples at t = 0
        assert B <= ntm_native.SAMPLES_PER_UNIT
        return saved[7][:B].view(B, H, X)  # [logits, hidden, reads, meta, params, memory, weightings, work, ...]

    assert_small_and_zero_rows_keep_eq_6(NativeNTM, first_similarities)


def test_unknown_core_is_refused():
    _, task, model, params = build("copy", "ntm_lstm")
    with pytest.raises(ValueError, match="core='loop': must be one of native, sequence, step"):
        FastStep(model, task, graves_rmsprop(params), params, torch.device("cpu"), core="loop")


@pytest.mark.parametrize("core", ["sequence", "step"])
def test_compiled_cores_compile_the_step_once_for_every_sequence_length(core):
    _, task, model, params = build("copy", "ntm_lstm")
    fast = FastStep(model, task, graves_rmsprop(params), params, torch.device("cpu"), core=core)
    generator = torch.Generator().manual_seed(2)
    torch._dynamo.reset()  # forget what earlier tests compiled for this shape
    counters.clear()
    fast.forward_backward(task.sample(4, generator, length=3))
    compiled_once = counters["stats"]["unique_graphs"]
    assert compiled_once >= 1
    for length in (1, 7, 12):  # T = 2 length + 1 changes; the compiled time step does not
        fast.forward_backward(task.sample(4, generator, length=length))
    assert counters["stats"]["unique_graphs"] == compiled_once
    # a smaller last batch is run plain, not recompiled
    cost, _ = fast.forward_backward(task.sample(3, generator))
    assert cost.shape == (3,) and counters["stats"]["unique_graphs"] == compiled_once


def test_native_core_runs_every_length_and_batch_size_itself():
    _, task, model, params = build("copy", "ntm_lstm")
    fast = FastStep(model, task, graves_rmsprop(params), params, torch.device("cpu"))
    assert fast.core == "native"
    calls = []
    native = fast.forward
    fast.forward = lambda inputs: calls.append(inputs.shape) or native(inputs)
    generator = torch.Generator().manual_seed(2)
    shapes = []
    for length, batch_size in ((3, 4), (12, 4), (1, 3), (7, 9)):  # the first batch size, then others
        batch = task.sample(batch_size, generator, length=length)
        shapes.append(batch.inputs.shape)
        cost, norm = fast.forward_backward(batch)
        assert cost.shape == (batch_size,) and torch.isfinite(norm)
    assert calls == shapes and len(set(shapes)) == 4


@pytest.mark.parametrize("task_name, model_name", [("copy", "ntm_lstm"), ("associative_recall", "ntm_ff")])
def test_native_core_agrees_with_plain_at_the_papers_size(task_name, model_name):
    """The paper's own rows (memory 128 x 20; 4 read/write head pairs and 256 units for
    associative recall's NTM-FF), float32, against the plain path."""
    cfg = compose_config(f"task={task_name}", f"model={model_name}")
    task, model, _, params = build_run(cfg, torch.device("cpu"))
    opt = graves_rmsprop(params)
    fast = FastStep(model, task, opt, params, torch.device("cpu"))
    assert fast.core == "native"
    assert_steps_agree(PlainStep(model, task, opt, params), fast, task.sample(8, torch.Generator().manual_seed(3)))


def test_native_core_is_deterministic():
    _, task, model, params = build("repeat_copy", "ntm_lstm")
    fast = FastStep(model, task, graves_rmsprop(params), params, torch.device("cpu"))
    batch = task.sample(16, torch.Generator().manual_seed(4))
    first, second = gradients(fast, batch), gradients(fast, batch)
    assert torch.equal(first[0], second[0]) and all(torch.equal(a, b) for a, b in zip(first[2], second[2]))


@pytest.mark.skipif(platform.machine() != "x86_64" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's vector math library (libmvec) is an x86_64 glibc feature")
def test_native_core_calls_the_vector_exp_log_and_tanh():
    """The softmaxes, the sharpening's log and the LSTM's gates run 4 floats (2 doubles) per call
    to glibc's vector functions, not one at a time (measured 1.31x the scalar build at batch 16)."""
    library = Path(ntm_native.load_extension().__file__).read_bytes()
    for function in ("expf", "logf", "tanhf"):
        assert f"_ZGVbN4v_{function}".encode() in library, function
    for function in ("exp", "log", "tanh"):
        assert f"_ZGVbN2v_{function}\0".encode() in library, function


def test_a_native_core_that_cannot_be_built_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    with pytest.raises(NativeUnavailable) as error:
        ntm_native.load_extension(broken, name="ntm_native_broken_for_test")
    message = str(error.value)
    assert message.startswith("the native CPU core could not be built: ") and "\n" not in message
    assert "broken.cpp:1:1: error:" in message  # the compiler's own words, not the build command


def test_fast_path_falls_back_to_the_compiled_core_when_the_native_one_is_unavailable(monkeypatch, caplog):
    def unavailable(model):
        raise NativeUnavailable("the native CPU core could not be built: no compiler")

    monkeypatch.setattr("ntm_experiments.fast.native.NativeNTM", unavailable)
    _, task, model, params = build("copy", "ntm_ff")
    opt = graves_rmsprop(params)
    with caplog.at_level("WARNING", logger="ntm_experiments.fast"):
        fast = FastStep(model, task, opt, params, torch.device("cpu"))
    assert fast.core == "sequence" and isinstance(fast.forward, SequenceNTM)
    assert "no compiler; using the sequence core instead" in caplog.text
    assert_steps_agree(PlainStep(model, task, opt, params), fast, task.sample(4, torch.Generator().manual_seed(1)))


def test_auto_turns_the_fast_path_on_for_long_ntm_runs_and_on_cuda():
    _, _, ntm, _ = build("copy", "ntm_lstm")
    _, _, lstm, _ = build("copy", "lstm")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_fast_path("auto", ntm, cpu, 50_000, 20_000)
    assert not use_fast_path("auto", ntm, cpu, 10_000, 20_000)  # compiling would not pay back
    assert not use_fast_path("auto", lstm, cpu, 50_000, 20_000)  # nn.LSTM is fused already
    assert use_fast_path("auto", lstm, cuda, 100, 20_000)
    assert not use_fast_path("false", ntm, cuda, 10**6, 20_000)
    assert use_fast_path("true", lstm, cpu, 10, 20_000)
    assert use_fast_path("auto", ntm, cpu, 10, 20_000, core_ready=True)  # a built, cached native core: no cost
    assert not use_fast_path("auto", lstm, cpu, 10, 20_000, core_ready=True)
    asked = []  # a function is asked only when the answer depends on it
    assert use_fast_path("auto", ntm, cpu, 10, 20_000, core_ready=lambda: asked.append(1) or True) and asked == [1]
    assert not use_fast_path("false", ntm, cpu, 10, 20_000, core_ready=lambda: asked.append(2) or True)
    assert use_fast_path("auto", ntm, cpu, 50_000, 20_000, core_ready=lambda: asked.append(3) or False)
    assert asked == [1]


def test_bad_fast_path_value_is_refused():
    cfg = compose_config("train.fast_path=sometimes")
    with pytest.raises(ConfigError, match="train.fast_path=sometimes: must be one of auto, true, false"):
        validate(cfg)


def test_bad_fast_path_core_is_refused():
    cfg = compose_config("train.fast_path_core=cuda")
    with pytest.raises(ConfigError, match="train.fast_path_core=cuda: must be one of auto, native, sequence, step, triton"):
        validate(cfg)


@pytest.mark.slow
def test_fast_training_run_gives_the_plain_runs_curve(tmp_path):
    common = ["task=copy", "model=ntm_lstm", *SMALL["ntm_lstm"], "train.total_sequences=200", "train.batch_size=8",
              "train.log_every=40", "train.checkpoint_every=200", "eval.every=200", "eval.sequences=4",
              "eval.pictures=false", "progress=false"]
    curves = {}
    for setting in ("true", "false"):
        cfg = compose_config(*common, f"train.fast_path={setting}")
        train(cfg, tmp_path / setting)
        curves[setting] = scalars(tmp_path / setting, COST_TAG)
    steps = [s for s, _ in curves["false"]]
    assert [s for s, _ in curves["true"]] == steps == [40, 80, 120, 160, 200]
    for (_, fast), (_, plain) in zip(curves["true"], curves["false"]):
        assert fast == pytest.approx(plain, rel=1e-3)  # float32 rounding, compounded over 25 updates


def test_the_native_core_is_ready_once_built_and_a_compiled_core_never(monkeypatch, tmp_path):
    from ntm_experiments.fast import native
    from ntm_experiments.fast.steps import core_ready

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    load_extension()  # built and cached here (the tests' extension folder)
    assert native.native_ready() and core_ready("auto", cpu) and core_ready("native", cpu)
    assert not core_ready("sequence", cpu) and not core_ready("auto", cuda)
    monkeypatch.setattr(native, "_extension", None)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # a machine that never built it
    assert not native.native_ready() and not core_ready("auto", cpu)
