// cpp/bindings/remote_bindings.cc — `_core.RemoteDataset`: a catalog::RemoteDataset whose
// transport is a Python callable (rrloader/_remote.py speaks gRPC with grpcio).
//
// The callable is `rpc(method: str, request: bytes) -> list[bytes]` (the answer's messages);
// an optional second one, `rpc_many(method, requests, in_flight)`, makes many calls of one
// method at once (a block's missing segment manifests) and answers each with its messages
// or the exception it raised. C++ encodes every request and decodes every answer (catalog/redap.h). It is called with
// the GIL held from engine threads: once per segment manifest, once per batch of chunks
// (never per sample). The answer's bytes are copied into Arrow buffers with the GIL released
// (Python bytes are immutable, and referenced until the copy is done). A Python exception
// becomes a Status: the code of the most specific class of the one exception table
// (module.cc) the exception is an instance of, kInternal otherwise; the message is the
// exception's.
#include <arrow/c/bridge.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
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

// StatusFromException: an exception (its class and value) mapped through the exception
// table (GIL held).
rrl::Status StatusFromException(nb::handle type, nb::handle value) {
  std::string message = nb::str(value).c_str();
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

rrl::Status StatusFromPython(const nb::python_error& e) {
  return StatusFromException(e.type(), e.value());
}

rrl::Result<std::vector<std::shared_ptr<arrow::Buffer>>> CallRpc(const PyCallable& callable, const std::string& method,
                                                                 const std::string& request) {
  if (InterpreterGone()) return rrl::Status::Internal("the Python interpreter is shutting down");
  std::vector<nb::object> held;                       // the answer's bytes objects
  std::vector<std::pair<const char*, size_t>> views;  // their contents
  {
    nb::gil_scoped_acquire gil;
    try {
      nb::object answer = callable.fn(method, nb::bytes(request.data(), request.size()));
      auto add = [&](nb::handle item) -> bool {
        if (!PyBytes_Check(item.ptr())) return false;
        held.push_back(nb::borrow(item));
        views.emplace_back(PyBytes_AS_STRING(item.ptr()), static_cast<size_t>(PyBytes_GET_SIZE(item.ptr())));
        return true;
      };
      if (!add(answer)) {
        for (nb::handle item : answer) {
          if (!add(item)) {
            return rrl::Status::InvalidArgument("the transport answered " + method + " with a " +
                                                std::string(nb::str(item.type().attr("__name__")).c_str()) +
                                                " (expected bytes)");
          }
        }
      }
    } catch (const nb::python_error& e) {
      return StatusFromPython(e);
    } catch (const std::exception& e) {
      return rrl::Status::Internal(std::string("transport: ") + e.what());
    }
  }
  std::vector<std::shared_ptr<arrow::Buffer>> out;
  rrl::Status status;
  for (const auto& [data, size] : views) {  // GIL released: `held` keeps the bytes alive
    auto buffer = arrow::AllocateBuffer(static_cast<int64_t>(size));
    if (!buffer.ok()) {
      status = rrl::Status::IoError("cannot allocate " + std::to_string(size) + " bytes for a " + method + " answer");
      break;
    }
    if (size > 0) std::memcpy((*buffer)->mutable_data(), data, size);
    out.push_back(std::move(buffer).ValueUnsafe());
  }
  {
    nb::gil_scoped_acquire gil;
    held.clear();
  }
  if (!status.ok()) return status;
  return out;
}

// CallRpcMany: `rpc_many(method, [request, ...], in_flight)`, whose answer has one item per
// request: its messages (a list of bytes) or the exception that call raised.
std::vector<rrl::Result<std::vector<std::shared_ptr<arrow::Buffer>>>> CallRpcMany(
    const PyCallable& callable, const std::string& method, const std::vector<std::string>& requests, int in_flight) {
  using Answer = rrl::Result<std::vector<std::shared_ptr<arrow::Buffer>>>;
  std::vector<Answer> out(requests.size(), rrl::Status::Internal("no answer"));
  auto fail_all = [&](const rrl::Status& st) {
    for (auto& a : out) a = st;
    return out;
  };
  if (InterpreterGone()) return fail_all(rrl::Status::Internal("the Python interpreter is shutting down"));
  std::vector<nb::object> held;
  std::vector<std::vector<std::pair<const char*, size_t>>> views(requests.size());
  std::vector<char> answered(requests.size(), 0);
  {
    nb::gil_scoped_acquire gil;
    try {
      nb::list reqs;
      for (const auto& r : requests) reqs.append(nb::bytes(r.data(), r.size()));
      nb::object answer = callable.fn(method, reqs, in_flight);
      if (nb::len(answer) != requests.size()) {
        return fail_all(rrl::Status::InvalidArgument("the transport answered " + std::to_string(nb::len(answer)) +
                                                     " of " + std::to_string(requests.size()) + " " + method +
                                                     " calls"));
      }
      size_t k = 0;
      for (nb::handle item : answer) {
        if (PyExceptionInstance_Check(item.ptr())) {
          nb::object type = nb::borrow(reinterpret_cast<PyObject*>(Py_TYPE(item.ptr())));
          out[k] = StatusFromException(type, item);
        } else {
          bool ok = true;
          for (nb::handle message : item) {
            if (!PyBytes_Check(message.ptr())) {
              out[k] = rrl::Status::InvalidArgument("the transport answered " + method + " with a " +
                                                    std::string(nb::str(message.type().attr("__name__")).c_str()) +
                                                    " (expected bytes)");
              ok = false;
              break;
            }
            held.push_back(nb::borrow(message));
            views[k].emplace_back(PyBytes_AS_STRING(message.ptr()),
                                  static_cast<size_t>(PyBytes_GET_SIZE(message.ptr())));
          }
          answered[k] = ok ? 1 : 0;
        }
        ++k;
      }
    } catch (const nb::python_error& e) {
      return fail_all(StatusFromPython(e));
    } catch (const std::exception& e) {
      return fail_all(rrl::Status::Internal(std::string("transport: ") + e.what()));
    }
  }
  for (size_t k = 0; k < requests.size(); ++k) {  // GIL released: `held` keeps the bytes alive
    if (!answered[k]) continue;
    std::vector<std::shared_ptr<arrow::Buffer>> buffers;
    rrl::Status status;
    for (const auto& [data, size] : views[k]) {
      auto buffer = arrow::AllocateBuffer(static_cast<int64_t>(size));
      if (!buffer.ok()) {
        status = rrl::Status::IoError("cannot allocate " + std::to_string(size) + " bytes for a " + method + " answer");
        break;
      }
      if (size > 0) std::memcpy((*buffer)->mutable_data(), data, size);
      buffers.push_back(std::move(buffer).ValueUnsafe());
    }
    out[k] = status.ok() ? Answer(std::move(buffers)) : Answer(status);
  }
  {
    nb::gil_scoped_acquire gil;
    held.clear();
  }
  return out;
}

// PyRemoteDataset: the Python handle of one RemoteDataset (shared with every Engine made
// from it). Thread-safe like the dataset; the fetch callable is owned through PyCallable.
class PyRemoteDataset {
 public:
  PyRemoteDataset(std::vector<std::string> segment_ids, const nb::object& schema, nb::object rpc, int64_t cache_bytes,
                  int fetch_concurrency, std::string description, int64_t manifest_cache_bytes,
                  int64_t fetch_batch_bytes, std::string layer, nb::object rpc_many) {
    nb::object capsule = schema.attr("__arrow_c_schema__")();
    auto* c_schema = static_cast<ArrowSchema*>(PyCapsule_GetPointer(capsule.ptr(), "arrow_schema"));
    if (c_schema == nullptr) {
      PyErr_Clear();
      Throw(rrl::Status::InvalidArgument("schema.__arrow_c_schema__() did not return an arrow_schema capsule"));
    }
    auto imported = arrow::ImportSchema(c_schema);
    if (!imported.ok()) {
      Throw(rrl::Status::InvalidArgument("cannot import the schema: " + imported.status().ToString()));
    }
    auto callable = std::make_shared<PyCallable>(std::move(rpc));
    rrl::catalog::RemoteOptions o;
    o.cache_bytes = cache_bytes;
    o.manifest_cache_bytes = manifest_cache_bytes;
    o.fetch_concurrency = fetch_concurrency;
    o.fetch_batch_bytes = fetch_batch_bytes;
    o.layer = std::move(layer);
    o.description = std::move(description);
    ds_ = Unwrap(rrl::catalog::RemoteDataset::Make(
        std::move(segment_ids), **imported,
        [callable](const std::string& method, const std::string& request) {
          return CallRpc(*callable, method, request);
        },
        std::move(o), MakeRpcMany(std::move(rpc_many))));
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
    d["hits"] = s.hits;
    d["misses"] = s.misses;
    d["fetches"] = s.fetches;
    d["chunks_fetched"] = s.chunks_fetched;
    d["fetched_bytes"] = s.fetched_bytes;
    d["on_demand_chunks"] = s.on_demand_chunks;
    d["fetch_errors"] = s.fetch_errors;
    d["shared_waits"] = s.shared_waits;
    d["manifest_fetches"] = s.manifest_fetches;
    d["manifest_bytes"] = s.manifest_bytes;
    d["manifests_cached"] = s.manifests_cached;
    d["manifest_cache_bytes"] = s.manifest_cache_bytes;
    d["key_refreshes"] = s.key_refreshes;
    return d;
  }
  // segment_chunks: (chunks, rows) of `entity_path` in the segment's manifest (fetching the
  // manifest if needed, no chunk): tests.
  nb::tuple segment_chunks(const std::string& segment_id, const std::string& entity_path) const {
    rrl::Result<std::shared_ptr<const rrl::store::Segment>> r = rrl::Status::Internal("unset");
    {
      nb::gil_scoped_release release;
      r = ds_->EntitySegment(segment_id, entity_path);
    }
    auto seg = Unwrap(std::move(r));
    size_t chunks = 0;
    uint64_t rows = 0;
    for (const auto& c : seg->chunks()) {
      if (c.entity_path != entity_path) continue;
      ++chunks;
      rows += c.num_rows;
    }
    return nb::make_tuple(chunks, rows);
  }
  // load_entity: fetches every chunk of `entity_path` in the segment (one Prefetch) and
  // returns their rows as decoded: tests.
  int64_t load_entity(const std::string& segment_id, const std::string& entity_path) const {
    rrl::Status st;
    int64_t rows = 0;
    {
      nb::gil_scoped_release release;
      auto seg = ds_->EntitySegment(segment_id, entity_path);
      if (!seg.ok()) {
        st = seg.status();
      } else {
        rrl::catalog::ChunkWant want{*seg, {}};
        for (size_t i = 0; i < (*seg)->chunks().size(); ++i) {
          if ((*seg)->chunks()[i].entity_path == entity_path) want.chunks.push_back(i);
        }
        std::vector<std::shared_ptr<const rrl::chunk::Chunk>> chunks;
        st = ds_->Prefetch({want}, &chunks);
        for (const auto& c : chunks) rows += c->num_rows();
      }
    }
    if (!st.ok()) Throw(st);
    return rows;
  }

  std::shared_ptr<const rrl::catalog::RemoteDataset> dataset() const { return ds_; }

 private:
  static rrl::catalog::RpcManyFn MakeRpcMany(nb::object fn) {
    if (fn.is_none()) return nullptr;
    auto callable = std::make_shared<PyCallable>(std::move(fn));
    return [callable](const std::string& method, const std::vector<std::string>& requests, int in_flight) {
      return CallRpcMany(*callable, method, requests, in_flight);
    };
  }

  std::shared_ptr<rrl::catalog::RemoteDataset> ds_;
};

}  // namespace

