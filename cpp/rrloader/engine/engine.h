// rrloader/engine/engine.h — turning blocks of sample numbers into decoded tensors.
//
// For a block of global sample numbers the engine (1) locates each sample's segment and
// index value, (2) fetches: resolves every slot's cell per column and segment with the
// latest-at semantics of rerun's dataloader query (latest_at.h), loading only the chunks
// that can hold an answer, (3) decodes every (sample, field) on the thread pool straight
// into one buffer per field.
//
// Windows are explicit offset lists in the index's native unit (integer steps; ns on time
// timelines): slot t of a sample at index value v reads v + offsets[t], in the order given,
// repeats allowed. Both front ends normalise their own spelling to this (the seed API's
// inclusive range becomes every step of it, or the grid walk-down from v + end; rerun 0.41's
// offsets in seconds become rounded ns) before the engine sees it.
//
// Missing values follow the field's Semantics (one per API generation):
//  * kSeed: a slot is missing when no value is logged at or before it, when it was cleared
//    (an empty batch), when a null sits anywhere in it, or when a selector finds nothing
//    there; a window whose slots differ in shape, and a corrupt image or video, are errors.
//  * kRerun041 (rerun-sdk 0.41's decoders): a null (nothing at or before, or a null cell) is
//    missing, but an empty or cleared numeric cell is a present [0] (a window of them [T, 0]);
//    an empty or cleared image is missing; a window whose slots differ in shape, an image
//    that does not decode and a video GOP that does not decode are missing (counted in
//    BlockStats::undecodable), never an error; a palette PNG gives its palette indices
//    ([1, H, W], Pillow's mode "P").
// A field with any missing slot is missing for that sample (its `valid` byte is 0); a
// missing sample's bytes are zero.
//
// Thread safety: an Engine is immutable after Make (apart from its internally synchronized
// video caches and counters); Fetch/Decode/Run may be called from several threads at once,
// but Decode uses the engine's one thread pool, whose ParallelFor calls are serialized.
#pragma once

#include <arrow/chunked_array.h>

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "rrloader/catalog/dataset.h"
#include "rrloader/decode/image.h"
#include "rrloader/decode/numeric.h"
#include "rrloader/decode/selector.h"
#include "rrloader/engine/buffer_pool.h"
#include "rrloader/engine/latest_at.h"
#include "rrloader/engine/thread_budget.h"
#include "rrloader/engine/thread_pool.h"
#include "rrloader/engine/video_field.h"
#include "rrloader/sample/sample_index.h"

