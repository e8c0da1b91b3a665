"""Property-based tests (hypothesis): the task generators and the addressing functions keep their
invariants for random valid sizes, not only for the hand-picked ones."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import build_task
from ntm_experiments import addressing as A
from ntm_experiments.tasks import cost_bits

FAST = settings(max_examples=40, deadline=None)


def _check_batch(batch, batch_size: int, input_width: int, output_width: int, scored_steps: torch.Tensor,
                 bits_per_step: int) -> None:
    """Shapes, 0/1 masks, targets only where scored, and per sequence exactly `scored_steps` scored steps."""
    T = batch.inputs.shape[0]
    assert batch.inputs.shape == (T, batch_size, input_width)
    assert batch.targets.shape == batch.mask.shape == (T, batch_size, output_width)
    assert set(batch.mask.unique().tolist()) <= {0.0, 1.0}
    assert (batch.targets * (1 - batch.mask)).abs().sum() == 0  # no target outside the scored bits
    steps = (batch.mask.sum(-1) > 0).sum(0)  # (B,) scored steps per sequence
    assert torch.equal(steps, scored_steps)
    assert torch.equal(batch.mask.sum((0, 2)), scored_steps.float() * bits_per_step)
    # costs: non-negative for any prediction, 0 for the targets themselves (as logits of +-30)
    for logits in (torch.randn_like(batch.targets) * 5, torch.zeros_like(batch.targets)):
        assert (cost_bits(logits, batch.targets, batch.mask) >= 0).all()
    perfect = cost_bits((2 * batch.targets - 1) * 30, batch.targets, batch.mask)
    assert (perfect < 1e-6 * (1 + batch.mask.sum((0, 2)))).all()


def _delimiter_steps(inputs: torch.Tensor, channel: int) -> torch.Tensor:
    return inputs[:, :, channel].argmax(0)  # (B,) the first step flagged on `channel`


@FAST
@given(batch=st.integers(1, 6), bits=st.integers(1, 9), lo=st.integers(1, 6), extra=st.integers(0, 8),
       seed=st.integers(0, 2**31 - 1))
def test_copy_masks_cover_exactly_the_copy_phase(batch, bits, lo, extra, seed):
    task = build_task("copy", bits=bits, min_length=lo, max_length=lo + extra)
    b = task.sample(batch, torch.Generator().manual_seed(seed))
    lengths = _delimiter_steps(b.inputs, bits)  # the delimiter step is the length
    assert ((lengths >= lo) & (lengths <= lo + extra)).all()
    _check_batch(b, batch, task.input_width, task.output_width, lengths, bits)


@FAST
@given(batch=st.integers(1, 5), bits=st.integers(1, 7), length=st.integers(1, 6), repeats=st.integers(1, 6),
       seed=st.integers(0, 2**31 - 1))
def test_repeat_copy_masks_cover_the_repeats_and_the_end_marker(batch, bits, length, repeats, seed):
    task = build_task("repeat_copy", bits=bits, max_length=length, max_repeats=repeats)
    b = task.sample(batch, torch.Generator().manual_seed(seed))
    lengths = _delimiter_steps(b.inputs, bits)
    counts = torch.round(b.inputs[lengths, torch.arange(batch), bits + 1] * 2.872 + 5.5).long()
    assert ((counts >= 1) & (counts <= repeats)).all()
    _check_batch(b, batch, task.input_width, task.output_width, lengths * counts + 1, bits + 1)


@FAST
@given(batch=st.integers(1, 5), bits=st.integers(1, 7), item_length=st.integers(1, 4), lo=st.integers(2, 4),
       extra=st.integers(0, 3), seed=st.integers(0, 2**31 - 1))
def test_associative_recall_scores_one_item(batch, bits, item_length, lo, extra, seed):
    task = build_task("associative_recall", bits=bits, item_length=item_length, min_items=lo, max_items=lo + extra)
    b = task.sample(batch, torch.Generator().manual_seed(seed))
    items = b.inputs[:, :, bits].sum(0)  # one item delimiter per item
    assert ((items >= lo) & (items <= lo + extra)).all()
    _check_batch(b, batch, task.input_width, task.output_width, torch.full((batch,), item_length), bits)


@FAST
@given(batch=st.integers(1, 5), context=st.integers(1, 5), length=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_ngrams_score_every_bit(batch, context, length, seed):
    task = build_task("ngrams", context=context, length=length)
    b = task.sample(batch, torch.Generator().manual_seed(seed))
    _check_batch(b, batch, 1, 1, torch.full((batch,), length), 1)


@FAST
@given(batch=st.integers(1, 5), bits=st.integers(1, 9), n=st.integers(1, 12), k_frac=st.floats(0, 1),
       seed=st.integers(0, 2**31 - 1))
def test_priority_sort_targets_are_the_top_vectors_in_order(batch, bits, n, k_frac, seed):
    k = max(1, round(k_frac * n))
    task = build_task("priority_sort", bits=bits, num_inputs=n, num_outputs=k)
    b = task.sample(batch, torch.Generator().manual_seed(seed))
    _check_batch(b, batch, task.input_width, task.output_width, torch.full((batch,), k), bits)
    priorities = b.inputs[:n, :, bits]
    assert ((priorities >= -1) & (priorities <= 1)).all()
    order = priorities.argsort(0, descending=True)[:k]  # (k, B)
    expected = b.inputs[:n, :, :bits].gather(0, order[:, :, None].expand(-1, -1, bits))
    assert torch.equal(b.targets[n + 1:], expected)


def _weighting(shape, generator, zeros: bool) -> torch.Tensor:
    w = torch.rand(*shape, generator=generator, dtype=torch.float64)
    if zeros:  # exact zeros, as a sharp focus leaves them
        w = w * (torch.rand(*shape, generator=generator, dtype=torch.float64) > 0.6)
        w[..., 0] += 1e-3
    return w / w.sum(-1, keepdim=True)


@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 3), H=st.integers(1, 3), N=st.integers(3, 20), M=st.integers(1, 6), reach=st.integers(0, 1),
       log_beta=st.floats(-8, 4), log_gamma=st.floats(0, 3), gate=st.floats(0, 1), zero_rows=st.booleans(),
       zeros=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_addressing_gives_weightings_and_finite_gradients(B, H, N, M, reach, log_beta, log_gamma, gate, zero_rows,
                                                          zeros, seed):
    """For any sizes and head parameters, from beta ~ 0 to 10^4 and gamma 1 to 1000: every weighting is
    non-negative and sums to 1, and forward and backward stay finite."""
    g = torch.Generator().manual_seed(seed)
    K = 2 * min(reach, (N - 1) // 2) + 1
    memory = torch.randn(B, N, M, generator=g, dtype=torch.float64)
    if zero_rows:
        memory[:, ::2] = 0.0
    args = [memory, _weighting((B, H, N), g, zeros), torch.randn(B, H, M, generator=g, dtype=torch.float64),
            torch.full((B, H, 1), 10.0 ** log_beta, dtype=torch.float64),
            torch.full((B, H, 1), gate, dtype=torch.float64), _weighting((B, H, K), g, zeros),
            torch.full((B, H, 1), 10.0 ** log_gamma, dtype=torch.float64)]
    args = [a.requires_grad_() for a in args]
    content = A.content_addressing(args[0], args[2], args[3])
    w = A.address(*args)
    for weights in (content, A.interpolate(content, args[1], args[4]), A.shift(args[1], args[5]), w):
        assert (weights >= 0).all() and torch.allclose(weights.sum(-1), torch.ones(B, H, dtype=torch.float64))
    r = A.read(args[0], w)
    new_memory = A.write(args[0], w, torch.sigmoid(args[2]), args[2])
    assert r.shape == (B, H, M) and new_memory.shape == (B, N, M)
    (w * torch.linspace(0, 1, w.numel(), dtype=torch.float64).view_as(w)).sum().add(r.sum()).add(
        new_memory.pow(2).sum()).backward()
    assert torch.isfinite(w).all() and torch.isfinite(r).all() and torch.isfinite(new_memory).all()
    for a in args:
        assert a.grad is not None and torch.isfinite(a.grad).all()
