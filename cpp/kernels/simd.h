// The vector vocabulary of the SIMD kernels, for float and double, for the ISA this file is
// compiled for.  The ISA's backend header (simd/f32-<isa>.h, chosen by simd/backend.h) defines
// the same API on every ISA: Vec<T> and Mask<T>, vzero, vset1, vload, vbroadcast, vstore, vadd,
// vsub, vmul, vdiv, vfma, vmax, vmin, vleaky, vpow2i, lane_mask, masked loads and stores (vload_mask,
// vstore_mask, vload_mask_or), vmax_nan_wins, vany_nan (float), deinterleave2, shift_lanes_c, the interleaves and
// last step of transpose_square, and the ISA's register blocking (kTiles, simd/tiles.h); this file
// holds what is built on top of it, the same for every ISA.  Overloads pick the element type
// from the arguments; where nothing does (vzero, lane_mask), a template argument does, float by
// default.  Per-ISA like isa_common.h: everything sits in cppconv::CPPCONV_ISA_NS, so each ISA
// build has its own copy.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/isa_common.h"
#include "kernels/simd/backend.h"

#if !CPPCONV_SIMD
#error "simd.h needs a SIMD backend (AVX2, AVX-512 or NEON)"
#endif
#include CPPCONV_SIMD_HEADER

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace simd {

template <class T>
using Vec = typename Types<T>::Vec;
template <class T>
using Mask = typename Types<T>::Mask;
template <class T>
constexpr int kLanes = kVectorBytes / int(sizeof(T));

// The first n lanes.
template <class T>
static inline Vec<T> vload_partial(const T* p, int n) {
  return vload_mask(p, lane_mask<T>(0, n));
}
// The first n lanes for n < kLanes, all of them for n >= kLanes, zeros for n <= 0 (p unread):
// a vector of a row of n valid values.
template <class T>
static inline Vec<T> vload_upto(const T* p, int n) {
  return n <= 0 ? vzero<T>() : (n >= kLanes<T> ? vload(p) : vload_partial(p, n));
}
template <class T>
static inline void vstore_partial(T* p, Vec<T> v, int n) {
  vstore_mask(p, v, lane_mask<T>(0, n));
}

// GCC's and clang's vector types have lane-wise + - * /, which the Winograd transforms and
// pooling use; MSVC's x86 types are structs without them.  (Untested here: no MSVC on the
// development machine; CI's Windows wheel build compiles it.)
#if defined(_MSC_VER) && !defined(__clang__)
static inline Vec<float> operator+(Vec<float> a, Vec<float> b) { return vadd(a, b); }
static inline Vec<float> operator-(Vec<float> a, Vec<float> b) { return vsub(a, b); }
static inline Vec<float> operator*(Vec<float> a, Vec<float> b) { return vmul(a, b); }
static inline Vec<float> operator/(Vec<float> a, Vec<float> b) { return vdiv(a, b); }
#endif

// v, held in a register from here on.  GCC folds a load into each FMA that uses it as a memory
// operand, so a vector several FMAs share is loaded once per FMA: the depthwise row-reuse blocks
// did 24 loads for the 10 input columns of a 3-wide kernel row, and were load-bound
// (docs/tuning.md, "Memory traffic").
template <class V>
static inline V in_register(V v) {
#if defined(__GNUC__)  // (GCC and clang; MSVC has no inline assembly on x64 and keeps its loads)
  __asm__("" : CPPCONV_SIMD_REGISTER(v));
#endif
  return v;
}

// The cache line at p, asked for into L1 (prefetch_l1) or L2 (prefetch_l2).
static inline void prefetch_l1(const void* p) {
#if defined(__GNUC__)
  __builtin_prefetch(p, 0, 3);
#else
  _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);  // (MSVC, x86 only here)
#endif
}
static inline void prefetch_l2(const void* p) {
#if defined(__GNUC__)
  __builtin_prefetch(p, 0, 2);
#else
  _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
#endif
}

