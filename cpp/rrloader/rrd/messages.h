// rrloader/rrd/messages.h — the binary framing and the few protobuf messages of an .rrd
// stream (see shared/spec/rrd-format.md §2–§3). Pure parsing over byte views: no I/O.
// Offsets in error messages are relative to the parsed bytes; callers prefix the file
// and absolute offset.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rrloader/common/status.h"

namespace rrl::rrd {

inline constexpr uint64_t kStreamHeaderSize = 12;
inline constexpr uint64_t kMessageHeaderSize = 16;
inline constexpr uint64_t kStreamTrailerSize = 32;        // one footer entry + the 12-byte tail
inline constexpr uint32_t kFooterChecksumSeed = 7850921;  // "RERUN" in base 26

// StreamHeader: the 12 bytes at the start of every stream.
struct StreamHeader {
  std::array<uint8_t, 4> version{};  // [major, minor, patch, meta]
  uint8_t compression = 0;           // advisory only: each ArrowMsg says its own
  uint8_t serializer = 0;
};
// ParseStreamHeader: validates magic, version gate (>= 0.23), serializer and reserved bytes.
// kCorrupt for a wrong magic, kUnsupported for RRF0/RRF1, old versions or MsgPack.
[[nodiscard]] Result<StreamHeader> ParseStreamHeader(std::string_view bytes);

enum class MessageKind : uint64_t { kEnd = 0, kSetStoreInfo = 1, kArrowMsg = 2, kBlueprintActivation = 3 };

// MessageHeader: the 16-byte frame header before every message payload.
struct MessageHeader {
  uint64_t kind = 0;
  uint64_t length = 0;
};
MessageHeader ParseMessageHeader(std::string_view bytes16);
bool IsKnownMessageKind(uint64_t kind);

enum class StoreKind : uint64_t { kUnspecified = 0, kRecording = 1, kBlueprint = 2 };

struct StoreId {
  StoreKind kind = StoreKind::kUnspecified;
  std::string recording_id;
  std::string application_id;
};

// SetStoreInfo: only the store identity is kept.
[[nodiscard]] Result<StoreId> ParseSetStoreInfo(std::string_view bytes);

enum class Compression : uint64_t { kUnspecified = 0, kNone = 1, kLz4 = 2 };

// ArrowMsgView: the fields of an ArrowMsg; `payload` views into the parsed bytes.
struct ArrowMsgView {
  StoreId store_id;
  Compression compression = Compression::kUnspecified;
  uint64_t uncompressed_size = 0;
  uint64_t encoding = 0;
  std::string_view payload;
  uint64_t payload_offset = 0;  // where `payload` starts, relative to the message
  std::optional<bool> is_static;
};
[[nodiscard]] Result<ArrowMsgView> ParseArrowMsg(std::string_view bytes);

// RrdManifestView: one store's index in the footer. Byte views into the footer bytes.
struct RrdManifestView {
  StoreId store_id;
  std::string_view sorbet_schema_ipc;  // Arrow IPC stream holding only a schema (may be empty)
  std::string_view data_payload;       // the manifest table: Arrow IPC stream, maybe LZ4
  Compression data_compression = Compression::kUnspecified;
  uint64_t data_uncompressed_size = 0;
};
// ParseRrdManifest: one RrdManifest message (an entry of the footer; also what a catalog
// server's GetRrdManifest answers with).
[[nodiscard]] Result<RrdManifestView> ParseRrdManifest(std::string_view bytes);
[[nodiscard]] Result<std::vector<RrdManifestView>> ParseRrdFooter(std::string_view bytes);

// FooterTrailer: the 32 bytes at EOF of a stream written with a footer.
struct FooterTrailer {
  uint64_t footer_offset = 0;
  uint64_t footer_length = 0;
  uint32_t checksum = 0;
};
// ParseFooterTrailer: nullopt when the bytes do not end with "RRF2FOOT" + count 1
// (a file without footer, which is legal); kUnsupported for a count other than 1.
[[nodiscard]] Result<std::optional<FooterTrailer>> ParseFooterTrailer(std::string_view last32);

}  // namespace rrl::rrd
