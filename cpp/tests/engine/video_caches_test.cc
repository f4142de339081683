// Tests of the engine's caches for video fields: VideoIndexCache (video_index.h: one build
// per key even when asked concurrently, failures not kept, byte bound) and BufferPool
// (buffer_pool.h: released buffers reused, bounded, safe after the pool is gone).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "rrloader/engine/buffer_pool.h"
#include "rrloader/engine/video_index.h"

namespace rrl::engine {
namespace {

// IndexOf: an index whose size grows with `clusters` (nothing loaded).
std::shared_ptr<VideoIndex> IndexOf(size_t clusters) {
  auto index = std::make_shared<VideoIndex>();
  index->clusters.assign(clusters, VideoCluster{0, 0, {0, 1, 2, 3}});
  return index;
}

TEST(VideoIndexCache, BuildsOncePerKeyAndHits) {
  VideoIndexCache cache;
  int builds = 0;
  auto build = [&]() -> Result<std::shared_ptr<const VideoIndex>> {
    ++builds;
    return std::shared_ptr<const VideoIndex>(IndexOf(10));
  };
  auto a = cache.GetOrBuild("seg\n/cam", build);
  auto b = cache.GetOrBuild("seg\n/cam", build);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_EQ(builds, 1);
  EXPECT_EQ(cache.stats().builds, 1);
  EXPECT_EQ(cache.stats().hits, 1);
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(cache.stats().bytes, (*a)->ByteSize());
}

TEST(VideoIndexCache, ConcurrentRequestsWaitForOneBuild) {
  VideoIndexCache cache;
  std::atomic<int> builds{0};
  auto build = [&]() -> Result<std::shared_ptr<const VideoIndex>> {
    builds.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return std::shared_ptr<const VideoIndex>(IndexOf(5));
  };
  std::vector<std::thread> threads;
  std::vector<const VideoIndex*> got(6, nullptr);
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] {
      auto r = cache.GetOrBuild("k", build);
      if (r.ok()) got[i] = r->get();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(builds.load(), 1);
  for (const auto* p : got) EXPECT_EQ(p, got[0]);
  EXPECT_NE(got[0], nullptr);
}

TEST(VideoIndexCache, FailuresAreReportedAndNotKept) {
  VideoIndexCache cache;
  int builds = 0;
  auto failing = [&]() -> Result<std::shared_ptr<const VideoIndex>> {
    ++builds;
    return Status::Corrupt("bad chunk");
  };
  auto r = cache.GetOrBuild("k", failing);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  auto again = cache.GetOrBuild("k", [&]() -> Result<std::shared_ptr<const VideoIndex>> {
    ++builds;
    return std::shared_ptr<const VideoIndex>(IndexOf(3));
  });
  EXPECT_TRUE(again.ok());
  EXPECT_EQ(builds, 2);
}

TEST(VideoIndexCache, EvictsLeastRecentlyUsedPastTheBound) {
  const int64_t one = IndexOf(1000)->ByteSize();
  VideoIndexCache cache(2 * one + one / 2);  // room for two
  auto build = [] {
    return Result<std::shared_ptr<const VideoIndex>>(std::shared_ptr<const VideoIndex>(IndexOf(1000)));
  };
  ASSERT_TRUE(cache.GetOrBuild("a", build).ok());
  ASSERT_TRUE(cache.GetOrBuild("b", build).ok());
  ASSERT_TRUE(cache.GetOrBuild("a", build).ok());  // a is now the most recent
  ASSERT_TRUE(cache.GetOrBuild("c", build).ok());  // evicts b
  EXPECT_EQ(cache.stats().entries, 2);
  EXPECT_LE(cache.stats().bytes, 2 * one + one / 2);
  const int64_t builds = cache.stats().builds;
  ASSERT_TRUE(cache.GetOrBuild("a", build).ok());
  EXPECT_EQ(cache.stats().builds, builds);  // still cached
  ASSERT_TRUE(cache.GetOrBuild("b", build).ok());
  EXPECT_EQ(cache.stats().builds, builds + 1);  // rebuilt
  // An index larger than the whole bound is returned but not kept.
  VideoIndexCache tiny(16);
  auto big = tiny.GetOrBuild("x", build);
  ASSERT_TRUE(big.ok() && *big != nullptr);
  EXPECT_EQ(tiny.stats().entries, 0);
}

TEST(VideoIndexCache, ResizeFollowsAGrowingIndexAndEvicts) {
  auto a = IndexOf(10);
  auto b = IndexOf(10);
  VideoIndexCache cache(3 * a->ByteSize());
  ASSERT_TRUE(cache.GetOrBuild("a", [&] { return Result<std::shared_ptr<const VideoIndex>>(a); }).ok());
  ASSERT_TRUE(cache.GetOrBuild("b", [&] { return Result<std::shared_ptr<const VideoIndex>>(b); }).ok());
  EXPECT_TRUE(cache.Contains("a") && cache.Contains("b"));
  const int64_t before = cache.stats().bytes;
  b->clusters.resize(15);  // b grew (as its clusters load)
  cache.Resize("b");
  EXPECT_EQ(cache.stats().bytes, before - IndexOf(10)->ByteSize() + b->ByteSize());
  b->clusters.resize(60);  // past the bound: the least recent (a) goes first
  cache.Resize("b");
  EXPECT_FALSE(cache.Contains("a"));
  EXPECT_LE(cache.stats().bytes, 3 * a->ByteSize());
  cache.Resize("gone");  // absent: nothing happens
}

TEST(BufferPool, ReleasedBuffersAreReused) {
  auto pool = BufferPool::Make(int64_t{1} << 20);
  uint8_t* first = nullptr;
  {
    auto a = pool->Allocate(4096);
    first = a.get();
    a[0] = 7;
  }
  EXPECT_EQ(pool->idle_bytes(), 4096);
  auto b = pool->Allocate(4000);  // within 1/8 above: the idle buffer
  EXPECT_EQ(b.get(), first);
  EXPECT_EQ(pool->reused(), 1);
  EXPECT_EQ(pool->idle_bytes(), 0);
  auto c = pool->Allocate(100);  // far smaller: a new buffer, the idle one is not wasted on it
  EXPECT_NE(c.get(), first);
  EXPECT_EQ(pool->allocated(), 2);
}

TEST(BufferPool, StaysWithinItsBound) {
  auto pool = BufferPool::Make(10000);
  {
    auto a = pool->Allocate(6000);
    auto b = pool->Allocate(6000);
    auto huge = pool->Allocate(20000);  // larger than the bound: freed on release
  }
  EXPECT_LE(pool->idle_bytes(), 10000);
  EXPECT_EQ(pool->idle_bytes(), 6000);
  auto none = BufferPool::Make(0);
  { auto a = none->Allocate(10); }
  EXPECT_EQ(none->idle_bytes(), 0);
}

TEST(BufferPool, ReleaseIdleFreesTheIdleBuffersOnly) {
  auto pool = BufferPool::Make(1 << 20);
  auto live = pool->Allocate(2048);
  { auto a = pool->Allocate(4096); }
  EXPECT_EQ(pool->idle_bytes(), 4096);
  pool->ReleaseIdle();
  EXPECT_EQ(pool->idle_bytes(), 0);
  live[2047] = 3;  // still the caller's
  live.reset();    // and back to the pool afterwards, as before
  EXPECT_EQ(pool->idle_bytes(), 2048);
  auto again = pool->Allocate(4096);  // nothing idle of that size any more: new memory
  EXPECT_EQ(pool->reused(), 0);
}

TEST(BufferPool, BuffersOutliveThePool) {
  std::shared_ptr<uint8_t[]> kept;
  {
    auto pool = BufferPool::Make(1 << 20);
    kept = pool->Allocate(1024);
    kept[1023] = 1;
  }
  EXPECT_EQ(kept[1023], 1);
  kept.reset();  // freed by the deleter without the pool (ASan checks this)
}

}  // namespace
}  // namespace rrl::engine
