// The bfloat16 direct convolution on AVX512-BF16 (vdpbf16ps): bfloat16 products of channel
// pairs summed into float32.  Compiled in the avx512 build only, its functions marked for the
// avx512bf16 extension; the table lists it with features = kCpuAvx512Bf16, so a CPU without
// the extension never runs it (the driver widens to float32 instead).
#pragma once
#include "kernels/kernel_table.h"

#if defined(__AVX512F__) && (defined(__GNUC__) || defined(__clang__))
#define CPPCONV_HAS_CONV2D_BF16 1
namespace cppconv {
namespace CPPCONV_ISA_NS {
// Dense and grouped convolutions (at least 2 input channels per group), either layout.
extern const ConvAlgorithm conv2d_channelvec_bf16;
// Grouped convolutions of few (under 8) output channels per group, an even number of input
// channels per group, unit column stride.
extern const ConvAlgorithm conv2d_pixelvec_bf16;
// Dense channels-first 1x1 convolutions of unit stride without padding, an even number of
// input channels, planes that fill most of their 16-pixel vectors.
extern const ConvAlgorithm conv2d_pointwise_pixelvec_bf16;
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
