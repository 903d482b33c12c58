#include "qconv.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>

#include "dispatch.h"
#include "driver.h"

#if defined(__SSE__) || defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define CPPCONV_QCONV_MXCSR 1
#endif

namespace cppconv {

int32_t requantize_reference(int32_t acc, float multiplier, int32_t y_zero_point, int32_t y_min, int32_t y_max) {
  float v = float(acc) * multiplier;
  v = std::min(std::max(v, float(y_min - y_zero_point)), float(y_max - y_zero_point));
  // |v| <= 510 here, so v - floor(v) is exact; ties go to the even neighbour.
  const float below = std::floor(v), fraction = v - below;
  const int32_t r = int32_t(below);
  return r + ((fraction > 0.5f || (fraction == 0.5f && (r & 1))) ? 1 : 0) + y_zero_point;
}

namespace {

// MXCSR's rounding set to nearest-even while the reference converts and multiplies (the
// caller's restored after): the kernels do the same, so a caller's mode changes no result.
class NearestRoundingScope {
 public:
#if defined(CPPCONV_QCONV_MXCSR)
  NearestRoundingScope() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ & ~0x6000u); }
  ~NearestRoundingScope() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

// y[n, k, od, oh, ow] = requantize(bias[k] + sum over c, a, i, j of
//   weight[k, c, a, i, j] * (xpad[n, g*Cg + c, od*S + a*D, oh*S + i*D, ow*S + j*D] - x_zero_point))
// where padding reads x_zero_point (its term is zero).  Accumulates in int64 (the Python layer
// proves the sum fits int32), single-threaded.
template <class T>
void run_reference_t(const QConvCall& call) {
  const NearestRoundingScope rounding;
  const ConvProblem& p = call.p;
  const T* x = static_cast<const T*>(call.x);
  const int64_t group_in = p.in_channels / p.groups, group_out = p.out_channels / p.groups;
  const int64_t taps = p.kernel_d * p.kernel_h * p.kernel_w, plane = p.out_d * p.out_h * p.out_w;
  const int64_t C = p.in_channels, D = p.in_d, H = p.in_h, W = p.in_w, K = p.out_channels;
  const bool last = p.layout == Layout::NHWC;
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t g = k / group_out;
      for (int64_t od = 0; od < p.out_d; ++od)
        for (int64_t oh = 0; oh < p.out_h; ++oh)
          for (int64_t ow = 0; ow < p.out_w; ++ow) {
            int64_t acc = call.bias ? call.bias[k] : 0;
            for (int64_t c = 0; c < group_in; ++c)
              for (int64_t a = 0; a < p.kernel_d; ++a)
                for (int64_t i = 0; i < p.kernel_h; ++i)
                  for (int64_t j = 0; j < p.kernel_w; ++j) {
                    const int64_t d = od * p.stride_d + a * p.dilation_d - p.pad_front;
                    const int64_t h = oh * p.stride_h + i * p.dilation_h - p.pad_top;
                    const int64_t w = ow * p.stride_w + j * p.dilation_w - p.pad_left;
                    if (d < 0 || d >= D || h < 0 || h >= H || w < 0 || w >= W) continue;  // x_zero_point
                    const int64_t ch = g * group_in + c;
                    const T xv = last ? x[(((n * D + d) * H + h) * W + w) * C + ch]
                                      : x[(((n * C + ch) * D + d) * H + h) * W + w];
                    acc += (int64_t(xv) - call.x_zero_point) *
                           int64_t(call.weight[(k * group_in + c) * taps + (a * p.kernel_h + i) * p.kernel_w + j]);
                  }
            const int64_t pixel = (od * p.out_h + oh) * p.out_w + ow;
            const int64_t at = last ? (n * plane + pixel) * K + k : (n * K + k) * plane + pixel;
            const int32_t acc32 = int32_t(acc);
            switch (call.output) {
              case QOutput::Int32: static_cast<int32_t*>(call.y)[at] = acc32; break;
              case QOutput::Float32:
                static_cast<float*>(call.y)[at] =
                    std::min(std::max(float(acc32) * call.multiplier[k], call.f_min), call.f_max);
                break;
              case QOutput::Quantized: {
                const int32_t q =
                    requantize_reference(acc32, call.multiplier[k], call.y_zero_point, call.y_min, call.y_max);
                if (call.y_signed) static_cast<int8_t*>(call.y)[at] = int8_t(q);
                else static_cast<uint8_t*>(call.y)[at] = uint8_t(q);
                break;
              }
            }
          }
    }
}

