// cpp/bindings/engine_bindings.cc — the engine's Python surface (internal; used by
// rrloader/dataloader.py): Engine.run for one block (map-style datasets), Engine.iterate
// for a Pipeline over an epoch shard (iterable datasets), and the epoch order functions.
//
// A decoded field leaves as NumPy arrays that own a reference to the engine's buffer (no
// copy): one [B, ...] array when every sample has the same shape, else one array per
// sample (None where missing). All native work runs with the GIL released.
#include <arrow/c/bridge.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "bindings/common.h"
#include "rrloader/engine/engine.h"
#include "rrloader/engine/pipeline.h"

namespace rrl_bindings {

namespace {

using namespace nb::literals;
using Int64Array = nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using NumpyArray = nb::ndarray<nb::numpy>;
// RngTuple: numpy PCG64 state (state high, state low, inc high, inc low, has_uint32, uinteger).
using RngTuple = std::tuple<uint64_t, uint64_t, uint64_t, uint64_t, bool, uint32_t>;
// VideoTuple: (codec name or "", height, width (0, 0: own size), session cache bytes, threads (0:
// libavcodec chooses), output format "rgb" | "yuv420p", max sessions (-1: no bound), whether the
// codec overrides the stream's codec component (else it is a fallback)).
using VideoTuple = std::tuple<std::string, int, int, int64_t, int, std::string, int64_t, bool>;
// FieldTuple: (key, path, kind, window offsets or None, select, join, video options, semantics).
using FieldTuple = std::tuple<std::string, std::string, std::string, std::optional<std::vector<int64_t>>, std::string,
                              std::vector<std::string>, VideoTuple, std::string>;

std::vector<int64_t> ToVec(const Int64Array& a) {
  return std::vector<int64_t>(a.data(), a.data() + a.shape(0));
}

nb::dlpack::dtype ToDlpack(rrl::decode::DType t) {
  using rrl::decode::DType;
  using C = nb::dlpack::dtype_code;
  const auto bits = static_cast<uint8_t>(rrl::decode::DTypeSize(t) * 8);
  switch (t) {
    case DType::kBool: return {static_cast<uint8_t>(C::Bool), 8, 1};
    case DType::kInt8:
    case DType::kInt16:
    case DType::kInt32:
    case DType::kInt64: return {static_cast<uint8_t>(C::Int), bits, 1};
    case DType::kFloat16:
    case DType::kFloat32:
    case DType::kFloat64: return {static_cast<uint8_t>(C::Float), bits, 1};
    default: return {static_cast<uint8_t>(C::UInt), bits, 1};
  }
}

// Owner: keeps a field buffer alive for the arrays that view it.
nb::capsule OwnerOf(std::shared_ptr<uint8_t[]> data) {
  auto* holder = new std::shared_ptr<uint8_t[]>(std::move(data));
  return nb::capsule(holder, [](void* p) noexcept { delete static_cast<std::shared_ptr<uint8_t[]>*>(p); });
}

template <typename T>
NumpyArray VecArray(std::vector<T> v, nb::dlpack::dtype dt) {
  auto* holder = new std::vector<T>(std::move(v));
  nb::capsule owner(holder, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  const size_t shape[1] = {holder->size()};
  return NumpyArray(holder->data(), 1, shape, owner, nullptr, dt);
}

nb::object ChunkedCapsule(const std::shared_ptr<arrow::ChunkedArray>& col) {
  if (col == nullptr) return nb::none();
  auto* c = new ArrowArrayStream();
  auto st = arrow::ExportChunkedArray(col, c);
  if (!st.ok()) {
    delete c;
    Throw(rrl::Status::Internal(st.ToString()));
  }
  return nb::capsule(c, "arrow_array_stream", [](void* p) noexcept {
    auto* s = static_cast<ArrowArrayStream*>(p);
    if (s->release) s->release(s);
    delete s;
  });
}

// BlockToPython: (global, segment_pos, values, fields, stats); each field is a dict.
nb::tuple BlockToPython(rrl::engine::Block&& b) {
  const size_t n = b.global.size();
  nb::list fields;
  for (auto& fo : b.fields) {
    nb::dict d;
    std::vector<uint8_t> valid = fo.valid;
    d["valid"] = VecArray(std::move(valid), {static_cast<uint8_t>(nb::dlpack::dtype_code::Bool), 8, 1});
    if (fo.raw_column != nullptr || fo.raw_slots > 0) {
      d["raw_column"] = ChunkedCapsule(fo.raw_column);
      d["raw_rows"] = VecArray(std::move(fo.raw_rows), nb::dtype<int64_t>());
      d["raw_slots"] = fo.raw_slots;
      fields.append(d);
      continue;
    }
    const nb::dlpack::dtype dt = ToDlpack(fo.dtype);
    if (fo.yuv) {  // per sample: (y [(T,) 1, H, W], uv [(T,) 2, h, w], colour space, colour range)
      nb::list items;
      nb::capsule block_owner = fo.sample_data.empty() ? OwnerOf(fo.data) : nb::capsule();
      for (size_t i = 0; i < n; ++i) {
        if (!fo.valid[i]) {
          items.append(nb::none());
          continue;
        }
        const std::vector<int64_t>& ys = fo.shapes[i];
        std::vector<size_t> y_shape(ys.begin(), ys.end()), uv_shape(y_shape);
        const int h = static_cast<int>(ys[ys.size() - 2]), w = static_cast<int>(ys.back());
        uv_shape[uv_shape.size() - 3] = 2;
        uv_shape[uv_shape.size() - 2] = static_cast<size_t>(rrl::decode::Yuv420ChromaHeight(h));
        uv_shape[uv_shape.size() - 1] = static_cast<size_t>(rrl::decode::Yuv420ChromaWidth(w));
        int64_t y_bytes = 1;
        for (int64_t d : ys) y_bytes *= d;
        uint8_t* base = fo.sample_data.empty() ? fo.data.get() + fo.offsets[i] : fo.sample_data[i].get();
        nb::capsule owner = fo.sample_data.empty() ? block_owner : OwnerOf(fo.sample_data[i]);
        items.append(nb::make_tuple(
            NumpyArray(base, y_shape.size(), y_shape.data(), owner, nullptr, dt),
            NumpyArray(base + y_bytes, uv_shape.size(), uv_shape.data(), owner, nullptr, dt),
            rrl::decode::VideoColorSpaceName(static_cast<rrl::decode::VideoColorSpace>(fo.color_space[i])),
            rrl::decode::VideoColorRangeName(static_cast<rrl::decode::VideoColorRange>(fo.color_range[i]))));
      }
      d["yuv"] = items;
      fields.append(d);
      continue;
    }
    if (!fo.sample_data.empty()) {  // gathered by the emit stage: every sample owns its bytes
      nb::list items;
      for (size_t i = 0; i < n; ++i) {
        if (!fo.valid[i]) {
          items.append(nb::none());
          continue;
        }
        std::vector<size_t> shape;
        for (int64_t s : fo.shapes[i]) shape.push_back(static_cast<size_t>(s));
        items.append(
            NumpyArray(fo.sample_data[i].get(), shape.size(), shape.data(), OwnerOf(fo.sample_data[i]), nullptr, dt));
      }
      d["items"] = items;
      fields.append(d);
      continue;
    }
    nb::capsule owner = OwnerOf(fo.data);
    if (fo.uniform) {
      std::vector<size_t> shape{n};
      for (int64_t s : fo.shapes.empty() ? std::vector<int64_t>{} : fo.shapes[0]) {
        shape.push_back(static_cast<size_t>(s));
      }
      d["batch"] = NumpyArray(fo.data.get(), shape.size(), shape.data(), owner, nullptr, dt);
    } else {
      nb::list items;
      for (size_t i = 0; i < n; ++i) {
        if (!fo.valid[i]) {
          items.append(nb::none());
          continue;
        }
        std::vector<size_t> shape;
        for (int64_t s : fo.shapes[i]) shape.push_back(static_cast<size_t>(s));
        items.append(NumpyArray(fo.data.get() + fo.offsets[i], shape.size(), shape.data(), owner, nullptr, dt));
      }
      d["items"] = items;
    }
    fields.append(d);
  }
  nb::dict stats;
  stats["fetch_start_ns"] = b.stats.fetch_start_ns;
  stats["fetch_end_ns"] = b.stats.fetch_end_ns;
  stats["decode_start_ns"] = b.stats.decode_start_ns;
  stats["decode_end_ns"] = b.stats.decode_end_ns;
  stats["queries"] = b.stats.queries;
  stats["rows_fetched"] = b.stats.rows_fetched;
  stats["chunks_loaded"] = b.stats.chunks_loaded;
  stats["chunks_preloaded"] = b.stats.chunks_preloaded;
  stats["bytes_out"] = b.stats.bytes_out;
  stats["missing"] = b.stats.missing;
  stats["video_gops"] = b.stats.video_gops;
  stats["video_frames_decoded"] = b.stats.video_frames_decoded;
  stats["video_frames_delivered"] = b.stats.video_frames_delivered;
  stats["undecodable"] = b.stats.undecodable;
  stats["samples"] = static_cast<int64_t>(n);
  const rrl::engine::EmitStats& e = b.emitted;
  stats["skipped"] = e.skipped;
  stats["skipped_by_field"] = e.skipped_by_field;
  stats["skip_limit_exceeded"] = e.skip_limit_exceeded;
  stats["consecutive_skipped"] = e.consecutive_skipped;
  stats["total_skipped"] = e.total_skipped;
  stats["total_skipped_by_field"] = e.total_skipped_by_field;
  stats["first_skipped"] = e.first_skipped;
  stats["buffered"] = e.buffered;
  stats["buffered_bytes"] = e.buffered_bytes;
  stats["positions"] = VecArray(std::vector<int64_t>(b.positions), nb::dtype<int64_t>());
  if (b.snapshot != nullptr) {
    const rrl::engine::EmitSnapshot& sn = *b.snapshot;
    nb::dict snap;
    snap["held"] = VecArray(std::vector<int64_t>(sn.held), nb::dtype<int64_t>());
    snap["awaiting_extra"] = sn.awaiting_extra;
    snap["rng"] = nb::make_tuple(sn.rng.state_high, sn.rng.state_low, sn.rng.inc_high, sn.rng.inc_low,
                                 sn.rng.has_uint32, sn.rng.uinteger);
    snap["pushes"] = VecArray(std::vector<int64_t>(sn.pushes), nb::dtype<int64_t>());
    snap["finished"] = sn.finished;
    stats["snapshot"] = snap;
  }
  stats["required_missing"] = e.required_missing;
  if (e.required_missing) {
    stats["missing_global"] = e.missing_global;
    stats["missing_segment"] = e.missing_segment;
    stats["missing_value"] = e.missing_value;
    stats["missing_fields"] = e.missing_fields;
  }
  // emit: None when every sample goes out in block order (the common case).
  bool in_order = b.emit.size() == n;
  for (size_t i = 0; in_order && i < n; ++i) in_order = b.emit[i] == static_cast<int32_t>(i);
  nb::object emit = nb::none();
  if (!in_order) emit = nb::cast(VecArray(std::move(b.emit), nb::dtype<int32_t>()));
  return nb::make_tuple(VecArray(std::move(b.global), nb::dtype<int64_t>()),
                        VecArray(std::move(b.segment_pos), nb::dtype<int32_t>()),
                        VecArray(std::move(b.values), nb::dtype<int64_t>()), fields, stats, emit);
}

class PyPipeline {
 public:
  explicit PyPipeline(std::unique_ptr<rrl::engine::Pipeline> p) : p_(std::move(p)) {}
  ~PyPipeline() {
    if (owner_.foreign()) {
      (void)p_.release();  // OwnerProcess: never destroyed in a forked child
      return;
    }
    nb::gil_scoped_release release;  // joining waits for a block in flight
    p_.reset();
  }
  nb::object next() {
    rrl::Result<std::optional<rrl::engine::Block>> r = rrl::Status::Internal("unset");
    if (owner_.foreign()) {
      Throw(rrl::Status::InvalidArgument("this iteration was started in another process (before a fork)"));
    }
    {
      nb::gil_scoped_release release;
      r = p_->Next();
    }
    auto b = Unwrap(std::move(r));
    if (!b) return nb::none();
    return BlockToPython(std::move(*b));
  }
  void close() {
    if (owner_.foreign()) return;  // its threads are the parent's; nothing to stop here
    nb::gil_scoped_release release;
    p_->Cancel();
  }

 private:
  OwnerProcess owner_;
  std::unique_ptr<rrl::engine::Pipeline> p_;
};

class PyEngine {
 public:
  // fields: FieldTuple; kind is "numeric", "image", "video" or "raw".
  PyEngine(nb::handle dataset, std::vector<std::string> segment_ids, const Int64Array& segment_numbers,
           const Int64Array& index_starts, const Int64Array& num_samples, int64_t step,
           const std::vector<FieldTuple>& fields, std::string index, int num_threads, int thread_nice, int cpu_budget,
           int64_t buffer_pool_bytes) {
    std::vector<rrl::sample::SegmentSamples> segs;
    for (size_t i = 0; i < segment_numbers.shape(0); ++i) {
      segs.push_back({static_cast<int32_t>(segment_numbers.data()[i]), index_starts.data()[i], num_samples.data()[i]});
    }
    auto samples = Unwrap(rrl::sample::SampleIndex::Make(std::move(segs), step));
    std::vector<rrl::engine::FieldSpec> specs;
    for (const auto& [key, path, kind, window, select, join, video, semantics] : fields) {
      rrl::engine::FieldSpec f;
      f.key = key;
      f.path = path;
      if (kind == "numeric") {
        f.kind = rrl::engine::FieldKind::kNumeric;
      } else if (kind == "image") {
        f.kind = rrl::engine::FieldKind::kImage;
      } else if (kind == "video") {
        f.kind = rrl::engine::FieldKind::kVideo;
        const auto& [codec, height, width, session_cache_bytes, threads, output_format, max_sessions, codec_overrides] =
            video;
        f.video.codec = codec;
        f.video.codec_overrides = codec_overrides;
        f.video.max_sessions = max_sessions;
        f.video.size.height = height;
        f.video.size.width = width;
        f.video.session_cache_bytes = session_cache_bytes;
        f.video.threads = threads;
        f.video.output_format = Unwrap(rrl::decode::ParseVideoOutputFormat(output_format));
      } else if (kind == "raw") {
        f.kind = rrl::engine::FieldKind::kRaw;
      } else {
        Throw(rrl::Status::InvalidArgument("unknown field kind '" + kind + "'"));
      }
      f.window = window;
      f.select = select;
      f.join = join;
      if (semantics == "seed") {
        f.semantics = rrl::engine::Semantics::kSeed;
      } else if (semantics == "rerun-0.41") {
        f.semantics = rrl::engine::Semantics::kRerun041;
      } else {
        Throw(rrl::Status::InvalidArgument("unknown field semantics '" + semantics + "'"));
      }
      specs.push_back(std::move(f));
    }
    rrl::engine::EngineOptions o;
    o.index = std::move(index);
    o.grid_step = step;
    o.num_threads = num_threads;
    o.thread_nice = thread_nice;
    o.cpu_budget = cpu_budget;
    if (buffer_pool_bytes >= 0) o.buffer_pool_bytes = buffer_pool_bytes;
    auto ds = DatasetOf(dataset);
    rrl::Result<std::shared_ptr<rrl::engine::Engine>> r = rrl::Status::Internal("unset");
    {
      nb::gil_scoped_release release;
      r = rrl::engine::Engine::Make(ds, std::move(segment_ids), std::move(samples), std::move(specs), o);
    }
    engine_ = Unwrap(std::move(r));
  }

  nb::tuple run(const Int64Array& global) {
    std::vector<int64_t> ids = ToVec(global);
    rrl::Result<rrl::engine::Block> r = rrl::Status::Internal("unset");
    {
      nb::gil_scoped_release release;
      r = engine_->Run(ids);
    }
    return BlockToPython(Unwrap(std::move(r)));
  }

  // iterate: a Pipeline over `order`; `block_ends` (cumulative) or, when empty, blocks of
  // `block_size`; the emit stage's options (max_consecutive_skips -1 and buffer_size 0: none).
  // positions: per order entry (empty: 0, 1, ...); restore_*: a saved emission buffer (EmitOptions);
  // emit_order empty: none; required: per field, or empty.
  PyPipeline* iterate(const Int64Array& order, int64_t block_size, const Int64Array& block_ends, int fetch_ahead,
                      int64_t max_ready_bytes, bool skip_incomplete, int64_t max_consecutive_skips, int64_t buffer_size,
                      int64_t min_fill, std::vector<uint64_t> buffer_seed, const Int64Array& positions,
                      std::optional<RngTuple> restore_rng, std::vector<int64_t> restore_held,
                      bool restore_awaiting_extra, const Int64Array& emit_order, const std::vector<int>& required,
                      int64_t max_piece_bytes) {
    rrl::engine::PipelineOptions o;
    o.max_piece_bytes = max_piece_bytes;
    o.block_size = block_size;
    o.block_ends = ToVec(block_ends);
    o.fetch_ahead = fetch_ahead;
    o.max_ready_bytes = max_ready_bytes;
    o.emit.skip_incomplete = skip_incomplete;
    o.emit.max_consecutive_skips = max_consecutive_skips;
    o.emit.buffer_size = buffer_size;
    o.emit.min_fill = min_fill;
    o.emit.buffer_seed = std::move(buffer_seed);
    o.positions = ToVec(positions);
    if (restore_rng) {
      const auto& [sh, sl, ih, il, has32, u32] = *restore_rng;
      o.emit.restore_rng = rrl::sample::Pcg64State{sh, sl, ih, il, has32, u32};
    }
    o.emit.restore_held = std::move(restore_held);
    o.emit.restore_awaiting_extra = restore_awaiting_extra;
    o.emit.emit_order = ToVec(emit_order);
    for (int r : required) o.emit.required.push_back(r != 0 ? 1 : 0);
    std::vector<int64_t> ids = ToVec(order);
    rrl::Result<std::unique_ptr<rrl::engine::Pipeline>> p = rrl::Status::Internal("unset");
    {
      nb::gil_scoped_release release;
      p = rrl::engine::Pipeline::Make(engine_, std::move(ids), std::move(o));
    }
    return new PyPipeline(Unwrap(std::move(p)));
  }

  int64_t total() const { return engine_->samples().total(); }

  // fetch_stats: {"samples", "blocks"} fetched since the engine was made, the
  // "chunks_ahead" its pipelines' look-ahead fetched, and its BufferPool's idle bytes now and
  // allocations served from it ("buffer_pool_idle_bytes", "buffer_pool_reused").
  nb::dict fetch_stats() const {
    const auto f = engine_->fetch_stats();
    nb::dict d;
    d["samples"] = f.samples;
    d["blocks"] = f.blocks;
    d["chunks_ahead"] = f.chunks_ahead;
    d["buffer_pool_idle_bytes"] = engine_->buffers()->idle_bytes();
    d["buffer_pool_reused"] = engine_->buffers()->reused();
    return d;
  }

  // thread_stats: the engine's threads (engine::ThreadStats): the budget (0: none), pool
  // threads, slots per pool task, threads started / alive, slots held now and at most.
  nb::dict thread_stats() const {
    const rrl::engine::ThreadStats s = engine_->thread_stats();
    nb::dict d;
    d["budget"] = s.budget;
    d["pool_threads"] = s.pool_threads;
    d["task_weight"] = s.task_weight;
    d["threads_started"] = s.threads_started;
    d["threads_alive"] = s.threads_alive;
    d["busy_now"] = s.busy_now;
    d["max_busy"] = s.max_busy;
    d["waits"] = s.waits;
    return d;
  }

  // video_keyframes: the verified keyframes' index values of video field number `field` in
  // segment number `segment`, ascending (Engine::VideoKeyframes: reads the whole stream).
  NumpyArray video_keyframes(size_t field, int32_t segment) const {
    rrl::Result<std::vector<int64_t>> r = rrl::Status::Internal("unset");
    {
      nb::gil_scoped_release release;
      r = engine_->VideoKeyframes(field, segment);
    }
    return VecArray(Unwrap(std::move(r)), nb::dtype<int64_t>());
  }

  // video_stats: the statistics of video field number `field` (a position in the fields list).
  nb::dict video_stats(size_t field) const {
    const rrl::engine::VideoFieldStats s = Unwrap(engine_->VideoStats(field));
    nb::dict d;
    d["frames_decoded"] = s.frames_decoded;
    d["frames_delivered"] = s.frames_delivered;
    d["slots_filled"] = s.slots_filled;
    d["gops_started"] = s.gops_started;
    d["sessions_recycled"] = s.sessions_recycled;
    d["gop_requests"] = s.gop_requests;
    d["session_hits"] = s.session_hits;
    d["session_misses"] = s.session_misses;
    d["bytes_cached"] = s.bytes_cached;
    d["sessions_cached"] = s.sessions_cached;
    d["missing_no_keyframe"] = s.missing_no_keyframe;
    d["missing_before_first_packet"] = s.missing_before_first_packet;
    d["missing_not_decoded"] = s.missing_not_decoded;
    d["streams_indexed"] = s.streams_indexed;
    d["clusters_loaded"] = s.clusters_loaded;
    d["keyframes_rejected"] = s.keyframes_rejected;
    return d;
  }

  ~PyEngine() {
    // OwnerProcess: in a forked child the engine (its pool's threads, their condition
    // variables, libavcodec's frame threads) is leaked, not destroyed.
    // (A failed allocation here ends the process: a destructor cannot report it.)
    // NOLINTNEXTLINE(bugprone-unhandled-exception-at-new)
    if (owner_.foreign()) new std::shared_ptr<const rrl::engine::Engine>(std::move(engine_));
  }

 private:
  OwnerProcess owner_;
  std::shared_ptr<const rrl::engine::Engine> engine_;
};

}  // namespace

void BindEngine(nb::module_& m) {
  nb::class_<PyPipeline>(m, "Pipeline").def("next", &PyPipeline::next).def("close", &PyPipeline::close);
  nb::class_<PyEngine>(m, "Engine")
      .def(nb::init<nb::handle, std::vector<std::string>, const Int64Array&, const Int64Array&, const Int64Array&,
                    int64_t, const std::vector<FieldTuple>&, std::string, int, int, int, int64_t>(),
           "dataset"_a, "segment_ids"_a, "segment_numbers"_a, "index_starts"_a, "num_samples"_a, "step"_a, "fields"_a,
           "index"_a, "num_threads"_a, "thread_nice"_a, "cpu_budget"_a = 0, "buffer_pool_bytes"_a = -1)
      .def("run", &PyEngine::run, "global_indices"_a)
      .def("iterate", &PyEngine::iterate, "order"_a, "block_size"_a, "block_ends"_a, "fetch_ahead"_a,
           "max_ready_bytes"_a, "skip_incomplete"_a, "max_consecutive_skips"_a, "buffer_size"_a, "min_fill"_a,
           "buffer_seed"_a, "positions"_a, "restore_rng"_a.none(), "restore_held"_a, "restore_awaiting_extra"_a,
           "emit_order"_a, "required"_a, "max_piece_bytes"_a = 0, nb::rv_policy::take_ownership)
      .def("total", &PyEngine::total)
      .def("video_stats", &PyEngine::video_stats, "field"_a)
      .def("fetch_stats", &PyEngine::fetch_stats)
      .def("thread_stats", &PyEngine::thread_stats)
      .def("video_keyframes", &PyEngine::video_keyframes, "field"_a, "segment"_a);
  m.def(
      "epoch_order",
      [](int64_t total, uint64_t seed, uint64_t epoch, bool shuffle) {
        std::vector<int64_t> order;
        {
          nb::gil_scoped_release release;
          order = rrl::sample::EpochOrder(total, seed, epoch, shuffle);
        }
        return VecArray(std::move(order), nb::dtype<int64_t>());
      },
      "total"_a, "seed"_a, "epoch"_a, "shuffle"_a);
  m.def("shard_bounds", &rrl::sample::ShardBounds, "n"_a, "part"_a, "count"_a);
}

}  // namespace rrl_bindings
