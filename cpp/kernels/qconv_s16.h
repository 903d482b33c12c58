// The exact AVX2 quantized convolution (ONNX QLinearConv): activations widened to int16 and
// centred on their zero point while the padded tile is copied, weights packed centred as int16,
// products summed by vpmaddwd into int32 (no int16 saturation anywhere), requantized in float32
// with the rounding fixed in the instruction.  Compiled in the avx2 and avx512 builds alike, so
// the code an AVX-512 machine runs is the code tested on AVX2 ones.
#pragma once
#include "kernels/kernel_table.h"

#if defined(__AVX2__)
#define CPPCONV_HAS_QCONV_S16 1
namespace cppconv {
namespace CPPCONV_ISA_NS {
extern const QConvAlgorithm qconv_s16_6x16;
// Depthwise (groups = C = K): channels in lanes, exact int32 products.
extern const QConvAlgorithm qconv_depthwise_s16_4x16;
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
#endif
