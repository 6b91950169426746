"""Pipeline.reconfigure (a reload): new rules, budget, thresholds, session settings and mode
under what is buffered. Buffered sessions, held drops, the budget's rates and the rarity model
survive; sessions decided after it follow the new rules; a span test new rules add sees the
spans that arrive after it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sampler.clock import ManualClock
from sampler.config.model import SamplerConfig
from sampler.pipeline import Pipeline
from sampler.rules.conditions.attribute import AttributeTest
from sampler.rules.verdict import RULE_ATTRIBUTE
from sampler.sessions.native import place_span_tests
from tests.unit.sessions.builders import (
    RecordingSink,
    consume,
    sampler_config,
    simple_request,
    span,
)
from tests.unit.test_pipeline import CONV, DROP_ALL, KEEP_ALL, annotations, conversation, settle

TEAM_BLUE = "  - {name: blue, when: {attribute: {key: team, equals: blue}}, action: keep}\n"
TEAM_RED = "  - {name: red, when: {attribute: {key: team, equals: red}}, action: keep}\n"
REST = "  - {name: rest, action: drop}\n"


def pipeline_with(rules: str, **config: Any) -> tuple[Pipeline, RecordingSink, ManualClock]:
    sink, clock = RecordingSink(), ManualClock()
    return Pipeline(sampler_config(rules, **config), sink, clock), sink, clock


def reloaded(pipeline: Pipeline, rules: str, **config: Any) -> SamplerConfig:
    """The running config with new rules (and other sections), as a reload applies it."""
    new = dataclasses.replace(sampler_config(rules, **config), mode=pipeline.config.mode)
    pipeline.reconfigure(new)
    return new


def kept_by(sink: RecordingSink) -> dict[str, str]:
    return {s.name: annotations(s)[RULE_ATTRIBUTE][1] for s in sink.spans()}


def test_a_buffered_session_survives_and_is_decided_by_the_new_rules() -> None:
    pipeline, sink, clock = pipeline_with(DROP_ALL)
    consume(pipeline, simple_request(*conversation("t1", "c1")))
    reloaded(pipeline, KEEP_ALL)
    assert pipeline.buffer.span_count == 3
    assert settle(pipeline, clock) == 1
    assert set(kept_by(sink).values()) == {"everything"}


def test_a_held_drop_survives_and_a_later_turn_is_decided_with_the_new_rules() -> None:
    pipeline, sink, clock = pipeline_with(DROP_ALL)
    consume(pipeline, simple_request(*conversation("t1", "c1")))
    settle(pipeline, clock)  # dropped, held
    assert pipeline.buffer.held_spans == 3
    reloaded(pipeline, KEEP_ALL)
    assert pipeline.buffer.held_spans == 3
    consume(pipeline, simple_request(*conversation("t2", "c1")))  # reopens it
    settle(pipeline, clock)
    assert sorted(kept_by(sink)) == ["t1/1", "t1/2", "t1/3", "t2/1", "t2/2", "t2/3"]


def test_a_running_span_test_keeps_what_it_found() -> None:
    pipeline, sink, clock = pipeline_with(TEAM_BLUE + REST)
    consume(pipeline, simple_request(span("t1", 2, parent=1, attrs={"team": "blue"})))
    reloaded(pipeline, TEAM_RED + TEAM_BLUE + REST)  # blue's test stays where it was
    consume(pipeline, simple_request(span("t1", 1, attrs={CONV: "c1"})))
    settle(pipeline, clock)
    assert set(kept_by(sink).values()) == {"blue"}


def test_a_new_span_test_sees_the_spans_that_arrive_after_the_reload() -> None:
    pipeline, sink, clock = pipeline_with(TEAM_BLUE + REST)
    # c1's red span came before the reload: the new test never read it (the documented
    # caveat); c2's red span comes after it; c3's blue span must not pass for red
    consume(pipeline, simple_request(span("t1", 2, parent=1, attrs={"team": "red"})))
    consume(pipeline, simple_request(span("t2", 2, parent=1, attrs={"team": "blue"})))
    consume(pipeline, simple_request(span("t3", 2, parent=1, attrs={"team": "blue"})))
    reloaded(pipeline, TEAM_RED + REST)  # blue's position goes to red, cleared everywhere
    consume(pipeline, simple_request(span("t1", 1, attrs={CONV: "c1"})))
    consume(pipeline, simple_request(span("t2", 3, parent=1, attrs={"team": "red"})))
    consume(pipeline, simple_request(span("t2", 1, attrs={CONV: "c2"})))
    consume(pipeline, simple_request(span("t3", 1, attrs={CONV: "c3"})))
    settle(pipeline, clock)
    assert sorted(kept_by(sink)) == ["t2/1", "t2/2", "t2/3"]
    assert set(kept_by(sink).values()) == {"red"}
    assert pipeline.span_tests == [AttributeTest("team", "any", equals=(("str", "red"),))]


def test_span_test_positions_are_kept_freed_and_reused() -> None:
    a, b, c = (AttributeTest(k, "any", exists=True) for k in "abc")
    assert place_span_tests([a, b], [b, a]) == ([a, b], 0)
    assert place_span_tests([a, b], [b, c]) == ([c, b], 0b01)
    assert place_span_tests([a, b], [a]) == ([a], 0)
    assert place_span_tests([a, None, b], [a, b, c]) == ([a, c, b], 0b010)
    assert place_span_tests([a], [a, b, c]) == ([a, b, c], 0b110)
    many = [AttributeTest(f"k{i}", "any", exists=True) for i in range(65)]
    slots, _ = place_span_tests([], many[:64])
    for _ in range(3):  # reloads that swap tests never run out of positions
        slots, _ = place_span_tests(slots, many[1:])
        slots, _ = place_span_tests(slots, many[:64])
    with pytest.raises(ValueError, match="65 distinct span tests"):
        place_span_tests(slots, many)


def test_what_was_learned_survives_a_reload() -> None:
    rules = "  - {name: sampled, action: budget}\n"
    pipeline, _, clock = pipeline_with(rules)
    for i in range(5):
        consume(pipeline, simple_request(*conversation(f"t{i}", f"c{i}")))
    settle(pipeline, clock)
    rarity, budget = pipeline.scorer.rarity, pipeline.engine.budget
    seen = rarity.sessions_seen(clock.now())
    offered = budget._offered.value
    reloaded(pipeline, rules + REST)
    assert pipeline.scorer.rarity is rarity
    assert rarity.sessions_seen(clock.now()) == seen == 5
    assert pipeline.engine.budget is not budget
    assert pipeline.engine.budget._offered.value == offered  # the same window


def test_shorter_waits_apply_to_sessions_already_buffered() -> None:
    pipeline, _, clock = pipeline_with(DROP_ALL)
    consume(pipeline, simple_request(*conversation("t1", "c1")))
    clock.advance(10)
    assert pipeline.decide_due() == 0  # decision_wait 30s
    reloaded(pipeline, DROP_ALL, sessions={"decision_wait": 5.0})
    clock.advance(0.1)
    assert pipeline.decide_due() == 1


def test_switching_to_shadow_forwards_what_is_let_go_from_then_on() -> None:
    pipeline, sink, clock = pipeline_with(DROP_ALL)
    consume(pipeline, simple_request(*conversation("t1", "c1")))
    settle(pipeline, clock)  # dropped and held, live
    pipeline.reconfigure(dataclasses.replace(pipeline.config, mode="shadow"))
    assert pipeline.core.shadow
    pipeline.decide_all()  # the hold ends in shadow mode: forwarded as dropped
    assert {annotations(s)[RULE_ATTRIBUTE][1] for s in sink.spans()} == {"nothing"}
    assert len(sink.spans()) == 3


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"sessions": {"tick": 0.5}}, id="tick"),
        pytest.param({"signals": {"decay": 0.0}}, id="unusable-rarity-settings"),
    ],
)
def test_a_config_that_cannot_run_changes_nothing(change: dict[str, Any]) -> None:
    pipeline, sink, clock = pipeline_with(DROP_ALL)
    consume(pipeline, simple_request(*conversation("t1", "c1")))
    config = sampler_config(KEEP_ALL, sessions=change.get("sessions"))
    if "signals" in change:
        rarity = dataclasses.replace(config.signals.rarity, **change["signals"])
        config = dataclasses.replace(
            config, signals=dataclasses.replace(config.signals, rarity=rarity)
        )
    before = (pipeline.config, pipeline.engine, pipeline.scorer, list(pipeline.span_tests))
    with pytest.raises(ValueError):
        pipeline.reconfigure(config)
    assert (pipeline.config, pipeline.engine, pipeline.scorer, pipeline.span_tests) == before
    settle(pipeline, clock)
    assert sink.spans() == []  # still the old rules
