// rrloader/engine/engine.cc — fetch and decode stages of a block.
#include "rrloader/engine/engine.h"

#include <arrow/array.h>
#include <arrow/array/util.h>
#include <arrow/scalar.h>
#include <arrow/table.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <set>

namespace rrl::engine {

namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string EntityOf(const std::string& path) {
  return path.substr(0, path.find(':'));
}

// SiblingPath: the column of another component of the same entity and archetype:
// ("/cam:Image:buffer", "format") → "/cam:Image:format". A name containing ':' is taken as a
// full column name.
std::string SiblingPath(const std::string& path, const std::string& component) {
  if (component.find(':') != std::string::npos) return component;
  const auto last = path.rfind(':');
  return path.substr(0, last + 1) + component;
}

bool IsImageBufferPath(const std::string& path) {
  const auto first = path.find(':');
  return first != std::string::npos && path.compare(first, std::string::npos, ":Image:buffer") == 0;
}

// InstanceType: the element type of a component column (List<T> → T).
std::shared_ptr<arrow::DataType> InstanceType(const std::shared_ptr<arrow::DataType>& col_type) {
  if (col_type->id() == arrow::Type::LIST || col_type->id() == arrow::Type::LARGE_LIST) {
    return col_type->field(0)->type();
  }
  return col_type;
}

bool IsBlobType(const arrow::DataType& t) {
  if (t.id() == arrow::Type::BINARY || t.id() == arrow::Type::LARGE_BINARY) return true;
  if (t.id() == arrow::Type::LIST || t.id() == arrow::Type::LARGE_LIST) {
    return t.field(0)->type()->id() == arrow::Type::UINT8;
  }
  return false;
}

// BlobBytes: the bytes of one blob instance `i` of `a` (List<UInt8> or Binary).
void BlobBytes(const arrow::Array& a, int64_t i, const uint8_t** data, int64_t* size) {
  switch (a.type_id()) {
    case arrow::Type::BINARY: {
      const auto& b = static_cast<const arrow::BinaryArray&>(a);
      int32_t len = 0;
      *data = b.GetValue(i, &len);
      *size = len;
      return;
    }
    case arrow::Type::LARGE_BINARY: {
      const auto& b = static_cast<const arrow::LargeBinaryArray&>(a);
      int64_t len = 0;
      *data = b.GetValue(i, &len);
      *size = len;
      return;
    }
    case arrow::Type::LIST: {
      const auto& l = static_cast<const arrow::ListArray&>(a);
      const auto& v = static_cast<const arrow::UInt8Array&>(*l.values());
      *data = v.raw_values() + l.value_offset(i);
      *size = l.value_length(i);
      return;
    }
    default: {
      const auto& l = static_cast<const arrow::LargeListArray&>(a);
      const auto& v = static_cast<const arrow::UInt8Array&>(*l.values());
      *data = v.raw_values() + l.value_offset(i);
      *size = l.value_length(i);
      return;
    }
  }
}

// CellBlob: the bytes of a blob cell: its one instance in place, or several instances
// concatenated into `scratch` (as the reference does). False when the cell has no bytes.
bool CellBlob(const decode::Span& cell, std::vector<uint8_t>* scratch, const uint8_t** data, int64_t* size) {
  if (cell.length == 0) return false;
  if (cell.length == 1) {
    if (cell.array->IsNull(cell.offset)) return false;
    BlobBytes(*cell.array, cell.offset, data, size);
    return *size > 0;
  }
  scratch->clear();
  for (int64_t k = cell.offset; k < cell.offset + cell.length; ++k) {
    if (cell.array->IsNull(k)) return false;
    const uint8_t* d = nullptr;
    int64_t n = 0;
    BlobBytes(*cell.array, k, &d, &n);
    scratch->insert(scratch->end(), d, d + n);
  }
  *data = scratch->data();
  *size = static_cast<int64_t>(scratch->size());
  return *size > 0;
}

// IntField: an integer struct field of element `i`; false when absent or null.
bool IntField(const arrow::StructArray& s, const char* name, int64_t i, int64_t* out) {
  auto f = s.GetFieldByName(name);
  if (f == nullptr || f->IsNull(i)) return false;
  switch (f->type_id()) {
    case arrow::Type::UINT8: *out = static_cast<const arrow::UInt8Array&>(*f).Value(i); return true;
    case arrow::Type::UINT16: *out = static_cast<const arrow::UInt16Array&>(*f).Value(i); return true;
    case arrow::Type::UINT32: *out = static_cast<const arrow::UInt32Array&>(*f).Value(i); return true;
    case arrow::Type::UINT64:
      *out = static_cast<int64_t>(static_cast<const arrow::UInt64Array&>(*f).Value(i));
      return true;
    case arrow::Type::INT32: *out = static_cast<const arrow::Int32Array&>(*f).Value(i); return true;
    case arrow::Type::INT64: *out = static_cast<const arrow::Int64Array&>(*f).Value(i); return true;
    default: return false;
  }
}

std::string FormatValue(int64_t v) {
  return std::to_string(v);
}

}  // namespace

// Prepared: what Make resolved for a field.
struct Engine::Prepared {
  ColumnRef column;
  std::shared_ptr<arrow::DataType> column_type;  // List<T>
  std::vector<ColumnRef> join_columns;
  ColumnRef format_column;
  std::optional<decode::Selector> selector;
  decode::DType dtype = decode::DType::kFloat32;  // numeric output type
  std::vector<std::string> join_paths;            // full column names
  std::vector<decode::DType> join_dtypes;
  bool raw_image = false;            // Image:buffer + Image:format
  std::string format_path;           // for raw_image
  decode::ImageLimits image_limits;  // the engine's, with the field's palette rule
  std::set<std::string> entities;
};

