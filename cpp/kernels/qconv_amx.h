// The AMX quantized convolution (ONNX QLinearConv): u8 activations (s8 ones shifted by +128)
// times s8 weights by TDPBUSD on tiles, 32 output pixels x 32 output channels of int32
// accumulators in four tiles (2 x 2 blocking), the whole reduction over taps and channels in the
// tiles.  The image tile, the zero-point compensation and the requantizing store are the VNNI
// kernel's (kernels/qconv_common.h); like it, it runs only where every centred weight fits int8.
// Compiled in the avx512 build where CPPCONV_AMX_COMPILES (kernel_table.h), its tile functions
// marked CPPCONV_TARGET_AMX; the table lists it with features = kCpuAmxInt8.
#pragma once
#include "kernels/kernel_table.h"

#if defined(__AVX512F__) && defined(CPPCONV_AMX_COMPILES)
#define CPPCONV_HAS_QCONV_AMX 1
namespace cppconv {
namespace CPPCONV_ISA_NS {
// Dense and grouped convolutions of at least 4 input channels per group, either layout, but
// for the channels-first 1x1 layers of 64 channels a group and fewer that qconv_pointwise_vnni
// takes.
extern const QConvAlgorithm qconv_u8s8_amx_32x32;
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
