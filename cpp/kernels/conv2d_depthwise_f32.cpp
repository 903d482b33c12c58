// Depthwise convolution (groups == C == K).
//
// conv2d_depthwise_cblock_f32 (both layouts): vectorised across a block of kVL channels.
// A work item is (image, channel block, band of output rows, band of output columns): its
// input is copied into a padded, channel-interleaved tile [row][column][kVL] (NCHW planes
// through an in-register transpose; the padding comes from the index maps, so every padding
// mode is one copy), so the hot loop runs on whole vectors with no edge tests and no wasted
// lanes whatever the plane size; the output block goes out the same way.  A register block is
// kMB output pixels of one row; for the common kernel widths with unit dilation each loaded
// input vector feeds every tap it belongs to (one load per input column instead of one per tap).
//
// conv2d_depthwise_nchw_f32: NCHW at stride 1 along the row, vectorised along the output row
// on a padded, vector-aligned tile of each plane's band of rows (see below); chosen for rows
// at least a vector wide, and for fewer channels than a vector (a single image plane).
//
// conv3d_depthwise_nchw_f32: NCDHW kd x 3 x 3 at unit strides, the row kernel's 3x3 blocks
// summing the depth taps' slices, read in place or through tiles (see below).
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/conv2d_depthwise_f32.h"
#include "kernels/isa_common.h"

#if CPPCONV_SIMD
#include "kernels/interleaved_tile.h"
#include "kernels/simd.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

using namespace simd;
using Vec = simd::Vec<float>;
using Mask = simd::Mask<float>;
constexpr int kVL = kLanes<float>;

constexpr int kMB = 8;  // output pixels per register block: 8 FMA chains hide the latency
// Input tile budget per work item: a band of rows (and, for very wide rows, of columns) is
// sized so its padded, channel-interleaved tile stays well inside L2.
constexpr int64_t kTileBytes = 128 * 1024;
constexpr int64_t kMaxTileCols = 1024;
// Each thread's part of a call's scratch starts on its own cache line.
constexpr size_t kLineFloats = 64 / sizeof(float);

// One block of MB output pixels of a row, any kernel, stride and dilation: the tap loop.
//   x: tile address of the block's first pixel at tap (0, 0); tap t is at + tap_off[t];
//   col_step: from one output pixel to the next in the tile (stride_w * kVL)
template <int MB>
void cblock_taps(const float* x, const int64_t* tap_off, int64_t taps, int64_t col_step, const float* w,
                 const float* bias, FusedActivation act, float* out) {
  Vec acc[MB];
#pragma GCC unroll 8
  for (int m = 0; m < MB; ++m) acc[m] = vload(bias);
  for (int64_t t = 0; t < taps; ++t) {
    const Vec wv = vload(w + t * kVL);
    const float* xt = x + tap_off[t];
#pragma GCC unroll 8
    for (int m = 0; m < MB; ++m) acc[m] = vfma(vload(xt + m * col_step), wv, acc[m]);
  }
#pragma GCC unroll 8
  for (int m = 0; m < MB; ++m) vstore(out + m * kVL, apply_simple_activation(acc[m], act));
}

// The kernel rows a block reads: `depth_taps` depth taps depth_step apart (a 2-D problem has
// one), each of `row_taps` kernel rows row_step apart; a depth tap's weights follow the previous
// one's depth_weights floats on (the rows of the taps skipped as zero padding in between).
struct KernelRows {
  int64_t depth_taps = 1, depth_step = 0, depth_weights = 0;
  int64_t row_taps = 0, row_step = 0;
};

// Column c of a block's input row xr, kept in a register (one load per column, not one per tap
// it feeds): with kChecked, xr is the row's column 0, the block starts at column col0 and only
// columns in [0, in_w) are read (the others are zero padding); else xr is the block's column 0.
template <bool kChecked, class T>
inline Vec load_column(const T* xr, int c, int64_t pixel_pitch, int64_t col0, int64_t in_w) {
  if constexpr (kChecked)
    return in_register(col0 + c >= 0 && col0 + c < in_w ? vload_f32(xr + (col0 + c) * pixel_pitch) : vzero());
  else return in_register(vload_f32(xr + c * pixel_pitch));
}

// The same for kernel width KW, stride S and unit column dilation: along a kernel row, input
// column q feeds output pixel m through tap j = q - S * m, so each column is loaded once.
//   x: the first kernel row's first input column, the next pixel_pitch apart, the kernel rows
//      as `rows` says; kChecked: x is the row's column 0 and the block starts at column col0,
//      and only columns in [0, in_w) are read (the others are zero padding)
//   out: pixel m's kVL outputs at out + m * out_pitch
// The tile path reads its padded tile (pitches kVL, nothing to check); NHWC with zero padding
// reads x itself (pitch C), checking columns only in the blocks at the left and right edges.
// T: x's and out's element, float or (in place on bfloat16 x and y) bfloat16 bits.
template <int KW, int S, int MB, bool kChecked, class T>
void cblock_row_reuse(const T* x, const KernelRows& rows, int64_t pixel_pitch, int64_t col0, int64_t in_w,
                      const float* w, const float* bias, FusedActivation act, T* out, int64_t out_pitch) {
  constexpr int kCols = (MB - 1) * S + KW;
  Vec acc[MB];
#pragma GCC unroll 8
  for (int m = 0; m < MB; ++m) acc[m] = vload(bias);
  const int64_t row_taps = rows.row_taps, row_step = rows.row_step;
  const auto kernel_rows = [&](const T* xa, const float* wa) {
    for (int64_t i = 0; i < row_taps; ++i) {
      const T* xr = xa + i * row_step;
      Vec wv[KW];
#pragma GCC unroll 8
      for (int j = 0; j < KW; ++j) wv[j] = vload(wa + (i * KW + j) * kVL);
#pragma GCC unroll 32
      for (int q = 0; q < kCols; ++q) {
        const Vec xv = load_column<kChecked>(xr, q, pixel_pitch, col0, in_w);
#pragma GCC unroll 8
        for (int j = 0; j < KW; ++j) {
          const int m = (q - j) / S;
          if (q >= j && (q - j) % S == 0 && m < MB) acc[m] = vfma(xv, wv[j], acc[m]);
        }
      }
    }
  };
  // (A planar problem's row loop alone: a loop of depth taps around it cost the 2-D layers up
  // to 10 %, its bookkeeping spilled.)
  if (rows.depth_taps == 1) kernel_rows(x, w);
  else
    for (int64_t a = 0; a < rows.depth_taps; ++a) kernel_rows(x + a * rows.depth_step, w + a * rows.depth_weights);
#pragma GCC unroll 8
  for (int m = 0; m < MB; ++m) vstore_f32(out + m * out_pitch, apply_simple_activation(acc[m], act));
}

// Two output rows at once for a 3-D 3x3 kernel at unit strides and dilations, both rows' three
// kernel rows inside the input: each of the four input rows' columns is loaded once for the six
// (row, kernel row) pairs it feeds, instead of once per output row (3 loads of each input row).
// Arguments as cblock_row_reuse's; the second row's outputs are out_row_step after the first's.
template <int MB, bool kChecked, class T>
void cblock_two_rows_3x3(const T* x, const KernelRows& rows, int64_t pixel_pitch, int64_t col0, int64_t in_w,
                         const float* w, const float* bias, FusedActivation act, T* out, int64_t out_pitch,
                         int64_t out_row_step) {
  constexpr int kCols = MB + 2;
  Vec acc[2][MB];
  const Vec b = vload(bias);
#pragma GCC unroll 8
  for (int m = 0; m < MB; ++m) acc[0][m] = acc[1][m] = b;
  for (int64_t a = 0; a < rows.depth_taps; ++a) {
    const T* xa = x + a * rows.depth_step;
    const float* wa = w + a * rows.depth_weights;
    Vec wv[3][3];
#pragma GCC unroll 3
    for (int i = 0; i < 3; ++i)
#pragma GCC unroll 3
      for (int j = 0; j < 3; ++j) wv[i][j] = vload(wa + (i * 3 + j) * kVL);
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const T* xr = xa + q * rows.row_step;
#pragma GCC unroll 16
      for (int c = 0; c < kCols; ++c) {
        const Vec xv = load_column<kChecked>(xr, c, pixel_pitch, col0, in_w);
#pragma GCC unroll 2
        for (int r = 0; r < 2; ++r) {
          const int i = q - r;
          if (i < 0 || i > 2) continue;
#pragma GCC unroll 3
          for (int j = 0; j < 3; ++j) {
            const int m = c - j;
            if (m >= 0 && m < MB) acc[r][m] = vfma(xv, wv[i][j], acc[r][m]);
          }
        }
      }
    }
  }
#pragma GCC unroll 2
  for (int r = 0; r < 2; ++r)
#pragma GCC unroll 8
    for (int m = 0; m < MB; ++m)
      vstore_f32(out + r * out_row_step + m * out_pitch, apply_simple_activation(acc[r][m], act));
}

template <class T = float>
using TwoRowsFn = void (*)(const T*, const KernelRows&, int64_t, int64_t, int64_t, const float*, const float*,
                           FusedActivation, T*, int64_t, int64_t);
