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
from sampler.signals.rarity import TAIL_SIGNALS, RarityModel, RaritySettings
from sampler.signals.tool_cycles import (
    AgentSpan,
    CycleFinding,
    CycleThresholds,
    ToolCall,
    find_agent_recursion,
    find_link_cycle,
    find_tool_cycles,
)

TOOL_CYCLE = "tool_cycle"
LATENCY = "latency"
MODEL_LATENCY = "model_latency"
TOOL_LATENCY = "tool_latency"
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
        # the fewest calls of one tool in one turn that a tool detector can fire on: a
        # repeated call or tool is that many calls of it, a repeating pattern that many of each
        # of its tools (tool_cycles.find_tool_cycles)
        t = self.thresholds
        self._fewest_repeats = min(
            t.same_call_repeats,
            t.same_tool_repeats,
            t.pattern_min_repeats if t.pattern_max_period >= 2 else t.same_tool_repeats,
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

    def _cycles(self, features: SessionFeatures) -> list[CycleFinding]:
        """``detect_cycles``, skipping what the native aggregates say cannot fire: a session
        whose turns call no tool as often as the fewest repeats any tool detector needs, in
        fewer turns than a repeated turn needs, has no tool loop; one with no more agent spans
        than ``max_agent_depth`` no recursion (most sessions: their calls are then not copied
        into Python objects at all)."""
        t = self.thresholds
        findings: list[CycleFinding] = []
        if (
            features.tool_repeats_in_a_turn >= self._fewest_repeats
            or features.turns_with_tool_calls >= t.same_turn_repeats
        ):
            calls = [
                ToolCall(start, name, digest, turn, failed)
                for start, name, digest, turn, failed, _ in features.tool_calls
            ]
            findings.extend(find_tool_cycles(calls, t, features.model_starts))
        if features.agent_count > t.max_agent_depth:
            parents = features.parents
            agents = [
                AgentSpan(span_id, parents.get(span_id, b""), name)
                for span_id, name in features.agents
            ]
            recursion = find_agent_recursion(agents, parents, t)
            if recursion is not None:
                findings.append(recursion)
        link_cycle = find_link_cycle(features.links)
        if link_cycle is not None:
            findings.append(link_cycle)
        return findings

    def shape_of(self, features: SessionFeatures) -> str:
        """A compact key of the session's structure: agent and tool path, as configured."""
        return self._shape(features.root_agent, self._path(features.tool_path()))

    def _path(self, tools: tuple[str, ...]) -> list[str]:
        """The tool path, repeats collapsed as configured."""
        if not self.shape_config.collapse_repeats:
            return list(tools)
        path: list[str] = []
        for name in tools:
            if not path or path[-1] != name:
                path.append(name)
        return path

    def _shape(self, agent: str, path: list[str]) -> str:
        s = self.shape_config
        return f"{agent if s.include_agent else ''}:{'>'.join(path[: s.max_tools])}"

    def shape_parts(self, features: SessionFeatures, *, ends: bool = True) -> tuple[str, ...]:
        """What the shape's rarity is judged on: each tool of the session's path, each step
        from one tool to the next (``a>b``) and, with ``ends``, its first and last tool
        (``^a``, ``b$``); ``^$`` for a session without tools. Repeats are collapsed as the
        shape collapses them. A session is as rare as its rarest part: a tool its agent does
        not use, or uses in another order, or does not start or end with. Judging the whole
        path instead makes every long conversation rare: a path made of the same few steps
        takes as many forms as there are ways to combine its turns. A fragment (a conversation
        decided before) is judged without ``ends``: it may start in the middle of the
        conversation (a continuation)."""
        return _parts(self._path(features.tool_path()), ends)

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
        it reopened. Its numbers would be compared with what the model learned of its earlier
        part, so they are not scored nor learned again, except its turn and model latency (a turn
        is whole in a fragment too, and they are scored as the largest of their units); the steps
        of its tool path are scored, and learned (later turns may take steps the first did not);
        errors and loops are found as in any session.
        ``running_at_cap``: a trace was still running when the session reached
        max_session_duration. When no turn of the session has ended, that turn has lasted as long
        as the session, among the longest by construction: it fires tail_latency even before (or
        without) its agent's history saying so. When turns have ended (a long conversation), the
        cap measured the conversation, not the running turn, which is not scored.
        ``learn``: add the session to the rarity model (not on a second look: once per session)."""
        signals = list(error_signals(features.error_kinds))
        findings = self._cycles(features)
        if findings:
            signals.append(TOOL_CYCLE)
        path = self._path(features.tool_path())
        shape = self._shape(features.root_agent, path)
        parts = _parts(path, not fragment)
        group = features.root_agent
        # the longest turn is the largest of several: scored as such (RarityModel.score)
        # against what one turn takes; model and tool calls by the session's typical one
        turns_ended = features.turns_ended
        units = {LATENCY: turns_ended}
        model_pace = features.model_pace_s
        tool_pace = features.tool_pace_s
        rarity: dict[str, float] = {}
        cold = False
        if fragment:
            latency = {
                LATENCY: features.latency_s,
                MODEL_LATENCY: model_pace,
                TOOL_LATENCY: tool_pace,
            }
            scores = self.rarity.score(parts, group, latency, now, units)
            if learn:  # its numbers were learned the first time; its steps may be new
                self.rarity.observe(parts, group, {}, now)
            rarity = {
                "shape": scores.shape,
                **{dimension: scores.numeric[dimension] for dimension in latency},
            }
            signals.extend(scores.fired(self.rarity_threshold))
        else:
            # sizes per turn: a conversation of many ordinary turns is not an outlier, and a
            # session scored again later (a second look) with more turns is compared alike
            turns = max(1, turns_ended)
            numbers = {
                LATENCY: features.latency_s,
                MODEL_LATENCY: model_pace,
                TOOL_LATENCY: tool_pace,
                "duration": features.duration_s,
                "tokens": features.tokens / turns,
                "span_count": features.span_count / turns,
                "tool_calls": features.tool_call_count / turns,
            }
            scores = self.rarity.score(parts, group, numbers, now, units)
            if learn:
                learned: dict[str, float | list[float]] = dict(numbers)
                if turns_ended:
                    learned[LATENCY] = features.turn_latencies
                self.rarity.observe(parts, group, learned, now)
            cold = scores.cold
            signals.extend(scores.fired(self.rarity_threshold))
            rarity = {"shape": scores.shape, **scores.numeric}
        if running_at_cap and not turns_ended:
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


def _parts(path: list[str], ends: bool) -> tuple[str, ...]:
    """``SessionScorer.shape_parts`` of a tool path."""
    if not path:
        return ("^$",) if ends else ()
    parts = dict.fromkeys(path)
    parts.update(dict.fromkeys(f"{a}>{b}" for a, b in zip(path, path[1:], strict=False)))
    if ends:
        parts.update({f"^{path[0]}": None, f"{path[-1]}$": None})
    return tuple(parts)
