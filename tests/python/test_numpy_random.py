"""The native numpy-exact generator and emission buffer against numpy and rerun-sdk 0.41, live.

`rrloader._core._np_*` restate `np.random.default_rng(entropy)` (SeedSequence -> PCG64 ->
Generator.integers / Generator.permutation) in C++; `_core._emit_order` / `_core._emission_stream`
restate rerun 0.41's `ShuffleBuffer` (`rerun.experimental.dataloader._shuffle`). Every test draws
the same numbers through numpy or rerun-sdk and requires equality, over a few hundred entropies
picked by a seeded `random.Random` (so a failure reproduces).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from rerun.experimental.dataloader._shuffle import ShuffleBuffer
from rrloader import _core
from rrloader.errors import InvalidArgumentError

# Highs for scalar `rng.integers(k)` calls: k == 1 draws nothing; k - 1 <= 2**32 - 1 takes the
# 32-bit path (Lemire on 32 bits, except k == 2**32, which returns one whole 32-bit draw); larger k
# take Lemire on 64 bits. 2**31 + 1 and 2**62 + 1 reject often, exercising the redraw loops.
EDGE_HIGHS = [1, 2, 3, 10, 1000, 2**31, 2**31 + 1, 2**32 - 1, 2**32, 2**32 + 1, 2**62, 2**62 + 1, 2**63 - 1]
BIG_VALUES = [0, 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64, 2**70 + 3, 2**128 - 1]


def _entropies(count: int, seed: int) -> list:
    """`count` entropies as rerun passes them: single seeds, [epoch, rank, worker] lists, odd shapes."""
    r = random.Random(seed)
    out: list = [0, [0, 0, 0], [], 2**64 - 1, [2**32, 0, 2**70], [np.int64(5), np.uint32(7)]]
    while len(out) < count:
        kind = r.randrange(5)
        if kind == 0:  # a single seed (`default_rng(seed=seed)`)
            out.append(r.choice([r.randrange(2**32), r.randrange(2**64), r.choice(BIG_VALUES)]))
        elif kind == 1:  # [epoch, rank, worker] as rerun's iterable dataset builds it
            out.append([r.randrange(1000), r.randrange(64), r.randrange(16)])
        elif kind == 2:  # [epoch, rank, worker] with large values
            out.append([r.choice(BIG_VALUES + [r.randrange(2**64)]) for _ in range(3)])
        else:  # longer than SeedSequence's 4-word pool
            out.append([r.randrange(2**40) for _ in range(r.randrange(1, 9))])
    return out


def _highs(r: random.Random, count: int) -> list[int]:
    """A mixed stream of highs, so 32-bit and 64-bit draws interleave (numpy buffers half a 64-bit word)."""
    highs = list(EDGE_HIGHS)
    for _ in range(count):
        bits = r.choice([1, 2, 8, 31, 32, 33, 62, 63])
        highs.append(max(1, min(2**63 - 1, r.randrange(2**bits) + 1)))
    r.shuffle(highs)
    return highs


def test_seed_sequence_and_pcg64_state_match_numpy():
    for entropy in _entropies(300, seed=1):
        want = np.random.SeedSequence(entropy).generate_state(9)
        np.testing.assert_array_equal(_core._np_seed_state(entropy, 9), want, err_msg=repr(entropy))
        state = np.random.default_rng(entropy).bit_generator.state["state"]
        hi_s, lo_s, hi_i, lo_i = _core._np_pcg64_state(entropy)
        assert ((hi_s << 64) | lo_s, (hi_i << 64) | lo_i) == (state["state"], state["inc"]), entropy


def test_integers_match_numpy_scalar_calls():
    r = random.Random(2)
    for entropy in _entropies(300, seed=3):
        highs = _highs(r, 40)
        rng = np.random.default_rng(entropy)
        want = [int(rng.integers(h)) for h in highs]
        got = _core._np_integers(entropy, np.array(highs, dtype=np.int64))
        assert got.dtype == np.int64
        assert got.tolist() == want, (entropy, highs)


def test_integers_long_streams_of_one_high():
    # Long runs of one high: the rejection loops and the 32-bit buffering over many draws.
    for entropy, high in [(7, 2**31 + 1), ([1, 2, 3], 3), ([0, 0, 0], 2**32), (2**70, 2**62 + 1), (9, 2)]:
        rng = np.random.default_rng(entropy)
        want = [int(rng.integers(high)) for _ in range(3000)]
        got = _core._np_integers(entropy, np.full(3000, high, dtype=np.int64))
        assert got.tolist() == want, (entropy, high)


def test_integers_reject_what_numpy_rejects():
    with pytest.raises(ValueError):
        np.random.default_rng(0).integers(0)
    with pytest.raises(InvalidArgumentError, match="high must be >= 1"):
        _core._np_integers(0, np.array([5, 0], dtype=np.int64))
    with pytest.raises(ValueError):
        np.random.default_rng(-1)
    with pytest.raises(InvalidArgumentError, match="non-negative"):
        _core._np_integers([1, -1], np.array([5], dtype=np.int64))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000, 100003])
def test_permutation_matches_numpy(n):
    for entropy in _entropies(12 if n > 1000 else 60, seed=n):
        want = np.random.default_rng(entropy).permutation(n)
        got = _core._np_permutation(entropy, n)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want, err_msg=repr(entropy))


@pytest.mark.parametrize("buffer_size", [2, 3, 16, 512])
@pytest.mark.parametrize("min_fill", [None, 1, "buffer_size"])
def test_emit_order_matches_rerun(buffer_size, min_fill):
    fill = buffer_size if min_fill == "buffer_size" else min_fill
    for n in [0, 1, 2, 3, 7, 100, 1000]:
        for entropy in ([n, 0, 0], [3, 1, 2], n * 7919 + buffer_size):
            want = ShuffleBuffer(buffer_size, min_fill=fill).emit_order(n, rng=np.random.default_rng(entropy))
            got = _core._emit_order(n, buffer_size, fill, entropy)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, want, err_msg=f"n={n} entropy={entropy}")


def _reference_stream(ids, buffer_size, min_fill, entropy):
    """rerun's live `ShuffleBuffer.shuffle`, recording how many inputs it had pulled at each yield."""
    pulled = 0

    def items():
        nonlocal pulled
        for i in ids:
            pulled += 1
            yield i

    order, pulled_before = [], []
    buffer = ShuffleBuffer(buffer_size, min_fill=min_fill)
    for item in buffer.shuffle(items(), rng=np.random.default_rng(entropy)):
        order.append(item)
        pulled_before.append(pulled)
    return order, pulled_before


