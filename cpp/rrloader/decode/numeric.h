// rrloader/decode/numeric.h — cells of component columns as flat numeric values.
//
// A component cell is a List row: the instances logged at one time. NumericDecoder output
// flattens a cell (or what a Selector picked out of it) through every list and
// fixed-size-list level, row-major, into the leaf type's values: a Scalars cell of 7
// values gives 7; two Position3D instances give 6; [[1, 2], [3]] gives 3.
//
// Thread safety: pure functions over immutable Arrow arrays; reentrant.
#pragma once

#include <arrow/array.h>
#include <arrow/type.h>

#include <cstdint>
#include <memory>
#include <string>

#include "rrloader/common/status.h"

namespace rrl::decode {

// DType: element types of the tensors the engine produces (NumPy/PyTorch names in DTypeName).
enum class DType : uint8_t {
  kBool,
  kInt8,
  kInt16,
  kInt32,
  kInt64,
  kUInt8,
  kUInt16,
  kUInt32,
  kUInt64,
  kFloat16,
  kFloat32,
  kFloat64
};

int DTypeSize(DType t);
const char* DTypeName(DType t);  // "float32", "uint8", ...

// Span: a view of `length` consecutive elements of `array` starting at `offset`, or
// (scalar == true) the single element at `offset`. Does not own more than a reference.
struct Span {
  std::shared_ptr<arrow::Array> array;
  int64_t offset = 0;
  int64_t length = 0;
  bool scalar = false;
};

// LeafDType: the numeric element type reached from `type` through list levels, or
// kInvalidArgument naming the type when it is not numeric (strings, structs, ...).
[[nodiscard]] Result<DType> LeafDType(const arrow::DataType& type);

// FlatStats: what flattening a span would produce.
struct FlatStats {
  int64_t count = 0;      // number of leaf values
  bool has_null = false;  // a null at any level (the value counts as missing)
};

// MeasureFlat: counts the leaf values under `span` (cheap: offsets only).
FlatStats MeasureFlat(const Span& span);

// FlattenInto: writes the leaf values under `span` into `dst` converted to `out` (which
// must be able to hold MeasureFlat(span).count elements). Conversion is a C++ static_cast
// from the leaf type (the engine only asks for widening conversions, see PromoteDTypes).
void FlattenInto(const Span& span, DType out, uint8_t* dst);

// PromoteDTypes: the common type of two numeric types, as NumPy's promotion would give
// it for the types we meet (equal types stay; ints widen; int + float → float64 unless
// the int fits exactly in the float's mantissa).
DType PromoteDTypes(DType a, DType b);

}  // namespace rrl::decode
