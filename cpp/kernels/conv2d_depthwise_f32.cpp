// conv2d_depthwise_nhwc_f32: depthwise convolution (groups == C == K) on NHWC, vectorised
// across channels.  Each output pixel reads its kh x kw input pixels straight from x (the
// padding maps give the source row/column, or a zero), so nothing is copied: a depthwise layer
// does too little arithmetic per input value for a tile copy to pay off.  Memory-bound; the
// register block is kPixels output pixels x kVecs channel vectors.
#include <cstring>
#include <vector>

#include "kernels/conv2d_depthwise_f32.h"
#include "kernels/isa_common.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

#if defined(__AVX512F__)
constexpr int kVL = 16;
using Vec = __m512;
static inline Vec vzero() { return _mm512_setzero_ps(); }
static inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
static inline Vec vmin(Vec a, Vec b) { return _mm512_min_ps(a, b); }
static inline Vec vset1(float v) { return _mm512_set1_ps(v); }
static inline Vec vleaky(Vec v) {
  const __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(0.01f));
}
#else
constexpr int kVL = 8;
using Vec = __m256;
static inline Vec vzero() { return _mm256_setzero_ps(); }
static inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
static inline Vec vmin(Vec a, Vec b) { return _mm256_min_ps(a, b); }
static inline Vec vset1(float v) { return _mm256_set1_ps(v); }
static inline Vec vleaky(Vec v) {
  const Vec neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_blendv_ps(v, _mm256_mul_ps(v, _mm256_set1_ps(0.01f)), neg);
}
#endif

constexpr int kVecs = 4;  // channel vectors per block

static inline Vec activate_vec(Vec v, Activation a) {
  switch (a) {
    case Activation::Relu: return vmax(vzero(), v);  // NaN stays NaN (second operand)
    case Activation::Relu6: return vmin(vset1(6.0f), vmax(vzero(), v));
    case Activation::LeakyRelu: return vleaky(v);
    default: return v;
  }
}

static inline bool is_simple(Activation a) {
  return a == Activation::None || a == Activation::Relu || a == Activation::Relu6 || a == Activation::LeakyRelu;
}

bool depthwise_accepts(const Conv2dProblem& p) {
  return p.dtype == DType::Float32 && p.layout == Layout::NHWC && p.groups == p.in_channels &&
         p.out_channels == p.in_channels && p.in_channels >= kVL;
}

// Packed weights: [tap][C] so one tap's weights for a channel vector are contiguous.
size_t depthwise_packed_bytes(const Conv2dProblem& p) {
  return size_t(p.kernel_h * p.kernel_w * p.out_channels) * sizeof(float);
}

void depthwise_pack(const Conv2dProblem& p, const void* weight, void* packed) {
  const float* w = static_cast<const float*>(weight);
  float* dst = static_cast<float*>(packed);
  const int64_t taps = p.kernel_h * p.kernel_w;
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t c = 0; c < p.out_channels; ++c) dst[t * p.out_channels + c] = w[c * taps + t];
}

size_t depthwise_workspace(const Conv2dProblem& p, int) { return size_t(p.out_channels) * sizeof(float); }

// nv channel vectors starting at channel c0 of output pixel (oh, ow).
template <int NV>
void depthwise_block(const ConvCall& call, const float* x_img, const float* w, const float* bias, int64_t oh,
                     int64_t ow, int64_t c0, float* y_pix) {
  const Conv2dProblem& p = call.p;
  const int64_t C = p.in_channels;
  Vec acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = bias ? vload(bias + c0 + v * kVL) : vzero();
  for (int64_t i = 0; i < p.kernel_h; ++i) {
    const int64_t ih = call.row_src[oh * p.stride_h + i * p.dilation_h];
    for (int64_t j = 0; j < p.kernel_w; ++j) {
      const int64_t iw = call.col_src[ow * p.stride_w + j * p.dilation_w];
      const float* wt = w + (i * p.kernel_w + j) * C + c0;
      if (ih < 0 || iw < 0) {
        // A zero from the padding still multiplies the weight: 0 * inf is NaN, as in PyTorch.
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[v] = vfma(vzero(), vload(wt + v * kVL), acc[v]);
        continue;
      }
      const float* xp = x_img + ih * call.x_stride.h + iw * call.x_stride.w + c0;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[v] = vfma(vload(xp + v * kVL), vload(wt + v * kVL), acc[v]);
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) vstore(y_pix + c0 + v * kVL, activate_vec(acc[v], p.activation));
}

void run_depthwise(const ConvCall& call) {
  const Conv2dProblem& p = call.p;
  const float* x = static_cast<const float*>(call.x);
  const float* w = static_cast<const float*>(call.packed);
  const float* bias = static_cast<const float*>(call.bias);
  float* y = static_cast<float*>(call.y);
  const int64_t C = p.in_channels;
  const int64_t full_vecs = C / kVL;
  const int64_t tail = C - full_vecs * kVL;  // channels past the last full vector
  const int64_t rows = p.batch * p.out_h;
#pragma omp parallel num_threads(call.num_threads)
  {
    DenormalGuard denormals;
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t n = row / p.out_h, oh = row % p.out_h;
      const float* x_img = x + n * call.x_stride.n;
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        float* y_pix = y + n * call.y_stride.n + oh * call.y_stride.h + ow * call.y_stride.w;
        int64_t v = 0;
        for (; v + kVecs <= full_vecs; v += kVecs) depthwise_block<kVecs>(call, x_img, w, bias, oh, ow, v * kVL, y_pix);
        for (; v < full_vecs; ++v) depthwise_block<1>(call, x_img, w, bias, oh, ow, v * kVL, y_pix);
        if (tail) {
          // The last channels: an overlapping full vector ending at C (C >= kVL), recomputed.
          depthwise_block<1>(call, x_img, w, bias, oh, ow, C - kVL, y_pix);
        }
        if (!is_simple(p.activation)) activate_row(y_pix, C, p.activation);
      }
    }
  }
}

}  // namespace

const ConvAlgorithm conv2d_depthwise_nhwc_f32 = {
#if defined(__AVX512F__)
    "conv2d_depthwise_nhwc_f32__" CPPCONV_ISA_NAME "_1x64",
#else
    "conv2d_depthwise_nhwc_f32__" CPPCONV_ISA_NAME "_1x32",
#endif
    DType::Float32, depthwise_accepts, depthwise_packed_bytes, depthwise_pack, depthwise_workspace, run_depthwise};

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv

#endif  // __AVX512F__ || __AVX2__
