// The float32 multiply-add limit of this ISA's vectors, measured: the number that benchmarks put
// GFLOP/s beside ("80 % of peak" means of this).  Every thread runs independent chains of
// vector multiply-adds held in registers (enough of them to cover the FMA latency on two
// pipes), with nothing else in the loop.  Compiled once per ISA like the kernels: the vector
// width, and whether a*b+c is one FMA, follow the ISA's flags.
#include <chrono>
#include <vector>

#include "kernels/fma_peak.h"
#include "kernels/isa_common.h"

namespace cppconv {
namespace CPPCONV_ISA_NS {
namespace {

using PeakVec = VecOf<float>::type;
constexpr int kLanes = CPPCONV_VEC_BYTES / int(sizeof(float));
constexpr int kChains = 12;  // 2 pipes x 4 cycles of latency, with room
constexpr long kSteps = 1 << 16;

// kSteps multiply-adds on each chain; the result depends on every one of them, so none can be
// dropped, and the chains are independent, so they overlap.
float run_chains(float seed) {
  PeakVec acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = PeakVec{} + seed * float(i + 1);
  const PeakVec a = PeakVec{} + (1.0f - seed * 1e-7f), b = PeakVec{} + seed * 1e-3f;
  for (long s = 0; s < kSteps; ++s) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * a + b;
  }
  float sum = 0;
  for (int i = 0; i < kChains; ++i)
    for (int l = 0; l < kLanes; ++l) sum += acc[i][l];
  return sum;
}

}  // namespace

double fma_peak_gflops(int threads, double seconds) {
  using Clock = std::chrono::steady_clock;
  const double flops_per_round = double(threads) * kSteps * kChains * kLanes * 2;
  std::vector<float> results(static_cast<size_t>(threads));
  volatile float sink = 0;  // keeps the chains' results alive
  double best = 0;
  const Clock::time_point stop =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  do {
    const Clock::time_point t0 = Clock::now();
    parallel_region(threads, [&] { results[size_t(thread_id())] = run_chains(1.0f + float(thread_id())); });
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    for (float r : results) sink = sink + r;
    if (s > 0 && flops_per_round / s > best) best = flops_per_round / s;
  } while (Clock::now() < stop);
  return best / 1e9;
}

}  // namespace CPPCONV_ISA_NS
}  // namespace cppconv