@pytest.mark.parametrize("buffer_size", [2, 3, 8, 64])
@pytest.mark.parametrize("min_fill", [None, 1, 2, "buffer_size"])
def test_streaming_buffer_emits_when_rerun_yields(buffer_size, min_fill):
    # The push-based buffer must yield the same ids at the same input positions as the
    # generator (so the engine holds as many decoded samples as rerun does, no more).
    fill = buffer_size if min_fill == "buffer_size" else min_fill
    r = random.Random(buffer_size * 10 + (fill or 0))
    for n in [0, 1, 2, 3, 4, 5, 9, 10, 200]:
        ids = np.array(r.sample(range(10**12), n), dtype=np.int64)  # ids, not positions
        entropy = [r.randrange(100), r.randrange(8), r.randrange(4)]  # [epoch, rank, worker]
        want_order, want_pulled = _reference_stream(ids.tolist(), buffer_size, fill, entropy)
        got_order, got_pushed = _core._emission_stream(ids, buffer_size, fill, entropy)
        assert got_order.tolist() == want_order, (n, entropy)
        assert got_pushed.tolist() == want_pulled, (n, entropy)


def test_buffer_arguments_validated_like_rerun():
    for buffer_size, min_fill in [(1, None), (0, None), (-5, None), (4, 0), (4, 5), (2, 3)]:
        with pytest.raises(ValueError):
            ShuffleBuffer(buffer_size, min_fill=min_fill)
        with pytest.raises(InvalidArgumentError):
            _core._emit_order(10, buffer_size, min_fill, 0)
    for buffer_size, min_fill in [(2, None), (2, 1), (2, 2), (5, 5)]:
        ShuffleBuffer(buffer_size, min_fill=min_fill)
        assert len(_core._emit_order(10, buffer_size, min_fill, 0)) == 10
    with pytest.raises(InvalidArgumentError, match="n must be >= 0"):
        _core._emit_order(-1, 4, None, 0)
