#pragma once
#include "kernels/kernel_table.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
extern const ConvAlgorithm conv2d_tiled_f32;
extern const ConvAlgorithm conv2d_tiled_f64;
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
