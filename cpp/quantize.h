// ONNX QuantizeLinear and DequantizeLinear as native passes (cppconv.quantize_linear,
// cppconv.dequantize_linear and the quantized networks' Q/DQ nodes).  Driver code, compiled
// once with the default flags.
//
// The values are laid out [outer][axis][inner]: the scale and zero point of index a of the
// quantization axis apply to x[o, a, i] for every o and i (axis length 1: per tensor).
#pragma once
#include <cstdint>

namespace cppconv {

struct QuantizationAxis {
  int64_t outer, length, inner;
};

// y = saturate(round_half_to_even(x / scale) + zero_point) in T's arithmetic, into [lo, hi].
// x must hold no NaN (the caller checks: quantize_nan_count).
template <class T, class Q>
void quantize_linear(const T* x, const float* scale, const int32_t* zero_point, QuantizationAxis axis, int32_t lo,
                     int32_t hi, Q* y, int max_threads);
// How many of x's n values are NaN.
template <class T>
int64_t quantize_nan_count(const T* x, int64_t n, int max_threads);
// y = float32(x - zero_point) * scale.
template <class Q>
void dequantize_linear(const Q* x, const float* scale, const int32_t* zero_point, QuantizationAxis axis, float* y,
                       int max_threads);

}  // namespace cppconv
