// The CPU kernel's token passes: a step's work over a row's tokens, split across threads
// without a barrier (see TokenPasses). Included by select_cpu.cpp only.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include <unistd.h>

#include <ATen/Parallel.h>

namespace idselect {
namespace {

// One pass over a row's tokens (a step's similarity rows, the norms), split across threads
// without a barrier: the calling thread claims chunks itself, persistent helpers claim what
// they can, and the caller waits only for chunks a helper has claimed. A helper that is not
// running (its core busy with another process) claims nothing and delays nothing; with
// at::parallel_for every pass ended by waiting for every thread, so one busy core made the
// 2-thread kernel slower than 1 thread (issue 20). Results do not depend on who runs a chunk.
class TokenPasses {
 public:
  // Runs fn(j0, j1) over [0, n) in chunks of `grain` tokens, with up to `helpers` helpers.
  template <typename Fn>
  static void run(int64_t n, int64_t grain, int helpers, const Fn& fn) {
    TokenPasses& pool = instance();
    std::unique_lock<std::mutex> owner(pool.owner_, std::try_to_lock);
    if (helpers <= 0 || n <= grain || !owner.owns_lock() || pool.pid_ != getpid()) {
      fn(0, n);  // one chunk, another caller using the pool, or a forked child: no helpers
      return;
    }
    pool.ensure_helpers(helpers);
    const int64_t chunks = (n + grain - 1) / grain;
    // The job's fields are written while claims_ reads "closed" (the previous job left it so):
    // no claim can succeed until the release store below publishes them with a new generation.
    pool.call_.store(&invoke<Fn>, std::memory_order_relaxed);
    pool.fn_.store(&fn, std::memory_order_relaxed);
    pool.n_.store(n, std::memory_order_relaxed);
    pool.grain_.store(grain, std::memory_order_relaxed);
    pool.chunks_.store(chunks, std::memory_order_relaxed);
    pool.helpers_wanted_.store(helpers, std::memory_order_relaxed);
    pool.finished_.store(0, std::memory_order_relaxed);
    const uint64_t generation = (pool.claims_.load(std::memory_order_relaxed) >> 32) + 1;
    pool.claims_.store(generation << 32, std::memory_order_release);
    if (pool.sleepers_.load(std::memory_order_acquire) > 0) {
      std::lock_guard<std::mutex> lock(pool.wake_mutex_);
      pool.wake_.notify_all();
    }
    pool.work(generation, -1);
    // Only chunks a helper has claimed are left. If that helper shares this core (a busy
    // machine), spinning would keep it from finishing: yield after a short spin.
    for (int spins = 1; pool.finished_.load(std::memory_order_acquire) < chunks; ++spins) {
      if (spins % 256 == 0) std::this_thread::yield();
      else spin_pause();
    }
    // Close the job: a helper still holding a claim word of it can no longer claim anything.
    pool.claims_.store((generation << 32) | kClosed, std::memory_order_release);
  }

 private:
  static constexpr uint64_t kClosed = 0xffffffffu;  // low half of claims_: no chunk left to claim

  template <typename Fn>
  static void invoke(const void* fn, int64_t j0, int64_t j1) {
    (*static_cast<const Fn*>(fn))(j0, j1);
  }

  static void spin_pause() {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }

  static TokenPasses& instance() {
    static TokenPasses* pool = new TokenPasses();  // never destroyed: helpers outlive main()
    return *pool;
  }

