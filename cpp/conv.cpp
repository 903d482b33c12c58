#include "conv.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "dispatch.h"
#include "memory.h"
#include "reference.h"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__linux__)
#include <sched.h>
#endif

namespace cppconv {
namespace {

// set_num_threads' count; 0 until it is called (and again after reset_num_threads).
std::atomic<int>& num_threads_setting() {
  static std::atomic<int> n{0};
  return n;
}

// Without set_num_threads, OpenMP's own setting, as NumPy's OpenMP BLAS and PyTorch do: its
// nthreads-var is OMP_NUM_THREADS at start, then what omp_set_num_threads (threadpoolctl's
// "openmp" API) sets, by default the CPUs this process may use; per calling thread in libgomp.
// (Without OpenMP, the CPUs this process may use.)
int default_num_threads() {
#if defined(_OPENMP)
  return std::clamp(omp_get_max_threads(), 1, kMaxThreads);
#else
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1, int(std::thread::hardware_concurrency()));
#endif
}

// The kernels read the padded input through index maps; the reference works each source row
// and column out as it goes (padded_source), so that a call it takes, whose windows skip most
// of the padding (see tiles_in_proportion), costs its work and not the padded extent.
bool reads_index_maps(const ConvAlgorithm& a) { return &a != &conv2d_reference_f32 && &a != &conv2d_reference_f64; }

// Memory that grows with the padded extent, not with the data: the padding index maps
// (8 bytes per padded row and column) and the column plans the engine kernels derive per call
// (at most 16 more bytes per padded column).  Counted as workspace, so that an absurd padding
// is refused with MemoryError instead of swapping or being killed.
size_t index_workspace_bytes(const Conv2dProblem& p) {
  const size_t rows = size_t(p.in_h + p.pad_top + p.pad_bottom), cols = size_t(p.in_w + p.pad_left + p.pad_right);
  return saturating_add(saturating_mul(rows, 8), saturating_mul(cols, 24));
}

// Kernels assume a non-empty output and reduction; the reference loops also handle an empty
// reduction (C = 0: the output is the activated bias).
bool needs_reference(const Conv2dProblem& p) { return p.batch == 0 || p.out_channels == 0 || p.in_channels == 0; }

// A strided 1x1 convolution without padding reads only every stride-th row and column: it is
// the stride-1 convolution of that subsampled input.  Subsampled once, the input is a dense
// plane the kernels read in place (a tile would copy every stride phase and row to use one).
bool subsamples_input(const Conv2dProblem& p) {
  return p.kernel_h == 1 && p.kernel_w == 1 && (p.stride_h > 1 || p.stride_w > 1) && p.pad_top == 0 &&
         p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0 && p.in_channels > 0;
}

Conv2dProblem on_subsampled_input(const Conv2dProblem& p) {
  Conv2dProblem q = p;
  q.in_h = p.out_h;
  q.in_w = p.out_w;
  q.stride_h = q.stride_w = q.dilation_h = q.dilation_w = 1;
  return q;
}

size_t subsampled_bytes(const Conv2dProblem& p) {
  return saturating_mul(size_t(p.batch * p.in_channels), saturating_mul(size_t(p.out_h * p.out_w), dtype_size(p.dtype)));
}

template <class T>
void subsample_input(const Conv2dProblem& p, const T* x, T* dst, int threads) {
  const int64_t C = p.in_channels, H = p.in_h, W = p.in_w, OH = p.out_h, OW = p.out_w;
  const int64_t sh = p.stride_h, sw = p.stride_w;
  if (p.layout == Layout::NCHW) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t row = 0; row < p.batch * C * OH; ++row) {
      const int64_t plane = row / OH, oh = row % OH;
      const T* src = x + (plane * H + oh * sh) * W;
      T* out = dst + row * OW;
      for (int64_t ow = 0; ow < OW; ++ow) out[ow] = src[ow * sw];
    }
  } else {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t row = 0; row < p.batch * OH; ++row) {
      const int64_t n = row / OH, oh = row % OH;
      const T* src = x + ((n * H + oh * sh) * W) * C;
      T* out = dst + row * OW * C;
      for (int64_t ow = 0; ow < OW; ++ow) std::memcpy(out + ow * C, src + ow * sw * C, sizeof(T) * size_t(C));
    }
  }
}
struct SubsampledInputTag {};

// The problem the algorithm runs for the problem the kernels are given (see kernel_problem).
Conv2dProblem algorithm_problem(const Conv2dProblem& given) {
  return subsamples_input(given) ? on_subsampled_input(given) : given;
}