template <bool kChecked, class T, size_t... M>
constexpr std::array<TwoRowsFn<T>, kMB> two_rows_table(std::index_sequence<M...>) {
  return {cblock_two_rows_3x3<int(M) + 1, kChecked, T>...};
}
// The two-row blocks by [block pixels - 1] where they apply (3-D, 3x3 at unit strides and
// dilations), else nullptr.
template <bool kChecked, class T>
const TwoRowsFn<T>* two_rows_blocks(const ConvProblem& p) {
  static constexpr auto blocks = two_rows_table<kChecked, T>(std::make_index_sequence<kMB>());
  const bool applies = p.kernel_d > 1 && p.kernel_h == 3 && p.kernel_w == 3 && p.stride_h == 1 && p.stride_w == 1 &&
                       p.dilation_h == 1 && p.dilation_w == 1;
  return applies ? blocks.data() : nullptr;
}

template <class T = float>
using RowReuseFn = void (*)(const T*, const KernelRows&, int64_t, int64_t, int64_t, const float*, const float*,
                            FusedActivation, T*, int64_t);
using TapsFn = void (*)(const float*, const int64_t*, int64_t, int64_t, const float*, const float*, FusedActivation,
                        float*);

template <int KW, int S, bool kChecked, class T, size_t... M>
constexpr std::array<RowReuseFn<T>, kMB> row_reuse_table(std::index_sequence<M...>) {
  return {cblock_row_reuse<KW, S, int(M) + 1, kChecked, T>...};
}
template <size_t... M>
constexpr std::array<TapsFn, kMB> taps_table(std::index_sequence<M...>) {
  return {cblock_taps<int(M) + 1>...};
}
constexpr auto kTaps = taps_table(std::make_index_sequence<kMB>());

// Row-reuse blocks by [block pixels - 1] for the kernel widths and strides they cover; kChecked:
// the ones that read x in place at the left and right edges.
template <bool kChecked, class T = float>
const RowReuseFn<T>* row_reuse_blocks(const ConvProblem& p) {
  static constexpr auto k1s1 = row_reuse_table<1, 1, kChecked, T>(std::make_index_sequence<kMB>());
  static constexpr auto k3s1 = row_reuse_table<3, 1, kChecked, T>(std::make_index_sequence<kMB>());
  static constexpr auto k3s2 = row_reuse_table<3, 2, kChecked, T>(std::make_index_sequence<kMB>());
  static constexpr auto k5s1 = row_reuse_table<5, 1, kChecked, T>(std::make_index_sequence<kMB>());
  static constexpr auto k5s2 = row_reuse_table<5, 2, kChecked, T>(std::make_index_sequence<kMB>());
  static constexpr auto k7s1 = row_reuse_table<7, 1, kChecked, T>(std::make_index_sequence<kMB>());
  if (p.dilation_w != 1) return nullptr;
  if (p.kernel_w == 1 && p.stride_w == 1) return k1s1.data();
  if (p.kernel_w == 3) return p.stride_w == 1 ? k3s1.data() : p.stride_w == 2 ? k3s2.data() : nullptr;
  if (p.kernel_w == 5) return p.stride_w == 1 ? k5s1.data() : p.stride_w == 2 ? k5s2.data() : nullptr;
  if (p.kernel_w == 7 && p.stride_w == 1) return k7s1.data();
  return nullptr;
}

struct CBlockPlan {
  int64_t cblocks = 0;      // channel blocks of kVL
  // NHWC with zero padding and a row-reuse kernel: full channel blocks are read from x in
  // place, and an item is a band of every channel block (see cblock_nhwc_in_place).
  bool in_place = false;
  int64_t band_rows = 0;    // output rows per item
  int64_t band_cols = 0;    // output columns per item
  int64_t row_bands = 0, col_bands = 0, items = 0;
  int64_t tile_rows = 0, tile_cols = 0;  // of the largest band's input tile
  // Input tile + output block + weights + biases, rounded up to whole cache lines: each
  // thread's part of the call's scratch.
  size_t thread_floats = 0;
};

bool cblock_in_place(const ConvProblem& p) {
  // (bfloat16 y in place is rounded as it leaves the registers: the activation must be applied there.)
  if (p.dtype != DType::Float32 && !is_simple<float>(p.activation)) return false;
  // (In place, the taps outside the input, depth taps too, are skipped as zeros.)
  const bool zero_padding = p.pad_mode == PadMode::Zeros || (p.pad_front == 0 && p.pad_back == 0 && p.pad_top == 0 &&
                                                             p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0);
  return p.layout == Layout::NHWC && zero_padding && row_reuse_blocks<true>(p) != nullptr;
}

CBlockPlan cblock_plan(const ConvProblem& p, int threads) {
  CBlockPlan d;
  d.cblocks = ceil_div(p.in_channels, kVL);
  d.in_place = cblock_in_place(p);
  d.band_cols = p.out_w;
  while (d.band_cols > 1 && input_cols_for(p, d.band_cols) > kMaxTileCols) d.band_cols = ceil_div(d.band_cols, 2);
  const int64_t row_bytes = input_cols_for(p, d.band_cols) * kVL * int64_t(sizeof(float));
  d.band_rows = p.out_h;
  while (d.band_rows > 1 && input_rows_for(p, d.band_rows) * row_bytes > kTileBytes)
    d.band_rows = ceil_div(d.band_rows, 2);
  d.col_bands = ceil_div(p.out_w, d.band_cols);
  // Enough items for an even split between threads, as long as a band keeps several rows
  // (each band copies kh - 1 rows of its neighbour again).  In place nothing is copied, and a
  // plane of fewer than 8 rows (7x7: one band, one thread busy) is split into a band a thread
  // (finer bands, or a split of the channels, ran slower: docs/tuning.md, "Small depthwise
  // planes on two threads").
  const int64_t item_cblocks = d.in_place ? 1 : d.cblocks;
  const auto item_count = [&] {
    return p.batch * p.out_d * item_cblocks * ceil_div(p.out_h, d.band_rows) * d.col_bands;
  };
  while (threads > 1 && item_count() < 8 * threads && d.band_rows >= 8) d.band_rows = ceil_div(d.band_rows, 2);
  while (d.in_place && item_count() < threads && d.band_rows >= 2) d.band_rows = ceil_div(d.band_rows, 2);
  d.row_bands = ceil_div(p.out_h, d.band_rows);
  d.items = item_count();
  d.tile_rows = input_rows_for(p, d.band_rows);
  d.tile_cols = input_cols_for(p, d.band_cols);
  const int64_t taps = p.kernel_d * p.kernel_h * p.kernel_w;
  // Weights [tap][kVL] and bias of one channel block, or of all of them when items take all.
  const int64_t weight_blocks = d.in_place ? d.cblocks : 1;
  d.thread_floats = size_t((d.tile_rows * d.tile_cols + d.band_rows * d.band_cols + weight_blocks * (taps + 1)) * kVL);
  d.thread_floats = (d.thread_floats + kLineFloats - 1) / kLineFloats * kLineFloats;
  return d;
}

// The shape conditions, whatever the element type.  A deep problem runs in place only (its depth
// taps read through x's depth stride; the tiles are planar), so in whole channel blocks.
bool cblock_accepts_shape(const ConvProblem& p) {
  if (!(p.groups == p.in_channels && p.out_channels == p.in_channels)) return false;
  if (has_depth(p) && !(cblock_in_place(p) && p.in_channels % kVL == 0)) return false;
  // In place, only a partial last channel block goes through tiles.
  const int64_t tiled = !cblock_in_place(p) ? p.in_channels : p.in_channels % kVL ? kVL : 0;
  return tiles_in_proportion(p, tiled, [&] {
    const CBlockPlan d = cblock_plan(p, 1);
    return double(p.batch * ceil_div(tiled, kVL) * d.row_bands * d.col_bands) * double(d.tile_rows * d.tile_cols * kVL);
  });
}

bool cblock_accepts(const ConvProblem& p) { return p.dtype == DType::Float32 && cblock_accepts_shape(p); }

// Every thread's part, and the tap offsets of the two tile widths (see run_cblock).
size_t cblock_workspace(const ConvProblem& p, int threads) {
  return size_t(threads) * cblock_plan(p, threads).thread_floats * sizeof(float) +
         size_t(2 * p.kernel_h * p.kernel_w) * sizeof(int64_t);
}