int64_t SampleBytes(const FieldOutput& fo, size_t i) {
  const std::vector<int64_t>& shape = fo.shapes[i];
  if (shape.empty()) return 0;
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  if (!fo.yuv) return count * decode::DTypeSize(fo.dtype);
  // [(T,) 1, H, W] Y planes, then [(T,) 2, ceil(H/2), ceil(W/2)] UV planes.
  const auto h = static_cast<int>(shape[shape.size() - 2]), w = static_cast<int>(shape.back());
  return count / (int64_t{h} * w) * (decode::Yuv420LumaBytes(h, w) + decode::Yuv420ChromaBytes(h, w));
}

Result<std::shared_ptr<Engine>> Engine::Make(std::shared_ptr<const catalog::Dataset> dataset,
                                             std::vector<std::string> segment_ids, sample::SampleIndex samples,
                                             std::vector<FieldSpec> fields, EngineOptions options) {
  std::map<std::string, std::shared_ptr<arrow::DataType>> types;
  std::map<std::string, ColumnRef> refs;
  for (const auto& c : dataset->columns()) {
    types[c.name] = c.info.type;
    refs[c.name] = ColumnRef{c.info.entity_path, c.info.component};
  }
  const auto kind_it = dataset->timelines().find(options.index);
  if (kind_it == dataset->timelines().end()) {
    return Status::NotFound("index '" + options.index + "' is not a timeline of the dataset");
  }
  auto column_type = [&](const FieldSpec& f, const std::string& path) -> Result<std::shared_ptr<arrow::DataType>> {
    const auto it = types.find(path);
    if (it == types.end()) {
      return Status::NotFound("field '" + f.key + "': column '" + path + "' is not in the dataset");
    }
    return it->second;
  };
  auto engine = std::shared_ptr<Engine>(new Engine());
  engine->video_prepared_.resize(fields.size());
  for (const FieldSpec& f : fields) {
    auto p = std::make_shared<Prepared>();
    auto type_r = column_type(f, f.path);
    if (!type_r.ok()) return type_r.status();
    std::shared_ptr<arrow::DataType> instance = InstanceType(*type_r);
    p->entities.insert(EntityOf(f.path));
    p->column = refs[f.path];
    p->column_type = *type_r;
    p->image_limits = options.image_limits;
    p->image_limits.palette_indices = f.semantics == Semantics::kRerun041;
    if (f.window && f.window->empty()) {
      return Status::InvalidArgument("field '" + f.key + "': a window needs at least one offset");
    }
    if (!f.select.empty()) {
      auto sel = decode::Selector::Parse(f.select);
      if (!sel.ok()) return sel.status().WithPrefix("field '" + f.key + "'");
      auto selected = sel->Check(instance);
      if (!selected.ok()) return selected.status().WithPrefix("field '" + f.key + "' (column '" + f.path + "')");
      p->selector = std::move(*sel);
      instance = *selected;
    }
    switch (f.kind) {
      case FieldKind::kNumeric: {
        auto dt = decode::LeafDType(*instance);
        if (!dt.ok()) return dt.status().WithPrefix("field '" + f.key + "' (column '" + f.path + "', NumericDecoder)");
        p->dtype = *dt;
        if (!f.join.empty() && p->selector) {
          return Status::InvalidArgument("field '" + f.key + "': join and select cannot be combined");
        }
        if (!f.join.empty() && f.semantics != Semantics::kSeed) {
          return Status::InvalidArgument("field '" + f.key + "': join is an rrloader.dataloader (seed API) option");
        }
        for (const auto& j : f.join) {
          const std::string jp = SiblingPath(f.path, j);
          if (EntityOf(jp) != EntityOf(f.path)) {
            return Status::InvalidArgument("field '" + f.key + "': joined column '" + jp +
                                           "' is not on the entity of '" + f.path + "'");
          }
          auto jt = column_type(f, jp);
          if (!jt.ok()) return jt.status();
          auto jd = decode::LeafDType(*InstanceType(*jt));
          if (!jd.ok()) return jd.status().WithPrefix("field '" + f.key + "' (joined column '" + jp + "')");
          p->join_paths.push_back(jp);
          p->join_columns.push_back(refs[jp]);
          p->join_dtypes.push_back(*jd);
          p->dtype = decode::PromoteDTypes(p->dtype, *jd);
        }
        break;
      }
      case FieldKind::kImage: {
        if (!f.join.empty()) return Status::InvalidArgument("field '" + f.key + "': join needs NumericDecoder");
        if (IsImageBufferPath(f.path) && !p->selector) {
          p->raw_image = true;
          p->format_path = SiblingPath(f.path, "format");
          auto ft = column_type(f, p->format_path);
          if (ft.ok()) p->format_column = refs[p->format_path];
          if (!ft.ok()) {
            return Status::NotFound("field '" + f.key + "': raw image column '" + f.path +
                                    "' needs its format column '" + p->format_path + "', which is not in the dataset");
          }
        } else if (!IsBlobType(*instance)) {
          return Status::InvalidArgument("field '" + f.key +
                                         "': ImageDecoder needs a blob column (EncodedImage:blob "
                                         "or Image:buffer), but '" +
                                         f.path + "' holds " + instance->ToString());
        }
        p->dtype = decode::DType::kUInt8;
        break;
      }
      case FieldKind::kVideo: {
        if (!f.join.empty()) return Status::InvalidArgument("field '" + f.key + "': join needs NumericDecoder");
        if (p->selector) {
          return Status::InvalidArgument("field '" + f.key +
                                         "': VideoFrameDecoder fields take no selector (decode every sample of "
                                         "the stream; select on other columns)");
        }
        if (!IsBlobType(*instance)) {
          return Status::InvalidArgument("field '" + f.key +
                                         "': VideoFrameDecoder needs a VideoStream sample column (blobs), but '" +
                                         f.path + "' holds " + instance->ToString());
        }
        VideoPrepared vp;
        const std::string entity = EntityOf(f.path);
        const std::string sample_component = f.path.substr(entity.size() + 1);
        vp.columns.sample = refs[f.path];
        const std::string archetype_prefix = sample_component.substr(0, sample_component.rfind(':') + 1);
        vp.columns.keyframe_component = archetype_prefix + "is_keyframe";
        vp.columns.codec_component = archetype_prefix + "codec";
        if (!f.video.codec.empty()) {
          auto c = decode::ParseVideoCodec(f.video.codec);
          if (!c.ok()) return c.status().WithPrefix("field '" + f.key + "' (VideoFrameDecoder codec)");
          vp.fallback_codec = *c;
          vp.codec_overrides = f.video.codec_overrides;
        } else if (f.video.codec_overrides) {
          return Status::InvalidArgument("field '" + f.key + "': codec_overrides needs a codec");
        }
        const std::string codec_path = SiblingPath(f.path, "codec");
        if (!vp.fallback_codec && types.find(codec_path) == types.end()) {
          return Status::InvalidArgument("field '" + f.key + "': the dataset has no codec column '" + codec_path +
                                         "' for '" + f.path + "'; pass VideoFrameDecoder(codec=...)");
        }
        if (f.video.size.resize() != (f.video.size.height != 0 || f.video.size.width != 0) || f.video.size.height < 0 ||
            f.video.size.width < 0) {
          return Status::InvalidArgument("field '" + f.key + "': size must be (height, width), both positive");
        }
        if (f.video.session_cache_bytes < 0) {
          return Status::InvalidArgument("field '" + f.key + "': session_cache_bytes must be >= 0");
        }
        if (f.video.threads < 0 || f.video.threads > 64) {
          return Status::InvalidArgument("field '" + f.key +
                                         "': decoder threads must be 0..64 (0: libavcodec chooses)");
        }
        if (f.video.max_sessions < -1) {
          return Status::InvalidArgument("field '" + f.key + "': max_sessions must be >= 0 (or -1: no bound)");
        }
        if (f.video.output_format == decode::VideoOutputFormat::kYuv420 && f.video.size.resize()) {
          return Status::InvalidArgument("field '" + f.key + "': YUV 4:2:0 output takes no resize");
        }
        p->dtype = decode::DType::kUInt8;
        engine->video_prepared_[engine->prepared_.size()] = std::move(vp);
        break;
      }
      case FieldKind::kRaw:
        if (!f.join.empty()) return Status::InvalidArgument("field '" + f.key + "': join needs NumericDecoder");
        break;
    }
    engine->prepared_.push_back(std::move(p));
  }
  engine->video_decoders_.resize(fields.size());
  engine->video_counters_.resize(fields.size());
  if (options.cpu_budget < 0) return Status::InvalidArgument("cpu_budget must be >= 0");
  // Under a CPU budget a session's libavcodec threads count against it: at most the budget
  // (0, "libavcodec chooses", becomes the budget), and a pool task weighs as many slots.
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int task_weight = 1;
  for (auto& f : fields) {
    if (f.kind != FieldKind::kVideo) continue;
    if (options.cpu_budget > 0) {
      f.video.threads = f.video.threads == 0 ? options.cpu_budget : std::min(f.video.threads, options.cpu_budget);
    }
    task_weight =
        std::max(task_weight, f.video.threads == 0 ? std::min(hardware + 1, kVideoAutoThreads) : f.video.threads);
  }
  for (size_t fi = 0; fi < fields.size(); ++fi) {
    if (fields[fi].kind != FieldKind::kVideo) continue;
    decode::VideoFrameDecoderOptions vo;
    vo.session_cache_bytes = fields[fi].video.session_cache_bytes;
    vo.max_sessions = fields[fi].video.max_sessions;
    vo.decoder.threads = fields[fi].video.threads;
    vo.decoder.reject_reordering = true;  // see VideoDecoderOptions: samples sorted by time
    // A window's frames overlap the previous block's by up to its span in grid steps: keep
    // that many, so sequential windows decode each frame once.
    const auto& window = fields[fi].window;
    int64_t span = 1;
    if (window) {
      const auto [lo, hi] = std::minmax_element(window->begin(), window->end());
      span = (*hi - *lo) / std::max<int64_t>(options.grid_step, 1) + 1;
    }
    vo.decoder.kept_frames = static_cast<int>(std::clamp<int64_t>(span, 1, 1024));
    engine->video_decoders_[fi] = std::make_unique<decode::VideoFrameDecoder>(vo);
    engine->video_counters_[fi] = std::make_unique<VideoFieldCounters>();
  }
  if (options.video_index_cache_bytes < 0) {
    return Status::InvalidArgument("video_index_cache_bytes must be >= 0");
  }
  engine->video_indexes_ = std::make_unique<VideoIndexCache>(options.video_index_cache_bytes);
  {
    const std::vector<std::string> known = dataset->SegmentIds();
    for (const auto& id : segment_ids) {
      if (!std::binary_search(known.begin(), known.end(), id)) {
        return Status::NotFound("no segment '" + id + "' in the dataset");
      }
    }
  }
  engine->dataset_ = std::move(dataset);
  engine->segment_ids_ = std::move(segment_ids);
  engine->samples_ = std::move(samples);
  engine->fields_ = std::move(fields);
  engine->options_ = std::move(options);
  engine->budget_ = std::make_unique<ThreadBudget>(engine->options_.cpu_budget);
  int pool_threads = engine->options_.num_threads > 0 ? engine->options_.num_threads : hardware;
  if (engine->options_.cpu_budget > 0) {
    pool_threads = std::clamp(pool_threads, 1, std::max(1, engine->options_.cpu_budget / task_weight));
  }
  engine->task_weight_ = task_weight;
  engine->pool_ =
      std::make_unique<ThreadPool>(pool_threads, engine->options_.thread_nice, engine->budget_.get(), task_weight);
  engine->buffers_ = BufferPool::Make(engine->options_.buffer_pool_bytes);
  return engine;
}

