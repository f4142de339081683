// rrloader/engine/engine_video.cc — the fetch and decode stages of video fields (see
// video_field.h for the design, video_plan.h for the planning rules).
#include <arrow/array.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include "rrloader/engine/engine.h"

namespace rrl::engine {

namespace {

uint64_t PackShape(int height, int width) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(height)) << 32) | static_cast<uint32_t>(width);
}

int ShapeHeight(uint64_t packed) {
  return static_cast<int>(packed >> 32);
}
int ShapeWidth(uint64_t packed) {
  return static_cast<int>(packed & 0xFFFFFFFFu);
}

// WantedIndex: the index of `position` in a GOP's sorted wanted list.
size_t WantedIndex(const std::vector<int64_t>& wanted, int64_t position) {
  return static_cast<size_t>(std::lower_bound(wanted.begin(), wanted.end(), position) - wanted.begin());
}

constexpr size_t kNoSlot = static_cast<size_t>(-1);

// GopState: one planned GOP while it decodes: where each wanted frame went. Touched only by
// the task decoding the GOP, then read after the ParallelFor.
struct GopState {
  std::vector<size_t> first_slot;                // per wanted: the first slot wanting it
  std::vector<uint8_t*> frame;                   // per wanted: its pixels, or Y plane (null: none)
  std::vector<uint8_t*> uv;                      // per wanted, YUV output: its UV planes
  std::vector<uint64_t> shape;                   // per wanted: PackShape of the frame
  std::vector<decode::VideoColor> color;         // per wanted: its colour metadata
  std::vector<std::shared_ptr<uint8_t[]>> side;  // per wanted: pixels outside the field buffer
  Status error;
  decode::GopOutcome outcome;
};

// FrameLayout: where slot t of sample i lives in a field buffer of frames of one size.
// RGB: [B, T, 3, H, W], one plane group per slot. YUV 4:2:0: each sample is its T Y planes
// [T, 1, H, W] followed by its T UV planes [T, 2, h, w], so a sample's `y` and `uv` are each
// one contiguous tensor and a block's are strided views of the buffer.
struct FrameLayout {
  int64_t first_bytes = 0;   // RGB: 3 * H * W; YUV: the Y plane
  int64_t second_bytes = 0;  // RGB: 0; YUV: the UV planes
  int64_t slots = 1;

  static FrameLayout Of(decode::VideoOutputFormat format, uint64_t shape, int64_t slots) {
    const int h = ShapeHeight(shape), w = ShapeWidth(shape);
    if (format == decode::VideoOutputFormat::kRgb) return {int64_t{3} * h * w, 0, slots};
    return {decode::Yuv420LumaBytes(h, w), decode::Yuv420ChromaBytes(h, w), slots};
  }
  int64_t frame_bytes() const { return first_bytes + second_bytes; }
  int64_t sample_bytes() const { return slots * frame_bytes(); }
  uint8_t* first(uint8_t* sample_base, int64_t t) const { return sample_base + t * first_bytes; }
  uint8_t* second(uint8_t* sample_base, int64_t t) const {
    return sample_base + slots * first_bytes + t * second_bytes;
  }
  // CopyFrame: a frame (first plane group at `src`, second at `src_second`) into slot t.
  void CopyFrame(const uint8_t* src, const uint8_t* src_second, uint8_t* sample_base, int64_t t) const {
    uint8_t* dst = first(sample_base, t);
    if (dst != src) std::memcpy(dst, src, static_cast<size_t>(first_bytes));
    uint8_t* dst2 = second(sample_base, t);
    if (second_bytes > 0 && dst2 != src_second) std::memcpy(dst2, src_second, static_cast<size_t>(second_bytes));
  }
};

// FieldState: one video field of the block while it decodes.
struct FieldState {
  size_t field = 0;
  const VideoFetch* video = nullptr;
  int64_t slots = 1;
  decode::VideoOutputFormat format = decode::VideoOutputFormat::kRgb;
  bool direct = false;     // frames go straight into `data` when their size is `predicted`
  uint64_t predicted = 0;  // PackShape of the frames, when known before decoding
  FrameLayout layout;      // of predicted frames
  std::shared_ptr<uint8_t[]> data;
  std::vector<GopState> gops;
};

}  // namespace

std::string Engine::VideoKey(size_t field, int32_t seg) const {
  return segment_ids_[static_cast<size_t>(seg)] + '\n' + fields_[field].path + '\n' + options_.index;
}

void Engine::VideoSetupWants(
    const std::map<int32_t, std::vector<size_t>>& samples_by_segment, const BlockSegments& segments,
    std::map<const store::Segment*, std::pair<std::shared_ptr<const store::Segment>, std::set<size_t>>>* wants) const {
  for (size_t fi = 0; fi < fields_.size(); ++fi) {
    if (fields_[fi].kind != FieldKind::kVideo) continue;
    const VideoPrepared& vp = video_prepared_[fi];
    for (const auto& [seg, members] : samples_by_segment) {
      if (video_indexes_->Contains(VideoKey(fi, seg))) continue;
      auto it = segments.find({seg, vp.columns.sample.entity_path});
      if (it == segments.end() || it->second == nullptr) continue;
      const VideoIndexLayout layout = LayoutVideoIndex(*it->second, options_.index, vp.columns);
      auto& w = (*wants)[it->second.get()];
      w.first = it->second;
      w.second.insert(layout.setup.begin(), layout.setup.end());
      for (size_t c : layout.setup_clusters) {
        w.second.insert(layout.clusters[c].chunks.begin(), layout.clusters[c].chunks.end());
      }
    }
  }
}

