// The convolution driver: resolves padding, picks an algorithm from the active ISA's table
// (first that accepts the problem wins, the reference last), packs weights once per plan and
// runs the kernel.  No Python here: raw pointers and sizes only.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "conv_problem.h"
#include "driver.h"
#include "kernels/kernel_table.h"

namespace cppconv {

// The most threads set_num_threads accepts: more would only cost thread start-up (and past a
// few thousand, libgomp aborts the process when it cannot create them).
constexpr int kMaxThreads = 1024;

// Kernels' thread count, in order of precedence: a call's own cap, set_num_threads, OpenMP's
// setting (OMP_NUM_THREADS, omp_set_num_threads), the CPUs; 1 in a process forked after cppconv
// was loaded (see driver.cpp).
void set_num_threads(int n);
// Forgets set_num_threads: OpenMP's setting applies again.
void reset_num_threads();
bool num_threads_is_set();
int get_num_threads();
// The process-wide float32 precision mode (PyTorch's torch.set_float32_matmul_precision):
// the mode of every call that does not name its own.  Highest unless set.
void set_float32_precision(Precision mode);
Precision get_float32_precision();

// The threads one call of this problem uses: fewer for small problems, where waking a
// thread team costs more than it saves.
int threads_for(const Conv2dProblem& p, int max_threads);

// Padded coordinate i -> source index (or -1 for a zero) for one axis of `size` with `before`
// padding, PyTorch's padding modes; and the map of every padded coordinate.
int64_t padded_source(int64_t i, int64_t size, int64_t before, PadMode mode);
std::vector<int64_t> padding_index_map(int64_t size, int64_t before, int64_t after, PadMode mode);

double conv2d_flops(const Conv2dProblem& p);

// Every conv algorithm this machine can run (all available ISAs, then the references), and
// lookup by name, so tests can check each variant, not only the one dispatch picks.
std::vector<const ConvAlgorithm*> all_conv_algorithms();
const ConvAlgorithm* find_conv_algorithm(const std::string& name);

struct ConvChoice {
  const ConvAlgorithm* algorithm;
  const char* isa;
  int threads;
  // Memory one call allocates besides its output: the algorithm's scratch and the padding
  // index maps (the bound cppconv documents and tests).
  size_t workspace_bytes;
  size_t packed_bytes;
};

// A layer's weights, prepared once.  `run` is thread-safe: packed weights are built on first
// use by an algorithm and then shared.
class Conv2dPlan {
 public:
  // weight: (K, C/groups, kh, kw) C-contiguous of `dtype`; bias: (K,) or nullptr.  A layer's
  // plan copies them (copy=true) and will reuse them over many calls; a one-shot conv2d call
  // borrows them for the plan's lifetime.  `reused` tells the dispatcher which (see
  // Conv2dProblem::weights_reused); it defaults to `copy`.
  Conv2dPlan(DType dtype, const void* weight, const void* bias, int64_t out_channels,
             int64_t group_in_channels, int64_t kernel_h, int64_t kernel_w, bool copy);
  Conv2dPlan(DType dtype, const void* weight, const void* bias, int64_t out_channels,
             int64_t group_in_channels, int64_t kernel_h, int64_t kernel_w, bool copy, bool reused);

  ConvChoice choose(const Conv2dProblem& p) const;
  // x and y in p.layout, C-contiguous.  `forced` (tests, benchmarks) runs that algorithm
  // instead of the dispatcher's choice; it must accept the problem.  `max_threads` > 0 caps
  // this call's threads instead of get_num_threads() (a per-call num_threads=, which must
  // not change the process-wide setting).
  void run(const Conv2dProblem& p, const void* x, void* y, const ConvAlgorithm* forced = nullptr,
           int max_threads = 0);

  DType dtype() const { return dtype_; }
  int64_t out_channels() const { return out_channels_; }
  int64_t group_in_channels() const { return group_in_; }
  int64_t kernel_h() const { return kernel_h_; }
  int64_t kernel_w() const { return kernel_w_; }
  bool has_bias() const { return weights_.bias() != nullptr; }

 private:
  // The problem the kernels are given (see conv.cpp; a strided 1x1 convolution then runs at
  // stride 1 on the subsampled input).
  Conv2dProblem kernel_problem(const Conv2dProblem& problem) const;
  // The choice for a kernel problem and the problem its algorithm runs (algorithm_problem in
  // conv.cpp), with at most max_threads threads; `forced` replaces the dispatcher's pick.
  ConvChoice choose_for(const Conv2dProblem& given, const Conv2dProblem& p, int max_threads,
                        const ConvAlgorithm* forced) const;

  DType dtype_;
  int64_t out_channels_, group_in_, kernel_h_, kernel_w_;
  bool weights_reused_;
  // A plan can meet several algorithms as input sizes change; each packs once.
  PlanWeights weights_;
};

}  // namespace cppconv
