#include "conv.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>

#include "bf16.h"
#include "dispatch.h"
#include "elementwise.h"
#include "memory.h"
#include "reference.h"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__linux__)
#include <sched.h>
#endif

namespace cppconv {

// A depth axis to lower (see Lowering), unless an algorithm takes it (ConvAlgorithm::takes_depth).
bool has_depth(const ConvProblem& p) {
  return p.in_d != 1 || p.kernel_d != 1 || p.out_d != 1 || p.pad_front != 0 || p.pad_back != 0;
}

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
bool reads_index_maps(const ConvAlgorithm& a) {
  return &a != &conv_reference_f32 && &a != &conv_reference_f64 && &a != &conv_reference_bf16;
}

// Memory that grows with the padded extent, not with the data: the padding index maps
// (8 bytes per padded row and column) and the column plans the engine kernels derive per call
// (at most 16 more bytes per padded column).  Counted as workspace, so that an absurd padding
// is refused with MemoryError instead of swapping or being killed.
size_t index_workspace_bytes(const ConvProblem& p) {
  const size_t rows = size_t(p.in_h + p.pad_top + p.pad_bottom), cols = size_t(p.in_w + p.pad_left + p.pad_right);
  return saturating_add(saturating_mul(rows, 8), saturating_mul(cols, 24));
}

// Kernels assume a non-empty output and reduction; the reference loops also handle an empty
// reduction (C = 0: the output is the activated bias).
bool needs_reference(const ConvProblem& p) { return p.batch == 0 || p.out_channels == 0 || p.in_channels == 0; }

// A strided 1x1 convolution without padding reads only every stride-th row and column: it is
// the stride-1 convolution of that subsampled input.  Subsampled once, the input is a dense
// plane the kernels read in place (a tile would copy every stride phase and row to use one).
// (The bfloat16 kernel reads strided input through its tile, and the copy knows no bfloat16.)
bool subsamples_input(const ConvProblem& p) {
  return p.dtype != DType::BFloat16 && !has_depth(p) && p.kernel_h == 1 && p.kernel_w == 1 &&
         (p.stride_h > 1 || p.stride_w > 1) && p.pad_top == 0 && p.pad_bottom == 0 && p.pad_left == 0 &&
         p.pad_right == 0 && p.in_channels > 0;
}

ConvProblem on_subsampled_input(const ConvProblem& p) {
  ConvProblem q = p;
  q.in_h = p.out_h;
  q.in_w = p.out_w;
  q.stride_h = q.stride_w = q.dilation_h = q.dilation_w = 1;
  return q;
}

// Bytes of `runs` runs of `length` values of p's dtype: the lowerings' copies.  Saturating, so
// that a size past the address space is refused (MemoryError), not wrapped.
size_t element_bytes(const ConvProblem& p, int64_t runs, int64_t length) {
  return saturating_mul(saturating_mul(size_t(runs), size_t(length)), dtype_size(p.dtype));
}

size_t subsampled_bytes(const ConvProblem& p) { return element_bytes(p, p.batch * p.in_channels, p.out_h * p.out_w); }

template <class T>
void subsample_input(const ConvProblem& p, const T* x, T* dst, int threads) {
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
ConvProblem algorithm_problem(const ConvProblem& given) {
  return subsamples_input(given) ? on_subsampled_input(given) : given;
}

// Memory one call of `a` takes besides its output: the algorithm's scratch, the padding index
// maps it reads and, for a subsampled input, its copy.
size_t call_workspace_bytes(const ConvAlgorithm& a, const ConvProblem& given, const ConvProblem& p, int threads) {
  const size_t bytes =
      saturating_add(a.workspace_bytes(p, threads), reads_index_maps(a) ? index_workspace_bytes(p) : 0);
  return subsamples_input(given) ? saturating_add(bytes, subsampled_bytes(given)) : bytes;
}

// y = act(y + residual) over the outputs of a 4-D problem p whose y has strides ys and the
// residual sits `offset` bytes after y: the residual of an algorithm without adds_residual,
// added after its stores (the same order of operations: the stored sum, the add, the activation).
// A bfloat16 plan takes no residual (its uint16_t values are bits, not numbers to add).
template <class T>
void add_residual_after(const ConvProblem& p, T* y, const Strides4& ys, std::ptrdiff_t offset, int threads) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    throw std::invalid_argument("a bfloat16 plan takes no residual");  // (ConvPlan::run refuses it first)
  } else {
    const T* r = reinterpret_cast<const T*>(reinterpret_cast<const unsigned char*>(y) + offset);
    const int64_t rows = p.batch * p.out_channels * p.out_h;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t n = row / (p.out_channels * p.out_h), k = row / p.out_h % p.out_channels, oh = row % p.out_h;
      const int64_t at = n * ys.n + k * ys.c + oh * ys.h;
      for (int64_t ow = 0; ow < p.out_w; ++ow) {
        const int64_t i = at + ow * ys.w;
        y[i] = activate_reference(T(y[i] + r[i]), p.activation, p.negative_slope);
      }
    }
  }
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

namespace {
thread_local int calling_thread_cap = 0;  // set_thread_cap's, per OS thread
}  // namespace

int set_thread_cap(int n) {
  if (n < 0 || n > kMaxThreads)
    throw std::invalid_argument("a thread cap must be between 0 (none) and " + std::to_string(kMaxThreads) + ", got " +
                                std::to_string(n));
  return std::exchange(calling_thread_cap, n);
}

int thread_cap() { return calling_thread_cap; }

int get_num_threads() { return resolve_threads(0); }

// A call's threads: its num_threads= (max_threads > 0) under the same limits as the process-wide
// setting (one thread in a forked child, at most kMaxThreads), else that setting; within the
// calling thread's cap.
int resolve_threads(int max_threads) {
  if (in_forked_child()) return 1;
  int n = max_threads > 0 ? std::min(max_threads, kMaxThreads) : num_threads_setting().load();
  if (n == 0) n = default_num_threads();
  return calling_thread_cap > 0 ? std::min(n, calling_thread_cap) : n;
}

namespace {
std::atomic<int> float32_precision_setting{int(Precision::Highest)};
}  // namespace

void set_float32_precision(Precision mode) { float32_precision_setting.store(int(mode)); }

Precision get_float32_precision() { return Precision(float32_precision_setting.load()); }

double conv_flops(const ConvProblem& p) {
  return 2.0 * double(p.batch) * double(p.out_channels) * double(p.out_d) * double(p.out_h) * double(p.out_w) *
         double(p.in_channels / p.groups) * double(p.kernel_d) * double(p.kernel_h) * double(p.kernel_w);
}

int64_t conv_output_size(int64_t size, int64_t kernel, int64_t stride, int64_t dilation, int64_t before,
                         int64_t after) {
  const int64_t room = size + before + after - dilation * (kernel - 1) - 1;
  return room < 0 ? 0 : room / stride + 1;
}

// Work in flop-equivalents: the arithmetic plus the data each call moves, which is what bounds
// the layers with little arithmetic per value (depthwise, small planes), as it does a pool.  The
// weights count too: a fully connected layer at batch 1 streams them all for one pixel, and two
// threads each keep half of them in their own L2.
int threads_for(const ConvProblem& p, int max_threads) {
  const double weights =
      double(p.out_channels) * double(p.in_channels / p.groups) * double(p.kernel_d * p.kernel_h * p.kernel_w);
  const double values = weights + double(p.batch) * (double(p.in_channels) * double(p.in_d * p.in_h * p.in_w) +
                                                     double(p.out_channels) * double(p.out_d * p.out_h * p.out_w));
  return threads_for_work(conv_flops(p) + kFlopsPerValueMoved * values, max_threads);
}

// Threads for a lowering's copies and transposes around the kernels' problem q: q's own team.
// Taken by their bytes alone they would often get one thread, and the team idling or resizing
// around them cost more than they do (channels-last ResNeXt 128@28 g32, 2 threads: 453 us with
// one-thread transposes, 300 us with the team; docs/tuning.md).
int lowering_threads(const ConvProblem& q, int max_threads) { return threads_for(algorithm_problem(q), max_threads); }

