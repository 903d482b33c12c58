#include "elementwise.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#if defined(__SSE2__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

#include "conv.h"
#include "dispatch.h"
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
  const int threads =
      threads_for_work(kFlopsPerValueMoved * double(axis.outer * per_outer), resolve_threads(max_threads));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int t = 0; t < threads; ++t) block(axis.outer * t / threads, axis.outer * (t + 1) / threads);
}

// The quantization kernels (kernels/quantize8.cpp) round by adding and subtracting 1.5 *
// 2^(mantissa bits), which needs the rounding mode at nearest-even: the passes hold it meanwhile
// (MXCSR, FPCR), so a caller's mode changes nothing.  Where it cannot be held (kHeld false),
// the kernels round by floor() instead.
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

// The runs of outer indices [o_begin, o_end) of a pass laid out as `axis`, each with one set of
// parameters or one per value: run(first value, count, first parameter index, across).
template <class Run>
void for_each_run(const AxisLayout& axis, int64_t o_begin, int64_t o_end, const Run& run) {
  if (axis.length == 1) {
    run(o_begin, o_end - o_begin, 0, false);
    return;
  }
  for (int64_t o = o_begin; o < o_end; ++o) {
    if (axis.inner == 1) {
      run(o * axis.length, axis.length, 0, true);
      continue;
    }
    for (int64_t a = 0; a < axis.length; ++a) run((o * axis.length + a) * axis.inner, axis.inner, a, false);
  }
}

template <class Q>
constexpr Int8Kind kKindOf = std::is_same_v<Q, uint8_t>  ? Int8Kind::U8
                             : std::is_same_v<Q, int8_t> ? Int8Kind::S8
                                                         : Int8Kind::S32;

}  // namespace

template <class T, class Q>
void quantize_linear(const T* x, const float* scale, const int32_t* zero_point, AxisLayout axis, int32_t lo, int32_t hi,
                     Q* y, int max_threads) {
  const KernelTable& table = active_table();
  outer_ranges(axis, max_threads, [&](int64_t o_begin, int64_t o_end) {
    const NearestRoundingScope nearest;  // (this thread's MXCSR)
    const auto run = [&](int64_t at, int64_t n, int64_t a, bool across) {
      table.quantize({x + at, std::is_same_v<T, double>, y + at, kKindOf<Q>, n, scale + a, zero_point + a, across, lo,
                      hi, NearestRoundingScope::kHeld});
    };
    for_each_run(axis, o_begin, o_end, run);
  });
}

template <class T>
int64_t quantize_nan_count(const T* x, int64_t n, int max_threads) {
  int64_t nans = 0;
  const int threads = threads_for_work(kFlopsPerValueMoved * double(n), resolve_threads(max_threads));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1) reduction(+ : nans)
  for (int64_t i = 0; i < n; ++i) nans += x[i] != x[i];
  return nans;
}

