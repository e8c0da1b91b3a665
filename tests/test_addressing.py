"""NTM memory operations (§3) on hand-built tensors, gradcheck, known traps, numerical safety."""

from __future__ import annotations

import pytest
import torch

from ntm_experiments import addressing as A


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


MEMORY = t([1.0, 0.0], [0.0, 1.0], [1.0, 1.0])[None]  # (1, N=3, M=2)


def test_cosine_similarity_by_hand():
    keys = t([1.0, 0.0], [2.0, 2.0])[None]  # (1, H=2, M=2)
    sim = A.cosine_similarity(keys, MEMORY)
    r = 1 / 2 ** 0.5
    assert torch.allclose(sim[0], t([1, 0, r], [r, r, 1]), atol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_cosine_similarity_of_small_rows_is_eq_6(dtype, rtol):
    """A memory row of 1e-6 in 20 columns (squared norm 2e-11, memory_init=constant's rows) keeps
    its true cosine with a key (eq. 6): the epsilon sits on the product of the norms, far below it."""
    key = torch.linspace(0.1, 1.0, 20, dtype=torch.float64)
    memory = torch.stack([torch.full((20,), 1e-6, dtype=torch.float64), 1e-6 * torch.linspace(-1.0, 2.0, 20,
                                                                                           dtype=torch.float64)])
    exact = (memory @ key) / (memory.norm(dim=1) * key.norm())  # about 0.9 and 0.6
    sim = A.cosine_similarity(key.to(dtype)[None, None], memory.to(dtype)[None])[0, 0]
    torch.testing.assert_close(sim.double(), exact, rtol=rtol, atol=0)


def test_cosine_similarity_at_zero_keys_and_rows_is_zero_with_finite_gradients():
    keys = torch.tensor([[[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    memory = torch.tensor([[[0.0, 0.0, 0.0], [1e-6, 1e-6, 1e-6], [3.0, -1.0, 2.0]]], dtype=torch.float64,
                          requires_grad=True)
    sim = A.cosine_similarity(keys, memory)
    assert (sim[0, :, 0] == 0).all() and (sim[0, 1] == 0).all()
    (sim * torch.arange(1.0, 7.0, dtype=torch.float64).view(1, 2, 3)).sum().backward()
    assert torch.isfinite(keys.grad).all() and torch.isfinite(memory.grad).all()
    assert memory.grad[0, 0].abs().max() > 0  # a zero row's similarity still moves as the row does


def test_content_addressing_focuses_on_the_matching_row():
    keys = t([0.0, 3.0])[None]
    sharp = A.content_addressing(MEMORY, keys, t([100.0])[None])
    assert sharp[0, 0].argmax() == 1 and sharp[0, 0, 1] > 0.999
    flat = A.content_addressing(MEMORY, keys, t([0.0])[None])  # beta = 0: uniform
    assert torch.allclose(flat, torch.full_like(flat, 1 / 3))
    # by hand: softmax(beta * [0, 1, 1/sqrt 2]) with beta = 1
    sims = torch.tensor([0.0, 1.0, 2 ** -0.5], dtype=torch.float64)
    assert torch.allclose(A.content_addressing(MEMORY, keys, t([1.0])[None])[0, 0], torch.softmax(sims, 0))


def test_interpolation_gate():
    content, previous = t([1.0, 0.0, 0.0])[None], t([0.0, 0.0, 1.0])[None]
    assert torch.equal(A.interpolate(content, previous, t([0.0])[None]), previous)
    assert torch.equal(A.interpolate(content, previous, t([1.0])[None]), content)
    assert torch.allclose(A.interpolate(content, previous, t([0.25])[None]), t([0.25, 0, 0.75])[None])


def one_hot(index, n=5):
    w = torch.zeros(1, 1, n, dtype=torch.float64)
    w[0, 0, index] = 1.0
    return w


PLUS_ONE, MINUS_ONE, STAY = t([0.0, 0.0, 1.0])[None], t([1.0, 0.0, 0.0])[None], t([0.0, 1.0, 0.0])[None]


def test_shift_is_circular_at_both_ends():
    assert torch.equal(A.shift(one_hot(4), PLUS_ONE), one_hot(0))   # last row +1 wraps to row 0
    assert torch.equal(A.shift(one_hot(0), MINUS_ONE), one_hot(4))  # row 0 -1 wraps to the last row
    assert torch.equal(A.shift(one_hot(2), PLUS_ONE), one_hot(3))
    assert torch.equal(A.shift(one_hot(2), STAY), one_hot(2))
    w = t([0.1, 0.2, 0.3, 0.15, 0.25])[None]
    assert torch.allclose(A.shift(w, STAY), w)  # s = [0, 1, 0] is the identity on any weighting
    assert torch.allclose(A.shift(w, PLUS_ONE), t([0.25, 0.1, 0.2, 0.3, 0.15])[None])  # w~(i) = w(i - 1)
    assert torch.allclose(A.shift(w, MINUS_ONE), t([0.2, 0.3, 0.15, 0.25, 0.1])[None])  # w~(i) = w(i + 1)
    # a split shift spreads the focus: w~(i) = sum_j w(j) s(i - j)
    spread = A.shift(one_hot(0), t([0.2, 0.5, 0.3])[None])
    assert torch.allclose(spread[0, 0], torch.tensor([0.5, 0.3, 0, 0, 0.2], dtype=torch.float64))


def test_wider_shift_range():
    s = torch.zeros(1, 1, 5, dtype=torch.float64)
    s[0, 0, 4] = 1.0  # offset +2 with S = 2
    assert torch.equal(A.shift(one_hot(4, n=7), s), one_hot(6, n=7))
    assert torch.equal(A.shift(one_hot(6, n=7), s), one_hot(1, n=7))  # wraps
    s[0, 0, 4], s[0, 0, 0] = 0.0, 1.0  # offset -2
    assert torch.equal(A.shift(one_hot(1, n=7), s), one_hot(6, n=7))
    # K = 1 (no shifting allowed): the only distribution is [1], the identity
    w = torch.softmax(torch.randn(2, 3, 7, dtype=torch.float64), -1)
    assert torch.allclose(A.shift(w, torch.ones(2, 3, 1, dtype=torch.float64)), w)


def test_batched_shift_does_not_mix_samples_or_heads():
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(4, 3, 9, dtype=torch.float64), -1)
    s = torch.softmax(torch.randn(4, 3, 3, dtype=torch.float64), -1)
    together = A.shift(w, s)
    for b in range(4):
        for h in range(3):
            alone = A.shift(w[b:b + 1, h:h + 1], s[b:b + 1, h:h + 1])
            assert torch.allclose(together[b, h], alone[0, 0])
    # and each against the definition, written as a loop over rows
    for b in range(4):
        for h in range(3):
            for i in range(9):
                slot = {8: 0, 0: 1, 1: 2}  # (i - j) mod N -> index of offset -1, 0, +1 in s
                expected = sum(w[b, h, j] * s[b, h, slot[(i - j) % 9]] for j in range(9) if (i - j) % 9 in slot)
                assert torch.isclose(together[b, h, i], expected)


def test_sharpen_by_hand():
    w = t([0.5, 0.25, 0.25])[None]
    assert torch.allclose(A.sharpen(w, t([1.0])[None]), w, atol=1e-7)
    assert torch.allclose(A.sharpen(w, t([2.0])[None]), t([4 / 6, 1 / 6, 1 / 6])[None], atol=1e-7)


def test_address_pipeline_by_hand():
    """Two heads in one call. Head 0: beta large, g = 1, shift +1, gamma = 1: the content focus on row 1
    (the key [0, 3] matches it) moves to row 2. Head 1: beta = 0 (content uniform 1/3), previous one-hot
    on row 0, g = 1/2: [2/3, 1/6, 1/6]; shift +1: [1/6, 2/3, 1/6]; gamma = 2: [1, 16, 1] / 18."""
    previous = t([0.2, 0.3, 0.5], [1.0, 0.0, 0.0])[None]
    keys = t([0.0, 3.0], [5.0, -1.0])[None]
    out = A.address(MEMORY, previous, keys, beta=t([100.0], [0.0])[None], gate=t([1.0], [0.5])[None],
                    shifts=t([0.0, 0.0, 1.0], [0.0, 0.0, 1.0])[None], gamma=t([1.0], [2.0])[None])
    assert torch.allclose(out[0, 0], t([0.0, 0.0, 1.0])[0], atol=1e-6)
    assert torch.allclose(out[0, 1], t([1 / 18, 16 / 18, 1 / 18])[0], atol=1e-6)
    # g = 0 ignores the content entirely: the previous weighting, shifted and sharpened
    kept = A.address(MEMORY, previous[:, :1], keys[:, :1], t([100.0])[None], t([0.0])[None], STAY, t([1.0])[None])
    assert torch.allclose(kept, previous[:, :1], atol=1e-6)


def test_read_is_the_weighted_sum_of_rows():
    w = t([0.5, 0.0, 0.5], [0.0, 1.0, 0.0])[None]  # two heads
    assert torch.allclose(A.read(MEMORY, w)[0], t([1.0, 0.5], [0.0, 1.0]))


def test_write_erases_then_adds():
    w = t([0.0, 1.0, 0.0])[None]
    add = t([5.0, 6.0])[None]
    replaced = A.write(MEMORY, w, t([1.0, 1.0])[None], add)
    assert torch.allclose(replaced[0], t([1, 0], [5, 6], [1, 1]))  # erase = 1: the row becomes the add vector
    added = A.write(MEMORY, w, t([0.0, 0.0])[None], add)
    assert torch.allclose(added[0], t([1, 0], [5, 7], [1, 1]))  # erase = 0: pure addition
    # the trap: a write without the erase step would give `added` for any erase vector
    assert not torch.allclose(replaced, added)
    half = A.write(MEMORY, t([0.5, 0.0, 0.0])[None], t([1.0, 0.0])[None], t([0.0, 0.0])[None])
    assert torch.allclose(half[0, 0], t([0.5, 0.0])[0])  # M(i) (1 - w(i) e)


def test_two_write_heads_multiply_erasures_and_sum_adds():
    w = t([1.0, 0.0, 0.0], [0.5, 0.5, 0.0])[None]
    erase = t([0.5, 0.0], [1.0, 1.0])[None]
    add = t([1.0, 0.0], [0.0, 2.0])[None]
    out = A.write(MEMORY, w, erase, add)
    # row 0: [1,0] * (1 - 1*[.5,0]) * (1 - .5*[1,1]) + 1*[1,0] + .5*[0,2] = [.25,0] + [1,1]
    assert torch.allclose(out[0, 0], torch.tensor([1.25, 1.0], dtype=torch.float64))
    # row 1: [0,1] * (1 - .5*[1,1]) + .5*[0,2] = [0, .5] + [0, 1]
    assert torch.allclose(out[0, 1], torch.tensor([0.0, 1.5], dtype=torch.float64))
    assert torch.allclose(out[0, 2], MEMORY[0, 2])


def test_shapes():
    B, H, N, M, K = 3, 2, 7, 4, 3
    memory, keys = torch.randn(B, N, M), torch.randn(B, H, M)
    w = torch.softmax(torch.randn(B, H, N), -1)
    scalar = torch.rand(B, H, 1)
    s = torch.softmax(torch.randn(B, H, K), -1)
    assert A.cosine_similarity(keys, memory).shape == (B, H, N)
    assert A.content_addressing(memory, keys, scalar).shape == (B, H, N)
    assert A.interpolate(w, w, scalar).shape == (B, H, N)
    assert A.shift(w, s).shape == (B, H, N)
    assert A.sharpen(w, 1 + scalar).shape == (B, H, N)
    assert A.address(memory, w, keys, scalar, scalar, s, 1 + scalar).shape == (B, H, N)
    assert A.read(memory, w).shape == (B, H, M)
    assert A.write(memory, w, scalar.expand(B, H, M), keys).shape == (B, N, M)


def _inputs(seed=0, B=2, H=2, N=5, M=3, K=3):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    return dict(memory=torch.randn(B, N, M, generator=g, dtype=torch.float64),
                keys=torch.randn(B, H, M, generator=g, dtype=torch.float64),
                w=torch.softmax(torch.randn(B, H, N, generator=g, dtype=torch.float64), -1),
                beta=r(B, H, 1) * 3 + 0.1, gate=r(B, H, 1) * 0.8 + 0.1, gamma=1 + r(B, H, 1) * 2,
                s=torch.softmax(torch.randn(B, H, K, generator=g, dtype=torch.float64), -1),
                erase=r(B, H, M) * 0.8 + 0.1, add=torch.randn(B, H, M, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("name", ["cosine_similarity", "content_addressing", "interpolate", "shift", "sharpen",
                                  "address", "read", "write"])
def test_gradcheck(name):
    x = {k: v.requires_grad_() for k, v in _inputs().items()}
    calls = {
        "cosine_similarity": (A.cosine_similarity, (x["keys"], x["memory"])),
        "content_addressing": (A.content_addressing, (x["memory"], x["keys"], x["beta"])),
        "interpolate": (A.interpolate, (x["w"], x["w"].detach().flip(-1).requires_grad_(), x["gate"])),
        "shift": (A.shift, (x["w"], x["s"])),
        "sharpen": (A.sharpen, (x["w"], x["gamma"])),
        "address": (A.address, (x["memory"], x["w"], x["keys"], x["beta"], x["gate"], x["s"], x["gamma"])),
        "read": (A.read, (x["memory"], x["w"])),
        "write": (A.write, (x["memory"], x["w"], x["erase"], x["add"])),
    }
    fn, args = calls[name]
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5)


def _finite_forward_backward(fn, *args):
    args = [a.clone().requires_grad_() for a in args]
    out = fn(*args)
    assert torch.isfinite(out).all()
    # the plain sum, then a weighted sum (the gradient of sum() of a softmax is trivially zero)
    for weights in (torch.ones(out.numel()), torch.linspace(0, 1, out.numel())):
        for a in args:
            a.grad = None
        (out * weights.view_as(out)).sum().backward(retain_graph=True)
        for a in args:
            assert a.grad is not None and torch.isfinite(a.grad).all()


def test_zero_keys_and_zero_memory_rows_stay_finite():
    memory = torch.zeros(2, 5, 3)
    memory[1, 2] = 1.0  # one non-zero row, the others exactly zero
    keys = torch.zeros(2, 1, 3)
    for beta in (0.0, 1.0, 1e4):
        _finite_forward_backward(A.content_addressing, memory, keys, torch.full((2, 1, 1), beta))
        _finite_forward_backward(A.cosine_similarity, torch.randn(2, 1, 3), memory)


def test_sharpening_exact_zeros_with_huge_gamma_stays_finite():
    w = torch.tensor([[[0.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.0, 0.0]]])
    for gamma in (1.0, 50.0, 1000.0):
        g = torch.full((1, 2, 1), gamma)
        _finite_forward_backward(A.sharpen, w, g)
        out = A.sharpen(w, g)
        assert torch.allclose(out.sum(-1), torch.ones(1, 2))
        assert out[0, 0, 2] > 0.999


def test_whole_addressing_with_degenerate_inputs_stays_finite():
    B, H, N, M = 2, 2, 6, 4
    memory = torch.zeros(B, N, M)  # all rows zero
    previous = torch.zeros(B, H, N)
    previous[..., 0] = 1.0  # weightings with exact zeros
    s = torch.tensor([0.0, 0.0, 1.0]).expand(B, H, 3)
    for beta, gamma in ((0.0, 1.0), (1e4, 1000.0)):
        _finite_forward_backward(A.address, memory, previous, torch.zeros(B, H, M), torch.full((B, H, 1), beta),
                                 torch.full((B, H, 1), 0.5), s, torch.full((B, H, 1), gamma))
