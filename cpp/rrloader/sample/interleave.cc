// rrloader/sample/interleave.cc
#include "rrloader/sample/interleave.h"

#include <algorithm>
#include <string>

namespace rrl::sample {

Result<std::vector<int64_t>> InterleavedOrder(const std::vector<int64_t>& run_starts,
                                              const std::vector<int64_t>& run_lengths, int64_t open_runs,
                                              NumpyGenerator generator) {
  if (run_starts.size() != run_lengths.size()) {
    return Status::InvalidArgument("interleaved order: " + std::to_string(run_starts.size()) + " run starts but " +
                                   std::to_string(run_lengths.size()) + " run lengths");
  }
  if (open_runs < 1) return Status::InvalidArgument("open_runs must be >= 1, got " + std::to_string(open_runs));
  int64_t total = 0;
  for (size_t r = 0; r < run_lengths.size(); ++r) {
    if (run_lengths[r] < 1) {
      return Status::InvalidArgument("run " + std::to_string(r) + " has length " + std::to_string(run_lengths[r]));
    }
    total += run_lengths[r];
  }
  auto opening = generator.Permutation(static_cast<int64_t>(run_starts.size()));
  if (!opening.ok()) return opening.status();
  struct Open {
    int64_t run = 0;
    int64_t next = 0;  // samples of the run emitted so far
  };
  std::vector<Open> open;
  size_t next_run = 0;
  while (next_run < opening->size() && static_cast<int64_t>(open.size()) < open_runs) {
    open.push_back({(*opening)[next_run++], 0});
  }
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(total));
  while (!open.empty()) {
    auto visit = generator.Permutation(static_cast<int64_t>(open.size()));
    if (!visit.ok()) return visit.status();
    for (int64_t slot : *visit) {
      Open& o = open[static_cast<size_t>(slot)];
      order.push_back(run_starts[static_cast<size_t>(o.run)] + o.next);
      ++o.next;
    }
    // End of the round: a finished run's slot goes to the next unopened run, or away.
    std::vector<Open> kept;
    kept.reserve(open.size());
    for (const Open& o : open) {
      if (o.next < run_lengths[static_cast<size_t>(o.run)]) {
        kept.push_back(o);
      } else if (next_run < opening->size()) {
        kept.push_back({(*opening)[next_run++], 0});
      }
    }
    open = std::move(kept);
  }
  return order;
}

}  // namespace rrl::sample
