#include "conv_transpose.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <mutex>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <type_traits>

#include "bf16.h"
#include "conv.h"
#include "conv_transpose_reference.h"
#include "dispatch.h"
#include "memory.h"
#include "reference.h"

namespace cppconv {
namespace {

int transpose_threads(const ConvTransposeProblem& p, int max_threads) {
  return threads_for_work(conv_transpose_flops(p), max_threads);
}

const AlgorithmFamily<ConvTransposeAlgorithm> kConvTransposeFamily = {
    &KernelTable::conv_transpose, &KernelTable::conv_transpose_count, &conv_transpose2d_reference_f32,
    &conv_transpose2d_reference_f64};

// ---- bfloat16: a transposed convolution as its stride phases.
//
// Along an axis of stride s, dilation d and padding `before`, output o = r + s m (phase r in
// [0, s)) is y_full[o + before], the sum of x[i] w[t] over o + before = i s + t d.  The taps
// that reach phase r are those with t d = rho (mod s), rho = (r + before) mod s (the phase's
// residue): t_last, t_last - step, ... with step = s / gcd(s, d), and tap t reads
// x[m + (r + before - t d) / s].  So the phase is a stride-1 convolution of x with those taps
// in that order (a sub-kernel of the weight, flipped, channels swapped), dilation
// d / gcd(s, d), padding before = -(r + before - t_last d) / s and whatever after makes its
// output cover the phase's outputs.  Negative paddings become outputs computed and dropped
// (offset), so every phase is a problem the convolution plan takes; the phases of all axes
// combine as a product.  Each runs on the bfloat16 convolution plan of its sub-kernel (made
// once per residue, stride, dilation and groups) into y itself at stride 1, else into a
// scratch whose outputs are then copied to their places in y.  A phase without taps (s > k d)
// is bias and activation alone.
// Below this many flops a channels-first problem of several phases runs widened (measured on a
// Xeon, Sapphire Rapids class, one thread: 3 -> 16 channels 3x3/2 @32 and 16 -> 16 3x3/3 @20,
// about 1-2 MFLOP, ran 0.70x the float32 route as phases; 8 -> 8 3x3/2 @64, 4.7 MFLOP, 1.29x).
constexpr double kSmallPhasedFlops = 3e6;

struct PhaseAxis {
  int64_t count = 0;    // outputs of the phase: o = r, r + s, ... below out
  int64_t residue = 0;  // (r + before) mod s: which sub-kernel
  int64_t taps = 0, last_tap = 0, dilation = 1;
  int64_t before = 0, after = 0;  // the convolution's padding (non-negative)
  int64_t offset = 0, conv_out = 0;  // the phase's first output in the convolution's, and its size
};

struct AxisTaps {
  int64_t taps = 0, last = 0, step = 1, dilation = 1;
};

AxisTaps axis_taps(int64_t residue, int64_t kernel, int64_t stride, int64_t dilation) {
  AxisTaps a;
  const int64_t g = std::gcd(stride, dilation);
  a.step = stride / g;
  a.dilation = dilation / g;
  for (int64_t t = 0; t < kernel; ++t)
    if ((t * dilation - residue) % stride == 0) {
      a.last = t;
      ++a.taps;
    }
  return a;
}

PhaseAxis phase_axis(int64_t r, int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t dilation,
                     int64_t before) {
  PhaseAxis a;
  a.count = r < out ? (out - r + stride - 1) / stride : 0;
  a.residue = (r + before) % stride;
  const AxisTaps t = axis_taps(a.residue, kernel, stride, dilation);
  a.taps = t.taps;
  a.last_tap = t.last;
  a.dilation = t.dilation;
  if (a.taps == 0 || a.count == 0) return a;
  const int64_t pad = -((r + before - t.last * dilation) / stride);  // exact: t.last d = r + before (mod s)
  const int64_t after = a.count - in - pad + a.dilation * (a.taps - 1);
  a.before = std::max<int64_t>(pad, 0);
  a.after = std::max<int64_t>(after, 0);
  a.offset = a.before - pad;
  a.conv_out = in + a.before + a.after - a.dilation * (a.taps - 1);
  return a;
}

struct PhaseGrid {
  PhaseAxis d, h, w;
  int64_t rd, rh, rw;
};

// Every phase of p, in order.
template <class Visit>
void for_each_phase(const ConvTransposeProblem& p, Visit&& visit) {
  for (int64_t rd = 0; rd < p.stride_d; ++rd) {
    const PhaseAxis ad = phase_axis(rd, p.in_d, p.out_d, p.kernel_d, p.stride_d, p.dilation_d, p.pad_front);
    if (ad.count == 0) continue;
    for (int64_t rh = 0; rh < p.stride_h; ++rh) {
      const PhaseAxis ah = phase_axis(rh, p.in_h, p.out_h, p.kernel_h, p.stride_h, p.dilation_h, p.pad_top);
      if (ah.count == 0) continue;
      for (int64_t rw = 0; rw < p.stride_w; ++rw) {
        const PhaseAxis aw = phase_axis(rw, p.in_w, p.out_w, p.kernel_w, p.stride_w, p.dilation_w, p.pad_left);
        if (aw.count == 0) continue;
        visit(PhaseGrid{ad, ah, aw, rd, rh, rw});
      }
    }
  }
}

bool has_taps(const PhaseGrid& g) { return g.d.taps > 0 && g.h.taps > 0 && g.w.taps > 0; }
// The phase's convolution gives exactly its outputs: no row or column computed to be dropped.
bool exact_outputs(const PhaseGrid& g) {
  return g.d.offset == 0 && g.h.offset == 0 && g.w.offset == 0 && g.d.conv_out == g.d.count &&
         g.h.conv_out == g.h.count && g.w.conv_out == g.w.count;
}
// The phase writes y itself: one phase (stride 1) whose convolution gives exactly y.
bool writes_y(const ConvTransposeProblem& p, const PhaseGrid& g) {
  return p.stride_d == 1 && p.stride_h == 1 && p.stride_w == 1 && exact_outputs(g);
}

// Exact outputs, channels-last: they may be written to their places in y (ConvPlan::run_strided).
bool writes_in_place(const ConvTransposeProblem& p, const PhaseGrid& g) {
  return p.layout == Layout::NHWC && exact_outputs(g);
}

ConvProblem phase_problem(const ConvTransposeProblem& p, const PhaseGrid& g) {
  ConvProblem q;
  q.rank = (p.in_d > 1 || p.kernel_d > 1 || p.out_d > 1) ? 3 : 2;
  q.batch = p.batch;
  q.in_channels = p.in_channels;
  q.in_d = p.in_d, q.in_h = p.in_h, q.in_w = p.in_w;
  q.out_channels = p.out_channels;
  q.kernel_d = g.d.taps, q.kernel_h = g.h.taps, q.kernel_w = g.w.taps;
  q.out_d = g.d.conv_out, q.out_h = g.h.conv_out, q.out_w = g.w.conv_out;
  q.dilation_d = g.d.dilation, q.dilation_h = g.h.dilation, q.dilation_w = g.w.dilation;
  q.pad_front = g.d.before, q.pad_back = g.d.after;
  q.pad_top = g.h.before, q.pad_bottom = g.h.after;
  q.pad_left = g.w.before, q.pad_right = g.w.after;
  q.groups = p.groups;
  q.dtype = DType::BFloat16;
  q.layout = p.layout;
  q.activation = p.activation;
  q.negative_slope = p.negative_slope;
  q.weights_reused = true;
  q.x_float32 = p.x_float32;
  q.y_float32 = p.y_float32;
  return q;
}

// The problem that writes the phase's outputs to their places in y (ConvPlan::run_strided),
// channels-last: the phase's as it is, or for a deep phase of one depth tap without depth
// padding, each image's output slices as a batch of 2-D problems (one per image, run once per
// image: depth_slices), each reading the input slice of its own index; nothing where the phase
// goes through a scratch.
struct InPlaceRun {
  ConvProblem problem;
  bool depth_slices;
};

std::optional<InPlaceRun> in_place_problem(const ConvTransposeProblem& p, const PhaseGrid& g, const ConvPlan& plan) {
  if (!writes_in_place(p, g)) return std::nullopt;
  const ConvProblem q = phase_problem(p, g);
  if (plan.writes_strided(q)) return InPlaceRun{q, false};
  if (g.d.taps != 1 || g.d.before != 0 || g.d.after != 0 || p.in_d == 1) return std::nullopt;
  ConvProblem slices = q;
  slices.rank = 2;
  slices.batch = g.d.count;  // = in_d: one tap, no padding
  slices.in_d = slices.out_d = 1;
  if (plan.writes_strided(slices)) return InPlaceRun{slices, true};
  return std::nullopt;
}

size_t phase_scratch_bytes(const ConvTransposeProblem& p, const PhaseGrid& g) {
  return size_t(p.batch * p.out_channels * g.d.conv_out * g.h.conv_out * g.w.conv_out) * (p.y_float32 ? 4 : 2);
}

int64_t phase_index(const ConvTransposeProblem& p, const PhaseGrid& g) {
  return (g.d.residue * p.stride_h + g.h.residue) * p.stride_w + g.w.residue;
}

// The phase's outputs of y: from `src`, the phase's convolution output (its outputs from the
// axes' offsets on), or where src is null, activation(bias) (a phase without taps).
template <class T>
void store_phase(const ConvTransposeProblem& p, const PhaseGrid& g, const T* src, const float* bias, T* y,
                 int max_threads) {
  const int64_t K = p.out_channels;
  const bool last = p.layout == Layout::NHWC;
  const int64_t cd = g.d.count, ch = g.h.count, cw = g.w.count;
  const int64_t rows = p.batch * (last ? 1 : K) * cd * ch;
  std::vector<T> filled;
  if (!src) {
    filled.resize(size_t(K));
    for (int64_t k = 0; k < K; ++k) {
      const float v = activate_reference(bias ? bias[k] : 0.0f, p.activation, p.negative_slope);
      if constexpr (std::is_same_v<T, uint16_t>) filled[size_t(k)] = float_to_bf16(v);
      else filled[size_t(k)] = v;
    }
  }
  const int threads =
      threads_for_work(kFlopsPerValueMoved * double(rows * cw * (last ? K : 1)), resolve_threads(max_threads));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t nk = row / (cd * ch), md = (row / ch) % cd, mh = row % ch;
    const int64_t from =
        ((nk * g.d.conv_out + g.d.offset + md) * g.h.conv_out + g.h.offset + mh) * g.w.conv_out + g.w.offset;
    const int64_t to = ((nk * p.out_d + g.rd + p.stride_d * md) * p.out_h + g.rh + p.stride_h * mh) * p.out_w + g.rw;
    if (last) {
      T* dst = y + to * K;
      for (int64_t mw = 0; mw < cw; ++mw) {
        T* pixel = dst + mw * p.stride_w * K;
        if (src) std::memcpy(pixel, src + (from + mw) * K, size_t(K) * sizeof(T));
        else std::memcpy(pixel, filled.data(), size_t(K) * sizeof(T));
      }
    } else {
      T* dst = y + to;
      const int64_t sw = p.stride_w;
      if (src) {
        const T* s = src + from;
        for (int64_t mw = 0; mw < cw; ++mw) dst[mw * sw] = s[mw];
      } else {
        const T v = filled[size_t(nk % K)];
        for (int64_t mw = 0; mw < cw; ++mw) dst[mw * sw] = v;
      }
    }
  }
}

struct PhaseScratchTag {};

ConvTransposeProblem widened_transpose_problem(const ConvTransposeProblem& p) {
  ConvTransposeProblem q = p;
  q.dtype = DType::Float32;
  q.x_float32 = q.y_float32 = false;
  return q;
}

}  // namespace

