"""The `ot` tracestate entry's threshold, as OpenTelemetry's probability sampling defines it."""

from __future__ import annotations

import pytest

from sampler.otlp.tracestate import (
    format_threshold,
    parse_threshold,
    threshold_of,
    upstream_threshold,
    with_probability,
)
from sampler.rules.randomness import RANDOMNESS_SPAN


@pytest.mark.parametrize(
    ("probability", "th"),
    [(1.0, "0"), (0.5, "8"), (0.25, "c"), (0.1, "e666666666666"), (1 / 3, "aaaaaaaaaaaa")],
    ids=["p1", "half", "quarter", "tenth", "third"],
)
def test_thresholds_are_written_as_the_specification_examples(probability: float, th: str) -> None:
    # exact for dyadic probabilities; for others the last of 14 digits depends on rounding
    assert format_threshold(threshold_of(probability)).startswith(th)
    parsed = parse_threshold(format_threshold(threshold_of(probability)))
    assert parsed is not None
    assert 1 - parsed / RANDOMNESS_SPAN == pytest.approx(probability, rel=1e-12)
    parsed = parse_threshold(th)
    assert parsed is not None
    assert 1 - parsed / RANDOMNESS_SPAN == pytest.approx(probability, rel=1e-12)


@pytest.mark.parametrize(
    "bad", ["", "g", "123456789012345", "8F"], ids=["empty", "not-hex", "too-long", "upper"]
)
def test_invalid_thresholds_are_not_read(bad: str) -> None:
    assert parse_threshold(bad) is None


@pytest.mark.parametrize(
    ("tracestate", "probability", "same", "expected"),
    [
        ("", 0.5, False, "ot=th:8"),
        ("vendor=x", 0.25, False, "ot=th:c,vendor=x"),
        ("ot=th:8", 0.5, False, "ot=th:c"),  # independent: 0.5 x 0.5
        ("ot=th:8", 0.5, True, "ot=th:8"),  # same randomness: the larger threshold
        ("ot=th:c", 0.5, True, "ot=th:c"),
        ("ot=th:8;rv:0123456789abcd", 0.5, True, "ot=th:c;rv:0123456789abcd"),  # rv: independent
        ("a=1,ot=th:8,b=2", 1.0, False, "ot=th:8,a=1,b=2"),
    ],
    ids=[
        "none-upstream",
        "keeps-other-vendors",
        "independent-multiply",
        "consistent-max",
        "consistent-upstream-stricter",
        "explicit-rv",
        "moved-to-front",
    ],
)
def test_combining_with_an_upstream_threshold(
    tracestate: str, probability: float, same: bool, expected: str
) -> None:
    assert with_probability(tracestate, probability, same) == expected


def test_upstream_threshold() -> None:
    assert upstream_threshold("") == (0, False)
    assert upstream_threshold("ot=th:8;rv:00000000000001") == (RANDOMNESS_SPAN // 2, True)
