// The time loops of the fused LSTM layer on CPU, for a pack of K independent members at once (K = 1 is
// the plain layer), in C++ so that a step costs its arithmetic rather than a dozen dispatched tensor ops.
//
// Built lazily by lstmlab/kernels/fused.py (torch.utils.cpp_extension.load) and registered as
// torch.ops.lstmlab_cpu.{forward, backward, activations}. The autograd.Function stays in Python.
//
// Layout (contiguous; member-major, then time-major):
//   x                   (K, T, B, I)
//   acts, dgates        (K, T, B, 4H), columns [i | f | g | o] as torch.nn.LSTM
//   y, cs, dy           (K, T, B, H)
//   h0, c0, dh, dc      (K, B, H)
//   w_ih (K, 4H, I), w_hh (K, 4H, H), bias = b_ih + b_hh (K, 4H)
//
// Two schedules (the caller picks one; fused.py says which wins where):
//   sequences  Batch rows, like members, never mix through time: the work splits into units (member k,
//              a slice of its batch rows) and each thread runs its units' whole time loops, with no
//              per-step synchronisation and no library call. Forward, per step and register block:
//              a_t = b + x_t·W_ihᵀ + h_{t-1}·W_hhᵀ in registers (`gemm_block` over weights packed once per
//              call), then the cell while the block is still in L1. Backward, per step: the cell's backward
//              into a small per-unit scratch, dh_{t-1} = da_t·W_hh and dx_t = da_t·W_ih the same way, and
//              the weight gradients summed as it goes (dW += da_tᵀ·[x_t, h_{t-1}], db += Σ da_t), per
//              unit, added up per member at the end: dL/da is never stored whole.
//   steps      The input projection as one batched GEMM, then per member and step one ATen GEMM (MKL,
//              threaded over its own blocks) and the cells threaded over row blocks; the backward stores
//              dL/da for the caller's batched weight-gradient GEMMs. For W_hh too large for the small
//              kernel to keep in cache.
//
// Vectors are GCC/Clang vector types of 64 bytes (16 floats or 8 doubles: one AVX-512 register, two AVX2
// or four SSE/NEON ones, so the same source builds everywhere), or 32 or 16 bytes. A dimension (H, or I) is
// cut into tiles of L = 64 bytes of values; its last, partial tile is a 32- or 16-byte vector when the rest
// fits (23 = 16 + 7: 24 lanes computed instead of 32; 49 = 48 + 1: 52, not 64), and in the forward's GEMM
// the four gates of such a tile share whole vectors. Partial tiles use masked loads and stores (AVX-512).
//
// σ and tanh are the C library's exp and tanh: -ffast-math lets gcc call glibc's vectorised versions
// (libmvec, AVX-512: 16 floats or 8 doubles a call, ~1 ulp) from the `omp simd` loops of the cells, which
// run over whole vectors (padding lanes included), so no lane falls back to a scalar call. They are 20-40%
// of the forward at the study sizes; inlined AVX-512 float32 versions (Cephes expf with FMA range reduction
// and scalef, Cephes tanhf, 2.2e-7 relative error) measured 20-30% slower end to end than these calls, so
// they are not used.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <numeric>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

// ---------------------------------------------------------------------------------------------------------------------
// Vectors, tiles and the activations.

template <typename scalar_t>
constexpr int64_t kLanes = 64 / sizeof(scalar_t);  // L: 16 floats, 8 doubles

template <typename scalar_t, int64_t N>
struct VecOf {
  typedef scalar_t type __attribute__((vector_size(N * sizeof(scalar_t))));
};
template <typename scalar_t, int64_t N>
using Vec = typename VecOf<scalar_t, N>::type;  // N lanes: L or L/2

// p[0..n) into the first n lanes, zeros after (n ≤ N).
template <typename scalar_t, int64_t N>
inline Vec<scalar_t, N> load_lanes(const scalar_t* p, int64_t n) {
  Vec<scalar_t, N> v;
  if (n == N) {
    std::memcpy(&v, p, sizeof v);
    return v;
  }
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<scalar_t, float> && N == 16) return (Vec<scalar_t, N>)_mm512_maskz_loadu_ps((1u << n) - 1, p);
  if constexpr (std::is_same_v<scalar_t, double> && N == 8) return (Vec<scalar_t, N>)_mm512_maskz_loadu_pd((1u << n) - 1, p);
#endif
#if defined(__AVX512VL__)
  if constexpr (std::is_same_v<scalar_t, float> && N == 8) return (Vec<scalar_t, N>)_mm256_maskz_loadu_ps((1u << n) - 1, p);
  if constexpr (std::is_same_v<scalar_t, double> && N == 4) return (Vec<scalar_t, N>)_mm256_maskz_loadu_pd((1u << n) - 1, p);
  if constexpr (std::is_same_v<scalar_t, float> && N == 4) return (Vec<scalar_t, N>)_mm_maskz_loadu_ps((1u << n) - 1, p);
  if constexpr (std::is_same_v<scalar_t, double> && N == 2) return (Vec<scalar_t, N>)_mm_maskz_loadu_pd((1u << n) - 1, p);
#endif
  v = Vec<scalar_t, N>{};
  for (int64_t l = 0; l < n; ++l) v[l] = p[l];
  return v;
}

// The first n lanes of v into p[0..n).
template <typename scalar_t, int64_t N>
inline void store_lanes(scalar_t* p, Vec<scalar_t, N> v, int64_t n) {
  if (n == N) {
    std::memcpy(p, &v, sizeof v);
    return;
  }
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<scalar_t, float> && N == 16) return _mm512_mask_storeu_ps(p, (1u << n) - 1, (__m512)v);
  if constexpr (std::is_same_v<scalar_t, double> && N == 8) return _mm512_mask_storeu_pd(p, (1u << n) - 1, (__m512d)v);
#endif
#if defined(__AVX512VL__)
  if constexpr (std::is_same_v<scalar_t, float> && N == 8) return _mm256_mask_storeu_ps(p, (1u << n) - 1, (__m256)v);
  if constexpr (std::is_same_v<scalar_t, double> && N == 4) return _mm256_mask_storeu_pd(p, (1u << n) - 1, (__m256d)v);
  if constexpr (std::is_same_v<scalar_t, float> && N == 4) return _mm_mask_storeu_ps(p, (1u << n) - 1, (__m128)v);
  if constexpr (std::is_same_v<scalar_t, double> && N == 2) return _mm_mask_storeu_pd(p, (1u << n) - 1, (__m128d)v);
#endif
  for (int64_t l = 0; l < n; ++l) p[l] = v[l];
}

