#include "kernels/quantize8.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

#include "kernels/isa_common.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

// Adding and subtracting 1.5 * 2^(mantissa bits) rounds a value of magnitude below 2^22
// (float) or 2^51 (double) to an integer in the current rounding mode, and vectorises; where
// the caller cannot hold the mode at nearest-even, floor() rounds exactly instead.
template <class T>
constexpr T kRoundingShift = std::is_same_v<T, float> ? T(12582912.0) : T(6755399441055744.0);

template <bool kHeld, class T>
T round_half_even(T v) {
  if constexpr (kHeld) {
    return (v + kRoundingShift<T>) - kRoundingShift<T>;
  } else {
    const T below = std::floor(v), fraction = v - below;
    const bool odd = std::fmod(below, T(2)) != T(0);
    return below + ((fraction > T(0.5) || (fraction == T(0.5) && odd)) ? T(1) : T(0));
  }
}

// The element formulas.  x quantized with zero point z; clamped to [lo - z, hi - z] before
// rounding (the integer bounds give the same result after), so infinities saturate and the
// rounding trick stays exact.
template <bool kHeld, class Q, class T>
inline Q quantize_value(T x, T scale, int32_t z, int32_t lo, int32_t hi) {
  const T v = std::min(std::max(x / scale, T(lo - z)), T(hi - z));
  return Q(int32_t(round_half_even<kHeld>(v)) + z);
}

// (int32 x has zero point 0: x - z never overflows.)
template <class Q>
inline float dequantize_value(Q x, float scale, int32_t z) {
  return float(int32_t(x) - z) * scale;
}

// The loops take everything as locals, so they vectorise: values read through the run struct
// might alias the output.
template <bool kHeld, class T, class Q>
void quantize_loop(const T* x, int64_t n, const float* scale, const int32_t* zero, bool across, int32_t lo, int32_t hi,
                   Q* y) {
  if (across) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = quantize_value<kHeld, Q>(x[i], T(scale[i]), zero[i], lo, hi);
    return;
  }
  const T s = T(scale[0]);
  const int32_t z = zero[0];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = quantize_value<kHeld, Q>(x[i], s, z, lo, hi);
}

template <class Q>
void dequantize_loop(const Q* x, int64_t n, const float* scale, const int32_t* zero, bool across, float* y) {
  if (across) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = dequantize_value(x[i], scale[i], zero[i]);
    return;
  }
  const float s = scale[0];
  const int32_t z = zero[0];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = dequantize_value(x[i], s, z);
}

template <bool kHeld, class Q, class Y>
void quantized_add_loop(const Q* a, float a_scale, int32_t a_zero, const Q* b, float b_scale, int32_t b_zero, int64_t n,
                        float floor, float y_scale, int32_t y_zero, int32_t lo, int32_t hi, Y* y) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float sum = dequantize_value(a[i], a_scale, a_zero) + dequantize_value(b[i], b_scale, b_zero);
    y[i] = quantize_value<kHeld, Y>(std::max(sum, floor), y_scale, y_zero, lo, hi);
  }
}

template <bool kHeld, class T>
void quantize_as(const QuantizeRun& r) {
  const T* x = static_cast<const T*>(r.x);
  if (r.y_kind == Int8Kind::S8)
    quantize_loop<kHeld>(x, r.n, r.scale, r.zero, r.across, r.lo, r.hi, static_cast<int8_t*>(r.y));
  else quantize_loop<kHeld>(x, r.n, r.scale, r.zero, r.across, r.lo, r.hi, static_cast<uint8_t*>(r.y));
}

template <bool kHeld, class Q, class Y>
void quantized_add_as(const QuantizedAddRun& r) {
  quantized_add_loop<kHeld>(static_cast<const Q*>(r.a), r.a_scale, r.a_zero, static_cast<const Q*>(r.b), r.b_scale,
                            r.b_zero, r.n, r.floor, r.y_scale, r.y_zero, r.lo, r.hi, static_cast<Y*>(r.y));
}

template <bool kHeld, class Q>
void quantized_add_into(const QuantizedAddRun& r) {
  if (r.y_kind == Int8Kind::S8) quantized_add_as<kHeld, Q, int8_t>(r);
  else quantized_add_as<kHeld, Q, uint8_t>(r);
}

template <bool kHeld>
void quantized_add_held(const QuantizedAddRun& r) {
  if (r.in_kind == Int8Kind::S8) quantized_add_into<kHeld, int8_t>(r);
  else quantized_add_into<kHeld, uint8_t>(r);
}

}  // namespace

void quantize_values(const QuantizeRun& run) {
  if (run.rounding_held) {
    if (run.x_double) quantize_as<true, double>(run);
    else quantize_as<true, float>(run);
  } else {
    if (run.x_double) quantize_as<false, double>(run);
    else quantize_as<false, float>(run);
  }
}

void dequantize_values(const DequantizeRun& run) {
  switch (run.x_kind) {
    case Int8Kind::U8:
      dequantize_loop(static_cast<const uint8_t*>(run.x), run.n, run.scale, run.zero, run.across, run.y);
      break;
    case Int8Kind::S8:
      dequantize_loop(static_cast<const int8_t*>(run.x), run.n, run.scale, run.zero, run.across, run.y);
      break;
    case Int8Kind::S32:
      dequantize_loop(static_cast<const int32_t*>(run.x), run.n, run.scale, run.zero, run.across, run.y);
      break;
  }
}

void quantized_add_values(const QuantizedAddRun& run) {
  if (run.rounding_held) quantized_add_held<true>(run);
  else quantized_add_held<false>(run);
}

namespace {
#if defined(__AVX512BW__) && (defined(__GNUC__) || defined(__clang__))
// 64 bytes a step: the index's low 7 bits pick from two 128-byte halves of the table (vpermi2b
// each), its top bit between them.  AVX512-VBMI (Zen 4, Ice Lake and later) is checked at run
// time; without it the scalar loop runs (a byte a cycle: vpshufb over the table's 16 rows was
// no faster).
__attribute__((target("avx512vbmi"))) int64_t lookup_vbmi(const uint8_t* x, const uint8_t* table, int64_t n,
                                                          uint8_t* y) {
  const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
  const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i v = _mm512_loadu_si512(x + i);
    const __m512i low = _mm512_permutex2var_epi8(t0, v, t1), high = _mm512_permutex2var_epi8(t2, v, t3);
    _mm512_storeu_si512(y + i, _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), low, high));
  }
  return i;
}
#endif

}  // namespace

void lookup_bytes_values(const uint8_t* x, const uint8_t* table, int64_t n, uint8_t* y) {
  int64_t i = 0;
#if defined(__AVX512BW__) && (defined(__GNUC__) || defined(__clang__))
  static const bool vbmi = __builtin_cpu_supports("avx512vbmi");
  if (vbmi) i = lookup_vbmi(x, table, n, y);
#endif
  for (; i < n; ++i) y[i] = table[x[i]];
}

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
