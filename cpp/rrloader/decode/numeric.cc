// rrloader/decode/numeric.cc — flattening component cells into numeric buffers.
#include "rrloader/decode/numeric.h"

#include <arrow/array.h>
#include <arrow/util/bit_util.h>

#include <cmath>
#include <cstring>

namespace rrl::decode {

namespace {

bool IsListLike(arrow::Type::type id) {
  return id == arrow::Type::LIST || id == arrow::Type::LARGE_LIST || id == arrow::Type::FIXED_SIZE_LIST;
}

// ChildRange: the child array and the [begin, end) child rows of element `i` of a list-like array.
void ChildRange(const arrow::Array& a, int64_t i, std::shared_ptr<arrow::Array>* child, int64_t* begin, int64_t* end) {
  switch (a.type_id()) {
    case arrow::Type::LIST: {
      const auto& l = static_cast<const arrow::ListArray&>(a);
      *child = l.values();
      *begin = l.value_offset(i);
      *end = l.value_offset(i + 1);
      return;
    }
    case arrow::Type::LARGE_LIST: {
      const auto& l = static_cast<const arrow::LargeListArray&>(a);
      *child = l.values();
      *begin = l.value_offset(i);
      *end = l.value_offset(i + 1);
      return;
    }
    default: {
      const auto& l = static_cast<const arrow::FixedSizeListArray&>(a);
      *child = l.values();
      *begin = l.value_offset(i);
      *end = *begin + l.value_length();
      return;
    }
  }
}

// HalfToFloat: IEEE 754 binary16 → binary32 (exact).
float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  uint32_t bits;
  if (exp == 31) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <typename Out>
void StoreAs(DType in, const uint8_t* src, int64_t n, Out* dst) {
  switch (in) {
#define RRL_CASE(E, T)                                               \
  case DType::E: {                                                   \
    const T* s = reinterpret_cast<const T*>(src);                    \
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(s[i]); \
    return;                                                          \
  }
    // int8 values are meant to be sign-extended when widened.
    // NOLINTNEXTLINE(bugprone-signed-char-misuse)
    RRL_CASE(kInt8, int8_t)
    RRL_CASE(kInt16, int16_t)
    RRL_CASE(kInt32, int32_t)
    RRL_CASE(kInt64, int64_t)
    RRL_CASE(kUInt8, uint8_t)
    RRL_CASE(kUInt16, uint16_t)
    RRL_CASE(kUInt32, uint32_t)
    RRL_CASE(kUInt64, uint64_t)
    RRL_CASE(kFloat32, float)
    RRL_CASE(kFloat64, double)
#undef RRL_CASE
    case DType::kFloat16: {
      const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(HalfToFloat(s[i]));
      return;
    }
    case DType::kBool: return;  // handled by the caller (bit-packed)
  }
}

void ConvertRun(DType in, const uint8_t* src, int64_t n, DType out, uint8_t* dst) {
  if (in == out) {
    std::memcpy(dst, src, static_cast<size_t>(n * DTypeSize(in)));
    return;
  }
  switch (out) {
// NOLINTBEGIN(bugprone-macro-parentheses): T is a type
#define RRL_OUT(E, T) \
  case DType::E: StoreAs<T>(in, src, n, reinterpret_cast<T*>(dst)); return;
    // NOLINTEND(bugprone-macro-parentheses)
    RRL_OUT(kInt8, int8_t)
    RRL_OUT(kInt16, int16_t)
    RRL_OUT(kInt32, int32_t)
    RRL_OUT(kInt64, int64_t)
    RRL_OUT(kUInt8, uint8_t)
    RRL_OUT(kUInt16, uint16_t)
    RRL_OUT(kUInt32, uint32_t)
    RRL_OUT(kUInt64, uint64_t)
    RRL_OUT(kFloat32, float)
    RRL_OUT(kFloat64, double)
#undef RRL_OUT
    case DType::kFloat16:
    case DType::kBool: return;  // never a conversion target (PromoteDTypes does not produce them from others)
  }
}

Result<DType> PrimitiveDType(arrow::Type::type id) {
  switch (id) {
    case arrow::Type::BOOL: return DType::kBool;
    case arrow::Type::INT8: return DType::kInt8;
    case arrow::Type::INT16: return DType::kInt16;
    case arrow::Type::INT32: return DType::kInt32;
    case arrow::Type::INT64: return DType::kInt64;
    case arrow::Type::UINT8: return DType::kUInt8;
    case arrow::Type::UINT16: return DType::kUInt16;
    case arrow::Type::UINT32: return DType::kUInt32;
    case arrow::Type::UINT64: return DType::kUInt64;
    case arrow::Type::HALF_FLOAT: return DType::kFloat16;
    case arrow::Type::FLOAT: return DType::kFloat32;
    case arrow::Type::DOUBLE: return DType::kFloat64;
    default: return Status::InvalidArgument("not numeric");
  }
}

void MeasureRange(const arrow::Array& a, int64_t begin, int64_t end, FlatStats* st) {
  const bool maybe_null = a.null_count() != 0;
  if (!IsListLike(a.type_id())) {
    st->count += end - begin;
    if (maybe_null) {
      for (int64_t i = begin; i < end && !st->has_null; ++i) st->has_null = a.IsNull(i);
    }
    return;
  }
  for (int64_t i = begin; i < end; ++i) {
    if (maybe_null && a.IsNull(i)) {
      st->has_null = true;
      continue;
    }
    std::shared_ptr<arrow::Array> child;
    int64_t b = 0, e = 0;
    ChildRange(a, i, &child, &b, &e);
    MeasureRange(*child, b, e, st);
  }
}

// FlattenRange: writes the leaves of rows [begin, end) of `a`; returns the number written.
int64_t FlattenRange(const arrow::Array& a, int64_t begin, int64_t end, DType out, uint8_t* dst) {
  if (!IsListLike(a.type_id())) {
    const int64_t n = end - begin;
    if (n <= 0) return 0;
    const auto in_r = PrimitiveDType(a.type_id());
    if (!in_r.ok()) return 0;  // validated earlier by LeafDType
    const DType in = in_r.value();
    const auto& data = *a.data();
    if (in == DType::kBool) {
      const uint8_t* bits = data.buffers[1]->data();
      for (int64_t i = 0; i < n; ++i) {
        const bool v = arrow::bit_util::GetBit(bits, data.offset + begin + i);
        if (out == DType::kBool) {
          dst[i] = v ? 1 : 0;
        } else {
          const uint8_t byte = v ? 1 : 0;
          ConvertRun(DType::kUInt8, &byte, 1, out, dst + i * DTypeSize(out));
        }
      }
      return n;
    }
    const int width = DTypeSize(in);
    const uint8_t* src = data.buffers[1]->data() + (data.offset + begin) * width;
    ConvertRun(in, src, n, out, dst);
    return n;
  }
  int64_t written = 0;
  const int out_size = DTypeSize(out);
  // Runs of non-null consecutive rows map to one contiguous child range (offsets are
  // monotonic), so a column of 7-value rows is one copy, not seven.
  int64_t i = begin;
  while (i < end) {
    if (a.null_count() != 0 && a.IsNull(i)) {
      ++i;
      continue;
    }
    std::shared_ptr<arrow::Array> child;
    int64_t b = 0, e = 0;
    ChildRange(a, i, &child, &b, &e);
    int64_t j = i + 1;
    int64_t run_end = e;
    while (j < end && !(a.null_count() != 0 && a.IsNull(j))) {
      std::shared_ptr<arrow::Array> c2;
      int64_t b2 = 0, e2 = 0;
      ChildRange(a, j, &c2, &b2, &e2);
      if (b2 != run_end) break;
      run_end = e2;
      ++j;
    }
    written += FlattenRange(*child, b, run_end, out, dst + written * out_size);
    i = j;
  }
  return written;
}

}  // namespace

int DTypeSize(DType t) {
  switch (t) {
    case DType::kBool:
    case DType::kInt8:
    case DType::kUInt8: return 1;
    case DType::kInt16:
    case DType::kUInt16:
    case DType::kFloat16: return 2;
    case DType::kInt32:
    case DType::kUInt32:
    case DType::kFloat32: return 4;
    default: return 8;
  }
}

const char* DTypeName(DType t) {
  static const char* const kNames[] = {"bool",   "int8",   "int16",  "int32",   "int64",   "uint8",
                                       "uint16", "uint32", "uint64", "float16", "float32", "float64"};
  return kNames[static_cast<int>(t)];
}

Result<DType> LeafDType(const arrow::DataType& type) {
  const arrow::DataType* t = &type;
  while (IsListLike(t->id())) t = t->field(0)->type().get();
  auto r = PrimitiveDType(t->id());
  if (!r.ok()) return Status::InvalidArgument("values of type " + type.ToString() + " are not numeric");
  return r;
}

FlatStats MeasureFlat(const Span& span) {
  FlatStats st;
  if (span.array == nullptr) return st;
  MeasureRange(*span.array, span.offset, span.offset + (span.scalar ? 1 : span.length), &st);
  return st;
}

void FlattenInto(const Span& span, DType out, uint8_t* dst) {
  if (span.array == nullptr) return;
  FlattenRange(*span.array, span.offset, span.offset + (span.scalar ? 1 : span.length), out, dst);
}

DType PromoteDTypes(DType a, DType b) {
  if (a == b) return a;
  auto is_float = [](DType t) { return t == DType::kFloat16 || t == DType::kFloat32 || t == DType::kFloat64; };
  auto is_unsigned = [](DType t) {
    return t == DType::kUInt8 || t == DType::kUInt16 || t == DType::kUInt32 || t == DType::kUInt64 || t == DType::kBool;
  };
  if (a == DType::kBool) return b == DType::kFloat16 ? DType::kFloat32 : b;
  if (b == DType::kBool) return a == DType::kFloat16 ? DType::kFloat32 : a;
  if (is_float(a) || is_float(b)) {
    const DType f = is_float(a) ? a : b;
    const DType o = is_float(a) ? b : a;
    if (is_float(o)) return (a == DType::kFloat64 || b == DType::kFloat64) ? DType::kFloat64 : DType::kFloat32;
    // int + float: float32 holds ints up to 16 bits exactly, float64 up to 32 bits.
    if (DTypeSize(o) <= 2 && f != DType::kFloat64) return DType::kFloat32;
    return DType::kFloat64;
  }
  // Both integers.
  const int size = std::max(DTypeSize(a), DTypeSize(b));
  if (is_unsigned(a) == is_unsigned(b)) {
    const bool u = is_unsigned(a);
    switch (size) {
      case 1: return u ? DType::kUInt8 : DType::kInt8;
      case 2: return u ? DType::kUInt16 : DType::kInt16;
      case 4: return u ? DType::kUInt32 : DType::kInt32;
      default: return u ? DType::kUInt64 : DType::kInt64;
    }
  }
  // Mixed signedness: a signed type wide enough for both, float64 past 64 bits (NumPy's rule).
  const DType u = is_unsigned(a) ? a : b;
  const DType s = is_unsigned(a) ? b : a;
  const int need = DTypeSize(u) >= DTypeSize(s) ? DTypeSize(u) * 2 : DTypeSize(s);
  if (need <= 2) return DType::kInt16;
  if (need <= 4) return DType::kInt32;
  if (need <= 8) return DType::kInt64;
  return DType::kFloat64;
}

}  // namespace rrl::decode
