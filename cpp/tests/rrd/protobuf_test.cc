// Tests of the protobuf wire reader and the framing parsers (rrloader/rrd/).
#include "rrloader/rrd/protobuf.h"

#include <gtest/gtest.h>

#include <string>

#include "rrloader/rrd/codec.h"
#include "rrloader/rrd/messages.h"

namespace rrl::rrd {
namespace {

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string Tag(uint32_t field, uint8_t wire) {
  return Varint((uint64_t{field} << 3) | wire);
}
std::string LenField(uint32_t field, const std::string& bytes) {
  return Tag(field, 2) + Varint(bytes.size()) + bytes;
}

TEST(ProtoReader, ReadsVarintLenAndFixedFieldsAndSkipsNothing) {
  std::string msg = Tag(1, 0) + Varint(300) + LenField(2, "abc") + Tag(3, 5) + std::string("\x01\x00\x00\x00", 4);
  ProtoReader r(msg);
  ProtoField f;
  ASSERT_TRUE(r.Next(&f).ok());
  EXPECT_EQ(f.number, 1u);
  EXPECT_EQ(f.value, 300u);
  ASSERT_TRUE(r.Next(&f).ok());
  EXPECT_EQ(f.bytes, "abc");
  ASSERT_TRUE(r.Next(&f).ok());
  EXPECT_EQ(f.value, 1u);
  EXPECT_TRUE(r.done());
}

TEST(ProtoReader, LengthPastEndIsCorruptWithOffset) {
  std::string msg = Tag(1, 0) + Varint(1) + Tag(2, 2) + Varint(100) + "xy";
  ProtoReader r(msg);
  ProtoField f;
  ASSERT_TRUE(r.Next(&f).ok());
  Status st = r.Next(&f);
  EXPECT_EQ(st.code(), StatusCode::kCorrupt);
  EXPECT_NE(st.message().find("offset 2"), std::string::npos) << st.message();
}

TEST(ProtoReader, UnterminatedVarintIsCorrupt) {
  std::string msg = Tag(1, 0) + std::string("\xff\xff", 2);
  ProtoReader r(msg);
  ProtoField f;
  EXPECT_EQ(r.Next(&f).code(), StatusCode::kCorrupt);
}

TEST(StreamHeader, AcceptsCurrentAndRejectsOldOrForeign) {
  std::string ok("RRF2\x00\x29\x00\x00\x01\x02\x00\x00", 12);
  auto h = ParseStreamHeader(ok);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->version[1], 41);
  EXPECT_EQ(ParseStreamHeader(std::string("RRF1\x00\x29\x00\x00\x01\x02\x00\x00", 12)).status().code(),
            StatusCode::kUnsupported);
  EXPECT_EQ(ParseStreamHeader(std::string("RRF2\x00\x16\x00\x00\x01\x02\x00\x00", 12)).status().code(),
            StatusCode::kUnsupported);  // 0.22
  EXPECT_EQ(ParseStreamHeader(std::string("PK\x03\x04\x00\x29\x00\x00\x01\x02\x00\x00", 12)).status().code(),
            StatusCode::kCorrupt);
  EXPECT_EQ(ParseStreamHeader(std::string("RRF2\x00\x29", 6)).status().code(), StatusCode::kTruncated);
  EXPECT_EQ(ParseStreamHeader(std::string("RRF2\x00\x29\x00\x00\x01\x01\x00\x00", 12)).status().code(),
            StatusCode::kUnsupported);  // MsgPack
}

TEST(ArrowMsg, ParsesFieldsAndRejectsUnknownEncoding) {
  std::string store = Tag(1, 0) + Varint(1) + LenField(2, "rec");
  std::string msg =
      LenField(1, store) + Tag(2, 0) + Varint(1) + Tag(3, 0) + Varint(3) + Tag(4, 0) + Varint(1) + LenField(5, "ipc");
  auto m = ParseArrowMsg(msg);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->store_id.recording_id, "rec");
  EXPECT_EQ(m->payload, "ipc");
  EXPECT_EQ(m->compression, Compression::kNone);
  std::string bad = LenField(1, store) + Tag(4, 0) + Varint(7) + LenField(5, "ipc");
  EXPECT_EQ(ParseArrowMsg(bad).status().code(), StatusCode::kUnsupported);
}

TEST(Codec, CorruptLz4AndAbsurdSizesAreCorrupt) {
  auto owner = std::make_shared<arrow::Buffer>(reinterpret_cast<const uint8_t*>("\xff\xff\xff\xff"), 4);
  std::string_view payload(reinterpret_cast<const char*>(owner->data()), 4);
  EXPECT_EQ(DecompressPayload(owner, payload, Compression::kLz4, 64).status().code(), StatusCode::kCorrupt);
  EXPECT_EQ(DecompressPayload(owner, payload, Compression::kLz4, uint64_t{1} << 40).status().code(),
            StatusCode::kCorrupt);
  auto same = DecompressPayload(owner, payload, Compression::kNone, 0);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ((*same)->data(), owner->data());  // zero copy when uncompressed
}

TEST(FooterTrailer, RecognizesOnlyRrf2Foot) {
  std::string t(32, '\0');
  EXPECT_FALSE(ParseFooterTrailer(t).value().has_value());
  t.replace(20, 8, "RRF2FOOT");
  t[28] = 1;
  t[0] = 42;
  auto parsed = ParseFooterTrailer(t);
  ASSERT_TRUE(parsed.ok());
  ASSERT_TRUE(parsed->has_value());
  EXPECT_EQ((*parsed)->footer_offset, 42u);
  t[28] = 2;
  EXPECT_EQ(ParseFooterTrailer(t).status().code(), StatusCode::kUnsupported);
}

}  // namespace
}  // namespace rrl::rrd
