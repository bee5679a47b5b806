// The time loops of the fused LSTM layer on CPU, in C++ so that a step costs one GEMM call and one
// pass over the gates instead of a dozen Python-dispatched tensor ops.
//
// Built lazily by lstmlab/kernels/fused.py (torch.utils.cpp_extension.load) and registered as
// torch.ops.lstmlab_cpu.{forward_loop, backward_loop, activations}. The autograd.Function, the input projection
// and the weight-gradient GEMMs stay in Python; only the two sequential loops live here.
//
// Layout (time-major, contiguous): gates (T, B, 4H), rows [i | f | g | o] as torch.nn.LSTM.
//
// σ and tanh are the C library's exp and tanh: -ffast-math lets gcc call glibc's vectorised versions
// (libmvec, AVX-512: 16 floats or 8 doubles a call, ~1 ulp). A hand-written AVX-512 exp/rational
// approximation (≤ 2.3e-7 relative) was tried and measured slower than libmvec here (33 vs 28 µs for a
// B=64, H=256 float cell, one thread), so it is not used.
//
// The forward step GEMM runs through ATen's addmm (MKL) or, when the caller passes a oneDNN weight
// (float32), through oneDNN's linear; the backward step GEMM through ATen's mm.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

namespace {

// Rows of the batch per parallel chunk: keeps tiny steps on one thread.
int64_t grain_rows(int64_t hidden) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(hidden, 1)); }

// σ(x) = 1 / (1 + e^{-x}) for x ≥ 0 and e^{x} / (1 + e^{x}) for x < 0: with e = e^{-|x|} ≤ 1 it never
// overflows, which matters because the build uses -ffast-math (the only way gcc calls glibc's vectorised
// exp and tanh) and so assumes finite values; and unlike ½ + ½·tanh(x/2) it keeps a few-ulp relative
// error in the tail (σ(-20) ≈ 2e-9, not 0). Same speed as the tanh form here (29 vs 28 µs a cell).
template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  const scalar_t e = std::exp(-std::fabs(x));
  const scalar_t d = scalar_t(1) / (scalar_t(1) + e);
  return x < scalar_t(0) ? e * d : d;
}

// One forward cell over a (B, 4H) block of pre-activations, in place: pre-activations become the
// activations (i, f, g, o) that the backward needs; c_t and h_t are written.
// `rec` (B, 4H), when not null, is h_{t-1} · W_hhᵀ computed apart (oneDNN) and added here.
template <typename scalar_t>
void cell_forward(scalar_t* gates, const scalar_t* rec, const scalar_t* c_prev, scalar_t* c, scalar_t* h,
                  int64_t batch, int64_t hidden) {
  at::parallel_for(0, batch, grain_rows(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      scalar_t* gi = gates + b * 4 * hidden;
      scalar_t* gf = gi + hidden;
      scalar_t* gg = gi + 2 * hidden;
      scalar_t* go = gi + 3 * hidden;
      const scalar_t* cp = c_prev + b * hidden;
      scalar_t* cb = c + b * hidden;
      scalar_t* hb = h + b * hidden;
      if (rec) {  // a_t = (W_ih x_t + b) + h_{t-1} · W_hhᵀ
        const scalar_t* rb = rec + b * 4 * hidden;
#pragma omp simd
        for (int64_t j = 0; j < 4 * hidden; ++j) gi[j] += rb[j];
      }
#pragma omp simd
      for (int64_t j = 0; j < hidden; ++j) {
        const scalar_t i = sigmoid(gi[j]);     // i_t = σ(W_ii x_t + W_hi h_{t-1} + b_i)
        const scalar_t f = sigmoid(gf[j]);     // f_t = σ(W_if x_t + W_hf h_{t-1} + b_f)
        const scalar_t g = std::tanh(gg[j]);   // g_t = tanh(W_ig x_t + W_hg h_{t-1} + b_g)
        const scalar_t o = sigmoid(go[j]);     // o_t = σ(W_io x_t + W_ho h_{t-1} + b_o)
        const scalar_t ct = f * cp[j] + i * g;  // c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        gi[j] = i;
        gf[j] = f;
        gg[j] = g;
        go[j] = o;
        cb[j] = ct;
        hb[j] = o * std::tanh(ct);  // h_t = o_t ⊙ tanh(c_t)
      }
    }
  });
}

