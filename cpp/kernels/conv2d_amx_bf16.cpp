// conv2d_amx_bf16: the bfloat16 direct convolution on AMX tiles.
//
// TDPBF16PS multiplies a tile of 16 rows of 16 bfloat16 pairs by one of 16 pair rows of 16
// columns and adds into 16 x 16 float32 sums: rows are output pixels, columns output channels,
// the pairs input channels.  conv2d_channelvec_bf16's pieces (conv2d_bf16_common.h) with
// the channel pairs of each pixel padded to a multiple of 16 words (one 64-byte tile row):
//  - weights are packed once per plan to [group][k block][tap][pair][16][2] bfloat16, the pairs
//    padded with zeros, so a B tile is 16 pair rows of 64 bytes read contiguously;
//  - the padded input rows of a block of output rows are copied into a tile of words
//    [row][column][pair] whatever x's layout (channels-first rows transposed 16 x 16 on the
//    way), the padding pairs zero; an A tile is then 16 output pixels read straight from it at
//    a byte stride of stride_w pixels.  With unit strides the pixels run along the flattened
//    rows (pixel v = row * cols + column, the columns past out_w dropped), so a narrow plane
//    fills its tiles.
//    Channels-last bfloat16 x of 1x1 unit-stride windows, 32 channels a group, is read in place.
//    A channels-last 3-D layer's depth taps (ConvProblem::depth_taps) are filled into the tile
//    from x's depth slices themselves, each pixel's kd slices one after the other
//    (Geometry::slice_pairs), rather than gathered into a copy of kd times x first;
//  - 32 pixels by 32 output channels are summed in tmm0-3 over every (tap, 16 pairs) step, A in
//    tmm4-5, B in tmm6-7, then stored to a per-thread float32 buffer, from which the bias and
//    activation go into y (straight for channels-last y, else through store_pixels) while the
//    next step's tiles are summed.  A k block pair's weights stay in L2 while the row block's
//    pixels sweep past them; a group's large weights are split between the threads by k blocks.
// Each output's sum runs in one fixed order (taps, then pairs) whatever the thread count.
// conv2d_amx_taps_bf16, below, runs the same tiles and stores for few input channels per group
// with each pixel's window as the K dimension.
#include "kernels/conv2d_amx_bf16.h"

#if defined(CPPCONV_HAS_CONV2D_AMX_BF16)
#include <immintrin.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/conv2d_bf16_common.h"
#include "kernels/isa_common.h"
#include "kernels/simd.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

using namespace bf16_common;

// The AMX targets and AVX512-BF16 (the tile fill's and the stores' rounding) as one attribute:
// CPPCONV_TARGET_AMX's extensions plus avx512bf16.
#define CPPCONV_TARGET_AMX_BF16 __attribute__((target("amx-tile,amx-bf16,amx-int8,avx512bf16")))

constexpr int kTileRows = 16;   // pixels of an A tile, pairs of a B tile
constexpr int kTilePairs = 16;  // pairs of an A-tile row (64 bytes)
constexpr int kPixels = 2 * kTileRows;
constexpr int kChannels = 2 * kBlock;
// Fewer input channels per group (the first layer's 3, depthwise) would leave most of each
// 16-pair tile row zero, fewer output channels most of each B tile's columns, a shorter sum per
// output (a 1x1 window of 8 channels) most of the step in its stores: those run on
// conv2d_amx_taps_bf16 (few input channels) or the vdpbf16ps kernels (docs/tuning.md, "AMX
// bfloat16").
constexpr int64_t kMinGroupIn = 8, kMinGroupOut = 8, kMinSum = 16;

// Channelvec's Geometry with `pairs` the padded pairs of a pixel (its pitch in words) and a
// channels-last tile whatever the layout.
struct AmxGeometry {
  Geometry g;
  int64_t real_pairs;  // (group_in + 1) / 2, or kd * slice_pairs: the words past them are zero
  bool flat;           // unit strides: the pixels run along the flattened rows
  int64_t tile_words;  // the tile, with the slack the last A tiles read past its end
  // Channels-last bfloat16 x of a 1x1 window of unit stride without padding, 32 channels a
  // group: its pixels' pairs fill whole tile rows already, read in place (no tile) at
  // pixel_pitch words a pixel and g.row_pitch a row, as far as x_bytes from x.  (Of stride 2,
  // the tile's compact copy, read again for every 32 output channels, is the faster.)
  bool in_place;
  int64_t pixel_pitch, x_bytes;
  // An item is a row block of one image and group and a part of its k blocks: parts of
  // part_blocks blocks (a multiple of 2).
  int64_t part_blocks, parts;
};

// A group's packed weights up to this many bytes stay in L2 beside the tile, so threads take
// row blocks of their own (each streaming all the weights); larger ones are split between the
// threads by k blocks instead, each item's share read from memory once.
constexpr double kSharedWeightBytes = 1 << 20;

AmxGeometry geometry_of(const ConvProblem& p, int threads) {
  AmxGeometry a{};
  Geometry& g = a.g;
  g.group_in = p.in_channels / p.groups;
  g.group_out = p.out_channels / p.groups;
  g.slice_pairs = slice_pairs_of(p);
  a.real_pairs = pixel_pairs_of(p);
  g.pairs = ceil_div(a.real_pairs, kTilePairs) * kTilePairs;
  g.blocks = ceil_div(g.group_out, kBlock);
  g.taps = p.kernel_h * p.kernel_w;
  g.cols = input_cols_for(p, p.out_w);
  g.nhwc = true;
  g.col_pitch = g.pairs;
  g.pair_pitch = 1;
  g.row_pitch = g.pairs * g.cols;
  const double weight_bytes = double(g.taps) * double(g.pairs) * double(g.blocks) * kBlock * 4;
  const auto tile_bytes = [&](int64_t rows) { return input_rows_for(p, rows) * g.row_pitch * 4; };
  const int64_t rows =
      rows_per_block_for(p, tile_bytes, p.batch * p.groups, weight_bytes <= kSharedWeightBytes ? 4 * threads : 0);
  g.rows_per_block = rows;
  g.row_blocks = ceil_div(p.out_h, rows);
  const int64_t items = p.batch * p.groups * g.row_blocks, steps = ceil_div(g.blocks, 2);
  int64_t parts = 1;
  while (items * parts < 4 * threads && parts < steps) parts *= 2;
  a.part_blocks = 2 * ceil_div(steps, parts);
  a.parts = ceil_div(g.blocks, a.part_blocks);
  a.flat = p.stride_h == 1 && p.stride_w == 1;
  // An A tile of the last pixels reads up to 31 pixels (stride_w apart) past the last output.
  a.tile_words = input_rows_for(p, rows) * g.row_pitch + kPixels * p.stride_w * g.pairs;
  a.pixel_pitch = g.pairs;
  return a;
}