void run_reference(const QConvCall& call) {
  if (call.x_signed) run_reference_t<int8_t>(call);
  else run_reference_t<uint8_t>(call);
}

bool accepts_any(const ConvProblem&) { return true; }

std::invalid_argument refused_weights(const QConvAlgorithm& a) {
  return std::invalid_argument(std::string("algorithm ") + a.name +
                               " does not accept these weights (a centred weight w - w_zero_point out of its range)");
}
size_t no_packing(const ConvProblem&) { return 0; }

}  // namespace

const QConvAlgorithm qconv_reference = {"qconv_reference", accepts_any, no_packing, nullptr, run_reference};

std::vector<const QConvAlgorithm*> all_qconv_algorithms() {
  std::vector<const QConvAlgorithm*> found;
  for (const std::string& isa : available_isas()) {
    const KernelTable& t = table_for_isa(isa);
    for (int i = 0; i < t.qconv_count; ++i)
      if (has_cpu_features(t.qconv[i]->features)) found.push_back(t.qconv[i]);
  }
  found.push_back(&qconv_reference);
  return found;
}

const QConvAlgorithm* find_qconv_algorithm(const std::string& name) {
  for (const QConvAlgorithm* a : all_qconv_algorithms())
    if (name == a->name) return a;
  return nullptr;
}

QConvPlan::QConvPlan(const int16_t* weight, const int32_t* bias, int64_t out_channels, int64_t group_in_channels,
                     int64_t kernel_d, int64_t kernel_h, int64_t kernel_w, int64_t groups, bool pack_on_use)
    : out_channels_(out_channels), group_in_(group_in_channels), kernel_d_(kernel_d), kernel_h_(kernel_h),
      kernel_w_(kernel_w), groups_(groups),
      weight_(weight, weight + out_channels * group_in_channels * kernel_d * kernel_h * kernel_w),
      bias_(bias ? std::vector<int32_t>(bias, bias + out_channels) : std::vector<int32_t>()), has_bias_(bias),
      pack_on_use_(pack_on_use) {
  if (!pack_on_use_)
    for (const QConvAlgorithm* a : all_qconv_algorithms()) pack_into(packed_at_start_, a);
}

const QConvPlan::Packed& QConvPlan::packed(const QConvAlgorithm* a) const {
  // (read without a lock, nor a wait for a fork: no call changes it)
  const auto start = packed_at_start_.find(a);
  if (start != packed_at_start_.end()) return start->second;
  ForkWaitsSection section;
  std::lock_guard<std::mutex> lock(packing_mutex_);
  const auto it = packed_on_use_.find(a);
  if (it != packed_on_use_.end()) return it->second;
  return pack_into(packed_on_use_, a);
}

const QConvPlan::Packed& QConvPlan::pack_into(std::map<const QConvAlgorithm*, Packed>& into,
                                              const QConvAlgorithm* a) const {
  ConvProblem shape;  // what packing reads: the weights' shape and the groups
  shape.out_channels = out_channels_;
  shape.in_channels = group_in_ * groups_;
  shape.groups = groups_;
  shape.kernel_d = kernel_d_, shape.kernel_h = kernel_h_, shape.kernel_w = kernel_w_;
  Packed made{false, std::vector<unsigned char>(a->packed_bytes(shape), 0)};
  if (!made.bytes.empty() && !a->pack(shape, weight_.data(), has_bias_ ? bias_.data() : nullptr, made.bytes.data())) {
    made.refused = true;
    made.bytes = {};
  }
  return into.emplace(a, std::move(made)).first->second;  // (std::map: references stay valid)
}

