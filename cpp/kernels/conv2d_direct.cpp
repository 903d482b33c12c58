// conv2d_channelvec / conv2d_pixelvec: the blocked direct convolution engine, for float32 and
// float64, on every ISA with a SIMD backend (simd.h).
//
// Output-stationary register blocking, in two orientations:
//  - ChannelVec: a microkernel holds MR output pixels of one output row times NR output
//    channels (kNV vectors) in registers, loops over kernel taps and input channels,
//    broadcasting one input value per pixel against the weight vectors.  Weights are packed
//    once per plan to [group][k block][channel slice][tap][c][NR] (zero past the last output
//    channel), or, for a one-shot call on a small plane, slice by slice inside the work items
//    (see packs_in_items).
//  - PixelVec (NCHW only): MK output channels times NV vectors of consecutive output pixels,
//    broadcasting one weight per channel, read from the weights' own layout (nothing to pack,
//    which matters for one-shot calls).  Used where channel blocks would be mostly empty or
//    the plane is one long run of pixels (see pixelvec_preferred).
// Each output is stored once, with bias and activation fused.
//
// Memory layout choices, and why:
//  - The padded input rows that a block of output rows needs are copied into a tile laid out
//    [tile row][c][stride phase][q] (channel-major [c][tile row][q] for PixelVec's wide runs),
//    where padded column x = q * stride_w + phase.  For one tap and channel the pixels of a
//    block then sit at consecutive addresses, so every load has a constant displacement, and
//    the hot loop has no bounds checks (padding, whatever its mode, was resolved while
//    copying).  Without padding and stride phases (NCHW, stride_w 1) x is read in place.
//    A grouped NHWC layer's tile is instead its padded rows channels-last, every group's
//    channels, shared by the groups of an (image, row block) (EnginePlan::pixel_tile).
//  - With few independent (image, group, row block) units the thread team shares each tile
//    (filled together, then its outputs handed out dynamically); with many, each thread owns
//    whole units and their tiles, and no barrier is needed.
//  - NHWC output is stored straight from the registers; NCHW output of ChannelVec goes through
//    a per-thread row buffer [row][ow][NR] that is transposed into the output rows (kLanes x kLanes
//    in-register transposes for float).
#include <array>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/conv2d_direct.h"
#include "kernels/isa_common.h"

#if CPPCONV_SIMD
#include "kernels/simd.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

using namespace simd;

// A ChannelVec register block: MR output pixels x NV vectors of output channels.  Each ISA has
// two (simd/tiles.h): the narrow one, and a wide one that loads each input value once for twice
// the output channels, where rows are long enough for its fewer pixels (channelvec_accepts).
template <int MR_, int NV_>
struct ChannelBlock {
  static constexpr int MR = MR_, NV = NV_;
};
using NarrowBlock = ChannelBlock<kTiles.direct_pixels, kTiles.direct_vectors>;
using WideBlock = ChannelBlock<kTiles.wide_direct_pixels, kTiles.wide_direct_vectors>;
// Groups of one vector of output channels (RegNet's 16): the narrow block's pixels, weights
// packed one vector wide, not padded with a zero vector that doubles their bytes.
using OneVectorBlock = ChannelBlock<kTiles.direct_pixels, 1>;

template <class T, class B>
constexpr int kNR = kLanes<T> * B::NV;  // output channels per block
// Weights of one (k block, input-channel slice): kept in L1/L2 while every row of a work item
// uses them.
constexpr int64_t kSliceBytes = 256 << 10;
constexpr int64_t kPointwiseSliceBytes = 32 << 10;  // a 1x1 layer's, in L1 (channels_per_slice)
template <class T>
constexpr DType kDType = std::is_same_v<T, float> ? DType::Float32 : DType::Float64;

// Pixel-vector microkernels (for NCHW output): MK output channels x NV vectors of pixels.
constexpr int kMKMax = kTiles.pixelvec_channels;
// Whether a flat 1x1 convolution with few inputs runs PixelVec.  Its 4-channel AVX2 block reads
// the segment's input once per 4 output channels and lost to ChannelVec there; the 6-channel
// AVX-512 block won (docs/tuning.md, "Flat 1x1").
constexpr bool kFlatPrefersPixelVec = kMKMax >= 6;
// Vectors of pixels per block for MK channels: accumulators + pixel vectors + a broadcast
// fit the register file.
constexpr int nv_cap(int mk) { return std::min(kTiles.pixelvec_vectors, kTiles.pixelvec_registers / (mk + 1)); }

enum class Orientation { ChannelVec, PixelVec };

// How one call is cut up.  The "tile" is what the microkernels read: the padded input rows of
// a block of output rows, [tile row][c][stride phase][q]; or x itself when no padding or
// stride phases are needed (NCHW, stride_w 1, no padding), so nothing is copied.
struct EnginePlan {
  Orientation orientation;
  int64_t group_in, group_out, taps;
  bool direct_input;   // read x in place
  // From one output pixel to the next in the tile: 1, or stride_w * C when an NHWC x without
  // padding is read in place (a pixel's channels are then the contiguous ones, chan_pitch 1).
  int64_t pixel_pitch;
  bool flat;           // 1x1, stride 1, read in place: a plane is one run of pixels
  // PixelVec, stride 1, own tiles: the tile is channel-major [c][row][q] and the microkernels
  // run over whole padded rows, so a row block is one run of pixels (the phase_w - out_w
  // columns past each row's end are computed and dropped): no per-row overhead.
  bool wide;
  int64_t phase_w;     // q entries per stride phase
  int64_t chan_pitch;  // from one channel to the next
  int64_t row_pitch;   // from one tile row to the next
  int64_t rows_per_block, row_blocks;
  int64_t tile_elems;  // 0 when direct_input
  bool private_tiles;  // each thread owns whole units (below) and fills its own tiles; else a team shares one
  // A unit is one part of an (n, g, row block): a contiguous range of its items.  Blocks are
  // cut into parts where they are too few for every thread to own several.
  int64_t parts_per_block;
  // Output channel blocking: ChannelVec uses kNR-wide blocks; PixelVec balanced chunks of <= kMKMax.
  int64_t k_units;
  int64_t pixels_per_row;  // pixels one row-run covers (out_w, or out_h * out_w when flat)
  // Flat: pixels per segment.  A plane whose input outgrows L2 is cut into segments, each run
  // through every k chunk (PixelVec) or k block (ChannelVec) in turn, so that the segment's
  // input stays in L1 (ChannelVec: L2) for all of them instead of the whole plane streaming
  // past once per k chunk.  A ChannelVec segment is also one run of its microkernels: 14 x 14
  // outputs as rows took them 7 at a time.
  int64_t flat_segment;
  // Flat PixelVec: input channels per slice of the reduction, so that a segment's slice of input
  // stays in L1 while every k chunk of the segment reads it (the group's channels where one does).
  int64_t pixel_slice;
  // Flat PixelVec in segments: each (segment, slice) of input is first copied into the thread's
  // buffer, [c][flat_segment], which every k chunk of the segment then reads: in place, its
  // channels sit a plane apart, each line in its own page (no hardware prefetch) and, for planes
  // of a multiple of 1 KiB, in a few L1 sets.
  bool copies_segment;
  // ChannelVec: rows per work item (one segment when flat) and input channels per slice
  // (reduction blocking).
  int64_t rows_per_item, channels_per_slice;
  // ChannelVec with zero padding and finite weights (0 * inf is NaN; with packing inside the items,
  // each slice's own finiteness decides too): taps that read only padding are skipped.  A row's
  // kernel rows (a 7x7 kernel on a 7x7 plane spends 43 % of its taps on zeros), its edge pixels'
  // columns, and an image's depth taps (ConvCall::depth_src).
  bool skips_zero_padding;
  bool skip_padding_rows;
  // The edge pixels with taps that read only padding (EdgeTaps, the edge microkernels): a row's
  // first (bit 0) and last (bit 1).
  unsigned dead_column_edges;
  bool packs_in_items;  // ChannelVec: weights packed slice by slice inside the items
  // A grouped NHWC ChannelVec tile: the padded input rows of every group, channels-last,
  // [tile row][padded column][C] (see pixel_tile_preferred); phase_w is then the padded row's
  // width, a group reads its channels at offset g * group_in, and the microkernels step
  // pixel_pitch = stride_w * C.  Blocks go (n, row block, g), the tile shared by a block's groups.
  bool pixel_tile;
};

bool no_padding(const ConvProblem& p) {
  return p.pad_top == 0 && p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0;
}

// NCHW at stride_w 1 (the PixelVec and ChannelVec microkernels step one pixel at a time), or
// NHWC (ChannelVec, which steps pixel_pitch), as long as there is no padding to make up.
// (Depth taps come from kd slices of x, so they are copied into tiles.)
bool can_read_in_place(const ConvProblem& p) {
  return no_padding(p) && p.depth_taps == 0 && (p.layout == Layout::NHWC || p.stride_w == 1);
}

bool is_flat(const ConvProblem& p) {
  return can_read_in_place(p) && p.kernel_h == 1 && p.kernel_w == 1 && p.stride_h == 1 && p.stride_w == 1;
}

// A grouped NHWC layer copies one tile of all its channels per (image, row block), read by
// each group in turn: a tile per group read one group's line of every pixel, scattered lines
// whose misses made most of a stride-2 layer's time at batch 16 (docs/tuning.md, "RegNetX-400MF").
bool pixel_tile_preferred(const ConvProblem& p, Orientation o) {
  return o == Orientation::ChannelVec && p.layout == Layout::NHWC && !can_read_in_place(p) && p.depth_taps == 0 &&
         p.groups > 1;
}

constexpr int64_t kMinPrivateRows = 4;
constexpr int64_t kFlatSegmentBytes = 16 << 10;    // input of a flat PixelVec segment (see EnginePlan)
constexpr int64_t kFlatSliceBytes = 32 << 10;      // a flat PixelVec segment's copied slice of input, in L1
constexpr int64_t kFlatPlaneInL2Bytes = 256 << 10;  // a flat plane's input up to this is not cut
constexpr int64_t kChannelVecSegmentBytes = 192 << 10;  // input of a flat ChannelVec segment
constexpr int64_t kChannelVecSegmentOutBytes = 128 << 10;  // output of a flat NHWC expansion's segment
constexpr int64_t kFlatPlaneUncutBytes = 1 << 20;  // a plane up to this, with more weights, is not cut for L2

// ChannelVec reduction blocking: input channels per slice, so that a slice's packed weights
// (taps x channels x kNR) stay within ~256 KiB of L2 while every row of an item uses them.
// The packed layout follows it (each slice contiguous), so it depends on the shape alone.
template <class T, class B>
int64_t channels_per_slice(int64_t group_in, int64_t taps) {
  // A 1x1 layer's slice stays in L1 (its blocks reuse it once per pixel block, and with two FMA
  // units streaming it from L2 held the loop back; docs/tuning.md, "ResNet-50 and RegNetX-400MF
  // on Sapphire Rapids").  Its packed layout is [c][NR] for any slice.
  const int64_t bytes = taps == 1 ? kPointwiseSliceBytes : kSliceBytes;
  const int64_t slice = std::max<int64_t>(1, bytes / (int64_t(sizeof(T)) * kNR<T, B> * taps));
  return ceil_div(group_in, ceil_div(group_in, slice));
}

// A one-shot call on a small plane uses each k block in about one work item: packing all the
// weights up front would be a pass over memory of its own, so each item packs the slice it is
// about to use into its thread's buffer (in L2) instead.
constexpr int64_t kInItemPackPixels = 256;
bool packs_in_items(const ConvProblem& p) {
  return !p.weights_reused && p.batch * p.out_h * p.out_w <= kInItemPackPixels;
}

int64_t items_per_block(const EnginePlan& d, int64_t rows);

// Whether a unit's weights (all of the group's taps) outweigh the input it reads, both in
// elements: each unit streams the weights again, so cutting the input into more units costs.
bool weights_outweigh_input(const EnginePlan& d, int64_t input_elems) {
  return d.taps * d.group_in * d.group_out > input_elems;
}

