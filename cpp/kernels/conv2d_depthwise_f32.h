#pragma once
#include "kernels/kernel_table.h"
#include "kernels/simd/backend.h"

#if CPPCONV_SIMD
#define CPPCONV_HAS_DEPTHWISE_F32 1
namespace cppconv {
namespace CPPCONV_ISA_NS {
extern const ConvAlgorithm conv2d_depthwise_cblock_f32;
extern const ConvAlgorithm conv2d_depthwise_nchw_f32;
extern const ConvAlgorithm conv3d_depthwise_nchw_f32;
#if CPPCONV_SIMD_LANE_BIT_MASKS
extern const ConvAlgorithm conv2d_depthwise_flat3x3_f32;
#endif
#if CPPCONV_SIMD_BF16
// The same kernels on bfloat16 x and y (conv2d_depthwise_f32.cpp, "The bfloat16 depthwise entries").
extern const ConvAlgorithm conv2d_depthwise_cblock_bf16;
#if CPPCONV_SIMD_LANE_BIT_MASKS
extern const ConvAlgorithm conv2d_depthwise_flat3x3_bf16;
#endif
#endif
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
