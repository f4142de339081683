// rrloader/engine/thread_pool.h — the engine's decode threads.
//
// A fixed set of threads created when the pool is constructed (the engine constructs it
// lazily, in the process that iterates — never before a fork). ParallelFor hands each
// task its worker number so tasks can keep per-thread scratch.
//
// Priority: the pool's threads can run at a lower priority than the process (a nice
// increment), so that the thread consuming the results — Python, the training step, torch's
// OpenMP team — always gets the CPU first. Without it, on a machine with few cores, an
// OpenMP parallel region (e.g. torch.stack in a DataLoader's collate) whose worker thread
// is descheduled by decode threads leaves the other OpenMP thread spinning at its barrier:
// measured on 2 cores, sequential 640x480 video at 43-281 samples/s with equal priority,
// 122-368 with the decode threads at nice +10, 359-374 with OMP_WAIT_POLICY=passive.
//
// Fork: a forked child has none of the pool's threads. Destroying a pool there (e.g. the
// garbage collector freeing a dataset inherited from the parent) must not join them; the
// destructor notices the pid change and abandons the thread handles instead.
//
// Budget: with a ThreadBudget, every task runs while its thread holds `task_weight` slots of
// it (the caller of ParallelFor too); a worker takes a slot before it takes a task, so a
// worker waiting for one holds up nothing (the caller, which holds slots, runs what is left).
//
// Thread safety: ParallelFor may be called from any thread that is NOT one of the pool's
// own workers (it is not re-entrant: a task must not call ParallelFor on the same pool).
// Concurrent ParallelFor calls from different threads are serialized.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rrloader/engine/thread_budget.h"

namespace rrl::engine {

class ThreadPool {
 public:
  // num_threads <= 0: hardware concurrency. With one thread, work runs on the caller.
  // nice_increment: added to the niceness of the pool's own threads (not the caller's; see
  // LowerThreadPriority); 0 keeps the process's priority.
  // budget (may be null): see above; it outlives the pool, and counts the pool's threads.
  explicit ThreadPool(int num_threads, int nice_increment = 0, ThreadBudget* budget = nullptr, int task_weight = 1);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // ParallelFor: runs fn(i, worker) for every i in [0, n); returns when all are done.
  // `worker` is in [0, num_threads()). Tasks are handed out one index at a time.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int)>& fn);

 private:
  void WorkerLoop(int worker);

  int num_threads_ = 1;
  int nice_increment_ = 0;
  ThreadBudget* budget_ = nullptr;
  int task_weight_ = 1;
  pid_t owner_pid_ = 0;  // the process whose threads these are
  std::vector<std::thread> threads_;
  std::mutex call_mu_;  // serializes ParallelFor calls

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t next_ = 0;
  int64_t done_ = 0;
  bool stop_ = false;
};

// LowerThreadPriority: adds `increment` (> 0) to the calling thread's niceness, at most
// up to 19 (Linux: per-thread setpriority; elsewhere nothing). A scheduling hint: when the
// system refuses it the thread keeps running at its current priority, which only costs speed.
void LowerThreadPriority(int increment);

// NameThisThread: names the calling thread (Linux: what top -H, ps -L, py-spy, perf and
// /proc/<pid>/task/<tid>/comm show; at most 15 characters are kept; elsewhere nothing), so
// that a user profiling a training process can tell rrloader's threads apart: "rrl-fetch",
// "rrl-decode", "rrl-lookahead" (a pipeline's) and "rrl-pool-<k>" (an engine's decode pool).
void NameThisThread(const std::string& name);

// AbandonThreadsAfterFork: when called in a process other than `owner_pid`, moves the
// handles to a never-freed list (joining or destroying a joinable std::thread whose thread
// does not exist in this process would crash) and returns true.
bool AbandonThreadsAfterFork(pid_t owner_pid, std::vector<std::thread>* threads);

}  // namespace rrl::engine
