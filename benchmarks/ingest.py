"""A quick, in-process measure of the sampler's ingest path (no network): how many spans per
second protobuf alone parses, and how many the real Pipeline (extraction, buffering, joining,
deciding, annotating, encoding) takes, on the same pre-built agent-like requests.

    python -m benchmarks.ingest --json

Prints one JSON object as its last line. The throughput benchmark (``python -m
benchmarks.throughput``) measures the whole process over the network.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.clock import ManualClock
from sampler.config_file import load_config
from sampler.pipeline import Pipeline

TOOLS = ("search", "fetch", "calculator", "sql", "browser")


def agent_request(rng: random.Random, sessions: int, spans_per_session: int) -> bytes:
    """One collector-like batch: several sessions' spans, key on the root span only."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in (("service.name", "agent-app"), ("telemetry.sdk.language", "python")):
        rs.resource.attributes.add(key=key).value.string_value = value
    scope = rs.scope_spans.add()
    scope.scope.name = "opentelemetry.instrumentation.agent"
    now = time.time_ns()
    for _ in range(sessions):
        trace_id, root_id = os.urandom(16), os.urandom(8)
        for index in range(spans_per_session - 1):
            span = scope.spans.add(
                trace_id=trace_id,
                span_id=os.urandom(8),
                parent_span_id=root_id,
                kind=Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=now + index,
                end_time_unix_nano=now + index + 10,
            )
            tool = rng.choice(TOOLS)
            span.name = f"execute_tool {tool}"
            for key, value in (
                ("gen_ai.operation.name", "execute_tool"),
                ("gen_ai.tool.name", tool),
                ("gen_ai.tool.call.id", os.urandom(6).hex()),
            ):
                span.attributes.add(key=key).value.string_value = value
            span.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = rng.randint(
                10, 900
            )
        root = scope.spans.add(
            trace_id=trace_id,
            span_id=root_id,
            name="invoke_agent planner",
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1000,
        )
        for key, value in (
            ("gen_ai.operation.name", "invoke_agent"),
            ("gen_ai.agent.name", "planner"),
            ("gen_ai.conversation.id", os.urandom(8).hex()),
        ):
            root.attributes.add(key=key).value.string_value = value
    return request.SerializeToString()


class _CountingSink:
    def __init__(self) -> None:
        self.spans = 0

    def try_submit(self, request: bytes, span_count: int) -> bool:
        self.spans += span_count
        return True


def measure(bodies: list[bytes], spans: int) -> dict[str, float]:
    start = time.perf_counter()
    for body in bodies:
        ExportTraceServiceRequest.FromString(body)
    parse_s = time.perf_counter() - start

    clock = ManualClock(0.0)
    pipeline = Pipeline(load_config(), _CountingSink(), clock)
    start = time.perf_counter()
    for body in bodies:
        pipeline.consume(ExportTraceServiceRequest.FromString(body))
        clock.advance(0.01)
        pipeline.decide_due()
    pipeline.decide_all()
    pipeline_s = time.perf_counter() - start
    return {"parse": spans / parse_s, "pipeline": spans / pipeline_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--sessions-per-request", type=int, default=10)
    parser.add_argument("--spans-per-session", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    rng = random.Random(7)
    bodies = [
        agent_request(rng, args.sessions_per_request, args.spans_per_session)
        for _ in range(args.requests)
    ]
    spans = args.requests * args.sessions_per_request * args.spans_per_session
    runs = [measure(bodies, spans) for _ in range(args.runs)]
    parse = statistics.median(r["parse"] for r in runs)
    pipeline = statistics.median(r["pipeline"] for r in runs)
    result = {
        "spans_per_run": spans,
        "runs": args.runs,
        "wire_bytes_per_span": round(sum(map(len, bodies)) / spans, 1),
        "parse_only_spans_per_second": round(parse),
        "pipeline_spans_per_second": round(pipeline),
        "pipeline_over_parse": round(pipeline / parse, 3),
    }
    if not args.json:
        for key, value in result.items():
            print(f"{key:32} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