int64_t padded_source(int64_t i, int64_t size, int64_t before, PadMode mode) {
  int64_t s = i - before;
  if (s >= 0 && s < size) return s;
  switch (mode) {
    case PadMode::Zeros: return -1;
    case PadMode::Replicate: return std::min(std::max<int64_t>(s, 0), size - 1);
    case PadMode::Circular: return ((s % size) + size) % size;
    case PadMode::Symmetric: {
      const int64_t period = 2 * size;
      s = ((s % period) + period) % period;
      return s >= size ? period - 1 - s : s;
    }
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
const AlgorithmFamily<ConvAlgorithm> kConvFamily = {&KernelTable::conv, &KernelTable::conv_count, &conv_reference_f32,
                                                    &conv_reference_f64, &conv_reference_bf16};
}  // namespace

std::vector<const ConvAlgorithm*> all_conv_algorithms() { return kConvFamily.all(); }

const ConvAlgorithm* find_conv_algorithm(const std::string& name) { return kConvFamily.find(name); }

ConvPlan::ConvPlan(DType dtype, const void* weight, const void* bias, int64_t out_channels, int64_t group_in_channels,
                   int64_t kernel_d, int64_t kernel_h, int64_t kernel_w, bool copy, bool reused, bool keeps_source)
    : dtype_(dtype), out_channels_(out_channels), group_in_(group_in_channels), kernel_d_(kernel_d),
      kernel_h_(kernel_h), kernel_w_(kernel_w), weights_reused_(reused),
      weights_(dtype, weight, size_t(out_channels * group_in_channels * kernel_d * kernel_h * kernel_w), bias,
               size_t(out_channels), copy, reused, keeps_source) {}

size_t ConvPlan::held_bytes() const {
  ForkWaitsSection section;  // (the locks below: every holder of them is inside one)
  size_t bytes = weights_.held_bytes();
  {
    std::lock_guard<std::mutex> lock(widened_mutex_);
    if (widened_) bytes += widened_->held_bytes();
  }
  std::lock_guard<std::mutex> lock(permuted_mutex_);
  if (interleaved_) bytes += interleaved_->held_bytes();
  if (gathered_) bytes += gathered_->held_bytes();
  return bytes;
}

const char* lowering_name(Lowering l) {
  switch (l) {
    case Lowering::None: return "none";
    case Lowering::Flatten: return "flatten";
    case Lowering::IntoBatch: return "depth_into_batch";
    case Lowering::Gather: return "depth_gather";
    case Lowering::DepthTaps: return "depth_taps";
    case Lowering::Interleave: return "depth_interleave";
    case Lowering::FoldRows: return "fold_rows";
    case Lowering::ChannelsFirst: return "channels_first";
    case Lowering::ChannelsLast: return "channels_last";
    case Lowering::TapsAsChannels: return "taps_as_channels";
    case Lowering::DilationRows: return "dilation_rows";
  }
  return "?";
}

namespace {

bool is_reference(const ConvAlgorithm* a) { return a && !reads_index_maps(*a); }

// One group per channel, one output channel per group: the depthwise kernels' problems.
bool is_depthwise(const ConvProblem& p) { return p.groups == p.in_channels && p.groups == p.out_channels; }

// f(T{}) for the element type T of `dtype` (float, double, or uint16_t for bfloat16's bits):
// the lowerings' copies take typed pointers, the plan holds bytes.  The copies and transposes
// only move values, so bfloat16 moves its 2-byte words as they are.
template <class F>
decltype(auto) with_element_type(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: return f(float{});
    case DType::BFloat16: return f(uint16_t{});
    default: return f(double{});
  }
}

// A 1-D problem as the row lowerings (FoldRows, TapsAsChannels, DilationRows) take it: one input
// row, one output row that reads it (no row padding: a stride can make the one output row a
// padding row's), a window wider than one tap.
bool one_long_row(const ConvProblem& p) {
  return p.in_h == 1 && p.out_h == 1 && p.kernel_h == 1 && p.pad_top == 0 && p.pad_bottom == 0 && p.kernel_w > 1;
}

// FoldRows: output row length, a multiple of the microkernels' pixel blocks.  1x1 stride-1
// problems run flat already, and depthwise kernels go channel by channel, so neither folds.
constexpr int64_t kFoldOutputs = 96;
bool folds_rows(const ConvProblem& p) { return one_long_row(p) && p.out_w >= 2 * kFoldOutputs && !is_depthwise(p); }

// ChannelsFirst: the channels-last kernels vectorise over a group's output channels, so with
// fewer than a vector's worth per group most lanes idle (ResNeXt's 4 per group ran at a quarter
// of the channels-first speed); the channels-first kernels vectorise over pixels instead.
// Depthwise problems have their own channels-last kernels.  So do bfloat16 ones (pixelvec_bf16
// reads either layout; those it declines run widened, and the float32 plan lowers them).
constexpr int64_t kChannelsFirstGroupsBelow = 8;
bool runs_channels_first(const ConvProblem& p) {
  return p.layout == Layout::NHWC && p.groups > 1 && !is_depthwise(p) && p.dtype != DType::BFloat16 &&
         p.out_channels / p.groups < kChannelsFirstGroupsBelow;
}

// TapsAsChannels: a long row with at most this many (input channel, tap) pairs copies each
// tap's strided window as a channel of a 1x1 problem (wav2vec2's 1->512 k10 s5 first layer):
// the copy is smaller than the output, and the 1x1 kernels then run as a GEMM over whole rows
// (docs/tuning.md, "1-D and 3-D lowerings").
constexpr int64_t kTapChannelsMax = 16;
bool takes_taps_as_channels(const ConvProblem& p) {
  return one_long_row(p) && p.out_w >= 2 * kFoldOutputs && p.in_channels * p.kernel_w <= kTapChannelsMax;
}

// DilationRows: at stride 1 a tap dilated by d moves the window by one row of d values, so a
// long row whose length and zero padding are multiples of d is a (k, 1) kernel on a plane of
// rows of d values, read in place (TCN's dilated layers).  Rows narrower than 8 would waste
// the microkernels' pixel blocks.
constexpr int64_t kDilationRowsMin = 8;
bool takes_dilation_rows(const ConvProblem& p) {
  const int64_t d = p.dilation_w;
  return one_long_row(p) && p.stride_w == 1 && d >= kDilationRowsMin && p.in_w % d == 0 && p.pad_left % d == 0 &&
         p.pad_right % d == 0 && (p.pad_mode == PadMode::Zeros || p.pad_left + p.pad_right == 0) && !is_depthwise(p);
}

Lowering lowering_of(const ConvProblem& p);

// p in the other layout (the ChannelsFirst and ChannelsLast lowerings).
ConvProblem channels_first(const ConvProblem& p) {
  ConvProblem q = p;
  q.layout = Layout::NCHW;
  return q;
}
ConvProblem channels_last(const ConvProblem& p) {
  ConvProblem q = p;
  q.layout = Layout::NHWC;
  return q;
}

// Whether an algorithm of the active table takes p with its depth axis (ConvAlgorithm::takes_depth).
bool kernel_takes_depth(const ConvProblem& p) {
  const KernelTable& table = active_table();
  for (int i = 0; i < table.conv_count; ++i) {
    const ConvAlgorithm& a = *table.conv[i];
    if (a.takes_depth && a.dtype == p.dtype && has_cpu_features(a.features) && meets_precision(a, p) && a.accepts(p))
      return true;
  }
  return false;
}

// Whether p's lowering has its kernels write y itself (through strides), so that they can add
// a residual of y's layout as they store; the others write a copy that is transposed into y.
bool lowering_writes_y(const ConvProblem& p) {
  const Lowering l = lowering_of(p);
  return l != Lowering::ChannelsFirst && l != Lowering::ChannelsLast && l != Lowering::FoldRows;
}

Lowering lowering_of(const ConvProblem& p) {
  if (!has_depth(p)) {
    if (takes_dilation_rows(p)) return Lowering::DilationRows;
    if (takes_taps_as_channels(p)) return Lowering::TapsAsChannels;
    if (folds_rows(p)) return Lowering::FoldRows;
    return runs_channels_first(p) ? Lowering::ChannelsFirst : Lowering::None;
  }
  if (p.kernel_h == 1 && p.kernel_w == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 && p.pad_bottom == 0 &&
      p.pad_left == 0 && p.pad_right == 0)
    return Lowering::Flatten;
  if (p.layout == Layout::NHWC && p.kernel_d == 1 && p.stride_d == 1 && p.pad_front == 0 && p.pad_back == 0)
    return Lowering::IntoBatch;
  // A depthwise kernel that takes the depth taps itself reads x in place: no copy, one region.
  // Channels-first, the same kernel between transposes beat the interleaved rows (docs/tuning.md).
  if (is_depthwise(p) && kernel_takes_depth(p)) return Lowering::None;
  if (is_depthwise(p) && p.layout == Layout::NCHW && kernel_takes_depth(channels_last(p)))
    return Lowering::ChannelsLast;
  // Gathered as channels, a depthwise problem would have kd channels per group, which the
  // depthwise kernels do not take; as interleaved rows it stays depthwise.
  if (p.groups == p.in_channels && p.dilation_h == 1) return Lowering::Interleave;
  return Lowering::Gather;
}

// p without its depth axis (depth 1, no depth padding); the caller sets what replaces it.
ConvProblem without_depth(const ConvProblem& p) {
  ConvProblem q = p;
  q.in_d = q.kernel_d = q.out_d = q.stride_d = q.dilation_d = 1;
  q.pad_front = q.pad_back = 0;
  return q;
}

// Flatten: each (h, w) plane is one row of a 2-D problem whose rows are the slices.
ConvProblem flattened(const ConvProblem& p) {
  ConvProblem q = without_depth(p);
  q.in_h = p.in_d;
  q.in_w = p.in_h * p.in_w;
  q.kernel_h = p.kernel_d;
  q.kernel_w = 1;
  q.out_h = p.out_d;
  q.out_w = p.out_h * p.out_w;
  q.stride_h = p.stride_d;
  q.dilation_h = p.dilation_d;
  q.pad_top = p.pad_front;
  q.pad_bottom = p.pad_back;
  return q;
}

// Flatten's rows are whole (h, w) planes.  Where a row's input is far beyond L2 (R(2+1)D's
// temporal (3,1,1) layer: 3136 pixels x 144 channels, 1.8 MB) each row's tile streamed from
// memory once per block of output channels; such rows run as column segments, the segments of
// an image the batch of one 2-D problem read in place through strides, and the columns left
// over as a second problem (docs/tuning.md, "Flatten in column segments").
constexpr int64_t kFlattenRowBytes = 256 << 10;
// A segment's padded column of all rows is what one tile holds: segments as wide as the direct
// kernel's tile budget allows keep a whole segment in one row block (widths from 28 to 196
// pixels ran alike on R(2+1)D's layer), at least a few microkernel blocks wide.
constexpr int64_t kFlattenTileBytes = 384 << 10;
constexpr int64_t kFlattenMinWidth = 32;
struct FlattenSegments {
  int64_t width, count, tail;  // count segments of `width` columns, then one of `tail` (may be 0)
};
FlattenSegments flatten_segments(const ConvProblem& q) {
  const int64_t elem = int64_t(dtype_size(q.dtype)), group_in = q.in_channels / q.groups;
  if (q.kernel_h == 1 || q.groups == q.in_channels || group_in * q.in_w * elem <= kFlattenRowBytes)
    return {q.in_w, 1, 0};
  const int64_t column_bytes = group_in * (q.in_h + q.pad_top + q.pad_bottom) * elem;
  const int64_t target = std::max(kFlattenMinWidth, kFlattenTileBytes / column_bytes);
  if (target >= q.in_w) return {q.in_w, 1, 0};
  // A width that divides the row leaves no tail problem (56 x 56 = 49 segments of 64).
  for (int64_t width = target; width >= std::max(kFlattenMinWidth, target / 2); --width)
    if (q.in_w % width == 0) return {width, q.in_w / width, 0};
  const int64_t count = (q.in_w + target - 1) / target, width = (q.in_w + count - 1) / count;
  return {width, q.in_w / width, q.in_w % width};
}
// One image's segments [first, first + count) of `width` columns as a batch.
ConvProblem flattened_segments(const ConvProblem& q, int64_t count, int64_t width) {
  ConvProblem s = q;
  s.batch = count;
  s.in_w = s.out_w = width;
  return s;
}
ConvProblem first_flattened_segments(const ConvProblem& p) {
  const ConvProblem q = flattened(p);
  const FlattenSegments f = flatten_segments(q);
  return f.count == 1 && f.tail == 0 ? q : flattened_segments(q, f.count, f.width);
}

// TapsAsChannels: channel c * kw + j of the 1x1 problem is tap j's window of channel c, so the
// weight (K, C/g, kw) is already its (K, C/g * kw, 1, 1) weight.
ConvProblem taps_as_channels(const ConvProblem& p) {
  ConvProblem q = p;
  q.in_channels = p.in_channels * p.kernel_w;
  q.in_w = p.out_w;
  q.kernel_w = q.stride_w = q.dilation_w = 1;
  q.pad_left = q.pad_right = 0;
  q.pad_mode = PadMode::Zeros;
  return q;
}

size_t tap_channels_bytes(const ConvProblem& p) {
  return element_bytes(p, p.batch * p.in_channels * p.kernel_w, p.out_w);
}

// The windows of taps_as_channels(p): [n][c * kw + j][t] or [n][t][c * kw + j], x at padded
// column t * stride + j * dilation.
template <class T>
void copy_tap_windows(const ConvProblem& p, const T* x, T* dst, int threads) {
  const int64_t C = p.in_channels, kw = p.kernel_w, L = p.in_w, OW = p.out_w, CK = C * kw;
  if (p.layout == Layout::NCHW) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t row = 0; row < p.batch * CK; ++row) {
      const int64_t n = row / CK, c = (row % CK) / kw, j = row % kw;
      const T* in = x + (n * C + c) * L;
      T* out = dst + row * OW;
      for (int64_t t = 0; t < OW; ++t) {
        const int64_t src = padded_source(t * p.stride_w + j * p.dilation_w, L, p.pad_left, p.pad_mode);
        out[t] = src < 0 ? T(0) : in[src];
      }
    }
  } else {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t pos = 0; pos < p.batch * OW; ++pos) {
      const int64_t n = pos / OW, t = pos % OW;
      T* out = dst + pos * CK;
      for (int64_t j = 0; j < kw; ++j) {
        const int64_t src = padded_source(t * p.stride_w + j * p.dilation_w, L, p.pad_left, p.pad_mode);
        for (int64_t c = 0; c < C; ++c) out[c * kw + j] = src < 0 ? T(0) : x[(n * L + src) * C + c];
      }
    }
  }
}
struct TapChannelsTag {};

