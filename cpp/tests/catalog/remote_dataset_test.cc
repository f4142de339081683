// Tests of rrloader/catalog/remote_dataset and redap: schema → columns, manifests fetched
// once per segment, chunks fetched by id only when wanted (batched, cached, shared between
// threads, kept alive past a small cache), errors naming the segment and entity, a removed
// segment, stale chunk keys refreshed; and the redap codec's edge cases. The transport is
// testing::FakeCatalog (the real server's wire format).
#include "rrloader/catalog/remote_dataset.h"

#include <gtest/gtest.h>

#include <thread>

#include "rrloader/catalog/redap.h"
#include "tests/catalog/fake_catalog.h"

namespace rrl::catalog {
namespace {

RemoteOptions Options(int64_t cache_bytes = kDefaultRemoteCacheBytes) {
  RemoteOptions o;
  o.cache_bytes = cache_bytes;
  o.description = "catalog test://x (dataset 'ds')";
  return o;
}

std::shared_ptr<RemoteDataset> Make(testing::FakeCatalog& catalog, std::vector<std::string> segments,
                                    const RemoteOptions& options = Options()) {
  return RemoteDataset::Make(std::move(segments), *testing::CatalogSchema({"/a", "/b"}), catalog.Rpc(), options)
      .value();
}

std::vector<size_t> ChunksOf(const store::Segment& seg, const std::string& entity) {
  std::vector<size_t> out;
  for (size_t i = 0; i < seg.chunks().size(); ++i) {
    if (seg.chunks()[i].entity_path == entity) out.push_back(i);
  }
  return out;
}

TEST(RemoteDataset, ColumnsAndTimelinesFromTheCatalogSchema) {
  testing::FakeCatalog catalog;
  auto ds =
      RemoteDataset::Make({"s2", "s1", "s1"}, *testing::CatalogSchema({"/b", "/a/x", "/a"}), catalog.Rpc(), Options())
          .value();
  EXPECT_EQ(ds->SegmentIds(), (std::vector<std::string>{"s1", "s2"}));
  ASSERT_EQ(ds->timelines().size(), 1u);
  EXPECT_EQ(ds->timelines().at("frame"), rrd::TimeKind::kSequence);
  ASSERT_EQ(ds->columns().size(), 3u);  // the control column is not a column
  EXPECT_EQ(ds->columns()[0].name, "/a:Scalars:scalars");
  EXPECT_EQ(ds->columns()[1].name, "/a/x:Scalars:scalars");
  EXPECT_EQ(ds->columns()[2].name, "/b:Scalars:scalars");
  EXPECT_TRUE(ds->columns()[0].info.type->Equals(*arrow::list(arrow::float64())));
  EXPECT_EQ(catalog.manifest_calls + catalog.fetch_calls, 0);  // nothing is fetched until asked
  EXPECT_TRUE(ds->WantsPrefetch());
}

TEST(RemoteDataset, SchemaErrors) {
  testing::FakeCatalog catalog;
  auto bad_index =
      arrow::schema({arrow::field("t", arrow::float64(), true, arrow::key_value_metadata({"rerun:kind"}, {"index"}))});
  EXPECT_EQ(RemoteDataset::Make({}, *bad_index, catalog.Rpc(), Options()).status().code(),
            StatusCode::kInvalidArgument);
  auto no_entity = arrow::schema(
      {arrow::field("/a:X:y", arrow::list(arrow::int32()), true, arrow::key_value_metadata({"rerun:kind"}, {"data"}))});
  auto st = RemoteDataset::Make({}, *no_entity, catalog.Rpc(), Options()).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("/a:X:y"), std::string::npos);
  EXPECT_EQ(RemoteDataset::Make({}, *no_entity, nullptr, Options()).status().code(), StatusCode::kInvalidArgument);
}

TEST(RemoteDataset, ManifestOncePerSegmentAndNoChunkUntilLoaded) {
  testing::FakeCatalog catalog;
  catalog.AddRange("s1", "/a", 0, 10);
  catalog.AddRange("s1", "/a", 10, 10);
  catalog.AddRange("s1", "/b", 0, 5);
  catalog.Add("s1", "/a", {}, {std::vector<double>{7}}, /*is_static=*/true);
  auto ds = Make(catalog, {"s1"});
  auto seg = ds->EntitySegment("s1", "/a").value();
  auto again = ds->EntitySegments({{"s1", "/a"}, {"s1", "/b"}}).value();
  EXPECT_EQ(catalog.manifest_calls, 1);
  EXPECT_EQ(catalog.fetch_calls, 0);
  EXPECT_EQ(again[0].get(), seg.get());
  EXPECT_EQ(again[1].get(), seg.get());  // one segment: every entity's chunks
  ASSERT_EQ(seg->chunks().size(), 4u);
  EXPECT_TRUE(seg->is_remote());
  const auto& c0 = seg->chunks()[0];
  EXPECT_EQ(c0.entity_path, "/a");
  EXPECT_EQ(c0.num_rows, 10u);
  ASSERT_EQ(c0.ranges.size(), 1u);
  EXPECT_EQ(c0.ranges[0].min, 0);
  EXPECT_EQ(c0.ranges[0].max, 9);
  ASSERT_TRUE(c0.has_component_stats);
  ASSERT_NE(c0.Stats("frame", "Scalars:scalars"), nullptr);
  EXPECT_EQ(c0.Stats("frame", "Scalars:scalars")->num_rows, 10u);
  EXPECT_EQ(c0.chunk_id, testing::FakeCatalog::Id16(1));
  EXPECT_TRUE(seg->chunks()[3].is_static);
  EXPECT_EQ(seg->index_ranges().at("frame").max, 19);
  EXPECT_EQ(ds->Stats().manifests_cached, 1);
  EXPECT_GT(ds->Stats().manifest_bytes, 0);
}

TEST(RemoteDataset, PrefetchFetchesOnlyTheWantedChunksInOneCallThenHitsTheCache) {
  testing::FakeCatalog catalog;
  for (int64_t k = 0; k < 8; ++k) catalog.AddRange("s1", "/a", 10 * k, 10);
  catalog.AddRange("s2", "/a", 0, 10);
  auto ds = Make(catalog, {"s1", "s2"});
  auto s1 = ds->EntitySegment("s1", "/a").value();
  auto s2 = ds->EntitySegment("s2", "/a").value();
  std::vector<std::shared_ptr<const chunk::Chunk>> alive;
  ASSERT_TRUE(ds->Prefetch({{s1, {2, 5}}, {s2, {0}}}, &alive).ok());
  EXPECT_EQ(catalog.fetch_calls, 1);  // two segments, one call
  EXPECT_EQ(catalog.chunks_sent, 3);
  ASSERT_EQ(alive.size(), 3u);
  auto stats = ds->Stats();
  EXPECT_EQ(stats.chunks_fetched, 3);
  EXPECT_EQ(stats.fetches, 1);
  EXPECT_EQ(stats.on_demand_chunks, 0);
  EXPECT_GT(stats.fetched_bytes, 0);
  // Loading a prefetched chunk is a cache hit; its rows are the chunk's.
  auto c = s1->LoadChunk(5, ds->cache()).value();
  EXPECT_EQ(c->num_rows(), 10);
  EXPECT_EQ(c->FindTimeline("frame")->min, 50);
  EXPECT_EQ(catalog.fetch_calls, 1);
  // A chunk nobody prefetched is fetched alone when loaded.
  auto lone = s1->LoadChunk(7, ds->cache()).value();
  EXPECT_EQ(lone->FindTimeline("frame")->min, 70);
  EXPECT_EQ(catalog.fetch_calls, 2);
  EXPECT_EQ(ds->Stats().on_demand_chunks, 1);
  // Prefetching what is cached fetches nothing.
  alive.clear();
  ASSERT_TRUE(ds->Prefetch({{s1, {2, 5, 7}}}, &alive).ok());
  EXPECT_EQ(catalog.fetch_calls, 2);
  EXPECT_EQ(alive.size(), 3u);
}

TEST(RemoteDataset, LargePrefetchesAreSplitIntoConcurrentCalls) {
  testing::FakeCatalog catalog;
  for (int64_t k = 0; k < 12; ++k) catalog.AddRange("s1", "/a", 10 * k, 10);
  RemoteOptions o = Options();
  o.fetch_batch_bytes = 1;  // every chunk is big enough for a call of its own...
  o.fetch_concurrency = 3;  // ...but at most 3 calls
  auto ds = Make(catalog, {"s1"}, o);
  auto seg = ds->EntitySegment("s1", "/a").value();
  std::vector<std::shared_ptr<const chunk::Chunk>> alive;
  ASSERT_TRUE(ds->Prefetch({{seg, ChunksOf(*seg, "/a")}}, &alive).ok());
  EXPECT_EQ(catalog.fetch_calls, 3);
  EXPECT_EQ(catalog.chunks_sent, 12);
  EXPECT_EQ(alive.size(), 12u);
}

TEST(RemoteDataset, ChunksOutliveASmallCacheWhileABlockHoldsThem) {
  testing::FakeCatalog catalog;
  catalog.AddRange("s1", "/a", 0, 10);
  auto ds = Make(catalog, {"s1"}, Options(/*cache_bytes=*/0));
  auto seg = ds->EntitySegment("s1", "/a").value();
  std::vector<std::shared_ptr<const chunk::Chunk>> alive;
  ASSERT_TRUE(ds->Prefetch({{seg, {0}}}, &alive).ok());
  EXPECT_EQ(ds->Stats().size_bytes, 0);  // nothing kept...
  auto c = seg->LoadChunk(0, ds->cache()).value();
  EXPECT_EQ(c.get(), alive[0].get());  // ...but the block's chunk is found again
  EXPECT_EQ(catalog.fetch_calls, 1);
  alive.clear();
  c.reset();
  ASSERT_TRUE(seg->LoadChunk(0, ds->cache()).ok());  // released: fetched again
  EXPECT_EQ(catalog.fetch_calls, 2);
}

TEST(RemoteDataset, ConcurrentPrefetchesOfOneChunkFetchItOnce) {
  testing::FakeCatalog catalog;
  for (int64_t k = 0; k < 4; ++k) catalog.AddRange("s1", "/a", 10 * k, 10);
  auto ds = Make(catalog, {"s1"});
  auto seg = ds->EntitySegment("s1", "/a").value();
  std::vector<std::thread> threads;
  std::vector<size_t> got(8, 0);
  for (size_t t = 0; t < got.size(); ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::shared_ptr<const chunk::Chunk>> alive;
      if (ds->Prefetch({{seg, {0, 1, 2, 3}}}, &alive).ok()) got[t] = alive.size();
    });
  }
  for (auto& t : threads) t.join();
  for (size_t n : got) EXPECT_EQ(n, 4u);
  EXPECT_EQ(catalog.chunks_sent, 4);
}

