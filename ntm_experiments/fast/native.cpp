// The NTM over a whole sequence on the CPU, forward and backward, written by hand: the fast
// path's "native" core (native.py, beside this file, builds and loads it), for a stack of
// independent runs (one run is a stack of one), each at its own sequence length.
//
// It computes what NTM.forward computes, from inputs to logits, for every time step: the input
// layer's share of the first controller layer, the controller's layers, the heads' linear layer,
// addressing (eqs. 5-9, §3.3), read (eq. 2, §3.1), erase/add write (eqs. 3-4, §3.2) and the output
// layer on [h, reads]. The backward is the exact gradient of that function from the forward's saved
// intermediates: nothing is recomputed, and each weight's gradient is one GEMM per work unit over
// its T n rows after the reverse loop (the input and output layers': one a step where a unit
// holds part of its run's batch).
//
// Why by hand: per time step the compiled (torch.compile) step spends most of its time in the
// wrappers around a few small kernels, not in arithmetic. Here a whole sequence is one call: the
// GEMMs go straight to the BLAS (MKL), everything else is plain loops over one sample's memory.
//
// Threads: the unit of work is (run, a fixed slice of its samples), carried by one thread from
// the first time step to the last (forward) and back (backward); see "work units" below.
//
// Shapes: T time steps, B batch, C controller cells, L controller layers, R read and W write
// heads (H = R + W, read heads first), N memory rows, M row width, K = 2S + 1 shifts,
// A = M + 3 + K addressing parameters per head, P = H A + 2 W M heads' outputs; every tensor
// of the interface has a leading runs dimension.
// Per head its A parameters are [key (M), beta, gate, shift logits (K), gamma] (raw, before
// their activations), then per write head [erase (M), add (M)] (NTM.memory_step's layout).

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <type_traits>
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
  int64_t runs, T, B, C, L, R, W, H, N, M, K, S, A, P, X;
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
  // row norms, cosine similarities k.M(i) / (|k| |M(i)| + COSINE_EPS) (eq. 6)
  for (int64_t i = 0; i < N; ++i) {
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

// ------------------------------------------------------------------ matrix products
// Row-major GEMMs on raw pointers, for one work unit's few rows. They call the BLAS that torch
// itself uses (MKL's sgemm_/dgemm_, exported by libtorch_cpu), one thread each: a unit runs on one
// thread from start to end, and a GEMM's rounding must not depend on how many threads MKL would
// otherwise take (for long reductions it does: the weight gradients over T n rows). Where torch
// was built without those symbols, the same products go through ATen.
extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*) __attribute__((weak));
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
}

// BLAS is column-major: a row-major (rows x cols) matrix with leading dimension ld is its
// transpose. blas(ta, tb, ...) computes C' = beta C' + op(A') op(B') on those column-major views.
template <typename T>
void blas(char ta, char tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb,
          T beta, T* c, int64_t ldc) {
  const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
  const int LDA = static_cast<int>(lda), LDB = static_cast<int>(ldb), LDC = static_cast<int>(ldc);
  const T one = 1;
  if constexpr (std::is_same_v<T, float>) sgemm_(&ta, &tb, &M, &N, &K, &one, a, &LDA, b, &LDB, &beta, c, &LDC);
  else dgemm_(&ta, &tb, &M, &N, &K, &one, a, &LDA, b, &LDB, &beta, c, &LDC);
}

template <typename T> bool have_blas() {
  if constexpr (std::is_same_v<T, float>) return sgemm_ != nullptr;
  else return dgemm_ != nullptr;
}

// a row-major (rows x cols) matrix at p with leading dimension ld, as a tensor that does not own it
template <typename T> at::Tensor matrix(const T* p, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1},
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// C (m x n) = beta C + A (m x k) B^T, B (n x k): a linear layer's rows
template <typename T>
void gemm_nt(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c,
             int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (have_blas<T>()) return blas<T>('T', 'N', n, m, k, b, ldb, a, lda, beta, c, ldc);
  auto out = matrix(c, m, n, ldc);
  out.copy_(at::addmm(out, matrix(a, m, k, lda), matrix(b, n, k, ldb).t(), beta, 1));
}

// C (m x n) = beta C + A (m x k) B, B (k x n): a gradient back through a linear layer
template <typename T>
void gemm_nn(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c,
             int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (have_blas<T>()) return blas<T>('N', 'N', n, m, k, b, ldb, a, lda, beta, c, ldc);
  auto out = matrix(c, m, n, ldc);
  out.copy_(at::addmm(out, matrix(a, m, k, lda), matrix(b, k, n, ldb), beta, 1));
}

// C (m x n) = beta C + A^T B, A (k x m), B (k x n): a weight's gradient, summed over k rows
template <typename T>
void gemm_tn(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc,
             T beta = T(0)) {
  if (m == 0 || n == 0) return;
  if (have_blas<T>()) return blas<T>('N', 'T', n, m, k, b, ldb, a, lda, beta, c, ldc);
  auto out = matrix(c, m, n, ldc);
  out.copy_(at::addmm(out, matrix(a, k, m, lda).t(), matrix(b, k, n, ldb), beta, 1));
}

// MKL's threads for the calling thread only, restored on leaving
struct OneBlasThread {
  int previous = 0;
  OneBlasThread() { if (MKL_Set_Num_Threads_Local) previous = MKL_Set_Num_Threads_Local(1); }
  ~OneBlasThread() { if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous); }
};

// ------------------------------------------------------------------ work units
// The unit of work is one run's contiguous slice of samples, processed from the first time step
// to the last (forward), or the last to the first (backward), by one thread, with no barrier
// between threads at any time step: a thread the OS parks delays only its own units. Units go
// to whichever thread is free. A slice is a fixed number of samples (native.py's
// SAMPLES_PER_UNIT; the last slice of a run may be shorter), so a unit's arithmetic, and every
// result, is the same on any number of threads, and a run's is the same in any stack of runs.
struct Unit {
  int64_t run, b0, n;  // the run, its first sample, its samples
};

// f(t, steps) over a unit's time steps 0..Tk-1, for work on its rows of (runs, T, B, .) tensors:
// where the unit holds the run's whole batch its rows of every step are one contiguous block
// (one call, steps = Tk); otherwise one call a step (steps = 1).
template <typename F> void over_steps(const Unit& u, int64_t B, int64_t Tk, const F& f) {
  if (u.n == B) return f(int64_t(0), Tk);
  for (int64_t t = 0; t < Tk; ++t) f(t, int64_t(1));
}