// DilationRows: the row of length L as L / d rows of d values, the taps one row apart.
ConvProblem dilation_rows(const ConvProblem& p) {
  const int64_t d = p.dilation_w;
  ConvProblem q = p;
  q.in_h = p.in_w / d;
  q.in_w = q.out_w = d;
  q.out_h = p.out_w / d;
  q.kernel_h = p.kernel_w;
  q.kernel_w = 1;
  q.dilation_h = q.dilation_w = q.stride_h = q.stride_w = 1;
  q.pad_top = p.pad_left / d;
  q.pad_bottom = p.pad_right / d;
  q.pad_left = q.pad_right = 0;
  return q;
}

ConvProblem depth_into_batch(const ConvProblem& p) {
  ConvProblem q = without_depth(p);
  q.batch = p.batch * p.in_d;
  return q;
}

// Gather: a 2-D problem of `slices` output slices, each reading its kd input slices as
// C * kd channels.  Channels-first (and read in place, gathered_in_place), channel c * kd + a
// holds slice a of channel c: the weight (K, C/g, kd, kh, kw) is then already the
// (K, C/g * kd, kh, kw) weight of that problem.  A channels-last copy holds slice a of group
// g's channel c at g * kd * C/g + a * C/g + c, so that each pixel's copy is kd runs of a group's
// channels (not C * kd values kd apart); its weight is (K, kd, C/g, kh, kw) (gathered_weights).
ConvProblem gathered(const ConvProblem& p, int64_t slices) {
  ConvProblem q = without_depth(p);
  q.batch = slices;
  q.in_channels = p.in_channels * p.kernel_d;
  return q;
}

// The gathered problem of all output slices (channels-last) or of one image's (channels-first,
// whose y strides are uniform only there), its channels read from x's depth slices in place by
// an algorithm that reads depth taps (ConvCall::depth_src).
ConvProblem gathered_in_place(const ConvProblem& p) {
  ConvProblem q = gathered(p, p.layout == Layout::NHWC ? p.batch * p.out_d : p.out_d);
  q.depth_taps = p.kernel_d;
  return q;
}
bool gathers_in_place(const ConvProblem& p, const ConvAlgorithm& a) {
  const ConvProblem q = gathered_in_place(p);
  // (A subsampled input would be a copy of the contiguous x: 1x1 strided kernels keep the gather.)
  return a.reads_depth_taps && !subsamples_input(q) && a.accepts(q);
}

// depth_src of gathered_in_place(p) for the output slices [b0, b0 + count): the element offset
// of each one's tap-a depth slice (its channel 0, row 0, column 0) in x, or -1 for padding.
std::vector<int64_t> depth_slice_offsets(const ConvProblem& p, int64_t b0, int64_t count) {
  const int64_t kd = p.kernel_d, slice = p.in_h * p.in_w;
  std::vector<int64_t> offsets(size_t(count * kd));
  for (int64_t b = b0; b < b0 + count; ++b) {
    const int64_t n = b / p.out_d, od = b % p.out_d;
    for (int64_t a = 0; a < kd; ++a) {
      const int64_t d = padded_source(od * p.stride_d + a * p.dilation_d, p.in_d, p.pad_front, p.pad_mode);
      // NDHWC: slice d of image n is its (n * D + d)-th plane of HW x C; NCDHW: channel 0's d-th plane.
      const int64_t at = p.layout == Layout::NHWC ? (n * p.in_d + d) * slice * p.in_channels
                                                  : (n * p.in_channels * p.in_d + d) * slice;
      offsets[size_t((b - b0) * kd + a)] = d < 0 ? -1 : at;
    }
  }
  return offsets;
}

// Interleave: a 2-D problem of `slices` output slices whose input rows are the kd input slices'
// rows interleaved, row h * kd + a holding row h of slice a, with the height padding already
// copied in: kernel row i * kd + a is then tap (a, i), a kernel of kh * kd rows at stride
// sh * kd (dilation_h 1 only).  Its weight is (K, C/g, kh * kd, kw), taps in that order.
ConvProblem interleaved(const ConvProblem& p, int64_t slices) {
  ConvProblem q = without_depth(p);
  q.batch = slices;
  q.in_h = (p.in_h + p.pad_top + p.pad_bottom) * p.kernel_d;
  q.pad_top = q.pad_bottom = 0;
  q.kernel_h = p.kernel_h * p.kernel_d;
  q.stride_h = p.stride_h * p.kernel_d;
  return q;
}

// FoldRows: `outputs` outputs from the padded row's column `start` on, as `rows` rows that
// read the padded row in place, kFoldOutputs * stride_w columns apart (a row's window reaches
// into the next row's: they overlap where the kernel is wider than the stride).
// A folded problem runs channels-last (the row copied channels-last, the output transposed
// back), where the channels-vector kernels read a window position's channels as one run;
// channels-first with few input channels per group, where the pixel-vector kernels read each
// row once for every output channel, and with many and no padding where the channel-vector
// block has 12 or more pixels (AVX-512): the rows then read x in place, and that kernel's own
// tiles put a block's broadcasts on one or two lines, and its row buffers change the layout in
// cache instead of two passes over memory (docs/tuning.md, "Folded rows").
constexpr int64_t kFoldChannelsFirstBelow = 8, kFoldInPlaceFirstFrom = 96, kFoldInPlaceFirstPixels = 12;
Layout fold_layout(const ConvProblem& p) {
  if (p.layout == Layout::NHWC) return Layout::NHWC;
  const int64_t group_in = p.in_channels / p.groups;
  if (group_in < kFoldChannelsFirstBelow) return Layout::NCHW;
  const bool in_place = p.pad_left == 0 && p.pad_right == 0 && group_in >= kFoldInPlaceFirstFrom &&
                        active_table().channelvec_pixels >= kFoldInPlaceFirstPixels;
  return in_place ? Layout::NCHW : Layout::NHWC;
}

ConvProblem folded(const ConvProblem& p, int64_t rows, int64_t outputs) {
  ConvProblem q = p;
  q.layout = fold_layout(p);
  q.in_h = q.out_h = rows;
  q.out_w = outputs;
  q.in_w = (outputs - 1) * p.stride_w + p.dilation_w * (p.kernel_w - 1) + 1;
  q.pad_left = q.pad_right = 0;
  q.pad_mode = PadMode::Zeros;
  return q;
}

