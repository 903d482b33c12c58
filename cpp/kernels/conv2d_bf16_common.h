// The pieces shared by the bfloat16 kernels that work on channel pairs (conv2d_bf16.cpp on
// AVX512-BF16, conv2d_amx_bf16.cpp on AMX tiles): the tile geometry, the packed weights, the
// tile fill from either layout (converted to bfloat16 pairs on the way in) and the store of
// float32 pixels as y's layout and dtype.  Included by those sources only (avx512 build).
#pragma once
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "kernels/isa_common.h"
#include "kernels/kernel_table.h"
#include "kernels/simd.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace bf16_common {

inline constexpr int kBlock = 16;     // output channels per vector

// The tile of a row block should stay in L2 next to the weights streaming past it.
inline constexpr int64_t kTileBytes = 256 << 10;

// Rows per block of p's output rows: halved (rounding up) while a block's tile, tile_bytes(rows),
// exceeds kTileBytes, then, so that every thread gets blocks of its own, while `units` x row
// blocks are fewer than `min_blocks` (0: never) and a block has 4 rows or more.
template <class TileBytes>
int64_t rows_per_block_for(const ConvProblem& p, TileBytes tile_bytes, int64_t units, int64_t min_blocks) {
  int64_t rows = p.out_h;
  while (rows > 1 && tile_bytes(rows) > kTileBytes) rows = (rows + 1) / 2;
  while (units * ceil_div(p.out_h, rows) < min_blocks && rows >= 4) rows = (rows + 1) / 2;
  return rows;
}

struct Geometry {
  int64_t group_in, group_out, pairs, blocks, taps;
  int64_t cols;  // padded columns the outputs read
  bool nhwc;
  // Channels-last bfloat16 x without padding, an even number of channels per group: a pixel's
  // channel pairs are already words, read in place (no tile).
  bool in_place;
  // Tile strides in words (of x read in place: its own): one column, one channel pair, one row.
  int64_t col_pitch, pair_pitch, row_pitch;
  // A problem that reads depth taps (p.depth_taps = kd; its channel c * kd + a is channel c of
  // depth slice a): a pixel's pairs are its kd slices' channels one slice after the other,
  // slice_pairs each ((group_in / kd + 1) / 2, an odd slice's last word half zero), filled from
  // x's slices themselves (fill_row, fill_pair_row_of), the weights packed to match (pack_blocks).
  // 0 for an ordinary problem.
  int64_t slice_pairs;
  int64_t rows_per_block, row_blocks;
};

// `count` bias values from output channel `first` into `to`: zeros past the `valid` outputs of
// the block (a group's or a chunk's) and where there is no bias, so the kernels add them blindly.
inline void fill_bias(const float* bias, int64_t first, int64_t valid, float* to, int64_t count) {
  for (int64_t k = 0; k < count; ++k) to[k] = bias && k < valid ? bias[first + k] : 0.0f;
}

// Channel pairs per depth slice of a problem that reads depth taps (Geometry::slice_pairs), or
// 0 for any other.
inline int64_t slice_pairs_of(const ConvProblem& p) {
  return p.depth_taps > 0 ? (p.in_channels / p.groups / p.depth_taps + 1) / 2 : 0;
}
// The channel pairs a pixel of a group holds: kd slices' of a problem that reads depth taps.
inline int64_t pixel_pairs_of(const ConvProblem& p) {
  return p.depth_taps > 0 ? p.depth_taps * slice_pairs_of(p) : (p.in_channels / p.groups + 1) / 2;
}

inline __mmask16 first_lanes(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1); }

