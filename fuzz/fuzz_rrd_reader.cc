// libFuzzer target over the whole .rrd read path: stream header, framing, footer and
// manifest, then decoding every chunk of every recording and running a dataframe query.
// Any input must produce a Status, never a crash, hang or sanitizer report.
#include <cstddef>
#include <cstdint>

#include "rrloader/io/file.h"
#include "rrloader/query/dataframe.h"
#include "rrloader/rrd/reader.h"
#include "rrloader/store/segment.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto buffer = arrow::Buffer::FromString(std::string(reinterpret_cast<const char*>(data), size));
  auto src = rrl::io::MemorySource("fuzz.rrd", buffer);
  auto index = rrl::rrd::OpenRrd(src);
  if (!index.ok()) return 0;
  rrl::store::ChunkCache cache(64 << 20);
  auto segments = rrl::store::Segment::FromRrd(*index, cache);
  if (!segments.ok()) return 0;
  for (const auto& seg : *segments) {
    rrl::query::DataframeQuery q;
    for (const auto& [key, col] : seg->columns()) {
      q.columns.push_back(
          {col.entity_path, col.component, arrow::field(col.entity_path + ":" + col.component, col.type)});
    }
    for (const auto& [name, range] : seg->index_ranges()) {
      q.index_columns.push_back({name, range.kind});
      if (!q.index) q.index = name;
    }
    q.fill_latest_at = (size & 1) != 0;
    q.eager_store = !index->from_footer;  // footer-less files go through the compaction path too
    rrl::query::QueryStats stats;
    (void)rrl::query::RunDataframeQuery(*seg, cache, q, &stats);
  }
  return 0;
}
