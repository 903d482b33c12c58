#include "kernels/qconv_vnni.h"

#if defined(CPPCONV_HAS_QCONV_VNNI)
#include <immintrin.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/isa_common.h"
#include "kernels/qconv_common.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

using qconv::kBlock;

// Exactness.  Each int32 lane sums bias + sum x*w - x_zero_point * sum w, where x is the u8
// activation (an s8 one plus 128, with its zero point plus 128) and padding holds x_zero_point:
// that is bias + sum (x - x_zero_point) * w.  vpdpbusd (not vpdpbusds), vpaddd and the bias'
// fold (in uint32) all wrap modulo 2^32, so the lane holds that sum modulo 2^32, whatever the
// partial sums did; the Python layer has proved the sum itself fits int32, so it is exact.

constexpr int kMaxBlocks = 4;  // 16-channel output blocks per pass
// Pixels per pass by blocks: NB x NP accumulators, NB weights and a broadcast within the 32
// zmm registers, and the NP pixel pointers within the general registers.
constexpr int kMaxPixels[kMaxBlocks + 1] = {0, 8, 8, 8, 6};
constexpr int kPixelsMost = 8;  // (store_channels_first transposes 8 pixels)
// A pass's weights (all its taps) that run pixel by pixel (3x3 128 -> 128: 72 KiB, its epilogue
// then in registers); beyond, tap chunks of about this (docs/tuning.md, "int8 gaps" and "int8
// 1x1 channels-first layers": 32 KiB to 512 KiB tried on Zen 4).
constexpr int64_t kPassWeightBytes = 96 << 10;
constexpr int64_t kChunkedRuns = 32;  // runs of pixels an item of tap chunks takes (64 KiB of accumulators)

// The padded tile is one image as u8, [d][h][w][group][channel], each group's channels padded
// to a multiple of 4 (zeros, against zero weights), so 4 channels of a pixel are one int32 to
// broadcast.  Output blocks of a group go in `sets` passes of at most kMaxBlocks.
struct Geometry {
  int64_t groups, group_in, group_out, group_in_padded, quads, blocks, sets, taps, depth, rows, cols, pixel;
};

Geometry geometry_of(const ConvProblem& p) {
  Geometry g;
  g.groups = p.groups;
  g.group_in = p.in_channels / p.groups;
  g.group_out = p.out_channels / p.groups;
  g.group_in_padded = (g.group_in + 3) / 4 * 4;
  g.quads = g.group_in_padded / 4;
  g.blocks = (g.group_out + kBlock - 1) / kBlock;
  g.sets = (g.blocks + kMaxBlocks - 1) / kMaxBlocks;
  g.taps = p.kernel_d * p.kernel_h * p.kernel_w;
  g.depth = p.in_d + p.pad_front + p.pad_back;
  g.rows = p.in_h + p.pad_top + p.pad_bottom;
  g.cols = p.in_w + p.pad_left + p.pad_right;
  g.pixel = g.groups * g.group_in_padded;  // bytes per tile pixel
  return g;
}

// Packed weights [group][tap][quad][block][16 channels][4] int8: a pass's blocks side by side.
size_t weight_bytes(const Geometry& g) { return size_t(g.groups * g.taps * g.quads * g.blocks * kBlock * 4); }

bool accepts(const ConvProblem& p) { return qconv::dense_tile_accepts(p, geometry_of(p).pixel); }

// The weights, then sum w per output channel and the bias, each [group][block][16] int32.
size_t packed_bytes(const ConvProblem& p) {
  const Geometry g = geometry_of(p);
  return weight_bytes(g) + qconv::sums_bytes(g.groups, g.blocks);
}

bool pack(const ConvProblem& p, const int16_t* weight, const int32_t* bias, void* packed) {
  const Geometry g = geometry_of(p);
  if (!qconv::weights_fit_int8(p, weight)) return false;
  std::memset(packed, 0, packed_bytes(p));
  int8_t* w = static_cast<int8_t*>(packed);
  qconv::pack_sums(p, g.blocks, weight, bias, reinterpret_cast<int32_t*>(w + weight_bytes(g)));
  // In the packed order, one 64-byte run [16 channels][4] at a time: a scatter in the weights'
  // order wrote each byte to another cache line (docs/tuning.md, "int8 gaps").
  for (int64_t grp = 0; grp < g.groups; ++grp)
    for (int64_t block = 0; block < g.blocks; ++block) {
      const int64_t lanes = std::min(kBlock, g.group_out - block * kBlock);
      for (int64_t quad = 0; quad < g.quads; ++quad) {
        const int64_t channels = std::min<int64_t>(4, g.group_in - quad * 4);
        for (int64_t t = 0; t < g.taps; ++t) {
          int8_t* to = w + (((grp * g.taps + t) * g.quads + quad) * g.blocks + block) * kBlock * 4;
          for (int64_t lane = 0; lane < lanes; ++lane) {
            const int16_t* from =
                weight + ((grp * g.group_out + block * kBlock + lane) * g.group_in + quad * 4) * g.taps + t;
            for (int64_t c = 0; c < channels; ++c) to[lane * 4 + c] = int8_t(from[c * g.taps]);
          }
        }
      }
    }
  return true;
}

