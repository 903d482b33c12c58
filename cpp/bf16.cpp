#include "bf16.h"

#include "conv.h"
#include "driver.h"

namespace cppconv {
namespace {

// Element-wise passes are memory bound: threads by the values they move (kFlopsPerValueMoved).
// Each thread takes one contiguous stretch.
template <class Convert>
void elementwise(int64_t n, int max_threads, Convert convert) {
  const int threads = threads_for_work(kFlopsPerValueMoved * double(n), resolve_threads(max_threads));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int t = 0; t < threads; ++t) {
    const int64_t begin = n * t / threads, end = n * (t + 1) / threads;
    convert(begin, end);
  }
}

}  // namespace

void bf16_to_float32(const uint16_t* src, float* dst, int64_t n, int max_threads) {
  elementwise(n, max_threads, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) dst[i] = bf16_to_float(src[i]);
  });
}

void float32_to_bf16(const float* src, uint16_t* dst, int64_t n, int max_threads) {
  elementwise(n, max_threads, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) dst[i] = float_to_bf16(src[i]);
  });
}

void round_to_bf16(const float* src, float* dst, int64_t n, int max_threads) {
  elementwise(n, max_threads, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) dst[i] = bf16_to_float(float_to_bf16(src[i]));
  });
}

}  // namespace cppconv