struct ConvTransposePlan::Phases {
  std::vector<std::unique_ptr<ConvPlan>> plans;  // by phase_index; nullptr: no taps
};

ConvTransposePlan::~ConvTransposePlan() = default;

std::shared_ptr<const ConvTransposePlan::Phases> ConvTransposePlan::phases_for(const ConvTransposeProblem& p) const {
  const std::array<int64_t, 7> key{p.stride_d,   p.stride_h,   p.stride_w, p.dilation_d,
                                   p.dilation_h, p.dilation_w, p.groups};
  ForkWaitsSection section;
  std::lock_guard<std::mutex> lock(bf16_mutex_);
  for (const auto& [k, phases] : phases_)
    if (k == key) return phases;
  auto made = std::make_shared<Phases>();
  const std::shared_ptr<const void> source = weights_.source();
  const auto* w = static_cast<const uint16_t*>(source.get());
  const int64_t G = p.groups, Cg = in_channels_ / G, Kg = group_out_;
  for (int64_t ad = 0; ad < p.stride_d; ++ad)
    for (int64_t ah = 0; ah < p.stride_h; ++ah)
      for (int64_t aw = 0; aw < p.stride_w; ++aw) {
        const AxisTaps td = axis_taps(ad, kernel_d_, p.stride_d, p.dilation_d);
        const AxisTaps th = axis_taps(ah, kernel_h_, p.stride_h, p.dilation_h);
        const AxisTaps tw = axis_taps(aw, kernel_w_, p.stride_w, p.dilation_w);
        if (td.taps == 0 || th.taps == 0 || tw.taps == 0 || !w) {
          made->plans.emplace_back();
          continue;
        }
        // (K, C/groups, nd, nh, nw): convolution tap u is transposed tap last - u step.
        std::vector<uint16_t> sub(size_t(G * Kg * Cg * td.taps * th.taps * tw.taps));
        size_t at = 0;
        for (int64_t g = 0; g < G; ++g)
          for (int64_t k = 0; k < Kg; ++k)
            for (int64_t c = 0; c < Cg; ++c)
              for (int64_t ud = 0; ud < td.taps; ++ud)
                for (int64_t uh = 0; uh < th.taps; ++uh)
                  for (int64_t uw = 0; uw < tw.taps; ++uw) {
                    const int64_t a = td.last - ud * td.step, i = th.last - uh * th.step, j = tw.last - uw * tw.step;
                    sub[at++] = w[((((g * Cg + c) * Kg + k) * kernel_d_ + a) * kernel_h_ + i) * kernel_w_ + j];
                  }
        made->plans.push_back(std::make_unique<ConvPlan>(DType::BFloat16, sub.data(), weights_.bias(), G * Kg, Cg,
                                                         td.taps, th.taps, tw.taps, /*copy=*/true, /*reused=*/true));
      }
  constexpr size_t kKept = 8;  // (stride, dilation, groups) kept per plan
  if (phases_.size() == kKept) phases_.erase(phases_.begin());
  phases_.emplace_back(key, std::move(made));
  return phases_.back().second;
}