// One backward cell. In: activations (B, 4H), c_{t-1}, c_t, dy_t (or null), dh_rec (the gradient
// reaching h_t through step t+1), dc (the gradient reaching c_t through step t+1). Out: dgates
// (B, 4H), and dc overwritten with dc_{t-1}.
template <typename scalar_t>
void cell_backward(const scalar_t* acts, const scalar_t* c_prev, const scalar_t* c, const scalar_t* dy,
                   const scalar_t* dh_rec, scalar_t* dc, scalar_t* dgates, int64_t batch, int64_t hidden) {
  at::parallel_for(0, batch, grain_rows(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* ai = acts + b * 4 * hidden;
      const scalar_t* af = ai + hidden;
      const scalar_t* ag = ai + 2 * hidden;
      const scalar_t* ao = ai + 3 * hidden;
      scalar_t* di = dgates + b * 4 * hidden;
      scalar_t* df = di + hidden;
      scalar_t* dg = di + 2 * hidden;
      scalar_t* dout = di + 3 * hidden;
      const scalar_t* cp = c_prev + b * hidden;
      const scalar_t* cb = c + b * hidden;
      const scalar_t* dyb = dy ? dy + b * hidden : nullptr;
      const scalar_t* dhb = dh_rec + b * hidden;
      scalar_t* dcb = dc + b * hidden;
#pragma omp simd
      for (int64_t j = 0; j < hidden; ++j) {
        const scalar_t i = ai[j], f = af[j], g = ag[j], o = ao[j];
        const scalar_t dh = dhb[j] + (dyb ? dyb[j] : scalar_t(0));  // dh_t = dy_t + dgates_{t+1}·W_hh
        const scalar_t tc = std::tanh(cb[j]);
        const scalar_t dct = dcb[j] + dh * o * (scalar_t(1) - tc * tc);  // dc_t += dh_t ⊙ o_t ⊙ (1 - tanh²(c_t))
        di[j] = dct * g * i * (scalar_t(1) - i);                         // da_i = dc_t ⊙ g_t ⊙ i_t(1 - i_t)
        df[j] = dct * cp[j] * f * (scalar_t(1) - f);                     // da_f = dc_t ⊙ c_{t-1} ⊙ f_t(1 - f_t)
        dg[j] = dct * i * (scalar_t(1) - g * g);                         // da_g = dc_t ⊙ i_t ⊙ (1 - g_t²)
        dout[j] = dh * tc * o * (scalar_t(1) - o);                       // da_o = dh_t ⊙ tanh(c_t) ⊙ o_t(1 - o_t)
        dcb[j] = dct * f;                                                // dc_{t-1} = dc_t ⊙ f_t
      }
    }
  });
}

// At small batch a GEMM library call costs more in dispatch and packing than the arithmetic; these two
// loops stream W_hh (contiguous, row-major (4H, H)) once per step instead.
constexpr int64_t kSmallBatch = 4;

// out[b, r] += Σ_k x[b, k] · w[r, k]      x (B, K), w (R, K), out (B, R):  a_t += h_{t-1} · W_hhᵀ
template <typename scalar_t>
void small_gemm_nt(const scalar_t* x, const scalar_t* w, scalar_t* out, int64_t batch, int64_t rows, int64_t k) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(batch * k, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t b = 0; b < batch; ++b) {
      const scalar_t* xb = x + b * k;
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* wr = w + r * k;
        scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t j = 0; j < k; ++j) acc += xb[j] * wr[j];
        out[b * rows + r] += acc;
      }
    }
  });
}

// out[b, j] = Σ_r x[b, r] · w[r, j]       x (B, R), w (R, K), out (B, K):  dh_{t-1} = da_t · W_hh
template <typename scalar_t>
void small_gemm_nn(const scalar_t* x, const scalar_t* w, scalar_t* out, int64_t batch, int64_t rows, int64_t k) {
  at::parallel_for(0, k, std::max<int64_t>(16, 65536 / std::max<int64_t>(batch * rows, 1)), [&](int64_t j0, int64_t j1) {
    for (int64_t b = 0; b < batch; ++b) {
      scalar_t* ob = out + b * k;
      for (int64_t j = j0; j < j1; ++j) ob[j] = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t s = x[b * rows + r];
        const scalar_t* wr = w + r * k;
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) ob[j] += s * wr[j];
      }
    }
  });
}

