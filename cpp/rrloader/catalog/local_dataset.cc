#include "rrloader/catalog/local_dataset.h"

#include <arrow/builder.h>
#include <arrow/util/key_value_metadata.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <limits>
#include <set>
#include <thread>

#include "rrloader/chunk/entity_path.h"

namespace rrl::catalog {

namespace fs = std::filesystem;

namespace {

bool IsReserved(const std::string& path) {
  return path.rfind("/__", 0) == 0;
}

bool IsAncestorOrSelf(const std::string& ancestor, const std::string& path) {
  if (ancestor == "/" || ancestor == path) return true;
  return path.size() > ancestor.size() && path.compare(0, ancestor.size(), ancestor) == 0 &&
         path[ancestor.size()] == '/';
}

Result<std::vector<std::string>> ExpandPaths(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const auto& p : paths) {
    std::error_code ec;
    auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) return Status::NotFound(p + ": no such file or directory");
    if (fs::is_directory(st)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::directory_iterator(p, ec)) {
        if (entry.is_regular_file() && entry.path().extension() == ".rrd") found.push_back(entry.path().string());
      }
      if (ec) return Status::IoError(p + ": cannot list directory: " + ec.message());
      if (found.empty()) return Status::NotFound(p + ": directory holds no .rrd files");
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(p);
    }
  }
  if (files.empty()) return Status::NotFound("no .rrd files given");
  return files;
}

}  // namespace

std::string ColumnName(const std::string& entity_path, const std::string& component) {
  if (entity_path == "/__properties") return "property:" + component;
  if (entity_path.rfind("/__properties/", 0) == 0) {
    return "property:" + entity_path.substr(std::string("/__properties/").size()) + ":" + component;
  }
  return entity_path + ":" + component;
}

Result<EntityFilter> EntityFilter::Parse(const std::vector<std::string>& exprs) {
  EntityFilter f;
  for (std::string e : exprs) {
    Rule r;
    // Trim, then an optional leading '+' or '-'.
    auto trim = [](std::string& s) {
      s.erase(0, s.find_first_not_of(" \t"));
      s.erase(s.find_last_not_of(" \t") + 1);
    };
    trim(e);
    if (!e.empty() && (e[0] == '+' || e[0] == '-')) {
      r.include = e[0] == '+';
      e.erase(0, 1);
      trim(e);
    }
    if (e.empty()) return Status::InvalidArgument("empty entity path filter expression");
    if (e[0] != '/') e.insert(e.begin(), '/');
    if (e.size() >= 3 && e.compare(e.size() - 3, 3, "/**") == 0) {
      r.subtree = true;
      e.resize(e.size() - 3);
      if (e.empty()) e = "/";
    }
    r.path = e;
    f.rules_.push_back(std::move(r));
  }
  return f;
}

EntityFilter EntityFilter::Default() {
  EntityFilter f;
  f.rules_.push_back(Rule{true, "/", true});
  return f;
}

bool EntityFilter::Matches(const std::string& entity) const {
  // As in rerun's EntityPathFilter, the most specific matching rule decides: a longer path beats a shorter one,
  // an exact path beats a subtree rule on the same path, and of identical rules the last one counts. (Observed:
  // `["/robot/**", "-/**"]` keeps /robot's columns; docs/query-semantics.md item 12.)
  const Rule* best = nullptr;
  for (const auto& r : rules_) {
    bool hit = r.subtree ? IsAncestorOrSelf(r.path, entity) : r.path == entity;
    if (hit && IsReserved(entity) && !IsReserved(r.path)) hit = false;
    if (!hit) continue;
    if (!best) {
      best = &r;
      continue;
    }
    const size_t rl = r.path == "/" ? 0 : r.path.size(), bl = best->path == "/" ? 0 : best->path.size();
    if (rl != bl) {
      if (rl > bl) best = &r;
    } else if (r.subtree != best->subtree) {
      if (!r.subtree) best = &r;
    } else {
      best = &r;  // identical rules: the later one replaces the earlier (rerun keeps its rules in a map)
    }
  }
  return best && best->include;
}

