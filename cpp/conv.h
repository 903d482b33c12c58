// The convolution driver: resolves padding, picks an algorithm from the active ISA's table
// (first that accepts the problem wins, the reference last), packs weights once per plan and
// runs the kernel.  No Python here: raw pointers and sizes only.
#pragma once
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
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
// was loaded (see driver.cpp); at most the calling thread's cap (set_thread_cap) where it has one.
void set_num_threads(int n);
// Forgets set_num_threads: OpenMP's setting applies again.
void reset_num_threads();
bool num_threads_is_set();
int get_num_threads();
// The threads a call with its own cap max_threads (0: none) may use, by the precedence above.
// Every entry point that runs kernels resolves its thread count here (fma_peak_gflops, which
// measures the peak of the threads it is given, does not).
int resolve_threads(int max_threads);
// A cap on the threads of every call made from the calling OS thread (0: none); returns the
// previous one.  A network's batch lanes (python/cppconv/_netbatch.py) run each lane's calls on
// its share of the threads this way, whatever thread count the calls were recorded with.
int set_thread_cap(int n);
int thread_cap();
// The process-wide float32 precision mode (PyTorch's torch.set_float32_matmul_precision):
// the mode of every call that does not name its own.  Highest unless set.
void set_float32_precision(Precision mode);
Precision get_float32_precision();

// The threads one call of this problem uses: fewer for small problems, where waking a
// thread team costs more than it saves.
int threads_for(const ConvProblem& p, int max_threads);

// Padded coordinate i -> source index (or -1 for a zero) for one axis of `size` with `before`
// padding, PyTorch's padding modes; and the map of every padded coordinate.
int64_t padded_source(int64_t i, int64_t size, int64_t before, PadMode mode);
std::vector<int64_t> padding_index_map(int64_t size, int64_t before, int64_t after, PadMode mode);

double conv_flops(const ConvProblem& p);

// Output length of one axis: floor((size + before + after - dilation (kernel - 1) - 1) / stride) + 1,
// or 0 when the kernel's span exceeds the padded size (callers refuse that).
int64_t conv_output_size(int64_t size, int64_t kernel, int64_t stride, int64_t dilation, int64_t before, int64_t after);

// The problem's geometry as the kernels are given it, whatever the dtype (see conv.cpp): a
// single output's stride clamped, a one-tap axis's dilation 1, the layout of one-channel and
// one-pixel problems (the same memory in both) the one whose kernels vectorise over the extent.
ConvProblem kernel_geometry(const ConvProblem& p);

// Live taps: where a zero padding dwarfs the input, some taps read only padding for every
// output.  Per axis (depth, height, width) the first and last tap that reads the input for
// some output, or nothing where every tap does (or the padding is not zeros).
using TapWindow = std::array<int64_t, 6>;
std::optional<TapWindow> live_tap_window(const ConvProblem& p);
// p on the window's taps: each axis loses the padding its dropped taps spanned, so every
// output reads the same inputs (and the output sizes stay).
ConvProblem on_live_taps(const ConvProblem& p, const TapWindow& w);

// The weights (filters, kd, kh, kw) of the window's taps, or nothing where a dropped tap's
// weight is not finite: it meets zero padding, and 0 * inf is NaN.
template <class T>
std::optional<std::vector<unsigned char>> live_tap_weights(const void* weight, int64_t filters, int64_t kd, int64_t kh,
                                                           int64_t kw, const TapWindow& w) {
  const T* from = static_cast<const T*>(weight);
  std::vector<unsigned char> kept(size_t(filters * (w[1] - w[0] + 1) * (w[3] - w[2] + 1) * (w[5] - w[4] + 1)) *
                                  sizeof(T));
  T* to = reinterpret_cast<T*>(kept.data());
  for (int64_t f = 0; f < filters; ++f)
    for (int64_t a = 0; a < kd; ++a)
      for (int64_t i = 0; i < kh; ++i)
        for (int64_t j = 0; j < kw; ++j) {
          const T v = *from++;
          if (a >= w[0] && a <= w[1] && i >= w[2] && i <= w[3] && j >= w[4] && j <= w[5]) *to++ = v;
          else if constexpr (std::is_floating_point_v<T>) {
            if (!std::isfinite(v)) return std::nullopt;
          } else if constexpr (std::is_same_v<T, uint16_t>) {  // bfloat16's bits: an all-ones exponent
            if ((v & 0x7f80) == 0x7f80) return std::nullopt;
          }
        }
  return kept;
}