std::shared_ptr<const rrl::catalog::Dataset> RemoteDatasetOf(nb::handle h) {
  if (!nb::isinstance<PyRemoteDataset>(h)) return nullptr;
  return nb::cast<PyRemoteDataset&>(h).dataset();
}

void BindRemote(nb::module_& m) {
  m.attr("DEFAULT_REMOTE_CACHE_BYTES") = rrl::catalog::kDefaultRemoteCacheBytes;
  m.attr("DEFAULT_MANIFEST_CACHE_BYTES") = rrl::catalog::kDefaultManifestCacheBytes;
  m.attr("DEFAULT_REMOTE_FETCH_CONCURRENCY") = rrl::catalog::kDefaultRemoteFetchConcurrency;
  m.attr("DEFAULT_FETCH_BATCH_BYTES") = rrl::catalog::kDefaultFetchBatchBytes;
  nb::class_<PyRemoteDataset>(m, "RemoteDataset")
      .def(nb::init<std::vector<std::string>, nb::object, nb::object, int64_t, int, std::string, int64_t, int64_t,
                    std::string, nb::object>(),
           "segment_ids"_a, "schema"_a, "rpc"_a, "cache_bytes"_a, "fetch_concurrency"_a, "description"_a,
           "manifest_cache_bytes"_a = rrl::catalog::kDefaultManifestCacheBytes,
           "fetch_batch_bytes"_a = rrl::catalog::kDefaultFetchBatchBytes, "layer"_a = "base", "rpc_many"_a = nb::none())
      .def("segment_ids", &PyRemoteDataset::segment_ids)
      .def("timelines", &PyRemoteDataset::timelines)
      .def("columns", &PyRemoteDataset::columns)
      .def("cache_stats", &PyRemoteDataset::cache_stats)
      .def("segment_chunks", &PyRemoteDataset::segment_chunks, "segment_id"_a, "entity_path"_a)
      .def("load_entity", &PyRemoteDataset::load_entity, "segment_id"_a, "entity_path"_a);
}

}  // namespace rrl_bindings
