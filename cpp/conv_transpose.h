// The transposed-convolution driver: picks an algorithm from the active ISA's table (first
// that accepts the problem wins, the reference last), packs weights once per plan and runs
// the kernel.  No Python here: raw pointers and sizes only.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "conv_transpose_problem.h"
#include "driver.h"
#include "kernels/kernel_table.h"

namespace cppconv {

// (I - 1) * S - before - after + D * (K - 1) + output_padding + 1, or kMaxIndexExtent where
// that does not fit the kernels' index arithmetic.
int64_t conv_transpose_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after,
                                   int64_t output_padding, int64_t dilation);

double conv_transpose_flops(const ConvTransposeProblem& p);

std::vector<const ConvTransposeAlgorithm*> all_conv_transpose_algorithms();
// Also finds kStridePhases, which all_conv_transpose_algorithms() does not list.
const ConvTransposeAlgorithm* find_conv_transpose_algorithm(const std::string& name);
// A bfloat16 plan's stride phases on the bfloat16 convolution kernels, by name (tests,
// benchmarks): forced, it runs them wherever every phase has a bfloat16 kernel, whatever the
// size (ValueError elsewhere).  No kernel of its own: ConvTransposePlan runs it.
extern const ConvTransposeAlgorithm kStridePhases;

struct ConvTransposeChoice {
  const ConvTransposeAlgorithm* algorithm;  // nullptr where a bfloat16 problem runs as phases
  const char* isa;
  int threads;
  size_t workspace_bytes;
  size_t packed_bytes;
  // A bfloat16 plan's route: its stride phases on the bfloat16 convolution kernels
  // (conv_algorithm: the kernel of the largest phase, phases: how many convolutions run), or
  // widened to float32 (algorithm then runs the widened problem).
  const ConvAlgorithm* conv_algorithm = nullptr;
  int64_t phases = 0;
  bool widened = false;
};

class ConvPlan;

// A layer's weights, prepared once; `run` is thread-safe (packed weights are built on first
// use by an algorithm and then shared).
class ConvTransposePlan {
 public:
  // weight: (C, K/groups, kd, kh, kw) C-contiguous of `dtype` (kd = 1 below 3-D, kh = 1 in
  // 1-D); bias: (bias_size,) or nullptr, where bias_size must be K (= groups * K/groups) of
  // every call, float32 for a BFloat16 plan.  With copy=false the plan borrows them for its own lifetime; shared: a
  // layer's plan, which any thread may call (see PlanWeights).
  ConvTransposePlan(DType dtype, const void* weight, const void* bias, int64_t bias_size, int64_t in_channels,
                    int64_t group_out_channels, int64_t kernel_d, int64_t kernel_h, int64_t kernel_w, bool copy,
                    bool shared);

  // max_threads > 0 caps this call's threads instead of get_num_threads() (a per-call
  // num_threads=).
  ConvTransposeChoice choose(const ConvTransposeProblem& p, int max_threads = 0) const;
  // x and y in p.layout, C-contiguous.  A BFloat16 plan runs the stride phases of p (see
  // conv_transpose.cpp) on the bfloat16 convolution kernels where they take every phase, else
  // widened to float32; `forced` (a float32 algorithm) runs it widened.  `phase_kernel` (a
  // bfloat16 convolution algorithm; tests) runs every phase with taps on that kernel, through
  // a scratch (ValueError where it does not take one).
  void run(const ConvTransposeProblem& p, const void* x, void* y, const ConvTransposeAlgorithm* forced = nullptr,
           int max_threads = 0, const ConvAlgorithm* phase_kernel = nullptr);

  DType dtype() const { return dtype_; }
  int64_t in_channels() const { return in_channels_; }
  int64_t group_out_channels() const { return group_out_; }
  int64_t kernel_d() const { return kernel_d_; }
  int64_t kernel_h() const { return kernel_h_; }
  int64_t kernel_w() const { return kernel_w_; }
  bool has_bias() const { return weights_.bias() != nullptr; }
  ~ConvTransposePlan();

  // The bfloat16 convolution plans of one (stride, dilation, groups): one per stride phase
  // residue (nullptr where the phase has no taps), made on first use.
  struct Phases;

 private:
  std::shared_ptr<const Phases> phases_for(const ConvTransposeProblem& p) const;
  // Whether every phase of p with taps and outputs runs on a bfloat16 kernel (and, unless
  // forced, p is not one of the small ones the float32 route runs faster); the kernel of
  // the phase with the most taps in `kernel`, how many convolutions run in `count`, the
  // largest phase scratch in `scratch` (each may be null).
  bool runs_phases(const ConvTransposeProblem& p, const ConvAlgorithm** kernel, int64_t* count, size_t* scratch,
                   bool forced = false) const;
  void run_phases(const ConvTransposeProblem& p, const void* x, void* y, int max_threads,
                  const ConvAlgorithm* kernel = nullptr);
  ConvTransposePlan& widened_plan() const;
  void run_widened(const ConvTransposeProblem& p, const void* x, void* y, const ConvTransposeAlgorithm* forced,
                   int max_threads);

  DType dtype_;
  int64_t in_channels_, group_out_, kernel_d_, kernel_h_, kernel_w_, bias_size_;
  bool shared_;
  PlanWeights weights_;
  mutable std::mutex bf16_mutex_;
  mutable std::vector<std::pair<std::array<int64_t, 7>, std::shared_ptr<const Phases>>> phases_;
  mutable std::unique_ptr<ConvTransposePlan> widened_;
};

}  // namespace cppconv
