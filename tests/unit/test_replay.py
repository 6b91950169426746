"""Replay: recorded OTLP/JSON traffic through the pipeline, observed per rule, per signal and per
shape, as text, JSON and an HTML report.

The recording holds five GenAI conversations a minute apart: one with a failed model call, one
whose agent calls the same tool with the same arguments three times (a loop), and three
ordinary ones. The rarity model is still warming up after five sessions, so no rarity signal
fires and every rarity score is 0.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from sampler.cli import main
from sampler.clock import ManualClock
from sampler.config.load import load_config_text
from sampler.config.model import SamplerConfig
from sampler.otlp.json_codec import iter_json_lines, request_to_json
from sampler.pipeline import Pipeline
from sampler.replay import (
    LARGE_INPUT_BYTES,
    NO_SIGNAL,
    PROGRESS_LOG_EVERY_S,
    KeptTimeline,
    Progress,
    ReplayObservations,
    ReplayResult,
    format_summary,
    read_requests,
    replay,
    signal_rows,
    summary_json,
    summary_rows,
    total_row,
)
from sampler.rules.facts import DecisionFacts
from sampler.rules.verdict import Verdict
from tests.unit.sessions.builders import RecordingSink, simple_request, span
from tests.unit.test_report import check_well_formed

CONFIG = """\
rules:
  - {name: errors, when: {error: true}, action: keep}
  - {name: tool-loops, when: {tool_cycle: true}, action: keep}
  - {name: baseline, action: budget}
