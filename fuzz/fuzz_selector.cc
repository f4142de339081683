// libFuzzer target: Field.select parsing, type checking and application.
//
// The input is a selector text. It is parsed; when it parses, it is checked against a
// nested type (list<struct<a: float64, b: list<int32>, c: struct<d: uint8>>>) and, when the
// check passes, applied to every cell of a small column of that type and flattened. Nothing
// may crash, read out of bounds or disagree with MeasureFlat's count.
#include <arrow/api.h>
#include <arrow/json/from_string.h>

#include <cstdint>
#include <string>
#include <vector>

#include "rrloader/decode/numeric.h"
#include "rrloader/decode/selector.h"

namespace {

struct Fixture {
  std::shared_ptr<arrow::DataType> instance;
  std::shared_ptr<arrow::ListArray> column;
  Fixture() {
    instance = arrow::struct_({arrow::field("a", arrow::float64()), arrow::field("b", arrow::list(arrow::int32())),
                               arrow::field("c", arrow::struct_({arrow::field("d", arrow::uint8())}))});
    auto r = arrow::json::ArrayFromJSONString(
        arrow::list(instance),
        R"([[{"a": 1, "b": [1, 2], "c": {"d": 3}}, {"a": null, "b": [], "c": null}], [], null,
            [{"a": 2, "b": null, "c": {"d": 4}}]])");
    column = std::static_pointer_cast<arrow::ListArray>(*r);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Fixture fx;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto sel = rrl::decode::Selector::Parse(text);
  if (!sel.ok()) return 0;
  auto type = sel->Check(fx.instance);
  if (!type.ok()) return 0;
  auto leaf = rrl::decode::LeafDType(**type);
  for (int64_t row = 0; row < fx.column->length(); ++row) {
    if (fx.column->IsNull(row)) continue;
    rrl::decode::Span cell{fx.column->values(), fx.column->value_offset(row), fx.column->value_length(row), false};
    rrl::decode::Span out;
    if (!sel->Apply(cell, &out)) continue;
    if (!leaf.ok()) continue;
    const auto st = rrl::decode::MeasureFlat(out);
    if (st.has_null) continue;
    std::vector<uint8_t> buf(static_cast<size_t>(st.count) * 8 + 1);
    rrl::decode::FlattenInto(out, rrl::decode::DType::kFloat64, buf.data());
  }
  return 0;
}
