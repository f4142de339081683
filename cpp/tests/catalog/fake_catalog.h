// cpp/tests/catalog/fake_catalog.h — an in-memory stand-in for a catalog server's two
// chunk calls, answering in the wire format rerun-sdk 0.41's server uses (checked against
// the real server by tests/python/test_remote.py): GetRrdManifest with an RrdManifest whose
// table has the fixed columns, chunk_key and per-timeline / per-component ranges, and
// FetchChunks streaming one ArrowMsg per message. It lets the C++ tests count calls and
// inject faults. Header-only. Thread safety: Add and the fault knobs before the calls (or
// between them, from the test's thread); the calls themselves only read the chunks and may
// come from several threads at once (the counters are atomics).
#pragma once

#include <arrow/api.h>
#include <arrow/util/key_value_metadata.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "rrloader/catalog/remote_dataset.h"
#include "rrloader/chunk/chunk.h"
#include "rrloader/rrd/codec.h"
#include "rrloader/rrd/protobuf.h"
#include "rrloader/store/segment.h"
#include "tests/chunk/make_chunk.h"

namespace rrl::testing {

struct FakeChunk {
  std::string entity;
  std::vector<int64_t> frames;
  std::vector<std::optional<std::vector<double>>> values;
  bool is_static = false;
  uint64_t n = 0;   // the chunk id is (1000 + n, n)
  std::string ipc;  // its Arrow IPC stream
};

class FakeCatalog {
 public:
  // Add: a chunk of `entity` in `segment` (frames and one-value cells; nullopt = null).
  void Add(const std::string& segment, const std::string& entity, std::vector<int64_t> frames,
           std::vector<std::optional<std::vector<double>>> values, bool is_static = false) {
    FakeChunk c;
    c.entity = entity;
    c.frames = std::move(frames);
    c.values = std::move(values);
    c.is_static = is_static;
    c.n = next_++;
    ChunkSpec spec;
    spec.entity = entity;
    spec.chunk_id = "c" + std::to_string(c.n);
    spec.frames = c.frames;
    spec.values = c.values;
    spec.is_static = is_static;
    spec.row_id_base = 5000 + 100 * c.n;
    c.ipc = rrd::EncodeIpcStream(*MakeChunkBatch(spec)).value();
    segments_[segment].push_back(std::move(c));
  }
  // AddRange: a chunk of frames [first, first + count) with value = frame.
  void AddRange(const std::string& segment, const std::string& entity, int64_t first, int64_t count) {
    std::vector<int64_t> frames;
    std::vector<std::optional<std::vector<double>>> values;
    for (int64_t f = first; f < first + count; ++f) {
      frames.push_back(f);
      values.push_back(std::vector<double>{static_cast<double>(f)});
    }
    Add(segment, entity, frames, values);
  }

  catalog::RpcFn Rpc() {
    return [this](const std::string& method, const std::string& request) { return Call(method, request); };
  }

  // RpcMany: the batched transport (catalog::RpcManyFn): the calls one after the other.
  catalog::RpcManyFn RpcMany() {
    return [this](const std::string& method, const std::vector<std::string>& requests, int in_flight) {
      ++many_calls;
      max_in_flight = in_flight;
      std::vector<Result<std::vector<std::shared_ptr<arrow::Buffer>>>> out;
      out.reserve(requests.size());
      for (const auto& r : requests) out.push_back(Call(method, r));
      return out;
    };
  }

  std::atomic<int> many_calls{0};  // RpcMany calls
  std::atomic<int> max_in_flight{0};
  std::atomic<int> manifest_calls{0};
  std::atomic<int> fetch_calls{0};
  std::atomic<int> chunks_sent{0};
  std::atomic<bool> down{false};  // every call fails (kIoError)
  std::set<std::string> removed;  // segments answered NOT_FOUND (set before use)
  std::string key_salt = "a";     // changing it invalidates every chunk key (a restart)

  static std::string Id16(uint64_t n) {
    std::string id(16, '\0');
    const uint64_t hi = 1000 + n, lo = n;
    for (size_t i = 0; i < 8; ++i) {
      id[i] = static_cast<char>((hi >> (56 - 8 * i)) & 0xFF);
      id[8 + i] = static_cast<char>((lo >> (56 - 8 * i)) & 0xFF);
    }
    return id;
  }

