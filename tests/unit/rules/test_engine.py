"""RuleEngine.decide: rule precedence, probabilistic keeps and rate limits, all with time and
randomness passed in. Statistical tests assert bounds over a fixed seed, not exact counts."""

from __future__ import annotations

import random
from typing import Any

import pytest

from sampler.config.reader import Problems, parse_yaml
from sampler.rules.budget import BudgetController, BudgetSettings
from sampler.rules.engine import RuleEngine
from sampler.rules.facts import DecisionFacts
from sampler.rules.parse import parse_rules
from sampler.rules.randomness import (
    RANDOMNESS_SPAN,
    keeps,
    randomness_of_key,
    randomness_of_trace_id,
    threshold,
)
from sampler.rules.verdict import NO_RULE, Verdict
from sampler.signals.errors import ErrorKind


def engine_of(rules_yaml: str) -> RuleEngine:
    problems = Problems("test.yaml")
    rules = parse_rules(parse_yaml(rules_yaml, "test.yaml"), problems)
    assert not problems.found, [str(p) for p in problems.found]
    return RuleEngine.build(rules)


def facts(
    *,
    randomness: int = 0,
    span_count: int = 5,
    error_spans: int = 0,
    duration_s: float = 1.0,
    redecision: bool = False,
) -> DecisionFacts:
    return DecisionFacts(
        session_key="s",
        randomness=randomness,
        span_count=span_count,
        trace_count=1,
        error_spans=error_spans,
        duration_s=duration_s,
        error_kinds=int(ErrorKind.STATUS) if error_spans else 0,
        signals=("error",) if error_spans else (),
        matched_tests=frozenset(),
        redecision=redecision,
    )


LAYERED = """
- {name: errors, when: {error: true}, action: keep}
- {name: tiny, when: {span_count: {max: 1}}, action: drop}
- {name: slow, when: {duration: {min: 2m}}, action: keep}
- {name: rest, action: {probability: 1}}
"""
NO_CATCH_ALL = """
- {name: errors, when: {error: true}, action: keep}
- {name: tiny, when: {span_count: {max: 1}}, action: drop}
"""
CATCH_ALL_FIRST = """
- {name: everything, action: keep}
- {name: errors-dropped, when: {error: true}, action: drop}
"""
DROP_FIRST = """
- {name: drop-errors, when: {error: true}, action: drop}
- {name: everything, action: keep}
"""
ERROR = ("error",)

PRECEDENCE = [
    # (id, rules, facts, verdict)
    (
        "first-match-wins-over-drop",
        LAYERED,
        {"error_spans": 1, "span_count": 1},
        Verdict(True, "errors", ERROR),
    ),
    (
        "drop-stops-evaluation",
        LAYERED,
        {"span_count": 1, "duration_s": 600},
        Verdict(False, "tiny"),
    ),
    ("later-rule-when-earlier-miss", LAYERED, {"duration_s": 120}, Verdict(True, "slow")),
    ("catch-all-last", LAYERED, {}, Verdict(True, "rest", (), 1.0)),
    ("no-match-drops", NO_CATCH_ALL, {"span_count": 2}, Verdict(False, NO_RULE)),
    ("drop-rule", NO_CATCH_ALL, {"span_count": 1}, Verdict(False, "tiny")),
    ("drop-before-catch-all", DROP_FIRST, {"error_spans": 1}, Verdict(False, "drop-errors", ERROR)),
    ("catch-all-after-drop", DROP_FIRST, {}, Verdict(True, "everything")),
    (
        "rule-without-when-matches-all",
        CATCH_ALL_FIRST,
        {"error_spans": 2},
        Verdict(True, "everything", ERROR),
    ),
    ("no-rules", "[]", {"error_spans": 1}, Verdict(False, NO_RULE, ERROR)),
]


@pytest.mark.parametrize(
    ("rules", "fields", "verdict"),
    [case[1:] for case in PRECEDENCE],
    ids=[case[0] for case in PRECEDENCE],
)
def test_rule_precedence(rules: str, fields: dict[str, Any], verdict: Verdict) -> None:
    assert engine_of(rules).decide(facts(**fields), now=0.0) == verdict


@pytest.mark.parametrize(
    ("rules", "error_spans", "signals"),
    [
        (LAYERED, 1, ERROR),
        (LAYERED, 0, ()),
        (NO_CATCH_ALL, 3, ERROR),
        ("[{name: d, action: drop}]", 1, ERROR),
    ],
    ids=["kept-error", "kept-clean", "no-rule-error", "dropped-error"],
)
def test_verdict_signals_name_the_error_signal(
    rules: str, error_spans: int, signals: tuple[str, ...]
) -> None:
    verdict = engine_of(rules).decide(facts(error_spans=error_spans), now=0.0)
    assert verdict.signals == signals


