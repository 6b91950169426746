"""Latency histograms as plain counters. Each is observed where the time is known (a bisect
and an increment) and exposed by ``metrics.py`` at scrape time, so no decision or send code
touches Prometheus."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# First span of a session to its verdict. A lone trace is decided root_end_grace (2 s) after its
# root, a conversation decision_wait (30 s) after its last turn, a trace still running
# open_trace_wait (90 s) after its last span, anything at max_session_duration (5 m).
DECISION_DELAY_BUCKETS: tuple[float, ...] = (
    0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600,
)  # fmt: skip
# One attempt to send one batch downstream: milliseconds on a local network, up to
# exporter.timeout (10 s) when the downstream does not answer.
SEND_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
)  # fmt: skip


class Histogram:
    """Counts of observed values per bucket, as Prometheus buckets them: ``counts[i]`` counts
    the values above ``bounds[i - 1]`` and at most ``bounds[i]``; the last count, those above
    every bound. Not cumulative: ``cumulative()`` gives Prometheus's view."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        if not self.bounds or list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"bucket bounds must be increasing: {bounds}")
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, values at or below it), ending with (inf, all of them)."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


def decision_delays() -> Histogram:
    return Histogram(DECISION_DELAY_BUCKETS)


def send_durations() -> Histogram:
    return Histogram(SEND_DURATION_BUCKETS)