bool accepts(const ConvProblem& p) {
  if (p.batch < 1 || p.in_channels < 1 || p.out_channels < 1 || p.in_d != 1 || p.kernel_d != 1) return false;
  const int64_t group_in = p.in_channels / p.groups;
  if (group_in < kMinGroupIn || p.out_channels / p.groups < kMinGroupOut) return false;
  if (group_in * p.kernel_h * p.kernel_w < kMinSum) return false;
  // Depth slices of an odd channel count each end in a half-empty pair: where those take more
  // 16-pair steps than the gathered copy's pairs, the copy is the cheaper (C = 21, kd = 3: 48
  // pairs against 32).
  if (p.depth_taps > 0 && ceil_div(pixel_pairs_of(p), kTilePairs) > ceil_div((group_in + 1) / 2, kTilePairs))
    return false;
  return tiles_in_proportion(p, p.in_channels + kTilePairs * 2, [&] {
    const AmxGeometry a = geometry_of(p, 1);
    return double(p.batch) * double(p.groups) * double(a.g.row_blocks * a.parts) * double(a.tile_words) * 2;
  });
}

size_t packed_bytes(const ConvProblem& p) {
  const Geometry g = geometry_of(p, 1).g;
  return size_t(p.groups * g.blocks * g.taps * g.pairs) * kBlock * 2 * sizeof(uint16_t);
}

void pack(const ConvProblem& p, const void* weight, void* packed, int threads) {
  pack_blocks(p, geometry_of(p, 1).g.pairs, weight, packed, threads);
}

// Per thread: the tile, a transpose row of 16 pairs for channels-first x, the group's bias and
// two buffers of 32 x 32 sums (one stored while the next step's tiles are summed).
struct Scratch {
  int64_t tile_words, transpose_words, bias_floats;
  size_t tile_bytes() const { return (size_t(tile_words) * 4 + 63) / 64 * 64; }
  size_t transpose_bytes() const { return (size_t(transpose_words) * 4 + 63) / 64 * 64; }
  size_t bias_bytes() const { return (size_t(bias_floats) * 4 + 63) / 64 * 64; }
  size_t bytes() const { return tile_bytes() + transpose_bytes() + bias_bytes() + 2 * kPixels * kChannels * 4; }
};
Scratch scratch_of(const ConvProblem& p, const AmxGeometry& a) {
  return {a.tile_words, p.layout == Layout::NHWC ? 0 : kTilePairs * ceil_div(a.g.cols, kBlock) * kBlock,
          2 * ceil_div(a.g.blocks, 2) * kBlock};
}

size_t workspace_bytes(const ConvProblem& p, int threads) {
  return size_t(threads) * ((scratch_of(p, geometry_of(p, threads)).bytes() + 63) / 64 * 64);
}

// One tile row from channels-first x: 16 pairs at a time filled as channelvec's [pair][column]
// rows into `rows`, then transposed 16 x 16 into [column][pair].
template <class In>
CPPCONV_TARGET_AMX_BF16 void fill_row_channels_first(const ConvCall& call, const AmxGeometry& a, const In* x, int64_t n,
                                                     int64_t grp, int64_t src_row, uint32_t* rows, uint32_t* dst) {
  const Geometry& g = a.g;
  const int64_t pitch = ceil_div(g.cols, kBlock) * kBlock;
  for (int64_t p0 = 0; p0 < g.pairs; p0 += kTilePairs) {
    for (int64_t j = 0; j < kTilePairs; ++j) {
      if (p0 + j < a.real_pairs) fill_pair_row_of(call, g, x, n, grp, src_row, p0 + j, rows + j * pitch);
      else std::memset(rows + j * pitch, 0, size_t(g.cols) * 4);
    }
    for (int64_t c0 = 0; c0 < g.cols; c0 += kBlock) {
      __m512 v[kBlock];
#pragma GCC unroll 16
      for (int j = 0; j < kBlock; ++j) v[j] = _mm512_castsi512_ps(_mm512_loadu_si512(rows + j * pitch + c0));
      simd::transpose_square(v);
      const int n = int(std::min<int64_t>(kBlock, g.cols - c0));
#pragma GCC unroll 16
      for (int c = 0; c < kBlock; ++c) {
        if (c >= n) break;
        _mm512_storeu_ps(reinterpret_cast<float*>(dst + (c0 + c) * g.pairs + p0), v[c]);
      }
    }
  }
}

template <class In>
CPPCONV_TARGET_AMX_BF16 void fill_tile(const ConvCall& call, const AmxGeometry& a, const In* x, int64_t n, int64_t grp,
                                       int64_t row0, int64_t rows, uint32_t* transpose, uint32_t* tile) {
  const ConvProblem& p = call.p;
  const Geometry& g = a.g;
  for (int64_t r = 0; r < rows; ++r) {
    uint32_t* d = tile + r * g.row_pitch;
    const int64_t src_row = call.row_src[row0 + r];
    if (src_row < 0) {
      std::memset(d, 0, size_t(g.row_pitch) * 4);
    } else if (p.layout == Layout::NHWC) {
      fill_row(call, g, x, n, grp, src_row, d);
      if (g.pairs > a.real_pairs)
        for (int64_t col = 0; col < g.cols; ++col)
          std::memset(d + col * g.pairs + a.real_pairs, 0, size_t(g.pairs - a.real_pairs) * 4);
    } else {
      fill_row_channels_first(call, a, x, n, grp, src_row, transpose, d);
    }
  }
  // The slack: read by A-tile rows whose outputs are dropped; zero, not stale memory.
  std::memset(tile + rows * g.row_pitch, 0, size_t(a.tile_words - rows * g.row_pitch) * 4);
}

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// What the tile loops of one item need.
struct TileArgs {
  const uint32_t* tile;
  const int64_t* tap_offset;  // words from a pixel's first tap to each tap
  int64_t taps, chunks;       // chunks: of 16 pairs
  int64_t pixel_bytes;        // from one A-tile row (pixel) to the next
  const uint16_t* weights;    // the k block's [tap][pair][16][2]
  int64_t block_values;       // from one k block's weights to the next
  int64_t pairs;              // padded pairs: a tap's weights are pairs x 16 x 2 values
};