template <class Q>
void dequantize_linear(const Q* x, const float* scale, const int32_t* zero_point, AxisLayout axis, float* y,
                       int max_threads) {
  const KernelTable& table = active_table();
  outer_ranges(axis, max_threads, [&](int64_t o_begin, int64_t o_end) {
    const auto run = [&](int64_t at, int64_t n, int64_t a, bool across) {
      table.dequantize({x + at, kKindOf<Q>, y + at, n, scale + a, zero_point + a, across});
    };
    for_each_run(axis, o_begin, o_end, run);
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
    for_each_run(axis, o_begin, o_end, [&](int64_t at, int64_t n, int64_t a, bool across) {
      if (across) affine_across<kRelu>(x + at, n, scale, shift, y + at);
      else affine_run<kRelu>(x + at, n, scale[a], shift[a], y + at);
    });
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

void lookup_bytes(const uint8_t* x, const uint8_t* table, int64_t n, uint8_t* y, int max_threads) {
  const auto lookup = active_table().lookup_bytes;
  AxisLayout flat{n, 1, 1};
  outer_ranges(flat, max_threads,
               [&](int64_t begin, int64_t end) { lookup(x + begin, table, end - begin, y + begin); });
}

namespace {

template <class T>
void copy_row_as(const char* x, int64_t x_stride, char* y, int64_t y_stride, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, x + i * x_stride, sizeof(T));
    std::memcpy(y + i * y_stride, &v, sizeof(T));
  }
}

// n values of item_bytes each, `x_stride` and `y_stride` bytes apart: typed moves for the usual
// sizes (a call of memcpy per value ran a channel shuffle's interleave at a value per 5 ns).
void copy_row(const char* x, int64_t x_stride, char* y, int64_t y_stride, int64_t n, int64_t item_bytes) {
  switch (item_bytes) {
    case 1: return copy_row_as<uint8_t>(x, x_stride, y, y_stride, n);
    case 2: return copy_row_as<uint16_t>(x, x_stride, y, y_stride, n);
    case 4: return copy_row_as<uint32_t>(x, x_stride, y, y_stride, n);
    case 8: return copy_row_as<uint64_t>(x, x_stride, y, y_stride, n);
    default:
      for (int64_t i = 0; i < n; ++i) std::memcpy(y + i * y_stride, x + i * x_stride, size_t(item_bytes));
  }
}

}  // namespace

void copy_strided(const char* x, const int64_t* x_strides, char* y, const int64_t* y_strides, const int64_t* shape,
                  int ndim, int64_t item_bytes, int max_threads) {
  if (ndim < 1) {
    std::memcpy(y, x, size_t(item_bytes));
    return;
  }
  const int last = ndim - 1;
  const int64_t row = shape[last];
  int64_t rows = 1;
  for (int a = 0; a < last; ++a) rows *= shape[a];
  if (rows == 0 || row == 0) return;
  const bool contiguous = x_strides[last] == item_bytes && y_strides[last] == item_bytes;
  AxisLayout by_rows{rows, row, 1};
  outer_ranges(by_rows, max_threads, [&](int64_t begin, int64_t end) {
    // The multi-index of row `begin` over the leading axes, then stepped row by row.
    int64_t index[kCopyMaxAxes] = {};
    int64_t rest = begin, xo = 0, yo = 0;
    for (int a = last - 1; a >= 0; --a) {
      index[a] = rest % shape[a];
      rest /= shape[a];
      xo += index[a] * x_strides[a];
      yo += index[a] * y_strides[a];
    }
    for (int64_t r = begin; r < end; ++r) {
      if (contiguous) std::memcpy(y + yo, x + xo, size_t(row * item_bytes));
      else copy_row(x + xo, x_strides[last], y + yo, y_strides[last], row, item_bytes);
      for (int a = last - 1; a >= 0; --a) {
        xo += x_strides[a];
        yo += y_strides[a];
        if (++index[a] < shape[a]) break;
        xo -= shape[a] * x_strides[a];
        yo -= shape[a] * y_strides[a];
        index[a] = 0;
      }
    }
  });
}

template <class Q, class Y>
void quantized_add(const Q* a, float a_scale, int32_t a_zero, const Q* b, float b_scale, int32_t b_zero, int64_t n,
                   bool relu, float y_scale, int32_t y_zero, int32_t lo, int32_t hi, Y* y, int max_threads) {
  const KernelTable& table = active_table();
  const float floor = relu ? 0.0f : -std::numeric_limits<float>::infinity();  // (sums of finite values pass)
  AxisLayout flat{n, 1, 1};
  outer_ranges(flat, max_threads, [&](int64_t begin, int64_t end) {
    const NearestRoundingScope nearest;  // (this thread's MXCSR)
    table.quantized_add({a + begin, b + begin, kKindOf<Q>, y + begin, kKindOf<Y>, end - begin, a_scale, b_scale,
                         y_scale, floor, a_zero, b_zero, y_zero, lo, hi, NearestRoundingScope::kHeld});
  });
}

template <class Q, class Y>
int64_t quantized_scale_channels(const Q* x, float x_scale, int32_t x_zero, const float* gate, int64_t images,
                                 int64_t pixels, int64_t channels, float y_scale, int32_t y_zero, int32_t lo,
                                 int32_t hi, Y* y, int max_threads) {
  const KernelTable& table = active_table();
  constexpr int64_t kChunk = 512;  // channels a pass through the float row (in L1)
  std::atomic<int64_t> nans{0};
  AxisLayout rows{images * pixels, channels, 1};  // a row per pixel
  outer_ranges(rows, max_threads, [&](int64_t begin, int64_t end) {
    const NearestRoundingScope nearest;  // (this thread's MXCSR)
    alignas(64) float row[kChunk];
    int64_t found = 0;
    for (int64_t o = begin; o < end; ++o) {
      const float* g = gate + o / pixels * channels;
      for (int64_t c0 = 0; c0 < channels; c0 += kChunk) {
        const int64_t n = std::min(kChunk, channels - c0);
        const int64_t at = o * channels + c0;
        table.dequantize({x + at, kKindOf<Q>, row, n, &x_scale, &x_zero, false});
        for (int64_t c = 0; c < n; ++c) {
          row[c] *= g[c0 + c];
          found += row[c] != row[c];
        }
        table.quantize(
            {row, false, y + at, kKindOf<Y>, n, &y_scale, &y_zero, false, lo, hi, NearestRoundingScope::kHeld});
      }
    }
    nans += found;
  });
  return nans.load();
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
  const int threads =
      threads_for_work(kFlopsPerValueMoved * double(out_rows * out_w * inner), resolve_threads(max_threads));
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
#define CPPCONV_QUANTIZED_SCALE_CHANNELS(Q, Y)                                                                       \
  template int64_t quantized_scale_channels<Q, Y>(const Q*, float, int32_t, const float*, int64_t, int64_t, int64_t, \
                                                  float, int32_t, int32_t, int32_t, Y*, int);
CPPCONV_QUANTIZED_SCALE_CHANNELS(uint8_t, uint8_t)
CPPCONV_QUANTIZED_SCALE_CHANNELS(uint8_t, int8_t)
CPPCONV_QUANTIZED_SCALE_CHANNELS(int8_t, uint8_t)
CPPCONV_QUANTIZED_SCALE_CHANNELS(int8_t, int8_t)
#undef CPPCONV_QUANTIZED_SCALE_CHANNELS
template int64_t quantize_nan_count<float>(const float*, int64_t, int);
template int64_t quantize_nan_count<double>(const double*, int64_t, int);
template void dequantize_linear<uint8_t>(const uint8_t*, const float*, const int32_t*, AxisLayout, float*, int);
template void dequantize_linear<int8_t>(const int8_t*, const float*, const int32_t*, AxisLayout, float*, int);
template void dequantize_linear<int32_t>(const int32_t*, const float*, const int32_t*, AxisLayout, float*, int);

// float32 in the ISA's SIMD blocks, or else in tiles that stay in L1.
template <class T>
void transpose_matrices(const T* from, int64_t batch, int64_t rows, int64_t cols, T* to, int threads) {
  if constexpr (std::is_same_v<T, float>) {
    if (const auto simd = active_table().transpose_f32) return simd(from, batch, rows, cols, to, threads);
  }
  constexpr int64_t kTile = 32;
  const int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
  const int64_t tiles = row_tiles * col_tiles;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t item = 0; item < batch * tiles; ++item) {
    const int64_t n = item / tiles, i0 = item % tiles / col_tiles * kTile, j0 = item % col_tiles * kTile;
    const int64_t i1 = std::min(rows, i0 + kTile), j1 = std::min(cols, j0 + kTile);
    const T* src = from + n * rows * cols;
    T* dst = to + n * rows * cols;
    for (int64_t j = j0; j < j1; ++j)
      for (int64_t i = i0; i < i1; ++i) dst[j * rows + i] = src[i * cols + j];
  }
}
template void transpose_matrices(const float*, int64_t, int64_t, int64_t, float*, int);
template void transpose_matrices(const double*, int64_t, int64_t, int64_t, double*, int);
template void transpose_matrices(const uint16_t*, int64_t, int64_t, int64_t, uint16_t*, int);

template <class T>
void transpose_block(const T* from, int64_t rows, int64_t cols, int64_t from_stride, T* to, int64_t to_stride) {
  if constexpr (std::is_same_v<T, float>) {
    if (const auto simd = active_table().transpose_f32_strided)
      return simd(from, rows, cols, from_stride, to, to_stride);
  }
  constexpr int64_t kTile = 32;
  for (int64_t i0 = 0; i0 < rows; i0 += kTile)
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t i = i0; i < std::min(rows, i0 + kTile); ++i) to[j * to_stride + i] = from[i * from_stride + j];
}
template void transpose_block(const float*, int64_t, int64_t, int64_t, float*, int64_t);
template void transpose_block(const double*, int64_t, int64_t, int64_t, double*, int64_t);
template void transpose_block(const uint16_t*, int64_t, int64_t, int64_t, uint16_t*, int64_t);

}  // namespace cppconv
