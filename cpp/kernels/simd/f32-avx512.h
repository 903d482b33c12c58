// The SIMD backend for AVX-512 (F, BW, DQ, VL): 16 floats or 8 doubles a vector, 32 vector
// registers, bit masks in k registers.  Included through simd.h only.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/simd/tiles.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace simd {

template <class T>
struct Types;
template <>
struct Types<float> {
  using Vec = __m512;
  using Mask = __mmask16;
};
template <>
struct Types<double> {
  using Vec = __m512d;
  using Mask = __mmask8;
};
constexpr int kVectorBytes = 64;

// For 32 registers: 28 accumulators in the narrow ChannelVec block (14 x 2 vectors: rows of 14,
// 28 and 56 pixels split into whole blocks, and each weight vector loaded from L2 serves 14
// pixels, which matters on cores with two 512-bit FMA units), 24 in the wide one (6 x 4) and
// the Winograd blocks, 6 x 4 in PixelVec's,
// 16 in the transposed convolution's; the depthwise reuse blocks hold 16 accumulators, 9
// weights and 4 inputs; a lane shift is one instruction, so rows one vector wide pay.
constexpr TileSizes kTiles = {2, 14, 6, 8, 30, 12, 8, 4, 1, 4, 6};

template <class T = float>
static inline typename Types<T>::Vec vzero();
template <>
inline __m512 vzero<float>() {
  return _mm512_setzero_ps();
}
template <>
inline __m512d vzero<double>() {
  return _mm512_setzero_pd();
}
static inline __m512 vset1(float v) { return _mm512_set1_ps(v); }
static inline __m512d vset1(double v) { return _mm512_set1_pd(v); }
static inline __m512 vload(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512d vload(const double* p) { return _mm512_loadu_pd(p); }
static inline __m512 vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
static inline __m512d vbroadcast(const double* p) { return _mm512_set1_pd(*p); }
static inline void vstore(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
static inline void vstore(double* p, __m512d v) { _mm512_storeu_pd(p, v); }
static inline __m512 vadd(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
static inline __m512 vsub(__m512 a, __m512 b) { return _mm512_sub_ps(a, b); }
static inline __m512 vmul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
static inline __m512d vmul(__m512d a, __m512d b) { return _mm512_mul_pd(a, b); }
static inline __m512 vdiv(__m512 a, __m512 b) { return _mm512_div_ps(a, b); }
static inline __m512 vfma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
static inline __m512d vfma(__m512d a, __m512d b, __m512d c) { return _mm512_fmadd_pd(a, b, c); }
// a * b + c in the lanes of m, c in the others.
static inline __m512 vfma_lanes(__m512 a, __m512 b, __m512 c, __mmask16 m) { return _mm512_mask3_fmadd_ps(a, b, c, m); }
static inline __m512 vmax(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
static inline __m512d vmax(__m512d a, __m512d b) { return _mm512_max_pd(a, b); }
static inline __m512 vmin(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
static inline __m512d vmin(__m512d a, __m512d b) { return _mm512_min_pd(a, b); }
// 2^n for integral n in [-126, 127] (the exponent field set from the integer; 0 for -127, inf for 128).
static inline __m512 vpow2i(__m512 n) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
static inline __m512 vleaky(__m512 v, float slope) {
  const __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(slope));
}
static inline __m512d vleaky(__m512d v, double slope) {
  const __mmask8 neg = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_LT_OQ);
  return _mm512_mask_mul_pd(v, neg, v, _mm512_set1_pd(slope));
}
// Lanes [lo, hi); masked lanes are neither read nor written (no fault past an edge).
template <class T = float>
static inline typename Types<T>::Mask lane_mask(int64_t lo, int64_t hi) {
  constexpr int lanes = kVectorBytes / int(sizeof(T));
  lo = std::max<int64_t>(lo, 0);
  if (hi <= lo) return 0;
  const unsigned top = hi >= lanes ? (1u << lanes) - 1u : ((1u << hi) - 1u);
  return static_cast<typename Types<T>::Mask>(top & ~((1u << lo) - 1u));
}
static inline __m512 vload_mask(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
static inline __m512d vload_mask(const double* p, __mmask8 m) { return _mm512_maskz_loadu_pd(m, p); }
static inline void vstore_mask(float* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
static inline void vstore_mask(double* p, __m512d v, __mmask8 m) { _mm512_mask_storeu_pd(p, m, v); }

// Max pooling's rule (PyTorch's): v replaces acc where it is larger or NaN, so a NaN wins
// and stays.  (vmax alone returns its second operand when either is NaN: a NaN already in
// acc would be lost.)
static inline __m512 vmax_nan_wins(__m512 acc, __m512 v) {
  const __mmask16 take = _mm512_cmp_ps_mask(v, acc, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_mask_blend_ps(take, acc, v);
}
// Whether any lane of v is NaN.
static inline bool vany_nan(__m512 v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) != 0; }
// p's lanes in m, `fill` in the others.
static inline __m512 vload_mask_or(const float* p, __mmask16 m, __m512 fill) {
  return _mm512_mask_loadu_ps(fill, m, p);
}
// The even and odd values of the 2 kLanes consecutive values a, b.
static inline void deinterleave2(__m512 a, __m512 b, __m512& even, __m512& odd) {
  const __m512i e = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  even = _mm512_permutex2var_ps(a, e, b);
  odd = _mm512_permutex2var_ps(a, _mm512_add_epi32(e, _mm512_set1_epi32(1)), b);
}

// Lanes [n, n + kLanes) of the concatenation lo:hi (lo first), for a compile-time n in
// [0, kLanes]: a window shifted by n elements, built from two aligned vectors.
template <int N>
static inline __m512 shift_lanes_c(__m512 lo, __m512 hi) {
  if constexpr (N == 0) return lo;
  else if constexpr (N == 16) return hi;
  else return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), N));
}

// Interleaves within each 128-bit lane, for transpose_square (simd.h).
static inline __m512 interleave_lo32(__m512 a, __m512 b) { return _mm512_unpacklo_ps(a, b); }
static inline __m512 interleave_hi32(__m512 a, __m512 b) { return _mm512_unpackhi_ps(a, b); }
static inline __m512 interleave_lo64(__m512 a, __m512 b) {
  return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}
static inline __m512 interleave_hi64(__m512 a, __m512 b) {
  return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}
// The last step of transpose_square: rows[4i + k], lane l, holds column 4l + k of rows
// 4i .. 4i + 3; the 128-bit lanes themselves are transposed.  t is scratch.
static inline void transpose_lanes128(__m512 (&rows)[16], __m512 (&t)[16]) {
  // t[8i + k]: columns k, k+8 (t[8i + 4 + k]: k+4, k+12) of row groups 2i, 2i+1.
#pragma GCC unroll 16
  for (int i = 0; i < 2; ++i)
#pragma GCC unroll 16
    for (int k = 0; k < 4; ++k) {
      t[8 * i + k] = _mm512_shuffle_f32x4(rows[8 * i + k], rows[8 * i + 4 + k], 0x88);
      t[8 * i + 4 + k] = _mm512_shuffle_f32x4(rows[8 * i + k], rows[8 * i + 4 + k], 0xDD);
    }
#pragma GCC unroll 16
  for (int k = 0; k < 4; ++k) {
    rows[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0x88);
    rows[k + 8] = _mm512_shuffle_f32x4(t[k], t[8 + k], 0xDD);
    rows[k + 4] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0x88);
    rows[k + 12] = _mm512_shuffle_f32x4(t[4 + k], t[12 + k], 0xDD);
  }
}

// bfloat16 (the upper half of a float32, held as uint16_t) to and from float32 vectors.
// Widening is exact (a 16-bit shift).  Narrowing is vcvtneps2bf16, round to nearest even with
// bf16.h's float_to_bf16 rule for every value but denormals, which it flushes (none reach it
// under DenormalGuard's flush-to-zero): AVX512-BF16, so the algorithms that store bfloat16 are
// listed with features = kCpuAvx512Bf16.  (Inline assembly: the avx512 build is not compiled
// for the extension; the integer rounding was slower in the depthwise kernels, docs/tuning.md.)
static inline __m512 vload_bf16(const uint16_t* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
static inline __m512 vload_bf16_mask(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
static inline __m256i narrow_to_bf16(__m512 v) {
  __m256i r;
  asm("vcvtneps2bf16 %1, %0" : "=v"(r) : "v"(v));
  return r;
}
static inline void vstore_bf16(uint16_t* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow_to_bf16(v));
}
static inline void vstore_bf16_mask(uint16_t* p, __m512 v, __mmask16 m) {
  _mm256_mask_storeu_epi16(p, m, narrow_to_bf16(v));
}

}  // namespace simd
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
