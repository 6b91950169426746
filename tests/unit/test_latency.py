"""latency.Histogram buckets as Prometheus does. (The exporter times its sends into one:
tests/unit/export.)"""

from __future__ import annotations

import math

import pytest

from sampler.latency import (
    DECISION_DELAY_BUCKETS,
    SEND_DURATION_BUCKETS,
    Histogram,
)


@pytest.mark.parametrize(
    ("value", "bucket"),
    [(0.0, 0), (1.0, 0), (1.5, 1), (2.0, 1), (5.0, 2), (5.01, 3), (1e9, 3), (-1.0, 0)],
    ids=["zero", "on-first-bound", "inside", "on-bound", "on-last-bound", "above", "far", "neg"],
)
def test_a_value_counts_in_the_first_bucket_whose_bound_holds_it(value: float, bucket: int) -> None:
    """Prometheus's `le`: a value equal to a bound belongs to that bound's bucket."""
    histogram = Histogram((1.0, 2.0, 5.0))
    histogram.observe(value)
    assert histogram.counts == [int(i == bucket) for i in range(4)]


def test_cumulative_counts_end_with_every_value_under_inf() -> None:
    histogram = Histogram((1.0, 2.0))
    for value in (0.5, 0.7, 1.5, 3.0, 4.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(1.0, 2), (2.0, 3), (math.inf, 5)]
    assert (histogram.count, histogram.sum) == (5, pytest.approx(9.7))


@pytest.mark.parametrize("bounds", [(), (2.0, 1.0), (1.0, 1.0)], ids=["none", "down", "twice"])
def test_bounds_must_increase(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram(bounds)


def test_the_declared_buckets_are_valid() -> None:
    Histogram(DECISION_DELAY_BUCKETS)
    Histogram(SEND_DURATION_BUCKETS)
