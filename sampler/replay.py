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

import contextlib
import gzip
import io
import json
import math
import os
import stat
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, TextIO

from sampler._native import InvalidRequest, Request, RequestTooLarge, validate_json
from sampler.clock import ManualClock
from sampler.config.model import ReceiversConfig, SamplerConfig
from sampler.export.jsonl_file import JsonlFile
from sampler.otlp.json_codec import OtlpDecodeError
from sampler.pipeline import DecisionObserver, Pipeline, PipelineStats, RuleTally
from sampler.rules.facts import DecisionFacts
from sampler.rules.verdict import Verdict

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

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
    decisions: int = 0  # every decision, a second look that keeps included
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
        self.decisions += 1
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
    def __init__(self, writer: JsonlFile) -> None:
        self.writer = writer

    def try_submit(self, request: bytes, span_count: int) -> bool:
        self.writer.write_request(request)
        return True


class _Discard:
    """Without ``--output``: kept spans are counted by the pipeline, and written nowhere."""

    def try_submit(self, request: bytes, span_count: int) -> bool:
        return True


class _Both:
    """Shows each decision to the replay's observations, then to the caller's observer."""

    def __init__(self, first: DecisionObserver, second: DecisionObserver) -> None:
        self.first, self.second = first, second

    def decided(
        self, facts: DecisionFacts, verdict: Verdict, now: float, *, second_look: bool
    ) -> None:
        self.first.decided(facts, verdict, now, second_look=second_look)
        self.second.decided(facts, verdict, now, second_look=second_look)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    stats: PipelineStats
    requests: int
    observed: ReplayObservations = field(default_factory=ReplayObservations)


def replay(
    config: SamplerConfig,
    inputs: Sequence[str],
    output: str | None = None,
    *,
    progress: Progress | None = None,
    observer: DecisionObserver | None = None,
) -> ReplayResult:
    """Replays ``inputs`` (paths of OTLP/JSON lines files, gzip-compressed or not, or ``-``
    for standard input) in order; kept spans go to ``output``, or nowhere when it is None.
    ``observer`` is shown every decision too, with its facts (the quality benchmark tallies
    signals per labelled session with it)."""
    clock = ManualClock(0.0)
    observed = ReplayObservations()
    writer = JsonlFile(output) if output is not None else None
    try:
        # As live: sessions are decided by the timer (decide_until), not in the intake path.
        pipeline = Pipeline(
            config,
            _FileSink(writer) if writer is not None else _Discard(),
            clock,
            observer=observed if observer is None else _Both(observed, observer),
            decide_on_intake=False,
        )
        requests = spans = read_before = 0
        for path in inputs:
            with open_input(path) as (lines, counted):
                for request in _requests(lines, input_name(path), config.receivers):
                    decide_until(pipeline, clock, request.max_end_ns / 1e9)
                    spans += request.spans
                    pipeline.consume(request)
                    requests += 1
                    if progress is not None:
                        progress.update(read_before + counted.count, spans)
                read_before += counted.count
        decide_until(pipeline, clock, math.inf)  # the capture's end: its timers still run
    finally:
        if writer is not None:
            writer.close()
        if progress is not None:
            progress.finish()
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
    """The requests of a file of OTLP/JSON lines (blank lines skipped; gzip-compressed or not;
    ``-``: standard input), within the receivers' limits. A bad line raises
    ``OtlpDecodeError`` whose message starts with ``PATH:LINE:``."""
    name = os.fspath(path)
    with open_input(name) as (lines, _):
        yield from _requests(lines, input_name(name), limits)


def _requests(lines: Iterable[bytes], name: str, limits: ReceiversConfig) -> Iterator[Request]:
    number = 0
    try:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield validate_json(line, limits.max_message_size, limits.max_spans_per_request)
            except (InvalidRequest, RequestTooLarge) as err:
                raise OtlpDecodeError(f"{name}:{number}: {err}") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:  # a damaged or truncated .gz
        raise OtlpDecodeError(f"{name}:{number + 1}: cannot gunzip: {err}") from None


# -- inputs ------------------------------------------------------------------------------------

STDIN = "-"
GZIP_MAGIC = b"\x1f\x8b"
READ_BUFFER_BYTES = 1 << 20


def input_name(path: str) -> str:
    return "<stdin>" if path == STDIN else path


def input_size(path: str) -> int | None:
    """Bytes of an input as stored, when known: not for standard input or a pipe."""
    if path == STDIN:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None  # reported when it is opened
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def total_size(paths: Sequence[str]) -> int | None:
    sizes = [input_size(path) for path in paths]
    return None if any(size is None for size in sizes) else sum(s for s in sizes if s)


