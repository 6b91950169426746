"""agent-tail-sampler side by side with the OpenTelemetry Collector's `tail_sampling` processor.

    python -m benchmarks.versus_collector [--json] [--quick] [--profile]

The same agent traffic goes to (a) the collector built by `benchmarks/collector/build.sh`,
with the policy set of `policies.py`, and (b) `agent-sampler run` with its default config.
Each runs alone on one CPU (`taskset`, CPU 0 by default); the load generator, the sink both
forward to, and this harness share the other. Both use the same `decision_wait` (3 s).

1. **Quality.** The quality benchmark's labelled corpus (3,000 sessions, seed 1: 23 recorded
   minutes, 86k spans) is replayed live on its own timeline compressed 60 times (`replay.py`),
   first to the sampler, then to the collector, and the sink records what each kept. Each
   process is stopped cleanly (SIGTERM) once everything that arrived has been decided, so that
   what it still holds is decided and delivered too. Recall per label, whole sessions and kept
   volume are scored by `benchmarks.quality.harness`. The collector's probabilistic baseline is
   tuned, on a model of its policies, to keep at least as many spans as the sampler did.
2. **Throughput.** The throughput benchmark's pre-built requests (`benchmarks.loadgen`, 2,000
   sessions in requests of 512 spans, new ids every round) are sent as fast as each system
   accepts them: a fresh process each, a warm-up, then a measured window. A window counts only
   if nothing was refused or lost and decisions kept pace with arrivals (see `judge`);
   otherwise the offered rate is lowered to 80% of what was taken and measured again.
   Peak RSS is the process's VmHWM after its windows.

The last line printed is one JSON object (keys in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from benchmarks.collector.binary import build_collector
from benchmarks.loadgen.driver import CALL_TIMEOUT_S, Command, WindowResult
from benchmarks.loadgen.pool import Pools, PoolSpec, RequestPool, build_pools
from benchmarks.quality.generator import RARE_LABELS, Corpus, TrafficSpec
from benchmarks.quality.harness import kept_spans_by_session, score
from benchmarks.quality.profiles import PROFILES
from benchmarks.throughput.harness import PhaseClock
from benchmarks.throughput.processes import Child, Pinning, Workers
from benchmarks.versus_collector.policies import (
    PolicySet,
    corpus_traces,
    predicted_kept_spans,
    tune_percentage,
)
from benchmarks.versus_collector.profile import start_recording, summarise
from benchmarks.versus_collector.replay import Timeline, replay
from benchmarks.versus_collector.sink import read_recording
from benchmarks.versus_collector.systems import (
    CollectorSettings,
    CollectorSystem,
    Counters,
    SamplerSystem,
    Snapshot,
    System,
)
from sampler.otlp.json_codec import request_to_json

MIB_PER_KIB = 1 / 1024
EVENT_SLACK_S = 30.0
READY_TIMEOUT_S = 30.0
TRACE_ID_RIGHT_HALF = 8
S = TypeVar("S", SamplerSystem, CollectorSystem)
TICK_SLACK_S = 1.5  # the collector's one-second decision ticks, and some scheduling


@dataclass(frozen=True)
class Options:
    sessions: int = 3000
    seed: int = 1
    traffic: str = "default"  # benchmarks/quality/profiles.py
    speedup: float = 60.0
    decision_wait_s: int = 3
    pool_sessions: int = 2000
    batch_spans: int = 512
    streams: int = 4
    warmup_s: float = 5.0  # more than decision_wait + 1 s: decisions are in their steady state
    window_s: float = 8.0
    max_attempts: int = 3
    idle_timeout_s: float = 15.0  # after the load, for everything to be decided
    profile: bool = False
    profile_s: float = 10.0
    pin: bool = True
    system_cpus: tuple[int, ...] | None = None
    loadgen_cpus: tuple[int, ...] | None = None


QUICK = {
    "sessions": 200,
    "speedup": 240.0,
    "decision_wait_s": 1,
    "pool_sessions": 200,
    "batch_spans": 128,
    "warmup_s": 2.5,
    "window_s": 1.5,
    "max_attempts": 1,
    "idle_timeout_s": 8.0,
    "profile_s": 1.0,
}


class CollectorUnavailable(RuntimeError):
    """No collector binary: Go is missing or the build failed (the message says which)."""


# ------------------------------------------------------------------------------------------------
# The processes of one run
# ------------------------------------------------------------------------------------------------


class Bench:
    """The sink, the load generator and the systems of one run, on their CPUs."""

    def __init__(self, options: Options, workdir: Path, stack: ExitStack, binary: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.stack = stack
        self.binary = binary
        self.pinning = Pinning.choose(1, options.system_cpus, options.loadgen_cpus, options.pin)
        self.system_cpus = self.pinning.sampler_cpu(0)
        self.sink = Child.start(
            "benchmarks.versus_collector.sink", [], self.pinning.loadgen_cpus, workdir / "sink.log"
        )
        stack.callback(self.sink.stop)
        self.sink_port = int(self.sink.expect("listening", READY_TIMEOUT_S)["port"])
        self.workers: Workers | None = None

    def sink_command(self, message: dict[str, Any], event: str) -> dict[str, Any]:
        self.sink.send(message)
        return self.sink.expect(event, READY_TIMEOUT_S)

    def sink_spans(self) -> int:
        return int(self.sink_command({"op": "stats"}, "stats")["spans"])

    def sampler(self, name: str) -> SamplerSystem:
        system = SamplerSystem(
            self.workdir,
            name,
            self.system_cpus,
            sink_port=self.sink_port,
            decision_wait_s=self.options.decision_wait_s,
        )
        return self._started(system)

    def collector(self, name: str, policies: PolicySet) -> CollectorSystem:
        system = CollectorSystem(
            self.workdir,
            name,
            self.system_cpus,
            binary=self.binary,
            policies=policies,
            settings=CollectorSettings(decision_wait_s=self.options.decision_wait_s),
            sink_port=self.sink_port,
        )
        return self._started(system)

    def _started(self, system: S) -> S:
        self.stack.callback(system.kill)
        system.start()
        return system


def wait_idle(system: System, timeout_s: float) -> tuple[Snapshot, float | None]:
    """The first snapshot at which everything arrived is decided, and how long that took
    (None: not within ``timeout_s``; the last snapshot then)."""
    started = time.monotonic()
    while True:
        snapshot = system.snapshot()
        if system.idle(snapshot):
            return snapshot, round(time.monotonic() - started, 2)
        if time.monotonic() - started > timeout_s:
            return snapshot, None
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------------
# Quality: the labelled corpus, live
# ------------------------------------------------------------------------------------------------


@dataclass
class QualityRun:
    scores: dict[str, Any]
    kept_spans: int
    details: dict[str, Any]


def quality(bench: Bench, system: System, timeline: Timeline, corpus: Corpus) -> QualityRun:
    """Replay the corpus to a started system, stop it cleanly, score what reached the sink."""
    recording = bench.workdir / f"{system.name}.kept"
    bench.sink_command({"op": "record", "path": str(recording)}, "recording")
    sink_before = bench.sink_spans()
    replayed = asyncio.run(replay(system.target, timeline, bench.options.speedup))
    settled, waited = wait_idle(
        system, bench.options.decision_wait_s + bench.options.idle_timeout_s
    )
    exit_code = system.terminate()
    bench.sink_command({"op": "record", "path": None}, "recording")
    sink_spans = bench.sink_spans() - sink_before

    jsonl = bench.workdir / f"{system.name}.kept.jsonl"
    with jsonl.open("w", encoding="utf-8") as out:
        for request in read_recording(recording):
            out.write(request_to_json(request))
            out.write("\n")
    kept = kept_spans_by_session(jsonl, corpus)
    scores = score(corpus, kept)
    counters = system.counters(settled)
    details: dict[str, Any] = {
        "replay": replayed.to_json(),
        "decided_before_stop_s": waited,
        "exit_code": exit_code,
        "sink_spans": sink_spans,
        "accepted_spans": round(counters.accepted_spans),
        "refused_spans": round(counters.refused_spans),
        "lost": round(counters.lost),
        "peak_rss_mb": round(settled.peak_rss_kib * MIB_PER_KIB, 1),
        "cpu_seconds": round(settled.cpu_seconds, 2),
    }
    if isinstance(system, CollectorSystem):
        details["policy_keeps"] = CollectorSystem.policy_keeps(settled)
        details["late_spans_by_cached_decision"] = round(
            settled.total("otelcol_processor_tail_sampling_early_releases_from_cache_decision")
        )
    return QualityRun(scores, sum(kept.values()), details)


def mean_recall(scores: dict[str, Any]) -> float:
    values = [
        scores["recall"][label] for label in RARE_LABELS if scores["recall"][label] is not None
    ]
    return round(statistics.fmean(values), 4) if values else 0.0


# ------------------------------------------------------------------------------------------------
# Throughput: pre-built requests, as fast as accepted
# ------------------------------------------------------------------------------------------------


def rewrite_both_halves(pools: Pools) -> Pools:
    """The same pools, with each round's number also written into bytes 8-11 of every trace id.

    The collector's decision cache keys on the right half of the trace id (``rightHalfTraceID``
    in its ``cache`` package). Rounds that only changed the first bytes would all look like the
    first round's traces there, and the collector would release them from its cache without
    deciding anything. Both systems get these same bytes."""

    def widen(pool: RequestPool) -> RequestPool:
        offsets = pool.trace_id_offsets
        both = np.sort(np.concatenate([offsets, offsets + TRACE_ID_RIGHT_HALF]))
        return dataclasses.replace(pool, trace_id_offsets=both)

    return Pools(
        pools.spec,
        tuple(widen(p) for p in pools.full),
        tuple(widen(p) for p in pools.rootless),
    )


@dataclass
class Window:
    """One driver run and the system around its measured window."""

    loadgen: WindowResult
    before: Snapshot
    after: Snapshot
    counters: Counters  # over the window (`held`: at its end)

    @property
    def seconds(self) -> float:
        return self.after.at - self.before.at

    @property
    def spans_per_second(self) -> float:
        """What the system took, by its own count."""
        return self.counters.accepted_spans / self.seconds if self.seconds > 0 else 0.0

    @property
    def pace(self) -> float | None:
        """Decided over arrived during the window."""
        arrived = self.counters.arrived
        return self.counters.decided / arrived if arrived else None

    @property
    def held_seconds(self) -> float | None:
        """What is undecided at the end of the window, in seconds of arrivals."""
        rate = self.counters.arrived / self.seconds if self.seconds > 0 else 0.0
        return self.counters.held / rate if rate else None


def measure(bench: Bench, system: System, command: Command) -> Window:
    workers = bench.workers
    assert workers is not None
    workers.start_run(command)
    workers.expect_all("window_start", command.warmup_s + EVENT_SLACK_S)
    before = system.snapshot()
    workers.expect_all("window_end", command.window_s + EVENT_SLACK_S)
    after = system.snapshot()
    result = workers.results(CALL_TIMEOUT_S + EVENT_SLACK_S)
    counters = system.counters(after).minus(system.counters(before))
    return Window(result, before, after, counters)


def judge(window: Window, options: Options) -> list[str]:
    """Why a window is not a sustained rate (empty: it is).

    Sustained means: no refused or failed call; nothing refused or lost by the system's own
    count (the collector: receiver refusals and failures, traces dropped before their decision
    or for their size, exporter send and enqueue failures; the sampler: refusals, invalid spans,
    exporter failures, and sessions decided early under memory pressure); and decisions keeping
    pace with arrivals: over the window, what was decided is at least what arrived less
    ``TICK_SLACK_S`` of it, and what is left undecided at the end is at most
    ``decision_wait + TICK_SLACK_S`` of it. (The collector decides once a second, a second's
    worth of traces at a time: without that slack, a window holding one tick fewer than its
    length in seconds would look like falling behind.)"""
    reasons = []
    if window.loadgen.requests_refused:
        reasons.append(f"{window.loadgen.requests_refused} requests refused")
    if window.loadgen.requests_failed:
        reasons.append(f"{window.loadgen.requests_failed} requests failed")
    c = window.counters
    if c.refused_spans:
        reasons.append(f"{c.refused_spans:.0f} spans refused")
    if c.lost:
        reasons.append(f"{c.lost:.0f} lost")
    if c.pressure:
        reasons.append(f"{c.pressure:.0f} sessions decided early under pressure")
    pace, floor = window.pace, 1.0 - TICK_SLACK_S / max(window.seconds, TICK_SLACK_S)
    if pace is None or pace < floor:
        reasons.append(f"decided {pace and round(pace, 3)} of the {c.unit} arrived (< {floor:.3f})")
    held_s, most = window.held_seconds, options.decision_wait_s + TICK_SLACK_S
    if held_s is None or held_s > most:
        reasons.append(
            f"{held_s and round(held_s, 2)} s of {c.unit} undecided at the end (> {most})"
        )
    return reasons


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))], 2)


def window_summary(window: Window, mode: str, reasons: list[str]) -> dict[str, Any]:
    seconds = window.seconds
    loadgen = window.loadgen
    return {
        "mode": mode,
        "seconds": round(seconds, 2),
        "offered_spans_per_second": round(loadgen.offered_spans_per_second),
        "accepted_spans_per_second": round(window.spans_per_second),
        "refused_requests": loadgen.requests_refused,
        "failed_requests": loadgen.requests_failed,
        "errors": loadgen.errors,
        "lost": round(window.counters.lost),
        "decided_over_arrived": None if window.pace is None else round(window.pace, 3),
        "pace_unit": window.counters.unit,
        "held_at_end": round(window.counters.held),
        "held_seconds_at_end": None
        if window.held_seconds is None
        else round(window.held_seconds, 2),
        "system_cpu_utilisation": round(
            (window.after.cpu_seconds - window.before.cpu_seconds) / seconds, 3
        )
        if seconds
        else None,
        "loadgen_cpu_utilisation": round(loadgen.cpu_seconds / loadgen.seconds, 3)
        if loadgen.seconds
        else None,
        "p50_export_ms": _percentile(loadgen.latencies_ms, 0.5),
        "p99_export_ms": _percentile(loadgen.latencies_ms, 0.99),
        "rss_mb_end": round(window.after.rss_kib * MIB_PER_KIB, 1),
        "sustained": not reasons,
        "why_not_sustained": reasons,
    }


def throughput(bench: Bench, system: System) -> dict[str, Any]:
    """The highest sustained rate of a started system, its memory and its CPU per span."""
    options = bench.options
    sink_before = bench.sink_spans()
    exported_before = system.counters(system.snapshot()).exported_spans
    rate: float | None = None
    attempts: list[tuple[Window, dict[str, Any]]] = []
    chosen: Window | None = None
    for _ in range(max(1, options.max_attempts)):
        command = Command(
            targets=(system.target,),
            streams=options.streams,
            rate=rate,
            warmup_s=options.warmup_s,
            window_s=options.window_s,
        )
        window = measure(bench, system, command)
        reasons = judge(window, options)
        mode = "as fast as accepted" if rate is None else f"paced {rate:.0f}"
        attempts.append((window, window_summary(window, mode, reasons)))
        if not reasons:
            chosen = window
            break
        taken = window.spans_per_second
        offered = rate if rate is not None else window.loadgen.offered_spans_per_second
        rate = max(1.0, 0.8 * taken if taken > 0.1 * offered else 0.5 * offered)
    best = chosen or max(attempts, key=lambda a: a[0].spans_per_second)[0]

    peak_rss_kib = system.snapshot().peak_rss_kib
    profile: dict[str, Any] | None = None
    if options.profile and isinstance(system, SamplerSystem):
        profile = profile_under_load(bench, system)
    # The load stops mid-round: traces whose root was never sent stay open in the sampler
    # (open_trace_wait), so "everything decided" never comes. Wait for what can be decided.
    time.sleep(options.decision_wait_s + 1.5)
    exported, sink_spans = _sink_settled(bench, system, sink_before, exported_before)
    cpu = best.after.cpu_seconds - best.before.cpu_seconds
    result: dict[str, Any] = {
        "spans_per_second": round(best.spans_per_second),
        "sustained": chosen is not None,
        "peak_rss_mb": round(peak_rss_kib * MIB_PER_KIB, 1),
        "cpu_utilisation": round(cpu / best.seconds, 3) if best.seconds else None,
        # What one fully used core would take at this cost: the rate with contention from
        # other work on the machine taken out.
        "spans_per_cpu_second": round(best.counters.accepted_spans / cpu) if cpu > 0 else None,
        "cpu_seconds_per_million_spans": round(cpu / best.counters.accepted_spans * 1e6, 2)
        if best.counters.accepted_spans
        else None,
        "p50_export_ms": _percentile(best.loadgen.latencies_ms, 0.5),
        "p99_export_ms": _percentile(best.loadgen.latencies_ms, 0.99),
        "exported_spans": exported,
        "sink_spans": sink_spans,
        "sink_missing_spans": exported - sink_spans,
        "attempts": [summary for _, summary in attempts],
    }
    if profile is not None:
        result["profile"] = profile
    return result


def _sink_settled(
    bench: Bench, system: System, sink_before: int, exported_before: float, timeout_s: float = 5.0
) -> tuple[int, int]:
    """(spans the system says it exported, spans the sink received) since the ``before``
    counts, once they agree (or after ``timeout_s``: a difference is then spans lost between)."""
    deadline = time.monotonic() + timeout_s
    while True:
        exported = round(system.counters(system.snapshot()).exported_spans - exported_before)
        received = bench.sink_spans() - sink_before
        if received == exported or time.monotonic() > deadline:
            return exported, received
        time.sleep(0.1)


def profile_under_load(bench: Bench, system: SamplerSystem) -> dict[str, Any]:
    """py-spy on the sampler while it takes load as fast as it can (after the measurements,
    so that the profiler's small cost is not in them)."""
    options = bench.options
    out = bench.workdir / f"{system.name}.pyspy.txt"
    workers = bench.workers
    assert workers is not None
    command = Command(
        targets=(system.target,),
        streams=options.streams,
        warmup_s=1.0,
        window_s=options.profile_s + 1.0,
    )
    workers.start_run(command)
    workers.expect_all("window_start", command.warmup_s + EVENT_SLACK_S)
    recorder = start_recording(
        system.pid, options.profile_s, out, bench.pinning.loadgen_cpus or tuple()
    )
    workers.expect_all("window_end", command.window_s + EVENT_SLACK_S)
    workers.results(CALL_TIMEOUT_S + EVENT_SLACK_S)
    if recorder is None:
        return {"error": "py-spy is not installed"}
    try:
        recorder.wait(options.profile_s + 30)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait(5)
    if not out.exists():
        return {"error": f"py-spy wrote nothing (exit {recorder.returncode})"}
    return summarise(out)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


@contextmanager
def _affinity(cpus: Sequence[int]) -> Iterator[None]:
    previous = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def _fraction(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def run(options: Options, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    binary, why = build_collector()
    if binary is None:
        raise CollectorUnavailable(f"no collector binary: {why}")
    clock = PhaseClock()
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="versus-")))
        bench = Bench(options, workdir, stack, binary)
        stack.enter_context(_affinity(bench.pinning.loadgen_cpus))

        progress("generating the labelled corpus")
        shape, generator = PROFILES[options.traffic]
        corpus = generator(shape(TrafficSpec(seed=options.seed, sessions=options.sessions)))
        timeline = Timeline.from_corpus(corpus)
        traces = corpus_traces(corpus)
        base_policies = PolicySet.from_corpus(corpus, traces)
        clock.done("corpus")

        progress(f"quality: sampler ({timeline.recorded_seconds / options.speedup:.0f} s)")
        sampler_q = quality(bench, bench.sampler("sampler-quality"), timeline, corpus)
        clock.done("quality_sampler")
        percentage = tune_percentage(base_policies, traces, sampler_q.kept_spans)
        policies = base_policies.with_percentage(percentage)
        progress(f"quality: collector (baseline {percentage}%)")
        collector_q = quality(
            bench, bench.collector("collector-quality", policies), timeline, corpus
        )
        clock.done("quality_collector")

        progress("throughput: building the requests")
        pools = rewrite_both_halves(
            build_pools(PoolSpec(options.pool_sessions, options.seed, options.batch_spans, 1))
        )
        pools_path = workdir / "pools.pickle"
        pools.save(pools_path)
        bench.workers = Workers.start(pools_path, 1, bench.pinning.loadgen_cpus, workdir)
        stack.callback(bench.workers.stop)
        bench.workers.wait_ready()
        clock.done("throughput_build")
        progress("throughput: sampler")
        sampler = bench.sampler("sampler-throughput")
        sampler_t = throughput(bench, sampler)
        sampler.kill()
        clock.done("throughput_sampler")
        progress("throughput: collector")
        collector = bench.collector("collector-throughput", policies)
        collector_t = throughput(bench, collector)
        collector.kill()
        clock.done("throughput_collector")
        pinning = bench.pinning.describe()

    spans = corpus.span_count
    s_scores, c_scores = sampler_q.scores, collector_q.scores
    predicted = predicted_kept_spans(policies, traces)
    s_rate, c_rate = sampler_t["spans_per_second"], collector_t["spans_per_second"]
    return {
        "sampler_spans_per_second": s_rate,
        "collector_spans_per_second": c_rate,
        "sampler_over_collector_spans_per_second": round(s_rate / c_rate, 3) if c_rate else None,
        "sampler_spans_per_cpu_second": sampler_t["spans_per_cpu_second"],
        "collector_spans_per_cpu_second": collector_t["spans_per_cpu_second"],
        "sampler_peak_rss_mb": sampler_t["peak_rss_mb"],
        "collector_peak_rss_mb": collector_t["peak_rss_mb"],
        "sampler_recall": mean_recall(s_scores),
        "collector_recall": mean_recall(c_scores),
        "sampler_kept_fraction": _fraction(sampler_q.kept_spans, spans),
        "collector_kept_fraction": _fraction(collector_q.kept_spans, spans),
        "sampler_kept_session_fraction": s_scores["kept_session_fraction"],
        "collector_kept_session_fraction": c_scores["kept_session_fraction"],
        "sustained": {"sampler": sampler_t["sustained"], "collector": collector_t["sustained"]},
        "quality": {
            "sampler": {**s_scores, **sampler_q.details},
            "collector": {
                **c_scores,
                **collector_q.details,
                "predicted_kept_fraction": _fraction(predicted, spans),
            },
        },
        "throughput": {"sampler": sampler_t, "collector": collector_t},
        "collector_policies": policies.collector_policies(),
        "setup": {
            "decision_wait_s": options.decision_wait_s,
            "speedup": options.speedup,
            "corpus": {
                "sessions": len(corpus.labels),
                "spans": spans,
                "traces": len(traces),
                "requests": len(corpus.requests),
                "recorded_seconds": round(timeline.recorded_seconds, 1),
                "seed": options.seed,
                "traffic": options.traffic,
                "labels": corpus.label_counts(),
            },
            "throughput_pool": {
                "sessions": options.pool_sessions,
                "spans_per_round": pools.span_count,
                "batch_spans": options.batch_spans,
                "streams": options.streams,
                "warmup_s": options.warmup_s,
                "window_s": options.window_s,
            },
            "collector_binary": binary.name,
            "pinning": pinning,
            # Other work on the machine competes for the systems' CPU (see spans_per_cpu_second)
            "load_average_1m": {"start": load_before, "end": os.getloadavg()[0]},
        },
        "phase_seconds": clock.seconds,
        "elapsed_seconds": clock.total(),
    }


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def _cpus(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def parse_args(argv: Sequence[str] | None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.versus_collector",
        description="agent-tail-sampler vs the OpenTelemetry Collector's tail_sampling: "
        "recall at equal kept volume, sustained spans/s per core, peak RSS.",
    )
    add = parser.add_argument
    add("--json", action="store_true", help="print only the JSON line")
    add("--quick", action="store_true", help="tiny corpus and windows: checks it runs")
    add("--profile", action="store_true", help="py-spy the sampler under load at the end")
    add("--sessions", type=int, help="sessions in the labelled corpus (3000)")
    add("--seed", type=int, help="corpus and request seed (1)")
    add("--traffic", choices=sorted(PROFILES), help="quality corpus profile (default)")
    add("--speedup", type=float, help="replay the corpus this many times faster (60)")
    add("--decision-wait", type=int, help="both systems' decision_wait in seconds (3)")
    add("--pool-sessions", type=int, help="sessions per round of the throughput requests")
    add("--streams", type=int, help="concurrent streams of the load generator (4)")
    add("--warmup", type=float, help="seconds before each throughput window (5)")
    add("--window", type=float, help="seconds of each throughput window (8)")
    add("--max-attempts", type=int, help="throughput windows per system at most (3)")
    add("--no-pin", action="store_true", help="do not pin processes to CPUs")
    add("--system-cpus", type=_cpus, help="the CPU each system runs on (0)")
    add("--loadgen-cpus", type=_cpus, help="generator, sink and harness CPUs (1)")
    args = parser.parse_args(argv)
    changes: dict[str, Any] = dict(QUICK) if args.quick else {}
    given = {
        "sessions": args.sessions,
        "seed": args.seed,
        "traffic": args.traffic,
        "speedup": args.speedup,
        "decision_wait_s": args.decision_wait,
        "pool_sessions": args.pool_sessions,
        "streams": args.streams,
        "warmup_s": args.warmup,
        "window_s": args.window,
        "max_attempts": args.max_attempts,
        "system_cpus": args.system_cpus,
        "loadgen_cpus": args.loadgen_cpus,
    }
    changes.update({key: value for key, value in given.items() if value is not None})
    if args.decision_wait is not None and args.decision_wait < 1:
        parser.error("--decision-wait must be at least 1 (the collector decides once a second)")
    options = dataclasses.replace(Options(), **changes, pin=not args.no_pin, profile=args.profile)
    return options, args.json


def format_table(result: dict[str, Any]) -> str:
    q, t = result["quality"], result["throughput"]
    rows = [("", "sampler", "collector")]
    for label in RARE_LABELS:
        rows.append(
            (
                f"recall {label}",
                _cell(q["sampler"]["recall"][label]),
                _cell(q["collector"]["recall"][label]),
            )
        )
    for key, name in (
        ("recall", "mean recall"),
        ("kept_fraction", "kept span fraction"),
        ("kept_session_fraction", "kept session fraction"),
    ):
        rows.append((name, _cell(result[f"sampler_{key}"]), _cell(result[f"collector_{key}"])))
    rows.append(
        (
            "whole-session rate",
            _cell(q["sampler"]["whole_session_rate"]),
            _cell(q["collector"]["whole_session_rate"]),
        )
    )
    for key, name in (
        ("spans_per_second", "spans/s, one core"),
        ("cpu_utilisation", "core used"),
        ("spans_per_cpu_second", "spans per CPU second"),
        ("peak_rss_mb", "peak RSS MB"),
        ("cpu_seconds_per_million_spans", "CPU s per million spans"),
        ("p50_export_ms", "p50 export ms"),
        ("p99_export_ms", "p99 export ms"),
        ("sustained", "sustained"),
    ):
        rows.append((name, _cell(t["sampler"][key]), _cell(t["collector"][key])))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"elapsed {result['elapsed_seconds']} s")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    options, json_only = parse_args(argv)

    def progress(message: str) -> None:
        if not json_only:
            print(f"... {message}", flush=True)

    try:
        result = run(options, progress)
    except CollectorUnavailable as exc:
        print(f"versus_collector: {exc}", flush=True)
        return 2
    if not json_only:
        print(format_table(result))
    print(json.dumps(result), flush=True)
    return 0