Result<std::shared_ptr<LocalDataset>> LocalDataset::Open(const std::vector<std::string>& paths,
                                                         const OpenOptions& options) {
  auto ds = std::make_shared<LocalDataset>();
  RRL_ASSIGN_OR_RETURN(ds->files_, ExpandPaths(paths));
  ds->cache_ = std::make_unique<store::ChunkCache>(options.chunk_cache_bytes);

  // Open files in parallel: each is a header + trailer + footer read and a small decode.
  const size_t n = ds->files_.size();
  std::vector<Result<std::vector<std::shared_ptr<store::Segment>>>> results(n, Status::Internal("not opened"));
  std::vector<uint8_t> from_footer(n, 0);
  unsigned threads = options.num_threads > 0 ? static_cast<unsigned>(options.num_threads)
                                             : std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<size_t>(threads, n));
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) {
      auto src = io::OpenFile(ds->files_[i]);
      if (!src.ok()) {
        results[i] = src.status();
        continue;
      }
      auto index = rrd::OpenRrd(*src);
      if (!index.ok()) {
        results[i] = index.status();
        continue;
      }
      results[i] = store::Segment::FromRrd(*index, *ds->cache_);
      from_footer[i] = index->from_footer;
    }
  };
  if (threads <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back(work);
    for (auto& t : pool) t.join();
  }
  std::map<std::string, std::string> seen;  // segment id -> file
  for (size_t i = 0; i < n; ++i) {
    if (!results[i].ok()) return results[i].status();
    for (auto& seg : results[i].value()) {
      auto [it, inserted] = seen.emplace(seg->id(), ds->files_[i]);
      if (!inserted) {
        return Status::InvalidArgument(ds->files_[i] + ": recording '" + seg->id() + "' is also in " + it->second +
                                       " (segment ids must be unique in a dataset)");
      }
      if (!from_footer[i]) ds->eager_segments_.insert(seg.get());
      ds->segments_.push_back(std::move(seg));
    }
  }
  std::sort(ds->segments_.begin(), ds->segments_.end(), [](const auto& a, const auto& b) { return a->id() < b->id(); });
  ds->by_id_.reserve(ds->segments_.size());
  for (size_t i = 0; i < ds->segments_.size(); ++i) ds->by_id_.emplace(ds->segments_[i]->id(), i);

  // Dataset-wide timelines and columns (the union over segments).
  std::map<std::pair<std::vector<std::string>, std::string>, DatasetColumn> cols;
  for (const auto& seg : ds->segments_) {
    for (const auto& [name, range] : seg->index_ranges()) {
      auto [it, inserted] = ds->timelines_.emplace(name, range.kind);
      if (!inserted && it->second != range.kind) {
        return Status::InvalidArgument(seg->source_name() + ": timeline '" + name +
                                       "' has a different kind than in other segments");
      }
    }
    for (const auto& [key, info] : seg->columns()) {
      auto& dc = cols[{chunk::EntityPathParts(info.entity_path), info.component}];
      if (!dc.info.type) {
        dc.name = ColumnName(info.entity_path, info.component);
        dc.info = info;
        dc.is_static_everywhere = info.is_static;
      } else {
        if (!dc.info.type->Equals(*info.type)) {
          return Status::InvalidArgument(seg->source_name() + ": column '" + dc.name + "' has type " +
                                         info.type->ToString() + " but " + dc.info.type->ToString() +
                                         " in another segment");
        }
        dc.info.semantically_empty = dc.info.semantically_empty || info.semantically_empty;
        dc.info.is_static = dc.info.is_static || info.is_static;
        dc.is_static_everywhere = dc.is_static_everywhere && info.is_static;
      }
    }
  }
  for (auto& [_, dc] : cols) ds->columns_.push_back(std::move(dc));
  return ds;
}

std::vector<std::string> LocalDataset::SegmentIds() const {
  std::vector<std::string> ids;
  for (const auto& s : segments_) ids.push_back(s->id());
  return ids;
}

Result<std::shared_ptr<store::Segment>> LocalDataset::FindSegment(const std::string& id) const {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return Status::NotFound("no segment '" + id + "' in the dataset");
  return segments_[it->second];
}

Result<std::shared_ptr<const store::Segment>> LocalDataset::EntitySegment(const std::string& segment_id,
                                                                          const std::string& /*entity_path*/) const {
  auto seg = FindSegment(segment_id);
  if (!seg.ok()) return seg.status();
  return std::shared_ptr<const store::Segment>(*seg);
}

std::shared_ptr<arrow::Schema> LocalDataset::Schema() const {
  arrow::FieldVector fields;
  for (const auto& [name, kind] : timelines_) {
    fields.push_back(arrow::field(name, rrd::ArrowTypeOf(kind), true,
                                  arrow::key_value_metadata({"rerun:kind", "rerun:index_name"}, {"index", name})));
  }
  for (const auto& c : columns_) {
    std::vector<std::string> keys = {"rerun:kind", "rerun:entity_path", "rerun:component"};
    std::vector<std::string> vals = {"data", c.info.entity_path, c.info.component};
    if (!c.info.archetype.empty()) keys.push_back("rerun:archetype"), vals.push_back(c.info.archetype);
    if (!c.info.component_type.empty()) keys.push_back("rerun:component_type"), vals.push_back(c.info.component_type);
    if (c.info.is_static) keys.push_back("rerun:is_static"), vals.push_back("true");
    if (c.info.component == query::kClearComponent) keys.push_back("rerun:is_tombstone"), vals.push_back("true");
    if (c.info.semantically_empty) keys.push_back("rerun:is_semantically_empty"), vals.push_back("true");
    fields.push_back(arrow::field(c.name, c.info.type, true, arrow::key_value_metadata(keys, vals)));
  }
  return arrow::schema(fields);
}

