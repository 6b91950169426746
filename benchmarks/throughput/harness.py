"""The sampler's throughput over the network: sink, sampler(s) and load generator on loopback.

Phases, in order (default durations; the whole run stays under a minute on a 2-core machine):

1. **build** (about 3 s): the quality generator's sessions, pre-serialized in requests of
   `--batch-spans` spans (`benchmarks.loadgen.pool`); the samplers and the sink start meanwhile.
2. **parse only** (1 s): the same requests parsed by protobuf in this process, pinned to the
   sampler's CPU (best of five passes): the practical ceiling of a Python sampler.
3. **generator capacity** (2.5 s): the load generator against the do-nothing sink, as fast as
   it can: what it can offer (`loadgen_offered_spans_per_second`); it must clearly exceed what
   the sampler takes, or the sampler's figures would measure the generator.
4. **sustained** (3 s warm-up + 8 s): as fast as the sampler accepts; the rate counts only if
   the window saw no refusal, otherwise the offered rate is lowered to 80% and measured again
   (`--max-attempts`). Sampler CPU per million spans comes from this window.
5. **latency** (1 s + 5 s): paced at half the sustained rate; Export call latency p50 / p99.
   The peak RSS of the sampler(s) is read after it.
6. **scaling** (a fresh sampler; 1.5 s + 4 s per point plus the filling): the buffer is filled
   to 10k, 100k and 1M spans with *rootless* traces (their root span never comes, so they stay
   `open_trace_wait` = 10 minutes), then the sustained rate of ordinary traffic is measured on
   top of them. Memory growth over the growth of spans in memory (buffered, and dropped ones
   held for a second look) gives `bytes_per_buffered_span`. With a large buffer the sampler's
   full garbage collections take a few hundred milliseconds each, a few seconds apart: the
   window is long enough to hold about one.

Rounds of traffic replay 10 minutes of sessions in about a second, so a conversation's turns
arrive milliseconds apart: sessions are decided 250 ms after their last span (`decision_wait`,
tick 50 ms), and ordinary traffic keeps about 0.3 s of itself in the buffer while it is measured
(the *in-flux* spans, present at every scaling point too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.loadgen.driver import CALL_TIMEOUT_S, Command, WindowResult
from benchmarks.loadgen.pool import Pools, PoolSpec, RoundRenderer, build_pools
from benchmarks.throughput.processes import (
    ACCEPTED,
    BUFFER_BYTES,
    BUFFER_SPANS,
    CACHE,
    HELD_SPANS,
    LOOPBACK,
    QUEUED,
    REFUSED,
    SENT,
    Pinning,
    SamplerProcess,
    Snapshot,
    Workers,
    default_base_config,
    sampler_config,
    start_sink,
)

MIB = 1024 * 1024
EVENT_SLACK_S = 30.0  # how much later than planned a worker may answer before it is an error
SETTLE_TIMEOUT_S = 3.0
TARGETS = {  # issue 4's goals, for later
    "spans_per_second": 150_000,
    "bytes_per_buffered_span_over_wire": 2.0,
    "p99_export_ms": 25.0,
    "scaling_largest_over_smallest": 0.8,
}


@dataclass(frozen=True)
class Options:
    processes: int = 1
    loadgen_processes: int = 1
    sessions: int = 2000
    seed: int = 1
    batch_spans: int = 512
    streams: int = 4
    warmup_s: float = 3.0
    window_s: float = 8.0
    max_attempts: int = 3
    latency_warmup_s: float = 1.0
    latency_window_s: float = 5.0
    capacity_window_s: float = 2.0
    parse_seconds: float = 1.0
    scaling_points: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    scaling_warmup_s: float = 1.5
    scaling_window_s: float = 4.0
    prefill_timeout_s: float = 60.0
    decision_wait: str = "250ms"
    base_config: Path | None = None
    pin: bool = True
    sampler_cpus: tuple[int, ...] | None = None
    loadgen_cpus: tuple[int, ...] | None = None

    def sessions_config(self) -> dict[str, Any]:
        largest = max(self.scaling_points, default=0)
        return {
            "decision_wait": self.decision_wait,
            "root_end_grace": "100ms",
            "tick": "50ms",
            # Long: the rootless traces of the scaling phase must stay buffered.
            "open_trace_wait": "10m",
            "max_session_duration": "10m",
            "max_buffered_spans": max(1_500_000, math.ceil(largest * 1.5)),
            # Room for them by memory too (the default 512MiB holds about 900k such spans):
            # stress relief would decide the filling early and measure itself, not the buffer.
            "max_buffered_memory": max(4 << 30, math.ceil(largest * 1.5) * 2048),
        }


@dataclass
class Measurement:
    """One driver run and the samplers around its window."""

    loadgen: WindowResult
    before: list[Snapshot]
    after: list[Snapshot]

    def delta(self, metric: str) -> float:
        return sum(
            a.metric(metric) - b.metric(metric)
            for a, b in zip(self.after, self.before, strict=True)
        )

    def total(self, metric: str, snapshots: Sequence[Snapshot]) -> float:
        return sum(s.metric(metric) for s in snapshots)

    @property
    def seconds(self) -> float:
        if not self.before:
            return self.loadgen.seconds
        return statistics.fmean(a.at - b.at for a, b in zip(self.after, self.before, strict=True))

    @property
    def spans_per_second(self) -> float:
        """What the samplers took, by their own count."""
        return self.delta(ACCEPTED) / self.seconds if self.seconds > 0 else 0.0

    @property
    def refused_requests(self) -> int:
        return self.loadgen.requests_refused

    @property
    def sampler_cpu_seconds(self) -> float:
        return sum(
            a.cpu_seconds - b.cpu_seconds for a, b in zip(self.after, self.before, strict=True)
        )

    def summary(self) -> dict[str, Any]:
        seconds = self.seconds
        return {
            "seconds": round(seconds, 2),
            "offered_spans_per_second": round(self.loadgen.offered_spans_per_second),
            "accepted_spans_per_second": round(self.spans_per_second),
            "refused_requests": self.refused_requests,
            "refused_spans_sampler": round(self.delta(REFUSED)),
            "failed_requests": self.loadgen.requests_failed,
            "errors": self.loadgen.errors,
            "sampler_cpu_utilisation": round(self.sampler_cpu_seconds / seconds, 3)
            if seconds
            else None,
            "loadgen_cpu_utilisation": round(self.loadgen.cpu_seconds / self.loadgen.seconds, 3)
            if self.loadgen.seconds
            else None,
            "buffer_spans_start": round(self.total(BUFFER_SPANS, self.before)),
            "buffer_spans_end": round(self.total(BUFFER_SPANS, self.after)),
            "kept_spans_per_second": round(self.delta(SENT) / seconds) if seconds else None,
            "exporter_queue_spans_end": round(self.total(QUEUED, self.after)),
            "decision_cache_entries_end": round(self.total(CACHE, self.after)),
        }


class Bench:
    """The running processes of one benchmark run."""

    def __init__(self, options: Options, workdir: Path, stack: ExitStack) -> None:
        self.options = options
        self.workdir = workdir
        self.stack = stack
        self.pinning = Pinning.choose(
            options.processes, options.sampler_cpus, options.loadgen_cpus, options.pin
        )
        self.base_config = (
            options.base_config.read_text(encoding="utf-8")
            if options.base_config
            else default_base_config()
        )
        sink, self.sink_port = start_sink(self.pinning.loadgen_cpus, workdir)
        stack.callback(sink.stop)
        self.samplers: list[SamplerProcess] = []
        self.generation = 0
        self.workers: Workers | None = None

    def start_samplers(self) -> list[SamplerProcess]:
        """A new set of sampler processes (the previous one, if any, is killed)."""
        for sampler in self.samplers:
            sampler.stop()
        self.generation += 1
        self.samplers = [
            SamplerProcess(
                self.workdir,
                f"sampler-{self.generation}-{index}",
                self._config_text,
                self.pinning.sampler_cpu(index),
            ).start()
            for index in range(self.options.processes)
        ]
        for sampler in self.samplers:
            self.stack.callback(sampler.stop)
        return self.samplers

    def _config_text(self, grpc_port: int, metrics_port: int) -> str:
        return sampler_config(
            self.base_config,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            sink_port=self.sink_port,
            sessions=self.options.sessions_config(),
        )

    def start_workers(self, pools_path: Path) -> None:
        self.workers = Workers.start(
            pools_path, self.options.loadgen_processes, self.pinning.loadgen_cpus, self.workdir
        )
        self.stack.callback(self.workers.stop)

    def measure(self, command: Command, samplers: Sequence[SamplerProcess]) -> Measurement:
        workers = self.workers
        assert workers is not None
        workers.start_run(command)
        warmup = 0.0 if command.stop_after_spans is not None else command.warmup_s
        workers.expect_all("window_start", warmup + EVENT_SLACK_S)
        before = [s.snapshot() for s in samplers]
        workers.expect_all("window_end", command.window_s + EVENT_SLACK_S)
        after = [s.snapshot() for s in samplers]
        result = workers.results(CALL_TIMEOUT_S + EVENT_SLACK_S)
        return Measurement(result, before, after)

    def command(self, variant: str = "full", **changes: Any) -> Command:
        targets = tuple(s.target for s in self.samplers)
        return Command(targets=targets, variant=variant, streams=self.options.streams, **changes)


@contextmanager
def _affinity(cpus: Sequence[int]) -> Iterator[None]:
    """Run this process on `cpus` for a while (nothing when empty)."""
    previous = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def parse_only(pools: Pools, seconds: float, passes: int = 5) -> float:
    """Spans per second protobuf parses in this process: the best of a few passes (a ceiling;
    the best pass is the one least disturbed by other work on the machine)."""
    bodies = [body for pool in pools.full for body in RoundRenderer(pool).render(0)]
    spans = pools.span_count
    rates = []
    for _ in range(passes):
        parsed = 0
        start = time.perf_counter()
        while True:
            for body in bodies:
                ExportTraceServiceRequest.FromString(body)
            parsed += spans
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / passes:
                break
        rates.append(parsed / elapsed)
    return max(rates)


def sustained(bench: Bench) -> tuple[Measurement, bool, list[dict[str, Any]]]:
    """The first window without refusals, lowering the offered rate after each one that had
    some; else the best attempt, flagged (the bool says whether it was refusal-free)."""
    options = bench.options
    rate: float | None = None
    attempts: list[tuple[Measurement, dict[str, Any]]] = []
    for _ in range(max(1, options.max_attempts)):
        command = bench.command(rate=rate, warmup_s=options.warmup_s, window_s=options.window_s)
        measurement = bench.measure(command, bench.samplers)
        info = {"mode": "max" if rate is None else f"paced {rate:.0f}", **measurement.summary()}
        attempts.append((measurement, info))
        if measurement.refused_requests == 0 and measurement.loadgen.requests_failed == 0:
            return measurement, True, [a[1] for a in attempts]
        taken = measurement.spans_per_second
        offered = rate if rate is not None else measurement.loadgen.offered_spans_per_second
        # 80% of what it took; if it took (almost) nothing, half of what it was offered.
        rate = max(1.0, 0.8 * taken if taken > 0.1 * offered else 0.5 * offered)
    best = max(attempts, key=lambda a: a[0].spans_per_second)
    return best[0], False, [a[1] for a in attempts]


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def scaling(bench: Bench) -> tuple[dict[str, Any], float | None]:
    """Rates with the buffer filled to each point; and memory per buffered span.

    The filling is rootless traffic, which stays; `parked` counts it. The buffer also holds the
    in-flux spans of the traffic being measured, so `buffered_spans` (its average during the
    window) is above the point. Memory per span is taken between the second point and the last
    (the first window warms the process up: decision cache, rarity sketches, allocator arenas).
    """
    options = bench.options
    samplers = bench.start_samplers()
    for sampler in samplers:
        sampler.wait_ready()
    points: dict[str, Any] = {}
    # (spans in memory: buffered and held, RSS bytes) after each filling
    memory: list[tuple[float, float]] = []
    parked = 0
    for target in options.scaling_points:
        fill: dict[str, Any] = {}
        if parked < target:
            prefill = bench.command(
                "rootless",
                window_s=options.prefill_timeout_s,
                stop_after_spans=target - parked,
            )
            filled = bench.measure(prefill, samplers)
            parked += round(_accepted_since(samplers, filled.before))
            fill = {
                "fill_spans_per_second": round(filled.spans_per_second),
                "fill_seconds": round(filled.seconds, 2),
            }
        after_fill, settled = _settled(samplers, parked)
        held = sum(s.metric(BUFFER_SPANS) for s in after_fill)
        # The spans of dropped sessions held for a second look are in memory too (the windows'
        # traffic, about 95% dropped, is held for two minutes): count them with the buffer's.
        in_memory = held + sum(s.metric(HELD_SPANS) for s in after_fill)
        rss = sum(s.rss_kib for s in after_fill) * 1024.0
        memory.append((in_memory, rss))
        measured = bench.measure(
            bench.command(warmup_s=options.scaling_warmup_s, window_s=options.scaling_window_s),
            samplers,
        )
        buffered = measured.total(BUFFER_SPANS, measured.before + measured.after) / 2
        serialized = sum(s.metric(BUFFER_BYTES) for s in after_fill)
        points[str(target)] = {
            "parked_spans": parked,
            "buffered_spans": round(buffered),
            "spans_per_second": round(measured.spans_per_second),
            "refused_requests": measured.refused_requests,
            "sampler_cpu_utilisation": measured.summary()["sampler_cpu_utilisation"],
            "rss_mb": round(rss / MIB, 1),
            "buffer_serialized_bytes_per_span": round(serialized / held, 1) if held else None,
            "settled_before_fill_snapshot": settled,
            **fill,
        }
    (first_spans, first_rss), (last_spans, last_rss) = memory[min(1, len(memory) - 2)], memory[-1]
    grown = last_spans - first_spans
    per_span = (last_rss - first_rss) / grown if grown > 0 else None
    return points, per_span


def _accepted_since(samplers: Sequence[SamplerProcess], before: Sequence[Snapshot]) -> float:
    """Spans accepted since `before`, once the count holds still: the generator stops when it
    has sent, and the samplers may still be taking its last requests in (on a busy machine,
    most of a small fill)."""
    start = sum(s.metric(ACCEPTED) for s in before)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last = -1.0
    while True:
        now = sum(s.snapshot().metric(ACCEPTED) for s in samplers) - start
        if now == last or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(0.2)


def _settled(samplers: Sequence[SamplerProcess], parked: int) -> tuple[list[Snapshot], bool]:
    """Snapshots once the traffic measured before has been decided (the buffer holds about the
    parked spans alone), so that memory is compared at comparable moments; and whether that
    happened before the timeout."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        snapshots = [s.snapshot() for s in samplers]
        held = sum(s.metric(BUFFER_SPANS) for s in snapshots)
        if held <= parked * 1.01 + 1000:
            return snapshots, True
        if time.monotonic() > deadline:
            return snapshots, False
        time.sleep(0.05)