// The B tiles of the step two chunks ahead, asked into L1 while this step's products run: the
// weights stream from L2 once per 32 pixels (a C3D layer's 216 KiB a k block pair), and the
// loads otherwise waited on them (docs/tuning.md, "bfloat16 depth taps in the dense kernels").
constexpr int kWeightPrefetchChunks = 2;
// MA A tiles (16 pixels each, the second `a1` words after the first) by NB blocks of 16 output
// channels, summed over every tap and 16-pair chunk into tmm0-3 (store_sums stores them).
template <int MA, int NB>
CPPCONV_TARGET_AMX_BF16 void tile_kernel(const TileArgs& t, const uint32_t* a0, int64_t a1) {
  _tile_zero(0);
  if constexpr (NB > 1) _tile_zero(1);
  if constexpr (MA > 1) _tile_zero(2);
  if constexpr (MA > 1 && NB > 1) _tile_zero(3);
  const int64_t stride = t.pixel_bytes;
  for (int64_t tap = 0; tap < t.taps; ++tap) {
    const uint32_t* src = a0 + t.tap_offset[tap];
    const uint16_t* w = t.weights + tap * t.pairs * kBlock * 2;
    for (int64_t c = 0; c < t.chunks; ++c) {
      const uint16_t* wc = w + c * kTilePairs * kBlock * 2;
      // (Past the last chunk these run into the next k block's or other memory: prefetches, harmless.)
      const char* ahead = reinterpret_cast<const char*>(wc + kWeightPrefetchChunks * kTilePairs * kBlock * 2);
#pragma GCC unroll 16
      for (int line = 0; line < 16; ++line) {
        _mm_prefetch(ahead + line * 64, _MM_HINT_T0);
        if constexpr (NB > 1) _mm_prefetch(ahead + 2 * t.block_values + line * 64, _MM_HINT_T0);
      }
      _tile_loadd(4, src + c * kTilePairs, stride);
      _tile_loadd(6, wc, kBlock * 4);
      _tile_dpbf16ps(0, 4, 6);
      if constexpr (NB > 1) {
        _tile_loadd(7, wc + t.block_values, kBlock * 4);
        _tile_dpbf16ps(1, 4, 7);
      }
      if constexpr (MA > 1) {
        _tile_loadd(5, src + a1 + c * kTilePairs, stride);
        _tile_dpbf16ps(2, 5, 6);
        if constexpr (NB > 1) _tile_dpbf16ps(3, 5, 7);
      }
    }
  }
}

CPPCONV_TARGET_AMX_BF16 void tiles(const TileArgs& t, int ma, int nb, const uint32_t* a0, int64_t a1) {
  if (ma > 1) {
    if (nb > 1) tile_kernel<2, 2>(t, a0, a1);
    else tile_kernel<2, 1>(t, a0, a1);
  } else {
    if (nb > 1) tile_kernel<1, 2>(t, a0, a1);
    else tile_kernel<1, 1>(t, a0, a1);
  }
}

// tmm0-3 (what tiles() summed) to out [32 pixels][32 channels].
CPPCONV_TARGET_AMX_BF16 void store_sums(int ma, int nb, float* out) {
  constexpr int64_t kOutBytes = kChannels * 4;
  _tile_stored(0, out, kOutBytes);
  if (nb > 1) _tile_stored(1, out + kBlock, kOutBytes);
  if (ma > 1) _tile_stored(2, out + kTileRows * kChannels, kOutBytes);
  if (ma > 1 && nb > 1) _tile_stored(3, out + kTileRows * kChannels + kBlock, kOutBytes);
}

// One step's place: the pixels [v0, v0 + count) of run `run` (a flattened row block, or one
// output row) by the output channels [k0, k0 + kvalid) of the group.
struct Step {
  int64_t run, v0, count, k0, kvalid;
  int nb;
  float* sums;  // [pixel][kChannels]
};

// A run of one output row's columns: `len` pixels from pixel i of a step's sums.
struct Run {
  int64_t i, oh, ow, len;
};

// The step's pixels as runs of one output row's columns (flattened pixels past out_w dropped);
// returns how many (at most kPixels).
inline int runs_of(const ConvProblem& p, const AmxGeometry& a, int64_t oh0, const Step& s, Run* runs) {
  if (!a.flat) {
    runs[0] = {0, oh0 + s.run, s.v0, s.count};
    return 1;
  }
  int count = 0;
  for (int64_t i = 0; i < s.count;) {
    const int64_t v = s.v0 + i, r = v / a.g.cols, col = v % a.g.cols;
    if (col >= p.out_w) {
      i += std::min(s.count - i, a.g.cols - col);
      continue;
    }
    const int64_t len = std::min(s.count - i, p.out_w - col);
    runs[count++] = {i, oh0 + r, col, len};
    i += len;
  }
  return count;
}

// One vector of sums with a simple activation (kind 0: none, 1: ReLU, 2: another) as Out.
template <int Kind, class Out>
CPPCONV_TARGET_AMX_BF16 inline void put(Out* to, __m512 v, __mmask16 lanes, FusedActivation act) {
  if constexpr (Kind == 1) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // (NaN: the second operand)
  if constexpr (Kind == 2) v = simd::apply_simple_activation(v, act);
  if constexpr (std::is_same_v<Out, float>) {
    _mm512_mask_storeu_ps(to, lanes, v);
  } else {
    const __m256bh narrow = _mm512_cvtneps_pbh(v);  // round_to_bf16's rounding
    _mm256_mask_storeu_epi16(to, lanes, reinterpret_cast<const __m256i&>(narrow));
  }
}

