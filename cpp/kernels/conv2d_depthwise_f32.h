#pragma once
#include "kernels/kernel_table.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#define CPPCONV_HAS_DEPTHWISE_F32 1
namespace cppconv {
namespace CPPCONV_ISA_NS {
extern const ConvAlgorithm conv2d_depthwise_cblock_f32;
extern const ConvAlgorithm conv2d_depthwise_nchw_f32;
#if defined(__AVX512F__)
extern const ConvAlgorithm conv2d_depthwise_flat3x3_f32;
#endif
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
