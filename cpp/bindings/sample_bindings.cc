// cpp/bindings/sample_bindings.cc — test entry points for the numpy-exact generator and the
// emission buffer (internal; tests/python/test_numpy_random.py compares them with numpy and
// rerun-sdk):
//
//   _core._np_seed_state(entropy, n_words) -> uint32 array   SeedSequence(entropy).generate_state(n_words)
//   _core._np_pcg64_state(entropy) -> (state_hi, state_lo, inc_hi, inc_lo)
//                                                             PCG64(entropy).state['state']
//   _core._np_integers(entropy, highs) -> int64 array        [rng.integers(h) for h in highs]
//   _core._np_permutation(entropy, n) -> int64 array         rng.permutation(n)
//   _core._emit_order(n, buffer_size, min_fill, entropy) -> int64 array
//                                                             ShuffleBuffer(...).emit_order(n, rng=rng)
//   _core.interleaved_order(run_starts, run_lengths, open_runs, entropy) -> int64 array
//                                                             sample/interleave.h (the dataloader uses it)
//   _core._emission_stream(ids, buffer_size, min_fill, entropy) -> (order, pushed_before)
//       ids pushed one by one, then Finish; pushed_before[k] = how many ids had been pushed
//       when order[k] was emitted.
//
// `entropy` is what `np.random.default_rng` takes: a non-negative int or a sequence of them, of
// any size (rng = np.random.default_rng(entropy)). All draws run with the GIL released.
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/tuple.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "bindings/common.h"
#include "rrloader/sample/emission_buffer.h"
#include "rrloader/sample/interleave.h"
#include "rrloader/sample/numpy_random.h"