"""

T0_NS = 1_700_000_000 * 10**9
SECOND_NS = 10**9
AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "helper"}


def tool(name: str, arguments: str) -> dict[str, str | int]:
    return {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.arguments": arguments,
    }


CHAT: dict[str, str | int] = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 100}


def conversation(
    index: int, children: list[tuple[dict[str, str | int], bool]], key: str
) -> list[Span]:
    """An agent root span (conversation ``key``) with these (attributes, error) children, one
    second apart, starting ``index`` minutes after T0."""
    trace = f"t{index}"
    start = T0_NS + index * 60 * SECOND_NS
    spans = [
        span(
            trace,
            number,
            parent=1,
            name=str(attrs["gen_ai.operation.name"]),
            attrs=attrs,
            error=error,
            start_ns=start + number * SECOND_NS,
            end_ns=start + number * SECOND_NS + SECOND_NS // 2,
        )
        for number, (attrs, error) in enumerate(children, start=2)
    ]
    end = start + (len(children) + 2) * SECOND_NS
    root_attrs = {**AGENT, "gen_ai.conversation.id": key}
    root = span(trace, 1, name="invoke_agent", attrs=root_attrs, start_ns=start, end_ns=end)
    return [*spans, root]


def recording(path: Path) -> Path:
    sessions = [
        conversation(0, [(tool("lookup", '{"id": 1}'), False), (CHAT, False)], "c-ok-0"),
        conversation(1, [(CHAT, True)], "c-error"),
        conversation(2, [(tool("search", '{"q": "x"}'), False)] * 3, "c-loop"),
        conversation(3, [(tool("lookup", '{"id": 2}'), False), (CHAT, False)], "c-ok-1"),
        conversation(4, [(tool("lookup", '{"id": 3}'), False), (CHAT, False)], "c-ok-2"),
    ]
    path.write_text("".join(request_to_json(simple_request(*s)) + "\n" for s in sessions))
    return path


@pytest.fixture
def replayed(tmp_path: Path) -> ReplayResult:
    config = load_config_text(CONFIG, "replay.yaml")
    return replay(config, [str(recording(tmp_path / "in.jsonl"))], str(tmp_path / "out.jsonl"))


def signals_of(result: ReplayResult) -> dict[str, tuple[int, int]]:
    return {
        name: (t.sessions_seen, t.sessions_kept) for name, t in result.observed.by_signal.items()
    }


def test_every_session_counts_under_each_signal_that_fired(replayed: ReplayResult) -> None:
    signals = signals_of(replayed)

    assert signals["error"] == (1, 1)
    assert signals["tool_cycle"] == (1, 1)
    assert signals[NO_SIGNAL][0] == 3
    assert set(signals) == {"error", "tool_cycle", NO_SIGNAL}
    assert replayed.observed.by_signal["tool_cycle"].spans_seen == 4  # root and three calls


def test_observations_agree_with_the_pipeline_tallies(replayed: ReplayResult) -> None:
    by_rule, observed = replayed.stats.by_rule, replayed.observed
    assert sum(t.sessions_seen for t in by_rule.values()) == 5
    assert by_rule["errors"].sessions_kept == by_rule["tool-loops"].sessions_kept == 1
    # every decision seen once by the timeline, with the kept spans of its rule
    for rule, tally in by_rule.items():
        assert sum(observed.timeline.series(rule)) == tally.spans_kept
    # each session is in exactly one histogram bin per rarity dimension
    for histogram in observed.scores.values():
        assert sum(histogram.kept) + sum(histogram.dropped) == 5
    assert sum(t.sessions for t in observed.shapes.values()) == 5


def test_each_rule_and_signal_says_what_share_of_sessions_it_fired_on(
    replayed: ReplayResult,
) -> None:
    summary = json.loads(summary_json(replayed.stats, replayed.requests, replayed.observed))
    rules = {row["rule"]: row["share"] for row in summary["rules"]}
    signals = {row["signal"]: row["share"] for row in summary["signals"]}

    assert rules == {"errors": 0.2, "tool-loops": 0.2, "baseline": 0.6}
    assert signals == {"error": 0.2, "tool_cycle": 0.2, NO_SIGNAL: 0.6}
    assert "share" in format_summary(replayed.stats, replayed.observed).splitlines()[0]


def test_an_observer_sees_every_decision_with_its_facts(tmp_path: Path) -> None:
    seen: list[tuple[str, tuple[str, ...], str]] = []

    class Hook:
        def decided(
            self, facts: DecisionFacts, verdict: Verdict, now: float, *, second_look: bool
        ) -> None:
            seen.append((facts.session_key, facts.signals, verdict.rule))

    config = load_config_text(CONFIG, "replay.yaml")
    source = recording(tmp_path / "in.jsonl")
    replay(config, [str(source)], str(tmp_path / "out.jsonl"), observer=Hook())

    by_key = {key: (signals, rule) for key, signals, rule in seen}
    assert by_key["c-loop"] == (("tool_cycle",), "tool-loops")
    assert by_key["c-error"] == (("error",), "errors")
    assert {key for key, _, _ in seen} == {"c-ok-0", "c-error", "c-loop", "c-ok-1", "c-ok-2"}


def test_rare_shapes_rank_least_seen_first_while_scores_are_cold(
    replayed: ReplayResult,
) -> None:
    shapes = [(shape, t.sessions, t.peak_score) for shape, t in replayed.observed.rarest_shapes()]

    assert shapes == [("helper:", 1, 0.0), ("helper:search", 1, 0.0), ("helper:lookup", 3, 0.0)]


def test_text_summary_has_rule_signal_and_shape_tables(replayed: ReplayResult) -> None:
    text = format_summary(replayed.stats, replayed.observed)

    assert "TOTAL" in text and "tool-loops" in text
    assert "tool_cycle" in text and NO_SIGNAL in text
    assert "top rare shapes" in text and "helper:search" in text


def test_json_summary_keeps_its_keys_and_adds_signals_and_shapes(replayed: ReplayResult) -> None:
    summary = json.loads(summary_json(replayed.stats, replayed.requests, replayed.observed))

    assert {"requests", "late_spans_kept", "late_spans_dropped", "rules"} <= set(summary)
    assert summary["requests"] == 5
    signals = {row["signal"]: row for row in summary["signals"]}
    assert signals["error"]["sessions_seen"] == signals["error"]["sessions_kept"] == 1
    assert signals["error"]["keep_ratio"] == 1.0
    assert summary["rare_shapes"][0] == {
        "shape": "helper:",
        "peak_score": 0.0,
        "sessions": 1,
        "sessions_kept": 1,
    }


def test_cli_writes_a_self_contained_html_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(CONFIG)
    source = recording(tmp_path / "in.jsonl")
    report = tmp_path / "report.html"

    code = main(
        [
            "replay",
            "--config",
            str(config),
            "--output",
            str(tmp_path / "out.jsonl"),
            "--report",
            str(report),
            str(source),
        ]
    )

    assert code == 0
    assert "tool_cycle" in capsys.readouterr().out
    page = report.read_text(encoding="utf-8")
    tags = check_well_formed(page)
    assert "svg" in tags and "table" in tags and "script" not in tags
    for rule in ("errors", "tool-loops", "baseline"):
        assert rule in page
    assert str(config) in page and str(source) in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_cli_json_with_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(CONFIG)
    source = recording(tmp_path / "in.jsonl")
    out, report = str(tmp_path / "out.jsonl"), tmp_path / "r.html"

    argv = ["replay", "--config", str(config), "--output", out, "--json", "--report"]
    assert main([*argv, str(report), str(source)]) == 0

    assert set(json.loads(capsys.readouterr().out)) >= {"rules", "signals", "rare_shapes"}
    assert report.exists()


def test_cli_reports_an_unwritable_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(CONFIG)
    source = recording(tmp_path / "in.jsonl")
    missing = tmp_path / "no-such-dir" / "r.html"

    argv = ["replay", "--config", str(config), "--output", str(tmp_path / "o.jsonl")]
    assert main([*argv, "--report", str(missing), str(source)]) == 1
    assert "cannot write the report" in capsys.readouterr().err


# -- bounded aggregation ----------------------------------------------------------------------


def test_timeline_coarsens_to_stay_within_its_bucket_limit() -> None:
    timeline = KeptTimeline(max_buckets=8)
    for second in range(1000):
        timeline.add("keep", 5000.0 + second, 1)
        timeline.add("drop", 5000.0 + second, 0)

    assert 4 <= timeline.bucket_count <= 8
    assert timeline.width_s == 128.0
    assert sum(timeline.series("keep")) == 1000
    assert timeline.series("drop") == [0] * timeline.bucket_count


def test_timeline_of_one_instant_has_one_bucket() -> None:
    timeline = KeptTimeline()
    timeline.add("r", 42.0, 3)
    timeline.add("r", 42.0, 4)

    assert timeline.bucket_count == 1
    assert timeline.series("r") == [7]


def facts(shape: str, score: float) -> DecisionFacts:
    return DecisionFacts(
        session_key=shape,
        randomness=0,
        span_count=2,
        trace_count=1,
        error_spans=0,
        duration_s=1.0,
        matched_tests=frozenset(),
        shape=shape,
        rarity={"shape": score},
    )


def test_shape_memory_is_bounded_and_keeps_the_rarest() -> None:
    observed = ReplayObservations(max_shapes=10)
    for number in range(100):
        observed.decided(facts(f"s{number}", number / 100), Verdict(False, "r"), 1.0)

    assert len(observed.shapes) <= 10
    assert [shape for shape, _ in observed.rarest_shapes(3)] == ["s99", "s98", "s97"]


def test_a_continuation_without_scores_is_left_out_of_shapes_and_histograms() -> None:
    observed = ReplayObservations()
    observed.decided(facts("a:b", 0.0)._replace(rarity={}), Verdict(True, "r"), 1.0)

    assert observed.shapes == {} and observed.scores == {}
    assert observed.by_signal[NO_SIGNAL].sessions_kept == 1


SECOND_LOOK_CONFIG = """
sessions: {dropped_hold: 2h}
signals:
  rarity: {warmup_sessions: 20, window: 2h}