bool ConvTransposePlan::runs_phases(const ConvTransposeProblem& p, const ConvAlgorithm** kernel, int64_t* count,
                                    size_t* scratch, bool forced) const {
  // Small channels-first problems of several phases: the scratch copies and the calls cost
  // more than the float32 kernel, which writes every phase in place (docs/tuning.md, "bfloat16
  // transposed convolution").
  const bool phased = p.stride_d * p.stride_h * p.stride_w > 1;
  if (!forced && p.layout == Layout::NCHW && phased && conv_transpose_flops(p) < kSmallPhasedFlops) return false;
  const std::shared_ptr<const Phases> kept = phases_for(p);  // (another thread may drop it from the list)
  const Phases& phases = *kept;
  bool all = true;
  int64_t most = -1;
  for_each_phase(p, [&](const PhaseGrid& g) {
    if (!all || !has_taps(g)) return;
    if (!phases.plans[size_t(phase_index(p, g))]) {  // (a plan without weights)
      all = false;
      return;
    }
    const ConvPlan& plan = *phases.plans[size_t(phase_index(p, g))];
    const ConvChoice c = plan.choose(phase_problem(p, g));
    if (c.algorithm->dtype != DType::BFloat16) {
      all = false;
      return;
    }
    if (count) ++*count;
    if (scratch && !writes_y(p, g) && !in_place_problem(p, g, plan))
      *scratch = std::max(*scratch, phase_scratch_bytes(p, g));
    const int64_t taps = g.d.taps * g.h.taps * g.w.taps;
    if (kernel && taps > most) *kernel = c.algorithm, most = taps;
  });
  return all;
}

