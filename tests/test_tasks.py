"""The five task generators against hand-worked layouts, their generalisation suites, and the cost in bits."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import TASKS, build_task, conf_settings
from ntm_experiments.tasks import cost_bits, make_task, optimal_predictions
from ntm_experiments.tasks.ngrams import beta_half


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_widths_match_table_3():
    widths = {type(t).__name__: (t.input_width, t.output_width) for t in map(build_task, TASKS)}
    assert widths == {"Copy": (10, 9), "RepeatCopy": (8, 7), "AssociativeRecall": (8, 6), "NGrams": (1, 1),
                      "PrioritySort": (10, 8)}


def test_copy_layout_by_hand():
    b = build_task("copy").sample(1, gen(), length=3)
    x, y, m = b.inputs[:, 0], b.targets[:, 0], b.mask[:, 0]
    assert x.shape == (7, 10) and y.shape == (7, 9)  # 3 inputs + delimiter + 3 outputs
    seq = x[:3, :8]
    assert x[:3, 8:].sum() == 0 and x[3].tolist() == [0] * 8 + [1, 0]  # delimiter on its own channel
    assert x[4:].sum() == 0  # nothing is input while the targets are produced
    assert x[:, 9].sum() == 0  # the spare input channel is always zero
    assert set(seq.unique().tolist()) == {0.0, 1.0}  # random bits, not a degenerate all-0 / all-1 draw
    assert torch.equal(y[4:, :8], seq) and y[:4].sum() == 0  # the same vectors, in the same order
    assert y[:, 8].sum() == 0  # nothing is asked of the spare output channel
    expected_mask = torch.zeros(7, 9)
    expected_mask[4:, :8] = 1  # the spare output channel is never scored
    assert torch.equal(m, expected_mask)


def test_repeat_copy_layout_by_hand():
    b = build_task("repeat_copy").sample(1, gen(1), length=2, repeats=3)
    x, y, m = b.inputs[:, 0], b.targets[:, 0], b.mask[:, 0]
    assert x.shape == (2 + 1 + 6 + 1, 8)
    seq = x[:2, :6]
    assert x[:2, 6:].sum() == 0
    assert x[2, 6] == 1 and x[2, 7] == pytest.approx((3 - 5.5) / 2.872) and x[2, :6].sum() == 0
    assert x[3:].sum() == 0  # nothing is input while the targets are produced
    assert set(seq.unique().tolist()) == {0.0, 1.0}  # random bits, not a degenerate draw
    assert y[:3].sum() == 0  # no target during the input phase
    assert torch.equal(y[3:9, :6], torch.cat([seq, seq, seq]))  # the sequence, three times
    assert y[3:9, 6].sum() == 0 and y[9].tolist() == [0] * 6 + [1]  # then the end marker
    assert m[:3].sum() == 0 and torch.equal(m[3:], torch.ones(7, 7))


def test_associative_recall_layout_by_hand():
    b = build_task("associative_recall").sample(4, gen(2), items=3)
    for i in range(4):
        x, y, m = b.inputs[:, i], b.targets[:, i], b.mask[:, i]
        assert x.shape == (3 * 4 + 5 + 3, 8)
        items = [x[4 * k + 1:4 * k + 4, :6] for k in range(3)]
        for k in range(3):
            assert x[4 * k].tolist() == [0] * 6 + [1, 0]  # item delimiter before each item
            assert x[4 * k + 1:4 * k + 4, 6:].sum() == 0
        assert x[12].tolist() == [0] * 7 + [1] and x[16].tolist() == [0] * 7 + [1]  # query delimiters
        query = x[13:16, :6]
        assert x[13:16, 6:].sum() == 0  # no delimiter flag on the query's own steps
        q = [k for k in range(2) if torch.equal(items[k], query)]  # the query is one of the first two items
        assert q, "the query must repeat an item that has a successor"
        assert torch.equal(y[17:20], items[q[0] + 1])  # answer: the item after the query
        assert x[17:].sum() == 0 and y[:17].sum() == 0
        assert m[:17].sum() == 0 and torch.equal(m[17:], torch.ones(3, 6))


def test_associative_recall_query_is_any_item_but_the_last():
    """The query is item q uniform in 1..k-1, so every item but the last one gets asked, the last never."""
    b = build_task("associative_recall").sample(400, gen(15), items=4)
    asked = []
    for i in range(400):
        items = [b.inputs[4 * k + 1:4 * k + 4, i, :6] for k in range(4)]
        query = b.inputs[17:20, i, :6]
        match = [k for k in range(4) if torch.equal(items[k], query)]
        assert len(match) == 1
        asked.append(match[0])
        assert torch.equal(b.targets[21:24, i], items[match[0] + 1])
    assert set(asked) == {0, 1, 2}


def test_priority_sort_sorts_whole_vectors_by_priority():
    b = build_task("priority_sort").sample(8, gen(3), num_inputs=5, num_outputs=3)
    assert b.inputs.shape == (5 + 1 + 3, 8, 10)
    for i in range(8):
        x, y, m = b.inputs[:, i], b.targets[:, i], b.mask[:, i]
        vectors, priority = x[:5, :8], x[:5, 8]
        assert ((priority >= -1) & (priority <= 1)).all()
        assert x[5].tolist() == [0] * 9 + [1] and x[6:].sum() == 0
        best = sorted(range(5), key=lambda k: -priority[k].item())[:3]
        for out_step, k in enumerate(best):
            assert torch.equal(y[6 + out_step], vectors[k])  # whole rows, highest priority first
        assert m[:6].sum() == 0 and torch.equal(m[6:], torch.ones(3, 8))
        assert y[:6].sum() == 0
    # a column-by-column sort (each bit column sorted on its own) gives other targets
    column_sorted = b.inputs[:5, :, :8].sort(dim=0, descending=True).values[:3]
    assert not torch.equal(column_sorted, b.targets[6:])


def test_priority_sort_is_not_a_column_sort():
    """Sorting each bit column on its own (a known trap) would give target rows not among the inputs."""
    b = build_task("priority_sort").sample(64, gen(4))
    rows_ok = 0
    for i in range(64):
        inputs = b.inputs[:20, i, :8]
        for step in range(21, 37):
            rows_ok += int((inputs == b.targets[step, i]).all(dim=1).any())
    assert rows_ok == 64 * 16
    column_sorted = b.inputs[:20, :, :8].sort(dim=0, descending=True).values[:16]
    assert not torch.equal(column_sorted, b.targets[21:])


def test_ngrams_layout():
    task = build_task("ngrams", length=12)
    b = task.sample(3, gen(5))
    assert b.inputs.shape == (12, 3, 1)
    assert torch.equal(b.inputs[1:, :, 0], b.targets[:-1, :, 0])  # input at t is bit t-1
    assert b.inputs[0].sum() == 0 and torch.equal(b.mask, torch.ones(12, 3, 1))
    assert set(b.targets.unique().tolist()) == {0.0, 1.0}


def _phase_end(batch, i, channel):
    return int(batch.inputs[:, i, channel].nonzero()[0, 0])


def _copy_layout(b, i):
    L = _phase_end(b, i, 8)  # the delimiter step is the sequence's length
    mask = torch.zeros(b.mask.shape[0], 9)
    mask[L + 1:2 * L + 1, :8] = 1
    # the scored steps reproduce this sample's own input vectors
    assert torch.equal(b.targets[L + 1:2 * L + 1, i, :8], b.inputs[:L, i, :8])
    return 2 * L + 1, mask, 8 * L


def _repeat_copy_layout(b, i):
    L = _phase_end(b, i, 6)
    n = round(b.inputs[L, i, 7].item() * 2.872 + 5.5)
    mask = torch.zeros(b.mask.shape[0], 7)
    mask[L + 1:L + n * L + 2] = 1  # n L repeated steps and the end-marker step, every channel
    assert torch.equal(b.targets[L + 1:L + n * L + 1, i, :6], b.inputs[:L, i, :6].repeat(n, 1))
    assert b.targets[L + n * L + 1, i, 6] == 1 and b.targets[:, i, 6].sum() == 1
    return L + n * L + 2, mask, 7 * (n * L + 1)


def _associative_layout(b, i):
    k = int(b.inputs[:, i, 6].sum())  # one item delimiter per item
    assert b.inputs[:, i, 7].nonzero()[:, 0].tolist() == [4 * k, 4 * k + 4]  # the two query delimiters
    mask = torch.zeros(b.mask.shape[0], 6)
    mask[4 * k + 5:4 * k + 8] = 1
    return 4 * k + 8, mask, 18


def _ngrams_layout(b, i):
    return 200, torch.ones(200, 1), 200


def _sort_layout(b, i):
    mask = torch.zeros(37, 8)
    mask[21:] = 1
    return 37, mask, 128


@pytest.mark.parametrize("task, layout", [
    (build_task("copy"), _copy_layout),
    (build_task("repeat_copy"), _repeat_copy_layout),
    (build_task("associative_recall"), _associative_layout),
    (build_task("ngrams"), _ngrams_layout),
    (build_task("priority_sort"), _sort_layout),
], ids=lambda v: getattr(v, "name", ""))
def test_mixed_lengths_in_one_batch_are_masked_per_sequence(task, layout):
    """Each sequence's mask covers exactly the steps its own length implies (read from its inputs),
    and everything after its end is zero padding."""
    b = task.sample(64, gen(6))
    assert b.inputs.shape[:2] == b.targets.shape[:2] == b.mask.shape[:2] and b.inputs.shape[1] == 64
    scored = b.mask.sum(dim=(0, 2))
    ends = []
    for i in range(64):
        end, expected_mask, bits = layout(b, i)
        ends.append(end)
        assert torch.equal(b.mask[:, i], expected_mask)
        assert scored[i].item() == bits
        assert end <= b.inputs.shape[0]
        assert b.inputs[end:, i].abs().sum() == 0 and b.targets[end:, i].sum() == 0 and b.mask[end:, i].sum() == 0
        assert (b.targets[:, i] * (1 - b.mask[:, i])).sum() == 0  # no target outside the scored bits
    assert max(ends) == b.inputs.shape[0]  # T is the longest sequence in the batch, no more
    if task.name == "copy":  # the spare channels: never input, never a target, never scored
        assert b.inputs[:, :, 9].abs().sum() == 0
        assert b.targets[:, :, 8].sum() == 0 and b.mask[:, :, 8].sum() == 0
    if task.name in ("copy", "repeat_copy", "associative_recall"):
        assert len(set(ends)) > 1  # the batch really mixes lengths


def test_length_ranges_and_seed():
    copy = build_task("copy").sample(2000, gen(7))
    lengths = copy.inputs[:, :, 8].argmax(dim=0)
    assert set(lengths.tolist()) == set(range(1, 21))
    rc = build_task("repeat_copy").sample(2000, gen(8))
    delim = rc.inputs[:, :, 6].argmax(dim=0)
    counts = torch.round(rc.inputs[delim, torch.arange(2000), 7] * 2.872 + 5.5)
    assert set(counts.long().tolist()) == set(range(1, 11)) and set(delim.tolist()) == set(range(1, 11))
    ar = build_task("associative_recall").sample(2000, gen(9))
    assert set(ar.inputs[:, :, 6].sum(0).long().tolist()) == set(range(2, 7))
    for task in map(build_task, TASKS):
        a, again, other = task.sample(8, gen(10)), task.sample(8, gen(10)), task.sample(8, gen(11))
        assert all(torch.equal(p, q) for p, q in zip(a, again))
        assert not torch.equal(a.inputs, other.inputs) or not torch.equal(a.targets, other.targets)


def test_copy_suite_has_the_papers_lengths():
    task = build_task("copy")
    suite = task.suite()
    assert [s.name for s in suite] == ["length_10", "length_20", "length_30", "length_50", "length_120"]
    for setting in suite:
        batch = task.sample(4, torch.Generator().manual_seed(1), **setting.setting)
        length = setting.setting["length"]
        delimiter_steps = batch.inputs[:, :, 8].nonzero()[:, 0]
        assert delimiter_steps.tolist() == [length] * 4  # the delimiter follows `length` vectors
        assert batch.mask.sum(dim=(0, 2)).tolist() == [8.0 * length] * 4


def test_repeat_copy_suite_has_fig8_settings():
    task = build_task("repeat_copy")
    suite = {s.name: s for s in task.suite()}
    assert set(suite) == {"training_range", "length_10_repeats_20", "length_20_repeats_10"}
    for name, (length, repeats) in {"length_10_repeats_20": (10, 20), "length_20_repeats_10": (20, 10)}.items():
        batch = task.sample(3, torch.Generator().manual_seed(0), **suite[name].setting)
        assert batch.inputs[:, :, 6].nonzero()[:, 0].tolist() == [length] * 3
        normalised = batch.inputs[length, :, 7]
        assert torch.allclose(normalised, torch.full((3,), (repeats - 5.5) / 2.872))
        assert batch.mask.sum(dim=(0, 2)).tolist() == [7.0 * (repeats * length + 1)] * 3
    assert [s.name for s in task.suite([15])] == ["length_15_repeats_10"]


def test_associative_recall_suite_has_fig11_item_counts():
    task = build_task("associative_recall")
    assert [s.name for s in task.suite()] == ["items_6", "items_10", "items_15", "items_20"]
    for setting in task.suite():
        batch = task.sample(5, torch.Generator().manual_seed(2), **setting.setting)
        item_delimiters = batch.inputs[:, :, 6].sum(0)
        assert item_delimiters.tolist() == [float(setting.setting["items"])] * 5
        assert batch.inputs[:, :, 7].sum(0).tolist() == [2.0] * 5  # the query, bounded on both sides
        assert batch.mask.sum(dim=(0, 2)).tolist() == [18.0] * 5


def test_ngram_and_priority_sort_suites():
    (validation,) = build_task("ngrams").suite()
    assert validation.sequences == 1000
    batch = build_task("ngrams").sample(validation.sequences, torch.Generator().manual_seed(0), **validation.setting)
    assert batch.inputs.shape == (200, 1000, 1)
    sort = build_task("priority_sort")
    names = [s.name for s in sort.suite()]
    assert names == ["inputs_20_outputs_16", "inputs_30_outputs_24"]
    longer = sort.sample(2, torch.Generator().manual_seed(0), **sort.suite()[1].setting)
    assert longer.inputs.shape[0] == 30 + 1 + 24 and longer.mask.sum().item() == 2 * 24 * 8


@pytest.mark.parametrize("name", TASKS)
def test_a_task_takes_exactly_the_keys_of_its_config(name):
    """No setting has a second default in the constructor, and no key is silently dropped."""
    settings = conf_settings("task", name)
    with pytest.raises(TypeError, match="colour"):
        make_task({"name": name, **settings, "colour": 1})
    missing = list(settings)[-1]
    with pytest.raises(TypeError, match=missing):
        make_task({"name": name, **{k: v for k, v in settings.items() if k != missing}})


def test_beta_half_moments():
    p = beta_half((200_000,), gen(12))
    assert abs(p.mean().item() - 0.5) < 0.005 and abs(p.var().item() - 1 / 8) < 0.003
    assert ((p >= 0) & (p <= 1)).all()


def test_optimal_estimator_by_hand():
    bits = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])[:, None]
    # context = previous 1 bit; before it is seen: 1/2
    # t=1: ctx 1, counts (N1=0, N0=0) -> 1/2; observe 0 under ctx 1
    # t=2: ctx 0, (0, 0) -> 1/2;               observe 1 under ctx 0
    # t=3: ctx 1, (N1=0, N0=1) -> 0.5/2;       observe 1 under ctx 1
    # t=4: ctx 1, (N1=1, N0=1) -> 1.5/3;       observe 1 under ctx 1
    # t=5: ctx 1, (N1=2, N0=1) -> 2.5/4
    expected = torch.tensor([0.5, 0.5, 0.5, 0.25, 0.5, 0.625])
    assert torch.allclose(optimal_predictions(bits, context=1)[:, 0], expected)


def test_optimal_estimator_two_bit_context_by_hand():
    # context = (bit t-2, bit t-1); 1/2 for t < 2. Second sequence: all ones, run in the same batch.
    # t=2: ctx 01 (0, 0) -> 1/2;           then 01 sees a 1
    # t=3: ctx 11 (0, 0) -> 1/2;           then 11 sees a 0
    # t=4: ctx 10 (0, 0) -> 1/2 (not 01's count: the order of the context bits matters); 10 sees a 1
    # t=5: ctx 01 (N1=1, N0=0) -> 1.5/2;   then 01 sees a 1
    # t=6: ctx 11 (N1=0, N0=1) -> 0.5/2;   then 11 sees a 0
    # t=7: ctx 10 (N1=1, N0=0) -> 1.5/2
    a = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    ones = torch.ones(8)  # ctx 11 every time from t=2: (N1 + 1/2) / (N1 + 1) with N1 = t - 2
    p = optimal_predictions(torch.stack([a, ones], dim=1), context=2)
    assert torch.allclose(p[:, 0], torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.75, 0.25, 0.75]))
    assert torch.allclose(p[:, 1], torch.tensor([0.5, 0.5, 0.5, 1.5 / 2, 2.5 / 3, 3.5 / 4, 4.5 / 5, 5.5 / 6]))


def test_optimal_estimator_scores_about_133_bits():
    task = build_task("ngrams")
    bits = task.sample_bits(1000, gen(13))
    p = optimal_predictions(bits, 5)
    bce = -(bits * torch.log2(p) + (1 - bits) * torch.log2(1 - p)).sum(0)
    # eq. 10's estimator scores about 133.3 bits with all 200 bits scored (Fig 13's 131.6: the paper's own set)
    assert 131.3 < bce.mean().item() < 135.3


@pytest.mark.parametrize("task", [build_task(name) for name in TASKS], ids=lambda t: t.name)
def test_cost_of_perfect_and_know_nothing_predictors(task):
    b = task.sample(16, gen(14))
    perfect = cost_bits((2 * b.targets - 1) * 50, b.targets, b.mask)
    assert (perfect < 1e-4).all()
    half = cost_bits(torch.zeros_like(b.targets), b.targets, b.mask)
    assert torch.allclose(half, b.mask.sum(dim=(0, 2)))  # one bit per scored target bit
    assert task.cost(torch.zeros_like(b.targets), b).shape == (16,)
    assert math.isclose(cost_bits(torch.zeros(1, 1, 1), torch.ones(1, 1, 1), torch.ones(1, 1, 1)).item(), 1.0,
                        rel_tol=1e-6)


def test_know_nothing_cost_by_hand():
    """Cost in bits (§4): predicting 1/2 scores 1 bit per target bit, so copy at length L costs 8 L bits;
    repeat copy (L, n): 7 (n L + 1)."""
    copy = build_task("copy").sample(3, gen(16), length=5)
    assert torch.allclose(cost_bits(torch.zeros_like(copy.targets), copy.targets, copy.mask), torch.full((3,), 40.0))
    rc = build_task("repeat_copy").sample(2, gen(17), length=4, repeats=3)
    assert torch.allclose(cost_bits(torch.zeros_like(rc.targets), rc.targets, rc.mask), torch.full((2,), 91.0))
    ps = build_task("priority_sort").sample(2, gen(18))
    assert torch.allclose(cost_bits(torch.zeros_like(ps.targets), ps.targets, ps.mask), torch.full((2,), 128.0))
    # one confidently wrong bit (logit -50 on a target 1) costs 50 / ln 2 bits, the rest of a perfect answer ~0
    logits = (2 * copy.targets - 1) * 50
    logits[6, 0, 0] = -50.0 * (2 * copy.targets[6, 0, 0] - 1)
    assert cost_bits(logits, copy.targets, copy.mask)[0].item() == pytest.approx(50 / math.log(2), rel=1e-4)


@pytest.mark.parametrize("name", TASKS)
def test_max_steps_bounds_every_training_batch_and_is_reached(name):
    """Task.max_steps: no training batch is longer; the longest possible one (every sequence at
    the task's largest settings) is exactly that long."""
    task = build_task(name)
    generator = torch.Generator().manual_seed(0)
    longest = max(task.sample(8, generator).inputs.shape[0] for _ in range(200))
    assert longest <= task.max_steps()
    largest = {"copy": {"length": getattr(task, "max_length", 0)}, "ngrams": {}, "priority_sort": {},
               "repeat_copy": {"length": getattr(task, "max_length", 0), "repeats": getattr(task, "max_repeats", 0)},
               "associative_recall": {"items": getattr(task, "max_items", 0)}}
    assert task.sample(2, generator, **largest[name]).inputs.shape[0] == task.max_steps()
