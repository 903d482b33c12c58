// What the quantized convolution kernels (qconv_s16.cpp, qconv_vnni.cpp) share: MXCSR's
// rounding fixed per thread, the kernel taps' tile offsets, the multipliers by 16-channel block,
// the requantizing store of 16 channels and the per-image loop.  Per ISA like isa_common.h (each
// build its own copy in cppconv::CPPCONV_ISA_NS), AVX2 and up.
#pragma once
#include "kernels/kernel_table.h"

#if defined(__AVX2__)
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels/isa_common.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace qconv {

constexpr int64_t kBlock = 16;  // output channels per block: one store's worth

// Fixes MXCSR's rounding to nearest-even for the int32 -> float32 conversion and the
// requantization product (the final rounding to an integer names its mode in the instruction),
// and restores the caller's on the way out: every thread of a region sets its own.
class NearestRounding {
 public:
  NearestRounding() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ & ~0x6000u); }
  ~NearestRounding() { _mm_setcsr(saved_); }
  NearestRounding(const NearestRounding&) = delete;
  NearestRounding& operator=(const NearestRounding&) = delete;

 private:
  unsigned saved_;
};

// Whether a dense kernel that copies the whole padded image into a tile (channels padded to
// `pixel` values a pixel) takes p: zero padding; not single-channel groups with few outputs
// (depthwise would fill a lane in 16 or 32); a tile not far larger than the input (padding its
// windows mostly skip costs more than it saves).
static inline bool dense_tile_accepts(const ConvProblem& p, int64_t pixel) {
  if (p.pad_mode != PadMode::Zeros || p.batch < 1 || p.in_channels < 1 || p.out_channels < 1) return false;
  if (p.in_channels / p.groups < 2 && p.out_channels / p.groups < kBlock / 2) return false;
  const double tile = double(p.in_d + p.pad_front + p.pad_back) * double(p.in_h + p.pad_top + p.pad_bottom) *
                      double(p.in_w + p.pad_left + p.pad_right) * double(pixel);
  const double input = double(p.in_d) * double(p.in_h) * double(p.in_w) * double(p.in_channels);
  return tile <= 4.0 * input + double(1 << 20);
}

// Pixels [0, 32) of 16 channel rows (channel i's at from + i * from_step), ^ flip, transposed:
// pixel i's 16 bytes to to + i * step.  Four rounds of unpacking rows i and i + 8 transpose a
// 16 x 16 byte block with the rows taken in bit-reversed order; each 128-bit lane does its own
// 16 pixels.
static inline void transpose_16x32(const uint8_t* from, int64_t from_step, __m256i flip, uint8_t* to, int64_t step) {
  constexpr int kBitReversed[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
  __m256i a[16], b[16];
  for (int i = 0; i < 16; ++i)
    a[i] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(from + kBitReversed[i] * from_step)),
                            flip);
  for (int i = 0; i < 8; ++i)
    b[2 * i] = _mm256_unpacklo_epi8(a[i], a[i + 8]), b[2 * i + 1] = _mm256_unpackhi_epi8(a[i], a[i + 8]);
  for (int i = 0; i < 8; ++i)
    a[2 * i] = _mm256_unpacklo_epi16(b[i], b[i + 8]), a[2 * i + 1] = _mm256_unpackhi_epi16(b[i], b[i + 8]);
  for (int i = 0; i < 8; ++i)
    b[2 * i] = _mm256_unpacklo_epi32(a[i], a[i + 8]), b[2 * i + 1] = _mm256_unpackhi_epi32(a[i], a[i + 8]);
  for (int i = 0; i < 8; ++i)
    a[2 * i] = _mm256_unpacklo_epi64(b[i], b[i + 8]), a[2 * i + 1] = _mm256_unpackhi_epi64(b[i], b[i + 8]);
  for (int i = 0; i < 16; ++i) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(to + i * step), _mm256_castsi256_si128(a[i]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(to + (i + 16) * step), _mm256_extracti128_si256(a[i], 1));
  }
}

