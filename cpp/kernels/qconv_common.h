// What the quantized convolution kernels (qconv_s16.cpp, qconv_vnni.cpp, qconv_amx.cpp) share:
// MXCSR's rounding fixed per thread, the padded u8 image tile, the kernel taps' tile offsets,
// the multipliers by 16-channel block, the requantizing stores of 16 channels and the per-image
// loop.  Per ISA like isa_common.h (each build its own copy in cppconv::CPPCONV_ISA_NS), AVX2
// and up.
#pragma once
#include "kernels/kernel_table.h"

#if defined(__AVX2__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
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

// Whether every centred weight fits int8: the int8-product kernels (u8 x s8) refuse others
// (uint8 weights, or int8 ones with a zero point), which the s16 kernels then run.
static inline bool weights_fit_int8(const ConvProblem& p, const int16_t* weight) {
  const int64_t count = p.out_channels * (p.in_channels / p.groups) * p.kernel_d * p.kernel_h * p.kernel_w;
  for (int64_t i = 0; i < count; ++i)
    if (weight[i] < -128 || weight[i] > 127) return false;
  return true;
}

// The int8-product kernels' zero-point compensation, packed: sum w per output channel, then the
// bias (0 without), each [group][block][16] int32 (`blocks` of 16 output channels a group).
static inline size_t sums_bytes(int64_t groups, int64_t blocks) {
  return 2 * size_t(groups * blocks * kBlock) * sizeof(int32_t);
}
static inline void pack_sums(const ConvProblem& p, int64_t blocks, const int16_t* weight, const int32_t* bias,
                             int32_t* sums) {
  const int64_t groups = p.groups, group_out = p.out_channels / groups;
  const int64_t per_out = (p.in_channels / groups) * p.kernel_d * p.kernel_h * p.kernel_w;
  int32_t* b = sums + groups * blocks * kBlock;
  for (int64_t grp = 0; grp < groups; ++grp)
    for (int64_t k = 0; k < group_out; ++k) {
      const int64_t slot = (grp * blocks + k / kBlock) * kBlock + k % kBlock, out = grp * group_out + k;
      int64_t sum = 0;
      for (int64_t i = 0; i < per_out; ++i) sum += weight[out * per_out + i];
      sums[slot] = int32_t(uint32_t(sum));
      b[slot] = bias ? bias[out] : 0;
    }
}

// The bias less x_zero_point * sum w (the u8 zero point: an s8 one plus 128), wrapping modulo
// 2^32 (the kernels' Exactness comment, qconv_vnni.cpp), for `count` channels.
static inline std::vector<int32_t> folded_bias(const QConvCall& call, const int32_t* sums, const int32_t* bias,
                                               size_t count) {
  const uint32_t zero = uint32_t(uint8_t(call.x_zero_point) ^ (call.x_signed ? 0x80 : 0));
  std::vector<int32_t> folded(count);
  for (size_t i = 0; i < count; ++i) folded[i] = int32_t(uint32_t(bias[i]) - zero * uint32_t(sums[i]));
  return folded;
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

// Pixels [0, 16) of 4 channel rows (a, b, c, d), ^ flip, interleaved: pixel i's 4 bytes to
// to + i * step (a channels-first row into the channels-last tile, 4 bytes a store).
static inline void interleave_4x16(const uint8_t* a, const uint8_t* b, const uint8_t* c, const uint8_t* d, __m128i flip,
                                   uint8_t* to, int64_t step) {
  auto row = [&](const uint8_t* r) {
    return _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r)), flip);
  };
  const __m128i va = row(a), vb = row(b), vc = row(c), vd = row(d);
  const __m128i ab_lo = _mm_unpacklo_epi8(va, vb), ab_hi = _mm_unpackhi_epi8(va, vb);
  const __m128i cd_lo = _mm_unpacklo_epi8(vc, vd), cd_hi = _mm_unpackhi_epi8(vc, vd);
  const __m128i quads[4] = {_mm_unpacklo_epi16(ab_lo, cd_lo), _mm_unpackhi_epi16(ab_lo, cd_lo),
                            _mm_unpacklo_epi16(ab_hi, cd_hi), _mm_unpackhi_epi16(ab_hi, cd_hi)};
  if (step == 4) {
    for (int j = 0; j < 4; ++j) _mm_storeu_si128(reinterpret_cast<__m128i*>(to + 16 * j), quads[j]);
    return;
  }
  alignas(16) uint32_t pixels[16];
  for (int j = 0; j < 4; ++j) _mm_store_si128(reinterpret_cast<__m128i*>(pixels + 4 * j), quads[j]);
  for (int i = 0; i < 16; ++i) std::memcpy(to + i * step, pixels + i, 4);
}

// Whether some window reads padded row r of an axis (windows from r = o * stride, taps at
// i * dilation): a stride past the kernel's extent (1x1 stride 2) skips rows.
static inline std::vector<char> rows_read(int64_t rows, int64_t out, int64_t stride, int64_t kernel, int64_t dilation) {
  std::vector<char> read(size_t(rows), 0);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < kernel; ++i) read[size_t(o * stride + i * dilation)] = 1;
  return read;
}

