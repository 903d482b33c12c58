#include "conv_transpose_reference.h"

#include "reference.h"

namespace cppconv {
namespace {

// The input coordinate that output o meets through tap t along one axis, or -1: the one with
// o + pad_before - t * D = i * S inside the input.
int64_t source(int64_t o, int64_t t, int64_t in, int64_t stride, int64_t dilation, int64_t pad_before) {
  const int64_t s = o + pad_before - t * dilation;
  if (s < 0 || s % stride != 0 || s / stride >= in) return -1;
  return s / stride;
}

// y[n, k, od, oh, ow] = bias[k] + sum over the input channels c of k's group and the taps
// (a, i, j) whose sources (id, ih, iw) lie inside the input of
// x[n, c, id, ih, iw] * w[c, k - g * Kg, a, i, j].  Accumulates in double.
template <class T>
void run_conv_transpose_reference(const ConvTransposeCall& call) {
  const ConvTransposeProblem& p = call.p;
  const T* x = static_cast<const T*>(call.x);
  const T* w = static_cast<const T*>(call.weight);
  const T* bias = static_cast<const T*>(call.bias);
  T* y = static_cast<T*>(call.y);
  const int64_t group_in = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t k = 0; k < p.out_channels; ++k) {
      const int64_t g = k / group_out, kl = k % group_out;
      for (int64_t od = 0; od < p.out_d; ++od)
        for (int64_t oh = 0; oh < p.out_h; ++oh)
          for (int64_t ow = 0; ow < p.out_w; ++ow) {
            double sum = bias ? double(bias[k]) : 0.0;
            for (int64_t a = 0; a < p.kernel_d; ++a) {
              const int64_t id = source(od, a, p.in_d, p.stride_d, p.dilation_d, p.pad_front);
              if (id < 0) continue;
              for (int64_t i = 0; i < p.kernel_h; ++i) {
                const int64_t ih = source(oh, i, p.in_h, p.stride_h, p.dilation_h, p.pad_top);
                if (ih < 0) continue;
                for (int64_t j = 0; j < p.kernel_w; ++j) {
                  const int64_t iw = source(ow, j, p.in_w, p.stride_w, p.dilation_w, p.pad_left);
                  if (iw < 0) continue;
                  for (int64_t c = 0; c < group_in; ++c) {
                    const int64_t ci = g * group_in + c;
                    const T xv = x[n * call.x_stride.n + ci * call.x_stride.c + id * call.x_stride_d +
                                   ih * call.x_stride.h + iw * call.x_stride.w];
                    const T wv = w[(((ci * group_out + kl) * p.kernel_d + a) * p.kernel_h + i) * p.kernel_w + j];
                    sum += double(xv) * double(wv);
                  }
                }
              }
            }
            y[n * call.y_stride.n + k * call.y_stride.c + od * call.y_stride_d + oh * call.y_stride.h +
              ow * call.y_stride.w] = activate_reference(T(sum), p.activation, p.negative_slope);
          }
    }
}

bool accepts_any(const ConvTransposeProblem&) { return true; }
size_t no_packing(const ConvTransposeProblem&) { return 0; }
size_t no_workspace(const ConvTransposeProblem&, int) { return 0; }

}  // namespace

const ConvTransposeAlgorithm conv_transpose2d_reference_f32 = {
    "conv_transpose2d_reference_f32",   DType::Float32, accepts_any, no_packing, nullptr, no_workspace,
    run_conv_transpose_reference<float>};
const ConvTransposeAlgorithm conv_transpose2d_reference_f64 = {
    "conv_transpose2d_reference_f64",    DType::Float64, accepts_any, no_packing, nullptr, no_workspace,
    run_conv_transpose_reference<double>};

}  // namespace cppconv