std::vector<Unit> make_units(int64_t runs, int64_t B, int64_t slice) {
  std::vector<Unit> units;
  for (int64_t k = 0; k < runs; ++k)
    for (int64_t b0 = 0; b0 < B; b0 += slice) units.push_back({k, b0, std::min(slice, B - b0)});
  return units;
}

// The core's own threads, asleep between calls. Not OpenMP's: libgomp's threads spin at every
// region's end and between regions (libgomp's GOMP_SPINCOUNT: 300,000 spins by default), which on a
// machine that is doing something else takes the cores others need, and a waiting thread burns
// the time slice of the thread it waits for. These sleep on a condition variable the moment
// they have nothing to do; the calling thread works too. Created on first use, never joined
// (detached: the process may end while they sleep); a forked child starts a pool of its own.
class UnitPool {
 public:
  // job() on the calling thread and on up to `helpers` pool threads, returning when every one
  // that started it has finished. job() must return once there is no work left: a pool thread
  // that wakes after the caller's job() has returned does not start it, so the caller never
  // waits for a thread the OS has not yet run.
  void run(int64_t helpers, const std::function<void()>& job) {
    if (helpers > 0) {
      std::unique_lock<std::mutex> lock(mutex_);
      while (static_cast<int64_t>(threads_) < helpers) {
        std::thread(&UnitPool::serve, this).detach();
        ++threads_;
      }
      job_ = &job;
      open_ = helpers;
      ++generation_;
      wake_.notify_all();
    }
    job();
    if (helpers > 0) {
      std::unique_lock<std::mutex> lock(mutex_);
      open_ = 0;  // no late starts
      done_.wait(lock, [&] { return running_ == 0; });
      job_ = nullptr;
    }
  }

  // A forked child gets a fresh pool at its first use: the fork handler only drops the pointer
  // (no allocation there: between fork and exec a child of a threaded process may only do
  // async-signal-safe work, and a malloc lock held by another thread at the fork would hang it
  // before it ever reached exec: a subprocess of a test worker that had run the core did).
  static UnitPool& instance() {
    static const int registered = pthread_atfork(nullptr, nullptr, [] { pool_ = nullptr; });
    (void)registered;
    if (pool_ == nullptr) pool_ = new UnitPool();
    return *pool_;
  }

 private:
  void serve() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen && open_ > 0; });
      seen = generation_;
      --open_;
      ++running_;
      const std::function<void()>* job = job_;
      lock.unlock();
      (*job)();
      lock.lock();
      if (--running_ == 0) done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void()>* job_ = nullptr;
  uint64_t generation_ = 0;
  int64_t open_ = 0, running_ = 0;
  size_t threads_ = 0;
  static UnitPool* pool_;  // never deleted: its threads may outlive main
};

UnitPool* UnitPool::pool_ = new UnitPool();

// f(u) for every unit u on up to `threads` threads (at most one per unit), each taking the next
// unit when it is free. ATen calls inside run single-threaded (MKL's local thread count is 1).
template <typename F> void for_each_unit(int64_t count, int64_t threads, const F& f) {
  const int64_t workers = std::min<int64_t>(count, threads > 0 ? threads : at::get_num_threads());
  std::atomic<int64_t> next{0};
  std::atomic_flag failed = ATOMIC_FLAG_INIT;
  std::exception_ptr error;
  const std::function<void()> work = [&] {
    OneBlasThread one;
    try {
      for (int64_t u = next++; u < count; u = next++) f(u);
    } catch (...) {
      if (!failed.test_and_set()) error = std::current_exception();
      next = count;  // the others stop at their next unit
    }
  };
  UnitPool::instance().run(workers - 1, work);
  if (error) std::rethrow_exception(error);
}

// ------------------------------------------------------------------ buffers
// Every tensor has a leading runs dimension: each run its own sequence, state and weights.
// The forward returns [hidden (runs, T, B, C), reads (runs, T, B, R M), then what the backward
// needs]: [runs, B, slice] (int64), then, each unit's rows together (unit-major: unit after unit
// in order, within a unit time step after time step, within a step its samples; as 2-D tensors
// (rows, width)):
//   params (T rows a sample, P), memory (T+1, N M), weightings (T+1, H N), work (T, H X),
//   row norms (T, N), then per controller layer l:
//     LSTM: input (T+1, in_l + C) = [reads or h_{l-1} at t, own h at t-1] (row T: the last
//           h and reads), gate activations (T, 4C) = [i, f, g, o], cell (T+1, C),
//           tanh of the cell (T, C);
//     FF:   input (T+1, in_l) (layer 0: reads at t-1; others: h_{l-1} at t), output (T, C).
constexpr int64_t kFixed = 8;

inline int64_t layer_slots(bool lstm) { return lstm ? 4 : 2; }

template <typename T> inline T* ptr(const at::Tensor& t) { return t.data_ptr<T>(); }
// run k's slice of a (runs, ...) weight or bias: its rows may sit anywhere (stride(0)), each
// run's own values contiguous (a stack's weights can be views of one (runs, P) parameter buffer)
template <typename T> inline const T* run_ptr(const at::Tensor& t, int64_t k) { return ptr<T>(t) + k * t.stride(0); }

Dims make_dims(int64_t runs, int64_t T_, int64_t B, int64_t N, int64_t M, int64_t R, int64_t W, int64_t K, int64_t C,
               int64_t L, bool lstm) {
  Dims d;
  d.runs = runs; d.T = T_; d.B = B; d.C = C; d.L = L; d.R = R; d.W = W; d.H = R + W;
  d.N = N; d.M = M; d.K = K; d.S = K / 2;
  d.A = d.M + 3 + K; d.P = d.H * d.A + 2 * W * d.M; d.X = Work::size(d.N, K); d.lstm = lstm;
  return d;
}

// where unit u's rows of a unit-major buffer with `steps` rows a sample of `width` values start
template <typename T> inline T* unit_rows(const at::Tensor& t, const Dims& d, const Unit& u, int64_t steps,
                                          int64_t width) {
  return ptr<T>(t) + (u.run * d.B + u.b0) * steps * width;
}

// the width of controller layer l's input: [reads (layer 0) or h below, own h (LSTM)]
inline int64_t below_width(const Dims& d, int64_t l) { return l == 0 ? d.R * d.M : d.C; }
inline int64_t in_width(const Dims& d, int64_t l) { return below_width(d, l) + (d.lstm ? d.C : 0); }
inline int64_t gate_width(const Dims& d) { return d.lstm ? 4 * d.C : d.C; }

