// Tests of rrloader/engine/thread_budget.h and the ThreadPool under a budget: never more slots
// held than the budget, weighted tasks, re-entrancy, no deadlock whatever the budget.
#include "rrloader/engine/thread_budget.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "rrloader/engine/thread_pool.h"

namespace rrl::engine {
namespace {

// Counts the tasks running at once (each stays a little while, so that overlap can happen).
struct Overlap {
  std::atomic<int> now{0};
  std::atomic<int> most{0};
  std::atomic<int64_t> ran{0};
  void Task() {
    const int n = ++now;
    int seen = most.load();
    while (n > seen && !most.compare_exchange_weak(seen, n)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    --now;
    ++ran;
  }
};

TEST(ThreadBudgetTest, APoolNeverRunsMoreTasksThanTheBudget) {
  for (const int budget : {1, 2, 3}) {
    ThreadBudget b(budget);
    Overlap o;
    {
      ThreadPool pool(6, 0, &b, 1);
      pool.ParallelFor(60, [&](int64_t, int) { o.Task(); });
      EXPECT_EQ(o.ran.load(), 60);
    }
    EXPECT_LE(o.most.load(), budget) << "budget " << budget;
    const ThreadStats s = b.stats();
    EXPECT_EQ(s.budget, budget);
    EXPECT_LE(s.max_busy, budget);
    EXPECT_EQ(s.busy_now, 0);
    EXPECT_EQ(s.threads_started, 5);  // the caller is the pool's worker 0
    EXPECT_EQ(s.threads_alive, 0);    // joined with the pool
  }
}

TEST(ThreadBudgetTest, AWeightedTaskHoldsThatManySlots) {
  // A video session with 2 libavcodec threads weighs 2: under a budget of 3 one task at a time.
  ThreadBudget b(3);
  Overlap o;
  ThreadPool pool(4, 0, &b, 2);
  pool.ParallelFor(20, [&](int64_t, int) { o.Task(); });
  EXPECT_EQ(o.ran.load(), 20);
  EXPECT_EQ(o.most.load(), 1);
  EXPECT_EQ(b.stats().max_busy, 2);
}

TEST(ThreadBudgetTest, AWeightAboveTheBudgetIsClampedAndNeverDeadlocks) {
  ThreadBudget b(2);
  Overlap o;
  ThreadPool pool(3, 0, &b, 8);
  pool.ParallelFor(10, [&](int64_t, int) { o.Task(); });
  EXPECT_EQ(o.ran.load(), 10);
  EXPECT_EQ(b.stats().max_busy, 2);
}

TEST(ThreadBudgetTest, SlotsAreReentrantPerThread) {
  // The decode stage holds slots and calls ParallelFor: the nested acquisition takes nothing,
  // so a budget of one (one worker per core on one core) still finishes.
  ThreadBudget b(1);
  ThreadPool pool(4, 0, &b, 1);
  std::atomic<int64_t> ran{0};
  {
    ThreadBudget::Busy outer(&b, 1);
    ThreadBudget::Busy inner(&b, 1);
    EXPECT_EQ(b.stats().busy_now, 1);
    pool.ParallelFor(12, [&](int64_t, int) { ++ran; });
  }
  EXPECT_EQ(ran.load(), 12);
  EXPECT_EQ(b.stats().busy_now, 0);
  EXPECT_EQ(b.stats().max_busy, 1);
}

TEST(ThreadBudgetTest, OtherThreadsWaitForASlotAndAreCounted) {
  ThreadBudget b(1);
  std::atomic<bool> second_in{false};
  std::thread other;
  {
    ThreadBudget::Busy held(&b);
    other = std::thread([&] {
      ThreadBudget::Busy mine(&b);
      second_in = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    EXPECT_FALSE(second_in.load()) << "a second thread got a slot of a budget of one";
  }
  other.join();
  EXPECT_TRUE(second_in.load());
  EXPECT_EQ(b.stats().waits, 1);
  EXPECT_EQ(b.stats().max_busy, 1);
}

TEST(ThreadBudgetTest, NoBudgetWaitsForNothingButStillCounts) {
  ThreadBudget b(0);
  Overlap o;
  {
    ThreadPool pool(4, 0, &b, 1);
    // Several rounds: the pool's threads wake at different times, so overlap needs a few tries.
    for (int round = 0; round < 20 && o.most.load() < 2; ++round) {
      pool.ParallelFor(16, [&](int64_t, int) { o.Task(); });
    }
  }
  const ThreadStats s = b.stats();
  EXPECT_EQ(s.budget, 0);
  EXPECT_EQ(s.waits, 0);
  EXPECT_GE(o.most.load(), 2);
  EXPECT_GE(s.max_busy, o.most.load());
  EXPECT_EQ(s.threads_started, 3);
  EXPECT_EQ(s.threads_alive, 0);
}

TEST(ThreadBudgetTest, ANullBudgetIsNothing) {
  ThreadPool pool(3, 0, nullptr, 1);
  std::atomic<int64_t> ran{0};
  pool.ParallelFor(9, [&](int64_t, int) { ++ran; });
  ThreadBudget::Busy none(nullptr, 4);
  EXPECT_EQ(ran.load(), 9);
}

TEST(ThreadBudgetTest, AHoldOfAnotherBudgetInsideKeepsTheOuterOneReentrant) {
  ThreadBudget a(1), b(1);
  ThreadBudget::Busy outer(&a);
  { ThreadBudget::Busy other(&b); }
  // Still holding a's only slot: a nested hold of a must not try to take a second one (it would
  // wait for itself).
  ThreadBudget::Busy again(&a);
  EXPECT_EQ(a.stats().busy_now, 1);
  EXPECT_EQ(a.stats().waits, 0);
  EXPECT_EQ(b.stats().busy_now, 0);
}

}  // namespace
}  // namespace rrl::engine
