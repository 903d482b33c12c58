#pragma once
#include <cstdint>

#include "kernels/simd/backend.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
#if CPPCONV_SIMD
// to[n][j][i] = from[n][i][j] for `batch` float matrices of rows x cols, kLanes x kLanes
// blocks transposed in registers (the layout changes between channels-last and -first).
void transpose_f32(const float* from, int64_t batch, int64_t rows, int64_t cols, float* to, int threads);
// to[j * to_stride + i] = from[i * from_stride + j] for one matrix of rows x cols, on the calling
// thread: a block of a larger matrix (a padded copy's interior).
void transpose_f32_strided(const float* from, int64_t rows, int64_t cols, int64_t from_stride, float* to,
                           int64_t to_stride);
#define CPPCONV_HAS_TRANSPOSE_F32 1
#endif
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