// NHWC with zero padding: full blocks of kVL channels are read straight from x (each pixel's
// channels are a vector already; copying them into the tile cost as much as the arithmetic),
// kernel rows and depth taps outside the input skipped, edge columns checked.  Every full channel block of a
// block of pixels runs before the next pixels, so a pixel's channels are used while its lines
// are in L1 (a pass per channel block read every line of a 128-channel plane 8 times from L2;
// docs/tuning.md, "Memory traffic").  Rows [oh0, oh0 + rows) and columns [ow0, ow0 + cols) of
// output slice od of image n; `inner` and `edge` are the problem's row-reuse blocks, unchecked
// and checked; weights [channel block][tap][kVL], biases [channel block][kVL].
// kPairs: two_rows_blocks applies (an instantiation of its own, so that the planar problems'
// row loop stays as it was).
template <class T, bool kPairs>
void cblock_nhwc_in_place(const ConvCall& call, const RowReuseFn<T>* inner, const RowReuseFn<T>* edge,
                          int64_t full_cblocks, const float* weights, const float* biases, int64_t n, int64_t od,
                          int64_t oh0, int64_t rows, int64_t ow0, int64_t cols) {
  const ConvProblem& p = call.p;
  const FusedActivation fused = is_simple<float>(p.activation) ? fused_activation(p) : FusedActivation{};
  const int64_t taps = p.kernel_d * p.kernel_h * p.kernel_w, slice_taps = p.kernel_h * p.kernel_w;
  // Depth taps [a_lo, a_hi) read input slices; the others only zero padding.
  const int64_t front = od * p.stride_d - p.pad_front;
  const int64_t a_lo = front >= 0 ? 0 : std::min(p.kernel_d, ceil_div(-front, p.dilation_d));
  const int64_t a_hi = std::clamp(ceil_div(p.in_d - front, p.dilation_d), a_lo, p.kernel_d);
  const T* xn =
      static_cast<const T*>(call.x) + n * call.x_stride.n + (front + a_lo * p.dilation_d) * call.x_depth_stride;
  T* yn = static_cast<T*>(call.y) + n * call.y_stride.n + od * call.y_depth_stride;
  const int64_t kw_reach = (p.kernel_w - 1) * p.dilation_w;
  const TwoRowsFn<T>* pairs_inner = kPairs ? two_rows_blocks<false, T>(p) : nullptr;
  const TwoRowsFn<T>* pairs_edge = kPairs ? two_rows_blocks<true, T>(p) : nullptr;
  // Output rows whose three kernel rows all read input rows (top and bottom padding: none).
  const int64_t full_lo = p.pad_top, full_hi = p.in_h - 3 + p.pad_top;  // [full_lo, full_hi]
  for (int64_t ow = ow0; ow < ow0 + cols; ow += kMB) {
    const size_t mb = size_t(std::min<int64_t>(kMB, ow0 + cols - ow));
    const int64_t col0 = ow * p.stride_w - p.pad_left;
    const bool inside = col0 >= 0 && col0 + int64_t(mb - 1) * p.stride_w + kw_reach < p.in_w;
    const RowReuseFn<T> block = (inside ? inner : edge)[mb - 1];
    for (int64_t oh = oh0; oh < oh0 + rows; ++oh) {
      if (kPairs && oh >= full_lo && oh + 1 <= full_hi && oh + 1 < oh0 + rows) {
        const int64_t top = oh - p.pad_top;
        const T* xr = xn + top * call.x_stride.h;
        const T* x0 = inside ? xr + col0 * call.x_stride.w : xr;
        T* y0 = yn + oh * call.y_stride.h + ow * call.y_stride.w;
        const KernelRows kernel_rows{a_hi - a_lo, p.dilation_d * call.x_depth_stride, slice_taps * kVL, 3,
                                     call.x_stride.h};
        const float* w0 = weights + a_lo * slice_taps * kVL;
        const TwoRowsFn<T> pair = (inside ? pairs_inner : pairs_edge)[mb - 1];
        for (int64_t cb = 0; cb < full_cblocks; ++cb)
          pair(x0 + cb * kVL, kernel_rows, call.x_stride.w, col0, p.in_w, w0 + cb * taps * kVL, biases + cb * kVL,
               fused, y0 + cb * kVL, call.y_stride.w, call.y_stride.h);
        if constexpr (std::is_same_v<T, float>)
          if (!is_simple<float>(p.activation))
            for (int64_t r = 0; r < 2; ++r)
              for (size_t m = 0; m < mb; ++m)
                activate_row(y0 + r * call.y_stride.h + int64_t(m) * call.y_stride.w, full_cblocks * kVL,
                             fused_activation(p));
        ++oh;
        continue;
      }
      // Kernel rows [i_lo, i_hi) read input rows; the others only zero padding.
      const int64_t top = oh * p.stride_h - p.pad_top;
      const int64_t i_lo = top >= 0 ? 0 : std::min(p.kernel_h, ceil_div(-top, p.dilation_h));
      const int64_t i_hi = std::clamp(ceil_div(p.in_h - top, p.dilation_h), i_lo, p.kernel_h);
      const T* xr = xn + (top + i_lo * p.dilation_h) * call.x_stride.h;
      const T* x0 = inside ? xr + col0 * call.x_stride.w : xr;
      T* y0 = yn + oh * call.y_stride.h + ow * call.y_stride.w;
      const KernelRows kernel_rows{a_hi - a_lo, p.dilation_d * call.x_depth_stride, slice_taps * kVL, i_hi - i_lo,
                                   p.dilation_h * call.x_stride.h};
      const float* w0 = weights + ((a_lo * p.kernel_h + i_lo) * p.kernel_w) * kVL;
      for (int64_t cb = 0; cb < full_cblocks; ++cb)
        block(x0 + cb * kVL, kernel_rows, call.x_stride.w, col0, p.in_w, w0 + cb * taps * kVL, biases + cb * kVL, fused,
              y0 + cb * kVL, call.y_stride.w);
      if constexpr (std::is_same_v<T, float>)  // (bfloat16 runs in place with simple activations only)
        if (!is_simple<float>(p.activation))
          for (size_t m = 0; m < mb; ++m)
            activate_row(y0 + int64_t(m) * call.y_stride.w, full_cblocks * kVL, fused_activation(p));
    }
  }
}

// T: x's and y's element, float or bfloat16 bits (widened into the tile, rounded as stored;
// the weights float32 either way).
template <class T>
void run_cblock_typed(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const CBlockPlan d = cblock_plan(p, call.num_threads);
  const float* weight = static_cast<const float*>(call.weight);
  const float* bias = static_cast<const float*>(call.bias);
  T* y = static_cast<T*>(call.y);
  const int64_t taps = p.kernel_d * p.kernel_h * p.kernel_w;  // (tiles are planar: kernel_d 1 there)
  const RowReuseFn<float>* reuse = row_reuse_blocks<false>(p);  // (on the float32 tile)
  const RowReuseFn<T>* in_place = d.in_place ? row_reuse_blocks<false, T>(p) : nullptr;
  const RowReuseFn<T>* in_place_edge = d.in_place ? row_reuse_blocks<true, T>(p) : nullptr;
  const bool pairs = d.in_place && two_rows_blocks<false, T>(p) != nullptr;
  const bool nchw = p.layout == Layout::NCHW;
  const int64_t full_cblocks = p.in_channels / kVL;
  const FusedActivation fused = is_simple<float>(p.activation) ? fused_activation(p) : FusedActivation{};
  // Tap offsets in a tile of a full band's width, then of the last column band's.
  const int64_t last_band_cols = p.out_w - (d.col_bands - 1) * d.band_cols;
  std::vector<int64_t> tap_offsets(size_t(2 * taps));
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t tile_cols = input_cols_for(p, b == 0 ? d.band_cols : last_band_cols);
    for (int64_t i = 0; i < p.kernel_h; ++i)
      for (int64_t j = 0; j < p.kernel_w; ++j)
        tap_offsets[size_t(b * taps + i * p.kernel_w + j)] = (i * p.dilation_h * tile_cols + j * p.dilation_w) * kVL;
  }
  float* thread_parts = scratch<float>(saturating_mul(d.thread_floats, size_t(call.num_threads)));
  parallel_region(call.num_threads, [&] {
    DenormalGuard denormals;
    float* tile = thread_parts + d.thread_floats * size_t(thread_id());
    float* out_block = tile + d.tile_rows * d.tile_cols * kVL;
    float* weights = out_block + d.band_rows * d.band_cols * kVL;  // [channel block][tap][kVL]
    float* biases = weights + (d.in_place ? d.cblocks : 1) * taps * kVL;  // [channel block][kVL]
    int64_t last_cb = -1;
    // [channel][tap] -> [tap][channel] (the weights of a channel are a "plane" of taps) for
    // channel block cb, into slot `slot`.
    const auto load_weights = [&](int64_t cb, int64_t slot) {
      const int64_t c0 = cb * kVL;
      const int cvalid = int(std::min<int64_t>(kVL, p.in_channels - c0));
      planes_to_pixels(weight + c0 * taps, taps, cvalid, taps, weights + slot * taps * kVL);
      vstore(biases + slot * kVL, bias ? vload_mask(bias + c0, lane_mask(0, cvalid)) : vzero());
    };
    if (d.in_place)
      for (int64_t cb = 0; cb < d.cblocks; ++cb) load_weights(cb, cb);
    // Channel block cb of a band through the padded tile.
    const auto run_tile = [&](int64_t n, int64_t cb, int64_t oh0, int64_t rows, int64_t ow0, int64_t cols) {
      const int64_t c0 = cb * kVL;
      const int cvalid = int(std::min<int64_t>(kVL, p.in_channels - c0));
      int64_t slot = cb;
      if (!d.in_place) {
        if (cb != last_cb) load_weights(cb, 0);
        last_cb = cb;
        slot = 0;
      }
      const float* wblock = weights + slot * taps * kVL;
      const float* bias_block = biases + slot * kVL;
      const int64_t tile_rows = input_rows_for(p, rows), tile_cols = input_cols_for(p, cols);
      fill_interleaved_tile<T>(call, n, c0, cvalid, oh0 * p.stride_h, tile_rows, ow0 * p.stride_w, tile_cols, tile);
      const int64_t* tap_off = tap_offsets.data() + (cols == d.band_cols ? 0 : taps);
      const KernelRows kernel_rows{1, 0, 0, p.kernel_h, p.dilation_h * tile_cols * kVL};
      const int64_t col_step = p.stride_w * kVL;
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = tile + r * p.stride_h * tile_cols * kVL;
        float* orow = out_block + r * cols * kVL;
        for (int64_t ow = 0; ow < cols; ow += kMB) {
          const size_t mb = size_t(std::min<int64_t>(kMB, cols - ow));
          if (reuse)
            reuse[mb - 1](xr + ow * col_step, kernel_rows, kVL, 0, 0, wblock, bias_block, fused, orow + ow * kVL, kVL);
          else kTaps[mb - 1](xr + ow * col_step, tap_off, taps, col_step, wblock, bias_block, fused, orow + ow * kVL);
        }
      }
      if (!is_simple<float>(p.activation)) activate_row(out_block, rows * cols * kVL, fused_activation(p));
      T* yn = y + n * call.y_stride.n + c0 * call.y_stride.c;
      if (nchw && cols == p.out_w) {  // full rows: the block is a contiguous run of each plane
        pixels_to_planes(out_block, kVL, cvalid, rows * cols, yn + oh0 * call.y_stride.h, call.y_stride.c);
      } else {
        for (int64_t r = 0; r < rows; ++r) {
          T* yr = yn + (oh0 + r) * call.y_stride.h + ow0 * call.y_stride.w;
          const float* orow = out_block + r * cols * kVL;
          if (nchw) {
            pixels_to_planes(orow, kVL, cvalid, cols, yr, call.y_stride.c);
          } else {
            const Mask cmask = lane_mask(0, cvalid);
            for (int64_t o = 0; o < cols; ++o) vstore_f32_mask(yr + o * call.y_stride.w, vload(orow + o * kVL), cmask);
          }
        }
      }
    };
    // Each thread takes a contiguous range of items, the same range every call: a small
    // layer's input and output then stay in that core's L2 from one call to the next (items
    // dealt dynamically moved them between the cores' caches), and in NHWC the
    // channel blocks of a band run one after another, so the band's input lines (which hold
    // every block) come from memory once and the threads do not write neighbouring lines of
    // the same pixels.
    const auto run_item = [&](int64_t item) {
      const int64_t item_cblocks = d.in_place ? 1 : d.cblocks;
      const int64_t bands = p.batch * p.out_d * d.row_bands * d.col_bands;
      const int64_t cb = nchw ? item / bands : item % item_cblocks;
      const int64_t band = nchw ? item % bands : item / item_cblocks;
      const int64_t slice = band / (d.row_bands * d.col_bands), n = slice / p.out_d, od = slice % p.out_d;
      const int64_t rb = band / d.col_bands % d.row_bands, colb = band % d.col_bands;
      const int64_t oh0 = rb * d.band_rows, rows = std::min(d.band_rows, p.out_h - oh0);
      const int64_t ow0 = colb * d.band_cols, cols = std::min(d.band_cols, p.out_w - ow0);
      if (d.in_place) {  // every channel block of the band: the full ones in place, a partial one tiled
        if (pairs)
          cblock_nhwc_in_place<T, true>(call, in_place, in_place_edge, full_cblocks, weights, biases, n, od, oh0, rows,
                                        ow0, cols);
        else
          cblock_nhwc_in_place<T, false>(call, in_place, in_place_edge, full_cblocks, weights, biases, n, od, oh0, rows,
                                         ow0, cols);
        if (full_cblocks < d.cblocks) run_tile(n, full_cblocks, oh0, rows, ow0, cols);
        return;
      }
      run_tile(n, cb, oh0, rows, ow0, cols);
    };
#pragma omp for schedule(static)
    for (int64_t item = 0; item < d.items; ++item) run_item(item);
  });
}

