// rrloader/catalog/local_dataset.h — a dataset over local .rrd files, shaped like
// rerun-sdk's DatasetEntry: segments (recording ids), a schema, index ranges, and a
// dataframe reader with the reference's semantics.
#pragma once

#include <arrow/table.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "rrloader/catalog/dataset.h"
#include "rrloader/query/dataframe.h"
#include "rrloader/store/segment.h"

namespace rrl::catalog {

// OpenOptions: how a dataset is opened.
struct OpenOptions {
  int64_t chunk_cache_bytes = store::kDefaultChunkCacheBytes;
  int num_threads = 0;  // files opened in parallel; 0 = hardware concurrency
};

// ReadOptions: one reader() call. Index values and ranges are inclusive int64
// (nanoseconds on timestamp and duration timelines).
struct ReadOptions {
  std::optional<std::string> index;
  std::vector<std::string> segments;                 // empty: all
  std::optional<std::vector<std::string>> contents;  // entity path filter expressions
  bool fill_latest_at = false;
  bool include_semantically_empty_columns = false;
  bool include_tombstone_columns = false;
  // Either per-segment values, or one list applied to each segment within its range.
  std::optional<std::map<std::string, std::vector<int64_t>>> values_per_segment;
  std::optional<std::vector<int64_t>> values_everywhere;
  std::optional<std::pair<int64_t, int64_t>> index_range;
};

// LocalDataset: immutable after Open; Read is thread-safe (the chunk cache locks).
class LocalDataset final : public Dataset {
 public:
  // Open: `paths` are .rrd files or directories (whose top-level *.rrd are taken, sorted).
  [[nodiscard]] static Result<std::shared_ptr<LocalDataset>> Open(const std::vector<std::string>& paths,
                                                                  const OpenOptions& options);

  // Segments, sorted by id.
  const std::vector<std::shared_ptr<store::Segment>>& segments() const { return segments_; }
  std::vector<std::string> SegmentIds() const override;
  [[nodiscard]] Result<std::shared_ptr<store::Segment>> FindSegment(const std::string& id) const;
  // EntitySegment: the whole segment (its footer already indexes every chunk).
  [[nodiscard]] Result<std::shared_ptr<const store::Segment>> EntitySegment(
      const std::string& segment_id, const std::string& entity_path) const override;
  const std::vector<std::string>& files() const { return files_; }
  // Timelines of the dataset with their kinds, sorted by name.
  const std::map<std::string, rrd::TimeKind>& timelines() const override { return timelines_; }
  // Component columns sorted as the reader orders them.
  const std::vector<DatasetColumn>& columns() const override { return columns_; }
  // Schema: index columns then component columns, Sorbet-style field metadata.
  std::shared_ptr<arrow::Schema> Schema() const;
  // IndexRanges: rerun_segment_id plus "<tl>:start"/"<tl>:end" for every timeline (or one).
  [[nodiscard]] Result<std::shared_ptr<arrow::Table>> IndexRanges(const std::optional<std::string>& timeline) const;
  [[nodiscard]] Result<std::shared_ptr<arrow::Table>> Read(const ReadOptions& options, query::QueryStats* stats) const;

  store::ChunkCache& cache() const override { return *cache_; }

 private:
  std::vector<std::string> files_;
  std::vector<std::shared_ptr<store::Segment>> segments_;
  // by_id_: segment id -> position in segments_ (a block looks up every segment it reads).
  std::unordered_map<std::string, size_t> by_id_;
  std::map<std::string, rrd::TimeKind> timelines_;
  std::vector<DatasetColumn> columns_;
  // Segments of files without a footer: the reference loads those into an eager chunk store, which
  // compacts their chunks (query::DataframeQuery::eager_store).
  std::set<const store::Segment*> eager_segments_;
  std::unique_ptr<store::ChunkCache> cache_;
};

// ColumnName: the dataframe name of (entity, component), e.g. "/cam:EncodedImage:blob";
// "/__properties" becomes "property:...".
std::string ColumnName(const std::string& entity_path, const std::string& component);

// EntityFilter: rerun's entity path filter expressions ("/a/**", "/a", "-/a/b/**",
// "+ /x"). An entity is kept when an inclusion matches and no exclusion does. Reserved
// paths ("/__...") only match rules that name them explicitly.
class EntityFilter {
 public:
  [[nodiscard]] static Result<EntityFilter> Parse(const std::vector<std::string>& exprs);
  static EntityFilter Default();  // everything but reserved "/__" paths
  bool Matches(const std::string& entity_path) const;

 private:
  struct Rule {
    bool include = true;
    std::string path;
    bool subtree = false;
  };
  std::vector<Rule> rules_;
};

}  // namespace rrl::catalog