// A dimension of `size` values in tiles of L lanes; the last tile, when partial, is narrower where the rest fits:
// L/4 or L/2 lanes (23 = 16 + 7: 8 lanes; 49 = 48 + 1: 4 lanes). Tile i covers values [i·L, i·L + width(i)); all
// tiles but a narrow last one have L lanes, so padded() = (count() - 1)·L + lanes(last).
template <typename scalar_t>
struct Tiles {
  static constexpr int64_t L = kLanes<scalar_t>;
  int64_t size;

  int64_t count() const { return (size + L - 1) / L; }
  int64_t tail_lanes() const {
    const int64_t rest = size - (count() - 1) * L;
    return rest <= L / 4 ? L / 4 : rest <= L / 2 ? L / 2 : L;
  }
  int64_t lanes(int64_t i) const { return i == count() - 1 ? tail_lanes() : L; }
  bool narrow_tail() const { return tail_lanes() < L; }
  int64_t width(int64_t i) const { return std::min(lanes(i), size - i * L); }
  int64_t padded() const { return (count() - 1) * L + tail_lanes(); }
};

// Calls fn(std::integral_constant<int64_t, N>) with N = n ∈ {L, L/2, L/4}: a tile's lanes.
template <typename scalar_t, typename Fn>
inline void with_lanes(int64_t n, Fn&& fn) {
  constexpr int64_t L = kLanes<scalar_t>;
  if (n == L / 4) fn(std::integral_constant<int64_t, L / 4>{});
  else if (n == L / 2) fn(std::integral_constant<int64_t, L / 2>{});
  else fn(std::integral_constant<int64_t, L>{});
}

// Calls fn(std::integral_constant<int, R>) with R = n ∈ [1, Max]: a register block of the n rows (or tiles) left.
template <int Max, typename Fn>
inline void with_count(int64_t n, Fn&& fn) {
  if constexpr (Max > 1)
    if (n < Max) return with_count<Max - 1>(n, fn);
  fn(std::integral_constant<int, Max>{});
}

// σ(x) = 1 / (1 + e^{-x}) for x ≥ 0 and e^{x} / (1 + e^{x}) for x < 0: with e = e^{-|x|} ≤ 1 it never
// overflows, which matters because the build uses -ffast-math (the only way gcc calls glibc's vectorised
// exp and tanh) and so assumes finite values; and unlike ½ + ½·tanh(x/2) it keeps a few-ulp relative
// error in the tail (σ(-20) ≈ 2e-9, not 0).
template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  const scalar_t e = std::exp(-std::fabs(x));
  const scalar_t d = scalar_t(1) / (scalar_t(1) + e);
  return x < scalar_t(0) ? e * d : d;
}

// ---------------------------------------------------------------------------------------------------------------------
// The cells, over N elements held in small local arrays (N = rows × lanes: whole vectors).

// Pre-activations a_i, a_f, a_g, a_o become the activations i, f, g, o (which the backward needs);
// c_t and h_t are written.
template <typename scalar_t, int64_t N>
inline void cell_forward(scalar_t* __restrict gi, scalar_t* __restrict gf, scalar_t* __restrict gg,
                         scalar_t* __restrict go, const scalar_t* __restrict c_prev, scalar_t* __restrict c,
                         scalar_t* __restrict h) {
#pragma omp simd
  for (int64_t e = 0; e < N; ++e) {
    const scalar_t i = sigmoid(gi[e]);        // i_t = σ(W_ii x_t + W_hi h_{t-1} + b_i)
    const scalar_t f = sigmoid(gf[e]);        // f_t = σ(W_if x_t + W_hf h_{t-1} + b_f)
    const scalar_t g = std::tanh(gg[e]);      // g_t = tanh(W_ig x_t + W_hg h_{t-1} + b_g)
    const scalar_t o = sigmoid(go[e]);        // o_t = σ(W_io x_t + W_ho h_{t-1} + b_o)
    const scalar_t ct = f * c_prev[e] + i * g;  // c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    gi[e] = i;
    gf[e] = f;
    gg[e] = g;
    go[e] = o;
    c[e] = ct;
    h[e] = o * std::tanh(ct);  // h_t = o_t ⊙ tanh(c_t)
  }
}