namespace rrl::engine {

enum class FieldKind : uint8_t {
  kNumeric,  // NumericDecoder: flattened leaf values, [D] or [T, D]; with `join`, [N, sum D] or [T, N, sum D]
  kImage,    // ImageDecoder: EncodedImage blobs (JPEG/PNG) or raw Image buffers, [C, H, W] or [T, C, H, W]
  kVideo,    // VideoFrameDecoder: VideoStream samples, GOP-aware, [3, H, W] or [T, 3, H, W] uint8 RGB
  kRaw,      // a Python decoder: the engine only resolves rows; Python decodes
};

// Semantics: which API generation's rules a field follows where they differ (see above).
enum class Semantics : uint8_t {
  kSeed,      // rrloader.dataloader (the seed API)
  kRerun041,  // rrloader.experimental.dataloader (rerun-sdk 0.41)
};

// FieldSpec: one output field of a sample.
struct FieldSpec {
  std::string key;   // output name
  std::string path;  // component column, "/entity:Archetype:component"
  FieldKind kind = FieldKind::kNumeric;
  // window: explicit offsets in the index's native unit (see above), at least one; nullopt:
  // no window (one slot and no leading T axis; a window of one offset has T = 1).
  std::optional<std::vector<int64_t>> window;
  std::string select;             // "" = none
  std::vector<std::string> join;  // kNumeric only: components joined instance by instance
  VideoFieldOptions video;        // kVideo only
  Semantics semantics = Semantics::kSeed;
};

struct EngineOptions {
  std::string index;
  int64_t grid_step = 1;  // 1 on integer timelines; the fixed-rate grid's ns on time timelines
  int num_threads = 0;    // decode threads; 0 = hardware concurrency
  decode::ImageLimits image_limits;
  int64_t video_index_cache_bytes = kDefaultVideoIndexCacheBytes;  // all video fields together
  // thread_nice: niceness added to the engine's own threads (pool workers, a Pipeline's fetch
  // and decode threads; never the caller's): 10 by default, so that the consumer wins the CPU
  // (see thread_pool.h for why and what it measured); 0 keeps the process's priority.
  int thread_nice = 10;
  // buffer_pool_bytes: released block buffers kept for the next blocks (BufferPool).
  int64_t buffer_pool_bytes = kDefaultBufferPoolBytes;
  // cpu_budget: the most engine threads busy at once (thread_budget.h), counting the
  // pipeline's fetch and decode stages, the pool's tasks and libavcodec's frame threads
  // (video sessions get at most this many threads); the pool gets at most cpu_budget /
  // (threads per video session) threads. 0: no budget (num_threads pool threads, each
  // stage free to run). A DataLoader worker's engine gets its share of the usable cores.
  int cpu_budget = 0;
};

// FieldOutput: one field over the samples of a block. Samples are stored one after the
// other in `data` at `offsets[i]` with `shapes[i]`; when `uniform`, every sample (missing
// ones included, zero-filled) has `shapes[0]` and they are packed, so `data` is one
// [B, ...] tensor. Not thread-safe; owned by its Block.
struct FieldOutput {
  decode::DType dtype = decode::DType::kFloat32;
  std::shared_ptr<uint8_t[]> data;
  int64_t nbytes = 0;
  std::vector<int64_t> offsets;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<uint8_t> valid;
  bool uniform = false;
  // yuv: a video field with YUV 4:2:0 output: shapes[i] is the Y planes' [(T,) 1, H, W] and
  // the UV planes [(T,) 2, ceil(H/2), ceil(W/2)] follow them in the sample's bytes; each
  // sample's colour metadata (decode::VideoColorSpace / VideoColorRange values) alongside.
  bool yuv = false;
  std::vector<uint8_t> color_space;
  std::vector<uint8_t> color_range;
  // sample_data: when not empty, sample i's bytes are at sample_data[i] (offset 0) instead of
  // in `data`: a block the emit stage gathered from samples of several decoded blocks.
  std::vector<std::shared_ptr<uint8_t[]>> sample_data;
  // kRaw: the fetched column and, per sample, `raw_slots` row numbers into it (-1: missing).
  std::shared_ptr<arrow::ChunkedArray> raw_column;
  std::vector<int64_t> raw_rows;
  int64_t raw_slots = 0;
};

// SampleBytes: the bytes of sample i of `fo` (0 when it is missing and not laid out).
int64_t SampleBytes(const FieldOutput& fo, size_t i);

// BlockStats: what one block cost; times are wall-clock ns since the epoch.
struct BlockStats {
  int64_t fetch_start_ns = 0, fetch_end_ns = 0, decode_start_ns = 0, decode_end_ns = 0;
  int64_t queries = 0, rows_fetched = 0, chunks_loaded = 0, bytes_out = 0, missing = 0;  // queries: column lookups
  // chunks_preloaded: chunks a local fetch loaded ahead of its lookups, in parallel on the
  // pool (cold chunks; see Engine::Fetch).
  int64_t chunks_preloaded = 0;
  int64_t video_gops = 0, video_frames_decoded = 0, video_frames_delivered = 0;  // all video fields
  // undecodable: (sample, field) values missing because their data did not decode (kRerun041
  // fields only: a corrupt image, a video GOP libavcodec rejects, a window of mixed shapes).
  int64_t undecodable = 0;
};

// EmitStats: what the emit stage dropped while making one output block.
struct EmitStats {
  int64_t skipped = 0;                    // incomplete samples dropped
  std::vector<int64_t> skipped_by_field;  // per field (spec order): dropped samples missing it
  // skip_limit_exceeded: more than EmitOptions::max_consecutive_skips incomplete samples came
  // in a row; this is the last block, `consecutive_skipped` and `total_skipped` (since the
  // iteration began, per field in `total_skipped_by_field`) say how many.
  bool skip_limit_exceeded = false;
  int64_t consecutive_skipped = 0;
  int64_t total_skipped = 0;
  std::vector<int64_t> total_skipped_by_field;
  // first_skipped: per field, which dropped sample of the iteration (1-based, 0: none yet) was
  // the first one missing it. rerun 0.41 warns once per field when it first drops a sample
  // missing it (fields of one sample by name): sorting by this gives its warning order.
  std::vector<int64_t> first_skipped;
  int64_t buffered = 0;        // samples held by the emit stage after this block (emission
  int64_t buffered_bytes = 0;  // buffer or explicit order), and their bytes
  // required_missing: a sample lacked a field of EmitOptions::required; this is the last block
  // and holds what was emitted before that sample arrived. missing_global / missing_segment
  // (segment number) / missing_value locate the sample; missing_fields lists the required
  // fields it lacked (positions in spec order).
  bool required_missing = false;
  int64_t missing_global = -1;
  int32_t missing_segment = -1;
  int64_t missing_value = 0;
  std::vector<int64_t> missing_fields;
};

// FetchedBlock: a block after the fetch stage (internal to the pipeline).
struct FetchedBlock {
  std::vector<int64_t> global;
  std::vector<int32_t> segment_pos;
  std::vector<int64_t> values;
  // FieldCells: per field, the cell of every slot ([B * T], sample-major).
  struct FieldCells {
    int64_t slots = 1;                        // T
    std::vector<CellRef> cells;               // the field's column
    std::vector<std::vector<CellRef>> joins;  // joined columns, in `join` order
    std::vector<CellRef> format;              // raw images: the Image:format column
    std::shared_ptr<VideoFetch> video;        // kVideo: the block's GOP plan and packets
  };
  std::vector<FieldCells> fields;                               // in spec order
  std::vector<std::shared_ptr<const chunk::Chunk>> keep_alive;  // owners of the cells' arrays
  BlockStats stats;
};

// Block: decoded samples, in the order they were asked for.
struct Block {
  std::vector<int64_t> global;
  std::vector<int32_t> segment_pos;
  std::vector<int64_t> values;
  std::vector<FieldOutput> fields;  // in spec order
  BlockStats stats;
  // emit: the positions of the samples to hand out, in order: every position from
  // Engine::Decode; a Pipeline's emit stage (emitter.h) leaves out the samples it dropped.
  // emitted: what the emit stage did (zero from Engine::Decode).
  std::vector<int32_t> emit;
  EmitStats emitted;
  // positions: each sample's position in the iterated order (set by a Pipeline; empty from
  // Engine::Decode); snapshot: the emit stage's EmitSnapshot when it has a buffer.
  std::vector<int64_t> positions;
  std::shared_ptr<const struct EmitSnapshot> snapshot;
};

// kSegmentLookaheadMinSegments: the fewest segments for which a pipeline over a remote dataset
// asks for manifests ahead (pipeline.h). With fewer, the first blocks fetch them all anyway,
// and the look-ahead would only add calls beside theirs. (In two full CI runs with the
// look-ahead starting beside a small dataset's first block, that block's FetchChunks got no
// answer within a 2 s deadline from a healthy in-process server; the cause was not found. The
// look-ahead now starts after the first block, and only from this many segments.)
inline constexpr int kSegmentLookaheadMinSegments = 16;

class Engine {
 public:
  // Make: validates every field against the dataset's schema (column exists, selector path
  // exists, the type decodes to numbers or images) and reports the first problem naming the
  // field and column. `segment_ids[k]` is the segment of SampleIndex segment number k.
  [[nodiscard]] static Result<std::shared_ptr<Engine>> Make(std::shared_ptr<const catalog::Dataset> dataset,
                                                            std::vector<std::string> segment_ids,
                                                            sample::SampleIndex samples, std::vector<FieldSpec> fields,
                                                            EngineOptions options);