// The bias and a simple activation (put's kinds) on `count` pixels of sums in place.
template <int Kind>
CPPCONV_TARGET_AMX_BF16 void finish(float* sums, int64_t count, int nb, const float* bias, FusedActivation act) {
  for (int b = 0; b < nb; ++b) {
    const __m512 bv = _mm512_loadu_ps(bias + b * kBlock);
    for (int64_t i = 0; i < count; ++i) {
      float* to = sums + i * kChannels + b * kBlock;
      put<Kind>(to, _mm512_add_ps(_mm512_loadu_ps(to), bv), __mmask16(0xffff), act);
    }
  }
}

// A step's sums with the bias and a simple activation (put's kinds) straight into
// channels-last y of unit channel stride (`y`: image n's channel k).
template <int Kind, class Out>
CPPCONV_TARGET_AMX_BF16 void store_direct(const ConvProblem& p, const AmxGeometry& a, int64_t oh0, const Step& s,
                                          const float* bias, FusedActivation act, Out* y, const Strides4& ys) {
  const __m512 bias0 = _mm512_loadu_ps(bias + s.k0), bias1 = _mm512_loadu_ps(bias + s.k0 + kBlock);
  const __mmask16 lanes0 = first_lanes(s.kvalid), lanes1 = s.kvalid > kBlock ? first_lanes(s.kvalid - kBlock) : 0;
  Run runs[kPixels];
  const int count = runs_of(p, a, oh0, s, runs);
  for (int r = 0; r < count; ++r) {
    Out* to = y + runs[r].oh * ys.h + runs[r].ow * ys.w;
    const float* from = s.sums + runs[r].i * kChannels;
    for (int64_t j = 0; j < runs[r].len; ++j, to += ys.w, from += kChannels) {
      put<Kind>(to, _mm512_add_ps(_mm512_loadu_ps(from), bias0), lanes0, act);
      if (s.nb > 1) put<Kind>(to + kBlock, _mm512_add_ps(_mm512_loadu_ps(from + kBlock), bias1), lanes1, act);
    }
  }
}

// A step's sums with the bias and activation into y: channels-last y of unit channel stride
// and an activation applied in registers straight from the sums, else through finish and
// store_pixels.
template <class Out>
CPPCONV_TARGET_AMX_BF16 void store_step(const ConvCall& call, const AmxGeometry& a, int64_t n, int64_t grp, int64_t oh0,
                                        const Step& s, const float* bias) {
  float* sums = s.sums;
  const ConvProblem& p = call.p;
  const Strides4& ys = call.y_stride;
  const FusedActivation act = fused_activation(p);
  const bool simple_act = simd::is_simple<float>(p.activation);
  const int64_t k = grp * a.g.group_out + s.k0;
  Out* y = static_cast<Out*>(call.y);
  if (p.layout == Layout::NHWC && ys.c == 1 && simple_act) {
    Out* yk = y + n * ys.n + k;
    if (act.kind == Activation::None) store_direct<0>(p, a, oh0, s, bias, act, yk, ys);
    else if (act.kind == Activation::Relu) store_direct<1>(p, a, oh0, s, bias, act, yk, ys);
    else store_direct<2>(p, a, oh0, s, bias, act, yk, ys);
    return;
  }
  if (act.kind == Activation::None || !simple_act) finish<0>(sums, s.count, s.nb, bias + s.k0, act);
  else if (act.kind == Activation::Relu) finish<1>(sums, s.count, s.nb, bias + s.k0, act);
  else finish<2>(sums, s.count, s.nb, bias + s.k0, act);
  if (!simple_act)
    for (int64_t i = 0; i < s.count; ++i) activate_row(sums + i * kChannels, s.nb * kBlock, act);
  Run runs[kPixels];
  const int count = runs_of(p, a, oh0, s, runs);
  for (int r = 0; r < count; ++r)
    store_pixels(call, sums + runs[r].i * kChannels, kChannels, s.kvalid, n, runs[r].oh, runs[r].ow, runs[r].len, k, y);
}

template <class In, class Out>
CPPCONV_TARGET_AMX_BF16 void run_item(const ConvCall& call, const AmxGeometry& a, int64_t item, unsigned char* scratch,
                                      const Scratch& sizes, const int64_t* tap_offset) {
  const ConvProblem& p = call.p;
  const Geometry& g = a.g;
  const int64_t part = item % a.parts, block = item / a.parts;
  const int64_t rb = block % g.row_blocks, grp = block / g.row_blocks % p.groups, n = block / g.row_blocks / p.groups;
  const int64_t oh0 = rb * g.rows_per_block, rows = std::min(g.rows_per_block, p.out_h - oh0);
  auto* tile = reinterpret_cast<uint32_t*>(scratch);
  auto* transpose = reinterpret_cast<uint32_t*>(scratch + sizes.tile_bytes());
  auto* bias = reinterpret_cast<float*>(scratch + sizes.tile_bytes() + sizes.transpose_bytes());
  auto* sums = reinterpret_cast<float*>(scratch + sizes.tile_bytes() + sizes.transpose_bytes() + sizes.bias_bytes());
  const uint32_t* in = tile;
  if (a.in_place) {
    const Strides4& xs = call.x_stride;
    in = static_cast<const uint32_t*>(call.x) + (n * xs.n + oh0 * p.stride_h * xs.h + grp * g.group_in) / 2;
  } else {
    fill_tile(call, a, static_cast<const In*>(call.x), n, grp, oh0 * p.stride_h, input_rows_for(p, rows), transpose,
              tile);
  }
  const auto* packed = static_cast<const uint16_t*>(call.packed);
  const auto* b = static_cast<const float*>(call.bias);
  fill_bias(b, grp * g.group_out, g.group_out, bias, sizes.bias_floats);
  TileArgs t{};
  t.tile = in;
  t.tap_offset = tap_offset;
  t.taps = g.taps;
  t.chunks = g.pairs / kTilePairs;
  t.pixel_bytes = p.stride_w * a.pixel_pitch * 4;
  t.block_values = g.taps * g.pairs * kBlock * 2;
  t.pairs = g.pairs;
  // Pixels as runs of A-tile rows: flat, one run of the flattened rows (row * cols + column);
  // else one run per output row.
  const int64_t runs = a.flat ? 1 : rows;
  const int64_t run_pixels = a.flat ? (rows - 1) * g.cols + p.out_w : p.out_w;
  const int64_t pixel_words = p.stride_w * a.pixel_pitch;
  // In place, the A tiles that would read past x's end (the last output's row and those after
  // it) are copied into the tile first: one pixel a row, the window 1x1.
  TileArgs copied = t;
  copied.pixel_bytes = g.pairs * 4;
  // Each step's sums are stored while the next step's tiles are summed.
  Step pending{};
  bool has_pending = false;
  int buffer = 0;
  const int64_t kb_end = std::min(g.blocks, (part + 1) * a.part_blocks);
  for (int64_t kb = part * a.part_blocks; kb < kb_end; kb += 2) {
    const int nb = int(std::min<int64_t>(2, g.blocks - kb));
    t.weights = packed + (grp * g.blocks + kb) * t.block_values;
    for (int64_t run = 0; run < runs; ++run) {
      const uint32_t* run_base = in + run * p.stride_h * g.row_pitch;
      for (int64_t v0 = 0; v0 < run_pixels; v0 += kPixels) {
        const int64_t count = std::min<int64_t>(kPixels, run_pixels - v0);
        const int ma = count > kTileRows ? 2 : 1;
        const uint32_t* first = run_base + v0 * pixel_words;
        const int64_t read_end =
            (first - static_cast<const uint32_t*>(call.x) + (ma * kTileRows - 1) * pixel_words + g.pairs) * 4;
        if (a.in_place && read_end > a.x_bytes) {
          for (int64_t i = 0; i < count; ++i)
            std::memcpy(tile + i * g.pairs, first + i * pixel_words, size_t(g.pairs) * 4);
          copied.weights = t.weights;
          tiles(copied, ma, nb, tile, kTileRows * g.pairs);
        } else {
          tiles(t, ma, nb, first, kTileRows * pixel_words);
        }
        if (has_pending) store_step<Out>(call, a, n, grp, oh0, pending, bias);
        float* out = sums + buffer * kPixels * kChannels;
        store_sums(ma, nb, out);
        const int64_t k0 = kb * kBlock;
        pending = {run, v0, count, k0, std::min<int64_t>(int64_t(nb) * kBlock, g.group_out - k0), nb, out};
        has_pending = true;
        buffer ^= 1;
      }
    }
  }
  if (has_pending) store_step<Out>(call, a, n, grp, oh0, pending, bias);
}