Result<std::shared_ptr<arrow::Table>> LocalDataset::IndexRanges(const std::optional<std::string>& timeline) const {
  std::vector<std::pair<std::string, rrd::TimeKind>> tls;
  if (timeline) {
    auto it = timelines_.find(*timeline);
    if (it == timelines_.end()) return Status::NotFound("no timeline '" + *timeline + "' in the dataset");
    tls.emplace_back(*it);
  } else {
    tls.assign(timelines_.begin(), timelines_.end());
  }
  arrow::StringBuilder ids;
  arrow::FieldVector fields{arrow::field("rerun_segment_id", arrow::utf8(), false)};
  std::vector<std::shared_ptr<arrow::Array>> arrays;
  std::vector<std::vector<std::optional<int64_t>>> starts(tls.size()), ends(tls.size());
  for (const auto& seg : segments_) {
    if (!ids.Append(seg->id()).ok()) return Status::Internal("append");
    for (size_t k = 0; k < tls.size(); ++k) {
      auto it = seg->index_ranges().find(tls[k].first);
      starts[k].push_back(it == seg->index_ranges().end() ? std::nullopt : std::optional<int64_t>(it->second.min));
      ends[k].push_back(it == seg->index_ranges().end() ? std::nullopt : std::optional<int64_t>(it->second.max));
    }
  }
  std::shared_ptr<arrow::Array> id_array;
  if (!ids.Finish(&id_array).ok()) return Status::Internal("finish");
  arrays.push_back(id_array);
  for (size_t k = 0; k < tls.size(); ++k) {
    auto type = rrd::ArrowTypeOf(tls[k].second);
    for (int which = 0; which < 2; ++which) {
      const auto& vals = which == 0 ? starts[k] : ends[k];
      std::unique_ptr<arrow::ArrayBuilder> b;
      if (!arrow::MakeBuilder(arrow::default_memory_pool(), arrow::int64(), &b).ok()) {
        return Status::Internal("builder");
      }
      auto* ib = static_cast<arrow::Int64Builder*>(b.get());
      for (const auto& v : vals) {
        if (!(v ? ib->Append(*v) : ib->AppendNull()).ok()) return Status::Internal("append");
      }
      std::shared_ptr<arrow::Array> arr;
      if (!ib->Finish(&arr).ok()) return Status::Internal("finish");
      auto data = arr->data()->Copy();
      data->type = type;
      arrays.push_back(arrow::MakeArray(data));
      fields.push_back(arrow::field(tls[k].first + (which == 0 ? ":start" : ":end"), type));
    }
  }
  return arrow::Table::Make(arrow::schema(fields), arrays);
}

