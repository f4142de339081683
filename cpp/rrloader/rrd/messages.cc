#include "rrloader/rrd/messages.h"

#include <cstring>

#include "rrloader/rrd/protobuf.h"

namespace rrl::rrd {

namespace {

uint64_t LoadU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint32_t LoadU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

Status ExpectLen(const ProtoField& f, const char* what) {
  if (f.type != WireType::kLen) {
    return Status::Corrupt(std::string(what) + " has wire type " + std::to_string(static_cast<int>(f.type)) +
                           ", expected length-delimited, at offset " + std::to_string(f.offset));
  }
  return Status::OK();
}
Status ExpectVarint(const ProtoField& f, const char* what) {
  if (f.type != WireType::kVarint) {
    return Status::Corrupt(std::string(what) + " is not a varint at offset " + std::to_string(f.offset));
  }
  return Status::OK();
}

Result<std::string> ParseApplicationId(std::string_view bytes) {
  ProtoReader r(bytes);
  std::string id;
  while (!r.done()) {
    ProtoField f;
    RRL_RETURN_IF_ERROR(r.Next(&f));
    if (f.number == 1) {
      RRL_RETURN_IF_ERROR(ExpectLen(f, "ApplicationId.id"));
      id = std::string(f.bytes);
    }
  }
  return id;
}

Result<StoreId> ParseStoreId(std::string_view bytes) {
  ProtoReader r(bytes);
  StoreId id;
  while (!r.done()) {
    ProtoField f;
    RRL_RETURN_IF_ERROR(r.Next(&f));
    switch (f.number) {
      case 1:
        RRL_RETURN_IF_ERROR(ExpectVarint(f, "StoreId.kind"));
        id.kind = static_cast<StoreKind>(f.value);
        break;
      case 2:
        RRL_RETURN_IF_ERROR(ExpectLen(f, "StoreId.recording_id"));
        id.recording_id = std::string(f.bytes);
        break;
      case 3: {
        RRL_RETURN_IF_ERROR(ExpectLen(f, "StoreId.application_id"));
        RRL_ASSIGN_OR_RETURN(id.application_id, ParseApplicationId(f.bytes));
        break;
      }
      default: break;
    }
  }
  return id;
}

}  // namespace

Result<StreamHeader> ParseStreamHeader(std::string_view b) {
  // A visibly wrong magic is corrupt however short the input; a correct prefix is truncated.
  const size_t magic_len = std::min<size_t>(4, b.size());
  const bool magic_prefix_ok = magic_len == 0 || std::memcmp(b.data(), "RRF2", magic_len) == 0 ||
                               std::memcmp(b.data(), "RRF1", magic_len) == 0 ||
                               std::memcmp(b.data(), "RRF0", magic_len) == 0;
  if (!magic_prefix_ok) {
    return Status::Corrupt("not an .rrd file: wrong magic at byte offset 0 (expected 'RRF2')");
  }
  if (b.size() < kStreamHeaderSize) {
    return Status::Truncated("stream header at byte offset 0 needs 12 bytes, the file has " + std::to_string(b.size()));
  }
  if (std::memcmp(b.data(), "RRF0", 4) == 0 || std::memcmp(b.data(), "RRF1", 4) == 0) {
    return Status::Unsupported("old .rrd format '" + std::string(b.substr(0, 4)) +
                               "' (written before Rerun 0.23) at byte offset 0");
  }
  if (std::memcmp(b.data(), "RRF2", 4) != 0) {
    return Status::Corrupt("not an .rrd file: wrong magic at byte offset 0 (expected 'RRF2')");
  }
  StreamHeader h;
  for (int i = 0; i < 4; ++i) h.version[i] = static_cast<uint8_t>(b[4 + i]);
  const bool all_zero = h.version[0] == 0 && h.version[1] == 0 && h.version[2] == 0 && h.version[3] == 0;
  if (all_zero || (h.version[0] == 0 && h.version[1] < 23)) {
    return Status::Unsupported("written by Rerun " + std::to_string(h.version[0]) + "." + std::to_string(h.version[1]) +
                               "." + std::to_string(h.version[2]) +
                               ", older than 0.23 which is the oldest supported (version bytes at byte offset 4)");
  }
  h.compression = static_cast<uint8_t>(b[8]);
  h.serializer = static_cast<uint8_t>(b[9]);
  if (h.compression > 1) {
    return Status::Unsupported("stream header compression byte " + std::to_string(h.compression) +
                               " is neither 0 (off) nor 1 (LZ4) at byte offset 8");
  }
  if (h.serializer == 1) {
    return Status::Unsupported("MsgPack-serialized stream (removed from Rerun) at byte offset 9");
  }
  if (h.serializer != 2) {
    return Status::Unsupported("unknown serializer " + std::to_string(h.serializer) + " at byte offset 9");
  }
  if (b[10] != 0 || b[11] != 0) {
    return Status::Corrupt("reserved stream header bytes are not zero at byte offset 10");
  }
  return h;
}

MessageHeader ParseMessageHeader(std::string_view b) {
  return MessageHeader{LoadU64(b.data()), LoadU64(b.data() + 8)};
}

bool IsKnownMessageKind(uint64_t kind) {
  return kind <= 3;
}

Result<StoreId> ParseSetStoreInfo(std::string_view bytes) {
  ProtoReader r(bytes);
  std::optional<StoreId> id;
  std::string legacy_app_id;
  while (!r.done()) {
    ProtoField f;
    RRL_RETURN_IF_ERROR(r.Next(&f));
    if (f.number != 2) continue;  // 1 = row_id
    RRL_RETURN_IF_ERROR(ExpectLen(f, "SetStoreInfo.info"));
    ProtoReader info(f.bytes);
    while (!info.done()) {
      ProtoField g;
      RRL_RETURN_IF_ERROR(info.Next(&g));
      if (g.number == 1) {
        RRL_RETURN_IF_ERROR(ExpectLen(g, "StoreInfo.application_id"));
        RRL_ASSIGN_OR_RETURN(legacy_app_id, ParseApplicationId(g.bytes));
      } else if (g.number == 2) {
        RRL_RETURN_IF_ERROR(ExpectLen(g, "StoreInfo.store_id"));
        RRL_ASSIGN_OR_RETURN(StoreId parsed, ParseStoreId(g.bytes));
        id = std::move(parsed);
      }
    }
  }
  if (!id) return Status::Corrupt("SetStoreInfo without a store id");
  if (id->application_id.empty()) id->application_id = legacy_app_id;
  return *id;
}

Result<ArrowMsgView> ParseArrowMsg(std::string_view bytes) {
  ProtoReader r(bytes);
  ArrowMsgView m;
  bool has_store = false;
  while (!r.done()) {
    ProtoField f;
    RRL_RETURN_IF_ERROR(r.Next(&f));
    switch (f.number) {
      case 1: {
        RRL_RETURN_IF_ERROR(ExpectLen(f, "ArrowMsg.store_id"));
        RRL_ASSIGN_OR_RETURN(m.store_id, ParseStoreId(f.bytes));
        has_store = true;
        break;
      }
      case 2:
        RRL_RETURN_IF_ERROR(ExpectVarint(f, "ArrowMsg.compression"));
        m.compression = static_cast<Compression>(f.value);
        break;
      case 3:
        RRL_RETURN_IF_ERROR(ExpectVarint(f, "ArrowMsg.uncompressed_size"));
        m.uncompressed_size = f.value;
        break;
      case 4:
        RRL_RETURN_IF_ERROR(ExpectVarint(f, "ArrowMsg.encoding"));
        m.encoding = f.value;
        break;
      case 5:
        RRL_RETURN_IF_ERROR(ExpectLen(f, "ArrowMsg.payload"));
        m.payload = f.bytes;
        m.payload_offset = static_cast<uint64_t>(f.bytes.data() - bytes.data());
        break;
      case 7:
        RRL_RETURN_IF_ERROR(ExpectVarint(f, "ArrowMsg.is_static"));
        m.is_static = f.value != 0;
        break;
      default: break;  // 6 = chunk_id (the Arrow metadata is authoritative), unknown fields
    }
  }
  if (!has_store) return Status::Corrupt("ArrowMsg without a store id");
  if (m.encoding != 1) {
    return Status::Unsupported("ArrowMsg encoding " + std::to_string(m.encoding) + " (only Arrow IPC = 1 is known)");
  }
  if (m.compression != Compression::kUnspecified && m.compression != Compression::kNone &&
      m.compression != Compression::kLz4) {
    return Status::Unsupported("ArrowMsg compression " + std::to_string(static_cast<uint64_t>(m.compression)));
  }
  return m;
}

Result<RrdManifestView> ParseRrdManifest(std::string_view bytes) {
  RrdManifestView m;
  ProtoReader mr(bytes);
  while (!mr.done()) {
    ProtoField g;
    RRL_RETURN_IF_ERROR(mr.Next(&g));
    if (g.number == 1) {
      RRL_RETURN_IF_ERROR(ExpectLen(g, "RrdManifest.store_id"));
      RRL_ASSIGN_OR_RETURN(m.store_id, ParseStoreId(g.bytes));
    } else if (g.number == 2) {
      RRL_RETURN_IF_ERROR(ExpectLen(g, "RrdManifest.sorbet_schema"));
      ProtoReader sr(g.bytes);
      while (!sr.done()) {
        ProtoField h;
        RRL_RETURN_IF_ERROR(sr.Next(&h));
        if (h.number == 1) {
          RRL_RETURN_IF_ERROR(ExpectLen(h, "Schema.arrow_schema"));
          m.sorbet_schema_ipc = h.bytes;
        }
      }
    } else if (g.number == 4) {
      RRL_RETURN_IF_ERROR(ExpectLen(g, "RrdManifest.data"));
      ProtoReader dr(g.bytes);
      uint64_t encoder_version = 0;
      while (!dr.done()) {
        ProtoField h;
        RRL_RETURN_IF_ERROR(dr.Next(&h));
        if (h.number == 1) {
          RRL_RETURN_IF_ERROR(ExpectVarint(h, "DataframePart.encoder_version"));
          encoder_version = h.value;
        } else if (h.number == 2) {
          RRL_RETURN_IF_ERROR(ExpectLen(h, "DataframePart.payload"));
          m.data_payload = h.bytes;
        } else if (h.number == 3) {
          RRL_RETURN_IF_ERROR(ExpectVarint(h, "DataframePart.compression"));
          m.data_compression = static_cast<Compression>(h.value);
        } else if (h.number == 4) {
          RRL_RETURN_IF_ERROR(ExpectVarint(h, "DataframePart.uncompressed_size"));
          m.data_uncompressed_size = h.value;
        }
      }
      if (encoder_version != 1) {
        return Status::Unsupported("footer manifest encoder version " + std::to_string(encoder_version));
      }
    }
  }
  return m;
}

Result<std::vector<RrdManifestView>> ParseRrdFooter(std::string_view bytes) {
  std::vector<RrdManifestView> out;
  ProtoReader r(bytes);
  while (!r.done()) {
    ProtoField f;
    RRL_RETURN_IF_ERROR(r.Next(&f));
    if (f.number != 1) continue;
    RRL_RETURN_IF_ERROR(ExpectLen(f, "RrdFooter.manifests"));
    RRL_ASSIGN_OR_RETURN(RrdManifestView m, ParseRrdManifest(f.bytes));
    out.push_back(m);
  }
  return out;
}

Result<std::optional<FooterTrailer>> ParseFooterTrailer(std::string_view t) {
  if (t.size() != kStreamTrailerSize) return std::optional<FooterTrailer>();
  if (std::memcmp(t.data() + 20, "RRF2", 4) != 0 || std::memcmp(t.data() + 24, "FOOT", 4) != 0) {
    return std::optional<FooterTrailer>();
  }
  const uint32_t count = LoadU32(t.data() + 28);
  if (count != 1) {
    return Status::Unsupported("stream footer with " + std::to_string(count) + " entries (only 1 is written)");
  }
  return std::optional<FooterTrailer>(FooterTrailer{LoadU64(t.data()), LoadU64(t.data() + 8), LoadU32(t.data() + 16)});
}

}  // namespace rrl::rrd