template <class T, class B>
EnginePlan make_plan(const ConvProblem& p, Orientation o, int threads) {
  EnginePlan d{};
  d.orientation = o;
  d.group_in = p.in_channels / p.groups;
  d.group_out = p.out_channels / p.groups;
  d.taps = p.kernel_h * p.kernel_w;
  d.direct_input = can_read_in_place(p);
  // ChannelVec runs flat only where rows are short (14 pixels ran as 7 + 7): longer rows
  // already fill its blocks, and segments then only cost (docs/tuning.md, "Engine constants").
  // An NHWC expansion (more outputs than inputs per pixel) runs flat too: a segment's k blocks
  // run one after another, so its output pixels are written whole while in L2 instead of one
  // k block's lines per sweep of the plane, and its pixels fill whole blocks whatever the row
  // length (docs/tuning.md, "Whole networks").
  const bool flat_expansion =
      is_flat(p) && o == Orientation::ChannelVec && p.layout == Layout::NHWC && d.group_out > d.group_in;
  d.flat = is_flat(p) && (o == Orientation::PixelVec || p.out_w < 2 * B::MR || flat_expansion);
  d.pixel_pitch = 1;
  if (d.direct_input) {
    const bool nhwc = p.layout == Layout::NHWC;
    d.phase_w = p.in_w;
    d.chan_pitch = nhwc ? 1 : p.in_h * p.in_w;
    d.row_pitch = nhwc ? p.in_w * p.in_channels : p.in_w;
    d.pixel_pitch = nhwc ? p.stride_w * p.in_channels : 1;
    d.rows_per_block = p.out_h;
    d.tile_elems = 0;
  } else {
    const int64_t padded_w = input_cols_for(p, p.out_w);
    d.pixel_tile = pixel_tile_preferred(p, o);
    d.phase_w = d.pixel_tile ? padded_w : ceil_div(padded_w, p.stride_w);
    d.chan_pitch = d.pixel_tile ? 1 : p.stride_w * d.phase_w;
    d.row_pitch = d.pixel_tile ? padded_w * p.in_channels : d.group_in * d.chan_pitch;
    if (d.pixel_tile) d.pixel_pitch = p.stride_w * p.in_channels;
    // The tile should sit in L2 with room for the weights streaming past it.
    const int64_t budget = (384 << 10) / int64_t(sizeof(T));
    int64_t rows = p.out_h;
    while (rows > 1 && input_rows_for(p, rows) * d.row_pitch > budget) rows = (rows + 1) / 2;
    // Enough blocks for each thread to own several (no shared tile, no barriers), while a
    // block keeps enough rows that copying its kh - 1 extra tile rows stays cheap.
    // (Not when items pack their weights: each row block would pack them again.)
    // Nor where the group's weights outweigh the block's tile: each block streams them all
    // again, so the threads share a block's k blocks instead (parts_per_block below).
    while (!(o == Orientation::ChannelVec && packs_in_items(p)) &&
           p.batch * p.groups * ceil_div(p.out_h, rows) < 4 * threads && rows >= 2 * kMinPrivateRows &&
           (o != Orientation::ChannelVec || !weights_outweigh_input(d, input_rows_for(p, rows) * d.row_pitch)))
      rows = (rows + 1) / 2;
    d.rows_per_block = rows;
    d.tile_elems = input_rows_for(p, rows) * d.row_pitch;
  }
  d.row_blocks = ceil_div(p.out_h, d.rows_per_block);
  d.wide = o == Orientation::PixelVec && !d.direct_input && p.stride_h == 1 && p.stride_w == 1;
  if (d.wide) {
    d.row_pitch = d.phase_w;
    d.chan_pitch = input_rows_for(p, d.rows_per_block) * d.phase_w;
  }
  d.k_units = o == Orientation::ChannelVec ? ceil_div(d.group_out, kNR<T, B>) : ceil_div(d.group_out, kMKMax);
  d.pixels_per_row = d.flat ? p.out_h * p.out_w : p.out_w;
  d.packs_in_items = o == Orientation::ChannelVec && packs_in_items(p);
  if (d.flat && o == Orientation::ChannelVec) {
    // Segments of about equal length whose input sits in L2 beside the weights, in whole
    // rounds for the threads and enough for each to have several items; one (the plane) when
    // the items pack their own weights, which each segment would otherwise pack again.
    int64_t segments = 1;
    if (!d.packs_in_items) {
      const int64_t plane_elems = d.pixels_per_row * d.group_in;
      const int64_t plane_bytes = plane_elems * int64_t(sizeof(T));
      segments = std::max(ceil_div(plane_bytes, kChannelVecSegmentBytes), ceil_div(4 * threads, d.k_units));
      if (flat_expansion)  // its output, too, within L2
        segments = std::max(segments,
                            ceil_div(d.pixels_per_row * d.group_out * int64_t(sizeof(T)), kChannelVecSegmentOutBytes));
      // Each segment reads all the weights again: where they outweigh the plane's input (a late
      // stage's 7 x 7 or 14 x 14 plane, 0.2-4 MiB of weights), the plane is cut only where its
      // k blocks are too few for the threads, and the k blocks stream past it once, the threads
      // sharing them out (docs/tuning.md, "ResNet-50 and RegNetX-400MF on Sapphire Rapids").
      const bool weights_outweigh = weights_outweigh_input(d, plane_elems) && plane_bytes <= kFlatPlaneUncutBytes;
      if (weights_outweigh) segments = ceil_div(4 * threads, d.k_units);
      if (!weights_outweigh || segments > 1)  // whole rounds: 17 on 2 threads would run 9 + 8
        segments = ceil_div(segments, int64_t(threads)) * threads;
      segments = std::min(segments, ceil_div(d.pixels_per_row, B::MR));
    }
    d.flat_segment = ceil_div(d.pixels_per_row, segments);
  } else if (d.flat) {
    // Whole microkernel blocks (the last segment takes the remainder); a plane whose input sits
    // in L2 anyway stays one run (more, shorter items only cost there).
    constexpr int64_t kBlock = kLanes<T> * nv_cap(kMKMax);
    const bool in_l2 = d.pixels_per_row * d.group_in * int64_t(sizeof(T)) <= kFlatPlaneInL2Bytes;
    d.flat_segment =
        in_l2 ? d.pixels_per_row
              : std::max<int64_t>(kBlock, kFlatSegmentBytes / int64_t(sizeof(T) * d.group_in) / kBlock * kBlock);
    // A plane that streams from memory in segments: each segment's input is copied, slice by
    // slice, into the thread's buffer before its k chunks read it (docs/tuning.md, "Channels-first
    // 1x1 layers: the segment's input copied").
    d.pixel_slice = d.group_in;
    if (!in_l2) {
      const int64_t per_slice = std::max<int64_t>(1, kFlatSliceBytes / int64_t(sizeof(T) * d.flat_segment));
      d.pixel_slice = ceil_div(d.group_in, ceil_div(d.group_in, per_slice));
      d.copies_segment = d.k_units > 1;  // (one chunk reads it once: nothing to gain)
    }
  }
  d.channels_per_slice = channels_per_slice<T, B>(d.group_in, d.taps);
  // Enough items for each thread to have several: 8 where x is read in place (a whole plane
  // is one block, and the last item's tail is what the threads wait for at its end).
  const int64_t items_per_thread = d.direct_input ? 8 : 4;
  const int64_t row_groups = std::max<int64_t>(1, ceil_div(items_per_thread * threads, d.k_units));
  d.rows_per_item = d.flat ? 1 : std::min<int64_t>(16, std::max<int64_t>(1, ceil_div(d.rows_per_block, row_groups)));
  // Enough independent units for every thread to own several: no barriers, no shared tile.
  // Where (n, g, row block)s are fewer, each is cut into parts, and every thread taking a part
  // of a block copies that block's tile itself: at most one extra copy of the input per thread,
  // cheap where each input value feeds many multiply-adds (k blocks x taps), and no thread
  // waits for another until the call ends.  Otherwise the team fills each tile together (one
  // barrier after the fill and one after the outputs, per block).
  const int64_t blocks = p.batch * p.groups * d.row_blocks;
  const int64_t items = items_per_block(d, d.rows_per_block);
  d.parts_per_block = 1;
  d.private_tiles = threads == 1 || blocks >= 4 * threads;
  if (!d.private_tiles && (d.direct_input || d.k_units * d.taps >= 8) && items >= 2) {
    d.private_tiles = true;
    d.parts_per_block = std::min(items, ceil_div(8 * int64_t(threads), blocks));
  }
  return d;
}

// PixelVec output channel chunk u of the group: [first, first + size), sizes balanced.
struct Chunk {
  int64_t first, size;
};
Chunk k_chunk(const EnginePlan& d, int64_t u) {
  const int64_t base = d.group_out / d.k_units, extra = d.group_out % d.k_units;
  return {u * base + std::min(u, extra), base + (u < extra ? 1 : 0)};
}

// ChannelVec packing: [g][k block][channel slice][tap][c][NR], zero past the group's last
// output channel.  Each slice is contiguous: with [tap][c] over all channels, a slice's taps
// would sit a whole tap (C x kNR values, 64 KiB at 512 channels) apart, all in the same few L2
// sets, and a 7x7 kernel's 49 of them would evict each other.
// After the weights, one byte per (group, k block): whether its weights are all finite (then
// taps that read only zero padding may be skipped; 0 * inf would be NaN).
template <class T, class B>
size_t channelvec_weight_bytes(const ConvProblem& p) {
  const int64_t gi = p.in_channels / p.groups, go = p.out_channels / p.groups;
  return size_t(p.groups * ceil_div(go, kNR<T, B>) * p.kernel_h * p.kernel_w * gi * kNR<T, B>) * sizeof(T);
}
template <class T, class B>
int64_t channelvec_units(const ConvProblem& p) {
  return p.groups * ceil_div(p.out_channels / p.groups, kNR<T, B>);
}
template <class T, class B>
size_t channelvec_packed_bytes(const ConvProblem& p) {
  if (packs_in_items(p)) return 0;
  return channelvec_weight_bytes<T, B>(p) + size_t(channelvec_units<T, B>(p));
}
template <class T, class B>
bool channelvec_weights_finite(const ConvProblem& p, const void* packed) {
  const unsigned char* finite = static_cast<const unsigned char*>(packed) + channelvec_weight_bytes<T, B>(p);
  return std::all_of(finite, finite + channelvec_units<T, B>(p), [](unsigned char f) { return f != 0; });
}

// Packs channels [0, channels) of one k block: row kk of the source holds (c, tap) values
// with the block's first channel at wb + kk * row_stride; the packed block is
// [tap][c][NR], zero past `valid` rows.  Returns whether the weights are all finite.
// float: square blocks of kLanes rows x columns are transposed in registers, so each packed
// (tap, c) vector of output channels is one store.
template <class T, class B>
bool pack_block(const T* wb, int64_t row_stride, int64_t valid, int64_t channels, int64_t taps, T* out) {
  if constexpr (std::is_same_v<T, float>) {
    constexpr int L = kLanes<float>;
    // inf * 0 and NaN * 0 are NaN; four independent sums keep the FMA chains short (one chain
    // through every loaded vector took the pack's time).
    Vec<float> nan_if_not_finite[4] = {vzero(), vzero(), vzero(), vzero()};
    const int64_t cols = channels * taps;
    for (int64_t kk0 = 0; kk0 < kNR<float, B>; kk0 += L) {
      int64_t c = 0, t = 0;  // (channel, tap) of column col0
      for (int64_t col0 = 0; col0 < cols; col0 += L) {
        const int n = int(std::min<int64_t>(L, cols - col0));
        const Mask<float> cmask = lane_mask(0, n);
        Vec<float> v[L];
#pragma GCC unroll 16
        for (int m = 0; m < L; ++m) {
          const float* src = wb + (kk0 + m) * row_stride + col0;
          // The rows stream from memory side by side: ask for their lines well ahead.
          if (kk0 + m < valid) prefetch_l1(src + 8 * L);
          v[m] = kk0 + m < valid ? (n == L ? vload(src) : vload_mask(src, cmask)) : vzero();
        }
#pragma GCC unroll 16
        for (int m = 0; m < L; ++m) nan_if_not_finite[m % 4] = vfma(v[m], vzero(), nan_if_not_finite[m % 4]);
        transpose_square(v);
#pragma GCC unroll 16
        for (int j = 0; j < L; ++j) {
          if (j < n) {
            vstore(out + (t * channels + c) * kNR<float, B> + kk0, v[j]);
            if (++t == taps) t = 0, ++c;
          }
        }
      }
    }
    alignas(64) float lanes[4][L];
    for (int i = 0; i < 4; ++i) vstore(lanes[i], nan_if_not_finite[i]);
    return std::all_of(&lanes[0][0], &lanes[0][0] + 4 * L, [](float f) { return f == 0.0f; });
  } else {
    // A cache-blocked transpose: the kNR source rows of a few channels stay in L1 while the
    // destination is written in order.
    constexpr int64_t kChannelsPerPass = 8;
    bool all_finite = true;
    for (int64_t c0 = 0; c0 < channels; c0 += kChannelsPerPass)
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = c0; c < std::min(channels, c0 + kChannelsPerPass); ++c) {
          T* o = out + (t * channels + c) * kNR<T, B>;
          for (int64_t kk = 0; kk < valid; ++kk) {
            o[kk] = wb[kk * row_stride + c * taps + t];
            all_finite = all_finite && std::isfinite(o[kk]);
          }
          for (int64_t kk = valid; kk < kNR<T, B>; ++kk) o[kk] = T(0);
        }
    return all_finite;
  }
}

