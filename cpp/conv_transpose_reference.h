// Reference transposed convolution: plain loops, written to be obviously correct rather than
// fast, compiled once.  It is the oracle of the tests and the last entry of every algorithm
// list, for every spatial rank (depth 1 below 3-D).
#pragma once
#include "kernels/kernel_table.h"

namespace cppconv {

extern const ConvTransposeAlgorithm conv_transpose2d_reference_f32;
extern const ConvTransposeAlgorithm conv_transpose2d_reference_f64;

}  // namespace cppconv