// In: the activations i, f, g, o, c_{t-1}, c_t, dh = dL/dh_t (all paths) and dc = dL/dc_t through step t+1.
// Out: da_i, da_f, da_g, da_o = dL/da_t written over the activations, dc overwritten with dc_{t-1}.
template <typename scalar_t, int64_t N>
inline void cell_backward(scalar_t* __restrict ai, scalar_t* __restrict af, scalar_t* __restrict ag,
                          scalar_t* __restrict ao, const scalar_t* __restrict c_prev, const scalar_t* __restrict c,
                          const scalar_t* __restrict dh, scalar_t* __restrict dc) {
#pragma omp simd
  for (int64_t e = 0; e < N; ++e) {
    const scalar_t i = ai[e], f = af[e], g = ag[e], o = ao[e];
    const scalar_t tc = std::tanh(c[e]);
    const scalar_t dct = dc[e] + dh[e] * o * (scalar_t(1) - tc * tc);  // dc_t += dh_t ⊙ o_t ⊙ (1 - tanh²(c_t))
    ai[e] = dct * g * i * (scalar_t(1) - i);                         // da_i = dc_t ⊙ g_t ⊙ i_t(1 - i_t)
    af[e] = dct * c_prev[e] * f * (scalar_t(1) - f);                 // da_f = dc_t ⊙ c_{t-1} ⊙ f_t(1 - f_t)
    ag[e] = dct * i * (scalar_t(1) - g * g);                         // da_g = dc_t ⊙ i_t ⊙ (1 - g_t²)
    ao[e] = dh[e] * tc * o * (scalar_t(1) - o);                      // da_o = dh_t ⊙ tanh(c_t) ⊙ o_t(1 - o_t)
    dc[e] = dct * f;                                                 // dc_{t-1} = dc_t ⊙ f_t
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// The GEMM kernel: R rows × NV vectors of accumulators held in registers.

// acc[r][v] += Σ_q a[r·lda + q·ldq] · panel[q·ldp + v·N ...]: R rows of `depth` values (a row's values ldq apart)
// against `depth` panel rows of NV vectors of N lanes (rows ldp apart). R·NV ≤ 16 accumulators leave registers
// for the NV panel vectors and the broadcast on AVX-512 (32 registers).
template <typename scalar_t, int64_t N, int R, int NV>
inline void gemm_block(const scalar_t* __restrict a, int64_t lda, int64_t ldq, int64_t depth,
                       const scalar_t* __restrict panel, int64_t ldp, Vec<scalar_t, N> (&acc)[R][NV]) {
  Vec<scalar_t, N> sum[R][NV];  // local copies: the compiler keeps them in registers across the loop
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) sum[r][v] = acc[r][v];
  for (int64_t q = 0; q < depth; ++q) {
    Vec<scalar_t, N> w[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) std::memcpy(&w[v], panel + q * ldp + v * N, sizeof(Vec<scalar_t, N>));
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const scalar_t s = a[r * lda + q * ldq];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) sum[r][v] += s * w[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = sum[r][v];
}

constexpr int kRows = 4;   // batch rows (or weight-gradient rows) per register block

// Rows per register block for a product of NV column tiles: 16 accumulators where NV ≤ 2 (8 rows), so that
// narrow products are not bound by the FMA latency.
constexpr int rows_for(int64_t nv) { return nv <= 2 ? 8 : kRows; }
constexpr int kMinSumRows = 16;  // rows per unit from which the backward sums the weight gradients in its loop
constexpr int kGroup = 4;  // column tiles per register block in the backward's products

// ---------------------------------------------------------------------------------------------------------------------
// Packed weights. Offsets count in values; tile i of a dimension starts at i·L in its padded width.

// A weight W (K, 4H, D) packed as the right operand of z · Wᵀ (z: D values a row), gate-interleaved per hidden
// tile: the (k, tile i) panel holds D rows of 4 vectors of the tile's N lanes, P[q][g][l] = W[k][g·H + i·L + l][q]
// (zero past H), so that one register block yields whole cells. It starts at (k·padded(H) + i·L)·4·D.
// Used for W_ih (D = I) and W_hh (D = H).
template <typename scalar_t>
at::Tensor pack_gate_rows(const at::Tensor& w) {
  const int64_t members = w.size(0), hidden = w.size(1) / 4, depth = w.size(2);
  const Tiles<scalar_t> tiles{hidden};
  at::Tensor packed = at::zeros({members, tiles.padded() * 4 * depth}, w.options());
  const scalar_t* src = w.data_ptr<scalar_t>();
  scalar_t* p = packed.data_ptr<scalar_t>();
  for (int64_t k = 0; k < members; ++k)
    for (int64_t g = 0; g < 4; ++g)
      for (int64_t j = 0; j < hidden; ++j) {
        const int64_t i = j / tiles.L, n = tiles.lanes(i);
        const scalar_t* row = src + (k * 4 * hidden + g * hidden + j) * depth;  // W[k][gH + j][:]
        scalar_t* out = p + (k * tiles.padded() + i * tiles.L) * 4 * depth + g * n + j % tiles.L;
        for (int64_t q = 0; q < depth; ++q) out[q * 4 * n] = row[q];
      }
  return packed;
}

// A bias b (K, 4H) in the same gate-interleaved tiles: P[g][l] = b[k][g·H + i·L + l] (zero past H) from
// (k·padded(H) + i·L)·4.
template <typename scalar_t>
at::Tensor pack_gate_bias(const at::Tensor& bias, int64_t hidden) {
  const int64_t members = bias.size(0);
  const Tiles<scalar_t> tiles{hidden};
  at::Tensor packed = at::zeros({members, tiles.padded() * 4}, bias.options());
  const scalar_t* src = bias.data_ptr<scalar_t>();
  scalar_t* p = packed.data_ptr<scalar_t>();
  for (int64_t k = 0; k < members; ++k)
    for (int64_t g = 0; g < 4; ++g)
      for (int64_t j = 0; j < hidden; ++j) {
        const int64_t i = j / tiles.L;
        p[(k * tiles.padded() + i * tiles.L) * 4 + g * tiles.lanes(i) + j % tiles.L] = src[k * 4 * hidden + g * hidden + j];
      }
  return packed;
}

// The column tiles of a product's output in register blocks: up to kGroup whole tiles side by side, and a narrow
// tail tile alone (its vectors are narrower). Block b covers tiles [first(b), first(b) + size(b)).
template <typename scalar_t>
struct Groups {
  Tiles<scalar_t> tiles;
  int64_t whole() const { return tiles.count() - (tiles.narrow_tail() ? 1 : 0); }  // tiles of L lanes
  int64_t count() const { return (whole() + kGroup - 1) / kGroup + (tiles.narrow_tail() ? 1 : 0); }
  int64_t first(int64_t b) const { return std::min(b * kGroup, whole()); }
  int64_t size(int64_t b) const { return first(b) == whole() ? 1 : std::min<int64_t>(kGroup, whole() - first(b)); }
  int64_t lanes(int64_t b) const { return tiles.lanes(first(b)); }
};

// A weight W (K, R, D) packed as the right operand of da · W (da: R values a row) for the column tiles of D in
// Groups: the (k, block b) panel holds R rows of its size(b) vectors side by side, P[q][v][l] = W[k][q][(first + v)·L
// + l] (zero past D), from (k·padded(D) + first·L)·R. Used for W_hh (dh_{t-1} = da_t · W_hh) and W_ih (dx_t).
template <typename scalar_t>
at::Tensor pack_columns(const at::Tensor& w) {
  const int64_t members = w.size(0), rows = w.size(1), cols = w.size(2);
  const Groups<scalar_t> groups{Tiles<scalar_t>{cols}};
  const Tiles<scalar_t>& tiles = groups.tiles;
  at::Tensor packed = at::zeros({members, tiles.padded() * rows}, w.options());
  const scalar_t* src = w.data_ptr<scalar_t>();
  scalar_t* p = packed.data_ptr<scalar_t>();
  for (int64_t k = 0; k < members; ++k)
    for (int64_t b = 0; b < groups.count(); ++b) {
      const int64_t first = groups.first(b), n = tiles.lanes(first), row_values = groups.size(b) * n;
      scalar_t* panel = p + (k * tiles.padded() + first * tiles.L) * rows;
      for (int64_t q = 0; q < rows; ++q)
        for (int64_t v = 0; v < groups.size(b); ++v)
          for (int64_t l = 0; l < tiles.width(first + v); ++l)
            panel[q * row_values + v * n + l] = src[(k * rows + q) * cols + (first + v) * tiles.L + l];
    }
  return packed;
}

// ---------------------------------------------------------------------------------------------------------------------
// Forward: pointers and sizes of one call, and the work on one register block.

template <typename scalar_t>
struct Forward {
  const scalar_t* x;
  const scalar_t* h0;
  const scalar_t* c0;
  // The packed weights (sequences schedule), or null: then the caller has put A_t + h_{t-1}·W_hhᵀ in `acts`.
  const scalar_t* w_ih;  // pack_gate_rows(W_ih)
  const scalar_t* w_hh;  // pack_gate_rows(W_hh)
  const scalar_t* bias;  // pack_gate_bias(b_ih + b_hh), or null: no bias
  scalar_t* acts;        // (K, T, B, 4H), or null: the activations are not kept (inference)
  scalar_t* y;           // (K, T, B, H)
  scalar_t* cs;          // (K, S, B, H): c_t at [k][t % S], S = T, or 2 when only the last one is wanted
  int64_t steps, batch, inputs, hidden, c_steps;
  Tiles<scalar_t> tiles;  // of H

  int64_t state(int64_t k, int64_t t, int64_t b) const { return ((k * steps + t) * batch + b) * hidden; }
  int64_t cell(int64_t k, int64_t t, int64_t b) const { return ((k * c_steps + t % c_steps) * batch + b) * hidden; }
  const scalar_t* h_prev(int64_t k, int64_t t, int64_t b) const {
    return t == 0 ? h0 + (k * batch + b) * hidden : y + state(k, t - 1, b);
  }
  const scalar_t* c_prev(int64_t k, int64_t t, int64_t b) const {
    return t == 0 ? c0 + (k * batch + b) * hidden : cs + cell(k, t - 1, b);
  }

  // Rows b..b+R-1 of member k, step t, hidden tile i (N lanes):
  // a_t = b + x_t · W_ihᵀ + h_{t-1} · W_hhᵀ in registers, then the cell.
  template <int64_t N, int R>
  void block(int64_t k, int64_t t, int64_t b, int64_t i) const {
    constexpr size_t kVec = sizeof(Vec<scalar_t, N>);
    const int64_t j0 = i * tiles.L, width = tiles.width(i), tile = k * tiles.padded() + j0;
    alignas(64) scalar_t a[4][R * N], cp[R * N], c[R * N], h[R * N];  // a[g]: gate g's pre-activations, then its
    if (w_hh) {                                                         // activations
      // A panel row holds the four gates' N lanes side by side, 4N values, read as NV vectors of V lanes: one
      // vector a gate for a tile of L or L/2 lanes, and for a quarter tile one whole vector for all four (1 FMA a
      // row, not 4; as two vectors for a half tile, 8 accumulators measured slower than these 16 narrow ones).
      constexpr int64_t V = N == kLanes<scalar_t> / 4 ? 4 * N : N, NV = 4 * N / V;
      Vec<scalar_t, V> acc[R][NV], b0[NV];
      for (int v = 0; v < NV; ++v) {
        b0[v] = Vec<scalar_t, V>{};
        if (bias) std::memcpy(&b0[v], bias + tile * 4 + v * V, sizeof b0[v]);
      }
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < NV; ++v) acc[r][v] = b0[v];
      const scalar_t* x_t = x + ((k * steps + t) * batch + b) * inputs;
      gemm_block<scalar_t, V, R, NV>(x_t, inputs, 1, inputs, w_ih + tile * 4 * inputs, 4 * N, acc);
      gemm_block<scalar_t, V, R, NV>(h_prev(k, t, b), hidden, 1, hidden, w_hh + tile * 4 * hidden, 4 * N, acc);
      for (int r = 0; r < R; ++r)
        for (int g = 0; g < 4; ++g)
          std::memcpy(a[g] + r * N, reinterpret_cast<const char*>(acc[r]) + g * kVec, kVec);
    } else {
      for (int r = 0; r < R; ++r)
        for (int g = 0; g < 4; ++g) {
          const Vec<scalar_t, N> v = load_lanes<scalar_t, N>(acts + 4 * state(k, t, b + r) + g * hidden + j0, width);
          std::memcpy(a[g] + r * N, &v, kVec);
        }
    }

    for (int r = 0; r < R; ++r) {
      const Vec<scalar_t, N> v = load_lanes<scalar_t, N>(c_prev(k, t, b + r) + j0, width);
      std::memcpy(cp + r * N, &v, kVec);
    }
    cell_forward<scalar_t, R * N>(a[0], a[1], a[2], a[3], cp, c, h);
    for (int r = 0; r < R; ++r) {
      Vec<scalar_t, N> v;
      if (acts)
        for (int g = 0; g < 4; ++g) {
          std::memcpy(&v, a[g] + r * N, kVec);
          store_lanes<scalar_t, N>(acts + 4 * state(k, t, b + r) + g * hidden + j0, v, width);
        }
      std::memcpy(&v, c + r * N, kVec);
      store_lanes<scalar_t, N>(cs + cell(k, t, b + r) + j0, v, width);
      std::memcpy(&v, h + r * N, kVec);
      store_lanes<scalar_t, N>(y + state(k, t, b + r) + j0, v, width);
    }
  }

  // Rows [b0, b1) of member k at step t, every hidden tile.
  void rows(int64_t k, int64_t t, int64_t b0, int64_t b1) const {
    for (int64_t i = 0; i < tiles.count(); ++i)  // tile-major: a tile's weight panels stay in L1 across row blocks
      with_lanes<scalar_t>(tiles.lanes(i), [&](auto lanes) {
        for (int64_t b = b0; b < b1; b += kRows)
          with_count<kRows>(std::min<int64_t>(kRows, b1 - b), [&](auto rows) {
            this->template block<decltype(lanes)::value, decltype(rows)::value>(k, t, b, i);
          });
      });
  }
};

// ---------------------------------------------------------------------------------------------------------------------
// Backward: pointers and sizes of one call; the cell, the step products and the weight-gradient sums on one
// register block. `da` below points at the rows' dL/da_t (4H values a row): a unit's scratch (sequences
// schedule) or step t of the dgates tensor (steps schedule).

// One unit's running sums of the weight gradients, columns padded as their Tiles: dW_ih (4H, padded(I)),
// dW_hh (4H, padded(H)), db (4H); and its scratch for x_t or h_{t-1} rows padded the same way.
template <typename scalar_t>
struct WeightGrads {
  scalar_t* w_ih;
  scalar_t* w_hh;
  scalar_t* bias;
  scalar_t* z;
};

template <typename scalar_t>
struct Backward {
  const scalar_t* acts;
  const scalar_t* cs;
  const scalar_t* c0;
  const scalar_t* dy;    // or null: no gradient reaches y
  const scalar_t* x;     // for dW_ih
  const scalar_t* h0;    // for dW_hh at t = 0
  const scalar_t* y;     // for dW_hh: h_{t-1} = y[t-1]
  const scalar_t* w_ih;  // pack_columns(W_ih), or null: dx is not wanted (or the caller computes it)
  const scalar_t* w_hh;  // pack_columns(W_hh), or null: the caller computes dh_{t-1} (steps schedule)
  scalar_t* dh;          // (K, B, H): dL/dh_t through step t+1 (without dy_t), then dL/dh_{t-1}
  scalar_t* dc;          // (K, B, H): dL/dc_t through step t+1, then dL/dc_{t-1}
  scalar_t* dx;          // (K, T, B, I) when w_ih is set
  int64_t steps, batch, inputs, hidden;
  Tiles<scalar_t> tiles;  // of H

  int64_t state(int64_t k, int64_t t, int64_t b) const { return ((k * steps + t) * batch + b) * hidden; }
  int64_t carried(int64_t k, int64_t b) const { return (k * batch + b) * hidden; }
  const scalar_t* x_row(int64_t k, int64_t t, int64_t b) const { return x + ((k * steps + t) * batch + b) * inputs; }
  const scalar_t* h_prev(int64_t k, int64_t t, int64_t b) const {
    return t == 0 ? h0 + carried(k, b) : y + state(k, t - 1, b);
  }

  // The cell's backward on rows b..b+R-1 of member k, step t, hidden tile i (N lanes); writes their dL/da_t to da.
  template <int64_t N, int R>
  void cell_block(int64_t k, int64_t t, int64_t b, int64_t i, scalar_t* da) const {
    constexpr size_t kVec = sizeof(Vec<scalar_t, N>);
    const int64_t j0 = i * tiles.L, width = tiles.width(i);
    alignas(64) scalar_t a[4][R * N], cp[R * N], c[R * N], dh_t[R * N], dc_t[R * N];
    for (int r = 0; r < R; ++r) {
      const int64_t row = state(k, t, b + r);
      Vec<scalar_t, N> v;
      for (int g = 0; g < 4; ++g) {
        v = load_lanes<scalar_t, N>(acts + 4 * row + g * hidden + j0, width);
        std::memcpy(a[g] + r * N, &v, kVec);
      }
      v = load_lanes<scalar_t, N>((t > 0 ? cs + state(k, t - 1, b + r) : c0 + carried(k, b + r)) + j0, width);
      std::memcpy(cp + r * N, &v, kVec);
      v = load_lanes<scalar_t, N>(cs + row + j0, width);
      std::memcpy(c + r * N, &v, kVec);
      v = load_lanes<scalar_t, N>(dh + carried(k, b + r) + j0, width);
      if (dy) v += load_lanes<scalar_t, N>(dy + row + j0, width);  // dh_t = dy_t + da_{t+1}·W_hh
      std::memcpy(dh_t + r * N, &v, kVec);
      v = load_lanes<scalar_t, N>(dc + carried(k, b + r) + j0, width);
      std::memcpy(dc_t + r * N, &v, kVec);
    }
    cell_backward<scalar_t, R * N>(a[0], a[1], a[2], a[3], cp, c, dh_t, dc_t);
    for (int r = 0; r < R; ++r) {
      Vec<scalar_t, N> v;
      for (int g = 0; g < 4; ++g) {
        std::memcpy(&v, a[g] + r * N, kVec);
        store_lanes<scalar_t, N>(da + r * 4 * hidden + g * hidden + j0, v, width);
      }
      std::memcpy(&v, dc_t + r * N, kVec);
      store_lanes<scalar_t, N>(dc + carried(k, b + r) + j0, v, width);
    }
  }

  // The cells of rows [b0, b1) of member k at step t (every tile); da: row b0's dL/da_t, rows 4H apart.
  void cell_rows(int64_t k, int64_t t, int64_t b0, int64_t b1, scalar_t* da) const {
    for (int64_t b = b0; b < b1; b += kRows)
      for (int64_t i = 0; i < tiles.count(); ++i)
        with_lanes<scalar_t>(tiles.lanes(i), [&](auto lanes) {
          with_count<kRows>(std::min<int64_t>(kRows, b1 - b), [&](auto rows) {
            this->template cell_block<decltype(lanes)::value, decltype(rows)::value>(k, t, b, i,
                                                                                      da + (b - b0) * 4 * hidden);
          });
        });
  }

  // out[r] = da[r] · W on R rows, the NV column tiles (N lanes) of a W packed by pack_columns from `panel`.
  template <int64_t N, int R, int NV>
  void product_block(const scalar_t* da, const scalar_t* panel, const Tiles<scalar_t>& cols, int64_t first,
                     scalar_t* out, int64_t out_stride) const {
    Vec<scalar_t, N> acc[R][NV];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] = Vec<scalar_t, N>{};
    gemm_block<scalar_t, N, R, NV>(da, 4 * hidden, 1, 4 * hidden, panel, NV * N, acc);
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v)
        store_lanes<scalar_t, N>(out + r * out_stride + (first + v) * cols.L, acc[r][v], cols.width(first + v));
  }

  // out(b) = da[b] · W for `rows` rows of member k, W (4H, D) packed by pack_columns; out is row 0's output, rows
  // out_stride apart.
  void product_rows(const scalar_t* da, int64_t rows, int64_t k, const scalar_t* w, int64_t cols, scalar_t* out,
                    int64_t out_stride) const {
    const Groups<scalar_t> groups{Tiles<scalar_t>{cols}};
    for (int64_t g = 0; g < groups.count(); ++g) {  // a group's panel stays in L1 across row blocks
      const int64_t first = groups.first(g), step = rows_for(groups.size(g));
      const scalar_t* panel = w + (k * groups.tiles.padded() + first * groups.tiles.L) * 4 * hidden;
      with_lanes<scalar_t>(groups.lanes(g), [&](auto lanes) {
        with_count<kGroup>(groups.size(g), [&](auto nv) {
          for (int64_t b = 0; b < rows; b += step)
            with_count<8>(std::min<int64_t>(step, rows - b), [&](auto r) {
              this->template product_block<decltype(lanes)::value, decltype(r)::value, decltype(nv)::value>(
                  da + b * 4 * hidden, panel, groups.tiles, first, out + b * out_stride, out_stride);
            });
        });
      });
    }
  }

  // dw[q0 + r][tiles first.. first+NV) += Σ_b da[b][q0 + r] · z[b]: R rows of a weight gradient (column q0 + r of
  // da, whose rows are 4H apart) against `rows` rows of z, padded as dw's columns (ld values a row).
  template <int64_t N, int R, int NV>
  void outer_block(const scalar_t* da, int64_t rows, int64_t q0, const scalar_t* z, int64_t ld, int64_t j0,
                   scalar_t* dw) const {
    Vec<scalar_t, N> acc[R][NV];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) std::memcpy(&acc[r][v], dw + (q0 + r) * ld + j0 + v * N, sizeof acc[r][v]);
    gemm_block<scalar_t, N, R, NV>(da + q0, 1, 4 * hidden, rows, z + j0, ld, acc);
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < NV; ++v) std::memcpy(dw + (q0 + r) * ld + j0 + v * N, &acc[r][v], sizeof acc[r][v]);
  }

  // dW += da_tᵀ · z_t over `rows` rows of z (`cols` values a row, contiguous), copied first into `padded` (rows of
  // Tiles{cols}.padded() values, zeros past cols) so that the loop loads whole vectors; dw has the padded width.
  void outer_rows(const scalar_t* da, int64_t rows, const scalar_t* src, int64_t cols, scalar_t* padded,
                  scalar_t* dw) const {
    const Groups<scalar_t> groups{Tiles<scalar_t>{cols}};
    const int64_t ld = groups.tiles.padded();
    for (int64_t b = 0; b < rows; ++b) {
      std::memcpy(padded + b * ld, src + b * cols, cols * sizeof(scalar_t));
      std::fill(padded + b * ld + cols, padded + (b + 1) * ld, scalar_t(0));
    }
    for (int64_t g = 0; g < groups.count(); ++g)
      with_lanes<scalar_t>(groups.lanes(g), [&](auto lanes) {
        with_count<kGroup>(groups.size(g), [&](auto nv) {
          constexpr int64_t step = rows_for(decltype(nv)::value);
          for (int64_t q0 = 0; q0 < 4 * hidden; q0 += step)
            with_count<8>(std::min<int64_t>(step, 4 * hidden - q0), [&](auto r) {
              this->template outer_block<decltype(lanes)::value, decltype(r)::value, decltype(nv)::value>(
                  da, rows, q0, padded, ld, groups.first(g) * groups.tiles.L, dw);
            });
        });
      });
  }

  // One step of rows [b0, b1) of member k in the sequences schedule; da: the unit's scratch (b1 - b0 rows of 4H);
  // sums: the unit's weight gradients (null members: not wanted).
  void step(int64_t k, int64_t t, int64_t b0, int64_t b1, scalar_t* da, const WeightGrads<scalar_t>& sums) const {
    const int64_t rows = b1 - b0;
    cell_rows(k, t, b0, b1, da);
    product_rows(da, rows, k, w_hh, hidden, dh + carried(k, b0), hidden);  // dh_{t-1} = da_t · W_hh
    if (w_ih) product_rows(da, rows, k, w_ih, inputs, dx + ((k * steps + t) * batch + b0) * inputs, inputs);
    //                                                                      ^ dx_t = da_t · W_ih
    if (sums.w_ih) {
      outer_rows(da, rows, x_row(k, t, b0), inputs, sums.z, sums.w_ih);   // dW_ih += da_tᵀ · x_t
      outer_rows(da, rows, h_prev(k, t, b0), hidden, sums.z, sums.w_hh);  // dW_hh += da_tᵀ · h_{t-1}
      for (int64_t b = 0; b < rows; ++b)                                   // db += Σ_b da_t
#pragma omp simd
        for (int64_t q = 0; q < 4 * hidden; ++q) sums.bias[q] += da[b * 4 * hidden + q];
    }
  }
};

