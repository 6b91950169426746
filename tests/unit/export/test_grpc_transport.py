"""The OTLP/gRPC downstream against a real TraceService/Export server on loopback."""

from __future__ import annotations

import socket

import grpc
import pytest

from sampler.export.delivery import QueuedExporter
from sampler.export.factory import exporter_from_url
from sampler.export.retry import RetryPolicy
from tests.unit.export.support import (
    FakeClock,
    GrpcCollector,
    expected_names,
    make_request,
    run,
    settings,
    span_names,
)


def test_requests_arrive_batched_with_headers_and_gzip() -> None:
    async def scenario() -> tuple[GrpcCollector, QueuedExporter]:
        async with GrpcCollector() as collector:
            exporter = exporter_from_url(
                f"grpc://{collector.target}",
                settings(headers={"Authorization": "Bearer t0ken"}, compression="gzip"),
            )
            await exporter.start()
            for prefix in ("a", "b", "c"):
                assert exporter.try_submit(make_request(prefix, 2), 2)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return collector, exporter

    collector, exporter = run(scenario())
    assert len(collector.requests) == 1  # three submitted requests, one Export call
    assert span_names(collector.requests) == expected_names(("a", 2), ("b", 2), ("c", 2))
    assert collector.metadata[0]["authorization"] == "Bearer t0ken"
    assert exporter.name == f"grpc://{collector.target}"
    assert (exporter.stats.requests_sent, exporter.stats.spans_sent) == (1, 6)


def test_unavailable_is_retried_and_nothing_is_lost_or_duplicated() -> None:
    clock = FakeClock()

    async def scenario() -> tuple[GrpcCollector, QueuedExporter]:
        async with GrpcCollector() as collector:
            collector.failures.extend([(grpc.StatusCode.UNAVAILABLE, None)] * 2)
            exporter = exporter_from_url(
                f"grpc://{collector.target}", settings(batch_max_spans=3), clock=clock
            )
            await exporter.start()
            for prefix in ("a", "b", "c"):
                exporter.try_submit(make_request(prefix, 2), 2)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return collector, exporter

    collector, exporter = run(scenario())
    assert collector.calls == 5  # 2 failures + 3 batches (2 spans each; 4 > batch_max_spans)
    assert span_names(collector.requests) == expected_names(("a", 2), ("b", 2), ("c", 2))
    assert exporter.stats.retries == 2
    assert len(clock.sleeps) == 2


def test_resource_exhausted_with_retry_info_waits_as_told() -> None:
    clock = FakeClock()

    async def scenario() -> tuple[GrpcCollector, QueuedExporter]:
        async with GrpcCollector() as collector:
            collector.failures.append((grpc.StatusCode.RESOURCE_EXHAUSTED, 2.5))
            exporter = exporter_from_url(f"grpc://{collector.target}", settings(), clock=clock)
            await exporter.start()
            exporter.try_submit(make_request("a", 3), 3)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return collector, exporter

    collector, exporter = run(scenario())
    assert clock.sleeps == [2.5]
    assert span_names(collector.requests) == expected_names(("a", 3))


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED],
    ids=["invalid-argument", "unimplemented"],
)
def test_permanent_errors_give_up_at_once(code: grpc.StatusCode) -> None:
    clock = FakeClock()

    async def scenario() -> tuple[GrpcCollector, QueuedExporter]:
        async with GrpcCollector() as collector:
            collector.failures.append((code, None))
            exporter = exporter_from_url(f"grpc://{collector.target}", settings(), clock=clock)
            await exporter.start()
            exporter.try_submit(make_request("a", 4), 4)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return collector, exporter

    collector, exporter = run(scenario())
    assert collector.calls == 1
    assert clock.sleeps == []
    assert (exporter.stats.failed_requests, exporter.stats.failed_spans) == (1, 4)


def test_partial_success_counts_rejected_spans() -> None:
    async def scenario() -> QueuedExporter:
        async with GrpcCollector() as collector:
            collector.rejected_spans = 2
            exporter = exporter_from_url(f"grpc://{collector.target}", settings())
            await exporter.start()
            exporter.try_submit(make_request("a", 5), 5)
            await exporter.stop(5.0)
        return exporter

    stats = run(scenario()).stats
    assert (stats.spans_sent, stats.failed_spans) == (3, 2)


def test_unreachable_endpoint_retries_until_max_elapsed() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clock = FakeClock()

    async def scenario() -> QueuedExporter:
        policy = RetryPolicy(max_elapsed_s=10.0)
        exporter = exporter_from_url(
            f"grpc://127.0.0.1:{port}", settings(retry=policy), clock=clock
        )
        await exporter.start()
        exporter.try_submit(make_request("a", 2), 2)
        assert await exporter.flush(5.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert exporter.stats.retries >= 2
    assert (exporter.stats.failed_requests, exporter.stats.failed_spans) == (1, 2)


def test_every_attempt_is_timed_failed_ones_included() -> None:
    async def scenario() -> QueuedExporter:
        async with GrpcCollector() as collector:
            collector.failures.append((grpc.StatusCode.UNAVAILABLE, None))
            exporter = exporter_from_url(
                f"grpc://{collector.target}", settings(), clock=FakeClock()
            )
            await exporter.start()
            assert exporter.try_submit(make_request("a", 2), 2)
            assert await exporter.flush(5.0)
            assert exporter.try_submit(make_request("b", 3), 3)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return exporter

    stats = run(scenario()).stats
    assert (stats.requests_sent, stats.retries) == (2, 1)
    assert stats.send_durations.count == 3  # the failed attempt, its retry, the second batch
    assert 0 < stats.send_durations.sum < 5.0