namespace {

// VideoStreamWork: one stream of the block while its clusters are worked out.
struct VideoStreamWork {
  size_t field = 0;
  int32_t segment = 0;
  std::string key;
  std::shared_ptr<const VideoIndex> index;
  std::vector<int64_t> values;  // the slots' index values, sorted, unique
  std::vector<char> resolved;   // per value
  std::set<size_t> view;        // the clusters the block reads
};

// ResolveVideoValue: the clusters value `v` of the stream needs — the one holding its
// packet (the latest at or before v) and every one back to that packet's keyframe — added
// to `view` when all are loaded (true), else the missing ones to `need` (false). A value
// with no packet at or before it, or no keyframe at or before its packet, needs no more
// than the clusters that showed it (the planner then finds it missing).
bool ResolveVideoValue(const VideoIndex& index, int64_t v, std::set<size_t>* view, std::set<size_t>* need) {
  int64_t c = index.ClusterAtOrBefore(v);
  std::shared_ptr<const VideoClusterPackets> p;
  int64_t rank = -1;
  for (; c >= 0; --c) {
    p = index.Loaded(static_cast<size_t>(c));
    if (p == nullptr) {
      need->insert(static_cast<size_t>(c));
      return false;
    }
    rank = static_cast<int64_t>(std::upper_bound(p->times.begin(), p->times.end(), v) - p->times.begin()) - 1;
    if (rank >= 0) break;
  }
  if (c < 0) return true;  // nothing logged at or before v
  const auto packet_cluster = static_cast<size_t>(c);
  if (p->prior[static_cast<size_t>(rank)] >= 0) {
    view->insert(packet_cluster);
    return true;
  }
  // Back through earlier clusters to the one with the latest keyframe. With is_keyframe
  // marks known, every cluster back to the latest mark before this cluster is needed at
  // once (one round instead of one per cluster).
  std::vector<size_t> missing;
  int64_t stop = -1;  // the cluster holding the keyframe, once found
  for (int64_t k = c - 1; k >= 0; --k) {
    auto q = index.Loaded(static_cast<size_t>(k));
    if (q == nullptr) {
      missing.push_back(static_cast<size_t>(k));
      if (!index.marked_times.empty()) {
        auto m = index.marked_times.lower_bound(index.clusters[static_cast<size_t>(c)].min);
        if (m != index.marked_times.begin()) {
          const int64_t mark_cluster = index.ClusterAtOrBefore(*std::prev(m));
          for (int64_t j = k - 1; j >= std::max<int64_t>(mark_cluster, 0); --j) {
            if (index.Loaded(static_cast<size_t>(j)) == nullptr) missing.push_back(static_cast<size_t>(j));
          }
        }
      }
      break;
    }
    if (q->last_keyframe >= 0) {
      stop = k;
      break;
    }
  }
  if (!missing.empty()) {
    need->insert(missing.begin(), missing.end());
    return false;
  }
  if (stop < 0) {
    view->insert(packet_cluster);  // no keyframe at all before the packet: missing
    return true;
  }
  for (auto k = static_cast<size_t>(stop); k <= packet_cluster; ++k) view->insert(k);
  return true;
}

// BuildStreamBlock: the block's view of a stream: the packets of `clusters`, in order.
VideoStreamBlock BuildStreamBlock(const VideoIndex& index, const std::set<size_t>& clusters) {
  VideoStreamBlock b;
  int32_t carry = -1;  // view position of the last keyframe of the contiguous run so far
  size_t previous = 0;
  bool first = true;
  for (size_t c : clusters) {
    auto p = index.Loaded(c);
    if (p == nullptr) continue;  // (cannot happen: resolved clusters are loaded)
    const bool adjacent = !first && previous + 1 == c;
    if (!adjacent) carry = -1;
    if (!first && !b.continues.empty()) b.continues.back() = adjacent ? 1 : 0;
    const auto base = static_cast<int32_t>(b.times.size());
    for (size_t k = 0; k < p->times.size(); ++k) {
      b.times.push_back(p->times[k]);
      b.refs.push_back(p->refs[k]);
      b.positions.push_back(VideoIndex::Position(c, k));
      b.prior_keyframe.push_back(p->prior[k] >= 0 ? base + p->prior[k] : carry);
      b.continues.push_back(1);
    }
    if (p->last_keyframe >= 0) carry = base + p->last_keyframe;
    previous = c;
    first = false;
  }
  if (!b.continues.empty()) b.continues.back() = 0;
  return b;
}

}  // namespace

