"""`agent-sampler run` end to end: real process, real SDK exporters, real downstream server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode, Tracer

from sampler.otlp.json_codec import request_from_json, request_to_json
from tests.e2e.harness import (
    LOOPBACK,
    GrpcSink,
    SamplerProcess,
    raw_export,
    running_sampler,
    span,
    wait_until,
)

pytestmark = pytest.mark.e2e

SPANS_PER_TURN = 4  # invoke_agent root, two execute_tool, one chat

CONFIG = """
sessions:
  decision_wait: {wait}
  root_end_grace: {grace}
  tick: 50ms
{extra}
rules:
  - name: errors
    when: {{error: true}}
    action: keep
  - name: vip
    when: {{attribute: {{key: app.tier, equals: vip}}}}
    action: keep
  - name: rest
    action: drop
exporter:
  batch_timeout: 20ms
  retry: {{initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 30s}}
"""


def config(wait: str = "2s", grace: str = "300ms", extra: str = "") -> str:
    return CONFIG.format(wait=wait, grace=grace, extra=extra)


@pytest.fixture
def sink() -> Iterator[GrpcSink]:
    server = GrpcSink().start()
    yield server
    server.stop()


class Client:
    """The real SDK, one span per export (SimpleSpanProcessor), so children reach the sampler
    in requests of their own before their root, as they do from a real agent."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": "agent-app"}))
        self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer: Tracer = self.provider.get_tracer("tests.e2e")

    def turn(self, conversation: str, *, error: bool = False, tier: str = "") -> str:
        """One agent turn (one trace); the session key is on the root span only."""
        root_attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "planner",
            "gen_ai.conversation.id": conversation,
        }
        if tier:
            root_attrs["app.tier"] = tier
        with self.tracer.start_as_current_span(
            "invoke_agent planner", attributes=root_attrs
        ) as root:
            for tool in ("search", "fetch"):
                with self.tracer.start_as_current_span(
                    f"execute_tool {tool}",
                    attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool},
                ) as tool_span:
                    if error and tool == "fetch":
                        tool_span.set_status(Status(StatusCode.ERROR, "fetch failed"))
            with self.tracer.start_as_current_span(
                "chat", attributes={"gen_ai.operation.name": "chat"}
            ):
                pass
            return format(root.get_span_context().trace_id, "032x")

    def close(self) -> None:
        self.provider.shutdown()


def grpc_client(sampler: SamplerProcess) -> Client:
    return Client(OTLPSpanExporter(endpoint=f"{LOOPBACK}:{sampler.grpc_port}", insecure=True))


def decided(sampler: SamplerProcess) -> float:
    return sampler.metric("agent_sampler_sessions_decided")


def assert_annotated(spans: list, rule: str, signals: list[str]) -> None:
    for received in spans:
        assert received.attributes["agent_sampler.rule"] == rule
        assert received.attributes["agent_sampler.adjusted_count"] == 1.0
        assert received.attributes.get("agent_sampler.signals", []) == signals


def test_kept_sessions_arrive_whole_and_the_rest_are_dropped(
    tmp_path: Path, sink: GrpcSink
) -> None:
    with running_sampler(config(), tmp_path, sink.url) as sampler:
        client = grpc_client(sampler)
        kept = {
            client.turn("conv-err-1", error=True),
            client.turn("conv-err-2", error=True),
            client.turn("conv-vip", tier="vip"),
        }
        dropped = {client.turn("conv-ok-1"), client.turn("conv-ok-2")}
        client.close()
        wait_until(lambda: decided(sampler) == 5, 15, "5 sessions decided")
        wait_until(lambda: len(sink.spans()) == 3 * SPANS_PER_TURN, 10, "kept spans downstream")
        spans = sink.spans()
        assert {s.trace_id for s in spans} == kept
        assert not dropped & {s.trace_id for s in spans}
        assert len({s.span_id for s in spans}) == 3 * SPANS_PER_TURN  # whole, no duplicates
        errors = [s for s in spans if s.attributes["agent_sampler.rule"] == "errors"]
        assert len(errors) == 2 * SPANS_PER_TURN
        assert_annotated(errors, "errors", ["error", "tool_error"])
        assert_annotated([s for s in spans if s not in errors], "vip", [])
        # children arrived before their root, yet joined the root's session:
        assert sampler.metric("agent_sampler_sessions_decided", rule="errors", verdict="keep") == 2
        assert all(s.resource["service.name"] == "agent-app" for s in spans)
        assert sampler.terminate() == 0


def test_a_multi_trace_session_is_decided_once_as_a_whole(tmp_path: Path, sink: GrpcSink) -> None:
    # a keyed conversation stays open for decision_wait after its last turn
    with running_sampler(config(wait="1500ms", grace="0s"), tmp_path, sink.url) as sampler:
        client = grpc_client(sampler)
        first = client.turn("conversation-7")
        second = client.turn("conversation-7", error=True)  # the error is in the second turn
        client.close()
        wait_until(lambda: decided(sampler) >= 1, 15, "the conversation decided")
        wait_until(lambda: len(sink.spans()) == 2 * SPANS_PER_TURN, 10, "both turns downstream")
        time.sleep(0.5)
        assert decided(sampler) == 1
        assert {s.trace_id for s in sink.spans()} == {first, second}
        assert_annotated(sink.spans(), "errors", ["error", "tool_error"])
        assert sampler.terminate() == 0