class _Counted(io.RawIOBase):
    """A binary stream counting the bytes read from it: how far into an input the replay is,
    in bytes as stored (compressed, for gzip)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.count = 0
        self._read = getattr(source, "read1", source.read)  # what is there, without waiting

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._read(len(view))
        view[: len(data)] = data
        self.count += len(data)
        return len(data)


@contextlib.contextmanager
def open_input(path: str) -> Iterator[tuple[Iterable[bytes], _Counted]]:
    """The lines of an input (``-``: standard input), gunzipped when it starts as gzip does
    (whatever its name), and the count of bytes read from it as stored."""
    source: BinaryIO = sys.stdin.buffer if path == STDIN else open(path, "rb", buffering=0)
    try:
        counted = _Counted(source)
        buffered = io.BufferedReader(counted, READ_BUFFER_BYTES)
        lines: Iterable[bytes] = buffered
        if buffered.peek(len(GZIP_MAGIC))[: len(GZIP_MAGIC)] == GZIP_MAGIC:
            lines = gzip.GzipFile(fileobj=buffered, mode="rb")
        yield lines, counted
    finally:
        if path != STDIN:
            source.close()


# -- progress ----------------------------------------------------------------------------------

# Without a terminal, progress is shown only for inputs at least this large (a line every
# PROGRESS_LOG_EVERY_S); on a terminal one line is redrawn every PROGRESS_TTY_EVERY_S.
LARGE_INPUT_BYTES = 256 << 20
PROGRESS_TTY_EVERY_S = 0.5
PROGRESS_LOG_EVERY_S = 10.0


class Progress:
    """How far a replay is, on stderr (never on stdout, where ``--json`` goes): bytes read of
    the inputs as stored and spans, per second, and an ETA when the inputs' total size is
    known. On a terminal one line is redrawn in place and cleared at the end; otherwise only a
    large input (``LARGE_INPUT_BYTES``, or that much read of one of unknown size) gets a line
    now and then. Nothing is shown before the first interval: a quick replay shows nothing."""

    def __init__(
        self,
        stream: TextIO,
        total: int | None,
        *,
        tty: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.total = total
        self.tty = tty
        self.clock = clock
        self.started = clock()
        self.every = PROGRESS_TTY_EVERY_S if tty else PROGRESS_LOG_EVERY_S
        self.min_bytes = 0 if tty else LARGE_INPUT_BYTES
        self._next = self.started + self.every
        self._shown = False

    def update(self, position: int, spans: int) -> None:
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.every
        if max(position, self.total or 0) < self.min_bytes:
            return
        text = self.line(position, spans, now - self.started)
        self.stream.write(f"\r{text}\x1b[K" if self.tty else f"{text}\n")
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def line(self, position: int, spans: int, elapsed: float) -> str:
        elapsed = max(elapsed, 1e-9)
        rate = position / elapsed
        text = f"replay: {_bytes(position)}"
        if self.total:
            text += f" of {_bytes(self.total)} ({min(1.0, position / self.total):.0%})"
        text += f", {_bytes(rate)}/s, {_count(spans / elapsed)} spans/s ({_count(spans)} spans)"
        if self.total and rate > 0:
            text += f", ETA {_duration(max(0, self.total - position) / rate)}"
        return text


def _bytes(value: float) -> str:
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if value >= 1 << shift:
            return f"{value / (1 << shift):.1f} {unit}"
    return f"{value:.0f} B"


def _count(value: float) -> str:
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _tally_row(name_key: str, name: str, t: RuleTally, decisions: int) -> dict[str, object]:
    """``decisions``: all decisions of the replay; ``share`` is the part of them this rule made
    (or this signal fired on): for a rule that keeps, or a signal, its false-alarm rate on
    traffic that holds nothing worth keeping."""
    return {
        name_key: name,
        "sessions_seen": t.sessions_seen,
        "sessions_kept": t.sessions_kept,
        "spans_seen": t.spans_seen,
        "spans_kept": t.spans_kept,
        "keep_ratio": round(t.sessions_kept / t.sessions_seen, 4) if t.sessions_seen else 0.0,
        "share": round(t.sessions_seen / decisions, 4) if decisions else 0.0,
    }


def _decisions(stats: PipelineStats) -> int:
    return sum(t.sessions_seen for t in stats.by_rule.values())


def summary_rows(stats: PipelineStats) -> list[dict[str, object]]:
    decisions = _decisions(stats)
    return [_tally_row("rule", rule, t, decisions) for rule, t in sorted(stats.by_rule.items())]


def total_row(stats: PipelineStats) -> dict[str, object]:
    total = RuleTally()
    for t in stats.by_rule.values():
        total.sessions_seen += t.sessions_seen
        total.sessions_kept += t.sessions_kept
        total.spans_seen += t.spans_seen
        total.spans_kept += t.spans_kept
    return _tally_row("rule", "TOTAL", total, total.sessions_seen)


def signal_rows(observed: ReplayObservations) -> list[dict[str, object]]:
    """One row per signal that fired (a session counts under each of its signals), then the
    sessions on which none fired. ``share``: of all decisions, those on which it fired."""
    names = sorted(name for name in observed.by_signal if name != NO_SIGNAL)
    if NO_SIGNAL in observed.by_signal:
        names.append(NO_SIGNAL)
    return [
        _tally_row("signal", name, observed.by_signal[name], observed.decisions) for name in names
    ]


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


TALLY_HEADERS = [
    "sessions_seen", "sessions_kept", "spans_seen", "spans_kept", "keep_ratio", "share",
]  # fmt: skip
SHAPE_HEADERS = ["shape", "peak_score", "sessions", "sessions_kept"]


def format_summary(
    stats: PipelineStats, observed: ReplayObservations | None = None, *, written: bool = True
) -> str:
    """The per-rule table; with ``observed``, also the per-signal and rare-shape tables.
    ``written``: the kept spans went to an output file (else they were only counted)."""
    rows = [*summary_rows(stats), total_row(stats)]
    headers = ["rule", *TALLY_HEADERS]
    text = _table(headers, ([str(r[h]) for h in headers] for r in rows))
    text += (
        f"\nspans {'written' if written else 'kept (no --output: not written)'}: "
        f"{stats.spans_submitted} (kept by rules, and {stats.late_spans_kept}"
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
