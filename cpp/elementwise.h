// Element-wise passes with parameters along one axis: ONNX QuantizeLinear and DequantizeLinear
// (cppconv.quantize_linear, cppconv.dequantize_linear, the quantized networks' Q/DQ nodes) and
// a per-channel scale and shift with an optional ReLU (the networks' BatchNormalization that
// no convolution takes in), a per-image channel scale (squeeze-and-excitation gates), and the
// linear and nearest Resize of two adjacent axes.  Driver code, compiled once with the default
// flags.
//
// The values are laid out [outer][axis][inner]: the parameters of index a of the axis apply to
// x[o, a, i] for every o and i (axis length 1: one set for all).
#pragma once
#include <cstdint>

namespace cppconv {

struct AxisLayout {
  int64_t outer, length, inner;
};

// y = saturate(round_half_to_even(x / scale) + zero_point) in T's arithmetic, into [lo, hi].
// x must hold no NaN (the caller checks: quantize_nan_count).
template <class T, class Q>
void quantize_linear(const T* x, const float* scale, const int32_t* zero_point, AxisLayout axis, int32_t lo, int32_t hi,
                     Q* y, int max_threads);
// How many of x's n values are NaN.
template <class T>
int64_t quantize_nan_count(const T* x, int64_t n, int max_threads);
// y = float32(x - zero_point) * scale.
template <class Q>
void dequantize_linear(const Q* x, const float* scale, const int32_t* zero_point, AxisLayout axis, float* y,
                       int max_threads);

// y = QuantizeLinear(DequantizeLinear(a) + DequantizeLinear(b)) over n values, each with its
// scale and zero point, max(sum, 0) first where relu: a QDQ model's residual Add [Relu]
// QuantizeLinear group in one pass.  Every step is its operator's float32 arithmetic, so the
// result is the unfused group's, bit for bit.  y may be a or b (same element size).
template <class Q, class Y>
void quantized_add(const Q* a, float a_scale, int32_t a_zero, const Q* b, float b_scale, int32_t b_zero, int64_t n,
                   bool relu, float y_scale, int32_t y_zero, int32_t lo, int32_t hi, Y* y, int max_threads);

// y[i] = table[x[i]] over n bytes: an 8-bit tensor through any function of its 256 values (a QDQ
// model's chain of elementwise operators between a dequantization and a quantization, tabulated
// at load).  y may be x.
void lookup_bytes(const uint8_t* x, const uint8_t* table, int64_t n, uint8_t* y, int max_threads);

// y[n][p][c] = QuantizeLinear(DequantizeLinear(x[n][p][c]) * gate[n][c]) over `images` x `pixels` x
// `channels` 8-bit values: a QDQ squeeze-and-excitation block's DequantizeLinear, Mul (by one
// float gate per image and channel) and QuantizeLinear in one pass, each step its operator's
// float32 arithmetic (the unfused group's bits).  Returns how many products were NaN (y is then
// incomplete: QuantizeLinear refuses NaN).
template <class Q, class Y>
int64_t quantized_scale_channels(const Q* x, float x_scale, int32_t x_zero, const float* gate, int64_t images,
                                 int64_t pixels, int64_t channels, float y_scale, int32_t y_zero, int32_t lo,
                                 int32_t hi, Y* y, int max_threads);

// y = x * scale + shift, then max(y, 0) where relu (a NaN stays NaN).  y may be x.
void channel_affine(const float* x, const float* scale, const float* shift, AxisLayout axis, bool relu, float* y,
                    int max_threads);
// y = a + b over n values, then max(y, 0) where relu (a residual connection).  y may be a or b.
void add(const float* a, const float* b, int64_t n, bool relu, float* y, int max_threads);

// y[n][p][c] = x[n][p][c] * scale[n][c] over `images` x `pixels` x `channels` values: channels-last
// values times one gate per image and channel (a squeeze-and-excitation block's Mul).  y may be x.
void scale_channels(const float* x, const float* scale, int64_t images, int64_t pixels, int64_t channels, float* y,
                    int max_threads);

// y = x for two arrays of one shape (`ndim` axes) with any strides, in bytes: rows along the last
// axis, memcpy'd where contiguous in both, else value by value (a channel shuffle's interleaved
// channels), at most kCopyMaxAxes axes.  A Concat's input copied into its channels of the result, in a network's
// one-call run (NetProgram) where NumPy's assignment would need Python.
constexpr int kCopyMaxAxes = 8;
void copy_strided(const char* x, const int64_t* x_strides, char* y, const int64_t* y_strides, const int64_t* shape,
                  int ndim, int64_t item_bytes, int max_threads);

// to[n][j][i] = from[n][i][j] for `batch` matrices of rows x cols (float, double, or uint16_t:
// bfloat16's bits): layout changes, channels-last to channels-first and back.
template <class T>
void transpose_matrices(const T* from, int64_t batch, int64_t rows, int64_t cols, T* to, int threads);
// to[j * to_stride + i] = from[i * from_stride + j] for one rows x cols block of larger matrices,
// on the calling thread.
template <class T>
void transpose_block(const T* from, int64_t rows, int64_t cols, int64_t from_stride, T* to, int64_t to_stride);

// Where each output index along one axis reads the input: indices `low` and `high` and the
// weight `frac` of `high`; frac nullptr: the value at `low` alone (nearest, or an axis kept).
struct ResizeTaps {
  const int64_t* low;
  const int64_t* high;
  const float* frac;
};

// ONNX Resize (linear or nearest) of the two adjacent axes h and w of x laid out
// [outer][in_h][in_w][inner] into y [outer][out_h][out_w][inner]: along h, then along w,
// a + (b - a) * frac each (the order of operations of _netops.resize's NumPy path).
void resize_2d(const float* x, int64_t outer, int64_t in_h, int64_t in_w, int64_t inner, ResizeTaps rows, int64_t out_h,
               ResizeTaps cols, int64_t out_w, float* y, int max_threads);

}  // namespace cppconv
