"""The durable queue end to end (`agent-sampler run --queue-dir`): kept sessions outlive a stop
and a SIGKILL of the sampler while the downstream is down, and arrive whole once it is up."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sampler.export.disk_queue import HEADER
from tests.e2e.harness import (
    LOOPBACK,
    GrpcSink,
    Received,
    SamplerProcess,
    free_port,
    raw_export,
    running_sampler,
    span,
    wait_until,
)
from tests.e2e.test_live_sampler import SPANS_PER_TURN, config, grpc_client

pytestmark = pytest.mark.e2e


def decided(sampler: SamplerProcess) -> float:
    return sampler.metric("agent_sampler_sessions_decided")


def queued_records(sampler: SamplerProcess) -> float:
    return sampler.metric("agent_sampler_exporter_disk_queue_records")


def assert_whole_and_once(spans: list[Received], traces: set[str]) -> None:
    """Every kept trace arrived with all its spans, each span once, annotated."""
    assert {s.trace_id for s in spans} == traces
    assert Counter(s.trace_id for s in spans) == dict.fromkeys(traces, SPANS_PER_TURN)
    assert len({(s.trace_id, s.span_id) for s in spans}) == len(spans)
    assert all(s.attributes["agent_sampler.rule"] == "errors" for s in spans)


def test_kept_sessions_wait_on_disk_through_a_restart_until_the_downstream_is_up(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there yet: the downstream is down
    downstream = f"grpc://{LOOPBACK}:{port}"
    queue = ("--queue-dir", str(tmp_path / "queue"))
    with running_sampler(config(wait="1s"), tmp_path, downstream, args=queue) as sampler:
        client = grpc_client(sampler)
        kept = {client.turn(f"conv-err-{i}", error=True) for i in range(5)}
        client.turn("conv-ok")
        client.close()
        wait_until(lambda: decided(sampler) == 6, 15, "every session decided")
        wait_until(lambda: queued_records(sampler) == 5, 10, "the kept sessions on disk")
        assert sampler.metric("agent_sampler_exporter_queue_spans") == 5 * SPANS_PER_TURN
        stopping = time.monotonic()
        assert sampler.terminate() == 0
        # no waiting out the 25 s flush for a downstream that is down: it is all on disk
        assert time.monotonic() - stopping < 15
        assert "stay in the disk queue" in sampler.logs()

    sink = GrpcSink(port=port).start()
    try:
        with running_sampler(config(wait="1s"), tmp_path, downstream, args=queue) as sampler:
            wait_until(lambda: len(sink.spans()) >= 5 * SPANS_PER_TURN, 15, "the queue delivered")
            wait_until(lambda: queued_records(sampler) == 0, 10, "the queue acknowledged")
            assert sampler.metric("agent_sampler_exporter_disk_replayed_spans") == 20
            assert sampler.metric("agent_sampler_exporter_disk_queue_bytes") == 0
            assert sampler.terminate() == 0
        assert_whole_and_once(sink.spans(), kept)
    finally:
        sink.stop()


def test_after_sigkill_what_the_queue_accepted_is_delivered_and_only_undecided_is_lost(
    tmp_path: Path,
) -> None:
    queue = ("--queue-dir", str(tmp_path / "queue"))
    sink = GrpcSink().start()
    port = sink.port
    with running_sampler(config(wait="1s"), tmp_path, sink.url, args=queue) as sampler:
        client = grpc_client(sampler)
        delivered = {client.turn(f"conv-before-{i}", error=True) for i in range(2)}
        wait_until(
            lambda: sampler.metric("agent_sampler_exporter_spans_sent") == 2 * SPANS_PER_TURN,
            15,
            "the first sessions acknowledged by the downstream",
        )
        sink.stop()  # the downstream goes down
        queued = {client.turn(f"conv-queued-{i}", error=True) for i in range(3)}
        client.close()
        # an error span of a trace whose root has not come: undecided, in memory only
        undecided = os.urandom(16)
        now = time.time_ns()
        request = ExportTraceServiceRequest()
        request.resource_spans.add().scope_spans.add().spans.append(
            span(
                undecided,
                os.urandom(8),
                "tool",
                parent=b"\1" * 8,
                start=now,
                end=now + 1,
                error=True,
            )
        )
        raw_export(sampler.grpc_port, request)
        wait_until(lambda: queued_records(sampler) == 3, 15, "the kept sessions on disk")
        assert sampler.metric("agent_sampler_buffer_spans") == 1
        sampler.kill()  # SIGKILL: no shutdown, no flush, no fsync
        assert sampler.proc is not None and sampler.proc.returncode == -9

    sink = GrpcSink(port=port).start()
    try:
        with running_sampler(config(wait="1s"), tmp_path, sink.url, args=queue) as sampler:
            wait_until(lambda: len(sink.spans()) >= 3 * SPANS_PER_TURN, 15, "the queue delivered")
            wait_until(lambda: queued_records(sampler) == 0, 10, "the queue acknowledged")
            assert sampler.metric("agent_sampler_exporter_disk_replayed_spans") == 12
            assert sampler.terminate() == 0
        # the sessions acknowledged before the kill do not come again; the undecided is lost
        assert_whole_and_once(sink.spans(), queued)
        assert not delivered & {s.trace_id for s in sink.spans()}
        assert undecided.hex() not in {s.trace_id for s in sink.spans()}
    finally:
        sink.stop()


def test_a_damaged_record_on_disk_costs_that_session_only_and_is_counted(
    tmp_path: Path,
) -> None:
    """A flipped byte in the middle of the queue's segment: after the restart every other kept
    session arrives whole, and the metrics say one record and its spans were lost."""
    port = free_port()  # the downstream is down while the sessions are kept
    downstream = f"grpc://{LOOPBACK}:{port}"
    queue_dir = tmp_path / "queue"
    queue = ("--queue-dir", str(queue_dir))
    with running_sampler(config(wait="1s"), tmp_path, downstream, args=queue) as sampler:
        client = grpc_client(sampler)
        kept = {client.turn(f"conv-err-{i}", error=True) for i in range(5)}
        client.close()
        wait_until(lambda: queued_records(sampler) == 5, 15, "the kept sessions on disk")
        assert sampler.terminate() == 0

    (segment,) = [p for p in queue_dir.glob("*.seg") if p.stat().st_size]
    data = bytearray(segment.read_bytes())
    records = []  # (offset, length, trace id) of each record, in order
    offset = 0
    while offset < len(data):
        length, _, _ = HEADER.unpack_from(data, offset)
        body = bytes(data[offset + HEADER.size : offset + HEADER.size + length])
        trace = ExportTraceServiceRequest.FromString(body).resource_spans[0]
        records.append((offset, length, trace.scope_spans[0].spans[0].trace_id.hex()))
        offset += HEADER.size + length
    assert len(records) == 5
    hit_offset, hit_length, lost = records[2]
    data[hit_offset + HEADER.size + hit_length // 2] ^= 0x20
    segment.write_bytes(bytes(data))

    sink = GrpcSink(port=port).start()
    try:
        with running_sampler(config(wait="1s"), tmp_path, downstream, args=queue) as sampler:
            wait_until(lambda: len(sink.spans()) >= 4 * SPANS_PER_TURN, 15, "the queue delivered")
            wait_until(lambda: queued_records(sampler) == 0, 10, "the queue acknowledged")
            assert sampler.metric("agent_sampler_exporter_disk_corrupt_records") == 1
            assert sampler.metric("agent_sampler_exporter_failed_spans") == SPANS_PER_TURN
            assert sampler.metric("agent_sampler_exporter_disk_replayed_spans") == 16
            assert sampler.terminate() == 0
        assert_whole_and_once(sink.spans(), kept - {lost})
        assert "1 record(s) and 4 span(s)" in sampler.logs()
    finally:
        sink.stop()
