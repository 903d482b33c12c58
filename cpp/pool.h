// The pooling driver: resolves each output's window once into per-axis maps, picks an
// algorithm from the active ISA's table (first that accepts the problem wins, the reference
// last) and runs it.  No Python here: raw pointers and sizes only.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernel_table.h"
#include "pool_problem.h"

namespace cppconv {

// PyTorch's pooled length along one axis: floor (or ceil) of (I + before + after - D (K - 1)
// - 1) / S, plus 1; in ceil_mode the last window must start inside the input or the left
// padding (and may reach past the right padding).  Below 1 when no window fits.  The Python
// layer asks this function too, so the rule lives here only.
int64_t pool_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after,
                         int64_t dilation, bool ceil_mode);

// Window maps of one axis (see PoolWindows); begin, count and size each hold `out` entries.
struct PoolAxisMaps {
  std::vector<int64_t> begin, count, size;
};
PoolAxisMaps pool_axis_maps(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t dilation,
                            int64_t pad_before, int64_t pad_after, bool adaptive, bool count_include_pad);

std::vector<const PoolAlgorithm*> all_pool_algorithms();
const PoolAlgorithm* find_pool_algorithm(const std::string& name);

struct PoolChoice {
  const PoolAlgorithm* algorithm;
  const char* isa;
  int threads;
};
// max_threads: the call's own cap on threads, 0 for get_num_threads().
PoolChoice choose_pool(const Pool2dProblem& p, int max_threads = 0);

// x, y and indices (max only, or nullptr) C-contiguous in p.layout.  `forced` (tests,
// benchmarks) runs that algorithm instead of the dispatcher's choice; it must accept p.
void pool2d(const Pool2dProblem& p, const void* x, void* y, int64_t* indices, const PoolAlgorithm* forced = nullptr,
            int max_threads = 0);

}  // namespace cppconv