// Where a run's requantized bytes go, for a run whose taps are all in one call (Quantized
// output): requantized from the accumulators' registers, not through memory and store_run's
// loops over a run's blocks and pixels known only at run time.
struct RunStore {
  qconv::Requantization r;
  const int32_t* bias;      // the pass's first block's folded bias, [NB][16]
  const float* multiplier;  // likewise
  uint8_t* y;               // the pass's first channel at the run's first pixel
  int64_t channel_step;     // between channels: the plane (NCHW) or 1 (NHWC)
  int64_t pixel_step;       // between pixels: 1 (NCHW) or the channels (NHWC)
  int64_t last_count;       // channels of the pass's last block (a group's last may be partial)
  bool channels_first;
};

// NP pixels x NB blocks of 16 channels: out[p * NB + b] = sum over taps and channel quads of
// the pixel's 4 channels (u8) . the block's 16 x 4 weights (s8), added to out's values where
// `add` (a later chunk of taps); or, given `store`, requantized and stored there instead.
// x[p]: pixel p's window start.
template <int NB, int NP>
CPPCONV_TARGET_AVX512VNNI void accumulate(const uint8_t* const* x, const int64_t* tap_offset, int64_t taps,
                                          int64_t quads, const int8_t* w, int64_t w_step, bool add, __m512i* out,
                                          const RunStore* store) {
  __m512i acc[NP][NB];  // local, so the compiler keeps them in registers (see qconv_s16's)
  for (int p = 0; p < NP; ++p)
    for (int b = 0; b < NB; ++b) acc[p][b] = add ? out[p * NB + b] : _mm512_setzero_si512();
  for (int64_t t = 0; t < taps; ++t) {
    const uint8_t* xt[NP];
    for (int p = 0; p < NP; ++p) xt[p] = x[p] + tap_offset[t];
    const int8_t* wt = w + t * quads * w_step;
    for (int64_t q = 0; q < quads; ++q, wt += w_step) {
      __m512i wv[NB];
      for (int b = 0; b < NB; ++b) wv[b] = _mm512_loadu_si512(wt + b * kBlock * 4);
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) {
        int32_t four;
        std::memcpy(&four, xt[p] + 4 * q, sizeof(four));
        const __m512i xv = _mm512_set1_epi32(four);
        for (int b = 0; b < NB; ++b) acc[p][b] = _mm512_dpbusd_epi32(acc[p][b], xv, wv[b]);
      }
    }
  }
  if (store) {
    const qconv::Requantization r = store->r;
    for (int b = 0; b < NB; ++b) {
      const __m512i bias = _mm512_loadu_si512(store->bias + b * kBlock);
      const float* multiplier = store->multiplier + b * kBlock;
      const int64_t count = b == NB - 1 ? store->last_count : kBlock;
      __m128i bytes[8] = {};
      for (int p = 0; p < NP; ++p) bytes[p] = qconv::requantize16(r, _mm512_add_epi32(acc[p][b], bias), multiplier);
      uint8_t* y = store->y + b * kBlock * store->channel_step;
      if (store->channels_first) {
        qconv::store_channels_first(bytes, count, NP, y, store->channel_step);
        continue;
      }
      const __mmask16 channels = __mmask16((1u << count) - 1);
      for (int p = 0; p < NP; ++p) _mm_mask_storeu_epi8(y + p * store->pixel_step, channels, bytes[p]);
    }
    return;
  }
  for (int p = 0; p < NP; ++p)
    for (int b = 0; b < NB; ++b) out[p * NB + b] = acc[p][b];
}

using Accumulate = void (*)(const uint8_t* const*, const int64_t*, int64_t, int64_t, const int8_t*, int64_t, bool,
                            __m512i*, const RunStore*);

