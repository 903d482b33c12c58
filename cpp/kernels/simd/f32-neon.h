// The SIMD backend for aarch64 NEON (Advanced SIMD): 4 floats or 2 doubles a vector, 32 vector
// registers, masks as vectors (all-ones lanes).  NEON has no masked loads or stores: the
// masked and partial forms move the lanes one by one, so nothing past the valid lanes is read
// or written.  Included through simd.h only (GCC and clang: the NEON types' lane-wise
// operators and subscripts are theirs).
#pragma once
#include <arm_neon.h>

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
  using Vec = float32x4_t;
  using Mask = uint32x4_t;
};
template <>
struct Types<double> {
  using Vec = float64x2_t;
  using Mask = uint64x2_t;
};
constexpr int kVectorBytes = 16;

// For 32 registers, as AVX-512's 32 (a lane shift is one EXT, as one VALIGND there).  Chosen
// by register count, not measured: no ARM machine here.
constexpr TileSizes kTiles = {2, 12, 6, 8, 30, 12, 8, 4, 1, 4, 6};

template <class T = float>
static inline typename Types<T>::Vec vzero();
template <>
inline float32x4_t vzero<float>() {
  return vdupq_n_f32(0.0f);
}
template <>
inline float64x2_t vzero<double>() {
  return vdupq_n_f64(0.0);
}
static inline float32x4_t vset1(float v) { return vdupq_n_f32(v); }
static inline float64x2_t vset1(double v) { return vdupq_n_f64(v); }
static inline float32x4_t vload(const float* p) { return vld1q_f32(p); }
static inline float64x2_t vload(const double* p) { return vld1q_f64(p); }
static inline float32x4_t vbroadcast(const float* p) { return vld1q_dup_f32(p); }
static inline float64x2_t vbroadcast(const double* p) { return vld1q_dup_f64(p); }
static inline void vstore(float* p, float32x4_t v) { vst1q_f32(p, v); }
static inline void vstore(double* p, float64x2_t v) { vst1q_f64(p, v); }
static inline float32x4_t vadd(float32x4_t a, float32x4_t b) { return vaddq_f32(a, b); }
static inline float32x4_t vsub(float32x4_t a, float32x4_t b) { return vsubq_f32(a, b); }
static inline float32x4_t vmul(float32x4_t a, float32x4_t b) { return vmulq_f32(a, b); }
static inline float64x2_t vmul(float64x2_t a, float64x2_t b) { return vmulq_f64(a, b); }
static inline float32x4_t vdiv(float32x4_t a, float32x4_t b) { return vdivq_f32(a, b); }
static inline float32x4_t vfma(float32x4_t a, float32x4_t b, float32x4_t c) { return vfmaq_f32(c, a, b); }
static inline float64x2_t vfma(float64x2_t a, float64x2_t b, float64x2_t c) { return vfmaq_f64(c, a, b); }
// x86's rule, which the kernels rely on: the second operand when either is NaN (FMAX would
// return the NaN whichever operand it is).
static inline float32x4_t vmax(float32x4_t a, float32x4_t b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
static inline float64x2_t vmax(float64x2_t a, float64x2_t b) { return vbslq_f64(vcgtq_f64(a, b), a, b); }
static inline float32x4_t vmin(float32x4_t a, float32x4_t b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
static inline float64x2_t vmin(float64x2_t a, float64x2_t b) { return vbslq_f64(vcltq_f64(a, b), a, b); }
// 2^n for integral n in [-126, 127] (the exponent field set from the integer; 0 for -127, inf for 128).
static inline float32x4_t vpow2i(float32x4_t n) {
  return vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23));
}
static inline float32x4_t vleaky(float32x4_t v, float slope) {
  return vbslq_f32(vcltq_f32(v, vdupq_n_f32(0.0f)), vmulq_n_f32(v, slope), v);
}
static inline float64x2_t vleaky(float64x2_t v, double slope) {
  return vbslq_f64(vcltq_f64(v, vdupq_n_f64(0.0)), vmulq_n_f64(v, slope), v);
}
// Lanes [lo, hi).
template <class T = float>
static inline typename Types<T>::Mask lane_mask(int64_t lo, int64_t hi) {
  if constexpr (sizeof(T) == 4) {
    const int32x4_t lane = {0, 1, 2, 3};
    const int32x4_t l = vdupq_n_s32(int32_t(std::clamp<int64_t>(lo, 0, 4)));
    const int32x4_t h = vdupq_n_s32(int32_t(std::clamp<int64_t>(hi, 0, 4)));
    return vandq_u32(vcgeq_s32(lane, l), vcltq_s32(lane, h));
  } else {
    const int64x2_t lane = {0, 1};
    const int64x2_t l = vdupq_n_s64(std::clamp<int64_t>(lo, 0, 2)), h = vdupq_n_s64(std::clamp<int64_t>(hi, 0, 2));
    return vandq_u64(vcgeq_s64(lane, l), vcltq_s64(lane, h));
  }
}
// Masked lanes are neither read nor written: lane by lane.
template <class V, class T, class M>
static inline V vload_mask_or_(const T* p, M m, V fill) {
  constexpr int lanes = kVectorBytes / int(sizeof(T));
#pragma GCC unroll 4
  for (int i = 0; i < lanes; ++i)
    if (m[i]) fill[i] = p[i];
  return fill;
}
static inline float32x4_t vload_mask(const float* p, uint32x4_t m) { return vload_mask_or_(p, m, vdupq_n_f32(0.0f)); }
static inline float64x2_t vload_mask(const double* p, uint64x2_t m) { return vload_mask_or_(p, m, vdupq_n_f64(0.0)); }
// p's lanes in m, `fill` in the others.
static inline float32x4_t vload_mask_or(const float* p, uint32x4_t m, float32x4_t fill) {
  return vload_mask_or_(p, m, fill);
}
template <class V, class T, class M>
static inline void vstore_mask_(T* p, V v, M m) {
  constexpr int lanes = kVectorBytes / int(sizeof(T));
#pragma GCC unroll 4
  for (int i = 0; i < lanes; ++i)
    if (m[i]) p[i] = v[i];
}
static inline void vstore_mask(float* p, float32x4_t v, uint32x4_t m) { vstore_mask_(p, v, m); }
static inline void vstore_mask(double* p, float64x2_t v, uint64x2_t m) { vstore_mask_(p, v, m); }

