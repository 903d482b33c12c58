// The quantized convolution driver (ONNX QLinearConv / ConvInteger): a plan holds the centred
// int16 weights, the int32 bias and each algorithm's packed copy; a call picks the first
// algorithm of the active ISA's list that accepts the problem, the reference last.  Results are
// exact integers requantized in float32, so every algorithm gives the same bits.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "conv.h"
#include "qconv_problem.h"

namespace cppconv {

extern const QConvAlgorithm qconv_reference;

// Every quantized algorithm this machine can run (each available ISA's, then the reference).
std::vector<const QConvAlgorithm*> all_qconv_algorithms();
const QConvAlgorithm* find_qconv_algorithm(const std::string& name);

// The reference's requantization of one accumulator (acc * multiplier, clamped to
// [y_min, y_max] - y_zero_point, rounded half to even without reading MXCSR's mode).
int32_t requantize_reference(int32_t acc, float multiplier, int32_t y_zero_point, int32_t y_min, int32_t y_max);

struct QConvChoice {
  const QConvAlgorithm* algorithm;
  const char* isa;
  int threads;
  bool live_taps_only = false;  // only the taps that read the input run (see LiveTaps, conv.h)
};

class QConvPlan {
 public:
  // weight: (K, C/groups, kd, kh, kw) centred int16 values (w - w_zero_point[k]); bias (K,) or
  // nullptr; both copied.  Packed for every algorithm at once (packing depends only on the
  // weights and groups, which a plan fixes), so runs share it without locks; or, pack_on_use
  // (a one-call plan, where packing them all would cost more than the call), each algorithm
  // when a call first chooses it, which is the one the call runs.
  QConvPlan(const int16_t* weight, const int32_t* bias, int64_t out_channels, int64_t group_in_channels,
            int64_t kernel_d, int64_t kernel_h, int64_t kernel_w, int64_t groups, bool pack_on_use = false);

  QConvChoice choose(const ConvProblem& p, int max_threads, const QConvAlgorithm* forced) const;
  // call.p, x, y, the quantization fields set; the plan fills in the weights.  `forced` as in
  // ConvPlan::run; max_threads > 0 caps the threads.
  void run(QConvCall call, const QConvAlgorithm* forced = nullptr, int max_threads = 0) const;

  // Whether a's pack() declined these weights: choose() passes it over, forcing it throws.
  bool refused(const QConvAlgorithm* a) const;

  int64_t out_channels() const { return out_channels_; }
  int64_t group_in_channels() const { return group_in_; }
  int64_t groups() const { return groups_; }
  int64_t kernel_d() const { return kernel_d_; }
  int64_t kernel_h() const { return kernel_h_; }
  int64_t kernel_w() const { return kernel_w_; }

 private:
  struct Packed {
    bool refused;
    std::vector<unsigned char> bytes;  // empty where a packs none
  };
  // a's packing of these weights, made here first where the plan packs on use.
  const Packed& packed(const QConvAlgorithm* a) const;
  // a's packing made and kept in `into`.
  const Packed& pack_into(std::map<const QConvAlgorithm*, Packed>& into, const QConvAlgorithm* a) const;
  // choose() of a problem that runs as it is (not through its live taps).
  QConvChoice choose_as_given(const ConvProblem& p, int max_threads, const QConvAlgorithm* forced) const;
  // Where only the reference takes `given` but the problem of the taps that read the input
  // has a kernel (see LiveTaps in conv.h): that problem, in kernel_geometry, and its plan.
  using LiveTapsRun = LiveTaps<QConvPlan>::Run;
  std::optional<LiveTapsRun> live_taps_run(const ConvProblem& given) const;

  int64_t out_channels_, group_in_, kernel_d_, kernel_h_, kernel_w_, groups_;
  std::vector<int16_t> weight_;
  std::vector<int32_t> bias_;
  bool has_bias_;
  bool pack_on_use_;
  // Made by the constructor where the plan does not pack on use, and only read after.
  std::map<const QConvAlgorithm*, Packed> packed_at_start_;
  // The rest (all of them where the plan packs on use; else those a later ISA cap allowed).
  mutable std::mutex packing_mutex_;
  mutable std::map<const QConvAlgorithm*, Packed> packed_on_use_;
  mutable LiveTaps<QConvPlan> live_taps_;
};

}  // namespace cppconv