Result<std::shared_ptr<const store::Segment>> Engine::SegmentFor(int32_t seg, const std::string& entity_path) const {
  if (seg < 0 || static_cast<size_t>(seg) >= segment_ids_.size()) {
    return Status::Internal("segment number " + std::to_string(seg) + " out of range");
  }
  return dataset_->EntitySegment(segment_ids_[static_cast<size_t>(seg)], entity_path);
}

bool Engine::PrefetchesSegments() const {
  return dataset_->WantsPrefetch() && segment_ids_.size() >= static_cast<size_t>(kSegmentLookaheadMinSegments);
}

Status Engine::PrefetchSegments(const std::vector<int64_t>& global, std::vector<char>* seen) const {
  seen->resize(segment_ids_.size(), 0);
  std::vector<std::string> ids;
  for (const int64_t g : global) {
    int32_t sp = 0;
    int64_t v = 0;
    if (!samples_.Locate(g, &sp, &v).ok()) continue;  // Fetch reports it
    const int32_t seg = samples_.segments()[static_cast<size_t>(sp)].segment;
    if (seg < 0 || static_cast<size_t>(seg) >= seen->size() || (*seen)[static_cast<size_t>(seg)]) continue;
    (*seen)[static_cast<size_t>(seg)] = 1;
    ids.push_back(segment_ids_[static_cast<size_t>(seg)]);
  }
  return ids.empty() ? Status::OK() : dataset_->PrefetchSegments(ids);
}

