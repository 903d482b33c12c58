#include "elementwise.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#if defined(__SSE2__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

#include "conv.h"
#include "driver.h"

namespace cppconv {
namespace {

// Element-wise passes are memory bound: threads by the values they move (kFlopsPerValueMoved).
// Each thread takes a contiguous range of the outer index and calls block(o_begin, o_end) on it.
// One scale for all (length 1) is one flat run of outer * inner values, cut anywhere.
template <class Block>
void outer_ranges(AxisLayout& axis, int max_threads, Block block) {
  if (axis.length == 1) axis = {axis.outer * axis.inner, 1, 1};
  const int64_t per_outer = axis.length * axis.inner;
  const int threads = threads_for_work(kFlopsPerValueMoved * double(axis.outer * per_outer),
                                       max_threads > 0 ? max_threads : get_num_threads());
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int t = 0; t < threads; ++t) block(axis.outer * t / threads, axis.outer * (t + 1) / threads);
}

// Adding and subtracting 1.5 * 2^(mantissa bits) rounds a value of magnitude below 2^22
// (float) or 2^51 (double) to an integer in the current rounding mode, and vectorises; the
// passes hold the rounding mode at nearest-even meanwhile (MXCSR, FPCR), so a caller's mode
// changes nothing.  Where the mode cannot be held, floor() rounds exactly instead.
template <class T>
constexpr T kRoundingShift = std::is_same_v<T, float> ? T(12582912.0) : T(6755399441055744.0);

class NearestRoundingScope {
 public:
#if defined(__SSE2__) || defined(_M_X64)
  static constexpr bool kHeld = true;
  NearestRoundingScope() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ & ~0x6000u); }
  ~NearestRoundingScope() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#elif defined(__aarch64__) && defined(__GNUC__)
  static constexpr bool kHeld = true;
  NearestRoundingScope() {
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_ & ~(uint64_t(3) << 22)));  // RMode: nearest
  }
  ~NearestRoundingScope() { __asm__ __volatile__("msr fpcr, %0" : : "r"(saved_)); }

 private:
  uint64_t saved_;
#else
  static constexpr bool kHeld = false;
#endif
};

// v (|v| < 2^22) rounded half to even.
template <class T>
T round_half_even(T v) {
  if constexpr (NearestRoundingScope::kHeld) {
    return (v + kRoundingShift<T>) - kRoundingShift<T>;
  } else {
    const T below = std::floor(v), fraction = v - below;
    const bool odd = std::fmod(below, T(2)) != T(0);
    return below + ((fraction > T(0.5) || (fraction == T(0.5) && odd)) ? T(1) : T(0));
  }
}

// The element formulas, each written once for both loop shapes below: a run of values with one
// set of parameters, and one value per index of the axis (the axis innermost, channels last).
// The loops take everything as locals, so they vectorise: values read through a closure might
// alias the output.

// x quantized with zero point z; clamped to [lo - z, hi - z] before rounding (the integer
// bounds give the same result after), so infinities saturate and the rounding trick stays exact.
template <class Q, class T>
inline Q quantize_value(T x, T scale, int32_t z, int32_t lo, int32_t hi) {
  const T v = std::min(std::max(x / scale, T(lo - z)), T(hi - z));
  return Q(int32_t(round_half_even(v)) + z);
}

// (int32 x has zero point 0: x - z never overflows.)
template <class Q>
inline float dequantize_value(Q x, float scale, int32_t z) {
  return float(int32_t(x) - z) * scale;
}

template <class T, class Q>
void quantize_run(const T* x, int64_t n, T scale, int32_t z, int32_t lo, int32_t hi, Q* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = quantize_value<Q>(x[i], scale, z, lo, hi);
}

template <class T, class Q>
void quantize_across(const T* x, int64_t length, const float* scale, const int32_t* zero_point, int32_t lo, int32_t hi,
                     Q* y) {
#pragma omp simd
  for (int64_t a = 0; a < length; ++a) y[a] = quantize_value<Q>(x[a], T(scale[a]), zero_point[a], lo, hi);
}

