"""The traffic capture: every admitted request, protobuf or JSON, becomes one OTLP/JSON line that
replay reads back as the same request, in admission order; refused and invalid requests are
not captured; the file stops at its size cap; a writer that falls behind or fails leaves
requests out (counted) and never holds intake up."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sampler.clock import ManualClock
from sampler.config.model import ReceiversConfig, SamplerConfig
from sampler.export.base import ExporterStats
from sampler.metrics import Sources, build_registry
from sampler.otlp.json_codec import request_to_json
from sampler.pipeline import Pipeline
from sampler.receive.capture import QUEUE_FULL, SIZE_CAP, WRITE_ERROR, TrafficCapture
from sampler.receive.intake import Admission, Outcome, ReceiveFlow, ReceiverStats
from sampler.replay import read_requests
from tests.unit.receive._support import RecordingConsumer, make_request, run
from tests.unit.sessions.builders import RecordingSink


def replayed(path: Path) -> list[ExportTraceServiceRequest]:
    return [
        ExportTraceServiceRequest.FromString(request.to_bytes())
        for request in read_requests(path, ReceiversConfig())
    ]


def pretty_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as a client may send it: indented over many lines, hex ids."""
    text = json.dumps(json.loads(request_to_json(request)), indent=2)
    assert "\n" in text
    return text.encode()


def test_admitted_requests_are_captured_in_order_as_lines_replay_reads_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "capture" / "traffic.jsonl"  # the directory is created
    capture = TrafficCapture(str(path), 1 << 20)
    capture.open()
    consumer = RecordingConsumer()
    flow = ReceiveFlow(consumer, max_spans=1000, capture=capture)
    first, second, third = make_request(2, "a"), make_request(3, "b"), make_request(1, "c")
    stats = ReceiverStats()

    async def traffic() -> list[Outcome]:
        bodies = [
            (first.SerializeToString(), "protobuf"),
            (pretty_json(second), "json"),
            (b"\x0f", "protobuf"),  # invalid: not captured
            (third.SerializeToString(), "protobuf"),
        ]
        return [(await flow.receive(body, enc, stats)).outcome for body, enc in bodies]  # type: ignore[arg-type]

    outcomes = run(traffic())
    capture.close()

    assert outcomes == [Outcome.OK, Outcome.OK, Outcome.INVALID, Outcome.OK]
    assert len(path.read_bytes().splitlines()) == 3
    assert replayed(path) == [first, second, third]
    snapshot = capture.snapshot()
    assert snapshot.requests_written == 3 and snapshot.requests_dropped == {}
    assert snapshot.bytes_written == path.stat().st_size