Result<FetchedBlock> Engine::Fetch(const std::vector<int64_t>& global, LatestAtMemo* memo) const {
  return FetchBlock(global, memo, /*chunks_only=*/false);
}

Status Engine::PrefetchChunks(const std::vector<int64_t>& global,
                              std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive) const {
  if (!dataset_->WantsPrefetch() || global.empty()) return Status::OK();
  auto fb = FetchBlock(global, nullptr, /*chunks_only=*/true);
  if (!fb.ok()) return fb.status();
  chunks_fetched_ahead_.fetch_add(static_cast<int64_t>(fb->keep_alive.size()));
  for (auto& ch : fb->keep_alive) keep_alive->push_back(std::move(ch));
  return Status::OK();
}

Result<FetchedBlock> Engine::FetchBlock(const std::vector<int64_t>& global, LatestAtMemo* memo,
                                        bool chunks_only) const {
  // A local fetch computes (reads mapped files, resolves latest-at) and holds a CPU slot; a
  // remote one mostly waits on the network, and must not keep the decode stage off the CPU.
  ThreadBudget::Busy busy(dataset_->WantsPrefetch() ? nullptr : budget_.get());
  FetchedBlock fb;
  fb.stats.fetch_start_ns = NowNs();
  const size_t n = global.size();
  if (!chunks_only) {
    samples_fetched_.fetch_add(static_cast<int64_t>(n));
    blocks_fetched_.fetch_add(1);
  }
  fb.global = global;
  fb.segment_pos.resize(n);
  fb.values.resize(n);
  for (size_t i = 0; i < n; ++i) {
    int32_t sp = 0;
    int64_t v = 0;
    Status st = samples_.Locate(global[i], &sp, &v);
    if (!st.ok()) return st;
    fb.segment_pos[i] = samples_.segments()[static_cast<size_t>(sp)].segment;
    fb.values[i] = v;
  }
  // Samples by segment, so each (segment, column) is resolved once for the whole block.
  std::map<int32_t, std::vector<size_t>> samples_by_segment;
  for (size_t i = 0; i < n; ++i) samples_by_segment[fb.segment_pos[i]].push_back(i);
  // Every (segment, entity) the block reads, asked for at once: a remote dataset fetches
  // the missing manifests concurrently instead of one per column lookup.
  BlockSegments block_segments;
  {
    std::vector<std::pair<int32_t, std::string>> wanted;
    for (const auto& p : prepared_) {
      std::set<std::string> entities{p->column.entity_path};
      for (const auto& jc : p->join_columns) entities.insert(jc.entity_path);
      if (p->raw_image) entities.insert(p->format_column.entity_path);
      for (const auto& [seg, _] : samples_by_segment) {
        for (const auto& e : entities) {
          if (block_segments.emplace(std::make_pair(seg, e), nullptr).second) wanted.emplace_back(seg, e);
        }
      }
    }
    std::vector<catalog::EntityKey> keys;
    keys.reserve(wanted.size());
    for (const auto& [seg, e] : wanted) {
      if (seg < 0 || static_cast<size_t>(seg) >= segment_ids_.size()) {
        return Status::Internal("segment number " + std::to_string(seg) + " out of range");
      }
      keys.emplace_back(segment_ids_[static_cast<size_t>(seg)], e);
    }
    auto segments = dataset_->EntitySegments(keys);
    if (!segments.ok()) return segments.status();
    for (size_t k = 0; k < wanted.size(); ++k) block_segments[wanted[k]] = (*segments)[k];
  }
  // The index values the slots of field f read for `members`, sample-major.
  auto slot_values = [&](const FieldSpec& f, const std::vector<size_t>& members) {
    std::vector<int64_t> vals;
    vals.reserve(members.size() * static_cast<size_t>(Slots(f)));
    for (size_t i : members) {
      if (!f.window) {
        vals.push_back(fb.values[i]);
        continue;
      }
      for (int64_t off : *f.window) vals.push_back(fb.values[i] + off);
    }
    return vals;
  };
  auto segment_of = [&](int32_t seg, const std::string& entity) -> Result<std::shared_ptr<const store::Segment>> {
    auto found = block_segments.find({seg, entity});
    if (found != block_segments.end() && found->second != nullptr) return found->second;
    return SegmentFor(seg, entity);
  };
  // Every (field, segment, column) lookup of the block's non-video fields, with the values
  // it reads (worked out on first use): what the chunks the block can read are found from
  // (latest_at.h's LatestAtChunks), before anything is resolved.
  using Values = std::function<const std::vector<int64_t>&()>;
  using ColumnVisit =
      std::function<Status(const ColumnRef&, const std::shared_ptr<const store::Segment>&, const Values&)>;
  auto each_lookup = [&](const ColumnVisit& visit) -> Status {
    for (size_t fi = 0; fi < fields_.size(); ++fi) {
      const FieldSpec& f = fields_[fi];
      if (f.kind == FieldKind::kVideo) continue;
      const Prepared& p = *prepared_[fi];
      std::vector<const ColumnRef*> cols{&p.column};
      for (const auto& jc : p.join_columns) cols.push_back(&jc);
      if (p.raw_image) cols.push_back(&p.format_column);
      for (const auto& [seg, members] : samples_by_segment) {
        std::optional<std::vector<int64_t>> vals;
        const Values values = [&, &members = members]() -> const std::vector<int64_t>& {
          if (!vals) vals = slot_values(f, members);
          return *vals;
        };
        for (const ColumnRef* col : cols) {
          auto segment = segment_of(seg, col->entity_path);
          if (!segment.ok()) return segment.status().WithPrefix("field '" + f.key + "' (column '" + f.path + "')");
          RRL_RETURN_IF_ERROR(visit(*col, *segment, values));
        }
      }
    }
    return Status::OK();
  };
  // A dataset whose chunks are far away gets every chunk the block can read: the latest-at
  // candidates of each column and the chunks new video streams are indexed from, in one
  // Prefetch (a few batched calls). The video clusters follow in FetchVideo's rounds.
  if (dataset_->WantsPrefetch()) {
    std::map<const store::Segment*, std::pair<std::shared_ptr<const store::Segment>, std::set<size_t>>> wants;
    RRL_RETURN_IF_ERROR(each_lookup(
        [&](const ColumnRef& col, const std::shared_ptr<const store::Segment>& segment, const Values& values) {
          // Every chunk of the column already held by this fetch thread's memo: nothing to ask for.
          if (memo != nullptr && memo->HoldAll(segment, col, &fb.keep_alive)) return Status::OK();
          auto& w = wants[segment.get()];
          w.first = segment;
          for (size_t i : LatestAtChunks(*segment, options_.index, col, values())) w.second.insert(i);
          return Status::OK();
        }));
    VideoSetupWants(samples_by_segment, block_segments, &wants);
    std::vector<catalog::ChunkWant> list;
    for (auto& [_, w] : wants) {
      if (chunks_only) {  // ahead of the fetch thread: what is cached now is its to find
        const store::ChunkCache& cache = dataset_->cache();
        for (auto it = w.second.begin(); it != w.second.end();) {
          const std::string& key = w.first->chunks()[*it].cache_key;
          it = !key.empty() && cache.Contains(key) ? w.second.erase(it) : std::next(it);
        }
      }
      if (!w.second.empty()) list.push_back({w.first, std::vector<size_t>(w.second.begin(), w.second.end())});
    }
    RRL_RETURN_IF_ERROR(dataset_->Prefetch(list, &fb.keep_alive));
    if (chunks_only) return fb;
  } else if (memo != nullptr && pool_->num_threads() > 1) {
    // A local dataset's chunks the block will read and nobody has loaded yet are read and
    // decoded on the pool, in parallel, before the lookups below find them cached. This is
    // the cold start over many segments: a shuffled block then loads about one small chunk
    // per sample (pread, LZ4, Arrow IPC, the column's TimeIndex: ~75 us for 4 KiB), one
    // after the other on the fetch thread while the other cores idle. (segment, column)s
    // whose chunks the fetch thread's memo holds (the steady state) cost one lookup here.
    struct Load {
      std::shared_ptr<const store::Segment> segment;
      size_t chunk;
      const ColumnRef* column;
    };
    std::vector<Load> loads;
    std::set<std::pair<const store::Segment*, size_t>> seen;
    store::ChunkCache& cache = dataset_->cache();
    RRL_RETURN_IF_ERROR(each_lookup(
        [&](const ColumnRef& col, const std::shared_ptr<const store::Segment>& segment, const Values& values) {
          if (memo->HoldAll(segment, col, nullptr)) return Status::OK();
          for (size_t i : LatestAtChunks(*segment, options_.index, col, values())) {
            const std::string& key = segment->chunks()[i].cache_key;
            if (key.empty() || cache.Contains(key) || !seen.emplace(segment.get(), i).second) continue;
            loads.push_back({segment, i, &col});
          }
          return Status::OK();
        }));
    if (loads.size() > 1) {
      std::vector<std::shared_ptr<const chunk::Chunk>> warmed(loads.size());
      pool_->ParallelFor(static_cast<int64_t>(loads.size()), [&](int64_t k, int) {
        const Load& load = loads[static_cast<size_t>(k)];
        auto ch = load.segment->LoadChunk(load.chunk, cache);
        // A chunk that fails to load is left to the lookup below, which loads it again and
        // reports the error with its field.
        if (!ch.ok()) return;
        if ((*ch)->FindTimeline(options_.index) != nullptr && (*ch)->FindComponent(load.column->component) != nullptr) {
          (void)cache.Index(*ch, options_.index, load.column->component);
        }
        warmed[static_cast<size_t>(k)] = std::move(*ch);
      });
      for (auto& ch : warmed) {
        if (ch == nullptr) continue;
        fb.keep_alive.push_back(std::move(ch));
        ++fb.stats.chunks_preloaded;
      }
    }
  }
  fb.fields.resize(fields_.size());
  bool any_video = false;
  for (size_t fi = 0; fi < fields_.size(); ++fi) {
    const FieldSpec& f = fields_[fi];
    const Prepared& p = *prepared_[fi];
    auto& fc = fb.fields[fi];
    fc.slots = Slots(f);
    if (f.kind == FieldKind::kVideo) {
      any_video = true;
      continue;  // all video fields at once, below
    }
    const int64_t T = fc.slots;
    // One (segment, column) lookup after the other; the buffers are reused (a shuffled block
    // has about one lookup per sample).
    std::vector<int64_t> vals;
    std::vector<CellRef> cells;
    auto resolve = [&](const ColumnRef& col, std::vector<CellRef>* out) -> Status {
      out->assign(n * static_cast<size_t>(T), CellRef{});
      for (const auto& [seg, members] : samples_by_segment) {
        vals.clear();
        for (size_t i : members) {
          if (!f.window) {
            vals.push_back(fb.values[i]);
            continue;
          }
          for (int64_t off : *f.window) vals.push_back(fb.values[i] + off);
        }
        auto segment = segment_of(seg, col.entity_path);
        if (!segment.ok()) return segment.status().WithPrefix("field '" + f.key + "' (column '" + f.path + "')");
        Status st = ResolveLatestAt(*segment, dataset_->cache(), options_.index, col, vals, &cells, &fb.keep_alive,
                                    &fb.stats.chunks_loaded, memo);
        if (!st.ok()) return st.WithPrefix("field '" + f.key + "' (column '" + f.path + "')");
        size_t k = 0;
        for (size_t i : members) {
          for (int64_t t = 0; t < T; ++t) (*out)[i * static_cast<size_t>(T) + static_cast<size_t>(t)] = cells[k++];
        }
        ++fb.stats.queries;
      }
      return Status::OK();
    };
    RRL_RETURN_IF_ERROR(resolve(p.column, &fc.cells));
    for (const auto& jc : p.join_columns) {
      fc.joins.emplace_back();
      RRL_RETURN_IF_ERROR(resolve(jc, &fc.joins.back()));
    }
    if (p.raw_image) RRL_RETURN_IF_ERROR(resolve(p.format_column, &fc.format));
    for (const auto& c : fc.cells) fb.stats.rows_fetched += c.list != nullptr ? 1 : 0;
  }
  if (memo != nullptr) dataset_->cache().Touch(memo->TakeTouched());
  if (any_video) RRL_RETURN_IF_ERROR(FetchVideo(samples_by_segment, block_segments, &fb));
  fb.stats.fetch_end_ns = NowNs();
  return fb;
}