// One unit's forward over the whole sequence.
template <typename T>
void forward_unit(const Dims& d, const Unit& u, const at::Tensor& inputs, const at::Tensor& x_weight,
                  const at::Tensor& x_bias, const at::Tensor& out_weight, const at::Tensor& out_bias,
                  const at::Tensor& logits, const at::Tensor& x_proj, const std::vector<at::Tensor>& ctrl0,
                  const at::Tensor& reads0, const at::Tensor& weights0, const at::Tensor& memory0,
                  const std::vector<at::Tensor>& weight, const std::vector<at::Tensor>& bias,
                  const at::Tensor& hidden_out, const at::Tensor& reads_out, const std::vector<at::Tensor>& buf,
                  int64_t Tk) {
  const int64_t T_ = d.T, B = d.B, C = d.C, L = d.L, RM = d.R * d.M, N = d.N, M = d.M, H = d.H, P = d.P, X = d.X;
  const int64_t n = u.n, k = u.run, G = gate_width(d);
  const Work o(d);
  T* par = unit_rows<T>(buf[0], d, u, T_, P);
  T* mem = unit_rows<T>(buf[1], d, u, T_ + 1, N * M);
  T* wts = unit_rows<T>(buf[2], d, u, T_ + 1, H * N);
  T* work = unit_rows<T>(buf[3], d, u, T_, H * X);
  T* rnorm = unit_rows<T>(buf[4], d, u, T_, N);
  const int64_t slots = layer_slots(d.lstm);
  std::vector<T*> in(L), act(L), cell(L), tcell(L);  // act: LSTM gate activations; FF layer outputs
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor* lb = &buf[5 + slots * l];
    in[l] = unit_rows<T>(lb[0], d, u, T_ + 1, in_width(d, l));
    act[l] = unit_rows<T>(lb[1], d, u, T_, G);
    if (d.lstm) {
      cell[l] = unit_rows<T>(lb[2], d, u, T_ + 1, C);
      tcell[l] = unit_rows<T>(lb[3], d, u, T_, C);
    }
  }
  // the initial state: memory, weightings, reads, the controller's h and c
  const int64_t first = k * B + u.b0;  // the unit's first sample among all runs' samples
  std::copy_n(ptr<T>(memory0) + first * N * M, n * N * M, mem);
  std::copy_n(ptr<T>(weights0) + first * H * N, n * H * N, wts);
  for (int64_t j = 0; j < n; ++j) {
    std::copy_n(ptr<T>(reads0) + (first + j) * RM, RM, in[0] + j * in_width(d, 0));
    for (int64_t l = 0; d.lstm && l < L; ++l) {
      std::copy_n(ptr<T>(ctrl0[2 * l]) + (first + j) * C, C, in[l] + j * in_width(d, l) + below_width(d, l));
      std::copy_n(ptr<T>(ctrl0[2 * l + 1]) + (first + j) * C, C, cell[l] + j * C);
    }
  }
  // the input layer's share of the first controller layer for every step: x_t W_x^T + b (x_proj rows)
  const int64_t I = inputs.size(3), O = logits.size(3), CR = C + RM;
  over_steps(u, B, Tk, [&](int64_t t, int64_t steps) {
    const int64_t conv = (k * T_ + t) * B + u.b0, m = steps * n;
    T* rows = ptr<T>(x_proj) + conv * G;
    for (int64_t j = 0; j < m; ++j) std::copy_n(run_ptr<T>(x_bias, k), G, rows + j * G);
    gemm_nt<T>(m, G, I, ptr<T>(inputs) + conv * I, I, run_ptr<T>(x_weight, k), I, T(1), rows, G);
  });
  const T* xp = ptr<T>(x_proj);
  const T* heads_w = run_ptr<T>(weight[L], k);
  const T* heads_b = run_ptr<T>(bias[L - 1], k);
  std::vector<T> scratch((d.W + 2) * M);
  const int64_t in0 = in_width(d, 0);
  for (int64_t t = 0; t < Tk; ++t) {  // the run's own length; its rows past it are zeros
    const int64_t conv = (k * T_ + t) * B + u.b0;  // the unit's first row in (runs, T, B, .) tensors
    // controller: pre-activations = [x projection (layer 0) or bias] + input W^T, then the nonlinearity
    for (int64_t l = 0; l < L; ++l) {
      const int64_t width = in_width(d, l), below = below_width(d, l);
      T* pre = act[l] + t * n * G;
      if (l == 0) std::copy_n(xp + conv * G, n * G, pre);
      else for (int64_t j = 0; j < n; ++j) std::copy_n(run_ptr<T>(bias[l - 1], k), G, pre + j * G);
      gemm_nt<T>(n, G, width, in[l] + t * n * width, width, run_ptr<T>(weight[l], k), width, T(1), pre, G);
      T* up = l + 1 < L ? in[l + 1] + t * n * in_width(d, l + 1) : nullptr;  // the layer above's input
      const int64_t up_width = l + 1 < L ? in_width(d, l + 1) : 0;
      T* top = l + 1 == L ? ptr<T>(hidden_out) + conv * C : nullptr;
      for (int64_t j = 0; j < n; ++j) {
        T* h;
        if (d.lstm) {
          T* gb = pre + j * 4 * C;
          const T* cp = cell[l] + (t * n + j) * C;
          T* cn = cell[l] + ((t + 1) * n + j) * C;
          T* tc = tcell[l] + (t * n + j) * C;
          h = in[l] + ((t + 1) * n + j) * width + below;  // own h, next step's input
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const T i = sigmoid(gb[c]), f = sigmoid(gb[C + c]), gg = std::tanh(gb[2 * C + c]),
                    og = sigmoid(gb[3 * C + c]);
            gb[c] = i; gb[C + c] = f; gb[2 * C + c] = gg; gb[3 * C + c] = og;
            cn[c] = f * cp[c] + i * gg;
            tc[c] = std::tanh(cn[c]);
            h[c] = og * tc[c];
          }
        } else {
          h = pre + j * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) h[c] = std::tanh(h[c]);
        }
        if (up) std::copy_n(h, C, up + j * up_width);
        if (top) std::copy_n(h, C, top + j * C);
      }
    }
    // heads: params = heads bias + top h W^T
    T* par_t = par + t * n * P;
    for (int64_t j = 0; j < n; ++j) std::copy_n(heads_b, P, par_t + j * P);
    const int64_t top_width = d.lstm ? in_width(d, L - 1) : C;
    const T* h_top = d.lstm ? in[L - 1] + (t + 1) * n * top_width + below_width(d, L - 1) : act[L - 1] + t * n * C;
    gemm_nt<T>(n, P, C, h_top, top_width, heads_w, C, T(1), par_t, P);
    // the memory step, a sample at a time; its reads are the next step's controller input
    for (int64_t j = 0; j < n; ++j) {
      const int64_t r = t * n + j, r1 = (t + 1) * n + j;
      T* reads = in[0] + r1 * in0;
      memory_forward<T>(d, o, mem + r * N * M, wts + r * H * N, par_t + j * P, mem + r1 * N * M, wts + r1 * H * N,
                        reads, work + r * H * X, rnorm + r * N, scratch.data());
      std::copy_n(reads, RM, ptr<T>(reads_out) + (conv + j) * RM);
    }
  }
  // the output layer: logits = b + [h, reads] W^T, for every step; zeros past the run's length
  over_steps(u, B, Tk, [&](int64_t t, int64_t steps) {
    const int64_t conv = (k * T_ + t) * B + u.b0, m = steps * n;
    T* out = ptr<T>(logits) + conv * O;
    for (int64_t j = 0; j < m; ++j) std::copy_n(run_ptr<T>(out_bias, k), O, out + j * O);
    gemm_nt<T>(m, O, C, ptr<T>(hidden_out) + conv * C, C, run_ptr<T>(out_weight, k), CR, T(1), out, O);
    gemm_nt<T>(m, O, RM, ptr<T>(reads_out) + conv * RM, RM, run_ptr<T>(out_weight, k) + C, CR, T(1), out, O);
  });
  for (int64_t t = Tk; t < T_; ++t) {
    const int64_t conv = (k * T_ + t) * B + u.b0;
    std::fill_n(ptr<T>(hidden_out) + conv * C, n * C, T(0));
    std::fill_n(ptr<T>(reads_out) + conv * RM, n * RM, T(0));
    std::fill_n(ptr<T>(logits) + conv * O, n * O, T(0));
  }
}

