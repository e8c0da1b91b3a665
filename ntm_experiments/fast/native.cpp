// The NTM's recurrent core over a whole sequence on the CPU, forward and backward, written by
// hand: the fast path's "native" core (native.py, beside this file, builds and loads it).
//
// It computes what NTM.forward computes between the input layer and the output layer, for every
// time step: the controller's recurrent layers, the heads' linear layer, addressing (eqs. 5-9,
// §3.3), read (eq. 2, §3.1) and erase/add write (eqs. 3-4, §3.2). The backward is the exact
// gradient of that function from the forward's saved intermediates: nothing is recomputed, and
// each weight's gradient is one GEMM over all T B rows after the reverse loop.
//
// Why by hand: per time step the compiled (torch.compile) step spends most of its time in the
// wrappers around a few small kernels, not in arithmetic. Here a whole sequence is one call: the
// GEMMs go to ATen (MKL/oneDNN), everything else is plain loops over one sample's memory, the
// samples of a batch spread over threads (at::parallel_for).
//
// Shapes: T time steps, B batch, C controller cells, L controller layers, R read and W write
// heads (H = R + W, read heads first), N memory rows, M row width, K = 2S + 1 shifts,
// A = M + 3 + K addressing parameters per head, P = H A + 2 W M heads' outputs.
// Per head its A parameters are [key (M), beta, gate, shift logits (K), gamma] (raw, before
// their activations), then per write head [erase (M), add (M)] (NTM.memory_step's layout).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

// glibc's vector math library (libmvec) has SIMD versions of exp, log and tanh, but its header
// declares them only under -ffast-math, which would also let the compiler reorder and drop
// floating-point work everywhere. Declared here instead (built with -fno-math-errno, which only
// says errno is never read), so the `omp simd` loops below call them, 4 floats or 2 doubles at
// a time; elsewhere the plain scalar functions run.
#if defined(__x86_64__) && defined(__GLIBC__) && defined(_OPENMP) && !defined(__FAST_MATH__)
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
#pragma omp declare simd notinbranch
double exp(double) noexcept;
#pragma omp declare simd notinbranch
float logf(float) noexcept;
#pragma omp declare simd notinbranch
double log(double) noexcept;
#pragma omp declare simd notinbranch
float tanhf(float) noexcept;
#pragma omp declare simd notinbranch
double tanh(double) noexcept;
}
#endif

namespace {

constexpr double kEps = 1e-8;       // ntm_experiments.addressing.EPS (the sharpening's log)
constexpr double kCosEps = 1e-12;   // ntm_experiments.addressing.COSINE_EPS (eq. 6's denominator)

struct Dims {
  int64_t T, B, C, L, R, W, H, N, M, K, S, A, P, X;
  bool lstm;
};

// Per (time step, sample, head) workspace saved by the forward for the backward.
// [similarity (N) | content weighting (N) | gated weighting (N) | shifted weighting (N) |
//  shift distribution (K) | beta | gate | gamma | key norm]
struct Work {
  int64_t sim, wc, wg, ws, s, beta, gate, gamma, kn;
  explicit Work(const Dims& d)
      : sim(0), wc(d.N), wg(2 * d.N), ws(3 * d.N), s(4 * d.N), beta(4 * d.N + d.K),
        gate(beta + 1), gamma(beta + 2), kn(beta + 3) {}
  static int64_t size(int64_t N, int64_t K) { return 4 * N + K + 4; }
};

template <typename T> inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
// torch.nn.functional.softplus (beta 1, threshold 20) and its derivative as torch computes it
template <typename T> inline T softplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }
template <typename T> inline T softplus_grad(T x) {
  if (x > T(20)) return T(1);
  const T z = std::exp(x);
  return z / (z + T(1));
}

template <typename T> void softmax_inplace(T* x, int64_t n) {
  T top = x[0];
#pragma omp simd reduction(max : top)
  for (int64_t i = 1; i < n; ++i) top = std::max(top, x[i]);
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - top));
  const T inv = T(1) / sum;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

// The circular shift (eq. 8) as offsets on the circle of N rows, |d| < N (S < N/2: the config
// checks it), each in two contiguous pieces so the loops vectorise.
// dst(i) += coef src(i + d mod N)
template <typename T> void add_shifted(T* dst, const T* src, int64_t d, T coef, int64_t N) {
  const int64_t split = d >= 0 ? N - d : -d;  // where i + d wraps
  const int64_t before = d >= 0 ? d : d + N, after = d >= 0 ? d - N : d;
#pragma omp simd
  for (int64_t i = 0; i < split; ++i) dst[i] += coef * src[i + before];
#pragma omp simd
  for (int64_t i = split; i < N; ++i) dst[i] += coef * src[i + after];
}
// sum_i a(i) b(i + d mod N)
template <typename T> T dot_shifted(const T* a, const T* b, int64_t d, int64_t N) {
  const int64_t split = d >= 0 ? N - d : -d;
  const int64_t before = d >= 0 ? d : d + N, after = d >= 0 ? d - N : d;
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < split; ++i) acc += a[i] * b[i + before];
#pragma omp simd reduction(+ : acc)
  for (int64_t i = split; i < N; ++i) acc += a[i] * b[i + after];
  return acc;
}