void ConvTransposePlan::run_phases(const ConvTransposeProblem& p, const void* x, void* y, int max_threads,
                                   const ConvAlgorithm* kernel) {
  const std::shared_ptr<const Phases> kept = phases_for(p);  // (another thread may drop it from the list)
  const Phases& phases = *kept;
  const auto* bias = static_cast<const float*>(weights_.bias());
  std::vector<PhaseGrid> grid;
  for_each_phase(p, [&](const PhaseGrid& g) { grid.push_back(g); });
  // With at least as many phases as threads, each thread runs whole phases on one thread (one
  // team for the call instead of one per phase and copy: a team's every barrier waits for its
  // slowest thread, dear on a shared machine); else the phases one after the other, each on
  // the team.  Each phase's bits do not depend on its threads, so neither do y's.
  const int team = transpose_threads(p, resolve_threads(max_threads));
  const bool spread = team > 1 && int64_t(grid.size()) >= team;
  const int each = spread ? 1 : max_threads;
  const auto run_one = [&](const PhaseGrid& g) {
    const int max_threads = each;
    if (!has_taps(g)) {
      if (p.y_float32) store_phase<float>(p, g, nullptr, bias, static_cast<float*>(y), max_threads);
      else store_phase<uint16_t>(p, g, nullptr, bias, static_cast<uint16_t*>(y), max_threads);
      return;
    }
    ConvPlan& plan = *phases.plans[size_t(phase_index(p, g))];
    const ConvProblem q = phase_problem(p, g);
    if (writes_y(p, g)) return plan.run(q, x, y, kernel, max_threads);
    if (const auto in_place = kernel ? std::nullopt : in_place_problem(p, g, plan)) {
      // Channels-last: the phase's pixels are s_w K values apart in y, its rows s_h rows, its
      // depth slices (each image's, as a batch) s_d slices.
      const int64_t K = p.out_channels, es = p.y_float32 ? 4 : 2, xes = p.x_float32 ? 4 : 2;
      const int64_t plane = p.out_h * p.out_w * K;
      const bool slices = in_place->depth_slices;  // (not told by the batch: in_d may equal it)
      const Strides4 ys{(slices ? p.stride_d : p.out_d) * plane, 1, p.stride_h * p.out_w * K, p.stride_w * K};
      for (int64_t n = 0; n < (slices ? p.batch : 1); ++n) {
        const auto* from = static_cast<const unsigned char*>(x) + n * p.in_d * p.in_h * p.in_w * p.in_channels * xes;
        auto* at = static_cast<unsigned char*>(y) + ((n * p.out_d + g.rd) * plane + (g.rh * p.out_w + g.rw) * K) * es;
        plan.run_strided(in_place->problem, from, at, ys, max_threads);
      }
      return;
    }
    const size_t bytes = phase_scratch_bytes(p, g);
    check_workspace(bytes, "conv_transpose bfloat16 phase outputs");
    auto scratch = SpareBuffer<PhaseScratchTag>::take(bytes);
    plan.run(q, x, scratch.get(), kernel, max_threads);
    if (p.y_float32)
      store_phase<float>(p, g, reinterpret_cast<const float*>(scratch.get()), bias, static_cast<float*>(y),
                         max_threads);
    else
      store_phase<uint16_t>(p, g, reinterpret_cast<const uint16_t*>(scratch.get()), bias, static_cast<uint16_t*>(y),
                            max_threads);
  };
  if (!spread) {
    for (const PhaseGrid& g : grid) run_one(g);
    return;
  }
  std::exception_ptr failed;
  std::mutex failed_mutex;
  const int64_t count = int64_t(grid.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
  for (int64_t i = 0; i < count; ++i) {
    // (each phase's kernels on this thread alone: parallel_region gives them a team of one)
    try {
      run_one(grid[size_t(i)]);
    } catch (...) {
      std::lock_guard<std::mutex> lock(failed_mutex);
      if (!failed) failed = std::current_exception();
    }
  }
  if (failed) std::rethrow_exception(failed);
}

ConvTransposePlan& ConvTransposePlan::widened_plan() const {
  ForkWaitsSection section;
  std::lock_guard<std::mutex> lock(bf16_mutex_);
  if (!widened_) {
    const int64_t count = in_channels_ * group_out_ * kernel_d_ * kernel_h_ * kernel_w_;
    const std::shared_ptr<const void> source = weights_.source();
    std::vector<float> wide(static_cast<size_t>(count));
    if (source) bf16_to_float32(static_cast<const uint16_t*>(source.get()), wide.data(), count, 1);
    widened_ = std::make_unique<ConvTransposePlan>(DType::Float32, wide.data(), weights_.bias(), bias_size_,
                                                   in_channels_, group_out_, kernel_d_, kernel_h_, kernel_w_,
                                                   /*copy=*/true, shared_);
  }
  return *widened_;
}

void ConvTransposePlan::run_widened(const ConvTransposeProblem& p, const void* x, void* y,
                                    const ConvTransposeAlgorithm* forced, int max_threads) {
  const ConvTransposeProblem q = widened_transpose_problem(p);
  cppconv::run_widened(x, p.x_float32, q.batch * q.in_channels * q.in_d * q.in_h * q.in_w, y, p.y_float32,
                       q.batch * q.out_channels * q.out_d * q.out_h * q.out_w, max_threads,
                       "conv_transpose float32 copies of bfloat16 operands",
                       [&](const float* xf, float* yf) { widened_plan().run(q, xf, yf, forced, max_threads); });
}

int64_t conv_transpose_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after,
                                   int64_t output_padding, int64_t dilation) {
  // Nothing wraps for any non-negative int64 arguments (UBSan checks this): a term past
  // kMaxIndexExtent gives kMaxIndexExtent, a size that callers refuse as too large.
  int64_t span, reach;
  if (std::max({in, pad_before, pad_after, output_padding}) >= kMaxIndexExtent ||
      mul_overflows(in - 1, stride, &span) || mul_overflows(dilation, kernel - 1, &reach) ||
      std::max(span, reach) >= kMaxIndexExtent)
    return kMaxIndexExtent;
  return span + reach + output_padding + 1 - pad_before - pad_after;  // every term below 2^61
}