  // Fetch: the cells of samples `global`. `memo` (may be null; the caller's thread's) keeps
  // the latest-at setup of each (segment, column) for the caller's next blocks.
  [[nodiscard]] Result<FetchedBlock> Fetch(const std::vector<int64_t>& global, LatestAtMemo* memo = nullptr) const;
  // PrefetchesSegments: whether a pipeline asks for segments ahead (PrefetchSegments): they
  // are far away (a remote dataset: a manifest round trip each) and many (at least
  // kSegmentLookaheadMinSegments; fewer are all fetched by the first blocks anyway).
  bool PrefetchesSegments() const;
  // PrefetchSegments: Dataset::PrefetchSegments of the segments of samples `global`, in
  // order of first appearance, each once (`seen`: segment numbers asked for before, the
  // caller's; updated). A hint: Fetch reports the errors; the first failure is returned so
  // that the caller stops asking ahead.
  [[nodiscard]] Status PrefetchSegments(const std::vector<int64_t>& global, std::vector<char>* seen) const;
  // PrefetchChunks: of what Fetch of samples `global` would hand Dataset::Prefetch (every
  // chunk their lookups can read, and the chunks new video streams are indexed from), the
  // chunks not cached now, handed to it now and appended to `keep_alive` (so none: nothing was
  // missing); nothing for a dataset that wants no prefetch. A pipeline fetches the chunks of
  // the blocks after the one being fetched this way, so that their round trips overlap the
  // fetch thread's work. No cache hits are counted. A hint, like PrefetchSegments: Fetch
  // reports the errors.
  [[nodiscard]] Status PrefetchChunks(const std::vector<int64_t>& global,
                                      std::vector<std::shared_ptr<const chunk::Chunk>>* keep_alive) const;
  [[nodiscard]] Result<Block> Decode(FetchedBlock fetched) const;
  [[nodiscard]] Result<Block> Run(const std::vector<int64_t>& global) const;

