"""Typed adapters around the Apache DataSketches sketches the sampler uses.

datasketches ships no type stubs: this module is the only one that imports it. Every value
crossing the boundary is converted to a plain `int`, `float`, `str` or `bytes`, and misuse the
library would report as an opaque `RuntimeError` (or accept silently) is a `ValueError` here.

Both sketches are mergeable (a sketch of stream A merged with one of stream B answers for
A + B within the same bounds) and serialisable, and their memory is bounded by their size
parameter whatever the number of distinct inputs:

- `FrequentStrings` (`frequent_strings_sketch`): heavy hitters with guaranteed error bounds;
- `TailQuantiles` (`tdigest_float`): deterministic, with a rank error that shrinks towards the
  tails, which is what tail scores at the 99th percentile need (KLL's additive rank error is
  uniform over all ranks and exceeds the whole far tail, and its coin flips are seeded per
  process: two sketches of one stream may answer differently).
"""

from __future__ import annotations

import math
import struct
from typing import Any, Final

import datasketches as _ds

MIN_LG_MAX_K: Final = 3
MAX_LG_MAX_K: Final = 24
_NO_FALSE_POSITIVES: Final[Any] = _ds.frequent_items_error_type.NO_FALSE_POSITIVES
# Frequent-items wire format (little-endian): 8 header bytes (preamble longs, serial version,
# family, lg max map size, lg current map size, flags, 2 unused), then, unless empty: item
# count (u32), 4 unused, total weight (u64), offset = maximum error (u64), weights, items.
_FI_NONEMPTY_PREAMBLE: Final = 4
_FI_TOTALS: Final = struct.Struct("<QQ")
_FI_TOTALS_AT: Final = 16