// Image n's padded tile as u8, [d][h][w][group][channel] of g's sizes (depth, rows, cols,
// groups, group_in of group_in_padded, pixel bytes): x, or x ^ 0x80 (x + 128) for s8; padding
// holds the zero point likewise shifted.  Padded channels hold 0 (or 0x80) up to a multiple of
// 4, against zero weights; past that (a kernel padding groups further) channels-first copies
// leave them as they are, which zero weights cancel as well.  Rows no window reads are left as
// they are.
template <class T, class Geometry>
static inline void copy_tile(const QConvCall& call, const Geometry& g, int64_t n, uint8_t* tile, int threads) {
  const ConvProblem& p = call.p;
  const std::vector<char> depth_read = rows_read(g.depth, p.out_d, p.stride_d, p.kernel_d, p.dilation_d);
  const std::vector<char> row_read = rows_read(g.rows, p.out_h, p.stride_h, p.kernel_h, p.dilation_h);
  const T* x = static_cast<const T*>(call.x);
  const int64_t C = p.in_channels, D = p.in_d, H = p.in_h, W = p.in_w;
  const uint8_t flip = std::is_signed<T>::value ? 0x80 : 0, fill = uint8_t(uint8_t(call.x_zero_point) ^ flip);
  const int64_t row_bytes = g.cols * g.pixel;
  const std::vector<uint8_t> zeros(p.layout == Layout::NCHW ? size_t(W) : 0);
  // Channels-first rows narrower than 16 pixels (14 x 14, 7 x 7 planes) went byte by byte: there
  // whole 16-channel blocks are transposed 32 pixels of the plane at a time, after the rows.
  const int64_t plane = H * W;
  const bool by_planes = p.layout == Layout::NCHW && W < 16 && plane >= 32 && g.group_in >= 16;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t row = 0; row < g.depth * g.rows; ++row) {
    if (!depth_read[size_t(row / g.rows)] || !row_read[size_t(row % g.rows)]) continue;
    const int64_t d = row / g.rows - p.pad_front, h = row % g.rows - p.pad_top;
    uint8_t* out = tile + row * row_bytes;
    if (d < 0 || d >= D || h < 0 || h >= H) {
      std::memset(out, fill, size_t(row_bytes));
      continue;
    }
    std::memset(out, fill, size_t(p.pad_left * g.pixel));
    std::memset(out + (p.pad_left + W) * g.pixel, fill, size_t(p.pad_right * g.pixel));
    uint8_t* dst = out + p.pad_left * g.pixel;
    if (p.layout == Layout::NHWC) {
      const uint8_t* src = reinterpret_cast<const uint8_t*>(x + ((n * D + d) * H + h) * W * C);
      // (Bounds in locals: stores through uint8_t* may alias anything, fields would be reloaded.)
      const int64_t pixel = g.pixel, groups = g.groups, group_in = g.group_in, padded = g.group_in_padded;
      if (pixel == C) {  // no padded channels: the row as it is
        const int64_t count = W * C;
        if (!flip) std::memcpy(dst, src, size_t(count));
        else
          for (int64_t i = 0; i < count; ++i) dst[i] = uint8_t(src[i] ^ flip);
        continue;
      }
      std::memset(dst, 0, size_t(W * pixel));  // the padded channels
      for (int64_t w = 0; w < W; ++w)
        for (int64_t grp = 0; grp < groups; ++grp)
          for (int64_t c = 0; c < group_in; ++c)
            dst[w * pixel + grp * padded + c] = uint8_t(src[w * C + grp * group_in + c] ^ flip);
      continue;
    }
    auto src = [&](int64_t ch) { return reinterpret_cast<const uint8_t*>(x + (((n * C + ch) * D + d) * H + h) * W); };
    const __m128i flips = _mm_set1_epi8(char(flip));
    const __m256i flips32 = _mm256_set1_epi8(char(flip));
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int64_t ch0 = grp * g.group_in;
      uint8_t* to = dst + grp * g.group_in_padded;
      // Whole 16-channel blocks 32 pixels at a time, the rest 4 channels x 16 pixels at a time; a
      // row's last chunk overlaps the one before (the same bytes again) rather than leave a tail.
      const int64_t blocks16 = W >= 32 || by_planes ? g.group_in / 16 * 16 : 0;
      for (int64_t c = 0; c < (by_planes ? 0 : blocks16); c += 16)
        for (int64_t w0 = 0; w0 < W; w0 += 32) {
          const int64_t w = std::min(w0, W - 32);
          qconv::transpose_16x32(src(ch0 + c) + w, D * H * W, flips32, to + w * g.pixel + c, g.pixel);
        }
      for (int64_t c = blocks16; c < g.group_in; c += 4) {
        const uint8_t* a = src(ch0 + c);  // (channels past the group's read zeros)
        const uint8_t* b = c + 1 < g.group_in ? src(ch0 + c + 1) : zeros.data();
        const uint8_t* e = c + 2 < g.group_in ? src(ch0 + c + 2) : zeros.data();
        const uint8_t* f = c + 3 < g.group_in ? src(ch0 + c + 3) : zeros.data();
        int64_t w = 0;
        if (W >= 16)
          for (; w < W; w += 16) {
            const int64_t at = std::min(w, W - 16);
            interleave_4x16(a + at, b + at, e + at, f + at, flips, to + at * g.pixel + c, g.pixel);
          }
        for (; w < W; ++w) {
          uint8_t* px = to + w * g.pixel + c;
          px[0] = uint8_t(a[w] ^ flip), px[1] = uint8_t(b[w] ^ flip), px[2] = uint8_t(e[w] ^ flip);
          px[3] = uint8_t(f[w] ^ flip);
        }
      }
    }
  }
  if (!by_planes) return;
  const int64_t blocks = g.group_in / 16, runs = (plane + 31) / 32;
  const __m256i flips32 = _mm256_set1_epi8(char(flip));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t item = 0; item < D * g.groups * blocks * runs; ++item) {
    const int64_t run = item % runs, block = item / runs % blocks, grp = item / runs / blocks % g.groups;
    const int64_t d = item / runs / blocks / g.groups;
    if (!depth_read[size_t(d + p.pad_front)]) continue;
    const int64_t i0 = std::min(run * 32, plane - 32), ch = grp * g.group_in + block * 16;
    alignas(32) uint8_t pixels[32 * 16];
    qconv::transpose_16x32(reinterpret_cast<const uint8_t*>(x + ((n * C + ch) * D + d) * plane) + i0, D * plane,
                           flips32, pixels, 16);
    uint8_t* to = tile + (d + p.pad_front) * g.rows * row_bytes + grp * g.group_in_padded + block * 16;
    for (int64_t i = 0, h = i0 / W, w = i0 % W; i < 32; ++i) {  // (no division a pixel)
      std::memcpy(to + ((h + p.pad_top) * g.cols + w + p.pad_left) * g.pixel, pixels + 16 * i, 16);
      if (++w == W) w = 0, ++h;
    }
  }
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