// ------------------------------------------------------------------ memory step, one sample
// Two passes over the memory rows each way: forward, (row norms, every head's similarity) then
// (every read, the write); backward, (read and write) then (every head's cosine similarity).

// mem (N, M) the memory before this step; wprev (H, N) the last step's weightings; par (P) the
// heads' linear output. Writes mem_new (N, M), w (H, N), reads (R M), work (H, X), rn (N).
// scratch: (W + 2) M values.
template <typename T>
void memory_forward(const Dims& d, const Work& o, const T* mem, const T* wprev, const T* par,
                    T* mem_new, T* w, T* reads, T* work, T* rn, T* scratch) {
  const int64_t N = d.N, M = d.M, K = d.K, S = d.S, A = d.A, X = d.X, H = d.H, R = d.R, W = d.W;
  for (int64_t h = 0; h < H; ++h) {            // each head's scalars (§3.3)
    const T* p = par + h * A;
    T* wk = work + h * X;
    T sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t m = 0; m < M; ++m) sq += p[m] * p[m];
    wk[o.kn] = std::sqrt(sq);                  // key norm
    wk[o.beta] = softplus(p[M]);               // key strength >= 0
    wk[o.gate] = sigmoid(p[M + 1]);            // interpolation gate in (0, 1)
    wk[o.gamma] = T(1) + softplus(p[M + 2 + K]);  // sharpening >= 1
    T* s = wk + o.s;
    for (int64_t k = 0; k < K; ++k) s[k] = p[M + 2 + k];
    softmax_inplace(s, K);                     // shift distribution over -S..S
  }
  for (int64_t i = 0; i < N; ++i) {            // row norms, cosine similarities k.M(i) / (|k| |M(i)| + COSINE_EPS) (eq. 6)
    const T* row = mem + i * M;
    T sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t m = 0; m < M; ++m) sq += row[m] * row[m];
    rn[i] = std::sqrt(sq);
    for (int64_t h = 0; h < H; ++h) {
      const T* key = par + h * A;
      T* wk = work + h * X;
      T dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t m = 0; m < M; ++m) dot += key[m] * row[m];
      wk[o.sim + i] = dot / (wk[o.kn] * rn[i] + T(kCosEps));
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    T* wk = work + h * X;
    const T* sim = wk + o.sim; T* wc = wk + o.wc; T* wg = wk + o.wg; T* ws = wk + o.ws; const T* s = wk + o.s;
    const T beta = wk[o.beta], gate = wk[o.gate], gamma = wk[o.gamma];
    const T* prev = wprev + h * N;
    T* wh = w + h * N;
    for (int64_t i = 0; i < N; ++i) wc[i] = beta * sim[i];
    softmax_inplace(wc, N);                    // content weighting (eq. 5)
    for (int64_t i = 0; i < N; ++i) wg[i] = gate * wc[i] + (T(1) - gate) * prev[i];  // eq. 7
    for (int64_t i = 0; i < N; ++i) ws[i] = 0;  // circular shift (eq. 8): ws(i) = sum_k wg(i + k - S) s(K-1-k)
    for (int64_t k = 0; k < K; ++k) add_shifted(ws, wg, k - S, s[K - 1 - k], N);
#pragma omp simd
    for (int64_t i = 0; i < N; ++i) wh[i] = gamma * std::log(ws[i] + T(kEps));  // sharpening (eq. 9)
    softmax_inplace(wh, N);
  }
  // read the memory before the write (eq. 2), then erase and add (eqs. 3-4), a row at a time
  const T* ea = par + H * A;
  T* e = scratch; T* keep = e + W * M; T* add = keep + M;
  for (int64_t j = 0; j < W; ++j)
    for (int64_t m = 0; m < M; ++m) e[j * M + m] = sigmoid(ea[j * 2 * M + m]);
  for (int64_t m = 0; m < R * M; ++m) reads[m] = 0;
  for (int64_t i = 0; i < N; ++i) {
    const T* row = mem + i * M;
    for (int64_t h = 0; h < R; ++h) {
      const T wi = w[h * N + i];
      T* r = reads + h * M;
#pragma omp simd
      for (int64_t m = 0; m < M; ++m) r[m] += wi * row[m];
    }
    for (int64_t m = 0; m < M; ++m) { keep[m] = 1; add[m] = 0; }
    for (int64_t j = 0; j < W; ++j) {
      const T wj = w[(R + j) * N + i];
      const T* ej = e + j * M; const T* aj = ea + j * 2 * M + M;
#pragma omp simd
      for (int64_t m = 0; m < M; ++m) {
        keep[m] *= T(1) - wj * ej[m];
        add[m] += wj * aj[m];
      }
    }
    T* out = mem_new + i * M;
#pragma omp simd
    for (int64_t m = 0; m < M; ++m) out[m] = row[m] * keep[m] + add[m];
  }
}

