"""Scores a session when it is decided: error kinds, tool cycles, rarity, shape.

Pure given its inputs, except the rarity model, which remembers recent traffic: each session is
scored against the sessions decided before it, then added (score, then observe), so a burst of
one new shape is rare at first and becomes common as it repeats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sampler._native import SessionView as SessionFeatures
from sampler.config.model import SignalsConfig
from sampler.signals.errors import error_signals
from sampler.signals.rarity import RARE_SHAPE, TAIL_SIGNALS, RarityModel, RaritySettings
from sampler.signals.tool_cycles import AgentSpan, CycleThresholds, ToolCall, detect_cycles

TOOL_CYCLE = "tool_cycle"
LATENCY = "latency"
MODEL_LATENCY = "model_latency"
TAIL_LATENCY = TAIL_SIGNALS[LATENCY]


@dataclass(frozen=True, slots=True)
class SessionSignals:
    signals: tuple[str, ...]
    shape: str
    cycle_kinds: frozenset[str] = frozenset()
    cycle_details: tuple[str, ...] = ()
    rarity: Mapping[str, float] = field(default_factory=dict)
    cold: bool = False  # the rarity model could not score it fully yet (see RarityScores.cold)


class SessionScorer:
    def __init__(self, config: SignalsConfig) -> None:
        c, r = config.tool_cycles, config.rarity
        self.shape_config = config.shape
        self.thresholds = CycleThresholds(
            same_call_repeats=c.same_call_repeats,
            same_tool_repeats=c.same_tool_repeats,
            pattern_max_period=c.pattern_max_period,
            pattern_min_repeats=c.pattern_min_repeats,
            same_turn_repeats=c.same_turn_repeats,
            max_agent_depth=c.max_agent_depth,
        )
        self.rarity = RarityModel(
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
        self.rarity_threshold = r.threshold

    def flush(self) -> None:
        """The numbers of the sessions scored since the last flush count from now on (see
        rarity: the pipeline flushes once a tick)."""
        self.rarity.flush()

    def shape_of(self, features: SessionFeatures) -> str:
        """A compact key of the session's structure: agent and tool path, as configured."""
        s = self.shape_config
        path: list[str] = []
        for name in features.tool_path():
            if s.collapse_repeats and path and path[-1] == name:
                continue
            path.append(name)
            if len(path) >= s.max_tools:
                break
        agent = features.root_agent if s.include_agent else ""
        return f"{agent}:{'>'.join(path)}"

    def score(
        self,
        features: SessionFeatures,
        now: float,
        *,
        fragment: bool = False,
        running_at_cap: bool = False,
        learn: bool = True,
    ) -> SessionSignals:
        """``fragment``: a conversation decided before: its later part (a continuation), or all of
        it reopened. Its shape and most numbers would be compared with what the model learned of
        its earlier part, so they are not scored nor learned again: only its turn latency is
        scored (a turn is whole in a fragment too); errors and loops are found as in any session.
        ``running_at_cap``: a trace was still running when the session reached
        max_session_duration; such a turn is among the longest by construction, so it fires
        tail_latency even before (or without) its agent's history saying so.
        ``learn``: add the session to the rarity model (not on a second look: once per session)."""
        signals = list(error_signals(features.error_kinds))
        calls = [
            ToolCall(start, name, digest, turn, failed)
            for start, name, digest, turn, failed, _ in features.tool_calls
        ]
        agents = [
            AgentSpan(span_id, features.parents.get(span_id, b""), name)
            for span_id, name in features.agents
        ]
        findings = detect_cycles(
            calls,
            agents,
            features.parents,
            features.links,
            self.thresholds,
            features.model_starts,
        )
        if findings:
            signals.append(TOOL_CYCLE)
        shape = self.shape_of(features)
        group = features.root_agent
        rarity: dict[str, float] = {}
        cold = False
        if fragment:
            latency = {LATENCY: features.latency_s, MODEL_LATENCY: features.model_latency_s}
            scores = self.rarity.score(shape, group, latency, now)
            rarity = {
                LATENCY: scores.numeric[LATENCY],
                MODEL_LATENCY: scores.numeric[MODEL_LATENCY],
            }
            signals.extend(s for s in scores.fired(self.rarity_threshold) if s != RARE_SHAPE)
        else:
            numbers = {
                LATENCY: features.latency_s,
                MODEL_LATENCY: features.model_latency_s,
                "duration": features.duration_s,
                "tokens": float(features.tokens),
                "span_count": float(features.span_count),
                "tool_calls": float(features.tool_call_count),
            }
            scores = self.rarity.score(shape, group, numbers, now)
            if learn:
                self.rarity.observe(shape, group, numbers, now)
            cold = scores.cold
            signals.extend(scores.fired(self.rarity_threshold))
            rarity = {"shape": scores.shape, **scores.numeric}
        if running_at_cap:
            rarity[LATENCY] = 1.0
            if TAIL_LATENCY not in signals:
                signals.append(TAIL_LATENCY)
        return SessionSignals(
            signals=tuple(signals),
            shape=shape,
            cycle_kinds=frozenset(f.kind for f in findings),
            cycle_details=tuple(f.describe() for f in findings),
            rarity=rarity,
            cold=cold,
        )