template <int NB, int NP>
constexpr Accumulate entry() {
  if constexpr (NP <= kMaxPixels[NB]) return accumulate<NB, NP>;
  else return nullptr;
}
template <int NB>
constexpr Accumulate kRow[kPixelsMost + 1] = {nullptr,        entry<NB, 1>(), entry<NB, 2>(),
                                              entry<NB, 3>(), entry<NB, 4>(), entry<NB, 5>(),
                                              entry<NB, 6>(), entry<NB, 7>(), entry<NB, 8>()};
// kAccumulate[NB][NP], NP up to kMaxPixels[NB].
constexpr const Accumulate* kAccumulate[kMaxBlocks + 1] = {nullptr, kRow<1>, kRow<2>, kRow<3>, kRow<4>};

void run(const QConvCall& call) {
  const ConvProblem& p = call.p;
  const Geometry g = geometry_of(p);
  const int8_t* weights = static_cast<const int8_t*>(call.packed);
  const int32_t* sums = reinterpret_cast<const int32_t*>(weights + weight_bytes(g));
  const int32_t* bias = sums + g.groups * g.blocks * kBlock;
  // Channels-last u8 without padding nor padded channels is its own tile.
  const bool direct = p.layout == Layout::NHWC && !call.x_signed && g.pixel == p.in_channels && p.pad_front == 0 &&
                      p.pad_back == 0 && p.pad_top == 0 && p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0;
  const int64_t image_bytes = g.depth * g.rows * g.cols * g.pixel;
  // Allocated before any parallel region: a failed allocation throws on the caller's thread.
  uint8_t* tile = direct ? nullptr : scratch<uint8_t>(size_t(image_bytes));  // every byte read written per image
  const std::vector<int64_t> tap_offset = qconv::tap_offsets(p, g.rows, g.cols, g.pixel);
  const std::vector<float> multiplier = qconv::block_multipliers(call, g.groups, g.blocks);
  const std::vector<int32_t> folded = qconv::folded_bias(call, sums, bias, size_t(g.groups * g.blocks * kBlock));
  // Work items: (od, group, pass, pixels); a pass's NP pixels run along the output plane,
  // across rows, so narrow planes fill the tile too.
  const int64_t plane = p.out_h * p.out_w, volume = p.out_d * plane;
  const int64_t most_blocks = (g.blocks + g.sets - 1) / g.sets;
  const int64_t pixels = kMaxPixels[most_blocks], runs = (plane + pixels - 1) / pixels;
  // A pass's weights beyond kPassWeightBytes (7x7 512 -> 512: 1.6 MB) came from L3 for every
  // run of pixels: there an item is all runs of a pass, taken tap chunk by tap chunk, each
  // chunk's weights over every run before the next, the accumulators kept in memory between.
  const int64_t tap_bytes = g.quads * most_blocks * kBlock * 4;
  const int64_t chunks = std::min(g.taps, (g.taps * tap_bytes + kPassWeightBytes - 1) / kPassWeightBytes);
  const int64_t chunk_taps = (g.taps + chunks - 1) / chunks;
  // (at most kChunkedRuns, fewer where the items would not give each thread 4)
  const int64_t share = (4 * call.num_threads + p.out_d * g.groups * g.sets - 1) / (p.out_d * g.groups * g.sets);
  const int64_t runs_per_item = chunks > 1 ? std::max<int64_t>(1, std::min(kChunkedRuns, runs / share)) : 1;
  const int64_t run_items = (runs + runs_per_item - 1) / runs_per_item;
  const int64_t items = p.out_d * g.groups * g.sets * run_items;
  // The passes innermost where a group's weights are fewer bytes than the image, on more than
  // one thread: each thread then reads its own run of the image (the rows it copied), not all of
  // it (as in qconv_amx.cpp; docs/tuning.md, "int8 AMX work split").
  const bool passes_inner =
      call.num_threads > 1 && weight_bytes(g) / size_t(g.groups) < size_t(image_bytes) && g.sets > 1;
  // Each thread's accumulators of an item's runs, allocated before the parallel region (a
  // failed allocation throws on the caller's thread).
  const size_t run_values = size_t(kPixelsMost * kMaxBlocks), item_values = size_t(runs_per_item) * run_values;
  std::vector<__m512i> partial(chunks > 1 ? item_values * size_t(call.num_threads) : 0);
  const qconv::Requantization requantization = qconv::requantization(call);
  const bool fused = chunks == 1 && call.output == QOutput::Quantized;  // (a run's taps in one call)
  auto copy = [&](int64_t n, int threads) {
    if (direct) return;
    if (call.x_signed) qconv::copy_tile<int8_t>(call, g, n, tile, threads);
    else qconv::copy_tile<uint8_t>(call, g, n, tile, threads);
  };
  // A run's accumulators (acc[q * nb + b]) after the bias, requantized (or dequantized) and stored.
  auto store_run = [&](int64_t n, int64_t od, int64_t grp, int64_t b0, int64_t nb, int64_t i0, int64_t np,
                       const __m512i* acc) {
    const qconv::Requantization r = requantization;  // (a local: kept in registers across the stores)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t slot = grp * g.blocks + b0 + b, k_in_group = (b0 + b) * kBlock;
      const int64_t k0 = grp * g.group_out + k_in_group, count = std::min(kBlock, g.group_out - k_in_group);
      const __m512i bias_b = _mm512_loadu_si512(folded.data() + slot * kBlock);
      const float* multiplier_b = multiplier.data() + slot * kBlock;
      if (call.output != QOutput::Quantized) {
        for (int64_t q = 0; q < np; ++q) {
          const __m512i v = _mm512_add_epi32(acc[q * nb + b], bias_b);
          qconv::store(call, _mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1), multiplier_b, n,
                       od * plane + i0 + q, k0, count);
        }
        continue;
      }
      __m128i bytes[8] = {};
      for (int64_t q = 0; q < np; ++q)
        bytes[q] = qconv::requantize16(r, _mm512_add_epi32(acc[q * nb + b], bias_b), multiplier_b);
      uint8_t* y = static_cast<uint8_t*>(call.y);
      if (p.layout == Layout::NCHW) {  // the block's channels of the run's pixels, contiguous in each channel
        qconv::store_channels_first(bytes, count, np, y + (n * p.out_channels + k0) * volume + od * plane + i0, volume);
        continue;
      }
      uint8_t* y_pixel = y + (n * volume + od * plane + i0) * p.out_channels + k0;
      const __mmask16 channels = __mmask16((1u << count) - 1);
      for (int64_t q = 0; q < np; ++q) _mm_mask_storeu_epi8(y_pixel + q * p.out_channels, channels, bytes[q]);
    }
  };
  qconv::for_each_image(call, items, copy, [&](int64_t n, int64_t item) {
    const int64_t within = item % (run_items * g.sets), grp = item / (run_items * g.sets) % g.groups;
    const int64_t od = item / (run_items * g.sets) / g.groups;
    const int64_t run_item = passes_inner ? within / g.sets : within % run_items;
    const int64_t pass = passes_inner ? within % g.sets : within / run_items;
    const int64_t b0 = pass * g.blocks / g.sets, nb = (pass + 1) * g.blocks / g.sets - b0;
    const int64_t first_run = run_item * runs_per_item, end_run = std::min(runs, first_run + runs_per_item);
    const uint8_t* image = direct ? static_cast<const uint8_t*>(call.x) + n * image_bytes : tile;
    const uint8_t* x_plane = image + od * p.stride_d * g.rows * g.cols * g.pixel + grp * g.group_in_padded;
    const int8_t* w_pass = weights + (grp * g.taps * g.quads * g.blocks + b0) * kBlock * 4;
    const int64_t w_step = g.blocks * kBlock * 4;
    __m512i one_run[kPixelsMost * kMaxBlocks];
    __m512i* mine = chunks > 1 ? partial.data() + item_values * size_t(thread_id()) : nullptr;
    const auto acc_of = [&](int64_t run_index) {
      return chunks > 1 ? mine + size_t(run_index - first_run) * run_values : one_run;
    };
    for (int64_t t0 = 0; t0 < g.taps; t0 += chunk_taps)
      for (int64_t run_index = first_run; run_index < end_run; ++run_index) {
        const int64_t i0 = run_index * pixels, np = std::min(pixels, plane - i0);
        const uint8_t* x[kPixelsMost];
        for (int64_t q = 0, oh = i0 / p.out_w, ow = i0 % p.out_w; q < np; ++q) {  // (no division a pixel)
          x[q] = x_plane + (oh * p.stride_h * g.cols + ow * p.stride_w) * g.pixel;
          if (++ow == p.out_w) ow = 0, ++oh;
        }
        RunStore to;
        if (fused) {
          const int64_t slot = grp * g.blocks + b0, k0 = grp * g.group_out + b0 * kBlock;
          uint8_t* y = static_cast<uint8_t*>(call.y);
          const bool first = p.layout == Layout::NCHW;
          to = {requantization,
                folded.data() + slot * kBlock,
                multiplier.data() + slot * kBlock,
                first ? y + (n * p.out_channels + k0) * volume + od * plane + i0
                      : y + (n * volume + od * plane + i0) * p.out_channels + k0,
                first ? volume : 1,
                first ? 1 : p.out_channels,
                std::min(kBlock, g.group_out - (b0 + nb - 1) * kBlock),
                first};
        }
        kAccumulate[nb][np](x, tap_offset.data() + t0, std::min(chunk_taps, g.taps - t0), g.quads,
                            w_pass + t0 * g.quads * w_step, w_step, t0 > 0, acc_of(run_index), fused ? &to : nullptr);
      }
    if (fused) return;
    for (int64_t run_index = first_run; run_index < end_run; ++run_index) {
      const int64_t i0 = run_index * pixels, np = std::min(pixels, plane - i0);
      store_run(n, od, grp, b0, nb, i0, np, acc_of(run_index));
    }
  });
}