// run_item(item) for items [0, items) shared among the region's threads, the tiles configured
// on each (the configuration is per thread: every tile of 16 rows of 64 bytes).
template <class RunItem>
CPPCONV_TARGET_AMX_BF16 void run_items(int64_t items, RunItem&& run_item) {
  TileConfig config{};
  config.palette_id = 1;
  for (int i = 0; i < 8; ++i) {
    config.colsb[i] = 64;
    config.rows[i] = kTileRows;
  }
  _tile_loadconfig(&config);
  {
    DenormalGuard denormals;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) run_item(item);
  }
  _tile_release();
}

template <class In, class Out>
void run_typed(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const int threads = call.num_threads;
  AmxGeometry a = geometry_of(p, threads);
  const Strides4& xs = call.x_stride;
  a.in_place = std::is_same_v<In, uint16_t> && p.layout == Layout::NHWC && p.depth_taps == 0 && a.g.taps == 1 &&
               a.flat && p.pad_top == 0 && p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0 &&
               a.g.group_in % (2 * kTilePairs) == 0 && xs.c == 1 && xs.w % 2 == 0 && xs.h % 2 == 0 && xs.n % 2 == 0 &&
               xs.w > 0 && xs.h > 0 && xs.n > 0 && reinterpret_cast<uintptr_t>(call.x) % 4 == 0;
  if (a.in_place) {
    a.pixel_pitch = xs.w / 2;
    a.g.row_pitch = xs.h / 2;
    a.flat = a.g.cols == p.in_w && xs.h == p.in_w * xs.w;
    a.x_bytes = 2 * ((p.batch - 1) * xs.n + (p.in_h - 1) * xs.h + (p.in_w - 1) * xs.w + p.in_channels);
  }
  const Scratch sizes = scratch_of(p, a);
  const size_t per_thread = (sizes.bytes() + 63) / 64 * 64;
  auto* scratch = static_cast<unsigned char*>(scratch_bytes(per_thread * size_t(threads)));
  std::vector<int64_t> tap_offset(size_t(a.g.taps));
  for (int64_t i = 0; i < p.kernel_h; ++i)
    for (int64_t j = 0; j < p.kernel_w; ++j)
      tap_offset[size_t(i * p.kernel_w + j)] = i * p.dilation_h * a.g.row_pitch + j * p.dilation_w * a.pixel_pitch;
  const int64_t items = p.batch * p.groups * a.g.row_blocks * a.parts;
  parallel_region(threads, [&] {
    unsigned char* own = scratch + per_thread * size_t(region_thread(threads));
    run_items(items, [&](int64_t item) { run_item<In, Out>(call, a, item, own, sizes, tap_offset.data()); });
  });
}

void run(const ConvCall& call) {
  with_stored_types(call, [&](auto in, auto out) { run_typed<decltype(in), decltype(out)>(call); });
}

// ---------------------------------------------------------------------------------------------
// conv2d_amx_taps_bf16: few input channels per group (a first layer's 3).  Their pairs would
// leave most of each 16-pair tile row zero, so here a pixel's whole window, taps x channels, is
// the K dimension instead: im2col 32 pixels at a time into an L1 panel, never the whole matrix.
//  - the padded input rows of a row block are copied channels-last into a strip,
//    [row][column][channel] without pair padding, whatever x's layout (channels-first planes
//    interleaved 32 columns at a time in registers): a window row is then kw x C contiguous
//    values (kw runs of C when dilated), one masked load and store into the panel that reads
//    nothing outside the window;
//  - panel rows [pixel][k_pad], K ordered (kh, kw, channel) and zero from taps x C to k_pad (a
//    multiple of 32), so an inf or NaN beside a window never meets a zero weight;
//  - weights packed [group][k block][pair][16][2] in that K order: conv2d_amx_bf16's tile loop
//    with one tap of k_pad / 2 pairs, and its stores, over the row block's pixels flattened.
// Each output's sum runs over K in one fixed order whatever the thread count.
constexpr int kStepValues = 2 * kTilePairs;  // K values of one TDPBF16PS
// The channels-first interleave's C x C permutes a block grow with C, and from 8 channels
// conv2d_amx_bf16's own (channel-pair) K fills well enough that copying each pixel's window
// seldom pays (taps_accepts, docs/tuning.md).
constexpr int64_t kTapsMaxGroupIn = 16;
// A panel of 32 pixels of up to this many K values stays in L1 or L2 beside the B tiles.
constexpr int64_t kTapsMaxK = 1024;