Status Engine::FetchVideo(const std::map<int32_t, std::vector<size_t>>& samples_by_segment,
                          const BlockSegments& segments, FetchedBlock* fb) const {
  const size_t n = fb->global.size();
  std::vector<VideoStreamWork> streams;
  std::vector<std::vector<int32_t>> field_streams(fields_.size());  // per field: streams of its segments
  std::vector<std::vector<int64_t>> field_slot_values(fields_.size());
  // 1. Each field's streams: their indexes (created now when new; the setup chunks were
  // prefetched with the block) and the slots' values.
  for (size_t fi = 0; fi < fields_.size(); ++fi) {
    if (fields_[fi].kind != FieldKind::kVideo) continue;
    const FieldSpec& f = fields_[fi];
    const VideoPrepared& vp = video_prepared_[fi];
    VideoFieldCounters& counters = *video_counters_[fi];
    const int64_t T = fb->fields[fi].slots;
    auto& slot_values = field_slot_values[fi];
    slot_values.resize(n * static_cast<size_t>(T));
    for (const auto& [seg, members] : samples_by_segment) {
      for (size_t i : members) {
        for (int64_t t = 0; t < T; ++t) {
          slot_values[i * static_cast<size_t>(T) + static_cast<size_t>(t)] =
              fb->values[i] + (f.window ? (*f.window)[static_cast<size_t>(t)] : 0);
        }
      }
      const std::string& segment_id = segment_ids_[static_cast<size_t>(seg)];
      const std::string where = "field '" + f.key + "' (column '" + f.path + "') at segment '" + segment_id + "'";
      const std::string key = VideoKey(fi, seg);
      bool built = false;
      const int32_t segment_number = seg;  // (clang 14 cannot capture structured bindings)
      auto index = video_indexes_->GetOrBuild(key, [&]() -> Result<std::shared_ptr<const VideoIndex>> {
        built = true;
        auto it = segments.find({segment_number, vp.columns.sample.entity_path});
        Result<std::shared_ptr<const store::Segment>> segment =
            it != segments.end() && it->second != nullptr ? Result(it->second)
                                                          : SegmentFor(segment_number, vp.columns.sample.entity_path);
        if (!segment.ok()) return segment.status().WithPrefix(where);
        return CreateVideoIndex(*segment, dataset_->cache(), options_.index, vp.columns, vp.fallback_codec, where,
                                vp.codec_overrides);
      });
      if (!index.ok()) return index.status();
      ++fb->stats.queries;
      if (built) {
        counters.streams_indexed.fetch_add(1);
        counters.clusters_loaded.fetch_add((*index)->clusters_loaded());
        counters.keyframes_rejected.fetch_add((*index)->keyframes_rejected());
      }
      if ((*index)->clusters.empty()) {
        field_streams[fi].push_back(-1);  // no stream in this segment: its samples are missing
        continue;
      }
      VideoStreamWork w;
      w.field = fi;
      w.segment = seg;
      w.key = key;
      w.index = *index;
      for (size_t i : members) {
        for (int64_t t = 0; t < T; ++t) {
          w.values.push_back(slot_values[i * static_cast<size_t>(T) + static_cast<size_t>(t)]);
        }
      }
      std::sort(w.values.begin(), w.values.end());
      w.values.erase(std::unique(w.values.begin(), w.values.end()), w.values.end());
      w.resolved.assign(w.values.size(), 0);
      field_streams[fi].push_back(static_cast<int32_t>(streams.size()));
      streams.push_back(std::move(w));
    }
  }
  // 2. The clusters every slot needs, in rounds: each round's missing clusters of every
  // stream and field are prefetched together, then read.
  for (;;) {
    std::map<size_t, std::set<size_t>> need;  // stream -> clusters
    for (size_t s = 0; s < streams.size(); ++s) {
      VideoStreamWork& w = streams[s];
      for (size_t k = 0; k < w.values.size(); ++k) {
        if (w.resolved[k]) continue;
        std::set<size_t> missing;
        if (ResolveVideoValue(*w.index, w.values[k], &w.view, &missing)) {
          w.resolved[k] = 1;
        } else {
          need[s].insert(missing.begin(), missing.end());
        }
      }
    }
    if (need.empty()) break;
    if (dataset_->WantsPrefetch()) {
      std::map<const store::Segment*, catalog::ChunkWant> wants;
      for (const auto& [s, clusters] : need) {
        const VideoIndex& index = *streams[s].index;
        auto& want = wants[index.segment.get()];
        want.segment = index.segment;
        for (size_t c : clusters) {
          want.chunks.insert(want.chunks.end(), index.ChunksOf(c).begin(), index.ChunksOf(c).end());
        }
      }
      std::vector<catalog::ChunkWant> list;
      for (auto& [_, want] : wants) {
        std::sort(want.chunks.begin(), want.chunks.end());
        want.chunks.erase(std::unique(want.chunks.begin(), want.chunks.end()), want.chunks.end());
        list.push_back(std::move(want));
      }
      RRL_RETURN_IF_ERROR(dataset_->Prefetch(list, &fb->keep_alive));
    }
    for (const auto& [s, clusters] : need) {
      const VideoStreamWork& w = streams[s];
      VideoFieldCounters& counters = *video_counters_[w.field];
      for (size_t c : clusters) {
        bool newly = false;
        auto loaded = w.index->Load(c, dataset_->cache(), &newly);
        if (!loaded.ok()) return loaded.status();
        if (newly) {
          counters.clusters_loaded.fetch_add(1);
          counters.keyframes_rejected.fetch_add((*loaded)->keyframes_rejected);
        }
      }
      video_indexes_->Resize(w.key);
    }
  }
  // 3. Per field: the views, the plan and the GOPs' packet bytes.
  for (size_t fi = 0; fi < fields_.size(); ++fi) {
    if (fields_[fi].kind != FieldKind::kVideo) continue;
    const FieldSpec& f = fields_[fi];
    const VideoPrepared& vp = video_prepared_[fi];
    auto& fc = fb->fields[fi];
    const int64_t T = fc.slots;
    auto video = std::make_shared<VideoFetch>();
    std::vector<int32_t> sample_stream(n, -1);
    size_t k = 0;
    for (const auto& [seg, members] : samples_by_segment) {
      const int32_t s = field_streams[fi][k++];
      if (s < 0) continue;
      const auto local = static_cast<int32_t>(video->streams.size());
      video->streams.push_back(streams[static_cast<size_t>(s)].index);
      video->views.push_back(
          BuildStreamBlock(*streams[static_cast<size_t>(s)].index, streams[static_cast<size_t>(s)].view));
      video->stream_segment.push_back(seg);
      for (size_t i : members) sample_stream[i] = local;
    }
    std::vector<VideoStreamView> views;
    views.reserve(video->views.size());
    for (const auto& v : video->views) views.push_back(v.View());
    video->plan = PlanVideoBlock(views, sample_stream, field_slot_values[fi], T, VideoLookahead(f.video.threads));

    // Packet bytes, in place in the chunks (kept alive by the block); each chunk looked up once.
    std::vector<std::map<uint32_t, const arrow::ListArray*>> columns_by_chunk(video->streams.size());
    std::vector<uint8_t> scratch;
    video->packets.resize(video->plan.gops.size());
    video->wanted.resize(video->plan.gops.size());
    for (size_t g = 0; g < video->plan.gops.size(); ++g) {
      const PlannedGop& gop = video->plan.gops[g];
      const auto s = static_cast<size_t>(gop.stream);
      const VideoIndex& index = *video->streams[s];
      const VideoStreamBlock& view = video->views[s];
      for (int64_t w : gop.wanted) video->wanted[g].push_back(view.positions[static_cast<size_t>(w)]);
      auto& packets = video->packets[g];
      packets.reserve(static_cast<size_t>(gop.last - gop.keyframe + 1));
      for (int64_t p = gop.keyframe; p <= gop.last; ++p) {
        const VideoPacketRef ref = view.refs[static_cast<size_t>(p)];
        auto it = columns_by_chunk[s].find(ref.chunk);
        if (it == columns_by_chunk[s].end()) {
          auto ch = index.segment->LoadChunk(ref.chunk, dataset_->cache());
          if (!ch.ok()) return ch.status().WithPrefix("field '" + f.key + "' (column '" + f.path + "')");
          ++fb->stats.chunks_loaded;
          const auto* comp = (*ch)->FindComponent(vp.columns.sample.component);
          if (comp == nullptr || ref.row >= (*ch)->num_rows()) {
            return Status::Internal("field '" + f.key + "': a video chunk changed since its stream was indexed");
          }
          fb->keep_alive.push_back(*ch);
          it = columns_by_chunk[s].emplace(ref.chunk, comp->list.get()).first;
        }
        const uint8_t* data = nullptr;
        size_t size = 0;
        if (!VideoSampleBytes(*it->second, ref.row, &scratch, &data, &size)) {
          return Status::Internal("field '" + f.key + "': a video packet vanished since its stream was indexed");
        }
        if (!scratch.empty() && data == scratch.data()) {  // several blobs, concatenated: keep a copy
          video->owned.emplace_back(data, data + size);
          data = video->owned.back().data();
          scratch.clear();
        }
        packets.push_back({data, size, view.positions[static_cast<size_t>(p)]});
        ++fb->stats.rows_fetched;
      }
    }
    fc.video = std::move(video);
  }
  return Status::OK();
}

