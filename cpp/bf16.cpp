#include "bf16.h"

#include "conv.h"
#include "driver.h"
#include "memory.h"

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

namespace {
struct WidenedInputTag {};
struct WidenedOutputTag {};
}  // namespace

void run_widened(const void* x, bool x_float32, int64_t inputs, void* y, bool y_float32, int64_t outputs,
                 int max_threads, const char* what, const std::function<void(const float*, float*)>& run) {
  const int cap = resolve_threads(max_threads);
  check_workspace(saturating_add(saturating_mul(size_t(inputs), 4), y_float32 ? 0 : saturating_mul(size_t(outputs), 4)),
                  what);
  auto wide_x = SpareBuffer<WidenedInputTag>::take(size_t(inputs) * 4);
  auto* xf = reinterpret_cast<float*>(wide_x.get());
  if (x_float32) round_to_bf16(static_cast<const float*>(x), xf, inputs, cap);
  else bf16_to_float32(static_cast<const uint16_t*>(x), xf, inputs, cap);
  SpareBuffer<WidenedOutputTag> wide_y;
  float* yf = static_cast<float*>(y);
  if (!y_float32) {
    wide_y = SpareBuffer<WidenedOutputTag>::take(size_t(outputs) * 4);
    yf = reinterpret_cast<float*>(wide_y.get());
  }
  run(xf, yf);
  if (!y_float32) float32_to_bf16(yf, static_cast<uint16_t*>(y), outputs, cap);
}

}  // namespace cppconv