// ---- Pointwise channels-first layers (1x1, stride 1, no padding): output pixels in the lanes ----
//
// A channels-first 1x1 layer is Y[k][pixel] = sum_c W[k][c] X[c][pixel]: with the pixels in the
// lanes and a weight dword broadcast, an output channel's 64 requantized bytes leave in one
// store, where the kernel above transposes its tile in and its results out (docs/tuning.md,
// "int8 1x1 channels-first layers").  The tile interleaves 4 channel rows' bytes into dwords.

constexpr int kPointwiseChannels = 6;  // output channels per block: a weight broadcast each
constexpr int kPointwisePixels = 64;   // pixels per chunk: 4 vectors of 16 dwords
constexpr int64_t kChunkBytes = kPointwisePixels * 4;  // a chunk's 4 channels (one quad)

struct PointwiseGeometry {
  int64_t groups, group_in, group_out, quads, kblocks, plane, chunks;
};

PointwiseGeometry pointwise_geometry_of(const ConvProblem& p) {
  PointwiseGeometry g;
  g.groups = p.groups;
  g.group_in = p.in_channels / p.groups;
  g.group_out = p.out_channels / p.groups;
  g.quads = (g.group_in + 3) / 4;
  g.kblocks = (g.group_out + kPointwiseChannels - 1) / kPointwiseChannels;
  g.plane = p.in_d * p.in_h * p.in_w;
  g.chunks = (g.plane + kPointwisePixels - 1) / kPointwisePixels;
  return g;
}

