// conv2d_channelvec_bf16: the bfloat16 direct convolution on AVX512-BF16.
//
// vdpbf16ps multiplies 16 pairs of bfloat16 values by 16 pairs and adds both products of each
// pair to one float32 lane, twice the multiply-adds of a float32 FMA.  So the output channels
// sit in the 16 float32 lanes and the input channels are taken two at a time:
//  - weights are packed once per plan to [group][k block][tap][channel pair][16][2] bfloat16
//    (zero past the group's last output channel and for the odd channel's missing partner);
//  - the padded input rows of a block of output rows are copied into a tile of 32-bit words,
//    each the (c, c + 1) pair of one pixel, [row][column][pair] for channels-last input and
//    [row][pair][column] for channels-first, converted on the way in (from bfloat16, or from
//    float32 rounded to nearest even by vcvtneps2bf16 for compute_dtype="bfloat16"); padding of
//    every mode is resolved there through the driver's index maps.  Channels-last bfloat16 input
//    without padding and with even channel counts is read in place: its pairs are words already;
//  - a microkernel holds M pixels of the row block (row-major, so a block of a narrow plane spans
//    rows: 7x7 outputs run as 8 blocks of 6 and one of 1, not 7 of 6 and 7 of 1) by NB blocks
//    of 16 output channels in registers and, per tap and channel pair, broadcasts one word per
//    pixel against the NB weight vectors;
//  - bias and activation are applied in float32 in registers, and the result stored as float32
//    or rounded to bfloat16, nearest even, as the driver's float32_to_bf16 rounds: straight from
//    the registers for channels-last output of whole 16-channel blocks, else through a
//    per-thread float32 buffer of a segment of pixels (transposed for channels-first output).
// Each output's sum runs in one fixed order (taps, then pairs) whatever the thread count.
#include "kernels/conv2d_bf16.h"

#if defined(CPPCONV_HAS_CONV2D_BF16)
#include <immintrin.h>

#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/conv2d_bf16_common.h"
#include "kernels/isa_common.h"
#include "kernels/simd.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

using namespace simd;
using namespace bf16_common;

constexpr int kMaxBlocks = 4;  // vectors of output channels per microkernel
// Pixels per microkernel for NB vectors of channels: M x NB accumulators, NB weights and a
// broadcast within the 32 registers.
constexpr int pixels_for(int nb) { return nb >= 4 ? 6 : nb == 3 ? 8 : 12; }

Geometry geometry_of(const ConvProblem& p, int threads) {
  Geometry g{};
  g.group_in = p.in_channels / p.groups;
  g.group_out = p.out_channels / p.groups;
  g.slice_pairs = slice_pairs_of(p);
  g.pairs = pixel_pairs_of(p);
  g.blocks = ceil_div(g.group_out, kBlock);
  g.taps = p.kernel_h * p.kernel_w;
  g.cols = input_cols_for(p, p.out_w);
  g.nhwc = p.layout == Layout::NHWC;
  g.col_pitch = g.nhwc ? g.pairs : 1;
  g.pair_pitch = g.nhwc ? 1 : g.cols;
  g.row_pitch = g.pairs * g.cols;
  // Enough row blocks for every thread to own a few (each copies its own kh - 1 extra rows).
  const auto tile_bytes = [&](int64_t rows) { return input_rows_for(p, rows) * g.row_pitch * 4; };
  const int64_t rows = rows_per_block_for(p, tile_bytes, p.batch * p.groups, 4 * threads);
  g.rows_per_block = rows;
  g.row_blocks = ceil_div(p.out_h, rows);
  return g;
}

int64_t tile_words(const ConvProblem& p, const Geometry& g) {
  return input_rows_for(p, g.rows_per_block) * g.row_pitch;
}

// Single-channel groups (depthwise) would fill half of every pair; groups of few output
// channels most lanes (those run channels-first in float32); a padded tile far larger than the
// call (padding its windows mostly skip) costs more than it saves.
bool accepts(const ConvProblem& p) {
  if (p.batch < 1 || p.in_channels < 1 || p.out_channels < 1 || p.in_d != 1 || p.kernel_d != 1) return false;
  const int64_t group_in = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
  if (group_in < 2 || (p.groups > 1 && group_out < kBlock / 2)) return false;
  return tiles_in_proportion(p, p.in_channels + 1, [&] {
    const Geometry g = geometry_of(p, 1);
    return double(p.batch) * double(p.groups) * double(g.row_blocks) * double(tile_words(p, g)) * 2;
  });
}

size_t packed_bytes(const ConvProblem& p) {
  const Geometry g = geometry_of(p, 1);
  return size_t(p.groups * g.blocks * g.taps * g.pairs) * kBlock * 2 * sizeof(uint16_t);
}

void pack(const ConvProblem& p, const void* weight, void* packed, int threads) {
  pack_blocks(p, geometry_of(p, 1).pairs, weight, packed, threads);
}

// Pixels per segment: the outputs one pass of the microkernels leaves in the float32 row buffer
// before they are stored (a multiple of each microkernel's pixels).  (Cutting the channel pairs
// into slices whose weights stay in L2, partial sums kept in that buffer, ran slower on every
// layer tried, 7x7x512 at 7x7 1.3x slower: docs/tuning.md.)
constexpr int64_t kSegmentPixels = 96;
// Per thread: the tile and a float32 segment of kMaxBlocks blocks per pixel.
struct Scratch {
  int64_t tile_words, row_floats;
  size_t bytes() const { return size_t(tile_words) * 4 + size_t(row_floats) * 4 + 128; }
};
Scratch scratch_of(const ConvProblem& p, const Geometry& g) {
  return {tile_words(p, g), kSegmentPixels * kMaxBlocks * kBlock};
}

size_t workspace_bytes(const ConvProblem& p, int threads) {
  const Geometry g = geometry_of(p, threads);
  return size_t(threads) * scratch_of(p, g).bytes();
}

