#include "driver.h"

#include <atomic>

#if defined(__unix__)
#include <pthread.h>
#endif

namespace cppconv {
namespace {

std::atomic<bool> forked_child{false};

// Every listed PlanWeights (see driver.h), guarded by plans_mutex.
std::mutex plans_mutex;
PlanWeights* plans = nullptr;

}  // namespace

bool in_forked_child() { return forked_child.load(); }

void PlanWeights::enlist() {
  std::lock_guard<std::mutex> lock(plans_mutex);
  next_ = plans;
  if (plans) plans->prev_ = this;
  plans = this;
  listed_ = true;
}

PlanWeights::~PlanWeights() {
  if (!listed_) return;
  std::lock_guard<std::mutex> lock(plans_mutex);
  if (prev_) prev_->next_ = next_;
  else plans = next_;
  if (next_) next_->prev_ = prev_;
}

// What a process forked after cppconv was loaded must not inherit, or must inherit whole.
//  - libgomp's thread pool does not survive fork(): the child inherits the pool's bookkeeping
//    but not its threads, and its next parallel region with more than one thread waits for
//    them forever.  So a forked child (multiprocessing's default on Linux) runs every kernel
//    with one thread; a team of one never touches the pool.  (Builds without OpenMP do the
//    same, so that the rule is one everywhere.)
//  - A plan's lock, held by another thread packing the weights during the fork, would stay
//    locked in the child, where that thread does not exist: the child's first call on the
//    layer would wait forever.  So fork() waits until no plan is packing (each lock is taken
//    before the fork and released after it, in both processes), and the child inherits the
//    packed weights whole or not at all.
struct ForkHandlers {
  static void prepare() {
    plans_mutex.lock();
    for (PlanWeights* p = plans; p; p = p->next_) p->mutex_.lock();
  }
  static void parent() {
    for (PlanWeights* p = plans; p; p = p->next_) p->mutex_.unlock();
    plans_mutex.unlock();
  }
  static void child() {
    forked_child.store(true);
    parent();
  }
};

#if defined(__unix__)
namespace {
const int fork_handlers_registered = pthread_atfork(ForkHandlers::prepare, ForkHandlers::parent, ForkHandlers::child);
}  // namespace
#endif

}  // namespace cppconv
