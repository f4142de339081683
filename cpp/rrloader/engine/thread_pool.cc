// rrloader/engine/thread_pool.cc
#include "rrloader/engine/thread_pool.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#if defined(__linux__)
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#endif

namespace rrl::engine {

void LowerThreadPriority(int increment) {
  if (increment <= 0) return;
#if defined(__linux__)
  // On Linux a thread is a task of its own: PRIO_PROCESS with its tid sets only its niceness.
  const auto tid = static_cast<id_t>(syscall(SYS_gettid));
  errno = 0;
  const int current = getpriority(PRIO_PROCESS, tid);
  if (current == -1 && errno != 0) return;
  (void)setpriority(PRIO_PROCESS, tid, std::min(19, current + increment));
#endif
}

void NameThisThread(const std::string& name) {
#if defined(__linux__)
  // The kernel keeps 15 characters and a NUL; a longer name makes pthread_setname_np fail.
  (void)pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
#else
  (void)name;
#endif
}

ThreadPool::ThreadPool(int num_threads, int nice_increment, ThreadBudget* budget, int task_weight)
    : nice_increment_(nice_increment), budget_(budget), task_weight_(std::max(task_weight, 1)) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads_ = num_threads;
  owner_pid_ = getpid();
  // The caller of ParallelFor works too, so num_threads - 1 extra threads suffice.
  for (int w = 1; w < num_threads_; ++w) threads_.emplace_back([this, w] { WorkerLoop(w); });
}

bool AbandonThreadsAfterFork(pid_t owner_pid, std::vector<std::thread>* threads) {
  if (getpid() == owner_pid) return false;
  static auto* abandoned = new std::vector<std::thread>();  // never freed on purpose
  for (auto& t : *threads) abandoned->push_back(std::move(t));
  threads->clear();
  return true;
}

ThreadPool::~ThreadPool() {
  if (AbandonThreadsAfterFork(owner_pid_, &threads_)) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int)>& fn) {
  if (n <= 0) return;
  ThreadBudget::Busy busy(budget_, task_weight_);  // the caller is worker 0
  if (threads_.empty() || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    next_ = 0;
    done_ = 0;
  }
  work_cv_.notify_all();
  // The calling thread is worker 0.
  while (true) {
    int64_t i;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (next_ >= n_) break;
      i = next_++;
    }
    fn(i, 0);
    std::lock_guard<std::mutex> lock(mu_);
    ++done_;
  }
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return done_ == n_; });
  fn_ = nullptr;
}

void ThreadPool::WorkerLoop(int worker) {
  NameThisThread("rrl-pool-" + std::to_string(worker));
  LowerThreadPriority(nice_increment_);
  if (budget_ != nullptr) budget_->ThreadStarted();
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return stop_ || (fn_ != nullptr && next_ < n_); });
    if (stop_) break;
    // A slot first, then tasks: waiting for a slot must not hold a task back from the caller.
    lock.unlock();
    {
      ThreadBudget::Busy busy(budget_, task_weight_);
      lock.lock();
      while (fn_ != nullptr && next_ < n_) {
        const int64_t i = next_++;
        const auto* fn = fn_;
        lock.unlock();
        (*fn)(i, worker);
        lock.lock();
        if (++done_ == n_) done_cv_.notify_all();
      }
      lock.unlock();
    }
    lock.lock();
  }
  lock.unlock();
  if (budget_ != nullptr) budget_->ThreadExited();
}

}  // namespace rrl::engine