rules:
  - {name: rare, when: {rare: true}, action: keep}
  - {name: rest, action: drop}
"""


def test_kept_counts_add_up_to_the_output_file_with_a_second_look(tmp_path: Path) -> None:
    """The first session is decided before the rarity model is warm (dropped, held), and kept
    when it is looked at again at the end; the tables count it where the output has it."""
    rare = conversation(0, [(tool("refund", "{}"), False), (tool("escalate", "{}"), False)], "r")
    usual = [
        conversation(i, [(tool("lookup", f'{{"id": {i}}}'), False), (CHAT, False)], f"c{i}")
        for i in range(1, 61)
    ]
    recorded = tmp_path / "in.jsonl"
    recorded.write_text("".join(request_to_json(simple_request(*s)) + "\n" for s in [rare, *usual]))
    output = tmp_path / "out.jsonl"
    config = load_config_text(SECOND_LOOK_CONFIG, "replay.yaml")

    result = replay(config, [str(recorded)], str(output))

    assert result.stats.second_look_sessions == 1
    written = [
        (span.trace_id, span.span_id)
        for request in iter_json_lines(output)
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    rows = {row["rule"]: row for row in [*summary_rows(result.stats), total_row(result.stats)]}
    assert rows["rare"]["sessions_kept"] == 1
    assert rows["TOTAL"]["spans_kept"] + result.stats.late_spans_kept == len(written) == 3
    assert rows["TOTAL"]["sessions_kept"] == len({trace for trace, _ in written}) == 1
    assert json.loads(summary_json(result.stats, result.requests))["spans_kept"] == 3
    assert "spans written: 3" in format_summary(result.stats)
    kept_by_signal = result.observed.by_signal["rare_shape"]  # a decision, as in the rules'
    assert (kept_by_signal.sessions_seen, kept_by_signal.sessions_kept) == (1, 1)
    # shares count the second look as a decision in both tables
    assert result.observed.decisions == rows["TOTAL"]["sessions_seen"] == 62
    signals = {row["signal"]: row for row in signal_rows(result.observed)}
    assert signals["rare_shape"]["share"] == round(1 / 62, 4)


# -- the capture's own timeline ----------------------------------------------------------------


def test_a_capture_shorter_than_decision_wait_is_decided_on_its_own_timeline(
    tmp_path: Path,
) -> None:
    """Ten conversations a second apart, each decided 30 s (decision_wait) after its last
    span, as live: nine seconds of decisions, not all of them at the capture's end."""
    sessions = [
        conversation(i, [(tool("lookup", f'{{"id": {i}}}'), False), (CHAT, False)], f"c{i}")
        for i in range(10)
    ]
    for i, spans in enumerate(sessions):  # one second apart, not a minute
        for s in spans:
            s.start_time_unix_nano -= i * 59 * SECOND_NS
            s.end_time_unix_nano -= i * 59 * SECOND_NS
    recorded = tmp_path / "in.jsonl"
    recorded.write_text("".join(request_to_json(simple_request(*s)) + "\n" for s in sessions))
    config = load_config_text(CONFIG, "replay.yaml")

    result = replay(config, [str(recorded)], str(tmp_path / "out.jsonl"))

    timeline = result.observed.timeline
    assert timeline.start is not None and timeline.end is not None
    last_span_s = (T0_NS + 4 * SECOND_NS) / 1e9  # the first conversation's root ends
    assert timeline.start == pytest.approx(last_span_s + 30, abs=0.1)
    assert timeline.end - timeline.start == pytest.approx(9, abs=0.1)
    assert timeline.bucket_count == 10  # one-second buckets, not one bar
    assert sum(t.sessions_seen for t in result.stats.by_rule.values()) == 10


