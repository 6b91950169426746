"""The OTLP/HTTP downstream against a real aiohttp OTLP/HTTP server on loopback."""

from __future__ import annotations

import socket

import pytest

from sampler.export.delivery import QueuedExporter
from sampler.export.factory import exporter_from_url
from sampler.export.http_transport import traces_url
from sampler.export.retry import RetryPolicy
from tests.unit.export.support import (
    FakeClock,
    HttpCollector,
    expected_names,
    make_request,
    run,
    settings,
    span_names,
)


def test_requests_arrive_as_protobuf_with_headers_and_gzip() -> None:
    async def scenario() -> tuple[HttpCollector, QueuedExporter]:
        async with HttpCollector() as collector:
            exporter = exporter_from_url(
                collector.base_url,
                settings(headers={"X-Api-Key": "k"}, compression="gzip"),
            )
            await exporter.start()
            exporter.try_submit(make_request("a", 2), 2)
            exporter.try_submit(make_request("b", 1), 1)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return collector, exporter

    collector, exporter = run(scenario())
    assert span_names(collector.requests) == expected_names(("a", 2), ("b", 1))
    headers = collector.headers[0]
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["Content-Encoding"] == "gzip"
    assert headers["X-Api-Key"] == "k"
    assert exporter.name == f"{collector.base_url}/v1/traces"


def test_429_with_retry_after_waits_as_told_then_delivers_once() -> None:
    clock = FakeClock()

    async def scenario() -> tuple[HttpCollector, QueuedExporter]:
        async with HttpCollector() as collector:
            collector.responses.append((429, {"Retry-After": "3"}))
            exporter = exporter_from_url(collector.base_url, settings(), clock=clock)
            await exporter.start()
            exporter.try_submit(make_request("a", 2), 2)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return collector, exporter

    collector, exporter = run(scenario())
    assert clock.sleeps == [3.0]
    assert collector.calls == 2
    assert span_names(collector.requests) == expected_names(("a", 2))
    assert exporter.stats.retries == 1


def test_503_without_retry_after_uses_backoff() -> None:
    clock = FakeClock()

    async def scenario() -> HttpCollector:
        async with HttpCollector() as collector:
            collector.responses.extend([(503, {}), (502, {}), (504, {})])
            exporter = exporter_from_url(collector.base_url, settings(), clock=clock)
            await exporter.start()
            exporter.try_submit(make_request("a", 1), 1)
            await exporter.stop(5.0)
        return collector

    collector = run(scenario())
    assert len(clock.sleeps) == 3
    assert 0.8 <= clock.sleeps[0] <= 1.2
    assert span_names(collector.requests) == ["a-0"]


def test_400_is_permanent(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()

    async def scenario() -> tuple[HttpCollector, QueuedExporter]:
        async with HttpCollector() as collector:
            collector.responses.append((400, {}))
            exporter = exporter_from_url(collector.base_url, settings(), clock=clock)
            await exporter.start()
            exporter.try_submit(make_request("a", 3), 3)
            await exporter.stop(5.0)
        return collector, exporter

    collector, exporter = run(scenario())
    assert collector.calls == 1
    assert clock.sleeps == []
    assert (exporter.stats.failed_requests, exporter.stats.failed_spans) == (1, 3)
    assert "HTTP 400: scripted 400" in caplog.text  # the server's google.rpc.Status message


def test_a_full_url_is_used_as_is() -> None:
    async def scenario() -> HttpCollector:
        async with HttpCollector(path="/otlp/v1/traces") as collector:
            exporter = exporter_from_url(f"{collector.base_url}/otlp/v1/traces", settings())
            await exporter.start()
            exporter.try_submit(make_request("a", 1), 1)
            await exporter.stop(5.0)
        return collector

    assert span_names(run(scenario()).requests) == ["a-0"]


def test_connection_refused_is_retried_until_max_elapsed() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clock = FakeClock()

    async def scenario() -> QueuedExporter:
        exporter = exporter_from_url(
            f"http://127.0.0.1:{port}", settings(retry=RetryPolicy(max_elapsed_s=10.0)), clock=clock
        )
        await exporter.start()
        exporter.try_submit(make_request("a", 2), 2)
        await exporter.stop(5.0)
        return exporter

    exporter = run(scenario())
    assert exporter.stats.retries >= 2
    assert (exporter.stats.failed_requests, exporter.stats.failed_spans) == (1, 2)


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://h:4318", "http://h:4318/v1/traces"),
        ("http://h:4318/", "http://h:4318/v1/traces"),
        ("http://h:4318/prefix", "http://h:4318/prefix/v1/traces"),
        ("http://h:4318/v1/traces", "http://h:4318/v1/traces"),
        ("https://h/x/v1/traces/", "https://h/x/v1/traces"),
    ],
    ids=["bare", "trailing-slash", "prefix", "full", "full-trailing-slash"],
)
def test_traces_url(base: str, url: str) -> None:
    assert traces_url(base) == url


def test_sends_are_timed() -> None:
    async def scenario() -> QueuedExporter:
        async with HttpCollector() as collector:
            exporter = exporter_from_url(collector.base_url, settings())
            await exporter.start()
            assert exporter.try_submit(make_request("a", 2), 2)
            assert await exporter.flush(5.0)
            await exporter.stop(1.0)
        return exporter

    stats = run(scenario()).stats
    assert (stats.spans_sent, stats.send_durations.count) == (2, 1)