 private:
  std::string Key(uint64_t n) const { return key_salt + ":" + std::to_string(n); }

  Result<std::vector<std::shared_ptr<arrow::Buffer>>> Call(const std::string& method, const std::string& request) {
    if (down) return Status::IoError("fetching failed after 1 attempt(s): UNAVAILABLE: test server down");
    if (method == catalog::redap::kGetRrdManifest) {
      ++manifest_calls;
      // GetRrdManifestRequest{1: SegmentId{1: id}}
      rrd::ProtoReader r(request);
      rrd::ProtoField f;
      if (!r.Next(&f).ok()) return Status::InvalidArgument("bad request");
      rrd::ProtoReader id(f.bytes);
      rrd::ProtoField g;
      if (!id.Next(&g).ok()) return Status::InvalidArgument("bad segment id");
      const std::string segment(g.bytes);
      if (removed.count(segment) || !segments_.count(segment)) {
        return Status::NotFound("the server answered NOT_FOUND: Segment '" + segment + "' not found in dataset");
      }
      return std::vector<std::shared_ptr<arrow::Buffer>>{arrow::Buffer::FromString(Manifest(segment))};
    }
    if (method == catalog::redap::kFetchChunks) {
      ++fetch_calls;
      rrd::ProtoReader r(request);
      std::vector<std::shared_ptr<arrow::Buffer>> out;
      while (!r.done()) {
        rrd::ProtoField f;
        if (!r.Next(&f).ok()) return Status::InvalidArgument("bad request");
        rrd::ProtoReader part(f.bytes);
        std::string payload;
        while (!part.done()) {
          rrd::ProtoField g;
          if (!part.Next(&g).ok()) return Status::InvalidArgument("bad part");
          if (g.number == 2) payload = std::string(g.bytes);
        }
        auto batch = rrd::DecodeIpcRecordBatch(arrow::Buffer::FromString(payload));
        if (!batch.ok()) return batch.status();
        auto keys = std::static_pointer_cast<arrow::BinaryArray>((*batch)->GetColumnByName("chunk_key"));
        auto segs = std::static_pointer_cast<arrow::StringArray>((*batch)->GetColumnByName("chunk_segment_id"));
        for (int64_t i = 0; i < keys->length(); ++i) {
          const std::string key(keys->GetView(i));
          const std::string segment(segs->GetView(i));
          const FakeChunk* found = nullptr;
          auto seg_it = segments_.find(segment);
          if (seg_it == segments_.end()) return Status::NotFound("the server answered NOT_FOUND: Invalid chunk key");
          for (const auto& c : seg_it->second) {
            if (Key(c.n) == key && !removed.count(segment)) found = &c;
          }
          if (found == nullptr) return Status::NotFound("the server answered NOT_FOUND: Invalid chunk key");
          out.push_back(arrow::Buffer::FromString(Message(segment, *found)));
          ++chunks_sent;
        }
      }
      return out;
    }
    return Status::InvalidArgument("unknown method " + method);
  }

  static std::string StoreId(const std::string& segment) {
    rrd::ProtoWriter id;
    id.Varint(1, 1);
    id.Bytes(2, segment);
    return id.Take();
  }

  std::string Message(const std::string& segment, const FakeChunk& c) const {
    rrd::ProtoWriter tuid;
    tuid.Fixed64(1, 1000 + c.n);
    tuid.Fixed64(2, c.n);
    rrd::ProtoWriter msg;
    msg.Bytes(1, StoreId(segment));
    msg.Varint(2, 1);  // COMPRESSION_NONE
    msg.Varint(3, c.ipc.size());
    msg.Varint(4, 1);  // ENCODING_ARROW_IPC
    msg.Bytes(5, c.ipc);
    msg.Bytes(6, tuid.data());
    rrd::ProtoWriter response;
    response.Bytes(1, msg.data());
    return response.Take();
  }

