#include "reference.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "bf16.h"
#include "conv.h"

namespace cppconv {
namespace {
template <class T>
T activate_reference_t(T v, Activation a, T negative_slope) {
  switch (a) {
    case Activation::None: return v;
    case Activation::Relu: return v < T(0) ? T(0) : v;
    case Activation::Relu6: return v < T(0) ? T(0) : (v > T(6) ? T(6) : v);
    case Activation::LeakyRelu: return v < T(0) ? v * negative_slope : v;
    case Activation::Sigmoid: return T(1) / (T(1) + std::exp(-v));
    case Activation::Tanh: return std::tanh(v);
    case Activation::Silu: return v / (T(1) + std::exp(-v));
    case Activation::HardSigmoid:
    case Activation::HardSwish: {
      const T gate = v != v ? v : std::min(std::max(v / T(6) + T(0.5), T(0)), T(1));
      return a == Activation::HardSwish ? v * gate : gate;
    }
  }
  return v;
}

}  // namespace

float activate_reference(float v, Activation a, double negative_slope) {
  return activate_reference_t(v, a, float(negative_slope));
}
double activate_reference(double v, Activation a, double negative_slope) {
  return activate_reference_t(v, a, negative_slope);
}

namespace {

// The stored values the reference reads, as the numbers they stand for: float and double as
// they are, bfloat16 bits (uint16_t) widened, and the float32 x of a BFloat16 problem
// (RoundedFloat) rounded to bfloat16 first.
struct RoundedFloat {
  float value;
};
double value_of(float v) { return v; }
double value_of(double v) { return v; }
double value_of(uint16_t bits) { return bf16_to_float(bits); }
double value_of(RoundedFloat v) { return bf16_to_float(float_to_bf16(v.value)); }
template <class Y, class T>
Y store_as(T v) {
  if constexpr (std::is_same_v<Y, uint16_t>) return float_to_bf16(float(v));
  else return Y(v);
}

// y[n, k, od, oh, ow] = bias[k] + sum over c, a, i, j of
//   w[k, c, a, i, j] * xpad[n, g*Cg + c, od*S + a*D, oh*S + i*D, ow*S + j*D]
// where xpad reads through padded_source (no index maps: the reference takes the calls whose
// windows skip most of a huge padding, and must cost their work, not the padded extent).
// Accumulates in double.  X, W, B and Y are the stored types of x, the weight, the bias and y
// (value_of, store_as); T is the type of the sum the activation takes.
template <class T, class X = T, class W = T, class B = T, class Y = T>
void run_reference(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const X* x = static_cast<const X*>(call.x);
  const W* w = static_cast<const W*>(call.weight);
  const B* bias = static_cast<const B*>(call.bias);
  Y* y = static_cast<Y*>(call.y);
  const int64_t group_in = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
  const int64_t taps = p.kernel_d * p.kernel_h * p.kernel_w;
  // The source slices, rows and columns of one output's kernel taps (-1: a zero).
  std::vector<int64_t> slices(size_t(p.kernel_d)), rows(size_t(p.kernel_h)), cols(size_t(p.kernel_w));
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t k = 0; k < p.out_channels; ++k) {
      const int64_t g = k / group_out;
      for (int64_t od = 0; od < p.out_d; ++od) {
        for (int64_t a = 0; a < p.kernel_d; ++a)
          slices[size_t(a)] = padded_source(od * p.stride_d + a * p.dilation_d, p.in_d, p.pad_front, p.pad_mode);
        for (int64_t oh = 0; oh < p.out_h; ++oh) {
          for (int64_t i = 0; i < p.kernel_h; ++i)
            rows[size_t(i)] = padded_source(oh * p.stride_h + i * p.dilation_h, p.in_h, p.pad_top, p.pad_mode);
          for (int64_t ow = 0; ow < p.out_w; ++ow) {
            for (int64_t j = 0; j < p.kernel_w; ++j)
              cols[size_t(j)] = padded_source(ow * p.stride_w + j * p.dilation_w, p.in_w, p.pad_left, p.pad_mode);
            double sum = bias ? value_of(bias[k]) : 0.0;
            for (int64_t c = 0; c < group_in; ++c)
              for (int64_t a = 0; a < p.kernel_d; ++a)
                for (int64_t i = 0; i < p.kernel_h; ++i)
                  for (int64_t j = 0; j < p.kernel_w; ++j) {
                    // Zero padding is a real zero: 0 * inf in the weights gives NaN, as in PyTorch.
                    const int64_t slice = slices[size_t(a)], row = rows[size_t(i)], col = cols[size_t(j)];
                    const X xv = (slice < 0 || row < 0 || col < 0)
                                     ? X{}
                                     : x[n * call.x_stride.n + (g * group_in + c) * call.x_stride.c +
                                         slice * call.x_depth_stride + row * call.x_stride.h + col * call.x_stride.w];
                    const W wv = w[(k * group_in + c) * taps + (a * p.kernel_h + i) * p.kernel_w + j];
                    sum += value_of(xv) * value_of(wv);
                  }
            const int64_t at = n * call.y_stride.n + k * call.y_stride.c + od * call.y_depth_stride +
                               oh * call.y_stride.h + ow * call.y_stride.w;
            T v = T(sum);
            // The residual (of y's type and strides) after the sum is rounded, before the activation.
            if constexpr (std::is_same_v<T, Y>)
              if (call.residual) v = v + static_cast<const Y*>(call.residual)[at];
            y[at] = store_as<Y>(activate_reference(v, p.activation, p.negative_slope));
          }
        }
      }
    }
}

bool accepts_any(const ConvProblem&) { return true; }
size_t no_packing(const ConvProblem&) { return 0; }
size_t reference_workspace(const ConvProblem& p, int) {
  return size_t(p.kernel_d + p.kernel_h + p.kernel_w) * sizeof(int64_t);
}

}  // namespace

const ConvAlgorithm conv_reference_f32 = {
    "conv_reference_f32",       DType::Float32,       accepts_any,        no_packing, nullptr,
    reference_workspace,        run_reference<float>, Precision::Highest, 0,          /*adds_residual=*/true,
    /*reads_depth_taps=*/false, /*takes_depth=*/true};
const ConvAlgorithm conv_reference_f64 = {
    "conv_reference_f64",       DType::Float64,        accepts_any,        no_packing, nullptr,
    reference_workspace,        run_reference<double>, Precision::Highest, 0,          /*adds_residual=*/true,
    /*reads_depth_taps=*/false, /*takes_depth=*/true};

namespace {
// bfloat16 weights, float32 bias; x and y as the problem stores them.
void run_reference_bf16(const ConvCall& call) {
  if (call.p.x_float32) {
    if (call.p.y_float32) return run_reference<float, RoundedFloat, uint16_t, float, float>(call);
    return run_reference<float, RoundedFloat, uint16_t, float, uint16_t>(call);
  }
  if (call.p.y_float32) return run_reference<float, uint16_t, uint16_t, float, float>(call);
  run_reference<float, uint16_t, uint16_t, float, uint16_t>(call);
}
}  // namespace

const ConvAlgorithm conv_reference_bf16 = {
    "conv_reference_bf16",      DType::BFloat16,    accepts_any,        no_packing, nullptr,
    reference_workspace,        run_reference_bf16, Precision::Highest, 0,
    /*adds_residual=*/false,
    /*reads_depth_taps=*/false,
    /*takes_depth=*/true};

}  // namespace cppconv