// ---------------------------------------------------------------------------------------------------------------------
// The schedules.

// Units of the sequences schedule: (member, slice of batch rows). Enough slices per member that every thread
// gets the same number of units (K·slices is a multiple of the thread count), none smaller than a register block.
struct Units {
  int64_t members, slices, rows;  // per member: `slices` slices of `rows` rows (the last may be shorter)
  int64_t count() const { return members * slices; }
};

Units split_units(int64_t members, int64_t batch) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t wanted = threads / std::gcd(members, threads);
  int64_t rows = (batch + wanted - 1) / wanted;
  rows = std::min(batch, (rows + kRows - 1) / kRows * kRows);
  return Units{members, (batch + rows - 1) / rows, rows};
}

// Calls fn(u, k, b0, b1) for every unit u (member k, rows [b0, b1)), each unit on one thread for its whole time loop.
template <typename Fn>
void for_each_unit(const Units& units, int64_t batch, const Fn& fn) {
  at::parallel_for(0, units.count(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t k = u / units.slices, b0 = (u % units.slices) * units.rows;
      fn(u, k, b0, std::min(batch, b0 + units.rows));
    }
  });
}

// Calls fn(b0, b1) over row blocks of a step, threaded when the step is big enough to pay for it.
template <typename Fn>
void for_row_blocks(int64_t batch, int64_t hidden, const Fn& fn) {
  const int64_t blocks = (batch + kRows - 1) / kRows;
  const int64_t grain = std::max<int64_t>(1, 2048 / (kRows * std::max<int64_t>(hidden, 1)));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    fn(begin * kRows, std::min(batch, end * kRows));
  });
}