// The padded columns the folded rows read: [0, fold_columns) of the padded row.
int64_t fold_columns(const ConvProblem& p) { return (p.out_w - 1) * p.stride_w + p.dilation_w * (p.kernel_w - 1) + 1; }

// Channels-last, the channel-vector microkernels broadcast from a block of consecutive output
// pixels, stride_w * pitch values apart.  Where that distance is a multiple of an L1 way
// (4 KiB: 512 channels at stride 2), every pixel's line of a channel step falls in one L1 set,
// more lines than its ways hold, and each broadcast misses L1 (docs/tuning.md, "Folded rows").
// The copy's channel pitch is padded to the first one that spreads those lines over distinct sets.
constexpr int64_t kL1WayBytes = 4096, kLineBytes = 64;
constexpr int64_t kSpreadPixels = 16;  // at least the microkernels' pixel blocks
bool spreads_over_sets(int64_t pixel_bytes) {
  constexpr int64_t kSets = kL1WayBytes / kLineBytes;
  int64_t line_of_set[kSets];
  std::fill(line_of_set, line_of_set + kSets, -1);
  for (int64_t m = 0; m < kSpreadPixels; ++m) {  // (pixels that share a line share its set)
    const int64_t line = m * pixel_bytes / kLineBytes;
    int64_t& held = line_of_set[line % kSets];
    if (held >= 0 && held != line) return false;
    held = line;
  }
  return true;
}
int64_t fold_channel_pitch(const ConvProblem& p) {
  const int64_t C = p.in_channels, step = p.stride_w * int64_t(dtype_size(p.dtype));
  for (int64_t pitch = C; pitch < C + kL1WayBytes / kLineBytes; ++pitch)
    if (spreads_over_sets(pitch * step)) return pitch;
  return C;
}

// Whether the folded rows read x itself: x in the fold's layout, no padding to resolve, and
// (channels-last) a pixel pitch that needs no padding.
bool folds_in_place(const ConvProblem& p) {
  if (p.layout != fold_layout(p) || p.pad_left != 0 || p.pad_right != 0) return false;
  return p.layout == Layout::NCHW || fold_channel_pitch(p) == p.in_channels;
}

// x's strides as the folded rows read it: the copy's (see fold_row) or x's own.
Strides4 fold_strides(const ConvProblem& p) {
  const int64_t step = kFoldOutputs * p.stride_w;  // columns from one folded row to the next
  const int64_t C = p.in_channels;
  if (folds_in_place(p))
    return p.layout == Layout::NCHW ? Strides4{C * p.in_w, p.in_w, step, 1} : Strides4{p.in_w * C, 1, step * C, C};
  const int64_t cols = fold_columns(p);
  if (fold_layout(p) == Layout::NCHW) return Strides4{C * cols, cols, step, 1};
  const int64_t pitch = fold_channel_pitch(p);
  return Strides4{cols * pitch, 1, step * pitch, pitch};
}

// The padded row in fold_layout(p), padding resolved, columns [0, fold_columns): channels-first
// [n][c][column], channels-last [n][column][channel pitch] (the values past C are not read).
template <class T>
void fold_row(const ConvProblem& p, const T* x, T* dst, int threads) {
  const int64_t C = p.in_channels, L = p.in_w, cols = fold_columns(p);
  const Strides4 to = fold_strides(p);
  const bool first = fold_layout(p) == Layout::NCHW;
  // Units of kBlock columns (of all channels): a channels-first x read kBlock columns of each
  // channel at a time, the block's copy written whole while its lines stay in L1.
  constexpr int64_t kBlock = 32;
  const int64_t blocks = (cols + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t unit = 0; unit < p.batch * blocks; ++unit) {
    const int64_t n = unit / blocks, col0 = unit % blocks * kBlock, col1 = std::min(cols, col0 + kBlock);
    T* out = dst + n * to.n;
    if (first) {  // [c][column] from [c][L]: rows of the channel, padding resolved
      for (int64_t c = 0; c < C; ++c)
        for (int64_t t = col0; t < col1; ++t) {
          const int64_t src = padded_source(t, L, p.pad_left, p.pad_mode);
          out[c * to.c + t] = src < 0 ? T(0) : x[(n * C + c) * L + src];
        }
      continue;
    }
    if (p.layout == Layout::NHWC) {  // a column's channels are one run
      for (int64_t t = col0; t < col1; ++t) {
        const int64_t src = padded_source(t, L, p.pad_left, p.pad_mode);
        if (src < 0) std::memset(out + t * to.w, 0, sizeof(T) * size_t(C));
        else std::memcpy(out + t * to.w, x + (n * L + src) * C, sizeof(T) * size_t(C));
      }
      continue;
    }
    // Channels-first x to channels-last columns: the columns that read x (not padding)
    // are a block of x's rows transposed; the padding columns one at a time.
    const int64_t lo = std::clamp(p.pad_left, col0, col1), hi = std::clamp(p.pad_left + L, lo, col1);
    transpose_block(x + n * C * L + (lo - p.pad_left), C, hi - lo, L, out + lo * to.w, to.w);
    for (int64_t t = col0; t < col1; ++t) {
      if (t >= lo && t < hi) continue;
      const int64_t src = padded_source(t, L, p.pad_left, p.pad_mode);
      for (int64_t c = 0; c < C; ++c) out[t * to.w + c] = src < 0 ? T(0) : x[(n * C + c) * L + src];
    }
  }
}
struct FoldedInputTag {};

// Output slices per gathered call: their copied input within about kGatherBytes (Gather) or
// kInterleaveBytes (Interleave), at least one.  Each chunk costs a copy region and a kernel
// region: on a loaded host a fork/join can cost a timeslice, and 16 MiB gathered chunks won
// there (1.1-1.6x) and tied or won 2 % on a quiet one; interleaved depthwise chunks of 16 MiB
// ran channels-last x3d 0.61x on a quiet host, out of L3 (docs/tuning.md).  Channels-first
// output slices of one image only, whose y strides are then uniform (run_gathered).
constexpr size_t kGatherBytes = size_t(16) << 20;
constexpr size_t kInterleaveBytes = size_t(4) << 20;
size_t slice_bytes(const ConvProblem& p) {  // one output slice's gathered or interleaved input
  const int64_t rows = lowering_of(p) == Lowering::Interleave ? p.in_h + p.pad_top + p.pad_bottom : p.in_h;
  return element_bytes(p, p.in_channels * p.kernel_d, rows * p.in_w);
}
int64_t gather_chunk(const ConvProblem& p) {
  const size_t per_slice = slice_bytes(p);
  const size_t budget = lowering_of(p) == Lowering::Interleave ? kInterleaveBytes : kGatherBytes;
  const int64_t fit = int64_t(std::max<size_t>(1, budget / std::max<size_t>(1, per_slice)));
  return std::min(fit, p.layout == Layout::NHWC ? p.batch * p.out_d : p.out_d);
}

// The input slices of output slices [b0, b0 + count) (b = n * out_d + od), gathered as in
// gathered(): [slice][C * kd][h][w] (channels-first) or [slice][h][w][group][kd][C/g].
template <class T>
void gather_slices(const ConvProblem& p, const T* x, int64_t b0, int64_t count, T* dst, int threads) {
  const int64_t C = p.in_channels, kd = p.kernel_d, HW = p.in_h * p.in_w, D = p.in_d;
  if (p.layout == Layout::NCHW) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t unit = 0; unit < count * C * kd; ++unit) {
      const int64_t a = unit % kd, c = (unit / kd) % C, b = b0 + unit / (kd * C);
      const int64_t n = b / p.out_d, od = b % p.out_d;
      const int64_t src = padded_source(od * p.stride_d + a * p.dilation_d, D, p.pad_front, p.pad_mode);
      T* out = dst + unit * HW;
      if (src < 0) std::memset(out, 0, sizeof(T) * size_t(HW));
      else std::memcpy(out, x + ((n * C + c) * D + src) * HW, sizeof(T) * size_t(HW));
    }
  } else {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t row = 0; row < count * p.in_h; ++row) {
      const int64_t b = b0 + row / p.in_h, h = row % p.in_h;
      const int64_t n = b / p.out_d, od = b % p.out_d;
      const int64_t group_in = C / p.groups;
      T* out = dst + row * p.in_w * C * kd;
      for (int64_t a = 0; a < kd; ++a) {
        const int64_t src = padded_source(od * p.stride_d + a * p.dilation_d, D, p.pad_front, p.pad_mode);
        const T* in = src < 0 ? nullptr : x + ((n * D + src) * p.in_h + h) * p.in_w * C;
        for (int64_t w = 0; w < p.in_w; ++w)
          for (int64_t g = 0; g < p.groups; ++g) {
            T* to = out + w * C * kd + (g * kd + a) * group_in;
            if (in) std::memcpy(to, in + w * C + g * group_in, sizeof(T) * size_t(group_in));
            else std::memset(to, 0, sizeof(T) * size_t(group_in));
          }
      }
    }
  }
}
struct GatheredInputTag {};

// The padded row's copy (0 when the rows read x in place).
size_t fold_input_bytes(const ConvProblem& p) {
  if (folds_in_place(p)) return 0;
  const int64_t pitch = fold_layout(p) == Layout::NCHW ? p.in_channels : fold_channel_pitch(p);
  return element_bytes(p, p.batch * pitch, fold_columns(p));
}

// The channels-last output a folded channels-first problem is computed into (0 when none).
size_t fold_output_bytes(const ConvProblem& p) {
  if (fold_layout(p) == p.layout) return 0;
  return element_bytes(p, p.batch * p.out_channels, p.out_w);
}