Status Engine::DecodeVideo(const FetchedBlock& fb, Block* out) const {
  const auto n = static_cast<int64_t>(out->global.size());
  std::vector<FieldState> states;
  for (size_t fi = 0; fi < fields_.size(); ++fi) {
    if (fields_[fi].kind != FieldKind::kVideo || fb.fields[fi].video == nullptr) continue;
    FieldState st;
    st.field = fi;
    st.video = fb.fields[fi].video.get();
    st.slots = fb.fields[fi].slots;
    st.format = fields_[fi].video.output_format;
    const VideoBlockPlan& plan = st.video->plan;
    // The frame size, when known before decoding: the requested size, or the one every
    // stream of the block showed in earlier blocks (a stream new to this process: the
    // field's last size; a wrong guess only costs a copy, see the layout below).
    const decode::VideoOutputSize& size = fields_[fi].video.size;
    if (size.resize()) {
      st.predicted = PackShape(size.height, size.width);
    } else if (!st.video->streams.empty()) {
      const uint64_t field_shape = video_counters_[fi]->last_shape.load();
      auto guess = [&](const VideoIndex& s) {
        const uint64_t own = s.frame_shape.load();
        return own != 0 ? own : field_shape;
      };
      st.predicted = guess(*st.video->streams[0]);
      for (const auto& s : st.video->streams) {
        if (guess(*s) != st.predicted) st.predicted = 0;
      }
    }
    st.direct = st.predicted != 0;
    st.layout = FrameLayout::Of(st.format, st.predicted, st.slots);
    if (st.direct) {
      st.data = buffers_->Allocate(n * st.layout.sample_bytes());
    }
    st.gops.resize(plan.gops.size());
    for (size_t g = 0; g < plan.gops.size(); ++g) {
      const size_t w = plan.gops[g].wanted.size();
      st.gops[g].first_slot.assign(w, kNoSlot);
      st.gops[g].frame.assign(w, nullptr);
      st.gops[g].uv.assign(w, nullptr);
      st.gops[g].shape.assign(w, 0);
      st.gops[g].color.assign(w, decode::VideoColor{});
      st.gops[g].side.resize(w);
    }
    for (size_t k = 0; k < plan.slots.size(); ++k) {
      const VideoSlot& slot = plan.slots[k];
      if (slot.gop < 0) continue;
      GopState& gs = st.gops[static_cast<size_t>(slot.gop)];
      const size_t j = WantedIndex(plan.gops[static_cast<size_t>(slot.gop)].wanted, slot.position);
      if (gs.first_slot[j] == kNoSlot) gs.first_slot[j] = k;
    }
    states.push_back(std::move(st));
  }
  if (states.empty()) return Status::OK();

  // Every GOP of every video field in one ParallelFor, longest first (the packet count is
  // the decode cost), so the pool stays busy until the end of the block.
  struct Task {
    size_t state = 0;
    size_t gop = 0;
    size_t packets = 0;
  };
  std::vector<Task> tasks;
  for (size_t si = 0; si < states.size(); ++si) {
    for (size_t g = 0; g < states[si].gops.size(); ++g) {
      tasks.push_back({si, g, states[si].video->packets[g].size()});
    }
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.packets > b.packets; });
  auto decode_gop = [&](const Task& task) {
    FieldState& st = states[task.state];
    GopState& gs = st.gops[task.gop];
    const FieldSpec& f = fields_[st.field];
    const PlannedGop& gop = st.video->plan.gops[task.gop];
    const VideoIndex& index = *st.video->streams[static_cast<size_t>(gop.stream)];
    const std::string& segment_id =
        segment_ids_[static_cast<size_t>(st.video->stream_segment[static_cast<size_t>(gop.stream)])];
    decode::GopRequest request;
    request.stream_key = segment_id + ":" + f.path;
    request.codec = *index.codec;
    request.packets = st.video->packets[task.gop];
    const std::vector<int64_t>& wanted = st.video->wanted[task.gop];  // decoder positions
    request.wanted = wanted;
    request.size = f.video.size;
    request.verify_keyframe = true;
    request.ends_gop = gop.ends_gop;
    const VideoStreamBlock& view = st.video->views[static_cast<size_t>(gop.stream)];
    request.describe = [&](int64_t position) {
      const size_t at = WantedIndex(view.positions, position);
      return at < view.times.size() && view.positions[at] == position
                 ? options_.index + "=" + std::to_string(view.times[at])
                 : "packet " + std::to_string(position);
    };
    request.output_format = st.format;
    const decode::FrameTargetSink sink = [&](int64_t position,
                                             const decode::VideoFrameInfo& info) -> Result<decode::FrameTarget> {
      const size_t j = WantedIndex(wanted, position);
      if (j >= wanted.size() || wanted[j] != position) {
        return Status::Internal("video decoder delivered an unwanted position");
      }
      const uint64_t shape = PackShape(info.height, info.width);
      decode::FrameTarget target;
      if (st.direct && shape == st.predicted && gs.first_slot[j] != kNoSlot) {
        const auto k = static_cast<int64_t>(gs.first_slot[j]);
        uint8_t* base = st.data.get() + (k / st.slots) * st.layout.sample_bytes();
        target = {st.layout.first(base, k % st.slots), st.layout.second(base, k % st.slots)};
      } else {
        const FrameLayout one = FrameLayout::Of(st.format, shape, 1);
        gs.side[j] = buffers_->Allocate(std::max<int64_t>(one.frame_bytes(), 1));
        target = {one.first(gs.side[j].get(), 0), one.second(gs.side[j].get(), 0)};
      }
      gs.frame[j] = target.data;
      gs.uv[j] = target.uv;
      gs.shape[j] = shape;
      gs.color[j] = info.color;
      if (st.format == decode::VideoOutputFormat::kRgb) target.uv = nullptr;
      return target;
    };
    auto outcome = video_decoders_[st.field]->DecodeGop(request, sink);
    if (!outcome.ok()) {
      gs.error = outcome.status().WithPrefix("field '" + f.key + "' (column '" + f.path + "') at segment '" +
                                             segment_id + "'");
      std::fill(gs.frame.begin(), gs.frame.end(), nullptr);
      return;
    }
    gs.outcome = std::move(*outcome);
    // A position the decoder reports missing must not be read even if a sink call happened.
    for (int64_t m : gs.outcome.missing) {
      const size_t j = WantedIndex(wanted, m);
      if (j < gs.frame.size() && wanted[j] == m) gs.frame[j] = nullptr;
    }
  };
  // A field whose frame size is not known yet (the first block of a process) decodes its
  // smallest GOP first, alone: its size lets the others go straight into the field buffer,
  // instead of every frame into a buffer of its own and then all of them copied (a second
  // block's worth of memory).
  std::vector<uint8_t> done(tasks.size(), 0);
  for (size_t si = 0; si < states.size(); ++si) {
    FieldState& st = states[si];
    if (st.direct || st.gops.empty()) continue;
    size_t probe = tasks.size();
    for (size_t ti = 0; ti < tasks.size(); ++ti) {
      if (tasks[ti].state == si && (probe == tasks.size() || tasks[ti].packets <= tasks[probe].packets)) probe = ti;
    }
    decode_gop(tasks[probe]);
    done[probe] = 1;
    const GopState& gs = st.gops[tasks[probe].gop];
    for (size_t j = 0; j < gs.frame.size() && !st.direct; ++j) {
      if (gs.frame[j] == nullptr) continue;
      st.predicted = gs.shape[j];
      st.direct = true;
      st.layout = FrameLayout::Of(st.format, st.predicted, st.slots);
      st.data = buffers_->Allocate(n * st.layout.sample_bytes());
    }
  }
  std::vector<Task> rest;
  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    if (!done[ti]) rest.push_back(tasks[ti]);
  }
  pool_->ParallelFor(static_cast<int64_t>(rest.size()),
                     [&](int64_t ti, int) { decode_gop(rest[static_cast<size_t>(ti)]); });

  // Errors: every failed GOP of the block is reported (the first three in the message).
  {
    std::string errors;
    int count = 0;
    Status first;
    for (const auto& st : states) {
      // rerun 0.41 leaves a GOP whose data libavcodec rejects unresolved (its samples are
      // None); our own failures (kInternal, kIoError) are errors under every semantics.
      const bool r041 = fields_[st.field].semantics == Semantics::kRerun041;
      for (const auto& gs : st.gops) {
        if (gs.error.ok()) continue;
        const StatusCode code = gs.error.code();
        if (r041 &&
            (code == StatusCode::kCorrupt || code == StatusCode::kTruncated || code == StatusCode::kUnsupported)) {
          continue;
        }
        if (count == 0) first = gs.error;
        if (count < 3) errors += (errors.empty() ? "" : "; ") + gs.error.message();
        ++count;
      }
    }
    if (count > 0) {
      return Status(first.code(), errors + (count > 3 ? " (and " + std::to_string(count - 3) + " more)" : ""));
    }
  }

  for (FieldState& st : states) {
    const FieldSpec& f = fields_[st.field];
    VideoFieldCounters& counters = *video_counters_[st.field];
    const VideoBlockPlan& plan = st.video->plan;
    FieldOutput& fo = out->fields[st.field];
    const int64_t T = st.slots;
    counters.gop_requests.fetch_add(static_cast<int64_t>(st.gops.size()));
    out->stats.video_gops += static_cast<int64_t>(st.gops.size());
    for (size_t g = 0; g < st.gops.size(); ++g) {
      const GopState& gs = st.gops[g];
      out->stats.video_frames_decoded += gs.outcome.frames_decoded;
      out->stats.video_frames_delivered += static_cast<int64_t>(gs.outcome.delivered.size());
      for (size_t j = 0; j < gs.frame.size(); ++j) {
        if (gs.frame[j] != nullptr) {
          st.video->streams[static_cast<size_t>(plan.gops[g].stream)]->frame_shape.store(gs.shape[j]);
          counters.last_shape.store(gs.shape[j]);
        }
      }
    }
    // Each slot's frame; a sample is valid when every slot has one, all of one size (and, in
    // YUV, of one colour metadata: 0.41 cannot stack them otherwise).
    struct SlotFrame {
      const uint8_t* first = nullptr;
      const uint8_t* second = nullptr;
      uint64_t shape = 0;
      decode::VideoColor color;
    };
    auto slot_frame = [&](size_t k) -> SlotFrame {
      const VideoSlot& slot = plan.slots[k];
      if (slot.gop < 0) return {};
      const GopState& gs = st.gops[static_cast<size_t>(slot.gop)];
      const size_t j = WantedIndex(plan.gops[static_cast<size_t>(slot.gop)].wanted, slot.position);
      return {gs.frame[j], gs.uv[j], gs.shape[j], gs.color[j]};
    };
    const bool yuv = st.format == decode::VideoOutputFormat::kYuv420;
    std::vector<uint8_t> valid(static_cast<size_t>(n), 0);
    std::vector<uint64_t> sample_shape(static_cast<size_t>(n), 0);
    bool all_direct = st.direct;
    int64_t missing = 0;
    for (int64_t i = 0; i < n; ++i) {
      const SlotMissing why = plan.sample_missing[static_cast<size_t>(i)];
      if (why != SlotMissing::kNone) {
        ++missing;
        counters.missing_no_keyframe.fetch_add(1);
        if (why == SlotMissing::kBeforeFirstPacket) counters.missing_before_first_packet.fetch_add(1);
        continue;
      }
      bool ok = true;
      uint64_t common = 0;
      decode::VideoColor color0;
      for (int64_t t = 0; t < T && ok; ++t) {
        const SlotFrame sf = slot_frame(static_cast<size_t>(i * T + t));
        if (sf.first == nullptr) {
          ok = false;
        } else if (t == 0) {
          common = sf.shape;
          color0 = sf.color;
        } else if (sf.shape != common || (yuv && !(sf.color == color0))) {
          if (f.semantics == Semantics::kRerun041) {  // rerun 0.41: a window it cannot stack is None
            ok = false;
            break;
          }
          return Status::InvalidArgument("field '" + f.key + "' (column '" + f.path + "') at segment '" +
                                         segment_ids_[static_cast<size_t>(out->segment_pos[static_cast<size_t>(i)])] +
                                         "', " + options_.index + "=" +
                                         std::to_string(out->values[static_cast<size_t>(i)]) +
                                         ": varying frame sizes or colour metadata within the window");
        }
      }
      if (!ok) {
        ++missing;
        counters.missing_not_decoded.fetch_add(1);
        if (f.semantics == Semantics::kRerun041) ++out->stats.undecodable;
        continue;
      }
      valid[static_cast<size_t>(i)] = 1;
      sample_shape[static_cast<size_t>(i)] = common;
      if (common != st.predicted) all_direct = false;
    }
    // (Frames in buffers of their own but of the predicted size are copied into place below.)
    out->stats.missing += missing;
    counters.slots_filled.fetch_add((n - missing) * T);

    // The sample's shape: RGB [(T,) 3, H, W]; YUV the Y planes' [(T,) 1, H, W] (its UV planes
    // [(T,) 2, h, w] follow them, see FrameLayout).
    auto shape_of = [&](uint64_t packed) {
      std::vector<int64_t> shape{yuv ? 1 : 3, ShapeHeight(packed), ShapeWidth(packed)};
      if (f.window) shape.insert(shape.begin(), T);
      return shape;
    };
    fo.dtype = decode::DType::kUInt8;
    fo.valid = valid;
    fo.yuv = yuv;
    fo.offsets.assign(static_cast<size_t>(n), 0);
    fo.shapes.assign(static_cast<size_t>(n), {});
    if (yuv) {
      fo.color_space.assign(static_cast<size_t>(n), 0);
      fo.color_range.assign(static_cast<size_t>(n), 0);
      for (int64_t i = 0; i < n; ++i) {
        if (!valid[static_cast<size_t>(i)]) continue;
        const decode::VideoColor c = slot_frame(static_cast<size_t>(i * T)).color;
        fo.color_space[static_cast<size_t>(i)] = static_cast<uint8_t>(c.space);
        fo.color_range[static_cast<size_t>(i)] = static_cast<uint8_t>(c.range);
      }
    }
    if (all_direct && st.data != nullptr) {
      // Frames are in place at their first slot (or, of the predicted size, in a buffer of
      // their own); copy them to the other slots that want them, before zeroing missing
      // samples, whose slots may hold frames others need.
      const int64_t per_sample = st.layout.sample_bytes();
      for (int64_t i = 0; i < n; ++i) {
        if (!valid[static_cast<size_t>(i)]) continue;
        for (int64_t t = 0; t < T; ++t) {
          const SlotFrame sf = slot_frame(static_cast<size_t>(i * T + t));
          st.layout.CopyFrame(sf.first, sf.second, st.data.get() + i * per_sample, t);
        }
      }
      for (int64_t i = 0; i < n; ++i) {
        if (!valid[static_cast<size_t>(i)]) {
          std::memset(st.data.get() + i * per_sample, 0, static_cast<size_t>(per_sample));
        }
        fo.offsets[static_cast<size_t>(i)] = i * per_sample;
        fo.shapes[static_cast<size_t>(i)] = shape_of(st.predicted);
      }
      fo.uniform = true;
      fo.data = st.data;
      fo.nbytes = n * per_sample;
    } else {
      uint64_t common = 0;
      bool uniform = true;
      for (int64_t i = 0; i < n; ++i) {
        if (!valid[static_cast<size_t>(i)]) continue;
        if (common == 0) {
          common = sample_shape[static_cast<size_t>(i)];
        } else if (sample_shape[static_cast<size_t>(i)] != common) {
          uniform = false;
        }
      }
      fo.uniform = uniform && common != 0;
      int64_t total = 0;
      for (int64_t i = 0; i < n; ++i) {
        const bool ok = valid[static_cast<size_t>(i)] != 0;
        const uint64_t packed = ok ? sample_shape[static_cast<size_t>(i)] : (fo.uniform ? common : 0);
        fo.offsets[static_cast<size_t>(i)] = total;
        if (packed != 0) {
          fo.shapes[static_cast<size_t>(i)] = shape_of(packed);
          total += FrameLayout::Of(st.format, packed, T).sample_bytes();
        }
      }
      fo.data = buffers_->Allocate(std::max<int64_t>(total, 1));
      fo.nbytes = total;
      for (int64_t i = 0; i < n; ++i) {
        uint8_t* dst = fo.data.get() + fo.offsets[static_cast<size_t>(i)];
        if (!valid[static_cast<size_t>(i)]) {
          if (fo.uniform) {
            std::memset(dst, 0, static_cast<size_t>(FrameLayout::Of(st.format, common, T).sample_bytes()));
          }
          continue;
        }
        const FrameLayout layout = FrameLayout::Of(st.format, sample_shape[static_cast<size_t>(i)], T);
        for (int64_t t = 0; t < T; ++t) {
          const SlotFrame sf = slot_frame(static_cast<size_t>(i * T + t));
          layout.CopyFrame(sf.first, sf.second, dst, t);
        }
      }
    }
    out->stats.bytes_out += fo.nbytes;
  }
  return Status::OK();
}