template <class Q>
void dequantize_run(const Q* x, int64_t n, float scale, int32_t z, float* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = dequantize_value(x[i], scale, z);
}

template <class Q>
void dequantize_across(const Q* x, int64_t length, const float* scale, const int32_t* zero_point, float* y) {
#pragma omp simd
  for (int64_t a = 0; a < length; ++a) y[a] = dequantize_value(x[a], scale[a], zero_point[a]);
}

}  // namespace

template <class T, class Q>
void quantize_linear(const T* x, const float* scale, const int32_t* zero_point, AxisLayout axis, int32_t lo, int32_t hi,
                     Q* y, int max_threads) {
  outer_ranges(axis, max_threads, [&](int64_t o_begin, int64_t o_end) {
    const NearestRoundingScope nearest;  // (this thread's MXCSR)
    if (axis.length == 1) {
      quantize_run(x + o_begin, o_end - o_begin, T(scale[0]), zero_point[0], lo, hi, y + o_begin);
      return;
    }
    for (int64_t o = o_begin; o < o_end; ++o) {
      if (axis.inner == 1) {
        quantize_across(x + o * axis.length, axis.length, scale, zero_point, lo, hi, y + o * axis.length);
        continue;
      }
      for (int64_t a = 0; a < axis.length; ++a) {
        const int64_t at = (o * axis.length + a) * axis.inner;
        quantize_run(x + at, axis.inner, T(scale[a]), zero_point[a], lo, hi, y + at);
      }
    }
  });
}

template <class T>
int64_t quantize_nan_count(const T* x, int64_t n, int max_threads) {
  int64_t nans = 0;
  const int threads =
      threads_for_work(kFlopsPerValueMoved * double(n), max_threads > 0 ? max_threads : get_num_threads());
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1) reduction(+ : nans)
  for (int64_t i = 0; i < n; ++i) nans += x[i] != x[i];
  return nans;
}

template <class Q>
void dequantize_linear(const Q* x, const float* scale, const int32_t* zero_point, AxisLayout axis, float* y,
                       int max_threads) {
  outer_ranges(axis, max_threads, [&](int64_t o_begin, int64_t o_end) {
    if (axis.length == 1) {
      dequantize_run(x + o_begin, o_end - o_begin, scale[0], zero_point[0], y + o_begin);
      return;
    }
    for (int64_t o = o_begin; o < o_end; ++o) {
      if (axis.inner == 1) {
        dequantize_across(x + o * axis.length, axis.length, scale, zero_point, y + o * axis.length);
        continue;
      }
      for (int64_t a = 0; a < axis.length; ++a) {
        const int64_t at = (o * axis.length + a) * axis.inner;
        dequantize_run(x + at, axis.inner, scale[a], zero_point[a], y + at);
      }
    }
  });
}

namespace {

// max(v, 0) where kRelu; a NaN stays NaN.
template <bool kRelu>
inline float relu_if(float v) {
  return kRelu ? (v < 0.0f ? 0.0f : v) : v;
}

template <bool kRelu>
inline float affine_value(float x, float scale, float shift) {
  return relu_if<kRelu>(x * scale + shift);
}

template <bool kRelu>
void affine_run(const float* x, int64_t n, float scale, float shift, float* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = affine_value<kRelu>(x[i], scale, shift);
}

template <bool kRelu>
void affine_across(const float* x, int64_t length, const float* scale, const float* shift, float* y) {
#pragma omp simd
  for (int64_t a = 0; a < length; ++a) y[a] = affine_value<kRelu>(x[a], scale[a], shift[a]);
}

template <bool kRelu>
void channel_affine_as(const float* x, const float* scale, const float* shift, AxisLayout axis, float* y,
                       int max_threads) {
  outer_ranges(axis, max_threads, [&](int64_t o_begin, int64_t o_end) {
    if (axis.length == 1) {
      affine_run<kRelu>(x + o_begin, o_end - o_begin, scale[0], shift[0], y + o_begin);
      return;
    }
    for (int64_t o = o_begin; o < o_end; ++o) {
      if (axis.inner == 1) {
        affine_across<kRelu>(x + o * axis.length, axis.length, scale, shift, y + o * axis.length);
        continue;
      }
      for (int64_t a = 0; a < axis.length; ++a) {
        const int64_t at = (o * axis.length + a) * axis.inner;
        affine_run<kRelu>(x + at, axis.inner, scale[a], shift[a], y + at);
      }
    }
  });
}

}  // namespace

