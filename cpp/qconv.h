// The quantized convolution driver (ONNX QLinearConv / ConvInteger): a plan holds the centred
// int16 weights, the int32 bias and each algorithm's packed copy; a call picks the first
// algorithm of the active ISA's list that accepts the problem, the reference last.  Results are
// exact integers requantized in float32, so every algorithm gives the same bits.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <set>
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
};

class QConvPlan {
 public:
  // weight: (K, C/groups, kd, kh, kw) centred int16 values (w - w_zero_point[k]); bias (K,) or
  // nullptr; both copied.  Packed for every algorithm at once (packing depends only on the
  // weights and groups, which a plan fixes), so runs share it without locks.  `only`: pack those
  // algorithms alone (a one-call plan: the active table's and a forced one), where packing them
  // all would cost more than the call; another that a run chooses is packed for that run.
  QConvPlan(const int16_t* weight, const int32_t* bias, int64_t out_channels, int64_t group_in_channels,
            int64_t kernel_d, int64_t kernel_h, int64_t kernel_w, int64_t groups,
            const std::vector<const QConvAlgorithm*>* only = nullptr);

  QConvChoice choose(const ConvProblem& p, int max_threads, const QConvAlgorithm* forced) const;
  // call.p, x, y, the quantization fields set; the plan fills in the weights.  `forced` as in
  // ConvPlan::run; max_threads > 0 caps the threads.
  void run(QConvCall call, const QConvAlgorithm* forced = nullptr, int max_threads = 0) const;

  // Whether a's pack() declined these weights: choose() passes it over, forcing it throws.
  bool refused(const QConvAlgorithm* a) const { return refused_.count(a) > 0; }
  // a's packing of these weights into buffer (empty where a packs none); false: a refused them.
  bool pack_into(const QConvAlgorithm* a, std::vector<unsigned char>& buffer) const;

  int64_t out_channels() const { return out_channels_; }
  int64_t group_in_channels() const { return group_in_; }
  int64_t groups() const { return groups_; }
  int64_t kernel_d() const { return kernel_d_; }
  int64_t kernel_h() const { return kernel_h_; }
  int64_t kernel_w() const { return kernel_w_; }

 private:
  int64_t out_channels_, group_in_, kernel_d_, kernel_h_, kernel_w_, groups_;
  std::vector<int16_t> weight_;
  std::vector<int32_t> bias_;
  bool has_bias_;
  std::map<const QConvAlgorithm*, std::vector<unsigned char>> packed_;
  std::set<const QConvAlgorithm*> refused_;  // whose pack() declined these weights
};

}  // namespace cppconv