// Channels-first, 1x1, stride 1, no padding (a plane's pixels are consecutive in x and y), at
// least 2 channels a group, and planes whose last chunk of 64 pixels computes at most an eighth
// more pixels than there are (196 would be 256: the kernel above takes those).
bool pointwise_accepts(const ConvProblem& p) {
  if (p.layout != Layout::NCHW || p.pad_mode != PadMode::Zeros || p.batch < 1 || p.in_channels < 1 ||
      p.out_channels < 1 || p.in_channels / p.groups < 2)
    return false;
  if (p.kernel_d != 1 || p.kernel_h != 1 || p.kernel_w != 1 || p.stride_d != 1 || p.stride_h != 1 || p.stride_w != 1)
    return false;
  if (p.pad_front || p.pad_back || p.pad_top || p.pad_bottom || p.pad_left || p.pad_right) return false;
  const PointwiseGeometry g = pointwise_geometry_of(p);
  return g.plane >= kPointwisePixels && (g.chunks * kPointwisePixels - g.plane) * 8 <= g.plane;
}

// Packed weights [group][block of 6 channels][quad][6][4] int8 (zeros past a group's channels),
// then sum w and the bias per output channel, [K] int32 each.
size_t pointwise_weight_bytes(const PointwiseGeometry& g) {
  return size_t(g.groups * g.kblocks * g.quads * kPointwiseChannels * 4);
}

size_t pointwise_packed_bytes(const ConvProblem& p) {
  return pointwise_weight_bytes(pointwise_geometry_of(p)) + 2 * size_t(p.out_channels) * sizeof(int32_t);
}

