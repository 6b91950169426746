"""Rules as typed data: a name, a condition, an action; each action applies itself."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeGuard

from sampler.config.model import Rule, SamplerConfig
from sampler.rules.facts import DecisionFacts, SpanTest
from sampler.rules.randomness import keeps
from sampler.rules.verdict import Verdict


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
        for part in self.parts:  # a loop, not all() over a generator: run for every session
            if not part.matches(facts):
                return False
        return True


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Condition, ...]

    def span_tests(self) -> Iterable[SpanTest]:
        for part in self.parts:
            yield from part.span_tests()

    def matches(self, facts: DecisionFacts) -> bool:
        for part in self.parts:
            if part.matches(facts):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Not:
    part: Condition

    def span_tests(self) -> Iterable[SpanTest]:
        return self.part.span_tests()

    def matches(self, facts: DecisionFacts) -> bool:
        return not self.part.matches(facts)


class Decider(Protocol):
    """What applying an action may ask of the engine that applies it (rules.engine)."""

    def budget_probability(self, facts: DecisionFacts, now: float) -> float:
        """The keep probability of the session's stratum under the volume budget."""
        ...

    def take_rate(self, rule: str, cost: float, now: float) -> tuple[bool, float]:
        """Whether rule's token bucket lets ``cost`` through, and the adjusted count if so."""
        ...


class Action(Protocol):
    """A rule's action: the verdict for a session its rule's condition matched. An action is
    one frozen dataclass here, parsed in parse.py; it reads the engine's state through
    ``Decider`` and never changes the budget's accounting (the engine does that, once)."""

    # True for the action that shares the budget (`budget`): its keeps are the budget's own,
    # where a keep by any other action counts against the budget first.
    shares_budget: ClassVar[bool]

    def apply(self, rule: str, facts: DecisionFacts, now: float, engine: Decider) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class KeepAlways:
    shares_budget: ClassVar[bool] = False

    def apply(self, rule: str, facts: DecisionFacts, now: float, engine: Decider) -> Verdict:
        return Verdict(True, rule, facts.signals, 1.0)


@dataclass(frozen=True, slots=True)
class Drop:
    shares_budget: ClassVar[bool] = False

    def apply(self, rule: str, facts: DecisionFacts, now: float, engine: Decider) -> Verdict:
        return Verdict(False, rule, facts.signals)


def _keep_with(probability: float, rule: str, facts: DecisionFacts) -> Verdict:
    if keeps(facts.randomness, probability):
        return Verdict(True, rule, facts.signals, 1.0 / probability)
    return Verdict(False, rule, facts.signals)


@dataclass(frozen=True, slots=True)
class KeepProbability:
    probability: float  # (0, 1]
    shares_budget: ClassVar[bool] = False

    def apply(self, rule: str, facts: DecisionFacts, now: float, engine: Decider) -> Verdict:
        return _keep_with(self.probability, rule, facts)


@dataclass(frozen=True, slots=True)
class RateLimit:
    per_second: float
    unit: str  # "sessions" | "spans"
    shares_budget: ClassVar[bool] = False

    def apply(self, rule: str, facts: DecisionFacts, now: float, engine: Decider) -> Verdict:
        cost = 1.0 if self.unit == "sessions" else float(facts.span_count)
        kept, adjusted = engine.take_rate(rule, cost, now)
        return Verdict(kept, rule, facts.signals, adjusted if kept else 1.0)


@dataclass(frozen=True, slots=True)
class KeepWithinBudget:
    """Keep under the shared, stratified volume budget (sampler.rules.budget)."""

    shares_budget: ClassVar[bool] = True

    def apply(self, rule: str, facts: DecisionFacts, now: float, engine: Decider) -> Verdict:
        return _keep_with(engine.budget_probability(facts, now), rule, facts)


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
