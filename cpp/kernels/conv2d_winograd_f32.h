#pragma once
#include "kernels/kernel_table.h"
#include "kernels/simd/backend.h"

#if CPPCONV_SIMD
#define CPPCONV_HAS_WINOGRAD_F32 1
namespace cppconv {
namespace CPPCONV_ISA_NS {
extern const ConvAlgorithm conv2d_winograd2x2_f32;
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
