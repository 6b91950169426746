"""The load generator's accounting: what counts in a measurement window, and how worker
processes' results and commands travel."""

from __future__ import annotations

import pytest

from benchmarks.loadgen.driver import Call, Command, WindowResult, summarise


def test_a_window_counts_calls_by_when_they_end_and_times_those_inside_it() -> None:
    calls = [
        Call(0.5, 1.2, 100, "ok"),  # ends inside: accepted, but started in the warm-up
        Call(1.5, 1.6, 200, "ok"),
        Call(2.0, 2.1, 300, "refused"),
        Call(2.5, 3.5, 400, "ok"),  # ends after the window: offered only
        Call(2.6, 2.7, 50, "failed"),
    ]
    result = summarise(calls, window_start=1.0, window_end=3.0, cpu_seconds=0.5)
    assert (result.requests_ok, result.spans_ok) == (2, 300)
    assert (result.requests_refused, result.spans_refused, result.requests_failed) == (1, 300, 1)
    assert result.spans_offered == 200 + 300 + 400 + 50
    assert result.latencies_ms == pytest.approx([100.0])
    assert result.accepted_spans_per_second == pytest.approx(150.0)
    merged = WindowResult.merge([result, WindowResult.from_json(result.to_json())])
    assert merged.spans_ok == 600 and merged.seconds == 2.0 and len(merged.latencies_ms) == 2


def test_commands_travel_as_json() -> None:
    command = Command(targets=("127.0.0.1:1", "127.0.0.1:2"), rate=1000.0, stop_after_spans=5)
    assert Command.from_json(command.to_json()) == command
