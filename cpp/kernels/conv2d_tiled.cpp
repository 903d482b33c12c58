// conv2d_tiled: the general fast path.  Handles every problem (any layout, stride, dilation,
// groups, padding mode, float32 or float64) whose tiles stay in proportion to the call (see
// tiles_in_proportion), with loops the compiler vectorises along the output width.  The
// padded input of one work item is first copied into a small per-thread tile, split by
// horizontal stride phase, so the hot loop reads contiguous memory and never checks bounds.
// Compiled once per ISA.
#include <cstring>
#include <vector>

#include "kernels/conv2d_tiled.h"
#include "kernels/isa_common.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

struct TiledPlan {
  int64_t group_in, group_out;  // channels per group
  int64_t rows_per_block;       // output rows per work item
  int64_t k_per_block;          // output channels per work item
  int64_t tile_rows;            // input rows one block needs
  int64_t phase_w;              // padded columns per stride phase
  int64_t tile_elems, acc_elems;
  int64_t row_blocks, k_blocks, items;
};

template <class T>
TiledPlan make_plan(const ConvProblem& p) {
  TiledPlan t{};
  t.group_in = p.in_channels / p.groups;
  t.group_out = p.out_channels / p.groups;
  const int64_t padded_w = input_cols_for(p, p.out_w);
  t.phase_w = ceil_div(padded_w, p.stride_w);
  t.k_per_block = std::min<int64_t>(t.group_out, 16);
  // Accumulators for one block stay in L1 (~32 KiB); the input tile in L2 (~256 KiB).
  const int64_t acc_row_bytes = t.k_per_block * p.out_w * int64_t(sizeof(T));
  int64_t rows = std::max<int64_t>(1, (32 << 10) / std::max<int64_t>(acc_row_bytes, 1));
  rows = std::min(rows, p.out_h);
  while (rows > 1 && t.group_in * input_rows_for(p, rows) * p.stride_w * t.phase_w * int64_t(sizeof(T)) > (256 << 10))
    rows = (rows + 1) / 2;
  t.rows_per_block = rows;
  t.tile_rows = input_rows_for(p, rows);
  t.tile_elems = t.group_in * t.tile_rows * p.stride_w * t.phase_w;
  t.acc_elems = t.k_per_block * rows * p.out_w;
  t.row_blocks = ceil_div(p.out_h, rows);
  t.k_blocks = ceil_div(t.group_out, t.k_per_block);
  t.items = p.batch * p.groups * t.row_blocks * t.k_blocks;
  return t;
}

// Copies the padded input rows [row0, row0 + rows) of channels [c0, c0 + C) into the tile,
// laid out [c][row][phase][q] with padded column x = q * stride_w + phase.
template <class T>
void fill_tile(const ConvCall& call, const TiledPlan& t, int64_t n, int64_t c0, int64_t row0, int64_t rows, T* tile) {
  const ConvProblem& p = call.p;
  const T* x = static_cast<const T*>(call.x);
  const int64_t sw = p.stride_w;
  for (int64_t c = 0; c < t.group_in; ++c) {
    const T* xc = x + n * call.x_stride.n + (c0 + c) * call.x_stride.c;
    for (int64_t r = 0; r < rows; ++r) {
      T* dst = tile + (c * t.tile_rows + r) * sw * t.phase_w;
      const int64_t src_row = call.row_src[row0 + r];
      if (src_row < 0) {
        std::memset(dst, 0, sizeof(T) * sw * t.phase_w);
        continue;
      }
      const T* xr = xc + src_row * call.x_stride.h;
      for (int64_t ph = 0; ph < sw; ++ph) {
        T* d = dst + ph * t.phase_w;
        for (int64_t q = 0; q < t.phase_w; ++q) {
          const int64_t col = q * sw + ph;
          const int64_t src_col = col < p.in_w + p.pad_left + p.pad_right ? call.col_src[col] : -1;
          d[q] = src_col < 0 ? T(0) : xr[src_col * call.x_stride.w];
        }
      }
    }
  }
}

