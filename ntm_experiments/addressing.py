"""NTM memory operations (§3), one pure function per equation, on batched tensors.

Shapes: B batch, H heads, N memory rows (locations), M row width, K = 2S+1 allowed
shifts (-S..S). Memory is (B, N, M); a weighting is (B, H, N) and sums to 1 over N.
Per-head scalars (beta, g, gamma) are (B, H, 1). Nothing loops over the batch, and every
function is finite in value and gradient for zero keys, zero memory rows and weightings
with exact zeros.
"""

from __future__ import annotations

import torch

# Added inside the sharpening's logarithm so zero weights stay finite.
EPS = 1e-8
# Added to the product of the norms in the cosine similarity (as Collier & Beel 2018 do), so a zero
# key or row gives 0 instead of 0/0 while a small row keeps its true cosine: the relative error is
# COSINE_EPS / (|u| |v|), 2.2e-7 for a unit key against a row of 1e-6 in 20 columns (squared norm
# 2e-11, which an epsilon under each square root would swamp).
COSINE_EPS = 1e-12


def cosine_similarity(keys: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """K[u, v] = u.v / (||u|| ||v||) (eq. 6, §3.3.1), for every head's key against every row.

    keys (B, H, M), memory (B, N, M) -> (B, H, N). Computed as u.v / (||u|| ||v|| + COSINE_EPS)
    with the exact norms: eq. 6 holds for small rows (a row of 1e-6 keeps its cosine), a zero key
    or row gives similarity 0 instead of 0/0, and the norm's gradient at a zero vector is taken as
    0 (torch.linalg.vector_norm's), not sqrt's infinite slope at 0.
    """
    dot = torch.einsum("bhm,bnm->bhn", keys, memory)
    key_norm = torch.linalg.vector_norm(keys, dim=-1, keepdim=True)  # (B, H, 1)
    row_norm = torch.linalg.vector_norm(memory, dim=-1)[:, None, :]  # (B, 1, N)
    return dot / (key_norm * row_norm + COSINE_EPS)


def content_addressing(memory: torch.Tensor, keys: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Content weighting w^c(i) = softmax_i(beta K[k, M(i)]) (eq. 5, §3.3.1).

    memory (B, N, M), keys (B, H, M), beta (B, H, 1) >= 0 key strength -> (B, H, N).
    """
    return torch.softmax(beta * cosine_similarity(keys, memory), dim=-1)


def interpolate(content: torch.Tensor, previous: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Interpolation w^g = g w^c + (1 - g) w_{t-1} (eq. 7, §3.3.2).

    content, previous (B, H, N), gate (B, H, 1) in (0, 1) -> (B, H, N).
    """
    return gate * content + (1.0 - gate) * previous


def shift(weights: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Circular convolution w~(i) = sum_j w^g(j) s(i - j), indices modulo N (eq. 8, §3.3.2).

    weights (B, H, N); shifts (B, H, K), a distribution over offsets -S..S (K = 2S+1),
    entry k being offset k - S -> (B, H, N). The window wraps around the ends of memory,
    and each head of each sample is convolved with its own shift distribution only.
    """
    reach = shifts.shape[-1] // 2
    if reach == 0:
        return weights * shifts
    wrapped = torch.cat([weights[..., -reach:], weights, weights[..., :reach]], dim=-1)  # (B, H, N+2S)
    windows = wrapped.unfold(-1, shifts.shape[-1], 1)  # (B, H, N, K): window[i, k] = w(i + k - S)
    # w(i + k - S) pairs with offset d = i - j = S - k, i.e. shifts reversed.
    return (windows * shifts.flip(-1)[..., None, :]).sum(-1)


def sharpen(weights: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Sharpening w(i) = w~(i)^gamma / sum_j w~(j)^gamma (eq. 9, §3.3.2).

    weights (B, H, N), gamma (B, H, 1) >= 1 -> (B, H, N). Computed as
    softmax(gamma log(w~ + EPS)): the same function, but a zero entry or a huge gamma
    cannot give 0/0, and the gradient of 0^gamma with respect to gamma stays finite.
    """
    return torch.softmax(gamma * torch.log(weights + EPS), dim=-1)


def address(memory: torch.Tensor, previous: torch.Tensor, keys: torch.Tensor, beta: torch.Tensor,
            gate: torch.Tensor, shifts: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """The whole addressing pipeline of Fig. 2: content, interpolation, shift, sharpening.

    memory (B, N, M), previous (B, H, N), keys (B, H, M), beta/gate/gamma (B, H, 1),
    shifts (B, H, K) -> new weighting (B, H, N).
    """
    content = content_addressing(memory, keys, beta)
    gated = interpolate(content, previous, gate)
    return sharpen(shift(gated, shifts), gamma)


def read(memory: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Read vector r = sum_i w(i) M(i) (eq. 2, §3.1).

    memory (B, N, M), weights (B, H, N) -> (B, H, M).
    """
    return torch.einsum("bhn,bnm->bhm", weights, memory)


def write(memory: torch.Tensor, weights: torch.Tensor, erase: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """Erase then add (eqs. 3-4, §3.2): M~(i) = M(i) * prod_h (1 - w_h(i) e_h), then
    M(i) = M~(i) + sum_h w_h(i) a_h. With several write heads the erasures multiply (their
    order does not matter) and the additions sum, as §3.2 says.

    memory (B, N, M), weights (B, H, N), erase (B, H, M) in (0, 1), add (B, H, M) -> (B, N, M).
    """
    keep = 1.0 - weights[..., :, None] * erase[..., None, :]  # (B, H, N, M)
    factor = keep[:, 0]
    for head in range(1, keep.shape[1]):  # a few heads: cheaper than prod(), whose backward is slow
        factor = factor * keep[:, head]
    return memory * factor + torch.einsum("bhn,bhm->bnm", weights, add)