// 8 pixels' 16 requantized channels (r[pixel]) stored channels-first: the first `pixels` of
// channel k < channels at y + k * step, after an 8 x 16 byte transpose (16 stores, not 128).
// (Inlined: the VNNI kernel's runs know their pixels at compile time.)
static CPPCONV_ALWAYS_INLINE void store_channels_first(const __m128i (&r)[8], int64_t channels, int64_t pixels,
                                                       uint8_t* y, int64_t step) {
  __m128i t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);  // channels 0-7 of pixels 2i, 2i + 1
    t[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);  // channels 8-15
  }
  for (int i = 0; i < 2; ++i)
    for (int half = 0; half < 2; ++half) {  // pixels 4i..4i+3, channels 8 * half + (0-3, 4-7)
      u[4 * i + 2 * half] = _mm_unpacklo_epi16(t[4 * i + half], t[4 * i + 2 + half]);
      u[4 * i + 2 * half + 1] = _mm_unpackhi_epi16(t[4 * i + half], t[4 * i + 2 + half]);
    }
  const __mmask16 mask = __mmask16((1u << pixels) - 1);
  for (int j = 0; j < 4; ++j) {  // u[j]: channels 4j..4j+3 of pixels 0-3; u[4 + j]: of pixels 4-7
    const __m128i pair[2] = {_mm_unpacklo_epi32(u[j], u[4 + j]), _mm_unpackhi_epi32(u[j], u[4 + j])};
    for (int k = 0; k < 4 && 4 * j + k < channels; ++k) {
      const __m128i eight = k % 2 ? _mm_srli_si128(pair[k / 2], 8) : pair[k / 2];
      _mm_mask_storeu_epi8(y + (4 * j + k) * step, mask, eight);
    }
  }
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
// item of that image on the call's threads, with MXCSR's rounding set to nearest in each, each
// thread calling enter() before its first item and leave() after its last (per-thread state
// such as AMX's tile configuration).
template <class Copy, class Body, class Enter, class Leave>
static inline void for_each_image(const QConvCall& call, int64_t items, Copy&& copy, Body&& body, Enter&& enter,
                                  Leave&& leave) {
  const int threads = call.num_threads;
  for (int64_t n = 0; n < call.p.batch; ++n) {
    copy(n, threads);
    parallel_region(threads, [&] {
      const NearestRounding rounding;
      enter();
#pragma omp for schedule(static)
      for (int64_t item = 0; item < items; ++item) body(n, item);
      leave();
    });
  }
}
template <class Copy, class Body>
static inline void for_each_image(const QConvCall& call, int64_t items, Copy&& copy, Body&& body) {
  for_each_image(call, items, copy, body, [] {}, [] {});
}

}  // namespace qconv
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