void channel_affine(const float* x, const float* scale, const float* shift, AxisLayout axis, bool relu, float* y,
                    int max_threads) {
  if (relu) channel_affine_as<true>(x, scale, shift, axis, y, max_threads);
  else channel_affine_as<false>(x, scale, shift, axis, y, max_threads);
}

namespace {

template <bool kRelu>
void add_run(const float* a, const float* b, int64_t n, float* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = relu_if<kRelu>(a[i] + b[i]);
}

}  // namespace

void add(const float* a, const float* b, int64_t n, bool relu, float* y, int max_threads) {
  AxisLayout flat{n, 1, 1};
  outer_ranges(flat, max_threads, [&](int64_t begin, int64_t end) {
    if (relu) add_run<true>(a + begin, b + begin, end - begin, y + begin);
    else add_run<false>(a + begin, b + begin, end - begin, y + begin);
  });
}

namespace {

// (Parameters as locals, as for the runs above.)  `floor`: 0 for a ReLU, else -infinity (the
// sums of finite values pass).
template <class Q, class Y>
void quantized_add_run(const Q* a, float a_scale, int32_t a_zero, const Q* b, float b_scale, int32_t b_zero, int64_t n,
                       float floor, float y_scale, int32_t y_zero, int32_t lo, int32_t hi, Y* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float sum = dequantize_value(a[i], a_scale, a_zero) + dequantize_value(b[i], b_scale, b_zero);
    y[i] = quantize_value<Y>(std::max(sum, floor), y_scale, y_zero, lo, hi);
  }
}

}  // namespace

template <class Q, class Y>
void quantized_add(const Q* a, float a_scale, int32_t a_zero, const Q* b, float b_scale, int32_t b_zero, int64_t n,
                   bool relu, float y_scale, int32_t y_zero, int32_t lo, int32_t hi, Y* y, int max_threads) {
  AxisLayout flat{n, 1, 1};
  const float floor = relu ? 0.0f : -std::numeric_limits<float>::infinity();
  outer_ranges(flat, max_threads, [&](int64_t begin, int64_t end) {
    const NearestRoundingScope nearest;  // (this thread's MXCSR)
    quantized_add_run(a + begin, a_scale, a_zero, b + begin, b_scale, b_zero, end - begin, floor, y_scale, y_zero, lo,
                      hi, y + begin);
  });
}

void scale_channels(const float* x, const float* scale, int64_t images, int64_t pixels, int64_t channels, float* y,
                    int max_threads) {
  AxisLayout rows{images * pixels, channels, 1};  // a row per pixel
  outer_ranges(rows, max_threads, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const float* s = scale + o / pixels * channels;
      const float* from = x + o * channels;
      float* to = y + o * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) to[c] = from[c] * s[c];
    }
  });
}

