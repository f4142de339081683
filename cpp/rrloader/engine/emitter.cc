// rrloader/engine/emitter.cc
#include "rrloader/engine/emitter.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace rrl::engine {

Result<std::unique_ptr<Emitter>> Emitter::Make(const EmitOptions& options, size_t num_fields,
                                               std::shared_ptr<BufferPool> buffers) {
  if (!options.emit_order.empty()) {
    if (options.buffer_size != 0 || options.skip_incomplete || options.restore_rng) {
      return Status::InvalidArgument("an explicit emission order excludes the emission buffer and skipping");
    }
    const auto n = static_cast<int64_t>(options.emit_order.size());
    std::vector<uint8_t> seen(options.emit_order.size(), 0);
    for (int64_t p : options.emit_order) {
      if (p < 0 || p >= n || seen[static_cast<size_t>(p)]) {
        return Status::InvalidArgument("the emission order is not a permutation of 0.." + std::to_string(n - 1) +
                                       " (entry " + std::to_string(p) + ")");
      }
      seen[static_cast<size_t>(p)] = 1;
    }
  }
  if (!options.required.empty()) {
    if (options.required.size() != num_fields) {
      return Status::InvalidArgument("required: " + std::to_string(options.required.size()) + " flags for " +
                                     std::to_string(num_fields) + " fields");
    }
    if (options.skip_incomplete) return Status::InvalidArgument("required fields exclude skipping");
  }
  auto e = std::unique_ptr<Emitter>(new Emitter(options, num_fields, std::move(buffers)));
  if (options.buffer_size != 0) {
    std::optional<int64_t> min_fill;
    if (options.min_fill >= 0) min_fill = options.min_fill;
    Result<sample::EmissionBuffer> buffer = Status::Internal("unset");
    if (options.restore_rng) {
      buffer = sample::EmissionBuffer::Restore(options.buffer_size, min_fill,
                                               sample::NumpyGenerator(sample::Pcg64::FromState(*options.restore_rng)),
                                               options.restore_held, options.restore_awaiting_extra);
      for (int64_t id : options.restore_held) e->restoring_[id] = true;
    } else {
      buffer = sample::EmissionBuffer::Make(options.buffer_size, min_fill,
                                            sample::NumpyGenerator::FromInts(options.buffer_seed));
    }
    if (!buffer.ok()) return buffer.status().WithPrefix("emission buffer");
    e->buffer_.emplace(std::move(*buffer));
  }
  return e;
}

Emitter::Emitter(const EmitOptions& options, size_t num_fields, std::shared_ptr<BufferPool> buffers)
    : options_(options),
      num_fields_(num_fields),
      buffers_(std::move(buffers)),
      total_by_field_(num_fields, 0),
      first_skipped_(num_fields, 0) {}

bool Emitter::Drop(const Block& block, size_t i, EmitStats* stats) {
  ++stats->skipped;
  ++total_skipped_;
  ++consecutive_;
  for (size_t f = 0; f < num_fields_; ++f) {
    if (block.fields[f].valid[i]) continue;
    ++stats->skipped_by_field[f];
    if (total_by_field_[f]++ == 0) first_skipped_[f] = total_skipped_;
  }
  if (options_.max_consecutive_skips >= 0 && consecutive_ > options_.max_consecutive_skips) {
    stats->skip_limit_exceeded = true;
    stats->consecutive_skipped = consecutive_;
    stats->total_skipped = total_skipped_;
    stats->total_skipped_by_field = total_by_field_;
    stats->first_skipped = first_skipped_;
    stopped_ = true;
    return false;
  }
  return true;
}

EmitSnapshot Emitter::Snapshot() const {
  EmitSnapshot s;
  s.held = buffer_->held();
  s.awaiting_extra = buffer_->awaiting_extra();
  s.rng = buffer_->generator().bit_generator().state();
  s.finished = buffer_->finished();
  return s;
}

bool Emitter::LacksRequired(const Block& block, size_t i, EmitStats* stats) {
  if (options_.required.empty()) return false;
  std::vector<int64_t> lacking;
  for (size_t f = 0; f < num_fields_; ++f) {
    if (options_.required[f] && !block.fields[f].valid[i]) lacking.push_back(static_cast<int64_t>(f));
  }
  if (lacking.empty()) return false;
  stats->required_missing = true;
  stats->missing_global = block.global[i];
  stats->missing_segment = block.segment_pos[i];
  stats->missing_value = block.values[i];
  stats->missing_fields = std::move(lacking);
  stopped_ = true;
  return true;
}

