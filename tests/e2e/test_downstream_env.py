"""`agent-sampler run` with the embedded default config (what the image runs) takes its
downstream from the OpenTelemetry SDKs' OTEL_EXPORTER_OTLP_* variables, as `http(s)://host:port`
plus a protocol, the way an SDK is configured; a config file's key wins over them. The startup
log says which source set the downstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from tests.e2e.harness import (
    LOOPBACK,
    GrpcSink,
    SamplerProcess,
    free_port,
    raw_export,
    span,
    wait_until,
)

pytestmark = pytest.mark.e2e

E = "OTEL_EXPORTER_OTLP_"
NOW = 1_700_000_000_000_000_000


@pytest.fixture
def sink() -> Iterator[GrpcSink]:
    server = GrpcSink().start()
    yield server
    server.stop()


def failed_trace(trace_byte: int) -> ExportTraceServiceRequest:
    """A lone trace whose root failed: the default rules keep it ("errors"), about two seconds
    after its root arrives (sessions.root_end_grace)."""
    trace_id = bytes([trace_byte]) * 16
    root = span(trace_id, b"\x01" * 8, "invoke_agent", start=NOW, end=NOW + 1000, error=True)
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=Resource(), scope_spans=[ScopeSpans(spans=[root])])]
    )


def run_and_deliver(sampler: SamplerProcess, sink: GrpcSink) -> None:
    sampler.start()
    try:
        raw_export(sampler.grpc_port, failed_trace(7))
        wait_until(lambda: len(sink.spans()) == 1, 20.0, f"the kept span\n{sampler.logs()}")
        assert sampler.terminate() == 0
    finally:
        sampler.kill()


def test_the_environment_sets_the_downstream_of_the_default_config(
    sink: GrpcSink, tmp_path: Path
) -> None:
    sampler = SamplerProcess(
        None,  # no --config: the embedded default, whose url is only a default
        tmp_path,
        env={
            f"{E}ENDPOINT": f"http://{LOOPBACK}:{sink.port}",
            f"{E}PROTOCOL": "grpc",
            f"{E}HEADERS": "authorization=Bearer%20t0k,x-tenant=acme",
        },
    )
    run_and_deliver(sampler, sink)
    assert sink.metadata[0]["authorization"] == "Bearer t0k"
    assert sink.metadata[0]["x-tenant"] == "acme"
    assert (
        f"downstream grpc://{LOOPBACK}:{sink.port} (environment: {E}ENDPOINT, {E}PROTOCOL)"
        in sampler.logs()
    )
    assert not (tmp_path / "agent-sampler-kept.jsonl").exists()


def test_a_config_file_that_sets_the_url_wins_over_the_environment(
    sink: GrpcSink, tmp_path: Path
) -> None:
    config = tmp_path / "sampler.yaml"
    config.write_text(f"exporter: {{url: '{sink.url}'}}\nrules: [{{name: all, action: keep}}]\n")
    nobody = free_port()
    sampler = SamplerProcess(
        config,
        tmp_path,
        env={f"{E}ENDPOINT": f"http://{LOOPBACK}:{nobody}", f"{E}PROTOCOL": "grpc"},
    )
    run_and_deliver(sampler, sink)
    assert f"downstream {sink.url} (config file {config})" in sampler.logs()