bool QConvPlan::refused(const QConvAlgorithm* a) const { return packed(a).refused; }

std::optional<QConvPlan::LiveTapsRun> QConvPlan::live_taps_run(const ConvProblem& given) const {
  const auto only_reference = [](const ConvProblem& p) {
    const KernelTable& table = active_table();
    for (int i = 0; i < table.qconv_count; ++i)
      if (has_cpu_features(table.qconv[i]->features) && table.qconv[i]->accepts(p)) return false;
    return true;
  };
  std::optional<LiveTapsRun> live =
      live_taps_.run_for(given, only_reference, [&](const ConvProblem& problem, const TapWindow& window) {
        const auto kept = live_tap_weights<int16_t>(weight_.data(), out_channels_ * group_in_, kernel_d_, kernel_h_,
                                                    kernel_w_, window);  // (integers: always some)
        return std::make_shared<QConvPlan>(reinterpret_cast<const int16_t*>(kept->data()),
                                           has_bias_ ? bias_.data() : nullptr, out_channels_, group_in_,
                                           problem.kernel_d, problem.kernel_h, problem.kernel_w, groups_,
                                           /*pack_on_use=*/true);
      });
  // One live tap leaves one-tap axes and often one-pixel planes: the geometry the kernels take.
  if (live) live->problem = kernel_geometry(live->problem);
  return live;
}

QConvChoice QConvPlan::choose(const ConvProblem& p, int max_threads, const QConvAlgorithm* forced) const {
  // (the reference takes every problem as it is: it is the oracle of the lowering)
  if (forced != &qconv_reference)
    if (const auto live = live_taps_run(p)) {
      QConvChoice c = live->plan->choose_as_given(live->problem, max_threads, forced);
      c.live_taps_only = true;
      return c;
    }
  return choose_as_given(p, max_threads, forced);
}

QConvChoice QConvPlan::choose_as_given(const ConvProblem& p, int max_threads, const QConvAlgorithm* forced) const {
  const int cap = resolve_threads(max_threads);
  const KernelTable& table = active_table();
  const QConvAlgorithm* chosen = forced;
  for (int i = 0; !chosen && i < table.qconv_count; ++i)
    if (has_cpu_features(table.qconv[i]->features) && table.qconv[i]->accepts(p) && !refused(table.qconv[i]))
      chosen = table.qconv[i];
  if (!chosen) chosen = &qconv_reference;
  if (forced) require_cpu_features(*forced);
  if (forced && !forced->accepts(p))
    throw std::invalid_argument(std::string("algorithm ") + forced->name + " does not accept this problem");
  if (forced && refused(forced)) throw refused_weights(*forced);
  const bool reference = chosen == &qconv_reference;
  return {chosen, reference ? "reference" : table.isa_name, reference ? 1 : threads_for(p, cap), false};
}

void QConvPlan::run(QConvCall call, const QConvAlgorithm* forced, int max_threads) const {
  if (forced != &qconv_reference)
    if (const auto live = live_taps_run(call.p)) {
      call.p = live->problem;
      return live->plan->run(call, forced, max_threads);
    }
  const QConvChoice choice = choose_as_given(call.p, max_threads, forced);
  const Packed& k = packed(choice.algorithm);  // (choose_as_given packed it, and it did not refuse)
  call.weight = weight_.data();
  call.bias = has_bias_ ? bias_.data() : nullptr;
  call.packed = k.bytes.empty() ? nullptr : k.bytes.data();
  call.num_threads = choice.threads;
  choice.algorithm->run(call);
}

}  // namespace cppconv
