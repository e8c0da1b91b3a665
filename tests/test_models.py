"""Models: Table 3's parameter counts, batching without mixing, explicit state."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import MODELS, TASKS, compose_config, conf_settings
from ntm_experiments.models import NTM, NTMState, StackedLSTM, count_parameters, make_model
from ntm_experiments.tasks import make_task

SMALL = dict(controller_size=16, memory_rows=16, memory_width=6)


def ntm(input_size: int, output_size: int, controller: str, **overrides) -> NTM:
    """conf/model/ntm_<controller>.yaml's NTM, with ``overrides``."""
    return NTM(input_size, output_size, **conf_settings("model", f"ntm_{controller}", **overrides))


@pytest.mark.parametrize("widths, hidden, count", [
    ((10, 9), 256, 1_352_969),   # copy
    ((8, 7), 512, 5_312_007),    # repeat copy
    ((8, 6), 256, 1_344_518),    # associative recall
    ((1, 1), 128, 331_905),      # N-grams
    ((10, 8), 128, 348_424),     # priority sort (the paper prints 384,424: a misprint)
])
def test_lstm_parameter_counts_equal_table_3(widths, hidden, count):
    network = StackedLSTM(*widths, **conf_settings("model", "lstm", hidden_size=hidden, layers=3))
    assert count_parameters(network) == count


def readme_parameter_table() -> dict[tuple[str, str], tuple[int, int]]:
    """README's "Parameter counts, ours (paper's Tables 1-3)" table: (task, model) -> (ours, paper)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = text.split("Parameter counts, ours (paper's Tables 1", 1)[1].split("\n\n")[1]
    header, _, *rows = table.strip().splitlines()
    models = [c.strip() for c in header.strip("|").split("|")][1:]
    counts = {}
    for row in rows:
        task, *cells = [c.strip() for c in row.strip("|").split("|")]
        for model, cell in zip(models, cells):
            ours, paper = re.fullmatch(r"([\d,]+) \(([\d,]+)\)", cell).groups()
            counts[(task, model)] = (int(ours.replace(",", "")), int(paper.replace(",", "")))
    return counts


README_COUNTS = readme_parameter_table()


def test_the_readme_table_has_every_task_and_model():
    assert sorted(README_COUNTS) == sorted((t, m) for t in TASKS for m in MODELS)


@pytest.mark.parametrize("task, model", sorted(README_COUNTS))
def test_parameter_counts_equal_the_readmes_table(task, model):
    """Each pair's model, built from its composed config (the paper's row), has the count the
    README prints, and the paper's figure beside it is the one the run logs (paper.params)."""
    ours, paper = README_COUNTS[(task, model)]
    cfg = compose_config(f"task={task}", f"model={model}")
    task_ = make_task(cfg.task)
    assert count_parameters(make_model(cfg.model, task_.input_width, task_.output_width)) == ours
    assert cfg.paper.params == paper


NTM_VARIANTS = [
    dict(controller="ff"),
    dict(controller="lstm"),
    dict(controller="lstm", controller_layers=2, read_heads=3, write_heads=2),
    dict(controller="ff", read_heads=3, write_heads=2, memory_init="constant"),
    dict(controller="lstm", memory_init="constant", shift_range=2),
]


@pytest.mark.parametrize("variant", NTM_VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_ntm_forward_trace_and_state(variant):
    torch.manual_seed(0)
    model = ntm(5, 4, **SMALL, **variant)
    x = torch.randn(7, 3, 5)
    logits, trace = model(x, trace=True)
    assert logits.shape == (7, 3, 4) and torch.isfinite(logits).all()
    R, W = variant.get("read_heads", 1), variant.get("write_heads", 1)
    assert trace.read_weights.shape == (7, 3, R, 16) and trace.write_weights.shape == (7, 3, W, 16)
    assert trace.adds.shape == (7, 3, W, 6)
    for w in (trace.read_weights, trace.write_weights):
        assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-5)
    state = model.initial_state(3)
    assert isinstance(state, NTMState)
    assert state.reads.shape == (3, R, 6) and state.memory.shape == (3, 16, 6)
    assert state.read_weights.shape == (3, R, 16) and state.write_weights.shape == (3, W, 16)
    layers = variant.get("controller_layers", 1)
    if variant["controller"] == "lstm":  # (h_1, c_1, ..., h_L, c_L), each (B, C)
        assert len(state.controller) == 2 * layers and all(c.shape == (3, 16) for c in state.controller)
    else:
        assert state.controller == ()
    for field in (state.reads, state.read_weights, state.write_weights, state.memory, *state.controller):
        assert (field == field[:1]).all()  # the same learned bias for every sequence of the batch
    for w in (state.read_weights, state.write_weights):
        assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)))


