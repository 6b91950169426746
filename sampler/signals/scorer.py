"""Scores a session when it is decided: error kinds, tool cycles, rarity, shape.

Pure given its inputs, except the rarity model, which remembers recent traffic: each session is
scored against the sessions decided before it, then added (score, then observe), so a burst of
one new shape is rare at first and becomes common as it repeats.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import groupby
from types import MappingProxyType
from typing import NamedTuple

from sampler._native import SessionView as SessionFeatures
from sampler.config.model import SignalsConfig
from sampler.signals.rarity import (
    LATENCY,
    MODEL_LATENCY,
    TAIL_LATENCY,
    TOOL_LATENCY,
    RarityModel,
    RaritySignal,
)
from sampler.signals.registry import Scored, Session, SignalKind, signal_kinds
from sampler.signals.tool_cycles import TOOL_CYCLE

__all__ = [
    "LATENCY",
    "MODEL_LATENCY",
    "TAIL_LATENCY",
    "TOOL_CYCLE",
    "TOOL_LATENCY",
    "SessionScorer",
    "SessionSignals",
]


class SessionSignals(NamedTuple):
    """What the kinds found in one session, and its shape. A NamedTuple (as ``DecisionFacts``):
    immutable, built once per session decided in half the time of a frozen dataclass."""

    signals: tuple[str, ...]
    shape: str
    cycle_kinds: frozenset[str] = frozenset()
    cycle_details: tuple[str, ...] = ()
    rarity: Mapping[str, float] = MappingProxyType({})
    cold: bool = False  # the rarity model could not score it fully yet (see RarityScores.cold)


class SessionScorer:
    """Runs every registered signal kind (``signals/registry.py``) on a session being decided,
    in their order, and gives the session its shape."""

    def __init__(self, config: SignalsConfig) -> None:
        self.shape_config = config.shape
        self.kinds: dict[str, SignalKind] = {
            name: build(config) for name, build in signal_kinds().items()
        }

    @property
    def rarity(self) -> RarityModel:
        """The rarity kind's model of recent traffic (a reload keeps the running one)."""
        return self._rarity_kind().model

    @rarity.setter
    def rarity(self, model: RarityModel) -> None:
        self._rarity_kind().model = model

    def _rarity_kind(self) -> RaritySignal:
        kind = self.kinds["rarity"]
        assert isinstance(kind, RaritySignal)
        return kind

    def flush(self) -> None:
        """What the kinds learned from the sessions scored since the last flush counts from now
        on (see rarity: the pipeline flushes once a tick)."""
        for kind in self.kinds.values():
            kind.flush()

    def _path(self, tools: tuple[str, ...]) -> list[str]:
        """The tool path, repeats collapsed as configured."""
        if not self.shape_config.collapse_repeats:
            return list(tools)
        return [name for name, _ in groupby(tools)]

    def _shape(self, agent: str, path: list[str]) -> str:
        s = self.shape_config
        return f"{agent if s.include_agent else ''}:{'>'.join(path[: s.max_tools])}"

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
        path = self._path(features.tool_path())
        session = Session(features, now, path, fragment, running_at_cap, learn)
        scored = Scored()
        for kind in self.kinds.values():
            kind.score(session, scored)
        return SessionSignals(  # every field, in order, by position (see Pipeline.facts_of)
            tuple(scored.signals),
            self._shape(features.root_agent, path),
            scored.cycle_kinds,
            scored.cycle_details,
            scored.rarity,
            scored.cold,
        )
