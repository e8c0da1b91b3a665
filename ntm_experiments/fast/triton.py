"""The fast path's "triton" core, fused for the GPU: the NTM recurrence with its memory step and the controller's
pointwise work as Triton kernels, forward and backward; the same function as ``NTM.forward``.

It is arranged as the native CPU core (native.cpp), whose arithmetic the kernels follow
line by line:
  - the input layer and the output layer are one GEMM each over all T B rows, outside the loop,
    and each weight's gradient is one GEMM after the reverse loop;
  - per time step, forward: the controller's GEMM (cuBLAS), one LSTM pointwise kernel (gates,
    cell, h), the heads' GEMM (cuBLAS), one memory kernel (addressing eqs. 5-9 for every head,
    read eq. 2, erase/add write eqs. 3-4); backward: one memory kernel (every equation's
    gradient, from the forward's saved intermediates), the heads' GEMM, one LSTM pointwise
    kernel, the controller's GEMM. A feedforward controller has one tanh kernel per layer.
  - the memory kernels run one program per sample, holding its N x M memory in registers.
Under FastStep's CUDA graphs the launches replay without Python.

The kernels are checked against the model on the CPU through Triton's interpreter
(``TRITON_INTERPRET=1``, tests/test_triton.py), in float64 to 1e-10.
"""

from __future__ import annotations

import os

import torch

from ..addressing import COSINE_EPS, EPS
from ..models.ntm import NTM
from .handwritten import HandwrittenCore
from .recurrence import CoreUnavailable

try:
    import triton
    import triton.language as tl
except ImportError:  # the core is then unavailable; everything else works without triton
    triton = None


class TritonUnavailable(CoreUnavailable):
    """The fused GPU core cannot run this model here."""