size_t fold_bytes(const ConvProblem& p) { return saturating_add(fold_input_bytes(p), fold_output_bytes(p)); }

struct FoldedOutputTag {};

size_t gather_bytes(const ConvProblem& p, int64_t slices) { return saturating_mul(size_t(slices), slice_bytes(p)); }

// The input slices of output slices [b0, b0 + count) as interleaved() reads them:
// [slice][c][row][w] (channels-first) or [slice][row][w][c], rows (h + pad) * kd + a.
template <class T>
void interleave_slices(const ConvProblem& p, const T* x, int64_t b0, int64_t count, T* dst, int threads) {
  const int64_t C = p.in_channels, kd = p.kernel_d, D = p.in_d, H = p.in_h, W = p.in_w;
  const int64_t rows = (H + p.pad_top + p.pad_bottom) * kd;
  const bool first = p.layout == Layout::NCHW;
  const int64_t units = count * (first ? C : 1) * rows;
  const int64_t run = first ? W : W * C;  // elements of one row
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t row = unit % rows, plane = unit / rows;  // plane: (slice, c) or slice
    const int64_t b = b0 + (first ? plane / C : plane), c = first ? plane % C : 0;
    const int64_t n = b / p.out_d, od = b % p.out_d, a = row % kd;
    const int64_t d = padded_source(od * p.stride_d + a * p.dilation_d, D, p.pad_front, p.pad_mode);
    const int64_t h = padded_source(row / kd, H, p.pad_top, p.pad_mode);
    T* out = dst + unit * run;
    if (d < 0 || h < 0) {
      std::memset(out, 0, sizeof(T) * size_t(run));
    } else if (first) {
      std::memcpy(out, x + (((n * C + c) * D + d) * H + h) * W, sizeof(T) * size_t(W));
    } else {
      std::memcpy(out, x + ((n * D + d) * H + h) * W * C, sizeof(T) * size_t(W * C));
    }
  }
}

// The copies of x and y in the other layout that a ChannelsFirst or ChannelsLast problem runs on.
size_t layout_copy_input_bytes(const ConvProblem& p) {
  return element_bytes(p, p.batch * p.in_channels, p.in_d * p.in_h * p.in_w);
}
size_t layout_copy_output_bytes(const ConvProblem& p) {
  return element_bytes(p, p.batch * p.out_channels, p.out_d * p.out_h * p.out_w);
}
size_t layout_copy_bytes(const ConvProblem& p) {
  return saturating_add(layout_copy_input_bytes(p), layout_copy_output_bytes(p));
}
struct LayoutCopyInputTag {};
struct LayoutCopyOutputTag {};

// The depth-1 problem a deep problem's kernels run (for a gathered one, its first chunk's).
ConvProblem planar_form(const ConvProblem& p) {
  switch (lowering_of(p)) {
    case Lowering::None: return p;
    case Lowering::Flatten: return first_flattened_segments(p);
    case Lowering::IntoBatch: return depth_into_batch(p);
    case Lowering::Gather:
    case Lowering::DepthTaps: return gathered(p, gather_chunk(p));
    case Lowering::Interleave: return interleaved(p, gather_chunk(p));
    case Lowering::FoldRows: return folded(p, p.out_w / kFoldOutputs, kFoldOutputs);
    case Lowering::ChannelsFirst: return channels_first(p);
    case Lowering::ChannelsLast: return channels_last(p);
    case Lowering::TapsAsChannels: return taps_as_channels(p);
    case Lowering::DilationRows: return dilation_rows(p);
  }
  return p;
}

// Contiguous strides of p's x and y, depth included.
void set_contiguous_strides(const ConvProblem& p, ConvCall& call) {
  call.x_stride = contiguous_strides(p.layout, p.in_channels, p.in_d * p.in_h, p.in_w);
  call.y_stride = contiguous_strides(p.layout, p.out_channels, p.out_d * p.out_h, p.out_w);
  call.x_depth_stride = p.in_h * call.x_stride.h;
  call.y_depth_stride = p.out_h * call.y_stride.h;
}

// Live taps along one axis: tap i reads the input for some output o < out where
// 0 <= o * stride + i * dilation - before < size, i.e. before - (out - 1) * stride <= i * dilation
// < size + before.  [first, last] holds them, widened where that keeps the padding left on
// either side from going negative; false where it would be empty.
bool live_axis(int64_t size, int64_t kernel, int64_t stride, int64_t dilation, int64_t before, int64_t after,
               int64_t out, int64_t& first, int64_t& last) {
  const int64_t reach = before - (out - 1) * stride;
  first = reach > 0 ? std::min((reach + dilation - 1) / dilation, before / dilation) : 0;
  last = std::max(std::min(kernel - 1, (size + before - 1) / dilation), kernel - 1 - after / dilation);
  return first <= last;
}

}  // namespace

std::optional<TapWindow> live_tap_window(const ConvProblem& p) {
  TapWindow w{};
  if (p.pad_mode != PadMode::Zeros ||
      !live_axis(p.in_d, p.kernel_d, p.stride_d, p.dilation_d, p.pad_front, p.pad_back, p.out_d, w[0], w[1]) ||
      !live_axis(p.in_h, p.kernel_h, p.stride_h, p.dilation_h, p.pad_top, p.pad_bottom, p.out_h, w[2], w[3]) ||
      !live_axis(p.in_w, p.kernel_w, p.stride_w, p.dilation_w, p.pad_left, p.pad_right, p.out_w, w[4], w[5]))
    return std::nullopt;
  if (w == TapWindow{0, p.kernel_d - 1, 0, p.kernel_h - 1, 0, p.kernel_w - 1}) return std::nullopt;
  return w;
}

ConvProblem on_live_taps(const ConvProblem& p, const TapWindow& w) {
  ConvProblem q = p;
  const auto trim = [](int64_t& kernel, int64_t& before, int64_t& after, int64_t dilation, int64_t first,
                       int64_t last) {
    before -= first * dilation;
    after -= (kernel - 1 - last) * dilation;
    kernel = last - first + 1;
  };
  trim(q.kernel_d, q.pad_front, q.pad_back, q.dilation_d, w[0], w[1]);
  trim(q.kernel_h, q.pad_top, q.pad_bottom, q.dilation_h, w[2], w[3]);
  trim(q.kernel_w, q.pad_left, q.pad_right, q.dilation_w, w[4], w[5]);
  return q;
}

std::optional<ConvPlan::LiveTapsRun> ConvPlan::live_taps_run(const ConvProblem& given) const {
  const auto only_reference = [&](const ConvProblem& p) {
    const std::vector<const ConvAlgorithm*> found = kernel_candidates(p);
    return found.size() == 1 && is_reference(found.front());
  };
  return live_taps_.run_for(given, only_reference, [&](const ConvProblem& live, const TapWindow& window) {
    std::shared_ptr<ConvPlan> plan;
    const std::shared_ptr<const void> source = weights_.source();
    if (!source) {  // a plan of shapes alone (explain): what finite weights would run
      plan = std::make_shared<ConvPlan>(dtype_, nullptr, nullptr, out_channels_, group_in_, live.kernel_d,
                                        live.kernel_h, live.kernel_w, /*copy=*/false, weights_reused_);
    } else {
      const int64_t filters = out_channels_ * group_in_;
      const auto kept = with_element_type(dtype_, [&](auto zero) {
        return live_tap_weights<decltype(zero)>(source.get(), filters, kernel_d_, kernel_h_, kernel_w_, window);
      });
      if (kept)
        plan = std::make_shared<ConvPlan>(dtype_, kept->data(), weights_.bias(), out_channels_, group_in_,
                                          live.kernel_d, live.kernel_h, live.kernel_w, /*copy=*/true, weights_reused_);
    }
    return plan;
  });
}

ConvProblem kernel_geometry(const ConvProblem& problem) {
  ConvProblem p = problem;
  // Along an axis with one output the stride only has to exceed the room the window has to
  // move (padded size - span), but kernels that lay tiles out by stride phase spend time and
  // memory in proportion to it: a stride of 2^62 hung them.  Clamp it to the smallest stride
  // with the same single output (not to 1: kernels rely on out = (room) / stride + 1).
  const auto clamp = [](int64_t& stride, int64_t out, int64_t size, int64_t before, int64_t after, int64_t dilation,
                        int64_t kernel) {
    if (out == 1) stride = std::min(stride, size + before + after - dilation * (kernel - 1));
  };
  clamp(p.stride_d, p.out_d, p.in_d, p.pad_front, p.pad_back, p.dilation_d, p.kernel_d);
  clamp(p.stride_h, p.out_h, p.in_h, p.pad_top, p.pad_bottom, p.dilation_h, p.kernel_h);
  clamp(p.stride_w, p.out_w, p.in_w, p.pad_left, p.pad_right, p.dilation_w, p.kernel_w);
  // A one-tap axis has no dilation to take (kernels with fast paths for dilation 1 then apply).
  if (p.kernel_d == 1) p.dilation_d = 1;
  if (p.kernel_h == 1) p.dilation_h = 1;
  if (p.kernel_w == 1) p.dilation_w = 1;
  // One input and one output channel, or one pixel in and out: both layouts are the same
  // memory.  Run the layout whose kernels vectorise over the axis that has the extent (the
  // channels-last kernels over channels, the channels-first ones over pixels).
  if (p.in_channels == 1 && p.out_channels == 1) p.layout = Layout::NCHW;
  else if (p.in_d * p.in_h * p.in_w == 1 && p.out_d * p.out_h * p.out_w == 1) p.layout = Layout::NHWC;
  return p;
}

ConvProblem ConvPlan::kernel_problem(const ConvProblem& problem) const {
  ConvProblem p = kernel_geometry(problem);
  p.weights_reused = weights_reused_;
  return p;
}