template <class T>
void run_tiled(const ConvCall& call) {
  const ConvProblem& p = call.p;
  const TiledPlan t = make_plan<T>(p);
  const T* w = static_cast<const T*>(call.weight);
  const T* bias = static_cast<const T*>(call.bias);
  T* y = static_cast<T*>(call.y);
  const int64_t OW = p.out_w, KH = p.kernel_h, KW = p.kernel_w;
  const int64_t taps = KH * KW;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(call.num_threads, t.items)));

  T* tiles = scratch<T>(size_t(t.tile_elems + t.acc_elems) * threads);
  T* accs = tiles + t.tile_elems * threads;

  parallel_region(threads, [&] {
    DenormalGuard denormals;
    T* tile = tiles + t.tile_elems * thread_id();
    T* acc = accs + t.acc_elems * thread_id();
#pragma omp for schedule(static)
    for (int64_t item = 0; item < t.items; ++item) {
      int64_t rest = item;
      const int64_t kb = rest % t.k_blocks;
      rest /= t.k_blocks;
      const int64_t rb = rest % t.row_blocks;
      rest /= t.row_blocks;
      const int64_t g = rest % p.groups;
      const int64_t n = rest / p.groups;
      const int64_t oh0 = rb * t.rows_per_block;
      const int64_t rows = std::min(t.rows_per_block, p.out_h - oh0);
      const int64_t k0 = g * t.group_out + kb * t.k_per_block;
      const int64_t kcount = std::min(t.k_per_block, (g + 1) * t.group_out - k0);
      const int64_t in_rows = (rows - 1) * p.stride_h + (KH - 1) * p.dilation_h + 1;
      fill_tile<T>(call, t, n, g * t.group_in, oh0 * p.stride_h, in_rows, tile);

      for (int64_t kk = 0; kk < kcount; ++kk) {
        const T b = bias ? bias[k0 + kk] : T(0);
        T* a = acc + kk * rows * OW;
        for (int64_t i = 0; i < rows * OW; ++i) a[i] = b;
      }
      for (int64_t c = 0; c < t.group_in; ++c) {
        for (int64_t i = 0; i < KH; ++i) {
          for (int64_t r = 0; r < rows; ++r) {
            const T* trow = tile + (c * t.tile_rows + r * p.stride_h + i * p.dilation_h) * p.stride_w * t.phase_w;
            for (int64_t j = 0; j < KW; ++j) {
              const int64_t col = j * p.dilation_w;
              const T* src = trow + (col % p.stride_w) * t.phase_w + col / p.stride_w;
              const T* wk = w + ((k0 * t.group_in + c) * KH + i) * KW + j;
              for (int64_t kk = 0; kk < kcount; ++kk) {
                const T wv = wk[kk * t.group_in * taps];
                T* a = acc + (kk * rows + r) * OW;
#pragma omp simd
                for (int64_t ow = 0; ow < OW; ++ow) a[ow] += wv * src[ow];
              }
            }
          }
        }
      }
      for (int64_t kk = 0; kk < kcount; ++kk) {
        for (int64_t r = 0; r < rows; ++r) {
          T* a = acc + (kk * rows + r) * OW;
          T* yr = y + n * call.y_stride.n + (k0 + kk) * call.y_stride.c + (oh0 + r) * call.y_stride.h;
          if (call.residual) {  // (same strides as y)
            const T* res = static_cast<const T*>(call.residual) + (yr - y);
            for (int64_t ow = 0; ow < OW; ++ow) a[ow] = a[ow] + res[ow * call.y_stride.w];
          }
          activate_row(a, OW, fused_activation(p));
          if (call.y_stride.w == 1) {
            std::memcpy(yr, a, sizeof(T) * OW);
          } else {
            for (int64_t ow = 0; ow < OW; ++ow) yr[ow * call.y_stride.w] = a[ow];
          }
        }
      }
    }
  });
}

// Every problem whose tiles stay in proportion to the call (see tiles_in_proportion).
template <class T>
bool tiled_accepts(const ConvProblem& p) {
  return tiles_in_proportion(p, p.in_channels, [&] {
    const TiledPlan t = make_plan<T>(p);
    return double(t.items) * double(t.tile_elems);
  });
}

template <class T>
size_t tiled_workspace(const ConvProblem& p, int threads) {
  const TiledPlan t = make_plan<T>(p);
  const int64_t used = std::max<int64_t>(1, std::min<int64_t>(threads, t.items));
  return size_t(used) * size_t(t.tile_elems + t.acc_elems) * sizeof(T);
}

}  // namespace

const ConvAlgorithm conv2d_tiled_f32 = {"conv2d_tiled_f32__" CPPCONV_ISA_NAME,
                                        DType::Float32,
                                        tiled_accepts<float>,
                                        no_packing,
                                        nullptr,
                                        tiled_workspace<float>,
                                        run_tiled<float>,
                                        Precision::Highest,
                                        0,
                                        /*adds_residual=*/true};
const ConvAlgorithm conv2d_tiled_f64 = {"conv2d_tiled_f64__" CPPCONV_ISA_NAME,
                                        DType::Float64,
                                        tiled_accepts<double>,
                                        no_packing,
                                        nullptr,
                                        tiled_workspace<double>,
                                        run_tiled<double>,
                                        Precision::Highest,
                                        0,
                                        /*adds_residual=*/true};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
