#pragma once
#include "kernels/kernel_table.h"
#include "kernels/simd/backend.h"

#if CPPCONV_SIMD
#define CPPCONV_HAS_DIRECT 1
namespace cppconv {
namespace CPPCONV_ISA_NS {
extern const ConvAlgorithm conv2d_pixelvec_f32;
extern const ConvAlgorithm conv2d_pixelvec_f64;
extern const ConvAlgorithm conv2d_channelvec_f32;
extern const ConvAlgorithm conv2d_channelvec_wide_f32;
extern const ConvAlgorithm conv2d_channelvec_onevec_f32;
extern const ConvAlgorithm conv2d_channelvec_f64;
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