BUDGET_CONFIG = """
sessions: {decision_wait: 30s, tick: 100ms}
budget: {ratio: 0.1, window: 60s}
rules:
  - {name: errors, when: {error: true}, action: keep}
  - {name: baseline, action: budget}
"""


def budget_traffic(path: Path) -> Path:
    """Conversations of three agents, 20 a second for two minutes, 4% of them with a failed
    model call; then, in the last 30 seconds (decision_wait), an incident: 60% fail."""
    rng = random.Random(1)
    lines = []
    per_second, steady_s, incident_s = 20, 90, 30
    for i in range(per_second * (steady_s + incident_s)):
        start = T0_NS + i * SECOND_NS // per_second
        failing = 0.6 if i >= per_second * steady_s else 0.04
        root_attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": rng.choice(["a", "b", "c"]),
            "gen_ai.conversation.id": f"c{i}",
        }
        root = span(
            f"t{i}",
            1,
            name="invoke_agent",
            attrs=root_attrs,
            start_ns=start,
            end_ns=start + 2 * SECOND_NS,
        )
        chat = span(
            f"t{i}",
            2,
            parent=1,
            name="chat",
            attrs=CHAT,
            error=rng.random() < failing,
            start_ns=start + SECOND_NS // 10,
            end_ns=start + SECOND_NS,
        )
        lines.append(request_to_json(simple_request(chat, root)) + "\n")
    path.write_text("".join(lines))
    return path


