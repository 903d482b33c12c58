// The AVX512-VNNI depthwise quantized convolution (ONNX QLinearConv with groups = C = K) on
// NCHW planes (output pixels in lanes) and NHWC images (channels in lanes): 8-bit activations
// read as they are (no widened tile).
// Compiled in the avx512 build only; the entry needs the CPU's AVX512-VNNI (kCpuAvx512Vnni).
#pragma once
#include "kernels/kernel_table.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX2__)
#define CPPCONV_HAS_QCONV_DEPTHWISE_VNNI 1
namespace cppconv {
namespace CPPCONV_ISA_NS {
extern const QConvAlgorithm qconv_depthwise_rows_vnni_1x64;
// NHWC: 64 channels in lanes, one pixel at a time.
extern const QConvAlgorithm qconv_depthwise_channels_vnni_1x64;
// NCHW images of small planes: transposed to NHWC around the channels kernel.
extern const QConvAlgorithm qconv_depthwise_transposed_vnni_1x64;
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
