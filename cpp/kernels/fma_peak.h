#pragma once
#include "kernels/kernel_table.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
// Float32 multiply-add GFLOP/s of this ISA's vectors on `threads` threads: the best round
// of several, for about `seconds`.
double fma_peak_gflops(int threads, double seconds);
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