def run_as_live(config: SamplerConfig, recorded: Path) -> dict[str, tuple[int, float]]:
    """The live server's schedule on the same traffic: each request taken when it arrives
    (its last span's end), never decided on intake; a ticker deciding what is due every
    `sessions.tick`, from a phase of its own, until nothing is buffered or held. Returns the
    kept sessions: conversation -> (rule, adjusted count)."""
    clock, sink = ManualClock(0.0), RecordingSink()
    pipeline = Pipeline(config, sink, clock, decide_on_intake=False)
    tick, next_tick = config.sessions.tick, None
    for request in read_requests(recorded, config.receivers):
        arrival = request.max_end_ns / 1e9
        next_tick = arrival + 0.037 if next_tick is None else next_tick
        while next_tick <= arrival:
            clock.advance_to(next_tick)
            pipeline.decide_due()
            next_tick += tick
        clock.advance_to(arrival)
        pipeline.consume(request)
    while pipeline.core.span_count or pipeline.core.held_spans:
        clock.advance_to(next_tick)  # type: ignore[arg-type]
        pipeline.decide_due()
        next_tick += tick  # type: ignore[operator]
    return kept_sessions(sink.spans())


def kept_sessions(spans: Iterable[Span]) -> dict[str, tuple[str, float]]:
    out = {}
    for s in spans:
        attrs = {kv.key: kv.value for kv in s.attributes}
        if "gen_ai.conversation.id" in attrs:
            out[attrs["gen_ai.conversation.id"].string_value] = (
                attrs["agent_sampler.rule"].string_value,
                attrs["agent_sampler.adjusted_count"].double_value,
            )
    return out


def test_the_budget_decides_in_replay_as_it_does_live(tmp_path: Path) -> None:
    """The budget's rates, and the keep probabilities it recomputes once a second, are in
    clock time. Replay decides each session when live would (within a tick), so the budget
    keeps the same sessions with about the same adjusted counts. Here the capture ends with
    an incident: live, its errors take the budget from the ordinary sessions within seconds.
    (Deciding the last decision_wait of the capture at its last timestamp, replay kept that
    bunch at the probability from before the incident: 138 baseline sessions where live kept
    113.)"""
    config = load_config_text(BUDGET_CONFIG, "budget.yaml")
    recorded = budget_traffic(tmp_path / "in.jsonl")
    live = run_as_live(config, recorded)

    output = tmp_path / "out.jsonl"
    replay(config, [str(recorded)], str(output))
    replayed = kept_sessions(
        s
        for request in iter_json_lines(output)
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for s in scope.spans
    )

    def baseline(kept: dict[str, tuple[str, float]]) -> dict[str, float]:
        return {key: count for key, (rule, count) in kept.items() if rule == "baseline"}

    assert {k for k, (rule, _) in replayed.items() if rule == "errors"} == {
        k for k, (rule, _) in live.items() if rule == "errors"
    }
    live_baseline, replay_baseline = baseline(live), baseline(replayed)
    assert len(live_baseline) >= 50
    assert abs(len(replay_baseline) - len(live_baseline)) <= 3
    assert len(replay_baseline.keys() & live_baseline.keys()) >= 0.9 * len(live_baseline)
    # Horvitz-Thompson estimates of the baseline population agree within a few percent
    live_estimate, replay_estimate = sum(live_baseline.values()), sum(replay_baseline.values())
    assert replay_estimate == pytest.approx(live_estimate, rel=0.05)


# -- inputs, output and progress ---------------------------------------------------------------


def cli_replay(tmp_path: Path, *args: str) -> int:
    config = tmp_path / "rules.yaml"
    config.write_text(CONFIG)
    return main(["replay", "--config", str(config), *args])