bool pointwise_pack(const ConvProblem& p, const int16_t* weight, const int32_t* bias, void* packed) {
  const PointwiseGeometry g = pointwise_geometry_of(p);
  if (!qconv::weights_fit_int8(p, weight)) return false;
  std::memset(packed, 0, pointwise_packed_bytes(p));
  int8_t* w = static_cast<int8_t*>(packed);
  int32_t* sums = reinterpret_cast<int32_t*>(w + pointwise_weight_bytes(g));
  for (int64_t k = 0; k < p.out_channels; ++k) {
    int64_t sum = 0;
    for (int64_t c = 0; c < g.group_in; ++c) sum += weight[k * g.group_in + c];
    sums[k] = int32_t(uint32_t(sum));
    sums[p.out_channels + k] = bias ? bias[k] : 0;
  }
  for (int64_t grp = 0; grp < g.groups; ++grp)
    for (int64_t kb = 0; kb < g.kblocks; ++kb)
      for (int64_t q = 0; q < g.quads; ++q) {
        int8_t* to = w + ((grp * g.kblocks + kb) * g.quads + q) * kPointwiseChannels * 4;
        for (int64_t i = 0; i < kPointwiseChannels && kb * kPointwiseChannels + i < g.group_out; ++i)
          for (int64_t c = 4 * q; c < std::min(4 * q + 4, g.group_in); ++c)
            to[i * 4 + c % 4] = int8_t(weight[(grp * g.group_out + kb * kPointwiseChannels + i) * g.group_in + c]);
      }
  return true;
}

// Image n's tile [group][chunk][quad][4 vectors][16 pixels][4 channels] as u8 (x ^ 0x80 for s8):
// 4 channel rows' 64 pixels interleaved by byte and word unpacks, so vector i holds the pixels
// 16 L + 4 i + (0..3) in 128-bit lane L (the packs in the stores undo that order).  Pixels
// past the plane and channels past a group's (read from its quad's first row) meet zero
// weights or are not stored.
template <class T>
void pointwise_tile(const QConvCall& call, const PointwiseGeometry& g, int64_t n, uint8_t* tile, int threads) {
  const uint8_t* x = static_cast<const uint8_t*>(call.x) + n * call.p.in_channels * g.plane;  // (bytes either way)
  const __m512i flip = _mm512_set1_epi8(char(std::is_signed<T>::value ? 0x80 : 0));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t row = 0; row < g.groups * g.quads; ++row) {
    const int64_t grp = row / g.quads, q = row % g.quads, c0 = 4 * q;
    const uint8_t* first = x + (grp * g.group_in + c0) * g.plane;
    const uint8_t* rows[4];
    for (int i = 0; i < 4; ++i) rows[i] = c0 + i < g.group_in ? first + i * g.plane : first;
    for (int64_t j = 0; j < g.chunks; ++j) {
      const int64_t p0 = j * kPointwisePixels, count = std::min<int64_t>(kPointwisePixels, g.plane - p0);
      const __mmask64 mask = count == kPointwisePixels ? ~__mmask64(0) : (__mmask64(1) << count) - 1;
      __m512i v[4];
      for (int i = 0; i < 4; ++i) v[i] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, rows[i] + p0), flip);
      const __m512i ab_lo = _mm512_unpacklo_epi8(v[0], v[1]), ab_hi = _mm512_unpackhi_epi8(v[0], v[1]);
      const __m512i cd_lo = _mm512_unpacklo_epi8(v[2], v[3]), cd_hi = _mm512_unpackhi_epi8(v[2], v[3]);
      uint8_t* to = tile + ((grp * g.chunks + j) * g.quads + q) * kChunkBytes;
      _mm512_storeu_si512(to, _mm512_unpacklo_epi16(ab_lo, cd_lo));
      _mm512_storeu_si512(to + 64, _mm512_unpackhi_epi16(ab_lo, cd_lo));
      _mm512_storeu_si512(to + 128, _mm512_unpacklo_epi16(ab_hi, cd_hi));
      _mm512_storeu_si512(to + 192, _mm512_unpackhi_epi16(ab_hi, cd_hi));
    }
  }
}

// Where a block's results go: channel k's `count` pixels at y + k * plane (elements).
struct PointwiseStore {
  qconv::Requantization r;
  __m512i zero16;  // y_zero_point in 16-bit lanes
  __m512 f_min, f_max;
  QOutput output;
  bool y_signed;
  int64_t plane, count;
};