// Runtime-indexed shift_lanes_c for loops the compiler fully unrolls (the index folds to a
// constant).  (Shifts past kLanes are the whole of hi.)
static inline Vec<float> shift_lanes(Vec<float> lo, Vec<float> hi, int n) {
  constexpr int L = kLanes<float>;
  switch (n) {
    case 0: return lo;
    case 1: return shift_lanes_c<std::min(1, L)>(lo, hi);
    case 2: return shift_lanes_c<std::min(2, L)>(lo, hi);
    case 3: return shift_lanes_c<std::min(3, L)>(lo, hi);
    case 4: return shift_lanes_c<std::min(4, L)>(lo, hi);
    case 5: return shift_lanes_c<std::min(5, L)>(lo, hi);
    case 6: return shift_lanes_c<std::min(6, L)>(lo, hi);
    case 7: return shift_lanes_c<std::min(7, L)>(lo, hi);
    case 8: return shift_lanes_c<std::min(8, L)>(lo, hi);
    case 9: return shift_lanes_c<std::min(9, L)>(lo, hi);
    case 10: return shift_lanes_c<std::min(10, L)>(lo, hi);
    case 11: return shift_lanes_c<std::min(11, L)>(lo, hi);
    case 12: return shift_lanes_c<std::min(12, L)>(lo, hi);
    case 13: return shift_lanes_c<std::min(13, L)>(lo, hi);
    case 14: return shift_lanes_c<std::min(14, L)>(lo, hi);
    case 15: return shift_lanes_c<std::min(15, L)>(lo, hi);
    default: return hi;  // n == kLanes
  }
}

// Transposes a kLanes x kLanes block of floats held as one vector per row: afterwards
// rows[j] holds what was column j.  Turns channel-planar data (NCHW rows) into
// channel-interleaved vectors (one pixel's channels) and back without scalar moves.
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
  transpose_lanes128(rows, t);
}

