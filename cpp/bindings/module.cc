// cpp/bindings/module.cc — the nanobind module `rrloader._core`.
//
// Thin by design: type conversion, GIL release around native work, Arrow C data
// interface export (schemas and tables leave as PyCapsules that pyarrow imports without
// copying), and one exception-mapping table from StatusCode to the Python classes in
// rrloader/errors.py:
//
//   StatusCode         Python exception
//   kTruncated         RrdTruncatedError   (RrdFormatError)
//   kCorrupt           RrdCorruptError     (RrdFormatError)
//   kUnsupported       RrdUnsupportedError (RrdFormatError)
//   kNotFound          NotFoundError       (RrloaderError, LookupError); a missing
//                                          .rrd directory content: NoRecordingsError
//   kInvalidArgument   InvalidArgumentError (RrloaderError, ValueError)
//   kIoError           RrloaderIOError     (RrloaderError, OSError)
//   kInternal          RrloaderError
//
// The same table maps back: a Python exception raised by a remote dataset's fetch
// callable becomes the Status code of the most specific class it is an instance of
// (kInternal for others), see remote_bindings.cc.
#include <arrow/c/bridge.h>
#include <arrow/table.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <map>

#include "bindings/common.h"
#include "rrloader/catalog/local_dataset.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using rrl_bindings::ExceptionTable;
using rrl_bindings::StatusError;
using rrl_bindings::Throw;
using rrl_bindings::Unwrap;

nb::capsule SchemaCapsule(const arrow::Schema& schema) {
  auto* c = new ArrowSchema();
  auto st = arrow::ExportSchema(schema, c);
  if (!st.ok()) {
    delete c;
    Throw(rrl::Status::Internal(st.ToString()));
  }
  return nb::capsule(c, "arrow_schema", [](void* p) noexcept {
    auto* s = static_cast<ArrowSchema*>(p);
    if (s->release) s->release(s);
    delete s;
  });
}

nb::capsule TableCapsule(const std::shared_ptr<arrow::Table>& table) {
  auto reader = std::make_shared<arrow::TableBatchReader>(table);
  auto* c = new ArrowArrayStream();
  auto st = arrow::ExportRecordBatchReader(reader, c);
  if (!st.ok()) {
    delete c;
    Throw(rrl::Status::Internal(st.ToString()));
  }
  return nb::capsule(c, "arrow_array_stream", [](void* p) noexcept {
    auto* s = static_cast<ArrowArrayStream*>(p);
    if (s->release) s->release(s);
    delete s;
  });
}

using Int64Array = nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

std::vector<int64_t> ToVector(const Int64Array& a) {
  return {a.data(), a.data() + a.shape(0)};
}

class PyLocalDataset {
 public:
  PyLocalDataset(const std::vector<std::string>& paths, int64_t chunk_cache_bytes, int num_threads) {
    rrl::catalog::OpenOptions o;
    o.chunk_cache_bytes = chunk_cache_bytes;
    o.num_threads = num_threads;
    rrl::Result<std::shared_ptr<rrl::catalog::LocalDataset>> r = rrl::Status::Internal("not opened");
    {
      nb::gil_scoped_release release;
      r = rrl::catalog::LocalDataset::Open(paths, o);
    }
    ds_ = Unwrap(std::move(r));
  }

  std::vector<std::string> segment_ids() const { return ds_->SegmentIds(); }
  std::vector<std::string> files() const { return ds_->files(); }
  std::map<std::string, std::string> timelines() const { return rrl_bindings::TimelineKindNames(ds_->timelines()); }
  nb::capsule schema() const { return SchemaCapsule(*ds_->Schema()); }
  nb::capsule index_ranges(const std::optional<std::string>& timeline) const {
    return TableCapsule(Unwrap(ds_->IndexRanges(timeline)));
  }
  std::vector<std::pair<std::string, uint64_t>> chunk_row_counts() const {
    std::vector<std::pair<std::string, uint64_t>> out;
    for (const auto& seg : ds_->segments()) {
      uint64_t rows = 0;
      for (const auto& c : seg->chunks()) rows += c.num_rows;
      out.emplace_back(seg->id(), rows);
    }
    return out;
  }