// The live-taps lowering of a plan (float32: ConvPlan, int8: QConvPlan): where only the
// reference takes `given` (its zero padding dwarfs the input, so no kernel's tiles stay in
// proportion to the call) and some kernel takes the problem of the live taps, that problem and
// a plan of the live taps' weights, made by make(live, window) once per window (nullptr: none).
// Elsewhere the kernels skip padding rows themselves, and a chunk of a larger call
// (cppconv.dask) runs as the whole call does.
template <class Plan>
class LiveTaps {
 public:
  struct Run {
    ConvProblem problem;
    std::shared_ptr<Plan> plan;
  };
  template <class OnlyReference, class Make>
  std::optional<Run> run_for(const ConvProblem& given, OnlyReference&& only_reference, Make&& make) {
    const std::optional<TapWindow> window = live_tap_window(given);
    if (!window) return std::nullopt;
    const ConvProblem live = on_live_taps(given, *window);
    if (!only_reference(given) || only_reference(live)) return std::nullopt;
    ForkWaitsSection section;
    std::lock_guard<std::mutex> lock(mutex_);
    std::shared_ptr<Plan> plan;
    bool found = false;
    for (const auto& [key, kept] : plans_)
      if (key == *window) plan = kept, found = true;
    if (!found) {
      plan = make(live, *window);
      if (plans_.size() == kPlans) plans_.erase(plans_.begin());
      plans_.emplace_back(*window, plan);
    }
    return plan ? std::optional<Run>(Run{live, plan}) : std::nullopt;
  }

 private:
  static constexpr size_t kPlans = 8;  // windows kept (a layer called on many input sizes)
  std::mutex mutex_;
  std::vector<std::pair<TapWindow, std::shared_ptr<Plan>>> plans_;
};

// How a problem runs on the kernels, which take problems of depth 1 (see ConvProblem) and
// tile, block and thread by output rows: as it is, or recast as a 2-D problem they run well.
enum class Lowering {
  None,        // as it is (deep only where an algorithm takes the depth: ConvAlgorithm::takes_depth)
  Flatten,     // deep, 1x1 in (h, w), stride 1, no padding there: (d, h*w) is a 2-D problem
  IntoBatch,   // deep, channels-last, kernel depth 1, stride 1, no depth padding: (n, d) is a batch
  Gather,      // deep: each output slice's kd input slices copied as C*kd channels, a 2-D problem
  DepthTaps,   // Gather without the copy: the kernel's tiles take the C*kd channels from x's slices
  Interleave,  // deep depthwise: each output slice's kd input slices copied as interleaved rows
  FoldRows,    // one long row (1-D): output rows of a fixed length, each with its input window copied
  ChannelsFirst,  // channels-last, grouped with few channels per group: run channels-first, transposed in and out
  ChannelsLast,  // deep depthwise, channels-first: run channels-last in place (None's kernel), transposed in and out
  TapsAsChannels,  // long row, few input channels: each tap's strided window copied as a channel, a 1x1 problem
  DilationRows,  // long row, stride 1, dilation d >= 8: rows of d values, a (k, 1) kernel on a 2-D plane
};
const char* lowering_name(Lowering l);

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
  Lowering lowering = Lowering::None;
  // Only the taps that read the input ran: a zero padding that dwarfs the input (see
  // ConvPlan::live_taps_run).
  bool live_taps_only = false;
};

// A layer's weights, prepared once.  `run` is thread-safe: packed weights are built on first
// use by an algorithm and then shared.
class ConvPlan {
 public:
  // weight: (K, C/groups, kd, kh, kw) C-contiguous of `dtype` (kd = 1 for 1-D and 2-D, kh = 1
  // for 1-D); bias: (K,) or nullptr, float32 for a BFloat16 plan.  A layer's plan copies them (copy=true) and will
  // reuse them over many calls; a one-shot call borrows them for the plan's lifetime.  `reused` tells the dispatcher
  // which (see ConvProblem::weights_reused).
  // keeps_source=false (with copy=true): the plan's copy is the layer's only one, freed once a
  // pack gives the weights back and unpacked again where needed (see PlanWeights).
  ConvPlan(DType dtype, const void* weight, const void* bias, int64_t out_channels, int64_t group_in_channels,
           int64_t kernel_d, int64_t kernel_h, int64_t kernel_w, bool copy, bool reused, bool keeps_source = true);

