// cpp/bindings/common.h — helpers shared by the binding translation units (internal).
//
// Every binding function reports failure by throwing StatusError (via Throw/Unwrap);
// the one translator registered in module.cc maps its StatusCode to a Python class.
#pragma once

#include <nanobind/nanobind.h>
#include <unistd.h>

#include <map>
#include <string>
#include <utility>

#include "rrloader/catalog/dataset.h"
#include "rrloader/common/status.h"

namespace rrl_bindings {

namespace nb = nanobind;

// StatusError: carries a non-OK Status across the nanobind boundary.
struct StatusError {
  rrl::Status status;
};

inline nb::dict& ExceptionTable() {
  static nb::dict* table = new nb::dict();  // leaked on purpose: lives as long as the interpreter
  return *table;
}

[[noreturn]] inline void Throw(const rrl::Status& st) {
  throw StatusError{st};
}

template <typename T>
T Unwrap(rrl::Result<T> r) {
  if (!r.ok()) Throw(r.status());
  return std::move(r).value();
}

// DatasetOf: the native dataset behind a `_core.LocalDataset` or `_core.RemoteDataset`
// object (module.cc); kInvalidArgument for anything else.
std::shared_ptr<const rrl::catalog::Dataset> DatasetOf(nb::handle h);

// RemoteDatasetOf: the dataset behind a `_core.RemoteDataset`, or null (remote_bindings.cc).
std::shared_ptr<const rrl::catalog::Dataset> RemoteDatasetOf(nb::handle h);

// TimelineKindNames: timeline -> "sequence" / "timestamp" / "duration".
inline std::map<std::string, std::string> TimelineKindNames(const std::map<std::string, rrl::rrd::TimeKind>& kinds) {
  std::map<std::string, std::string> out;
  for (const auto& [name, kind] : kinds) {
    out[name] = kind == rrl::rrd::TimeKind::kSequence    ? "sequence"
                : kind == rrl::rrd::TimeKind::kTimestamp ? "timestamp"
                                                         : "duration";
  }
  return out;
}

// BindRemote: registers RemoteDataset (remote_bindings.cc).
void BindRemote(nanobind::module_& m);

// BindEngine: registers Engine, Pipeline and the sample-order functions (engine_bindings.cc).
void BindEngine(nanobind::module_& m);

// BindDecode: registers the decode-layer test entry points (decode_bindings.cc).
void BindDecode(nanobind::module_& m);

// BindVideo: registers the video decode entry points (video_bindings.cc).
void BindVideo(nanobind::module_& m);

// BindSample: registers the numpy-exact generator and emission buffer test entry points
// (sample_bindings.cc).
void BindSample(nanobind::module_& m);

// OwnerProcess: the process whose threads an object's native state belongs to. A forked
// child inherits the object but none of those threads, while their mutexes and condition
// variables keep the state the parent's threads left them in (a condition variable with
// waiters cannot even be destroyed: glibc's pthread_cond_destroy waits for them, forever).
// So such an object, reached in another process (a generator frame freed in a forked
// DataLoader worker, say), is neither used nor destroyed there: its owner leaks it.
class OwnerProcess {
 public:
  OwnerProcess() : pid_(getpid()) {}
  bool foreign() const { return getpid() != pid_; }

 private:
  pid_t pid_;
};

}  // namespace rrl_bindings
