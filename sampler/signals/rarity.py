"""How unusual a session is compared with recent traffic: a windowed, decayed rarity model.

Recent traffic is a ring of `windows` windows of `window_s` seconds each (by default the last
30 minutes, in 5-minute windows). Each window holds one `FrequentStrings` sketch of session
shapes and, per group (agent), one `TailQuantiles` sketch per numeric dimension. A window ages
out whole once it is `windows` windows old; a jump in time of any size simply leaves no live
window behind. Time is the injected `now` (seconds, monotonic or replay time), never a clock
read; a `now` earlier than one already seen counts as the latest one seen.

Older windows weigh less: a window `age` windows old has weight `decay ** age` (the current
window has age 0). Both scores are computed against the decay-weighted mixture of the live
windows, so a shape or value that was common two windows ago counts a quarter as much as one
common now (with decay 0.5), and a burst makes a shape common within its own window.

Scores are 0.5 exactly at the configured boundary (`rare_shape_share`, `tail_quantile`), so a
signal threshold of 0.5 means "at or beyond the boundary".

Shape score. A shape may be given whole or in parts (the scorer gives the parts of a session's
tool path: each tool, each step from one tool to the next, where it starts and ends; see
`SessionScorer.shape_parts`); a session is as rare as its rarest part, and `observe` counts
each distinct part once per session. A part's weighted share *among its group's sessions* (a
path rare for that agent, even if the agent itself is busy) is
`sum(w * lower_bound_in_window) / sum(w * group_sessions_in_window)`, from the group's own
frequent-items sketch (2^9 counters: parts above 0.7% of the group are always tracked). A group
with fewer than `min_group_values` sessions in the live windows is cold: its shapes are not
scored (0), because measured against all sessions every path of a young or quiet agent looks
rare. A quiet agent's sessions are sampled by the budget, whose strata give each agent a floor.
The score is `0.5 + 0.5 * log10(rare_shape_share / share)` clipped to [0, 1]: one point per
two decades of rarity, since rarity is a matter of orders of magnitude: 0 at ten times the
boundary share, 0.5 at it, 1 at a tenth of it. A part seen in fewer than `MIN_SIGHTINGS` (3)
sessions of the live windows scores at least 0.5 whatever its share: in a group of 50 sessions
one sighting is already 2%.
The lower bound is what the sketch is certain of; a shape it does not track has lower bound 0
and scores 1. The sketch's error is the same for every shape: the reported share is never
above the true one and at most `shape_resolution(now)` below it (at most 3.5 / 2**lg_max_k,
0.34% with lg_max_k 10, usually far less: 0.13% for a stream of 100k distinct shapes). A shape
commoner than that is always tracked, so a common shape is never called rare; shapes rarer than
the resolution cannot be told apart from unseen ones, which for rarity is the right answer.

Numeric scores, per dimension and per group: `latency` (the longest turn, i.e. root span: what a
user waited for), `model_latency` and `tool_latency` (the session's typical, median, model call
and tool call: a slow model or a slow dependency hides in turn latency when its turn makes
fewer calls, or when the rest of the turn takes longer), `duration` (the whole session, think
time between turns included), `tokens`, `span_count`, `tool_calls` (the scorer gives these per
turn).
A value may be learned per *unit*: `observe` takes a sequence (the scorer teaches every turn's
latency), and `score` then takes `units`, how many units the scored value is the largest of
(the session's turns): its rank r becomes r**n, the rank of the largest of n values, so that a
conversation of many ordinary turns is no likelier to be in the tail than a single turn.
The value's rank r in the group's recent values is the decay-weighted mixture of its rank in
each live window, `sum(w * n * rank) / sum(w * n)`: exactly the rank in the weighted union, so
decay applies to quantiles as it does to shapes. The score is 0 below the tail quantile, and
`0.5 + 0.5 * (r - tail_quantile) / (1 - tail_quantile)` from it: 0.5 at the tail quantile, 1
above every value seen. A quantile cannot call rare what more sessions than its tail share
have (a degraded model slowing 5% of an agent's sessions puts its p99 among them): for the
dimensions in `FENCED` (a typical value, narrow across normal sessions: `model_latency`,
`tool_latency`), a
value beyond Tukey's outer fence (`Q3 + 3 * (Q3 - Q1)` of the decay-weighted quartiles) scores
1 however many sessions share it.
t-digest, not KLL: KLL's rank error (1.3% at k=200) is larger than the whole 1% tail, and KLL
is randomised per process while these scores must be reproducible; the t-digest is
deterministic and its error shrinks towards the tails (see `sketches.TailQuantiles`).
At most `max_groups` groups are kept; the least recently observed is evicted with its sketches.

Cold start. Until the live windows hold `warmup_sessions` sessions (200 by default: the first
minutes of traffic, or again after a gap longer than the ring), every score is 0, so a rule on
rarity keeps nothing yet; error and tool-cycle signals do not depend on this model and work
from the first session. A group with fewer than `min_group_values` sessions, or values of a
dimension, in the live windows scores 0 on that dimension. Such scores say `cold`: the pipeline
holds the sessions they dropped and scores them again later (the pipeline's second look), so the
first rare sessions after a start are not lost.

Ticks. A session's numbers reach the quantile sketches at the next `flush`, which the
pipeline calls once a tick of its decision timer (`sessions.tick`, 100 ms; in replay, once a
request): a t-digest folds new values into its centroids when it is next read, and doing that
once a tick rather than once a session saves a few microseconds per dimension and session.
Shapes are counted at once. So a session is scored against the shapes of every session
before it and against the numbers of the sessions decided before the last tick. The sketches
change only at a flush, so what is asked of a group's windows for every score (the
below-the-tail thresholds, the fences) is asked once per flush.

Determinism. Scores depend only on the sequence of `observe`/`score`/`flush` calls and their
`now`s: replicas differ only in the traffic they saw. `score` reads and never changes the model.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeVar

from sampler.signals.sketches import MAX_LG_MAX_K, MIN_LG_MAX_K, FrequentStrings, TailQuantiles

DIMENSIONS: Final = (
    "latency",
    "model_latency",
    "tool_latency",
    "duration",
    "tokens",
    "span_count",
    "tool_calls",
)
# Dimensions that are a session's typical value (not an extreme, nor a total), narrow across
# normal sessions: beyond Tukey's outer fence (FAR_OUT interquartile ranges above the third
# quartile) they score 1 even when too many sessions are there for a quantile
# to call them rare (a degraded model slows 5% of sessions: a p98 is inside them).
FENCED: Final = frozenset({"model_latency", "tool_latency"})
FAR_OUT: Final = 3.0
# A shape (part) seen in fewer sessions than this in the live windows is rare whatever its
# share: two sightings make no habit, and in a group of 50 sessions one is already 2%.
MIN_SIGHTINGS: Final = 3
RARE_SHAPE: Final = "rare_shape"
TAIL_SIGNALS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "latency": "tail_latency",
        "model_latency": "tail_model_latency",
        "tool_latency": "tail_tool_latency",
        "duration": "tail_duration",
        "tokens": "tail_tokens",
        "span_count": "tail_span_count",
        "tool_calls": "tail_tool_calls",
    }
)


@dataclass(frozen=True, slots=True)
class RaritySettings:
    window_s: float = 300.0  # one window of traffic
    windows: int = 6  # ring of windows: the last 30 min; older windows age out whole
    decay: float = 0.5  # weight of each older window relative to the next newer one
    warmup_sessions: int = 200  # fewer sessions than this in the live windows: all scores 0
    shape_lg_max_k: int = 10  # frequent-items sketch size (2^k counters, 0.75 * 2^k tracked)
    group_shape_lg_max_k: int = 9  # per-group shape sketch: resolution 3.5/512 = 0.7% of a group
    quantile_k: int = 100  # t-digest size per (group, dimension, window)
    max_groups: int = 256  # groups with quantile sketches; least recently observed evicted
    min_group_values: int = 50  # fewer values than this for a group: its numeric scores are 0
    rare_shape_share: float = 0.002  # a shape seen in at least this share of sessions scores 0
    tail_quantile: float = 0.99  # values above this quantile of their group score above 0

    def __post_init__(self) -> None:
        problems = [
            message
            for ok, message in (
                (self.window_s > 0 and math.isfinite(self.window_s), "window_s must be > 0"),
                (self.windows >= 1, "windows must be >= 1"),
                (0.0 < self.decay <= 1.0, "decay must be in (0, 1]"),
                (self.warmup_sessions >= 0, "warmup_sessions must be >= 0"),
                (
                    MIN_LG_MAX_K <= self.shape_lg_max_k <= MAX_LG_MAX_K,
                    f"shape_lg_max_k must be in [{MIN_LG_MAX_K}, {MAX_LG_MAX_K}]",
                ),
                (10 <= self.quantile_k <= 65535, "quantile_k must be in [10, 65535]"),
                (self.max_groups >= 1, "max_groups must be >= 1"),
                (self.min_group_values >= 1, "min_group_values must be >= 1"),
                (0.0 < self.rare_shape_share < 1.0, "rare_shape_share must be in (0, 1)"),
                (0.0 < self.tail_quantile < 1.0, "tail_quantile must be in (0, 1)"),
            )
            if not ok
        ]
        if problems:
            raise ValueError("invalid rarity settings: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class RarityScores:
    shape: float  # in [0, 1]; 1 = never seen, or ten times rarer than rare_shape_share
    numeric: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(DIMENSIONS, 0.0))
    )  # every dimension of DIMENSIONS, in [0, 1]
    # too little traffic seen to score this session fully: in all (warm-up) or of its group
    # (its shape is not scored and its numbers score 0)
    cold: bool = False

    def fired(self, threshold: float) -> tuple[str, ...]:
        """Signal names of the scores at or above `threshold` (a score of 0 never fires)."""
        names = [RARE_SHAPE] if _fires(self.shape, threshold) else []
        for dimension in DIMENSIONS:
            if _fires(self.numeric.get(dimension, 0.0), threshold):
                names.append(TAIL_SIGNALS[dimension])
        return tuple(names)


COLD: Final = RarityScores(0.0, cold=True)


class _Window:
    __slots__ = ("index", "shapes", "sessions")

    def __init__(self, index: int, lg_max_k: int) -> None:
        self.index = index
        self.shapes = FrequentStrings(lg_max_k)
        self.sessions = 0


class _GroupWindow:
    __slots__ = ("index", "values", "sessions", "shapes", "below", "queries", "lower_bounds")

    def __init__(self, index: int, lg_max_k: int) -> None:
        self.index = index
        self.values: dict[str, TailQuantiles] = {}
        self.sessions = 0
        # the group's own shapes: its share is measured among its sessions, and a small
        # group's common shape is tracked even when it is below the global sketch's resolution
        self.shapes = FrequentStrings(lg_max_k)
        # Answers kept so that scoring asks a sketch once, not once per session: per dimension
        # the largest value ranking below the tail quantile (until the sketch next changes, at
        # a flush), and, once the window is settled (older than the current one), shapes'
        # lower bounds. `queries` counts a current window's scores since its last change.
        self.below: dict[str, float] = {}
        self.queries: dict[str, int] = {}
        self.lower_bounds: dict[str, int] = {}

    def lower_bound(self, shape: str, settled: bool) -> int:
        if not settled:
            return self.shapes.lower_bound(shape)
        bound = self.lower_bounds.get(shape)
        if bound is None:
            if len(self.lower_bounds) >= _MAX_REMEMBERED_SHAPES:
                self.lower_bounds.clear()
            bound = self.lower_bounds[shape] = self.shapes.lower_bound(shape)
        return bound


# Shapes whose lower bound a settled window remembers, at most (then it starts over).
_MAX_REMEMBERED_SHAPES = 4096
# Scores of one dimension a current window answers rank by rank before it finds its
# below-the-tail threshold (about ten ranks) and answers by comparison until it next changes.
_QUERIES_BEFORE_THRESHOLD = 8


_W = TypeVar("_W", _Window, _GroupWindow)


class RarityModel:
    """Recent traffic, in bounded memory: at most `windows` shape sketches and
    `max_groups * windows * len(DIMENSIONS)` quantile sketches, whatever the cardinality."""

    def __init__(self, settings: RaritySettings) -> None:
        self.settings = settings
        self._weights = tuple(settings.decay**age for age in range(settings.windows))
        self._windows: deque[_Window] = deque()  # oldest first; only windows that saw traffic
        self._groups: OrderedDict[str, deque[_GroupWindow]] = OrderedDict()  # LRU first
        self._latest = -math.inf
        # numbers waiting for `flush`: (window, dimension, sketch, value)
        self._pending: list[tuple[_GroupWindow, str, TailQuantiles, float]] = []
        self._flushes = 0
        # per group, what its settled windows (older than the current one) say per dimension:
        # (their values counted, the least of their below-the-tail thresholds), and per fenced
        # dimension the fence of all its live windows, for one index and one flush
        self._settled: dict[
            str, tuple[int, int, dict[str, tuple[int, float]], dict[str, float]]
        ] = {}

    def score(
        self,
        shape: str | Collection[str],
        group: str,
        numbers: Mapping[str, float],
        now: float,
        units: Mapping[str, int] | None = None,
    ) -> RarityScores:
        """Scores a session against the traffic observed so far; changes nothing.

        ``shape``: one shape, or the parts of one (the session is as rare as its rarest part).
        ``units``: for a dimension whose value is the largest of several units (the longest of
        n turns) while the model learned one value per unit, n: the value's rank r becomes
        r**n, the rank of the largest of n values, so that a session of many turns is no
        likelier to be in the tail than a session of one."""
        _check_numbers(numbers)
        parts = (shape,) if isinstance(shape, str) else shape
        index = self._index_at(now)
        settings = self.settings
        horizon = index - settings.windows  # windows at or before it are no longer live
        seen = 0
        for window in self._windows:
            if window.index > horizon:
                seen += window.sessions
        if seen < max(1, settings.warmup_sessions):
            return COLD
        group_windows = self._groups.get(group)
        weights = self._weights
        group_live = (
            [(weights[index - gw.index], gw) for gw in group_windows if gw.index > horizon]
            if group_windows
            else []
        )
        group_sessions = 0
        for _, group_window in group_live:
            group_sessions += group_window.sessions
        group_cold = group_sessions < settings.min_group_values
        shape_score = 0.0
        if not group_cold:
            total = 0.0
            for weight, group_window in group_live:
                total += weight * group_window.sessions
            common = 10.0 * settings.rare_shape_share * total  # known from here on: 0
            for part in parts:
                known = 0.0
                sightings = 0
                for weight, group_window in group_live:
                    bound = group_window.lower_bound(part, group_window.index < index)
                    known += weight * bound
                    sightings += bound
                if known >= common and sightings >= MIN_SIGHTINGS:
                    continue  # most parts: common, scoring 0
                score = _shape_score(min(1.0, known / total), settings.rare_shape_share)
                if score < 0.5 and sightings < MIN_SIGHTINGS:
                    score = 0.5  # seen once or twice: in a small group that is already 2%
                if score > shape_score:
                    shape_score = score
                    if score >= 1.0:
                        break
        numeric = dict.fromkeys(DIMENSIONS, 0.0)
        # a cold group's numbers are not scored either (a dimension learned per unit, turns,
        # may have enough values in fewer sessions)
        if group_live and not group_cold:
            settled = self._settled.get(group)
            if settled is None or settled[0] != index or settled[1] != self._flushes:
                settled = self._settled[group] = (index, self._flushes, {}, {})
            for dimension, value in numbers.items():
                if math.isfinite(value):
                    n = max(1, units.get(dimension, 1)) if units else 1
                    numeric[dimension] = self._tail_score(
                        group_live, index, dimension, value, n, settled[2], settled[3]
                    )
        return RarityScores(shape_score, MappingProxyType(numeric), cold=group_cold)

    def observe(
        self,
        shape: str | Collection[str],
        group: str,
        numbers: Mapping[str, float | Sequence[float]],
        now: float,
    ) -> None:
        """Adds a session (after scoring it) to the current window: its shape (or each distinct
        part of it, once) and its numbers (a sequence: one value per unit, each learned)."""
        _check_numbers(numbers)
        parts = (shape,) if isinstance(shape, str) else tuple(dict.fromkeys(shape))
        index = self._advance(now)
        window = self._windows[-1]
        for part in parts:
            window.shapes.update(part)
        window.sessions += 1
        group_windows = self._groups.get(group)
        if group_windows is None:
            group_windows = self._groups[group] = deque()
            if len(self._groups) > self.settings.max_groups:
                evicted, _ = self._groups.popitem(last=False)
                self._settled.pop(evicted, None)
        else:
            self._groups.move_to_end(group)
        if not group_windows or group_windows[-1].index != index:
            group_windows.append(_GroupWindow(index, self.settings.group_shape_lg_max_k))
            self._expire(group_windows, index)
        group_window = group_windows[-1]
        group_window.sessions += 1
        for part in parts:
            group_window.shapes.update(part)
        values = group_window.values
        pending = self._pending
        for dimension, value in numbers.items():
            sketch = values.get(dimension)
            if sketch is None:
                sketch = values[dimension] = TailQuantiles(self.settings.quantile_k)
            if isinstance(value, float | int):
                pending.append((group_window, dimension, sketch, value))
            else:
                pending.extend((group_window, dimension, sketch, unit) for unit in value)

    # What the ring of windows and its sketches are built on: fixed for the model's life.
    GEOMETRY: Final = (
        "window_s",
        "windows",
        "max_groups",
        "shape_lg_max_k",
        "group_shape_lg_max_k",
        "quantile_k",
    )

    def geometry_changes(self, settings: RaritySettings) -> list[str]:
        """The settings of GEOMETRY that differ in ``settings``: they need a new model."""
        return [n for n in self.GEOMETRY if getattr(settings, n) != getattr(self.settings, n)]

    def reconfigure(self, settings: RaritySettings) -> None:
        """Scores with ``settings`` from now on, keeping every window and sketch (a reload):
        the thresholds and weights may change, not the geometry (ValueError, nothing changed).
        Answers remembered for the old tail quantile are forgotten."""
        fixed = self.geometry_changes(settings)
        if fixed:
            raise ValueError(f"rarity settings need a new model: {', '.join(fixed)}")
        self.settings = settings
        self._weights = tuple(settings.decay**age for age in range(settings.windows))
        self._settled.clear()
        for group_windows in self._groups.values():
            for group_window in group_windows:
                group_window.below.clear()
                group_window.queries.clear()

    def flush(self) -> None:
        """Adds the numbers of the sessions observed since the last flush to their sketches."""
        pending, self._pending = self._pending, []
        for window, dimension, sketch, value in pending:
            sketch.update(value)
            window.below.pop(dimension, None)  # what it answered no longer holds
            window.queries.pop(dimension, None)
        self._flushes += 1

    def sessions_seen(self, now: float) -> int:
        """Sessions observed in the windows still live at `now` (unweighted)."""
        return sum(window.sessions for _, window in self._live(self._windows, self._index_at(now)))

    def shape_resolution(self, now: float) -> float:
        """The weighted share below which shapes cannot be told apart (the shape sketches' error
        over their traffic); a shape commoner than this is always tracked."""
        live = list(self._live(self._windows, self._index_at(now)))
        total = sum(w * window.sessions for w, window in live)
        if not total:
            return 0.0
        return sum(w * window.shapes.max_error for w, window in live) / total

    @property
    def groups(self) -> tuple[str, ...]:
        """Groups with quantile sketches, least recently observed first."""
        return tuple(self._groups)

    def approx_bytes(self) -> int:
        """Serialized size of every sketch held (the memory held is a small multiple of it)."""
        shapes = sum(window.shapes.approx_bytes() for window in self._windows)
        shapes += sum(
            group_window.shapes.approx_bytes()
            for group_windows in self._groups.values()
            for group_window in group_windows
        )
        values = sum(
            sketch.approx_bytes()
            for group_windows in self._groups.values()
            for group_window in group_windows
            for sketch in group_window.values.values()
        )
        return shapes + values

    def _tail_score(
        self,
        live: list[tuple[float, _GroupWindow]],
        index: int,
        dimension: str,
        value: float,
        units: int,
        settled: dict[str, tuple[int, float]],
        fences: dict[str, float],
    ) -> float:
        q = self.settings.tail_quantile
        # The settled windows do not change between flushes: their count, and the least
        # value ranking at or above q in any of them, are asked once per index and flush. A
        # value at or below that ranks below q in each of them; below q in the current window
        # too, it ranks below q in the weighted mixture: it scores 0 without a rank per window.
        summary = settled.get(dimension)
        if summary is None:
            count, low = 0, math.inf
            for _, group_window in live:
                sketch = group_window.values.get(dimension)
                if group_window.index < index and sketch is not None and sketch.count:
                    count += sketch.count
                    below = group_window.below.get(dimension)
                    if below is None:
                        below = group_window.below[dimension] = sketch.below(q)
                    low = min(low, below)
            summary = settled[dimension] = (count, low)
        settled_count, low = summary
        newest = live[-1][1]
        current = newest.values.get(dimension) if newest.index == index else None
        current_count = current.count if current is not None else 0
        if settled_count + current_count < self.settings.min_group_values:
            return 0.0
        if dimension in FENCED:
            fence = fences.get(dimension)
            if fence is None:
                fence = fences[dimension] = _far_out(live, dimension)
            if value > fence:
                return 1.0
        # below q in every window, rank**units is below q too: the shortcut holds for units
        if value <= low:
            if current is None or not current_count:
                return 0.0
            below = newest.below.get(dimension)
            if below is None:  # busy (many scores before it changes): find its threshold
                queries = newest.queries[dimension] = newest.queries.get(dimension, 0) + 1
                if queries >= _QUERIES_BEFORE_THRESHOLD:
                    below = newest.below[dimension] = current.below(q)
            if below is not None:
                if value <= below:
                    return 0.0
            elif current.rank(value) < q:
                return 0.0
        weighted_rank = 0.0
        weighted_count = 0.0
        for weight, group_window in live:
            sketch = group_window.values.get(dimension)
            if sketch is None or sketch.is_empty:
                continue
            n = sketch.count
            weighted_count += weight * n
            weighted_rank += weight * n * sketch.rank(value)
        rank = (weighted_rank / weighted_count) ** units
        if rank < q:
            return 0.0
        return min(1.0, 0.5 + 0.5 * (rank - q) / (1.0 - q))

    def _index_at(self, now: float) -> int:
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite number of seconds: {now}")
        return math.floor(max(now, self._latest) / self.settings.window_s)

    def _live(self, windows: deque[_W], index: int) -> Iterator[tuple[float, _W]]:
        for window in windows:
            age = index - window.index
            if age < self.settings.windows:
                yield self._weights[age], window

    def _advance(self, now: float) -> int:
        index = self._index_at(now)
        self._latest = max(now, self._latest)
        if self._windows and self._windows[-1].index == index:
            return index
        self._windows.append(_Window(index, self.settings.shape_lg_max_k))
        self._expire(self._windows, index)
        for group in list(self._groups):
            group_windows = self._groups[group]
            self._expire(group_windows, index)
            if not group_windows:
                del self._groups[group]
                self._settled.pop(group, None)
        return index

    def _expire(self, windows: deque[_Window] | deque[_GroupWindow], index: int) -> None:
        while windows and index - windows[0].index >= self.settings.windows:
            windows.popleft()


def _fires(score: float, threshold: float) -> bool:
    return score > 0.0 and score >= threshold


def _shape_score(share: float, rare_share: float) -> float:
    if share <= 0.0:
        return 1.0
    return min(1.0, max(0.0, 0.5 + 0.5 * math.log10(rare_share / share)))


def _far_out(live: list[tuple[float, _GroupWindow]], dimension: str) -> float:
    """Tukey's outer fence, from the decay-weighted quartiles: a value this far above the bulk
    is an outlier however many sessions share it."""
    q1 = q3 = weights = 0.0
    for weight, group_window in live:
        sketch = group_window.values.get(dimension)
        if sketch is None or sketch.is_empty:
            continue
        w = weight * sketch.count
        q1 += w * sketch.quantile(0.25)
        q3 += w * sketch.quantile(0.75)
        weights += w
    if not weights:
        return math.inf
    q1, q3 = q1 / weights, q3 / weights
    # no spread (one value, or values in steps): no fence, the ranks say it all
    return q3 + FAR_OUT * (q3 - q1) if q3 > q1 else math.inf


def _check_numbers(numbers: Mapping[str, float | Sequence[float]]) -> None:
    for dimension in numbers:
        if dimension not in TAIL_SIGNALS:
            raise ValueError(
                f"unknown dimension {dimension!r}; dimensions: {', '.join(DIMENSIONS)}"
            )
