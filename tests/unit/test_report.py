"""The HTML report: well-formed, self-contained and escaped, whatever the replay saw.

Results are built by hand here (the replay itself is tested in test_replay.py): an empty
replay, a replay whose every decision fell in one time bucket, and names that carry markup.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

from sampler.config.load import load_config_text
from sampler.pipeline import PipelineStats, RuleTally
from sampler.replay import ReplayObservations, ReplayResult
from sampler.report import PALETTE, Thresholds, render_report, rule_thresholds, write_report
from sampler.rules.facts import DecisionFacts
from sampler.rules.verdict import Verdict

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert('x')</script>&"


class TagBalance(HTMLParser):
    """Records every element and checks that each one opened is closed in order (void
    elements excepted)."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def check_well_formed(page: str) -> set[str]:
    """The tags of a page whose elements balance and whose every <svg> is well-formed XML."""
    parser = TagBalance()
    parser.feed(page)
    parser.close()
    assert parser.problems == []
    assert parser.stack == []
    for svg in svgs(page):
        assert svg.tag == f"{SVG}svg"
    return parser.tags


def svgs(page: str) -> list[ET.Element]:
    found, rest = [], page
    while "<svg" in rest:
        start = rest.index("<svg")
        end = rest.index("</svg>", start) + len("</svg>")
        found.append(ET.fromstring(rest[start:end]))
        rest = rest[end:]
    return found


def facts(
    shape: str = "agent:search", score: float = 0.0, signals: tuple[str, ...] = ()
) -> DecisionFacts:
    return DecisionFacts(
        session_key="k",
        randomness=0,
        span_count=3,
        trace_count=1,
        error_spans=0,
        duration_s=1.0,
        matched_tests=frozenset(),
        shape=shape,
        signals=signals,
        rarity={"shape": score, "duration": score / 2},
    )


def result_of(decisions: list[tuple[DecisionFacts, Verdict, float]]) -> ReplayResult:
    """A result as the replay would build it from these decisions (facts, verdict, time)."""
    stats, observed = PipelineStats(), ReplayObservations()
    for decision_facts, verdict, now in decisions:
        tally = stats.by_rule.setdefault(verdict.rule, RuleTally())
        tally.sessions_seen += 1
        tally.spans_seen += decision_facts.span_count
        if verdict.keep:
            tally.sessions_kept += 1
            tally.spans_kept += decision_facts.span_count
        observed.decided(decision_facts, verdict, now)
    return ReplayResult(stats, len(decisions), observed)


def render(
    result: ReplayResult,
    thresholds: Thresholds | None = None,
    signal_threshold: float | None = None,
) -> str:
    page = render_report(
        result,
        config_path="rules.yaml",
        inputs=["in.jsonl"],
        thresholds=thresholds,
        signal_threshold=signal_threshold,
    )
    check_well_formed(page)
    return page


def test_a_replay_without_sessions_renders_notes_instead_of_plots() -> None:
    page = render(ReplayResult(PipelineStats(), 0))

    assert "No sessions were decided." in page
    assert "Nothing was decided: no timeline." in page
    assert "No rarity scores" in page
    assert svgs(page) == []


def test_decisions_at_one_instant_make_one_bar_per_kept_rule() -> None:
    result = result_of(
        [
            (facts(), Verdict(True, "errors"), 100.0),
            (facts(), Verdict(True, "baseline"), 100.0),
            (facts(), Verdict(False, "baseline"), 100.0),
        ]
    )

    page = render(result)

    timeline = svgs(page)[0]
    bars = [rect for rect in timeline.iter(f"{SVG}rect") if rect.find(f"{SVG}title") is not None]
    assert sorted(rect.findtext(f"{SVG}title", "").split(":")[0] for rect in bars) == [
        "baseline",
        "errors",
    ]
    assert "Kept spans per 1s bucket" in page


def test_nothing_kept_still_draws_axes_and_a_legend() -> None:
    page = render(result_of([(facts(), Verdict(False, "drop-all"), 5.0)]))

    assert "drop-all (none kept)" in page
    assert len(svgs(page)) == 3  # the timeline, then the shape and duration histograms


def test_every_rule_is_in_the_legend_even_beyond_the_palette() -> None:
    rules = [f"rule-{n:02d}" for n in range(len(PALETTE) + 3)]
    result = result_of([(facts(), Verdict(True, rule), float(n)) for n, rule in enumerate(rules)])

    page = render(result)

    legend = [text.text for text in svgs(page)[0].iter(f"{SVG}text")]
    assert all(rule in legend for rule in rules)