// Memory one call of `a` takes besides its output: the algorithm's scratch, the padding index
// maps it reads and, for a subsampled input, its copy.
size_t call_workspace_bytes(const ConvAlgorithm& a, const Conv2dProblem& given, const Conv2dProblem& p, int threads) {
  const size_t bytes = saturating_add(a.workspace_bytes(p, threads), reads_index_maps(a) ? index_workspace_bytes(p) : 0);
  return subsamples_input(given) ? saturating_add(bytes, subsampled_bytes(given)) : bytes;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("num_threads must be at least 1");
  if (n > kMaxThreads)
    throw std::invalid_argument("num_threads must be at most " + std::to_string(kMaxThreads) + ", got " +
                                std::to_string(n));
  num_threads_setting().store(n);
}

void reset_num_threads() { num_threads_setting().store(0); }

bool num_threads_is_set() { return num_threads_setting().load() != 0; }

int get_num_threads() {
  if (in_forked_child()) return 1;
  const int n = num_threads_setting().load();
  return n != 0 ? n : default_num_threads();
}

namespace {
std::atomic<int> float32_precision_setting{int(Precision::Highest)};
}  // namespace

void set_float32_precision(Precision mode) { float32_precision_setting.store(int(mode)); }

Precision get_float32_precision() { return Precision(float32_precision_setting.load()); }

double conv2d_flops(const Conv2dProblem& p) {
  return 2.0 * double(p.batch) * double(p.out_channels) * double(p.out_h) * double(p.out_w) *
         double(p.in_channels / p.groups) * double(p.kernel_h) * double(p.kernel_w);
}

// Work in flop-equivalents: the arithmetic plus the data each call moves, which is what bounds
// the layers with little arithmetic per value (depthwise, small planes), as it does a pool.
int threads_for(const Conv2dProblem& p, int max_threads) {
  const double values = double(p.batch) * double(p.in_channels * p.in_h * p.in_w + p.out_channels * p.out_h * p.out_w);
  return threads_for_work(conv2d_flops(p) + 32.0 * values, max_threads);
}

int64_t padded_source(int64_t i, int64_t size, int64_t before, PadMode mode) {
  int64_t s = i - before;
  if (s >= 0 && s < size) return s;
  switch (mode) {
    case PadMode::Zeros: return -1;
    case PadMode::Replicate: return std::min(std::max<int64_t>(s, 0), size - 1);
    case PadMode::Circular: return ((s % size) + size) % size;
    case PadMode::Reflect: {
      if (size == 1) return 0;
      const int64_t period = 2 * (size - 1);
      s = ((s % period) + period) % period;
      return s >= size ? period - s : s;
    }
  }
  return -1;
}

std::vector<int64_t> padding_index_map(int64_t size, int64_t before, int64_t after, PadMode mode) {
  std::vector<int64_t> map(size_t(size + before + after));
  for (int64_t i = 0; i < size + before + after; ++i) map[size_t(i)] = padded_source(i, size, before, mode);
  return map;
}

namespace {
const AlgorithmFamily<ConvAlgorithm> kConvFamily = {&KernelTable::conv, &KernelTable::conv_count,
                                                    &conv2d_reference_f32, &conv2d_reference_f64};
}  // namespace

std::vector<const ConvAlgorithm*> all_conv_algorithms() { return kConvFamily.all(); }

const ConvAlgorithm* find_conv_algorithm(const std::string& name) { return kConvFamily.find(name); }

Conv2dPlan::Conv2dPlan(DType dtype, const void* weight, const void* bias, int64_t out_channels,
                       int64_t group_in_channels, int64_t kernel_h, int64_t kernel_w, bool copy)
    : Conv2dPlan(dtype, weight, bias, out_channels, group_in_channels, kernel_h, kernel_w, copy, copy) {}

Conv2dPlan::Conv2dPlan(DType dtype, const void* weight, const void* bias, int64_t out_channels,
                       int64_t group_in_channels, int64_t kernel_h, int64_t kernel_w, bool copy, bool reused)
    : dtype_(dtype), out_channels_(out_channels), group_in_(group_in_channels), kernel_h_(kernel_h),
      kernel_w_(kernel_w), weights_reused_(reused),
      weights_(dtype, weight, size_t(out_channels * group_in_channels * kernel_h * kernel_w), bias,
               size_t(out_channels), copy) {}