template <class T, class B>
void channelvec_pack(const ConvProblem& p, const void* weight, void* packed, int threads) {
  const T* w = static_cast<const T*>(weight);
  T* dst = static_cast<T*>(packed);
  const int64_t gi = p.in_channels / p.groups, go = p.out_channels / p.groups;
  const int64_t taps = p.kernel_h * p.kernel_w, kb_count = ceil_div(go, kNR<T, B>);
  const int64_t block = taps * gi * kNR<T, B>;  // one (group, k block)
  unsigned char* finite = static_cast<unsigned char*>(packed) + channelvec_weight_bytes<T, B>(p);
  const int64_t per_slice = channels_per_slice<T, B>(gi, taps);
#pragma omp parallel for schedule(static) num_threads(threads) if (p.groups * kb_count > 1 && threads > 1)
  for (int64_t unit = 0; unit < p.groups * kb_count; ++unit) {
    const int64_t g = unit / kb_count, kb = unit % kb_count;
    const int64_t valid = std::min<int64_t>(kNR<T, B>, go - kb * kNR<T, B>);
    const T* wb = w + (g * go + kb * kNR<T, B>) * gi * taps;
    bool all_finite = true;
    for (int64_t c_begin = 0; c_begin < gi; c_begin += per_slice) {
      const int64_t c_count = std::min(per_slice, gi - c_begin);
      all_finite = pack_block<T, B>(wb + c_begin * taps, gi * taps, valid, c_count, taps,
                                    dst + unit * block + c_begin * taps * kNR<T, B>) &&
                   all_finite;
    }
    finite[unit] = all_finite;
  }
}

// channelvec_pack's inverse: the packed blocks hold every weight as it is, so the layer's
// (K, C/groups, kh, kw) weights come back bit for bit (the zero rows past a group's last output
// channel and the finite flags are dropped).
template <class T, class B>
void channelvec_unpack(const ConvProblem& p, const void* packed, void* weight) {
  const T* src = static_cast<const T*>(packed);
  T* w = static_cast<T*>(weight);
  const int64_t gi = p.in_channels / p.groups, go = p.out_channels / p.groups;
  const int64_t taps = p.kernel_h * p.kernel_w, kb_count = ceil_div(go, kNR<T, B>);
  const int64_t block = taps * gi * kNR<T, B>;
  const int64_t per_slice = channels_per_slice<T, B>(gi, taps);
  for (int64_t unit = 0; unit < p.groups * kb_count; ++unit) {
    const int64_t g = unit / kb_count, kb = unit % kb_count;
    const int64_t valid = std::min<int64_t>(kNR<T, B>, go - kb * kNR<T, B>);
    T* wb = w + (g * go + kb * kNR<T, B>) * gi * taps;
    for (int64_t c_begin = 0; c_begin < gi; c_begin += per_slice) {
      const int64_t c_count = std::min(per_slice, gi - c_begin);
      const T* slice = src + unit * block + c_begin * taps * kNR<T, B>;  // [tap][c][NR]
      for (int64_t kk = 0; kk < valid; ++kk)
        for (int64_t c = 0; c < c_count; ++c)
          for (int64_t t = 0; t < taps; ++t)
            wb[kk * gi * taps + (c_begin + c) * taps + t] = slice[(t * c_count + c) * kNR<T, B> + kk];
    }
  }
}

// Memory a thread needs next, `row_bytes` at a time `row_stride` apart, asked for one cache line
// at a time from inside the microkernel's loop, so that it comes into L2 in the shadow of the
// arithmetic.
struct PrefetchStream {
  const char* row = nullptr;
  int64_t row_bytes = 0, row_stride = 0, rows_left = 0, offset = 0;
  // (Inlined: a call in the microkernels' loop would make GCC keep their sums in memory.)
  CPPCONV_ALWAYS_INLINE void step() {
    prefetch_l2(row + offset);
    offset += 64;
    if (offset >= row_bytes) offset = 0, row += row_stride, --rows_left;
  }
};

// What the microkernels prefetch: first the weights of the thread's next slice (the packed slice,
// or for items that pack their own the raw rows): large layers' weights live in memory (7x7 x
// 512 x 512 is 51 MB), and packing raw weights from memory was a large share of a one-shot call;
// a burst of prefetches at the start of each slice left the loads behind it waiting
// (docs/tuning.md).  Then the output lines the item will write: at batch 16 they are in memory,
// and the stores waited on their misses (NCHW: the item's transposes, in one burst).  Then
// the input of the thread's next tile: at batch 16 it comes from memory, and its copy waited on
// every one of a block's short rows.
struct NextPrefetch {
  PrefetchStream weights, output;
  PrefetchStream* next_tile = nullptr;
  // A flat channels-last plane's stores, straight to a y too large to stay in cache (no `output`
  // stream there): each block asks for the lines of the block two ahead, as for the residual
  // (docs/tuning.md, "Flat channels-last 1x1 layers: the output asked for two blocks ahead").
  bool output_ahead = false;
  bool active() const {
    return weights.rows_left > 0 || output.rows_left > 0 || (next_tile && next_tile->rows_left > 0);
  }
  CPPCONV_ALWAYS_INLINE void step() {
    if (weights.rows_left > 0) weights.step();
    else if (output.rows_left > 0) output.step();
    else if (next_tile && next_tile->rows_left > 0) next_tile->step();
  }
};

// What the edge microkernels skip of a row's first or last block: per tap, whether the row's
// first pixel (bit 0 of dead[t]) or last (bit 1) reads only zero padding there; `edges`, the
// bits this block's pixels have (3: the row is one block).  Zero padding is skipped where every
// weight is finite (0 * inf is NaN).  oneDNN skips it too: on a 14-pixel row, a 3x3 kernel's
// padding columns are 4.8 % of its multiply-adds.
struct EdgeTaps {
  const uint8_t* dead = nullptr;
  unsigned edges = 0;
};

// The simple activation on every accumulator of a block, the activation chosen once per block:
// GCC kept apply_simple_activation's switch for each vector of the stores.
template <Activation kKind, class V, int M, int N>
inline void activate_block_as(V (&acc)[M][N], FusedActivation act) {
  act.kind = kKind;
#pragma GCC unroll 16
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
    for (int v = 0; v < N; ++v) acc[m][v] = apply_simple_activation(acc[m][v], act);
}
template <class V, int M, int N>
inline void activate_block(V (&acc)[M][N], FusedActivation act) {
  switch (act.kind) {
    case Activation::None: return;
    case Activation::Relu: return activate_block_as<Activation::Relu>(acc, act);
    case Activation::Relu6: return activate_block_as<Activation::Relu6>(acc, act);
    case Activation::LeakyRelu: return activate_block_as<Activation::LeakyRelu>(acc, act);
    case Activation::HardSigmoid: return activate_block_as<Activation::HardSigmoid>(acc, act);
    case Activation::HardSwish: return activate_block_as<Activation::HardSwish>(acc, act);
    default:  // any other kind apply_simple_activation handles, chosen per vector
#pragma GCC unroll 16
      for (int m = 0; m < M; ++m)
#pragma GCC unroll 16
        for (int v = 0; v < N; ++v) acc[m][v] = apply_simple_activation(acc[m][v], act);
  }
}

// ChannelVec microkernel: `blocks` consecutive blocks of MR pixels x NV vectors of channels, one input
// broadcast per pixel.  (A run of blocks per call: with a short reduction, 16 input channels
// of a 1x1 layer, a call per block spent about as long in the call and its set-up as in the
// multiply-adds; docs/tuning.md.)
//   x:      tile address of pixel 0, tap offset 0, channel 0; pixel m is at + m * pixel_pitch
//           (kUnitPitch: pixel_pitch is 1, the tile's layout, and the offsets are constants)
//   tap_off[t]: offset of tap t in the tile;  chan_pitch: from one channel to the next
//   w:      packed weights of this k block, [tap][c][kPackedNV vectors]
//   out:    pixel m's outputs at out + m * out_pixel_stride (kvalid of them are stored)
//   residual: nullptr, or values laid out as out's, added to the sums before the activation
//   prefetch: one line of it every other channel step
//   edge:   kEdge only: the taps its edge pixels skip (EdgeTaps), for a row's first or last block alone
//   w_chan_step: from one channel's packed weights to the next: kPackedNV vectors, or kd times
//           that for every kd-th channel (one depth tap's, compute_items)
// NV: vectors of output channels computed, the block's kPackedNV, or fewer for a last k block
// whose other vectors would be all padding (K = 24 or 72 on the 2-vector block: half its FMAs).
// kEdge: one block, whose edge pixels skip the taps that read only their zero padding.  (Its own
// instantiation: with the classes' loops in it, GCC kept every block's sums in memory.)
template <class T, int MR, int NV, int kPackedNV, bool kUnitPitch, bool kEdge>
void channelvec_microkernel(const T* x, const int64_t* tap_off, int64_t taps, int64_t channels, int64_t tap_stride,
                            int64_t chan_pitch, int64_t pixel_pitch, const T* w, const T* bias, int kvalid,
                            bool accumulate, FusedActivation act, T* out, int64_t out_pixel_stride, const T* residual,
                            NextPrefetch* prefetch, int64_t blocks, const EdgeTaps* edge, int64_t w_chan_step) {
  if constexpr (kUnitPitch) pixel_pitch = 1;
  // The residual's lines of a block (and the output's, NextPrefetch::output_ahead), asked for two
  // blocks ahead: read where the stores are, they come from memory, and a load of them waiting in
  // the epilogue cost more than a separate pass.
  const auto prefetch_block = [&](const T* r) {
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
      for (int64_t byte = 0; byte < int64_t(kvalid * sizeof(T)); byte += 64)
        prefetch_l1(reinterpret_cast<const char*>(r + m * out_pixel_stride) + byte);
  };
  const bool output_ahead = prefetch->output_ahead;
  if (residual) {
    prefetch_block(residual);
    if (blocks > 1) prefetch_block(residual + MR * out_pixel_stride);
  }
  if (output_ahead) {
    prefetch_block(out);
    if (blocks > 1) prefetch_block(out + MR * out_pixel_stride);
  }
  for (int64_t blk = 0; blk < blocks; ++blk, x += MR * pixel_pitch, out += MR * out_pixel_stride) {
    if (residual && blk + 2 < blocks) prefetch_block(residual + 2 * MR * out_pixel_stride);
    if (output_ahead && blk + 2 < blocks) prefetch_block(out + 2 * MR * out_pixel_stride);
    Vec<T> acc[MR][NV];
    if (accumulate) {  // a later slice of input channels: continue the stored partial sums
#pragma GCC unroll 16
      for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) {
          acc[m][v] = vload_upto(out + m * out_pixel_stride + v * kLanes<T>, kvalid - v * kLanes<T>);
        }
      }
    } else {
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        const Vec<T> b = bias ? vload_upto(bias + v * kLanes<T>, kvalid - v * kLanes<T>) : vzero<T>();
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m) acc[m][v] = b;
      }
    }
    // Tap t's channels for pixels [kFirst, kEnd) of the block.
    const auto reduce_tap = [&](auto first, auto end, auto with_prefetch, int64_t t) {
      constexpr int kFirst = decltype(first)::value, kEnd = decltype(end)::value;
      if constexpr (kFirst < kEnd) {
        const T* xc = x + tap_off[t];
        const T* wc = w + t * tap_stride;
        for (int64_t c = 0; c < channels; ++c) {
          Vec<T> wv[NV];
#pragma GCC unroll 16
          for (int v = 0; v < NV; ++v) wv[v] = vload(wc + v * kLanes<T>);
#pragma GCC unroll 16
          for (int m = kFirst; m < kEnd; ++m) {
            const Vec<T> a = vbroadcast(xc + m * pixel_pitch);
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) acc[m][v] = vfma(a, wv[v], acc[m][v]);
          }
          xc += chan_pitch;
          wc += w_chan_step;
          if constexpr (decltype(with_prefetch)::value)
            if (c & 1) prefetch->step();
        }
      }
    };
    using Zero = std::integral_constant<int, 0>;
    using One = std::integral_constant<int, 1>;
    using All = std::integral_constant<int, MR>;
    using AllButLast = std::integral_constant<int, MR - 1>;
    if constexpr (kEdge) {  // the taps in their order (every pixel sums as in any other block)
      for (int64_t t = 0; t < taps; ++t) {
        switch (edge->dead[t] & edge->edges) {
          case 0: reduce_tap(Zero{}, All{}, std::true_type{}, t); break;
          case 1: reduce_tap(One{}, All{}, std::true_type{}, t); break;
          case 2: reduce_tap(Zero{}, AllButLast{}, std::true_type{}, t); break;
          default: reduce_tap(One{}, AllButLast{}, std::true_type{}, t);
        }
      }
    } else if (prefetch->active()) {  // (two copies of the loop: where nothing is left to
      // prefetch, as for a small layer's weights, the loop keeps no test of it)
      for (int64_t t = 0; t < taps; ++t) reduce_tap(Zero{}, All{}, std::true_type{}, t);
    } else {
      for (int64_t t = 0; t < taps; ++t) reduce_tap(Zero{}, All{}, std::false_type{}, t);
    }
    if (residual) {  // in the order of the unfused steps: the sum (bias first), + residual, activation
      const Vec<T> one = vset1(T(1));  // (r * 1 + acc: the add, exactly, for every dtype's vectors)
#pragma GCC unroll 16
      for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) {
          const int n = kvalid - v * kLanes<T>;
          if (n > 0) acc[m][v] = vfma(vload_upto(residual + m * out_pixel_stride + v * kLanes<T>, n), one, acc[m][v]);
        }
      }
      residual += MR * out_pixel_stride;
    }
    activate_block(acc, act);
    if (kvalid >= NV * kLanes<T>) {
#pragma GCC unroll 16
      for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) vstore(out + m * out_pixel_stride + v * kLanes<T>, acc[m][v]);
      continue;
    }
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      T* o = out + m * out_pixel_stride;
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        const int n = kvalid - v * kLanes<T>;
        if (n >= kLanes<T>) vstore(o + v * kLanes<T>, acc[m][v]);
        else if (n > 0) vstore_partial(o + v * kLanes<T>, acc[m][v], n);
      }
    }
  }
}