// What the microkernels of one segment need.
struct BlockArgs {
  const uint32_t* in;         // the tile (or x read in place)
  const int64_t* tap_offset;  // words from a pixel's first tap to each tap
  int64_t taps, pairs, pair_step;
  const uint16_t* weights;  // the first block's weights: [tap][pair][16][2]
  int64_t tap_words;        // from one tap's weights to the next, in 16-bit values
  int64_t block_words;      // from one k block's weights to the next
  const float* bias;        // NB * 16 values
  FusedActivation act;
  bool simple_act;
};

// A pixel's NB consecutive blocks; as bfloat16 two blocks a conversion (vcvtne2ps2bf16, the
// same rounding) and a 64-byte store.
template <int NB>
CPPCONV_TARGET_AVX512BF16 inline void store_blocks(float* y, const __m512* v) {
#pragma GCC unroll 4
  for (int b = 0; b < NB; ++b) _mm512_storeu_ps(y + b * kBlock, v[b]);
}
template <int NB>
CPPCONV_TARGET_AVX512BF16 inline void store_blocks(uint16_t* y, const __m512* v) {
#pragma GCC unroll 4
  for (int b = 0; b + 1 < NB; b += 2) {
    const __m512bh both = _mm512_cvtne2ps_pbh(v[b + 1], v[b]);
    _mm512_storeu_si512(y + b * kBlock, reinterpret_cast<const __m512i&>(both));
  }
  if (NB % 2) store_block(y + (NB - 1) * kBlock, v[NB - 1]);
}

// M pixels (tile offsets `offset`) by NB blocks of 16 output channels, with the bias and a
// simple activation, pixel m's blocks stored at out[m] (consecutive 16-value blocks: a row of
// the float32 segment buffer, or the pixel's channels in a channels-last y).
template <int NB, int M, class Out>
CPPCONV_TARGET_AVX512BF16 void microkernel(const BlockArgs& a, const int64_t* offset, Out* const* out) {
  __m512 acc[M][NB];
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) acc[m][b] = _mm512_setzero_ps();
  const uint32_t* src[M];
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m) src[m] = a.in + offset[m];
  for (int64_t t = 0; t < a.taps; ++t) {
    const int64_t tap = a.tap_offset[t];
    const uint16_t* w = a.weights + t * a.tap_words;
    for (int64_t cp = 0; cp < a.pairs; ++cp) {
      __m512bh wv[NB];
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) wv[b] = (__m512bh)_mm512_loadu_si512(w + b * a.block_words + cp * kBlock * 2);
      const int64_t at = tap + cp * a.pair_step;
#pragma GCC unroll 16
      for (int m = 0; m < M; ++m) {
        const __m512bh xv = (__m512bh)_mm512_set1_epi32(int(src[m][at]));
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b) acc[m][b] = _mm512_dpbf16_ps(acc[m][b], wv[b], xv);
      }
    }
  }
  // The epilogue's tests and loads once, not per vector: a 1x1 layer's short sums left the
  // per-vector reloads of the arguments and the activation's jump a seventh of its time.
  __m512 bias[NB];
#pragma GCC unroll 4
  for (int b = 0; b < NB; ++b) bias[b] = _mm512_loadu_ps(a.bias + b * kBlock);
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) acc[m][b] = _mm512_add_ps(acc[m][b], bias[b]);
  const FusedActivation act = a.act;
  if (a.simple_act && act.kind != Activation::None) {
#pragma GCC unroll 16
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) acc[m][b] = apply_simple_activation(acc[m][b], act);
  }
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m) store_blocks<NB>(out[m], acc[m]);
}

template <int NB, class Out, int... Ms>
CPPCONV_TARGET_AVX512BF16 void tail_block(const BlockArgs& a, const int64_t* offset, Out* const* out, int m,
                                          std::integer_sequence<int, Ms...>) {
  using Kernel = void (*)(const BlockArgs&, const int64_t*, Out* const*);
  static constexpr Kernel kernels[] = {microkernel<NB, Ms + 1, Out>...};
  kernels[m - 1](a, offset, out);
}

// `count` pixels of the row block (tile offsets pixel_offset, row-major over its rows and
// out_w columns: a microkernel's pixels may span rows), NB blocks, pixel i's stored at out[i].
template <int NB, class Out>
CPPCONV_TARGET_AVX512BF16 void segment_blocks(const BlockArgs& a, const int64_t* pixel_offset, int64_t count,
                                              Out* const* out) {
  constexpr int M = pixels_for(NB);
  int64_t q = 0;
  for (; q + M <= count; q += M) microkernel<NB, M, Out>(a, pixel_offset + q, out + q);
  if (q < count)
    tail_block<NB, Out>(a, pixel_offset + q, out + q, int(count - q), std::make_integer_sequence<int, M - 1>{});
}

template <class Out>
CPPCONV_TARGET_AVX512BF16 void segment(const BlockArgs& a, int nb, const int64_t* pixel_offset, int64_t count,
                                       Out* const* out) {
  switch (nb) {
    case 1: return segment_blocks<1>(a, pixel_offset, count, out);
    case 2: return segment_blocks<2>(a, pixel_offset, count, out);
    case 3: return segment_blocks<3>(a, pixel_offset, count, out);
    default: return segment_blocks<4>(a, pixel_offset, count, out);
  }
}