// float32 vectors loaded from and stored to float arrays, or bfloat16 ones (uint16_t bits)
// where the backend has vload_bf16: widened exactly, rounded to nearest even (vstore_bf16:
// AVX512-BF16 CPUs only).
static inline Vec<float> vload_f32(const float* p) { return vload(p); }
static inline Vec<float> vload_f32_mask(const float* p, Mask<float> m) { return vload_mask(p, m); }
static inline void vstore_f32(float* p, Vec<float> v) { vstore(p, v); }
static inline void vstore_f32_mask(float* p, Vec<float> v, Mask<float> m) { vstore_mask(p, v, m); }
static inline float scalar_f32(float v) { return v; }
#if CPPCONV_SIMD_BF16
static inline float scalar_f32(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
static inline Vec<float> vload_f32(const uint16_t* p) { return vload_bf16(p); }
static inline Vec<float> vload_f32_mask(const uint16_t* p, Mask<float> m) { return vload_bf16_mask(p, m); }
static inline void vstore_f32(uint16_t* p, Vec<float> v) { vstore_bf16(p, v); }
static inline void vstore_f32_mask(uint16_t* p, Vec<float> v, Mask<float> m) { vstore_bf16_mask(p, v, m); }
#endif

// Channels [0, cvalid) of `count` pixels of a set of planes `plane_stride` apart, transposed
// into pixels of kLanes values `pixel_pitch` apart at `dst`; lanes past cvalid are zero.
// `readable` values of each plane may be read from src (the caller knows what follows the
// pixels): a last partial block within them is read with whole loads, since masked loads of
// lines still in memory are slow (a 14-wide NCHW row took 40 % of a depthwise call that way).
// (Loops over the vector array are fully unrolled, with the bounds as conditions inside, so
// the block stays in registers.)
// (src float, or bfloat16 bits where the backend has vload_bf16, widened as they are loaded.)
template <class T>
static inline void planes_to_pixels(const T* src, int64_t plane_stride, int cvalid, int64_t count, float* dst,
                                    int64_t pixel_pitch = kLanes<float>, int64_t readable = 0) {
  constexpr int L = kLanes<float>;
  int64_t q = 0;
  if (cvalid == L) {
    for (; q + L <= count; q += L) {
      Vec<float> v[L];
#pragma GCC unroll 16
      for (int c = 0; c < L; ++c) v[c] = vload_f32(src + c * plane_stride + q);
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
      v[c] = c >= cvalid ? vzero<float>()
             : whole     ? vload_f32(src + c * plane_stride + q)
                         : vload_f32_mask(src + c * plane_stride + q, valid);
    transpose_square(v);
#pragma GCC unroll 16
    for (int m = 0; m < L; ++m)
      if (m < n) vstore(dst + (q + m) * pixel_pitch, v[m]);
  }
}

// The inverse: `count` pixels (pixel_stride apart, channels [0, cvalid) of each read) into
// planes [0, cvalid) of dst (float, or bfloat16 bits where the backend has vstore_bf16).
template <class T>
static inline void pixels_to_planes(const float* src, int64_t pixel_stride, int cvalid, int64_t count, T* dst,
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
      for (int c = 0; c < L; ++c) vstore_f32(dst + c * plane_stride + q, v[c]);
    }
  } else {
    // Few channels (a 3-channel image): the loads are masked to the pixel's channels, the
    // stores of whole vectors plain (a masked 256-bit store is microcoded on AMD Zen).
    const Mask<float> channels = lane_mask(0, cvalid);
    for (; q + L <= count; q += L) {
      Vec<float> v[L];
#pragma GCC unroll 16
      for (int m = 0; m < L; ++m) v[m] = vload_mask(src + (q + m) * pixel_stride, channels);
      transpose_square(v);
#pragma GCC unroll 16
      for (int c = 0; c < L; ++c)
        if (c < cvalid) vstore_f32(dst + c * plane_stride + q, v[c]);
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
      if (c < cvalid) vstore_f32_mask(dst + c * plane_stride + q, v[c], valid);
  }
}

// isa_common.h's lane operations on float vectors, for exp_f32_of and the activations on it.
struct VecF32Ops {
  static Vec<float> splat(float c) { return vset1(c); }
  static Vec<float> add(Vec<float> a, Vec<float> b) { return vadd(a, b); }
  static Vec<float> sub(Vec<float> a, Vec<float> b) { return vsub(a, b); }
  static Vec<float> mul(Vec<float> a, Vec<float> b) { return vmul(a, b); }
  static Vec<float> div(Vec<float> a, Vec<float> b) { return vdiv(a, b); }
  static Vec<float> fma(Vec<float> a, Vec<float> b, Vec<float> c) { return vfma(a, b, c); }
  static Vec<float> min(Vec<float> a, Vec<float> b) { return vmin(a, b); }
  static Vec<float> max(Vec<float> a, Vec<float> b) { return vmax(a, b); }
  static Vec<float> pow2i(Vec<float> n) { return vpow2i(n); }
};

// The activations the SIMD kernels apply in registers as they store (apply_simple_activation):
// a few vector instructions each, and for float sigmoid and SiLU on the vector exp (about as
// many instructions per vector as 16 multiply-add steps of the convolution, but on values still
// in registers).  The others (tanh; sigmoid and SiLU in double) are applied after the stores by
// activate_row.  max/min return the second operand when either is NaN, so the value goes second
// and NaN stays NaN.
template <class T>
static inline bool is_simple(Activation a) {
  if (a == Activation::Sigmoid || a == Activation::Silu) return std::is_same<T, float>::value;
  return a != Activation::Tanh;
}

// Whether a kernel applies the call's activation in registers as it stores (a simple one, and
// no residual to add first), and the activation it applies there.  Otherwise it stores the
// sums and calls finish_row on each run of them.
template <class T>
static inline bool activates_as_stored(const ConvCall& call) {
  return is_simple<T>(call.p.activation) && !call.residual;
}
template <class T>
static inline FusedActivation stored_activation(const ConvCall& call) {
  return activates_as_stored<T>(call) ? fused_activation(call.p) : FusedActivation{};
}

// n contiguous outputs at v, stored without their activation: the residual's values at the
// same place (it has y's strides) added, then the activation, in the order conv, add, activate.
template <class T>
static inline void finish_row(const ConvCall& call, T* v, int64_t n) {
  if (call.residual) {
    const T* r = static_cast<const T*>(call.residual) + (v - static_cast<T*>(call.y));
    for (int64_t i = 0; i < n; ++i) v[i] = v[i] + r[i];
  }
  activate_row(v, n, fused_activation(call.p));
}

float lane_type(Vec<float>);  // (overloads, not std::is_same on vector types, whose attributes
double lane_type(Vec<double>);  // GCC drops from template arguments with a warning)
template <class V>
static inline V apply_simple_activation(V v, FusedActivation a) {
  using T = decltype(lane_type(v));
  // hard_sigmoid (isa_common.h) by vectors: min(max(x/6 + 1/2, 0), 1).
  auto hard_sigmoid_v = [](V x) {
    return vmin(vset1(T(1)), vmax(vzero<T>(), vfma(x, vset1(T(1.0 / 6)), vset1(T(0.5)))));
  };
  switch (a.kind) {
    case Activation::Relu: return vmax(vzero<T>(), v);
    case Activation::Relu6: return vmin(vset1(T(6)), vmax(vzero<T>(), v));
    case Activation::LeakyRelu: return vleaky(v, T(a.negative_slope));
    case Activation::HardSigmoid: return hard_sigmoid_v(v);
    case Activation::HardSwish: return vmul(v, hard_sigmoid_v(v));
    case Activation::Sigmoid:
      if constexpr (std::is_same<T, float>::value) return sigmoid_f32_of(v, VecF32Ops{});
      return v;
    case Activation::Silu:
      if constexpr (std::is_same<T, float>::value) return silu_f32_of(v, VecF32Ops{});
      return v;
    default: return v;
  }
}

}  // namespace simd
}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