  ConvChoice choose(const ConvProblem& p) const;
  // The algorithms the dispatcher could pick for p: those of the active ISA's table that
  // accept the problem its kernels run and meet p's precision mode, in the dispatcher's order
  // (its choice first), or the reference alone where only the reference runs p.  Autotuning
  // (python/cppconv/_tuning.py) times these and may force any of them.
  std::vector<const ConvAlgorithm*> candidates(const ConvProblem& p) const;
  // x and y in p.layout, C-contiguous.  `forced` (tests, benchmarks) runs that algorithm
  // instead of the dispatcher's choice; it must accept the problem.  `max_threads` > 0 caps
  // this call's threads instead of get_num_threads() (a per-call num_threads=, which must
  // not change the process-wide setting).
  // `residual` (nullptr: none) is a tensor of y's dtype, shape and layout, C-contiguous, added to
  // the outputs before the activation: y = act((conv(x) + bias) + residual).  It must not overlap
  // y.  Algorithms with adds_residual add it as each output block is stored; after the others
  // (and the channels-first and transposed fold-rows lowerings) one more pass adds it
  // (fuses_residual says which).  Not for bfloat16 plans.
  void run(const ConvProblem& p, const void* x, void* y, const ConvAlgorithm* forced = nullptr, int max_threads = 0,
           const void* residual = nullptr);
  // Whether run() with a residual adds it in the kernel's stores for p (the dispatcher's choice).
  bool fuses_residual(const ConvProblem& p) const;
  // Whether run_into_channels can take p: a 2-D channels-last problem that runs as it is (no
  // lowering, no live-taps plan), whose kernels write through the output's strides.
  bool writes_channel_slice(const ConvProblem& p) const;
  // run() with y's pixels `pixel_pitch` values apart (pixel_pitch >= out_channels): channels
  // [c0, c0 + K) of a wider channels-last array, the output of a Concat's input written in
  // place.  p must pass writes_channel_slice.
  void run_into_channels(const ConvProblem& p, const void* x, void* y, int64_t pixel_pitch, int max_threads = 0);
  // Whether run_strided can take p: a 2-D channels-last problem that runs as it is on a kernel
  // of the plan's dtype (no lowering, no live-taps plan, not widened), whose kernels write
  // through the output's strides.
  bool writes_strided(const ConvProblem& p) const;
  // run() with y's strides `y_stride` (channel stride 1): the outputs of a transposed
  // convolution's stride phase written to their places in its result (conv_transpose.cpp).
  // p must pass writes_strided.
  void run_strided(const ConvProblem& p, const void* x, void* y, const Strides4& y_stride, int max_threads = 0);

  DType dtype() const { return dtype_; }
  int64_t out_channels() const { return out_channels_; }
  int64_t group_in_channels() const { return group_in_; }
  int64_t kernel_d() const { return kernel_d_; }
  int64_t kernel_h() const { return kernel_h_; }
  int64_t kernel_w() const { return kernel_w_; }
  bool has_bias() const { return weights_.bias() != nullptr; }
  // The weights as given, (K, C/groups, kd, kh, kw), copied into `out` (from a pack where the
  // plan freed its copy; see PlanWeights).
  void copy_weight(void* out) const { weights_.copy_weight(out); }
  // The size of that copy in bytes.
  size_t weight_bytes() const { return weights_.weight_bytes(); }
  // The bytes of weights this plan holds: its copy (while kept), the bias, every pack, and
  // those of the plans it made for bfloat16 widening and interleaved or gathered 3-D taps.
  size_t held_bytes() const;