  std::string Manifest(const std::string& segment) {
    const auto& chunks = segments_.at(segment);
    arrow::StringBuilder entity;
    arrow::FixedSizeBinaryBuilder id(arrow::fixed_size_binary(16));
    arrow::BooleanBuilder is_static;
    arrow::UInt64Builder rows, offset, size, size_u, comp_rows;
    arrow::BinaryBuilder key;
    arrow::Int64Builder start, end, comp_start, comp_end;
    for (const auto& c : chunks) {
      (void)entity.Append(c.entity);
      (void)id.Append(Id16(c.n).data());
      (void)is_static.Append(c.is_static);
      (void)rows.Append(c.frames.empty() ? c.values.size() : c.frames.size());
      (void)offset.Append(0);
      (void)size.Append(c.ipc.size());
      (void)size_u.Append(c.ipc.size());
      (void)key.Append(Key(c.n));
      if (c.is_static || c.frames.empty()) {
        (void)start.AppendNull(), (void)end.AppendNull(), (void)comp_start.AppendNull(), (void)comp_end.AppendNull();
        (void)comp_rows.Append(0);
        continue;
      }
      (void)start.Append(*std::min_element(c.frames.begin(), c.frames.end()));
      (void)end.Append(*std::max_element(c.frames.begin(), c.frames.end()));
      std::optional<int64_t> lo, hi;
      uint64_t n = 0;
      for (size_t r = 0; r < c.frames.size(); ++r) {
        if (!c.values[r]) continue;
        lo = lo ? std::min(*lo, c.frames[r]) : c.frames[r];
        hi = hi ? std::max(*hi, c.frames[r]) : c.frames[r];
        ++n;
      }
      if (n > 0) {
        (void)comp_start.Append(*lo), (void)comp_end.Append(*hi);
      } else {
        (void)comp_start.AppendNull(), (void)comp_end.AppendNull();
      }
      (void)comp_rows.Append(n);
    }
    auto md_index = arrow::key_value_metadata({"rerun:index"}, {"frame"});
    auto md_comp = arrow::key_value_metadata({"rerun:index", "rerun:component", "rerun:archetype"},
                                             {"frame", "Scalars:scalars", "rerun.archetypes.Scalars"});
    auto schema = arrow::schema({
        arrow::field("chunk_entity_path", arrow::utf8(), false),
        arrow::field("chunk_id", arrow::fixed_size_binary(16), false),
        arrow::field("chunk_is_static", arrow::boolean(), false),
        arrow::field("chunk_num_rows", arrow::uint64(), false),
        arrow::field("chunk_byte_offset", arrow::uint64(), false),
        arrow::field("chunk_byte_size", arrow::uint64(), false),
        arrow::field("chunk_byte_size_uncompressed", arrow::uint64(), false),
        arrow::field("chunk_key", arrow::binary(), false),
        arrow::field("frame:start", arrow::int64(), true, md_index),
        arrow::field("frame:end", arrow::int64(), true, md_index),
        arrow::field("frame:Scalars:scalars:start", arrow::int64(), true, md_comp),
        arrow::field("frame:Scalars:scalars:end", arrow::int64(), true, md_comp),
        arrow::field("frame:Scalars:scalars:num_rows", arrow::uint64(), false, md_comp),
    });
    std::vector<std::shared_ptr<arrow::Array>> columns = {
        entity.Finish().ValueOrDie(),   id.Finish().ValueOrDie(),         is_static.Finish().ValueOrDie(),
        rows.Finish().ValueOrDie(),     offset.Finish().ValueOrDie(),     size.Finish().ValueOrDie(),
        size_u.Finish().ValueOrDie(),   key.Finish().ValueOrDie(),        start.Finish().ValueOrDie(),
        end.Finish().ValueOrDie(),      comp_start.Finish().ValueOrDie(), comp_end.Finish().ValueOrDie(),
        comp_rows.Finish().ValueOrDie()};
    auto batch = arrow::RecordBatch::Make(schema, static_cast<int64_t>(chunks.size()), columns);
    const std::string ipc = rrd::EncodeIpcStream(*batch).value();
    rrd::ProtoWriter part;
    part.Varint(1, 1);
    part.Bytes(2, ipc);
    part.Varint(3, 1);
    part.Varint(4, ipc.size());
    rrd::ProtoWriter manifest;
    manifest.Bytes(1, StoreId(segment));
    manifest.Bytes(4, part.data());
    rrd::ProtoWriter response;
    response.Bytes(1, manifest.data());
    return response.Take();
  }

  std::map<std::string, std::vector<FakeChunk>> segments_;
  uint64_t next_ = 1;
};

}  // namespace rrl::testing
