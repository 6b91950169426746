"""The standard gRPC health service answers on the OTLP/gRPC port (for kubelet gRPC probes and
load balancers), without the bearer token the Export service may require."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.harness import LOOPBACK, GrpcSink, running_sampler
from tests.e2e.test_live_sampler import config

pytestmark = pytest.mark.e2e

OTLP_TRACES = "opentelemetry.proto.collector.trace.v1.TraceService"


@pytest.fixture
def sink() -> Iterator[GrpcSink]:
    server = GrpcSink().start()
    yield server
    server.stop()


def test_health_is_serving_on_the_receiver_port(tmp_path: Path, sink: GrpcSink) -> None:
    token = "receivers:\n  auth: {bearer_token: s3cret-token}\n"
    with running_sampler(config(extra=token), tmp_path, sink.url) as sampler:
        with grpc.insecure_channel(f"{LOOPBACK}:{sampler.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", OTLP_TRACES):
                answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as unknown:
                health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert sampler.terminate() == 0