template <class In, class Out>
CPPCONV_TARGET_AVX512BF16 void run_item(const ConvCall& call, const Geometry& g, int64_t item, unsigned char* scratch,
                                        const Scratch& sizes, const int64_t* tap_offset) {
  const ConvProblem& p = call.p;
  const int64_t rb = item % g.row_blocks, grp = item / g.row_blocks % p.groups, n = item / g.row_blocks / p.groups;
  const int64_t oh0 = rb * g.rows_per_block, rows = std::min(g.rows_per_block, p.out_h - oh0);
  float* out_row = reinterpret_cast<float*>(scratch + size_t(sizes.tile_words) * 4 + 64);
  const In* x = static_cast<const In*>(call.x);
  const uint32_t* tile;
  if (g.in_place) {
    tile = reinterpret_cast<const uint32_t*>(x + n * call.x_stride.n + oh0 * p.stride_h * call.x_stride.h +
                                             grp * g.group_in);
  } else {
    auto* fill = reinterpret_cast<uint32_t*>(scratch);
    const int64_t tile_rows = input_rows_for(p, rows);
    if (g.nhwc) {
      for (int64_t r = 0; r < tile_rows; ++r)
        fill_row(call, g, x, n, grp, call.row_src[oh0 * p.stride_h + r], fill + r * g.row_pitch);
    } else {
      fill_tile_channels_first(call, g, x, n, grp, oh0 * p.stride_h, tile_rows, fill);
    }
    tile = fill;
  }
  const auto* packed = static_cast<const uint16_t*>(call.packed);
  const auto* bias = static_cast<const float*>(call.bias);
  const int64_t tap_words = g.pairs * kBlock * 2, block_words = g.taps * tap_words;
  const bool simple_act = is_simple<float>(p.activation);
  const bool rows_follow = call.y_stride.h == p.out_w * call.y_stride.w;
  const int64_t pixels = rows * p.out_w;
  int64_t pixel_offset[kSegmentPixels];
  float* buffer_rows[kSegmentPixels];
  Out* y_pixels[kSegmentPixels];
  Out* y = static_cast<Out*>(call.y);
  for (int64_t kb = 0; kb < g.blocks; kb += kMaxBlocks) {
    const int nb = int(std::min<int64_t>(kMaxBlocks, g.blocks - kb));
    const int64_t k0 = kb * kBlock, kvalid = std::min<int64_t>(int64_t(nb) * kBlock, g.group_out - k0);
    alignas(64) float bias_block[kMaxBlocks * kBlock];
    fill_bias(bias, grp * g.group_out + k0, kvalid, bias_block, kMaxBlocks * kBlock);
    BlockArgs a{};
    a.in = tile;
    a.tap_offset = tap_offset;
    a.taps = g.taps;
    a.pairs = g.pairs;
    a.pair_step = g.pair_pitch;
    a.weights = packed + (grp * g.blocks + kb) * block_words;
    a.tap_words = tap_words;
    a.block_words = block_words;
    a.bias = bias_block;
    a.act = fused_activation(p);
    a.simple_act = simple_act;
    const bool direct = g.nhwc && call.y_stride.c == 1 && simple_act && kvalid == int64_t(nb) * kBlock;
    for (int64_t first = 0; first < pixels; first += kSegmentPixels) {
      const int64_t count = std::min(kSegmentPixels, pixels - first);
      const int64_t width = int64_t(nb) * kBlock;
      // (Row and column stepped, not divided out per pixel: a 64-bit division per pixel and k
      // group cost as much as the epilogue of a 1x1 layer's microkernels.)
      int64_t r = first / p.out_w, ow = first % p.out_w;
      for (int64_t i = 0; i < count; ++i) {
        pixel_offset[i] = r * p.stride_h * g.row_pitch + ow * p.stride_w * g.col_pitch;
        buffer_rows[i] = out_row + i * width;
        y_pixels[i] = y + n * call.y_stride.n + (oh0 + r) * call.y_stride.h + ow * call.y_stride.w +
                      (grp * g.group_out + k0) * call.y_stride.c;
        if (++ow == p.out_w) ow = 0, ++r;
      }
      // Channels-last output of whole blocks is stored from the registers; the rest goes through
      // the float32 buffer (transposed, cut to the valid channels, the activation applied).
      if (direct) {
        segment(a, nb, pixel_offset, count, y_pixels);
        continue;
      }
      segment(a, nb, pixel_offset, count, buffer_rows);
      if (!simple_act) activate_row(out_row, count * width, fused_activation(p));
      // The segment's pixels in runs contiguous in y: row by row, or all at once where y's rows
      // follow each other (channels-first planes then transpose in whole 16-pixel blocks, not a
      // partial block with masked stores at each row's end).
      for (int64_t i = 0; i < count;) {
        const int64_t r = (first + i) / p.out_w, ow = (first + i) % p.out_w;
        const int64_t run = rows_follow ? count - i : std::min(count - i, p.out_w - ow);
        store_pixels(call, out_row + i * width, width, kvalid, n, oh0 + r, ow, run, grp * g.group_out + k0, y);
        i += run;
      }
    }
  }
}

// This thread's share of the items (row blocks of one image and group), each with its own tile.
template <class In, class Out>
CPPCONV_TARGET_AVX512BF16 void run_items(const ConvCall& call, const Geometry& g, int64_t items, unsigned char* scratch,
                                         const Scratch& sizes, const int64_t* tap_offset) {
  DenormalGuard denormals;
#pragma omp for schedule(dynamic, 1)
  for (int64_t item = 0; item < items; ++item) run_item<In, Out>(call, g, item, scratch, sizes, tap_offset);
}