// A rows x cols byte matrix (row r at from + r * cols) transposed into to (cols x rows): blocks
// of 16 rows x 32 columns, the last of each way overlapping the one before; scalar where the
// matrix is narrower than a block.
static inline void transpose_bytes(const uint8_t* from, int64_t rows, int64_t cols, uint8_t* to) {
  if (rows < 16 || cols < 32) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) to[c * rows + r] = from[r * cols + c];
    return;
  }
  const __m256i none = _mm256_setzero_si256();
  for (int64_t r0 = 0; r0 < rows; r0 += 16)
    for (int64_t c0 = 0; c0 < cols; c0 += 32) {
      const int64_t r = std::min(r0, rows - 16), c = std::min(c0, cols - 32);
      transpose_16x32(from + r * cols + c, cols, none, to + c * rows + r, rows);
    }
}

// Each kernel tap's offset in a padded tile of rows x cols pixels of `width` values from its
// window's first value.
static inline std::vector<int64_t> tap_offsets(const ConvProblem& p, int64_t rows, int64_t cols, int64_t width) {
  std::vector<int64_t> offset(size_t(p.kernel_d * p.kernel_h * p.kernel_w));
  for (int64_t a = 0; a < p.kernel_d; ++a)
    for (int64_t i = 0; i < p.kernel_h; ++i)
      for (int64_t j = 0; j < p.kernel_w; ++j)
        offset[size_t((a * p.kernel_h + i) * p.kernel_w + j)] =
            ((a * p.dilation_d * rows + i * p.dilation_h) * cols + j * p.dilation_w) * width;
  return offset;
}

// The call's multipliers by block, [group][block][16], zero past each group's channels (read as
// vectors) and for Int32 output.
static inline std::vector<float> block_multipliers(const QConvCall& call, int64_t groups, int64_t blocks) {
  std::vector<float> multiplier(size_t(groups * blocks * kBlock), 0.0f);
  if (call.output == QOutput::Int32) return multiplier;
  const int64_t group_out = call.p.out_channels / groups;
  for (int64_t k = 0; k < call.p.out_channels; ++k) {
    const int64_t in_group = k % group_out;
    multiplier[size_t((k / group_out * blocks + in_group / kBlock) * kBlock + in_group % kBlock)] = call.multiplier[k];
  }
  return multiplier;
}

#if defined(__AVX512F__)
// The call's requantization constants as vectors, for requantize16 below (a kernel keeps a
// local copy in registers across its stores).
struct Requantization {
  __m512 lo, hi;  // the output range less the zero point
  __m512i zero;   // y_zero_point
};
static inline Requantization requantization(const QConvCall& call) {
  return {_mm512_set1_ps(float(call.y_min - call.y_zero_point)), _mm512_set1_ps(float(call.y_max - call.y_zero_point)),
          _mm512_set1_epi32(call.y_zero_point)};
}

// 16 channels' accumulators after the bias requantized to the output's 8-bit type, in range:
// acc * multiplier in float32, clamped to the output range first (integer bounds, so clamping
// commutes with rounding), then rounded half to even; every rounding is named in its
// instruction, none read from MXCSR.
static inline __m128i requantize16(const Requantization& r, __m512i acc, const float* multiplier) {
  constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512 v = _mm512_mul_round_ps(_mm512_cvt_roundepi32_ps(acc, kNearest), _mm512_loadu_ps(multiplier), kNearest);
  const __m512i q = _mm512_cvt_roundps_epi32(_mm512_min_ps(_mm512_max_ps(v, r.lo), r.hi), kNearest);
  return _mm512_cvtepi32_epi8(_mm512_add_epi32(q, r.zero));  // (in range: truncation)
}
#endif