def random_facts(count: int, seed: int) -> list[DecisionFacts]:
    rng = random.Random(seed)
    return [facts(randomness=rng.getrandbits(56)) for _ in range(count)]


@pytest.mark.parametrize("probability", [0.1, 0.5], ids=["p0.1", "p0.5"])
def test_probability_keeps_its_fraction(probability: float) -> None:
    engine = engine_of(f"[{{name: sample, action: {{probability: {probability}}}}}]")
    verdicts = [engine.decide(f, now=0.0) for f in random_facts(20_000, seed=7)]
    kept = [v for v in verdicts if v.keep]
    assert len(kept) / len(verdicts) == pytest.approx(probability, abs=0.01)
    assert all(v.adjusted_count == pytest.approx(1 / probability) for v in kept)
    assert {v.rule for v in verdicts} == {"sample"}


def test_probability_is_deterministic_per_session() -> None:
    """Replicas and replay must agree: the verdict depends on the session, not on luck."""
    rules = "[{name: sample, action: {probability: 0.3}}]"
    sessions = random_facts(500, seed=11)
    one, other = engine_of(rules), engine_of(rules)  # e.g. two replicas
    first = [one.decide(f, now=0.0) for f in sessions]
    again = [other.decide(f, now=float(i)) for i, f in enumerate(reversed(sessions))]
    assert first == again[::-1]
    assert first == [one.decide(f, now=9.0) for f in sessions]


