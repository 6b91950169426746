"""The side-by-side benchmark end to end with `--quick`: the sampler, a real collector with the
tail_sampling processor, the sink and the load generator run on loopback, and the JSON has
every figure. Its shape is checked, not its numbers (a tiny corpus and windows of a second
or two measure nothing).

The collector comes from benchmarks/collector/build.sh (cached; a cold build takes minutes,
outside this test's timeout). Without Go, or when the build fails, the test is skipped saying
why; AGENT_SAMPLER_REQUIRE_COLLECTOR=1 makes that a failure (as in tests/e2e/collector/)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.collector.binary import build_collector
from benchmarks.quality.generator import ALL_LABELS
from benchmarks.versus_collector.harness import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NUMBERS = (
    "sampler_spans_per_second",
    "collector_spans_per_second",
    "sampler_spans_per_cpu_second",
    "collector_spans_per_cpu_second",
    "sampler_peak_rss_mb",
    "collector_peak_rss_mb",
    "sampler_recall",
    "collector_recall",
    "sampler_kept_fraction",
    "collector_kept_fraction",
    "sampler_kept_session_fraction",
    "collector_kept_session_fraction",
)
QUALITY = (
    "recall",
    "whole_session_rate",
    "ordinary_span_fraction_kept",
    "kept_span_fraction",
    "replay",
    "sink_spans",
    "peak_rss_mb",
)
THROUGHPUT = (
    "spans_per_second",
    "sustained",
    "peak_rss_mb",
    "cpu_utilisation",
    "cpu_seconds_per_million_spans",
    "p50_export_ms",
    "p99_export_ms",
    "sink_missing_spans",
    "attempts",
)


@pytest.fixture(scope="module")
def collector_binary() -> Path:
    binary, why = build_collector()
    if binary is None:
        message = f"no collector binary, side-by-side benchmark skipped: {why}"
        if os.environ.get("AGENT_SAMPLER_REQUIRE_COLLECTOR") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.mark.timeout(240, func_only=True)
def test_quick_run_prints_one_json_object_with_every_figure(
    collector_binary: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--quick", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # --json: the JSON object alone
    result = json.loads(lines[0])
    shown = json.dumps(result, indent=1)  # in the message of any failed assertion

    for key in NUMBERS:
        assert isinstance(result[key], int | float), f"{key}: {shown}"
    for system in ("sampler", "collector"):
        quality = result["quality"][system]
        assert set(QUALITY) <= set(quality), shown
        assert set(quality["recall"]) == set(ALL_LABELS), shown
        assert set(THROUGHPUT) <= set(result["throughput"][system]), shown
        assert result["throughput"][system]["attempts"], shown
        assert isinstance(result["sustained"][system], bool), shown
    assert "policy_keeps" in result["quality"]["collector"], shown
    assert [p["name"] for p in result["collector_policies"]][-1] == "baseline", shown
    assert set(result["setup"]) >= {"decision_wait_s", "speedup", "corpus", "pinning"}, shown