namespace {
// A BFloat16 problem as its widened float32 run computes it.
ConvProblem widened_problem(const ConvProblem& p) {
  ConvProblem q = p;
  q.dtype = DType::Float32;
  q.x_float32 = q.y_float32 = false;
  return q;
}
}  // namespace

bool ConvPlan::runs_bf16_kernel(const ConvProblem& given, const ConvAlgorithm* forced,
                                std::vector<const ConvAlgorithm*>* candidates) const {
  if (forced && forced->dtype != DType::BFloat16) return false;
  if (is_reference(forced)) return true;  // (it takes every problem, depth and all)
  if (needs_reference(given)) return false;
  // A lowering moves x's and y's values in their own dtype: float32 operands of a bfloat16
  // problem (compute_dtype="bfloat16") run widened wherever a lowering applies.
  const Lowering lowering = lowering_of(given);
  if (lowering != Lowering::None && (given.x_float32 || given.y_float32)) return false;
  if (forced) return true;  // (run_planar checks that it accepts the lowered problem)
  // The lowered problem (and a folded row's tail, a flattened plane's last segment) as the
  // bfloat16 kernels are given it: the first candidate is the reference where none takes it.
  std::vector<const ConvAlgorithm*> found = kernel_candidates(given);
  const bool kernel = !is_reference(found.front());
  if (candidates) *candidates = std::move(found);
  return kernel;
}

ConvPlan& ConvPlan::widened_plan() const {
  ForkWaitsSection section;
  std::lock_guard<std::mutex> lock(widened_mutex_);
  if (!widened_) {
    const int64_t count = out_channels_ * group_in_ * kernel_d_ * kernel_h_ * kernel_w_;
    std::vector<float> wide;
    const std::shared_ptr<const void> source = weights_.source();
    if (source) {  // (a plan of shapes alone, for explain, has none)
      wide.resize(size_t(count));
      bf16_to_float32(static_cast<const uint16_t*>(source.get()), wide.data(), count, 1);
    }
    widened_ = std::make_unique<ConvPlan>(DType::Float32, wide.empty() ? nullptr : wide.data(), weights_.bias(),
                                          out_channels_, group_in_, kernel_d_, kernel_h_, kernel_w_,
                                          /*copy=*/!wide.empty(), weights_reused_);
  }
  return *widened_;
}

void ConvPlan::run_widened(const ConvProblem& problem, const void* x, void* y, const ConvAlgorithm* forced,
                           int max_threads) {
  const ConvProblem q = widened_problem(problem);
  cppconv::run_widened(x, problem.x_float32, q.batch * q.in_channels * q.in_d * q.in_h * q.in_w, y, problem.y_float32,
                       q.batch * q.out_channels * q.out_d * q.out_h * q.out_w, max_threads,
                       "conv2d float32 copies of bfloat16 operands",
                       [&](const float* xf, float* yf) { widened_plan().run(q, xf, yf, forced, max_threads); });
}

ConvChoice ConvPlan::choose(const ConvProblem& problem) const {
  const ConvProblem given = kernel_problem(problem);
  // A bfloat16 problem runs its lowering on the bfloat16 kernels where they take the lowered
  // problem, else widened (whose float32 plan lowers it, live taps and all).
  if (dtype_ == DType::BFloat16 && !runs_bf16_kernel(given, nullptr))
    return widened_plan().choose(widened_problem(problem));
  if (const auto live = dtype_ == DType::BFloat16 ? std::nullopt : live_taps_run(given)) {
    ConvChoice c = live->plan->choose(live->problem);
    c.live_taps_only = true;
    return c;
  }
  const Lowering lowering = lowering_of(given);
  const ConvProblem planar = planar_form(given);
  ConvChoice c = choose_for(planar, algorithm_problem(planar), get_num_threads(), nullptr);
  c.lowering = lowering;
  if (lowering == Lowering::Gather && gathers_in_place(given, *c.algorithm)) {
    // The sizes of what runs: the problem that reads the depth slices (its pack may differ).
    const ConvProblem q = gathered_in_place(given);
    c = choose_for(q, algorithm_problem(q), get_num_threads(), c.algorithm);
    c.lowering = Lowering::DepthTaps;
  }
  if (c.lowering == Lowering::Gather || c.lowering == Lowering::Interleave)
    c.workspace_bytes = saturating_add(c.workspace_bytes, gather_bytes(given, planar.batch));
  if (lowering == Lowering::FoldRows) c.workspace_bytes = saturating_add(c.workspace_bytes, fold_bytes(given));
  if (lowering == Lowering::ChannelsFirst || lowering == Lowering::ChannelsLast)
    c.workspace_bytes = saturating_add(c.workspace_bytes, layout_copy_bytes(given));
  if (lowering == Lowering::TapsAsChannels)
    c.workspace_bytes = saturating_add(c.workspace_bytes, tap_channels_bytes(given));
  return c;
}

std::vector<const ConvAlgorithm*> ConvPlan::candidates(const ConvProblem& problem) const {
  const ConvProblem given = kernel_problem(problem);
  if (dtype_ == DType::BFloat16) {
    std::vector<const ConvAlgorithm*> found;
    if (!runs_bf16_kernel(given, nullptr, &found)) return widened_plan().candidates(widened_problem(problem));
    return found;  // (runs_bf16_kernel's scan: kernel_candidates(given))
  }
  if (const auto live = live_taps_run(given)) return live->plan->candidates(live->problem);
  return kernel_candidates(given);
}

std::vector<const ConvAlgorithm*> ConvPlan::kernel_candidates(const ConvProblem& given) const {
  const ConvProblem p = algorithm_problem(planar_form(given));
  if (needs_reference(p)) return {kConvFamily.reference(p.dtype)};
  // A folded row's tail is a second, shorter problem that a forced algorithm must accept too.
  // So is the last column segment of a flattened plane.
  ConvProblem t = p;
  const Lowering lowering = lowering_of(given);
  if (lowering == Lowering::FoldRows && given.out_w % kFoldOutputs != 0)
    t = algorithm_problem(folded(given, 1, given.out_w % kFoldOutputs));
  if (lowering == Lowering::Flatten) {
    const ConvProblem q = flattened(given);
    const FlattenSegments f = flatten_segments(q);
    if (f.tail > 0) t = algorithm_problem(flattened_segments(q, 1, f.tail));
  }
  const KernelTable& table = active_table();
  std::vector<const ConvAlgorithm*> found;
  for (int i = 0; i < table.conv_count; ++i) {
    const ConvAlgorithm& a = *table.conv[i];
    if (a.dtype == p.dtype && has_cpu_features(a.features) && meets_precision(a, p) && takes_rank(a, p) &&
        a.accepts(p) && a.accepts(t))
      found.push_back(&a);
  }
  if (found.empty()) found.push_back(kConvFamily.reference(p.dtype));
  return found;
}

ConvChoice ConvPlan::choose_for(const ConvProblem& given, const ConvProblem& p, int max_threads,
                                const ConvAlgorithm* forced) const {
  const KernelTable& table = active_table();
  const int threads = threads_for(p, max_threads);
  const ConvAlgorithm* chosen = forced               ? forced
                                : needs_reference(p) ? kConvFamily.reference(p.dtype)
                                                     : kConvFamily.choose(table, p);
  // The scratch depends on the thread count (one buffer per thread) as well as the algorithm.
  return {chosen, table.isa_name, threads, call_workspace_bytes(*chosen, given, p, threads), chosen->packed_bytes(p)};
}

void ConvPlan::run(const ConvProblem& problem, const void* x, void* y, const ConvAlgorithm* forced, int max_threads,
                   const void* residual) {
  const ConvProblem given = kernel_problem(problem);
  if (given.dtype != dtype_ || given.out_channels != out_channels_ || given.in_channels / given.groups != group_in_ ||
      given.kernel_d != kernel_d_ || given.kernel_h != kernel_h_ || given.kernel_w != kernel_w_)
    throw std::invalid_argument("convolution problem does not match the plan's weights");
  if (given.batch == 0 || given.out_channels == 0) return;
  const int cap = resolve_threads(max_threads);
  if (residual && dtype_ == DType::BFloat16) throw std::invalid_argument("a bfloat16 plan takes no residual");
  std::optional<std::ptrdiff_t> res;
  if (residual) res = static_cast<const unsigned char*>(residual) - static_cast<unsigned char*>(y);
  if (res && !lowering_writes_y(given)) {
    // The lowering writes y from a copy (a transpose): the convolution, then one pass.
    ConvProblem plain = problem;
    plain.activation = Activation::None;
    run(plain, x, y, forced, max_threads);
    // y is contiguous: rows of out_w values whatever the layout, the pass's unit of work per thread.
    ConvProblem rows = given;
    rows.batch = 1, rows.out_channels = 1;
    rows.out_h = given.batch * given.out_channels * given.out_d * given.out_h;
    with_element_type(given.dtype, [&](auto zero) {
      using T = decltype(zero);
      add_residual_after(rows, static_cast<T*>(y), Strides4{0, 0, given.out_w, 1}, *res, threads_for(given, cap));
    });
    return;
  }
  if (dtype_ == DType::BFloat16) {
    if (!runs_bf16_kernel(given, forced)) {
      if (forced && forced->dtype == DType::BFloat16)
        throw std::invalid_argument(std::string("algorithm ") + forced->name + " does not accept this problem");
      return run_widened(problem, x, y, forced, max_threads);
    }
  }
  // The reference takes every depth itself: it is the oracle of the lowerings.
  if (is_reference(forced)) return run_planar(given, x, y, nullptr, forced, cap, nullptr, nullptr, res);
  if (const auto live = dtype_ == DType::BFloat16 ? std::nullopt : live_taps_run(given))
    return live->plan->run(live->problem, x, y, forced, max_threads, residual);
  switch (lowering_of(given)) {
    case Lowering::None: return run_planar(given, x, y, nullptr, forced, cap, nullptr, nullptr, res);
    case Lowering::Flatten: return run_flattened(given, x, y, forced, cap, res);
    case Lowering::IntoBatch:
      return run_planar(depth_into_batch(given), x, y, nullptr, forced, cap, nullptr, nullptr, res);
    case Lowering::Gather:
    case Lowering::DepthTaps:
    case Lowering::Interleave: return run_gathered(given, x, y, forced, cap, res);
    case Lowering::FoldRows: return run_folded(given, x, y, forced, cap);  // (res: it writes y, see above)
    case Lowering::TapsAsChannels: return run_taps_as_channels(given, x, y, forced, cap, res);
    case Lowering::DilationRows:
      return run_planar(dilation_rows(given), x, y, nullptr, forced, cap, nullptr, nullptr, res);
    case Lowering::ChannelsFirst:
    case Lowering::ChannelsLast: return run_in_other_layout(given, x, y, forced, cap);
  }
}