def test_late_spans_follow_the_decision(tmp_path: Path, sink: GrpcSink) -> None:
    with running_sampler(config(wait="1s"), tmp_path, sink.url) as sampler:
        client = grpc_client(sampler)
        kept = client.turn("conv-late-kept", error=True)
        dropped = client.turn("conv-late-dropped")
        client.close()
        wait_until(lambda: decided(sampler) == 2, 15, "both sessions decided")
        wait_until(lambda: len(sink.spans()) == SPANS_PER_TURN, 10, "kept session downstream")
        now = time.time_ns()
        request = ExportTraceServiceRequest()
        scope = request.resource_spans.add().scope_spans.add()
        scope.spans.append(
            span(
                bytes.fromhex(kept),
                os.urandom(8),
                "late-kept",
                parent=b"\1" * 8,
                start=now,
                end=now + 1,
            )
        )
        scope.spans.append(
            span(
                bytes.fromhex(dropped),
                os.urandom(8),
                "late-dropped",
                parent=b"\1" * 8,
                start=now,
                end=now + 1,
            )
        )
        raw_export(sampler.grpc_port, request)
        wait_until(lambda: len(sink.spans()) == SPANS_PER_TURN + 1, 10, "late span downstream")
        late = [s for s in sink.spans() if s.name.startswith("late")]
        assert [s.name for s in late] == ["late-kept"]
        assert_annotated(late, "errors", ["error", "tool_error"])
        # the dropped conversation is still held (sessions.dropped_hold): its late span reopens
        # it, to be decided again as a whole, rather than following the drop at once
        assert sampler.metric("agent_sampler_reopened_sessions") == 1
        assert sampler.metric("agent_sampler_late_spans", verdict="drop") == 0
        assert sampler.terminate() == 0
        assert [s.name for s in sink.spans() if s.name.startswith("late")] == ["late-kept"]


def test_sigterm_decides_and_flushes_everything_buffered(tmp_path: Path, sink: GrpcSink) -> None:
    with running_sampler(config(wait="5m", grace="0s"), tmp_path, sink.url) as sampler:
        client = grpc_client(sampler)
        kept = client.turn("conv-shutdown", error=True)
        client.turn("conv-shutdown-ok")
        client.close()
        wait_until(
            lambda: sampler.metric("agent_sampler_buffer_spans") == 2 * SPANS_PER_TURN,
            10,
            "spans buffered",
        )
        assert decided(sampler) == 0
        assert sampler.terminate() == 0
        assert {s.trace_id for s in sink.spans()} == {kept}
        assert len(sink.spans()) == SPANS_PER_TURN
        assert "decided 2 buffered session(s)" in sampler.logs()


def test_otlp_http_protobuf_and_json(tmp_path: Path, sink: GrpcSink) -> None:
    with running_sampler(config(wait="1s"), tmp_path, sink.url) as sampler:
        client = Client(
            HttpSpanExporter(endpoint=f"http://{LOOPBACK}:{sampler.http_port}/v1/traces")
        )
        via_protobuf = client.turn("conv-http", error=True)
        client.close()
        trace_id, span_id = os.urandom(16), os.urandom(8)
        now = time.time_ns()
        request = ExportTraceServiceRequest()
        scope = request.resource_spans.add().scope_spans.add()
        scope.spans.append(
            span(
                trace_id,
                span_id,
                "json-root",
                start=now,
                end=now + 5,
                attributes={"session.id": "conv-json"},
                error=True,
            )
        )
        body = request_to_json(request).encode()
        assert trace_id.hex().encode() in body  # OTLP/JSON ids are hex, not base64
        post = urllib.request.Request(
            f"http://{LOOPBACK}:{sampler.http_port}/v1/traces",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=5) as response:
            assert response.status == 200
        wait_until(lambda: len(sink.spans()) == SPANS_PER_TURN + 1, 15, "http spans downstream")
        got = {(s.trace_id, s.span_id) for s in sink.spans()}
        assert (trace_id.hex(), span_id.hex()) in got
        assert {s.trace_id for s in sink.spans()} == {via_protobuf, trace_id.hex()}
        assert sampler.terminate() == 0