Result<std::vector<int64_t>> Engine::VideoKeyframes(size_t field, int32_t segment) const {
  if (field >= fields_.size() || fields_[field].kind != FieldKind::kVideo) {
    return Status::InvalidArgument("field number " + std::to_string(field) + " is not a video field");
  }
  if (segment < 0 || static_cast<size_t>(segment) >= segment_ids_.size()) {
    return Status::InvalidArgument("segment number " + std::to_string(segment) + " out of range");
  }
  const FieldSpec& f = fields_[field];
  const VideoPrepared& vp = video_prepared_[field];
  VideoFieldCounters& counters = *video_counters_[field];
  const std::string where =
      "field '" + f.key + "' (column '" + f.path + "') at segment '" + segment_ids_[static_cast<size_t>(segment)] + "'";
  const std::string key = VideoKey(field, segment);
  std::vector<std::shared_ptr<const chunk::Chunk>> keep_alive;
  bool built = false;
  auto index = video_indexes_->GetOrBuild(key, [&]() -> Result<std::shared_ptr<const VideoIndex>> {
    built = true;
    auto seg = SegmentFor(segment, vp.columns.sample.entity_path);
    if (!seg.ok()) return seg.status().WithPrefix(where);
    if (*seg != nullptr && dataset_->WantsPrefetch()) {
      // The chunks the index is created from, in one batch (as a block's prefetch does).
      const VideoIndexLayout layout = LayoutVideoIndex(**seg, options_.index, vp.columns);
      catalog::ChunkWant want{*seg, layout.setup};
      for (size_t c : layout.setup_clusters) {
        want.chunks.insert(want.chunks.end(), layout.clusters[c].chunks.begin(), layout.clusters[c].chunks.end());
      }
      std::sort(want.chunks.begin(), want.chunks.end());
      want.chunks.erase(std::unique(want.chunks.begin(), want.chunks.end()), want.chunks.end());
      RRL_RETURN_IF_ERROR(dataset_->Prefetch({want}, &keep_alive));
    }
    return CreateVideoIndex(*seg, dataset_->cache(), options_.index, vp.columns, vp.fallback_codec, where);
  });
  if (!index.ok()) return index.status();
  const VideoIndex& vi = **index;
  if (built) {
    counters.streams_indexed.fetch_add(1);
    counters.clusters_loaded.fetch_add(vi.clusters_loaded());
    counters.keyframes_rejected.fetch_add(vi.keyframes_rejected());
  }
  keep_alive.clear();
  std::vector<int64_t> out;
  for (size_t c = 0; c < vi.clusters.size(); ++c) {
    std::shared_ptr<const VideoClusterPackets> packets = vi.Loaded(c);
    if (packets == nullptr) {
      // One cluster's chunks at a time: a remote stream is never held whole.
      if (dataset_->WantsPrefetch()) {
        std::vector<size_t> chunks(vi.ChunksOf(c).begin(), vi.ChunksOf(c).end());
        RRL_RETURN_IF_ERROR(dataset_->Prefetch({catalog::ChunkWant{vi.segment, std::move(chunks)}}, &keep_alive));
      }
      bool newly = false;
      auto loaded = vi.Load(c, dataset_->cache(), &newly);
      if (!loaded.ok()) return loaded.status();
      if (newly) {
        counters.clusters_loaded.fetch_add(1);
        counters.keyframes_rejected.fetch_add((*loaded)->keyframes_rejected);
      }
      packets = *loaded;
      keep_alive.clear();
    }
    for (size_t k = 0; k < packets->times.size(); ++k) {
      if (packets->keyframe[k]) out.push_back(packets->times[k]);
    }
  }
  video_indexes_->Resize(key);
  // Clusters are disjoint in time and their packets in stream order, so this is sorted
  // already; sorting keeps the promise whatever a cluster's internal order.
  std::sort(out.begin(), out.end());
  return out;
}