void Emitter::Hold(const Block& block, size_t i, int64_t id) {
  Stored s = Store(block, i);
  stored_bytes_ += s.bytes;
  stored_.emplace(id, std::move(s));
}

Status Emitter::ProcessOrdered(Block block, std::vector<Block>* out) {
  const size_t n = block.global.size();
  EmitStats stats;
  stats.skipped_by_field.assign(num_fields_, 0);
  // The samples that count: all, or those before the first one lacking a required field.
  size_t arrived = n;
  for (size_t i = 0; i < n; ++i) {
    if (LacksRequired(block, i, &stats)) {
      arrived = i;
      break;
    }
  }
  const int64_t base = next_id_;
  const int64_t limit = base + static_cast<int64_t>(arrived);
  next_id_ += static_cast<int64_t>(n);
  // Samples arrive in fetch order, so an entry can go out once its position is below `limit`.
  const std::vector<int64_t>& order = options_.emit_order;
  std::vector<int64_t> sequence;
  std::vector<uint8_t> out_now(arrived, 0);  // samples of this block handed out now
  bool waited = false;                       // some of them come from earlier blocks
  while (next_emit_ < order.size() && order[next_emit_] < limit) {
    const int64_t p = order[next_emit_++];
    sequence.push_back(p);
    if (p < base) {
      waited = true;
    } else {
      out_now[static_cast<size_t>(p - base)] = 1;
    }
  }
  stats.total_skipped = total_skipped_;
  stats.total_skipped_by_field = total_by_field_;
  stats.first_skipped = first_skipped_;
  if (!waited) {
    // Pass the block through (no copy); the samples that wait for their turn are copied out.
    if (!stopped_) {
      for (size_t i = 0; i < arrived; ++i) {
        if (!out_now[i]) Hold(block, i, base + static_cast<int64_t>(i));
      }
    }
    block.emit.clear();
    for (int64_t p : sequence) block.emit.push_back(static_cast<int32_t>(p - base));
    stats.buffered = static_cast<int64_t>(stored_.size());
    stats.buffered_bytes = stored_bytes_;
    block.emitted = std::move(stats);
    out->push_back(std::move(block));
    return Status::OK();
  }
  for (size_t i = 0; i < arrived; ++i) {
    if (out_now[i] || !stopped_) Hold(block, i, base + static_cast<int64_t>(i));
  }
  out->push_back(Gather(sequence, std::move(stats), EmitSnapshot{}));
  return Status::OK();
}

Status Emitter::Admit(const Block& block, size_t i, std::vector<int64_t>* emitted, std::vector<int64_t>* pushes) {
  const int64_t id = block.positions[i];
  if (stored_.count(id) != 0) return Status::Internal("emit stage: position " + std::to_string(id) + " twice");
  Stored s = Store(block, i);
  stored_bytes_ += s.bytes;
  stored_.emplace(id, std::move(s));
  if (restoring_.erase(id) != 0) return Status::OK();  // it was in the buffer already
  if (!restoring_.empty()) {
    return Status::Internal("emit stage: position " + std::to_string(id) + " before the restored buffer's samples");
  }
  pushes->push_back(id);
  auto picked = buffer_->Push(id);
  if (!picked.ok()) return picked.status();
  if (picked->has_value()) emitted->push_back(**picked);
  return Status::OK();
}

Status Emitter::Process(Block block, std::vector<Block>* out) {
  if (stopped_) return Status::OK();
  const size_t n = block.global.size();
  if (block.fields.size() != num_fields_) return Status::Internal("emit stage: field count mismatch");
  if (dtypes_.empty()) {
    for (const auto& fo : block.fields) {
      dtypes_.push_back(fo.dtype);
      yuv_.push_back(fo.yuv);
    }
  }
  if (!options_.emit_order.empty()) return ProcessOrdered(std::move(block), out);
  EmitStats stats;
  stats.skipped_by_field.assign(num_fields_, 0);
  std::vector<int32_t> emit;     // without a buffer: positions in `block`
  std::vector<int64_t> emitted;  // with one: the stored samples it let out
  std::vector<int64_t> pushes;
  EmitSnapshot snapshot;
  if (buffer_) snapshot = Snapshot();
  if (block.positions.size() != n) return Status::Internal("emit stage: a block without positions");
  emit.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (LacksRequired(block, i, &stats)) break;
    bool complete = true;
    for (size_t f = 0; f < num_fields_ && complete; ++f) complete = block.fields[f].valid[i] != 0;
    if (!complete && options_.skip_incomplete) {
      if (!Drop(block, i, &stats)) break;
      continue;
    }
    consecutive_ = 0;
    if (buffer_) {
      RRL_RETURN_IF_ERROR(Admit(block, i, &emitted, &pushes));
    } else {
      emit.push_back(static_cast<int32_t>(i));
    }
  }
  stats.total_skipped = total_skipped_;
  stats.total_skipped_by_field = total_by_field_;
  stats.first_skipped = first_skipped_;
  if (buffer_) {
    // The decoded block is released here: every sample it contributed now has bytes of its own.
    snapshot.pushes = std::move(pushes);
    out->push_back(Gather(emitted, std::move(stats), std::move(snapshot)));
    return Status::OK();
  }
  block.emit = std::move(emit);
  block.emitted = std::move(stats);
  out->push_back(std::move(block));
  return Status::OK();
}

