// What the operator drivers (conv.cpp, conv_transpose.cpp, pool.cpp) share: the algorithm
// lists and the choice among them, thread counts, contiguous strides, and a plan's weights
// with their packed copies.  Driver code only (compiled once, with the default flags), never
// included by the per-ISA kernel sources.
#pragma once
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "conv_problem.h"
#include "dispatch.h"
#include "kernels/kernel_table.h"

namespace cppconv {

inline size_t dtype_size(DType d) { return kDTypes[int(d)].size; }

// Whether this process was forked after cppconv was loaded (see driver.cpp).
bool in_forked_child();

// Element strides of a C-contiguous tensor of logical shape (n, c, h, w) in `layout`.
inline Strides4 contiguous_strides(Layout layout, int64_t c, int64_t h, int64_t w) {
  if (layout == Layout::NCHW) return {c * h * w, h * w, w, 1};
  return {h * w * c, 1, w * c, c};
}

// Threads for `work` (flops, or element visits for pooling), at most max_threads: about
// 20 us of single-threaded work per extra thread pays for waking it.
inline int threads_for_work(double work, int max_threads) {
#if defined(_OPENMP)
  const double useful = std::max(1.0, work / 1.0e6);
  return int(std::max(1.0, std::min<double>(max_threads, useful)));
#else
  (void)work;
  (void)max_threads;
  return 1;
#endif
}

// A value a memory-bound pass reads or writes costs about as much time as this many flops of a
// convolution's arithmetic: the weight of data movement in threads_for_work.
constexpr double kFlopsPerValueMoved = 32.0;

// Whether algorithm `a` may serve problem p under p's precision mode.  Only convolution has
// algorithms looser than the direct sum; every other family always meets its problems' bound.
template <class Algorithm, class Problem>
bool meets_precision(const Algorithm&, const Problem&) {
  return true;
}
inline bool meets_precision(const ConvAlgorithm& a, const ConvProblem& p) { return a.accuracy <= p.precision; }

// Whether `a` may be given p as it is: a convolution algorithm takes a problem with a depth axis
// only where it says so (ConvAlgorithm::takes_depth); the other families' problems are planar.
template <class Algorithm, class Problem>
bool takes_rank(const Algorithm&, const Problem&) {
  return true;
}
inline bool takes_rank(const ConvAlgorithm& a, const ConvProblem& p) { return a.takes_depth || !has_depth(p); }

// One operator's algorithms: where they sit in a KernelTable, and the references that end
// every list.
template <class Algorithm>
struct AlgorithmFamily {
  const Algorithm* const* KernelTable::* list;
  int KernelTable::* count;
  const Algorithm* reference_f32;
  const Algorithm* reference_f64;
  const Algorithm* reference_bf16 = nullptr;  // a family with BFloat16 problems

  const Algorithm* reference(DType d) const {
    return d == DType::Float32 ? reference_f32 : d == DType::BFloat16 ? reference_bf16 : reference_f64;
  }

  // The first of `table`'s algorithms that this CPU runs and that accepts p (oneDNN style),
  // else the reference.
  template <class Problem>
  const Algorithm* choose(const KernelTable& table, const Problem& p) const {
    for (int i = 0; i < table.*count; ++i) {
      const Algorithm& a = *(table.*list)[i];
      if (a.dtype == p.dtype && has_cpu_features(a.features) && meets_precision(a, p) && takes_rank(a, p) &&
          a.accepts(p))
        return &a;
    }
    return reference(p.dtype);
  }

  // Every algorithm this machine can run: each available ISA's, then the references.
  std::vector<const Algorithm*> all() const {
    std::vector<const Algorithm*> found;
    for (const std::string& isa : available_isas()) {
      const KernelTable& t = table_for_isa(isa);
      for (int i = 0; i < t.*count; ++i)
        if (has_cpu_features((t.*list)[i]->features)) found.push_back((t.*list)[i]);
    }
    found.push_back(reference_f32);
    found.push_back(reference_f64);
    if (reference_bf16) found.push_back(reference_bf16);
    return found;
  }

  const Algorithm* find(const std::string& name) const {
    for (const Algorithm* a : all())
      if (name == a->name) return a;
    return nullptr;
  }
};

// A caller-named algorithm (tests, benchmarks) must run on this CPU and accept the problem.
template <class Algorithm>
void require_cpu_features(const Algorithm& a) {
  if (!has_cpu_features(a.features))
    throw std::invalid_argument(std::string("algorithm ") + a.name +
                                " needs CPU features this machine lacks or CPPCONV_MAX_ISA excludes");
}
template <class Algorithm, class Problem>
void require_accepts(const Algorithm& a, const Problem& p) {
  require_cpu_features(a);
  if (a.dtype != p.dtype || !takes_rank(a, p) || !a.accepts(p))
    throw std::invalid_argument(std::string("algorithm ") + a.name + " does not accept this problem");
}

// A buffer for one call's large temporary (one-shot packed weights, a subsampled input) that
// goes back to a per-thread spare (one per Tag) when released and is taken again by the next
// request that fits: fresh megabytes every call would cost a page fault per 4 KiB, as much as
// the work they hold.  A buffer has one owner at a time, so it may outlive the call.
template <class Tag>
class SpareBuffer {
 public:
  static constexpr size_t kMaxSpareBytes = size_t(64) << 20;  // larger ones are not kept

