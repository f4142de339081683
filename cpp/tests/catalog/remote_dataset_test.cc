// Tests of rrloader/catalog/remote_dataset: schema → columns, the per-(segment, entity)
// cache (hits, byte bound, errors not cached), one fetch for concurrent misses of one key,
// concurrent fetches of different keys.
#include "rrloader/catalog/remote_dataset.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "tests/chunk/make_chunk.h"

namespace rrl::catalog {
namespace {

using Batches = std::vector<std::shared_ptr<arrow::RecordBatch>>;

// Chunks of `entity` in `segment`: frames 0..rows-1, value = frame.
Batches EntityBatches(const std::string& segment, const std::string& entity, int rows = 4) {
  testing::ChunkSpec s;
  s.entity = entity;
  s.chunk_id = "chunk_" + segment + entity;
  for (int f = 0; f < rows; ++f) {
    s.frames.push_back(f);
    s.values.push_back(std::vector<double>{static_cast<double>(f)});
  }
  return {testing::MakeChunkBatch(s)};
}

struct CountingFetch {
  std::atomic<int> calls{0};
  FetchEntityFn fn() {
    return [this](const std::string& seg, const std::string& ent) -> Result<Batches> {
      ++calls;
      return EntityBatches(seg, ent);
    };
  }
};

RemoteOptions Options(int64_t cache_bytes = kDefaultRemoteCacheBytes) {
  RemoteOptions o;
  o.cache_bytes = cache_bytes;
  o.description = "catalog test://x (dataset 'ds')";
  return o;
}

TEST(RemoteDataset, ColumnsAndTimelinesFromTheCatalogSchema) {
  CountingFetch f;
  auto ds =
      RemoteDataset::Make({"s2", "s1", "s1"}, *testing::CatalogSchema({"/b", "/a/x", "/a"}), f.fn(), Options()).value();
  EXPECT_EQ(ds->SegmentIds(), (std::vector<std::string>{"s1", "s2"}));
  ASSERT_EQ(ds->timelines().size(), 1u);
  EXPECT_EQ(ds->timelines().at("frame"), rrd::TimeKind::kSequence);
  ASSERT_EQ(ds->columns().size(), 3u);  // the control column is not a column
  EXPECT_EQ(ds->columns()[0].name, "/a:Scalars:scalars");
  EXPECT_EQ(ds->columns()[1].name, "/a/x:Scalars:scalars");
  EXPECT_EQ(ds->columns()[2].name, "/b:Scalars:scalars");
  EXPECT_EQ(ds->columns()[0].info.archetype, "rerun.archetypes.Scalars");
  EXPECT_TRUE(ds->columns()[0].info.type->Equals(*arrow::list(arrow::float64())));
  EXPECT_EQ(f.calls, 0);  // nothing is fetched until asked
}

TEST(RemoteDataset, SchemaErrors) {
  CountingFetch f;
  auto bad_index =
      arrow::schema({arrow::field("t", arrow::float64(), true, arrow::key_value_metadata({"rerun:kind"}, {"index"}))});
  EXPECT_EQ(RemoteDataset::Make({}, *bad_index, f.fn(), Options()).status().code(), StatusCode::kInvalidArgument);
  auto no_entity = arrow::schema(
      {arrow::field("/a:X:y", arrow::list(arrow::int32()), true, arrow::key_value_metadata({"rerun:kind"}, {"data"}))});
  auto st = RemoteDataset::Make({}, *no_entity, f.fn(), Options()).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("/a:X:y"), std::string::npos);
  EXPECT_EQ(RemoteDataset::Make({}, *no_entity, nullptr, Options()).status().code(), StatusCode::kInvalidArgument);
}

TEST(RemoteDataset, FetchesOncePerSegmentAndEntity) {
  CountingFetch f;
  auto ds = RemoteDataset::Make({"s1", "s2"}, *testing::CatalogSchema({"/a", "/b"}), f.fn(), Options()).value();
  auto a1 = ds->EntitySegment("s1", "/a").value();
  EXPECT_EQ(a1->id(), "s1");
  ASSERT_EQ(a1->chunks().size(), 1u);
  EXPECT_EQ(a1->chunks()[0].entity_path, "/a");
  EXPECT_EQ(ds->EntitySegment("s1", "/a").value().get(), a1.get());
  (void)ds->EntitySegment("s2", "/a").value();
  (void)ds->EntitySegment("s1", "/b").value();
  EXPECT_EQ(f.calls, 3);
  auto s = ds->Stats();
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.misses, 3);
  EXPECT_EQ(s.fetches, 3);
  EXPECT_EQ(s.entries, 3);
  EXPECT_EQ(s.size_bytes, s.fetched_bytes);
  // A segment the catalog did not list at Make is not fetched.
  auto missing = ds->EntitySegment("nope", "/a").status();
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("nope"), std::string::npos);
  EXPECT_EQ(f.calls, 3);
}