  // Claims and runs chunks of job `generation` until none is left. A claim is a CAS on
  // (generation << 32 | next chunk); the caller closes a job before it writes the next one's
  // fields, so a claim that succeeds always belongs to the job whose fields were read.
  // helper: its index, -1 for the caller.
  void work(uint64_t generation, int helper) {
    uint64_t seen = claims_.load(std::memory_order_acquire);
    if ((seen >> 32) != generation || helper >= helpers_wanted_.load(std::memory_order_relaxed)) return;
    const int64_t chunks = chunks_.load(std::memory_order_relaxed);
    const int64_t n = n_.load(std::memory_order_relaxed), grain = grain_.load(std::memory_order_relaxed);
    const auto call = call_.load(std::memory_order_relaxed);
    const void* fn = fn_.load(std::memory_order_relaxed);
    while ((seen >> 32) == generation && static_cast<int64_t>(seen & kClosed) < chunks) {
      if (!claims_.compare_exchange_weak(seen, seen + 1, std::memory_order_acq_rel, std::memory_order_acquire))
        continue;
      const int64_t j0 = static_cast<int64_t>(seen & kClosed) * grain;
      call(fn, j0, std::min(n, j0 + grain));
      finished_.fetch_add(1, std::memory_order_release);
      seen = claims_.load(std::memory_order_acquire);
    }
  }

  void ensure_helpers(int count) {
    while (static_cast<int>(helpers_.size()) < count) {
      const int index = static_cast<int>(helpers_.size());
      helpers_.emplace_back([this, index] { helper_loop(index); });
      helpers_.back().detach();
    }
  }

  void helper_loop(int index) {
    uint64_t done = 0;
    for (;;) {
      // Spin for a while after each pass: a row's next pass follows within microseconds (one
      // step's suppression sweep), and a woken sleeper would arrive after the pass is done.
      uint64_t generation = claims_.load(std::memory_order_acquire) >> 32;
      const auto idle_since = std::chrono::steady_clock::now();
      for (int spins = 1; generation == done; ++spins) {
        if (spins % 256 == 0) std::this_thread::yield();  // a caller sharing this core runs on
        else spin_pause();
        generation = claims_.load(std::memory_order_acquire) >> 32;
        if (spins % 1024 == 0 && std::chrono::steady_clock::now() - idle_since > std::chrono::milliseconds(2)) break;
      }
      if (generation == done) {  // idle: sleep until the next job
        std::unique_lock<std::mutex> lock(wake_mutex_);
        sleepers_.fetch_add(1, std::memory_order_acq_rel);
        wake_.wait_for(lock, std::chrono::milliseconds(100),
                       [&] { return (claims_.load(std::memory_order_acquire) >> 32) != done; });
        sleepers_.fetch_sub(1, std::memory_order_acq_rel);
        continue;
      }
      work(generation, index);
      done = generation;
    }
  }

  std::mutex owner_;  // one caller at a time; others run their passes alone
  const pid_t pid_ = getpid();
  std::vector<std::thread> helpers_;
  // The current job (written only while claims_ is closed, see run()).
  std::atomic<void (*)(const void*, int64_t, int64_t)> call_{nullptr};
  std::atomic<const void*> fn_{nullptr};
  std::atomic<int64_t> n_{0}, grain_{1}, chunks_{0};
  std::atomic<int> helpers_wanted_{0};
  alignas(64) std::atomic<uint64_t> claims_{kClosed};  // own cache lines: every chunk touches both
  alignas(64) std::atomic<int64_t> finished_{0};
  std::atomic<int> sleepers_{0};
  std::mutex wake_mutex_;
  std::condition_variable wake_;
};

// Runs fn(j0, j1) over [0, n), split across the intra-op threads when the work is large enough.
template <typename Fn>
void for_tokens(int64_t n, int64_t work_per_token, bool parallel, const Fn& fn) {
  if (!parallel) return fn(0, n);
  const int threads = at::get_num_threads();
  // About 8 chunks per thread (a late helper leaves the caller little to wait for), and at
  // least 32K multiply-adds per chunk (claiming one costs two contended atomics).
  const int64_t grain = std::max<int64_t>({1, 32768 / std::max<int64_t>(1, work_per_token),
                                           n / (8 * std::max(1, threads))});
  TokenPasses::run(n, grain, threads - 1, fn);
}

}  // namespace
}  // namespace idselect