@pytest.mark.parametrize(
    ("randomness", "probability", "kept"),
    [
        # OpenTelemetry's consistent sampling: keep when R >= T = (1 - p) * 2^56
        (RANDOMNESS_SPAN - 1, 1e-9, True),
        (0, 1e-9, False),
        (0, 1.0, True),
        (threshold(0.1), 0.1, True),
        (threshold(0.1) - 1, 0.1, False),
        (RANDOMNESS_SPAN // 2, 0.5, True),
        (RANDOMNESS_SPAN // 2 - 1, 0.5, False),
    ],
    ids=[
        "highest-tiny-p",
        "lowest-tiny-p",
        "lowest-p1",
        "at-0.1-threshold",
        "just-below-0.1",
        "at-0.5",
        "just-below-0.5",
    ],
)
def test_keeps_is_a_threshold_on_randomness(
    randomness: int, probability: float, kept: bool
) -> None:
    assert keeps(randomness, probability) is kept


def test_randomness_of_key_is_a_stable_56_bit_hash() -> None:
    values = {key: randomness_of_key(key) for key in ("a", "b", "conversation-42", "")}
    assert values == {key: randomness_of_key(key) for key in values}
    assert len(set(values.values())) == len(values)
    assert all(0 <= value < RANDOMNESS_SPAN for value in values.values())
    # Pinned: replicas of different versions must still agree on which sessions they keep.
    assert randomness_of_key("conversation-42") == 0x7C2029B5B84E5D  # blake2b, 7 bytes


@pytest.mark.parametrize(
    ("trace_id", "randomness"),
    [
        ("0123456789abcdef0011223344556677", 0x11223344556677),
        ("ffffffffffffffffff11223344556677", 0x11223344556677),
        ("000000000000000000ffffffffffffff", RANDOMNESS_SPAN - 1),
        ("ffffffffffffffffff00000000000000", 0),
    ],
    ids=["low-56-bits", "high-bits-ignored", "max", "zero"],
)
def test_randomness_of_trace_id_is_its_low_56_bits(trace_id: str, randomness: int) -> None:
    assert randomness_of_trace_id(bytes.fromhex(trace_id)) == randomness


def test_session_rate_limit_keeps_its_rate_and_estimates_the_adjusted_count() -> None:
    """100 sessions a second against 5 a second: about 5 a second plus a 1 s burst."""
    engine = engine_of("[{name: limited, action: {rate_limit: {sessions_per_second: 5}}}]")
    start = 1_000.0  # a monotonic clock does not start at 0
    kept: list[tuple[float, Verdict]] = []
    for i in range(1_000):
        now = start + i / 100
        verdict = engine.decide(facts(), now)
        if verdict.keep:
            kept.append((now - start, verdict))
        else:
            assert verdict == Verdict(False, "limited", (), 1.0)
    assert 45 <= len(kept) <= 56
    warm = [v.adjusted_count for t, v in kept if t >= 5.0]
    assert warm and all(v == pytest.approx(20, rel=0.3) for v in warm)


def test_spans_rate_limit_counts_the_spans_of_each_session() -> None:
    engine = engine_of("[{name: spans, action: {rate_limit: {spans_per_second: 10}}}]")
    decided = [engine.decide(facts(span_count=n), now=50.0).keep for n in (6, 6, 4, 1)]
    assert decided == [True, False, True, False]


def test_rate_limit_refills_but_bursts_at_most_one_second() -> None:
    engine = engine_of("[{name: two, action: {rate_limit: {sessions_per_second: 2}}}]")

    def burst(now: float) -> list[bool]:
        return [engine.decide(facts(), now).keep for _ in range(3)]

    assert burst(10.0) == [True, True, False]
    assert burst(10.5) == [True, False, False]  # half a second: one token
    assert burst(110.0) == [True, True, False]  # a long pause still refills only 1 s worth


def test_each_rate_limited_rule_has_its_own_bucket() -> None:
    engine = engine_of(
        """
        - {name: errors, when: {error: true}, action: {rate_limit: {sessions_per_second: 1}}}
        - {name: rest, action: {rate_limit: {sessions_per_second: 1}}}
        """
    )
    verdicts = [engine.decide(facts(error_spans=e), now=5.0) for e in (1, 0, 1, 0)]
    assert [(v.rule, v.keep) for v in verdicts] == [
        ("errors", True),
        ("rest", True),
        ("errors", False),
        ("rest", False),
    ]


def test_spans_rate_limit_eventually_keeps_a_session_bigger_than_one_second_of_budget() -> None:
    engine = engine_of("[{name: spans, action: {rate_limit: {spans_per_second: 100}}}]")
    verdicts = [engine.decide(facts(span_count=150), now=10.0 * i) for i in range(1, 31)]
    assert any(v.keep for v in verdicts)


# --- reconsider: a second look at a dropped session -----------------------------------------

SECOND_LOOK = """
- {name: errors, when: {error: true}, action: keep}
- {name: tiny, when: {span_count: {max: 1}}, action: drop}
- {name: slow, when: {duration: {min: 2m}}, action: keep}
- {name: limited, when: {duration: {min: 1m}}, action: {rate_limit: {sessions_per_second: 1}}}
- {name: maybe, when: {duration: {min: 30s}}, action: {probability: 0.5}}
- {name: big, when: {span_count: {min: 100}}, action: keep}
- {name: rest, action: drop}
"""
KEPT_RANDOMNESS = RANDOMNESS_SPAN - 1  # kept at any probability
DROPPED_RANDOMNESS = 0  # dropped at any probability below 1

RECONSIDER = [
    # (id, rules, facts now, the rule that dropped it, verdict of the second look)
    ("earlier-keep-rule-now-matches", SECOND_LOOK, {"duration_s": 600}, "rest", (True, "slow")),
    ("first-rule-now-matches", SECOND_LOOK, {"error_spans": 1}, "tiny", (True, "errors")),
    ("nothing-earlier-matches", SECOND_LOOK, {}, "rest", None),
    # the rate limit has room now (decide would keep), but it is the rule that dropped it
    ("the-dropping-rule-never", SECOND_LOOK, {"duration_s": 90}, "limited", None),
    # in the next two, decide would keep by a rule after the one that dropped the session
    ("later-rules-never", SECOND_LOOK, {"span_count": 2, "duration_s": 600}, "tiny", None),
    ("later-keep-rule-never", SECOND_LOOK, {"span_count": 500}, "maybe", None),
    (
        "earlier-drop-rule-matching-first-is-no-keep",
        SECOND_LOOK,
        {"span_count": 1, "duration_s": 600},
        "rest",
        None,
    ),
    (
        "earlier-probability-keep",
        SECOND_LOOK,
        {"duration_s": 45, "randomness": KEPT_RANDOMNESS},
        "rest",
        (True, "maybe"),
    ),
    (
        "earlier-probability-not-keeping",
        SECOND_LOOK,
        {"duration_s": 45, "randomness": DROPPED_RANDOMNESS},
        "rest",
        None,
    ),
    (
        "no-rule-drop-looks-at-every-rule",
        NO_CATCH_ALL,
        {"error_spans": 1},
        NO_RULE,
        (True, "errors"),
    ),
    ("no-rule-drop-nothing-matches", NO_CATCH_ALL, {"span_count": 3}, NO_RULE, None),
]


@pytest.mark.parametrize(
    ("rules", "fields", "dropped_by", "expected"),
    [case[1:] for case in RECONSIDER],
    ids=[case[0] for case in RECONSIDER],
)
def test_reconsider_keeps_only_by_a_rule_before_the_drop(
    rules: str, fields: dict[str, Any], dropped_by: str, expected: tuple[bool, str] | None
) -> None:
    engine = engine_of(rules)
    verdict = engine.reconsider(facts(**fields), Verdict(False, dropped_by), now=0.0)

    assert (None if verdict is None else (verdict.keep, verdict.rule)) == expected
    if verdict is not None:  # what decide would say of these facts, when that rule comes first
        assert verdict == engine_of(rules).decide(facts(**fields), now=0.0)


class CountingBudget(BudgetController):
    """Counts what the engine reports to the budget."""

    __slots__ = ("decided", "must_keep")

    def __init__(self) -> None:
        super().__init__(BudgetSettings())
        self.decided = 0
        self.must_keep = 0

    def observe_decided(self, span_count: int, now: float) -> None:
        self.decided += 1
        super().observe_decided(span_count, now)

    def observe_must_keep(self, span_count: int, now: float) -> None:
        self.must_keep += 1
        super().observe_must_keep(span_count, now)


@pytest.mark.parametrize(
    ("fields", "must_keep"),
    [
        pytest.param({"duration_s": 600}, 1, id="kept-by-a-keep-rule-counts-against-the-budget"),
        pytest.param({}, 0, id="the-drop-stands"),
    ],
)
def test_reconsider_is_not_a_new_decision_for_the_budget(
    fields: dict[str, Any], must_keep: int
) -> None:
    engine = engine_of(SECOND_LOOK)
    engine.budget = budget = CountingBudget()
    first = engine.decide(facts(), now=0.0)
    assert (first, budget.decided, budget.must_keep) == (Verdict(False, "rest"), 1, 0)

    engine.reconsider(facts(**fields), first, now=10.0)

    assert (budget.decided, budget.must_keep) == (1, must_keep)


def test_reconsider_by_the_budget_rule_asks_the_budget_without_counting_a_keep() -> None:
    engine = engine_of(
        """
        - {name: rare-ish, when: {duration: {min: 2m}}, action: budget}
        - {name: rest, action: drop}
        """
    )
    engine.budget = budget = CountingBudget()
    first = engine.decide(facts(), now=0.0)

    verdict = engine.reconsider(facts(duration_s=600, randomness=KEPT_RANDOMNESS), first, now=1.0)

    assert verdict is not None and (verdict.keep, verdict.rule) == (True, "rare-ish")
    assert (budget.decided, budget.must_keep) == (1, 0)


def test_a_reconfigured_engine_keeps_the_bucket_of_a_rate_limit_it_keeps() -> None:
    engine = engine_of("[{name: two, action: {rate_limit: {sessions_per_second: 2}}}]")
    assert [engine.decide(facts(), 10.0).keep for _ in range(3)] == [True, True, False]

    def reloaded(rules_yaml: str) -> RuleEngine:
        new = engine_of(rules_yaml)
        return engine.reconfigured(new.rules, BudgetSettings())

    same = reloaded("[{name: two, action: {rate_limit: {sessions_per_second: 4}}}]")
    assert not same.decide(facts(), 10.0).keep  # its bucket is still empty
    renamed = reloaded("[{name: other, action: {rate_limit: {sessions_per_second: 2}}}]")
    assert renamed.decide(facts(), 10.0).keep  # a new rule: a full bucket
    spans = reloaded("[{name: two, action: {rate_limit: {spans_per_second: 20}}}]")
    assert spans.decide(facts(), 10.0).keep  # counted in spans now: a new bucket


@pytest.mark.parametrize(
    ("fields", "must_keep"),
    [
        pytest.param({"duration_s": 600}, 1, id="kept-this-time-counts-against-the-budget"),
        pytest.param({}, 0, id="dropped-again"),
    ],
)
def test_a_session_decided_again_is_not_new_traffic_for_the_budget(
    fields: dict[str, Any], must_keep: int
) -> None:
    """A conversation reopened by a later turn (or its continuation) is decided again; the
    budget, a share of sessions, counts it once, or each turn would widen it."""
    engine = engine_of(SECOND_LOOK)
    engine.budget = budget = CountingBudget()
    engine.decide(facts(), now=0.0)

    engine.decide(facts(redecision=True, **fields), now=40.0)

    assert (budget.decided, budget.must_keep) == (1, must_keep)
