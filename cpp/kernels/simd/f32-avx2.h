// The SIMD backend for AVX2 with FMA: 8 floats or 4 doubles a vector, 16 vector registers,
// masks as vectors (all-ones lanes).  Included through simd.h only.
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
  using Vec = __m256;
  using Mask = __m256i;
};
template <>
struct Types<double> {
  using Vec = __m256d;
  using Mask = __m256i;
};
constexpr int kVectorBytes = 32;

// For 16 registers: 12 accumulators in the ChannelVec (6 x 2 vectors, and the wide 3 x 4),
// Winograd and transposed-convolution blocks, 4 x 3 in PixelVec's; a lane shift across the two 128-bit halves takes two
// shuffles, which the depthwise row kernel pays on every row of any width, so its rows must be long (measured).
constexpr TileSizes kTiles = {2, 6, 4, 7, 15, 6, 6, 2, 8, 4, 3};

template <class T = float>
static inline typename Types<T>::Vec vzero();
template <>
inline __m256 vzero<float>() {
  return _mm256_setzero_ps();
}
template <>
inline __m256d vzero<double>() {
  return _mm256_setzero_pd();
}
static inline __m256 vset1(float v) { return _mm256_set1_ps(v); }
static inline __m256d vset1(double v) { return _mm256_set1_pd(v); }
static inline __m256 vload(const float* p) { return _mm256_loadu_ps(p); }
static inline __m256d vload(const double* p) { return _mm256_loadu_pd(p); }
static inline __m256 vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
static inline __m256d vbroadcast(const double* p) { return _mm256_broadcast_sd(p); }
static inline void vstore(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
static inline void vstore(double* p, __m256d v) { _mm256_storeu_pd(p, v); }
static inline __m256 vadd(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
static inline __m256 vsub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
static inline __m256 vmul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
static inline __m256d vmul(__m256d a, __m256d b) { return _mm256_mul_pd(a, b); }
static inline __m256 vdiv(__m256 a, __m256 b) { return _mm256_div_ps(a, b); }
static inline __m256 vfma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
static inline __m256d vfma(__m256d a, __m256d b, __m256d c) { return _mm256_fmadd_pd(a, b, c); }
static inline __m256 vmax(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
static inline __m256d vmax(__m256d a, __m256d b) { return _mm256_max_pd(a, b); }
static inline __m256 vmin(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
static inline __m256d vmin(__m256d a, __m256d b) { return _mm256_min_pd(a, b); }
// 2^n for integral n in [-126, 127] (the exponent field set from the integer; 0 for -127, inf for 128).
static inline __m256 vpow2i(__m256 n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
static inline __m256 vleaky(__m256 v, float slope) {
  const __m256 neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_blendv_ps(v, _mm256_mul_ps(v, _mm256_set1_ps(slope)), neg);
}
static inline __m256d vleaky(__m256d v, double slope) {
  const __m256d neg = _mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_LT_OQ);
  return _mm256_blendv_pd(v, _mm256_mul_pd(v, _mm256_set1_pd(slope)), neg);
}
// Lanes [lo, hi); masked lanes are neither read nor written (no fault past an edge).
template <class T = float>
static inline __m256i lane_mask(int64_t lo, int64_t hi) {
  constexpr int lanes = kVectorBytes / int(sizeof(T));
  lo = std::max<int64_t>(lo, 0);
  hi = std::min<int64_t>(hi, lanes);
  if constexpr (sizeof(T) == 4) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(int(lo) - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(int(hi)), lane));
  } else {
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_and_si256(_mm256_cmpgt_epi64(lane, _mm256_set1_epi64x(lo - 1)),
                            _mm256_cmpgt_epi64(_mm256_set1_epi64x(hi), lane));
  }
}
static inline __m256 vload_mask(const float* p, __m256i m) { return _mm256_maskload_ps(p, m); }
static inline __m256d vload_mask(const double* p, __m256i m) { return _mm256_maskload_pd(p, m); }
static inline void vstore_mask(float* p, __m256 v, __m256i m) { _mm256_maskstore_ps(p, m, v); }
static inline void vstore_mask(double* p, __m256d v, __m256i m) { _mm256_maskstore_pd(p, m, v); }

// Max pooling's rule (PyTorch's): v replaces acc where it is larger or NaN, so a NaN wins
// and stays.  (vmax alone returns its second operand when either is NaN: a NaN already in
// acc would be lost.)
static inline __m256 vmax_nan_wins(__m256 acc, __m256 v) {
  const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, acc, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_blendv_ps(acc, v, take);
}
// Whether any lane of v is NaN.
static inline bool vany_nan(__m256 v) { return _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0; }
// p's lanes in m, `fill` in the others.
static inline __m256 vload_mask_or(const float* p, __m256i m, __m256 fill) {
  return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
// The even and odd values of the 2 kLanes consecutive values a, b.
static inline void deinterleave2(__m256 a, __m256 b, __m256& even, __m256& odd) {
  const __m256 lo = _mm256_permute2f128_ps(a, b, 0x20),
               hi = _mm256_permute2f128_ps(a, b, 0x31);  // a0-3 b0-3, a4-7 b4-7
  even = _mm256_shuffle_ps(lo, hi, 0x88);
  odd = _mm256_shuffle_ps(lo, hi, 0xDD);
}

// Lanes [n, n + kLanes) of the concatenation lo:hi (lo first), for a compile-time n in
// [0, kLanes]: a window shifted by n elements, built from two aligned vectors.
template <int N>
static inline __m256 shift_lanes_c(__m256 lo, __m256 hi) {
  if constexpr (N == 0) return lo;
  else if constexpr (N == 8) return hi;
  else if constexpr (N == 4) return _mm256_permute2f128_ps(lo, hi, 0x21);
  else {
    // AVX2 has no cross-lane alignr: rotate through the middle 128-bit halves.
    const __m256 mid = _mm256_permute2f128_ps(lo, hi, 0x21);  // lo[4..7] hi[0..3]
    if constexpr (N < 4)
      return _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(mid), _mm256_castps_si256(lo), N * 4));
    else return _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(hi), _mm256_castps_si256(mid), (N - 4) * 4));
  }
}

// Interleaves within each 128-bit lane, for transpose_square (simd.h).
static inline __m256 interleave_lo32(__m256 a, __m256 b) { return _mm256_unpacklo_ps(a, b); }
static inline __m256 interleave_hi32(__m256 a, __m256 b) { return _mm256_unpackhi_ps(a, b); }
static inline __m256 interleave_lo64(__m256 a, __m256 b) {
  return _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)));
}
static inline __m256 interleave_hi64(__m256 a, __m256 b) {
  return _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)));
}
// The last step of transpose_square: rows[4i + k], lane l, holds column 4l + k of rows
// 4i .. 4i + 3; the 128-bit lanes themselves are transposed.  t is scratch.
static inline void transpose_lanes128(__m256 (&rows)[8], __m256 (&t)[8]) {
#pragma GCC unroll 8
  for (int k = 0; k < 4; ++k) {
    t[k] = _mm256_permute2f128_ps(rows[k], rows[4 + k], 0x20);
    t[k + 4] = _mm256_permute2f128_ps(rows[k], rows[4 + k], 0x31);
  }
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) rows[k] = t[k];
}

}  // namespace simd
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