namespace rrl_bindings {
namespace {

using namespace nb::literals;
using Int64Array = nb::ndarray<const int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using NumpyArray = nb::ndarray<nb::numpy>;

template <typename T>
NumpyArray OwnedArray(std::vector<T> v) {
  auto* holder = new std::vector<T>(std::move(v));
  nb::capsule owner(holder, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  const size_t shape[1] = {holder->size()};
  return NumpyArray(holder->data(), 1, shape, owner, nullptr, nb::dtype<T>());
}

// AppendIntWords: numpy's _int_to_uint32_array for one Python int of any size.
void AppendIntWords(nb::handle value, std::vector<uint32_t>* words) {
  nb::object index = nb::steal(PyNumber_Index(value.ptr()));  // ints and numpy integers; floats raise
  if (!index.is_valid()) throw nb::python_error();
  const int negative = PyObject_RichCompareBool(index.ptr(), nb::int_(0).ptr(), Py_LT);
  if (negative < 0) throw nb::python_error();
  if (negative) {
    Throw(
        rrl::Status::InvalidArgument("seed entropy must be non-negative, got " + std::string(nb::str(index).c_str())));
  }
  const auto bits = nb::cast<size_t>(index.attr("bit_length")());
  const size_t n_words = bits == 0 ? 1 : (bits + 31) / 32;
  nb::bytes le = nb::cast<nb::bytes>(index.attr("to_bytes")(n_words * 4, "little"));
  const auto* data = static_cast<const uint8_t*>(le.data());
  for (size_t i = 0; i < n_words; ++i) {
    uint32_t w = 0;
    for (int b = 3; b >= 0; --b) w = (w << 8) | data[4 * i + static_cast<size_t>(b)];
    words->push_back(w);
  }
}

// EntropyWords: the words numpy's SeedSequence makes of `entropy` (an int or a sequence of ints).
std::vector<uint32_t> EntropyWords(nb::handle entropy) {
  std::vector<uint32_t> words;
  if (PyIndex_Check(entropy.ptr())) {
    AppendIntWords(entropy, &words);
  } else {
    for (nb::handle item : entropy) AppendIntWords(item, &words);
  }
  return words;
}

rrl::sample::NumpyGenerator Generator(nb::handle entropy) {
  return rrl::sample::NumpyGenerator::FromEntropyWords(EntropyWords(entropy));
}

NumpyArray SeedState(nb::handle entropy, size_t n_words) {
  const rrl::sample::SeedSequence seq(EntropyWords(entropy));
  return OwnedArray(seq.GenerateState32(n_words));
}

std::tuple<uint64_t, uint64_t, uint64_t, uint64_t> Pcg64StateOf(nb::handle entropy) {
  const rrl::sample::Pcg64State s = Generator(entropy).bit_generator().state();
  return {s.state_high, s.state_low, s.inc_high, s.inc_low};
}

NumpyArray Integers(nb::handle entropy, const Int64Array& highs) {
  rrl::sample::NumpyGenerator rng = Generator(entropy);
  std::vector<int64_t> out(highs.shape(0));
  rrl::Status status;
  {
    nb::gil_scoped_release release;
    for (size_t i = 0; i < out.size(); ++i) {
      auto v = rng.Integers(highs.data()[i]);
      if (!v.ok()) {
        status = v.status().WithPrefix("highs[" + std::to_string(i) + "]");
        break;
      }
      out[i] = *v;
    }
  }
  if (!status.ok()) Throw(status);
  return OwnedArray(std::move(out));
}

NumpyArray Permutation(nb::handle entropy, int64_t n) {
  rrl::sample::NumpyGenerator rng = Generator(entropy);
  rrl::Result<std::vector<int64_t>> perm = std::vector<int64_t>();
  {
    nb::gil_scoped_release release;
    perm = rng.Permutation(n);
  }
  return OwnedArray(Unwrap(std::move(perm)));
}

NumpyArray EmitOrderOf(int64_t n, int64_t buffer_size, std::optional<int64_t> min_fill, nb::handle entropy) {
  rrl::sample::NumpyGenerator rng = Generator(entropy);
  rrl::Result<std::vector<int64_t>> order = std::vector<int64_t>();
  {
    nb::gil_scoped_release release;
    order = rrl::sample::EmitOrder(n, buffer_size, min_fill, rng);
  }
  return OwnedArray(Unwrap(std::move(order)));
}

std::pair<NumpyArray, NumpyArray> EmissionStream(const Int64Array& ids, int64_t buffer_size,
                                                 std::optional<int64_t> min_fill, nb::handle entropy) {
  auto buffer = Unwrap(rrl::sample::EmissionBuffer::Make(buffer_size, min_fill, Generator(entropy)));
  std::vector<int64_t> order;
  std::vector<int64_t> pushed_before;
  rrl::Status status;
  {
    nb::gil_scoped_release release;
    const auto n = static_cast<int64_t>(ids.shape(0));
    for (int64_t i = 0; i < n && status.ok(); ++i) {
      auto emitted = buffer.Push(ids.data()[i]);
      if (!emitted.ok()) {
        status = emitted.status();
      } else if (emitted->has_value()) {
        order.push_back(**emitted);
        pushed_before.push_back(i + 1);
      }
    }
    if (status.ok()) {
      auto rest = buffer.Finish();
      if (!rest.ok()) {
        status = rest.status();
      } else {
        for (int64_t id : *rest) {
          order.push_back(id);
          pushed_before.push_back(n);
        }
      }
    }
  }
  if (!status.ok()) Throw(status);
  return {OwnedArray(std::move(order)), OwnedArray(std::move(pushed_before))};
}

NumpyArray InterleavedOrderOf(const Int64Array& run_starts, const Int64Array& run_lengths, int64_t open_runs,
                              nb::handle entropy) {
  rrl::sample::NumpyGenerator rng = Generator(entropy);
  std::vector<int64_t> starts(run_starts.data(), run_starts.data() + run_starts.shape(0));
  std::vector<int64_t> lengths(run_lengths.data(), run_lengths.data() + run_lengths.shape(0));
  rrl::Result<std::vector<int64_t>> order = std::vector<int64_t>();
  {
    nb::gil_scoped_release release;
    order = rrl::sample::InterleavedOrder(starts, lengths, open_runs, rng);
  }
  return OwnedArray(Unwrap(std::move(order)));
}

}  // namespace

void BindSample(nb::module_& m) {
  m.def("_np_seed_state", &SeedState, "entropy"_a, "n_words"_a);
  m.def("_np_pcg64_state", &Pcg64StateOf, "entropy"_a);
  m.def("_np_integers", &Integers, "entropy"_a, "highs"_a);
  m.def("_np_permutation", &Permutation, "entropy"_a, "n"_a);
  m.def("interleaved_order", &InterleavedOrderOf, "run_starts"_a, "run_lengths"_a, "open_runs"_a, "entropy"_a,
        "The decode-once shuffle's epoch order (sample/interleave.h; internal).");
  m.def("_emit_order", &EmitOrderOf, "n"_a, "buffer_size"_a, "min_fill"_a.none(), "entropy"_a);
  m.def("_emission_stream", &EmissionStream, "ids"_a, "buffer_size"_a, "min_fill"_a.none(), "entropy"_a);
}

}  // namespace rrl_bindings