// 4 vectors in the tile's pixel order (vector i, lane L: pixels 16 L + 4 i + (0..3)) put in
// pixel order, 16 a vector: a 4 x 4 transpose of 128-bit lanes.
CPPCONV_ALWAYS_INLINE void to_pixel_order(__m512i (&v)[4]) {
  const __m512i t0 = _mm512_shuffle_i32x4(v[0], v[1], 0x44), t1 = _mm512_shuffle_i32x4(v[2], v[3], 0x44);
  const __m512i t2 = _mm512_shuffle_i32x4(v[0], v[1], 0xEE), t3 = _mm512_shuffle_i32x4(v[2], v[3], 0xEE);
  v[0] = _mm512_shuffle_i32x4(t0, t1, 0x88), v[1] = _mm512_shuffle_i32x4(t0, t1, 0xDD);
  v[2] = _mm512_shuffle_i32x4(t2, t3, 0x88), v[3] = _mm512_shuffle_i32x4(t2, t3, 0xDD);
}

// One output channel's 4 vectors (the bias added) as int32 or dequantized to float32, in pixel
// order.  (Out of line and through memory: the accumulators' loop keeps its registers.)
CPPCONV_NOINLINE void pointwise_store_wide(const __m512i (&acc)[4], float multiplier, const PointwiseStore& s, void* y,
                                           int k) {
  __m512i v[4] = {acc[0], acc[1], acc[2], acc[3]};
  to_pixel_order(v);
  for (int i = 0; i < 4 && 16 * i < s.count; ++i) {
    const __mmask16 lanes = __mmask16(s.count - 16 * i >= 16 ? 0xFFFF : (1u << (s.count - 16 * i)) - 1);
    if (s.output == QOutput::Int32) {
      _mm512_mask_storeu_epi32(static_cast<int32_t*>(y) + k * s.plane + 16 * i, lanes, v[i]);
      continue;
    }
    const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v[i]), _mm512_set1_ps(multiplier));  // (as qconv::store)
    _mm512_mask_storeu_ps(static_cast<float*>(y) + k * s.plane + 16 * i, lanes,
                          _mm512_min_ps(_mm512_max_ps(f, s.f_min), s.f_max));
  }
}

// NK output channels x one chunk of 64 pixels: the sums over the quads of 4 channels' bytes
// (x: the chunk's tile) . the channels' 4 weights (w: [quad][6][4]), the bias added, stored
// (requantized, as int32, or dequantized) from the registers.
template <int NK>
CPPCONV_TARGET_AVX512VNNI void pointwise_block(const uint8_t* x, int64_t quads, const int8_t* w, const int32_t* bias,
                                               const float* multiplier, const PointwiseStore& s, void* y) {
  __m512i acc[NK][4];
  for (int k = 0; k < NK; ++k)
    for (int i = 0; i < 4; ++i) acc[k][i] = _mm512_setzero_si512();
  for (int64_t q = 0; q < quads; ++q, x += kChunkBytes, w += kPointwiseChannels * 4) {
    __m512i xv[4];
    for (int i = 0; i < 4; ++i) xv[i] = _mm512_loadu_si512(x + 64 * i);
#pragma GCC unroll 6
    for (int k = 0; k < NK; ++k) {
      int32_t four;
      std::memcpy(&four, w + 4 * k, sizeof(four));
      const __m512i wv = _mm512_set1_epi32(four);
      for (int i = 0; i < 4; ++i) acc[k][i] = _mm512_dpbusd_epi32(acc[k][i], xv[i], wv);
    }
  }
  const __mmask64 bytes_mask = s.count == kPointwisePixels ? ~__mmask64(0) : (__mmask64(1) << s.count) - 1;
#pragma GCC unroll 6
  for (int k = 0; k < NK; ++k) {
    __m512i v[4];
    const __m512i b = _mm512_set1_epi32(bias[k]);
    for (int i = 0; i < 4; ++i) v[i] = _mm512_add_epi32(acc[k][i], b);
    if (s.output == QOutput::Quantized) {
      // requantize16's steps; then exact packs (values within the output's range, |q| <= 255),
      // whose 128-bit lanes put the pixels back in order.
      constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
      const __m512 m = _mm512_set1_ps(multiplier[k]);
      __m512i q[4];
      for (int i = 0; i < 4; ++i) {
        const __m512 f = _mm512_mul_round_ps(_mm512_cvt_roundepi32_ps(v[i], kNearest), m, kNearest);
        q[i] = _mm512_cvt_roundps_epi32(_mm512_min_ps(_mm512_max_ps(f, s.r.lo), s.r.hi), kNearest);
      }
      const __m512i lo = _mm512_add_epi16(_mm512_packs_epi32(q[0], q[1]), s.zero16);
      const __m512i hi = _mm512_add_epi16(_mm512_packs_epi32(q[2], q[3]), s.zero16);
      const __m512i out = s.y_signed ? _mm512_packs_epi16(lo, hi) : _mm512_packus_epi16(lo, hi);
      _mm512_mask_storeu_epi8(static_cast<uint8_t*>(y) + k * s.plane, bytes_mask, out);
      continue;
    }
    pointwise_store_wide(v, s.output == QOutput::Int32 ? 0.0f : multiplier[k], s, y, k);
  }
}