// The memory step's backward for one sample. dreads (R M), dmem_new (N, M) and dw (H, N) are the
// gradients at its outputs (dw is modified); writes dmem (N, M), dwprev (H, N) and dpar (P).
// scratch: H N + N + K + (3 W + 2) M values.
template <typename T>
void memory_backward(const Dims& d, const Work& o, const T* mem, const T* wprev, const T* par,
                     const T* w, const T* work, const T* rn, const T* dreads, const T* dmem_new,
                     T* dw, T* dmem, T* dwprev, T* dpar, T* scratch) {
  const int64_t N = d.N, M = d.M, K = d.K, S = d.S, A = d.A, X = d.X, H = d.H, R = d.R, W = d.W;
  T* dsim_all = scratch; T* dwg = dsim_all + H * N; T* ds = dwg + N; T* e = ds + K; T* de = e + W * M;
  T* before = de + W * M; T* after = before + (W + 1) * M;  // per-head prefix products of one row, (W+1) M; M
  const T* ea = par + H * A;
  T* dea = dpar + H * A;
  for (int64_t j = 0; j < W; ++j)
    for (int64_t m = 0; m < M; ++m) {
      e[j * M + m] = sigmoid(ea[j * 2 * M + m]);
      de[j * M + m] = 0;
      dea[j * 2 * M + M + m] = 0;  // d add
    }
  // read (eq. 2): r_h = sum_i w_h(i) M(i); erase and add (eqs. 3-4):
  // M'(i) = M(i) prod_j (1 - w_j(i) e_j) + sum_j w_j(i) a_j. A row at a time.
  for (int64_t i = 0; i < N; ++i) {
    const T* row = mem + i * M;
    const T* g = dmem_new + i * M;
    T* drow = dmem + i * M;
    for (int64_t m = 0; m < M; ++m) { drow[m] = 0; before[m] = 1; }
    for (int64_t h = 0; h < R; ++h) {
      const T* dr = dreads + h * M;
      const T wi = w[h * N + i];
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t m = 0; m < M; ++m) {
        acc += dr[m] * row[m];
        drow[m] += wi * dr[m];
      }
      dw[h * N + i] += acc;
    }
    for (int64_t j = 0; j < W; ++j) {  // before[j] = prod of the keep factors of heads < j
      const T wj = w[(R + j) * N + i];
      const T* ej = e + j * M;
      T* b0 = before + j * M; T* b1 = b0 + M;
#pragma omp simd
      for (int64_t m = 0; m < M; ++m) b1[m] = b0[m] * (T(1) - wj * ej[m]);
    }
    const T* all = before + W * M;
#pragma omp simd
    for (int64_t m = 0; m < M; ++m) { drow[m] += g[m] * all[m]; after[m] = 1; }
    for (int64_t j = W - 1; j >= 0; --j) {
      const T wj = w[(R + j) * N + i];
      const T* ej = e + j * M; const T* aj = ea + j * 2 * M + M; const T* bj = before + j * M;
      T* dej = de + j * M; T* daj = dea + j * 2 * M + M;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t m = 0; m < M; ++m) {
        const T others = bj[m] * after[m];  // the other heads' keep factors
        acc += g[m] * (aj[m] - row[m] * ej[m] * others);
        dej[m] -= g[m] * row[m] * wj * others;
        daj[m] += g[m] * wj;
        after[m] *= T(1) - wj * ej[m];
      }
      dw[(R + j) * N + i] += acc;
    }
  }
  for (int64_t j = 0; j < W; ++j)
    for (int64_t m = 0; m < M; ++m) {
      const T ej = e[j * M + m];
      dea[j * 2 * M + m] = de[j * M + m] * ej * (T(1) - ej);  // d erase logits
    }
  // addressing, per head, from the sharpened weighting back to the similarity
  for (int64_t h = 0; h < H; ++h) {
    const T* p = par + h * A;
    const T* wk = work + h * X;
    const T* sim = wk + o.sim; const T* wc = wk + o.wc; const T* wg = wk + o.wg;
    const T* ws = wk + o.ws; const T* s = wk + o.s;
    const T beta = wk[o.beta], gate = wk[o.gate], gamma = wk[o.gamma];
    const T* wh = w + h * N;
    const T* prev = wprev + h * N;
    T* dwh = dw + h * N;
    T* dp = dpar + h * A;
    T* dsim = dsim_all + h * N;
    // sharpening (eq. 9): w = softmax(gamma log(ws + EPS))
    T dot = 0;
    for (int64_t i = 0; i < N; ++i) dot += dwh[i] * wh[i];
    T dgamma = 0;
#pragma omp simd reduction(+ : dgamma)
    for (int64_t i = 0; i < N; ++i) {
      const T du = wh[i] * (dwh[i] - dot);
      const T lw = ws[i] + T(kEps);
      dgamma += du * std::log(lw);
      dwh[i] = du * gamma / lw;  // now d shifted weighting
    }
    dp[M + 2 + K] = dgamma * softplus_grad(p[M + 2 + K]);
    // circular shift (eq. 8): ws(i) = sum_k wg(i + k - S) s(K - 1 - k)
    for (int64_t i = 0; i < N; ++i) dwg[i] = 0;
    for (int64_t k = 0; k < K; ++k) {
      add_shifted(dwg, dwh, S - k, s[K - 1 - k], N);  // dwg(j) += dws(j - k + S) s(K-1-k)
      ds[K - 1 - k] = dot_shifted(dwh, wg, k - S, N);
    }
    T sdot = 0;
    for (int64_t k = 0; k < K; ++k) sdot += ds[k] * s[k];
    for (int64_t k = 0; k < K; ++k) dp[M + 2 + k] = s[k] * (ds[k] - sdot);
    // interpolation (eq. 7): wg = gate wc + (1 - gate) wprev
    T dgate = 0, cdot = 0;
    for (int64_t i = 0; i < N; ++i) {
      dgate += dwg[i] * (wc[i] - prev[i]);
      dwprev[h * N + i] = (T(1) - gate) * dwg[i];
      cdot += gate * dwg[i] * wc[i];
    }
    dp[M + 1] = dgate * gate * (T(1) - gate);
    // content addressing (eq. 5): wc = softmax(beta K(k, M(i)))
    T dbeta = 0;
    for (int64_t i = 0; i < N; ++i) {
      const T dz = wc[i] * (gate * dwg[i] - cdot);
      dbeta += dz * sim[i];
      dsim[i] = dz * beta;
    }
    dp[M] = dbeta * softplus_grad(p[M]);
    for (int64_t m = 0; m < M; ++m) dp[m] = 0;
  }
  // cosine similarity (eq. 6), every head, a row at a time: sim(i) = k.M(i) / D, D = |k| |M(i)| + COSINE_EPS.
  // d sim / d k = M(i) / D - sim |M(i)| / D k / |k|, and alike for the row; k / |k| is taken as 0 at
  // k = 0 (the norm's gradient there, as torch.linalg.vector_norm takes it).
  for (int64_t i = 0; i < N; ++i) {
    const T* row = mem + i * M;
    T* drow = dmem + i * M;
    const T rni = rn[i];
    const T inv_rn = rni > T(0) ? T(1) / rni : T(0);
    for (int64_t h = 0; h < H; ++h) {
      const T* key = par + h * A;
      const T* wk = work + h * X;
      T* dkey = dpar + h * A;
      const T kn = wk[o.kn], dsim = dsim_all[h * N + i], sim = wk[o.sim + i];
      const T inv_kn = kn > T(0) ? T(1) / kn : T(0);
      const T inv = T(1) / (kn * rni + T(kCosEps));
      const T on_key = dsim * sim * inv * rni * inv_kn, on_row = dsim * sim * inv * kn * inv_rn;
#pragma omp simd
      for (int64_t m = 0; m < M; ++m) {
        dkey[m] += dsim * row[m] * inv - on_key * key[m];
        drow[m] += dsim * key[m] * inv - on_row * row[m];
      }
    }
  }
}

