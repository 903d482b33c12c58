// The bfloat16 convolution on AMX tiles (TDPBF16PS).  Compiled in the avx512 build where
// CPPCONV_AMX_COMPILES (kernel_table.h), its functions marked for the AMX extensions; the table lists it with features
// = kCpuAmxBf16 | kCpuAvx512Bf16 (its tile fill and stores round with vcvtneps2bf16), so a CPU without AMX, or whose OS
// did not grant the tile state, never runs it.
#pragma once
#include "kernels/conv2d_bf16.h"

#if defined(CPPCONV_HAS_CONV2D_BF16) && defined(CPPCONV_AMX_COMPILES)
#define CPPCONV_HAS_CONV2D_AMX_BF16 1
namespace cppconv {
namespace CPPCONV_ISA_NS {
// Dense and grouped convolutions of at least 8 input and 8 output channels per group (16 input
// channels of a 1x1 window), either layout.
extern const ConvAlgorithm conv2d_amx_bf16;
// Few input channels per group (up to 16, a first layer's 3), at least 8 output channels per
// group: each pixel's window (taps x channels) is the tiles' K dimension.
extern const ConvAlgorithm conv2d_amx_taps_bf16;
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