double conv_transpose_flops(const ConvTransposeProblem& p) {
  // Every input pixel meets every tap once (taps that land in the cropped padding included).
  return 2.0 * double(p.batch) * double(p.in_channels) * double(p.in_d) * double(p.in_h) * double(p.in_w) *
         double(p.out_channels / p.groups) * double(p.kernel_d) * double(p.kernel_h) * double(p.kernel_w);
}

namespace {
bool takes_bf16(const ConvTransposeProblem& p) { return p.dtype == DType::BFloat16; }
size_t no_bytes(const ConvTransposeProblem&) { return 0; }
size_t no_workspace(const ConvTransposeProblem&, int) { return 0; }
void not_run(const ConvTransposeCall&) { throw std::logic_error("stride_phases runs through ConvTransposePlan"); }
}  // namespace

const ConvTransposeAlgorithm kStridePhases = {"stride_phases_bf16", DType::BFloat16, &takes_bf16, &no_bytes, nullptr,
                                              &no_workspace,        &not_run};

std::vector<const ConvTransposeAlgorithm*> all_conv_transpose_algorithms() { return kConvTransposeFamily.all(); }

const ConvTransposeAlgorithm* find_conv_transpose_algorithm(const std::string& name) {
  return name == kStridePhases.name ? &kStridePhases : kConvTransposeFamily.find(name);
}

