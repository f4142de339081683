// cpp/bindings/remote_bindings.cc — `_core.RemoteDataset`: a catalog::RemoteDataset whose
// fetch function is a Python callable (rrloader/_remote.py wraps rerun-sdk).
//
// The callable is called with the GIL held, once per (segment, entity) the engine misses
// in its cache, from engine threads (never per sample). It returns an iterable of objects
// with `__arrow_c_array__` (pyarrow RecordBatches in Rerun's chunk schema); each is
// imported through the Arrow C data interface, so blob columns are shared, not copied. A
// Python exception becomes a Status: the code of the most specific class of the one
// exception table (module.cc) the exception is an instance of, kInternal otherwise; the
// message is the exception's.
#include <arrow/c/bridge.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <limits>

#include "bindings/common.h"
#include "rrloader/catalog/remote_dataset.h"

namespace rrl_bindings {

namespace {

using namespace nb::literals;

bool InterpreterGone() {
#if PY_VERSION_HEX >= 0x030D0000
  return !Py_IsInitialized() || Py_IsFinalizing();
#else
  return !Py_IsInitialized() || _Py_IsFinalizing();
#endif
}

// PyCallable: owns a reference to a Python callable from C++ code that may drop it on a
// thread without the GIL (the engine's last owner can be a pipeline thread). Its
// destructor takes the GIL; once the interpreter is going away it leaks the reference.
struct PyCallable {
  nb::object fn;
  explicit PyCallable(nb::object f) : fn(std::move(f)) {}
  PyCallable(const PyCallable&) = delete;
  PyCallable& operator=(const PyCallable&) = delete;
  ~PyCallable() {
    if (InterpreterGone()) {
      (void)fn.release();
      return;
    }
    nb::gil_scoped_acquire gil;
    fn.reset();
  }
};

// StatusFromPython: the exception's class mapped through the exception table (GIL held).
rrl::Status StatusFromPython(const nb::python_error& e) {
  nb::handle type = e.type();
  std::string message = nb::str(e.value()).c_str();
  int code = static_cast<int>(rrl::StatusCode::kInternal);
  size_t best = std::numeric_limits<size_t>::max();
  nb::tuple mro = nb::borrow<nb::tuple>(type.attr("__mro__"));
  for (auto [key, cls] : ExceptionTable()) {
    for (size_t d = 0; d < mro.size() && d < best; ++d) {
      if (mro[d].is(cls)) {
        best = d;
        code = nb::cast<int>(key);
      }
    }
  }
  if (best == std::numeric_limits<size_t>::max()) {
    message = std::string(nb::str(type.attr("__name__")).c_str()) + ": " + message;
  }
  return rrl::Status(static_cast<rrl::StatusCode>(code), message);
}

rrl::Result<std::vector<std::shared_ptr<arrow::RecordBatch>>> CallFetch(const PyCallable& callable,
                                                                        const std::string& segment_id,
                                                                        const std::string& entity_path) {
  if (InterpreterGone()) return rrl::Status::Internal("the Python interpreter is shutting down");
  nb::gil_scoped_acquire gil;
  try {
    nb::object batches = callable.fn(segment_id, entity_path);
    std::vector<std::shared_ptr<arrow::RecordBatch>> out;
    for (nb::handle item : batches) {
      nb::tuple caps = nb::cast<nb::tuple>(item.attr("__arrow_c_array__")());
      auto* schema = static_cast<ArrowSchema*>(PyCapsule_GetPointer(caps[0].ptr(), "arrow_schema"));
      auto* array = static_cast<ArrowArray*>(PyCapsule_GetPointer(caps[1].ptr(), "arrow_array"));
      if (schema == nullptr || array == nullptr) {
        PyErr_Clear();
        return rrl::Status::InvalidArgument(
            "the fetch function returned an object whose __arrow_c_array__ is not "
            "an (arrow_schema, arrow_array) capsule pair");
      }
      // Moves the array out of its capsule (whose destructor then has nothing to release).
      auto batch = arrow::ImportRecordBatch(array, schema);
      if (!batch.ok()) {
        return rrl::Status::InvalidArgument("cannot import a fetched record batch: " + batch.status().ToString());
      }
      out.push_back(std::move(*batch));
    }
    return out;
  } catch (const nb::python_error& e) {
    return StatusFromPython(e);
  } catch (const std::exception& e) {
    return rrl::Status::Internal(std::string("fetch function: ") + e.what());
  }
}

// PyRemoteDataset: the Python handle of one RemoteDataset (shared with every Engine made
// from it). Thread-safe like the dataset; the fetch callable is owned through PyCallable.
class PyRemoteDataset {
 public:
  PyRemoteDataset(std::vector<std::string> segment_ids, nb::object schema, nb::object fetch, int64_t cache_bytes,
                  int fetch_concurrency, std::string description) {
    nb::object capsule = schema.attr("__arrow_c_schema__")();
    auto* c_schema = static_cast<ArrowSchema*>(PyCapsule_GetPointer(capsule.ptr(), "arrow_schema"));
    if (c_schema == nullptr) {
      PyErr_Clear();
      Throw(rrl::Status::InvalidArgument("schema.__arrow_c_schema__() did not return an arrow_schema capsule"));
    }
    auto imported = arrow::ImportSchema(c_schema);
    if (!imported.ok())
      Throw(rrl::Status::InvalidArgument("cannot import the schema: " + imported.status().ToString()));
    auto callable = std::make_shared<PyCallable>(std::move(fetch));
    rrl::catalog::RemoteOptions o;
    o.cache_bytes = cache_bytes;
    o.fetch_concurrency = fetch_concurrency;
    o.description = std::move(description);
    ds_ = Unwrap(rrl::catalog::RemoteDataset::Make(
        std::move(segment_ids), **imported,
        [callable](const std::string& s, const std::string& e) { return CallFetch(*callable, s, e); }, std::move(o)));
  }

