"""What an operator sees of `agent-sampler run`: self-metrics (build info, process, latency
histograms), the shutdown summary, and a clear refusal to start on a port already in use."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.harness import (
    LOOPBACK,
    GrpcSink,
    SamplerProcess,
    free_port,
    raw_export,
    running_sampler,
    span,
    wait_until,
)
from tests.e2e.test_live_sampler import SPANS_PER_TURN, config, grpc_client

pytestmark = pytest.mark.e2e


@pytest.fixture
def sink() -> Iterator[GrpcSink]:
    server = GrpcSink().start()
    yield server
    server.stop()


def rootless_error_span() -> ExportTraceServiceRequest:
    """One failed tool span whose root has not arrived: buffered for open_trace_wait (90 s)."""
    now = time.time_ns()
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    scope.spans.append(
        span(
            os.urandom(16),
            os.urandom(8),
            "execute_tool fetch",
            parent=os.urandom(8),
            start=now - 1_000_000,
            end=now,
            error=True,
        )
    )
    return request


def test_metrics_and_shutdown_summary(tmp_path: Path, sink: GrpcSink) -> None:
    with running_sampler(config(wait="1s"), tmp_path, sink.url) as sampler:
        client = grpc_client(sampler)
        client.turn("conv-failed", error=True)  # kept
        client.turn("conv-fine")  # dropped, then held (a later turn could still reopen it)
        client.close()
        wait_until(
            lambda: sampler.metric("agent_sampler_exporter_spans_sent") == SPANS_PER_TURN,
            15,
            "the failed conversation delivered",
        )
        assert sampler.metric("agent_sampler_held_spans") == SPANS_PER_TURN

        version = metadata.version("agent-tail-sampler")
        assert sampler.metric("agent_sampler_build_info", version=version) == 1
        assert sampler.metric("process_resident_memory_bytes") > 30 << 20
        assert sampler.metric("process_cpu_seconds") > 0
        assert sampler.metric("process_open_fds") > 0
        assert sampler.metric("python_gc_collections") > 0
        # one observation per decided session; one per attempt to send a batch
        assert sampler.metric("agent_sampler_decision_delay_seconds_count") == 2
        delay_sum = sampler.metric("agent_sampler_decision_delay_seconds_sum")
        assert 2 * 1.0 <= delay_sum < 2 * 15
        assert sampler.metric("agent_sampler_exporter_send_duration_seconds_count") >= 1
        assert sampler.metric("agent_sampler_exporter_send_duration_seconds_sum") > 0

        raw_export(sampler.grpc_port, rootless_error_span())
        wait_until(lambda: sampler.metric("agent_sampler_buffer_spans") == 1, 10, "buffered")
        assert sampler.terminate() == 0
        logs = sampler.logs()
        assert (
            "shutdown: decided 1 buffered session(s) (1 spans) and ended the hold of 1 dropped "
            "session(s) (0 kept on a second look)"
        ) in logs
        assert f"shutdown: flushed 1 kept span(s) to {sink.url}" in logs
        assert len(sink.spans()) == SPANS_PER_TURN + 1


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("flag", "listener", "setting"),
    [
        ("--listen", "OTLP/gRPC", "receivers.grpc.listen"),
        ("--http-listen", "OTLP/HTTP", "receivers.http.listen"),
        ("--metrics-listen", "metrics", "metrics.listen"),
    ],
    ids=["grpc", "http", "metrics"],
)
def test_a_port_in_use_stops_the_start_with_one_line_naming_the_listener(
    tmp_path: Path, busy_port: int, flag: str, listener: str, setting: str
) -> None:
    config_path = tmp_path / "sampler.yaml"
    config_path.write_text(config())
    sampler = SamplerProcess(config_path, tmp_path, downstream=f"grpc://{LOOPBACK}:{free_port()}")
    command = sampler.command()
    command[command.index(flag) + 1] = f"{LOOPBACK}:{busy_port}"
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert (done.returncode, done.stdout) == (1, "")
    (line,) = done.stderr.splitlines()  # no traceback, no grpc core log line
    assert line.endswith(
        f" ERROR sampler: cannot start: the {listener} listener cannot bind "
        f"{LOOPBACK}:{busy_port}: address already in use (set by {setting} or {flag})"
    )