Conv2dProblem Conv2dPlan::kernel_problem(const Conv2dProblem& problem) const {
  Conv2dProblem p = problem;
  p.weights_reused = weights_reused_;
  // Along an axis with one output the stride only has to exceed the room the window has to
  // move (padded size - span), but kernels that lay tiles out by stride phase spend time and
  // memory in proportion to it: a stride of 2^62 hung them.  Clamp it to the smallest stride
  // with the same single output (not to 1: kernels rely on out = (room) / stride + 1).
  const int64_t room_h = p.in_h + p.pad_top + p.pad_bottom - p.dilation_h * (p.kernel_h - 1) - 1;
  const int64_t room_w = p.in_w + p.pad_left + p.pad_right - p.dilation_w * (p.kernel_w - 1) - 1;
  if (p.out_h == 1) p.stride_h = std::min(p.stride_h, room_h + 1);
  if (p.out_w == 1) p.stride_w = std::min(p.stride_w, room_w + 1);
  return p;
}

ConvChoice Conv2dPlan::choose(const Conv2dProblem& problem) const {
  const Conv2dProblem given = kernel_problem(problem);
  return choose_for(given, algorithm_problem(given), get_num_threads(), nullptr);
}

ConvChoice Conv2dPlan::choose_for(const Conv2dProblem& given, const Conv2dProblem& p, int max_threads,
                                  const ConvAlgorithm* forced) const {
  const KernelTable& table = active_table();
  const int threads = threads_for(p, max_threads);
  const ConvAlgorithm* chosen = forced                ? forced
                                : needs_reference(p) ? kConvFamily.reference(p.dtype)
                                                     : kConvFamily.choose(table, p);
  // The scratch depends on the thread count (one buffer per thread) as well as the algorithm.
  return {chosen, table.isa_name, threads, call_workspace_bytes(*chosen, given, p, threads), chosen->packed_bytes(p)};
}

void Conv2dPlan::run(const Conv2dProblem& problem, const void* x, void* y, const ConvAlgorithm* forced,
                      int max_threads) {
  const Conv2dProblem given = kernel_problem(problem);
  const Conv2dProblem p = algorithm_problem(given);
  if (p.dtype != dtype_ || p.out_channels != out_channels_ || p.in_channels / p.groups != group_in_ ||
      p.kernel_h != kernel_h_ || p.kernel_w != kernel_w_)
    throw std::invalid_argument("conv2d problem does not match the plan's weights");
  if (p.batch == 0 || p.out_channels == 0) return;
  if (forced) require_accepts(*forced, p);
  // A per-call cap obeys the same limits as the process-wide setting (one thread in a forked
  // child, at most kMaxThreads).
  const int cap = max_threads <= 0          ? get_num_threads()
                  : in_forked_child()      ? 1
                                           : std::min(max_threads, kMaxThreads);
  const ConvChoice choice = choose_for(given, p, cap, forced);
  check_workspace(choice.workspace_bytes, "conv2d workspace (kernel scratch and padding index maps)");
  SpareBuffer<SubsampledInputTag> subsampled;
  if (subsamples_input(given)) {
    subsampled = SpareBuffer<SubsampledInputTag>::take(subsampled_bytes(given));
    if (p.dtype == DType::Float32)
      subsample_input(given, static_cast<const float*>(x), reinterpret_cast<float*>(subsampled.get()), choice.threads);
    else
      subsample_input(given, static_cast<const double*>(x), reinterpret_cast<double*>(subsampled.get()), choice.threads);
    x = subsampled.get();
  }
  std::vector<int64_t> rows, cols;
  if (reads_index_maps(*choice.algorithm)) {
    rows = padding_index_map(p.in_h, p.pad_top, p.pad_bottom, p.pad_mode);
    cols = padding_index_map(p.in_w, p.pad_left, p.pad_right, p.pad_mode);
  }
  ConvCall call;
  call.p = p;
  call.x = x;
  call.weight = weights_.weight();
  call.packed = weights_.packed(*choice.algorithm, p, choice.threads);
  call.bias = weights_.bias();
  call.y = y;
  call.x_stride = contiguous_strides(p.layout, p.in_channels, p.in_h, p.in_w);
  call.y_stride = contiguous_strides(p.layout, p.out_channels, p.out_h, p.out_w);
  call.row_src = rows.empty() ? nullptr : rows.data();
  call.col_src = cols.empty() ? nullptr : cols.data();
  call.num_threads = choice.threads;
  choice.algorithm->run(call);
}

}  // namespace cppconv
