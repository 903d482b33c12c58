// The plain description of a transposed-convolution call, shared by the driver and every
// per-ISA kernel.  Data only (no inline functions), for the same one-definition reason as
// conv_problem.h.
#pragma once
#include <cstdint>

#include "conv_problem.h"

namespace cppconv {

// One transposed convolution (the adjoint of a convolution with the same weight) of spatial
// rank 1 to 3: weight is (in_channels, out_channels / groups, kd, kh, kw) as in PyTorch.
// Lower ranks are depth 1 (and height 1 for 1-D) with unit stride, dilation and no padding
// there.  Output size along an axis is
// (I - 1) * S - pad_before - pad_after + D * (K - 1) + output_padding + 1.
struct ConvTransposeProblem {
  int64_t batch = 0, in_channels = 0, in_d = 1, in_h = 0, in_w = 0;
  int64_t out_channels = 0, kernel_d = 1, kernel_h = 0, kernel_w = 0;
  int64_t out_d = 1, out_h = 0, out_w = 0;
  int64_t stride_d = 1, stride_h = 1, stride_w = 1, dilation_d = 1, dilation_h = 1, dilation_w = 1;
  int64_t pad_front = 0, pad_back = 0, pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t output_padding_d = 0, output_padding_h = 0, output_padding_w = 0;
  int64_t groups = 1;
  DType dtype = DType::Float32;
  Layout layout = Layout::NCHW;  // channels first (NCW, NCHW, NCDHW) or last (NWC, NHWC, NDHWC)
  Activation activation = Activation::None;
  double negative_slope = kDefaultNegativeSlope;  // leaky_relu's (see FusedActivation)
  // BFloat16 problems, as ConvProblem's: x or y is a float32 array (compute_dtype="bfloat16":
  // x rounded to bfloat16 as it is read, the result kept in float32).
  bool x_float32 = false, y_float32 = false;
};

struct ConvTransposeCall {
  ConvTransposeProblem p;
  const void* x = nullptr;       // strides x_stride, depth stride x_stride_d
  const void* weight = nullptr;  // (C, K/groups, kd, kh, kw), C-contiguous
  const void* packed = nullptr;  // the algorithm's packed weights, or nullptr
  const void* bias = nullptr;    // (K,) or nullptr
  void* y = nullptr;             // strides y_stride, depth stride y_stride_d
  Strides4 x_stride, y_stride;
  int64_t x_stride_d = 0, y_stride_d = 0;
  int num_threads = 1;
};

}  // namespace cppconv
