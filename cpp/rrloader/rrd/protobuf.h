// rrloader/rrd/protobuf.h — a minimal protobuf wire-format reader and writer.
//
// Only what the few Rerun messages need: varints, fixed32/64 and length-delimited
// fields, with unknown fields skipped. (The writer builds the two small requests a
// catalog client sends, catalog/redap.h.) Every read is bounds-checked; a malformed
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

// ProtoWriter: appends fields to a message in wire format. Not thread-safe.
class ProtoWriter {
 public:
  void Varint(uint32_t number, uint64_t value);
  void Bytes(uint32_t number, std::string_view bytes);  // length-delimited (bytes, string, message)
  void Fixed64(uint32_t number, uint64_t value);
  const std::string& data() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void RawVarint(uint64_t v);
  std::string out_;
};

}  // namespace rrl::rrd
