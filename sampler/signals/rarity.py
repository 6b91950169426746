"""How unusual a session is compared with recent traffic: a windowed, decayed rarity model.

The model is native (`native/src/rarity.rs`, over the Apache DataSketches crate
`datasketches`: its frequent-items sketch and t-digest); this module is its Python face (the
settings, the scores as typed data, the signal kind) and this docstring its specification.

Recent traffic is a ring of `windows` windows of `window_s` seconds each (by default the last
30 minutes, in 5-minute windows). Each window holds one frequent-items sketch of session
shapes and, per group (agent), a frequent-items sketch of its shapes and one t-digest per
numeric dimension. A window ages
out whole once it is `windows` windows old; a jump in time of any size simply leaves no live
window behind. Time is the injected `now` (seconds, monotonic or replay time), never a clock
read; a `now` earlier than one already seen counts as the latest one seen.

Older windows weigh less: a window `age` windows old has weight `decay ** age` (the current
window has age 0). Both scores are computed against the decay-weighted mixture of the live
windows, so a shape or value that was common two windows ago counts a quarter as much as one
common now (with decay 0.5), and a burst makes a shape common within its own window.

Scores are 0.5 exactly at the configured boundary (`rare_shape_share`, `tail_quantile`), so a
signal threshold of 0.5 means "at or beyond the boundary".

Shape score. A shape may be given whole or in parts (a session is scored on the parts of its
tool path: each tool of it, each step from one tool to the next (`a>b`), and where it starts
and ends (`^a`, `b$`); `^$` for a session without tools; repeats collapsed as the shape
collapses them). A session is as rare as its rarest part: a tool its agent does not use, or
uses in another order, or does not start or end with. Judging the whole path instead makes
every long conversation rare: a path made of the same few steps takes as many forms as there
are ways to combine its turns. A fragment (a conversation decided before) is judged without
its ends: it may start in the middle of the conversation (a continuation). `observe` counts
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
dimensions that are a typical value, narrow across normal sessions (`model_latency`,
`tool_latency`), a value beyond Tukey's outer fence (`Q3 + 3 * (Q3 - Q1)` of the
decay-weighted quartiles) scores 1 however many sessions share it.
t-digest, not KLL: KLL's rank error (1.3% at k=200) is larger than the whole 1% tail, and KLL
is randomised per process while these scores must be reproducible; the t-digest is
deterministic and its error shrinks towards the tails (measured with DataSketches' C++
t-digest, of which the Rust one is a port, at k=100 over uniform, lognormal, exponential,
Pareto, sorted and small-integer streams, the rank error near rank r stays below about
0.07 * (1 - r); next to a gap in the data it reached 0.2 * (1 - r)).
Ranks interpolate between centroids: a value above every value seen has rank 1, below every
value 0, and a value repeated throughout 0.5.
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
before it and against the numbers of the sessions decided before the last tick. The t-digests
change only at a flush, so what is asked of a group's windows for every score (a value known
to rank below the tail in each window, the fences) is asked once per flush: most values,
below the tail, score 0 by a comparison rather than a rank per window.

Determinism. Scores depend only on the sequence of `observe`/`score`/`flush` calls and their
`now`s: replicas differ only in the traffic they saw. `score` reads and never changes the model.

One call per session. `RaritySignal.score` hands the session's native view to the model
(`RarityModel.score_session`), which reads its tool path and numbers, scores it and (unless it
is a second look) teaches it, without building a Python object per number or tool.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from sampler import _native
from sampler.config.model import RarityConfig, SignalsConfig
from sampler.signals.registry import Scored, Session, SignalKind, signal_kind

# The names are the native model's (native/src/rarity.rs), defined there once.
DIMENSIONS: Final[tuple[str, ...]] = _native.RARITY_DIMENSIONS
RARE_SHAPE: Final = _native.RARITY_RARE_SHAPE
TAIL_SIGNALS: Final[Mapping[str, str]] = MappingProxyType(
    dict(zip(DIMENSIONS, _native.RARITY_TAIL_SIGNALS, strict=True))
)
# a frequent-items sketch has 2**lg_max_k counters (0.75 of them tracked)
MAX_WINDOWS: Final = RarityConfig.MAX_WINDOWS
MIN_LG_MAX_K: Final = _native.RARITY_LG_MAX_K[0]
MAX_LG_MAX_K: Final = _native.RARITY_LG_MAX_K[1]
_INDEX: Final[Mapping[str, int]] = MappingProxyType({d: i for i, d in enumerate(DIMENSIONS)})


_CONFIG = RarityConfig()  # the defaults are the config's: one source of truth


@dataclass(frozen=True, slots=True)
class RaritySettings:
    window_s: float = _CONFIG.window  # one window of traffic
    windows: int = _CONFIG.windows  # ring of windows; older windows age out whole
    decay: float = _CONFIG.decay  # weight of each older window relative to the next newer one
    warmup_sessions: int = _CONFIG.warmup_sessions  # fewer in the live windows: all scores 0
    shape_lg_max_k: int = 10  # frequent-items sketch size (2^k counters, 0.75 * 2^k tracked)
    group_shape_lg_max_k: int = 9  # per-group shape sketch: resolution 3.5/512 = 0.7% of a group
    quantile_k: int = 100  # t-digest size per (group, dimension, window)
    max_groups: int = _CONFIG.max_groups  # groups with quantile sketches; LRU evicted
    min_group_values: int = 50  # fewer values than this for a group: its numeric scores are 0
    # a shape seen in at least this share of sessions scores 0
    rare_shape_share: float = _CONFIG.rare_shape_share
    # values above this quantile of their group score above 0
    tail_quantile: float = _CONFIG.tail_quantile

    def __post_init__(self) -> None:
        lg_range = f"[{MIN_LG_MAX_K}, {MAX_LG_MAX_K}]"
        problems = [
            message
            for ok, message in (
                (self.window_s > 0 and math.isfinite(self.window_s), "window_s must be > 0"),
                (1 <= self.windows <= MAX_WINDOWS, f"windows must be in [1, {MAX_WINDOWS}]"),
                (0.0 < self.decay <= 1.0, "decay must be in (0, 1]"),
                (self.warmup_sessions >= 0, "warmup_sessions must be >= 0"),
                (
                    MIN_LG_MAX_K <= self.shape_lg_max_k <= MAX_LG_MAX_K,
                    f"shape_lg_max_k must be in {lg_range}",
                ),
                (
                    MIN_LG_MAX_K <= self.group_shape_lg_max_k <= MAX_LG_MAX_K,
                    f"group_shape_lg_max_k must be in {lg_range}",
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


class RarityModel:
    """Recent traffic, in bounded memory: at most `windows` shape sketches, and per group (at
    most `max_groups`) `windows` shape sketches and `windows * len(DIMENSIONS)` t-digests,
    whatever the cardinality. Native (`_native.RarityModel`); this class checks and converts."""

    def __init__(self, settings: RaritySettings) -> None:
        self.settings = settings
        self._native = _native.RarityModel(settings)

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
        values = [(_index(dimension), value) for dimension, value in numbers.items()]
        counts = [(_index(dimension), n) for dimension, n in (units or {}).items()]
        shape_score, numeric, cold = self._native.score(_parts(shape), group, values, now, counts)
        numeric_scores = dict(zip(DIMENSIONS, numeric, strict=True))
        return RarityScores(shape_score, MappingProxyType(numeric_scores), cold)

    def observe(
        self,
        shape: str | Collection[str],
        group: str,
        numbers: Mapping[str, float | Sequence[float]],
        now: float,
    ) -> None:
        """Adds a session (after scoring it) to the current window: its shape (or each distinct
        part of it, once) and its numbers (a sequence: one value per unit, each learned)."""
        values = [
            (_index(dimension), [value] if isinstance(value, float | int) else list(value))
            for dimension, value in numbers.items()
        ]
        self._native.observe(_parts(shape), group, values, now)

    def score_session(
        self,
        features: _native.SessionView,
        now: float,
        *,
        fragment: bool,
        learn: bool,
        running_at_cap: bool,
        collapse_repeats: bool,
        threshold: float,
    ) -> tuple[dict[str, float], list[str], bool]:
        """``RaritySignal.score``'s work in one native call: the session's scores by name,
        the rarity signals it fired, and whether it was cold."""
        return self._native.score_session(
            features, now, fragment, learn, running_at_cap, collapse_repeats, threshold
        )

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
        self._native.reconfigure(settings)
        self.settings = settings

    def flush(self) -> None:
        """Adds the numbers of the sessions observed since the last flush to their sketches."""
        self._native.flush()

    def sessions_seen(self, now: float) -> int:
        """Sessions observed in the windows still live at `now` (unweighted)."""
        return self._native.sessions_seen(now)

    def shape_resolution(self, now: float) -> float:
        """The weighted share below which shapes cannot be told apart (the shape sketches' error
        over their traffic); a shape commoner than this is always tracked."""
        return self._native.shape_resolution(now)

    @property
    def groups(self) -> tuple[str, ...]:
        """Groups with quantile sketches, least recently observed first."""
        return self._native.groups

    def approx_bytes(self) -> int:
        """Serialized size of every sketch held (the memory held is a small multiple of it)."""
        return self._native.approx_bytes()


def _fires(score: float, threshold: float) -> bool:
    return score > 0.0 and score >= threshold


def _parts(shape: str | Collection[str]) -> list[str]:
    return [shape] if isinstance(shape, str) else list(shape)


def _index(dimension: str) -> int:
    index = _INDEX.get(dimension)
    if index is None:
        raise ValueError(f"unknown dimension {dimension!r}; dimensions: {', '.join(DIMENSIONS)}")
    return index


# --- the signal kind ----------------------------------------------------------------------------

LATENCY = "latency"
MODEL_LATENCY = "model_latency"
TOOL_LATENCY = "tool_latency"
TAIL_LATENCY = TAIL_SIGNALS[LATENCY]


class RaritySignal:
    """The rarity signals: `rare_shape` and the `tail_*` of the session's numbers, against the
    recent traffic this kind's ``model`` remembers (score, then observe, in one native call).

    What is scored (``SessionScorer.score`` says what fragment, running_at_cap and learn
    mean): the longest turn, ranked as the largest of the session's turns against what one
    turn takes (every turn is learned); the typical (median) model and tool call; the whole
    session's duration; and tokens, spans and tool calls per turn, so that a conversation of
    many ordinary turns is not an outlier. A fragment is scored on its latencies and its path's
    parts (not where it starts and ends) and teaches only its parts. A session still running
    at max_session_duration with no turn ended fires tail_latency."""

    names = (RARE_SHAPE, *TAIL_SIGNALS.values())

    def __init__(self, model: RarityModel, threshold: float, collapse_repeats: bool) -> None:
        self.model = model
        self.threshold = threshold
        self.collapse_repeats = collapse_repeats

    def flush(self) -> None:
        self.model.flush()

    def score(self, session: Session, scored: Scored) -> None:
        rarity, fired, cold = self.model.score_session(
            session.features,
            session.now,
            fragment=session.fragment,
            learn=session.learn,
            running_at_cap=session.running_at_cap,
            collapse_repeats=self.collapse_repeats,
            threshold=self.threshold,
        )
        scored.signals.extend(fired)
        if cold:
            scored.cold = True
        scored.rarity = rarity


@signal_kind("rarity", order=30)
def _rarity(config: SignalsConfig) -> SignalKind:
    r = config.rarity
    model = RarityModel(
        RaritySettings(
            window_s=r.window,
            windows=r.windows,
            decay=r.decay,
            warmup_sessions=r.warmup_sessions,
            rare_shape_share=r.rare_shape_share,
            tail_quantile=r.tail_quantile,
            max_groups=r.max_groups,
        )
    )
    return RaritySignal(model, r.threshold, config.shape.collapse_repeats)
