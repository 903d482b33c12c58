// The reference convolution: the seed's loop, written to be obviously correct rather than
// fast.  It is the oracle of the tests and the last entry of every algorithm list.
#pragma once
#include "kernels/kernel_table.h"

namespace cppconv {

// The activations as the references apply them (the oracle's definition of each).
float activate_reference(float v, Activation a, double negative_slope);
double activate_reference(double v, Activation a, double negative_slope);

extern const ConvAlgorithm conv_reference_f32;
extern const ConvAlgorithm conv_reference_f64;
// BFloat16 problems: the bfloat16 values (x rounded to them where it is float32), summed in
// double, the sum rounded to float32 (the activation's type), stored as float32 or rounded to
// bfloat16.
extern const ConvAlgorithm conv_reference_bf16;

}  // namespace cppconv
