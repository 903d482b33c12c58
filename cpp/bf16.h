// bfloat16 (the upper half of a float32: 1 sign, 8 exponent, 7 mantissa bits) at the API.
// The kernels compute in float32: a bfloat16 operand is widened in one pass before the
// float32 operator runs and its result rounded back in one pass after (docs/design.md,
// "Data types").  Driver code, compiled once with the default flags.
#pragma once
#include <cstdint>
#include <cstring>
#include <functional>

namespace cppconv {

// bfloat16 bits as the float32 they stand for: exact (the low 16 bits are zero).
inline float bf16_to_float(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// float32 to bfloat16, rounded to nearest, ties to even; overflow rounds to infinity as IEEE
// does.  A NaN stays a NaN (its quiet bit set, so a payload held only in the dropped bits
// cannot turn it into an infinity), keeping its sign.
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x0040u;
  return uint16_t((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

// The passes over n contiguous values, with at most max_threads threads (0: get_num_threads()).
// dst may equal src for round_to_bf16 (same element size); the others need distinct arrays.
void bf16_to_float32(const uint16_t* src, float* dst, int64_t n, int max_threads);
void float32_to_bf16(const float* src, uint16_t* dst, int64_t n, int max_threads);
// float32 values rounded to the nearest bfloat16 and kept as float32 (compute_dtype="bfloat16").
void round_to_bf16(const float* src, float* dst, int64_t n, int max_threads);

// A bfloat16 operator through its float32 twin: x's `inputs` values widened (bfloat16 bits, or
// float32 rounded to bfloat16 where x_float32), run(xf, yf) on them, and its `outputs` values
// rounded back into y as bfloat16 bits (run writes y itself where y_float32).  The copies are
// the calling thread's spares; `what` names them in an out-of-memory error.
void run_widened(const void* x, bool x_float32, int64_t inputs, void* y, bool y_float32, int64_t outputs,
                 int max_threads, const char* what, const std::function<void(const float*, float*)>& run);

}  // namespace cppconv