ConvTransposePlan::ConvTransposePlan(DType dtype, const void* weight, const void* bias, int64_t bias_size,
                                     int64_t in_channels, int64_t group_out_channels, int64_t kernel_d,
                                     int64_t kernel_h, int64_t kernel_w, bool copy, bool shared)
    : dtype_(dtype), in_channels_(in_channels), group_out_(group_out_channels), kernel_d_(kernel_d),
      kernel_h_(kernel_h), kernel_w_(kernel_w), bias_size_(bias ? bias_size : 0), shared_(shared),
      weights_(dtype, weight, size_t(in_channels * group_out_channels * kernel_d * kernel_h * kernel_w), bias,
               size_t(bias ? bias_size : 0), copy, shared) {}

ConvTransposeChoice ConvTransposePlan::choose(const ConvTransposeProblem& p, int max_threads) const {
  const KernelTable& table = active_table();
  const int threads = transpose_threads(p, resolve_threads(max_threads));
  if (dtype_ == DType::BFloat16) {
    ConvTransposeChoice c{nullptr, table.isa_name, threads, 0, 0};
    if (runs_phases(p, &c.conv_algorithm, &c.phases, &c.workspace_bytes)) return c;
    c = widened_plan().choose(widened_transpose_problem(p), max_threads);
    c.widened = true;
    return c;
  }
  const ConvTransposeAlgorithm* chosen = kConvTransposeFamily.choose(table, p);
  return {chosen, table.isa_name, threads, chosen->workspace_bytes(p, threads), chosen->packed_bytes(p)};
}

