"""The quality benchmark end to end on a tiny corpus: the shape of its JSON, not its numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.quality.generator import ALL_LABELS
from benchmarks.quality.harness import (
    METHODS,
    TARGETS,
    main,
    matching_probability,
    write_uniform_config,
)
from sampler.config_file import load_config
from sampler.rules.randomness import keeps, randomness_of_key

METRICS = (
    "whole_session_rate",
    "ordinary_span_fraction_kept",
    "kept_session_fraction",
    "kept_span_fraction",
)


def test_main_prints_a_table_then_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sessions", "150", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["metric", *METHODS]
    result = json.loads(lines[-1])
    assert set(result) >= {*METHODS, "corpus", "targets"}
    for method in METHODS:
        scores = result[method]
        assert set(scores["recall"]) == set(ALL_LABELS)
        for value in [*scores["recall"].values(), *(scores[m] for m in METRICS)]:
            assert value is None or 0.0 <= value <= 1.0
    assert result["corpus"]["sessions"] == 150
    assert set(result["corpus"]["labels"]) == set(ALL_LABELS)
    assert result["sampler"]["kept_sessions"] > 0
    targets = result["targets"]
    assert set(targets) == {target.name for target in TARGETS} | {"all_met"}
    assert isinstance(targets["all_met"], bool)
    assert all(isinstance(targets[t.name]["met"], bool) for t in TARGETS)


@pytest.mark.parametrize("count", [0, 1, 7, 20])
def test_matching_probability_keeps_exactly_the_asked_count(count: int) -> None:
    keys = [f"session-{n}" for n in range(20)]
    probability = matching_probability(keys, count)
    assert 0.0 < probability <= 1.0
    assert sum(keeps(randomness_of_key(key), probability) for key in keys) == count


def test_the_uniform_baseline_is_a_valid_config_with_one_probability_rule(tmp_path: Path) -> None:
    path = tmp_path / "uniform.yaml"
    write_uniform_config(0.125, path)
    (rule,) = load_config(path).rules
    assert rule.condition is None
    assert getattr(rule.action, "probability", None) == 0.125