template <class In, class Out>
CPPCONV_TARGET_AVX512BF16 void run_typed(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const int threads = call.num_threads;
  Geometry g = geometry_of(p, threads);
  const Strides4& xs = call.x_stride;
  g.in_place = std::is_same_v<In, uint16_t> && g.nhwc && p.depth_taps == 0 && p.pad_top == 0 && p.pad_bottom == 0 &&
               p.pad_left == 0 && p.pad_right == 0 && g.group_in % 2 == 0 && p.in_channels % 2 == 0 && xs.c == 1 &&
               xs.w % 2 == 0 && xs.h % 2 == 0 && xs.n % 2 == 0 && reinterpret_cast<uintptr_t>(call.x) % 4 == 0;
  if (g.in_place) {
    g.col_pitch = xs.w / 2;
    g.row_pitch = xs.h / 2;
  }
  const Scratch sizes = scratch_of(p, g);
  const size_t per_thread = (sizes.bytes() + 63) / 64 * 64;
  auto* scratch = static_cast<unsigned char*>(scratch_bytes(per_thread * size_t(threads)));
  std::vector<int64_t> tap_offset(size_t(g.taps));
  for (int64_t i = 0; i < p.kernel_h; ++i)
    for (int64_t j = 0; j < p.kernel_w; ++j)
      tap_offset[size_t(i * p.kernel_w + j)] = i * p.dilation_h * g.row_pitch + j * p.dilation_w * g.col_pitch;
  const int64_t items = p.batch * p.groups * g.row_blocks;
  parallel_region(threads, [&] {
    run_items<In, Out>(call, g, items, scratch + per_thread * size_t(thread_id()), sizes, tap_offset.data());
  });
}

void run(const ConvCall& call) {
  with_stored_types(call, [&](auto in, auto out) { run_typed<decltype(in), decltype(out)>(call); });
}

constexpr AlgorithmName kName =
    algorithm_name("conv2d_channelvec_bf16__" CPPCONV_ISA_NAME, pixels_for(kMaxBlocks), kMaxBlocks* kBlock);
}  // namespace

const ConvAlgorithm conv2d_channelvec_bf16 = {kName.text,
                                              DType::BFloat16,
                                              accepts,
                                              packed_bytes,
                                              pack,
                                              workspace_bytes,
                                              run,
                                              Precision::Highest,
                                              kCpuAvx512Bf16,
                                              /*adds_residual=*/false,
                                              /*reads_depth_taps=*/true};
