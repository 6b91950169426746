"""Rules as typed data: a name, a condition, an action."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sampler.rules.facts import DecisionFacts, SpanTest


class Condition(Protocol):
    """A condition kind: parsed from YAML (see conditions/), pure at decision time."""

    def span_tests(self) -> Iterable[SpanTest]:
        """The per-span tests this condition needs evaluated at ingest (often none)."""
        ...

    def matches(self, facts: DecisionFacts) -> bool: ...


@dataclass(frozen=True, slots=True)
class KeepAlways:
    pass


@dataclass(frozen=True, slots=True)
class Drop:
    pass


@dataclass(frozen=True, slots=True)
class KeepProbability:
    probability: float  # (0, 1]


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float
    unit: str  # "sessions" | "spans"


@dataclass(frozen=True, slots=True)
class KeepWithinBudget:
    """Keep under the shared, stratified volume budget (sampler.rules.budget)."""


Action = KeepAlways | Drop | KeepProbability | RateLimit | KeepWithinBudget


@dataclass(frozen=True, slots=True)
class RuleSpec:
    name: str
    condition: Condition | None  # None: matches every session
    action: Action
    line: int = 0
