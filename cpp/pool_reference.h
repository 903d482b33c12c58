// Reference pooling: plain loops, written to be obviously correct
// rather than fast, compiled once.  They are the oracles of the tests and the last entries of
// every algorithm list.  They compute their windows from the problem (PyTorch's formulas),
// not from the driver's window maps, so they check those too.
#pragma once
#include "kernels/kernel_table.h"

namespace cppconv {

extern const PoolAlgorithm pool2d_reference_f32;
extern const PoolAlgorithm pool2d_reference_f64;

}  // namespace cppconv
