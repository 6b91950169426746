"""Session features: latency is the longest turn (root span), duration the whole session.

Times are in seconds from 0 here (``s(1.5)`` is 1.5 s in nanoseconds); every trace's root
span is a turn a user waited for.
"""

from __future__ import annotations

import pytest

from sampler.sessions.features import SessionFeatures
from sampler.sessions.spans import SpanFacts
from tests.unit.sessions.builders import facts


def s(seconds: float) -> int:
    return int(seconds * 1e9)


def features_of(*spans: SpanFacts) -> SessionFeatures:
    features = SessionFeatures()
    for span in spans:
        features.observe(span)
    return features


@pytest.mark.parametrize(
    ("spans", "latency_s", "duration_s"),
    [
        pytest.param([], 0.0, 0.0, id="no-span"),
        pytest.param([facts("a", start_ns=s(1), end_ns=s(4))], 0.0, 3.0, id="no-root-no-latency"),
        pytest.param([facts("a", root=True, start_ns=s(1), end_ns=s(4))], 3.0, 3.0, id="one-turn"),
        pytest.param(
            [
                facts("a", root=True, start_ns=s(1), end_ns=s(3)),
                facts("b", root=True, start_ns=s(10), end_ns=s(15)),
                facts("c", root=True, start_ns=s(20), end_ns=s(21)),
            ],
            5.0,
            20.0,
            id="three-turns-the-longest-counts-think-time-does-not",
        ),
        pytest.param(
            [
                facts("a", root=True, start_ns=s(1), end_ns=s(2)),
                facts("a", start_ns=s(1), end_ns=s(30)),  # a child outliving its root
            ],
            1.0,
            29.0,
            id="only-root-spans-are-turns",
        ),
        pytest.param(
            [facts("a", root=True, start_ns=s(5), end_ns=s(4))],
            0.0,
            0.0,
            id="a-root-ending-before-it-starts-is-no-turn",
        ),
    ],
)
def test_latency_is_the_longest_root_span(
    spans: list[SpanFacts], latency_s: float, duration_s: float
) -> None:
    features = features_of(*spans)

    assert features.latency_s == pytest.approx(latency_s)
    assert features.duration_s == pytest.approx(duration_s)


@pytest.mark.parametrize(
    ("first", "second", "latency_s"),
    [
        pytest.param((1, 3), (10, 15), 5.0, id="the-other-is-longer"),
        pytest.param((1, 9), (10, 15), 8.0, id="this-one-is-longer"),
        pytest.param((1, 3), None, 2.0, id="the-other-has-no-root"),
        pytest.param(None, (10, 15), 5.0, id="this-one-has-no-root"),
    ],
)
def test_merge_keeps_the_longest_turn(
    first: tuple[int, int] | None, second: tuple[int, int] | None, latency_s: float
) -> None:
    def part(name: str, turn: tuple[int, int] | None) -> SessionFeatures:
        if turn is None:  # a provisional session holding only a child span so far
            return features_of(facts(name, start_ns=s(11), end_ns=s(12)))
        return features_of(facts(name, root=True, start_ns=s(turn[0]), end_ns=s(turn[1])))

    merged = part("a", first)
    merged.merge(part("b", second))
    reversed_merge = part("b", second)
    reversed_merge.merge(part("a", first))

    assert merged.latency_s == pytest.approx(latency_s)
    assert reversed_merge.latency_s == merged.latency_s
    assert merged.span_count == 2