void run_cblock(const ConvCall& call) { run_cblock_typed<float>(call); }

// ---------------------------------------------------------------------------------------------
// conv2d_depthwise_nchw_f32: NCHW, stride 1 along the row, vectorised along the output row.
// A work item is (image, channel, band of output rows); the band's input rows are copied into
// a padded tile whose rows are a whole number of vectors wide (plain copies, no transpose), so
// every load is unmasked; the output goes straight into y (the last vector of a row masked).
// Weights are broadcast once per kernel row and block, so an FMA costs one load.

constexpr int kRowsMax = 4, kVecsMax = 4;  // register block: up to 4 rows x 4 vectors

struct RowsPlan {
  int64_t row_vectors = 0;  // vectors per output row
  int64_t pitch = 0;        // tile row length, whole vectors: covers row_vectors * kVL + (kw - 1) * dilation_w
  int64_t band_rows = 0, bands = 0, items = 0, tile_rows = 0;
};

RowsPlan rows_plan(const ConvProblem& p, int threads) {
  RowsPlan d;
  d.row_vectors = ceil_div(p.out_w, kVL);
  // Whole vectors, so that every row starts on a cache line (the tile is 64-byte aligned).
  d.pitch = (d.row_vectors + ceil_div((p.kernel_w - 1) * p.dilation_w, kVL)) * kVL;
  d.band_rows = p.out_h;
  while (d.band_rows > 1 && input_rows_for(p, d.band_rows) * d.pitch * int64_t(sizeof(float)) > kTileBytes)
    d.band_rows = ceil_div(d.band_rows, 2);
  const int64_t planes = p.batch * p.in_channels;
  while (threads > 1 && planes * ceil_div(p.out_h, d.band_rows) < 8 * threads && d.band_rows >= 8)
    d.band_rows = ceil_div(d.band_rows, 2);
  d.bands = ceil_div(p.out_h, d.band_rows);
  d.items = planes * d.bands;
  d.tile_rows = input_rows_for(p, d.band_rows);
  return d;
}

// With a vector's worth of channels, the channel-block kernel does better on rows narrower
// than this: they waste lanes here, and pay for lane shifts on every row (kTiles).
constexpr int64_t kRowsMinWidth = kTiles.depthwise_rows_min_vectors * kVL;

bool rows_accepts(const ConvProblem& p) {
  return p.dtype == DType::Float32 && p.layout == Layout::NCHW && p.groups == p.in_channels &&
         p.out_channels == p.in_channels && p.stride_w == 1 && (p.out_w >= kRowsMinWidth || p.in_channels < kVL) &&
         tiles_in_proportion(p, p.in_channels, [&] {
           const RowsPlan d = rows_plan(p, 1);
           return double(d.items) * double(d.tile_rows * d.pitch);
         });
}

// Floats of one thread's tile, whole cache lines.
size_t rows_thread_floats(const RowsPlan& d) {
  return (size_t(d.tile_rows * d.pitch) + kLineFloats - 1) / kLineFloats * kLineFloats;
}

size_t rows_workspace(const ConvProblem& p, int threads) {
  return size_t(threads) * rows_thread_floats(rows_plan(p, threads)) * sizeof(float);
}

// Padded rows row0 .. row0 + rows - 1 of one plane, columns 0 .. pitch - 1 (zero past the
// padded width).
void fill_rows_tile(const ConvCall& call, const float* plane, int64_t row0, int64_t rows, int64_t pitch, float* tile) {
  const ConvProblem& p = call.p;
  const int64_t padded_w = p.pad_left + p.in_w + p.pad_right;
  const int64_t inner_lo = std::min(p.pad_left, pitch), inner_hi = std::min(p.pad_left + p.in_w, pitch);
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = tile + r * pitch;
    const int64_t src_row = call.row_src[row0 + r];
    if (src_row < 0) {
      for (int64_t q = 0; q < pitch; q += kVL) vstore(dst + q, vzero());
      continue;
    }
    const float* src = plane + src_row * call.x_stride.h;
    std::memcpy(dst + inner_lo, src + (inner_lo - p.pad_left), sizeof(float) * size_t(inner_hi - inner_lo));
    for (int64_t col = 0; col < inner_lo; ++col) dst[col] = call.col_src[col] < 0 ? 0.0f : src[call.col_src[col]];
    const int64_t border_hi = std::min(padded_w, pitch);
    for (int64_t col = inner_hi; col < border_hi; ++col)
      dst[col] = call.col_src[col] < 0 ? 0.0f : src[call.col_src[col]];
    std::fill(dst + border_hi, dst + pitch, 0.0f);
  }
}

// A block's accumulators start at the bias; its rows go to y with the simple activation, the
// last vector of a row masked at out_w.  (Shared by both row-block kernels below.)
template <int ROWS, int NV>
static inline void fill_rows_block(Vec (&acc)[ROWS][NV], float bias) {
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = vset1(bias);
}

template <int ROWS, int NV>
static inline void store_rows_block(const ConvProblem& p, Vec (&acc)[ROWS][NV], int64_t r0, int64_t ow0, float* y_band,
                                    int64_t y_row_stride) {
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r) {
    float* yr = y_band + (r0 + r) * y_row_stride;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const Vec out = apply_simple_activation(acc[r][v], fused_activation(p));
      const int64_t o = ow0 + v * kVL;
      if (o + kVL <= p.out_w) vstore(yr + o, out);
      else vstore_mask(yr + o, out, lane_mask(0, p.out_w - o));
    }
  }
}

// ROWS output rows x NV vectors starting at output column ow0 of the band's row r0; KW is the
// kernel width (0: any, read at run time).
template <int ROWS, int NV, int KW>
void rows_block(const ConvProblem& p, const float* tile, int64_t pitch, const float* wc, float bias, int64_t r0,
                int64_t ow0, float* y_band, int64_t y_row_stride) {
  const int64_t kw = KW ? KW : p.kernel_w;
  Vec acc[ROWS][NV];
  fill_rows_block(acc, bias);
  for (int64_t i = 0; i < p.kernel_h; ++i) {
    const float* xr = tile + ((r0 * p.stride_h) + i * p.dilation_h) * pitch + ow0;
    const int64_t row_step = p.stride_h * pitch;
    const float* wr = wc + i * kw;
    if constexpr (KW > 0) {
      // Unit dilation: the tile's rows are vector-aligned, so the shifted windows come from
      // two aligned loads and a lane shift (an unaligned load would cross a cache line).
      Vec wv[KW];
#pragma GCC unroll 8
      for (int j = 0; j < KW; ++j) wv[j] = vset1(wr[j]);
#pragma GCC unroll 4
      for (int r = 0; r < ROWS; ++r) {
        const float* xrr = xr + r * row_step;
        Vec lo = vload(xrr);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          const Vec hi = vload(xrr + (v + 1) * kVL);
          acc[r][v] = vfma(lo, wv[0], acc[r][v]);
#pragma GCC unroll 8
          for (int j = 1; j < KW; ++j) acc[r][v] = vfma(shift_lanes(lo, hi, j), wv[j], acc[r][v]);
          lo = hi;
        }
      }
    } else {
      for (int64_t j = 0; j < kw; ++j) {
        const Vec wv = vset1(wr[j]);
        const float* xj = xr + j * p.dilation_w;
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[r][v] = vfma(vload(xj + r * row_step + v * kVL), wv, acc[r][v]);
      }
    }
  }
  store_rows_block(p, acc, r0, ow0, y_band, y_row_stride);
}

