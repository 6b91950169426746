"""Rules as typed data: a name, a condition, an action."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeGuard

from sampler.config.model import Rule, SamplerConfig
from sampler.rules.facts import DecisionFacts, SpanTest


class Condition(Protocol):
    """A condition kind: parsed from YAML (see conditions/), pure at decision time."""

    def span_tests(self) -> Iterable[SpanTest]:
        """The per-span tests this condition needs evaluated at ingest (often none)."""
        ...

    def matches(self, facts: DecisionFacts) -> bool: ...


# The combinators (`all`, `any`, `not`; parsed in conditions/combinators.py) are conditions
# made of conditions: here, beside the protocol, so that parsing any kind can build them.


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Condition, ...]

    def span_tests(self) -> Iterable[SpanTest]:
        for part in self.parts:
            yield from part.span_tests()

    def matches(self, facts: DecisionFacts) -> bool:
        return all(part.matches(facts) for part in self.parts)


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Condition, ...]

    def span_tests(self) -> Iterable[SpanTest]:
        for part in self.parts:
            yield from part.span_tests()

    def matches(self, facts: DecisionFacts) -> bool:
        return any(part.matches(facts) for part in self.parts)


@dataclass(frozen=True, slots=True)
class Not:
    part: Condition

    def span_tests(self) -> Iterable[SpanTest]:
        return self.part.span_tests()

    def matches(self, facts: DecisionFacts) -> bool:
        return not self.part.matches(facts)


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


def rules_of(config: SamplerConfig) -> tuple[RuleSpec, ...]:
    """The config's rules as what they are: ``rules.parse`` made them, and config, the layer
    below, holds them as plain ``Rule``s."""
    rules = config.rules
    if not _all_specs(rules):
        raise TypeError("SamplerConfig.rules holds something other than RuleSpec")
    return rules


def _all_specs(rules: tuple[Rule, ...]) -> TypeGuard[tuple[RuleSpec, ...]]:
    return all(isinstance(rule, RuleSpec) for rule in rules)