// PixelVec microkernel: MK output channels x NV vectors of consecutive pixels, one weight
// broadcast per channel.  The last vector holds last_valid pixels (masked loads and stores,
// so nothing past the run is touched).  Broadcasts read the weights in their own (K, C, kh,
// kw) layout, so this orientation packs nothing (a one-shot conv2d pays no repacking).
//   w:   weight of (first channel, c = 0, tap 0); channel k's row at w + k * w_k_stride
//   out: channel k's pixels at out + k * out_chan_stride
template <class T, int MK, int NV_>
void pixelvec_microkernel(const T* x, const int64_t* tap_off, int64_t taps, int64_t channels, int64_t chan_pitch,
                          const T* w, int64_t w_k_stride, const T* bias, int last_valid, FusedActivation act, T* out,
                          int64_t out_chan_stride, bool accumulate) {
  constexpr int NV = NV_ < nv_cap(MK) ? NV_ : nv_cap(MK);
  Vec<T> acc[MK][NV];
  if (accumulate) {  // a later slice of the reduction: the partial sums wait in out
#pragma GCC unroll 16
    for (int k = 0; k < MK; ++k) {
      const T* o = out + k * out_chan_stride;
#pragma GCC unroll 16
      for (int v = 0; v + 1 < NV; ++v) acc[k][v] = vload(o + v * kLanes<T>);
      acc[k][NV - 1] = vload_partial(o + (NV - 1) * kLanes<T>, last_valid);
    }
  } else {
#pragma GCC unroll 16
    for (int k = 0; k < MK; ++k) {
      const Vec<T> b = bias ? vset1(bias[k]) : vzero<T>();
#pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[k][v] = b;
    }
  }
  // Channels outer, taps inner: each channel's kh x kw weights of the MK output channels are
  // contiguous in the unpacked layout, so the broadcasts walk MK short runs instead of
  // touching MK new cache lines per step (a 7x7 kernel reads 49 values per line fetched).
  for (int64_t c = 0; c < channels; ++c) {
    const T* xc = x + c * chan_pitch;
    const T* wc = w + c * taps;
    for (int64_t t = 0; t < taps; ++t) {
      const T* xt = xc + tap_off[t];
      Vec<T> xv[NV];
#pragma GCC unroll 16
      for (int v = 0; v + 1 < NV; ++v) xv[v] = vload(xt + v * kLanes<T>);
      // (A full last vector by a plain load: masked loads cost more.)
      xv[NV - 1] = last_valid == kLanes<T> ? vload(xt + (NV - 1) * kLanes<T>)
                                           : vload_partial(xt + (NV - 1) * kLanes<T>, last_valid);
#pragma GCC unroll 8
      for (int k = 0; k < MK; ++k) {
        const Vec<T> wb = vbroadcast(wc + k * w_k_stride + t);
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) acc[k][v] = vfma(xv[v], wb, acc[k][v]);
      }
    }
  }
#pragma GCC unroll 16
  for (int k = 0; k < MK; ++k) {
    T* o = out + k * out_chan_stride;
#pragma GCC unroll 16
    for (int v = 0; v + 1 < NV; ++v) vstore(o + v * kLanes<T>, apply_simple_activation(acc[k][v], act));
    vstore_partial(o + (NV - 1) * kLanes<T>, apply_simple_activation(acc[k][NV - 1], act), last_valid);
  }
}

template <class T>
using ChannelVecFn = void (*)(const T*, const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t, const T*, const T*,
                              int, bool, FusedActivation, T*, int64_t, const T*, NextPrefetch*, int64_t,
                              const EdgeTaps*, int64_t);
template <class T>
using MicrokernelFn = void (*)(const T*, const int64_t*, int64_t, int64_t, int64_t, const T*, int64_t, const T*, int,
                               FusedActivation, T*, int64_t, bool);

template <class T, int NV, int kPackedNV, bool kUnitPitch, bool kEdge, int... M>
constexpr std::array<ChannelVecFn<T>, sizeof...(M)> channelvec_table(std::integer_sequence<int, M...>) {
  return {&channelvec_microkernel<T, M + 1, NV, kPackedNV, kUnitPitch, kEdge>...};
}
// kChannelVec<T, B, NV, kUnitPitch>[mr - 1] handles mr pixels x NV vectors of channels of B's
// packed weights.
template <class T, class B, int NV, bool kUnitPitch>
constexpr auto kChannelVec =
    channelvec_table<T, NV, B::NV, kUnitPitch, false>(std::make_integer_sequence<int, B::MR>{});
// The edge microkernels, for full k blocks read from a tile (the common case; others compute the
// zeros).
template <class T, class B>
constexpr auto kChannelVecEdge =
    channelvec_table<T, B::NV, B::NV, true, true>(std::make_integer_sequence<int, B::MR>{});

// The microkernels of block B for k blocks of `kvalid` channels: the fewest vectors that hold them.
template <class T, class B>
const ChannelVecFn<T>* channelvec_microkernels(int kvalid, bool unit_pitch) {
  if (kvalid <= kLanes<T>) return unit_pitch ? kChannelVec<T, B, 1, true>.data() : kChannelVec<T, B, 1, false>.data();
  if constexpr (B::NV > 2)
    if (kvalid <= 2 * kLanes<T>)
      return unit_pitch ? kChannelVec<T, B, 2, true>.data() : kChannelVec<T, B, 2, false>.data();
  return unit_pitch ? kChannelVec<T, B, B::NV, true>.data() : kChannelVec<T, B, B::NV, false>.data();
}

constexpr int kNVMax = nv_cap(1);
template <class T, int MK, int... V>
constexpr std::array<MicrokernelFn<T>, kNVMax> pixelvec_row(std::integer_sequence<int, V...>) {
  return {&pixelvec_microkernel<T, MK, V + 1>...};
}
template <class T, int... M>
constexpr std::array<std::array<MicrokernelFn<T>, kNVMax>, kMKMax> pixelvec_table(std::integer_sequence<int, M...>) {
  return {pixelvec_row<T, M + 1>(std::make_integer_sequence<int, kNVMax>{})...};
}
// kPixelVec<T>[mk - 1][nv - 1]; nv is at most nv_cap(mk).
template <class T>
constexpr auto kPixelVec = pixelvec_table<T>(std::make_integer_sequence<int, kMKMax>{});

// Where each tile column comes from, worked out once per call: per stride phase the interior
// run [q_lo, q_hi) copies source columns first, first + stride_w, ...; the few padding columns
// are listed with their source column (or -1 for a zero).
struct ColumnPlan {
  struct Phase {
    int64_t q_lo, q_hi, first;
  };
  struct Edge {
    int64_t offset, src;  // offset in the tile row (phase * phase_w + q)
  };
  std::vector<Phase> phases;
  std::vector<Edge> edges;
};

ColumnPlan plan_columns(const ConvCall& call, const EnginePlan& d) {
  const ConvProblem& p = call.p;
  const int64_t sw = p.stride_w, cols = p.in_w + p.pad_left + p.pad_right;
  ColumnPlan plan;
  for (int64_t ph = 0; ph < sw; ++ph) {
    // A phase no tap reads (the odd columns of a 1x1 stride-2 convolution) is not copied.
    bool read = false;
    for (int64_t j = 0; j < p.kernel_w; ++j) read = read || (j * p.dilation_w) % sw == ph;
    if (!read) {
      plan.phases.push_back({0, 0, 0});
      continue;
    }
    const int64_t q_lo = std::min(d.phase_w, std::max<int64_t>(0, ceil_div(p.pad_left - ph, sw)));
    const int64_t q_hi = std::max(q_lo, std::min(d.phase_w, ceil_div(p.pad_left + p.in_w - ph, sw)));
    plan.phases.push_back({q_lo, q_hi, q_lo * sw + ph - p.pad_left});
    for (int64_t q = 0; q < d.phase_w; ++q) {
      if (q >= q_lo && q < q_hi) continue;
      const int64_t col = q * sw + ph;
      plan.edges.push_back({ph * d.phase_w + q, col < cols ? call.col_src[col] : -1});
    }
  }
  return plan;
}

// n values from src to dst by vector loads and stores, a last partial vector as a whole one
// ending at the run's end (masks only for runs shorter than a vector): memmove's call and
// set-up were most of the cost of copying a 14-pixel row (56 bytes).
template <class T>
inline void copy_run(T* dst, const T* src, int64_t n) {
  constexpr int L = kLanes<T>;
  if (n < L) {
    if (n > 0) vstore_partial(dst, vload_partial(src, int(n)), int(n));
    return;
  }
  for (int64_t i = 0; i + L < n; i += L) vstore(dst + i, vload(src + i));
  vstore(dst + n - L, vload(src + n - L));
}