  const std::vector<FieldSpec>& fields() const { return fields_; }
  const sample::SampleIndex& samples() const { return samples_; }
  const std::vector<std::string>& segment_ids() const { return segment_ids_; }
  static int64_t Slots(const FieldSpec& f) { return f.window ? static_cast<int64_t>(f.window->size()) : 1; }
  const EngineOptions& options() const { return options_; }
  // buffers: the pool every output buffer comes from (shared with a Pipeline's emit stage).
  const std::shared_ptr<BufferPool>& buffers() const { return buffers_; }
  // VideoStats: the statistics of video field `field` (a position in fields()); kInvalidArgument
  // when it is not a video field.
  [[nodiscard]] Result<VideoFieldStats> VideoStats(size_t field) const;
  // BeginVideoPass: a pipeline (one pass over its order) starts: every video field's
  // decoder forgets the positions it fed (decode::VideoFrameDecoder::BeginPass), a hint to
  // its session cache. Thread-safe.
  void BeginVideoPass() const;
  // FetchStats: samples and blocks fetched since Make (every sample Fetch was asked for), and
  // the chunks PrefetchChunks fetched (a pipeline's look-ahead, remote datasets).
  struct FetchStats {
    int64_t samples = 0;
    int64_t blocks = 0;
    int64_t chunks_ahead = 0;
  };
  FetchStats fetch_stats() const {
    return {samples_fetched_.load(), blocks_fetched_.load(), chunks_fetched_ahead_.load()};
  }
  // thread_stats: the engine's threads (ThreadBudget's statistics and the pool's size).
  ThreadStats thread_stats() const;
  // budget: the engine's ThreadBudget (a Pipeline's stages count themselves in it).
  ThreadBudget* budget() const { return budget_.get(); }
  // VideoKeyframes: the index values of every verified keyframe (video_index.h's rules: the
  // `is_keyframe` marks checked against the bitstream, or the bitstream alone) of video field
  // `field` in segment number `segment`, ascending (a value once per keyframe packet: two
  // keyframes logged at one value appear twice). Reads the whole stream, cluster by cluster
  // (a remote dataset fetches one cluster's chunks at a time); the index stays cached.
  // kInvalidArgument when `field` is not a video field or `segment` is out of range; the
  // loads' errors otherwise. Empty when the segment has no packets.
  [[nodiscard]] Result<std::vector<int64_t>> VideoKeyframes(size_t field, int32_t segment) const;