class FrequentStrings:
    """Approximate weights of the heaviest strings of a weighted stream.

    With W the total weight and `error_bound` = 3.5 / 2**lg_max_k * W (the library's a priori
    bound), for every string x:

    - `lower_bound(x) <= true weight of x <= upper_bound(x)`, and the gap is `max_error`
      (the same for every x, never above `error_bound`, usually far below it);
    - a string whose true weight exceeds `max_error` is always tracked; one that is not tracked
      has `estimate` and `lower_bound` 0 and `upper_bound` = `max_error`: strings rarer than about
      W / 2**lg_max_k cannot be told apart from each other or from unseen ones;
    - at most 0.75 * 2**lg_max_k strings are tracked: memory is bounded by lg_max_k and the
      lengths of the tracked strings, not by how many distinct strings went by.

    Works around a library bug (apache/datasketches-cpp#527, unfixed in datasketches 5.2): when
    a purge drops every counter, which streams of equally rare strings cause, the library calls
    the sketch empty, serializes it as empty and skips it in merges, losing its total weight
    and error. Here such a sketch is not empty, and `to_bytes`/`merge` carry both.
    """

    __slots__ = ("_sketch",)

    def __init__(self, lg_max_k: int) -> None:
        if not MIN_LG_MAX_K <= lg_max_k <= MAX_LG_MAX_K:
            raise ValueError(f"lg_max_k must be in [{MIN_LG_MAX_K}, {MAX_LG_MAX_K}]: {lg_max_k}")
        self._sketch: Any = _ds.frequent_strings_sketch(lg_max_k)

    @classmethod
    def from_bytes(cls, data: bytes) -> FrequentStrings:
        restored = cls.__new__(cls)
        restored._sketch = _ds.frequent_strings_sketch.deserialize(data)
        return restored

    def to_bytes(self) -> bytes:
        data = bytes(self._sketch.serialize())
        if not self._sketch.is_empty() or not self.total_weight:
            return data
        # Purged to no counters: the library wrote the empty form. Write the non-empty form
        # with no items instead, which its reader accepts and restores totals from.
        header = bytes([_FI_NONEMPTY_PREAMBLE]) + data[1:5] + bytes(3)
        totals = _FI_TOTALS.pack(self.total_weight, self.max_error)
        return header + bytes(8) + totals

    def update(self, item: str, weight: int = 1) -> None:
        if weight < 1:
            raise ValueError(f"weight must be a positive integer: {weight}")
        self._sketch.update(item, weight)

    def merge(self, other: FrequentStrings) -> None:
        if not other._sketch.is_empty() or not other.total_weight:
            self._sketch.merge(other._sketch)
            return
        # `other` holds no counters, only weight and error, which the library's merge would
        # drop: add them to this sketch's serialized totals and read it back.
        data = self._non_empty_bytes()
        total, error = _FI_TOTALS.unpack_from(data, _FI_TOTALS_AT)
        totals = _FI_TOTALS.pack(total + other.total_weight, error + other.max_error)
        end = _FI_TOTALS_AT + _FI_TOTALS.size
        self._sketch = _ds.frequent_strings_sketch.deserialize(
            data[:_FI_TOTALS_AT] + totals + data[end:]
        )

    def _non_empty_bytes(self) -> bytes:
        """Serialized in the non-empty form, even when nothing was seen yet."""
        data = self.to_bytes()
        if data[0] == _FI_NONEMPTY_PREAMBLE:
            return data
        header = bytes([_FI_NONEMPTY_PREAMBLE]) + data[1:5] + bytes(3)
        return header + bytes(8) + _FI_TOTALS.pack(0, 0)

    def estimate(self, item: str) -> int:
        """Upper bound when tracked, 0 when not (the library's point estimate)."""
        return int(self._sketch.get_estimate(item))

    def lower_bound(self, item: str) -> int:
        return int(self._sketch.get_lower_bound(item))

    def upper_bound(self, item: str) -> int:
        return int(self._sketch.get_upper_bound(item))

    @property
    def max_error(self) -> int:
        """upper_bound - lower_bound, which the sketch keeps equal for every string."""
        return self.upper_bound("") - self.lower_bound("")

    @property
    def error_bound(self) -> float:
        """The a priori bound on `max_error`: 3.5 / 2**lg_max_k * total_weight."""
        return float(self._sketch.epsilon) * self.total_weight

    @property
    def total_weight(self) -> int:
        return int(self._sketch.total_weight)

    @property
    def is_empty(self) -> bool:
        """Nothing seen yet (the library's own `is_empty` also says so after some purges)."""
        return self.total_weight == 0

    @property
    def tracked(self) -> int:
        return int(self._sketch.num_active_items)

    def top(self, n: int) -> list[tuple[str, int]]:
        """The `n` heaviest strings certain to be heavier than `max_error`, with their
        estimates, heaviest first (ties by string, so the order is deterministic)."""
        if n < 0:
            raise ValueError(f"n must not be negative: {n}")
        rows = self._sketch.get_frequent_items(_NO_FALSE_POSITIVES)
        items = sorted(((str(row[0]), int(row[1])) for row in rows), key=lambda r: (-r[1], r[0]))
        return items[:n]

    def approx_bytes(self) -> int:
        """Serialized size: grows with the tracked strings, bounded by lg_max_k."""
        return int(self._sketch.get_serialized_size_bytes())


class _QuantileSketch:
    """What the quantile adapters share; ``_sketch`` is the wrapped datasketches object."""

    _sketch: Any

    @property
    def is_empty(self) -> bool:
        return bool(self._sketch.is_empty())

    @property
    def min(self) -> float:
        self._require_values()
        return float(self._sketch.get_min_value())

    @property
    def max(self) -> float:
        self._require_values()
        return float(self._sketch.get_max_value())

    def _require_values(self) -> None:
        if self._sketch.is_empty():
            raise ValueError("no values yet")