// Copies tile row r, channels [c_begin, c_end) of the group starting at channel c0.  With depth
// taps (p.depth_taps = kd) tile channel c * kd + a is channel c0 / kd + c of tap a's depth slice
// (ConvCall::depth_src): per tap the channels are x's consecutive ones, kd tile channels apart.
template <class T>
void fill_tile_unit(const ConvCall& call, const EnginePlan& d, const ColumnPlan& columns, int64_t n, int64_t c0,
                    int64_t row0, int64_t r, int64_t c_begin, int64_t c_end, T* tile) {
  const ConvProblem& p = call.p;
  const int64_t src_row = call.row_src[row0 + r];
  T* dst = tile + r * d.row_pitch;
  if (d.pixel_tile) {  // [padded column][C]: each pixel's channels [c_begin, c_end) as one run
    const int64_t count = c_end - c_begin, xs_c = call.x_stride.c;
    const T* xr = src_row < 0 ? nullptr
                              : static_cast<const T*>(call.x) + n * call.x_stride.n + src_row * call.x_stride.h +
                                    (c0 + c_begin) * xs_c;
    for (int64_t col = 0; col < d.phase_w; ++col) {
      T* o = dst + col * p.in_channels + c_begin;
      const int64_t src_col = xr ? call.col_src[col] : -1;
      if (src_col < 0) {
        std::memset(o, 0, sizeof(T) * size_t(count));
      } else if (xs_c == 1) {
        copy_run(o, xr + src_col * call.x_stride.w, count);
      } else {
        for (int64_t c = 0; c < count; ++c) o[c] = xr[src_col * call.x_stride.w + c * xs_c];
      }
    }
    return;
  }
  const int64_t row_floats = p.stride_w * d.phase_w;
  if (src_row < 0) {
    for (int64_t c = c_begin; c < c_end; ++c) std::memset(dst + c * d.chan_pitch, 0, sizeof(T) * row_floats);
    return;
  }
  const int64_t sw = p.stride_w, xs_c = call.x_stride.c, xs_w = call.x_stride.w;
  const int64_t kd = call.depth_src ? p.depth_taps : 1;
  // Source row of tile channel c, or nullptr where its depth slice is zero padding.
  const auto channel_row = [&, x = static_cast<const T*>(call.x)](int64_t c) -> const T* {
    if (!call.depth_src) return x + n * call.x_stride.n + src_row * call.x_stride.h + (c0 + c) * xs_c;
    const int64_t slice = call.depth_src[n * kd + c % kd];
    return slice < 0 ? nullptr : x + slice + src_row * call.x_stride.h + (c0 / kd + c / kd) * xs_c;
  };
  // Per depth tap a, the tile channels c * kd + a in [c_begin, c_end) read source channels
  // [c_lo, c_hi) (consecutive ones, kd tile channels apart).
  const auto tap_channels = [&](int64_t a) {
    return std::pair{(c_begin - a + kd - 1) / kd, (c_end - a + kd - 1) / kd};
  };
  if (xs_w == 1) {  // NCHW: per channel, contiguous source rows
    for (int64_t a = 0; a < kd; ++a) {
      const auto [c_lo, c_hi] = tap_channels(a);
      const T* xr = c_lo < c_hi ? channel_row(c_lo * kd + a) : nullptr;  // source channel c_lo of the row
      for (int64_t c = c_lo; c < c_hi; ++c) {
        T* out = dst + (c * kd + a) * d.chan_pitch;
        if (!xr) {
          std::memset(out, 0, sizeof(T) * row_floats);
          continue;
        }
        const T* src = xr + (c - c_lo) * xs_c;
        for (const ColumnPlan::Edge& e : columns.edges) out[e.offset] = e.src < 0 ? T(0) : src[e.src];
        for (int64_t ph = 0; ph < sw; ++ph) {
          const ColumnPlan::Phase& f = columns.phases[size_t(ph)];
          T* o = out + ph * d.phase_w;
          if (sw == 1) {
            copy_run(o + f.q_lo, src + f.first, f.q_hi - f.q_lo);
          } else {
            for (int64_t q = f.q_lo; q < f.q_hi; ++q) o[q] = src[f.first + (q - f.q_lo) * sw];
          }
        }
      }
    }
    return;
  }
  // NHWC: per depth tap and column, contiguous source channels
  for (int64_t a = 0; a < kd; ++a) {
    const auto [c_lo, c_hi] = tap_channels(a);
    if (c_lo >= c_hi) continue;
    const T* xr = channel_row(c_lo * kd + a);  // source channel c_lo of the row
    T* dst_a = dst + (c_lo * kd + a) * d.chan_pitch;
    const int64_t pitch = kd * d.chan_pitch;  // from one source channel to the next in the tile
    if (!xr) {
      for (int64_t c = c_lo; c < c_hi; ++c) std::memset(dst_a + (c - c_lo) * pitch, 0, sizeof(T) * row_floats);
      continue;
    }
    for (const ColumnPlan::Edge& e : columns.edges) {
      const T* src = xr + e.src * xs_w;
      for (int64_t c = 0; c < c_hi - c_lo; ++c) dst_a[c * pitch + e.offset] = e.src < 0 ? T(0) : src[c * xs_c];
    }
    for (int64_t ph = 0; ph < sw; ++ph) {
      const ColumnPlan::Phase& f = columns.phases[size_t(ph)];
      if constexpr (std::is_same_v<T, float>) {
        // Blocks of kLanes channels x kLanes pixels transposed in registers (xs_c is 1).
        const T* src = xr + f.first * xs_w;
        for (int64_t c = 0; c < c_hi - c_lo; c += kLanes<T>)
          pixels_to_planes(src + c, sw * xs_w, int(std::min<int64_t>(kLanes<T>, c_hi - c_lo - c)), f.q_hi - f.q_lo,
                           dst_a + c * pitch + ph * d.phase_w + f.q_lo, pitch);
        continue;
      }
      for (int64_t q = f.q_lo; q < f.q_hi; ++q) {
        const T* src = xr + (f.first + (q - f.q_lo) * sw) * xs_w;
        T* o = dst_a + ph * d.phase_w + q;
        for (int64_t c = 0; c < c_hi - c_lo; ++c) o[c * pitch] = src[c * xs_c];
      }
    }
  }
}

constexpr int64_t kFillChannels = 32;  // channels per tile-fill unit
constexpr int64_t kInputInCacheBytes = 2 << 20;  // a call's input (output) up to this is taken to be in cache

// Block `block` of a call: (image, group, row block) with the block's first output row and rows.
struct BlockOrigin {
  int64_t n, g, oh0, rows;
};
BlockOrigin block_origin(const ConvProblem& p, const EnginePlan& d, int64_t block) {
  if (d.pixel_tile) {  // (n, row block, g)
    const int64_t oh0 = (block / p.groups % d.row_blocks) * d.rows_per_block;
    return {block / (d.row_blocks * p.groups), block % p.groups, oh0, std::min(d.rows_per_block, p.out_h - oh0)};
  }
  const int64_t oh0 = (block % d.row_blocks) * d.rows_per_block;
  return {block / (d.row_blocks * p.groups), (block / d.row_blocks) % p.groups, oh0,
          std::min(d.rows_per_block, p.out_h - oh0)};
}

// The input a block's tile is copied from, as a prefetch stream: per channel (NCHW) or per row
// (NHWC) one run from its first to its last source row or column.
template <class T>
PrefetchStream tile_source(const ConvCall& call, const EnginePlan& d, const BlockOrigin& b) {
  const ConvProblem& p = call.p;
  int64_t lo = p.in_h, hi = -1;
  for (int64_t r = 0; r < input_rows_for(p, b.rows); ++r) {
    const int64_t src = call.row_src[b.oh0 * p.stride_h + r];
    if (src >= 0) lo = std::min(lo, src), hi = std::max(hi, src);
  }
  if (hi < 0) return {};
  const Strides4& xs = call.x_stride;
  const int64_t size = int64_t(sizeof(T));
  // With depth taps: one run from the first depth slice read to the last, whole slices between
  // included, so it also covers rows outside lo..hi that the tile does not read.
  int64_t slice = b.n * xs.n, span = 0, channels = d.pixel_tile ? p.in_channels : d.group_in;
  if (call.depth_src) {
    const int64_t kd = p.depth_taps;
    int64_t last = -1;
    slice = -1;
    for (int64_t a = 0; a < kd; ++a) {
      const int64_t at = call.depth_src[b.n * kd + a];
      if (at >= 0) slice = slice < 0 ? at : std::min(slice, at), last = std::max(last, at);
    }
    if (slice < 0) return {};
    span = last - slice;
    channels = d.group_in / kd;
  }
  const char* first = reinterpret_cast<const char*>(static_cast<const T*>(call.x) + slice +
                                                    (d.pixel_tile ? 0 : b.g * channels) * xs.c + lo * xs.h);
  if (xs.w == 1)  // NCHW: a channel's rows lo..hi
    return {first, (span + (hi - lo) * xs.h + p.in_w) * size, xs.c * size, channels};
  if (span > 0)  // NHWC: rows lo..hi of every slice, and what lies between
    return {first, (span + (hi - lo) * xs.h + (p.in_w - 1) * xs.w + channels) * size, 0, 1};
  return {first, ((p.in_w - 1) * xs.w + (channels - 1) * xs.c + 1) * size, xs.h * size, hi - lo + 1};
}