// (K, C/groups, kh, kw) bfloat16 -> [group][k block][tap][pair][16][2].  Per k block, 16 source
// rows of (channel, tap) values are widened to 32-bit words and transposed 16 x 16 in
// registers: each transposed vector is one (channel, tap)'s 16 output channels, stored as the
// low halves of its pair's words (whole words, so an odd channel count leaves its missing
// partner zero) or, for the odd channel, into the high halves.  (conv2d packs on every call; a
// value-by-value pack took as long as the convolution on 7x7 planes.)
// A problem that reads depth taps (Geometry::slice_pairs) has tiles whose pixels hold slice a's
// channels at pair a * slice_pairs on, so its channel c * kd + a is packed at word
// a * 2 * slice_pairs + c.
inline void pack_blocks(const ConvProblem& p, int64_t pair_pitch, const void* weight, void* packed, int threads) {
  const int64_t slice_pairs = slice_pairs_of(p);
  Geometry g{};
  g.group_in = p.in_channels / p.groups;
  g.group_out = p.out_channels / p.groups;
  g.pairs = pair_pitch;
  g.blocks = ceil_div(g.group_out, kBlock);
  g.taps = p.kernel_h * p.kernel_w;
  const auto* w = static_cast<const uint16_t*>(weight);
  auto* out = static_cast<uint16_t*>(packed);
  const int64_t cols = g.group_in * g.taps, block_values = g.taps * g.pairs * kBlock * 2;
  const int64_t units = p.groups * g.blocks;
#pragma omp parallel for schedule(static) num_threads(threads) if (units > 1 && threads > 1)
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t grp = unit / g.blocks, kb = unit % g.blocks;
    const int64_t valid = std::min<int64_t>(kBlock, g.group_out - kb * kBlock);
    const uint16_t* wb = w + (grp * g.group_out + kb * kBlock) * cols;
    uint16_t* ob = out + (grp * g.blocks + kb) * block_values;
    if (2 * g.pairs > g.group_in + 1 || slice_pairs > 0)  // the padding pairs (and the slices' odd ones)
      std::memset(ob, 0, size_t(block_values) * 2);
    int64_t c = 0, t = 0;  // (channel, tap) of column col0 + j
    for (int64_t col0 = 0; col0 < cols; col0 += kBlock) {
      const int n = int(std::min<int64_t>(kBlock, cols - col0));
      const __mmask16 cmask = first_lanes(n);
      __m512 v[kBlock];
#pragma GCC unroll 16
      for (int m = 0; m < kBlock; ++m)
        v[m] = m < valid
                   ? _mm512_castsi512_ps(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(cmask, wb + m * cols + col0)))
                   : _mm512_setzero_ps();
      simd::transpose_square(v);
#pragma GCC unroll 16
      for (int j = 0; j < kBlock; ++j) {
        if (j >= n) break;
        // (A word's low channel comes first in either order: c * kd + a before (c + 1) * kd + a.)
        const int64_t word = slice_pairs > 0 ? c % p.depth_taps * 2 * slice_pairs + c / p.depth_taps : c;
        uint16_t* dst = ob + (t * g.pairs + word / 2) * kBlock * 2;
        const __m512i words = _mm512_castps_si512(v[j]);
        if (word & 1) _mm512_mask_storeu_epi16(dst, __mmask32(0xaaaaaaaau), _mm512_slli_epi32(words, 16));
        else _mm512_storeu_si512(dst, words);
        if (++t == g.taps) t = 0, ++c;
      }
    }
  }
}

// float32 to bfloat16, nearest even, a NaN kept with its quiet bit set: bf16.h's float_to_bf16
// (vcvtneps2bf16 flushes denormals, which the kernel's float32 sums, under DenormalGuard's
// flush-to-zero, never are).
CPPCONV_TARGET_AVX512BF16 inline __m256i round_to_bf16(__m512 v) {
  const __m256bh narrow = _mm512_cvtneps_pbh(v);
  return reinterpret_cast<const __m256i&>(narrow);
}

// n <= 16 values as bfloat16 bits (zero-extended to words): bfloat16 input as it is, float32
// input rounded to nearest even (vcvtneps2bf16).
CPPCONV_TARGET_AVX512BF16 inline __m512i load_bf16_words(const uint16_t* src, __mmask16 valid) {
  return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(valid, src));
}
CPPCONV_TARGET_AVX512BF16 inline __m512i load_bf16_words(const float* src, __mmask16 valid) {
  const __m256bh narrow = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(valid, src));
  return _mm512_cvtepu16_epi32(reinterpret_cast<const __m256i&>(narrow));
}
inline uint16_t bf16_bits(uint16_t v) { return v; }
CPPCONV_TARGET_AVX512BF16 inline uint16_t bf16_bits(float v) {
  const __m256bh narrow = _mm512_cvtneps_pbh(_mm512_set1_ps(v));
  return uint16_t(_mm256_extract_epi16(reinterpret_cast<const __m256i&>(narrow), 0));
}

// n consecutive values as bfloat16 bits: bfloat16 as they are, float32 rounded (load_bf16_words).
// (A pixel's few dozen channels a call: memcpy's call and dispatch cost more than the copy.)
template <class In>
CPPCONV_TARGET_AVX512BF16 inline void copy_bf16_values(const In* src, int64_t n, uint16_t* dst) {
  if constexpr (std::is_same_v<In, uint16_t>) {
    for (int64_t c = 0; c < n; c += 32) {
      const __mmask32 valid = n - c >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << (n - c)) - 1);
      _mm512_mask_storeu_epi16(dst + c, valid, _mm512_maskz_loadu_epi16(valid, src + c));
    }
  } else {
    for (int64_t c = 0; c < n; c += 16) {
      const __mmask16 valid = first_lanes(n - c);
      _mm256_mask_storeu_epi16(dst + c, valid, _mm512_cvtepi32_epi16(load_bf16_words(src + c, valid)));
    }
  }
}

