"""Requests to the downstream are gzip-compressed by default (as the collector's OTLP exporters
do), over gRPC and HTTP, and `compression: none` turns it off. Checked on loopback against real
servers: for gRPC by the bytes that cross a relay, for HTTP by the request's headers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sampler.config.load import load_config, load_config_text
from sampler.export.base import ExporterSettings
from sampler.export.factory import exporter_from_url
from sampler.runtime import exporter_settings
from tests.unit.export.support import (
    CountingRelay,
    GrpcCollector,
    HttpCollector,
    expected_names,
    make_request,
    run,
    span_names,
)

# 2,000 spans named alike: about 100 KB that gzip shrinks more than tenfold
SPANS = 2000
BODY = make_request("compressible", SPANS)
NO_COMPRESSION = "exporter: {compression: none}\nrules: [{name: a, action: keep}]\n"


def default_settings() -> ExporterSettings:
    return exporter_settings(load_config())  # the embedded default, as `agent-sampler run`


def uncompressed_settings() -> ExporterSettings:
    return exporter_settings(load_config_text(NO_COMPRESSION, "c.yaml"))


def test_the_default_config_compresses_with_gzip() -> None:
    assert load_config().exporter.compression == "gzip"
    assert default_settings().compression == "gzip"


def grpc_bytes_on_the_wire(settings: ExporterSettings) -> int:
    async def scenario() -> int:
        async with GrpcCollector() as collector, CountingRelay(collector.port) as relay:
            exporter = exporter_from_url(f"grpc://127.0.0.1:{relay.port}", settings)
            await exporter.start()
            assert exporter.try_submit(BODY, SPANS)
            assert await exporter.flush(10.0)
            await exporter.stop(1.0)
        assert span_names(collector.requests) == expected_names(("compressible", SPANS))
        return relay.bytes_up

    return run(scenario())


@pytest.mark.parametrize(
    ("make_settings", "compressed"),
    [(default_settings, True), (uncompressed_settings, False)],
    ids=["default-gzip", "none"],
)
def test_grpc_requests_cross_the_wire_compressed_by_default(
    make_settings: Callable[[], ExporterSettings], compressed: bool
) -> None:
    sent = grpc_bytes_on_the_wire(make_settings())
    assert (sent < len(BODY) / 4) is compressed, f"{sent} bytes for a {len(BODY)}-byte request"


@pytest.mark.parametrize(
    ("make_settings", "encoding"),
    [(default_settings, "gzip"), (uncompressed_settings, None)],
    ids=["default-gzip", "none"],
)
def test_http_requests_are_gzip_encoded_by_default(
    make_settings: Callable[[], ExporterSettings], encoding: str | None
) -> None:
    async def scenario() -> HttpCollector:
        async with HttpCollector() as collector:
            exporter = exporter_from_url(collector.base_url, make_settings())
            await exporter.start()
            assert exporter.try_submit(BODY, SPANS)
            assert await exporter.flush(10.0)
            await exporter.stop(1.0)
        return collector

    collector = run(scenario())
    assert collector.headers[0].get("Content-Encoding") == encoding
    assert span_names(collector.requests) == expected_names(("compressible", SPANS))
