// rrloader/engine/thread_budget.h — how many of an engine's threads may be busy at once.
//
// An engine inside a DataLoader worker shares the machine with the other workers: N workers
// each running a pool of "all the cores" threads plus a fetch and a decode thread run N times
// more busy threads than there are cores, and the ones descheduled hold up the rest (a block
// is done when its slowest task is). A ThreadBudget is a counting semaphore of `tokens` CPU
// slots: every engine thread holds a slot while it computes (the pipeline's fetch and decode
// stages, each pool task) and gives it back while it waits. A pool task may weigh more than
// one slot: a video session with libavcodec frame threads keeps that many threads busy.
//
// tokens <= 0 is "no budget": nothing waits, but the statistics are still kept, so that an
// ungated engine reports how many threads it ran busy at once too.
//
// Slots are re-entrant per thread: a thread that holds slots (the decode stage, which is the
// pool's worker 0 in ParallelFor) does not take more for nested work. So a ParallelFor whose
// caller holds a slot always finishes even when no pool worker gets one (the caller runs
// every task itself): no deadlock whatever the budget.
//
// Thread safety: thread-safe (one mutex). Ownership: shared by an Engine, its ThreadPool and
// its Pipelines (a Pipeline may outlive nothing of it: it holds the engine).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace rrl::engine {

// ThreadStats: what a ThreadBudget saw since it was made.
struct ThreadStats {
  int budget = 0;               // slots (0: no budget)
  int64_t threads_started = 0;  // engine threads ever started (pool workers, pipeline stages)
  int64_t threads_alive = 0;    // of which still running
  int64_t busy_now = 0;         // slots held now
  int64_t max_busy = 0;         // the most slots held at once
  int64_t waits = 0;            // acquisitions that had to wait for a slot
  // Filled by Engine::thread_stats: the pool's threads (its caller, the decode stage, is one
  // of them) and the slots a pool task holds (a video session's libavcodec threads).
  int pool_threads = 0;
  int task_weight = 1;
};

class ThreadBudget {
 public:
  explicit ThreadBudget(int tokens) : tokens_(tokens) {}
  ThreadBudget(const ThreadBudget&) = delete;
  ThreadBudget& operator=(const ThreadBudget&) = delete;

  int tokens() const { return tokens_; }

  // Busy: holds `weight` slots (clamped to [1, tokens]) for its lifetime, unless this thread
  // already holds slots of this budget (then nothing). `budget` may be null (nothing held).
  class Busy {
   public:
    Busy(ThreadBudget* budget, int weight = 1);
    ~Busy();
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;

   private:
    ThreadBudget* budget_ = nullptr;
    int held_ = 0;
    const ThreadBudget* previous_ = nullptr;  // the budget this thread held before (restored on exit)
  };

  // ThreadStarted / ThreadExited: the engine threads' lifetimes, for the statistics.
  void ThreadStarted();
  void ThreadExited();

  ThreadStats stats() const;

 private:
  void Acquire(int weight);
  void Release(int weight);

  const int tokens_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int64_t busy_ = 0;
  int64_t max_busy_ = 0;
  int64_t waits_ = 0;
  int64_t started_ = 0;
  int64_t alive_ = 0;
};

}  // namespace rrl::engine