void check_layer(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                 const at::Tensor& w_hh) {
  TORCH_CHECK(x.device().is_cpu(), "lstmlab_cpu: CPU tensors only");
  TORCH_CHECK(x.dim() == 4 && h0.dim() == 3 && w_ih.dim() == 3 && w_hh.dim() == 3,
              "lstmlab_cpu: x (K, T, B, I), h0, c0 (K, B, H), w_ih (K, 4H, I), w_hh (K, 4H, H)");
  const int64_t members = x.size(0), batch = x.size(2), hidden = w_hh.size(2);
  TORCH_CHECK(h0.sizes() == at::IntArrayRef({members, batch, hidden}) && c0.sizes() == h0.sizes() &&
                  w_ih.sizes() == at::IntArrayRef({members, 4 * hidden, x.size(3)}) &&
                  w_hh.sizes() == at::IntArrayRef({members, 4 * hidden, hidden}),
              "lstmlab_cpu: inconsistent shapes");
  for (const at::Tensor* t : {&x, &h0, &c0, &w_ih, &w_hh}) {
    TORCH_CHECK(t->is_contiguous(), "lstmlab_cpu: tensors must be contiguous");
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "lstmlab_cpu: all tensors must share one dtype");
  }
}

bool use_sequences(const std::string& schedule) {
  TORCH_CHECK(schedule == "sequences" || schedule == "steps", "lstmlab_cpu: schedule is 'sequences' or 'steps'");
  return schedule == "sequences";
}