template <typename T>
std::vector<at::Tensor> forward_impl(const Dims& d, int64_t slice, int64_t threads, const at::Tensor& inputs,
                                     const at::Tensor& lengths, const at::Tensor& x_weight, const at::Tensor& x_bias,
                                     const at::Tensor& out_weight, const at::Tensor& out_bias,
                                     const std::vector<at::Tensor>& ctrl0, const at::Tensor& reads0,
                                     const at::Tensor& weights0, const at::Tensor& memory0,
                                     const std::vector<at::Tensor>& weight, const std::vector<at::Tensor>& bias) {
  const int64_t T_ = d.T, rows = d.runs * d.B, C = d.C, G = gate_width(d);
  auto opts = inputs.options();
  auto x_proj = at::empty({d.runs, T_, d.B, G}, opts);
  auto logits = at::empty({d.runs, T_, d.B, out_weight.size(1)}, opts);
  auto hidden = at::empty({d.runs, T_, d.B, C}, opts);
  auto reads = at::empty({d.runs, T_, d.B, d.R * d.M}, opts);
  auto meta = at::cat({at::tensor({d.runs, d.B, slice}, at::kLong), lengths});  // [runs, B, slice, each run's T]
  const int64_t* Tk = ptr<int64_t>(lengths);
  std::vector<at::Tensor> buf = {at::empty({rows * T_, d.P}, opts), at::empty({rows * (T_ + 1), d.N * d.M}, opts),
                                 at::empty({rows * (T_ + 1), d.H * d.N}, opts), at::empty({rows * T_, d.H * d.X}, opts),
                                 at::empty({rows * T_, d.N}, opts)};
  for (int64_t l = 0; l < d.L; ++l) {
    buf.push_back(at::empty({rows * (T_ + 1), in_width(d, l)}, opts));
    buf.push_back(at::empty({rows * T_, G}, opts));
    if (d.lstm) {
      buf.push_back(at::empty({rows * (T_ + 1), C}, opts));
      buf.push_back(at::empty({rows * T_, C}, opts));
    }
  }
  const auto units = make_units(d.runs, d.B, slice);
  for_each_unit(static_cast<int64_t>(units.size()), threads, [&](int64_t u) {
    forward_unit<T>(d, units[u], inputs, x_weight, x_bias, out_weight, out_bias, logits, x_proj, ctrl0, reads0,
                    weights0, memory0, weight, bias, hidden, reads, buf, Tk[units[u].run]);
  });
  std::vector<at::Tensor> result = {logits, hidden, reads, meta};  // logits, then what the backward needs
  result.insert(result.end(), buf.begin(), buf.end());
  return result;
}

