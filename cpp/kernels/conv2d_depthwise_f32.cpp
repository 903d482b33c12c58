// Depthwise convolution (groups == C == K), one kernel per layout.
//
// conv2d_depthwise_nhwc_f32: depthwise convolution (groups == C == K) on NHWC, vectorised
// across channels.  Each output pixel reads its kh x kw input pixels straight from x (the
// padding maps give the source row/column, or a zero), so nothing is copied: a depthwise layer
// does too little arithmetic per input value for a tile copy to pay off.  Memory-bound; the
// register block is kPixels output pixels x kVecs channel vectors.
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/conv2d_depthwise_f32.h"
#include "kernels/isa_common.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include "kernels/simd.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

using namespace simd;
using Vec = simd::Vec<float>;
using Mask = simd::Mask<float>;
constexpr int kVL = kLanes<float>;

constexpr int kVecs = 4;  // channel vectors per block

bool depthwise_accepts(const Conv2dProblem& p) {
  return p.dtype == DType::Float32 && p.layout == Layout::NHWC && p.groups == p.in_channels &&
         p.out_channels == p.in_channels && p.in_channels >= kVL;
}

// Packed weights: [tap][C] so one tap's weights for a channel vector are contiguous.
size_t depthwise_packed_bytes(const Conv2dProblem& p) {
  return size_t(p.kernel_h * p.kernel_w * p.out_channels) * sizeof(float);
}

void depthwise_pack(const Conv2dProblem& p, const void* weight, void* packed, int) {
  const float* w = static_cast<const float*>(weight);
  float* dst = static_cast<float*>(packed);
  const int64_t taps = p.kernel_h * p.kernel_w;
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t c = 0; c < p.out_channels; ++c) dst[t * p.out_channels + c] = w[c * taps + t];
}

size_t depthwise_workspace(const Conv2dProblem& p, int) { return size_t(p.out_channels) * sizeof(float); }

// nv channel vectors starting at channel c0 of output pixel (oh, ow).
template <int NV>
void depthwise_block(const ConvCall& call, const float* x_img, const float* w, const float* bias, int64_t oh,
                     int64_t ow, int64_t c0, float* y_pix) {
  const Conv2dProblem& p = call.p;
  const int64_t C = p.in_channels;
  Vec acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = bias ? vload(bias + c0 + v * kVL) : vzero();
  for (int64_t i = 0; i < p.kernel_h; ++i) {
    const int64_t ih = call.row_src[oh * p.stride_h + i * p.dilation_h];
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const int64_t iw = call.col_src[ow * p.stride_w + j * p.dilation_w];
      const float* wt = w + (i * p.kernel_w + j) * C + c0;
      if (ih < 0 || iw < 0) {
        // A zero from the padding still multiplies the weight: 0 * inf is NaN, as in PyTorch.
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[v] = vfma(vzero(), vload(wt + v * kVL), acc[v]);
        continue;
      }
      const float* xp = x_img + ih * call.x_stride.h + iw * call.x_stride.w + c0;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[v] = vfma(vload(xp + v * kVL), vload(wt + v * kVL), acc[v]);
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) vstore(y_pix + c0 + v * kVL, apply_simple_activation(acc[v], p.activation));
}