 private:
  // The problem the kernels are given (see conv.cpp; a strided 1x1 convolution then runs at
  // stride 1 on the subsampled input).
  ConvProblem kernel_problem(const ConvProblem& problem) const;
  // Runs a problem of depth 1 (or any problem, through the reference) with y's strides
  // `y_stride` and x's `x_stride` (nullptr: contiguous), at most `cap` threads.
  // `residual`: where the residual is, in bytes from y (nothing: none; see run).
  // `depth_src`: a problem with depth_taps, its ConvCall::depth_src.
  void run_planar(const ConvProblem& given, const void* x, void* y, const Strides4* y_stride,
                  const ConvAlgorithm* forced, int cap, PlanWeights* weights = nullptr,
                  const Strides4* x_stride = nullptr, std::optional<std::ptrdiff_t> residual = std::nullopt,
                  const int64_t* depth_src = nullptr);
  // (d, h*w) as a 2-D problem, long rows in column segments (Lowering::Flatten).
  void run_flattened(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm* forced, int cap,
                     std::optional<std::ptrdiff_t> residual = std::nullopt);
  // The weights permuted for a lowering into `slot` on first use: `permute(from, to)` moves
  // the plan's weights as given into that order.
  PlanWeights& permuted_weights(std::unique_ptr<PlanWeights>& slot,
                                const std::function<void(const unsigned char*, unsigned char*)>& permute);
  // The weights as Lowering::Interleave reads them, made on first use.
  PlanWeights& interleaved_weights();
  // The weights as a channels-last Lowering::Gather copy reads them (see gathered() in
  // conv.cpp), made on first use.
  PlanWeights& gathered_weights();
  // A deep problem, one chunk of output slices at a time (Lowering::Gather or Interleave).
  void run_gathered(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm* forced, int cap,
                    std::optional<std::ptrdiff_t> residual = std::nullopt);
  // A Gather problem whose algorithm reads the depth taps from x itself (no copy), one
  // 2-D call (channels-last) or one per image (channels-first).
  void run_gathered_in_place(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm& algorithm, int cap,
                             std::optional<std::ptrdiff_t> residual);
  // One long row as folded rows and the tail that does not fill one (Lowering::FoldRows).
  void run_folded(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm* forced, int cap);
  // ChannelsFirst or ChannelsLast: x transposed into the other layout, the kernels, y transposed back.
  void run_in_other_layout(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm* forced, int cap);
  // Each tap's window as a channel of a 1x1 problem (Lowering::TapsAsChannels).
  void run_taps_as_channels(const ConvProblem& given, const void* x, void* y, const ConvAlgorithm* forced, int cap,
                            std::optional<std::ptrdiff_t> residual = std::nullopt);
  // Where only the reference takes `given` because its zero padding dwarfs the input (no
  // kernel's tiles stay in proportion to the call), and some taps read only padding for every
  // output: the problem of the other taps and a plan of their weights (conv.cpp, live taps).
  using LiveTapsRun = LiveTaps<ConvPlan>::Run;
  std::optional<LiveTapsRun> live_taps_run(const ConvProblem& given) const;
  // candidates() of a kernel problem, taps as given.
  std::vector<const ConvAlgorithm*> kernel_candidates(const ConvProblem& given) const;
  // The choice for a kernel problem and the problem its algorithm runs (algorithm_problem in
  // conv.cpp), with at most max_threads threads; `forced` replaces the dispatcher's pick.
  ConvChoice choose_for(const ConvProblem& given, const ConvProblem& p, int max_threads,
                        const ConvAlgorithm* forced) const;

  // BFloat16 plans: whether a bfloat16 kernel runs `given` (a kernel problem), as it is or
  // through its lowering (the lowerings' copies and transposes move bfloat16 values as they
  // are), or `forced` where given.  Whatever none takes (depthwise, CPUs without AVX512-BF16,
  // float32 operands of a lowered problem, problems only the reference takes) runs widened: x
  // widened (or rounded) to float32 values in one pass, the float32 plan of the widened
  // weights (which lowers it), the result rounded back in one pass.  Where it decides by
  // kernel_candidates(given) (no `forced`, no widening rule first), `candidates` receives them.
  bool runs_bf16_kernel(const ConvProblem& given, const ConvAlgorithm* forced,
                        std::vector<const ConvAlgorithm*>* candidates = nullptr) const;
  ConvPlan& widened_plan() const;  // made on first use
  void run_widened(const ConvProblem& problem, const void* x, void* y, const ConvAlgorithm* forced, int max_threads);

  DType dtype_;
  int64_t out_channels_, group_in_, kernel_d_, kernel_h_, kernel_w_;
  bool weights_reused_;
  // A plan can meet several algorithms as input sizes change; each packs once.
  PlanWeights weights_;
  mutable std::mutex permuted_mutex_;  // interleaved_ and gathered_
  std::unique_ptr<PlanWeights> interleaved_;
  std::unique_ptr<PlanWeights> gathered_;
  mutable std::mutex widened_mutex_;
  mutable std::unique_ptr<ConvPlan> widened_;
  // Plans of live taps, by tap window (first and last tap per axis); null where a dropped
  // tap's weight is not finite (0 * inf is NaN, as in PyTorch, so those taps must run).
  mutable LiveTaps<ConvPlan> live_taps_;
};

}  // namespace cppconv