template <typename scalar_t>
scalar_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<scalar_t>() : nullptr;
}

// Large buffers kept for the next call. glibc maps every allocation above 32 MiB afresh and the kernel zeroes
// each page on first touch: at K = 8 members of (T, B, I, H) = (100, 64, 69, 69) that was 25 ms of a 73 ms
// forward, against 49 ms for 8 separate calls whose 7 MB buffers glibc recycles. The forward's activations and
// cell states of a pack pass that size; a pooled buffer is handed out again once nothing else holds its
// storage (the autograd graph that saved it has been freed).
class BufferPool {
 public:
  at::Tensor take(at::IntArrayRef shape, const at::TensorOptions& options) {
    const int64_t numel = c10::multiply_integers(shape);
    if (numel * static_cast<int64_t>(options.dtype().itemsize()) < kPooledBytes) return at::empty(shape, options);
    std::lock_guard<std::mutex> lock(mutex_);
    for (const at::Tensor& buffer : buffers_)
      if (buffer.storage().use_count() == 1 && buffer.numel() == numel && buffer.dtype() == options.dtype())
        return buffer.view(shape);
    at::Tensor buffer = at::empty({numel}, options);
    if (buffers_.size() < kMaxBuffers) buffers_.push_back(buffer);
    return buffer.view(shape);
  }

