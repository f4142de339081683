// rrloader/io/file.h — byte sources: a file opened for positional reads.
//
// The reader is separated from its byte source (size + read-at-offset) so that the same
// parser runs over files, memory (fuzzing, tests) and, later, remote byte ranges.
#pragma once

#include <arrow/buffer.h>

#include <cstdint>
#include <memory>
#include <string>

#include "rrloader/common/status.h"

namespace rrl::io {

// ByteSource: random-access bytes of known size. Implementations are thread-safe:
// ReadAt may be called concurrently (positional reads, no shared cursor — which also
// makes an inherited file descriptor safe after fork()).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Name: what error messages call this source (usually the file path).
  virtual const std::string& Name() const = 0;
  virtual uint64_t Size() const = 0;
  // ReadAt: exactly `length` bytes at `offset`, or kTruncated if the source is shorter.
  [[nodiscard]] virtual Result<std::shared_ptr<arrow::Buffer>> ReadAt(uint64_t offset, uint64_t length) const = 0;
};

// OpenFile: a ByteSource over a regular file, read with pread(2). The file stays open
// (one descriptor) until the returned object is destroyed.
[[nodiscard]] Result<std::shared_ptr<ByteSource>> OpenFile(const std::string& path);

// MemorySource: a ByteSource over a buffer (tests, fuzzing). Borrows nothing: it holds
// a reference to the buffer, and ReadAt returns zero-copy slices of it.
[[nodiscard]] std::shared_ptr<ByteSource> MemorySource(std::string name, std::shared_ptr<arrow::Buffer> data);

}  // namespace rrl::io