// The gradients one unit computes: of its samples' initial state (written into the outputs in
// place), and of every weight (input and output layers included) over its own rows (one GEMM
// each, or one a time step, into its own slot; backward_impl sums a run's slots in order).
template <typename T>
void backward_unit(const Dims& d, int64_t ui, const Unit& u, const std::vector<at::Tensor>& saved,
                   const at::Tensor& inputs, const at::Tensor& d_logits, const at::Tensor& out_weight,
                   const at::Tensor& d_hidden, const at::Tensor& d_reads, const std::vector<at::Tensor>& weight,
                   const std::vector<at::Tensor>& out, const std::vector<at::Tensor>& unit_grads, int64_t Tk) {
  const int64_t T_ = d.T, B = d.B, C = d.C, L = d.L, RM = d.R * d.M, N = d.N, M = d.M, H = d.H, P = d.P, X = d.X;
  const int64_t n = u.n, k = u.run, G = gate_width(d), rows = Tk * n;  // the run's own length
  const int64_t I = inputs.size(3), O = d_logits.size(3), CR = C + RM;
  const Work o(d);
  // the output layer's gradient at its inputs, [h, reads] = d logits W, into d_hidden and d_reads rows
  over_steps(u, B, Tk, [&](int64_t t, int64_t steps) {
    const int64_t conv = (k * T_ + t) * B + u.b0, m = steps * n;
    const T* dl = ptr<T>(d_logits) + conv * O;
    gemm_nn<T>(m, C, O, dl, O, run_ptr<T>(out_weight, k), CR, T(0), ptr<T>(d_hidden) + conv * C, C);
    gemm_nn<T>(m, RM, O, dl, O, run_ptr<T>(out_weight, k) + C, CR, T(0), ptr<T>(d_reads) + conv * RM, RM);
  });
  const T* par = unit_rows<T>(saved[3], d, u, T_, P);
  const T* mem = unit_rows<T>(saved[4], d, u, T_ + 1, N * M);
  const T* wts = unit_rows<T>(saved[5], d, u, T_ + 1, H * N);
  const T* work = unit_rows<T>(saved[6], d, u, T_, H * X);
  const T* rnorm = unit_rows<T>(saved[7], d, u, T_, N);
  const int64_t slots = layer_slots(d.lstm);
  std::vector<const T*> in(L), act(L), cell(L), tcell(L);
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor* lb = &saved[kFixed + slots * l];
    in[l] = unit_rows<T>(lb[0], d, u, T_ + 1, in_width(d, l));
    act[l] = unit_rows<T>(lb[1], d, u, T_, G);
    if (d.lstm) {
      cell[l] = unit_rows<T>(lb[2], d, u, T_ + 1, C);
      tcell[l] = unit_rows<T>(lb[3], d, u, T_, C);
    }
  }
  // this unit's own buffers: gradients at the pre-activations (T n, G) per layer and at the
  // heads' outputs (T n, P); at each layer's input (n, width) and cell (n, C), the memory and
  // the weightings (two each: this step's and the previous step's), the top h
  std::vector<std::vector<T>> dpre(L, std::vector<T>(rows * G)), d_in(L), dcell(L);
  for (int64_t l = 0; l < L; ++l) {
    d_in[l].assign(n * in_width(d, l), T(0));
    if (d.lstm) dcell[l].assign(n * C, T(0));
  }
  std::vector<T> dpar(rows * P), dmem(n * N * M, T(0)), dmem_prev(n * N * M), dw(n * H * N, T(0)), dw_prev(n * H * N),
      dh_top(n * C);
  const int64_t scratch_size = (H + 1) * N + d.K + (3 * d.W + 2) * M + RM;
  std::vector<T> scratch(scratch_size);
  const T* heads_w = run_ptr<T>(weight[L], k);
  const int64_t in0 = in_width(d, 0);
  for (int64_t t = Tk - 1; t >= 0; --t) {
    const int64_t conv = (k * T_ + t) * B + u.b0;
    // the memory step: its reads get the output layer's gradient and the next step's controller's
    T* dp_t = dpar.data() + t * n * P;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t r = t * n + j, r1 = (t + 1) * n + j;
      T* dr = scratch.data() + scratch_size - RM;
      const T* dr_out = ptr<T>(d_reads) + (conv + j) * RM;
      const T* dr_next = d_in[0].data() + j * in0;  // the next step's controller input: [reads, ...]
      for (int64_t m = 0; m < RM; ++m) dr[m] = dr_out[m] + dr_next[m];
      memory_backward<T>(d, o, mem + r * N * M, wts + r * H * N, par + r * P, wts + r1 * H * N, work + r * H * X,
                         rnorm + r * N, dr, dmem.data() + j * N * M, dw.data() + j * H * N,
                         dmem_prev.data() + j * N * M, dw_prev.data() + j * H * N, dp_t + j * P, scratch.data());
    }
    std::swap(dmem, dmem_prev);
    std::swap(dw, dw_prev);
    // the heads' input is the top layer's h
    std::copy_n(ptr<T>(d_hidden) + conv * C, n * C, dh_top.data());
    gemm_nn<T>(n, C, P, dp_t, P, heads_w, C, T(1), dh_top.data(), C);
    // the controller, top layer first
    for (int64_t l = L - 1; l >= 0; --l) {
      const int64_t width = in_width(d, l), below = below_width(d, l);
      const T* dh_from = l == L - 1 ? dh_top.data() : d_in[l + 1].data();  // (n, C) at stride dh_stride
      const int64_t dh_stride = l == L - 1 ? C : in_width(d, l + 1);
      T* g = dpre[l].data() + t * n * G;
      for (int64_t j = 0; j < n; ++j) {
        const T* dh_j = dh_from + j * dh_stride;
        T* gb = g + j * G;
        if (d.lstm) {
          const T* dh_self = d_in[l].data() + j * width + below;  // the next step's gradient at this layer's h
          const T* a = act[l] + (t * n + j) * 4 * C;
          const T* c_prev = cell[l] + (t * n + j) * C;
          const T* tanh_c = tcell[l] + (t * n + j) * C;
          T* dc = dcell[l].data() + j * C;
          for (int64_t c = 0; c < C; ++c) {
            const T i = a[c], f = a[C + c], gg = a[2 * C + c], og = a[3 * C + c];
            const T dh = dh_j[c] + dh_self[c];
            const T tc = tanh_c[c];
            const T dcn = dc[c] + dh * og * (T(1) - tc * tc);
            gb[c] = dcn * gg * i * (T(1) - i);
            gb[C + c] = dcn * c_prev[c] * f * (T(1) - f);
            gb[2 * C + c] = dcn * i * (T(1) - gg * gg);
            gb[3 * C + c] = dh * tc * og * (T(1) - og);
            dc[c] = dcn * f;
          }
        } else {
          const T* y = act[l] + (t * n + j) * C;
          for (int64_t c = 0; c < C; ++c) gb[c] = dh_j[c] * (T(1) - y[c] * y[c]);
        }
      }
      gemm_nn<T>(n, width, G, g, G, run_ptr<T>(weight[l], k), width, T(0), d_in[l].data(), width);
    }
  }
  // the gradients at the initial state, in the outputs' rows of this unit's samples
  const int64_t first = k * B + u.b0;
  int64_t slot = 1;
  for (int64_t l = 0; d.lstm && l < L; ++l) {
    const int64_t width = in_width(d, l), below = below_width(d, l);
    for (int64_t j = 0; j < n; ++j)
      std::copy_n(d_in[l].data() + j * width + below, C, ptr<T>(out[slot - 1]) + (first + j) * C);
    std::copy_n(dcell[l].data(), n * C, ptr<T>(out[slot]) + first * C);
    slot += 2;
  }
  --slot;  // [d ctrl0..., d reads0, d weights0, d memory0]
  for (int64_t j = 0; j < n; ++j) std::copy_n(d_in[0].data() + j * in0, RM, ptr<T>(out[slot]) + (first + j) * RM);
  std::copy_n(dw.data(), n * H * N, ptr<T>(out[slot + 1]) + first * H * N);
  std::copy_n(dmem.data(), n * N * M, ptr<T>(out[slot + 2]) + first * N * M);
  // each loop weight's gradient over this unit's T n rows: [weight_0, weight_1, bias_1, ..., heads w, heads b]
  int64_t g = 0;
  for (int64_t l = 0; l <= L; ++l) {
    const T* grad = l < L ? dpre[l].data() : dpar.data();
    const int64_t out_width = l < L ? G : P;
    const T* into;  // the layer's input rows 0..T-1 of this unit
    int64_t width, ld;
    if (l < L) {
      into = in[l], width = ld = in_width(d, l);
    } else if (d.lstm) {  // the top h at t is the top layer's input row t + 1, after the layer below's
      ld = in_width(d, L - 1), width = C, into = in[L - 1] + n * ld + below_width(d, L - 1);
    } else {
      into = act[L - 1], width = ld = C;
    }
    gemm_tn<T>(out_width, width, rows, grad, out_width, into, ld, ptr<T>(unit_grads[g]) + ui * out_width * width,
               width);
    ++g;
    if (l > 0) {  // the bias: the sum of the rows, in order
      T* sum = ptr<T>(unit_grads[g]) + ui * out_width;
      std::fill_n(sum, out_width, T(0));
      for (int64_t r = 0; r < rows; ++r) {
        const T* row = grad + r * out_width;
#pragma omp simd
        for (int64_t c = 0; c < out_width; ++c) sum[c] += row[c];
      }
      ++g;
    }
  }
  // the input layer's (G, I) and the output layer's (O, C + R M) weights, a time step's n rows at a
  // time (a unit's rows of the inputs and logits are not contiguous across steps); their biases
  T* x_w = ptr<T>(unit_grads[g]) + ui * G * I;
  T* x_b = ptr<T>(unit_grads[g + 1]) + ui * G;
  T* o_w = ptr<T>(unit_grads[g + 2]) + ui * O * CR;
  T* o_b = ptr<T>(unit_grads[g + 3]) + ui * O;
  std::fill_n(x_w, G * I, T(0));
  std::fill_n(x_b, G, T(0));
  std::fill_n(o_w, O * CR, T(0));
  std::fill_n(o_b, O, T(0));
  const T* hidden = ptr<T>(saved[0]);
  const T* reads_all = ptr<T>(saved[1]);
  over_steps(u, B, Tk, [&](int64_t t, int64_t steps) {
    const int64_t conv = (k * T_ + t) * B + u.b0, m = steps * n;
    const T* dx = dpre[0].data() + t * n * G;
    const T* dl = ptr<T>(d_logits) + conv * O;
    gemm_tn<T>(G, I, m, dx, G, ptr<T>(inputs) + conv * I, I, x_w, I, T(1));
    gemm_tn<T>(O, C, m, dl, O, hidden + conv * C, C, o_w, CR, T(1));
    gemm_tn<T>(O, RM, m, dl, O, reads_all + conv * RM, RM, o_w + C, CR, T(1));
    for (int64_t j = 0; j < m; ++j) {
#pragma omp simd
      for (int64_t c = 0; c < G; ++c) x_b[c] += dx[j * G + c];
#pragma omp simd
      for (int64_t c = 0; c < O; ++c) o_b[c] += dl[j * O + c];
    }
  });
}