 private:
  struct Prepared;  // per-field resolved types (selector, dtype)
  Engine() = default;

  // SegmentFor: the chunks of `entity_path` in segment number `seg` (see
  // catalog::Dataset::EntitySegment; a remote dataset may fetch them now).
  [[nodiscard]] Result<std::shared_ptr<const store::Segment>> SegmentFor(int32_t seg,
                                                                         const std::string& entity_path) const;
  using BlockSegments = std::map<std::pair<int32_t, std::string>, std::shared_ptr<const store::Segment>>;
  // VideoKey: the video index cache's key of field `field` in segment number `seg`.
  std::string VideoKey(size_t field, int32_t seg) const;
  // VideoSetupWants: the chunks the block's not yet indexed video streams read when their
  // indexes are created (for the block's prefetch).
  void VideoSetupWants(
      const std::map<int32_t, std::vector<size_t>>& samples_by_segment, const BlockSegments& segments,
      std::map<const store::Segment*, std::pair<std::shared_ptr<const store::Segment>, std::set<size_t>>>* wants) const;
  // FetchBlock: Fetch, or with `chunks_only` its part up to Dataset::Prefetch
  // (PrefetchChunks: `fb.keep_alive` holds what it fetched; nothing is counted).
  [[nodiscard]] Result<FetchedBlock> FetchBlock(const std::vector<int64_t>& global, LatestAtMemo* memo,
                                                bool chunks_only) const;
  // FetchVideo / DecodeVideo: the video fields' parts of Fetch and Decode (engine_video.cc);
  // FetchVideo does every video field of the block at once.
  [[nodiscard]] Status FetchVideo(const std::map<int32_t, std::vector<size_t>>& samples_by_segment,
                                  const BlockSegments& segments, FetchedBlock* fb) const;
  [[nodiscard]] Status DecodeVideo(const FetchedBlock& fb, Block* out) const;

  std::shared_ptr<const catalog::Dataset> dataset_;
  std::vector<std::string> segment_ids_;  // by segment number
  sample::SampleIndex samples_;
  std::vector<FieldSpec> fields_;
  std::vector<std::shared_ptr<const Prepared>> prepared_;
  EngineOptions options_;
  std::unique_ptr<ThreadBudget> budget_;  // before pool_: the pool's threads use it until joined
  int task_weight_ = 1;                   // slots a pool task holds
  std::unique_ptr<ThreadPool> pool_;
  std::shared_ptr<BufferPool> buffers_;  // every field's output buffers
  // Video fields: one decoder (with its session cache) and counters per field (null for
  // other kinds), one index cache for all. Internally thread-safe; mutated by const calls.
  std::vector<std::unique_ptr<decode::VideoFrameDecoder>> video_decoders_;
  std::vector<std::unique_ptr<VideoFieldCounters>> video_counters_;
  std::vector<VideoPrepared> video_prepared_;
  std::unique_ptr<VideoIndexCache> video_indexes_;
  // Counters since Make, for tests and statistics (FetchStats).
  mutable std::atomic<int64_t> samples_fetched_{0};
  mutable std::atomic<int64_t> blocks_fetched_{0};
  mutable std::atomic<int64_t> chunks_fetched_ahead_{0};
};

}  // namespace rrl::engine
