#include "kernels/qconv_amx.h"

#if defined(CPPCONV_HAS_QCONV_AMX)
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "kernels/isa_common.h"
#include "kernels/qconv_common.h"
#include "kernels/qconv_vnni.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

using qconv::kBlock;

// Exactness: as the VNNI kernel's (qconv_vnni.cpp): TDPBUSD, like vpdpbusd, sums u8 x s8
// products into int32 wrapping modulo 2^32, and the folded bias removes x_zero_point * sum w.

constexpr int kTileRows = 16;   // an A tile's pixels, a C tile's pixels and channels
constexpr int kTileBytes = 64;  // bytes of a tile row at most
// Groups of fewer input channels (a first layer's 3) are the VNNI kernel's; from 4 on, a tile
// row mostly empty still beats it (docs/tuning.md, "int8 on AMX tiles").
constexpr int64_t kMinGroupChannels = 4;

// The image tile is the VNNI kernel's, [d][h][w][group][channel], each group's channels padded
// to `chunks` runs of `chunk` bytes (a multiple of 4, at most 64: one A tile row), so 16 pixels
// of one run at any column stride are one A tile, read in place.  Output blocks of 16 channels
// go in passes of 2 (the C tiles' columns).
struct Geometry {
  int64_t groups, group_in, group_out, chunk, chunks, group_in_padded, blocks, passes, taps, depth, rows, cols, pixel;
};

Geometry geometry_of(const ConvProblem& p) {
  Geometry g;
  g.groups = p.groups;
  g.group_in = p.in_channels / p.groups;
  g.group_out = p.out_channels / p.groups;
  g.chunks = (g.group_in + kTileBytes - 1) / kTileBytes;
  const int64_t per_chunk = (g.group_in + g.chunks - 1) / g.chunks;  // (80 channels: 2 runs of 40, not 64 + 16)
  g.chunk = (per_chunk + 3) / 4 * 4;
  g.group_in_padded = g.chunk * g.chunks;
  g.blocks = (g.group_out + kBlock - 1) / kBlock;
  g.passes = (g.blocks + 1) / 2;
  g.taps = p.kernel_d * p.kernel_h * p.kernel_w;
  g.depth = p.in_d + p.pad_front + p.pad_back;
  g.rows = p.in_h + p.pad_top + p.pad_bottom;
  g.cols = p.in_w + p.pad_left + p.pad_right;
  g.pixel = g.groups * g.group_in_padded;  // bytes per tile pixel
  return g;
}

// Packed weights [group][block][tap][chunk][chunk / 4 quads][16 channels][4] int8: each
// (block, tap, chunk) one B tile of 64-byte rows, a pass's taps and chunks in the order the
// reduction reads them.
size_t weight_bytes(const Geometry& g) { return size_t(g.groups * g.blocks * g.taps * g.group_in_padded * kBlock); }

bool accepts(const ConvProblem& p) {
  if (p.in_channels < 1 || p.groups < 1 || p.in_channels / p.groups < kMinGroupChannels) return false;
  const Geometry g = geometry_of(p);
  // Channels-first 1x1 layers of one tile row of channels a group are mostly their store here,
  // which the pointwise VNNI kernel makes without transposes: its, where it takes them
  // (docs/tuning.md, "int8 on AMX tiles").
  if (g.chunks == 1 && qconv_pointwise_vnni_6x64.accepts(p)) return false;
  return qconv::dense_tile_accepts(p, g.pixel);
}

// The weights, then sum w per output channel and the bias, each [group][block][16] int32 (as
// the VNNI kernel's).
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
  for (int64_t grp = 0; grp < g.groups; ++grp)
    for (int64_t block = 0; block < g.blocks; ++block) {
      const int64_t lanes = std::min(kBlock, g.group_out - block * kBlock);
      for (int64_t t = 0; t < g.taps; ++t)
        for (int64_t c0 = 0; c0 < g.group_in; c0 += 4) {
          const int64_t chunk = c0 / g.chunk, quad = c0 % g.chunk / 4, channels = std::min<int64_t>(4, g.group_in - c0);
          int8_t* to = w + (((grp * g.blocks + block) * g.taps + t) * g.chunks + chunk) * g.chunk * kBlock + quad * 64;
          for (int64_t lane = 0; lane < lanes; ++lane) {
            const int16_t* from = weight + ((grp * g.group_out + block * kBlock + lane) * g.group_in + c0) * g.taps + t;
            for (int64_t c = 0; c < channels; ++c) to[lane * 4 + c] = int8_t(from[c * g.taps]);
          }
        }
    }
  return true;
}

