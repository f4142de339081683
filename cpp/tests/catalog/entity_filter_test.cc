// Tests of the entity path filter and column naming of rrloader/catalog/.
#include <gtest/gtest.h>

#include "rrloader/catalog/local_dataset.h"
#include "rrloader/io/file.h"
#include "rrloader/rrd/reader.h"

namespace rrl::catalog {
namespace {

TEST(EntityFilter, DefaultSkipsReservedPaths) {
  auto f = EntityFilter::Default();
  EXPECT_TRUE(f.Matches("/robot/arm"));
  EXPECT_FALSE(f.Matches("/__properties"));
}

TEST(EntityFilter, SubtreeExactAndExclusion) {
  auto f = EntityFilter::Parse({"/robot/**", "-/robot/cam", "+ /other"}).value();
  EXPECT_TRUE(f.Matches("/robot"));
  EXPECT_TRUE(f.Matches("/robot/arm/joint"));
  EXPECT_FALSE(f.Matches("/robot/cam"));
  EXPECT_TRUE(f.Matches("/robot/cam/left"));  // only the exact path was excluded
  EXPECT_TRUE(f.Matches("/other"));
  EXPECT_FALSE(f.Matches("/other/child"));
  EXPECT_FALSE(f.Matches("/robotic"));
  auto props = EntityFilter::Parse({"/__properties/**"}).value();
  EXPECT_TRUE(props.Matches("/__properties"));
  EXPECT_FALSE(EntityFilter::Parse({"/**"}).value().Matches("/__properties"));
}

TEST(EntityFilter, OfIdenticalRulesTheLastOneCounts) {
  // rerun keeps its rules in a map keyed by (path, subtree): a repeated rule replaces the earlier one
  // (differential case 921: "-/odd/**" then "/odd/**" keeps /odd).
  EXPECT_TRUE(EntityFilter::Parse({"-/odd/**", "/odd/**"}).value().Matches("/odd/joint"));
  EXPECT_FALSE(EntityFilter::Parse({"/odd/**", "-/odd/**"}).value().Matches("/odd/joint"));
  EXPECT_TRUE(EntityFilter::Parse({"-/odd", "+ /odd"}).value().Matches("/odd"));
  // Different rules still go by specificity, not order.
  EXPECT_FALSE(EntityFilter::Parse({"-/odd/joint", "/odd/**"}).value().Matches("/odd/joint"));
}

TEST(ColumnName, PropertiesArePrefixed) {
  EXPECT_EQ(ColumnName("/cam", "EncodedImage:blob"), "/cam:EncodedImage:blob");
  EXPECT_EQ(ColumnName("/__properties", "RecordingInfo:name"), "property:RecordingInfo:name");
  EXPECT_EQ(ColumnName("/__properties/episode", "Scalars:scalars"), "property:episode:Scalars:scalars");
}

TEST(OpenRrd, GarbageAndEmptyInputsFailWithoutCrashing) {
  auto empty = io::MemorySource("mem.rrd", std::make_shared<arrow::Buffer>(nullptr, 0));
  EXPECT_EQ(rrd::OpenRrd(empty).status().code(), StatusCode::kTruncated);
  static const uint8_t junk[] = "RRF2\x00\x29\x00\x00\x01\x02\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\xff\xff";
  auto src = io::MemorySource("mem.rrd", std::make_shared<arrow::Buffer>(junk, sizeof(junk) - 1));
  auto st = rrd::OpenRrd(src).status();
  EXPECT_EQ(st.code(), StatusCode::kTruncated);
  EXPECT_NE(st.message().find("mem.rrd"), std::string::npos);
  EXPECT_NE(st.message().find("byte offset 12"), std::string::npos) << st.message();
}

TEST(LocalDataset, MissingDirectoryIsNotFound) {
  auto r = LocalDataset::Open({"/nonexistent/dir"}, OpenOptions{});
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace rrl::catalog
