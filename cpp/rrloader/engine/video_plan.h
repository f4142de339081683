// rrloader/engine/video_plan.h — which frames of which GOPs a block of video samples needs.
//
// Planning is pure arithmetic over the streams' packet times and keyframes (no bytes), so
// it is tested on its own (cpp/tests/engine/video_plan_test.cc). The engine then feeds
// each planned GOP to decode::VideoFrameDecoder::DecodeGop once.
//
// Rules (docs/dataloader.md, "Video"):
//   * A slot's frame is the one of the latest packet whose time is at or before the slot's
//     index value (ties: the packet with the largest row id, i.e. the last one in the
//     stream's order) — the reference's client-side latest-at over real rows.
//   * That packet decodes from the latest verified keyframe at or before it. Slots are
//     grouped by (stream, keyframe): one GOP request per group, whose wanted positions are
//     the unique packets its slots need (overlapping windows and repeated frames of a
//     coarse video on a dense grid share them).
//   * A sample whose slot has no packet at or before it, or whose packet has no keyframe
//     at or before it, is missing; its other slots request nothing.
//   * A request's packets run from its keyframe through its largest wanted position plus
//     up to `lookahead` packets of the same GOP (never into the next keyframe, nor past a
//     packet whose successor is not in the view): a decoder
//     that holds frames back (B-frames) can then deliver them without being flushed.
//
// Positions are packet numbers in the stream's order (0 .. count-1).
//
// Thread safety: stateless functions.
#pragma once

#include <cstdint>
#include <vector>

namespace rrl::engine {

// VideoStreamView: what planning needs to know about one stream of one segment.
struct VideoStreamView {
  const int64_t* times = nullptr;           // packet index values, ascending (ties allowed)
  const int32_t* prior_keyframe = nullptr;  // per packet: latest keyframe position <= it, or -1
  int64_t count = 0;                        // packets
  // continues: per packet, whether the next one in the view is the stream's next packet
  // (a view may hold only parts of a stream: lookahead never crosses a gap). Null: all are.
  const uint8_t* continues = nullptr;
};

// SlotMissing: why a sample's frame cannot be produced (kNone: it can).
enum class SlotMissing : uint8_t {
  kNone = 0,
  kBeforeFirstPacket,  // nothing logged at or before the slot (or no stream in the segment)
  kNoKeyframe,         // a packet exists, but no verified keyframe at or before it
};

// PlannedGop: one GOP request: packets [keyframe, last] of `stream`, frames `wanted`.
struct PlannedGop {
  int32_t stream = 0;
  int64_t keyframe = 0;         // position of the GOP's keyframe
  int64_t last = 0;             // last position to hand to the decoder (>= wanted.back())
  std::vector<int64_t> wanted;  // sorted, unique
  int64_t slots = 0;            // slots served (>= wanted.size())
  // ends_gop: `last` is the GOP's last packet (the view's next packet is the stream's next
  // one and a keyframe); false when that is not known from the view.
  bool ends_gop = false;
};

// VideoSlot: where a slot's frame comes from; gop = -1 when its sample is missing.
struct VideoSlot {
  int32_t gop = -1;
  int64_t position = -1;
};

// VideoBlockPlan: the plan of one field over one block.
struct VideoBlockPlan {
  std::vector<PlannedGop> gops;             // sorted by (stream, keyframe)
  std::vector<VideoSlot> slots;             // [samples * slots_per_sample], sample-major
  std::vector<SlotMissing> sample_missing;  // per sample
};

// PlanVideoBlock: the GOP requests of `sample_stream.size()` samples of `slots_per_sample`
// slots each. `sample_stream[i]` is sample i's stream (an index into `streams`, or -1 when
// its segment has none); `slot_values[i * slots_per_sample + t]` is the index value of its
// slot t. `lookahead` >= 0.
VideoBlockPlan PlanVideoBlock(const std::vector<VideoStreamView>& streams, const std::vector<int32_t>& sample_stream,
                              const std::vector<int64_t>& slot_values, int64_t slots_per_sample, int64_t lookahead);

// LatestPacketAtOrBefore: the position of the last packet with time <= value, or -1.
int64_t LatestPacketAtOrBefore(const VideoStreamView& stream, int64_t value);

}  // namespace rrl::engine
