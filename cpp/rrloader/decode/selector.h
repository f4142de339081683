// rrloader/decode/selector.h — a jq-like path into a component cell (Field.select).
//
// Grammar (a subset of jq, as Rerun's Selector spells it):
//   selector := "." | step+          step := "." name | "." "[" int "]" | "[" int "]"
// e.g. ".dog", ".[0]", ".[0].dog", ".pose.position[2]", ".[-1]" (from the end).
// A cell starts as the *sequence* of its instances (the List row). `[i]` picks element i of
// a sequence (or of a list-typed element); `.name` picks a struct field — of one struct, or
// of every struct of a sequence (a map, which jq would spell `.[].name`).
// An index out of range, or a null on the way, makes the value missing (not an error).
//
// Thread safety: immutable after Parse/Bind; Apply is reentrant.
#pragma once

#include <arrow/type.h>

#include <memory>
#include <string>
#include <vector>

#include "rrloader/common/status.h"
#include "rrloader/decode/numeric.h"

namespace rrl::decode {

class Selector {
 public:
  // Parse: kInvalidArgument with the position of the first character that does not fit.
  [[nodiscard]] static Result<Selector> Parse(const std::string& text);

  const std::string& text() const { return text_; }
  bool is_identity() const { return steps_.empty(); }

  // Check: validates the selector against a cell's instance type (the List's value type)
  // and returns the type of what it selects. A path that does not exist is
  // kInvalidArgument naming the step, the type found and (for structs) the fields there.
  [[nodiscard]] Result<std::shared_ptr<arrow::DataType>> Check(
      const std::shared_ptr<arrow::DataType>& instance_type) const;

  // Apply: the part of `cell` (a sequence Span of the row's instances) the selector picks;
  // false when the value is missing (index out of range or a null on the way).
  bool Apply(const Span& cell, Span* out) const;

 private:
  struct Step {
    bool is_index = false;
    int64_t index = 0;
    std::string name;
  };
  std::string text_;
  std::vector<Step> steps_;
};

}  // namespace rrl::decode
