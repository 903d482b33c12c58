// This ISA's function table: its convolution algorithms in order of preference.
#include "kernels/conv2d_amx_bf16.h"
#include "kernels/conv2d_bf16.h"
#include "kernels/conv2d_depthwise_f32.h"
#include "kernels/conv2d_direct.h"
#include "kernels/conv2d_tiled.h"
#include "kernels/conv2d_winograd_f32.h"
#include "kernels/conv_transpose2d.h"
#include "kernels/fma_peak.h"
#include "kernels/isa_common.h"
#include "kernels/pool2d.h"
#include "kernels/qconv_amx.h"
#include "kernels/qconv_depthwise_vnni.h"
#include "kernels/qconv_s16.h"
#include "kernels/qconv_vnni.h"
#include "kernels/quantize8.h"
#include "kernels/transpose_f32.h"
#if CPPCONV_SIMD
#include "kernels/simd.h"
#endif

namespace cppconv {
namespace CPPCONV_ISA_NS {

namespace {
// Pointers to the algorithms (see KernelTable: no static initializers in per-ISA code).
const ConvAlgorithm* const kConvAlgorithms[] = {
#ifdef CPPCONV_HAS_DEPTHWISE_F32
#if CPPCONV_SIMD_LANE_BIT_MASKS
    &conv2d_depthwise_flat3x3_f32,
#endif
    &conv2d_depthwise_nchw_f32,
    &conv3d_depthwise_nchw_f32,
    &conv2d_depthwise_cblock_f32,
#endif
#ifdef CPPCONV_HAS_WINOGRAD_F32
    &conv2d_winograd2x2_f32,
#endif
#ifdef CPPCONV_HAS_DIRECT
    &conv2d_channelvec_wide_f32,
    &conv2d_channelvec_onevec_f32,
    &conv2d_channelvec_f32,
    &conv2d_pixelvec_f32,
    &conv2d_channelvec_f64,
    &conv2d_pixelvec_f64,
#endif
    &conv2d_tiled_f32,
    &conv2d_tiled_f64,
#if defined(CPPCONV_HAS_DEPTHWISE_F32) && CPPCONV_SIMD_BF16
#if CPPCONV_SIMD_LANE_BIT_MASKS
    &conv2d_depthwise_flat3x3_bf16,
#endif
    &conv2d_depthwise_cblock_bf16,
#endif
#ifdef CPPCONV_HAS_CONV2D_AMX_BF16
    &conv2d_amx_taps_bf16,
    &conv2d_amx_bf16,
#endif
#ifdef CPPCONV_HAS_CONV2D_BF16
    &conv2d_pointwise_pixelvec_bf16,
    &conv2d_channelvec_bf16,
    &conv2d_pixelvec_bf16,
#endif
};
const PoolAlgorithm* const kPoolAlgorithms[] = {
    &pool2d_plane_nchw_f32, &pool2d_plane_nchw_f64, &pool2d_rows_nchw_f32,     &pool2d_rows_nchw_f64,
    &pool2d_maps_nchw_f32,  &pool2d_maps_nchw_f64,  &pool2d_channels_nhwc_f32, &pool2d_channels_nhwc_f64,
};
const ConvTransposeAlgorithm* const kConvTransposeAlgorithms[] = {
    &conv_transpose2d_phase_f32,
    &conv_transpose2d_phase_f64,
};
template <class A, int N>
constexpr int count_of(const A (&)[N]) {
  return N;
}
#ifdef CPPCONV_HAS_QCONV_S16
const QConvAlgorithm* const kQConvAlgorithms[] = {
#ifdef CPPCONV_HAS_QCONV_DEPTHWISE_VNNI
    &qconv_depthwise_transposed_vnni_1x64,
    &qconv_depthwise_rows_vnni_1x64,
    &qconv_depthwise_channels_vnni_1x64,
#endif
    &qconv_depthwise_s16_4x16,
#ifdef CPPCONV_HAS_QCONV_AMX
    &qconv_u8s8_amx_32x32,
#endif
#ifdef CPPCONV_HAS_QCONV_VNNI
    &qconv_pointwise_vnni_6x64,
    &qconv_u8s8_vnni_6x64,
#endif
    &qconv_s16_6x16,
};
constexpr int kQConvCount = count_of(kQConvAlgorithms);
#else
const QConvAlgorithm* const* const kQConvAlgorithms = nullptr;  // the reference only
constexpr int kQConvCount = 0;
#endif
}  // namespace

const KernelTable& kernel_table() {
  static const KernelTable table = {CPPCONV_ISA_NAME,
                                    kConvAlgorithms,
                                    count_of(kConvAlgorithms),
                                    kPoolAlgorithms,
                                    count_of(kPoolAlgorithms),
                                    kConvTransposeAlgorithms,
                                    count_of(kConvTransposeAlgorithms),
                                    kQConvAlgorithms,
                                    kQConvCount,
                                    fma_peak_gflops,
#ifdef CPPCONV_HAS_TRANSPOSE_F32
                                    transpose_f32,
                                    transpose_f32_strided,
                                    simd::kTiles.direct_pixels,
#else
                                    nullptr,
                                    nullptr,
                                    0,
#endif
                                    quantize_values,
                                    dequantize_values,
                                    quantized_add_values,
                                    lookup_bytes_values};
  return table;
}

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