// conv2d_pixelvec_bf16: grouped convolutions of few output channels per group (ResNeXt's 4 of
// 32 groups), which would fill few of channelvec's 16 output lanes.  Here the lanes are 16
// consecutive output columns of one row: per tap and channel pair of the group, one load of 16
// pair words from a tile row and, per output channel, one broadcast weight pair word.  So no
// lane is wasted on another group's channels.
//  - weights are packed once per plan to [group][chunk of 4 outputs][tap][pair][4] words;
//  - the tile holds the padded input rows of a row block as [row][pair][column] words for all
//    channels (the groups' pairs in order: an even channel count per group), each row `pitch`
//    words, enough for the last vector's reads past the row (its lanes past out_w are dropped);
//  - the sums go to a float32 buffer [channel][row][column] of the row block, stored from there
//    as y's layout and type (transposed for channels-last output).
// Each output's sum runs in one fixed order (taps, then pairs) whatever the thread count.
namespace {

constexpr int kOutChunk = 4;    // output channels per microkernel
constexpr int kMaxVectors = 6;  // vectors of 16 columns per microkernel: 24 sums in registers

struct GroupGeometry {
  int64_t group_in, group_out, group_pairs, pairs, chunks, taps;
  int64_t cols;         // padded columns the outputs read
  int64_t col_vectors;  // vectors of 16 outputs per row
  int64_t pitch;        // words of one (row, pair) of the tile
  int64_t row_pitch;    // words of one tile row
  int64_t rows_per_block, row_blocks;
};

GroupGeometry group_geometry_of(const ConvProblem& p, int threads) {
  GroupGeometry g{};
  g.group_in = p.in_channels / p.groups;
  g.group_out = p.out_channels / p.groups;
  g.group_pairs = g.group_in / 2;
  g.pairs = p.in_channels / 2;
  g.chunks = ceil_div(g.group_out, kOutChunk);
  g.taps = p.kernel_h * p.kernel_w;
  g.cols = input_cols_for(p, p.out_w);
  g.col_vectors = ceil_div(p.out_w, kBlock);
  g.pitch = ceil_div(g.col_vectors * kBlock + (p.kernel_w - 1) * p.dilation_w, kBlock) * kBlock;
  g.row_pitch = g.pairs * g.pitch;
  const int64_t out_row = p.out_channels * g.col_vectors * kBlock;  // buffer floats per output row
  const auto tile_bytes = [&](int64_t rows) { return (input_rows_for(p, rows) * g.row_pitch + rows * out_row) * 4; };
  const int64_t rows = rows_per_block_for(p, tile_bytes, p.batch, 4 * threads);
  g.rows_per_block = rows;
  g.row_blocks = ceil_div(p.out_h, rows);
  return g;
}

// Grouped problems channelvec declines for their few outputs per group; the columns read with
// unit stride (a vector's 16 outputs read 16 consecutive words of a tile row).
bool group_accepts(const ConvProblem& p) {
  if (p.batch < 1 || p.in_channels < 1 || p.out_channels < 1 || p.in_d != 1 || p.kernel_d != 1) return false;
  if (p.groups < 2 || p.stride_w != 1) return false;
  const int64_t group_in = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
  if (group_in < 2 || group_in % 2 != 0 || group_out >= kBlock / 2) return false;
  return tiles_in_proportion(p, p.in_channels, [&] {
    const GroupGeometry g = group_geometry_of(p, 1);
    return double(p.batch) * double(g.row_blocks) * double(input_rows_for(p, g.rows_per_block)) * double(g.row_pitch) *
           2;
  });
}

size_t group_packed_bytes(const ConvProblem& p) {
  const GroupGeometry g = group_geometry_of(p, 1);
  return size_t(p.groups * g.chunks * g.taps * g.group_pairs * kOutChunk) * sizeof(uint32_t);
}

// (K, C/groups, kh, kw) bfloat16 -> [group][chunk][tap][pair][4] words (lo: channel 2 pair,
// hi: 2 pair + 1), zero for the outputs past the group's last.
void group_pack(const ConvProblem& p, const void* weight, void* packed, int) {
  const GroupGeometry g = group_geometry_of(p, 1);
  const auto* w = static_cast<const uint16_t*>(weight);
  auto* out = static_cast<uint32_t*>(packed);
  for (int64_t grp = 0; grp < p.groups; ++grp)
    for (int64_t ch = 0; ch < g.chunks; ++ch)
      for (int64_t t = 0; t < g.taps; ++t)
        for (int64_t cp = 0; cp < g.group_pairs; ++cp)
          for (int64_t k = 0; k < kOutChunk; ++k, ++out) {
            const int64_t kk = ch * kOutChunk + k;
            if (kk >= g.group_out) {
              *out = 0;
              continue;
            }
            const uint16_t* wk = w + ((grp * g.group_out + kk) * g.group_in + 2 * cp) * g.taps + t;
            *out = uint32_t(wk[0]) | uint32_t(wk[g.taps]) << 16;
          }
}

struct GroupScratch {
  int64_t tile_words, buffer_floats;
  size_t bytes() const { return (size_t(tile_words) * 4 + 63) / 64 * 64 + size_t(buffer_floats) * 4 + 64; }
};
GroupScratch group_scratch_of(const ConvProblem& p, const GroupGeometry& g) {
  return {input_rows_for(p, g.rows_per_block) * g.row_pitch,
          p.out_channels * g.rows_per_block * g.col_vectors * kBlock};
}

size_t group_workspace_bytes(const ConvProblem& p, int threads) {
  const GroupGeometry g = group_geometry_of(p, threads);
  return size_t(threads) * ((group_scratch_of(p, g).bytes() + 63) / 64 * 64);
}

// 16 channel pairs [p0, p0 + n) of one pixel as words: bfloat16 as they are, float32 rounded
// to nearest even (vcvtne2ps2bf16, the rounding of load_bf16_words).
CPPCONV_TARGET_AVX512BF16 inline __m512i pixel_pairs(const uint16_t* s, int n) {
  return _mm512_maskz_loadu_epi32(first_lanes(n), s);
}
CPPCONV_TARGET_AVX512BF16 inline __m512i pixel_pairs(const float* s, int n) {
  const __m512 lo = _mm512_maskz_loadu_ps(first_lanes(2 * n), s);
  const __m512 hi = n > 8 ? _mm512_maskz_loadu_ps(first_lanes(2 * n - 16), s + 16) : _mm512_setzero_ps();
  const __m512bh both = _mm512_cvtne2ps_pbh(hi, lo);
  return reinterpret_cast<const __m512i&>(both);
}

// One tile row of channels-last x ([column][channel]) as [pair][column] words: 16 columns by
// 16 pairs a block, transposed in registers; padding columns through col_src, zeros past them.
template <class In>
CPPCONV_TARGET_AVX512BF16 void fill_row_transposed(const ConvCall& call, const GroupGeometry& g, const In* x, int64_t n,
                                                   int64_t src_row, uint32_t* dst) {
  if (src_row < 0) {
    std::memset(dst, 0, size_t(g.row_pitch) * 4);
    return;
  }
  const Strides4& xs = call.x_stride;
  const In* row = x + n * xs.n + src_row * xs.h;
  for (int64_t col0 = 0; col0 < g.pitch; col0 += kBlock) {
    const In* src[kBlock];
    for (int m = 0; m < kBlock; ++m) {
      const int64_t col = col0 + m;
      const int64_t s = col < g.cols ? call.col_src[col] : -1;
      src[m] = s < 0 ? nullptr : row + s * xs.w;
    }
    for (int64_t p0 = 0; p0 < g.pairs; p0 += kBlock) {
      const int np = int(std::min<int64_t>(kBlock, g.pairs - p0));
      __m512 v[kBlock];
#pragma GCC unroll 16
      for (int m = 0; m < kBlock; ++m)
        v[m] = src[m] ? _mm512_castsi512_ps(pixel_pairs(src[m] + 2 * p0, np)) : _mm512_setzero_ps();
      transpose_square(v);
#pragma GCC unroll 16
      for (int j = 0; j < kBlock; ++j)
        if (j < np) _mm512_storeu_ps(reinterpret_cast<float*>(dst + (p0 + j) * g.pitch + col0), v[j]);
    }
  }
}

// What the microkernels of one chunk of output channels need.
struct ChunkArgs {
  const int64_t* tap_offset;  // words from a vector's first tap to each tap
  int64_t taps, pairs, pitch;
  const uint32_t* weights;  // [tap][pair][4]
  float bias[kOutChunk];
  int64_t channel_stride;  // buffer floats from one output channel to the next
  FusedActivation act;
  bool simple_act;
};

// KO output channels by V vectors of 16 columns (tile words at src[v]), the sums plus bias
// (and a simple activation) stored as Out at out[v] + k * channel_stride, of the last vector
// the lanes `last` only.
template <int KO, int V, class Out>
CPPCONV_TARGET_AVX512BF16 void group_microkernel(const ChunkArgs& a, const uint32_t* const* src, Out* const* out,
                                                 __mmask16 last) {
  __m512 acc[KO][V];
#pragma GCC unroll 4
  for (int k = 0; k < KO; ++k)
#pragma GCC unroll 6
    for (int v = 0; v < V; ++v) acc[k][v] = _mm512_setzero_ps();
  const uint32_t* s[V];
#pragma GCC unroll 6
  for (int v = 0; v < V; ++v) s[v] = src[v];
  for (int64_t t = 0; t < a.taps; ++t) {
    const int64_t off = a.tap_offset[t];
    const uint32_t* wt = a.weights + t * a.pairs * kOutChunk;
    for (int64_t cp = 0; cp < a.pairs; ++cp) {
      __m512bh xv[V];
#pragma GCC unroll 6
      for (int v = 0; v < V; ++v) xv[v] = (__m512bh)_mm512_loadu_si512(s[v] + off + cp * a.pitch);
#pragma GCC unroll 4
      for (int k = 0; k < KO; ++k) {
        const __m512bh wv = (__m512bh)_mm512_set1_epi32(int(wt[cp * kOutChunk + k]));
#pragma GCC unroll 6
        for (int v = 0; v < V; ++v) acc[k][v] = _mm512_dpbf16_ps(acc[k][v], xv[v], wv);
      }
    }
  }
#pragma GCC unroll 4
  for (int k = 0; k < KO; ++k)
#pragma GCC unroll 6
    for (int v = 0; v < V; ++v) {
      __m512 r = _mm512_add_ps(acc[k][v], _mm512_set1_ps(a.bias[k]));
      if (a.simple_act) r = apply_simple_activation(r, a.act);
      store_lanes(out[v] + k * a.channel_stride, r, v == V - 1 ? last : __mmask16(0xffff));
    }
}

template <int KO, class Out>
CPPCONV_TARGET_AVX512BF16 void group_vectors(const ChunkArgs& a, int v, const uint32_t* const* src, Out* const* out,
                                             __mmask16 last) {
  using Kernel = void (*)(const ChunkArgs&, const uint32_t* const*, Out* const*, __mmask16);
  static constexpr Kernel kernels[kMaxVectors] = {group_microkernel<KO, 1, Out>, group_microkernel<KO, 2, Out>,
                                                  group_microkernel<KO, 3, Out>, group_microkernel<KO, 4, Out>,
                                                  group_microkernel<KO, 5, Out>, group_microkernel<KO, 6, Out>};
  kernels[v - 1](a, src, out, last);
}

// ko (1 to kOutChunk) output channels by v vectors.
template <class Out>
CPPCONV_TARGET_AVX512BF16 void chunk_vectors(const ChunkArgs& a, int ko, int v, const uint32_t* const* src,
                                             Out* const* out, __mmask16 last) {
  switch (ko) {
    case 1: return group_vectors<1>(a, v, src, out, last);
    case 2: return group_vectors<2>(a, v, src, out, last);
    case 3: return group_vectors<3>(a, v, src, out, last);
    default: return group_vectors<4>(a, v, src, out, last);
  }
}

// Planes [0, cvalid) of `count` float32 outputs (plane_stride apart) into pixels of y
// (pixel_stride apart, channels contiguous), rounded to bfloat16 where y is.
template <class Out>
CPPCONV_TARGET_AVX512BF16 void planes_to_y_pixels(const float* src, int64_t plane_stride, int cvalid, int64_t count,
                                                  Out* dst, int64_t pixel_stride) {
  const __mmask16 channels = first_lanes(cvalid);
  for (int64_t q = 0; q < count; q += kBlock) {
    __m512 v[kBlock];
#pragma GCC unroll 16
    for (int c = 0; c < kBlock; ++c)
      v[c] = c < cvalid ? _mm512_loadu_ps(src + c * plane_stride + q) : _mm512_setzero_ps();
    transpose_square(v);
    const int n = int(std::min<int64_t>(kBlock, count - q));
#pragma GCC unroll 16
    for (int m = 0; m < kBlock; ++m) {
      if (m >= n) break;
      Out* to = dst + (q + m) * pixel_stride;
      if constexpr (std::is_same_v<Out, float>) {
        if (cvalid == kBlock) _mm512_storeu_ps(to, v[m]);
        else _mm512_mask_storeu_ps(to, channels, v[m]);
      } else {
        if (cvalid == kBlock) _mm256_storeu_si256(reinterpret_cast<__m256i*>(to), round_to_bf16(v[m]));
        else _mm256_mask_storeu_epi16(to, channels, round_to_bf16(v[m]));
      }
    }
  }
}

template <class In, class Out>
CPPCONV_TARGET_AVX512BF16 void group_run_item(const ConvCall& call, const GroupGeometry& g, int64_t item,
                                              uint32_t* tile, float* buffer, const int64_t* tap_offset) {
  const ConvProblem& p = call.p;
  const int64_t rb = item % g.row_blocks, n = item / g.row_blocks;
  const int64_t oh0 = rb * g.rows_per_block, rows = std::min(g.rows_per_block, p.out_h - oh0);
  const In* x = static_cast<const In*>(call.x);
  const int64_t tile_rows = input_rows_for(p, rows);
  for (int64_t r = 0; r < tile_rows; ++r) {
    const int64_t src_row = call.row_src[oh0 * p.stride_h + r];
    uint32_t* d = tile + r * g.row_pitch;
    if (p.layout == Layout::NHWC) {
      fill_row_transposed(call, g, x, n, src_row, d);
      continue;
    }
    // fill_row's channels-first rows, all channels as one group, each pair's row `pitch` long.
    Geometry rg{};
    rg.group_in = p.in_channels;
    rg.pairs = g.pairs;
    rg.cols = g.cols;
    rg.pair_pitch = g.pitch;
    rg.row_pitch = g.row_pitch;
    fill_row(call, rg, x, n, 0, src_row, d);
    if (src_row >= 0)
      for (int64_t cp = 0; cp < g.pairs; ++cp) std::memset(d + cp * g.pitch + g.cols, 0, size_t(g.pitch - g.cols) * 4);
  }
  const int64_t out_pitch = g.col_vectors * kBlock, channel_stride = rows * out_pitch;
  const auto* packed = static_cast<const uint32_t*>(call.packed);
  const auto* bias = static_cast<const float*>(call.bias);
  const int64_t vectors = rows * g.col_vectors;
  const int64_t batches = ceil_div(vectors, kMaxVectors);
  const uint32_t* src[kMaxVectors];
  float* out[kMaxVectors];
  ChunkArgs a{};
  a.tap_offset = tap_offset;
  a.taps = g.taps;
  a.pairs = g.group_pairs;
  a.pitch = g.pitch;
  a.channel_stride = channel_stride;
  a.act = fused_activation(p);
  a.simple_act = is_simple<float>(p.activation);
  for (int64_t grp = 0; grp < p.groups; ++grp) {
    const uint32_t* group_tile = tile + grp * g.group_pairs * g.pitch;
    for (int64_t ch = 0; ch < g.chunks; ++ch) {
      const int64_t k0 = grp * g.group_out + ch * kOutChunk;
      const int ko = int(std::min<int64_t>(kOutChunk, g.group_out - ch * kOutChunk));
      fill_bias(bias, k0, ko, a.bias, kOutChunk);
      a.weights = packed + (grp * g.chunks + ch) * g.taps * g.group_pairs * kOutChunk;
      // The vectors in batches of nearly equal size (8 as 4 + 4, not 6 + 2).
      for (int64_t b = 0, first = 0; b < batches; ++b) {
        const int64_t last = vectors * (b + 1) / batches;
        const int count = int(last - first);
        for (int i = 0; i < count; ++i) {
          const int64_t r = (first + i) / g.col_vectors, j = (first + i) % g.col_vectors;
          src[i] = group_tile + r * p.stride_h * g.row_pitch + j * kBlock;
          out[i] = buffer + k0 * channel_stride + r * out_pitch + j * kBlock;
        }
        chunk_vectors(a, ko, count, src, out, __mmask16(0xffff));
        first = last;
      }
    }
  }
  if (!a.simple_act) activate_row(buffer, p.out_channels * channel_stride, a.act);
  Out* y = static_cast<Out*>(call.y);
  const Strides4& ys = call.y_stride;
  for (int64_t r = 0; r < rows; ++r) {
    Out* y_row = y + n * ys.n + (oh0 + r) * ys.h;
    const float* b_row = buffer + r * out_pitch;
    if (p.layout == Layout::NHWC) {
      for (int64_t k0 = 0; k0 < p.out_channels; k0 += kBlock)
        planes_to_y_pixels(b_row + k0 * channel_stride, channel_stride,
                           int(std::min<int64_t>(kBlock, p.out_channels - k0)), p.out_w, y_row + k0 * ys.c, ys.w);
    } else {
      for (int64_t k = 0; k < p.out_channels; ++k) store_values(b_row + k * channel_stride, p.out_w, y_row + k * ys.c);
    }
  }
}

template <class In, class Out>
CPPCONV_TARGET_AVX512BF16 void group_run_typed(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const int threads = call.num_threads;
  const GroupGeometry g = group_geometry_of(p, threads);
  const GroupScratch sizes = group_scratch_of(p, g);
  const size_t per_thread = (sizes.bytes() + 63) / 64 * 64;
  auto* scratch = static_cast<unsigned char*>(scratch_bytes(per_thread * size_t(threads)));
  std::vector<int64_t> tap_offset(size_t(g.taps));
  for (int64_t i = 0; i < p.kernel_h; ++i)
    for (int64_t j = 0; j < p.kernel_w; ++j)
      tap_offset[size_t(i * p.kernel_w + j)] = i * p.dilation_h * g.row_pitch + j * p.dilation_w;
  const int64_t items = p.batch * g.row_blocks;
  parallel_region(threads, [&] {
    unsigned char* mine = scratch + per_thread * size_t(thread_id());
    auto* tile = reinterpret_cast<uint32_t*>(mine);
    auto* buffer = reinterpret_cast<float*>(mine + (size_t(sizes.tile_words) * 4 + 63) / 64 * 64);
    DenormalGuard denormals;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item)
      group_run_item<In, Out>(call, g, item, tile, buffer, tap_offset.data());
  });
}