  std::vector<std::string> segment_ids() const { return ds_->SegmentIds(); }
  std::map<std::string, std::string> timelines() const { return TimelineKindNames(ds_->timelines()); }
  std::vector<std::string> columns() const {
    std::vector<std::string> out;
    for (const auto& c : ds_->columns()) out.push_back(c.name);
    return out;
  }
  nb::dict cache_stats() const {
    const auto s = ds_->Stats();
    nb::dict d;
    d["capacity_bytes"] = s.capacity_bytes;
    d["size_bytes"] = s.size_bytes;
    d["entries"] = s.entries;
    d["hits"] = s.hits;
    d["misses"] = s.misses;
    d["fetches"] = s.fetches;
    d["fetch_errors"] = s.fetch_errors;
    d["fetched_bytes"] = s.fetched_bytes;
    d["shared_waits"] = s.shared_waits;
    return d;
  }
  // entity_segment: (chunks, rows) of one (segment, entity) — fetching it if needed (tests).
  nb::tuple entity_segment(const std::string& segment_id, const std::string& entity_path) const {
    rrl::Result<std::shared_ptr<const rrl::store::Segment>> r = rrl::Status::Internal("unset");
    {
      nb::gil_scoped_release release;
      r = ds_->EntitySegment(segment_id, entity_path);
    }
    auto seg = Unwrap(std::move(r));
    uint64_t rows = 0;
    for (const auto& c : seg->chunks()) rows += c.num_rows;
    return nb::make_tuple(seg->chunks().size(), rows);
  }

  std::shared_ptr<const rrl::catalog::RemoteDataset> dataset() const { return ds_; }

 private:
  std::shared_ptr<rrl::catalog::RemoteDataset> ds_;
};

}  // namespace

std::shared_ptr<const rrl::catalog::Dataset> RemoteDatasetOf(nb::handle h) {
  if (!nb::isinstance<PyRemoteDataset>(h)) return nullptr;
  return nb::cast<PyRemoteDataset&>(h).dataset();
}

void BindRemote(nb::module_& m) {
  m.attr("DEFAULT_REMOTE_CACHE_BYTES") = rrl::catalog::kDefaultRemoteCacheBytes;
  m.attr("DEFAULT_REMOTE_FETCH_CONCURRENCY") = rrl::catalog::kDefaultRemoteFetchConcurrency;
  nb::class_<PyRemoteDataset>(m, "RemoteDataset")
      .def(nb::init<std::vector<std::string>, nb::object, nb::object, int64_t, int, std::string>(), "segment_ids"_a,
           "schema"_a, "fetch"_a, "cache_bytes"_a, "fetch_concurrency"_a, "description"_a)
      .def("segment_ids", &PyRemoteDataset::segment_ids)
      .def("timelines", &PyRemoteDataset::timelines)
      .def("columns", &PyRemoteDataset::columns)
      .def("cache_stats", &PyRemoteDataset::cache_stats)
      .def("entity_segment", &PyRemoteDataset::entity_segment, "segment_id"_a, "entity_path"_a);
}

}  // namespace rrl_bindings
