"""Sending pre-built requests over OTLP/gRPC: several streams, as fast as accepted or paced.

Each stream is a channel of its own (its own connection) with one Export call in flight at a
time, like one of a collector's exporter consumers. Without a rate, streams send back to back:
the sampler's intake is then the limit. With a rate, streams take their send times from one
schedule per target (open loop, so a slow answer does not lower the offered rate as long as a
stream is free); `max_lag_s` says how far behind schedule sends fell during the window.

A refused call (RESOURCE_EXHAUSTED) is counted and its stream pauses `refused_backoff_s`; its
spans are not sent again (the next request carries new spans), so refusals leave incomplete
sessions behind, which is why a measurement with refusals is not a sustained rate.

A *window* is the measured part of a run, after `warmup_s`: calls that end inside it count as
accepted or refused, calls that start inside it as offered, calls entirely inside it give the
latencies. With `stop_after_spans`, the run stops once that many spans were accepted and the
whole run is the window (`window_s` is then a time limit).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
import grpc.aio

from benchmarks.loadgen.pool import RequestPool, RoundRenderer

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
CALL_TIMEOUT_S = 30.0
MAX_ERRORS_KEPT = 5
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # one connection per stream, not one shared
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]

OK, REFUSED, FAILED = "ok", "refused", "failed"


@dataclass(frozen=True)
class Command:
    """One run of the driver. `rate` is in spans per second over all targets (None: as fast as
    accepted); `streams` is per target; `targets[i]` receives pool i's requests."""

    targets: tuple[str, ...]
    variant: str = "full"
    streams: int = 4
    rate: float | None = None
    warmup_s: float = 0.0
    window_s: float = 5.0
    stop_after_spans: int | None = None
    refused_backoff_s: float = 0.05

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @staticmethod
    def from_json(obj: dict[str, Any]) -> Command:
        return Command(**{**obj, "targets": tuple(obj["targets"])})


@dataclass
class WindowResult:
    """What one run measured in its window (summed over streams, or over worker processes)."""

    seconds: float = 0.0
    requests_ok: int = 0
    spans_ok: int = 0
    requests_refused: int = 0
    spans_refused: int = 0
    requests_failed: int = 0
    spans_offered: int = 0
    cpu_seconds: float = 0.0  # of the generator process(es) during the window
    max_lag_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def accepted_spans_per_second(self) -> float:
        return self.spans_ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def offered_spans_per_second(self) -> float:
        return self.spans_offered / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(obj: dict[str, Any]) -> WindowResult:
        return WindowResult(**obj)

    @staticmethod
    def merge(results: Sequence[WindowResult]) -> WindowResult:
        """Worker processes run the same window side by side: counts add up."""
        return WindowResult(
            seconds=max((r.seconds for r in results), default=0.0),
            requests_ok=sum(r.requests_ok for r in results),
            spans_ok=sum(r.spans_ok for r in results),
            requests_refused=sum(r.requests_refused for r in results),
            spans_refused=sum(r.spans_refused for r in results),
            requests_failed=sum(r.requests_failed for r in results),
            spans_offered=sum(r.spans_offered for r in results),
            cpu_seconds=sum(r.cpu_seconds for r in results),
            max_lag_s=max((r.max_lag_s for r in results), default=0.0),
            latencies_ms=[x for r in results for x in r.latencies_ms],
            errors=[e for r in results for e in r.errors][:MAX_ERRORS_KEPT],
        )


class RoundFeed:
    """The bodies of one pool, round after round, each round with new ids."""

    def __init__(self, pool: RequestPool, rounds: Iterator[int]) -> None:
        self._renderer = RoundRenderer(pool)
        self._rounds = rounds
        self._round = -1
        self._index = self._renderer.request_count  # the first call starts a round
        self.spans_per_round = sum(self._renderer.spans)

    def next(self) -> tuple[bytes, int]:
        if self._index == self._renderer.request_count:
            self._round = next(self._rounds)
            self._index = 0
        index = self._index
        self._index += 1
        # one body rendered per call: no stall of the sending loop once a round
        return self._renderer.body(self._round, index), self._renderer.spans[index]


@dataclass(frozen=True, slots=True)
class Call:
    """One Export call: when it started and ended, its spans, and ok / refused / failed."""

    start: float
    end: float
    spans: int
    outcome: str


@dataclass
class _Pacer:
    """Send times of one target at `rate` spans per second."""

    rate: float
    next_due: float

    def claim(self, spans: int) -> float:
        due = self.next_due
        self.next_due += spans / self.rate
        return due