// ------------------------------------------------------------------ buffers
// The forward returns [hidden (T, B, C), reads (T, B, R M), then what the backward needs]:
//   params (T, B, P), memory (T+1, B, N, M), weightings (T+1, B, H, N), work (T, B, H, X),
//   row norms (T, B, N), then per controller layer l:
//     LSTM: input (T+1, B, in_l + C) = [reads or h_{l-1} at t, own h at t-1] (row T: the last
//           h and reads), gate activations (T, B, 4C) = [i, f, g, o], cell (T+1, B, C),
//           tanh of the cell (T, B, C);
//     FF:   input (T+1, B, in_l) (layer 0: reads at t-1; others: h_{l-1} at t), output (T, B, C).
constexpr int64_t kFixed = 7;

inline int64_t layer_slots(bool lstm) { return lstm ? 4 : 2; }

Dims make_dims(const at::Tensor& x_proj, const at::Tensor& memory0, const at::Tensor& weights0,
               int64_t R, int64_t W, int64_t K, int64_t C, int64_t L, bool lstm) {
  Dims d;
  d.T = x_proj.size(0); d.B = x_proj.size(1); d.C = C; d.L = L; d.R = R; d.W = W; d.H = R + W;
  d.N = memory0.size(1); d.M = memory0.size(2); d.K = K; d.S = K / 2;
  d.A = d.M + 3 + K; d.P = d.H * d.A + 2 * W * d.M; d.X = Work::size(d.N, K); d.lstm = lstm;
  TORCH_CHECK(weights0.size(1) == d.H && weights0.size(2) == d.N, "weightings must be (B, R+W, N)");
  TORCH_CHECK(2 * d.S < d.N, "shift range must be below N/2");
  return d;
}