struct TapsGeometry {
  AmxGeometry out;  // what store_step reads: flattened runs of out_w pixels (flat, g.cols = out_w)
  int64_t cols, row_values;  // strip: the padded columns the outputs read; values a row
  int64_t k_values, k_pad;   // taps x channels; padded to whole steps
  int64_t rows_per_block, row_blocks;
  size_t strip_bytes, panel_bytes, bias_bytes;
  size_t scratch_bytes() const { return strip_bytes + panel_bytes + bias_bytes + 2 * kPixels * kChannels * 4; }
};

TapsGeometry taps_geometry_of(const ConvProblem& p, int threads) {
  TapsGeometry t{};
  Geometry& g = t.out.g;
  g.group_in = p.in_channels / p.groups;
  g.group_out = p.out_channels / p.groups;
  g.blocks = ceil_div(g.group_out, kBlock);
  g.taps = p.kernel_h * p.kernel_w;
  g.cols = p.out_w;
  t.out.flat = true;
  t.cols = input_cols_for(p, p.out_w);
  t.row_values = t.cols * g.group_in;
  t.k_values = g.taps * g.group_in;
  t.k_pad = ceil_div(t.k_values, kStepValues) * kStepValues;
  g.pairs = t.k_pad / 2;
  // Row blocks whose strip stays in L2, split further so every thread gets several.
  const auto strip_bytes = [&](int64_t rows) { return input_rows_for(p, rows) * t.row_values * 2; };
  const int64_t rows = rows_per_block_for(p, strip_bytes, p.batch * p.groups, 8 * threads);
  t.rows_per_block = rows;
  t.row_blocks = ceil_div(p.out_h, rows);
  t.strip_bytes = (size_t(input_rows_for(p, rows) * t.row_values) * 2 + 63) / 64 * 64;
  t.panel_bytes = size_t(kPixels * t.k_pad) * 2;
  t.bias_bytes = size_t(2 * ceil_div(g.blocks, 2) * kBlock) * 4;
  return t;
}

bool taps_accepts(const ConvProblem& p) {
  if (p.batch < 1 || p.in_channels < 1 || p.out_channels < 1 || p.in_d != 1 || p.kernel_d != 1) return false;
  const int64_t group_in = p.in_channels / p.groups, taps = p.kernel_h * p.kernel_w;
  if (group_in > kTapsMaxGroupIn || p.out_channels / p.groups < kMinGroupOut) return false;
  if (taps > kTapsMaxK || group_in * taps < kMinSum || group_in * taps > kTapsMaxK) return false;
  // Where conv2d_amx_bf16 takes the problem too, it needs taps x ceil(C / 32) steps of the tile
  // loop to this kernel's ceil(taps x C / 32), but copying each window into the panel costs
  // about two steps' worth: this kernel takes it at a third of the steps or fewer.
  if (accepts(p) && 3 * ceil_div(group_in * taps, kStepValues) > taps * ceil_div(group_in, kStepValues)) return false;
  return tiles_in_proportion(p, p.in_channels, [&] {
    const TapsGeometry t = taps_geometry_of(p, 1);
    return double(p.batch) * double(p.groups) * double(t.row_blocks) * double(t.strip_bytes / 2);
  });
}

size_t taps_packed_bytes(const ConvProblem& p) {
  const TapsGeometry t = taps_geometry_of(p, 1);
  return size_t(p.groups * t.out.g.blocks * t.k_pad) * kBlock * sizeof(uint16_t);
}

// (K, C/groups, kh, kw) -> [group][k block][pair][16][2], value k = tap x C + channel of the
// pixel's window at pair k / 2, half k % 2; the pairs past taps x C zero.  (A few thousand
// values: packed value by value.)
void taps_pack(const ConvProblem& p, const void* weight, void* packed, int) {
  const TapsGeometry t = taps_geometry_of(p, 1);
  const Geometry& g = t.out.g;
  const auto* w = static_cast<const uint16_t*>(weight);
  auto* out = static_cast<uint16_t*>(packed);
  const int64_t block_values = t.k_pad * kBlock;
  for (int64_t grp = 0; grp < p.groups; ++grp)
    for (int64_t kb = 0; kb < g.blocks; ++kb) {
      uint16_t* ob = out + (grp * g.blocks + kb) * block_values;
      std::memset(ob, 0, size_t(block_values) * 2);
      const int64_t valid = std::min<int64_t>(kBlock, g.group_out - kb * kBlock);
      for (int64_t m = 0; m < valid; ++m) {
        const uint16_t* wm = w + (grp * g.group_out + kb * kBlock + m) * t.k_values;
        for (int64_t c = 0; c < g.group_in; ++c)
          for (int64_t tap = 0; tap < g.taps; ++tap) {
            const int64_t k = tap * g.group_in + c;
            ob[(k >> 1) * kBlock * 2 + m * 2 + (k & 1)] = wm[c * g.taps + tap];
          }
      }
    }
}

size_t taps_workspace_bytes(const ConvProblem& p, int threads) {
  return size_t(threads) * ((taps_geometry_of(p, threads).scratch_bytes() + 63) / 64 * 64);
}

inline __mmask32 first_values(int64_t n) { return n >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << n) - 1); }

// The permutes that interleave C <= 16 channel rows of 32 values each into 32 C-channel pixels:
// output vector v's lane l is value v * 32 + l, column (v * 32 + l) / C of channel
// (v * 32 + l) % C, so each of the C outputs takes lanes from every channel at one index vector.
struct Interleave {
  uint16_t index[kTapsMaxGroupIn][32];
  __mmask32 lanes[kTapsMaxGroupIn][kTapsMaxGroupIn];  // [output vector][channel]
};