void check_inputs(const at::Tensor& gates, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_hh) {
  TORCH_CHECK(gates.device().is_cpu(), "lstmlab_cpu: CPU tensors only");
  TORCH_CHECK(gates.dim() == 3 && gates.is_contiguous(), "lstmlab_cpu: gates must be contiguous (T, B, 4H)");
  TORCH_CHECK(h0.is_contiguous() && c0.is_contiguous(), "lstmlab_cpu: h0 and c0 must be contiguous");
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == gates.size(2), "lstmlab_cpu: w_hh must be (4H, H)");
  TORCH_CHECK(h0.scalar_type() == gates.scalar_type() && c0.scalar_type() == gates.scalar_type() &&
                  w_hh.scalar_type() == gates.scalar_type(),
              "lstmlab_cpu: all tensors must share one dtype");
}

// x · Wᵀ through oneDNN (`mkldnn::_linear_pointwise`, the op torch.compile's CPU backend lowers linear
// layers to), with W dense (N, K) or a oneDNN-packed weight from `mkldnn::_reorder_linear_weight`. Called
// boxed, looked up by name: a torch without it raises here, which is why fused.py probes the same op from
// Python first and passes no oneDNN weight (keeping ATen's GEMM) where the probe fails.
at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& w) {
  static const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  std::vector<c10::IValue> stack{x, w, c10::IValue(), c10::IValue(std::string("none")),
                                 c10::IValue(c10::List<std::optional<at::Scalar>>()), c10::IValue(std::string(""))};
  op.callBoxed(&stack);
  at::Tensor out = stack[0].toTensor();
  TORCH_CHECK(out.is_contiguous() && out.scalar_type() == x.scalar_type(), "lstmlab_cpu: unexpected oneDNN output");
  return out;
}

// gates (T, B, 4H): on entry W_ih x_t + b for every t; on exit the activations [i|f|g|o].
// Writes y (T, B, H) with h_t and cs (T, B, H) with c_t. `w_onednn`, when defined, is W_hh for
// `onednn_linear` (float32): the step GEMM then runs in oneDNN instead of ATen's addmm (MKL).
void forward_loop(at::Tensor gates, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_hh,
                  at::Tensor y, at::Tensor cs, const std::optional<at::Tensor>& w_onednn) {
  check_inputs(gates, h0, c0, w_hh);
  TORCH_CHECK(y.is_contiguous() && cs.is_contiguous(), "lstmlab_cpu: y and cs must be contiguous");
  const int64_t steps = gates.size(0), batch = gates.size(1), hidden = gates.size(2) / 4;
  TORCH_CHECK(w_hh.is_contiguous(), "lstmlab_cpu: w_hh must be contiguous");
  const at::Tensor w_hh_t = w_hh.t();  // (H, 4H) view: gates_t += h_{t-1} · W_hhᵀ
  const int64_t gate_step = batch * 4 * hidden, state_step = batch * hidden;
  const bool use_onednn = w_onednn.has_value() && w_onednn->defined() && batch > kSmallBatch;
  TORCH_CHECK(!use_onednn || gates.scalar_type() == at::kFloat, "lstmlab_cpu: the oneDNN step GEMM is float32 only");
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstmlab_forward_loop", [&] {
    scalar_t* a = gates.data_ptr<scalar_t>();
    scalar_t* c = cs.data_ptr<scalar_t>();
    scalar_t* h = y.data_ptr<scalar_t>();
    const scalar_t* w = w_hh.data_ptr<scalar_t>();
    const scalar_t* h_prev = h0.data_ptr<scalar_t>();
    const scalar_t* c_prev = c0.data_ptr<scalar_t>();
    for (int64_t t = 0; t < steps; ++t) {
      scalar_t* a_t = a + t * gate_step;
      // a_t = (W_ih x_t + b) + h_{t-1} · W_hhᵀ
      at::Tensor rec;  // h_{t-1} · W_hhᵀ when oneDNN computes it apart; the cell adds it
      if (batch <= kSmallBatch) {
        small_gemm_nt<scalar_t>(h_prev, w, a_t, batch, 4 * hidden, hidden);
      } else if (use_onednn) {
        rec = onednn_linear(t == 0 ? h0 : y.select(0, t - 1), *w_onednn);
      } else {
        gates.select(0, t).addmm_(t == 0 ? h0 : y.select(0, t - 1), w_hh_t);
      }
      const scalar_t* r = rec.defined() ? rec.data_ptr<scalar_t>() : nullptr;
      cell_forward<scalar_t>(a_t, r, c_prev, c + t * state_step, h + t * state_step, batch, hidden);
      h_prev = h + t * state_step;
      c_prev = c + t * state_step;
    }
  });
}