// One block's 16 channels after the bias (acc0: channels 0-7, acc1: 8-15) requantized to the
// output's 8-bit type, in range, as above (the AVX2 build rounds by _mm256_round_ps, also
// naming its mode).
static inline __m128i requantize16(const QConvCall& call, __m256i acc0, __m256i acc1, const float* multiplier) {
#if defined(__AVX512F__)
  return requantize16(requantization(call), _mm512_inserti64x4(_mm512_castsi256_si512(acc0), acc1, 1), multiplier);
#else
  const __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc0), _mm256_loadu_ps(multiplier));
  const __m256 v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc1), _mm256_loadu_ps(multiplier + 8));
  const __m256 lo = _mm256_set1_ps(float(call.y_min - call.y_zero_point));
  const __m256 hi = _mm256_set1_ps(float(call.y_max - call.y_zero_point));
  const __m256i zero = _mm256_set1_epi32(call.y_zero_point);
  constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m256i q0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_min_ps(_mm256_max_ps(v0, lo), hi), kNearest));
  const __m256i q1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_min_ps(_mm256_max_ps(v1, lo), hi), kNearest));
  const __m256i words =
      _mm256_permute4x64_epi64(_mm256_packs_epi32(_mm256_add_epi32(q0, zero), _mm256_add_epi32(q1, zero)), 0xD8);
  const __m128i low = _mm256_castsi256_si128(words), high = _mm256_extracti128_si256(words, 1);
  return call.y_signed ? _mm_packs_epi16(low, high) : _mm_packus_epi16(low, high);
#endif
}

// One block's 16 channels of one pixel after the bias (acc0: channels 0-7, acc1: 8-15):
// requantized (or dequantized) and stored to the channels [k0, k0 + count) of output pixel
// `pixel` (an index into y's spatial plane).
static inline void store(const QConvCall& call, __m256i acc0, __m256i acc1, const float* multiplier, int64_t n,
                         int64_t pixel, int64_t k0, int64_t count) {
  const ConvProblem& p = call.p;
  const int64_t K = p.out_channels, plane = p.out_d * p.out_h * p.out_w;
  const bool last = p.layout == Layout::NHWC;
  auto at = [&](int64_t k) { return last ? (n * plane + pixel) * K + k0 + k : (n * K + k0 + k) * plane + pixel; };
  if (call.output == QOutput::Quantized) {
    const __m128i bytes = requantize16(call, acc0, acc1, multiplier);
    uint8_t* y = static_cast<uint8_t*>(call.y);  // (int8 output: the same bytes)
    if (last && count == kBlock) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y + at(0)), bytes);
      return;
    }
    alignas(16) uint8_t values[kBlock];
    _mm_store_si128(reinterpret_cast<__m128i*>(values), bytes);
    for (int64_t k = 0; k < count; ++k) y[at(k)] = values[k];
    return;
  }
  alignas(32) int32_t ints[kBlock];
  alignas(32) float floats[kBlock];
  if (call.output == QOutput::Int32) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(ints), acc0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(ints + 8), acc1);
    int32_t* y = static_cast<int32_t*>(call.y);
    for (int64_t k = 0; k < count; ++k) y[at(k)] = ints[k];
    return;
  }
  const __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc0), _mm256_loadu_ps(multiplier));
  const __m256 v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(acc1), _mm256_loadu_ps(multiplier + 8));
  const __m256 lo = _mm256_set1_ps(call.f_min), hi = _mm256_set1_ps(call.f_max);
  _mm256_store_ps(floats, _mm256_min_ps(_mm256_max_ps(v0, lo), hi));
  _mm256_store_ps(floats + 8, _mm256_min_ps(_mm256_max_ps(v1, lo), hi));
  float* y = static_cast<float*>(call.y);
  for (int64_t k = 0; k < count; ++k) y[at(k)] = floats[k];
}

// For each image n: copy(n, threads) fills its padded tile, then body(n, item) runs every work
// item of that image on the call's threads, with MXCSR's rounding set to nearest in each.
template <class Copy, class Body>
static inline void for_each_image(const QConvCall& call, int64_t items, Copy&& copy, Body&& body) {
  const int threads = call.num_threads;
  for (int64_t n = 0; n < call.p.batch; ++n) {
    copy(n, threads);
    parallel_region(threads, [&] {
      const NearestRounding rounding;
#pragma omp for schedule(static)
      for (int64_t item = 0; item < items; ++item) body(n, item);
    });
  }
}

}  // namespace qconv
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