void run_depthwise(const ConvCall& call) {
  const Conv2dProblem& p = call.p;
  const float* x = static_cast<const float*>(call.x);
  const float* w = static_cast<const float*>(call.packed);
  const float* bias = static_cast<const float*>(call.bias);
  float* y = static_cast<float*>(call.y);
  const int64_t C = p.in_channels;
  const int64_t full_vecs = C / kVL;
  const int64_t tail = C - full_vecs * kVL;  // channels past the last full vector
  const int64_t rows = p.batch * p.out_h;
#pragma omp parallel num_threads(call.num_threads)
  {
    DenormalGuard denormals;
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t n = row / p.out_h, oh = row % p.out_h;
      const float* x_img = x + n * call.x_stride.n;
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        float* y_pix = y + n * call.y_stride.n + oh * call.y_stride.h + ow * call.y_stride.w;
        int64_t v = 0;
        for (; v + kVecs <= full_vecs; v += kVecs) depthwise_block<kVecs>(call, x_img, w, bias, oh, ow, v * kVL, y_pix);
        for (; v < full_vecs; ++v) depthwise_block<1>(call, x_img, w, bias, oh, ow, v * kVL, y_pix);
        if (tail) {
          // The last channels: an overlapping full vector ending at C (C >= kVL), recomputed.
          depthwise_block<1>(call, x_img, w, bias, oh, ow, C - kVL, y_pix);
        }
        if (!is_simple(p.activation)) activate_row(y_pix, C, p.activation);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// conv2d_depthwise_nchw_f32: depthwise on NCHW with zero padding, vectorised along the output
// row and reading x in place: masked loads give the zeros past the left and right edges (no
// tile copy, which would cost more than the arithmetic here), rows outside the input are
// skipped.  Stride 1, and stride 2 on AVX-512 (two loads de-interleaved by one permute).

bool depthwise_nchw_accepts(const Conv2dProblem& p) {
#if defined(__AVX512F__)
  const bool stride_ok = p.stride_w <= 2;
#else
  const bool stride_ok = p.stride_w == 1;
#endif
  return p.dtype == DType::Float32 && p.layout == Layout::NCHW && p.groups == p.in_channels &&
         p.out_channels == p.in_channels && p.pad_mode == PadMode::Zeros && stride_ok;
}

size_t no_packing(const Conv2dProblem&) { return 0; }
size_t no_workspace(const Conv2dProblem&, int) { return 0; }

// How one vector of input columns is loaded: whole (every lane inside the row), or masked.
// The same for every row and plane of a call, so worked out once per call.
struct ColumnLoad {
  int64_t first_col;  // input column of lane 0
  bool whole;
  Mask lo, hi;  // lanes inside the row, for the first and (stride 2) the second vector
};

template <int S>
ColumnLoad column_load(int64_t first_col, int64_t in_w) {
  ColumnLoad c{};
  c.first_col = first_col;
  c.whole = first_col >= 0 && first_col + kVL * S <= in_w;
  c.lo = lane_mask(-first_col, in_w - first_col);
  c.hi = lane_mask(-first_col - kVL, in_w - first_col - kVL);
  return c;
}

// Input columns first_col + S * lane of one input row, zero outside the row.
template <int S>
static inline Vec load_columns(const float* row, const ColumnLoad& c) {
  static_assert(S == 1 || S == 2, "stride 1 or 2");
  if constexpr (S == 1) {
    return c.whole ? vload(row + c.first_col) : vload_mask(row + c.first_col, c.lo);
  } else {
#if defined(__AVX512F__)
    const Vec lo = c.whole ? vload(row + c.first_col) : vload_mask(row + c.first_col, c.lo);
    const Vec hi = c.whole ? vload(row + c.first_col + kVL) : vload_mask(row + c.first_col + kVL, c.hi);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(lo, even, hi);
#else
    return vzero();  // not reached: AVX2 accepts stride 1 only
#endif
  }
}

// ROWS output rows x NV vectors of one plane: ROWS * NV independent accumulators, updated
// in the innermost (unrolled) loops so their FMA chains interleave and hide the latency.
template <int ROWS, int NV, int S>
void depthwise_nchw_block(const ConvCall& call, const float* xp, const float* wc, float bias, bool finite_weights,
                          const ColumnLoad* columns, int64_t oh0, int64_t ow0, float* yp) {
  const Conv2dProblem& p = call.p;
  Vec acc[ROWS][NV];
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = vset1(bias);
  for (int64_t i = 0; i < p.kernel_h; ++i) {
    const float* xr[ROWS];
    bool row_inside[ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
      const int64_t ih = (oh0 + r) * p.stride_h + i * p.dilation_h - p.pad_top;
      row_inside[r] = ih >= 0 && ih < p.in_h;
      xr[r] = xp + (row_inside[r] ? ih : 0) * call.x_stride.h;
    }
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const Vec wv = vset1(wc[i * p.kernel_w + j]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const ColumnLoad& column = columns[v * p.kernel_w + j];
#pragma GCC unroll 4
        for (int r = 0; r < ROWS; ++r) {
          if (row_inside[r]) {
            acc[r][v] = vfma(load_columns<S>(xr[r], column), wv, acc[r][v]);
          } else if (!finite_weights) {
            acc[r][v] = vfma(vzero(), wv, acc[r][v]);  // a padding zero times inf or NaN
          }
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r) {
    float* yr = yp + (oh0 + r) * call.y_stride.h;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const Vec out = apply_simple_activation(acc[r][v], p.activation);
      const int64_t o = ow0 + v * kVL;
      if (o + kVL <= p.out_w) vstore(yr + o, out);
      else vstore_mask(yr + o, out, lane_mask(0, p.out_w - o));
    }
  }
}

using DepthwiseBlockFn = void (*)(const ConvCall&, const float*, const float*, float, bool, const ColumnLoad*,
                                  int64_t, int64_t, float*);
template <int S>
struct DepthwiseBlocks {
  // [rows - 1][nv - 1]: up to 4 rows x 4 vectors
  static constexpr DepthwiseBlockFn table[4][4] = {
      {depthwise_nchw_block<1, 1, S>, depthwise_nchw_block<1, 2, S>, depthwise_nchw_block<1, 3, S>,
       depthwise_nchw_block<1, 4, S>},
      {depthwise_nchw_block<2, 1, S>, depthwise_nchw_block<2, 2, S>, depthwise_nchw_block<2, 3, S>,
       depthwise_nchw_block<2, 4, S>},
      {depthwise_nchw_block<3, 1, S>, depthwise_nchw_block<3, 2, S>, depthwise_nchw_block<3, 3, S>,
       depthwise_nchw_block<3, 4, S>},
      {depthwise_nchw_block<4, 1, S>, depthwise_nchw_block<4, 2, S>, depthwise_nchw_block<4, 3, S>,
       depthwise_nchw_block<4, 4, S>},
  };
};

void run_depthwise_nchw(const ConvCall& call) {
  const Conv2dProblem& p = call.p;
  const float* x = static_cast<const float*>(call.x);
  const float* w = static_cast<const float*>(call.weight);
  const float* bias = static_cast<const float*>(call.bias);
  float* y = static_cast<float*>(call.y);
  const int64_t taps = p.kernel_h * p.kernel_w;
  const int64_t planes = p.batch * p.in_channels;
  const int64_t row_vectors = ceil_div(p.out_w, kVL);
  // [output vector][tap column]
  std::vector<ColumnLoad> columns;
  for (int64_t v = 0; v < row_vectors; ++v)
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const int64_t first_col = v * kVL * p.stride_w + j * p.dilation_w - p.pad_left;
      columns.push_back(p.stride_w == 1 ? column_load<1>(first_col, p.in_w) : column_load<2>(first_col, p.in_w));
    }
#pragma omp parallel num_threads(call.num_threads)
  {
    DenormalGuard denormals;
#pragma omp for schedule(static)
    for (int64_t plane = 0; plane < planes; ++plane) {
      const int64_t n = plane / p.in_channels, c = plane % p.in_channels;
      const float* xp = x + n * call.x_stride.n + c * call.x_stride.c;
      float* yp = y + n * call.y_stride.n + c * call.y_stride.c;
      const float* wc = w + c * taps;
      bool finite_weights = true;
      for (int64_t t = 0; t < taps; ++t) finite_weights = finite_weights && std::isfinite(wc[t]);
      // Blocks of up to 4 rows x 4 vectors: wide rows take more vectors, narrow ones more rows.
      const int64_t nv_max = std::min<int64_t>(4, row_vectors);
      const int64_t rows_max = std::max<int64_t>(1, std::min<int64_t>(4, 8 / nv_max));
      for (int64_t oh = 0; oh < p.out_h; oh += rows_max) {
        const int rows = int(std::min(rows_max, p.out_h - oh));
        for (int64_t v = 0; v < row_vectors; v += 4) {
          const int nv = int(std::min<int64_t>(4, row_vectors - v));
          const DepthwiseBlockFn block = p.stride_w == 1 ? DepthwiseBlocks<1>::table[rows - 1][nv - 1]
#if defined(__AVX512F__)
                                                         : DepthwiseBlocks<2>::table[rows - 1][nv - 1];
#else
                                                         : nullptr;
#endif
          block(call, xp, wc, bias ? bias[c] : 0.0f, finite_weights, columns.data() + v * p.kernel_w, oh, v * kVL,
                yp);
        }
        if (!is_simple(p.activation))
          for (int r = 0; r < rows; ++r) activate_row(yp + (oh + r) * call.y_stride.h, p.out_w, p.activation);
      }
    }
  }
}

}  // namespace

const ConvAlgorithm conv2d_depthwise_nchw_f32 = {
#if defined(__AVX512F__)
    "conv2d_depthwise_nchw_f32__" CPPCONV_ISA_NAME "_16x1",
#else
    "conv2d_depthwise_nchw_f32__" CPPCONV_ISA_NAME "_8x1",
#endif
    DType::Float32, depthwise_nchw_accepts, no_packing, nullptr, no_workspace, run_depthwise_nchw};

const ConvAlgorithm conv2d_depthwise_nhwc_f32 = {
#if defined(__AVX512F__)
    "conv2d_depthwise_nhwc_f32__" CPPCONV_ISA_NAME "_1x64",
#else
    "conv2d_depthwise_nhwc_f32__" CPPCONV_ISA_NAME "_1x32",
#endif
    DType::Float32, depthwise_accepts, depthwise_packed_bytes, depthwise_pack, depthwise_workspace, run_depthwise};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv

#endif  // __AVX512F__ || __AVX2__
