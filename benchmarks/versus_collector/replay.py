"""The quality corpus replayed live, on its own timeline compressed ``speedup`` times.

Each request of the corpus is a batch a collector's batch processor would have sent: it is
sent when its last span ended, recorded time, divided by ``speedup`` (60: one second replays a
recorded minute). Spans keep their recorded timestamps: neither system compares them with its
clock (both measure durations from them and waits from arrival), so nothing is re-timed.

One stream sends the requests in order, each once its time has come (a late one goes at once,
and `max_lag_s` says how late). A refused request (RESOURCE_EXHAUSTED, UNAVAILABLE) is sent
again after a short pause, so that every span arrives: recall must not depend on refusals.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
import grpc.aio

from benchmarks.loadgen.driver import CHANNEL_OPTIONS, EXPORT_METHOD
from benchmarks.quality.generator import Corpus

RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
RETRY_PAUSE_S = 0.05
MAX_RETRIES = 200
CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Timeline:
    """Request bodies with their span counts and send times (recorded seconds from the first)."""

    bodies: tuple[bytes, ...]
    spans: tuple[int, ...]
    at_s: tuple[float, ...]

    @staticmethod
    def from_corpus(corpus: Corpus) -> Timeline:
        ends = [
            max(
                span.end_time_unix_nano
                for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans
            )
            for request in corpus.requests
        ]
        first = min(ends)
        return Timeline(
            bodies=tuple(request.SerializeToString() for request in corpus.requests),
            spans=tuple(
                sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
                for request in corpus.requests
            ),
            at_s=tuple((end - first) / 1e9 for end in ends),
        )

    @property
    def recorded_seconds(self) -> float:
        return max(self.at_s, default=0.0)

    @property
    def span_count(self) -> int:
        return sum(self.spans)


@dataclass
class ReplayResult:
    seconds: float = 0.0
    requests: int = 0
    spans: int = 0
    retries: int = 0
    max_lag_s: float = 0.0

    def to_json(self) -> dict[str, float | int]:
        return {
            "seconds": round(self.seconds, 2),
            "requests": self.requests,
            "spans": self.spans,
            "retried_requests": self.retries,
            "max_lag_ms": round(self.max_lag_s * 1000, 1),
        }


async def replay(target: str, timeline: Timeline, speedup: float) -> ReplayResult:
    """Send every request of ``timeline`` to ``target`` on its compressed schedule."""
    if speedup <= 0:
        raise ValueError("speedup must be positive")
    result = ReplayResult()
    channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    try:
        await channel.channel_ready()
        export = channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )
        start = time.perf_counter()
        for body, spans, at in zip(timeline.bodies, timeline.spans, timeline.at_s, strict=True):
            delay = start + at / speedup - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                result.max_lag_s = max(result.max_lag_s, -delay)
            for attempt in range(MAX_RETRIES + 1):
                try:
                    await export(body, timeout=CALL_TIMEOUT_S)
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in RETRYABLE or attempt == MAX_RETRIES:
                        raise
                    result.retries += 1
                    await asyncio.sleep(RETRY_PAUSE_S)
            result.requests += 1
            result.spans += spans
        result.seconds = time.perf_counter() - start
    finally:
        await channel.close(None)
    return result
