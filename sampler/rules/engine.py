"""The rule engine: the first matching rule decides, by its action (``Action.apply``, spec.py).
Pure: no I/O, time passed in. The engine owns what actions consult (the budget, the rate
limits' token buckets) and the budget's accounting of every decision."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from sampler.rules.budget import BudgetController, BudgetSettings
from sampler.rules.facts import DecisionFacts, SpanTest
from sampler.rules.spec import RateLimit, RuleSpec
from sampler.rules.verdict import NO_RULE, Verdict


@dataclass(slots=True)
class _TokenBucket:
    """Rate limit state for one rule, with a one-second burst. Also estimates the fraction of
    matching sessions it keeps, so kept sessions carry a usable adjusted count."""

    rate: float
    tokens: float
    last: float = 0.0
    offered: float = 0.0  # exponentially decayed counts (time constant ~10 s)
    kept: float = 0.0

    def take(self, cost: float, now: float) -> tuple[bool, float]:
        elapsed = max(0.0, now - self.last)
        self.last = now
        self.tokens = min(self.rate, self.tokens + elapsed * self.rate)
        decay = 0.5 ** (elapsed / 10.0)
        self.offered = self.offered * decay + 1
        self.kept *= decay
        # A session costing more than one second's budget is let through when the bucket is
        # full, leaving a debt that later sessions pay: the long-run rate still holds.
        if self.tokens < min(cost, self.rate):
            return False, 0.0
        self.tokens -= cost
        self.kept += 1
        return True, self.offered / self.kept


# What each name of `budget.strata` reads of a session (the binder allows only these).
_STRATUM_PARTS: dict[str, Callable[[DecisionFacts], str]] = {
    "agent": attrgetter("agent"),
    "outcome": lambda facts: "error" if facts.error_kinds else "ok",
    "shape": attrgetter("shape"),
}


def _unknown_stratum(name: str) -> Callable[[DecisionFacts], str]:
    def part(facts: DecisionFacts) -> str:
        raise KeyError(name)  # as the lookup of an unknown name raised, at decision time

    return part


@dataclass(slots=True)
class RuleEngine:
    rules: tuple[RuleSpec, ...]
    span_tests: tuple[SpanTest, ...] = ()
    budget: BudgetController = field(default_factory=lambda: BudgetController(BudgetSettings()))
    strata: tuple[str, ...] = ("agent",)
    _buckets: dict[str, _TokenBucket] = field(default_factory=dict)
    # Worked out once per rule set rather than once per session (every session is decided by
    # the first match, most only by the last rule): each rule with its condition's bound
    # `matches` (None: matches all), and what each stratum name reads.
    _matchers: tuple[tuple[RuleSpec, Callable[[DecisionFacts], bool] | None], ...] = field(
        init=False, repr=False, compare=False
    )
    _stratum_parts: tuple[Callable[[DecisionFacts], str], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._matchers = tuple(
            (rule, rule.condition.matches if rule.condition is not None else None)
            for rule in self.rules
        )
        self._stratum_parts = tuple(
            _STRATUM_PARTS.get(name) or _unknown_stratum(name) for name in self.strata
        )

    @classmethod
    def build(
        cls,
        rules: Sequence[RuleSpec],
        budget: BudgetSettings | None = None,
        strata: Sequence[str] = ("agent",),
    ) -> RuleEngine:
        tests: dict[SpanTest, None] = {}
        for rule in rules:
            if rule.condition is not None:
                tests.update(dict.fromkeys(rule.condition.span_tests()))
        engine = cls(
            tuple(rules), tuple(tests), BudgetController(budget or BudgetSettings()), tuple(strata)
        )
        for rule in rules:
            if isinstance(rule.action, RateLimit):
                engine._buckets[rule.name] = _TokenBucket(
                    rule.action.per_second, rule.action.per_second
                )
        return engine

    def reconfigured(
        self,
        rules: Sequence[RuleSpec],
        budget: BudgetSettings,
        strata: Sequence[str] = ("agent",),
    ) -> RuleEngine:
        """An engine for new rules (a reload) that keeps what this one learned: the budget's
        traffic rates (BudgetController.reconfigured), and the token bucket of a rate limit
        kept under the same rule name and unit (its tokens capped at the new rate)."""
        engine = RuleEngine.build(rules, budget, strata)
        engine.budget = self.budget.reconfigured(budget, same_strata=tuple(strata) == self.strata)
        units = {r.name: r.action.unit for r in self.rules if isinstance(r.action, RateLimit)}
        for rule in rules:
            old = self._buckets.get(rule.name)
            if old is None or not isinstance(rule.action, RateLimit):
                continue
            if units.get(rule.name) == rule.action.unit:
                bucket = engine._buckets[rule.name]
                bucket.tokens = min(old.tokens, bucket.rate)
                bucket.last, bucket.offered, bucket.kept = old.last, old.offered, old.kept
        return engine

    def decide(self, facts: DecisionFacts, now: float) -> Verdict:
        """The first matching rule's verdict. Every decision of a session not decided before
        also feeds the budget's view of traffic, and keeps by rules other than `budget` are
        counted against it."""
        if not facts.redecision:
            self.budget.observe_decided(facts.span_count, now)
        rule = self._first_match(facts)
        if rule is None:
            return Verdict(False, NO_RULE, facts.signals)
        return self._apply(rule, facts, now)

    def reconsider(self, facts: DecisionFacts, dropped: Verdict, now: float) -> Verdict | None:
        """A second look at a dropped session with newer facts (its rarity scored again): the
        verdict of a rule *before* the one that dropped it, if one matches now and keeps, else
        None (the drop stands). Rules are ordered, so new evidence can only move a session to
        an earlier rule; the session was counted as decided the first time, and is not again."""
        rule = self._first_match(facts, before=dropped.rule)
        if rule is None:
            return None
        verdict = self._apply(rule, facts, now)
        return verdict if verdict.keep else None

    def _first_match(self, facts: DecisionFacts, before: str | None = None) -> RuleSpec | None:
        """The first rule whose condition matches, looking no further than the rule named
        ``before`` (not included)."""
        for rule, matches in self._matchers:
            if rule.name == before:
                return None
            if matches is None or matches(facts):
                return rule
        return None

    def _apply(self, rule: RuleSpec, facts: DecisionFacts, now: float) -> Verdict:
        verdict = rule.action.apply(rule.name, facts, now, self)
        if verdict.keep and not rule.action.shares_budget:
            self.budget.observe_must_keep(facts.span_count, now)
        return verdict

    # -- what actions consult (spec.Decider) ----------------------------------------------------

    def budget_probability(self, facts: DecisionFacts, now: float) -> float:
        return self.budget.probability(self.stratum_of(facts), facts.span_count, now)

    def take_rate(self, rule: str, cost: float, now: float) -> tuple[bool, float]:
        return self._buckets[rule].take(cost, now)

    def stratum_of(self, facts: DecisionFacts) -> str:
        parts = self._stratum_parts
        if len(parts) == 1:
            return parts[0](facts)
        return "|".join(part(facts) for part in parts)