template <typename T>
std::vector<at::Tensor> backward_impl(const Dims& d, const std::vector<at::Tensor>& saved, const at::Tensor& inputs,
                                      const at::Tensor& d_logits, const std::vector<at::Tensor>& weight,
                                      const at::Tensor& out_weight, int64_t threads) {
  const int64_t runs = d.runs, B = d.B, C = d.C, L = d.L, G = gate_width(d);
  const int64_t slice = saved[2][2].item<int64_t>();
  const int64_t* Tk = ptr<int64_t>(saved[2]) + 3;  // each run's length (forward's meta)
  auto opts = d_logits.options();
  // the gradients at the output layer's inputs, filled by each unit for its rows
  auto d_hidden = at::empty({runs, d.T, B, C}, opts), d_reads = at::empty({runs, d.T, B, d.R * d.M}, opts);
  // [d ctrl0..., d reads0, d weights0, d memory0], each filled by the units in place
  std::vector<at::Tensor> out;
  for (int64_t l = 0; d.lstm && l < L; ++l) {
    out.push_back(at::empty({runs, B, C}, opts));
    out.push_back(at::empty({runs, B, C}, opts));
  }
  out.push_back(at::empty({runs, B, d.R * d.M}, opts));
  out.push_back(at::empty({runs, B, d.H, d.N}, opts));
  out.push_back(at::empty({runs, B, d.N, d.M}, opts));
  const auto units = make_units(runs, B, slice);
  const int64_t count = static_cast<int64_t>(units.size()), per_run = count / runs;
  // per unit: [weight_0, weight_1, bias_1, ..., heads w, heads b, input w, input b, output w, output b]
  std::vector<at::Tensor> unit_grads;
  for (int64_t l = 0; l <= L; ++l) {
    const int64_t rows = l < L ? G : d.P, cols = l < L ? in_width(d, l) : C;
    unit_grads.push_back(at::empty({count, rows, cols}, opts));
    if (l > 0) unit_grads.push_back(at::empty({count, rows}, opts));
  }
  const int64_t I = inputs.size(3), O = d_logits.size(3);
  unit_grads.push_back(at::empty({count, G, I}, opts));
  unit_grads.push_back(at::empty({count, G}, opts));
  unit_grads.push_back(at::empty({count, O, C + d.R * d.M}, opts));
  unit_grads.push_back(at::empty({count, O}, opts));
  for_each_unit(count, threads, [&](int64_t u) {
    backward_unit<T>(d, u, units[u], saved, inputs, d_logits, out_weight, d_hidden, d_reads, weight, out, unit_grads,
                     Tk[units[u].run]);
  });
  // a run's weight gradients: its units' summed in order, the same on any number of threads (in
  // plain loops, not ATen's: no parallel region whose threads could wait on a parked thread)
  for (const auto& per_unit : unit_grads) {
    auto shape = per_unit.sizes().vec();
    shape[0] = runs;
    if (per_run == 1) {
      out.push_back(per_unit);
      continue;
    }
    const int64_t size = per_unit.numel() / count;
    auto total = at::empty(shape, opts);
    T* sum = ptr<T>(total);
    const T* part = ptr<T>(per_unit);
    for (int64_t k = 0; k < runs; ++k, sum += size) {
      std::copy_n(part, size, sum);
      part += size;
      for (int64_t s = 1; s < per_run; ++s, part += size) {
#pragma omp simd
        for (int64_t i = 0; i < size; ++i) sum[i] += part[i];
      }
    }
    out.push_back(total);
  }
  return out;
}