Status Emitter::Finish(std::vector<Block>* out) {
  if (!stopped_ && next_emit_ < options_.emit_order.size()) {
    return Status::Internal("emit stage: the iteration ended before sample " +
                            std::to_string(options_.emit_order[next_emit_]) + " of the emission order arrived");
  }
  if (stopped_ || !buffer_ || buffer_->finished()) return Status::OK();
  if (!restoring_.empty()) return Status::Internal("emit stage: the restored buffer's samples never came");
  EmitSnapshot snapshot = Snapshot();
  snapshot.finished = true;
  auto rest = buffer_->Finish();
  if (!rest.ok()) return rest.status();
  if (rest->empty()) return Status::OK();
  EmitStats stats;
  stats.skipped_by_field.assign(num_fields_, 0);
  stats.total_skipped = total_skipped_;
  stats.total_skipped_by_field = total_by_field_;
  stats.first_skipped = first_skipped_;
  out->push_back(Gather(*rest, std::move(stats), std::move(snapshot)));
  return Status::OK();
}

Emitter::Stored Emitter::Store(const Block& block, size_t i) {
  Stored s;
  s.global = block.global[i];
  s.segment_pos = block.segment_pos[i];
  s.value = block.values[i];
  for (size_t f = 0; f < num_fields_; ++f) {
    const FieldOutput& fo = block.fields[f];
    const int64_t bytes = fo.valid[i] ? SampleBytes(fo, i) : 0;
    auto data = buffers_->Allocate(std::max<int64_t>(bytes, 1));
    const uint8_t* src = fo.sample_data.empty() ? fo.data.get() + fo.offsets[i] : fo.sample_data[i].get();
    if (bytes > 0) std::memcpy(data.get(), src, static_cast<size_t>(bytes));
    s.data.push_back(std::move(data));
    s.shapes.push_back(fo.valid[i] ? fo.shapes[i] : std::vector<int64_t>{});
    s.valid.push_back(fo.valid[i]);
    s.color_space.push_back(fo.yuv ? fo.color_space[i] : 0);
    s.color_range.push_back(fo.yuv ? fo.color_range[i] : 0);
    s.bytes += bytes;
  }
  return s;
}

Block Emitter::Gather(const std::vector<int64_t>& ids, EmitStats stats, EmitSnapshot snapshot) {
  Block b;
  b.fields.resize(num_fields_);
  for (size_t f = 0; f < num_fields_; ++f) {
    b.fields[f].dtype = dtypes_[f];
    b.fields[f].yuv = yuv_[f];
  }
  for (int64_t id : ids) {
    auto it = stored_.find(id);
    Stored s = std::move(it->second);
    stored_.erase(it);
    stored_bytes_ -= s.bytes;
    b.global.push_back(s.global);
    b.positions.push_back(id);
    b.segment_pos.push_back(s.segment_pos);
    b.values.push_back(s.value);
    for (size_t f = 0; f < num_fields_; ++f) {
      FieldOutput& fo = b.fields[f];
      fo.offsets.push_back(0);
      fo.shapes.push_back(std::move(s.shapes[f]));
      fo.valid.push_back(s.valid[f]);
      fo.sample_data.push_back(std::move(s.data[f]));
      if (fo.yuv) {
        fo.color_space.push_back(s.color_space[f]);
        fo.color_range.push_back(s.color_range[f]);
      }
    }
    b.stats.bytes_out += s.bytes;
  }
  for (size_t i = 0; i < b.global.size(); ++i) b.emit.push_back(static_cast<int32_t>(i));
  stats.buffered = static_cast<int64_t>(stored_.size());
  stats.buffered_bytes = stored_bytes_;
  b.emitted = std::move(stats);
  if (buffer_) b.snapshot = std::make_shared<const EmitSnapshot>(std::move(snapshot));
  return b;
}

}  // namespace rrl::engine