 private:
  static constexpr int64_t kPooledBytes = int64_t(32) << 20;
  static constexpr size_t kMaxBuffers = 32;  // two a layer (activations, cell states) of up to 16 layers
  std::mutex mutex_;
  std::vector<at::Tensor> buffers_;
};

BufferPool& buffers() {
  static BufferPool pool;
  return pool;
}

// The forward of one layer over every member. Writes y (K, T, B, H) = h_t and returns (acts, cs): the activations
// [i|f|g|o] (K, T, B, 4H) the backward needs (an empty tensor when not `save`) and the cell states (K, S, B, H),
// c_t at [:, t % S] with S = T when `save`, else 2. bias = b_ih + b_hh (K, 4H), or None.
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                           const at::Tensor& w_ih, const at::Tensor& w_hh,
                                           const std::optional<at::Tensor>& bias, at::Tensor y,
                                           const std::string& schedule, bool save) {
  check_layer(x, h0, c0, w_ih, w_hh);
  const int64_t members = x.size(0), steps = x.size(1), batch = x.size(2), inputs = x.size(3), hidden = w_hh.size(2);
  const bool has_bias = bias.has_value() && bias->defined();
  TORCH_CHECK(!has_bias || (bias->is_contiguous() && bias->sizes() == at::IntArrayRef({members, 4 * hidden}) &&
                            bias->scalar_type() == x.scalar_type()),
              "lstmlab_cpu: bias must be contiguous (K, 4H)");
  TORCH_CHECK(y.is_contiguous() && y.sizes() == at::IntArrayRef({members, steps, batch, hidden}) &&
                  y.scalar_type() == x.scalar_type(),
              "lstmlab_cpu: y must be contiguous (K, T, B, H)");
  const bool sequences = use_sequences(schedule);
  // the steps schedule needs the gates buffer for its GEMMs even when nothing is saved
  at::Tensor acts =
      save || !sequences ? buffers().take({members, steps, batch, 4 * hidden}, x.options()) : at::Tensor();
  const int64_t c_steps = save ? steps : std::min<int64_t>(steps, 2);
  at::Tensor cs = buffers().take({members, c_steps, batch, hidden}, x.options());
  if (!sequences) {  // A = X · W_ihᵀ + b over all T·B rows of each member: one batched GEMM
    const at::Tensor x3 = x.view({members, steps * batch, inputs}), w_t = w_ih.transpose(1, 2);
    at::Tensor a3 = acts.view({members, steps * batch, 4 * hidden});
    if (has_bias) at::baddbmm_out(a3, bias->unsqueeze(1), x3, w_t);
    else at::bmm_out(a3, x3, w_t);
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstmlab_forward", [&] {
    at::Tensor packed_ih, packed_hh, packed_bias;
    if (sequences) {
      packed_ih = pack_gate_rows<scalar_t>(w_ih);
      packed_hh = pack_gate_rows<scalar_t>(w_hh);
      if (has_bias) packed_bias = pack_gate_bias<scalar_t>(*bias, hidden);
    }
    const Forward<scalar_t> f{x.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(), c0.data_ptr<scalar_t>(),
                              data_or_null<scalar_t>(packed_ih), data_or_null<scalar_t>(packed_hh),
                              data_or_null<scalar_t>(packed_bias), data_or_null<scalar_t>(acts), y.data_ptr<scalar_t>(),
                              cs.data_ptr<scalar_t>(), steps, batch, inputs, hidden, c_steps, Tiles<scalar_t>{hidden}};
    if (sequences) {
      for_each_unit(split_units(members, batch), batch, [&](int64_t, int64_t k, int64_t b0, int64_t b1) {
        for (int64_t t = 0; t < steps; ++t) f.rows(k, t, b0, b1);
      });
      return;
    }
    for (int64_t k = 0; k < members; ++k) {
      const at::Tensor w_t = w_hh.select(0, k).t();  // (H, 4H) view
      for (int64_t t = 0; t < steps; ++t) {
        // a_t += h_{t-1} · W_hhᵀ
        acts.select(0, k).select(0, t).addmm_(t == 0 ? h0.select(0, k) : y.select(0, k).select(0, t - 1), w_t);
        for_row_blocks(batch, hidden, [&](int64_t b0, int64_t b1) { f.rows(k, t, b0, b1); });
      }
    }
  });
  return {save ? acts : at::empty({0}, x.options()), cs};
}