class TailQuantiles(_QuantileSketch):
    """Ranks and quantiles of a stream of floats (t-digest), accurate where tail scores look.

    Deterministic: the same stream (and the same merges) gives the same answers, bit for bit.
    The t-digest has no proven bound. Measured at k=100 over uniform, lognormal, exponential,
    Pareto, sorted and small-integer streams, the rank error near rank r stays below about
    0.07 * (1 - r) (0.0007 at r=0.99, against a uniform 0.0133 for KLL at k=200); next to a
    gap in the data (a bimodal stream) it reached 0.2 * (1 - r). Values are kept as float32;
    NaN and infinities are ignored. Ranks interpolate between centroids: a value above every
    value seen has rank 1, below every value 0, and a value repeated throughout about 0.5.

    Memory is bounded by k: the serialized size stays under 16 * k bytes (about 1.1 KB at
    k=100), but the library reserves its merge buffer up front, so each sketch holds about 5 KB
    of memory at k=100 (8 KB at k=200) from its first value on.
    """

    __slots__ = ("_sketch", "_count")

    def __init__(self, k: int = 100) -> None:
        if not 10 <= k <= 65535:
            raise ValueError(f"k must be in [10, 65535]: {k}")
        self._sketch: Any = _ds.tdigest_float(k)
        self._count = 0  # kept here: asking the library costs a call per window per score

    @classmethod
    def from_bytes(cls, data: bytes) -> TailQuantiles:
        restored = cls.__new__(cls)
        restored._sketch = _ds.tdigest_float.deserialize(data)
        restored._count = int(restored._sketch.get_total_weight())
        return restored

    def to_bytes(self) -> bytes:
        return bytes(self._sketch.serialize())

    def update(self, value: float) -> None:
        if math.isfinite(value):
            self._sketch.update(value)
            self._count += 1

    def merge(self, other: TailQuantiles) -> None:
        self._sketch.merge(other._sketch)
        self._count = int(self._sketch.get_total_weight())

    @property
    def is_empty(self) -> bool:
        return not self._count

    def below(self, q: float) -> float:
        """The largest value whose rank is below ``q`` (-inf when none is): a value at or below
        it ranks below ``q``, bit for bit as ``rank`` says. Ranks are monotone in the value and
        values are float32 in the sketch: a search over float32 values, from the sketch's own
        quantile outwards, then by halves (about ten ranks). Worth it for a sketch read many
        times before it changes."""
        self._require_values()
        rank = self._sketch.get_rank
        bottom = _float32_order(float(self._sketch.get_min_value())) - 1  # rank 0
        top = _float32_order(float(self._sketch.get_max_value())) + 1  # rank 1
        if rank(_float32_value(bottom)) >= q:
            return -math.inf
        if rank(_float32_value(top)) < q:
            return _float32_value(top)
        guess = min(max(_float32_order(float(self._sketch.get_quantile(q))), bottom), top)
        step = 1
        if rank(_float32_value(guess)) < q:  # the boundary is above: gallop up
            lo, hi = guess, min(guess + step, top)
            while rank(_float32_value(hi)) < q:
                lo, step = hi, step * 4
                hi = min(hi + step, top)
        else:  # at or below: gallop down
            hi, lo = guess, max(guess - step, bottom)
            while rank(_float32_value(lo)) >= q:
                hi, step = lo, step * 4
                lo = max(lo - step, bottom)
        while hi - lo > 1:  # rank(lo) < q <= rank(hi)
            middle = (lo + hi) // 2
            if rank(_float32_value(middle)) < q:
                lo = middle
            else:
                hi = middle
        return _float32_value(lo)

    def rank(self, value: float) -> float:
        """The approximate share of values below `value` (interpolated), in [0, 1]."""
        self._require_values()
        return float(self._sketch.get_rank(value))

    def quantile(self, q: float) -> float:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1]: {q}")
        self._require_values()
        return float(self._sketch.get_quantile(q))

    @property
    def count(self) -> int:
        return self._count

    def approx_bytes(self) -> int:
        """Serialized size (see the class docstring for the memory actually held)."""
        return int(self._sketch.get_serialized_size_bytes())


_FLOAT32 = struct.Struct("<f")
_UINT32 = struct.Struct("<I")


def _float32_order(value: float) -> int:
    """A float32's place in the order of all finite float32s: an int that grows with it."""
    bits = int(_UINT32.unpack(_FLOAT32.pack(value))[0])
    return bits if bits < 0x80000000 else 0x80000000 - bits  # negatives: flipped below zero


def _float32_value(order: int) -> float:
    bits = order if order >= 0 else 0x80000000 - order
    bits = min(max(bits, 0), 0xFFFFFFFF)
    (value,) = _FLOAT32.unpack(_UINT32.pack(bits))
    return float(value)
