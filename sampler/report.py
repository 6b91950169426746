"""A replay as one self-contained HTML page: the summary tables, kept spans over time per rule,
and rarity score histograms, kept vs dropped.

Inline CSS and SVG only (no scripts, no external assets), so the file can be attached to a
ticket or opened offline. The SVG is well-formed XML. Every string that comes from the traffic,
the config or the command line (rule, signal and shape names, paths) is escaped; hovering a
bar shows its exact numbers through SVG ``<title>`` elements, which needs no JavaScript.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime

from sampler.replay import (
    SHAPE_HEADERS,
    TALLY_HEADERS,
    KeptTimeline,
    ReplayResult,
    ScoreHistogram,
    rare_shape_rows,
    signal_rows,
    summary_rows,
    total_row,
)
from sampler.rules.conditions.rare import DIMENSIONS as RARITY_DIMENSIONS
from sampler.rules.conditions.rare import IsRare
from sampler.rules.spec import Condition, RuleSpec

# Rarity thresholds per score dimension: (score, what uses it), e.g. (0.75, "slow-calls").
Thresholds = Mapping[str, Sequence[tuple[float, str]]]

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#17becf",
)
KEPT_COLOR = "#4e79a7"
DROPPED_COLOR = "#bab0ac"

# Timestamps from this value on are taken as Unix time (the replay clock follows span times).
_UNIX_TIME_FROM = 1e8

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1080px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dt { font-weight: 600; }
dd { margin: 0; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: .95em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .25em .7em; border-bottom: 1px solid #e4e4e4; text-align: left; }
th { background: #f6f6f6; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid #bbb; }
td.shape { font-family: ui-monospace, Menlo, monospace; word-break: break-all; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
figcaption { color: #555; font-size: .9em; max-width: 760px; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg .axis { stroke: #555; stroke-width: 1; }
svg .grid { stroke: #e6e6e6; stroke-width: 1; }
svg .title { font-size: 13px; font-weight: 600; }
svg .threshold { stroke: #c00; stroke-width: 1; stroke-dasharray: 4 3; }
svg .threshold-label { fill: #c00; font-size: 10px; }
svg .signal { stroke: #999; stroke-width: 1; stroke-dasharray: 1 3; }
p.note { color: #666; }
"""


def rule_thresholds(
    rules: Sequence[RuleSpec], signal_threshold: float
) -> dict[str, list[tuple[float, str]]]:
    """The scores from which each rule's `rare` conditions match, per rarity dimension: its
    `min_score`, or the signal threshold (``signals.rarity.threshold``) for `rare` without
    one. Conditions inside `all`, `any` and `not` count too. A dimension no rule reads has
    none."""
    out: dict[str, list[tuple[float, str]]] = {}
    for rule in rules:
        for condition in _rare_conditions(rule.condition):
            score = signal_threshold if condition.min_score is None else condition.min_score
            for dimension in condition.dimensions:
                if (score, rule.name) not in out.setdefault(dimension, []):
                    out[dimension].append((score, rule.name))
    return {d: sorted(out[d]) for d in RARITY_DIMENSIONS if d in out}


def _rare_conditions(condition: Condition | None) -> Iterator[IsRare]:
    """The `rare` conditions in a condition tree (combinators hold their parts in fields)."""
    if isinstance(condition, IsRare):
        yield condition
    elif condition is not None and dataclasses.is_dataclass(condition):
        for spec in dataclasses.fields(condition):
            value = getattr(condition, spec.name)
            for part in value if isinstance(value, tuple) else (value,):
                if hasattr(part, "matches"):
                    yield from _rare_conditions(part)