// Backward through time. acts, cs, y: the forward's; x, h0, c0, w_ih, w_hh: its inputs; dy (K, T, B, H), dh_T,
// dc_T (K, B, H): the gradients reaching y, h_T, c_T (each may be None). Returns
// (dgates, dx, dh_0, dc_0, dW_ih, dW_hh, db), each None (an undefined tensor) where not computed: dx when
// `need_dx`; when `need_weights`, either dW_ih, dW_hh, db (= db_ih = db_hh) summed inside the loop (sequences
// schedule, units of at least kMinSumRows rows: dL/da_t never leaves a unit's small scratch) or dgates
// (K, T, B, 4H) = dL/da_t for the caller's batched weight-gradient GEMMs.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& acts, const at::Tensor& cs, const at::Tensor& y, const at::Tensor& x, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& dy,
    const std::optional<at::Tensor>& dh_last, const std::optional<at::Tensor>& dc_last, bool need_dx,
    bool need_weights, const std::string& schedule) {
  check_layer(x, h0, c0, w_ih, w_hh);
  const int64_t members = x.size(0), steps = x.size(1), batch = x.size(2), inputs = x.size(3), hidden = w_hh.size(2);
  TORCH_CHECK(acts.is_contiguous() && acts.sizes() == at::IntArrayRef({members, steps, batch, 4 * hidden}) &&
                  cs.is_contiguous() && cs.sizes() == y.sizes() && y.is_contiguous() &&
                  y.sizes() == at::IntArrayRef({members, steps, batch, hidden}),
              "lstmlab_cpu: acts (K, T, B, 4H), cs and y (K, T, B, H) must be the forward's");
  const bool has_dy = dy.has_value() && dy->defined();
  TORCH_CHECK(!has_dy || (dy->is_contiguous() && dy->sizes() == cs.sizes()), "lstmlab_cpu: dy must be contiguous");
  const bool sequences = use_sequences(schedule);
  // Summing dW += da_tᵀ·[x_t, h_{t-1}] inside the loop pays while a unit has enough rows to amortise loading and
  // storing its accumulators every step; below that dL/da is stored for batched GEMMs, as in the steps schedule.
  const bool sum_in_loop = sequences && need_weights && split_units(members, batch).rows >= kMinSumRows;
  auto carried = [&](const std::optional<at::Tensor>& last) {  // a fresh (K, B, H) buffer: zeros or dL/d(state_T)
    return last.has_value() && last->defined() ? last->contiguous().clone() : at::zeros_like(c0);
  };
  at::Tensor dh = carried(dh_last), dc = carried(dc_last);
  const bool store_dgates = !sequences || (need_weights && !sum_in_loop);
  at::Tensor dgates = store_dgates ? at::empty_like(acts) : at::Tensor();
  at::Tensor dx = need_dx && sequences ? at::empty({members, steps, batch, inputs}, x.options()) : at::Tensor();
  at::Tensor dw_ih, dw_hh, db;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstmlab_backward", [&] {
    at::Tensor packed_ih, packed_hh;
    if (sequences) {
      packed_hh = pack_columns<scalar_t>(w_hh);
      if (need_dx) packed_ih = pack_columns<scalar_t>(w_ih);
    }
    const Backward<scalar_t> p{acts.data_ptr<scalar_t>(), cs.data_ptr<scalar_t>(), c0.data_ptr<scalar_t>(),
                               has_dy ? dy->data_ptr<scalar_t>() : nullptr, x.data_ptr<scalar_t>(),
                               h0.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), data_or_null<scalar_t>(packed_ih),
                               data_or_null<scalar_t>(packed_hh), dh.data_ptr<scalar_t>(), dc.data_ptr<scalar_t>(),
                               data_or_null<scalar_t>(dx), steps, batch, inputs, hidden, Tiles<scalar_t>{hidden}};
    if (sequences) {
      const Units units = split_units(members, batch);
      // per unit: dL/da_t of its rows (unless they go to dgates), x_t or h_{t-1} rows padded to whole vectors, and
      // its own running sums of the weight gradients, added up per member below
      const int64_t ih_cols = Tiles<scalar_t>{inputs}.padded(), hh_cols = Tiles<scalar_t>{hidden}.padded();
      const int64_t scratch_size = units.rows * (4 * hidden + (sum_in_loop ? std::max(ih_cols, hh_cols) : 0));
      at::Tensor scratch = dgates.defined() ? at::Tensor() : at::empty({units.count(), scratch_size}, x.options());
      at::Tensor sums = sum_in_loop ? at::zeros({units.count(), 4 * hidden * (ih_cols + hh_cols + 1)}, x.options())
                                    : at::Tensor();
      for_each_unit(units, batch, [&](int64_t u, int64_t k, int64_t b0, int64_t b1) {
        scalar_t* own = sum_in_loop ? sums.data_ptr<scalar_t>() + u * sums.size(1) : nullptr;
        scalar_t* da = scratch.defined() ? scratch.data_ptr<scalar_t>() + u * scratch_size : nullptr;
        const WeightGrads<scalar_t> grads =
            own ? WeightGrads<scalar_t>{own, own + 4 * hidden * ih_cols, own + 4 * hidden * (ih_cols + hh_cols),
                                        da + units.rows * 4 * hidden}
                : WeightGrads<scalar_t>{};
        for (int64_t t = steps - 1; t >= 0; --t)
          p.step(k, t, b0, b1, da ? da : dgates.data_ptr<scalar_t>() + 4 * p.state(k, t, b0), grads);
      });
      if (sum_in_loop) {  // the units of one member are its consecutive batch slices: sum them, drop the padding
        const at::Tensor per_member = sums.view({members, units.slices, -1}).sum(1);
        dw_ih = per_member.narrow(1, 0, 4 * hidden * ih_cols).view({members, 4 * hidden, ih_cols})
                    .narrow(2, 0, inputs).contiguous();
        dw_hh = per_member.narrow(1, 4 * hidden * ih_cols, 4 * hidden * hh_cols).view({members, 4 * hidden, hh_cols})
                    .narrow(2, 0, hidden).contiguous();
        db = per_member.narrow(1, 4 * hidden * (ih_cols + hh_cols), 4 * hidden).contiguous();
      }
      return;
    }
    scalar_t* d = dgates.data_ptr<scalar_t>();
    for (int64_t k = 0; k < members; ++k) {
      at::Tensor dh_k = dh.select(0, k);
      for (int64_t t = steps - 1; t >= 0; --t) {
        scalar_t* da_t = d + 4 * p.state(k, t, 0);
        for_row_blocks(batch, hidden, [&](int64_t b0, int64_t b1) { p.cell_rows(k, t, b0, b1, da_t + b0 * 4 * hidden); });
        at::mm_out(dh_k, dgates.select(0, k).select(0, t), w_hh.select(0, k));  // dh_{t-1} = da_t · W_hh
      }
    }
  });
  if (need_dx && !sequences)  // dX = dA · W_ih over all T·B rows of each member: one batched GEMM
    dx = at::bmm(dgates.view({members, steps * batch, 4 * hidden}), w_ih).view({members, steps, batch, inputs});
  return {dgates, dx, dh, dc, dw_ih, dw_hh, db};
}

// The cells' activations, elementwise: (σ(x), tanh(x)), vectorised as in the cells.
template <typename scalar_t>
void activations_row(const scalar_t* x, scalar_t* sig, scalar_t* th, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    sig[j] = sigmoid(x[j]);
    th[j] = std::tanh(x[j]);
  }
}

// For the accuracy tests (tests/test_kernels.py): σ and tanh as the cells compute them.
std::tuple<at::Tensor, at::Tensor> activations(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              "lstmlab_cpu: activations of float32/float64 CPU tensors");
  const at::Tensor in = x.contiguous();
  at::Tensor sig = at::empty_like(in), th = at::empty_like(in);
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "lstmlab_activations", [&] {
    activations_row<scalar_t>(in.data_ptr<scalar_t>(), sig.data_ptr<scalar_t>(), th.data_ptr<scalar_t>(), in.numel());
  });
  return {sig, th};
}

}  // namespace

TORCH_LIBRARY(lstmlab_cpu, m) {
  m.def(
      "forward(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? bias, Tensor(a!) y, str schedule, "
      "bool save) -> (Tensor, Tensor)");
  m.def(
      "backward(Tensor acts, Tensor cs, Tensor y, Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? dy, Tensor? dh_last, Tensor? dc_last, bool need_dx, bool need_weights, str schedule) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");  // undefined tensors reach Python as None
  m.def("activations(Tensor x) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(lstmlab_cpu, CPU, m) {
  m.impl("forward", forward);
  m.impl("backward", backward);
  m.impl("activations", activations);
}