TEST(RemoteDataset, KeepsOnlyTheRequestedEntity) {
  auto fetch = [](const std::string& seg, const std::string& ent) -> Result<Batches> {
    Batches b = EntityBatches(seg, ent);
    Batches other = EntityBatches(seg, ent + "/child");
    b.insert(b.end(), other.begin(), other.end());
    return b;
  };
  auto ds = RemoteDataset::Make({"s"}, *testing::CatalogSchema({"/a"}), fetch, Options()).value();
  auto seg = ds->EntitySegment("s", "/a").value();
  ASSERT_EQ(seg->chunks().size(), 1u);
  EXPECT_EQ(seg->chunks()[0].entity_path, "/a");
}

TEST(RemoteDataset, ErrorsNameSegmentAndEntityAndAreNotCached) {
  std::atomic<int> calls{0};
  auto fetch = [&](const std::string& seg, const std::string& ent) -> Result<Batches> {
    if (++calls == 1) return Status::IoError("catalog test://x did not answer within 1 s");
    return EntityBatches(seg, ent);
  };
  auto ds = RemoteDataset::Make({"seg_a"}, *testing::CatalogSchema({"/cam"}), fetch, Options()).value();
  auto st = ds->EntitySegment("seg_a", "/cam").status();
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_NE(st.message().find("seg_a"), std::string::npos);
  EXPECT_NE(st.message().find("/cam"), std::string::npos);
  EXPECT_NE(st.message().find("test://x did not answer"), std::string::npos);
  EXPECT_TRUE(ds->EntitySegment("seg_a", "/cam").ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(ds->Stats().fetch_errors, 1);

  // A batch that is not a chunk fails the fetch, naming where it came from.
  auto junk = [](const std::string&, const std::string&) -> Result<Batches> {
    auto schema = arrow::schema({arrow::field("x", arrow::int64())});
    return Batches{arrow::RecordBatch::Make(schema, 0, {arrow::MakeArrayOfNull(arrow::int64(), 0).ValueOrDie()})};
  };
  auto ds2 = RemoteDataset::Make({"seg_a"}, *testing::CatalogSchema({"/cam"}), junk, Options()).value();
  auto st2 = ds2->EntitySegment("seg_a", "/cam").status();
  EXPECT_EQ(st2.code(), StatusCode::kCorrupt);
  EXPECT_NE(st2.message().find("seg_a"), std::string::npos);
}

TEST(RemoteDataset, CacheIsBoundedInBytes) {
  CountingFetch f;
  const int64_t one = ([] {
    CountingFetch g;
    auto probe = RemoteDataset::Make({"s"}, *testing::CatalogSchema({"/a"}), g.fn(), Options()).value();
    return probe->EntitySegment("s", "/a").value()->ResidentBytes();
  })();
  ASSERT_GT(one, 0);
  // Room for two entries: a third evicts the least recently used.
  auto ds = RemoteDataset::Make({"s"}, *testing::CatalogSchema({"/a", "/b", "/c"}), f.fn(), Options(2 * one + one / 2))
                .value();
  (void)ds->EntitySegment("s", "/a").value();
  (void)ds->EntitySegment("s", "/b").value();
  (void)ds->EntitySegment("s", "/a").value();  // /a is now the most recent
  (void)ds->EntitySegment("s", "/c").value();  // evicts /b
  EXPECT_EQ(f.calls, 3);
  EXPECT_LE(ds->Stats().size_bytes, 2 * one + one / 2);
  (void)ds->EntitySegment("s", "/a").value();
  EXPECT_EQ(f.calls, 3);
  (void)ds->EntitySegment("s", "/b").value();
  EXPECT_EQ(f.calls, 4);

  // An entry larger than the whole cache is returned but not kept.
  CountingFetch g;
  auto tiny = RemoteDataset::Make({"s"}, *testing::CatalogSchema({"/a"}), g.fn(), Options(one - 1)).value();
  EXPECT_TRUE(tiny->EntitySegment("s", "/a").ok());
  EXPECT_TRUE(tiny->EntitySegment("s", "/a").ok());
  EXPECT_EQ(g.calls, 2);
  EXPECT_EQ(tiny->Stats().size_bytes, 0);
}

TEST(RemoteDataset, ConcurrentMissesOfOneKeyFetchOnce) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> calls{0};
  auto fetch = [&](const std::string& seg, const std::string& ent) -> Result<Batches> {
    ++calls;
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });
    return EntityBatches(seg, ent);
  };
  auto ds = RemoteDataset::Make({"s"}, *testing::CatalogSchema({"/a"}), fetch, Options()).value();
  std::vector<std::thread> threads;
  std::vector<const store::Segment*> got(4, nullptr);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] { got[static_cast<size_t>(t)] = ds->EntitySegment("s", "/a").value().get(); });
  }
  // Wait until one thread fetches and the other three wait for it.
  for (int i = 0; i < 2000 && (calls.load() < 1 || ds->Stats().shared_waits < 3); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(ds->Stats().shared_waits, 3);
  for (auto* g : got) EXPECT_EQ(g, got[0]);
}