def render_report(
    result: ReplayResult,
    *,
    config_path: str,
    inputs: Sequence[str],
    thresholds: Thresholds | None = None,
    signal_threshold: float | None = None,
) -> str:
    """The whole page. ``thresholds`` (``rule_thresholds``) are drawn on the score histograms,
    each labelled with the rules that use it; ``signal_threshold``, the score from which a
    rarity signal fires, is drawn, fainter, on those no rule reads."""
    stats, observed = result.stats, result.observed
    total = total_row(stats)
    timeline = observed.timeline
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>agent-sampler replay: {_e(config_path)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<h1>agent-sampler replay</h1>",
        "<dl>",
        f"<dt>Config</dt><dd><code>{_e(config_path)}</code></dd>",
        "<dt>Inputs</dt><dd>"
        + "<br>".join(f"<code>{_e(path)}</code>" for path in inputs)
        + "</dd>",
        f"<dt>Requests</dt><dd>{result.requests}</dd>",
        f"<dt>Sessions</dt><dd>{total['sessions_seen']} decided, "
        f"{total['sessions_kept']} kept ({_percent(total['keep_ratio'])})</dd>",
        f"<dt>Spans</dt><dd>{total['spans_seen']} decided, {total['spans_kept']} kept</dd>",
        f"<dt>Late spans</dt><dd>{stats.late_spans_kept} kept, "
        f"{stats.late_spans_dropped} dropped (arrived after their session's decision)</dd>",
        f"<dt>Replay time</dt><dd>{_e(_time_span(timeline))}</dd>",
        "</dl>",
        "<h2>Per rule</h2>",
        _tally_table("rule", [*summary_rows(stats), total], total_rows=1),
        "<h2>Per signal</h2>",
        '<p class="note">A session counts under every signal that fired on it.</p>',
        _tally_table("signal", signal_rows(observed)),
        "<h2>Top rare shapes</h2>",
        '<p class="note">Highest rarity shape score first (peak over the replay); before the '
        "rarity model has warmed up every score is 0, and the least seen shapes come first.</p>",
        _shape_table(rare_shape_rows(observed)),
        "<h2>Kept spans over time, per rule</h2>",
        _timeline_figure(timeline, sorted(stats.by_rule)),
        "<h2>Rarity scores, kept vs dropped</h2>",
        _histograms(observed.scores, thresholds or {}, signal_threshold),
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(
    path: str | os.PathLike[str],
    result: ReplayResult,
    *,
    config_path: str,
    inputs: Sequence[str],
    thresholds: Thresholds | None = None,
    signal_threshold: float | None = None,
) -> None:
    page = render_report(
        result,
        config_path=config_path,
        inputs=inputs,
        thresholds=thresholds,
        signal_threshold=signal_threshold,
    )
    with open(path, "w", encoding="utf-8") as out:
        out.write(page)


# -- tables ------------------------------------------------------------------------------------


_RATIOS = ("keep_ratio", "share")


def _tally_table(name: str, rows: Sequence[dict[str, object]], total_rows: int = 0) -> str:
    if not rows or all(row["sessions_seen"] == 0 for row in rows):
        return '<p class="note">No sessions were decided.</p>'
    head = f"<th>{name}</th>" + "".join(f'<th class="num">{h}</th>' for h in TALLY_HEADERS)
    body = []
    for index, row in enumerate(rows):
        css = ' class="total"' if index >= len(rows) - total_rows else ""
        cells = "".join(
            f'<td class="num">{_e(_percent(row[h]) if h in _RATIOS else str(row[h]))}</td>'
            for h in TALLY_HEADERS
        )
        body.append(f"<tr{css}><td>{_e(str(row[name]))}</td>{cells}</tr>")
    return _table_html(head, body)


def _shape_table(rows: Sequence[dict[str, object]]) -> str:
    if not rows:
        return '<p class="note">No session shapes were scored.</p>'
    head = "<th>shape</th>" + "".join(f'<th class="num">{h}</th>' for h in SHAPE_HEADERS[1:])
    body = [
        f'<tr><td class="shape">{_e(str(row["shape"]))}</td>'
        + "".join(f'<td class="num">{_e(str(row[h]))}</td>' for h in SHAPE_HEADERS[1:])
        + "</tr>"
        for row in rows
    ]
    return _table_html(head, body)


def _table_html(head: str, body: Iterable[str]) -> str:
    return (
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + ("\n</tbody>\n</table>")
    )


# -- kept spans over time ----------------------------------------------------------------------

_TL_WIDTH, _TL_PLOT_HEIGHT = 760, 260
_TL_LEFT, _TL_RIGHT, _TL_TOP, _TL_AXIS_SPACE = 70, 20, 30, 50
_LEGEND_ITEM_WIDTH, _LEGEND_ROW_HEIGHT = 185, 18


def _timeline_figure(timeline: KeptTimeline, rules: Sequence[str]) -> str:
    buckets = timeline.bucket_count
    if buckets == 0:
        return '<p class="note">Nothing was decided: no timeline.</p>'
    series = {rule: timeline.series(rule) for rule in rules}
    totals = [sum(values[i] for values in series.values()) for i in range(buckets)]
    ticks = _linear_ticks(max(totals))
    top = ticks[-1]
    plot_w = _TL_WIDTH - _TL_LEFT - _TL_RIGHT
    plot_bottom = _TL_TOP + _TL_PLOT_HEIGHT
    per_row = max(1, plot_w // _LEGEND_ITEM_WIDTH)
    legend_rows = math.ceil(len(rules) / per_row) if rules else 0
    height = plot_bottom + _TL_AXIS_SPACE + legend_rows * _LEGEND_ROW_HEIGHT + 10
    width_s = timeline.width_s

    out = _svg_open(_TL_WIDTH, height, "Kept spans per time bucket, stacked by rule")
    out.append(
        f'<text class="title" x="{_TL_LEFT}" y="18">Kept spans per '
        f"{_e(_seconds(width_s))} bucket, stacked by rule</text>"
    )
    out.extend(_y_axis(ticks, [_compact(t) for t in ticks], top, plot_bottom))
    out.append(
        f'<text x="16" y="{_f(_TL_TOP + _TL_PLOT_HEIGHT / 2)}" text-anchor="middle" '
        f'transform="rotate(-90 16 {_f(_TL_TOP + _TL_PLOT_HEIGHT / 2)})">kept spans</text>'
    )
    slot = plot_w / buckets
    bar = max(1.0, slot * 0.85)
    for index in range(buckets):
        x = _TL_LEFT + index * slot + (slot - bar) / 2
        y = float(plot_bottom)
        span_label = f"{_seconds(index * width_s)} to {_seconds((index + 1) * width_s)}"
        for number, rule in enumerate(rules):
            value = series[rule][index]
            if not value:
                continue
            h = value / top * _TL_PLOT_HEIGHT
            y -= h
            out.append(
                f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(bar)}" height="{_f(h)}" '
                f'fill="{_color(number)}"><title>{_e(rule)}: {value} spans kept, '
                f"{_e(span_label)}</title></rect>"
            )
    span_s = buckets * width_s
    for tick in _time_ticks(span_s):
        x = _TL_LEFT + tick / span_s * plot_w
        out.append(
            f'<line class="axis" x1="{_f(x)}" y1="{plot_bottom}" x2="{_f(x)}" '
            f'y2="{plot_bottom + 5}"/>'
        )
        out.append(
            f'<text x="{_f(x)}" y="{plot_bottom + 18}" text-anchor="middle">'
            f"+{_e(_seconds(tick, span_s))}</text>"
        )
    out.append(
        f'<text x="{_f(_TL_LEFT + plot_w / 2)}" y="{plot_bottom + 38}" text-anchor="middle">'
        "time since the first decision (replay clock, from span timestamps)</text>"
    )
    legend_top = plot_bottom + _TL_AXIS_SPACE
    for number, rule in enumerate(rules):
        kept = sum(series[rule])
        x = _TL_LEFT + (number % per_row) * _LEGEND_ITEM_WIDTH
        y = legend_top + (number // per_row) * _LEGEND_ROW_HEIGHT
        label = _clip(rule, 18) + ("" if kept else " (none kept)")
        out.append(
            f'<rect x="{x}" y="{y}" width="12" height="12" fill="{_color(number)}"/>'
            f'<text x="{x + 17}" y="{y + 10}">{_e(label)}'
            f"<title>{_e(rule)}: {kept} spans kept</title></text>"
        )
    out.append("</svg>")
    caption = (
        f"<figcaption>One bar per {_e(_seconds(width_s))} of replay time from "
        f"{_e(_moment(timeline.start))}; hover a bar for its numbers.</figcaption>"
    )
    return "<figure>\n" + "\n".join(out) + "\n" + caption + "\n</figure>"


# -- score histograms --------------------------------------------------------------------------

_H_WIDTH, _H_HEIGHT = 340, 250
_H_LEFT, _H_RIGHT, _H_TOP, _H_BOTTOM = 52, 12, 44, 48


def _histograms(
    scores: dict[str, ScoreHistogram], thresholds: Thresholds, signal_threshold: float | None
) -> str:
    if not scores:
        return (
            '<p class="note">No rarity scores: no session was decided, or only continuations '
            "of sessions decided before.</p>"
        )
    figures = []
    for dimension, histogram in scores.items():
        lines: dict[float, list[str]] = {}
        for score, rule in thresholds.get(dimension, ()):
            lines.setdefault(score, []).append(rule)
        signal = signal_threshold if not lines else None
        figures.append(_histogram_svg(dimension, histogram, lines, signal))
    note = (
        '<p class="note">Sessions per score bin (log scale), kept and dropped side by side. '
        "Scores are 0 while the rarity model warms up, and for values below the tail. "
        "A red dashed line is a rule's threshold (its <code>min_score</code>, or "
        "<code>signals.rarity.threshold</code> for <code>rare</code> without one), named "
        "above it; where no rule reads a score, a grey dotted line shows where its signal "
        "fires.</p>"
    )
    return note + '\n<div class="plots">\n' + "\n".join(figures) + "\n</div>"


def _histogram_svg(
    dimension: str,
    histogram: ScoreHistogram,
    rule_lines: Mapping[float, Sequence[str]],
    signal_threshold: float | None,
) -> str:
    bins = histogram.bins
    peak = max([*histogram.kept, *histogram.dropped, 1])
    top = 10 ** math.ceil(math.log10(peak))
    log_top = math.log10(1 + top)
    ticks = [10**k for k in range(0, round(math.log10(top)) + 1)]  # 0 is the axis itself
    plot_w = _H_WIDTH - _H_LEFT - _H_RIGHT
    plot_h = _H_HEIGHT - _H_TOP - _H_BOTTOM
    bottom = _H_TOP + plot_h

    def y_of(count: float) -> float:
        return bottom - math.log10(1 + count) / log_top * plot_h

    title = f"{dimension}"
    out = _svg_open(_H_WIDTH, _H_HEIGHT, f"Histogram of the {dimension} rarity score")
    out.append(f'<text class="title" x="{_H_LEFT}" y="16">{_e(title)}</text>')
    for number, (label, color) in enumerate((("kept", KEPT_COLOR), ("dropped", DROPPED_COLOR))):
        key_x = _H_LEFT + number * 80
        out.append(
            f'<rect x="{key_x}" y="24" width="10" height="10" fill="{color}"/>'
            f'<text x="{key_x + 14}" y="33">{label}</text>'
        )
    for tick in ticks:
        y = y_of(tick)
        out.append(
            f'<line class="grid" x1="{_H_LEFT}" y1="{_f(y)}" x2="{_H_LEFT + plot_w}" y2="{_f(y)}"/>'
        )
        out.append(
            f'<text x="{_H_LEFT - 5}" y="{_f(y + 4)}" text-anchor="end">{_compact(tick)}</text>'
        )
    out.append(
        f'<text x="12" y="{_f(_H_TOP + plot_h / 2)}" text-anchor="middle" '
        f'transform="rotate(-90 12 {_f(_H_TOP + plot_h / 2)})">sessions (log)</text>'
    )
    slot = plot_w / bins
    bar = slot * 0.42
    for index in range(bins):
        low, high = index / bins, (index + 1) / bins
        for offset, (label, color, counts) in enumerate(
            (("kept", KEPT_COLOR, histogram.kept), ("dropped", DROPPED_COLOR, histogram.dropped))
        ):
            count = counts[index]
            if not count:
                continue
            x = _H_LEFT + index * slot + slot * 0.08 + offset * bar
            y = y_of(count)
            out.append(
                f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(bar)}" height="{_f(bottom - y)}" '
                f'fill="{color}"><title>{count} {label}, score {low:.2f} to {high:.2f}'
                "</title></rect>"
            )
    out.append(_axes(_H_LEFT, _H_TOP, plot_w, plot_h))
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = _H_LEFT + value * plot_w
        out.append(
            f'<line class="axis" x1="{_f(x)}" y1="{bottom}" x2="{_f(x)}" y2="{bottom + 4}"/>'
            f'<text x="{_f(x)}" y="{bottom + 16}" text-anchor="middle">{value:g}</text>'
        )
    out.append(
        f'<text x="{_f(_H_LEFT + plot_w / 2)}" y="{bottom + 34}" text-anchor="middle">'
        f"{_e(dimension)} rarity score</text>"
    )
    for score, rules in sorted(rule_lines.items()):
        if not 0.0 <= score <= 1.0:
            continue
        x = _H_LEFT + score * plot_w
        names = ", ".join(rules)
        out.append(
            f'<line class="threshold" x1="{_f(x)}" y1="{_H_TOP}" x2="{_f(x)}" y2="{bottom}">'
            f"<title>{_e(names)}: score at least {score:g}</title></line>"
        )
        out.append(
            f'<text class="threshold-label" x="{_f(x - 3)}" y="{_H_TOP + 10}" '
            f'text-anchor="end">{_e(_clip(names, 24))} {score:g}</text>'
        )
    if signal_threshold is not None and 0.0 <= signal_threshold <= 1.0:
        x = _H_LEFT + signal_threshold * plot_w
        out.append(
            f'<line class="signal" x1="{_f(x)}" y1="{_H_TOP}" x2="{_f(x)}" y2="{bottom}">'
            f"<title>no rule reads this score; its signal fires from {signal_threshold:g}"
            "</title></line>"
        )
    out.append("</svg>")
    return "<figure>\n" + "\n".join(out) + "\n</figure>"


# -- SVG pieces --------------------------------------------------------------------------------


def _svg_open(width: int, height: int, label: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">',
        f"<title>{_e(label)}</title>",
    ]


def _y_axis(ticks: Sequence[float], labels: Sequence[str], top: float, bottom: int) -> list[str]:
    plot_w = _TL_WIDTH - _TL_LEFT - _TL_RIGHT
    out = []
    for tick, label in zip(ticks, labels, strict=True):
        y = bottom - tick / top * _TL_PLOT_HEIGHT
        out.append(
            f'<line class="grid" x1="{_TL_LEFT}" y1="{_f(y)}" x2="{_TL_LEFT + plot_w}" '
            f'y2="{_f(y)}"/>'
        )
        out.append(f'<text x="{_TL_LEFT - 6}" y="{_f(y + 4)}" text-anchor="end">{label}</text>')
    out.append(_axes(_TL_LEFT, _TL_TOP, plot_w, _TL_PLOT_HEIGHT))
    return out


def _axes(left: float, top: float, width: float, height: float) -> str:
    bottom = top + height
    return (
        f'<line class="axis" x1="{_f(left)}" y1="{_f(top)}" x2="{_f(left)}" y2="{_f(bottom)}"/>'
        f'<line class="axis" x1="{_f(left)}" y1="{_f(bottom)}" x2="{_f(left + width)}" '
        f'y2="{_f(bottom)}"/>'
    )


def _linear_ticks(peak: int, count: int = 5) -> list[int]:
    """0 and about ``count`` multiples of a whole 1, 2 or 5 step, the last at or above
    ``peak`` (a count: never a fractional tick)."""
    if peak <= 0:
        return [0, 1]
    raw = peak / count
    magnitude = 10 ** max(0, math.floor(math.log10(raw)))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return list(range(0, peak + step, step))[: math.ceil(peak / step) + 1]


_TIME_STEPS = (
    *(m * 10.0**k for k in range(-3, 1) for m in (1, 2, 5)),
    *(10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0),
    *(3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0),
)


def _time_ticks(span_s: float, count: int = 6) -> list[float]:
    """Round times (1, 2, 5 ... seconds, minutes, hours) from 0 to ``span_s``, about ``count``."""
    raw = span_s / count
    step = next((s for s in _TIME_STEPS if s >= raw), None)
    if step is None:  # more than six days: whole days, 1-2-5 multiples
        step = 86400.0 * _linear_ticks(math.ceil(raw / 86400.0), 1)[-1]
    return [i * step for i in range(int(span_s / step + 1e-9) + 1)]


# -- formatting --------------------------------------------------------------------------------


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _f(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _compact(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def _percent(ratio: object) -> str:
    return f"{float(ratio) * 100:.1f}%" if isinstance(ratio, int | float) else str(ratio)


def _seconds(value: float, scale: float | None = None) -> str:
    """A duration in s, m, h or d, the unit chosen by ``scale`` (default: the value itself) so
    that the ticks of one axis share a unit."""
    scale = value if scale is None else scale
    for limit, size, unit in ((120, 1, "s"), (7200, 60, "m"), (3 * 86400, 3600, "h")):
        if scale < limit:
            return f"{value / size:.3g}{unit}"
    return f"{value / 86400:.4g}d"


def _moment(when: float | None) -> str:
    if when is None:
        return "-"
    if when >= _UNIX_TIME_FROM:
        return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{when:g}s"


def _time_span(timeline: KeptTimeline) -> str:
    if timeline.start is None or timeline.end is None:
        return "no decisions"
    return f"from {_moment(timeline.start)}, {_seconds(timeline.end - timeline.start)} of decisions"