template <typename T> inline T* ptr(const at::Tensor& t) { return t.data_ptr<T>(); }

// grain sizes: a chunk of samples worth spreading over threads
inline int64_t grain(int64_t work_per_sample) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_sample)); }

template <typename T>
std::vector<at::Tensor> forward_impl(const Dims& d, const at::Tensor& x_proj, const std::vector<at::Tensor>& ctrl0,
                                     const at::Tensor& reads0, const at::Tensor& weights0, const at::Tensor& memory0,
                                     const std::vector<at::Tensor>& weight, const std::vector<at::Tensor>& bias) {
  const int64_t T_ = d.T, B = d.B, C = d.C, L = d.L, RM = d.R * d.M, N = d.N, M = d.M, H = d.H;
  auto opts = x_proj.options();
  auto hidden = at::empty({T_, B, C}, opts);
  auto params = at::empty({T_, B, d.P}, opts);
  auto memory = at::empty({T_ + 1, B, N, M}, opts);
  auto wts = at::empty({T_ + 1, B, H, N}, opts);
  auto work = at::empty({T_, B, H, d.X}, opts);
  auto rnorm = at::empty({T_, B, N}, opts);
  memory[0].copy_(memory0);
  wts[0].copy_(weights0);
  std::vector<at::Tensor> inputs, acts, cells, tanh_cells, outs;
  std::vector<int64_t> in_width;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t below = l == 0 ? RM : C;
    const int64_t width = d.lstm ? below + C : below;
    in_width.push_back(below);
    inputs.push_back(at::empty({T_ + 1, B, width}, opts));
    if (d.lstm) {
      acts.push_back(at::empty({T_, B, 4 * C}, opts));
      cells.push_back(at::empty({T_ + 1, B, C}, opts));
      tanh_cells.push_back(at::empty({T_, B, C}, opts));
      inputs[l][0].narrow(1, below, C).copy_(ctrl0[2 * l]);
      cells[l][0].copy_(ctrl0[2 * l + 1]);
    } else {
      outs.push_back(l == L - 1 ? hidden : at::empty({T_, B, C}, opts));
    }
  }
  inputs[0][0].narrow(1, 0, RM).copy_(reads0);
  const Work o(d);
  const at::Tensor& heads_w = weight[L];
  const at::Tensor& heads_b = bias[L - 1];
  const int64_t scratch_size = (d.W + 2) * M;
  auto scratch = at::empty({B, scratch_size}, opts);
  for (int64_t t = 0; t < T_; ++t) {
    // controller
    for (int64_t l = 0; l < L; ++l) {
      const int64_t below = in_width[l];
      const at::Tensor in_t = inputs[l][t];
      if (d.lstm) {
        at::Tensor gates = acts[l][t];  // pre-activations, then activations in place
        if (l == 0) at::addmm_out(gates, x_proj[t], in_t, weight[0].t());
        else at::addmm_out(gates, bias[l - 1], in_t, weight[l].t());
        T* g = ptr<T>(gates);
        const T* c_prev = ptr<T>(cells[l]) + t * B * C;
        T* c_new = ptr<T>(cells[l]) + (t + 1) * B * C;
        T* tanh_c = ptr<T>(tanh_cells[l]) + t * B * C;
        T* h_self = ptr<T>(inputs[l]) + (t + 1) * B * (below + C) + below;  // own h, next step's input
        T* h_up = l + 1 < L ? ptr<T>(inputs[l + 1]) + t * B * 2 * C : nullptr;  // the layer above's input
        T* h_top = l + 1 == L ? ptr<T>(hidden) + t * B * C : nullptr;
        at::parallel_for(0, B, grain(8 * C), [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            T* gb = g + b * 4 * C;
            const T* cp = c_prev + b * C;
            T* cn = c_new + b * C; T* tc = tanh_c + b * C; T* h = h_self + b * (below + C);
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              const T i = sigmoid(gb[c]), f = sigmoid(gb[C + c]), gg = std::tanh(gb[2 * C + c]),
                      og = sigmoid(gb[3 * C + c]);
              gb[c] = i; gb[C + c] = f; gb[2 * C + c] = gg; gb[3 * C + c] = og;
              cn[c] = f * cp[c] + i * gg;
              tc[c] = std::tanh(cn[c]);
              h[c] = og * tc[c];
            }
            if (h_up) std::copy(h, h + C, h_up + b * 2 * C);
            if (h_top) std::copy(h, h + C, h_top + b * C);
          }
        });
      } else {
        at::Tensor out = outs[l][t];
        if (l == 0) at::addmm_out(out, x_proj[t], in_t, weight[0].t());
        else at::addmm_out(out, bias[l - 1], in_t, weight[l].t());
        T* y = ptr<T>(out);
        T* up = l + 1 < L ? ptr<T>(inputs[l + 1]) + t * B * C : nullptr;
        at::parallel_for(0, B * C, 8192, [&](int64_t i0, int64_t i1) {
#pragma omp simd
          for (int64_t i = i0; i < i1; ++i) y[i] = std::tanh(y[i]);
          if (up) std::copy(y + i0, y + i1, up + i0);
        });
      }
    }
    // heads, then the memory
    at::Tensor par_t = params[t];
    at::addmm_out(par_t, heads_b, hidden[t], heads_w.t());
    const T* par = ptr<T>(par_t);
    const T* mem = ptr<T>(memory) + t * B * N * M;
    T* mem_new = ptr<T>(memory) + (t + 1) * B * N * M;
    const T* wprev = ptr<T>(wts) + t * B * H * N;
    T* w = ptr<T>(wts) + (t + 1) * B * H * N;
    T* wk = ptr<T>(work) + t * B * H * d.X;
    T* rn = ptr<T>(rnorm) + t * B * N;
    const int64_t in0 = inputs[0].size(2);
    T* reads = ptr<T>(inputs[0]) + (t + 1) * B * in0;
    T* sc = ptr<T>(scratch);
    at::parallel_for(0, B, grain(4 * H * N * M), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        memory_forward<T>(d, o, mem + b * N * M, wprev + b * H * N, par + b * d.P, mem_new + b * N * M,
                          w + b * H * N, reads + b * in0, wk + b * H * d.X, rn + b * N, sc + b * scratch_size);
    });
  }
  std::vector<at::Tensor> result = {hidden, inputs[0].narrow(0, 1, T_).narrow(2, 0, RM), params, memory, wts, work, rnorm};
  for (int64_t l = 0; l < L; ++l) {
    result.push_back(inputs[l]);
    result.push_back(d.lstm ? acts[l] : outs[l]);
    if (d.lstm) {
      result.push_back(cells[l]);
      result.push_back(tanh_cells[l]);
    }
  }
  return result;
}