void check(const at::Tensor& t, const at::Tensor& like, int64_t runs, const char* name, bool any_run_stride = false) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must be ", like.scalar_type());
  TORCH_CHECK(t.dim() >= 2 && t.size(0) == runs, name, " must have the runs dimension first (", runs, ")");
  // weights and biases: each run's values contiguous, the runs at any stride; the rest contiguous
  TORCH_CHECK(any_run_stride ? t[0].is_contiguous() && (runs == 1 || t.stride(0) >= t[0].numel()) : t.is_contiguous(), name,
              any_run_stride ? " must be contiguous within each run" : " must be contiguous");
}

// Every argument has a leading runs dimension (a single run is a stack of one).
// inputs (runs, T, B, I): each run's sequences; lengths (runs,) int64: each run's own number of
// time steps, 1..T (a run's rows past its length are ignored, its logits there zero: its
// arithmetic is that of a sequence of its own length). x_weight (runs, G0, I), x_bias (runs, G0):
// the external input's share of the first controller layer and that layer's bias. ctrl0: LSTM
// [h_0, c_0, ..., h_{L-1}, c_{L-1}] (runs, B, C) each; FF: empty. reads0 (runs, B, R M), weights0
// (runs, B, H, N), memory0 (runs, B, N, M). weight: L controller layers (layer 0's recurrent
// columns only) and the heads, each (runs, out, in); bias: layers 1..L-1 and the heads, each
// (runs, out). out_weight (runs, O, C + R M), out_bias (runs, O): the output layer on [h, reads].
// Weights and biases: each run's values contiguous, the runs at any stride. slice: samples per
// work unit; threads: the most threads to use (0: ATen's count). Returns [logits (runs, T, B, O),
// then what the backward needs].
std::vector<at::Tensor> forward(at::Tensor inputs, at::Tensor lengths, at::Tensor x_weight, at::Tensor x_bias,
                                std::vector<at::Tensor> ctrl0, at::Tensor reads0, at::Tensor weights0,
                                at::Tensor memory0, std::vector<at::Tensor> weight, std::vector<at::Tensor> bias,
                                at::Tensor out_weight, at::Tensor out_bias, int64_t R, int64_t W, int64_t K, bool lstm,
                                int64_t slice, int64_t threads) {
  const int64_t L = static_cast<int64_t>(weight.size()) - 1;
  TORCH_CHECK(L >= 1 && bias.size() == weight.size() - 1, "weights: L layers and the heads; biases: all but layer 0");
  TORCH_CHECK(slice >= 1, "slice must be at least 1");
  TORCH_CHECK(inputs.dim() == 4 && memory0.dim() == 4 && weights0.dim() == 4 && reads0.dim() == 3,
              "inputs (runs, T, B, I), reads0 (runs, B, R M), weights0 (runs, B, H, N), memory0 (runs, B, N, M)");
  const int64_t runs = inputs.size(0);
  for (const auto* t : {&inputs, &reads0, &weights0, &memory0}) check(*t, inputs, runs, "state");
  for (const auto& t : ctrl0) check(t, inputs, runs, "controller state");
  for (const auto& t : weight) check(t, inputs, runs, "weight", true);
  for (const auto& t : bias) check(t, inputs, runs, "bias", true);
  for (const auto* t : {&x_weight, &x_bias, &out_weight, &out_bias}) check(*t, inputs, runs, "layer", true);
  TORCH_CHECK(lengths.device().is_cpu() && lengths.scalar_type() == at::kLong && lengths.dim() == 1 &&
              lengths.size(0) == runs && lengths.is_contiguous(), "lengths must be a contiguous (runs,) int64 tensor");
  TORCH_CHECK(inputs.size(1) >= 1 && lengths.min().item<int64_t>() >= 1 &&
              lengths.max().item<int64_t>() <= inputs.size(1), "every run's length must be in 1..T");
  const int64_t C = weight[L].size(2);
  const Dims d = make_dims(runs, inputs.size(1), inputs.size(2), memory0.size(2), memory0.size(3), R, W, K, C, L, lstm);
  TORCH_CHECK(weight[L].size(1) == d.P, "heads weight must have ", d.P, " rows");
  TORCH_CHECK(weights0.size(2) == d.H && weights0.size(3) == d.N, "weightings must be (runs, B, R+W, N)");
  TORCH_CHECK(2 * d.S < d.N, "shift range must be below N/2");
  TORCH_CHECK(static_cast<int64_t>(ctrl0.size()) == (lstm ? 2 * L : 0), "controller state: 2 L tensors (LSTM) or none");
  TORCH_CHECK(reads0.size(2) == R * d.M, "reads0 has the wrong width");
  TORCH_CHECK(x_weight.dim() == 3 && x_weight.size(1) == gate_width(d) && x_weight.size(2) == inputs.size(3) &&
              x_bias.dim() == 2 && x_bias.size(1) == gate_width(d), "x_weight must be (runs, G, I), x_bias (runs, G)");
  TORCH_CHECK(out_weight.dim() == 3 && out_weight.size(2) == C + R * d.M && out_bias.dim() == 2 &&
              out_bias.size(1) == out_weight.size(1), "out_weight must be (runs, O, C + R M), out_bias (runs, O)");
  for (int64_t l = 0; l < L; ++l)
    TORCH_CHECK(weight[l].size(1) == gate_width(d) && weight[l].size(2) == in_width(d, l), "weight ", l,
                " must be (runs, ", gate_width(d), ", ", in_width(d, l), ")");
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(inputs.scalar_type(), "ntm_forward", [&] {
    result = forward_impl<scalar_t>(d, slice, threads, inputs, lengths, x_weight, x_bias, out_weight, out_bias, ctrl0,
                                    reads0, weights0, memory0, weight, bias);
  });
  return result;
}

