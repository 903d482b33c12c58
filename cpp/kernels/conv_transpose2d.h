#pragma once
#include "kernels/kernel_table.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
extern const ConvTransposeAlgorithm conv_transpose2d_phase_f32;
extern const ConvTransposeAlgorithm conv_transpose2d_phase_f64;
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