namespace {

// One output row of resize_2d from input rows x0 and x1 (kLerpH: weighted by fh, else x0
// alone); along w likewise (kLerpW).  An axis without interpolation only picks, so an
// infinity stays one (inf - inf would be NaN).
template <bool kLerpH, bool kLerpW>
void resize_row(const float* x0, const float* x1, float fh, ResizeTaps cols, int64_t out_w, int64_t inner, float* yr) {
  for (int64_t ow = 0; ow < out_w; ++ow) {
    const float* a0 = x0 + cols.low[ow] * inner;
    const float* a1 = x1 + cols.low[ow] * inner;
    const float* b0 = x0 + cols.high[ow] * inner;
    const float* b1 = x1 + cols.high[ow] * inner;
    const float fw = kLerpW ? cols.frac[ow] : 0.0f;
    float* yo = yr + ow * inner;
#pragma omp simd
    for (int64_t i = 0; i < inner; ++i) {
      const float a = kLerpH ? a0[i] + (a1[i] - a0[i]) * fh : a0[i];
      if (kLerpW) {
        const float b = kLerpH ? b0[i] + (b1[i] - b0[i]) * fh : b0[i];
        yo[i] = a + (b - a) * fw;
      } else {
        yo[i] = a;
      }
    }
  }
}

template <bool kLerpH, bool kLerpW>
void resize_rows(const float* x, int64_t in_h, int64_t in_w, int64_t inner, ResizeTaps rows, int64_t out_h,
                 ResizeTaps cols, int64_t out_w, float* y, int64_t r_begin, int64_t r_end) {
  for (int64_t r = r_begin; r < r_end; ++r) {
    const int64_t o = r / out_h, oh = r % out_h;
    const float* x0 = x + (o * in_h + rows.low[oh]) * in_w * inner;
    const float* x1 = x + (o * in_h + rows.high[oh]) * in_w * inner;
    resize_row<kLerpH, kLerpW>(x0, x1, kLerpH ? rows.frac[oh] : 0.0f, cols, out_w, inner, y + r * out_w * inner);
  }
}

}  // namespace

void resize_2d(const float* x, int64_t outer, int64_t in_h, int64_t in_w, int64_t inner, ResizeTaps rows, int64_t out_h,
               ResizeTaps cols, int64_t out_w, float* y, int max_threads) {
  // Rows of the output are the unit of work; a thread takes a contiguous range of them.
  const int64_t out_rows = outer * out_h;
  const int threads = threads_for_work(kFlopsPerValueMoved * double(out_rows * out_w * inner),
                                       max_threads > 0 ? max_threads : get_num_threads());
  auto run = resize_rows<true, true>;
  if (!rows.frac) run = cols.frac ? resize_rows<false, true> : resize_rows<false, false>;
  else if (!cols.frac) run = resize_rows<true, false>;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int t = 0; t < threads; ++t)
    run(x, in_h, in_w, inner, rows, out_h, cols, out_w, y, out_rows * t / threads, out_rows * (t + 1) / threads);
}

template void quantize_linear<float, uint8_t>(const float*, const float*, const int32_t*, AxisLayout, int32_t, int32_t,
                                              uint8_t*, int);
template void quantize_linear<float, int8_t>(const float*, const float*, const int32_t*, AxisLayout, int32_t, int32_t,
                                             int8_t*, int);
template void quantize_linear<double, uint8_t>(const double*, const float*, const int32_t*, AxisLayout, int32_t,
                                               int32_t, uint8_t*, int);
template void quantize_linear<double, int8_t>(const double*, const float*, const int32_t*, AxisLayout, int32_t, int32_t,
                                              int8_t*, int);
template void quantized_add<uint8_t, uint8_t>(const uint8_t*, float, int32_t, const uint8_t*, float, int32_t, int64_t,
                                              bool, float, int32_t, int32_t, int32_t, uint8_t*, int);
template void quantized_add<uint8_t, int8_t>(const uint8_t*, float, int32_t, const uint8_t*, float, int32_t, int64_t,
                                             bool, float, int32_t, int32_t, int32_t, int8_t*, int);
template void quantized_add<int8_t, uint8_t>(const int8_t*, float, int32_t, const int8_t*, float, int32_t, int64_t,
                                             bool, float, int32_t, int32_t, int32_t, uint8_t*, int);
template void quantized_add<int8_t, int8_t>(const int8_t*, float, int32_t, const int8_t*, float, int32_t, int64_t, bool,
                                            float, int32_t, int32_t, int32_t, int8_t*, int);
template int64_t quantize_nan_count<float>(const float*, int64_t, int);
template int64_t quantize_nan_count<double>(const double*, int64_t, int);
template void dequantize_linear<uint8_t>(const uint8_t*, const float*, const int32_t*, AxisLayout, float*, int);
template void dequantize_linear<int8_t>(const int8_t*, const float*, const int32_t*, AxisLayout, float*, int);
template void dequantize_linear<int32_t>(const int32_t*, const float*, const int32_t*, AxisLayout, float*, int);

}  // namespace cppconv
