#include "kernels/transpose_f32.h"

#include <algorithm>
#include <iterator>

#if CPPCONV_SIMD
#include "kernels/simd.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {

namespace {

// Columns [j0, j1) of R rows, interleaved: each output line is written whole, the R input
// streams read in order (the square transposes would waste most of each block on R < 4).
template <int R>
void interleave_rows(const float* src, int64_t cols, int64_t j0, int64_t j1, float* dst) {
  for (int64_t j = j0; j < j1; ++j)
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) dst[j * R + i] = src[i * cols + j];
}

// Its inverse: rows [i0, i1) of C columns, each column to its own output row.
template <int C>
void deinterleave_cols(const float* src, int64_t rows, int64_t i0, int64_t i1, float* dst) {
  for (int64_t i = i0; i < i1; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < C; ++j) dst[j * rows + i] = src[i * C + j];
}

// A few rows or columns (an image of 1-4 channels) go through these, a range of the long axis at a time.
using NarrowFn = void (*)(const float*, int64_t, int64_t, int64_t, float*);
constexpr NarrowFn kInterleave[] = {interleave_rows<1>, interleave_rows<2>, interleave_rows<3>, interleave_rows<4>};
constexpr NarrowFn kDeinterleave[] = {deinterleave_cols<1>, deinterleave_cols<2>, deinterleave_cols<3>,
                                      deinterleave_cols<4>};
constexpr int64_t kNarrow = int64_t(std::size(kInterleave));

}  // namespace

void transpose_f32(const float* from, int64_t batch, int64_t rows, int64_t cols, float* to, int threads) {
  constexpr int L = simd::kLanes<float>;
  if (batch <= 0 || rows <= 0 || cols <= 0) return;  // (nothing to move; the splits below divide by these)
  if (std::min(rows, cols) <= kNarrow) {
    const bool few_rows = rows <= kNarrow;
    const NarrowFn narrow = few_rows ? kInterleave[rows - 1] : kDeinterleave[cols - 1];
    const int64_t length = few_rows ? cols : rows;
    const int64_t blocks = ceil_div(length, int64_t(L));
    const int64_t segments = std::clamp<int64_t>(ceil_div(4 * int64_t(threads), batch), 1, blocks);
    const int64_t segment = ceil_div(blocks, segments) * L;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t item = 0; item < batch * segments; ++item) {
      const int64_t n = item / segments, begin = item % segments * segment;
      narrow(from + n * rows * cols, length, begin, std::min(length, begin + segment), to + n * rows * cols);
    }
    return;
  }
  // Items of kRowChunk rows, their column blocks in turn: the rows' lines, read a block at a
  // time, stay in L1 until the last block of the item has used them.
  constexpr int64_t kRowChunk = 32;
  const int64_t chunks = ceil_div(rows, kRowChunk);
  // Column segments too where the row chunks alone would leave threads idle (an image of a
  // few channels is one chunk), whole vectors each.
  const int64_t blocks = ceil_div(cols, int64_t(L));
  const int64_t segments = std::clamp<int64_t>(ceil_div(4 * int64_t(threads), batch * chunks), 1, blocks);
  const int64_t segment = ceil_div(blocks, segments) * L;
  const int64_t per_matrix = chunks * segments;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t item = 0; item < batch * per_matrix; ++item) {
    const int64_t n = item / per_matrix, i0 = item % per_matrix / segments * kRowChunk;
    const int64_t count = std::min(kRowChunk, rows - i0), j_end = std::min(cols, (item % segments + 1) * segment);
    const float* src = from + n * rows * cols + i0 * cols;
    float* dst = to + n * rows * cols + i0;
    for (int64_t j0 = item % segments * segment; j0 < j_end; j0 += L)
      simd::pixels_to_planes(src + j0, cols, int(std::min<int64_t>(L, cols - j0)), count, dst + j0 * rows, rows);
  }
}

void transpose_f32_strided(const float* from, int64_t rows, int64_t cols, int64_t from_stride, float* to,
                           int64_t to_stride) {
  constexpr int L = simd::kLanes<float>;
  constexpr int64_t kRowChunk = 32;  // (as in transpose_f32: the rows' lines stay in L1 across the column blocks)
  for (int64_t i0 = 0; i0 < rows; i0 += kRowChunk) {
    const int64_t count = std::min(kRowChunk, rows - i0);
    for (int64_t j0 = 0; j0 < cols; j0 += L)
      simd::pixels_to_planes(from + i0 * from_stride + j0, from_stride, int(std::min<int64_t>(L, cols - j0)), count,
                             to + j0 * to_stride + i0, to_stride);
  }
}

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