def interpreted() -> bool:
    """Triton's interpreter runs the kernels on the CPU (for tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_supported(model: NTM, device: torch.device) -> None:
    if triton is None:
        raise TritonUnavailable("the fused GPU core needs triton (pip install triton)")
    if device.type != "cuda" and not (device.type == "cpu" and interpreted()):
        raise TritonUnavailable(f"the fused GPU core runs on CUDA, not {device.type}")
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float64):
        raise TritonUnavailable(f"the fused GPU core runs float32 (and float64 interpreted), not {dtype}")


if triton is not None:
    _EPS = tl.constexpr(EPS)
    _COSINE_EPS = tl.constexpr(COSINE_EPS)

    @triton.jit
    def _sigmoid(x):
        return 1.0 / (1.0 + tl.exp(-x))

    @triton.jit
    def _softplus(x):
        """torch's softplus (threshold 20); exp(x) itself where log(1 + exp(x)) would round to 0."""
        return tl.where(x > 20.0, x, tl.where(x < -15.0, tl.exp(x), tl.log(1.0 + tl.exp(x))))

    @triton.jit
    def _softplus_grad(x):
        z = tl.exp(tl.minimum(x, 20.0))
        return tl.where(x > 20.0, 1.0, z / (z + 1.0))

    @triton.jit
    def _tanh(x):
        """tanh from exp, its series near 0 where 1 - exp(-2|x|) would cancel."""
        a = tl.abs(x)
        e = tl.exp(-2.0 * a)
        t = (1.0 - e) / (1.0 + e)
        x2 = x * x
        series = x * (1.0 - x2 * (1.0 / 3.0 - x2 * (2.0 / 15.0)))
        return tl.where(a < 0.01, series, tl.where(x < 0.0, -t, t))

    @triton.jit
    def _softmax(z, valid):
        z = tl.where(valid, z, float("-inf"))
        e = tl.where(valid, tl.exp(z - tl.max(z, 0)), 0.0)
        return e / tl.sum(e, 0)

    # Per (time step, sample, head) workspace, as in native.cpp: [similarity (N) | content
    # weighting (N) | gated (N) | shifted (N) | shift distribution (K) | beta, gate, gamma, key norm]
    # The memory kernels' sizes: H = R + W heads, shifts -S..S (K = 2S + 1), A = M + 3 + K
    # addressing parameters per head, P = H A + 2 W M heads' outputs, X = 4 N + K + 4 workspace.

    @triton.jit
    def _sample_tile(N: tl.constexpr, M: tl.constexpr, K: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        """This program's sample b; indices over rows n, columns m and shifts k, their masks; the
        (N, M) tile's offsets and mask."""
        n = tl.arange(0, BLOCK_N)
        m = tl.arange(0, BLOCK_M)
        k = tl.arange(0, BLOCK_K)
        return (tl.program_id(0).to(tl.int64), n, m, k, n < N, m < M, k < K, n[:, None] * M + m[None, :],
                (n < N)[:, None] & (m < M)[None, :])

    @triton.jit
    def _memory_forward(mem_ptr, mem_new_ptr, wprev_ptr, w_ptr, par_ptr, reads_ptr, reads_stride, work_ptr, rn_ptr,
                        N: tl.constexpr, M: tl.constexpr, R: tl.constexpr, W: tl.constexpr, K: tl.constexpr,
                        H: tl.constexpr, S: tl.constexpr, A: tl.constexpr, P: tl.constexpr, X: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        """One sample's memory step (program b): mem (N, M), the last weightings wprev (H, N) and
        the heads' outputs par (P) -> mem_new (N, M), w (H, N), reads (R M), work (H, X), rn (N)."""
        b, n, m, k, n_in, m_in, k_in, tile, tile_in = _sample_tile(N, M, K, BLOCK_N, BLOCK_M, BLOCK_K)
        mem = tl.load(mem_ptr + b * N * M + tile, mask=tile_in, other=0.0)
        rn = tl.sqrt(tl.sum(mem * mem, 1))  # row norms
        tl.store(rn_ptr + b * N + n, rn, mask=n_in)
        par = par_ptr + b * P
        for h in range(H):
            p = par + h * A
            wk = work_ptr + (b * H + h) * X
            key = tl.load(p + m, mask=m_in, other=0.0)
            kn = tl.sqrt(tl.sum(key * key, 0))
            beta = _softplus(tl.load(p + M))                # key strength >= 0
            gate = _sigmoid(tl.load(p + M + 1))             # interpolation gate
            gamma = 1.0 + _softplus(tl.load(p + M + 2 + K))  # sharpening >= 1
            s = _softmax(tl.load(p + M + 2 + k, mask=k_in, other=0.0), k_in)  # shifts -S..S
            sim = tl.sum(mem * key[None, :], 1) / (kn * rn + _COSINE_EPS)  # cosine similarity (eq. 6)
            wc = _softmax(beta * sim, n_in)                 # content weighting (eq. 5)
            prev = tl.load(wprev_ptr + (b * H + h) * N + n, mask=n_in, other=0.0)
            wg = gate * wc + (1.0 - gate) * prev            # interpolation (eq. 7)
            tl.store(wk + n, sim, mask=n_in)
            tl.store(wk + N + n, wc, mask=n_in)
            tl.store(wk + 2 * N + n, wg, mask=n_in)
            tl.store(wk + 4 * N + k, s, mask=k_in)
            tl.store(wk + 4 * N + K, beta)
            tl.store(wk + 4 * N + K + 1, gate)
            tl.store(wk + 4 * N + K + 2, gamma)
            tl.store(wk + 4 * N + K + 3, kn)
            tl.debug_barrier()  # the shift reads wg and s back at other rows
            ws = tl.zeros([BLOCK_N], dtype=mem.dtype)      # circular shift (eq. 8)
            for j in range(K):
                ws += (tl.load(wk + 2 * N + (n + j - S + N) % N, mask=n_in, other=0.0)
                       * tl.load(wk + 4 * N + K - 1 - j))
            tl.store(wk + 3 * N + n, ws, mask=n_in)
            w = _softmax(gamma * tl.log(ws + _EPS), n_in)  # sharpening (eq. 9)
            tl.store(w_ptr + (b * H + h) * N + n, w, mask=n_in)
            if h < R:                                       # read the memory before the write (eq. 2)
                tl.store(reads_ptr + b * reads_stride + h * M + m, tl.sum(w[:, None] * mem, 0), mask=m_in)
        tl.debug_barrier()  # the write reads every write head's weighting back
        keep = tl.full([BLOCK_N, BLOCK_M], 1.0, mem.dtype)  # erase then add (eqs. 3-4)
        add = tl.zeros([BLOCK_N, BLOCK_M], dtype=mem.dtype)
        ea = par + H * A
        for j in range(W):
            wj = tl.load(w_ptr + (b * H + R + j) * N + n, mask=n_in, other=0.0)
            ej = _sigmoid(tl.load(ea + j * 2 * M + m, mask=m_in, other=0.0))
            aj = tl.load(ea + j * 2 * M + M + m, mask=m_in, other=0.0)
            keep = keep * (1.0 - wj[:, None] * ej[None, :])
            add += wj[:, None] * aj[None, :]
        tl.store(mem_new_ptr + b * N * M + tile, mem * keep + add, mask=tile_in)

    @triton.jit
    def _memory_backward(mem_ptr, wprev_ptr, w_ptr, par_ptr, work_ptr, rn_ptr, dreads_ptr, dnext_ptr, dnext_stride,
                         dmem_new_ptr, dw_ptr, dmem_ptr, dwprev_ptr, dpar_ptr, scratch_ptr,
                         N: tl.constexpr, M: tl.constexpr, R: tl.constexpr, W: tl.constexpr, K: tl.constexpr,
                         H: tl.constexpr, S: tl.constexpr, A: tl.constexpr, P: tl.constexpr, X: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        """One sample's memory step backward (program b). The gradients at its outputs: reads
        (dreads (R M) from the output layer plus dnext's first R M columns, the next step's
        controller input), memory dmem_new (N, M), weightings dw (H, N; used as scratch) ->
        dmem (N, M), dwprev (H, N), dpar (P)."""
        b, n, m, k, n_in, m_in, k_in, tile, tile_in = _sample_tile(N, M, K, BLOCK_N, BLOCK_M, BLOCK_K)
        mem = tl.load(mem_ptr + b * N * M + tile, mask=tile_in, other=0.0)
        g = tl.load(dmem_new_ptr + b * N * M + tile, mask=tile_in, other=0.0)
        dw = dw_ptr + b * H * N
        par = par_ptr + b * P
        dpar = dpar_ptr + b * P
        dmem = tl.zeros([BLOCK_N, BLOCK_M], dtype=mem.dtype)
        for h in range(R):  # read (eq. 2)
            dr = (tl.load(dreads_ptr + b * R * M + h * M + m, mask=m_in, other=0.0)
                  + tl.load(dnext_ptr + b * dnext_stride + h * M + m, mask=m_in, other=0.0))
            wh = tl.load(w_ptr + (b * H + h) * N + n, mask=n_in, other=0.0)
            dwh = tl.load(dw + h * N + n, mask=n_in, other=0.0) + tl.sum(mem * dr[None, :], 1)
            tl.store(dw + h * N + n, dwh, mask=n_in)
            dmem += wh[:, None] * dr[None, :]
        ea = par + H * A
        dea = dpar + H * A
        keep_all = tl.full([BLOCK_N, BLOCK_M], 1.0, mem.dtype)
        for j in range(W):  # erase and add (eqs. 3-4)
            wj = tl.load(w_ptr + (b * H + R + j) * N + n, mask=n_in, other=0.0)
            ej = _sigmoid(tl.load(ea + j * 2 * M + m, mask=m_in, other=0.0))
            aj = tl.load(ea + j * 2 * M + M + m, mask=m_in, other=0.0)
            others = tl.full([BLOCK_N, BLOCK_M], 1.0, mem.dtype)  # the other write heads' keep factors
            for jj in range(W):
                wo = tl.load(w_ptr + (b * H + R + jj) * N + n, mask=n_in, other=0.0)
                eo = _sigmoid(tl.load(ea + jj * 2 * M + m, mask=m_in, other=0.0))
                others = others * tl.where(jj == j, 1.0, 1.0 - wo[:, None] * eo[None, :])
            keep_all = keep_all * (1.0 - wj[:, None] * ej[None, :])
            dwj = tl.sum(g * (aj[None, :] - mem * ej[None, :] * others), 1)
            de = -tl.sum(g * mem * wj[:, None] * others, 0)
            tl.store(dea + j * 2 * M + m, de * ej * (1.0 - ej), mask=m_in)  # erase logits
            tl.store(dea + j * 2 * M + M + m, tl.sum(g * wj[:, None], 0), mask=m_in)  # add
            tl.store(dw + (R + j) * N + n, tl.load(dw + (R + j) * N + n, mask=n_in, other=0.0) + dwj, mask=n_in)
        dmem += g * keep_all
        tl.debug_barrier()  # every head's weighting gradient is complete
        for h in range(H):  # addressing, from the sharpened weighting back to the key
            p = par + h * A
            dp = dpar + h * A
            wk = work_ptr + (b * H + h) * X
            dwh = tl.load(dw + h * N + n, mask=n_in, other=0.0)
            wh = tl.load(w_ptr + (b * H + h) * N + n, mask=n_in, other=0.0)
            lw = tl.load(wk + 3 * N + n, mask=n_in, other=1.0) + _EPS
            gamma = tl.load(wk + 4 * N + K + 2)
            du = wh * (dwh - tl.sum(dwh * wh, 0))  # sharpening (eq. 9)
            tl.store(dp + M + 2 + K, tl.sum(du * tl.log(lw), 0) * _softplus_grad(tl.load(p + M + 2 + K)))
            dws = du * gamma / lw
            tl.store(scratch_ptr + b * N + n, dws, mask=n_in)
            tl.debug_barrier()  # the shift's gradient reads dws back at other rows
            dwg = tl.zeros([BLOCK_N], dtype=mem.dtype)  # circular shift (eq. 8)
            ds = tl.zeros([BLOCK_K], dtype=mem.dtype)
            for j in range(K):
                dwg += (tl.load(scratch_ptr + b * N + (n - j + S + N) % N, mask=n_in, other=0.0)
                        * tl.load(wk + 4 * N + K - 1 - j))
                wg_at = tl.load(wk + 2 * N + (n + j - S + N) % N, mask=n_in, other=0.0)
                ds = tl.where(k == K - 1 - j, tl.sum(dws * wg_at, 0), ds)
            s = tl.load(wk + 4 * N + k, mask=k_in, other=0.0)
            tl.store(dp + M + 2 + k, s * (ds - tl.sum(ds * s, 0)), mask=k_in)
            wc = tl.load(wk + N + n, mask=n_in, other=0.0)  # interpolation (eq. 7)
            prev = tl.load(wprev_ptr + (b * H + h) * N + n, mask=n_in, other=0.0)
            gate = tl.load(wk + 4 * N + K + 1)
            tl.store(dp + M + 1, tl.sum(dwg * (wc - prev), 0) * gate * (1.0 - gate))
            tl.store(dwprev_ptr + (b * H + h) * N + n, (1.0 - gate) * dwg, mask=n_in)
            dwc = gate * dwg  # content addressing (eqs. 5-6)
            dz = wc * (dwc - tl.sum(dwc * wc, 0))
            sim = tl.load(wk + n, mask=n_in, other=0.0)
            beta = tl.load(wk + 4 * N + K)
            tl.store(dp + M, tl.sum(dz * sim, 0) * _softplus_grad(tl.load(p + M)))
            dsim = dz * beta
            key = tl.load(p + m, mask=m_in, other=0.0)
            kn = tl.load(wk + 4 * N + K + 3)
            rn = tl.load(rn_ptr + b * N + n, mask=n_in, other=0.0)
            # sim = k.M(i) / D, D = |k| |M(i)| + COSINE_EPS; k / |k| and M(i) / |M(i)| are 0 at 0
            scaled = dsim / (kn * rn + _COSINE_EPS)
            inv_kn = tl.where(kn > 0.0, 1.0 / tl.where(kn > 0.0, kn, 1.0), 0.0)
            inv_rn = tl.where(rn > 0.0, 1.0 / tl.where(rn > 0.0, rn, 1.0), 0.0)
            tl.store(dp + m, tl.sum(scaled[:, None] * mem, 0) - key * (tl.sum(scaled * sim * rn, 0) * inv_kn),
                     mask=m_in)
            dmem += scaled[:, None] * key[None, :] - (scaled * sim * kn * inv_rn)[:, None] * mem
            tl.debug_barrier()  # the next head overwrites the scratch read above
        tl.store(dmem_ptr + b * N * M + tile, dmem, mask=tile_in)

    @triton.jit
    def _lstm_forward(gates_ptr, c_prev_ptr, c_new_ptr, h_self_ptr, h_self_stride, h_up_ptr, h_up_stride, h_top_ptr,
                      total, C: tl.constexpr, HAS_UP: tl.constexpr, HAS_TOP: tl.constexpr, BLOCK: tl.constexpr):
        """LSTM cell pointwise (nn.LSTMCell's gate order i, f, g, o): pre-activations (B, 4C) ->
        activations in place, cell (B, C), h into its own next input, the layer above's input
        and the top layer's hidden."""
        idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = idx < total
        b, c = idx // C, idx % C
        gp = gates_ptr + b * 4 * C + c
        i = _sigmoid(tl.load(gp, mask=valid, other=0.0))
        f = _sigmoid(tl.load(gp + C, mask=valid, other=0.0))
        gg = _tanh(tl.load(gp + 2 * C, mask=valid, other=0.0))
        o = _sigmoid(tl.load(gp + 3 * C, mask=valid, other=0.0))
        tl.store(gp, i, mask=valid)
        tl.store(gp + C, f, mask=valid)
        tl.store(gp + 2 * C, gg, mask=valid)
        tl.store(gp + 3 * C, o, mask=valid)
        cn = f * tl.load(c_prev_ptr + idx, mask=valid, other=0.0) + i * gg
        tl.store(c_new_ptr + idx, cn, mask=valid)
        h = o * _tanh(cn)
        tl.store(h_self_ptr + b * h_self_stride + c, h, mask=valid)
        if HAS_UP:
            tl.store(h_up_ptr + b * h_up_stride + c, h, mask=valid)
        if HAS_TOP:
            tl.store(h_top_ptr + idx, h, mask=valid)

    @triton.jit
    def _lstm_backward(act_ptr, c_prev_ptr, c_new_ptr, dh_from_ptr, dh_from_stride, dh_self_ptr, dh_self_stride,
                       dc_ptr, dgates_ptr, total, C: tl.constexpr, BLOCK: tl.constexpr):
        """LSTM cell pointwise backward: the gradient at h (from above, and from the next step)
        and at the cell (dc, updated in place to the previous cell's) -> dgates (B, 4C)."""
        idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = idx < total
        b, c = idx // C, idx % C
        ap = act_ptr + b * 4 * C + c
        i = tl.load(ap, mask=valid, other=0.0)
        f = tl.load(ap + C, mask=valid, other=0.0)
        gg = tl.load(ap + 2 * C, mask=valid, other=0.0)
        o = tl.load(ap + 3 * C, mask=valid, other=0.0)
        dh = (tl.load(dh_from_ptr + b * dh_from_stride + c, mask=valid, other=0.0)
              + tl.load(dh_self_ptr + b * dh_self_stride + c, mask=valid, other=0.0))
        tc = _tanh(tl.load(c_new_ptr + idx, mask=valid, other=0.0))
        dcn = tl.load(dc_ptr + idx, mask=valid, other=0.0) + dh * o * (1.0 - tc * tc)
        dp = dgates_ptr + b * 4 * C + c
        tl.store(dp, dcn * gg * i * (1.0 - i), mask=valid)
        tl.store(dp + C, dcn * tl.load(c_prev_ptr + idx, mask=valid, other=0.0) * f * (1.0 - f), mask=valid)
        tl.store(dp + 2 * C, dcn * i * (1.0 - gg * gg), mask=valid)
        tl.store(dp + 3 * C, dh * tc * o * (1.0 - o), mask=valid)
        tl.store(dc_ptr + idx, dcn * f, mask=valid)

    @triton.jit
    def _tanh_forward(y_ptr, up_ptr, total, HAS_UP: tl.constexpr, BLOCK: tl.constexpr):
        """A feedforward layer's tanh, in place on (B, C), copied into the layer above's input."""
        idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = idx < total
        y = _tanh(tl.load(y_ptr + idx, mask=valid, other=0.0))
        tl.store(y_ptr + idx, y, mask=valid)
        if HAS_UP:
            tl.store(up_ptr + idx, y, mask=valid)

    @triton.jit
    def _tanh_backward(dh_ptr, dh_stride, y_ptr, dpre_ptr, total, C: tl.constexpr, BLOCK: tl.constexpr):
        idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = idx < total
        b, c = idx // C, idx % C
        y = tl.load(y_ptr + idx, mask=valid, other=0.0)
        tl.store(dpre_ptr + idx, tl.load(dh_ptr + b * dh_stride + c, mask=valid, other=0.0) * (1.0 - y * y),
                 mask=valid)


POINTWISE_BLOCK = 1024  # elements per program of the pointwise kernels


def _pow2(x: int) -> int:
    return triton.next_power_of_2(max(int(x), 1))


class TritonNTM(HandwrittenCore):
    """``TritonNTM(model)(inputs)`` = ``model(inputs)``: inputs (T, B, I) -> logits (T, B, O)."""

    def __init__(self, model: NTM):
        check_supported(model, next(model.parameters()).device)
        super().__init__(model)
        self.blocks = {"BLOCK_N": _pow2(model.N), "BLOCK_M": _pow2(model.M), "BLOCK_K": _pow2(model.K)}
        # warps for one sample's N x M tile: about 16 elements per thread
        self.memory_warps = min(16, max(4, self.blocks["BLOCK_N"] * self.blocks["BLOCK_M"] // 512))

    def _shape(self):
        """The memory kernels' sizes (see _sample_tile's comment)."""
        model = self.model
        H, A = model.R + model.W, model.M + 3 + model.K
        return dict(N=model.N, M=model.M, R=model.R, W=model.W, K=model.K, H=H, S=model.K // 2, A=A,
                    P=H * A + 2 * model.W * model.M, X=4 * model.N + model.K + 4, **self.blocks)

    def run_forward(self, x_projection, controller, reads0, weights0, memory0, weights, biases):
        """What native.cpp's forward does, with the same buffers: [hidden, reads, the rest saved]."""
        model, shape = self.model, self._shape()
        T, B, _ = x_projection.shape
        C, L, R, M, N, H = model.controller.output_size, len(weights) - 1, model.R, model.M, model.N, shape["H"]
        RM, P, X = R * M, shape["P"], shape["X"]
        new = x_projection.new_empty
        hidden, params = new(T, B, C), new(T, B, P)
        memory, wts = new(T + 1, B, N, M), new(T + 1, B, H, N)
        work, rnorm = new(T, B, H, X), new(T, B, N)
        memory[0].copy_(memory0)
        wts[0].copy_(weights0)
        inputs, acts, cells, outs = [], [], [], []
        for layer in range(L):
            below = RM if layer == 0 else C
            inputs.append(new(T + 1, B, below + C if self.lstm else below))
            if self.lstm:
                acts.append(new(T, B, 4 * C))
                cells.append(new(T + 1, B, C))
                inputs[layer][0, :, below:].copy_(controller[2 * layer])
                cells[layer][0].copy_(controller[2 * layer + 1])
            else:
                outs.append(hidden if layer == L - 1 else new(T, B, C))
        inputs[0][0, :, :RM].copy_(reads0)
        grid = (triton.cdiv(B * C, POINTWISE_BLOCK),)
        for t in range(T):
            for layer in range(L):
                below = inputs[layer].shape[2] - C if self.lstm else inputs[layer].shape[2]
                add_to = x_projection[t] if layer == 0 else biases[layer - 1]
                up = inputs[layer + 1][t] if layer + 1 < L else None
                if self.lstm:
                    torch.addmm(add_to, inputs[layer][t], weights[layer].t(), out=acts[layer][t])
                    h_self = inputs[layer][t + 1, :, below:]
                    _lstm_forward[grid](acts[layer][t], cells[layer][t], cells[layer][t + 1], h_self,
                                        inputs[layer].stride(1), up if up is not None else h_self,
                                        up.stride(0) if up is not None else 0, hidden[t], B * C, C=C,
                                        HAS_UP=up is not None, HAS_TOP=layer == L - 1, BLOCK=POINTWISE_BLOCK)
                else:
                    torch.addmm(add_to, inputs[layer][t], weights[layer].t(), out=outs[layer][t])
                    _tanh_forward[grid](outs[layer][t], up if up is not None else outs[layer][t], B * C,
                                        HAS_UP=up is not None, BLOCK=POINTWISE_BLOCK)
            torch.addmm(biases[-1], hidden[t], weights[-1].t(), out=params[t])
            _memory_forward[(B,)](memory[t], memory[t + 1], wts[t], wts[t + 1], params[t], inputs[0][t + 1],
                                  inputs[0].stride(1), work[t], rnorm[t], num_warps=self.memory_warps, **shape)
        saved = [hidden, inputs[0][1:, :, :RM], params, memory, wts, work, rnorm]
        for layer in range(L):
            saved += [inputs[layer], acts[layer], cells[layer]] if self.lstm else [inputs[layer], outs[layer]]
        return saved

    def run_backward(self, saved, d_hidden, d_reads, weights):
        """What native.cpp's backward does: the gradients in the same order."""
        model = self.model
        hidden, _, params, memory, wts, work, rnorm = saved[:7]
        T, B, C = hidden.shape
        L, R, M, N, H = len(weights) - 1, model.R, model.M, model.N, model.R + model.W
        RM, P = R * M, params.shape[2]
        slots = 3 if self.lstm else 2
        layer_saved = [saved[7 + slots * layer: 7 + slots * (layer + 1)] for layer in range(L)]
        zeros, new = hidden.new_zeros, hidden.new_empty
        dpre = [new(T, B, 4 * C if self.lstm else C) for _ in range(L)]
        d_in = [zeros(B, layer_saved[layer][0].shape[2]) for layer in range(L)]
        dcell = [zeros(B, C) for _ in range(L)] if self.lstm else []
        dpar = new(T, B, P)
        dmem, dmem_prev = zeros(B, N, M), new(B, N, M)
        dw, dw_prev = zeros(B, H, N), new(B, H, N)
        dh_top, scratch = new(B, C), new(B, N)
        shape = self._shape()
        grid = (triton.cdiv(B * C, POINTWISE_BLOCK),)
        for t in range(T - 1, -1, -1):
            _memory_backward[(B,)](memory[t], wts[t], wts[t + 1], params[t], work[t], rnorm[t], d_reads[t], d_in[0],
                                   d_in[0].stride(0), dmem, dw, dmem_prev, dw_prev, dpar[t], scratch,
                                   num_warps=self.memory_warps, **shape)
            dmem, dmem_prev = dmem_prev, dmem
            dw, dw_prev = dw_prev, dw
            torch.addmm(d_hidden[t], dpar[t], weights[-1], out=dh_top)  # the heads' input is the top h
            for layer in range(L - 1, -1, -1):
                dh_from = dh_top if layer == L - 1 else d_in[layer + 1]  # (B, C) in its first C columns
                if self.lstm:
                    inputs, act, cell = layer_saved[layer]
                    below = inputs.shape[2] - C
                    _lstm_backward[grid](act[t], cell[t], cell[t + 1], dh_from, dh_from.stride(0),
                                         d_in[layer][:, below:], d_in[layer].stride(0), dcell[layer], dpre[layer][t],
                                         B * C, C=C, BLOCK=POINTWISE_BLOCK)
                else:
                    _tanh_backward[grid](dh_from, dh_from.stride(0), layer_saved[layer][1][t], dpre[layer][t], B * C,
                                         C=C, BLOCK=POINTWISE_BLOCK)
                torch.mm(dpre[layer][t], weights[layer], out=d_in[layer])
        result = [dpre[0]]
        for layer in range(L if self.lstm else 0):
            result += [d_in[layer][:, -C:].contiguous(), dcell[layer]]
        result += [d_in[0][:, :RM].contiguous(), dw, dmem]
        rows = T * B
        for layer in range(L + 1):
            grad = dpre[layer] if layer < L else dpar
            into = layer_saved[layer][0][:T] if layer < L else hidden
            result.append(grad.reshape(rows, -1).t() @ into.reshape(rows, -1))
            if layer > 0:
                result.append(grad.sum((0, 1)))
        return result