def run(options: Options) -> dict[str, Any]:
    phases = PhaseClock()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="throughput-")))
        stack.enter_context(_affinity(()))  # restores this process's CPUs at the end
        bench = Bench(options, workdir, stack)
        os.sched_setaffinity(0, set(bench.pinning.loadgen_cpus or os.sched_getaffinity(0)))
        bench.start_samplers()
        pools = build_pools(
            PoolSpec(options.sessions, options.seed, options.batch_spans, options.processes)
        )
        pools_path = workdir / "pools.pickle"
        pools.save(pools_path)
        bench.start_workers(pools_path)
        for sampler in bench.samplers:
            sampler.wait_ready()
        phases.done("build")
        with _affinity(bench.pinning.sampler_cpu(0)):
            parse_rate = parse_only(pools, options.parse_seconds)
        phases.done("parse_only")
        assert bench.workers is not None
        bench.workers.wait_ready()

        sink = f"{LOOPBACK}:{bench.sink_port}"
        capacity = bench.measure(
            Command(
                targets=(sink,) * options.processes,
                streams=options.streams,
                warmup_s=0.5,
                window_s=options.capacity_window_s,
            ),
            [],
        )
        phases.done("capacity")
        steady, refusal_free, attempts = sustained(bench)
        rate = steady.spans_per_second
        phases.done("sustained")
        latency = bench.measure(
            bench.command(
                rate=max(1.0, rate / 2),
                warmup_s=options.latency_warmup_s,
                window_s=options.latency_window_s,
            ),
            bench.samplers,
        )
        peaks = [s.snapshot().peak_rss_kib for s in bench.samplers]
        phases.done("latency")
        points, per_span = scaling(bench) if options.scaling_points else ({}, None)
        phases.done("scaling")

    wire = pools.wire_bytes / pools.span_count
    spans = steady.delta(ACCEPTED)
    rates = [p["spans_per_second"] for p in points.values()]
    offered = capacity.loadgen.offered_spans_per_second
    latencies = latency.loadgen.latencies_ms
    return {
        "spans_per_second": round(rate),
        "parse_only_spans_per_second": round(parse_rate),
        "p50_export_ms": _round(percentile(latencies, 0.5), 2),
        "p99_export_ms": _round(percentile(latencies, 0.99), 2),
        "peak_rss_mb": round(max(peaks) / 1024, 1),
        "wire_bytes_per_span": round(wire, 1),
        "bytes_per_buffered_span": _round(per_span, 1),
        "cpu_seconds_per_million_spans": round(steady.sampler_cpu_seconds / spans * 1e6, 2)
        if spans
        else None,
        "scaling": points,
        "scaling_largest_over_smallest": round(rates[-1] / rates[0], 3)
        if len(rates) > 1 and rates[0]
        else None,
        "loadgen_offered_spans_per_second": round(offered),
        "loadgen_offered_over_sustained": round(offered / rate, 2) if rate else None,
        "sampler_over_parse_only": round(rate / parse_rate, 4) if parse_rate else None,
        "sustained_refusal_free": refusal_free,
        "processes": options.processes,
        "peak_rss_mb_total": round(sum(peaks) / 1024, 1),
        "sustained": attempts,
        "latency": {
            "offered_spans_per_second": round(latency.loadgen.offered_spans_per_second),
            "accepted_spans_per_second": round(latency.spans_per_second),
            "calls": len(latencies),
            "p90_export_ms": _round(percentile(latencies, 0.9), 2),
            "max_export_ms": _round(max(latencies, default=0.0), 2),
            "max_schedule_lag_ms": round(latency.loadgen.max_lag_s * 1000, 1),
            "refused_requests": latency.refused_requests,
        },
        "loadgen": {
            "processes": options.loadgen_processes,
            "streams_per_sampler": options.streams,
            "capacity_cpu_utilisation": round(
                capacity.loadgen.cpu_seconds / capacity.loadgen.seconds, 3
            ),
        },
        "pool": {
            "sessions": options.sessions,
            "spans_per_round": pools.span_count,
            "requests_per_round": sum(p.request_count for p in pools.full),
            "mean_spans_per_request": round(
                pools.span_count / sum(p.request_count for p in pools.full), 1
            ),
        },
        "pinning": bench.pinning.describe(),
        "targets": TARGETS,
        "phase_seconds": phases.seconds,
        "elapsed_seconds": phases.total(),
    }


