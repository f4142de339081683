// rrloader/decode/selector.cc — parsing and applying Field.select paths.
#include "rrloader/decode/selector.h"

#include <arrow/array.h>

#include <cctype>

namespace rrl::decode {

namespace {

bool IsListLike(arrow::Type::type id) {
  return id == arrow::Type::LIST || id == arrow::Type::LARGE_LIST || id == arrow::Type::FIXED_SIZE_LIST;
}

std::string StructFields(const arrow::DataType& t) {
  std::string s;
  for (const auto& f : t.fields()) s += (s.empty() ? "" : ", ") + f->name();
  return s;
}

// ElementList: the child range of list element `i`.
void ElementList(const arrow::Array& a, int64_t i, Span* out) {
  switch (a.type_id()) {
    case arrow::Type::LIST: {
      const auto& l = static_cast<const arrow::ListArray&>(a);
      *out = Span{l.values(), l.value_offset(i), l.value_length(i), false};
      return;
    }
    case arrow::Type::LARGE_LIST: {
      const auto& l = static_cast<const arrow::LargeListArray&>(a);
      *out = Span{l.values(), l.value_offset(i), l.value_length(i), false};
      return;
    }
    default: {
      const auto& l = static_cast<const arrow::FixedSizeListArray&>(a);
      *out = Span{l.values(), l.value_offset(i), l.value_length(), false};
      return;
    }
  }
}

}  // namespace

Result<Selector> Selector::Parse(const std::string& text) {
  Selector s;
  s.text_ = text;
  size_t i = 0;
  const size_t n = text.size();
  auto fail = [&](const std::string& why) {
    return Status::InvalidArgument("selector '" + text + "': " + why + " at position " + std::to_string(i));
  };
  while (i < n && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  if (i == n) return fail("empty selector (use '.' for the whole value)");
  if (text[i] != '.') return fail("a selector starts with '.'");
  if (i + 1 == n || std::isspace(static_cast<unsigned char>(text[i + 1]))) {
    ++i;
    while (i < n && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i != n) return fail("unexpected character");
    return s;  // identity
  }
  while (i < n) {
    if (std::isspace(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    bool dot = false;
    if (text[i] == '.') {
      dot = true;
      ++i;
    }
    if (i < n && text[i] == '[') {
      ++i;
      const size_t start = i;
      if (i < n && text[i] == '-') ++i;
      while (i < n && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
      if (i == start || (text[start] == '-' && i == start + 1)) return fail("expected an integer index");
      if (i >= n || text[i] != ']') return fail("expected ']'");
      Step st;
      st.is_index = true;
      try {
        st.index = std::stoll(text.substr(start, i - start));
      } catch (...) {
        return fail("index out of range");
      }
      ++i;
      s.steps_.push_back(st);
      continue;
    }
    if (!dot) return fail("expected '.' or '['");
    const size_t start = i;
    while (i < n && (std::isalnum(static_cast<unsigned char>(text[i])) || text[i] == '_')) ++i;
    if (i == start) return fail("expected a field name or '['");
    Step st;
    st.name = text.substr(start, i - start);
    s.steps_.push_back(st);
  }
  return s;
}

Result<std::shared_ptr<arrow::DataType>> Selector::Check(const std::shared_ptr<arrow::DataType>& instance_type) const {
  std::shared_ptr<arrow::DataType> t = instance_type;
  bool sequence = true;
  std::string done = "";
  for (const Step& st : steps_) {
    const std::string step_text = st.is_index ? "[" + std::to_string(st.index) + "]" : "." + st.name;
    auto fail = [&](const std::string& why) {
      std::string message = "selector '" + text_ + "': step '" + step_text + "' (after '";
      message += done.empty() ? "." : done;
      message += "'): ";
      message += why;
      return Status::InvalidArgument(message);
    };
    if (st.is_index) {
      if (sequence) {
        sequence = false;
      } else if (IsListLike(t->id())) {
        t = t->field(0)->type();
      } else {
        return fail("needs a list, found " + t->ToString());
      }
    } else {
      if (t->id() != arrow::Type::STRUCT) return fail("needs a struct, found " + t->ToString());
      auto f = static_cast<const arrow::StructType&>(*t).GetFieldByName(st.name);
      if (f == nullptr) return fail("struct has no field '" + st.name + "' (fields: " + StructFields(*t) + ")");
      t = f->type();
    }
    done += step_text;
  }
  // What is selected: a sequence of t, or one t. NumericDecoder flattens either.
  return sequence ? arrow::list(t) : t;
}

bool Selector::Apply(const Span& cell, Span* out) const {
  Span cur = cell;
  for (const Step& st : steps_) {
    if (st.is_index) {
      Span seq = cur;
      if (cur.scalar) {
        if (cur.array->IsNull(cur.offset)) return false;
        ElementList(*cur.array, cur.offset, &seq);
      }
      const int64_t idx = st.index < 0 ? seq.length + st.index : st.index;
      if (idx < 0 || idx >= seq.length) return false;
      cur = Span{seq.array, seq.offset + idx, 1, true};
      if (cur.array->IsNull(cur.offset)) return false;
    } else {
      const auto& s = static_cast<const arrow::StructArray&>(*cur.array);
      if (cur.scalar && s.IsNull(cur.offset)) return false;
      // A struct's child arrays share its offset space (StructArray::field applies the
      // parent's slice offset), so element i of the struct is element i of the child.
      std::shared_ptr<arrow::Array> child = s.GetFieldByName(st.name);
      if (child == nullptr) return false;
      if (!cur.scalar && s.null_count() != 0) {
        for (int64_t i = cur.offset; i < cur.offset + cur.length; ++i) {
          if (s.IsNull(i)) return false;
        }
      }
      cur.array = std::move(child);
    }
  }
  *out = cur;
  return true;
}

}  // namespace rrl::decode