bool ConvPlan::writes_channel_slice(const ConvProblem& problem) const {
  const ConvProblem given = kernel_problem(problem);
  return dtype_ != DType::BFloat16 && problem.layout == Layout::NHWC && given.layout == Layout::NHWC &&
         !has_depth(given) && lowering_of(given) == Lowering::None && !live_taps_run(given);
}

void ConvPlan::run_into_channels(const ConvProblem& problem, const void* x, void* y, int64_t pixel_pitch,
                                 int max_threads) {
  if (!writes_channel_slice(problem) || pixel_pitch < problem.out_channels)
    throw std::invalid_argument("run_into_channels: the problem does not run into a channel slice");
  const ConvProblem given = kernel_problem(problem);
  if (given.batch == 0 || given.out_channels == 0) return;
  const int cap = resolve_threads(max_threads);
  const Strides4 strides{given.out_h * given.out_w * pixel_pitch, 1, given.out_w * pixel_pitch, pixel_pitch};
  run_planar(given, x, y, &strides, nullptr, cap);
}

bool ConvPlan::writes_strided(const ConvProblem& problem) const {
  const ConvProblem given = kernel_problem(problem);
  if (problem.layout != Layout::NHWC || given.layout != Layout::NHWC || has_depth(given) ||
      lowering_of(given) != Lowering::None)
    return false;
  return dtype_ == DType::BFloat16 ? runs_bf16_kernel(given, nullptr) : !live_taps_run(given);
}

void ConvPlan::run_strided(const ConvProblem& problem, const void* x, void* y, const Strides4& y_stride,
                           int max_threads) {
  if (!writes_strided(problem) || y_stride.c != 1)
    throw std::invalid_argument("run_strided: the problem does not run into strided outputs");
  const ConvProblem given = kernel_problem(problem);
  if (given.batch == 0 || given.out_channels == 0) return;
  run_planar(given, x, y, &y_stride, nullptr, resolve_threads(max_threads));
}

void ConvPlan::run_flattened(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm* forced, int cap,
                             std::optional<std::ptrdiff_t> residual) {
  const ConvProblem q = flattened(given);
  const FlattenSegments f = flatten_segments(q);
  if (f.count == 1 && f.tail == 0) return run_planar(q, x, y, nullptr, forced, cap, nullptr, nullptr, residual);
  const size_t elem = dtype_size(given.dtype);
  const bool first = q.layout == Layout::NCHW;
  const int64_t C = q.in_channels, K = q.out_channels, in_plane = q.in_h * q.in_w, out_plane = q.out_h * q.out_w;
  // Segment s of an image starts at column s * width: the batch stride is a segment's columns.
  auto strides = [&](int64_t channels, int64_t rows, int64_t cols, int64_t width) {
    return first ? Strides4{width, rows * cols, cols, 1} : Strides4{width * channels, 1, cols * channels, channels};
  };
  const Strides4 xs = strides(C, q.in_h, q.in_w, f.width), ys = strides(K, q.out_h, q.out_w, f.width);
  const Strides4 xt = strides(C, q.in_h, q.in_w, f.tail), yt = strides(K, q.out_h, q.out_w, f.tail);
  for (int64_t n = 0; n < q.batch; ++n) {
    const auto* xn = static_cast<const unsigned char*>(x) + size_t(n * C * in_plane) * elem;
    auto* yn = static_cast<unsigned char*>(y) + size_t(n * K * out_plane) * elem;
    run_planar(flattened_segments(q, f.count, f.width), xn, yn, &ys, forced, cap, nullptr, &xs, residual);
    if (f.tail > 0) {
      const int64_t col = f.count * f.width;
      run_planar(flattened_segments(q, 1, f.tail), xn + size_t(col * (first ? 1 : C)) * elem,
                 yn + size_t(col * (first ? 1 : K)) * elem, &yt, forced, cap, nullptr, &xt, residual);
    }
  }
}

void ConvPlan::run_in_other_layout(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm* forced,
                                   int cap) {
  check_workspace(layout_copy_bytes(given), "conv copies of x and y in the other layout");
  auto x_other = SpareBuffer<LayoutCopyInputTag>::take(layout_copy_input_bytes(given));
  auto y_other = SpareBuffer<LayoutCopyOutputTag>::take(layout_copy_output_bytes(given));
  const ConvProblem q = planar_form(given);
  const int threads = lowering_threads(q, cap);
  const int64_t pixels = given.in_d * given.in_h * given.in_w, out_pixels = given.out_d * given.out_h * given.out_w;
  // Each image is a (pixels x channels) matrix channels-last, its transpose channels-first.
  const bool to_first = given.layout == Layout::NHWC;
  const int64_t C = given.in_channels, K = given.out_channels;
  with_element_type(given.dtype, [&](auto zero) {
    using T = decltype(zero);
    transpose_matrices(static_cast<const T*>(x), given.batch, to_first ? pixels : C, to_first ? C : pixels,
                       reinterpret_cast<T*>(x_other.get()), threads);
    run_planar(q, x_other.get(), y_other.get(), nullptr, forced, cap);
    transpose_matrices(reinterpret_cast<const T*>(y_other.get()), given.batch, to_first ? K : out_pixels,
                       to_first ? out_pixels : K, static_cast<T*>(y), threads);
  });
}

void ConvPlan::run_taps_as_channels(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm* forced,
                                    int cap, std::optional<std::ptrdiff_t> residual) {
  check_workspace(tap_channels_bytes(given), "conv1d tap windows");
  auto buffer = SpareBuffer<TapChannelsTag>::take(tap_channels_bytes(given));
  const ConvProblem q = taps_as_channels(given);
  const int threads = lowering_threads(q, cap);
  with_element_type(given.dtype, [&](auto zero) {
    using T = decltype(zero);
    copy_tap_windows(given, static_cast<const T*>(x), reinterpret_cast<T*>(buffer.get()), threads);
  });
  run_planar(q, buffer.get(), y, nullptr, forced, cap, nullptr, nullptr, residual);
}

void ConvPlan::run_folded(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm* forced, int cap) {
  const int64_t rows = given.out_w / kFoldOutputs, tail = given.out_w % kFoldOutputs;
  check_workspace(fold_bytes(given), "conv1d folded input row");
  SpareBuffer<FoldedInputTag> buffer;
  SpareBuffer<FoldedOutputTag> transposed;
  const ConvProblem q = folded(given, rows, kFoldOutputs);
  const int threads = lowering_threads(q, cap);
  const void* row = x;
  if (!folds_in_place(given)) {
    buffer = SpareBuffer<FoldedInputTag>::take(fold_input_bytes(given));
    with_element_type(given.dtype, [&](auto zero) {
      using T = decltype(zero);
      fold_row(given, static_cast<const T*>(x), reinterpret_cast<T*>(buffer.get()), threads);
    });
    row = buffer.get();
  }
  const bool first = q.layout == Layout::NCHW;
  void* out = y;
  if (q.layout != given.layout) {
    transposed = SpareBuffer<FoldedOutputTag>::take(fold_output_bytes(given));
    out = transposed.get();
  }
  const Strides4 x_stride = fold_strides(given);
  const int64_t K = given.out_channels, OW = given.out_w;
  // The rows are consecutive runs of the output's one row: its own strides, rows kFoldOutputs apart.
  const Strides4 stride = first ? Strides4{K * OW, OW, kFoldOutputs, 1} : Strides4{OW * K, 1, kFoldOutputs * K, K};
  run_planar(q, row, out, &stride, forced, cap, nullptr, &x_stride);
  if (tail) {
    // The tail row: the next row's columns on, the next row's outputs on.
    const size_t elem = dtype_size(given.dtype);
    const ConvProblem t = folded(given, 1, tail);
    const Strides4 tail_stride = first ? Strides4{K * OW, OW, tail, 1} : Strides4{OW * K, 1, tail * K, K};
    run_planar(t, static_cast<const unsigned char*>(row) + size_t(rows * x_stride.h) * elem,
               static_cast<unsigned char*>(out) + size_t(rows * kFoldOutputs * (first ? 1 : K)) * elem, &tail_stride,
               forced, cap, nullptr, &x_stride);
  }
  if (out != y)
    with_element_type(given.dtype, [&](auto zero) {
      using T = decltype(zero);
      transpose_matrices(static_cast<const T*>(out), given.batch, OW, K, static_cast<T*>(y), threads);
    });
}