// Runs the outputs [item_begin, item_end) of one (n, g, row block), its tile ready at `tile`.
template <class T, class B>
void compute_items(const ConvCall& call, const EnginePlan& d, const int64_t* tap_off, const uint8_t* tap_dead,
                   int64_t n, int64_t g, int64_t oh0, int64_t rows, const T* tile, int64_t item_begin, int64_t item_end,
                   T* row_buf, PrefetchStream* next_tile = nullptr) {
  const ConvProblem& p = call.p;
  const T* bias = static_cast<const T*>(call.bias);
  const T* packed = static_cast<const T*>(call.packed);
  T* y = static_cast<T*>(call.y);
  const bool nchw = p.layout == Layout::NCHW;
  if (d.orientation == Orientation::ChannelVec) {
    // Channels-last, the microkernels add the residual in registers as they store the last
    // slice; channels-first outputs wait in the row buffer, so the residual follows the stores.
    const bool residual_in_registers = call.residual && !nchw;
    const bool simple_act = residual_in_registers ? is_simple<T>(p.activation) : activates_as_stored<T>(call);
    const T* residual = static_cast<const T*>(call.residual);
    // Items are (k block, group of rows), or (segment, k block) of a flat plane, k blocks
    // inner so that a thread's run of items finds the segment's input in L2.  A "row" is then
    // a segment.  Input channels are taken in slices whose weights stay in L2 (a 1x1 layer's in
    // L1) while every row of the group uses them; partial sums wait in the output (NHWC) or in the thread's row
    // buffer [row][ow][NR] (NCHW, transposed into y at the end).
    const int64_t packed_group = d.k_units * d.taps * d.group_in * kNR<T, B>;
    const int64_t row_w = d.flat ? d.flat_segment : p.out_w;  // pixels per row, the last segment fewer
    T* packed_slice = row_buf + (nchw ? d.rows_per_item * row_w * kNR<T, B> : 0);
    const int64_t tap_stride = d.group_in * kNR<T, B>;
    const int64_t runs = d.flat ? ceil_div(d.pixels_per_row, d.flat_segment) : rows;
    const int64_t groups_of_rows = ceil_div(runs, d.rows_per_item);
    const int64_t slices = ceil_div(d.group_in, d.channels_per_slice);
    auto kb_of = [&](int64_t item) { return d.flat ? item % d.k_units : item / groups_of_rows; };
    auto pixels_of = [&](int64_t r) { return d.flat ? std::min(row_w, d.pixels_per_row - r * row_w) : row_w; };
    // Offsets of row r's first pixel in the tile and in the output image.
    auto x_offset = [&](int64_t r) { return d.flat ? r * row_w * d.pixel_pitch : r * p.stride_h * d.row_pitch; };
    auto y_offset = [&](int64_t r) { return d.flat ? r * row_w * call.y_stride.w : (oh0 + r) * call.y_stride.h; };
    // Rows [r_begin, r_end) of an item.
    auto rows_of = [&](int64_t item) {
      const int64_t r_begin = (d.flat ? item / d.k_units : item % groups_of_rows) * d.rows_per_item;
      return std::pair{r_begin, std::min(runs, r_begin + d.rows_per_item)};
    };
    NextPrefetch prefetch;
    // With depth taps (kd channels a depth tap apart, ConvCall::depth_src), the taps of image n
    // whose slices are zero padding are left out like the rows' and columns' (where the weights
    // are finite and each slice holds whole groups of kd channels): the live ones, [a_lo, a_hi)
    // (padding is a run at either end), are run one by one, every kd-th channel (C3D's 8-slice
    // layers: 1/12 of the multiply-adds).  (No allocation: this runs inside the parallel region.)
    const int64_t kd = call.depth_src ? p.depth_taps : 1;
    int64_t a_lo = 0, a_hi = kd;
    if (kd > 1 && d.channels_per_slice % kd == 0) {
      while (a_lo < a_hi && call.depth_src[n * kd + a_lo] < 0) ++a_lo;
      while (a_hi > a_lo && call.depth_src[n * kd + a_hi - 1] < 0) --a_hi;
      for (int64_t a = a_lo; a < a_hi; ++a)
        if (call.depth_src[n * kd + a] < 0) a_lo = 0, a_hi = kd;  // (a gap: no mode makes one)
      if (a_lo == a_hi) a_lo = 0, a_hi = kd;  // all padding: the sums of zeros, the bias
    }
    const bool has_dead_depth_taps = a_hi - a_lo < kd;
    // The next tile's input is asked for only in the last items, those with about 4 channel steps
    // per line of it (one line every other step, behind the weights and the output): asked for at
    // the start, it was evicted from L2 again by the weights streaming past before the fill read it
    // (batch-16 256@14: 2.4 MB of weights per image; docs/tuning.md).
    int64_t tile_from = item_end;  // the first item that prefetches the next tile
    if (next_tile && next_tile->rows_left > 0) {
      const int64_t lines = next_tile->rows_left * ceil_div(next_tile->row_bytes, int64_t(64));
      for (int64_t steps = 0; tile_from > item_begin && steps < 4 * lines;) {
        const auto [r_begin, r_end] = rows_of(--tile_from);
        for (int64_t r = r_begin; r < r_end; ++r) steps += ceil_div(pixels_of(r), int64_t(B::MR)) * d.taps * d.group_in;
      }
    }
    // Only an output too large to stay in cache from call to call is worth asking for ahead.
    const bool output_in_memory =
        p.batch * p.out_channels * p.out_h * p.out_w * int64_t(sizeof(T)) > kInputInCacheBytes;
    const bool prefetches_output = (nchw || !d.flat) && output_in_memory;
    prefetch.output_ahead = !nchw && d.flat && output_in_memory;
    for (int64_t item = item_begin; item < item_end; ++item) {
      prefetch.next_tile = item >= tile_from ? next_tile : nullptr;
      const int64_t kb = kb_of(item);
      const auto [r_begin, r_end] = rows_of(item);
      const int64_t k0 = g * d.group_out + kb * kNR<T, B>;
      const int kvalid = int(std::min<int64_t>(kNR<T, B>, (g + 1) * d.group_out - k0));
      // The item's outputs: per channel one run from row r_begin's first pixel to row r_end - 1's last.
      prefetch.output = PrefetchStream{};
      if (prefetches_output && !nchw)  // NHWC: per row, its pixels' channels [k0, k0 + kvalid)
        prefetch.output = {reinterpret_cast<const char*>(y + n * call.y_stride.n + y_offset(r_begin) + k0),
                           ((p.out_w - 1) * call.y_stride.w + kvalid) * int64_t(sizeof(T)),
                           call.y_stride.h * int64_t(sizeof(T)), r_end - r_begin};
      else if (prefetches_output)
        prefetch.output = {
            reinterpret_cast<const char*>(y + n * call.y_stride.n + k0 * call.y_stride.c + y_offset(r_begin)),
            (y_offset(r_end - 1) - y_offset(r_begin) + pixels_of(r_end - 1)) * int64_t(sizeof(T)),
            call.y_stride.c * int64_t(sizeof(T)), kvalid};
      const ChannelVecFn<T>* microkernels = channelvec_microkernels<T, B>(kvalid, d.pixel_pitch == 1);
      const bool uses_edge_kernels = kvalid > (B::NV - 1) * kLanes<T> && d.pixel_pitch == 1;
      const T* wk = packed ? packed + g * packed_group + kb * d.taps * tap_stride : nullptr;
      const T* bk = bias ? bias + k0 : nullptr;
      for (int64_t sl = 0; sl < slices; ++sl) {
        const int64_t c_begin = sl * d.channels_per_slice;
        const int64_t c_count = std::min(d.channels_per_slice, d.group_in - c_begin);
        const FusedActivation act = sl + 1 == slices && simple_act ? fused_activation(p) : FusedActivation{};
        const bool adds_residual = sl + 1 == slices && residual_in_registers;
        // Packed weights [tap][c][NR] of this slice.
        const T* w_slice = wk ? wk + c_begin * d.taps * kNR<T, B> : nullptr;
        const int64_t w_tap_stride = c_count * kNR<T, B>;
        // Taps that read only zero padding are left out where every weight of the slice is finite
        // (0 * inf would be NaN): rows here, a row's edge columns in the microkernels.
        bool zeros_skippable = true;
        // The next slice this thread computes: this k block's next, or the next item's first.
        int64_t next_k0 = k0, next_c = c_begin + c_count;
        if (sl + 1 == slices) {
          next_k0 = item + 1 < item_end ? g * d.group_out + kb_of(item + 1) * kNR<T, B> : -1;
          next_c = 0;
        }
        const int64_t next_count = std::min(d.channels_per_slice, d.group_in - next_c);
        prefetch.weights = PrefetchStream{};
        if (d.packs_in_items) {
          const T* raw = static_cast<const T*>(call.weight) + k0 * d.group_in * d.taps + c_begin * d.taps;
          zeros_skippable = pack_block<T, B>(raw, d.group_in * d.taps, kvalid, c_count, d.taps, packed_slice);
          w_slice = packed_slice;
          if (next_k0 >= 0) {  // its raw rows
            prefetch.weights.row = reinterpret_cast<const char*>(static_cast<const T*>(call.weight) +
                                                                 next_k0 * d.group_in * d.taps + next_c * d.taps);
            prefetch.weights.row_bytes = next_count * d.taps * int64_t(sizeof(T));
            prefetch.weights.row_stride = d.group_in * d.taps * int64_t(sizeof(T));
            prefetch.weights.rows_left = std::min<int64_t>(kNR<T, B>, (g + 1) * d.group_out - next_k0);
          }
        } else if (next_k0 >= 0) {  // its packed weights, one contiguous run
          const int64_t next_kb = (next_k0 - g * d.group_out) / kNR<T, B>;
          prefetch.weights.row = reinterpret_cast<const char*>(
              packed + g * packed_group + next_kb * d.taps * tap_stride + next_c * d.taps * kNR<T, B>);
          prefetch.weights.row_bytes = d.taps * next_count * kNR<T, B> * int64_t(sizeof(T));
          prefetch.weights.rows_left = 1;
        }
        for (int64_t r = r_begin; r < r_end; ++r) {
          const T* xrow = tile + x_offset(r) + c_begin * d.chan_pitch;
          T* out_row;
          int64_t out_pixel_stride;
          if (nchw) {
            out_row = row_buf + (r - r_begin) * row_w * kNR<T, B>;
            out_pixel_stride = kNR<T, B>;
          } else {
            out_row = y + n * call.y_stride.n + y_offset(r) + k0;
            out_pixel_stride = call.y_stride.w;
          }
          // Kernel rows [i_lo, i_hi) read input rows; the others only zero padding.
          int64_t i_lo = 0, i_hi = p.kernel_h;
          if (d.skip_padding_rows && zeros_skippable) {
            const int64_t* src = call.row_src + (oh0 + r) * p.stride_h;
            while (i_lo < i_hi && src[i_lo * p.dilation_h] < 0) ++i_lo;
            while (i_hi > i_lo && src[(i_hi - 1) * p.dilation_h] < 0) --i_hi;
          }
          const int64_t t_first = i_lo * p.kernel_w, t_count = (i_hi - i_lo) * p.kernel_w;
          // A row's first and last blocks run the edge microkernels (full k blocks from a tile).
          const unsigned row_edges = tap_dead && zeros_skippable && uses_edge_kernels ? d.dead_column_edges : 0u;
          const bool skips_depth_taps = d.skips_zero_padding && zeros_skippable && has_dead_depth_taps;
          const int64_t pixels = pixels_of(r);
          const int64_t blocks = ceil_div(pixels, B::MR);
          const int64_t base = pixels / blocks, extra = pixels % blocks;  // 14 pixels run as 7 + 7
          int64_t ow = 0, block = 0;
          const auto run_blocks = [&](int64_t mr, int64_t count, const EdgeTaps* edge) {
            const ChannelVecFn<T> microkernel =
                edge ? kChannelVecEdge<T, B>[size_t(mr - 1)] : microkernels[size_t(mr - 1)];
            // Packed weights are [tap][c][NR]: the slice starts at channel c_begin of each tap.
            const T* xb = xrow + ow * d.pixel_pitch;
            const T* wb = w_slice + t_first * w_tap_stride;
            T* ob = out_row + ow * out_pixel_stride;
            const T* rb = adds_residual ? residual + (ob - y) : nullptr;
            if (!skips_depth_taps) {
              microkernel(xb, tap_off + t_first, t_count, c_count, w_tap_stride, d.chan_pitch, d.pixel_pitch, wb, bk,
                          kvalid, sl > 0, act, ob, out_pixel_stride, rb, &prefetch, count, edge, kNR<T, B>);
            } else {  // the live depth taps in turn, the last one finishing the sums
              for (int64_t a = a_lo; a < a_hi; ++a) {
                const bool last = a + 1 == a_hi;
                microkernel(xb + a * d.chan_pitch, tap_off + t_first, t_count, c_count / kd, w_tap_stride,
                            kd * d.chan_pitch, d.pixel_pitch, wb + a * kNR<T, B>, bk, kvalid, sl > 0 || a > a_lo,
                            last ? act : FusedActivation{}, ob, out_pixel_stride, last ? rb : nullptr, &prefetch, count,
                            edge, kd * kNR<T, B>);
              }
            }
            ow += mr * count;
            block += count;
          };
          // The first `extra` blocks hold base + 1 pixels, the others base: one call for each run,
          // less the edge blocks.
          for (const auto& [mr, count] : {std::pair{base + 1, extra}, std::pair{base, blocks - extra}}) {
            for (int64_t left = count; left > 0;) {
              const unsigned e = (block == 0 ? row_edges & 1u : 0u) | (block + 1 == blocks ? row_edges & 2u : 0u);
              if (e != 0) {
                const EdgeTaps edge{tap_dead + t_first, e};
                run_blocks(mr, 1, &edge);
                --left;
                continue;
              }
              const int64_t n = (row_edges & 2u) && block + left == blocks ? left - 1 : left;
              run_blocks(mr, n, nullptr);
              left -= n;
            }
          }
        }
      }
      for (int64_t r = r_begin; r < r_end; ++r) {
        const int64_t pixels = pixels_of(r);
        if (nchw) {
          const T* buf = row_buf + (r - r_begin) * row_w * kNR<T, B>;
          T* y_row = y + n * call.y_stride.n + k0 * call.y_stride.c + y_offset(r);
          if constexpr (std::is_same_v<T, float>) {
            for (int h = 0; h * kLanes<T> < kvalid; ++h)
              pixels_to_planes(buf + h * kLanes<T>, kNR<T, B>, std::min(kLanes<T>, kvalid - h * kLanes<T>), pixels,
                               y_row + h * kLanes<T> * call.y_stride.c, call.y_stride.c);
          } else {
            for (int kk = 0; kk < kvalid; ++kk)
              for (int64_t o = 0; o < pixels; ++o) y_row[kk * call.y_stride.c + o] = buf[o * kNR<T, B> + kk];
          }
          if (!simple_act)
            for (int kk = 0; kk < kvalid; ++kk) finish_row(call, y_row + kk * call.y_stride.c, pixels);
        } else if (!simple_act) {  // (the residual, if any, is in already)
          T* out_row = y + n * call.y_stride.n + y_offset(r) + k0;
          for (int64_t o = 0; o < pixels; ++o) activate_row(out_row + o * call.y_stride.w, kvalid, fused_activation(p));
        }
      }
    }
    return;
  }
  // PixelVec: items are (k chunk, row), or k chunks alone when a block is one wide run, or
  // (segment, k chunk) of a flat plane (see d.flat_segment).
  const bool simple_act = activates_as_stored<T>(call);
  const int64_t run_rows = (d.flat || d.wide) ? 1 : rows;
  const int64_t run_pixels = d.wide ? (rows - 1) * d.phase_w + p.out_w : d.pixels_per_row;
  // A flat plane's reduction is taken in slices of input channels (d.pixel_slice): each slice of a
  // segment runs through all of the segment's items (k chunks) of this run while its input is in
  // L1, the partial sums waiting in y (stored and reloaded as T: the same bits as one pass).
  const int64_t slice = d.flat ? d.pixel_slice : d.group_in;
  for (int64_t i0 = item_begin; i0 < item_end;) {
    int64_t i1 = i0 + 1;  // [i0, i1): this run's items of one segment
    if (d.flat && (slice < d.group_in || d.copies_segment))
      while (i1 < item_end && i1 / d.k_units == i0 / d.k_units) ++i1;
    for (int64_t c0 = 0; c0 < d.group_in; c0 += slice) {
      const int64_t c_count = std::min(slice, d.group_in - c0);
      const bool first = c0 == 0, last = c0 + c_count == d.group_in;
      // The segment's slice of input, copied once for its k chunks: [c][flat_segment] in the thread's
      // buffer (the plane's channels sit a plane apart, every row in its own page).
      const T* x_slice = tile + c0 * d.chan_pitch;
      int64_t x_pitch = d.chan_pitch, x_first = 0;  // pixel px of the slice at x_slice + px - x_first
      if (d.copies_segment) {
        x_first = i0 / d.k_units * d.flat_segment;
        const int64_t seg_pixels = std::min(run_pixels, x_first + d.flat_segment) - x_first;
        for (int64_t c = 0; c < c_count; ++c)
          std::memcpy(row_buf + c * d.flat_segment, x_slice + c * d.chan_pitch + x_first,
                      sizeof(T) * size_t(seg_pixels));
        x_slice = row_buf;
        x_pitch = d.flat_segment;
      }
      for (int64_t item = i0; item < i1; ++item) {
        int64_t u = item / run_rows, r = item % run_rows, px_begin = 0, px_end = run_pixels;
        if (d.flat) {
          u = item % d.k_units;
          px_begin = item / d.k_units * d.flat_segment;
          px_end = std::min(run_pixels, px_begin + d.flat_segment);
        }
        const Chunk ch = k_chunk(d, u);
        const int64_t k0 = g * d.group_out + ch.first;
        const int mk = int(ch.size);
        const T* wk = static_cast<const T*>(call.weight) + k0 * d.taps * d.group_in + c0 * d.taps;
        const T* bk = bias && first ? bias + k0 : nullptr;
        const T* xrow = x_slice + r * p.stride_h * d.row_pitch;
        T* yrow = y + n * call.y_stride.n + k0 * call.y_stride.c + (oh0 + r) * call.y_stride.h;
        // Wide runs land in the thread's buffer [mk][rows][phase_w]; then the valid columns move to y.
        T* out = d.wide ? row_buf : yrow;
        const int64_t out_chan_stride = d.wide ? d.rows_per_block * d.phase_w : call.y_stride.c;
        const int64_t block_pixels = int64_t(nv_cap(mk)) * kLanes<T>;
        const FusedActivation act = last ? stored_activation<T>(call) : FusedActivation{};
        for (int64_t px = px_begin; px < px_end; px += block_pixels) {
          const int64_t count = std::min(block_pixels, px_end - px);
          const int64_t nv = ceil_div(count, kLanes<T>);
          const int last_valid = int(count - (nv - 1) * kLanes<T>);
          const MicrokernelFn<T> microkernel = kPixelVec<T>[size_t(mk - 1)][size_t(nv - 1)];
          microkernel(xrow + (px - x_first), tap_off, d.taps, c_count, x_pitch, wk, d.taps * d.group_in, bk, last_valid,
                      act, out + px, out_chan_stride, !first);
        }
        if (!last) continue;
        if (d.wide) {
          for (int64_t kk = 0; kk < mk; ++kk)
            for (int64_t rr = 0; rr < rows; ++rr) {
              T* yr = yrow + kk * call.y_stride.c + rr * call.y_stride.h;
              std::memcpy(yr, out + kk * out_chan_stride + rr * d.phase_w, sizeof(T) * p.out_w);
              if (!simple_act) finish_row(call, yr, p.out_w);
            }
        } else if (!simple_act) {
          for (int64_t kk = 0; kk < mk; ++kk)
            finish_row(call, yrow + kk * call.y_stride.c + px_begin, px_end - px_begin);
        }
      }
    }
    i0 = i1;
  }
}

