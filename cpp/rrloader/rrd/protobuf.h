// rrloader/rrd/protobuf.h — a minimal protobuf wire-format reader.
//
// Only what the few Rerun messages need: varints, fixed32/64 and length-delimited
// fields, with unknown fields skipped. Every read is bounds-checked; a malformed
// message yields kCorrupt naming the byte offset (relative to the message start,
// callers add the message's file offset).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "rrloader/common/status.h"

namespace rrl::rrd {

enum class WireType : uint8_t { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

// ProtoField: one decoded field. For kLen, `bytes` views into the message buffer.
struct ProtoField {
  uint32_t number = 0;
  WireType type = WireType::kVarint;
  uint64_t value = 0;      // kVarint, kFixed64, kFixed32
  std::string_view bytes;  // kLen
  uint64_t offset = 0;     // where the field's tag starts, relative to the message
};

// ProtoReader: iterates over the fields of one message. Not thread-safe; cheap to copy.
class ProtoReader {
 public:
  explicit ProtoReader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  // Next: decode the next field into *field.
  [[nodiscard]] Status Next(ProtoField* field);

 private:
  [[nodiscard]] Status ReadVarint(uint64_t* out);
  std::string_view data_;
  uint64_t pos_ = 0;
};

}  // namespace rrl::rrd