void group_run(const ConvCall& call) {
  with_stored_types(call, [&](auto in, auto out) { group_run_typed<decltype(in), decltype(out)>(call); });
}

// conv2d_pointwise_pixelvec_bf16: pixelvec's microkernels on dense channels-first 1x1 layers
// of unit stride without padding (ResNet's bottleneck 1x1s in NCHW), where channelvec's
// channels-first tile and transposed stores left it far behind its channels-last speed.  A
// plane's pixels run as one line where x's and y's rows follow each other (else each row is a
// line); an item is a block of a line's pixels, its channel pairs interleaved into
// [pair][pixel] words, and the sums of 4 output channels by up to 6 vectors of 16 pixels go
// from the registers straight into y's planes.  Weights are group_pack's, of one group.
struct PointwiseGeometry {
  int64_t pairs;
  int64_t block_max;  // pixels per item at most (a multiple of 16): the tile's words per pair
};

PointwiseGeometry pointwise_geometry_of(const ConvProblem& p) {
  PointwiseGeometry g{};
  g.pairs = p.in_channels / 2;
  g.block_max = std::max<int64_t>(kBlock, kTileBytes / (g.pairs * 4) / kBlock * kBlock);
  return g;
}

// A plane's pixels fewer than this stay channelvec's: an image's plane is then one or two work
// items, each streaming all the weights past a few vectors (docs/tuning.md, "bfloat16
// channels-first 1x1 layers").
constexpr int64_t kPointwiseMinPlane = 192;