Result<std::shared_ptr<arrow::Table>> LocalDataset::Read(const ReadOptions& o, query::QueryStats* stats) const {
  query::DataframeQuery q;
  q.index = o.index;
  q.fill_latest_at = o.fill_latest_at;
  q.include_semantically_empty_columns = o.include_semantically_empty_columns;
  q.index_range = o.index_range;
  if (o.index && !timelines_.count(*o.index)) {
    return Status::NotFound("no timeline '" + *o.index + "' in the dataset (timelines: " + [&] {
      std::string s;
      for (const auto& [n, _] : timelines_) s += (s.empty() ? "" : ", ") + n;
      return s;
    }() + ")");
  }
  // Index columns in the reference's order: reverse lexical.
  for (auto it = timelines_.rbegin(); it != timelines_.rend(); ++it) q.index_columns.push_back({it->first, it->second});

  EntityFilter filter = EntityFilter::Default();
  if (o.contents) {
    RRL_ASSIGN_OR_RETURN(filter, EntityFilter::Parse(*o.contents));
  }
  // The output selection, and the entities the reference fetches. Its reader asks the server for the chunks
  // of every entity with a dataset column that the content filter keeps (whatever the column), but without
  // fill_latest_at it narrows the request to the entities of the selected component columns when there are
  // any (the projection push-down): then only their clears apply. docs/query-semantics.md, "Fetched entities".
  std::set<std::string> filter_entities, output_entities;
  for (const auto& c : columns_) {
    if (!filter.Matches(c.info.entity_path)) continue;
    filter_entities.insert(c.info.entity_path);
    if (!o.include_tombstone_columns && c.info.component == query::kClearComponent) continue;
    if (!o.include_semantically_empty_columns && c.info.semantically_empty) continue;
    if (!o.index && !c.info.is_static) continue;  // a static-only query has static columns only
    q.columns.push_back(query::ViewColumn{c.info.entity_path, c.info.component, arrow::field(c.name, c.info.type)});
    output_entities.insert(c.info.entity_path);
  }
  q.fetch_entities = (o.fill_latest_at || output_entities.empty()) ? filter_entities : output_entities;
  q.include_tombstone_columns = o.include_tombstone_columns;

  std::vector<std::shared_ptr<store::Segment>> segs;
  if (o.segments.empty()) {
    segs = segments_;
  } else {
    std::set<std::string> wanted(o.segments.begin(), o.segments.end());
    for (const auto& s : segments_) {
      if (wanted.count(s->id())) segs.push_back(s);
    }
  }
  // The reference rejects duplicate index values, checked before any segment is read. It compares them as
  // its temporal times, where i64::MIN (its "static" time) reads as i64::MIN + 1, so {i64::MIN, i64::MIN + 1}
  // is a duplicate too (differential case 910).
  auto has_duplicates = [](std::vector<int64_t> v) {
    for (auto& x : v) x = std::max(x, std::numeric_limits<int64_t>::min() + 1);
    std::sort(v.begin(), v.end());
    return std::adjacent_find(v.begin(), v.end()) != v.end();
  };
  if (o.index && o.values_per_segment) {
    for (const auto& [id, values] : *o.values_per_segment) {
      if (has_duplicates(values)) return Status::InvalidArgument("Index values must be unique.");
    }
  }
  // Observed (RRLOADER_DIFF_CASES=2000): a plain array with a duplicate is rejected even when the duplicate
  // lies outside every segment's range.
  if (o.index && o.values_everywhere && has_duplicates(*o.values_everywhere)) {
    return Status::InvalidArgument("Index values must be unique.");
  }
  // The reference's pushed-down range filter fails on an empty range (DataFusion: "Attempting to compute
  // range overlaps that are mutually exclusive"), docs/query-semantics.md item 11; with no segment to read
  // nothing is queried and nothing fails.
  if (!segs.empty() && o.index && o.index_range && o.index_range->first > o.index_range->second) {
    return Status::InvalidArgument("index_range: start " + std::to_string(o.index_range->first) + " > end " +
                                   std::to_string(o.index_range->second) +
                                   " (the reference rejects ranges that are mutually exclusive)");
  }
  std::vector<std::shared_ptr<arrow::Table>> parts;
  std::vector<query::DataframeQuery> per_segment;
  std::vector<const store::Segment*> segs_run;
  for (const auto& seg : segs) {
    query::DataframeQuery sq = q;
    sq.eager_store = eager_segments_.count(seg.get()) > 0;
    if (o.index && o.values_per_segment) {
      auto it = o.values_per_segment->find(seg->id());
      if (it == o.values_per_segment->end()) continue;  // unknown / unlisted segments give no rows
      sq.using_index_values = it->second;
    } else if (o.index && o.values_everywhere) {
      // A plain array applies to each segment within its inclusive range on the index.
      auto r = seg->index_ranges().find(*o.index);
      if (r == seg->index_ranges().end()) continue;
      std::vector<int64_t> v;
      for (int64_t x : *o.values_everywhere) {
        if (x >= r->second.min && x <= r->second.max) v.push_back(x);
      }
      if (v.empty()) continue;
      sq.using_index_values = std::move(v);
    }
    if (sq.using_index_values) {
      auto& v = *sq.using_index_values;
      if (has_duplicates(v)) return Status::InvalidArgument("Index values must be unique.");
      // i64::MIN is the reference's "static" time; a requested value of i64::MIN is read as the
      // smallest temporal time, i64::MIN + 1 (docs/query-semantics.md).
      for (auto& x : v) x = std::max(x, std::numeric_limits<int64_t>::min() + 1);
      std::sort(v.begin(), v.end());
    }
    per_segment.push_back(std::move(sq));
    segs_run.push_back(seg.get());
  }
  // Run only after every segment's arguments were checked: an invalid argument fails the whole call.
  for (size_t i = 0; i < per_segment.size(); ++i) {
    auto t = query::RunDataframeQuery(*segs_run[i], *cache_, per_segment[i], stats);
    if (!t.ok()) return t.status();
    parts.push_back(*t);
  }
  if (parts.empty()) {
    auto empty = arrow::Table::MakeEmpty(query::OutputSchema(q));
    if (!empty.ok()) return Status::Internal(empty.status().ToString());
    return *empty;
  }
  auto joined = arrow::ConcatenateTables(parts);
  if (!joined.ok()) return Status::Internal(joined.status().ToString());
  return *joined;
}

}  // namespace rrl::catalog