void interleave_of(int64_t channels, Interleave& il) {
  std::memset(&il, 0, sizeof il);
  for (int64_t v = 0; v < channels; ++v)
    for (int l = 0; l < 32; ++l) {
      const int64_t q = v * 32 + l;
      il.index[v][l] = uint16_t(q / channels);
      il.lanes[v][q % channels] |= __mmask32(1u << l);
    }
}

// n <= 32 consecutive values as bfloat16 bits (zeros past n): load_bf16_words' conversion.
CPPCONV_TARGET_AMX_BF16 inline __m512i load_values(const uint16_t* src, int64_t n) {
  return _mm512_maskz_loadu_epi16(first_values(n), src);
}
CPPCONV_TARGET_AMX_BF16 inline __m512i load_values(const float* src, int64_t n) {
  const __m256i lo = round_to_bf16(_mm512_maskz_loadu_ps(first_lanes(n), src));
  const __m256i hi =
      n > 16 ? round_to_bf16(_mm512_maskz_loadu_ps(first_lanes(n - 16), src + 16)) : _mm256_setzero_si256();
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// One strip row from channels-last x (`row`: the group's first channel of the source row).
template <class In>
CPPCONV_TARGET_AMX_BF16 void strip_row_channels_last(const ConvCall& call, const TapsGeometry& t, const In* row,
                                                     uint16_t* d) {
  const ConvProblem& p = call.p;
  const Strides4& xs = call.x_stride;
  const int64_t c = t.out.g.group_in;
  const __mmask32 lanes = first_values(c);
  int64_t col = 0;
  if (xs.c == 1 && xs.w == c) {  // the inner columns one run of values
    const int64_t begin = std::min(std::max<int64_t>(p.pad_left, 0), t.cols);
    const int64_t end = std::max(begin, std::min(p.pad_left + p.in_w, t.cols));
    for (; col < begin; ++col) {
      const int64_t src = call.col_src[col];
      _mm512_mask_storeu_epi16(d + col * c, lanes, src < 0 ? _mm512_setzero_si512() : load_values(row + src * xs.w, c));
    }
    const In* s = row + (begin - p.pad_left) * c;
    for (int64_t i = 0, n = (end - begin) * c; i < n; i += 32)
      _mm512_mask_storeu_epi16(d + begin * c + i, first_values(n - i), load_values(s + i, n - i));
    col = end;
  }
  for (; col < t.cols; ++col) {
    const int64_t src = call.col_src[col];
    uint16_t* to = d + col * c;
    if (src < 0) {
      _mm512_mask_storeu_epi16(to, lanes, _mm512_setzero_si512());
    } else if (xs.c == 1) {
      _mm512_mask_storeu_epi16(to, lanes, load_values(row + src * xs.w, c));
    } else {
      for (int64_t k = 0; k < c; ++k) to[k] = bf16_bits(row[src * xs.w + k * xs.c]);
    }
  }
}

// One strip row from channels-first x: the inner columns 32 at a time through Interleave's
// permutes (unit column stride), the padding columns value by value through col_src.
template <class In>
CPPCONV_TARGET_AMX_BF16 void strip_row_channels_first(const ConvCall& call, const TapsGeometry& t, const Interleave& il,
                                                      const In* row, uint16_t* d) {
  const ConvProblem& p = call.p;
  const Strides4& xs = call.x_stride;
  const int64_t c = t.out.g.group_in;
  int64_t begin = std::min(std::max<int64_t>(p.pad_left, 0), t.cols);
  int64_t end = std::max(begin, std::min(p.pad_left + p.in_w, t.cols));
  if (xs.w != 1) begin = end = t.cols;  // every column value by value
  for (int64_t col = 0; col < t.cols; ++col) {
    if (col == begin) col = end;
    if (col >= t.cols) break;
    const int64_t src = call.col_src[col];
    for (int64_t k = 0; k < c; ++k) d[col * c + k] = src < 0 ? 0 : bf16_bits(row[src * xs.w + k * xs.c]);
  }
  __m512i planes[kTapsMaxGroupIn];
  for (int64_t col0 = begin; col0 < end; col0 += 32) {
    const int64_t n = std::min<int64_t>(32, end - col0);
    for (int64_t k = 0; k < c; ++k) planes[k] = load_values(row + k * xs.c + (col0 - p.pad_left), n);
    uint16_t* to = d + col0 * c;
    for (int64_t v = 0; v * 32 < n * c; ++v) {
      const __m512i index = _mm512_loadu_si512(il.index[v]);
      __m512i out = _mm512_setzero_si512();
      for (int64_t k = 0; k < c; ++k) out = _mm512_mask_permutexvar_epi16(out, il.lanes[v][k], index, planes[k]);
      _mm512_mask_storeu_epi16(to + v * 32, first_values(n * c - v * 32), out);
    }
  }
}

// One piece of a pixel's window: `lanes` values from `src` (values from the pixel's first in the
// strip) to `dst` (in its panel row).
struct Segment {
  int64_t src, dst;
  __mmask32 lanes;
};

std::vector<Segment> segments_of(const ConvProblem& p, const TapsGeometry& t) {
  std::vector<Segment> segments;
  const int64_t c = t.out.g.group_in;
  const bool dense = p.dilation_w == 1 || p.kernel_w == 1;  // a window row one run of kw x C values
  for (int64_t i = 0; i < p.kernel_h; ++i)
    for (int64_t j = 0; j < (dense ? 1 : p.kernel_w); ++j) {
      const int64_t len = dense ? p.kernel_w * c : c;
      const int64_t src = i * p.dilation_h * t.row_values + j * p.dilation_w * c, dst = (i * p.kernel_w + j) * c;
      for (int64_t o = 0; o < len; o += 32) segments.push_back({src + o, dst + o, first_values(len - o)});
    }
  return segments;
}

// The panel rows of `count` pixels from pixel v0 of the row block (flattened rows of out_w).
CPPCONV_TARGET_AMX_BF16 void pack_panel(const ConvProblem& p, const TapsGeometry& t, const Segment* segments,
                                        int64_t nsegments, const uint16_t* strip, int64_t v0, int64_t count,
                                        uint16_t* panel) {
  int64_t r = v0 / p.out_w, ow = v0 % p.out_w;
  const int64_t c = t.out.g.group_in;
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t* base = strip + r * p.stride_h * t.row_values + ow * p.stride_w * c;
    uint16_t* dst = panel + i * t.k_pad;
    for (int64_t s = 0; s < nsegments; ++s) {
      const Segment& seg = segments[s];
      _mm512_mask_storeu_epi16(dst + seg.dst, seg.lanes, _mm512_maskz_loadu_epi16(seg.lanes, base + seg.src));
    }
    if (++ow == p.out_w) ow = 0, ++r;
  }
}