@dataclass
class _Run:
    command: Command
    started: float
    window_start: float
    deadline: float  # no call starts after this
    calls: list[Call] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    accepted: int = 0
    max_lag_s: float = 0.0

    def stop(self, at: float) -> None:
        self.deadline = min(self.deadline, at)


async def run(
    command: Command,
    feeds: Sequence[RoundFeed],
    on_event: Callable[[str], None] = lambda _: None,
) -> WindowResult:
    """Run one command; ``on_event`` hears "window_start" and "window_end" when they happen."""
    if len(feeds) != len(command.targets):
        raise ValueError(f"{len(command.targets)} targets for {len(feeds)} pools")
    if command.rate is not None and command.rate <= 0:
        raise ValueError("rate must be positive")
    now = time.perf_counter()
    warmup = 0.0 if command.stop_after_spans is not None else command.warmup_s
    state = _Run(command, now, now + warmup, now + warmup + command.window_s)
    channels = [
        grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        for target in command.targets
        for _ in range(command.streams)
    ]
    try:
        total = sum(feed.spans_per_round for feed in feeds)
        share = [feed.spans_per_round / total for feed in feeds]
        pacers = [
            _Pacer(command.rate * s, now) if command.rate is not None else None for s in share
        ]
        streams = [
            _stream(state, channels[t * command.streams + s], feeds[t], pacers[t])
            for t in range(len(feeds))
            for s in range(command.streams)
        ]
        clock = asyncio.ensure_future(_window_clock(state, on_event))
        await asyncio.gather(*streams)
        cpu_start, cpu_end = await clock
    finally:
        await asyncio.gather(*(channel.close(None) for channel in channels))
    return summarise(
        state.calls,
        state.window_start,
        state.deadline,
        cpu_seconds=cpu_end - cpu_start,
        max_lag_s=state.max_lag_s,
        errors=state.errors,
    )


async def _window_clock(state: _Run, on_event: Callable[[str], None]) -> tuple[float, float]:
    await asyncio.sleep(max(0.0, state.window_start - time.perf_counter()))
    cpu_start = time.process_time()
    on_event("window_start")
    while time.perf_counter() < state.deadline:
        await asyncio.sleep(min(0.05, max(0.0, state.deadline - time.perf_counter())))
    cpu_end = time.process_time()
    on_event("window_end")
    return cpu_start, cpu_end


async def _stream(
    state: _Run, channel: grpc.aio.Channel, feed: RoundFeed, pacer: _Pacer | None
) -> None:
    export = channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
    command = state.command
    while time.perf_counter() < state.deadline:
        body, spans = feed.next()
        if pacer is not None:
            due = pacer.claim(spans)
            delay = due - time.perf_counter()
            if due >= state.deadline:  # this send would fall after the window
                await asyncio.sleep(max(0.0, state.deadline - time.perf_counter()))
                break
            if delay > 0:
                await asyncio.sleep(delay)
            elif time.perf_counter() >= state.window_start:
                state.max_lag_s = max(state.max_lag_s, -delay)
        start = time.perf_counter()
        try:
            await export(body, timeout=CALL_TIMEOUT_S)
            outcome = OK
        except grpc.aio.AioRpcError as exc:
            outcome = REFUSED if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else FAILED
            if outcome == FAILED and len(state.errors) < MAX_ERRORS_KEPT:
                state.errors.append(f"{exc.code().name}: {exc.details()}")
        end = time.perf_counter()
        state.calls.append(Call(start, end, spans, outcome))
        if outcome == OK:
            state.accepted += spans
            limit = command.stop_after_spans
            if limit is not None and state.accepted >= limit:
                state.stop(end)
        else:
            await asyncio.sleep(command.refused_backoff_s)


def summarise(
    calls: Sequence[Call],
    window_start: float,
    window_end: float,
    *,
    cpu_seconds: float = 0.0,
    max_lag_s: float = 0.0,
    errors: Sequence[str] = (),
) -> WindowResult:
    w0, w1 = window_start, window_end
    result = WindowResult(seconds=w1 - w0, cpu_seconds=cpu_seconds, max_lag_s=max_lag_s)
    result.errors = list(errors)
    for call in calls:
        if w0 <= call.start < w1:
            result.spans_offered += call.spans
        if not w0 <= call.end <= w1:
            continue
        if call.outcome == OK:
            result.requests_ok += 1
            result.spans_ok += call.spans
            if call.start >= w0:
                result.latencies_ms.append((call.end - call.start) * 1000.0)
        elif call.outcome == REFUSED:
            result.requests_refused += 1
            result.spans_refused += call.spans
        else:
            result.requests_failed += 1
    return result
