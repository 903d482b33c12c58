// The AVX512-VNNI quantized convolution (ONNX QLinearConv): u8 activations (s8 ones shifted by
// +128) times s8 weights by vpdpbusd, 4 input channels per int32 lane, output channels in the
// 16 lanes, up to 6 pixels x 64 channels of accumulators in registers.  It runs only where
// every centred weight w - w_zero_point fits int8 (its pack() refuses other weights).  Compiled
// in the avx512 build, its functions marked CPPCONV_TARGET_AVX512VNNI; the table lists it with
// features = kCpuAvx512Vnni.  qconv_pointwise_vnni takes channels-first 1x1 layers (stride 1, no
// padding) with the pixels in the lanes instead: 6 output channels x 64 pixels.
#pragma once
#include "kernels/kernel_table.h"

#if defined(__AVX512F__)
#define CPPCONV_HAS_QCONV_VNNI 1
namespace cppconv {
namespace CPPCONV_ISA_NS {
extern const QConvAlgorithm qconv_u8s8_vnni_6x64;
extern const QConvAlgorithm qconv_pointwise_vnni_6x64;
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