// saved: what forward returned after the logits; inputs: the forward's; d_logits (runs, T, B, O):
// the gradient at its logits (rows past a run's length ignored). Returns, each with the leading
// runs dimension: [d ctrl0..., d reads0, d weights0, d memory0, d weight_0, d weight_1, d bias_1,
// ..., d heads weight, d heads bias, d x_weight, d x_bias, d out_weight, d out_bias]. threads: as
// forward's.
std::vector<at::Tensor> backward(std::vector<at::Tensor> saved, at::Tensor inputs, at::Tensor d_logits,
                                 std::vector<at::Tensor> weight, at::Tensor out_weight, int64_t R, int64_t W,
                                 int64_t K, bool lstm, int64_t threads) {
  const int64_t L = static_cast<int64_t>(weight.size()) - 1;
  TORCH_CHECK(static_cast<int64_t>(saved.size()) == kFixed + layer_slots(lstm) * L, "saved tensors do not match the model");
  const int64_t runs = d_logits.size(0);
  check(d_logits, saved[0], runs, "d_logits");
  check(inputs, saved[0], runs, "inputs");
  for (const auto& t : weight) check(t, saved[0], runs, "weight", true);
  check(out_weight, saved[0], runs, "out_weight", true);
  TORCH_CHECK(d_logits.dim() == 4 && d_logits.size(1) == saved[0].size(1) && d_logits.size(2) == saved[0].size(2) &&
              d_logits.size(3) == out_weight.size(1) && inputs.sizes().slice(0, 3) == d_logits.sizes().slice(0, 3),
              "d_logits must have the forward's logits' shape, inputs the forward's inputs'");
  const at::Tensor& memory = saved[4];
  const int64_t C = weight[L].size(2);
  const int64_t M = saved[1].size(3) / R;
  const Dims d = make_dims(runs, d_logits.size(1), d_logits.size(2), memory.size(1) / M, M, R, W, K, C, L, lstm);
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(d_logits.scalar_type(), "ntm_backward", [&] {
    result = backward_impl<scalar_t>(d, saved, inputs, d_logits, weight, out_weight, threads);
  });
  return result;
}

// ------------------------------------------------------------------ the optimiser, per run
// One update of K runs' flattened parameters (rows of (K, P) buffers), each run a work unit: its
// gradient clipped element-wise to (-clip_k, clip_k) (§4.6), then Graves's centred RMSProp with
// momentum (optim.py; stacked.py's StackedGravesRMSprop is the same update in ATen):
//   n = d n + (1-d) g^2;  m = d m + (1-d) g;  D = mom D - lr g / sqrt(n - m^2 + eps);  w += D
// in that order of operations, each a float32 (or float64) operation. settings (K, 5): per run
// [d, 1 - d, mom, eps, -lr]; clip (K,); active (K,) bool: the runs to update (the others, and
// their state, untouched). Only the first `size` values of a row are parameters (the rest is
// padding). Returns (K, 2) float64: per run, the fractions of its parameters whose gradient was
// beyond the clip value and whose eps exceeds n - m^2 after the update (steps.optimizer_activity).
template <typename T>
void rmsprop_impl(const at::Tensor& values, const at::Tensor& grads, const at::Tensor& n_avg, const at::Tensor& m_avg,
                  const at::Tensor& delta, const at::Tensor& settings, const at::Tensor& clip, const at::Tensor& active,
                  int64_t size, int64_t threads, const at::Tensor& activity) {
  const int64_t runs = values.size(0), P = values.size(1);
  for_each_unit(runs, threads, [&](int64_t k) {
    double* act = ptr<double>(activity) + 2 * k;
    act[0] = act[1] = 0.0;
    if (!ptr<bool>(active)[k]) return;
    const T* st = ptr<T>(settings) + 5 * k;
    const T decay = st[0], one_minus_decay = st[1], momentum = st[2], eps = st[3], minus_lr = st[4];
    const T c = ptr<T>(clip)[k];
    T* w = ptr<T>(values) + k * P;
    T* g = ptr<T>(grads) + k * P;
    T* n = ptr<T>(n_avg) + k * P;
    T* m = ptr<T>(m_avg) + k * P;
    T* D = ptr<T>(delta) + k * P;
    int64_t clipped = 0, eps_dominant = 0;
#pragma omp simd reduction(+ : clipped, eps_dominant)
    for (int64_t i = 0; i < P; ++i) {
      const T raw = g[i];
      const T gi = raw > c ? c : (raw < -c ? -c : raw);
      g[i] = gi;
      T ni = n[i] * decay;
      ni = ni + (one_minus_decay * gi) * gi;
      T mi = m[i] * decay;
      mi = mi + one_minus_decay * gi;
      const T variance = ni + (T(-1) * mi) * mi;
      const T root = std::sqrt(variance + eps);
      T Di = D[i] * momentum;
      Di = Di + (minus_lr * gi) / root;
      n[i] = ni; m[i] = mi; D[i] = Di;
      w[i] = w[i] + Di;
      const bool parameter = i < size;
      clipped += parameter && (raw > c || raw < -c);
      eps_dominant += parameter && variance < eps;
    }
    act[0] = static_cast<double>(clipped) / size;
    act[1] = static_cast<double>(eps_dominant) / size;
  });
}

at::Tensor rmsprop(at::Tensor values, at::Tensor grads, at::Tensor n_avg, at::Tensor m_avg, at::Tensor delta,
                   at::Tensor settings, at::Tensor clip, at::Tensor active, int64_t size, int64_t threads) {
  const int64_t runs = values.size(0);
  for (const auto* t : {&grads, &n_avg, &m_avg, &delta}) {
    TORCH_CHECK(t->sizes() == values.sizes(), "grads and state must have the values' shape (K, P)");
    check(*t, values, runs, "optimiser state");
  }
  check(values, values, runs, "values");
  TORCH_CHECK(values.dim() == 2 && size >= 1 && size <= values.size(1), "values (K, P) with 1 <= size <= P");
  TORCH_CHECK(settings.scalar_type() == values.scalar_type() && settings.is_contiguous() &&
              settings.sizes() == at::IntArrayRef({runs, 5}), "settings must be (K, 5) of the values' dtype");
  TORCH_CHECK(clip.scalar_type() == values.scalar_type() && clip.is_contiguous() && clip.numel() == runs,
              "clip must be (K,) of the values' dtype");
  TORCH_CHECK(active.scalar_type() == at::kBool && active.is_contiguous() && active.numel() == runs,
              "active must be (K,) bool");
  auto activity = at::empty({runs, 2}, at::kDouble);
  at::NoGradGuard no_grad;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "ntm_rmsprop", [&] {
    rmsprop_impl<scalar_t>(values, grads, n_avg, m_avg, delta, settings, clip, active, size, threads, activity);
  });
  return activity;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rmsprop", &rmsprop, "clip and Graves's RMSProp for K runs' parameter rows, a run per work unit");
  m.def("forward", &forward, "the NTM's recurrent core over a sequence, for a stack of runs (see native.cpp)");
  m.def("backward", &backward, "its gradients from the forward's saved tensors");
}