// ldtilecfg's 64-byte operand (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// C in tmm0-3 (16 pixels x 16 int32 channels: pixels 0-15 x blocks 0, 1; pixels 16-31 x
// blocks 0, 1), A in tmm4-5 (16 pixels x `chunk` bytes), B in tmm6-7 (chunk / 4 quads x 16
// channels x 4).
TileConfig tile_config(const Geometry& g) {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.rows[t] = uint8_t(t >= 6 ? g.chunk / 4 : kTileRows);
    c.colsb[t] = uint16_t(t == 4 || t == 5 ? g.chunk : kTileBytes);
  }
  return c;
}

CPPCONV_TARGET_AMX void configure_tiles(const TileConfig* config) { _tile_loadconfig(config); }
CPPCONV_TARGET_AMX void release_tiles() { _tile_release(); }

// NA A tiles (16 pixels each, rows a_stride bytes apart, from a[i] + a tap's offset + a chunk's
// bytes) x NB blocks of 16 channels (B tiles from b, the second block's b_step further), summed
// over the taps and chunks into tmm0-3; tile_results stores them.  (Apart, so that the previous
// block's requantizing stores run on the vector units while the tiles sum.)
template <int NA, int NB>
CPPCONV_TARGET_AMX void tile_sums(const uint8_t* a0, const uint8_t* a1, int64_t a_stride, const int64_t* tap_offset,
                                  int64_t taps, int64_t chunks, int64_t chunk, const int8_t* b, int64_t b_step) {
  _tile_zero(0);
  if constexpr (NB == 2) _tile_zero(1);
  if constexpr (NA == 2) _tile_zero(2);
  if constexpr (NA == 2 && NB == 2) _tile_zero(3);
  const int64_t b_bytes = chunk * kBlock;  // one B tile
  for (int64_t t = 0; t < taps; ++t) {
    const uint8_t* x0 = a0 + tap_offset[t];
    const uint8_t* x1 = a1 + tap_offset[t];
    for (int64_t k = 0; k < chunks; ++k, b += b_bytes) {
      _tile_loadd(4, x0 + k * chunk, a_stride);
      if constexpr (NA == 2) _tile_loadd(5, x1 + k * chunk, a_stride);
      _tile_loadd(6, b, kTileBytes);
      if constexpr (NB == 2) _tile_loadd(7, b + b_step, kTileBytes);
      _tile_dpbusd(0, 4, 6);
      if constexpr (NB == 2) _tile_dpbusd(1, 4, 7);
      if constexpr (NA == 2) _tile_dpbusd(2, 5, 6);
      if constexpr (NA == 2 && NB == 2) _tile_dpbusd(3, 5, 7);
    }
  }
}

// tmm0-3 as int32 to c[32 pixels][32 channels].
template <int NA, int NB>
CPPCONV_TARGET_AMX void tile_results(int32_t* c) {
  constexpr int64_t kRowBytes = 2 * kTileRows * sizeof(int32_t);
  _tile_stored(0, c, kRowBytes);
  if constexpr (NB == 2) _tile_stored(1, c + kTileRows, kRowBytes);
  if constexpr (NA == 2) _tile_stored(2, c + kTileRows * 2 * kTileRows, kRowBytes);
  if constexpr (NA == 2 && NB == 2) _tile_stored(3, c + kTileRows * 2 * kTileRows + kTileRows, kRowBytes);
}

using TileSums = void (*)(const uint8_t*, const uint8_t*, int64_t, const int64_t*, int64_t, int64_t, int64_t,
                          const int8_t*, int64_t);
constexpr TileSums kTileSums[2][2] = {{tile_sums<1, 1>, tile_sums<1, 2>}, {tile_sums<2, 1>, tile_sums<2, 2>}};
using TileResults = void (*)(int32_t*);
constexpr TileResults kTileResults[2][2] = {{tile_results<1, 1>, tile_results<1, 2>},
                                            {tile_results<2, 1>, tile_results<2, 2>}};

// The output plane in units of one A tile.  Unit column and row stride: 16 "virtual" pixels v
// along the padded plane's flattened rows (v = oh * cols + ow, 16 apart in the tile), the
// columns ow >= out_w discarded, so narrow planes waste only their padding columns.  Otherwise
// 16 pixels of one output row at stride_w pixels.
struct Units {
  bool flat;
  int64_t per_row, count;  // units per output row (not flat), per output plane
};

Units units_of(const ConvProblem& p, const Geometry& g) {
  Units u;
  u.flat = p.stride_h == 1 && p.stride_w == 1;
  u.per_row = (p.out_w + kTileRows - 1) / kTileRows;
  u.count = u.flat ? ((p.out_h - 1) * g.cols + p.out_w + kTileRows - 1) / kTileRows : p.out_h * u.per_row;
  return u;
}