void ConvTransposePlan::run(const ConvTransposeProblem& p, const void* x, void* y, const ConvTransposeAlgorithm* forced,
                            int max_threads, const ConvAlgorithm* phase_kernel) {
  if (p.dtype != dtype_ || p.in_channels != in_channels_ || p.out_channels != group_out_ * p.groups ||
      p.kernel_d != kernel_d_ || p.kernel_h != kernel_h_ || p.kernel_w != kernel_w_ ||
      (has_bias() && bias_size_ != p.out_channels))
    throw std::invalid_argument("conv_transpose problem does not match the plan's weights");
  if (p.batch == 0 || p.out_channels == 0 || p.out_d < 1 || p.out_h < 1 || p.out_w < 1) return;
  if (phase_kernel) {
    if (dtype_ != DType::BFloat16 || phase_kernel->dtype != DType::BFloat16)
      throw std::invalid_argument(std::string("algorithm ") + phase_kernel->name +
                                  " runs the phases of a bfloat16 transposed convolution only");
    return run_phases(p, x, y, max_threads, phase_kernel);
  }
  if (forced == &kStridePhases) {
    if (dtype_ != DType::BFloat16 || !runs_phases(p, nullptr, nullptr, nullptr, /*forced=*/true))
      throw std::invalid_argument(std::string("algorithm ") + kStridePhases.name +
                                  " does not accept this problem (a bfloat16 kernel must take every phase)");
    return run_phases(p, x, y, max_threads);
  }
  if (dtype_ == DType::BFloat16) {
    if (!forced && runs_phases(p, nullptr, nullptr, nullptr)) return run_phases(p, x, y, max_threads);
    return run_widened(p, x, y, forced, max_threads);
  }
  ConvTransposeChoice choice = choose(p, max_threads);
  if (forced) {
    require_accepts(*forced, p);
    choice.algorithm = forced;
  }
  ConvTransposeCall call;
  call.p = p;
  call.x = x;
  const std::shared_ptr<const void> source = weights_.source();  // (a transposed plan keeps its copy)
  call.weight = source.get();
  call.packed = weights_.packed(*choice.algorithm, p, choice.threads);
  call.bias = weights_.bias();
  call.y = y;
  // Depth and height together are the rows of a C-contiguous tensor, in either layout.
  call.x_stride = contiguous_strides(p.layout, p.in_channels, p.in_d * p.in_h, p.in_w);
  call.y_stride = contiguous_strides(p.layout, p.out_channels, p.out_d * p.out_h, p.out_w);
  call.x_stride_d = p.in_h * call.x_stride.h;
  call.y_stride_d = p.out_h * call.y_stride.h;
  call.num_threads = choice.threads;
  choice.algorithm->run(call);
}

}  // namespace cppconv
