"""A timer structure whose cost does not grow with the number of buffered sessions.

Deadlines are rounded up to integer ticks, and every comparison is made on ticks, never on
float times, so a deadline one float step off a tick boundary cannot bounce between buckets.
Each tick owns a bucket (a list): scheduling is an append, and a heap holds one entry per
non-empty *bucket*, not per item, so its size is bounded by (longest deadline / tick) whatever
the number of sessions. Entries are never removed: the owner marks an item's current tick, and
entries whose tick no longer matches are stale and skipped
(the same idea as the collector's per-second id batches, at a finer grain).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_TOLERANCE = 1e-9  # in ticks: 0.3 / 0.1 is 2.9999999999999996, and must count as tick 3


class TimerWheel(Generic[T]):
    def __init__(self, tick_s: float) -> None:
        if tick_s <= 0:
            raise ValueError("tick must be positive")
        self.tick_s = tick_s
        self._buckets: dict[int, list[T]] = {}
        self._ticks: list[int] = []  # heap of the keys of _buckets

    def tick_of(self, deadline: float) -> int:
        """The first tick at or after ``deadline`` (a hair of tolerance absorbs float error)."""
        return math.ceil(deadline / self.tick_s - _TOLERANCE)

    def current_tick(self, now: float) -> int:
        """The last tick at or before ``now``: items of this tick and earlier are due."""
        return math.floor(now / self.tick_s + _TOLERANCE)

    def schedule(self, item: T, deadline: float) -> int:
        """Add item to the bucket of ``deadline``; returns the tick it was put in."""
        tick = self.tick_of(deadline)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = []
            heapq.heappush(self._ticks, tick)
        bucket.append(item)
        return tick

    def pop_due(self, now: float) -> Iterator[tuple[int, T]]:
        """Yield (tick, item) for every entry whose tick is at or before ``now``."""
        limit = self.current_tick(now)
        while self._ticks and self._ticks[0] <= limit:
            tick = heapq.heappop(self._ticks)
            for item in self._buckets.pop(tick):
                yield tick, item

    def __len__(self) -> int:
        """Entries held, stale ones included."""
        return sum(len(bucket) for bucket in self._buckets.values())