class PhaseClock:
    """Seconds spent in each phase of a benchmark, and in all."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.seconds: dict[str, float] = {}

    def done(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(now - self.last, 1)
        self.last = now

    def total(self) -> float:
        return round(time.monotonic() - self.started, 1)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _cpus(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def parse_args(argv: Sequence[str] | None) -> tuple[Options, bool]:
    d = Options()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description="Sampler throughput over OTLP/gRPC on loopback (see benchmarks/README.md).",
    )
    add = parser.add_argument
    add("--json", action="store_true", help="print only the JSON line")
    add("--processes", type=int, default=d.processes, help="sampler processes (sessions split)")
    add("--loadgen-processes", type=int, default=d.loadgen_processes)
    add("--sessions", type=int, default=d.sessions, help="sessions in one round of traffic")
    add("--seed", type=int, default=d.seed)
    add("--batch-spans", type=int, default=d.batch_spans, help="spans per request")
    add("--streams", type=int, default=d.streams, help="concurrent streams per sampler")
    add("--warmup", type=float, default=d.warmup_s, help="seconds before the sustained window")
    add("--window", type=float, default=d.window_s, help="seconds of the sustained window")
    add("--max-attempts", type=int, default=d.max_attempts)
    add("--latency-warmup", type=float, default=d.latency_warmup_s)
    add("--latency-window", type=float, default=d.latency_window_s)
    add("--capacity-window", type=float, default=d.capacity_window_s)
    add("--parse-seconds", type=float, default=d.parse_seconds)
    add(
        "--scaling-points",
        default=",".join(map(str, d.scaling_points)),
        help="buffered spans to measure at, comma-separated (empty: skip the phase)",
    )
    add("--scaling-warmup", type=float, default=d.scaling_warmup_s)
    add("--scaling-window", type=float, default=d.scaling_window_s)
    add("--prefill-timeout", type=float, default=d.prefill_timeout_s)
    add("--decision-wait", default=d.decision_wait)
    add("--config", type=Path, help="base sampler config (default: the embedded one)")
    add("--no-pin", action="store_true", help="do not pin processes to CPUs")
    add("--sampler-cpus", type=_cpus, help="e.g. 0 (one per sampler process)")
    add("--loadgen-cpus", type=_cpus, help="e.g. 1 (generator and sink)")
    args = parser.parse_args(argv)
    if args.processes < 1 or args.loadgen_processes < 1:
        parser.error("--processes and --loadgen-processes must be at least 1")
    options = Options(
        processes=args.processes,
        loadgen_processes=args.loadgen_processes,
        sessions=args.sessions,
        seed=args.seed,
        batch_spans=args.batch_spans,
        streams=args.streams,
        warmup_s=args.warmup,
        window_s=args.window,
        max_attempts=args.max_attempts,
        latency_warmup_s=args.latency_warmup,
        latency_window_s=args.latency_window,
        capacity_window_s=args.capacity_window,
        parse_seconds=args.parse_seconds,
        scaling_points=tuple(sorted(_cpus(args.scaling_points))),
        scaling_warmup_s=args.scaling_warmup,
        scaling_window_s=args.scaling_window,
        prefill_timeout_s=args.prefill_timeout,
        decision_wait=args.decision_wait,
        base_config=args.config,
        pin=not args.no_pin,
        sampler_cpus=args.sampler_cpus,
        loadgen_cpus=args.loadgen_cpus,
    )
    return options, args.json


def main(argv: Sequence[str] | None = None) -> int:
    options, json_only = parse_args(argv)
    result = run(options)
    if not json_only:
        for key, value in result.items():
            if not isinstance(value, dict | list):
                print(f"{key:36} {value}")
        for target, point in result["scaling"].items():
            print(f"{'scaling ' + target:36} {point['spans_per_second']} spans/s")
    print(json.dumps(result))
    return 0
