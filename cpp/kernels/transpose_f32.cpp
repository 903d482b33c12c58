#include "kernels/transpose_f32.h"

#include <algorithm>

#if CPPCONV_SIMD
#include "kernels/simd.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {

void transpose_f32(const float* from, int64_t batch, int64_t rows, int64_t cols, float* to, int threads) {
  constexpr int L = simd::kLanes<float>;
  // Items of kRowChunk rows, their column blocks in turn: the rows' lines, read a block at a
  // time, stay in L1 until the last block of the item has used them.
  constexpr int64_t kRowChunk = 32;
  const int64_t chunks = ceil_div(rows, kRowChunk);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t item = 0; item < batch * chunks; ++item) {
    const int64_t n = item / chunks, i0 = item % chunks * kRowChunk, count = std::min(kRowChunk, rows - i0);
    const float* src = from + n * rows * cols + i0 * cols;
    float* dst = to + n * rows * cols + i0;
    for (int64_t j0 = 0; j0 < cols; j0 += L)
      simd::pixels_to_planes(src + j0, cols, int(std::min<int64_t>(L, cols - j0)), count, dst + j0 * rows, rows);
  }
}

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