// Max pooling's rule (PyTorch's): v replaces acc where it is larger or NaN, so a NaN wins
// and stays.
static inline float32x4_t vmax_nan_wins(float32x4_t acc, float32x4_t v) {
  const uint32x4_t take = vorrq_u32(vcgtq_f32(v, acc), vmvnq_u32(vceqq_f32(v, v)));
  return vbslq_f32(take, v, acc);
}
// Whether any lane of v is NaN.
static inline bool vany_nan(float32x4_t v) { return vmaxvq_u32(vmvnq_u32(vceqq_f32(v, v))) != 0; }
// The even and odd values of the 2 kLanes consecutive values a, b.
static inline void deinterleave2(float32x4_t a, float32x4_t b, float32x4_t& even, float32x4_t& odd) {
  even = vuzp1q_f32(a, b);
  odd = vuzp2q_f32(a, b);
}

// Lanes [n, n + kLanes) of the concatenation lo:hi (lo first), for a compile-time n in
// [0, kLanes]: a window shifted by n elements, built from two aligned vectors.
template <int N>
static inline float32x4_t shift_lanes_c(float32x4_t lo, float32x4_t hi) {
  if constexpr (N == 0) return lo;
  else if constexpr (N == 4) return hi;
  else return vextq_f32(lo, hi, N);
}

// Interleaves (a vector is one 128-bit lane), for transpose_square (simd.h).
static inline float32x4_t interleave_lo32(float32x4_t a, float32x4_t b) { return vzip1q_f32(a, b); }
static inline float32x4_t interleave_hi32(float32x4_t a, float32x4_t b) { return vzip2q_f32(a, b); }
static inline float32x4_t interleave_lo64(float32x4_t a, float32x4_t b) {
  return vreinterpretq_f32_f64(vzip1q_f64(vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(b)));
}
static inline float32x4_t interleave_hi64(float32x4_t a, float32x4_t b) {
  return vreinterpretq_f32_f64(vzip2q_f64(vreinterpretq_f64_f32(a), vreinterpretq_f64_f32(b)));
}
// The last step of transpose_square: with one 128-bit lane a vector, the 4 x 4 steps before it
// have done the whole transpose.
static inline void transpose_lanes128(float32x4_t (&)[4], float32x4_t (&)[4]) {}

}  // namespace simd
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
