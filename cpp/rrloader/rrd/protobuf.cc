#include "rrloader/rrd/protobuf.h"

namespace rrl::rrd {

Status ProtoReader::ReadVarint(uint64_t* out) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos_ >= data_.size()) {
      return Status::Corrupt("protobuf varint runs past the end of the message at offset " + std::to_string(pos_));
    }
    auto byte = static_cast<uint8_t>(data_[pos_++]);
    result |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) {
      *out = result;
      return Status::OK();
    }
  }
  return Status::Corrupt("protobuf varint longer than 10 bytes at offset " + std::to_string(pos_));
}

Status ProtoReader::Next(ProtoField* field) {
  field->offset = pos_;
  uint64_t tag = 0;
  RRL_RETURN_IF_ERROR(ReadVarint(&tag));
  field->number = static_cast<uint32_t>(tag >> 3);
  if (field->number == 0 || (tag >> 3) > 0x1FFFFFFF) {
    return Status::Corrupt("protobuf field number 0 or out of range at offset " + std::to_string(field->offset));
  }
  const auto wire = static_cast<uint8_t>(tag & 7);
  switch (wire) {
    case 0: field->type = WireType::kVarint; return ReadVarint(&field->value);
    case 1:
    case 5: {
      const uint64_t n = wire == 1 ? 8 : 4;
      if (data_.size() - pos_ < n) {
        return Status::Corrupt("protobuf fixed-width field runs past the end at offset " +
                               std::to_string(field->offset));
      }
      uint64_t v = 0;
      for (uint64_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
      pos_ += n;
      field->type = wire == 1 ? WireType::kFixed64 : WireType::kFixed32;
      field->value = v;
      return Status::OK();
    }
    case 2: {
      uint64_t len = 0;
      RRL_RETURN_IF_ERROR(ReadVarint(&len));
      if (len > data_.size() - pos_) {
        return Status::Corrupt("protobuf length-delimited field of " + std::to_string(len) +
                               " bytes runs past the end of the message at offset " + std::to_string(field->offset));
      }
      field->type = WireType::kLen;
      field->bytes = data_.substr(pos_, len);
      pos_ += len;
      return Status::OK();
    }
    default:
      return Status::Corrupt("protobuf wire type " + std::to_string(wire) + " not supported at offset " +
                             std::to_string(field->offset));
  }
}

void ProtoWriter::RawVarint(uint64_t v) {
  while (v >= 0x80) {
    out_.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out_.push_back(static_cast<char>(v));
}

void ProtoWriter::Varint(uint32_t number, uint64_t value) {
  RawVarint(uint64_t{number} << 3);
  RawVarint(value);
}

void ProtoWriter::Fixed64(uint32_t number, uint64_t value) {
  RawVarint((uint64_t{number} << 3) | 1);
  for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

void ProtoWriter::Bytes(uint32_t number, std::string_view bytes) {
  RawVarint((uint64_t{number} << 3) | 2);
  RawVarint(bytes.size());
  out_.append(bytes.data(), bytes.size());
}

}  // namespace rrl::rrd