  nb::tuple read(std::optional<std::string> index, std::vector<std::string> segments,
                 std::optional<std::vector<std::string>> contents, bool fill_latest_at, bool include_semantically_empty,
                 bool include_tombstones, std::optional<std::map<std::string, Int64Array>> values_per_segment,
                 std::optional<Int64Array> values_everywhere,
                 std::optional<std::pair<int64_t, int64_t>> index_range) const {
    rrl::catalog::ReadOptions o;
    o.index = std::move(index);
    o.segments = std::move(segments);
    o.contents = std::move(contents);
    o.fill_latest_at = fill_latest_at;
    o.include_semantically_empty_columns = include_semantically_empty;
    o.include_tombstone_columns = include_tombstones;
    if (values_per_segment) {
      std::map<std::string, std::vector<int64_t>> m;
      for (const auto& [k, v] : *values_per_segment) m[k] = ToVector(v);
      o.values_per_segment = std::move(m);
    }
    if (values_everywhere) o.values_everywhere = ToVector(*values_everywhere);
    o.index_range = index_range;
    rrl::query::QueryStats stats;
    rrl::Result<std::shared_ptr<arrow::Table>> r = rrl::Status::Internal("not run");
    {
      nb::gil_scoped_release release;
      r = ds_->Read(o, &stats);
    }
    auto table = Unwrap(std::move(r));
    nb::dict s;
    s["chunks_loaded"] = stats.chunks_loaded;
    s["rows"] = stats.rows;
    s["slices"] = stats.slices;
    s["compacted_columns"] = stats.compacted_columns;
    return nb::make_tuple(TableCapsule(table), s);
  }

  nb::dict cache_stats() const {
    nb::dict d;
    d["capacity_bytes"] = ds_->cache().capacity_bytes();
    d["size_bytes"] = ds_->cache().size_bytes();
    d["hits"] = ds_->cache().hits();
    d["misses"] = ds_->cache().misses();
    return d;
  }

  // set_cache_capacity: the chunk cache's new bound (a DataLoader worker's share).
  void set_cache_capacity(int64_t capacity_bytes) { ds_->cache().SetCapacity(capacity_bytes); }

  std::shared_ptr<const rrl::catalog::LocalDataset> dataset() const { return ds_; }

 private:
  std::shared_ptr<rrl::catalog::LocalDataset> ds_;
};

}  // namespace

std::shared_ptr<const rrl::catalog::Dataset> rrl_bindings::DatasetOf(nb::handle h) {
  if (nb::isinstance<PyLocalDataset>(h)) return nb::cast<PyLocalDataset&>(h).dataset();
  if (auto remote = rrl_bindings::RemoteDatasetOf(h)) return remote;
  Throw(rrl::Status::InvalidArgument("expected a _core.LocalDataset or _core.RemoteDataset, got " +
                                     std::string(nb::type_name(h.type()).c_str())));
}

NB_MODULE(_core, m) {
  m.doc() = "rrloader native engine (internal; use the rrloader package)";
  // Datasets held in module globals (torch's DataLoader workers keep theirs until the
  // interpreter is torn down) are still alive when nanobind checks for leaks at exit; the
  // report would be noise on every worker's stderr, not a leak.
  nb::set_leak_warnings(false);

  m.def(
      "_set_exception_table", [](nb::dict table) { ExceptionTable() = std::move(table); },
      "Internal: map StatusCode numbers to Python exception classes.");

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const StatusError& e) {
      const int code = static_cast<int>(e.status.code());
      nb::dict& table = ExceptionTable();
      nb::object key = nb::int_(code);
      PyObject* cls = table.contains(key) ? table[key].ptr() : PyExc_RuntimeError;
      PyErr_SetString(cls, e.status.message().c_str());
    }
  });

  rrl_bindings::BindDecode(m);
  rrl_bindings::BindVideo(m);
  rrl_bindings::BindSample(m);

  m.attr("DEFAULT_CHUNK_CACHE_BYTES") = rrl::store::kDefaultChunkCacheBytes;

  nb::class_<PyLocalDataset>(m, "LocalDataset")
      .def(nb::init<const std::vector<std::string>&, int64_t, int>(), "paths"_a, "chunk_cache_bytes"_a, "num_threads"_a)
      .def("segment_ids", &PyLocalDataset::segment_ids)
      .def("files", &PyLocalDataset::files)
      .def("timelines", &PyLocalDataset::timelines)
      .def("schema", &PyLocalDataset::schema)
      .def("index_ranges", &PyLocalDataset::index_ranges, "timeline"_a.none())
      .def("chunk_row_counts", &PyLocalDataset::chunk_row_counts)
      .def("cache_stats", &PyLocalDataset::cache_stats)
      .def("set_cache_capacity", &PyLocalDataset::set_cache_capacity, "capacity_bytes"_a)
      .def("read", &PyLocalDataset::read, "index"_a.none(), "segments"_a, "contents"_a.none(), "fill_latest_at"_a,
           "include_semantically_empty"_a, "include_tombstones"_a, "values_per_segment"_a.none(),
           "values_everywhere"_a.none(), "index_range"_a.none());

  rrl_bindings::BindRemote(m);
  rrl_bindings::BindEngine(m);
}