def test_report_without_output_writes_no_spans_anywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = recording(tmp_path / "in.jsonl")
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())

    assert cli_replay(tmp_path, "--report", "r.html", str(source)) == 0

    assert set(tmp_path.iterdir()) - before == {tmp_path / "r.html", tmp_path / "rules.yaml"}
    out = capsys.readouterr().out
    assert "spans kept (no --output: not written): 6" in out
    assert "tool-loops" in (tmp_path / "r.html").read_text()


def summary_of(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    summary = json.loads(capsys.readouterr().out)
    return {key: summary[key] for key in ("requests", "spans_kept", "rules")}


def test_gzip_inputs_and_standard_input_replay_as_the_plain_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = recording(tmp_path / "in.jsonl")
    compressed = tmp_path / "capture.data"  # told by its first bytes, not by its name
    compressed.write_bytes(gzip.compress(plain.read_bytes()))
    assert cli_replay(tmp_path, "--json", str(plain)) == 0
    expected = summary_of(capsys)

    assert cli_replay(tmp_path, "--json", str(compressed)) == 0
    assert summary_of(capsys) == expected
    for stdin in (plain.read_bytes(), compressed.read_bytes()):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        assert cli_replay(tmp_path, "--json", "-") == 0
        assert summary_of(capsys) == expected


def test_standard_input_is_read_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_replay(tmp_path, "-", "-") == 2
    assert "standard input" in capsys.readouterr().err


def test_a_damaged_gzip_input_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tmp_path / "in.jsonl.gz"
    damaged.write_bytes(gzip.compress(recording(tmp_path / "in.jsonl").read_bytes())[:-40])

    assert cli_replay(tmp_path, str(damaged)) == 1
    err = capsys.readouterr().err
    assert f"{damaged}:" in err and "gunzip" in err


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_on_a_terminal_is_one_line_redrawn_with_rates_and_an_eta() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = Progress(stream, 100 << 20, tty=True, clock=clock)

    progress.update(1 << 20, 1_000)  # before the first interval: nothing
    assert stream.getvalue() == ""
    clock.now += 10
    progress.update(25 << 20, 50_000)
    progress.finish()

    line = stream.getvalue()
    assert line.startswith("\r") and "\n" not in line
    assert "25.0 MiB of 100.0 MiB (25%), 2.5 MiB/s, 5.0k spans/s (50.0k spans), ETA 0:30" in line
    assert line.endswith("\r\x1b[K")  # cleared: the summary prints on a clean line


def test_progress_without_a_terminal_only_for_large_inputs() -> None:
    small, large, unknown = io.StringIO(), io.StringIO(), io.StringIO()
    clock = FakeClock()
    reporters = [
        Progress(small, 10 << 20, tty=False, clock=clock),
        Progress(large, LARGE_INPUT_BYTES * 2, tty=False, clock=clock),
        Progress(unknown, None, tty=False, clock=clock),  # standard input
    ]
    for step in range(1, 4):
        clock.now += PROGRESS_LOG_EVERY_S
        reporters[0].update(step * (3 << 20), step * 1000)
        for progress in reporters[1:]:
            progress.update(step * LARGE_INPUT_BYTES // 2, step * 1000)

    assert small.getvalue() == ""
    assert len(large.getvalue().splitlines()) == 3 and "ETA" in large.getvalue()
    lines = unknown.getvalue().splitlines()  # from the point it is known to be large
    assert len(lines) == 2 and "ETA" not in lines[0] and "\r" not in unknown.getvalue()


def test_progress_never_reaches_the_json_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sampler.replay.LARGE_INPUT_BYTES", 0)
    monkeypatch.setattr("sampler.replay.PROGRESS_LOG_EVERY_S", 0.0)
    source = recording(tmp_path / "in.jsonl")

    assert cli_replay(tmp_path, "--json", str(source)) == 0

    captured = capsys.readouterr()
    assert json.loads(captured.out)["requests"] == 5
    assert captured.err.count("replay: ") == 5 and "spans/s" in captured.err