// Backward through time. acts (T, B, 4H) the saved activations, cs (T, B, H) the saved c_t, dy (T, B, H)
// or an empty tensor, dh (B, H) = dL/dh_T on entry and dL/dh_0 on exit, dc likewise for c.
// Writes dgates (T, B, 4H): dL/d(pre-activation) for every step.
void backward_loop(const at::Tensor& acts, const at::Tensor& cs, const at::Tensor& c0, const at::Tensor& w_hh,
                   const at::Tensor& dy, at::Tensor dh, at::Tensor dc, at::Tensor dgates) {
  check_inputs(acts, dh, dc, w_hh);
  TORCH_CHECK(dgates.is_contiguous() && cs.is_contiguous() && c0.is_contiguous(),
              "lstmlab_cpu: dgates, cs and c0 must be contiguous");
  const bool has_dy = dy.defined() && dy.numel() > 0;
  TORCH_CHECK(!has_dy || dy.is_contiguous(), "lstmlab_cpu: dy must be contiguous");
  const int64_t steps = acts.size(0), batch = acts.size(1), hidden = acts.size(2) / 4;
  TORCH_CHECK(w_hh.is_contiguous(), "lstmlab_cpu: w_hh must be contiguous");
  const int64_t gate_step = batch * 4 * hidden, state_step = batch * hidden;
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstmlab_backward_loop", [&] {
    const scalar_t* a = acts.data_ptr<scalar_t>();
    const scalar_t* c = cs.data_ptr<scalar_t>();
    const scalar_t* w = w_hh.data_ptr<scalar_t>();
    const scalar_t* d_y = has_dy ? dy.data_ptr<scalar_t>() : nullptr;
    scalar_t* d_a = dgates.data_ptr<scalar_t>();
    scalar_t* d_h = dh.data_ptr<scalar_t>();
    scalar_t* d_c = dc.data_ptr<scalar_t>();
    for (int64_t t = steps - 1; t >= 0; --t) {
      const scalar_t* c_prev = t > 0 ? c + (t - 1) * state_step : c0.data_ptr<scalar_t>();
      cell_backward<scalar_t>(a + t * gate_step, c_prev, c + t * state_step, d_y ? d_y + t * state_step : nullptr,
                              d_h, d_c, d_a + t * gate_step, batch, hidden);
      // dh_{t-1} = da_t · W_hh   (B, 4H)·(4H, H)
      if (batch <= kSmallBatch) {
        small_gemm_nn<scalar_t>(d_a + t * gate_step, w, d_h, batch, 4 * hidden, hidden);
      } else {  // (oneDNN measured no faster than MKL here: 1.15× MKL's time at 1 thread)
        at::mm_out(dh, dgates.select(0, t), w_hh);
      }
    }
  });
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
      "forward_loop(Tensor(a!) gates, Tensor h0, Tensor c0, Tensor w_hh, Tensor(b!) y, Tensor(c!) cs, "
      "Tensor? w_onednn=None) -> ()");
  m.def(
      "backward_loop(Tensor acts, Tensor cs, Tensor c0, Tensor w_hh, Tensor dy, Tensor(a!) dh, Tensor(b!) dc, "
      "Tensor(c!) dgates) -> ()");
  m.def("activations(Tensor x) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(lstmlab_cpu, CPU, m) {
  m.impl("forward_loop", forward_loop);
  m.impl("backward_loop", backward_loop);
  m.impl("activations", activations);
}

// A oneDNN-packed weight among the arguments makes the dispatcher pick its (MkldnnCPU) key.
TORCH_LIBRARY_IMPL(lstmlab_cpu, MkldnnCPU, m) {
  m.impl("forward_loop", forward_loop);
  m.impl("backward_loop", backward_loop);
}