// A 3x3 kernel's weights, each broadcast to a vector.
static inline void broadcast_3x3(Vec (&wv)[3][3], const float* wc) {
#pragma GCC unroll 3
  for (int i = 0; i < 3; ++i)
#pragma GCC unroll 3
    for (int j = 0; j < 3; ++j) wv[i][j] = vset1(wc[i * 3 + j]);
}

// 3x3, unit stride and dilation: every input row of the block is loaded and shifted once and
// feeds the (up to) three output rows it belongs to, instead of once per output row.
// (The 3-D kernel below sums several slices' windows into the same accumulators.)
template <int ROWS, int NV>
static inline void accumulate_3x3(Vec (&acc)[ROWS][NV], const float* tile, int64_t pitch, const float* wc, int64_t r0,
                                  int64_t ow0) {
  Vec wv[3][3];
  broadcast_3x3(wv, wc);
#pragma GCC unroll 8
  for (int t = 0; t < ROWS + 2; ++t) {
    const float* xr = tile + (r0 + t) * pitch + ow0;
    Vec lo = vload(xr);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const Vec hi = vload(xr + (v + 1) * kVL);
      const Vec x1 = shift_lanes_c<1>(lo, hi), x2 = shift_lanes_c<2>(lo, hi);
#pragma GCC unroll 3
      for (int i = 0; i < 3; ++i) {
        const int r = t - i;  // the output row that input row t meets with kernel row i
        if (r >= 0 && r < ROWS) {
          acc[r][v] = vfma(lo, wv[i][0], acc[r][v]);
          acc[r][v] = vfma(x1, wv[i][1], acc[r][v]);
          acc[r][v] = vfma(x2, wv[i][2], acc[r][v]);
        }
      }
      lo = hi;
    }
  }
}

// The same on an input slice read in place, zero padding one column wide on either side: the
// windows of output vector v are lane shifts of the row's input vectors v - 1, v and v + 1,
// loaded under masks[v .. v + 2] (lanes past the row's end are the right padding's zeros,
// vector -1 of the row's first block the left padding); rows outside the slice are skipped.
//   top: the input row of the block's first output row's first kernel row
template <int ROWS, int NV>
static inline void accumulate_3x3_in_place(Vec (&acc)[ROWS][NV], const float* slice, int64_t row_stride, int64_t in_h,
                                           const Mask* masks, const float* wc, int64_t top, int64_t ow0) {
  Vec wv[3][3];
  broadcast_3x3(wv, wc);
#pragma GCC unroll 8
  for (int t = 0; t < ROWS + 2; ++t) {
    if (top + t < 0 || top + t >= in_h) continue;
    const float* xr = slice + (top + t) * row_stride + ow0;
    Vec prev = vload_mask(xr - kVL, masks[0]), cur = vload_mask(xr, masks[1]);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const Vec next = vload_mask(xr + (v + 1) * kVL, masks[v + 2]);
      const Vec x0 = shift_lanes_c<kVL - 1>(prev, cur), x2 = shift_lanes_c<1>(cur, next);
#pragma GCC unroll 3
      for (int i = 0; i < 3; ++i) {
        const int r = t - i;
        if (r >= 0 && r < ROWS) {
          acc[r][v] = vfma(x0, wv[i][0], acc[r][v]);
          acc[r][v] = vfma(cur, wv[i][1], acc[r][v]);
          acc[r][v] = vfma(x2, wv[i][2], acc[r][v]);
        }
      }
      prev = cur, cur = next;
    }
  }
}

template <int ROWS, int NV>
void rows_block_3x3(const ConvProblem& p, const float* tile, int64_t pitch, const float* wc, float bias, int64_t r0,
                    int64_t ow0, float* y_band, int64_t y_row_stride) {
  Vec acc[ROWS][NV];
  fill_rows_block(acc, bias);
  accumulate_3x3(acc, tile, pitch, wc, r0, ow0);
  store_rows_block(p, acc, r0, ow0, y_band, y_row_stride);
}

using RowsBlockFn = void (*)(const ConvProblem&, const float*, int64_t, const float*, float, int64_t, int64_t, float*,
                             int64_t);
template <int KW>
struct RowsBlocks {
  // [rows - 1][nv - 1]
  static constexpr RowsBlockFn table[kRowsMax][kVecsMax] = {
      {rows_block<1, 1, KW>, rows_block<1, 2, KW>, rows_block<1, 3, KW>, rows_block<1, 4, KW>},
      {rows_block<2, 1, KW>, rows_block<2, 2, KW>, rows_block<2, 3, KW>, rows_block<2, 4, KW>},
      {rows_block<3, 1, KW>, rows_block<3, 2, KW>, rows_block<3, 3, KW>, rows_block<3, 4, KW>},
      {rows_block<4, 1, KW>, rows_block<4, 2, KW>, rows_block<4, 3, KW>, rows_block<4, 4, KW>},
  };
};

constexpr int64_t kReuseVecs = kTiles.depthwise_reuse_vectors;
static_assert(kReuseVecs <= kVecsMax, "the 3x3 reuse blocks are a part of the rows_block table");
// The 3x3 blocks that reuse input rows, up to kReuseVecs vectors (none wider is built).
template <int R, int NV>
constexpr RowsBlockFn reuse_block() {
  if constexpr (NV <= kReuseVecs) return rows_block_3x3<R, NV>;
  else return nullptr;
}
struct RowsBlocks3x3 {
  static constexpr RowsBlockFn table[kRowsMax][kVecsMax] = {
      {reuse_block<1, 1>(), reuse_block<1, 2>(), reuse_block<1, 3>(), reuse_block<1, 4>()},
      {reuse_block<2, 1>(), reuse_block<2, 2>(), reuse_block<2, 3>(), reuse_block<2, 4>()},
      {reuse_block<3, 1>(), reuse_block<3, 2>(), reuse_block<3, 3>(), reuse_block<3, 4>()},
      {reuse_block<4, 1>(), reuse_block<4, 2>(), reuse_block<4, 3>(), reuse_block<4, 4>()},
  };
};