void Engine::BeginVideoPass() const {
  for (const auto& decoder : video_decoders_) {
    if (decoder != nullptr) decoder->BeginPass();
  }
}

Result<VideoFieldStats> Engine::VideoStats(size_t field) const {
  if (field >= fields_.size() || fields_[field].kind != FieldKind::kVideo || video_decoders_[field] == nullptr) {
    return Status::InvalidArgument("field number " + std::to_string(field) + " is not a video field");
  }
  const decode::VideoStats d = video_decoders_[field]->stats();
  const VideoFieldCounters& c = *video_counters_[field];
  VideoFieldStats s;
  s.frames_decoded = d.frames_decoded;
  s.frames_delivered = d.frames_delivered;
  s.gops_started = d.gops_started;
  s.sessions_recycled = d.sessions_recycled;
  s.session_hits = d.session_hits;
  s.session_misses = d.session_misses;
  s.bytes_cached = d.bytes_cached;
  s.sessions_cached = d.sessions_cached;
  s.slots_filled = c.slots_filled.load();
  s.gop_requests = c.gop_requests.load();
  s.missing_no_keyframe = c.missing_no_keyframe.load();
  s.missing_before_first_packet = c.missing_before_first_packet.load();
  s.missing_not_decoded = c.missing_not_decoded.load();
  s.streams_indexed = c.streams_indexed.load();
  s.clusters_loaded = c.clusters_loaded.load();
  s.keyframes_rejected = c.keyframes_rejected.load();
  return s;
}

}  // namespace rrl::engine
