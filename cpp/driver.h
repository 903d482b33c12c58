// What the operator drivers (conv.cpp, conv_transpose.cpp, pool.cpp) share: the algorithm
// lists and the choice among them, thread counts, contiguous strides, and a plan's weights
// with their packed copies.  Driver code only (compiled once, with the default flags), never
// included by the per-ISA kernel sources.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "conv_problem.h"
#include "dispatch.h"
#include "kernels/kernel_table.h"

namespace cppconv {

inline size_t dtype_size(DType d) { return kDTypes[int(d)].size; }

// Whether this process was forked after cppconv was loaded (see driver.cpp).
bool in_forked_child();

// Held around every lock other than PlanWeights' that a thread may keep while it builds shared
// state (widened or interleaved weights, a plan of the live taps, an int8 pack): fork() waits
// until no thread is inside one (driver.cpp), so that a child never inherits such a lock held
// by a thread it does not have, nor the state half built.  Taken before that lock; nests.
class ForkWaitsSection {
 public:
  ForkWaitsSection();
  ~ForkWaitsSection();
  ForkWaitsSection(const ForkWaitsSection&) = delete;
  ForkWaitsSection& operator=(const ForkWaitsSection&) = delete;
};

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
  // A new buffer of `bytes` exactly, not the spare: for what a plan keeps (a layer's packs),
  // which would otherwise hold a larger spare for as long as the layer lives.
  static SpareBuffer sized(size_t bytes) {
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
  size_t capacity() const { return capacity_; }

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

// The function that gives an algorithm's packed weights back as they were (ConvAlgorithm::unpack),
// nullptr for the families whose packs never do.
template <class Algorithm>
auto unpack_of(const Algorithm&) -> void (*)(const ConvProblem&, const void*, void*) {
  return nullptr;
}
inline auto unpack_of(const ConvAlgorithm& a) -> void (*)(const ConvProblem&, const void*, void*) { return a.unpack; }

// A plan's weights and bias: copied, or borrowed (a one-shot call's for the call, or a
// layer's immutable arrays, kept alive by the binding), plus each algorithm's packed form,
// built on first use and then shared between threads.  Those shared (a layer's, which any
// thread may call) are on a list, so that fork() can wait until none is packing (see
// driver.cpp): a child must not inherit a lock held by a thread it does not have.  A one-shot
// plan is only ever reached by the thread whose call it serves.
// A copy made with keeps_source=false is the only copy of a layer's weights: it is freed once a
// pack that gives the weights back (ConvAlgorithm::unpack) exists, and unpacked again where
// something reads it (another algorithm packs or reads the weights as they are).
class PlanWeights {
 public:
  PlanWeights(DType dtype, const void* weight, size_t weight_count, const void* bias, size_t bias_count, bool copy,
              bool shared, bool keeps_source = true)
      : weight_(weight), bias_(bias), weight_bytes_(weight_count * dtype_size(dtype)), keeps_source_(keeps_source) {
    if (copy && weight) {
      owned_weight_ = std::shared_ptr<unsigned char[]>(new unsigned char[weight_bytes_]);
      std::memcpy(owned_weight_.get(), weight, weight_bytes_);
      weight_ = owned_weight_.get();
    }
    if (copy && bias) {
      const auto* b = static_cast<const unsigned char*>(bias);
      owned_bias_.assign(b, b + bias_count * kDTypes[int(dtype)].bias_size);
      bias_ = owned_bias_.data();
    }
    if (shared) enlist();
  }
  ~PlanWeights();
  PlanWeights(const PlanWeights&) = delete;
  PlanWeights& operator=(const PlanWeights&) = delete;

  // The weights as given (unpacked first where the copy was freed), kept alive for as long as
  // the caller holds them: another thread may free the plan's copy meanwhile.  Empty for a
  // plan of shapes alone (explain).
  std::shared_ptr<const void> source() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return source_locked();
  }
  // Copies the weights as given (weight_bytes() of them) into `out`, from the pack where the
  // plan's copy was freed, without keeping them.
  void copy_weight(void* out) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!weight_ && restore_) restore_(out);
    else if (weight_) std::memcpy(out, weight_, weight_bytes_);
  }
  size_t weight_bytes() const { return weight_bytes_; }
  const void* bias() const { return bias_; }
  // The bytes this plan allocated: its copy of the weights (while it keeps one), the bias and
  // the packs.
  size_t held_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t bytes = (owned_weight_ ? weight_bytes_ : 0) + owned_bias_.size();
    for (const auto& kept : packed_) bytes += kept.second.capacity();
    return bytes;
  }

  // The weights as `a` packs them for problems like p (packing depends on the weights'
  // shape and the groups only), or nullptr for an algorithm that packs nothing.
  template <class Algorithm, class Problem>
  const void* packed(const Algorithm& a, const Problem& p, int threads) {
    const size_t bytes = a.packed_bytes(p);
    if (bytes == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mutex_);
    // One plan's problems can pack differently: a 3-D plan's lowerings give its kernels
    // (kd, 1) or (kh, kw) kernels (see Lowering in conv.h), and a kernel may order the channels
    // of a problem that reads depth taps as its tile holds them.
    int64_t depth_taps = 0;
    if constexpr (std::is_same_v<Problem, ConvProblem>) depth_taps = p.depth_taps;
    const auto key = std::make_tuple(static_cast<const void*>(&a), p.groups, p.kernel_h, p.kernel_w, depth_taps);
    auto it = packed_.find(key);
    if (it == packed_.end()) {
      const std::shared_ptr<const void> source = source_locked();
      // Not zero-filled: pack writes every byte, and clearing megabytes first would double
      // the cost a one-shot call pays.
      auto buffer = listed_ ? SpareBuffer<PackedWeightsTag>::sized(bytes) : SpareBuffer<PackedWeightsTag>::take(bytes);
      a.pack(p, source.get(), buffer.get(), threads);
      it = packed_.emplace(key, std::move(buffer)).first;
      free_source_if_unpackable(unpack_of(a), p, it->second.get());
    }
    return it->second.get();
  }

 private:
  // (const: unpacking gives back the same values)
  std::shared_ptr<const void> source_locked() const {
    if (!weight_ && restore_) {
      owned_weight_ = std::shared_ptr<unsigned char[]>(new unsigned char[weight_bytes_]);
      restore_(owned_weight_.get());
      weight_ = owned_weight_.get();
    }
    if (owned_weight_) return std::shared_ptr<const void>(owned_weight_, weight_);
    return std::shared_ptr<const void>(std::shared_ptr<const void>(), weight_);  // borrowed: the owner keeps it
  }
  template <class Problem>
  void free_source_if_unpackable(void (*unpack)(const ConvProblem&, const void*, void*), const Problem& p,
                                 const void* pack) {
    if constexpr (std::is_same_v<Problem, ConvProblem>) {
      // (a pack of the whole weight: its problem's filters x channels x taps are all of them)
      const size_t packed_count = size_t(p.out_channels * (p.in_channels / p.groups) * p.kernel_h * p.kernel_w);
      if (keeps_source_ || !owned_weight_ || !unpack || packed_count * kDTypes[int(p.dtype)].size != weight_bytes_)
        return;
      restore_ = [unpack, p, pack](void* out) { unpack(p, pack, out); };
      owned_weight_.reset();  // (freed here, or by the last caller still reading it)
      weight_ = nullptr;
    }
  }

  mutable std::shared_ptr<unsigned char[]> owned_weight_;
  std::vector<unsigned char> owned_bias_;
  mutable const void* weight_;
  const void* bias_;
  size_t weight_bytes_;
  bool keeps_source_;
  // Writes the weights from a pack, where the copy was freed (set once, never cleared: packs stay).
  std::function<void(void*)> restore_;
  void enlist();
  friend struct ForkHandlers;

  mutable std::mutex mutex_;
  std::map<std::tuple<const void*, int64_t, int64_t, int64_t, int64_t>, SpareBuffer<PackedWeightsTag>> packed_;
  bool listed_ = false;          // on the list of the layers' instances
  PlanWeights* prev_ = nullptr;
  PlanWeights* next_ = nullptr;
};

}  // namespace cppconv
