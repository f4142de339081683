// Tests of Field.select paths and numeric flattening over Arrow cells.
#include <arrow/api.h>
#include <arrow/json/from_string.h>
#include <gtest/gtest.h>

#include "rrloader/decode/numeric.h"
#include "rrloader/decode/selector.h"

namespace rrl::decode {
namespace {

std::shared_ptr<arrow::Array> Json(const std::shared_ptr<arrow::DataType>& type, const std::string& json) {
  auto r = arrow::json::ArrayFromJSONString(type, json);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return *r;
}

TEST(Selector, ParsesAndRejects) {
  EXPECT_TRUE(Selector::Parse(".").ok());
  EXPECT_TRUE(Selector::Parse(".").value().is_identity());
  EXPECT_TRUE(Selector::Parse(".[0].dog").ok());
  EXPECT_TRUE(Selector::Parse(".a.b[2]").ok());
  EXPECT_TRUE(Selector::Parse(".[-1]").ok());
  for (const char* bad : {"", "a", ".[", ".[x]", ".[1", ". .a", ".a..b", ".-"}) {
    auto r = Selector::Parse(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST(Selector, CheckNamesTheMissingStep) {
  auto animal = arrow::struct_({arrow::field("dog", arrow::float64()), arrow::field("bird", arrow::int32())});
  auto sel = Selector::Parse(".[0].cat").value();
  auto r = sel.Check(animal);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'.cat'"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("dog, bird"), std::string::npos) << r.status().message();
  auto ok = Selector::Parse(".[0].dog").value().Check(animal);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE((*ok)->Equals(arrow::float64()));
  EXPECT_FALSE(Selector::Parse(".[0][1]").value().Check(animal).ok());  // a struct is not a list
}

TEST(Selector, AppliesToOneCell) {
  auto type = arrow::struct_({arrow::field("dog", arrow::float64())});
  auto values = Json(type, R"([{"dog": 1.5}, {"dog": 2.5}, {"dog": null}])");
  auto sel = Selector::Parse(".[1].dog").value();
  Span out;
  ASSERT_TRUE(sel.Apply(Span{values, 0, 3, false}, &out));
  EXPECT_TRUE(out.scalar);
  double v = 0;
  FlattenInto(out, DType::kFloat64, reinterpret_cast<uint8_t*>(&v));
  EXPECT_EQ(v, 2.5);
  EXPECT_FALSE(Selector::Parse(".[5].dog").value().Apply(Span{values, 0, 3, false}, &out));  // past the end
  EXPECT_FALSE(Selector::Parse(".[2].dog").value().Apply(Span{values, 0, 3, false}, &out) &&
               !MeasureFlat(out).has_null);  // a null value is missing
  ASSERT_TRUE(Selector::Parse(".[-1]").value().Apply(Span{values, 0, 2, false}, &out));
  EXPECT_EQ(out.offset, 1);
}

TEST(Numeric, FlattensNestedListsRowMajor) {
  auto type = arrow::list(arrow::list(arrow::int32()));
  auto arr = Json(type, "[[[1, 2], [3]], [[4]]]");
  const auto& l = static_cast<const arrow::ListArray&>(*arr);
  Span cell{l.values(), l.value_offset(0), l.value_length(0), false};
  auto st = MeasureFlat(cell);
  EXPECT_EQ(st.count, 3);
  EXPECT_FALSE(st.has_null);
  std::vector<int64_t> out(3);
  FlattenInto(cell, DType::kInt64, reinterpret_cast<uint8_t*>(out.data()));
  EXPECT_EQ(out, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(LeafDType(*type).value(), DType::kInt32);
  EXPECT_FALSE(LeafDType(*arrow::list(arrow::utf8())).ok());
}

TEST(Numeric, FixedSizeListsAndNulls) {
  auto type = arrow::fixed_size_list(arrow::float32(), 3);
  auto arr = Json(type, "[[1, 2, 3], [4, 5, 6], [7, null, 9]]");
  auto st = MeasureFlat(Span{arr, 0, 2, false});
  EXPECT_EQ(st.count, 6);
  EXPECT_FALSE(st.has_null);
  std::vector<float> out(6);
  FlattenInto(Span{arr, 0, 2, false}, DType::kFloat32, reinterpret_cast<uint8_t*>(out.data()));
  EXPECT_EQ(out, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(MeasureFlat(Span{arr, 2, 1, false}).has_null);
}

TEST(Numeric, HalfAndBoolLeaves) {
  auto half = Json(arrow::float16(), "[1.5, -2]");
  std::vector<float> out(2);
  FlattenInto(Span{half, 0, 2, false}, DType::kFloat32, reinterpret_cast<uint8_t*>(out.data()));
  EXPECT_EQ(out, (std::vector<float>{1.5f, -2.0f}));
  auto b = Json(arrow::boolean(), "[true, false, true]");
  std::vector<uint8_t> bo(3);
  FlattenInto(Span{b, 0, 3, false}, DType::kBool, bo.data());
  EXPECT_EQ(bo, (std::vector<uint8_t>{1, 0, 1}));
}

TEST(Numeric, PromotionFollowsNumPy) {
  EXPECT_EQ(PromoteDTypes(DType::kFloat32, DType::kUInt8), DType::kFloat32);
  EXPECT_EQ(PromoteDTypes(DType::kFloat32, DType::kUInt32), DType::kFloat64);
  EXPECT_EQ(PromoteDTypes(DType::kInt8, DType::kUInt8), DType::kInt16);
  EXPECT_EQ(PromoteDTypes(DType::kInt64, DType::kUInt64), DType::kFloat64);
  EXPECT_EQ(PromoteDTypes(DType::kFloat32, DType::kFloat64), DType::kFloat64);
  EXPECT_EQ(PromoteDTypes(DType::kUInt16, DType::kInt32), DType::kInt32);
}

}  // namespace
}  // namespace rrl::decode