// An even channel count (group_pack's pairs) and an activation applied in registers.  Planes
// whose 16-pixel vectors would leave over an eighth of their lanes idle (7x7) stay channelvec's.
bool pointwise_accepts(const ConvProblem& p) {
  if (p.batch < 1 || p.in_channels < 2 || p.out_channels < 1 || p.in_d != 1 || p.kernel_d != 1) return false;
  if (p.layout != Layout::NCHW || p.groups != 1 || p.in_channels % 2 != 0 || !is_simple<float>(p.activation))
    return false;
  if (p.kernel_h != 1 || p.kernel_w != 1 || p.stride_h != 1 || p.stride_w != 1 || p.pad_top != 0 || p.pad_bottom != 0 ||
      p.pad_left != 0 || p.pad_right != 0)
    return false;
  const int64_t plane = p.out_h * p.out_w, lanes = ceil_div(plane, kBlock) * kBlock;
  return plane >= kPointwiseMinPlane && lanes * 8 <= plane * 9;
}

size_t pointwise_workspace_bytes(const ConvProblem& p, int threads) {
  const PointwiseGeometry g = pointwise_geometry_of(p);
  return size_t(threads) * ((size_t(g.pairs * g.block_max) * 4 + 63) / 64 * 64);
}

// The items: blocks of nearly equal size of each image's lines.
struct PointwiseItems {
  int64_t lines, line_pixels, block, blocks;
};

