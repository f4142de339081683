// rrloader/sample/emission_buffer.cc — see emission_buffer.h.
#include "rrloader/sample/emission_buffer.h"

#include <string>
#include <utility>

namespace rrl::sample {

Result<EmissionBuffer> EmissionBuffer::Make(int64_t buffer_size, std::optional<int64_t> min_fill,
                                            NumpyGenerator generator) {
  if (buffer_size < 2) {
    return Status::InvalidArgument("emission buffer: buffer_size must be at least 2, got " +
                                   std::to_string(buffer_size));
  }
  if (min_fill.has_value() && (*min_fill < 1 || *min_fill > buffer_size)) {
    return Status::InvalidArgument("emission buffer: min_fill must be in [1, buffer_size=" +
                                   std::to_string(buffer_size) + "], got " + std::to_string(*min_fill));
  }
  return EmissionBuffer(buffer_size, min_fill.value_or(buffer_size / 2), generator);
}

Result<EmissionBuffer> EmissionBuffer::Restore(int64_t buffer_size, std::optional<int64_t> min_fill,
                                               NumpyGenerator generator, std::vector<int64_t> held,
                                               bool awaiting_extra) {
  auto b = Make(buffer_size, min_fill, generator);
  if (!b.ok()) return b.status();
  if (static_cast<int64_t>(held.size()) >= buffer_size) {
    return Status::InvalidArgument("emission buffer: cannot restore " + std::to_string(held.size()) +
                                   " held ids into a buffer of " + std::to_string(buffer_size));
  }
  b->held_ = std::move(held);
  b->state_ = awaiting_extra ? State::kAwaitingExtra : State::kAwaitingItem;
  return b;
}

EmissionBuffer::EmissionBuffer(int64_t buffer_size, int64_t min_fill, NumpyGenerator generator)
    : buffer_size_(buffer_size), min_fill_(min_fill), generator_(generator) {
  held_.reserve(static_cast<size_t>(buffer_size));
}

int64_t EmissionBuffer::Pick() {
  const auto j = static_cast<size_t>(generator_.BoundedInclusive(held_.size() - 1));  // rng.integers(len)
  std::swap(held_[j], held_.back());
  const int64_t id = held_.back();
  held_.pop_back();
  return id;
}

Result<std::optional<int64_t>> EmissionBuffer::Push(int64_t id) {
  switch (state_) {
    case State::kFinished:
      return Status::InvalidArgument("emission buffer: Push(" + std::to_string(id) + ") after Finish");
    case State::kAwaitingItem:
      held_.push_back(id);
      if (size() < buffer_size_) {
        state_ = State::kAwaitingExtra;
        return std::optional<int64_t>();
      }
      break;
    case State::kAwaitingExtra:
      held_.push_back(id);
      state_ = State::kAwaitingItem;
      break;
  }
  if (size() >= min_fill_) return std::optional<int64_t>(Pick());
  return std::optional<int64_t>();
}

Result<std::vector<int64_t>> EmissionBuffer::Finish() {
  if (state_ == State::kFinished) return Status::InvalidArgument("emission buffer: Finish called twice");
  state_ = State::kFinished;
  std::vector<int64_t> out;
  out.reserve(held_.size());
  while (!held_.empty()) out.push_back(Pick());
  return out;
}

Result<std::vector<int64_t>> EmitOrder(int64_t n, int64_t buffer_size, std::optional<int64_t> min_fill,
                                       NumpyGenerator generator) {
  if (n < 0) return Status::InvalidArgument("emit order: n must be >= 0, got " + std::to_string(n));
  auto buffer = EmissionBuffer::Make(buffer_size, min_fill, generator);
  if (!buffer.ok()) return buffer.status();
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    auto emitted = buffer->Push(i);
    if (!emitted.ok()) return emitted.status();
    if (emitted->has_value()) order.push_back(**emitted);
  }
  auto rest = buffer->Finish();
  if (!rest.ok()) return rest.status();
  order.insert(order.end(), rest->begin(), rest->end());
  return order;
}

}  // namespace rrl::sample
