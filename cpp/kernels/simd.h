// The vector vocabulary of the SIMD kernels, for float and double, for the ISA this file is
// compiled for (AVX-512: 16 floats or 8 doubles a vector; AVX2: 8 or 4).  Overloads pick
// the element type from the arguments; where nothing does (vzero, lane_mask), a template
// argument does, float by default.  Per-ISA like isa_common.h: everything sits in
// cppconv::CPPCONV_ISA_NS, so each ISA build has its own copy.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/isa_common.h"

#if !defined(__AVX512F__) && !defined(__AVX2__)
#error "simd.h needs AVX2 or AVX-512"
#endif

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace simd {

template <class T>
struct Types;

#if defined(__AVX512F__)
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
#else
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
#endif

template <class T>
using Vec = typename Types<T>::Vec;
template <class T>
using Mask = typename Types<T>::Mask;
template <class T>
constexpr int kLanes = kVectorBytes / int(sizeof(T));

// GCC's and clang's __m256 and __m512 are vector types with lane-wise + - * /, which the
// Winograd transforms and pooling use; MSVC's are structs without them.  (Untested here: no
// MSVC on the development machine; CI's Windows wheel build compiles it.)
#if defined(_MSC_VER) && !defined(__clang__)
#if defined(__AVX512F__)
#define CPPCONV_SIMD_OP(op, fn) \
  static inline __m512 operator op(__m512 a, __m512 b) { return _mm512_##fn##_ps(a, b); }
#else
#define CPPCONV_SIMD_OP(op, fn) \
  static inline __m256 operator op(__m256 a, __m256 b) { return _mm256_##fn##_ps(a, b); }
#endif
CPPCONV_SIMD_OP(+, add)
CPPCONV_SIMD_OP(-, sub)
CPPCONV_SIMD_OP(*, mul)
CPPCONV_SIMD_OP(/, div)
#undef CPPCONV_SIMD_OP
#endif

#if defined(__AVX512F__)
template <class T = float>
static inline Vec<T> vzero();
template <>
inline Vec<float> vzero<float>() { return _mm512_setzero_ps(); }
template <>
inline Vec<double> vzero<double>() { return _mm512_setzero_pd(); }
static inline __m512 vset1(float v) { return _mm512_set1_ps(v); }
static inline __m512d vset1(double v) { return _mm512_set1_pd(v); }
static inline __m512 vload(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512d vload(const double* p) { return _mm512_loadu_pd(p); }
static inline __m512 vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
static inline __m512d vbroadcast(const double* p) { return _mm512_set1_pd(*p); }
static inline void vstore(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
static inline void vstore(double* p, __m512d v) { _mm512_storeu_pd(p, v); }
static inline __m512 vfma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
static inline __m512d vfma(__m512d a, __m512d b, __m512d c) { return _mm512_fmadd_pd(a, b, c); }
static inline __m512 vmax(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
static inline __m512d vmax(__m512d a, __m512d b) { return _mm512_max_pd(a, b); }
static inline __m512 vmin(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
static inline __m512d vmin(__m512d a, __m512d b) { return _mm512_min_pd(a, b); }
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
static inline Mask<T> lane_mask(int64_t lo, int64_t hi) {
  lo = std::max<int64_t>(lo, 0);
  if (hi <= lo) return 0;
  const unsigned top = hi >= kLanes<T> ? (1u << kLanes<T>) - 1u : ((1u << hi) - 1u);
  return static_cast<Mask<T>>(top & ~((1u << lo) - 1u));
}
static inline __m512 vload_mask(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
static inline __m512d vload_mask(const double* p, __mmask8 m) { return _mm512_maskz_loadu_pd(m, p); }
static inline void vstore_mask(float* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
static inline void vstore_mask(double* p, __m512d v, __mmask8 m) { _mm512_mask_storeu_pd(p, m, v); }
#else
template <class T = float>
static inline Vec<T> vzero();
template <>
inline Vec<float> vzero<float>() { return _mm256_setzero_ps(); }
template <>
inline Vec<double> vzero<double>() { return _mm256_setzero_pd(); }
static inline __m256 vset1(float v) { return _mm256_set1_ps(v); }
static inline __m256d vset1(double v) { return _mm256_set1_pd(v); }
static inline __m256 vload(const float* p) { return _mm256_loadu_ps(p); }
static inline __m256d vload(const double* p) { return _mm256_loadu_pd(p); }
static inline __m256 vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
static inline __m256d vbroadcast(const double* p) { return _mm256_broadcast_sd(p); }
static inline void vstore(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
static inline void vstore(double* p, __m256d v) { _mm256_storeu_pd(p, v); }
static inline __m256 vfma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
static inline __m256d vfma(__m256d a, __m256d b, __m256d c) { return _mm256_fmadd_pd(a, b, c); }
static inline __m256 vmax(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
static inline __m256d vmax(__m256d a, __m256d b) { return _mm256_max_pd(a, b); }
static inline __m256 vmin(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
static inline __m256d vmin(__m256d a, __m256d b) { return _mm256_min_pd(a, b); }
static inline __m256 vleaky(__m256 v, float slope) {
  const __m256 neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_blendv_ps(v, _mm256_mul_ps(v, _mm256_set1_ps(slope)), neg);
}
static inline __m256d vleaky(__m256d v, double slope) {
  const __m256d neg = _mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_LT_OQ);
  return _mm256_blendv_pd(v, _mm256_mul_pd(v, _mm256_set1_pd(slope)), neg);
}
template <class T = float>
static inline Mask<T> lane_mask(int64_t lo, int64_t hi) {
  lo = std::max<int64_t>(lo, 0);
  hi = std::min<int64_t>(hi, kLanes<T>);
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
#endif

// Max pooling's rule (PyTorch's): v replaces acc where it is larger or NaN, so a NaN wins
// and stays.  (vmax alone returns its second operand when either is NaN: a NaN already in
// acc would be lost.)
#if defined(__AVX512F__)
static inline __m512 vmax_nan_wins(__m512 acc, __m512 v) {
  const __mmask16 take = _mm512_cmp_ps_mask(v, acc, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_mask_blend_ps(take, acc, v);
}
// p's lanes in m, `fill` in the others.
static inline __m512 vload_mask_or(const float* p, __mmask16 m, __m512 fill) { return _mm512_mask_loadu_ps(fill, m, p); }
// The even and odd values of the 2 kLanes consecutive values a, b.
static inline void deinterleave2(__m512 a, __m512 b, __m512& even, __m512& odd) {
  const __m512i e = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  even = _mm512_permutex2var_ps(a, e, b);
  odd = _mm512_permutex2var_ps(a, _mm512_add_epi32(e, _mm512_set1_epi32(1)), b);
}
#else
static inline __m256 vmax_nan_wins(__m256 acc, __m256 v) {
  const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, acc, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_blendv_ps(acc, v, take);
}
static inline __m256 vload_mask_or(const float* p, __m256i m, __m256 fill) {
  return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
static inline void deinterleave2(__m256 a, __m256 b, __m256& even, __m256& odd) {
  const __m256 lo = _mm256_permute2f128_ps(a, b, 0x20), hi = _mm256_permute2f128_ps(a, b, 0x31);  // a0-3 b0-3, a4-7 b4-7
  even = _mm256_shuffle_ps(lo, hi, 0x88);
  odd = _mm256_shuffle_ps(lo, hi, 0xDD);
}
#endif

// The first n lanes.
template <class T>
static inline Vec<T> vload_partial(const T* p, int n) { return vload_mask(p, lane_mask<T>(0, n)); }
template <class T>
static inline void vstore_partial(T* p, Vec<T> v, int n) { vstore_mask(p, v, lane_mask<T>(0, n)); }

// v, held in a register from here on.  GCC folds a load into each FMA that uses it as a
// memory operand, so a vector several FMAs share is loaded once per FMA: the depthwise
// row-reuse blocks did 24 loads for the 10 input columns of a 3-wide kernel row, and were
// load-bound (NHWC 64@112 on one thread: 193 -> 133 us once the columns were held).
template <class V>
static inline V in_register(V v) {
#if defined(__GNUC__)  // (GCC and clang; MSVC has no inline assembly on x64 and keeps its loads)
  __asm__("" : "+v"(v));
#endif
  return v;
}

// Lanes [n, n + kLanes) of the concatenation lo:hi (lo first), for a compile-time n in
// [0, kLanes]: a window shifted by n elements, built from two aligned vectors.
#if defined(__AVX512F__)
template <int N>
static inline __m512 shift_lanes_c(__m512 lo, __m512 hi) {
  if constexpr (N == 0) return lo;
  else if constexpr (N == 16) return hi;
  else return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), N));
}
#else
template <int N>
static inline __m256 shift_lanes_c(__m256 lo, __m256 hi) {
  if constexpr (N == 0) return lo;
  else if constexpr (N == 8) return hi;
  else if constexpr (N == 4) return _mm256_permute2f128_ps(lo, hi, 0x21);
  else {
    // AVX2 has no cross-lane alignr: rotate through the middle 128-bit halves.
    const __m256 mid = _mm256_permute2f128_ps(lo, hi, 0x21);  // lo[4..7] hi[0..3]
    if constexpr (N < 4) return _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(mid), _mm256_castps_si256(lo), N * 4));
    else return _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(hi), _mm256_castps_si256(mid), (N - 4) * 4));
  }
}
#endif
// Runtime-indexed form for loops the compiler fully unrolls (the index folds to a constant).
static inline Vec<float> shift_lanes(Vec<float> lo, Vec<float> hi, int n) {
  switch (n) {
    case 0: return lo;
    case 1: return shift_lanes_c<1>(lo, hi);
    case 2: return shift_lanes_c<2>(lo, hi);
    case 3: return shift_lanes_c<3>(lo, hi);
    case 4: return shift_lanes_c<4>(lo, hi);
    case 5: return shift_lanes_c<5>(lo, hi);
    case 6: return shift_lanes_c<6>(lo, hi);
    case 7: return shift_lanes_c<7>(lo, hi);
#if defined(__AVX512F__)
    case 8: return shift_lanes_c<8>(lo, hi);
    case 9: return shift_lanes_c<9>(lo, hi);
    case 10: return shift_lanes_c<10>(lo, hi);
    case 11: return shift_lanes_c<11>(lo, hi);
    case 12: return shift_lanes_c<12>(lo, hi);
    case 13: return shift_lanes_c<13>(lo, hi);
    case 14: return shift_lanes_c<14>(lo, hi);
    case 15: return shift_lanes_c<15>(lo, hi);
#endif
    default: return hi;  // n == kLanes
  }
}

// Transposes a kLanes x kLanes block of floats held as one vector per row: afterwards
// rows[j] holds what was column j.  Turns channel-planar data (NCHW rows) into
// channel-interleaved vectors (one pixel's channels) and back without scalar moves.
#if defined(__AVX512F__)
static inline __m512 interleave_lo32(__m512 a, __m512 b) { return _mm512_unpacklo_ps(a, b); }
static inline __m512 interleave_hi32(__m512 a, __m512 b) { return _mm512_unpackhi_ps(a, b); }
static inline __m512 interleave_lo64(__m512 a, __m512 b) {
  return _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}
static inline __m512 interleave_hi64(__m512 a, __m512 b) {
  return _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)));
}
#else
static inline __m256 interleave_lo32(__m256 a, __m256 b) { return _mm256_unpacklo_ps(a, b); }
static inline __m256 interleave_hi32(__m256 a, __m256 b) { return _mm256_unpackhi_ps(a, b); }
static inline __m256 interleave_lo64(__m256 a, __m256 b) {
  return _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)));
}
static inline __m256 interleave_hi64(__m256 a, __m256 b) {
  return _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)));
}
#endif