def test_stacked_lstm_is_the_table_3_network_step_by_step():
    """The fused per-layer nn.LSTM equals the paper's network written out one cell at a time: input to
    every layer, the layer below to each upper layer, one bias per gate, output reading all layers."""
    torch.manual_seed(4)
    model = StackedLSTM(5, 4, **conf_settings("model", "lstm", hidden_size=6, layers=3))
    with torch.no_grad():
        model.h0.normal_(), model.c0.normal_()
    x = torch.randn(7, 3, 5)
    h = [model.h0[layer].expand(3, -1) for layer in range(3)]
    c = [model.c0[layer].expand(3, -1) for layer in range(3)]
    outputs = []
    for t in range(7):
        for layer, lstm in enumerate(model.layers):
            fan_in = x[t] if layer == 0 else torch.cat([x[t], h[layer - 1]], dim=-1)
            gates = fan_in @ lstm.weight_ih_l0.T + h[layer] @ lstm.weight_hh_l0.T + lstm.bias_ih_l0
            i, f, g, o = gates.chunk(4, dim=-1)
            c[layer] = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
            h[layer] = torch.sigmoid(o) * torch.tanh(c[layer])
        outputs.append(model.output(torch.cat(h, dim=-1)))
    assert torch.allclose(model(x), torch.stack(outputs), atol=1e-5)
    assert all(not lstm.bias_hh_l0.requires_grad and not lstm.bias_hh_l0.any() for lstm in model.layers)


@pytest.mark.parametrize("make", [
    lambda: ntm(5, 4, controller="ff", **SMALL),
    lambda: ntm(5, 4, controller="lstm", memory_init="constant", **SMALL),
    lambda: StackedLSTM(5, 4, **conf_settings("model", "lstm", hidden_size=12, layers=3)),
], ids=["ntm_ff", "ntm_lstm", "lstm"])
def test_no_hidden_state_between_calls(make):
    """Episodic (§4): every call starts from the learned initial state, whatever ran before."""
    torch.manual_seed(3)
    model = make()
    x = torch.randn(6, 2, 5)
    first = model(x)
    model(torch.randn(8, 2, 5) * 3)  # something else in between
    assert torch.equal(model(x), first)
    assert not torch.equal(model(torch.randn(6, 2, 5)), first)  # and the output does depend on the input


@pytest.mark.parametrize("make", [
    lambda: ntm(5, 4, controller="ff", **SMALL),
    lambda: ntm(5, 4, controller="lstm", read_heads=2, write_heads=2, **SMALL),
    lambda: StackedLSTM(5, 4, **conf_settings("model", "lstm", hidden_size=12, layers=3)),
], ids=["ntm_ff", "ntm_lstm", "lstm"])
def test_no_mixing_across_the_batch(make):
    torch.manual_seed(1)
    model = make()
    x = torch.randn(9, 4, 5)
    together = model(x)
    for i in range(4):
        assert torch.allclose(together[:, i], model(x[:, i:i + 1])[:, 0], atol=1e-6)


@pytest.mark.parametrize("controller", ["ff", "lstm"])
def test_constant_memory_gives_finite_gradients(controller):
    """A near-zero memory (1e-6 everywhere) makes every row's norm ~0: cosine similarity must stay finite."""
    torch.manual_seed(2)
    model = ntm(5, 4, controller=controller, memory_init="constant", memory_init_value=1e-6, **SMALL)
    model(torch.randn(11, 3, 5)).pow(2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.heads.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["ntm_ff", "ntm_lstm", "lstm"])
def test_a_model_takes_exactly_the_keys_of_its_config(name):
    """No setting has a second default in the constructor, and no key is silently dropped."""
    settings = conf_settings("model", name)
    with pytest.raises(TypeError, match="colour"):
        make_model({"name": name, **settings, "colour": 1}, 5, 4)
    missing = list(settings)[-1]
    with pytest.raises(TypeError, match=missing):
        make_model({"name": name, **{k: v for k, v in settings.items() if k != missing}}, 5, 4)


def test_learned_initial_state_gets_gradients():
    model = ntm(5, 4, controller="lstm", memory_init="learned", **SMALL)
    model(torch.randn(6, 2, 5)).sum().backward()
    for p in (model.memory0, model.read0, model.weight_logits0, model.controller.h0):
        assert p.grad is not None and p.grad.abs().sum() > 0
