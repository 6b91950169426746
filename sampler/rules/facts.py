"""What conditions see: per-span tests evaluated at ingest, and the facts of one session at
decision time. Both are plain data; nothing here does I/O or reads a clock."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple, Protocol


class SpanTest(Protocol):
    """A predicate over one span, evaluated once per span as it arrives, by the native core.

    A session remembers which tests matched *any* of its spans (one bit each), so that a
    condition such as "some span has gen_ai.agent.name == billing" costs one bit test at
    decision time instead of a scan of the buffered spans. Implementations are frozen
    dataclasses: equal tests from different rules are evaluated once.
    """

    @property
    def keys(self) -> tuple[str, ...]:
        """Attribute keys this test reads (the ingest path decodes only these)."""
        ...

    def native_spec(self) -> tuple[object, ...]:
        """The test as the native core builds it (``native/src/python.rs``, ``parse_test``)."""
        ...


class DecisionFacts(NamedTuple):
    """One session, summarised for the rules. Built from incrementally kept features and the
    signals scored from them (sampler.signals.scorer). A NamedTuple: immutable like a frozen
    dataclass, and built once per session on the hot path in a quarter of the time."""

    session_key: str
    randomness: int  # 56-bit, deterministic per session (see sampler.rules.randomness)
    span_count: int
    trace_count: int
    error_spans: int
    duration_s: float  # from span timestamps: last end - first start
    matched_tests: frozenset[SpanTest]
    error_kinds: int = 0  # sampler.signals.errors.ErrorKind bits
    tokens: int = 0
    tool_calls: int = 0
    agent: str = ""
    shape: str = ""
    signals: tuple[str, ...] = ()  # names that fired, written to agent_sampler.signals
    cycle_kinds: frozenset[str] = frozenset()  # tool-cycle findings' kinds
    rarity: Mapping[str, float] = MappingProxyType({})  # dimension -> score in [0, 1]
    # decided (and dropped) before: reopened by a later turn, or a continuation of such a
    # conversation. Not new traffic for the budget, which counts each session once.
    redecision: bool = False