// Per-thread buffers: a wide PixelVec run's output; ChannelVec's NCHW output rows
// [row][ow][NR], then the slice of packed weights when it packs inside the items.
template <class T, class B>
int64_t packed_slice_elems(const EnginePlan& d) {
  return d.packs_in_items ? d.taps * d.channels_per_slice * kNR<T, B> : 0;
}
template <class T, class B>
int64_t row_buffer_elems(const ConvProblem& p, const EnginePlan& d) {
  if (d.wide) return kMKMax * d.rows_per_block * d.phase_w;
  if (d.copies_segment) return d.pixel_slice * d.flat_segment;
  if (d.orientation == Orientation::ChannelVec) {
    const int64_t row_w = d.flat ? d.flat_segment : p.out_w;
    const int64_t out_rows = p.layout == Layout::NCHW ? d.rows_per_item * row_w * kNR<T, B> : 0;
    return out_rows + packed_slice_elems<T, B>(d);
  }
  return 0;
}

int64_t items_per_block(const EnginePlan& d, int64_t rows) {
  if (d.flat) return d.k_units * ceil_div(d.pixels_per_row, d.flat_segment);
  if (d.orientation == Orientation::ChannelVec) return d.k_units * ceil_div(rows, d.rows_per_item);
  return d.k_units * (d.wide ? 1 : rows);
}

// A call's units in contiguous runs, one a thread: each thread takes its own run's from the front
// (so its next unit, and the next tile to ask for, is known), and a thread whose run is done
// takes the others' from their back (so one that loses its core holds up only the unit it has).
class UnitRuns {
 public:
  UnitRuns(int64_t units, int runs) : runs_(runs), ranges_(size_t(runs)) {
    for (int t = 0; t < runs; ++t)
      ranges_[size_t(t)].packed.store(pack(units * t / runs, units * (t + 1) / runs), std::memory_order_relaxed);
  }
  // Thread t's next unit, -1 when all are taken.
  int64_t take(int t) {
    if (const int64_t u = take_from(t, true); u >= 0) return u;
    for (int k = 1; k < runs_; ++k)
      if (const int64_t u = take_from((t + k) % runs_, false); u >= 0) return u;
    return -1;
  }
  // The unit thread t would take next from its own run, -1 when that is done.
  int64_t upcoming(int t) const {
    const uint64_t r = ranges_[size_t(t)].packed.load(std::memory_order_relaxed);
    return front(r) < back(r) ? front(r) : -1;
  }

 private:
  struct alignas(64) Range {  // [front, back), a line each: the owner's takes do not bounce the others'
    std::atomic<uint64_t> packed{0};
  };
  static uint64_t pack(int64_t front, int64_t back) { return uint64_t(front) << 32 | uint64_t(back); }
  static int64_t front(uint64_t r) { return int64_t(r >> 32); }
  static int64_t back(uint64_t r) { return int64_t(r & 0xffffffffu); }
  int64_t take_from(int t, bool from_front) {
    std::atomic<uint64_t>& range = ranges_[size_t(t)].packed;
    uint64_t r = range.load(std::memory_order_relaxed);
    while (front(r) < back(r)) {
      const uint64_t taken = from_front ? pack(front(r) + 1, back(r)) : pack(front(r), back(r) - 1);
      if (range.compare_exchange_weak(r, taken, std::memory_order_relaxed)) return from_front ? front(r) : back(r) - 1;
    }
    return -1;
  }
  int runs_;
  std::vector<Range> ranges_;
};

template <class T, class B>
void run_engine(const ConvCall& call, Orientation orientation) {
  const ConvProblem& p = call.p;
  const int threads = call.num_threads;
  EnginePlan d = make_plan<T, B>(p, orientation, threads);
  if (d.direct_input && !d.flat) {
    // Read in place through x's strides, which need not be contiguous: the driver runs column
    // segments of long rows as batch items (Flatten, cpp/conv.cpp).  A flat plane is one run.
    d.chan_pitch = call.x_stride.c;
    d.row_pitch = call.x_stride.h;
    if (p.layout == Layout::NHWC) d.pixel_pitch = p.stride_w * call.x_stride.w;
  }
  // With packing inside the items, each slice's own finiteness decides (compute_items).
  d.skips_zero_padding = orientation == Orientation::ChannelVec && p.pad_mode == PadMode::Zeros &&
                         (d.packs_in_items || channelvec_weights_finite<T, B>(p, call.packed));
  d.skip_padding_rows = d.skips_zero_padding && (p.pad_top > 0 || p.pad_bottom > 0);

  // Per tap, whether it reads only zero padding for a row's first (bit 0) or last (bit 1) pixel.
  std::vector<uint8_t> tap_dead(size_t(d.taps), 0);
  d.dead_column_edges = 0;
  if (d.skips_zero_padding && !d.flat && call.col_src && (p.pad_left > 0 || p.pad_right > 0)) {
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const int64_t col = j * p.dilation_w;
      const unsigned dead =
          (call.col_src[col] < 0 ? 1u : 0u) | (call.col_src[(p.out_w - 1) * p.stride_w + col] < 0 ? 2u : 0u);
      for (int64_t i = 0; i < p.kernel_h; ++i) tap_dead[size_t(i * p.kernel_w + j)] = uint8_t(dead);
      d.dead_column_edges |= dead;
    }
  }
  const uint8_t* dead_taps = d.dead_column_edges ? tap_dead.data() : nullptr;
  std::vector<int64_t> tap_off(size_t(d.taps));
  for (int64_t i = 0; i < p.kernel_h; ++i)
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const int64_t col = j * p.dilation_w;
      tap_off[size_t(i * p.kernel_w + j)] =
          i * p.dilation_h * d.row_pitch + (d.direct_input && p.layout == Layout::NHWC ? col * call.x_stride.w
                                            : d.pixel_tile ? col * p.in_channels
                                                           : (col % p.stride_w) * d.phase_w + col / p.stride_w);
    }
  const ColumnPlan columns = plan_columns(call, d);
  const int tile_copies = d.private_tiles ? threads : 1;
  // Per-thread output buffers (see row_buffer_elems).
  const int64_t row_buf_elems = row_buffer_elems<T, B>(p, d);
  T* tiles = scratch<T>(size_t(d.tile_elems * tile_copies + row_buf_elems * threads));
  T* row_bufs = tiles + d.tile_elems * tile_copies;
  const T* x = static_cast<const T*>(call.x);

  auto tile_for = [&](int64_t n, int64_t g, int64_t oh0, T* own) -> const T* {
    if (d.direct_input)
      return x + n * call.x_stride.n + g * d.group_in * call.x_stride.c + oh0 * p.stride_h * d.row_pitch;
    return d.pixel_tile ? own + g * d.group_in : own;
  };

  UnitRuns unit_runs(d.private_tiles ? p.batch * p.groups * d.row_blocks * d.parts_per_block : 0, threads);
  parallel_region(threads, [&] {
    DenormalGuard denormals;
    T* row_buf = row_bufs + row_buf_elems * thread_id();
    if (d.private_tiles) {
      T* own = tiles + d.tile_elems * thread_id();
      int64_t own_block = -1;  // the block whose tile `own` holds (its first group's, pixel_tile)
      // The first block of b's tile: a pixel tile serves a (n, row block)'s groups.
      const auto tile_block = [&](int64_t block) { return d.pixel_tile ? block / p.groups * p.groups : block; };
      const int64_t units = p.batch * p.groups * d.row_blocks * d.parts_per_block;
      PrefetchStream next_tile;
      // Only an input too large to stay in cache from call to call (batch 16 of 64@56: 12.8 MB)
      // is worth asking for ahead; a single image's is usually there already.
      const bool prefetches_tiles =
          !d.direct_input && p.batch * p.in_channels * p.in_h * p.in_w * int64_t(sizeof(T)) > kInputInCacheBytes;
      const auto run_unit = [&](int64_t unit, int64_t next_unit) {
        const int64_t block = unit / d.parts_per_block, part = unit % d.parts_per_block;
        const BlockOrigin b = block_origin(p, d, block);
        if (!d.direct_input && tile_block(block) != own_block) {
          for (int64_t r = 0; r < input_rows_for(p, b.rows); ++r) {
            if (d.pixel_tile) fill_tile_unit<T>(call, d, columns, b.n, 0, b.oh0 * p.stride_h, r, 0, p.in_channels, own);
            else fill_tile_unit<T>(call, d, columns, b.n, b.g * d.group_in, b.oh0 * p.stride_h, r, 0, d.group_in, own);
          }
          own_block = tile_block(block);
        }
        // The next tile is the one of this thread's next unit in its run (unless another takes it).
        const int64_t next_block = next_unit / d.parts_per_block;
        next_tile =
            prefetches_tiles && next_unit >= 0 && next_unit < units && tile_block(next_block) != tile_block(block)
                ? tile_source<T>(call, d, block_origin(p, d, next_block))
                : PrefetchStream{};
        const int64_t items = items_per_block(d, b.rows);
        compute_items<T, B>(call, d, tap_off.data(), dead_taps, b.n, b.g, b.oh0, b.rows, tile_for(b.n, b.g, b.oh0, own),
                            items * part / d.parts_per_block, items * (part + 1) / d.parts_per_block, row_buf,
                            &next_tile);
      };
      const int t = thread_id() % threads;
      for (int64_t unit = unit_runs.take(t); unit >= 0; unit = unit_runs.take(t)) run_unit(unit, unit_runs.upcoming(t));
    } else {
      for (int64_t block = 0; block < p.batch * p.groups * d.row_blocks; ++block) {
        const BlockOrigin b = block_origin(p, d, block);
        const int64_t n = b.n, g = b.g, oh0 = b.oh0, rows = b.rows;
        if (!d.direct_input && (!d.pixel_tile || g == 0)) {  // a pixel tile: all channels, for every group
          const int64_t c0 = d.pixel_tile ? 0 : g * d.group_in, channels = d.pixel_tile ? p.in_channels : d.group_in;
          const int64_t chunks = ceil_div(channels, kFillChannels);
#pragma omp for schedule(static)
          for (int64_t unit = 0; unit < input_rows_for(p, rows) * chunks; ++unit) {
            const int64_t c_begin = (unit % chunks) * kFillChannels;
            fill_tile_unit<T>(call, d, columns, n, c0, oh0 * p.stride_h, unit / chunks, c_begin,
                              std::min(channels, c_begin + kFillChannels), tiles);
          }
        }
        const T* tile = tile_for(n, g, oh0, tiles);
        // Dynamic: a thread that loses its core for a while (another process, a busy VM)
        // holds up only the item it has, not a fixed share of the block.  Each output is
        // summed inside one item in a fixed order, so results do not depend on who runs it.
        // Runs of items (about 8 per thread) keep the hand-out cost small when items are
        // many and short (a first layer has hundreds of one-row items).
        // (Items that pack their own weights go in longer runs: an item asks for the next
        // one's weights while it computes, which helps only if the same thread runs it.)
        const int64_t items = items_per_block(d, rows);
        const int64_t run = std::max<int64_t>(
            1, d.packs_in_items ? ceil_div(items, 2 * int64_t(threads)) : items / (8 * int64_t(threads)));
#pragma omp for schedule(dynamic, 1)
        for (int64_t first = 0; first < items; first += run)
          compute_items<T, B>(call, d, tap_off.data(), dead_taps, n, g, oh0, rows, tile, first,
                              std::min(items, first + run), row_buf);
      }
    }
  });
}