template <typename T>
std::vector<at::Tensor> backward_impl(const Dims& d, const std::vector<at::Tensor>& saved, const at::Tensor& d_hidden,
                                      const at::Tensor& d_reads, const std::vector<at::Tensor>& weight) {
  const int64_t T_ = d.T, B = d.B, C = d.C, L = d.L, RM = d.R * d.M, N = d.N, M = d.M, H = d.H, P = d.P;
  const at::Tensor &hidden = saved[0], &params = saved[2], &memory = saved[3], &wts = saved[4], &work = saved[5],
                   &rnorm = saved[6];
  const int64_t slots = layer_slots(d.lstm);
  auto layer = [&](int64_t l, int64_t k) -> const at::Tensor& { return saved[kFixed + slots * l + k]; };
  auto opts = hidden.options();
  std::vector<at::Tensor> dpre, d_in;  // per layer: gradients at the pre-activations (T, B, G), at the input (B, width)
  for (int64_t l = 0; l < L; ++l) {
    dpre.push_back(at::empty({T_, B, d.lstm ? 4 * C : C}, opts));
    d_in.push_back(at::zeros({B, layer(l, 0).size(2)}, opts));
  }
  std::vector<at::Tensor> dcell;
  if (d.lstm)
    for (int64_t l = 0; l < L; ++l) dcell.push_back(at::zeros({B, C}, opts));
  auto dpar = at::empty({T_, B, P}, opts);
  auto dmem = at::zeros({B, N, M}, opts), dmem_prev = at::empty({B, N, M}, opts);
  auto dw = at::zeros({B, H, N}, opts), dw_prev = at::empty({B, H, N}, opts);
  auto dh_top = at::empty({B, C}, opts);
  const int64_t scratch_size = (H + 1) * N + d.K + (3 * d.W + 2) * d.M + RM;
  auto scratch = at::empty({B, scratch_size}, opts);
  const Work o(d);
  const at::Tensor& heads_w = weight[L];
  const int64_t in0 = layer(0, 0).size(2);
  for (int64_t t = T_ - 1; t >= 0; --t) {
    // the memory step: its reads get the output layer's gradient and the next step's controller's
    const T* mem = ptr<T>(memory) + t * B * N * M;
    const T* wprev = ptr<T>(wts) + t * B * H * N;
    const T* w = ptr<T>(wts) + (t + 1) * B * H * N;
    const T* par = ptr<T>(params) + t * B * P;
    const T* wk = ptr<T>(work) + t * B * H * d.X;
    const T* rn = ptr<T>(rnorm) + t * B * N;
    const T* dr_out = ptr<T>(d_reads) + t * B * RM;
    const T* dr_next = ptr<T>(d_in[0]);  // the next step's controller input: [reads, ...]
    T* dm_new = ptr<T>(dmem); T* dm = ptr<T>(dmem_prev);
    T* dwp = ptr<T>(dw); T* dwprev = ptr<T>(dw_prev);
    T* dp = ptr<T>(dpar) + t * B * P;
    T* sc = ptr<T>(scratch);
    at::parallel_for(0, B, grain(6 * H * N * M), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T* scr = sc + b * scratch_size;
        T* dr = scr + scratch_size - RM;
        for (int64_t k = 0; k < RM; ++k) dr[k] = dr_out[b * RM + k] + dr_next[b * in0 + k];
        memory_backward<T>(d, o, mem + b * N * M, wprev + b * H * N, par + b * P, w + b * H * N,
                           wk + b * H * d.X, rn + b * N, dr, dm_new + b * N * M, dwp + b * H * N,
                           dm + b * N * M, dwprev + b * H * N, dp + b * P, scr);
      }
    });
    std::swap(dmem, dmem_prev);
    std::swap(dw, dw_prev);
    // the heads' input is the top layer's h
    at::addmm_out(dh_top, d_hidden[t], dpar[t], heads_w);
    // the controller, top layer first
    for (int64_t l = L - 1; l >= 0; --l) {
      const int64_t width = layer(l, 0).size(2);
      const T* dh_from = l == L - 1 ? ptr<T>(dh_top) : ptr<T>(d_in[l + 1]);  // (B, C) at stride dh_stride
      const int64_t dh_stride = l == L - 1 ? C : d_in[l + 1].size(1);
      T* g = ptr<T>(dpre[l]) + t * B * dpre[l].size(2);
      if (d.lstm) {
        const int64_t below = width - C;
        const T* dh_self = ptr<T>(d_in[l]) + below;  // the next step's gradient at this layer's h
        const T* act = ptr<T>(layer(l, 1)) + t * B * 4 * C;
        const T* c_prev = ptr<T>(layer(l, 2)) + t * B * C;
        const T* tanh_c = ptr<T>(layer(l, 3)) + t * B * C;
        T* dc = ptr<T>(dcell[l]);
        at::parallel_for(0, B, grain(8 * C), [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            for (int64_t c = 0; c < C; ++c) {
              const T* a = act + b * 4 * C;
              const T i = a[c], f = a[C + c], gg = a[2 * C + c], og = a[3 * C + c];
              const T dh = dh_from[b * dh_stride + c] + dh_self[b * width + c];
              const T tc = tanh_c[b * C + c];
              const T dcn = dc[b * C + c] + dh * og * (T(1) - tc * tc);
              T* gb = g + b * 4 * C;
              gb[c] = dcn * gg * i * (T(1) - i);
              gb[C + c] = dcn * c_prev[b * C + c] * f * (T(1) - f);
              gb[2 * C + c] = dcn * i * (T(1) - gg * gg);
              gb[3 * C + c] = dh * tc * og * (T(1) - og);
              dc[b * C + c] = dcn * f;
            }
          }
        });
      } else {
        const T* y = ptr<T>(layer(l, 1)) + t * B * C;
        at::parallel_for(0, B * C, 8192, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t b = i / C, c = i % C;
            g[i] = dh_from[b * dh_stride + c] * (T(1) - y[i] * y[i]);
          }
        });
      }
      at::mm_out(d_in[l], dpre[l][t], weight[l]);
    }
  }
  // gradients at the initial state, then each weight's gradient as one GEMM over T B rows
  std::vector<at::Tensor> result = {dpre[0]};
  for (int64_t l = 0; d.lstm && l < L; ++l) {
    result.push_back(d_in[l].narrow(1, layer(l, 0).size(2) - C, C).contiguous());
    result.push_back(dcell[l]);
  }
  result.push_back(d_in[0].narrow(1, 0, RM).contiguous());
  result.push_back(dw);
  result.push_back(dmem);
  for (int64_t l = 0; l <= L; ++l) {
    const at::Tensor grad = l < L ? dpre[l] : dpar;
    const at::Tensor in = l < L ? layer(l, 0).narrow(0, 0, T_) : hidden;  // (T, B, in): rows 0..T-1
    const int64_t rows = T_ * B;
    result.push_back(at::mm(grad.reshape({rows, grad.size(2)}).t(), in.reshape({rows, in.size(2)})));
    if (l > 0) result.push_back(grad.sum({0, 1}));
  }
  return result;
}