template <class In, class Out>
CPPCONV_TARGET_AVX512BF16 void pointwise_run_item(const ConvCall& call, const PointwiseGeometry& g,
                                                  const PointwiseItems& it, int64_t item, uint32_t* tile) {
  const ConvProblem& p = call.p;
  const Strides4 &xs = call.x_stride, &ys = call.y_stride;
  const int64_t b = item % it.blocks, line = item / it.blocks % it.lines, n = item / it.blocks / it.lines;
  const int64_t first = b * it.block, count = std::min(it.block, it.line_pixels - first);
  const In* x = static_cast<const In*>(call.x) + n * xs.n + line * xs.h + first;
  const int64_t vectors = ceil_div(count, kBlock);
  for (int64_t cp = 0; cp < g.pairs; ++cp) {
    uint32_t* d = tile + cp * it.block;
    interleave_rows(x + 2 * cp * xs.c, x + (2 * cp + 1) * xs.c, count, d);
    std::memset(d + count, 0, size_t(vectors * kBlock - count) * 4);
  }
  Out* y = static_cast<Out*>(call.y) + n * ys.n + line * ys.h + first;
  const auto* packed = static_cast<const uint32_t*>(call.packed);
  const auto* bias = static_cast<const float*>(call.bias);
  static constexpr int64_t kFirstTap = 0;
  ChunkArgs a{};
  a.tap_offset = &kFirstTap;
  a.taps = 1;
  a.pairs = g.pairs;
  a.pitch = it.block;
  a.channel_stride = ys.c;
  a.act = fused_activation(p);
  a.simple_act = true;
  const __mmask16 last = first_lanes(count - (vectors - 1) * kBlock);
  const int64_t batches = ceil_div(vectors, kMaxVectors);
  const uint32_t* src[kMaxVectors];
  Out* out[kMaxVectors];
  // The vectors in batches of nearly equal size, as group_run_item's; every chunk of output
  // channels passes over one batch's words before the next batch.
  for (int64_t bt = 0, v0 = 0; bt < batches; ++bt) {
    const int64_t v1 = vectors * (bt + 1) / batches;
    const __mmask16 lanes = v1 == vectors ? last : __mmask16(0xffff);
    for (int64_t k0 = 0; k0 < p.out_channels; k0 += kOutChunk) {
      const int ko = int(std::min<int64_t>(kOutChunk, p.out_channels - k0));
      fill_bias(bias, k0, ko, a.bias, kOutChunk);
      a.weights = packed + k0 * g.pairs;
      for (int64_t v = v0; v < v1; ++v) {
        src[v - v0] = tile + v * kBlock;
        out[v - v0] = y + k0 * ys.c + v * kBlock;
      }
      chunk_vectors(a, ko, int(v1 - v0), src, out, lanes);
    }
    v0 = v1;
  }
}

template <class In, class Out>
CPPCONV_TARGET_AVX512BF16 void pointwise_run_typed(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const int threads = call.num_threads;
  const PointwiseGeometry g = pointwise_geometry_of(p);
  // (Column strides are 1 in channels-first x and y, as fill_row and store_pixels read them.)
  const bool flat = call.x_stride.h == p.in_w && call.y_stride.h == p.out_w;
  PointwiseItems it{};
  it.lines = flat ? 1 : p.out_h;
  it.line_pixels = flat ? p.out_h * p.out_w : p.out_w;
  // Enough blocks for every thread to own a few, of a microkernel's 6 vectors at least.
  int64_t blocks = ceil_div(it.line_pixels, g.block_max);
  while (p.batch * it.lines * blocks < 4 * threads && (blocks + 1) * kMaxVectors * kBlock <= it.line_pixels) ++blocks;
  it.block = ceil_div(ceil_div(it.line_pixels, blocks), kBlock) * kBlock;
  it.blocks = ceil_div(it.line_pixels, it.block);
  const size_t per_thread = (size_t(g.pairs * g.block_max) * 4 + 63) / 64 * 64;
  auto* scratch = static_cast<unsigned char*>(scratch_bytes(per_thread * size_t(threads)));
  const int64_t items = p.batch * it.lines * it.blocks;
  parallel_region(threads, [&] {
    auto* tile = reinterpret_cast<uint32_t*>(scratch + per_thread * size_t(thread_id()));
    DenormalGuard denormals;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) pointwise_run_item<In, Out>(call, g, it, item, tile);
  });
}

void pointwise_run(const ConvCall& call) {
  with_stored_types(call, [&](auto in, auto out) { pointwise_run_typed<decltype(in), decltype(out)>(call); });
}

constexpr AlgorithmName kPointwiseName =
    algorithm_name("conv2d_pointwise_pixelvec_bf16__" CPPCONV_ISA_NAME, kMaxVectors* kBlock, kOutChunk);

constexpr AlgorithmName kGroupName =
    algorithm_name("conv2d_pixelvec_bf16__" CPPCONV_ISA_NAME, kMaxVectors* kBlock, kOutChunk);
}  // namespace

const ConvAlgorithm conv2d_pixelvec_bf16 = {kGroupName.text,    DType::BFloat16,    group_accepts,
                                            group_packed_bytes, group_pack,         group_workspace_bytes,
                                            group_run,          Precision::Highest, kCpuAvx512Bf16};
const ConvAlgorithm conv2d_pointwise_pixelvec_bf16 = {
    kPointwiseName.text,       DType::BFloat16, pointwise_accepts,  group_packed_bytes, group_pack,
    pointwise_workspace_bytes, pointwise_run,   Precision::Highest, kCpuAvx512Bf16};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
