// The float32 vector vocabulary of the SIMD kernels, for the ISA this file is compiled for
// (AVX-512: 16 lanes, AVX2: 8).  Per-ISA like isa_common.h: everything sits in
// cppconv::CPPCONV_ISA_NS, so each ISA build has its own copy.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/isa_common.h"

#if !defined(__AVX512F__) && !defined(__AVX2__)
#error "simd_f32.h needs AVX2 or AVX-512"
#endif

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace simd {

#if defined(__AVX512F__)
constexpr int kVL = 16;  // floats per vector
using Vec = __m512;
using Mask = __mmask16;
static inline Vec vzero() { return _mm512_setzero_ps(); }
static inline Vec vset1(float v) { return _mm512_set1_ps(v); }
static inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
static inline Vec vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
static inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
static inline Vec vmin(Vec a, Vec b) { return _mm512_min_ps(a, b); }
static inline Vec vleaky(Vec v) {
  const __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(0.01f));
}
// Lanes [lo, hi); masked lanes are neither read nor written (no fault past an edge).
static inline Mask lane_mask(int64_t lo, int64_t hi) {
  lo = std::max<int64_t>(lo, 0);
  if (hi <= lo) return 0;
  const unsigned top = hi >= kVL ? 0xffffu : ((1u << hi) - 1u);
  return static_cast<Mask>(top & ~((1u << lo) - 1u));
}
static inline Vec vload_mask(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
static inline void vstore_mask(float* p, Vec v, Mask m) { _mm512_mask_storeu_ps(p, m, v); }
#else
constexpr int kVL = 8;
using Vec = __m256;
using Mask = __m256i;
static inline Vec vzero() { return _mm256_setzero_ps(); }
static inline Vec vset1(float v) { return _mm256_set1_ps(v); }
static inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
static inline Vec vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
static inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
static inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
static inline Vec vmin(Vec a, Vec b) { return _mm256_min_ps(a, b); }
static inline Vec vleaky(Vec v) {
  const Vec neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_blendv_ps(v, _mm256_mul_ps(v, _mm256_set1_ps(0.01f)), neg);
}
static inline Mask lane_mask(int64_t lo, int64_t hi) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i ge_lo = _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(int(std::max<int64_t>(lo, 0)) - 1));
  const __m256i lt_hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::min<int64_t>(hi, kVL))), lane);
  return _mm256_and_si256(ge_lo, lt_hi);
}
static inline Vec vload_mask(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
static inline void vstore_mask(float* p, Vec v, Mask m) { _mm256_maskstore_ps(p, m, v); }
#endif

// The first n lanes.
static inline Vec vload_partial(const float* p, int n) { return vload_mask(p, lane_mask(0, n)); }
static inline void vstore_partial(float* p, Vec v, int n) { vstore_mask(p, v, lane_mask(0, n)); }

// Activations that are a few vector instructions; the transcendental ones (sigmoid, tanh,
// silu) are applied after the store by activate_row.  max_ps/min_ps return the second
// operand when either is NaN, so the value goes second and NaN stays NaN.
static inline bool is_simple(Activation a) {
  return a == Activation::None || a == Activation::Relu || a == Activation::Relu6 || a == Activation::LeakyRelu;
}
static inline Vec apply_simple_activation(Vec v, Activation a) {
  switch (a) {
    case Activation::Relu: return vmax(vzero(), v);
    case Activation::Relu6: return vmin(vset1(6.0f), vmax(vzero(), v));
    case Activation::LeakyRelu: return vleaky(v);
    default: return v;
  }
}

}  // namespace simd
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