TEST(RemoteDataset, ErrorsNameTheDatasetSegmentAndEntityAndAreNotCached) {
  testing::FakeCatalog catalog;
  catalog.AddRange("s1", "/a", 0, 10);
  auto ds = Make(catalog, {"s1"});
  EXPECT_EQ(ds->EntitySegment("nope", "/a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(catalog.manifest_calls, 0);  // an unknown segment is refused before any call
  auto seg = ds->EntitySegment("s1", "/a").value();
  catalog.down = true;
  std::vector<std::shared_ptr<const chunk::Chunk>> alive;
  auto st = ds->Prefetch({{seg, {0}}}, &alive);
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_NE(st.message().find("catalog test://x (dataset 'ds')"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("entity '/a' of segment 's1'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("test server down"), std::string::npos) << st.message();
  EXPECT_EQ(ds->Stats().fetch_errors, 1);
  catalog.down = false;
  EXPECT_TRUE(ds->Prefetch({{seg, {0}}}, &alive).ok());  // the next block asks again
}

TEST(RemoteDataset, ARemovedSegmentIsNotFoundNamingIt) {
  testing::FakeCatalog catalog;
  catalog.AddRange("s1", "/a", 0, 10);
  catalog.AddRange("s2", "/a", 0, 10);
  auto ds = Make(catalog, {"s1", "s2"});
  auto seg = ds->EntitySegment("s1", "/a").value();
  catalog.removed = {"s1", "s2"};
  // Its manifest cached: the chunk call fails, and the manifest check names the segment.
  std::vector<std::shared_ptr<const chunk::Chunk>> alive;
  auto st = ds->Prefetch({{seg, {0}}}, &alive);
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("segment 's1' is no longer in the dataset"), std::string::npos) << st.message();
  // Not cached yet: the manifest call itself fails.
  auto st2 = ds->EntitySegment("s2", "/a").status();
  EXPECT_EQ(st2.code(), StatusCode::kNotFound);
  EXPECT_NE(st2.message().find("segment 's2' is no longer in the dataset"), std::string::npos) << st2.message();
}

TEST(RemoteDataset, ABlocksMissingManifestsAreOneBatchedRound) {
  testing::FakeCatalog catalog;
  std::vector<std::string> ids;
  for (int k = 0; k < 50; ++k) {
    ids.push_back("s" + std::to_string(k));
    catalog.AddRange(ids.back(), "/a", k, 5 + k % 3);
  }
  RemoteOptions o = Options();
  o.manifests_in_flight = 16;
  auto ds =
      RemoteDataset::Make(ids, *testing::CatalogSchema({"/a", "/b"}), catalog.Rpc(), o, catalog.RpcMany()).value();
  (void)ds->EntitySegment("s3", "/a").value();  // one cached already: not asked again
  EXPECT_EQ(catalog.manifest_calls, 1);
  std::vector<EntityKey> keys;
  keys.reserve(ids.size() + 1);
  for (const auto& id : ids) keys.emplace_back(id, "/a");
  keys.emplace_back("s7", "/b");  // a segment twice: fetched once
  auto segs = ds->EntitySegments(keys).value();
  EXPECT_EQ(catalog.many_calls, 1);
  EXPECT_EQ(catalog.max_in_flight, 16);
  EXPECT_EQ(catalog.manifest_calls, 50);
  ASSERT_EQ(segs.size(), keys.size());
  for (size_t k = 0; k < ids.size(); ++k) {
    EXPECT_EQ(segs[k]->id(), ids[k]);
    ASSERT_EQ(segs[k]->chunks().size(), 1u);
    EXPECT_EQ(segs[k]->chunks()[0].num_rows, 5u + k % 3);  // each segment its own manifest
  }
  EXPECT_EQ(segs.back().get(), segs[7].get());
  EXPECT_EQ(ds->Stats().manifests_cached, 50);
  (void)ds->EntitySegments(keys).value();  // all cached: no call
  EXPECT_EQ(catalog.many_calls, 1);
  EXPECT_EQ(catalog.manifest_calls, 50);
}

TEST(RemoteDataset, SegmentsAskedForAheadStayWithinHalfTheManifestCache) {
  testing::FakeCatalog catalog;
  std::vector<std::string> ids;
  for (int k = 0; k < 300; ++k) {
    ids.push_back("s" + std::to_string(1000 + k));
    catalog.AddRange(ids.back(), "/a", k, 4);
  }
  auto ds =
      RemoteDataset::Make(ids, *testing::CatalogSchema({"/a"}), catalog.Rpc(), Options(), catalog.RpcMany()).value();
  // A large cache: the first round fetches at most 128 (no manifest size known yet), in one
  // batched round; unknown and cached segments are skipped, none is fetched twice.
  std::vector<std::string> ahead = ids;
  ahead.insert(ahead.begin(), "nope");
  EXPECT_TRUE(ds->PrefetchSegments(ahead).ok());
  EXPECT_EQ(catalog.many_calls, 1);
  EXPECT_EQ(catalog.manifest_calls, 128);
  EXPECT_TRUE(ds->PrefetchSegments(ahead).ok());
  EXPECT_EQ(catalog.many_calls, 2);
  EXPECT_EQ(catalog.manifest_calls, 300);
  EXPECT_TRUE(ds->PrefetchSegments(ahead).ok());  // all cached: no call
  EXPECT_EQ(catalog.many_calls, 2);
  (void)ds->EntitySegment("s1005", "/a").value();
  EXPECT_EQ(catalog.manifest_calls, 300);

  // A manifest cache with room for about 20: segments asked for ahead fill at most half of it.
  testing::FakeCatalog small_catalog;
  for (const auto& id : ids) small_catalog.AddRange(id, "/a", 0, 4);
  RemoteOptions o = Options();
  o.manifest_cache_bytes = 64 << 10;  // guessed at 4 KiB a manifest: 8 in the first round
  auto small =
      RemoteDataset::Make(ids, *testing::CatalogSchema({"/a"}), small_catalog.Rpc(), o, small_catalog.RpcMany())
          .value();
  EXPECT_TRUE(small->PrefetchSegments(ids).ok());
  EXPECT_EQ(small_catalog.manifest_calls, 8);
  const int64_t mean = small->Stats().manifest_cache_bytes / 8;
  for (int round = 0; round < 4; ++round) EXPECT_TRUE(small->PrefetchSegments(ids).ok());
  EXPECT_LE(small->Stats().manifest_cache_bytes, o.manifest_cache_bytes / 2 + mean);
  EXPECT_EQ(small_catalog.manifest_calls, small->Stats().manifests_cached);

  // Without a batched transport nothing is asked for ahead.
  testing::FakeCatalog plain;
  plain.AddRange("s1000", "/a", 0, 4);
  auto one = RemoteDataset::Make({"s1000"}, *testing::CatalogSchema({"/a"}), plain.Rpc(), Options()).value();
  EXPECT_TRUE(one->PrefetchSegments({"s1000"}).ok());
  EXPECT_EQ(plain.manifest_calls, 0);

  // A failed round returns its first failure (the caller stops asking ahead) and caches
  // nothing: the segment is asked for again by the lookup that needs it.
  testing::FakeCatalog down;
  for (const auto& id : {"s1", "s2"}) down.AddRange(id, "/a", 0, 4);
  auto failing =
      RemoteDataset::Make({"s1", "s2"}, *testing::CatalogSchema({"/a"}), down.Rpc(), Options(), down.RpcMany()).value();
  down.down = true;
  const Status st = failing->PrefetchSegments({"s1", "s2"});
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_NE(st.message().find("segment 's1'"), std::string::npos) << st.message();
  EXPECT_EQ(failing->Stats().manifests_cached, 0);
  down.down = false;
  EXPECT_TRUE(failing->EntitySegment("s1", "/a").ok());
}

TEST(RemoteDataset, ABatchedRoundReportsTheFirstFailureInKeyOrder) {
  testing::FakeCatalog catalog;
  for (int k = 0; k < 6; ++k) catalog.AddRange("s" + std::to_string(k), "/a", 0, 3);
  std::vector<std::string> ids{"s0", "s1", "s2", "s3", "s4", "s5"};
  auto ds =
      RemoteDataset::Make(ids, *testing::CatalogSchema({"/a"}), catalog.Rpc(), Options(), catalog.RpcMany()).value();
  catalog.removed = {"s4", "s2"};
  std::vector<EntityKey> keys;
  keys.reserve(ids.size() + 1);
  for (const auto& id : ids) keys.emplace_back(id, "/a");
  auto st = ds->EntitySegments(keys).status();
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("segment 's2' is no longer in the dataset"), std::string::npos) << st.message();
  // The others were fetched and kept; the failed ones are not cached (asked again later).
  EXPECT_EQ(ds->Stats().manifests_cached, 4);
  catalog.removed.clear();
  EXPECT_TRUE(ds->EntitySegments(keys).ok());
  EXPECT_EQ(ds->Stats().manifests_cached, 6);
}

TEST(RemoteDataset, StaleChunkKeysAreRefreshedOnce) {
  testing::FakeCatalog catalog;
  catalog.AddRange("s1", "/a", 0, 10);
  auto ds = Make(catalog, {"s1"});
  auto seg = ds->EntitySegment("s1", "/a").value();
  catalog.key_salt = "b";  // the server restarted: same chunks, new keys
  std::vector<std::shared_ptr<const chunk::Chunk>> alive;
  ASSERT_TRUE(ds->Prefetch({{seg, {0}}}, &alive).ok());
  EXPECT_EQ(ds->Stats().key_refreshes, 1);
  EXPECT_EQ(catalog.fetch_calls, 2);  // the failed call and the one with new keys
}

TEST(Redap, RequestsAndAnswersRoundTrip) {
  using namespace redap;
  const std::string manifest_request = EncodeGetRrdManifestRequest("seg_a");
  EXPECT_EQ(manifest_request, std::string("\x0a\x07\x0a\x05seg_a", 9));  // {1: {1: "seg_a"}}
  ChunkRef ref{testing::FakeCatalog::Id16(3), "seg_a", "base", "key"};
  auto request = EncodeFetchChunksRequest({ref, ref});
  ASSERT_TRUE(request.ok());
  EXPECT_EQ(EncodeFetchChunksRequest({ChunkRef{"short", "s", "base", "k"}}).status().code(),
            StatusCode::kInvalidArgument);
  // Tuid{1: fixed64 time_ns, 2: fixed64 inc} -> 16 big-endian bytes.
  rrd::ProtoWriter tuid;
  tuid.Fixed64(1, 1003);
  tuid.Fixed64(2, 3);
  EXPECT_EQ(TuidBytes(tuid.data()).value(), testing::FakeCatalog::Id16(3));
  EXPECT_EQ(TuidBytes("").status().code(), StatusCode::kCorrupt);
  // Malformed answers are corrupt, never a crash.
  std::vector<FetchedChunk> out;
  EXPECT_EQ(DecodeFetchChunksResponse(arrow::Buffer::FromString("\x0a\x05\x01"), &out).code(), StatusCode::kCorrupt);
  EXPECT_EQ(DecodeGetRrdManifestResponse(arrow::Buffer::FromString("")).status().code(), StatusCode::kCorrupt);
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace rrl::catalog