// The word of channels (lo, hi) at source column src (-1: padding).
template <class In>
CPPCONV_TARGET_AVX512BF16 inline uint32_t pair_word(const In* lo, const In* hi, bool has_hi, int64_t src,
                                                    int64_t step) {
  if (src < 0) return 0;
  const uint32_t a = bf16_bits(lo[src * step]), b = has_hi ? bf16_bits(hi[src * step]) : 0;
  return a | (b << 16);
}

// n columns of two bfloat16 channel rows (hi null: zeros) as n words (lo, hi): 32 columns of
// each row a load, two vpermt2w to the interleaved words.
CPPCONV_TARGET_AVX512BF16 inline void interleave_rows(const uint16_t* lo, const uint16_t* hi, int64_t n,
                                                      uint32_t* dst) {
  // Word i of the first output: (lo[i], hi[i]); of the second: (lo[16 + i], hi[16 + i]).
  alignas(64) static constexpr uint16_t kFirst[32] = {0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                                      8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i first = _mm512_load_si512(kFirst), second = _mm512_add_epi16(first, _mm512_set1_epi16(16));
  for (int64_t col = 0; col < n; col += 32) {
    const int64_t left = n - col;
    const __mmask32 valid = left >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << left) - 1);
    const __m512i a = _mm512_maskz_loadu_epi16(valid, lo + col);
    const __m512i b = hi ? _mm512_maskz_loadu_epi16(valid, hi + col) : _mm512_setzero_si512();
    _mm512_mask_storeu_epi32(dst + col, first_lanes(left), _mm512_permutex2var_epi16(a, first, b));
    if (left > 16)
      _mm512_mask_storeu_epi32(dst + col + 16, first_lanes(left - 16), _mm512_permutex2var_epi16(a, second, b));
  }
}

