// Plain descriptions of a quantized (int8/uint8) convolution call, ONNX QLinearConv's
// arithmetic, shared by the driver (cpp/qconv.cpp) and the per-ISA kernels.  Data only, no
// inline functions (see conv_problem.h).
#pragma once
#include <cstdint>
#include <limits>

#include "conv_problem.h"

namespace cppconv {

// What a quantized convolution writes: the requantized 8-bit result (QLinearConv), the raw
// int32 accumulator (ConvInteger, bias included when given) or the float32 dequantized one.
enum class QOutput : int { Quantized = 0, Int32 = 1, Float32 = 2 };

// One call.  The geometry is p's (zero padding, any rank, groups, layout; p.dtype unused).
// y[k] = requantize(bias[k] + sum (x - x_zero_point) * weight[k]), where `weight` holds the
// centred weights w - w_zero_point[k] as int16: padding reads x_zero_point, a real zero, and
// the zero-point terms of both operands are in the products.  The Python layer has checked
// that sum |weight[k]| * max |x - x_zero_point| + |bias[k]| stays below 2^31, so no partial
// sum in any order overflows int32.
struct QConvCall {
  ConvProblem p;
  const void* x = nullptr;  // uint8 or int8 (x_signed), C-contiguous in p.layout
  bool x_signed = false;
  int32_t x_zero_point = 0;
  const int16_t* weight = nullptr;  // (K, C/groups, kd, kh, kw), centred
  const void* packed = nullptr;     // the algorithm's packed weights, or nullptr
  const int32_t* bias = nullptr;    // (K,) or nullptr
  // Quantized: x_scale * w_scale[k] / y_scale; Float32: x_scale * w_scale[k] (float32, (K,)).
  const float* multiplier = nullptr;
  QOutput output = QOutput::Quantized;
  bool y_signed = false;  // Quantized: int8 or uint8
  // Quantized: y = clamp(rne(acc * multiplier) + y_zero_point, y_min, y_max), the bounds the
  // dtype's range narrowed by the activation; Float32: y = clamp(acc * multiplier, f_min, f_max).
  int32_t y_zero_point = 0, y_min = 0, y_max = 255;
  float f_min = -std::numeric_limits<float>::infinity(), f_max = std::numeric_limits<float>::infinity();
  void* y = nullptr;  // C-contiguous in p.layout
  int num_threads = 1;
};

}  // namespace cppconv