void run_rows(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const RowsPlan d = rows_plan(p, call.num_threads);
  const float* x = static_cast<const float*>(call.x);
  const float* w = static_cast<const float*>(call.weight);
  const float* bias = static_cast<const float*>(call.bias);
  float* y = static_cast<float*>(call.y);
  const int64_t taps = p.kernel_h * p.kernel_w;
  const bool unit = p.dilation_w == 1;
  const bool reuse_rows = unit && p.kernel_w == 3 && p.kernel_h == 3 && p.stride_h == 1 && p.dilation_h == 1;
  const auto& blocks = reuse_rows                ? RowsBlocks3x3::table
                       : unit && p.kernel_w == 3 ? RowsBlocks<3>::table
                       : unit && p.kernel_w == 5 ? RowsBlocks<5>::table
                                                 : RowsBlocks<0>::table;
  // Blocks of up to 4 x 4 vectors: wide rows take more vectors, narrow ones more rows (the
  // 3x3 blocks that reuse input rows take up to kReuseVecs vectors, which leaves registers
  // for their shifted inputs and 9 weights, and as many rows as they can).
  const int64_t nv_max = std::min<int64_t>(reuse_rows ? kReuseVecs : kVecsMax, d.row_vectors);
  const int64_t rows_max = reuse_rows ? kRowsMax : std::max<int64_t>(1, std::min<int64_t>(kRowsMax, 8 / nv_max));
  const size_t thread_tile = rows_thread_floats(d);
  float* tiles = scratch<float>(saturating_mul(thread_tile, size_t(call.num_threads)));
  parallel_region(call.num_threads, [&] {
    DenormalGuard denormals;
    float* tile = tiles + thread_tile * size_t(thread_id());
    // Each thread takes a contiguous range of planes, the same every call: it reads x and
    // writes y as long streams (the prefetchers follow them), and a small layer's data stays
    // in its core's L2 from one call to the next.
#pragma omp for schedule(static)
    for (int64_t item = 0; item < d.items; ++item) {
      const int64_t plane = item / d.bands, band = item % d.bands;
      const int64_t n = plane / p.in_channels, c = plane % p.in_channels;
      const int64_t oh0 = band * d.band_rows, rows = std::min(d.band_rows, p.out_h - oh0);
      fill_rows_tile(call, x + n * call.x_stride.n + c * call.x_stride.c, oh0 * p.stride_h, input_rows_for(p, rows),
                     d.pitch, tile);
      float* y_band = y + n * call.y_stride.n + c * call.y_stride.c + oh0 * call.y_stride.h;
      const float b = bias ? bias[c] : 0.0f;
      for (int64_t r = 0; r < rows; r += rows_max) {
        const int rb = int(std::min(rows_max, rows - r));
        for (int64_t v = 0; v < d.row_vectors; v += nv_max) {
          const int nv = int(std::min<int64_t>(nv_max, d.row_vectors - v));
          blocks[rb - 1][nv - 1](p, tile, d.pitch, w + c * taps, b, r, v * kVL, y_band, call.y_stride.h);
        }
        if (!is_simple<float>(p.activation))
          for (int k = 0; k < rb; ++k) activate_row(y_band + (r + k) * call.y_stride.h, p.out_w, fused_activation(p));
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// conv3d_depthwise_nchw_f32: NCDHW depthwise with kd x 3 x 3 kernels, unit strides and
// dilations, zero depth padding, read channels-first instead of between transposes to
// channels-last and back (most of the channel-block kernel's time there: docs/tuning.md).
// A work item is (image, channel, band of output rows, run of output slices).  With zero
// padding one column wide on either side ("same" 3x3) the input slices are read in place
// (accumulate_3x3_in_place); otherwise each input slice's band is copied once into a padded,
// vector-aligned tile as the row kernel's (fill_rows_tile) and kept in a ring of kd tiles while
// the output slices that read it run (accumulate_3x3).  Either way an output block sums every
// live depth tap's 3x3 windows in registers and is stored once.

constexpr int64_t kMaxSliceTaps = 8;  // kernel depths the ring takes (X3D, C3D, R(2+1)D: 3 to 5)

// Zero padding one column wide on either side ("same" 3x3): the slices are read in place.
bool slices_in_place(const ConvProblem& p) {
  return p.pad_mode == PadMode::Zeros && p.pad_left == 1 && p.pad_right == 1;
}

struct SlicesPlan {
  int64_t row_vectors = 0;  // vectors per output row
  int64_t pitch = 0;        // tile row length, whole vectors: row_vectors * kVL + 2 columns
  int64_t band_rows = 0, bands = 0, run_slices = 0, runs = 0, items = 0;
  int64_t tile_rows = 0;
  size_t tile_floats = 0;    // one slice's tile, whole cache lines
  size_t thread_floats = 0;  // a thread's ring of kd tiles (none in place)
};

SlicesPlan slices_plan(const ConvProblem& p, int threads) {
  SlicesPlan d;
  d.row_vectors = ceil_div(p.out_w, kVL);
  d.pitch = (d.row_vectors + 1) * kVL;
  // The ring of kd tiles stays inside the row kernel's tile budget.
  d.band_rows = p.out_h;
  while (d.band_rows > 1 && p.kernel_d * input_rows_for(p, d.band_rows) * d.pitch * int64_t(sizeof(float)) > kTileBytes)
    d.band_rows = ceil_div(d.band_rows, 2);
  d.bands = ceil_div(p.out_h, d.band_rows);
  // Enough items for an even split between threads, as long as a run keeps several slices per
  // slice copied again (each run copies kd - 1 input slices of its neighbour).
  const int64_t bands = p.batch * p.in_channels * d.bands;
  d.run_slices = p.out_d;
  while (threads > 1 && bands * ceil_div(p.out_d, d.run_slices) < 8 * threads && d.run_slices >= 4 * p.kernel_d)
    d.run_slices = ceil_div(d.run_slices, 2);
  d.runs = ceil_div(p.out_d, d.run_slices);
  d.items = bands * d.runs;
  d.tile_rows = input_rows_for(p, d.band_rows);
  d.tile_floats = (size_t(d.tile_rows * d.pitch) + kLineFloats - 1) / kLineFloats * kLineFloats;
  d.thread_floats = slices_in_place(p) ? 0 : size_t(p.kernel_d) * d.tile_floats;
  return d;
}

bool slices_accepts(const ConvProblem& p) {
  const bool zero_depth_padding = p.pad_mode == PadMode::Zeros || (p.pad_front == 0 && p.pad_back == 0);
  // (Rows as narrow as the row kernel's: narrower ones waste too many lanes.)
  return p.dtype == DType::Float32 && p.layout == Layout::NCHW && has_depth(p) && p.groups == p.in_channels &&
         p.out_channels == p.in_channels && p.kernel_d <= kMaxSliceTaps && p.kernel_h == 3 && p.kernel_w == 3 &&
         p.stride_d == 1 && p.stride_h == 1 && p.stride_w == 1 && p.dilation_d == 1 && p.dilation_h == 1 &&
         p.dilation_w == 1 && zero_depth_padding && p.out_w >= kRowsMinWidth &&
         tiles_in_proportion(p, p.in_channels, [&] {
           const SlicesPlan d = slices_plan(p, 1);
           return double(p.batch * p.in_channels * d.bands) * double(p.in_d + (d.runs - 1) * (p.kernel_d - 1)) *
                  double(d.tile_rows * d.pitch);
         });
}

size_t slices_workspace(const ConvProblem& p, int threads) {
  return size_t(threads) * slices_plan(p, threads).thread_floats * sizeof(float);
}

// ROWS output rows x NV vectors of one output slice: the 3x3 windows of `count` input slices'
// tiles, each with its depth tap's weights, summed in registers.
template <int ROWS, int NV>
void slices_block_3x3(const ConvProblem& p, const float* const* tiles, const float* const* weights, int64_t count,
                      int64_t pitch, float bias, int64_t r0, int64_t ow0, float* y_band, int64_t y_row_stride) {
  Vec acc[ROWS][NV];
  fill_rows_block(acc, bias);
  for (int64_t s = 0; s < count; ++s) accumulate_3x3(acc, tiles[s], pitch, weights[s], r0, ow0);
  store_rows_block(p, acc, r0, ow0, y_band, y_row_stride);
}

// The same reading the input slices in place (slices_in_place): `slices` are x's, read through
// its row stride; top: the input row of output row r0's first kernel row.
template <int ROWS, int NV>
void slices_block_3x3_in_place(const ConvProblem& p, const float* const* slices, const float* const* weights,
                               int64_t count, int64_t row_stride, float bias, int64_t r0, int64_t top, int64_t ow0,
                               float* y_band, int64_t y_row_stride) {
  Vec acc[ROWS][NV];
  fill_rows_block(acc, bias);
  Mask masks[NV + 2];  // input vectors -1 .. NV of the block's rows: their lanes in [0, in_w)
#pragma GCC unroll 6
  for (int k = 0; k < NV + 2; ++k) {
    const int64_t col0 = ow0 + (k - 1) * kVL;
    masks[k] = lane_mask(-col0, p.in_w - col0);
  }
  for (int64_t s = 0; s < count; ++s)
    accumulate_3x3_in_place(acc, slices[s], row_stride, p.in_h, masks, weights[s], top, ow0);
  store_rows_block(p, acc, r0, ow0, y_band, y_row_stride);
}

using SlicesBlockFn = void (*)(const ConvProblem&, const float* const*, const float* const*, int64_t, int64_t, float,
                               int64_t, int64_t, float*, int64_t);
template <int R, int NV>
constexpr SlicesBlockFn slices_block() {
  if constexpr (NV <= kReuseVecs) return slices_block_3x3<R, NV>;
  else return nullptr;
}
// [rows - 1][nv - 1], up to kReuseVecs vectors as the 2-D 3x3 blocks (blocks of 6 to 8 rows were
// no faster: docs/tuning.md)
constexpr SlicesBlockFn kSlicesBlocks[kRowsMax][kVecsMax] = {
    {slices_block<1, 1>(), slices_block<1, 2>(), slices_block<1, 3>(), slices_block<1, 4>()},
    {slices_block<2, 1>(), slices_block<2, 2>(), slices_block<2, 3>(), slices_block<2, 4>()},
    {slices_block<3, 1>(), slices_block<3, 2>(), slices_block<3, 3>(), slices_block<3, 4>()},
    {slices_block<4, 1>(), slices_block<4, 2>(), slices_block<4, 3>(), slices_block<4, 4>()},
};

using SlicesInPlaceFn = void (*)(const ConvProblem&, const float* const*, const float* const*, int64_t, int64_t, float,
                                 int64_t, int64_t, int64_t, float*, int64_t);
template <int R, int NV>
constexpr SlicesInPlaceFn slices_block_in_place() {
  if constexpr (NV <= kReuseVecs) return slices_block_3x3_in_place<R, NV>;
  else return nullptr;
}
constexpr SlicesInPlaceFn kSlicesInPlaceBlocks[kRowsMax][kVecsMax] = {
    {slices_block_in_place<1, 1>(), slices_block_in_place<1, 2>(), slices_block_in_place<1, 3>(),
     slices_block_in_place<1, 4>()},
    {slices_block_in_place<2, 1>(), slices_block_in_place<2, 2>(), slices_block_in_place<2, 3>(),
     slices_block_in_place<2, 4>()},
    {slices_block_in_place<3, 1>(), slices_block_in_place<3, 2>(), slices_block_in_place<3, 3>(),
     slices_block_in_place<3, 4>()},
    {slices_block_in_place<4, 1>(), slices_block_in_place<4, 2>(), slices_block_in_place<4, 3>(),
     slices_block_in_place<4, 4>()},
};

void run_slices(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const SlicesPlan d = slices_plan(p, call.num_threads);
  const float* x = static_cast<const float*>(call.x);
  const float* w = static_cast<const float*>(call.weight);
  const float* bias = static_cast<const float*>(call.bias);
  float* y = static_cast<float*>(call.y);
  const int64_t kd = p.kernel_d;
  const int64_t nv_max = std::min<int64_t>(kReuseVecs, d.row_vectors);
  float* rings = scratch<float>(saturating_mul(d.thread_floats, size_t(call.num_threads)));
  const bool in_place = slices_in_place(p);
  parallel_region(call.num_threads, [&] {
    DenormalGuard denormals;
    float* ring = rings + d.thread_floats * size_t(thread_id());
    // Contiguous ranges of items per thread, the same every call (as for the row kernel).
#pragma omp for schedule(static)
    for (int64_t item = 0; item < d.items; ++item) {
      const int64_t run = item % d.runs, band = item / d.runs % d.bands, plane = item / d.runs / d.bands;
      const int64_t n = plane / p.in_channels, c = plane % p.in_channels;
      const int64_t oh0 = band * d.band_rows, rows = std::min(d.band_rows, p.out_h - oh0);
      const int64_t od_end = std::min(p.out_d, (run + 1) * d.run_slices);
      const float* xc = x + n * call.x_stride.n + c * call.x_stride.c;
      float* yc = y + n * call.y_stride.n + c * call.y_stride.c + oh0 * call.y_stride.h;
      const float b = bias ? bias[c] : 0.0f;
      int64_t ring_slice[kMaxSliceTaps];  // the input slice in each tile of the ring, -1 for none
      std::fill(ring_slice, ring_slice + kd, int64_t(-1));
      for (int64_t od = run * d.run_slices; od < od_end; ++od) {
        // The live depth taps (those reading input slices; the others read zero padding): their
        // slices as the blocks read them, x's own in place, else their tiles.
        const float* slices[kMaxSliceTaps];
        const float* weights[kMaxSliceTaps];
        int64_t live = 0;
        for (int64_t a = 0; a < kd; ++a) {
          const int64_t s = od - p.pad_front + a;
          if (s < 0 || s >= p.in_d) continue;
          const float* slice = xc + s * call.x_depth_stride;
          if (!in_place) {
            float* tile = ring + size_t(s % kd) * d.tile_floats;
            if (ring_slice[s % kd] != s) {
              fill_rows_tile(call, slice, oh0, input_rows_for(p, rows), d.pitch, tile);
              ring_slice[s % kd] = s;
            }
            slice = tile;
          }
          slices[live] = slice;
          weights[live++] = w + (c * kd + a) * 9;
        }
        float* y_band = yc + od * call.y_depth_stride;
        for (int64_t r = 0; r < rows; r += kRowsMax) {
          const int rb = int(std::min<int64_t>(kRowsMax, rows - r));
          for (int64_t v = 0; v < d.row_vectors; v += nv_max) {
            const int nv = int(std::min(nv_max, d.row_vectors - v));
            if (in_place)
              kSlicesInPlaceBlocks[rb - 1][nv - 1](p, slices, weights, live, call.x_stride.h, b, r, oh0 + r - p.pad_top,
                                                   v * kVL, y_band, call.y_stride.h);
            else
              kSlicesBlocks[rb - 1][nv - 1](p, slices, weights, live, d.pitch, b, r, v * kVL, y_band, call.y_stride.h);
          }
          if (!is_simple<float>(p.activation))
            for (int k = 0; k < rb; ++k) activate_row(y_band + (r + k) * call.y_stride.h, p.out_w, fused_activation(p));
        }
      }
    }
  });
}

#if CPPCONV_SIMD_LANE_BIT_MASKS
// ---------------------------------------------------------------------------------------------
// conv2d_depthwise_flat3x3_f32: NCHW 3x3, stride 1, zero padding 1 on every side, rows a
// multiple of 8 wide (MobileNet's 112, 56, ...).  Each plane is read in place as one flat run
// of H * W values: output vector j holds flat outputs 16j .. 16j + 15, and tap (dy, dx) reads
// the window starting at 16j + dy * W + dx, a lane shift of two consecutive vectors of the
// plane.  The taps of column 0 and W - 1 that would wrap into the neighbouring row are dropped
// by masking their FMAs, and the rows above and below the plane are zeros, so nothing is
// copied: filling a padded tile was about half of the row kernel's time, because rows of 56
// floats are not vector-aligned.  Since 2W is a multiple of 16, the bottom kernel row's three
// windows for output vector j are the top kernel row's for vector j + W / 8: each is shifted
// once and kept in a small ring in L1 until then (5 shifts for 9 FMAs instead of 8).  Work
// items are bands of output vectors of a plane, so a single plane still uses every thread.

static_assert(kVL == 16, "flat3x3 pairs 16-lane vectors with rows a multiple of 8 wide");
constexpr AlgorithmName kFlat3x3Name = algorithm_name("conv2d_depthwise_flat3x3_f32__" CPPCONV_ISA_NAME, kVL, 1);

bool flat3x3_accepts(const ConvProblem& p) {
  return p.dtype == DType::Float32 && p.layout == Layout::NCHW && p.groups == p.in_channels &&
         p.out_channels == p.in_channels && p.kernel_h == 3 && p.kernel_w == 3 && p.stride_h == 1 && p.stride_w == 1 &&
         p.dilation_h == 1 && p.dilation_w == 1 && p.pad_top == 1 && p.pad_bottom == 1 && p.pad_left == 1 &&
         p.pad_right == 1 && p.pad_mode == PadMode::Zeros && p.in_w % 8 == 0;
}

// Output vectors [0, vectors) of a plane, in bands of band_vectors: enough (plane, band) items
// for each thread to have several, as long as a band stays long next to its ring prologue.
struct Flat3x3Plan {
  int64_t vectors = 0, ring_slots = 0, band_vectors = 0, bands = 0, items = 0;
};

Flat3x3Plan flat3x3_plan(const ConvProblem& p, int threads) {
  Flat3x3Plan d;
  d.vectors = ceil_div(p.in_h * p.in_w, kVL);
  d.ring_slots = p.in_w / 8;
  d.band_vectors = d.vectors;
  const int64_t planes = p.batch * p.in_channels;
  while (threads > 1 && planes * ceil_div(d.vectors, d.band_vectors) < 8 * threads &&
         d.band_vectors >= 16 * d.ring_slots)
    d.band_vectors = ceil_div(d.band_vectors, 2);
  d.bands = ceil_div(d.vectors, d.band_vectors);
  d.items = planes * d.bands;
  return d;
}

size_t flat3x3_workspace(const ConvProblem& p, int threads) {
  const Flat3x3Plan d = flat3x3_plan(p, threads);
  return size_t(threads) * size_t(3 * d.ring_slots) * sizeof(Vec) + size_t(d.vectors) * 2 * sizeof(Mask);
}

// Output vectors [j_begin, j_end) of one plane.  kHalf: W = 16m + 8, the bottom windows are
// shifts 7, 8, 9 of vectors j + m and j + m + 1; else W = 16m, shifts 15, 0, 1 of vectors
// j + m - 1 .. j + m + 1.  The vectors the windows need roll through registers, so each
// vector of the plane is loaded twice (for the middle and the bottom kernel row), whatever
// its alignment.
// T: x's and y's element, float or bfloat16 bits (widened as loaded, rounded as stored).
template <bool kHalf, class T>
void flat3x3_band(const ConvProblem& p, const Mask* left, const Mask* right, const T* x, const float* w, float bias,
                  T* y, Vec* ring, int64_t j_begin, int64_t j_end) {
  const int64_t n = p.in_h * p.in_w, vectors = ceil_div(n, kVL), full = n / kVL, m = p.in_w / 16;
  const int64_t ring_slots = p.in_w / 8;
  const FusedActivation act = fused_activation(p);
  // Vector a of the plane; zeros outside it (the padding rows above and below).
  const auto load = [&](int64_t a) {
    if (a >= 0 && a < full) return vload_f32(x + a * kVL);
    if (a == full && a < vectors) return vload_f32_mask(x + a * kVL, lane_mask(0, n - a * kVL));
    return vzero();
  };
  Vec lo, mid, hi;  // vectors j + m - 1 .. j + m + 1 (kHalf uses mid and hi)
  const auto bottom_windows = [&](Vec* out) {
    if constexpr (kHalf) {
      out[0] = shift_lanes_c<7>(mid, hi);
      out[1] = shift_lanes_c<8>(mid, hi);
      out[2] = shift_lanes_c<9>(mid, hi);
    } else {
      out[0] = shift_lanes_c<15>(lo, mid);
      out[1] = mid;
      out[2] = shift_lanes_c<1>(mid, hi);
    }
  };
  // The ring starts with the bottom windows of the W / 8 vectors before the band, which are
  // the band's first top windows (in the first band, partly the zero row above the plane).
  for (int64_t k = 0; k < ring_slots; ++k) {
    const int64_t j = j_begin - ring_slots + k;
    lo = load(j + m - 1), mid = load(j + m), hi = load(j + m + 1);
    bottom_windows(ring + 3 * k);
  }
  Vec wv[9];
#pragma GCC unroll 9
  for (int t = 0; t < 9; ++t) wv[t] = vset1(w[t]);
  const Vec b = vset1(bias);
  lo = load(j_begin + m - 1), mid = load(j_begin + m), hi = load(j_begin + m + 1);
  Vec prev = load(j_begin - 1), cur = load(j_begin), next = load(j_begin + 1);  // vectors j - 1 .. j + 1
  int64_t slot = 0;
  const auto step = [&](int64_t j, auto checked) {
    const Mask l = left[j], r = right[j];
    // (The new windows first: computed after the ring slot's loads, the loop ran slower;
    // docs/tuning.md.)
    Vec bottom[3];
    bottom_windows(bottom);
    Vec* top = ring + 3 * slot;
    Vec acc_top = vfma_lanes(top[0], wv[0], b, l);
    acc_top = vfma(top[1], wv[1], acc_top);
    acc_top = vfma_lanes(top[2], wv[2], acc_top, r);
    top[0] = bottom[0], top[1] = bottom[1], top[2] = bottom[2];
    if (++slot == ring_slots) slot = 0;
    Vec acc_mid = vmul(cur, wv[4]);
    acc_mid = vfma_lanes(shift_lanes_c<15>(prev, cur), wv[3], acc_mid, l);
    acc_mid = vfma_lanes(shift_lanes_c<1>(cur, next), wv[5], acc_mid, r);
    Vec acc_bottom = vmul(bottom[1], wv[7]);
    acc_bottom = vfma_lanes(bottom[0], wv[6], acc_bottom, l);
    acc_bottom = vfma_lanes(bottom[2], wv[8], acc_bottom, r);
    const Vec out = apply_simple_activation(vadd(acc_top, vadd(acc_mid, acc_bottom)), act);
    prev = cur, cur = next, lo = mid, mid = hi;
    if constexpr (decltype(checked)::value) {
      if (j < full) vstore_f32(y + j * kVL, out);
      else vstore_f32_mask(y + j * kVL, out, lane_mask(0, n - j * kVL));
      next = load(j + 2), hi = load(j + m + 2);
    } else {
      vstore_f32(y + j * kVL, out);
      next = vload_f32(x + (j + 2) * kVL), hi = vload_f32(x + (j + m + 2) * kVL);
    }
  };
  // Up to where the vectors loaded ahead (j + 2 and j + m + 2) are whole vectors of the plane.
  const int64_t unchecked_end = std::min(j_end, full - m - 2);
  int64_t j = j_begin;
  for (; j < unchecked_end; ++j) step(j, std::false_type{});
  for (; j < j_end; ++j) step(j, std::true_type{});
  if constexpr (std::is_same_v<T, float>)  // (the bfloat16 entry takes simple activations only)
    if (!is_simple<float>(act.kind)) activate_row(y + j_begin * kVL, std::min(n, j_end * kVL) - j_begin * kVL, act);
}

template <class T>
void run_flat3x3_typed(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const Flat3x3Plan d = flat3x3_plan(p, call.num_threads);
  // Per output vector, the lanes not in column 0 (left taps allowed) and not in column W - 1.
  std::vector<Mask> masks(size_t(2 * d.vectors), Mask(0xffff));
  Mask* left = masks.data();
  Mask* right = left + d.vectors;
  for (int64_t row = 0; row < p.in_h; ++row) {
    const int64_t first = row * p.in_w, last = first + p.in_w - 1;
    left[first / kVL] = Mask(left[first / kVL] & ~(1u << (first % kVL)));
    right[last / kVL] = Mask(right[last / kVL] & ~(1u << (last % kVL)));
  }
  const T* x = static_cast<const T*>(call.x);
  const float* w = static_cast<const float*>(call.weight);
  const float* bias = static_cast<const float*>(call.bias);
  T* y = static_cast<T*>(call.y);
  const auto band = p.in_w % 16 == 8 ? flat3x3_band<true, T> : flat3x3_band<false, T>;
  Vec* rings = static_cast<Vec*>(scratch_bytes(size_t(3 * d.ring_slots * call.num_threads) * sizeof(Vec)));
  parallel_region(call.num_threads, [&] {
    DenormalGuard denormals;
    Vec* ring = rings + 3 * d.ring_slots * thread_id();
    // Contiguous ranges of items per thread, the same every call (as for the row kernel).
#pragma omp for schedule(static)
    for (int64_t item = 0; item < d.items; ++item) {
      const int64_t plane = item / d.bands, j_begin = item % d.bands * d.band_vectors;
      const int64_t nb = plane / p.in_channels, c = plane % p.in_channels;
      band(p, left, right, x + nb * call.x_stride.n + c * call.x_stride.c, w + c * 9, bias ? bias[c] : 0.0f,
           y + nb * call.y_stride.n + c * call.y_stride.c, ring, j_begin,
           std::min(d.vectors, j_begin + d.band_vectors));
    }
  });
}

void run_flat3x3(const ConvCall& call) { run_flat3x3_typed<float>(call); }
#endif  // CPPCONV_SIMD_LANE_BIT_MASKS

#if CPPCONV_SIMD_BF16
// ---------------------------------------------------------------------------------------------
// The bfloat16 depthwise entries: the float32 kernels above reading bfloat16 x (widened in
// registers) and writing bfloat16 y (rounded once, as the widened float32 run's result would
// be), so no conversion pass runs around them.  Their weights are widened to float32 when they
// are packed.  Only bfloat16 x and y (compute_dtype="bfloat16" on float32 operands keeps the
// widened path).  They round with vcvtneps2bf16 (vstore_bf16): listed for AVX512-BF16 CPUs
// only; elsewhere the widened path runs.

bool bf16_operands(const ConvProblem& p) { return p.dtype == DType::BFloat16 && !p.x_float32 && !p.y_float32; }

size_t widened_weight_bytes(const ConvProblem& p) {
  return size_t(p.out_channels * p.kernel_h * p.kernel_w) * sizeof(float);
}

void widen_weights(const ConvProblem& p, const void* weight, void* packed, int) {
  const auto* w = static_cast<const uint16_t*>(weight);
  auto* out = static_cast<float*>(packed);
  for (int64_t i = 0; i < p.out_channels * p.kernel_h * p.kernel_w; ++i) out[i] = scalar_f32(w[i]);
}

// The call with its float32 weights in place of the bfloat16 ones.
template <void (*Run)(const ConvCall&)>
void run_on_widened_weights(const ConvCall& call) {
  ConvCall c = call;
  c.weight = call.packed;
  Run(c);
}

bool cblock_bf16_accepts(const ConvProblem& p) { return bf16_operands(p) && cblock_accepts_shape(p); }

constexpr AlgorithmName kCblockBf16Name = algorithm_name("conv2d_depthwise_cblock_bf16__" CPPCONV_ISA_NAME, kMB, kVL);

#if CPPCONV_SIMD_LANE_BIT_MASKS
bool flat3x3_bf16_accepts(const ConvProblem& p) {
  ConvProblem q = p;
  q.dtype = DType::Float32;
  return bf16_operands(p) && is_simple<float>(p.activation) && flat3x3_accepts(q);
}

constexpr AlgorithmName kFlat3x3Bf16Name = algorithm_name("conv2d_depthwise_flat3x3_bf16__" CPPCONV_ISA_NAME, kVL, 1);
#endif
#endif  // CPPCONV_SIMD_BF16

// Names: <op>__<isa>_<output pixels x channels of a register block>.
constexpr AlgorithmName kNchwName = algorithm_name("conv2d_depthwise_nchw_f32__" CPPCONV_ISA_NAME, kVL, 1);
constexpr AlgorithmName kSlicesName =
    algorithm_name("conv3d_depthwise_nchw_f32__" CPPCONV_ISA_NAME, kRowsMax, int(kReuseVecs) * kVL);
constexpr AlgorithmName kCblockName = algorithm_name("conv2d_depthwise_cblock_f32__" CPPCONV_ISA_NAME, kMB, kVL);

}  // namespace

#if CPPCONV_SIMD_LANE_BIT_MASKS
const ConvAlgorithm conv2d_depthwise_flat3x3_f32 = {kFlat3x3Name.text, DType::Float32,    flat3x3_accepts, no_packing,
                                                    nullptr,           flat3x3_workspace, run_flat3x3};
#endif

const ConvAlgorithm conv2d_depthwise_nchw_f32 = {kNchwName.text, DType::Float32, rows_accepts, no_packing,
                                                 nullptr,        rows_workspace, run_rows};

const ConvAlgorithm conv3d_depthwise_nchw_f32 = {kSlicesName.text,
                                                 DType::Float32,
                                                 slices_accepts,
                                                 no_packing,
                                                 nullptr,
                                                 slices_workspace,
                                                 run_slices,
                                                 Precision::Highest,
                                                 /*features=*/0,
                                                 /*adds_residual=*/false,
                                                 /*reads_depth_taps=*/false,
                                                 /*takes_depth=*/true};

// (Deep problems too: channels-last, zero padding, whole channel blocks; see cblock_accepts_shape.)
const ConvAlgorithm conv2d_depthwise_cblock_f32 = {kCblockName.text,
                                                   DType::Float32,
                                                   cblock_accepts,
                                                   no_packing,
                                                   nullptr,
                                                   cblock_workspace,
                                                   run_cblock,
                                                   Precision::Highest,
                                                   /*features=*/0,
                                                   /*adds_residual=*/false,
                                                   /*reads_depth_taps=*/false,
                                                   /*takes_depth=*/true};

#if CPPCONV_SIMD_BF16
const ConvAlgorithm conv2d_depthwise_cblock_bf16 = {kCblockBf16Name.text,
                                                    DType::BFloat16,
                                                    cblock_bf16_accepts,
                                                    widened_weight_bytes,
                                                    widen_weights,
                                                    cblock_workspace,
                                                    run_on_widened_weights<run_cblock_typed<uint16_t>>,
                                                    Precision::Highest,
                                                    kCpuAvx512Bf16};
#if CPPCONV_SIMD_LANE_BIT_MASKS
const ConvAlgorithm conv2d_depthwise_flat3x3_bf16 = {kFlat3x3Bf16Name.text,
                                                     DType::BFloat16,
                                                     flat3x3_bf16_accepts,
                                                     widened_weight_bytes,
                                                     widen_weights,
                                                     flat3x3_workspace,
                                                     run_on_widened_weights<run_flat3x3_typed<uint16_t>>,
                                                     Precision::Highest,
                                                     kCpuAvx512Bf16};
#endif
#endif

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv

#endif  // CPPCONV_SIMD