template <class T, class B>
void run_channelvec(const ConvCall& call) {
  run_engine<T, B>(call, Orientation::ChannelVec);
}
template <class T>
void run_pixelvec(const ConvCall& call) {
  run_engine<T, NarrowBlock>(call, Orientation::PixelVec);
}

// A flat 1x1 plane (channels-first) too large for L2 whose input outweighs the weights: PixelVec
// copies its segments' input slices (EnginePlan::copies_segment) and won over ChannelVec, whose
// broadcasts read x in place a plane apart and whose output goes through transposes (256 -> 64
// and 128 -> 128 @56, 512 -> 128 @28; docs/tuning.md, "Channels-first 1x1 layers: the segment's
// input copied").  Where the weights outweigh the plane (1024 -> 256 @14) ChannelVec streams
// them past it once and stays.
template <class T>
bool flat_plane_streams(const ConvProblem& p) {
  const int64_t go = p.out_channels / p.groups, gi = p.in_channels / p.groups, pixels = p.out_h * p.out_w;
  return is_flat(p) && pixels * gi * int64_t(sizeof(T)) > kFlatPlaneInL2Bytes && go < pixels;
}
// ChannelVec first, PixelVec where it wins: few output channels per group (depthwise, grouped,
// single maps: channel blocks would be mostly empty), first layers with C < 8 (the reduction
// is too short to hide the NCHW transpose of channel blocks), 1x1 with few inputs where the
// ISA's PixelVec block is wide enough (a plane is one long run of pixels).  (One-shot calls on small planes, whose
// weights serve few pixels, stay with ChannelVec: it packs them slice by slice inside the items, see packs_in_items.)
template <class T>
bool pixelvec_preferred(const ConvProblem& p) {
  const int64_t go = p.out_channels / p.groups, gi = p.in_channels / p.groups;
  if (p.layout != Layout::NCHW) return false;
  return 2 * go < kNR<T, NarrowBlock> || gi < 8 || (kFlatPrefersPixelVec && is_flat(p) && gi <= 64) ||
         (kFlatPrefersPixelVec && flat_plane_streams<T>(p));  // whatever gi
}

// The engine in orientation o copies tiles of the padded input in proportion to the call (see
// tiles_in_proportion); it reads x in place without padding.
template <class T, class B>
bool engine_tiles_in_proportion(const ConvProblem& p, Orientation o) {
  return tiles_in_proportion(p, can_read_in_place(p) ? 0 : p.in_channels, [&] {
    const EnginePlan d = make_plan<T, B>(p, o, 1);
    return double(p.batch * (d.pixel_tile ? 1 : p.groups) * d.row_blocks) * double(d.tile_elems);
  });
}

// The wide block where it was measured to pay (docs/tuning.md, "The wide ChannelVec block"):
// 1x1 kernels read in place, whose rows (or flat segments) hold at least two of its blocks; and
// channels-last output of one wide block of channels per group, rows as long, where the narrow
// block would store each output pixel in two passes over y (C3D's 3->64 first layer), as long
// as each output's reduction is short enough for those stores to matter.
// Elsewhere it ran at par with the narrow block, or lost (short rows: twice the weight traffic
// per multiply-add, which cores with two 512-bit FMA units feel on any long reduction).
constexpr int64_t kWideStoreReductionMax = 512;  // input channels x taps of an output
template <class T, class B>
bool block_pays(const ConvProblem& p) {
  if constexpr (std::is_same_v<B, NarrowBlock>) {
    return true;
  } else if constexpr (std::is_same_v<B, OneVectorBlock>) {
    return p.groups > 1 && p.out_channels / p.groups == kNR<T, B>;
  } else {
    const int64_t go = p.out_channels / p.groups;
    if (go < kNR<T, B>) return false;
    if (p.layout == Layout::NHWC && go == kNR<T, B> && p.out_w >= 2 * B::MR &&
        p.in_channels / p.groups * p.kernel_h * p.kernel_w <= kWideStoreReductionMax)
      return true;
    if (!(p.kernel_h == 1 && p.kernel_w == 1 && can_read_in_place(p))) return false;
    const EnginePlan d = make_plan<T, B>(p, Orientation::ChannelVec, 1);
    return (d.flat ? d.flat_segment : p.out_w) >= 2 * B::MR;
  }
}

template <class T, class B>
bool channelvec_accepts(const ConvProblem& p) {
  const int64_t go = p.out_channels / p.groups;
  return p.dtype == kDType<T> && 2 * go >= kNR<T, B> && !pixelvec_preferred<T>(p) && block_pays<T, B>(p) &&
         engine_tiles_in_proportion<T, B>(p, Orientation::ChannelVec);
}

template <class T>
bool pixelvec_accepts(const ConvProblem& p) {
  return p.dtype == kDType<T> && p.layout == Layout::NCHW &&
         engine_tiles_in_proportion<T, NarrowBlock>(p, Orientation::PixelVec);
}

template <class T, class B>
size_t engine_workspace(const ConvProblem& p, int threads, Orientation o) {
  const EnginePlan d = make_plan<T, B>(p, o, threads);
  const int64_t tiles = d.tile_elems * (d.private_tiles ? threads : 1);
  const int64_t row_buf = row_buffer_elems<T, B>(p, d) * threads;
  return size_t(tiles + row_buf) * sizeof(T) + size_t(d.taps) * sizeof(int64_t);
}
template <class T, class B>
size_t channelvec_workspace(const ConvProblem& p, int threads) {
  return engine_workspace<T, B>(p, threads, Orientation::ChannelVec);
}
template <class T>
size_t pixelvec_workspace(const ConvProblem& p, int threads) {
  return engine_workspace<T, NarrowBlock>(p, threads, Orientation::PixelVec);
}

}  // namespace

// Names: <op>_<dtype>__<isa>_<output pixels x output channels held in registers>.
namespace {
template <class T>
constexpr int kPixelVecPixels = nv_cap(kMKMax) * kLanes<T>;  // the widest PixelVec block's
constexpr AlgorithmName kPixelVecF32Name =
    algorithm_name("conv2d_pixelvec_f32__" CPPCONV_ISA_NAME, kPixelVecPixels<float>, kMKMax);
constexpr AlgorithmName kPixelVecF64Name =
    algorithm_name("conv2d_pixelvec_f64__" CPPCONV_ISA_NAME, kPixelVecPixels<double>, kMKMax);
template <class T, class B>
constexpr AlgorithmName channelvec_name(const char* prefix) {
  return algorithm_name(prefix, B::MR, kNR<T, B>);
}
constexpr AlgorithmName kChannelVecF32Name =
    channelvec_name<float, NarrowBlock>("conv2d_channelvec_f32__" CPPCONV_ISA_NAME);
constexpr AlgorithmName kWideChannelVecF32Name =
    channelvec_name<float, WideBlock>("conv2d_channelvec_f32__" CPPCONV_ISA_NAME);
constexpr AlgorithmName kOneVectorChannelVecF32Name =
    channelvec_name<float, OneVectorBlock>("conv2d_channelvec_f32__" CPPCONV_ISA_NAME);
constexpr AlgorithmName kChannelVecF64Name =
    channelvec_name<double, NarrowBlock>("conv2d_channelvec_f64__" CPPCONV_ISA_NAME);
}  // namespace

const ConvAlgorithm conv2d_pixelvec_f32 = {
    kPixelVecF32Name.text,     DType::Float32,      pixelvec_accepts<float>, no_packing, nullptr,
    pixelvec_workspace<float>, run_pixelvec<float>, Precision::Highest,      0,          /*adds_residual=*/true,
    /*reads_depth_taps=*/true};
const ConvAlgorithm conv2d_pixelvec_f64 = {
    kPixelVecF64Name.text,      DType::Float64,       pixelvec_accepts<double>, no_packing, nullptr,
    pixelvec_workspace<double>, run_pixelvec<double>, Precision::Highest,       0,          /*adds_residual=*/true,
    /*reads_depth_taps=*/true};
const ConvAlgorithm conv2d_channelvec_f32 = {kChannelVecF32Name.text,
                                             DType::Float32,
                                             channelvec_accepts<float, NarrowBlock>,
                                             channelvec_packed_bytes<float, NarrowBlock>,
                                             channelvec_pack<float, NarrowBlock>,
                                             channelvec_workspace<float, NarrowBlock>,
                                             run_channelvec<float, NarrowBlock>,
                                             Precision::Highest,
                                             0,
                                             /*adds_residual=*/true,
                                             /*reads_depth_taps=*/true,
                                             /*takes_depth=*/false,
                                             channelvec_unpack<float, NarrowBlock>};
const ConvAlgorithm conv2d_channelvec_wide_f32 = {kWideChannelVecF32Name.text,
                                                  DType::Float32,
                                                  channelvec_accepts<float, WideBlock>,
                                                  channelvec_packed_bytes<float, WideBlock>,
                                                  channelvec_pack<float, WideBlock>,
                                                  channelvec_workspace<float, WideBlock>,
                                                  run_channelvec<float, WideBlock>,
                                                  Precision::Highest,
                                                  0,
                                                  /*adds_residual=*/true,
                                                  /*reads_depth_taps=*/true,
                                                  /*takes_depth=*/false,
                                                  channelvec_unpack<float, WideBlock>};
const ConvAlgorithm conv2d_channelvec_onevec_f32 = {kOneVectorChannelVecF32Name.text,
                                                    DType::Float32,
                                                    channelvec_accepts<float, OneVectorBlock>,
                                                    channelvec_packed_bytes<float, OneVectorBlock>,
                                                    channelvec_pack<float, OneVectorBlock>,
                                                    channelvec_workspace<float, OneVectorBlock>,
                                                    run_channelvec<float, OneVectorBlock>,
                                                    Precision::Highest,
                                                    0,
                                                    /*adds_residual=*/true,
                                                    /*reads_depth_taps=*/true,
                                                    /*takes_depth=*/false,
                                                    channelvec_unpack<float, OneVectorBlock>};
const ConvAlgorithm conv2d_channelvec_f64 = {kChannelVecF64Name.text,
                                             DType::Float64,
                                             channelvec_accepts<double, NarrowBlock>,
                                             channelvec_packed_bytes<double, NarrowBlock>,
                                             channelvec_pack<double, NarrowBlock>,
                                             channelvec_workspace<double, NarrowBlock>,
                                             run_channelvec<double, NarrowBlock>,
                                             Precision::Highest,
                                             0,
                                             /*adds_residual=*/true,
                                             /*reads_depth_taps=*/true,
                                             /*takes_depth=*/false,
                                             channelvec_unpack<double, NarrowBlock>};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv

#endif  // CPPCONV_SIMD