// The same of two float32 channel rows, each value rounded to bfloat16 (load_bf16_words).
CPPCONV_TARGET_AVX512BF16 inline void interleave_rows(const float* lo, const float* hi, int64_t n, uint32_t* dst) {
  for (int64_t col = 0; col < n; col += 16) {
    const __mmask16 valid = first_lanes(n - col);
    const __m512i a = load_bf16_words(lo + col, valid);
    const __m512i b = hi ? load_bf16_words(hi + col, valid) : _mm512_setzero_si512();
    _mm512_mask_storeu_epi32(dst + col, valid, _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
  }
}

// Pair cp of a channels-first tile row (`row`: the source row's first channel of the group):
// two channel rows interleaved into [column] words, the columns inside the input 32 at a time.
template <class In>
CPPCONV_TARGET_AVX512BF16 void fill_pair_row(const ConvCall& call, const Geometry& g, const In* row, int64_t cp,
                                             uint32_t* d) {
  const ConvProblem& p = call.p;
  const Strides4& xs = call.x_stride;
  const int64_t inner_begin = std::min(std::max<int64_t>(p.pad_left, 0), g.cols);
  const int64_t inner_end = std::min(p.pad_left + p.in_w, g.cols);
  const In* lo = row + 2 * cp * xs.c;
  const bool has_hi = 2 * cp + 1 < g.group_in;
  const In* hi = has_hi ? lo + xs.c : lo;
  for (int64_t col = 0; col < inner_begin; ++col) d[col] = pair_word(lo, hi, has_hi, call.col_src[col], xs.w);
  interleave_rows(lo + inner_begin - p.pad_left, has_hi ? hi + inner_begin - p.pad_left : nullptr,
                  inner_end - inner_begin, d + inner_begin);
  for (int64_t col = std::max(inner_end, inner_begin); col < g.cols; ++col)
    d[col] = pair_word(lo, hi, has_hi, call.col_src[col], xs.w);
}

// Pair cp of a channels-first tile row (padded row `src_row` >= 0 of image n, group grp) into
// d's g.cols words: of a problem that reads depth taps, pair cp % slice_pairs of depth slice
// cp / slice_pairs (Geometry::slice_pairs; zeros for a padding slice).
template <class In>
CPPCONV_TARGET_AVX512BF16 void fill_pair_row_of(const ConvCall& call, const Geometry& g, const In* x, int64_t n,
                                                int64_t grp, int64_t src_row, int64_t cp, uint32_t* d) {
  const Strides4& xs = call.x_stride;
  if (g.slice_pairs == 0) return fill_pair_row(call, g, x + n * xs.n + src_row * xs.h + grp * g.group_in * xs.c, cp, d);
  const int64_t kd = call.p.depth_taps, at = call.depth_src[n * kd + cp / g.slice_pairs];
  if (at < 0) {
    std::memset(d, 0, size_t(g.cols) * 4);
    return;
  }
  Geometry slice = g;  // (fill_pair_row reads group_in, cols)
  slice.group_in = g.group_in / kd;
  fill_pair_row(call, slice, x + at + src_row * xs.h + grp * slice.group_in * xs.c, cp % g.slice_pairs, d);
}

// Tile row `src_row` of gathered image b of a problem that reads depth taps (kd = p.depth_taps):
// each pixel's kd depth slices' channels of group grp, slice t's at pair t * slice_pairs on,
// from x's slice ConvCall::depth_src[b * kd + t] (-1: a padding slice, zeros).
template <class In>
CPPCONV_TARGET_AVX512BF16 void fill_row_depth_taps(const ConvCall& call, const Geometry& g, const In* x, int64_t b,
                                                   int64_t grp, int64_t src_row, uint32_t* dst) {
  const Strides4& xs = call.x_stride;
  const int64_t kd = call.p.depth_taps, slice_in = g.group_in / kd;
  for (int64_t t = 0; t < kd; ++t) {
    const int64_t at = call.depth_src[b * kd + t];
    const In* row = at < 0 ? nullptr : x + at + src_row * xs.h + grp * slice_in * xs.c;
    for (int64_t col = 0; col < g.cols; ++col) {
      auto* h = reinterpret_cast<uint16_t*>(dst + col * g.col_pitch + t * g.slice_pairs);
      const int64_t src = call.col_src[col];
      if (!row || src < 0) {
        std::memset(h, 0, size_t(g.slice_pairs) * 4);
        continue;
      }
      copy_bf16_values(row + src * xs.w, slice_in, h);
      if (slice_in & 1) h[slice_in] = 0;
    }
  }
}

// One tile row (padded row `src_row` of image n, group grp, -1 for a zero row) into `dst`.
template <class In>
CPPCONV_TARGET_AVX512BF16 void fill_row(const ConvCall& call, const Geometry& g, const In* x, int64_t n, int64_t grp,
                                        int64_t src_row, uint32_t* dst) {
  if (src_row < 0) {
    std::memset(dst, 0, size_t(g.row_pitch) * 4);
    return;
  }
  if (g.nhwc && g.slice_pairs > 0) return fill_row_depth_taps(call, g, x, n, grp, src_row, dst);
  if (g.nhwc) {  // [column][pair]: a pixel's channels are its pairs already, in order
    const Strides4& xs = call.x_stride;
    const In* row = x + n * xs.n + src_row * xs.h + grp * g.group_in * xs.c;
    for (int64_t col = 0; col < g.cols; ++col) {
      uint32_t* d = dst + col * g.col_pitch;
      const int64_t src = call.col_src[col];
      if (src < 0) {
        std::memset(d, 0, size_t(g.pairs) * 4);
        continue;
      }
      auto* h = reinterpret_cast<uint16_t*>(d);
      copy_bf16_values(row + src * xs.w, g.group_in, h);
      if (g.group_in & 1) h[g.group_in] = 0;
    }
    return;
  }
  for (int64_t cp = 0; cp < g.pairs; ++cp) fill_pair_row_of(call, g, x, n, grp, src_row, cp, dst + cp * g.pair_pitch);
}

// The tile of a channels-first row block (tile rows [0, rows) from padded row row0 of image n,
// group grp), pair by pair: each channel's rows are then read as one sequential stream, which
// the hardware prefetcher follows, instead of a line or two of every channel's plane per row.
template <class In>
CPPCONV_TARGET_AVX512BF16 void fill_tile_channels_first(const ConvCall& call, const Geometry& g, const In* x, int64_t n,
                                                        int64_t grp, int64_t row0, int64_t rows, uint32_t* dst) {
  for (int64_t cp = 0; cp < g.pairs; ++cp)
    for (int64_t r = 0; r < rows; ++r) {
      uint32_t* d = dst + r * g.row_pitch + cp * g.pair_pitch;
      const int64_t src_row = call.row_src[row0 + r];
      if (src_row < 0) std::memset(d, 0, size_t(g.cols) * 4);
      else fill_pair_row_of(call, g, x, n, grp, src_row, cp, d);
    }
}

// Stores 16 float32 values as Out: float32, or bfloat16 rounded to nearest even.
CPPCONV_TARGET_AVX512BF16 inline void store_block(float* y, __m512 v) { _mm512_storeu_ps(y, v); }
CPPCONV_TARGET_AVX512BF16 inline void store_block(uint16_t* y, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(y), round_to_bf16(v));
}
// The same, the lanes `valid` only.
CPPCONV_TARGET_AVX512BF16 inline void store_lanes(float* y, __m512 v, __mmask16 valid) {
  if (valid == 0xffff) _mm512_storeu_ps(y, v);
  else _mm512_mask_storeu_ps(y, valid, v);
}
CPPCONV_TARGET_AVX512BF16 inline void store_lanes(uint16_t* y, __m512 v, __mmask16 valid) {
  if (valid == 0xffff) store_block(y, v);
  else _mm256_mask_storeu_epi16(y, valid, round_to_bf16(v));
}