void check(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must be ", like.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// x_proj (T, B, G0): the external input's share of the first controller layer, its bias included.
// ctrl0: LSTM [h_0, c_0, ..., h_{L-1}, c_{L-1}] (B, C) each; FF: empty. reads0 (B, R M),
// weights0 (B, H, N), memory0 (B, N, M). weight: L controller layers (layer 0's recurrent
// columns only) and the heads, each (out, in); bias: layers 1..L-1 and the heads.
std::vector<at::Tensor> forward(at::Tensor x_proj, std::vector<at::Tensor> ctrl0, at::Tensor reads0, at::Tensor weights0,
                                at::Tensor memory0, std::vector<at::Tensor> weight, std::vector<at::Tensor> bias,
                                int64_t R, int64_t W, int64_t K, bool lstm) {
  const int64_t L = static_cast<int64_t>(weight.size()) - 1;
  TORCH_CHECK(L >= 1 && bias.size() == weight.size() - 1, "weights: L layers and the heads; biases: all but layer 0");
  for (const auto* t : {&x_proj, &reads0, &weights0, &memory0}) check(*t, x_proj, "state");
  for (const auto& t : ctrl0) check(t, x_proj, "controller state");
  for (const auto& t : weight) check(t, x_proj, "weight");
  for (const auto& t : bias) check(t, x_proj, "bias");
  const int64_t C = weight[L].size(1);
  const Dims d = make_dims(x_proj, memory0, weights0, R, W, K, C, L, lstm);
  TORCH_CHECK(weight[L].size(0) == d.P, "heads weight must have ", d.P, " rows");
  TORCH_CHECK(static_cast<int64_t>(ctrl0.size()) == (lstm ? 2 * L : 0), "controller state: 2 L tensors (LSTM) or none");
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "ntm_forward", [&] {
    result = forward_impl<scalar_t>(d, x_proj, ctrl0, reads0, weights0, memory0, weight, bias);
  });
  return result;
}

