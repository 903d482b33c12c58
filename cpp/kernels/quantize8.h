// The 8-bit quantization passes' element runs (ONNX QuantizeLinear, DequantizeLinear and a QDQ
// residual addition), compiled per ISA so that they use its vectors; cpp/elementwise.cpp drives
// them (threads, axes, the rounding mode).  Each operation rounds as its ONNX operator does, so
// every ISA gives the same bits (the file is compiled without floating-point contraction).
#pragma once
#include "kernels/kernel_table.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {

void quantize_values(const QuantizeRun& run);
void dequantize_values(const DequantizeRun& run);
void quantized_add_values(const QuantizedAddRun& run);
// y[i] = table[x[i]] over n bytes (a 256-entry table), on the calling thread.
void lookup_bytes_values(const uint8_t* x, const uint8_t* table, int64_t n, uint8_t* y);

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
