// rrloader/engine/video_plan.cc — GOP planning of a block (see video_plan.h).
#include "rrloader/engine/video_plan.h"

#include <algorithm>
#include <map>
#include <utility>

namespace rrl::engine {

int64_t LatestPacketAtOrBefore(const VideoStreamView& stream, int64_t value) {
  const int64_t* end = stream.times + stream.count;
  const int64_t* it = std::upper_bound(stream.times, end, value);
  return static_cast<int64_t>(it - stream.times) - 1;
}

VideoBlockPlan PlanVideoBlock(const std::vector<VideoStreamView>& streams, const std::vector<int32_t>& sample_stream,
                              const std::vector<int64_t>& slot_values, int64_t slots_per_sample, int64_t lookahead) {
  VideoBlockPlan plan;
  const size_t n = sample_stream.size();
  const auto T = static_cast<size_t>(std::max<int64_t>(slots_per_sample, 1));
  plan.slots.assign(n * T, VideoSlot{});
  plan.sample_missing.assign(n, SlotMissing::kNone);

  // (stream, keyframe) -> GOP number; filled in key order so gops come out sorted.
  std::map<std::pair<int32_t, int64_t>, std::vector<std::pair<size_t, int64_t>>> groups;  // -> (slot, position)
  std::vector<int64_t> positions(T);
  std::vector<int64_t> keyframes(T);
  for (size_t i = 0; i < n; ++i) {
    const int32_t s = sample_stream[i];
    SlotMissing missing = SlotMissing::kNone;
    for (size_t t = 0; t < T && missing == SlotMissing::kNone; ++t) {
      if (s < 0) {
        missing = SlotMissing::kBeforeFirstPacket;
        break;
      }
      const VideoStreamView& view = streams[static_cast<size_t>(s)];
      const int64_t p = LatestPacketAtOrBefore(view, slot_values[i * T + t]);
      if (p < 0) {
        missing = SlotMissing::kBeforeFirstPacket;
      } else if (view.prior_keyframe[p] < 0) {
        missing = SlotMissing::kNoKeyframe;
      } else {
        positions[t] = p;
        keyframes[t] = view.prior_keyframe[p];
      }
    }
    plan.sample_missing[i] = missing;
    if (missing != SlotMissing::kNone) continue;
    for (size_t t = 0; t < T; ++t) groups[{s, keyframes[t]}].push_back({i * T + t, positions[t]});
  }

  plan.gops.reserve(groups.size());
  for (auto& [key, members] : groups) {
    PlannedGop gop;
    gop.stream = key.first;
    gop.keyframe = key.second;
    gop.slots = static_cast<int64_t>(members.size());
    gop.wanted.reserve(members.size());
    for (const auto& m : members) gop.wanted.push_back(m.second);
    std::sort(gop.wanted.begin(), gop.wanted.end());
    gop.wanted.erase(std::unique(gop.wanted.begin(), gop.wanted.end()), gop.wanted.end());
    const VideoStreamView& view = streams[static_cast<size_t>(gop.stream)];
    gop.last = gop.wanted.back();
    // Lookahead stays inside the GOP: a packet that is its own keyframe starts the next one.
    for (int64_t k = 0; k < lookahead && gop.last + 1 < view.count; ++k) {
      if (view.continues != nullptr && !view.continues[gop.last]) break;
      const int64_t next = gop.last + 1;
      if (view.prior_keyframe[next] == next) break;
      gop.last = next;
    }
    const int64_t next = gop.last + 1;
    gop.ends_gop = next < view.count && (view.continues == nullptr || view.continues[gop.last] != 0) &&
                   view.prior_keyframe[next] == next;
    const auto number = static_cast<int32_t>(plan.gops.size());
    for (const auto& m : members) plan.slots[m.first] = VideoSlot{number, m.second};
    plan.gops.push_back(std::move(gop));
  }
  return plan;
}

}  // namespace rrl::engine