static inline void transpose_square(Vec<float> (&rows)[kLanes<float>]) {
  constexpr int L = kLanes<float>;
  Vec<float> t[L];
  // Within each 128-bit lane, first pairs of rows (a0 b0 a1 b1 / a2 b2 a3 b3), then groups of
  // four: afterwards rows[4i + k], lane l, holds column 4l + k of rows 4i .. 4i + 3.
#pragma GCC unroll 16
  for (int i = 0; i < L / 2; ++i) {
    t[2 * i] = interleave_lo32(rows[2 * i], rows[2 * i + 1]);
    t[2 * i + 1] = interleave_hi32(rows[2 * i], rows[2 * i + 1]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < L / 4; ++i) {
    rows[4 * i] = interleave_lo64(t[4 * i], t[4 * i + 2]);
    rows[4 * i + 1] = interleave_hi64(t[4 * i], t[4 * i + 2]);
    rows[4 * i + 2] = interleave_lo64(t[4 * i + 1], t[4 * i + 3]);
    rows[4 * i + 3] = interleave_hi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // Then the 128-bit lanes themselves.
#if defined(__AVX512F__)
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
#else
#pragma GCC unroll 8
  for (int k = 0; k < 4; ++k) {
    t[k] = _mm256_permute2f128_ps(rows[k], rows[4 + k], 0x20);
    t[k + 4] = _mm256_permute2f128_ps(rows[k], rows[4 + k], 0x31);
  }
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) rows[k] = t[k];
#endif
}

// Channels [0, cvalid) of `count` pixels of a set of planes `plane_stride` apart, transposed
// into pixels of kLanes values `pixel_pitch` apart at `dst`; lanes past cvalid are zero.
// `readable` values of each plane may be read from src (the caller knows what follows the
// pixels): a last partial block within them is read with whole loads, since masked loads of
// lines still in memory are slow (a 14-wide NCHW row took 40 % of a depthwise call that way).
// (Loops over the vector array are fully unrolled, with the bounds as conditions inside, so
// the block stays in registers.)
static inline void planes_to_pixels(const float* src, int64_t plane_stride, int cvalid, int64_t count, float* dst,
                                    int64_t pixel_pitch = kLanes<float>, int64_t readable = 0) {
  constexpr int L = kLanes<float>;
  int64_t q = 0;
  if (cvalid == L) {
    for (; q + L <= count; q += L) {
      Vec<float> v[L];
#pragma GCC unroll 16
      for (int c = 0; c < L; ++c) v[c] = vload(src + c * plane_stride + q);
      transpose_square(v);
#pragma GCC unroll 16
      for (int m = 0; m < L; ++m) vstore(dst + (q + m) * pixel_pitch, v[m]);
    }
  }
  for (; q < count; q += L) {
    const int n = int(std::min<int64_t>(L, count - q));
    const Mask<float> valid = lane_mask(0, n);
    const bool whole = q + L <= readable;
    Vec<float> v[L];
#pragma GCC unroll 16
    for (int c = 0; c < L; ++c)
      v[c] = c >= cvalid ? vzero<float>() : whole ? vload(src + c * plane_stride + q) : vload_mask(src + c * plane_stride + q, valid);
    transpose_square(v);
#pragma GCC unroll 16
    for (int m = 0; m < L; ++m)
      if (m < n) vstore(dst + (q + m) * pixel_pitch, v[m]);
  }
}

// The inverse: `count` pixels (pixel_stride apart, channels [0, cvalid) of each read) into
// planes [0, cvalid).
static inline void pixels_to_planes(const float* src, int64_t pixel_stride, int cvalid, int64_t count, float* dst,
                                    int64_t plane_stride) {
  constexpr int L = kLanes<float>;
  int64_t q = 0;
  if (cvalid == L) {
    for (; q + L <= count; q += L) {
      Vec<float> v[L];
#pragma GCC unroll 16
      for (int m = 0; m < L; ++m) v[m] = vload(src + (q + m) * pixel_stride);
      transpose_square(v);
#pragma GCC unroll 16
      for (int c = 0; c < L; ++c) vstore(dst + c * plane_stride + q, v[c]);
    }
  }
  for (; q < count; q += L) {
    const int n = int(std::min<int64_t>(L, count - q));
    const Mask<float> valid = lane_mask(0, n), channels = lane_mask(0, cvalid);
    Vec<float> v[L];
#pragma GCC unroll 16
    for (int m = 0; m < L; ++m) v[m] = m < n ? vload_mask(src + (q + m) * pixel_stride, channels) : vzero<float>();
    transpose_square(v);
#pragma GCC unroll 16
    for (int c = 0; c < L; ++c)
      if (c < cvalid) vstore_mask(dst + c * plane_stride + q, v[c], valid);
  }
}

// Activations that are a few vector instructions; the transcendental ones (sigmoid, tanh,
// silu) are applied after the store by activate_row.  max/min return the second operand
// when either is NaN, so the value goes second and NaN stays NaN.
static inline bool is_simple(Activation a) {
  return a == Activation::None || a == Activation::Relu || a == Activation::Relu6 || a == Activation::LeakyRelu;
}
float lane_type(Vec<float>);  // (overloads, not std::is_same on vector types, whose attributes
double lane_type(Vec<double>);  // GCC drops from template arguments with a warning)
template <class V>
static inline V apply_simple_activation(V v, FusedActivation a) {
  using T = decltype(lane_type(v));
  switch (a.kind) {
    case Activation::Relu: return vmax(vzero<T>(), v);
    case Activation::Relu6: return vmin(vset1(T(6)), vmax(vzero<T>(), v));
    case Activation::LeakyRelu: return vleaky(v, T(a.negative_slope));
    default: return v;
  }
}

}  // namespace simd
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