// Unit u's first pixel in the tile (pixels from its plane's window start), and the output plane
// index of each of its 16 rows (-1: discarded).
int64_t unit_pixels(const ConvProblem& p, const Geometry& g, const Units& units, int64_t u, int64_t (&out)[kTileRows]) {
  if (units.flat) {
    const int64_t v = u * kTileRows;
    for (int64_t i = 0, oh = v / g.cols, ow = v % g.cols; i < kTileRows; ++i) {  // (no division a pixel)
      out[i] = oh < p.out_h && ow < p.out_w ? oh * p.out_w + ow : -1;
      if (++ow == g.cols) ow = 0, ++oh;
    }
    return v;
  }
  const int64_t oh = u / units.per_row, ow0 = u % units.per_row * kTileRows;
  for (int64_t i = 0; i < kTileRows; ++i) out[i] = ow0 + i < p.out_w ? oh * p.out_w + ow0 + i : -1;
  return oh * p.stride_h * g.cols + ow0 * p.stride_w;
}

// A block's int32 results awaiting their store, and where they go.
struct Pending {
  alignas(64) int32_t c[2 * kTileRows * 2 * kTileRows];
  int64_t out[2][kTileRows];
  int64_t n, od, grp, b0, nb, na;
  bool valid = false;
};

void run(const QConvCall& call) {
  const ConvProblem& p = call.p;
  const Geometry g = geometry_of(p);
  const Units units = units_of(p, g);
  const int8_t* weights = static_cast<const int8_t*>(call.packed);
  const int32_t* sums = reinterpret_cast<const int32_t*>(weights + weight_bytes(g));
  const int32_t* bias = sums + g.groups * g.blocks * kBlock;
  const int64_t image_bytes = g.depth * g.rows * g.cols * g.pixel;
  // A unit's 16 rows read up to 16 column strides past its plane's last window, which discards
  // them: the slack keeps those reads in the allocation.  Allocated before any parallel region: a
  // failed allocation throws on the caller's thread.
  const int64_t slack = (kTileRows * p.stride_w + 1) * g.pixel;
  uint8_t* tile = scratch<uint8_t>(size_t(image_bytes + slack));
  const std::vector<int64_t> tap_offset = qconv::tap_offsets(p, g.rows, g.cols, g.pixel);
  const std::vector<float> multiplier = qconv::block_multipliers(call, g.groups, g.blocks);
  const std::vector<int32_t> folded = qconv::folded_bias(call, sums, bias, size_t(g.groups * g.blocks * kBlock));
  const TileConfig config = tile_config(g);
  const qconv::Requantization requantization = qconv::requantization(call);
  const int64_t plane = p.out_h * p.out_w, volume = p.out_d * plane;
  const int64_t pairs = (units.count + 1) / 2;
  // Work items: (od, group, pass, pair of units), the pairs innermost, so a thread's run of items
  // reads one pass's weights; where a group's weights are fewer bytes than the image tile, the
  // passes innermost instead, so a thread reads the rows of the tile it copied (copy_tile splits
  // rows as the items do) rather than all of them from the other core's cache (1x1 256 -> 64 @56
  // channels-first ran slower on 2 threads than on 1; docs/tuning.md).  One thread keeps the
  // pass order, which reads a pass's weights while it sweeps the tile.
  const bool passes_inner = call.num_threads > 1 && weight_bytes(g) / size_t(g.groups) < size_t(image_bytes);
  const int64_t items = p.out_d * g.groups * g.passes * pairs;
  const int64_t a_stride = p.stride_w * g.pixel, b_step = g.taps * g.group_in_padded * kBlock;
  auto copy = [&](int64_t n, int threads) {
    if (call.x_signed) qconv::copy_tile<int8_t>(call, g, n, tile, threads);
    else qconv::copy_tile<uint8_t>(call, g, n, tile, threads);
  };
  // The NA x 16 pixels (out: their output plane indices) x nb blocks of c, after the bias,
  // requantized (or dequantized) and stored.
  auto store = [&](int64_t n, int64_t od, int64_t grp, int64_t b0, int64_t nb, int64_t na,
                   const int64_t (*out)[kTileRows], const int32_t* c) {
    const qconv::Requantization r = requantization;  // (a local: kept in registers across the stores)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t slot = grp * g.blocks + b0 + b, k_in_group = (b0 + b) * kBlock;
      const int64_t k0 = grp * g.group_out + k_in_group, count = std::min(kBlock, g.group_out - k_in_group);
      const __m512i bias_b = _mm512_loadu_si512(folded.data() + slot * kBlock);
      const float* multiplier_b = multiplier.data() + slot * kBlock;
      const __mmask16 channels = __mmask16((1u << count) - 1);
      auto acc = [&](int64_t a, int64_t i) {
        return _mm512_add_epi32(_mm512_loadu_si512(c + (a * kTileRows + i) * 2 * kTileRows + b * kBlock), bias_b);
      };
      for (int64_t a = 0; a < na; ++a) {
        const int64_t* pixel = out[a];
        if (call.output != QOutput::Quantized) {
          for (int64_t i = 0; i < kTileRows; ++i)
            if (pixel[i] >= 0) {
              const __m512i v = acc(a, i);
              qconv::store(call, _mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1), multiplier_b, n,
                           od * plane + pixel[i], k0, count);
            }
          continue;
        }
        uint8_t* y = static_cast<uint8_t*>(call.y);
        if (p.layout == Layout::NHWC) {
          for (int64_t i = 0; i < kTileRows; ++i)
            if (pixel[i] >= 0)
              _mm_mask_storeu_epi8(y + (n * volume + od * plane + pixel[i]) * p.out_channels + k0, channels,
                                   qconv::requantize16(r, acc(a, i), multiplier_b));
          continue;
        }
        // Channels-first: runs of up to 8 consecutive output pixels, transposed into each channel.
        for (int64_t i = 0; i < kTileRows;) {
          if (pixel[i] < 0) {
            ++i;
            continue;
          }
          int64_t np = 1;
          while (np < 8 && i + np < kTileRows && pixel[i + np] == pixel[i] + np) ++np;
          __m128i bytes[8] = {};
          for (int64_t q = 0; q < np; ++q) bytes[q] = qconv::requantize16(r, acc(a, i + q), multiplier_b);
          uint8_t* to = y + (n * p.out_channels + k0) * volume + od * plane + pixel[i];
          if (np == 8 && count == kBlock) qconv::store_channels_first(bytes, kBlock, 8, to, volume);  // (constants)
          else qconv::store_channels_first(bytes, count, np, to, volume);
          i += np;
        }
      }
    }
  };
  // Each thread's last block, stored while its next one sums (see tile_sums), or as it leaves.
  // Allocated before the parallel region: a failed allocation throws on the caller's thread.
  std::vector<Pending> pending(size_t(std::max(1, call.num_threads)));
  auto mine = [&]() -> Pending& { return pending[size_t(region_thread(call.num_threads))]; };
  auto store_pending = [&](Pending& block) {
    if (block.valid) store(block.n, block.od, block.grp, block.b0, block.nb, block.na, block.out, block.c);
    block.valid = false;
  };
  qconv::for_each_image(
      call, items, copy,
      [&](int64_t n, int64_t item) {
        const int64_t within = item % (pairs * g.passes), grp = item / (pairs * g.passes) % g.groups;
        const int64_t od = item / (pairs * g.passes) / g.groups;
        const int64_t pair = passes_inner ? within / g.passes : within % pairs;
        const int64_t pass = passes_inner ? within % g.passes : within / pairs;
        const int64_t b0 = 2 * pass, nb = std::min<int64_t>(2, g.blocks - b0);
        const int64_t u0 = 2 * pair, na = std::min<int64_t>(2, units.count - u0);
        const uint8_t* x_plane = tile + od * p.stride_d * g.rows * g.cols * g.pixel + grp * g.group_in_padded;
        int64_t out[2][kTileRows];
        const uint8_t* a0 = x_plane + unit_pixels(p, g, units, u0, out[0]) * g.pixel;
        const uint8_t* a1 = na == 2 ? x_plane + unit_pixels(p, g, units, u0 + 1, out[1]) * g.pixel : a0;
        const int8_t* b = weights + (grp * g.blocks + b0) * g.taps * g.group_in_padded * kBlock;
        kTileSums[na - 1][nb - 1](a0, a1, a_stride, tap_offset.data(), g.taps, g.chunks, g.chunk, b, b_step);
        Pending& last = mine();
        store_pending(last);
        kTileResults[na - 1][nb - 1](last.c);
        last.valid = true, last.n = n, last.od = od, last.grp = grp, last.b0 = b0, last.nb = nb, last.na = na;
        std::memcpy(last.out, out, sizeof(out));
      },
      [&] { configure_tiles(&config); },
      [&] {
        store_pending(mine());
        release_tiles();
      });
}

}  // namespace

const QConvAlgorithm qconv_u8s8_amx_32x32 = {
    "qconv_u8s8_amx__" CPPCONV_ISA_NAME "_32x32", accepts, packed_bytes, pack, run, kCpuAmxInt8};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