template <class In, class Out>
CPPCONV_TARGET_AMX_BF16 void run_taps_item(const ConvCall& call, const TapsGeometry& t, const Interleave& il,
                                           const Segment* segments, int64_t nsegments, int64_t item,
                                           unsigned char* scratch) {
  const ConvProblem& p = call.p;
  const Geometry& g = t.out.g;
  const int64_t rb = item % t.row_blocks, grp = item / t.row_blocks % p.groups, n = item / t.row_blocks / p.groups;
  const int64_t oh0 = rb * t.rows_per_block, rows = std::min(t.rows_per_block, p.out_h - oh0);
  auto* strip = reinterpret_cast<uint16_t*>(scratch);
  auto* panel = reinterpret_cast<uint16_t*>(scratch + t.strip_bytes);
  auto* bias = reinterpret_cast<float*>(scratch + t.strip_bytes + t.panel_bytes);
  auto* sums = reinterpret_cast<float*>(scratch + t.strip_bytes + t.panel_bytes + t.bias_bytes);
  const Strides4& xs = call.x_stride;
  const In* image = static_cast<const In*>(call.x) + n * xs.n + grp * g.group_in * xs.c;
  for (int64_t r = 0, row0 = oh0 * p.stride_h, in_rows = input_rows_for(p, rows); r < in_rows; ++r) {
    uint16_t* d = strip + r * t.row_values;
    const int64_t src_row = call.row_src[row0 + r];
    if (src_row < 0) std::memset(d, 0, size_t(t.row_values) * 2);
    else if (p.layout == Layout::NHWC) strip_row_channels_last(call, t, image + src_row * xs.h, d);
    else strip_row_channels_first(call, t, il, image + src_row * xs.h, d);
  }
  std::memset(panel, 0, t.panel_bytes);  // the K lanes past taps x C
  const auto* b = static_cast<const float*>(call.bias);
  fill_bias(b, grp * g.group_out, g.group_out, bias, int64_t(t.bias_bytes / 4));
  static constexpr int64_t kNoOffset = 0;
  TileArgs ta{};
  ta.tap_offset = &kNoOffset;
  ta.taps = 1;
  ta.chunks = t.k_pad / kStepValues;
  ta.pixel_bytes = t.k_pad * 2;
  ta.block_values = t.k_pad * kBlock;
  ta.pairs = t.k_pad / 2;
  const auto* packed = static_cast<const uint16_t*>(call.packed) + grp * g.blocks * ta.block_values;
  const auto* words = reinterpret_cast<const uint32_t*>(panel);
  // Each step's sums are stored while the next step's tiles are summed.
  Step pending{};
  bool has_pending = false;
  int buffer = 0;
  for (int64_t v0 = 0, pixels = rows * p.out_w; v0 < pixels; v0 += kPixels) {
    const int64_t count = std::min<int64_t>(kPixels, pixels - v0);
    const int ma = count > kTileRows ? 2 : 1;
    pack_panel(p, t, segments, nsegments, strip, v0, count, panel);
    for (int64_t kb = 0; kb < g.blocks; kb += 2) {
      const int nb = int(std::min<int64_t>(2, g.blocks - kb));
      ta.weights = packed + kb * ta.block_values;
      tiles(ta, ma, nb, words, kTileRows * t.k_pad / 2);
      if (has_pending) store_step<Out>(call, t.out, n, grp, oh0, pending, bias);
      float* out = sums + buffer * kPixels * kChannels;
      store_sums(ma, nb, out);
      const int64_t k0 = kb * kBlock;
      pending = {0, v0, count, k0, std::min<int64_t>(int64_t(nb) * kBlock, g.group_out - k0), nb, out};
      has_pending = true;
      buffer ^= 1;
    }
  }
  if (has_pending) store_step<Out>(call, t.out, n, grp, oh0, pending, bias);
}

template <class In, class Out>
void run_taps_typed(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const int threads = call.num_threads;
  const TapsGeometry t = taps_geometry_of(p, threads);
  const size_t per_thread = (t.scratch_bytes() + 63) / 64 * 64;
  auto* scratch = static_cast<unsigned char*>(scratch_bytes(per_thread * size_t(threads)));
  Interleave il;
  interleave_of(t.out.g.group_in, il);
  const std::vector<Segment> segments = segments_of(p, t);
  const int64_t items = p.batch * p.groups * t.row_blocks;
  parallel_region(threads, [&] {
    unsigned char* own = scratch + per_thread * size_t(region_thread(threads));
    run_items(items, [&](int64_t item) {
      run_taps_item<In, Out>(call, t, il, segments.data(), int64_t(segments.size()), item, own);
    });
  });
}

void run_taps(const ConvCall& call) {
  with_stored_types(call, [&](auto in, auto out) { run_taps_typed<decltype(in), decltype(out)>(call); });
}

constexpr AlgorithmName kTapsName = algorithm_name("conv2d_amx_taps_bf16__" CPPCONV_ISA_NAME, kPixels, kChannels);

constexpr AlgorithmName kName = algorithm_name("conv2d_amx_bf16__" CPPCONV_ISA_NAME, kPixels, kChannels);
}  // namespace

const ConvAlgorithm conv2d_amx_bf16 = {kName.text,
                                       DType::BFloat16,
                                       accepts,
                                       packed_bytes,
                                       pack,
                                       workspace_bytes,
                                       run,
                                       Precision::Highest,
                                       kCpuAmxBf16 | kCpuAvx512Bf16,
                                       /*adds_residual=*/false,
                                       /*reads_depth_taps=*/true};

const ConvAlgorithm conv2d_amx_taps_bf16 = {kTapsName.text,    DType::BFloat16,    taps_accepts,
                                            taps_packed_bytes, taps_pack,          taps_workspace_bytes,
                                            run_taps,          Precision::Highest, kCpuAmxBf16 | kCpuAvx512Bf16};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