// Stores n float32 values as y's element type.
CPPCONV_TARGET_AVX512BF16 inline void store_values(const float* v, int64_t n, float* y) {
  std::memcpy(y, v, size_t(n) * 4);
}
CPPCONV_TARGET_AVX512BF16 inline void store_values(const float* v, int64_t n, uint16_t* y) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 valid = first_lanes(n - i);
    _mm256_mask_storeu_epi16(y + i, valid, round_to_bf16(_mm512_maskz_loadu_ps(valid, v + i)));
  }
}

// simd.h's pixels_to_planes for a bfloat16 y: each transposed vector rounded and stored as it
// leaves the registers.  (The buffer's pixel rows hold whole blocks: always readable.)
CPPCONV_TARGET_AVX512BF16 inline void pixels_to_bf16_planes(const float* src, int64_t pixel_stride, int cvalid,
                                                            int64_t count, uint16_t* dst, int64_t plane_stride) {
  for (int64_t q = 0; q < count; q += kBlock) {
    const int n = int(std::min<int64_t>(kBlock, count - q));
    __m512 v[kBlock];
#pragma GCC unroll 16
    for (int m = 0; m < kBlock; ++m) v[m] = m < n ? _mm512_loadu_ps(src + (q + m) * pixel_stride) : _mm512_setzero_ps();
    simd::transpose_square(v);
    const __mmask16 valid = first_lanes(n);
#pragma GCC unroll 16
    for (int c = 0; c < kBlock; ++c) {
      if (c >= cvalid) break;
      uint16_t* to = dst + c * plane_stride + q;
      if (n == kBlock) _mm256_storeu_si256(reinterpret_cast<__m256i*>(to), round_to_bf16(v[c]));
      else _mm256_mask_storeu_epi16(to, valid, round_to_bf16(v[c]));
    }
  }
}

// `count` float32 pixels [pixel][width] (channels k0 ... k0 + kvalid of the output) of row oh,
// from column ow, into y.
template <class Out>
CPPCONV_TARGET_AVX512BF16 void store_pixels(const ConvCall& call, const float* row, int64_t width, int64_t kvalid,
                                            int64_t n, int64_t oh, int64_t ow, int64_t count, int64_t k0, Out* y) {
  const ConvProblem& p = call.p;
  const Strides4& ys = call.y_stride;
  Out* base = y + n * ys.n + oh * ys.h + ow * ys.w + k0 * ys.c;
  if (p.layout == Layout::NHWC) {
    for (int64_t i = 0; i < count; ++i) store_values(row + i * width, kvalid, base + i * ys.w);
    return;
  }
  for (int64_t b = 0; b * kBlock < kvalid; ++b) {
    const int cvalid = int(std::min<int64_t>(kBlock, kvalid - b * kBlock));
    Out* dst = base + b * kBlock * ys.c;
    if constexpr (std::is_same_v<Out, float>) simd::pixels_to_planes(row + b * kBlock, width, cvalid, count, dst, ys.c);
    else pixels_to_bf16_planes(row + b * kBlock, width, cvalid, count, dst, ys.c);
  }
}

// f(In{}, Out{}) with the element types the call stores x and y in: float where the problem
// says so (a float32 layer's compute_dtype="bfloat16"), else bfloat16 bits.
template <class F>
void with_stored_types(const ConvCall& call, F&& f) {
  if (call.p.x_float32) {
    if (call.p.y_float32) return f(float{}, float{});
    return f(float{}, uint16_t{});
  }
  if (call.p.y_float32) return f(uint16_t{}, float{});
  f(uint16_t{}, uint16_t{});
}

}  // namespace bf16_common
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
