"""``agent-sampler replay``: recorded traffic through the same Pipeline, offline.

Time comes from the spans: a recorded request arrives at its latest span end time, and the clock
moves there through every time at which a session becomes due or a hold ends, deciding there
as the live ticker would (``decide_until``); at the end of the input it runs on until nothing
is buffered or held. So ``decision_wait``, grace periods, holds, rate limits and the budget
behave as they did live (for traffic recorded in arrival order). Kept spans are written as
OTLP/JSON lines.

Every decision is also shown to a ``ReplayObservations``, which aggregates as it goes (per
signal tallies, rare shapes, kept volume over time, rarity score histograms) so that memory
stays bounded however long the recording. ``sampler.report`` renders them as an HTML page.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from sampler._native import InvalidRequest, Request, RequestTooLarge, validate_json
from sampler.clock import ManualClock
from sampler.config.model import ReceiversConfig, SamplerConfig
from sampler.export.base import ExporterSettings
from sampler.export.file_exporter import FileExporter
from sampler.otlp.json_codec import OtlpDecodeError
from sampler.pipeline import Pipeline, PipelineStats, RuleTally
from sampler.rules.facts import DecisionFacts
from sampler.rules.verdict import Verdict

NO_SIGNAL = "(no signal)"  # the row of sessions on which no signal fired
TOP_SHAPES = 10
TIMELINE_BUCKETS = 50
SCORE_BINS = 20
# Distinct shapes remembered for the rare-shape table. Beyond this the least rare half is
# forgotten: memory stays bounded, and a forgotten shape seen again restarts its counts (the
# rarest shapes, the ones the table shows, are the ones kept).
MAX_SHAPES = 10_000


@dataclass(slots=True)
class ShapeTally:
    sessions: int = 0
    sessions_kept: int = 0
    peak_score: float = 0.0  # the highest rarity shape score a session of this shape had


@dataclass(slots=True)
class KeptTimeline:
    """Kept spans per rule in at most ``max_buckets`` equal time buckets from the first
    decision. The replay's time span is not known in advance: when a decision falls past the
    last bucket, the bucket width doubles and neighbouring buckets merge, so a finished
    timeline holds between ``max_buckets / 2`` and ``max_buckets`` buckets (or fewer when the
    whole replay fits in a few initial widths)."""

    max_buckets: int = TIMELINE_BUCKETS
    width_s: float = 1.0
    start: float | None = None
    end: float | None = None
    kept_spans: dict[str, list[int]] = field(default_factory=dict)  # rule -> per bucket

    def add(self, rule: str, now: float, kept_spans: int) -> None:
        if self.start is None:
            self.start = now
        self.end = now if self.end is None else max(self.end, now)
        index = self._index(now)
        while index >= self.max_buckets:
            self._coarsen()
            index = self._index(now)
        series = self.kept_spans.setdefault(rule, [])
        if kept_spans:
            series.extend([0] * (index + 1 - len(series)))
            series[index] += kept_spans

    @property
    def bucket_count(self) -> int:
        if self.start is None or self.end is None:
            return 0
        return self._index(self.end) + 1

    def series(self, rule: str) -> list[int]:
        """Kept spans of ``rule`` per bucket, ``bucket_count`` long."""
        values = self.kept_spans.get(rule, [])
        return values + [0] * (self.bucket_count - len(values))

    def _index(self, now: float) -> int:
        start = self.start if self.start is not None else now
        return max(0, int((now - start) // self.width_s))

    def _coarsen(self) -> None:
        self.width_s *= 2
        for rule, values in self.kept_spans.items():
            self.kept_spans[rule] = [sum(values[i : i + 2]) for i in range(0, len(values), 2)]


@dataclass(slots=True)
class ScoreHistogram:
    """Sessions per rarity score bin (scores are in [0, 1]; bin ``i`` holds
    ``[i / bins, (i + 1) / bins)``, the last one also 1), kept apart from dropped."""

    bins: int = SCORE_BINS
    kept: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kept = self.kept or [0] * self.bins
        self.dropped = self.dropped or [0] * self.bins

    def add(self, score: float, keep: bool) -> None:
        index = min(self.bins - 1, max(0, int(score * self.bins)))
        (self.kept if keep else self.dropped)[index] += 1


@dataclass(slots=True)
class ReplayObservations:
    """What the replay saw of every decision, aggregated as it goes: memory is bounded by the
    number of rules, signals, score dimensions and ``max_shapes``, not by the traffic."""

    max_shapes: int = MAX_SHAPES
    by_signal: dict[str, RuleTally] = field(default_factory=dict)
    shapes: dict[str, ShapeTally] = field(default_factory=dict)
    timeline: KeptTimeline = field(default_factory=KeptTimeline)
    scores: dict[str, ScoreHistogram] = field(default_factory=dict)  # rarity dimension ->

    def decided(
        self, facts: DecisionFacts, verdict: Verdict, now: float, *, second_look: bool = False
    ) -> None:
        """One decision. A second look that keeps a dropped session is another decision, as
        in the pipeline's rule tallies (so kept counts add up to the output); its scores and
        shape were recorded at its first decision."""
        spans, keep = facts.span_count, verdict.keep
        for signal in facts.signals or (NO_SIGNAL,):
            tally = self.by_signal.get(signal)
            if tally is None:
                tally = self.by_signal[signal] = RuleTally()
            tally.sessions_seen += 1
            tally.spans_seen += spans
            if keep:
                tally.sessions_kept += 1
                tally.spans_kept += spans
        self.timeline.add(verdict.rule, now, spans if keep else 0)
        if second_look:
            return
        # A session decided before (a continuation, or reopened) has only a latency score:
        # its shape describes a piece, so it is left out of the shape table as well.
        for dimension, score in facts.rarity.items():
            histogram = self.scores.get(dimension)
            if histogram is None:
                histogram = self.scores[dimension] = ScoreHistogram()
            histogram.add(score, keep)
        if "shape" in facts.rarity:
            self._observe_shape(facts.shape, facts.rarity["shape"], keep)

    def _observe_shape(self, shape: str, score: float, keep: bool) -> None:
        tally = self.shapes.get(shape)
        if tally is None:
            if len(self.shapes) >= self.max_shapes:
                kept = sorted(self.shapes.items(), key=_rarest_first)[: self.max_shapes // 2]
                self.shapes = dict(kept)
            tally = self.shapes[shape] = ShapeTally()
        tally.sessions += 1
        tally.sessions_kept += keep
        tally.peak_score = max(tally.peak_score, score)

    def rarest_shapes(self, n: int = TOP_SHAPES) -> list[tuple[str, ShapeTally]]:
        """The ``n`` shapes with the highest peak shape score, fewest sessions first on ties
        (before the rarity model has warmed up every score is 0: then the least seen)."""
        return sorted(self.shapes.items(), key=_rarest_first)[:n]


def _rarest_first(item: tuple[str, ShapeTally]) -> tuple[float, int, str]:
    shape, tally = item
    return (-tally.peak_score, tally.sessions, shape)


class _FileSink:
    def __init__(self, writer: FileExporter) -> None:
        self.writer = writer

    def try_submit(self, request: bytes, span_count: int) -> bool:
        self.writer.write_now(request)
        return True


@dataclass(frozen=True, slots=True)
class ReplayResult:
    stats: PipelineStats
    requests: int
    observed: ReplayObservations = field(default_factory=ReplayObservations)


def replay(config: SamplerConfig, inputs: Sequence[str], output: str) -> ReplayResult:
    clock = ManualClock(0.0)
    observed = ReplayObservations()
    writer = FileExporter(output, ExporterSettings())
    try:
        # As live: sessions are decided by the timer (decide_until), not in the intake path.
        pipeline = Pipeline(
            config, _FileSink(writer), clock, observer=observed, decide_on_intake=False
        )
        requests = 0
        for path in inputs:
            for request in read_requests(path, config.receivers):
                decide_until(pipeline, clock, request.max_end_ns / 1e9)
                pipeline.consume(request)
                requests += 1
        decide_until(pipeline, clock, math.inf)  # the capture's end: its timers still run
    finally:
        writer.close()
    return ReplayResult(pipeline.stats, requests, observed)


def decide_until(pipeline: Pipeline, clock: ManualClock, until: float) -> None:
    """Moves the clock to ``until`` as the live ticker would: through each time at which a
    session becomes due or a hold ends, deciding there and then. With ``until`` infinite, until
    nothing is buffered or held.

    Everything that depends on when a decision is made follows the same timeline as live: the
    budget's rates and the probabilities it recomputes once a second, the rate limits, the
    rarity windows, the holds. Deciding what became due only when the next request arrived, or
    all that was left at the last timestamp, bunched decisions at one instant: the budget then
    kept every session of the bunch with the probability it had computed before the bunch's
    other keeps were counted (1 / ratio, more than live kept)."""
    core = pipeline.core
    stalled = 0
    while (deadline := core.next_deadline()) is not None and deadline <= until:
        if deadline <= clock.now():
            stalled += 1  # the first step may be due already; a second cannot
            if stalled > 2:
                raise RuntimeError("replay: the session timers do not move on (a bug)")
        else:
            stalled = 0
        clock.advance_to(deadline)
        pipeline.decide_due()
    if math.isfinite(until):
        clock.advance_to(until)


def read_requests(path: str | os.PathLike[str], limits: ReceiversConfig) -> Iterator[Request]:
    """The requests of a file of OTLP/JSON lines (blank lines skipped), within the receivers'
    limits. A bad line raises ``OtlpDecodeError`` whose message starts with ``PATH:LINE:``."""
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                yield validate_json(line, limits.max_message_size, limits.max_spans_per_request)
            except (InvalidRequest, RequestTooLarge) as err:
                raise OtlpDecodeError(f"{os.fspath(path)}:{number}: {err}") from None


def _tally_row(name_key: str, name: str, t: RuleTally) -> dict[str, object]:
    return {
        name_key: name,
        "sessions_seen": t.sessions_seen,
        "sessions_kept": t.sessions_kept,
        "spans_seen": t.spans_seen,
        "spans_kept": t.spans_kept,
        "keep_ratio": round(t.sessions_kept / t.sessions_seen, 4) if t.sessions_seen else 0.0,
    }


def summary_rows(stats: PipelineStats) -> list[dict[str, object]]:
    return [_tally_row("rule", rule, t) for rule, t in sorted(stats.by_rule.items())]


def total_row(stats: PipelineStats) -> dict[str, object]:
    total = RuleTally()
    for t in stats.by_rule.values():
        total.sessions_seen += t.sessions_seen
        total.sessions_kept += t.sessions_kept
        total.spans_seen += t.spans_seen
        total.spans_kept += t.spans_kept
    return _tally_row("rule", "TOTAL", total)


def signal_rows(observed: ReplayObservations) -> list[dict[str, object]]:
    """One row per signal that fired (a session counts under each of its signals), then the
    sessions on which none fired."""
    names = sorted(name for name in observed.by_signal if name != NO_SIGNAL)
    if NO_SIGNAL in observed.by_signal:
        names.append(NO_SIGNAL)
    return [_tally_row("signal", name, observed.by_signal[name]) for name in names]


def rare_shape_rows(observed: ReplayObservations, n: int = TOP_SHAPES) -> list[dict[str, object]]:
    return [
        {
            "shape": shape,
            "peak_score": round(t.peak_score, 4),
            "sessions": t.sessions,
            "sessions_kept": t.sessions_kept,
        }
        for shape, t in observed.rarest_shapes(n)
    ]


TALLY_HEADERS = ["sessions_seen", "sessions_kept", "spans_seen", "spans_kept", "keep_ratio"]
SHAPE_HEADERS = ["shape", "peak_score", "sessions", "sessions_kept"]


def format_summary(stats: PipelineStats, observed: ReplayObservations | None = None) -> str:
    """The per-rule table; with ``observed``, also the per-signal and rare-shape tables."""
    rows = [*summary_rows(stats), total_row(stats)]
    headers = ["rule", *TALLY_HEADERS]
    text = _table(headers, ([str(r[h]) for h in headers] for r in rows))
    text += (
        f"\nspans written: {stats.spans_submitted} (kept by rules, and {stats.late_spans_kept}"
        " late spans that followed a keep); a session kept on a second look counts as a"
        " second decision"
    )
    if observed is None:
        return text
    headers = ["signal", *TALLY_HEADERS]
    signals = signal_rows(observed)
    text += "\n\n" + (
        _table(headers, ([str(r[h]) for h in headers] for r in signals))
        if signals
        else "no sessions decided: no signals"
    )
    shapes = rare_shape_rows(observed)
    text += "\n\n" + (
        "top rare shapes (highest rarity shape score first)\n"
        + _table(SHAPE_HEADERS, ([_clip(str(r[h])) for h in SHAPE_HEADERS] for r in shapes))
        if shapes
        else "no shapes scored"
    )
    return text


def summary_json(
    stats: PipelineStats, requests: int, observed: ReplayObservations | None = None
) -> str:
    summary: dict[str, object] = {
        "requests": requests,
        "spans_kept": stats.spans_submitted,  # what the output holds: rules' keeps and late
        "late_spans_kept": stats.late_spans_kept,
        "late_spans_dropped": stats.late_spans_dropped,
        "rules": summary_rows(stats),
    }
    if observed is not None:
        summary["signals"] = signal_rows(observed)
        summary["rare_shapes"] = rare_shape_rows(observed)
    return json.dumps(summary)


def _clip(text: str, limit: int = 72) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _table(headers: list[str], rows: Iterable[list[str]]) -> str:
    body = [headers, *rows]
    widths = [max(len(row[i]) for row in body) for i in range(len(headers))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in body
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
