// This ISA's function table: its convolution algorithms in order of preference.
#include "kernels/conv2d_depthwise_f32.h"
#include "kernels/conv2d_direct_f32.h"
#include "kernels/conv2d_tiled.h"
#include "kernels/isa_common.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {

namespace {
const ConvAlgorithm kConvAlgorithms[] = {
#ifdef CPPCONV_HAS_DEPTHWISE_F32
    conv2d_depthwise_nhwc_f32,
    conv2d_depthwise_nchw_f32,
#endif
#ifdef CPPCONV_HAS_DIRECT_F32
    conv2d_channelvec_f32,
    conv2d_pixelvec_f32,
#endif
    conv2d_tiled_f32,
    conv2d_tiled_f64,
};
}  // namespace

const KernelTable& kernel_table() {
  static const KernelTable table = {CPPCONV_ISA_NAME, kConvAlgorithms,
                                    int(sizeof(kConvAlgorithms) / sizeof(kConvAlgorithms[0]))};
  return table;
}

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