void ConvPlan::run_gathered(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm* forced, int cap,
                            std::optional<std::ptrdiff_t> residual) {
  const bool rows = lowering_of(given) == Lowering::Interleave;
  if (!rows) {
    // What the gathered copy would run: if it reads depth taps itself, nothing is copied.
    // (A forced algorithm as it is: choose_for would size its pack and scratch for a problem it
    // may not accept, and run_planar refuses that with a clear error.)
    const ConvProblem planar = planar_form(given);
    const ConvAlgorithm& algorithm =
        forced ? *forced : *choose_for(planar, algorithm_problem(planar), cap, nullptr).algorithm;
    if (gathers_in_place(given, algorithm)) return run_gathered_in_place(given, x, y, algorithm, cap, residual);
  }
  const int64_t chunk = gather_chunk(given), total = given.batch * given.out_d;
  const size_t elem = dtype_size(given.dtype);
  check_workspace(gather_bytes(given, chunk), "conv3d gathered input slices");
  auto buffer = SpareBuffer<GatheredInputTag>::take(gather_bytes(given, chunk));
  const int64_t out_plane = given.out_h * given.out_w;
  PlanWeights* weights = rows                                                 ? &interleaved_weights()
                         : given.layout == Layout::NHWC && given.kernel_d > 1 ? &gathered_weights()
                                                                              : nullptr;
  for (int64_t b0 = 0; b0 < total;) {
    // Channels-first chunks stay within one image (see gather_chunk).
    const int64_t n = b0 / given.out_d;
    const int64_t end = given.layout == Layout::NHWC ? total : (n + 1) * given.out_d;
    const int64_t count = std::min(chunk, end - b0);
    const ConvProblem q = rows ? interleaved(given, count) : gathered(given, count);
    const int threads = lowering_threads(q, cap);
    with_element_type(given.dtype, [&](auto zero) {
      using T = decltype(zero);
      const auto* from = static_cast<const T*>(x);
      auto* to = reinterpret_cast<T*>(buffer.get());
      rows ? interleave_slices(given, from, b0, count, to, threads)
           : gather_slices(given, from, b0, count, to, threads);
    });
    auto* out = static_cast<unsigned char*>(y);
    if (given.layout == Layout::NHWC) {
      run_planar(q, buffer.get(), out + size_t(b0 * out_plane * given.out_channels) * elem, nullptr, forced, cap,
                 weights, nullptr, residual);
    } else {
      // Slices od of image n: channel k's at y[n, k, od], so the slices are q's batch with
      // stride out_plane and the channels stride out_d * out_plane.
      const int64_t od = b0 - n * given.out_d;
      const Strides4 stride{out_plane, given.out_d * out_plane, given.out_w, 1};
      run_planar(q, buffer.get(), out + size_t((n * given.out_channels * given.out_d + od) * out_plane) * elem, &stride,
                 forced, cap, weights, nullptr, residual);
    }
    b0 += count;
  }
}

void ConvPlan::run_gathered_in_place(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm& algorithm,
                                     int cap, std::optional<std::ptrdiff_t> residual) {
  const ConvProblem q = gathered_in_place(given);
  const int64_t C = given.in_channels, HW = given.in_h * given.in_w, out_plane = given.out_h * given.out_w;
  // x's own strides within a depth slice (the slice's offset comes from depth_src).
  const Strides4 x_stride =
      given.layout == Layout::NHWC ? Strides4{0, 1, given.in_w * C, C} : Strides4{0, given.in_d * HW, given.in_w, 1};
  if (given.layout == Layout::NHWC) {
    const std::vector<int64_t> depth_src = depth_slice_offsets(given, 0, q.batch);
    return run_planar(q, x, y, nullptr, &algorithm, cap, nullptr, &x_stride, residual, depth_src.data());
  }
  const size_t elem = dtype_size(given.dtype);
  const int64_t K = given.out_channels;
  // Channel k's slices at y[n, k, od]: the slices are q's batch with stride out_plane and the
  // channels stride out_d * out_plane (as in run_gathered).
  const Strides4 y_stride{out_plane, given.out_d * out_plane, given.out_w, 1};
  for (int64_t n = 0; n < given.batch; ++n) {
    const std::vector<int64_t> depth_src = depth_slice_offsets(given, n * given.out_d, given.out_d);
    run_planar(q, x, static_cast<unsigned char*>(y) + size_t(n * K * given.out_d * out_plane) * elem, &y_stride,
               &algorithm, cap, nullptr, &x_stride, residual, depth_src.data());
  }
}

PlanWeights& ConvPlan::permuted_weights(std::unique_ptr<PlanWeights>& slot,
                                        const std::function<void(const unsigned char*, unsigned char*)>& permute) {
  ForkWaitsSection section;
  std::lock_guard<std::mutex> lock(permuted_mutex_);
  if (!slot) {
    const size_t elem = dtype_size(dtype_);
    std::vector<unsigned char> permuted(size_t(out_channels_ * group_in_ * kernel_d_ * kernel_h_ * kernel_w_) * elem);
    const std::shared_ptr<const void> source = weights_.source();
    permute(static_cast<const unsigned char*>(source.get()), permuted.data());
    // (The plan's own weights give them again: no need to keep them beside a pack that unpacks.)
    slot = std::make_unique<PlanWeights>(dtype_, permuted.data(), permuted.size() / elem, weights_.bias(),
                                         size_t(out_channels_), /*copy=*/true, /*shared=*/true,
                                         /*keeps_source=*/false);
  }
  return *slot;
}

PlanWeights& ConvPlan::interleaved_weights() {
  // (K, C/g, kd, kh, kw) -> (K, C/g, kh * kd, kw), tap (a, i) at row i * kd + a.
  return permuted_weights(interleaved_, [&](const unsigned char* from, unsigned char* to) {
    const size_t elem = dtype_size(dtype_);
    const int64_t kd = kernel_d_, kh = kernel_h_, kw = kernel_w_, taps = kd * kh * kw;
    for (int64_t f = 0; f < out_channels_ * group_in_; ++f)
      for (int64_t a = 0; a < kd; ++a)
        for (int64_t i = 0; i < kh; ++i)
          std::memcpy(to + size_t(f * taps + (i * kd + a) * kw) * elem,
                      from + size_t(f * taps + (a * kh + i) * kw) * elem, size_t(kw) * elem);
  });
}

PlanWeights& ConvPlan::gathered_weights() {
  // (K, C/g, kd, kh, kw) -> (K, kd, C/g, kh, kw): the channels-last gathered channel order.
  return permuted_weights(gathered_, [&](const unsigned char* from, unsigned char* to) {
    const size_t elem = dtype_size(dtype_);
    const int64_t kd = kernel_d_, plane = kernel_h_ * kernel_w_;
    for (int64_t f = 0; f < out_channels_; ++f)
      for (int64_t c = 0; c < group_in_; ++c)
        for (int64_t a = 0; a < kd; ++a)
          std::memcpy(to + size_t(((f * kd + a) * group_in_ + c) * plane) * elem,
                      from + size_t(((f * group_in_ + c) * kd + a) * plane) * elem, size_t(plane) * elem);
  });
}

void ConvPlan::run_planar(const ConvProblem& given, const void* x, void* y, const Strides4* y_stride,
                          const ConvAlgorithm* forced, int cap, PlanWeights* weights, const Strides4* x_stride,
                          std::optional<std::ptrdiff_t> residual, const int64_t* depth_src) {
  PlanWeights& w = weights ? *weights : weights_;
  const ConvProblem p = algorithm_problem(given);
  if (forced) require_accepts(*forced, p);
  const ConvChoice choice = choose_for(given, p, cap, forced);
  check_workspace(choice.workspace_bytes, "conv2d workspace (kernel scratch and padding index maps)");
  SpareBuffer<SubsampledInputTag> subsampled;
  if (subsamples_input(given)) {
    subsampled = SpareBuffer<SubsampledInputTag>::take(subsampled_bytes(given));
    with_element_type(p.dtype, [&](auto zero) {
      using T = decltype(zero);
      subsample_input(given, static_cast<const T*>(x), reinterpret_cast<T*>(subsampled.get()), choice.threads);
    });
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
  call.packed = w.packed(*choice.algorithm, p, choice.threads);
  // An algorithm whose pack gives the weights back reads the pack alone (the plan may have
  // freed its copy); the others get the weights as given, kept alive for the call.
  std::shared_ptr<const void> source;
  if (!call.packed || !choice.algorithm->unpack) source = w.source();
  call.weight = source.get();
  call.bias = w.bias();
  call.y = y;
  set_contiguous_strides(p, call);
  if (y_stride) call.y_stride = *y_stride;
  if (x_stride) call.x_stride = *x_stride;
  call.row_src = rows.empty() ? nullptr : rows.data();
  call.col_src = cols.empty() ? nullptr : cols.data();
  call.depth_src = depth_src;
  call.num_threads = choice.threads;
  if (residual && choice.algorithm->adds_residual) call.residual = static_cast<unsigned char*>(y) + *residual;
  if (!residual || choice.algorithm->adds_residual) return choice.algorithm->run(call);
  call.p.activation = Activation::None;  // applied with the residual, after the stores
  choice.algorithm->run(call);
  // A deep problem's y is contiguous (no lowering gives it strides): its slices' rows follow on.
  ConvProblem slice_rows = p;
  slice_rows.out_h = p.out_d * p.out_h;
  with_element_type(p.dtype, [&](auto zero) {
    using T = decltype(zero);
    add_residual_after(slice_rows, static_cast<T*>(y), call.y_stride, *residual, choice.threads);
  });
}

bool ConvPlan::fuses_residual(const ConvProblem& problem) const {
  const ConvProblem given = kernel_problem(problem);
  return dtype_ != DType::BFloat16 && lowering_writes_y(given) && choose(problem).algorithm->adds_residual;
}

}  // namespace cppconv