def threshold_lines(svg: ET.Element) -> list[tuple[str, str]]:
    """(class, x) of the vertical threshold lines of a histogram."""
    return [
        (line.get("class", ""), line.get("x1", ""))
        for line in svg.iter(f"{SVG}line")
        if line.get("class") in ("threshold", "signal")
    ]


def test_histograms_show_kept_and_dropped_and_each_rules_threshold() -> None:
    result = result_of(
        [
            (facts(score=0.9), Verdict(True, "rare"), 1.0),
            (facts(score=0.0), Verdict(False, "baseline"), 2.0),
        ]
    )
    thresholds = {"shape": [(0.5, "rare"), (0.8, "odd-paths"), (0.8, "audit")]}

    page = render(result, thresholds, signal_threshold=0.5)

    shape, duration = svgs(page)[1:]
    titles = [t.text or "" for t in shape.iter(f"{SVG}title")]
    assert "1 kept, score 0.90 to 0.95" in titles
    assert "1 dropped, score 0.00 to 0.05" in titles
    assert "rare: score at least 0.5" in titles
    assert "odd-paths, audit: score at least 0.8" in titles  # one line, both rules
    assert [kind for kind, _ in threshold_lines(shape)] == ["threshold", "threshold"]
    # no rule reads the duration score: where its signal fires, drawn apart
    assert [kind for kind, _ in threshold_lines(duration)] == ["signal"]
    assert any("no rule reads" in (t.text or "") for t in duration.iter(f"{SVG}title"))


def test_a_rules_min_score_is_drawn_where_it_is_not_at_the_signal_threshold() -> None:
    """The threshold line used to sit at 0.5 whatever the rules' min_score."""
    config = load_config_text(
        "rules:\n  - name: outliers\n    when: {rare: {dimensions: [duration], min_score: 0.9}}"
        "\n    action: keep\n",
        "rules.yaml",
    )
    result = result_of([(facts(score=0.95), Verdict(True, "outliers"), 1.0)])

    page = render(result, rule_thresholds(config.rules, 0.5), signal_threshold=0.5)

    duration = svgs(page)[2]
    plot_w = 340 - 52 - 12  # the histogram's width between its margins
    assert threshold_lines(duration) == [("threshold", f"{52 + 0.9 * plot_w:.1f}")]
    assert "outliers 0.9" in [t.text for t in duration.iter(f"{SVG}text")]


DEFAULT_RULES = """\
rules:
  - {name: rare, when: {rare: {dimensions: [shape, latency]}}, action: keep}
  - name: slow-calls
    when: {rare: {dimensions: [model_latency, tool_latency], min_score: 0.75}}
    action: keep
  - name: outliers
    when: {rare: {dimensions: [duration, tokens, span_count, tool_calls], min_score: 0.9}}
    action: keep
  - name: nested
    when:
      any:
        - error: true
        - all: [{not: {rare: {dimensions: [tokens], min_score: 0.6}}}, {span_count: {min: 5}}]
    action: keep
  - {name: anything-rare, when: {rare: true}, action: keep}
  - {name: baseline, action: budget}
"""


def test_rule_thresholds_are_read_from_every_rare_condition() -> None:
    config = load_config_text(DEFAULT_RULES, "rules.yaml")

    thresholds = rule_thresholds(config.rules, 0.4)

    assert thresholds == {
        "shape": [(0.4, "anything-rare"), (0.4, "rare")],
        "latency": [(0.4, "anything-rare"), (0.4, "rare")],
        "model_latency": [(0.4, "anything-rare"), (0.75, "slow-calls")],
        "tool_latency": [(0.4, "anything-rare"), (0.75, "slow-calls")],
        "duration": [(0.4, "anything-rare"), (0.9, "outliers")],
        "tokens": [(0.4, "anything-rare"), (0.6, "nested"), (0.9, "outliers")],
        "span_count": [(0.4, "anything-rare"), (0.9, "outliers")],
        "tool_calls": [(0.4, "anything-rare"), (0.9, "outliers")],
    }


def test_names_from_traffic_config_and_command_line_are_escaped(tmp_path: Path) -> None:
    result = result_of([(facts(shape=HOSTILE, signals=(HOSTILE,)), Verdict(True, HOSTILE), 1.0)])
    path = tmp_path / "report.html"

    write_report(path, result, config_path=HOSTILE, inputs=[HOSTILE, "b.jsonl"])

    page = path.read_text(encoding="utf-8")
    tags = check_well_formed(page)
    assert "script" not in tags
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in page