namespace {

// SampleResult: phase-1 outcome of one (sample, field).
struct SampleResult {
  bool valid = false;
  bool undecodable = false;  // kRerun041: missing because its data did not decode
  std::vector<int64_t> shape;
  Status error;
};

struct ScratchPerWorker {
  std::vector<uint8_t> blob;
};

}  // namespace

Result<Block> Engine::Decode(FetchedBlock fb) const {
  // The whole decode holds the slots of a pool task: this thread is the pool's worker 0.
  ThreadBudget::Busy busy(budget_.get(), task_weight_);
  Block out;
  out.stats = fb.stats;
  out.stats.decode_start_ns = NowNs();
  const int64_t n = static_cast<int64_t>(fb.global.size());
  out.global = std::move(fb.global);
  out.segment_pos = std::move(fb.segment_pos);
  out.values = std::move(fb.values);
  out.fields.resize(fields_.size());
  const int nthreads = pool_->num_threads();
  std::vector<ScratchPerWorker> scratch(static_cast<size_t>(nthreads));

  for (size_t fi = 0; fi < fields_.size(); ++fi) {
    const FieldSpec& f = fields_[fi];
    const Prepared& p = *prepared_[fi];
    const FetchedBlock::FieldCells& fc = fb.fields[fi];
    const int64_t T = fc.slots;
    FieldOutput& fo = out.fields[fi];
    fo.dtype = p.dtype;
    if (f.kind == FieldKind::kVideo) continue;  // all video fields at once, below
    if (f.kind == FieldKind::kRaw) {
      // A Python decoder reads the cells as Arrow: one single-row slice per slot, null where
      // there is no value. Under kRerun041 a tombstone (a Clear at exactly this value) is an
      // empty list, as rerun 0.41's query hands it to a decoder (not a null).
      arrow::ArrayVector pieces;
      pieces.reserve(fc.cells.size());
      std::shared_ptr<arrow::Array> empty_cell;
      for (const auto& c : fc.cells) {
        if (c.list != nullptr) {
          pieces.push_back(c.list->Slice(c.row, 1));
        } else if (c.tombstone && f.semantics == Semantics::kRerun041) {
          if (empty_cell == nullptr) {
            const auto& list_type = static_cast<const arrow::BaseListType&>(*p.column_type);
            auto values = arrow::MakeEmptyArray(list_type.value_type());
            if (!values.ok()) return Status::Internal(values.status().ToString());
            auto cell = arrow::MakeArrayFromScalar(arrow::ListScalar(*values, p.column_type), 1);
            if (!cell.ok()) return Status::Internal(cell.status().ToString());
            empty_cell = *cell;
          }
          pieces.push_back(empty_cell);
        } else {
          auto null_cell = arrow::MakeArrayOfNull(p.column_type, 1);
          if (!null_cell.ok()) return Status::Internal(null_cell.status().ToString());
          pieces.push_back(*null_cell);
        }
      }
      auto chunked = arrow::ChunkedArray::Make(std::move(pieces), p.column_type);
      if (!chunked.ok()) return Status::Internal(chunked.status().ToString());
      fo.raw_column = *chunked;
      fo.raw_slots = T;
      fo.raw_rows.resize(fc.cells.size());
      for (size_t k = 0; k < fc.cells.size(); ++k) fo.raw_rows[k] = static_cast<int64_t>(k);
      fo.valid.assign(static_cast<size_t>(n), 1);
      continue;
    }
    // CellSpan: the instances of a resolved cell; false when there is none (or it is null).
    auto cell_span = [](const CellRef& c, decode::Span* out_span) -> bool {
      if (c.list == nullptr || c.list->IsNull(c.row)) return false;
      *out_span = decode::Span{c.list->values(), c.list->value_offset(c.row), c.list->value_length(c.row), false};
      return true;
    };
    auto where = [&](int64_t i, int64_t t) {
      const int64_t off = f.window ? (*f.window)[static_cast<size_t>(t)] : 0;
      return "field '" + f.key + "' (column '" + f.path + "') at segment '" +
             segment_ids_[static_cast<size_t>(out.segment_pos[static_cast<size_t>(i)])] + "', " + options_.index + "=" +
             FormatValue(out.values[static_cast<size_t>(i)] + off);
    };
    const bool r041 = f.semantics == Semantics::kRerun041;
    // Slot cell (after the selector), or false when missing. Under kRerun041 a tombstone (a
    // Clear at exactly this value) reads as the empty batch rerun's query returns there; a
    // selector finds nothing in an empty batch (its first step picks an instance).
    auto slot_cell = [&](int64_t i, int64_t t, decode::Span* cell) -> bool {
      const CellRef& ref = fc.cells[static_cast<size_t>(i * T + t)];
      decode::Span c;
      if (r041 && ref.list == nullptr && ref.tombstone) {
        if (p.selector && !p.selector->is_identity()) return false;
        *cell = decode::Span{nullptr, 0, 0, false};
        return true;
      }
      if (!cell_span(ref, &c)) return false;
      if (p.selector) {
        decode::Span s;
        if (!p.selector->Apply(c, &s)) return false;
        c = s;
      }
      *cell = c;
      return true;
    };
    // The Image:format struct of a raw image slot; false when absent.
    auto raw_format = [&](int64_t i, int64_t t, decode::RawImageFormat* rf) -> bool {
      decode::Span fs;
      if (!cell_span(fc.format[static_cast<size_t>(i * T + t)], &fs) || fs.length < 1 ||
          fs.array->type_id() != arrow::Type::STRUCT) {
        return false;
      }
      const auto& s = static_cast<const arrow::StructArray&>(*fs.array);
      int64_t v = 0;
      if (IntField(s, "width", fs.offset, &v)) rf->width = v;
      if (IntField(s, "height", fs.offset, &v)) rf->height = v;
      if (IntField(s, "color_model", fs.offset, &v)) rf->color_model = static_cast<int>(v);
      if (IntField(s, "channel_datatype", fs.offset, &v)) rf->channel_datatype = static_cast<int>(v);
      if (IntField(s, "pixel_format", fs.offset, &v)) rf->pixel_format = static_cast<int>(v);
      return true;
    };
    // Phase 1: shapes and validity.
    std::vector<SampleResult> res(static_cast<size_t>(n));
    pool_->ParallelFor(n, [&](int64_t i, int worker) {
      SampleResult& r = res[static_cast<size_t>(i)];
      std::vector<int64_t> slot_shape;
      for (int64_t t = 0; t < T; ++t) {
        decode::Span cell;
        if (!slot_cell(i, t, &cell)) return;
        std::vector<int64_t> shape;
        if (f.kind == FieldKind::kNumeric && p.join_paths.empty()) {
          if (cell.array == nullptr) {
            shape = {0};  // kRerun041: an empty batch is a present [0]
          } else {
            const auto fs = decode::MeasureFlat(cell);
            if (fs.has_null || (fs.count == 0 && !r041)) return;
            shape = {fs.count};
          }
        } else if (f.kind == FieldKind::kNumeric) {
          // Instance join: the primary's instance count; every component's per-instance width.
          const int64_t num = cell.scalar ? 1 : cell.length;
          if (num == 0) return;
          int64_t width = 0;
          auto instance_width = [&](const decode::Span& c, int64_t* w) -> bool {
            decode::Span first{c.array, c.offset, 1, true};
            const auto fs0 = decode::MeasureFlat(first);
            if (fs0.has_null || fs0.count == 0) return false;
            const auto all = decode::MeasureFlat(c);
            if (all.has_null) return false;
            if (all.count != fs0.count * (c.scalar ? 1 : c.length)) {
              r.error = Status::InvalidArgument(where(i, t) + ": instances of a joined component have varying widths");
              return false;
            }
            *w = fs0.count;
            return true;
          };
          int64_t w0 = 0;
          if (!instance_width(cell, &w0)) return;
          width += w0;
          for (size_t j = 0; j < fc.joins.size(); ++j) {
            decode::Span jc;
            if (!cell_span(fc.joins[j][static_cast<size_t>(i * T + t)], &jc) || jc.length == 0) return;
            int64_t wj = 0;
            if (!instance_width(jc, &wj)) return;
            width += wj;
          }
          shape = {num, width};
        } else {
          const uint8_t* data = nullptr;
          int64_t size = 0;
          if (cell.array == nullptr) return;  // kRerun041: a cleared image is missing
          if (!CellBlob(cell, &scratch[static_cast<size_t>(worker)].blob, &data, &size)) return;
          Result<decode::ImageShape> sh = Status::Internal("unset");
          if (p.raw_image) {
            decode::RawImageFormat rf;
            if (!raw_format(i, t, &rf)) return;
            sh = decode::ProbeRawImage(static_cast<size_t>(size), rf, p.image_limits);
          } else {
            sh = decode::ProbeEncodedImage(data, static_cast<size_t>(size), p.image_limits);
          }
          if (!sh.ok()) {
            if (r041) {
              r.undecodable = true;
              return;
            }
            r.error = sh.status().WithPrefix(where(i, t));
            return;
          }
          shape = {sh->channels, sh->height, sh->width};
        }
        if (t == 0) {
          slot_shape = shape;
        } else if (shape != slot_shape) {
          if (r041) {  // rerun 0.41's decoders return None for a window they cannot stack
            r.undecodable = true;
            return;
          }
          r.error = Status::InvalidArgument(
              where(i, t) + ": varying " +
              std::string(f.kind == FieldKind::kImage ? "image shapes" : "numeric row widths") + " within the window");
          return;
        }
      }
      r.valid = true;
      r.shape = slot_shape;
      if (f.window) r.shape.insert(r.shape.begin(), T);
    });
    // Report every failure of the field, so one bad sample names the others too.
    std::string errors;
    int error_count = 0;
    Status first;
    for (const auto& r : res) {
      if (r.error.ok()) continue;
      if (error_count == 0) first = r.error;
      if (error_count < 3) errors += (errors.empty() ? "" : "; ") + r.error.message();
      ++error_count;
    }
    if (error_count > 0) {
      return Status(first.code(),
                    errors + (error_count > 3 ? " (and " + std::to_string(error_count - 3) + " more)" : ""));
    }
    // Layout: uniform when every valid sample has the same shape.
    const std::vector<int64_t>* common = nullptr;
    bool uniform = true;
    for (const auto& r : res) {
      if (!r.valid) continue;
      if (common == nullptr) {
        common = &r.shape;
      } else if (*common != r.shape) {
        uniform = false;
        break;
      }
    }
    fo.uniform = uniform && common != nullptr;
    const int64_t esize = decode::DTypeSize(p.dtype);
    fo.offsets.resize(static_cast<size_t>(n));
    fo.shapes.resize(static_cast<size_t>(n));
    fo.valid.resize(static_cast<size_t>(n));
    int64_t total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const auto& r = res[static_cast<size_t>(i)];
      fo.valid[static_cast<size_t>(i)] = r.valid ? 1 : 0;
      if (!r.valid) ++out.stats.missing;
      if (r.undecodable) ++out.stats.undecodable;
      fo.shapes[static_cast<size_t>(i)] = r.valid ? r.shape : (fo.uniform ? *common : std::vector<int64_t>{});
      int64_t count = fo.shapes[static_cast<size_t>(i)].empty() ? 0 : 1;
      for (int64_t d : fo.shapes[static_cast<size_t>(i)]) count *= d;
      fo.offsets[static_cast<size_t>(i)] = total;
      total += count * esize;
    }
    fo.nbytes = total;
    fo.data = buffers_->Allocate(total);
    out.stats.bytes_out += total;
    // Phase 2: decode into place.
    std::vector<Status> errs(static_cast<size_t>(n));
    std::vector<uint8_t> undecodable(static_cast<size_t>(n), 0);
    pool_->ParallelFor(n, [&](int64_t i, int worker) {
      const size_t si = static_cast<size_t>(i);
      uint8_t* dst = fo.data.get() + fo.offsets[si];
      int64_t count = fo.shapes[si].empty() ? 0 : 1;
      for (int64_t d : fo.shapes[si]) count *= d;
      const int64_t bytes = count * esize;
      if (!fo.valid[si]) {
        std::memset(dst, 0, static_cast<size_t>(bytes));
        return;
      }
      const int64_t per_slot = bytes / T;
      for (int64_t t = 0; t < T; ++t) {
        decode::Span cell;
        if (!slot_cell(i, t, &cell)) {  // cannot happen after phase 1
          errs[si] = Status::Internal(where(i, t) + ": value vanished between phases");
          return;
        }
        uint8_t* slot_dst = dst + t * per_slot;
        if (f.kind == FieldKind::kNumeric && p.join_paths.empty()) {
          if (cell.array != nullptr) decode::FlattenInto(cell, p.dtype, slot_dst);
        } else if (f.kind == FieldKind::kNumeric) {
          const int64_t num = cell.scalar ? 1 : cell.length;
          const int64_t width = fo.shapes[si].back();
          std::vector<decode::Span> comps{cell};
          std::vector<int64_t> widths;
          comps.reserve(1 + fc.joins.size());
          widths.reserve(1 + fc.joins.size());
          for (size_t j = 0; j < fc.joins.size(); ++j) {
            decode::Span jc;
            (void)cell_span(fc.joins[j][static_cast<size_t>(i * T + t)], &jc);
            comps.push_back(jc);
          }
          for (const auto& c : comps) widths.push_back(decode::MeasureFlat({c.array, c.offset, 1, true}).count);
          for (int64_t k = 0; k < num; ++k) {
            uint8_t* inst_dst = slot_dst + k * width * esize;
            for (size_t c = 0; c < comps.size(); ++c) {
              const int64_t len = comps[c].scalar ? 1 : comps[c].length;
              // Clamping: a shorter component repeats its last instance; a longer one is cut.
              const int64_t src = std::min(k, len - 1);
              decode::FlattenInto({comps[c].array, comps[c].offset + src, 1, true}, p.dtype, inst_dst);
              inst_dst += widths[c] * esize;
            }
          }
        } else {
          const uint8_t* data = nullptr;
          int64_t size = 0;
          (void)CellBlob(cell, &scratch[static_cast<size_t>(worker)].blob, &data, &size);
          Result<decode::ImageShape> sh = Status::Internal("unset");
          if (p.raw_image) {
            decode::RawImageFormat rf;
            (void)raw_format(i, t, &rf);
            sh = decode::DecodeRawImage(data, static_cast<size_t>(size), rf, p.image_limits, slot_dst, per_slot);
          } else {
            sh = decode::DecodeEncodedImage(data, static_cast<size_t>(size), p.image_limits, slot_dst, per_slot);
          }
          if (!sh.ok()) {
            if (r041) {  // rerun 0.41: an image that does not decode is None
              undecodable[si] = 1;
              std::memset(dst, 0, static_cast<size_t>(bytes));
              return;
            }
            errs[si] = sh.status().WithPrefix(where(i, t));
            return;
          }
        }
      }
    });
    for (const auto& e : errs) {
      if (!e.ok()) return e;
    }
    for (int64_t i = 0; i < n; ++i) {
      if (!undecodable[static_cast<size_t>(i)]) continue;
      fo.valid[static_cast<size_t>(i)] = 0;
      ++out.stats.missing;
      ++out.stats.undecodable;
    }
  }
  RRL_RETURN_IF_ERROR(DecodeVideo(fb, &out));
  out.emit.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.emit[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  out.stats.decode_end_ns = NowNs();
  return out;
}

Result<Block> Engine::Run(const std::vector<int64_t>& global) const {
  auto fetched = Fetch(global);
  if (!fetched.ok()) return fetched.status();
  return Decode(std::move(*fetched));
}

ThreadStats Engine::thread_stats() const {
  ThreadStats s = budget_->stats();
  s.pool_threads = pool_->num_threads();
  s.task_weight = task_weight_;
  return s;
}

}  // namespace rrl::engine
