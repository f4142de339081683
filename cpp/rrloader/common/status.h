// rrloader/common/status.h — the error model of the engine.
//
// Every fallible function returns `Status` or `Result<T>`; both are [[nodiscard]].
// The code says *what kind* of failure happened (the Python layer maps each code to
// one exception class, see cpp/bindings/module.cc); the message says *where* (file,
// byte offset, segment, column, index value). Truncated, corrupt and unsupported input
// are distinct codes because callers react differently to each (e.g. a reader of a
// file still being written may retry on kTruncated, never on kCorrupt).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace rrl {

enum class StatusCode : int {
  kOk = 0,
  kTruncated,        // input ended before a structure was complete
  kCorrupt,          // bytes present but invalid (bad magic, checksum, protobuf, LZ4, Arrow)
  kUnsupported,      // valid but not something we read (old format version, unknown encoding)
  kNotFound,         // a path, segment, column or timeline that does not exist
  kInvalidArgument,  // the caller asked for something inconsistent
  kIoError,          // the operating system failed a read or open
  kInternal,         // a broken invariant of our own
};

// Status: OK, or a code plus a human-readable message. Cheap to copy when OK.
// Thread-compatible (a value type).
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status OK() { return {}; }
  static Status Truncated(std::string m) { return {StatusCode::kTruncated, std::move(m)}; }
  static Status Corrupt(std::string m) { return {StatusCode::kCorrupt, std::move(m)}; }
  static Status Unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "corrupt: <message>"
  std::string ToString() const;

  // WithPrefix: the same status with "prefix: " in front of the message, used to add
  // context (a file path, a segment id) as an error travels up the layers.
  Status WithPrefix(const std::string& prefix) const {
    if (ok()) return *this;
    return {code_, prefix + ": " + message_};
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Result<T>: a T or a non-OK Status. Value type; thread-compatible.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace rrl

#define RRL_CONCAT_INNER(a, b) a##b
#define RRL_CONCAT(a, b) RRL_CONCAT_INNER(a, b)

// RRL_RETURN_IF_ERROR(expr): evaluate a Status expression, return it if not OK.
#define RRL_RETURN_IF_ERROR(expr)      \
  do {                                 \
    ::rrl::Status _rrl_st = (expr);    \
    if (!_rrl_st.ok()) return _rrl_st; \
  } while (false)

// RRL_ASSIGN_OR_RETURN(lhs, expr): evaluate a Result expression, return its Status
// if not OK, else move its value into lhs (which may be a declaration).
// `tmp` and `lhs` are declarations, which parentheses would break.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define RRL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)
#define RRL_ASSIGN_OR_RETURN(lhs, expr) RRL_ASSIGN_OR_RETURN_IMPL(RRL_CONCAT(_rrl_result_, __LINE__), lhs, expr)
