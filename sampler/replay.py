"""``agent-sampler replay``: recorded traffic through the same Pipeline, offline.

Time comes from the spans: before each recorded request the clock moves to the latest span end
time seen so far, so ``decision_wait``, grace periods and rate limits behave as they did live
(for traffic recorded in arrival order). Kept spans are written as OTLP/JSON lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sampler.clock import ManualClock
from sampler.config.model import SamplerConfig
from sampler.export.base import ExporterSettings
from sampler.export.file_exporter import FileExporter
from sampler.otlp.json_codec import iter_json_lines
from sampler.pipeline import Pipeline, PipelineStats


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


def replay(config: SamplerConfig, inputs: Sequence[str], output: str) -> ReplayResult:
    clock = ManualClock(0.0)
    writer = FileExporter(output, ExporterSettings())
    try:
        pipeline = Pipeline(config, _FileSink(writer), clock)
        requests = 0
        for path in inputs:
            for request in iter_json_lines(path):
                latest_end = max(
                    (
                        span.end_time_unix_nano
                        for rs in request.resource_spans
                        for ss in rs.scope_spans
                        for span in ss.spans
                    ),
                    default=0,
                )
                clock.advance_to(latest_end / 1e9)
                pipeline.decide_due()
                pipeline.consume(request, transport="replay")
                requests += 1
        pipeline.decide_all()
    finally:
        writer.close()
    return ReplayResult(pipeline.stats, requests)


def summary_rows(stats: PipelineStats) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for rule, t in sorted(stats.by_rule.items()):
        rows.append(
            {
                "rule": rule,
                "sessions_seen": t.sessions_seen,
                "sessions_kept": t.sessions_kept,
                "spans_seen": t.spans_seen,
                "spans_kept": t.spans_kept,
                "keep_ratio": round(t.sessions_kept / t.sessions_seen, 4)
                if t.sessions_seen
                else 0.0,
            }
        )
    return rows


def format_summary(stats: PipelineStats) -> str:
    rows = summary_rows(stats)
    total_seen = sum(int(r["sessions_seen"]) for r in rows)  # type: ignore[call-overload]
    total_kept = sum(int(r["sessions_kept"]) for r in rows)  # type: ignore[call-overload]
    spans_seen = sum(int(r["spans_seen"]) for r in rows)  # type: ignore[call-overload]
    spans_kept = sum(int(r["spans_kept"]) for r in rows)  # type: ignore[call-overload]
    rows.append(
        {
            "rule": "TOTAL",
            "sessions_seen": total_seen,
            "sessions_kept": total_kept,
            "spans_seen": spans_seen,
            "spans_kept": spans_kept,
            "keep_ratio": round(total_kept / total_seen, 4) if total_seen else 0.0,
        }
    )
    headers = ["rule", "sessions_seen", "sessions_kept", "spans_seen", "spans_kept", "keep_ratio"]
    return _table(headers, ([str(r[h]) for h in headers] for r in rows))


def summary_json(stats: PipelineStats, requests: int) -> str:
    return json.dumps(
        {
            "requests": requests,
            "late_spans_kept": stats.late_spans_kept,
            "late_spans_dropped": stats.late_spans_dropped,
            "rules": summary_rows(stats),
        }
    )


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
