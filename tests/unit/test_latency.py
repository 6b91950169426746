"""latency.Histogram buckets as Prometheus does; time_sends times every attempt an exporter makes,
against real downstreams on loopback."""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import pytest

from sampler.export.base import ExporterSettings
from sampler.export.factory import exporter_from_url
from sampler.export.grpc_exporter import GrpcExporter
from sampler.export.http_exporter import HttpExporter
from sampler.latency import (
    DECISION_DELAY_BUCKETS,
    SEND_DURATION_BUCKETS,
    Histogram,
    time_sends,
)
from tests.unit.export.support import (
    FakeClock,
    GrpcCollector,
    HttpCollector,
    make_request,
    run,
    settings,
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


@pytest.mark.parametrize(
    "url",
    ["grpc://127.0.0.1:4317", "http://127.0.0.1:4318", "file://kept.jsonl"],
    ids=["grpc", "http", "file"],
)
def test_every_exporter_the_factory_builds_can_be_timed(url: str) -> None:
    """time_sends reaches into the exporters' transport hook: this fails if it goes away."""
    assert time_sends(exporter_from_url(url, ExporterSettings()), Histogram((1.0,)))


def test_an_object_without_the_hook_is_left_alone() -> None:
    class Other:
        pass

    other = Other()
    assert not time_sends(other, Histogram((1.0,)))
    assert not hasattr(other, "_send")


def test_grpc_sends_are_timed_failed_attempts_included() -> None:
    histogram = Histogram(SEND_DURATION_BUCKETS)

    async def scenario() -> GrpcExporter:
        async with GrpcCollector() as collector:
            collector.failures.append((grpc.StatusCode.UNAVAILABLE, None))
            exporter = GrpcExporter(collector.target, settings(), clock=FakeClock())
            assert time_sends(exporter, histogram)
            await exporter.start()
            assert exporter.try_submit(make_request("a", 2), 2)
            assert await exporter.flush(5.0)
            assert exporter.try_submit(make_request("b", 3), 3)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert (exporter.stats.requests_sent, exporter.stats.retries) == (2, 1)
    assert histogram.count == 3  # the failed attempt, its retry, the second batch
    assert 0 < histogram.sum < 5.0


def test_http_sends_are_timed() -> None:
    histogram = Histogram(SEND_DURATION_BUCKETS)

    async def scenario() -> HttpExporter:
        async with HttpCollector() as collector:
            exporter = HttpExporter(collector.base_url, settings())
            assert time_sends(exporter, histogram)
            await exporter.start()
            assert exporter.try_submit(make_request("a", 2), 2)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert exporter.stats.spans_sent == 2
    assert histogram.count == 1


def test_file_sends_are_timed(tmp_path: Path) -> None:
    histogram = Histogram(SEND_DURATION_BUCKETS)
    exporter = exporter_from_url(f"file://{tmp_path / 'kept.jsonl'}", settings())
    assert time_sends(exporter, histogram)

    async def scenario() -> None:
        await exporter.start()
        assert exporter.try_submit(make_request("a", 2), 2)
        assert await exporter.flush(5.0)
        await exporter.stop(1.0)

    run(scenario())
    assert histogram.count == 1
