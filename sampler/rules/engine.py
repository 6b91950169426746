"""The rule engine: first matching rule decides. Pure: no I/O, time passed in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sampler.rules.budget import BudgetController, BudgetSettings
from sampler.rules.facts import DecisionFacts, SpanTest
from sampler.rules.randomness import keeps
from sampler.rules.spec import (
    Drop,
    KeepAlways,
    KeepProbability,
    KeepWithinBudget,
    RateLimit,
    RuleSpec,
)
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


@dataclass(slots=True)
class RuleEngine:
    rules: tuple[RuleSpec, ...]
    span_tests: tuple[SpanTest, ...] = ()
    budget: BudgetController = field(default_factory=lambda: BudgetController(BudgetSettings()))
    strata: tuple[str, ...] = ("agent",)
    _buckets: dict[str, _TokenBucket] = field(default_factory=dict)

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
        for rule in self.rules:
            if rule.condition is None or rule.condition.matches(facts):
                verdict = self._apply(rule, facts, now)
                if verdict.keep and not isinstance(rule.action, KeepWithinBudget):
                    self.budget.observe_must_keep(facts.span_count, now)
                return verdict
        return Verdict(False, NO_RULE, facts.signals)

    def reconsider(self, facts: DecisionFacts, dropped: Verdict, now: float) -> Verdict | None:
        """A second look at a dropped session with newer facts (its rarity scored again): the
        verdict of a rule *before* the one that dropped it, if one matches now and keeps, else
        None (the drop stands). Rules are ordered, so new evidence can only move a session to
        an earlier rule; the session was counted as decided the first time, and is not again."""
        for rule in self.rules:
            if rule.name == dropped.rule:
                return None
            if rule.condition is None or rule.condition.matches(facts):
                verdict = self._apply(rule, facts, now)
                if not verdict.keep:
                    return None
                if not isinstance(rule.action, KeepWithinBudget):
                    self.budget.observe_must_keep(facts.span_count, now)
                return verdict
        return None

    def stratum_of(self, facts: DecisionFacts) -> str:
        parts = {
            "agent": facts.agent,
            "outcome": "error" if facts.error_kinds else "ok",
            "shape": facts.shape,
        }
        return "|".join(parts[name] for name in self.strata)

    def _apply(self, rule: RuleSpec, facts: DecisionFacts, now: float) -> Verdict:
        action, signals = rule.action, facts.signals
        if isinstance(action, KeepAlways):
            return Verdict(True, rule.name, signals, 1.0)
        if isinstance(action, Drop):
            return Verdict(False, rule.name, signals)
        if isinstance(action, KeepProbability | KeepWithinBudget):
            p = (
                action.probability
                if isinstance(action, KeepProbability)
                else self.budget.probability(self.stratum_of(facts), facts.span_count, now)
            )
            if keeps(facts.randomness, p):
                return Verdict(True, rule.name, signals, 1.0 / p)
            return Verdict(False, rule.name, signals)
        bucket = self._buckets[rule.name]
        cost = 1.0 if action.unit == "sessions" else float(facts.span_count)
        kept, adjusted = bucket.take(cost, now)
        return Verdict(kept, rule.name, signals, adjusted if kept else 1.0)
