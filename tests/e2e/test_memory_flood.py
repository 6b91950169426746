"""A flood of ten times the buffer's memory cap, over OTLP/gRPC, against the real sampler process.

One flood (a module fixture), then what it showed (docs/operations.md, "Memory under a flood"):

- resident memory, sampled every 100 ms during the flood and as VmHWM after it, stays under
  the idle process + ``max_buffered_memory`` + ``OVERHEAD_MARGIN_MIB``, and the buffer's own
  estimate under the cap;
- every Export call is answered: OK, or RESOURCE_EXHAUSTED with a RetryInfo (never UNAVAILABLE,
  DEADLINE_EXCEEDED or INTERNAL), so a collector keeps and retries what is refused;
- near the cap the sampler decides the oldest sessions early (stress relief) and refuses what
  does not fit;
- afterwards it works as before: a new failing trace is kept and delivered, /readyz says ready,
  and the logs hold a handful of JSON lines, none per request.

The traffic is LLM-agent sessions with recorded content (prompts, completions, tool arguments
and results, as OpenInference and the GenAI opt-in attributes record them: about 1.2 KB a
span), serialized once and replayed in rounds with new trace ids and session keys (the load
generator's byte rewriting, ``benchmarks.loadgen.pool.RoundRenderer``). Session keys are on
root spans and the waits are long, so nothing is due: only stress relief makes room.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
import yaml
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from benchmarks.loadgen.pool import RequestPool, RoundRenderer
from sampler.config.load import default_config_path
from tests.e2e.harness import (
    LOOPBACK,
    GrpcSink,
    SamplerProcess,
    raw_export,
    running_sampler,
    span,
    wait_until,
)
from tests.e2e.rss import MIB, RssWatch, peak_rss_mib, rss_mib

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CAP_MIB = 32
FLOOD_FACTOR = 10  # bytes offered: ten times the cap
SENDERS = 4  # concurrent Export streams, one connection each
SPANS_PER_REQUEST = 256  # about 260 KB: a collector batch
BIG_EVERY = 8  # after every 8 requests, one of 12 joined: about 4 MB
BIG_REQUEST_BODIES = 12
CALL_TIMEOUT_S = 20.0
REFUSED_PAUSE_S = 0.02

# The resident memory allowed beyond the idle process (measured before the flood) plus the cap,
# from what this flood holds besides buffered spans (measured with tracemalloc, mallinfo2 and
# gc.callbacks inside the sampler): the requests in flight, up to SENDERS bodies of up to
# 4 MB, the one being consumed also parsed and cut into spans (about 24 MiB at most); the
# decision cache, 54,000-59,000 entries after this flood (5 MiB); rarity sketches, exporter
# batches and gRPC buffers (a few MiB); and room for the allocator (a quarter of the cap).
# Measured: VmHWM 48-58 MiB above idle + cap in 7 runs.
OVERHEAD_MARGIN_MIB = 64

# Each agent's usual tool paths, most common first: ordinary sessions have common shapes, so
# the default rules keep a few percent of them (errors, the budget, the odd tail), as in life.
PATHS = {
    "support": (("search_kb", "read_ticket"), ("search_kb",), ("read_ticket", "send_email")),
    "research": (("web_search", "fetch_url", "summarise"), ("web_search", "fetch_url")),
    "coder": (("read_file", "run_tests"), ("read_file", "edit_file", "run_tests")),
    "billing": (("sql_query",), ("sql_query", "create_refund")),
}
AGENTS = tuple(PATHS)
KEY_PREFIX = "conv_"  # the 8 hex digits after it are the round number (RoundRenderer)


def config_text() -> str:
    """The embedded default config (its rules, signals and budget) with a 32 MiB buffer and
    waits long enough that no session is due during the test."""
    config = yaml.safe_load(default_config_path().read_text())
    config["sessions"].update(
        max_buffered_memory=f"{CAP_MIB}MiB",
        max_buffered_spans=10_000_000,
        open_trace_wait="10m",
        decision_wait="10m",
        max_session_duration="10m",
        root_end_grace="300ms",  # the recovery check sends a lone trace
        tick="50ms",
    )
    config["exporter"].update(batch_timeout="50ms")
    config["logging"] = {"level": "info", "format": "json"}
    return yaml.safe_dump(config, sort_keys=False)


# -- traffic ---------------------------------------------------------------------------------

_LOREM = (
    "The customer asked about the invoice for March and whether the discount applies to the "
    "annual plan. Checking the account history, the order was placed on the 3rd and shipped "
    "on the 7th; the tracking number shows delivery to the warehouse. Searching the knowledge "
    "base for refund policy, warranty terms and the escalation path for damaged goods. "
)
_TEXT = (_LOREM * 200).encode()


def _kv(key: str, value: str | int) -> KeyValue:
    kv = KeyValue(key=key)
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value
    return kv


def _content(rng: random.Random, low: int, high: int) -> str:
    size = rng.randint(low, high)
    start = rng.randrange(len(_TEXT) - size)
    return _TEXT[start : start + size].decode()


@dataclass
class _Turn:
    spans: list[tuple[int, str, Span]] = field(default_factory=list)  # (end ns, agent, span)


def _session(rng: random.Random, index: int, start_ns: int) -> tuple[str, list[_Turn]]:
    agent = AGENTS[index % len(AGENTS)]
    key = f"{KEY_PREFIX}{0:08x}-{index:06d}"
    turns = []
    t = start_ns
    paths = PATHS[agent]
    path = paths[0] if rng.random() < 0.6 else rng.choice(paths)
    for turn_number in range(rng.choice((1, 1, 2, 3))):
        turn = _Turn()
        trace_id = bytes(4) + rng.randbytes(12)
        root_id = rng.randbytes(8)
        begin = t
        # the first turn calls the tools, follow-ups are answered by the model alone
        steps: list[str | None] = [None]
        for tool in path if turn_number == 0 else ():
            steps += [tool, None]
        for tool in steps:
            span_id = rng.randbytes(8)
            duration = rng.randint(200, 3000) * 1_000_000
            s = Span(
                trace_id=trace_id,
                span_id=span_id,
                parent_span_id=root_id,
                start_time_unix_nano=t,
                end_time_unix_nano=t + duration,
            )
            if tool is None:
                s.name = "chat gpt-4o"
                s.attributes.extend(
                    [
                        _kv("gen_ai.operation.name", "chat"),
                        _kv("gen_ai.request.model", "gpt-4o"),
                        _kv("gen_ai.usage.input_tokens", rng.randint(500, 3000)),
                        _kv("gen_ai.usage.output_tokens", rng.randint(50, 500)),
                        _kv("gen_ai.input.messages", _content(rng, 300, 1800)),
                        _kv("gen_ai.output.messages", _content(rng, 100, 900)),
                    ]
                )
            else:
                s.name = f"execute_tool {tool}"
                s.attributes.extend(
                    [
                        _kv("gen_ai.operation.name", "execute_tool"),
                        _kv("gen_ai.tool.name", tool),
                        _kv("gen_ai.tool.call.id", rng.randbytes(6).hex()),
                        _kv("gen_ai.tool.call.arguments", _content(rng, 40, 200)),
                        _kv("gen_ai.tool.call.result", _content(rng, 100, 1200)),
                    ]
                )
                if rng.random() < 0.005:
                    s.status.code = s.status.STATUS_CODE_ERROR
            turn.spans.append((t + duration, agent, s))
            t += duration
        root = Span(
            trace_id=trace_id,
            span_id=root_id,
            name=f"invoke_agent {agent}",
            start_time_unix_nano=begin,
            end_time_unix_nano=t + 1_000_000,
        )
        root.attributes.extend(
            [
                _kv("gen_ai.operation.name", "invoke_agent"),
                _kv("gen_ai.agent.name", agent),
                _kv("gen_ai.conversation.id", key),
            ]
        )
        turn.spans.append((t + 1_000_000, agent, root))
        turns.append(turn)
        t += rng.randint(2, 8) * 1_000_000_000  # think time
    return key, turns


def _request(spans: list[tuple[int, str, Span]]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    by_agent: dict[str, list[Span]] = {}
    for _, agent, s in spans:
        by_agent.setdefault(agent, []).append(s)
    for agent, agent_spans in by_agent.items():
        rs = request.resource_spans.add()
        rs.resource.attributes.extend(
            [_kv("service.name", f"{agent}-agent"), _kv("deployment.environment", "prod")]
        )
        ss = rs.scope_spans.add()
        ss.scope.name = "opentelemetry.instrumentation.openai_agents"
        ss.spans.extend(agent_spans)
    return request


_TRACE_ID_TAG = re.compile(rb"(?=\x0a\x10)")


def agent_traffic(sessions: int, seed: int = 7) -> RequestPool:
    """``sessions`` sessions in requests of about SPANS_PER_REQUEST spans. Sessions run 24 at
    a time and their spans are sent in the order they end (roots last), as a collector's
    batch processor forwards them; the pool records where every trace id and session key is."""
    rng = random.Random(seed)
    now = time.time_ns()
    bodies: list[bytes] = []
    counts: list[int] = []
    trace_offsets: list[int] = []
    key_offsets: list[int] = []
    base = 0
    pending: list[tuple[int, str, Span]] = []
    keys: list[str] = []

    def flush() -> None:
        nonlocal base, pending, keys
        body = _request(pending).SerializeToString()
        ids = {s.trace_id for _, _, s in pending}
        found = [
            base + m.start() + 2
            for m in _TRACE_ID_TAG.finditer(body)
            if body[m.start() + 2 : m.start() + 18] in ids
        ]
        assert len(found) == len(pending)
        for key in keys:
            at = body.index(key.encode())
            key_offsets.append(base + at + len(KEY_PREFIX))
        trace_offsets.extend(found)
        bodies.append(body)
        counts.append(len(pending))
        base += len(body)
        pending, keys = [], []

    for group in range(0, sessions, 24):
        group_spans = []
        for index in range(group, min(group + 24, sessions)):
            _, turns = _session(rng, index, now + rng.randint(0, 30) * 1_000_000_000)
            group_spans += [entry for turn in turns for entry in turn.spans]
        group_spans.sort(key=lambda entry: entry[0])
        for entry in group_spans:
            pending.append(entry)
            if not entry[2].parent_span_id:
                keys.append(
                    next(
                        kv.value.string_value
                        for kv in entry[2].attributes
                        if kv.key == "gen_ai.conversation.id"
                    )
                )
            if len(pending) >= SPANS_PER_REQUEST:
                flush()
    if pending:
        flush()
    data = b"".join(bodies)
    return RequestPool(
        data=data,
        bounds=np.cumsum([0, *map(len, bodies)], dtype=np.int64),
        spans=np.array(counts, dtype=np.int64),
        trace_id_offsets=np.array(sorted(trace_offsets), dtype=np.int64),
        key_offsets=np.array(sorted(key_offsets), dtype=np.int64),
    )


def flood_requests(
    pool: RequestPool, rounds: Iterator[int], big_bodies: int = BIG_REQUEST_BODIES
) -> Iterator[tuple[bytes, int]]:
    """(body, spans) for each request, round after round, with new trace ids and keys every
    round; after every BIG_EVERY requests comes one of BIG_REQUEST_BODIES bodies joined (a
    request is one repeated field, so concatenated requests are one request)."""
    renderer = RoundRenderer(pool)
    bodies = (
        item
        for number in rounds
        for item in zip(renderer.render(number), renderer.spans, strict=True)
    )
    while True:
        for _ in range(BIG_EVERY):
            item = next(bodies, None)
            if item is None:
                return
            yield item
        group = [item for _, item in zip(range(big_bodies), bodies, strict=False)]
        if not group:
            return
        yield b"".join(b for b, _ in group), sum(n for _, n in group)


# -- the flood -------------------------------------------------------------------------------

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class Outcomes:
    lock: threading.Lock = field(default_factory=threading.Lock)
    codes: Counter[str] = field(default_factory=Counter)
    bytes_offered: int = 0
    spans_ok: int = 0
    spans_refused: int = 0
    refused_without_retry_info: int = 0
    unexpected: list[str] = field(default_factory=list)
    slowest_s: float = 0.0


def _retry_delay_s(error: grpc.RpcError) -> float | None:
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if not details:
        return None
    for detail in status_pb2.Status.FromString(details).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def _sender(
    port: int, work: Iterator[tuple[bytes, int]], lock: threading.Lock, out: Outcomes
) -> None:
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(f"{LOOPBACK}:{port}", options=options) as channel:
        export = channel.unary_unary(EXPORT)  # bytes in, bytes out
        while True:
            with lock:
                item = next(work, None)
            if item is None:
                return
            body, spans = item
            started = time.monotonic()
            try:
                export(body, timeout=CALL_TIMEOUT_S)
                code, delay = "OK", None
            except grpc.RpcError as error:
                code = error.code().name
                delay = _retry_delay_s(error) if code == "RESOURCE_EXHAUSTED" else None
                if code != "RESOURCE_EXHAUSTED":
                    detail = f"{code}: {error.details()}"
                    with out.lock:
                        out.unexpected.append(detail)
            elapsed = time.monotonic() - started
            with out.lock:
                out.codes[code] += 1
                out.bytes_offered += len(body)
                out.slowest_s = max(out.slowest_s, elapsed)
                if code == "OK":
                    out.spans_ok += spans
                elif code == "RESOURCE_EXHAUSTED":
                    out.spans_refused += spans
                    if not delay or delay <= 0:
                        out.refused_without_retry_info += 1
            if code != "OK":
                time.sleep(REFUSED_PAUSE_S)


def flood(
    port: int, pool: RequestPool, total_bytes: int, big_bodies: int = BIG_REQUEST_BODIES
) -> Outcomes:
    out = Outcomes()
    sent = 0

    def limited() -> Iterator[tuple[bytes, int]]:
        nonlocal sent
        for item in flood_requests(pool, iter(range(1, 1 << 20)), big_bodies):
            if sent >= total_bytes:
                return
            sent += len(item[0])
            yield item

    work, lock = limited(), threading.Lock()
    threads = [
        threading.Thread(target=_sender, args=(port, work, lock, out), name=f"flood-{n}")
        for n in range(SENDERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


# -- the tests: one flood, then what it showed ------------------------------------------------


@dataclass
class Flooded:
    sampler: SamplerProcess
    sink: GrpcSink
    outcomes: Outcomes
    idle_mib: float
    sampled_peak_mib: float
    hwm_mib: float
    metrics: dict[str, float]

    @property
    def bound_mib(self) -> float:
        return self.idle_mib + CAP_MIB + OVERHEAD_MARGIN_MIB

    def report(self) -> dict[str, object]:
        return {
            "idle_rss_mib": round(self.idle_mib, 1),
            "sampled_peak_rss_mib": round(self.sampled_peak_mib, 1),
            "vmhwm_mib": round(self.hwm_mib, 1),
            "bound_mib": round(self.bound_mib, 1),
            "bytes_offered_mib": round(self.outcomes.bytes_offered / MIB, 1),
            "codes": dict(self.outcomes.codes),
            "spans_ok": self.outcomes.spans_ok,
            "spans_refused": self.outcomes.spans_refused,
            "slowest_call_s": round(self.outcomes.slowest_s, 2),
            **self.metrics,
        }


FLOOD_METRICS = (
    "agent_sampler_stress_relief_sessions",
    "agent_sampler_requests_refused",
    "agent_sampler_spans_refused",
    "agent_sampler_spans_accepted",
    "agent_sampler_buffer_memory_bytes",
    "agent_sampler_decision_cache_entries",
)


@pytest.fixture(scope="module")
def flooded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flooded]:
    pool = agent_traffic(sessions=600)
    sink = GrpcSink().start()
    workdir = tmp_path_factory.mktemp("flood")
    try:
        with running_sampler(config_text(), workdir, sink.url) as sampler:
            assert sampler.proc is not None
            pid = sampler.proc.pid
            time.sleep(1.0)  # start-up allocations settle
            idle = rss_mib(pid)
            with RssWatch(pid, interval_s=0.1) as watch:
                outcomes = flood(sampler.grpc_port, pool, FLOOD_FACTOR * CAP_MIB * MIB)
            result = Flooded(
                sampler,
                sink,
                outcomes,
                idle,
                watch.peak,
                peak_rss_mib(pid),
                {name: sampler.metric(name) for name in FLOOD_METRICS},
            )
            print(json.dumps(result.report()))
            yield result
    finally:
        sink.stop()


@pytest.mark.timeout(90)
def test_memory_stays_within_the_cap_plus_the_stated_overhead(flooded: Flooded) -> None:
    assert flooded.outcomes.bytes_offered >= FLOOD_FACTOR * CAP_MIB * MIB
    assert flooded.metrics["agent_sampler_buffer_memory_bytes"] <= CAP_MIB * MIB
    assert flooded.sampled_peak_mib < flooded.bound_mib, flooded.report()
    assert flooded.hwm_mib < flooded.bound_mib, flooded.report()


@pytest.mark.timeout(90)
def test_every_call_is_accepted_or_refused_with_retry_information(flooded: Flooded) -> None:
    outcomes = flooded.outcomes
    assert outcomes.unexpected == [], flooded.report()
    assert set(outcomes.codes) == {"OK", "RESOURCE_EXHAUSTED"}, flooded.report()
    assert outcomes.refused_without_retry_info == 0
    assert flooded.metrics["agent_sampler_spans_accepted"] == outcomes.spans_ok
    assert flooded.metrics["agent_sampler_spans_refused"] == outcomes.spans_refused


@pytest.mark.timeout(90)
def test_near_the_cap_sessions_are_decided_early_and_requests_refused(flooded: Flooded) -> None:
    assert flooded.metrics["agent_sampler_stress_relief_sessions"] > 0
    assert flooded.metrics["agent_sampler_requests_refused"] > 0


def _spans_of(sink: GrpcSink, trace_id: bytes) -> list[Span]:
    with sink.lock:
        requests = list(sink.requests)
    return [
        s
        for request in requests
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
        if s.trace_id == trace_id
    ]


@pytest.mark.timeout(90)
def test_after_the_flood_a_new_failing_trace_is_kept_and_the_sampler_is_ready(
    flooded: Flooded,
) -> None:
    sampler = flooded.sampler
    request, trace_id = failing_lone_trace()
    raw_export(sampler.grpc_port, request)
    wait_until(lambda: len(_spans_of(flooded.sink, trace_id)) == 2, 15, "the new trace kept")
    rules = {
        kv.value.string_value
        for s in _spans_of(flooded.sink, trace_id)
        for kv in s.attributes
        if kv.key == "agent_sampler.rule"
    }
    assert rules == {"errors"}
    with urllib.request.urlopen(sampler.url("/readyz"), timeout=5) as response:
        assert response.status == 200
    wait_until(lambda: "overload over after" in sampler.logs(), 20, "the overload logged as over")
    assert sampler.terminate() == 0
    # logging.format json: one JSON object a line, one line per notable event: the flood's
    # hundreds of requests and dozens of refusals are one episode of a few lines
    lines = sampler.logs().splitlines()
    entries = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    warnings = [e["message"] for e in entries if e["level"] == "warning"]
    assert any(m.startswith("stress relief:") for m in warnings), warnings
    assert "refusing requests (session buffer memory full): senders are told to retry" in warnings
    assert len(entries) < 20, lines


def failing_lone_trace() -> tuple[ExportTraceServiceRequest, bytes]:
    """An ordinary trace without a session key whose tool call failed: the default rules keep
    it, ``root_end_grace`` after its root arrives."""
    now = time.time_ns()
    trace_id, root_id = os.urandom(16), os.urandom(8)
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    scope.spans.append(
        span(
            trace_id,
            os.urandom(8),
            "execute_tool fetch_url",
            parent=root_id,
            start=now,
            end=now + 1_000,
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch_url"},
            error=True,
        )
    )
    scope.spans.append(
        span(
            trace_id,
            root_id,
            "invoke_agent support",
            start=now,
            end=now + 2_000,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"},
        )
    )
    return request, trace_id