TEST(RemoteDataset, EntitySegmentsFetchesMissingKeysConcurrently) {
  std::atomic<int> now{0}, peak{0}, calls{0};
  auto fetch = [&](const std::string& seg, const std::string& ent) -> Result<Batches> {
    ++calls;
    const int n = ++now;
    int p = peak.load();
    while (n > p && !peak.compare_exchange_weak(p, n)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    --now;
    return EntityBatches(seg, ent);
  };
  auto ds = RemoteDataset::Make({"s1", "s2", "s3"}, *testing::CatalogSchema({"/a", "/b"}), fetch, Options()).value();
  std::vector<EntityKey> keys{{"s1", "/a"}, {"s2", "/a"}, {"s1", "/a"}, {"s3", "/a"}, {"s1", "/b"}, {"s2", "/b"}};
  auto segs = ds->EntitySegments(keys).value();
  ASSERT_EQ(segs.size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(segs[i]->id(), keys[i].first);
    EXPECT_EQ(segs[i]->chunks()[0].entity_path, keys[i].second);
  }
  EXPECT_EQ(segs[0].get(), segs[2].get());
  EXPECT_EQ(calls, 5);  // the repeated key once
  EXPECT_GT(peak, 1);
  EXPECT_LE(peak, kDefaultRemoteFetchConcurrency);
  // All resident now: no fetch, no thread.
  EXPECT_TRUE(ds->EntitySegments(keys).ok());
  EXPECT_EQ(calls, 5);
  // An unknown segment fails the call before anything is fetched.
  auto st = ds->EntitySegments({{"s3", "/b"}, {"zzz", "/a"}}).status();
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("zzz"), std::string::npos);
  EXPECT_EQ(calls, 5);
}

TEST(RemoteDataset, EntitySegmentsStartsNoFetchAfterAFailure) {
  std::atomic<int> calls{0};
  auto fetch = [&](const std::string& seg, const std::string&) -> Result<Batches> {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return Status::IoError("catalog down (" + seg + ")");
  };
  std::vector<std::string> segs;
  std::vector<EntityKey> keys;
  for (int i = 0; i < 40; ++i) {
    segs.push_back("s" + std::to_string(100 + i));
    keys.emplace_back(segs.back(), "/a");
  }
  for (int concurrency : {1, 4}) {
    calls = 0;
    RemoteOptions o = Options();
    o.fetch_concurrency = concurrency;
    auto ds = RemoteDataset::Make(segs, *testing::CatalogSchema({"/a"}), fetch, o).value();
    auto st = ds->EntitySegments(keys).status();
    EXPECT_EQ(st.code(), StatusCode::kIoError);
    EXPECT_NE(st.message().find("catalog down"), std::string::npos);
    EXPECT_LE(calls, concurrency);  // the in-flight ones, nothing started after the failure
  }
}

}  // namespace
}  // namespace rrl::catalog
