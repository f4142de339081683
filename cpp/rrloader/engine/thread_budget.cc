// rrloader/engine/thread_budget.cc
#include "rrloader/engine/thread_budget.h"

#include <algorithm>

namespace rrl::engine {

namespace {
// The budget this thread holds slots of (re-entrancy); one at a time is all the engine needs.
thread_local const ThreadBudget* tls_holding = nullptr;
}  // namespace

ThreadBudget::Busy::Busy(ThreadBudget* budget, int weight) {
  if (budget == nullptr || tls_holding == budget) return;
  budget_ = budget;
  held_ = budget->tokens_ > 0 ? std::clamp(weight, 1, budget->tokens_) : std::max(weight, 1);
  budget->Acquire(held_);
  previous_ = tls_holding;
  tls_holding = budget;
}

ThreadBudget::Busy::~Busy() {
  if (budget_ == nullptr) return;
  tls_holding = previous_;
  budget_->Release(held_);
}

void ThreadBudget::Acquire(int weight) {
  std::unique_lock<std::mutex> lock(mu_);
  if (tokens_ > 0 && busy_ + weight > tokens_) {
    ++waits_;
    cv_.wait(lock, [&] { return busy_ + weight <= tokens_; });
  }
  busy_ += weight;
  max_busy_ = std::max(max_busy_, busy_);
}

void ThreadBudget::Release(int weight) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_ -= weight;
  }
  cv_.notify_all();
}

void ThreadBudget::ThreadStarted() {
  std::lock_guard<std::mutex> lock(mu_);
  ++started_;
  ++alive_;
}

void ThreadBudget::ThreadExited() {
  std::lock_guard<std::mutex> lock(mu_);
  --alive_;
}

ThreadStats ThreadBudget::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ThreadStats s;
  s.budget = std::max(tokens_, 0);
  s.threads_started = started_;
  s.threads_alive = alive_;
  s.busy_now = busy_;
  s.max_busy = max_busy_;
  s.waits = waits_;
  return s;
}

}  // namespace rrl::engine
