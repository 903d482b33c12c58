#include "driver.h"

#include <atomic>
#include <condition_variable>
#include <mutex>

#if defined(__unix__)
#include <pthread.h>
#endif

namespace cppconv {
namespace {

std::atomic<bool> forked_child{false};

// Every listed PlanWeights (see driver.h), guarded by plans_mutex.
std::mutex plans_mutex;
PlanWeights* plans = nullptr;

// The threads inside a ForkWaitsSection (nested ones count once), guarded by sections_mutex,
// which fork() holds from when the count is 0 until it returns (ForkHandlers).  A mutex and a
// count, not a shared_mutex: a child can unlock a mutex the forking thread held, but glibc
// releases a write-locked rwlock only for the thread id that locked it, which a child's
// thread does not have.
std::mutex sections_mutex;
std::condition_variable sections_closed;
int sections_open = 0;
thread_local int section_depth = 0;

}  // namespace

bool in_forked_child() { return forked_child.load(); }

ForkWaitsSection::ForkWaitsSection() {
  if (section_depth++ > 0) return;
  std::lock_guard<std::mutex> lock(sections_mutex);
  ++sections_open;
}

ForkWaitsSection::~ForkWaitsSection() {
  if (--section_depth > 0) return;
  std::lock_guard<std::mutex> lock(sections_mutex);
  if (--sections_open == 0) sections_closed.notify_all();
}

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
//    packed weights whole or not at all.  The other locks held while shared state is built
//    are inside ForkWaitsSections, which fork() waits out first: they take plans_mutex (a plan
//    they make enlists) and PlanWeights' locks (a plan they make packs) inside, never outside.
struct ForkHandlers {
  static void prepare() {
    std::unique_lock<std::mutex> sections(sections_mutex);
    sections_closed.wait(sections, [] { return sections_open == 0; });
    sections.release();  // (held until parent() or child())
    plans_mutex.lock();
    for (PlanWeights* p = plans; p; p = p->next_) p->mutex_.lock();
  }
  static void parent() {
    for (PlanWeights* p = plans; p; p = p->next_) p->mutex_.unlock();
    plans_mutex.unlock();
    sections_mutex.unlock();
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