// saved: what forward returned; d_hidden (T, B, C), d_reads (T, B, R M): gradients at its first
// two outputs. Returns [d x_proj, d ctrl0..., d reads0, d weights0, d memory0, d weight_0,
// d weight_1, d bias_1, ..., d heads weight, d heads bias].
std::vector<at::Tensor> backward(std::vector<at::Tensor> saved, at::Tensor d_hidden, at::Tensor d_reads,
                                 std::vector<at::Tensor> weight, int64_t R, int64_t W, int64_t K, bool lstm) {
  const int64_t L = static_cast<int64_t>(weight.size()) - 1;
  TORCH_CHECK(static_cast<int64_t>(saved.size()) == kFixed + layer_slots(lstm) * L, "saved tensors do not match the model");
  check(d_hidden, saved[0], "d_hidden");
  check(d_reads, saved[0], "d_reads");
  const at::Tensor& memory = saved[3];
  const int64_t C = weight[L].size(1);
  Dims d;
  d.T = saved[0].size(0); d.B = saved[0].size(1); d.C = C; d.L = L; d.R = R; d.W = W; d.H = R + W;
  d.N = memory.size(2); d.M = memory.size(3); d.K = K; d.S = K / 2; d.A = d.M + 3 + K;
  d.P = d.H * d.A + 2 * W * d.M; d.X = Work::size(d.N, K); d.lstm = lstm;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(d_hidden.scalar_type(), "ntm_backward", [&] {
    result = backward_impl<scalar_t>(d, saved, d_hidden, d_reads, weight);
  });
  return result;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "the NTM's recurrent core over a sequence (see native.cpp)");
  m.def("backward", &backward, "its gradients from the forward's saved tensors");
}
