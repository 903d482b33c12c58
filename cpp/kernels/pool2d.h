#pragma once
#include "kernels/kernel_table.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
extern const PoolAlgorithm pool2d_rows_nchw_f32;
extern const PoolAlgorithm pool2d_rows_nchw_f64;
extern const PoolAlgorithm pool2d_plane_nchw_f32;
extern const PoolAlgorithm pool2d_plane_nchw_f64;
extern const PoolAlgorithm pool2d_maps_nchw_f32;
extern const PoolAlgorithm pool2d_maps_nchw_f64;
extern const PoolAlgorithm pool2d_channels_nhwc_f32;
extern const PoolAlgorithm pool2d_channels_nhwc_f64;
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