def test_file_downstream_writes_collector_otlp_json_lines(tmp_path: Path) -> None:
    out = tmp_path / "kept" / "out.jsonl"
    with running_sampler(config(wait="1s"), tmp_path, f"file://{out}") as sampler:
        client = grpc_client(sampler)
        kept = client.turn("conv-file", error=True)
        client.turn("conv-file-ok")
        client.close()
        wait_until(lambda: decided(sampler) == 2, 15, "sessions decided")
        assert sampler.terminate() == 0
    lines = out.read_text().splitlines()
    assert lines and all(line.startswith('{"resourceSpans":[') for line in lines)
    spans = [
        s
        for line in lines
        for rs in request_from_json(line).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert {s.trace_id.hex() for s in spans} == {kept}
    assert len(spans) == SPANS_PER_TURN
    assert f'"traceId":"{kept}"' in lines[0]


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    tmp_path: Path, sink: GrpcSink
) -> None:
    extra = "receivers:\n  max_message_size: 64KiB\n"
    with running_sampler(config(wait="1s", extra=extra), tmp_path, sink.url) as sampler:
        with pytest.raises(grpc.RpcError) as malformed:
            raw_export(sampler.grpc_port, b"\xff\xff\xff\xff")
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as oversize:
            raw_export(sampler.grpc_port, b"\x0a" + b"\x80" * 3 + b"\x08" + b"\0" * 100_000)
        assert oversize.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        bad_json = urllib.request.Request(
            f"http://{LOOPBACK}:{sampler.http_port}/v1/traces",
            data=b'{"resourceSpans": [',
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as http_error:
            urllib.request.urlopen(bad_json, timeout=5)
        assert http_error.value.code == 400
        assert json.loads(http_error.value.read())["code"] == 3
        client = grpc_client(sampler)  # and a good session still goes through
        kept = client.turn("conv-after-errors", error=True)
        client.close()
        wait_until(lambda: len(sink.spans()) == SPANS_PER_TURN, 15, "kept session downstream")
        assert {s.trace_id for s in sink.spans()} == {kept}
        assert sampler.terminate() == 0


def test_full_buffer_refuses_with_retry_information(tmp_path: Path, sink: GrpcSink) -> None:
    extra = "  max_buffered_spans: 5\n"
    with running_sampler(config(wait="5m", grace="0s", extra=extra), tmp_path, sink.url) as sampler:
        now = time.time_ns()

        def request_of(spans: int) -> ExportTraceServiceRequest:
            request = ExportTraceServiceRequest()
            scope = request.resource_spans.add().scope_spans.add()
            trace_id = os.urandom(16)
            for _ in range(spans):
                scope.spans.append(span(trace_id, os.urandom(8), "s", start=now, end=now + 1))
            return request

        raw_export(sampler.grpc_port, request_of(3))
        with pytest.raises(grpc.RpcError) as refused:
            raw_export(sampler.grpc_port, request_of(3))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = dict(refused.value.trailing_metadata() or ())["grpc-status-details-bin"]
        status = status_pb2.Status.FromString(details)
        retry = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(retry)
        assert retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9 > 0
        assert sampler.metric("agent_sampler_spans_refused") == 3
        assert sampler.metric("agent_sampler_buffer_spans") == 3  # nothing half-accepted
        assert sampler.terminate() == 0


def test_replay_reaches_the_live_decisions(tmp_path: Path, sink: GrpcSink) -> None:
    rules = config(wait="1s").replace(
        "  - name: rest\n    action: drop",
        "  - name: half\n    action: {probability: 0.5}",
    )
    requests = []
    base = time.time_ns()
    for index in range(40):
        trace_id, root_id = os.urandom(16), os.urandom(8)
        start = base + index * 10_000_000
        child = ExportTraceServiceRequest()
        child.resource_spans.add().scope_spans.add().spans.append(
            span(
                trace_id,
                os.urandom(8),
                "execute_tool",
                parent=root_id,
                start=start,
                end=start + 1_000,
                error=index % 7 == 0,
            )
        )
        root = ExportTraceServiceRequest()
        root.resource_spans.add().scope_spans.add().spans.append(
            span(
                trace_id,
                root_id,
                "invoke_agent",
                start=start,
                end=start + 2_000,
                attributes={"gen_ai.conversation.id": f"replay-{index}"},
            )
        )
        requests += [child, root]
    recording = tmp_path / "recorded.jsonl"
    recording.write_text("".join(request_to_json(r) + "\n" for r in requests))
    with running_sampler(rules, tmp_path, sink.url) as sampler:
        for request in requests:
            raw_export(sampler.grpc_port, request)
        wait_until(lambda: decided(sampler) == 40, 20, "40 sessions decided")
        assert sampler.terminate() == 0
    live = {(s.span_id, s.attributes["agent_sampler.rule"]) for s in sink.spans()}
    out = tmp_path / "replayed.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sampler",
            "replay",
            "--config",
            str(tmp_path / "sampler.yaml"),
            "--output",
            str(out),
            str(recording),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    replayed = set()
    for line in out.read_text().splitlines():
        for rs in request_from_json(line).resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    rule = next(
                        kv.value.string_value
                        for kv in s.attributes
                        if kv.key == "agent_sampler.rule"
                    )
                    replayed.add((s.span_id.hex(), rule))
    assert replayed == live
    assert 10 < len(live) < 70  # errors plus about half of the rest: the rules did something
    assert "TOTAL" in result.stdout and "half" in result.stdout