def test_a_refused_request_is_not_captured_its_retry_is(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    capture = TrafficCapture(str(path), 1 << 20)
    capture.open()
    consumer = RecordingConsumer(Admission(False, "session buffer full", 1.0))
    flow = ReceiveFlow(consumer, max_spans=1000, capture=capture)
    body = make_request(2).SerializeToString()

    refused = run(flow.receive(body, "protobuf", ReceiverStats()))
    consumer.admission = Admission(True)
    retried = run(flow.receive(body, "protobuf", ReceiverStats()))
    capture.close()

    assert (refused.outcome, retried.outcome) == (Outcome.REFUSED, Outcome.OK)
    assert replayed(path) == [make_request(2)]


def test_capturing_stops_at_the_size_cap_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = make_request(2).SerializeToString()
    line = len(request_to_json(make_request(2))) + 1
    path = tmp_path / "traffic.jsonl"
    capture = TrafficCapture(str(path), 2 * line + line // 2)  # room for two lines and a half
    capture.open()

    with caplog.at_level(logging.WARNING, logger="sampler.receive.capture"):
        for _ in range(5):
            capture.offer(body, "protobuf")
        capture.close()

    assert path.stat().st_size == 2 * line  # whole lines only, under the cap
    assert len(replayed(path)) == 2
    snapshot = capture.snapshot()
    assert (snapshot.requests_written, snapshot.requests_dropped) == (2, {SIZE_CAP: 3})
    assert [r.message.count("max_size") for r in caplog.records] == [1]


def test_a_capture_already_full_captures_nothing_more(tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl"
    path.write_bytes(b"x" * 100)
    capture = TrafficCapture(str(path), 100)
    capture.open()
    capture.offer(make_request(1).SerializeToString(), "protobuf")
    capture.close()

    assert path.stat().st_size == 100
    assert capture.snapshot().requests_dropped == {SIZE_CAP: 1}


def test_a_writer_behind_leaves_requests_out_and_never_blocks_intake(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = make_request(3).SerializeToString()
    capture = TrafficCapture(str(tmp_path / "t.jsonl"), 1 << 30, queue_max_bytes=2 * len(body))
    stalled, release = threading.Event(), threading.Event()
    write = capture._capture

    def slow_disk(*args: object) -> None:
        stalled.set()
        release.wait(10)
        write(*args)  # type: ignore[arg-type]

    capture._capture = slow_disk  # type: ignore[method-assign]
    capture.open()
    with caplog.at_level(logging.WARNING, logger="sampler.receive.capture"):
        started = time.perf_counter()
        for _ in range(10):
            capture.offer(body, "protobuf")
        offering = time.perf_counter() - started
        assert stalled.wait(10)
        release.set()
        capture.close()

    assert offering < 0.5  # nothing waited for the writer
    snapshot = capture.snapshot()
    assert (snapshot.requests_written, snapshot.requests_dropped) == (2, {QUEUE_FULL: 8})
    assert len([r for r in caplog.records if "behind" in r.message]) == 1


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_failing_write_stops_the_capture_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture = TrafficCapture("/dev/full", 1 << 30)
    capture.open()
    body = make_request(1).SerializeToString()
    with caplog.at_level(logging.ERROR, logger="sampler.receive.capture"):
        capture.offer(body, "protobuf")
        capture.close()  # the first write failed by now; later offers are refused at once
        capture.offer(body, "protobuf")

    assert capture.snapshot().requests_dropped == {WRITE_ERROR: 2}
    assert len([r for r in caplog.records if "cannot write" in r.message]) == 1


def test_json_lines_keep_what_was_sent(tmp_path: Path) -> None:
    """An OTLP/JSON body is written as received (line breaks aside): string values with
    escaped line breaks, snake_case keys and enum names survive the round trip."""
    body = (
        b'{"resource_spans": [{"scope_spans": [{"spans": [{\n'
        b'  "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174",\n'
        b'  "name": "line\\nbreak", "kind": "SPAN_KIND_SERVER"}]}]}]}\r\n'
    )
    path = tmp_path / "traffic.jsonl"
    capture = TrafficCapture(str(path), 1 << 20)
    capture.open()
    capture.offer(body, "json")
    capture.close()

    (request,) = replayed(path)
    span = json_format.MessageToDict(request)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert (span["name"], span["kind"]) == ("line\nbreak", "SPAN_KIND_SERVER")
    assert path.read_bytes().count(b"\n") == 1


def test_the_capture_counts_are_metrics(tmp_path: Path) -> None:
    capture = TrafficCapture(str(tmp_path / "t.jsonl"), 1 << 20)
    capture.open()
    capture.offer(make_request(1).SerializeToString(), "protobuf")
    capture.close()
    pipeline = Pipeline(SamplerConfig(), RecordingSink(), ManualClock())
    exporter: Any = SimpleNamespace(queued_spans=lambda: 0, stats=ExporterStats())
    registry = build_registry(Sources(pipeline, exporter, {}, capture))

    written = registry.get_sample_value(
        "agent_sampler_capture_requests_total", {"outcome": "written"}
    )
    assert written == 1
    assert (
        registry.get_sample_value("agent_sampler_capture_bytes_total")
        == (tmp_path / "t.jsonl").stat().st_size
    )
