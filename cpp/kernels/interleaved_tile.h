// The padded input tile with each pixel's channels interleaved that the channel-vector kernels
// read (depthwise cblock, Winograd's input transform).  Per-ISA like simd.h: everything sits in
// cppconv::CPPCONV_ISA_NS, so each ISA build has its own copy.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "conv_problem.h"
#include "kernels/isa_common.h"
#include "kernels/simd.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {

// The padded input of channels [c0, c0 + cvalid) (cvalid <= kLanes) of image n, channel-
// interleaved: tile[r][col][kLanes] for padded rows row0 + r and padded columns col0 + col.
// Lanes past cvalid, and rows and columns past the padded input, are zero.  T: x's element,
// float or (where the backend has vload_bf16) bfloat16 bits, widened as they are copied.
template <class T = float>
static inline void fill_interleaved_tile(const ConvCall& call, int64_t n, int64_t c0, int cvalid, int64_t row0,
                                         int64_t rows, int64_t col0, int64_t cols, float* tile) {
  using namespace simd;
  constexpr int L = kLanes<float>;
  const ConvProblem& p = call.p;
  const T* x = static_cast<const T*>(call.x) + n * call.x_stride.n + c0 * call.x_stride.c;
  const auto cmask = lane_mask(0, cvalid);
  const int64_t padded_h = p.in_h + p.pad_top + p.pad_bottom, padded_w = p.in_w + p.pad_left + p.pad_right;
  auto src_col_of = [&](int64_t col) { return col0 + col < padded_w ? call.col_src[col0 + col] : -1; };
  // Padded columns that are the input's own columns, in order: [inner_lo, inner_hi).
  const int64_t inner_lo = std::clamp(p.pad_left - col0, int64_t(0), cols);
  const int64_t inner_hi = std::clamp(p.pad_left + p.in_w - col0, inner_lo, cols);
  for (int64_t r = 0; r < rows; ++r) {
    float* dst = tile + r * cols * L;
    const int64_t src_row = row0 + r < padded_h ? call.row_src[row0 + r] : -1;
    if (src_row < 0) {
      std::memset(dst, 0, sizeof(float) * size_t(cols * L));
      continue;
    }
    const T* xr = x + src_row * call.x_stride.h;
    if (p.layout == Layout::NHWC) {
      // (Whole channel blocks by plain loads: masked loads of lines still in memory are slow.)
      for (int64_t col = 0; col < cols; ++col) {
        const int64_t src_col = src_col_of(col);
        const T* src = xr + src_col * call.x_stride.w;
        vstore(dst + col * L, src_col < 0 ? vzero() : cvalid == L ? vload_f32(src) : vload_f32_mask(src, cmask));
      }
      continue;
    }
    // (Each plane is readable to its end: the rows below this one.)
    const int64_t first_col = col0 + inner_lo - p.pad_left;
    planes_to_pixels(xr + first_col, call.x_stride.c, cvalid, inner_hi - inner_lo, dst + inner_lo * L, L,
                     (p.in_h - src_row) * call.x_stride.h - first_col);
    for (int64_t col = 0; col < cols; ++col) {
      if (col == inner_lo) col = inner_hi;
      if (col >= cols) break;
      const int64_t src_col = src_col_of(col);
      float* o = dst + col * L;
      if (src_col < 0) {
        vstore(o, vzero());
      } else {
        for (int c = 0; c < L; ++c) o[c] = c < cvalid ? scalar_f32(xr[c * call.x_stride.c + src_col]) : 0.0f;
      }
    }
  }
}

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