using PointwiseBlock = void (*)(const uint8_t*, int64_t, const int8_t*, const int32_t*, const float*,
                                const PointwiseStore&, void*);
constexpr PointwiseBlock kPointwiseBlock[kPointwiseChannels + 1] = {nullptr,
                                                                    pointwise_block<1>,
                                                                    pointwise_block<2>,
                                                                    pointwise_block<3>,
                                                                    pointwise_block<4>,
                                                                    pointwise_block<5>,
                                                                    pointwise_block<6>};

void pointwise_run(const QConvCall& call) {
  const ConvProblem& p = call.p;
  const PointwiseGeometry g = pointwise_geometry_of(p);
  const int8_t* weights = static_cast<const int8_t*>(call.packed);
  const int32_t* sums = reinterpret_cast<const int32_t*>(weights + pointwise_weight_bytes(g));
  const int32_t* bias = sums + p.out_channels;
  // Allocated before any parallel region: a failed allocation throws on the caller's thread.
  uint8_t* tile = scratch<uint8_t>(size_t(g.groups * g.chunks * g.quads * kChunkBytes));
  const std::vector<int32_t> folded = qconv::folded_bias(call, sums, bias, size_t(p.out_channels));
  const bool quantized = call.output == QOutput::Quantized;
  const PointwiseStore store_base = {qconv::requantization(call),
                                     _mm512_set1_epi16(int16_t(call.y_zero_point)),
                                     _mm512_set1_ps(call.f_min),
                                     _mm512_set1_ps(call.f_max),
                                     call.output,
                                     call.y_signed,
                                     g.plane,
                                     0};
  const size_t element = quantized ? 1 : 4;
  // Work items: (group, chunk, part of the channel blocks); parts where the chunks would not give
  // each thread 4 items.
  const int64_t parts = std::min(
      g.kblocks, std::max<int64_t>(1, (4 * call.num_threads + g.groups * g.chunks - 1) / (g.groups * g.chunks)));
  const int64_t items = g.groups * g.chunks * parts;
  auto copy = [&](int64_t n, int threads) {
    if (call.x_signed) pointwise_tile<int8_t>(call, g, n, tile, threads);
    else pointwise_tile<uint8_t>(call, g, n, tile, threads);
  };
  qconv::for_each_image(call, items, copy, [&](int64_t n, int64_t item) {
    const int64_t part = item % parts, j = item / parts % g.chunks, grp = item / parts / g.chunks;
    const int64_t kb0 = part * g.kblocks / parts, kb1 = (part + 1) * g.kblocks / parts;
    const uint8_t* x = tile + (grp * g.chunks + j) * g.quads * kChunkBytes;
    PointwiseStore s = store_base;
    s.count = std::min<int64_t>(kPointwisePixels, g.plane - j * kPointwisePixels);
    for (int64_t kb = kb0; kb < kb1; ++kb) {
      const int64_t k0 = grp * g.group_out + kb * kPointwiseChannels;
      const int64_t nk = std::min<int64_t>(kPointwiseChannels, g.group_out - kb * kPointwiseChannels);
      void* y = static_cast<uint8_t*>(call.y) + ((n * p.out_channels + k0) * g.plane + j * kPointwisePixels) * element;
      kPointwiseBlock[nk](x, g.quads, weights + (grp * g.kblocks + kb) * g.quads * kPointwiseChannels * 4,
                          folded.data() + k0, call.output == QOutput::Int32 ? nullptr : call.multiplier + k0, s, y);
    }
  });
}

}  // namespace

const QConvAlgorithm qconv_u8s8_vnni_6x64 = {
    "qconv_u8s8_vnni__" CPPCONV_ISA_NAME "_6x64", accepts, packed_bytes, pack, run, kCpuAvx512Vnni};

const QConvAlgorithm qconv_pointwise_vnni_6x64 = {"qconv_pointwise_vnni__" CPPCONV_ISA_NAME "_6x64",
                                                  pointwise_accepts,
                                                  pointwise_packed_bytes,
                                                  pointwise_pack,
                                                  pointwise_run,
                                                  kCpuAvx512Vnni};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
