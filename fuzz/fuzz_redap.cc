// libFuzzer target over a catalog server's answers as the remote dataset decodes them
// (catalog/redap.h): a GetRrdManifest answer (an RrdManifest, its LZ4 manifest table and
// per-component columns) and a FetchChunks message (ArrowMsgs, Tuids, LZ4), then every
// chunk those yield. Any input must produce a Status, never a crash, hang or sanitizer report.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "rrloader/catalog/redap.h"
#include "rrloader/chunk/chunk.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto buffer = arrow::Buffer::FromString(std::string(reinterpret_cast<const char*>(data), size));
  (void)rrl::catalog::redap::DecodeGetRrdManifestResponse(buffer);
  std::vector<rrl::catalog::redap::FetchedChunk> chunks;
  if (rrl::catalog::redap::DecodeFetchChunksResponse(buffer, &chunks).ok()) {
    for (const auto& c : chunks) (void)rrl::chunk::Chunk::Decode(c.ipc, "fuzz chunk");
  }
  return 0;
}