  static SpareBuffer take(size_t bytes) {
    SpareBuffer& s = spare();
    if (s.capacity_ >= bytes) return std::move(s);
    return SpareBuffer(std::unique_ptr<unsigned char[]>(new unsigned char[bytes]), bytes);
  }
  SpareBuffer() = default;
  SpareBuffer(SpareBuffer&& o) noexcept : data_(std::move(o.data_)), capacity_(o.capacity_) { o.capacity_ = 0; }
  SpareBuffer& operator=(SpareBuffer&& o) noexcept {
    data_ = std::move(o.data_);
    capacity_ = o.capacity_;
    o.capacity_ = 0;
    return *this;
  }
  ~SpareBuffer() {
    SpareBuffer& s = spare();
    if (data_ && this != &s && capacity_ <= kMaxSpareBytes && capacity_ > s.capacity_) s = std::move(*this);
  }
  unsigned char* get() const { return data_.get(); }

 private:
  SpareBuffer(std::unique_ptr<unsigned char[]> d, size_t c) : data_(std::move(d)), capacity_(c) {}
  static SpareBuffer& spare() {
    thread_local SpareBuffer buffer;
    return buffer;
  }
  std::unique_ptr<unsigned char[]> data_;
  size_t capacity_ = 0;
};
struct PackedWeightsTag {};

// A plan's weights and bias: copied, or borrowed (a one-shot call's for the call, or a
// layer's immutable arrays, kept alive by the binding), plus each algorithm's packed form,
// built on first use and then shared between threads.  Those shared (a layer's, which any
// thread may call) are on a list, so that fork() can wait until none is packing (see
// driver.cpp): a child must not inherit a lock held by a thread it does not have.  A one-shot
// plan is only ever reached by the thread whose call it serves.
class PlanWeights {
 public:
  PlanWeights(DType dtype, const void* weight, size_t weight_count, const void* bias, size_t bias_count, bool copy,
              bool shared)
      : weight_(weight), bias_(bias) {
    if (copy) {
      const auto* w = static_cast<const unsigned char*>(weight);
      owned_weight_.assign(w, w + weight_count * dtype_size(dtype));
      weight_ = owned_weight_.data();
      if (bias) {
        const auto* b = static_cast<const unsigned char*>(bias);
        owned_bias_.assign(b, b + bias_count * kDTypes[int(dtype)].bias_size);
        bias_ = owned_bias_.data();
      }
    }
    if (shared) enlist();
  }
  ~PlanWeights();
  PlanWeights(const PlanWeights&) = delete;
  PlanWeights& operator=(const PlanWeights&) = delete;

  const void* weight() const { return weight_; }
  const void* bias() const { return bias_; }

  // The weights as `a` packs them for problems like p (packing depends on the weights'
  // shape and the groups only), or nullptr for an algorithm that packs nothing.
  template <class Algorithm, class Problem>
  const void* packed(const Algorithm& a, const Problem& p, int threads) {
    const size_t bytes = a.packed_bytes(p);
    if (bytes == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mutex_);
    // One plan's problems can pack differently: a 3-D plan's lowerings give its kernels
    // (kd, 1) or (kh, kw) kernels (see Lowering in conv.h).
    const auto key = std::make_tuple(static_cast<const void*>(&a), p.groups, p.kernel_h, p.kernel_w);
    auto it = packed_.find(key);
    if (it == packed_.end()) {
      // Not zero-filled: pack writes every byte, and clearing megabytes first would double
      // the cost a one-shot call pays.
      auto buffer = SpareBuffer<PackedWeightsTag>::take(bytes);
      a.pack(p, weight_, buffer.get(), threads);
      it = packed_.emplace(key, std::move(buffer)).first;
    }
    return it->second.get();
  }

 private:
  std::vector<unsigned char> owned_weight_, owned_bias_;
  const void* weight_;
  const void* bias_;
  void enlist();
  friend struct ForkHandlers;

  std::mutex mutex_;
  std::map<std::tuple<const void*, int64_t, int64_t, int64_t>, SpareBuffer<PackedWeightsTag>> packed_;
  bool listed_ = false;          // on the list of the layers' instances
  PlanWeights* prev_ = nullptr;
  PlanWeights* next_ = nullptr;
};

}  // namespace cppconv
