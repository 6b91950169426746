"""Tool-cycle detectors, row by row.

A tool sequence is written as a string of calls, one per word: ``search:q1`` is the tool
``search`` called with arguments whose digest is ``q1``; a bare ``search`` recorded no
arguments. Calls start 1 µs apart in the order written. A finding is compared as
``(kind, "tool,tool", period, repeats)``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sampler.signals.tool_cycles import (
    AgentSpan,
    CycleFinding,
    CycleThresholds,
    ToolCall,
    agent_depth,
    detect_cycles,
    find_agent_recursion,
    find_link_cycle,
    find_tool_cycles,
)

DEFAULT = CycleThresholds()

Summary = tuple[str, str, int, int]


def calls(text: str) -> list[ToolCall]:
    out = []
    for i, word in enumerate(text.split()):
        name, _, digest = word.partition(":")
        out.append(ToolCall(start_ns=i * 1_000, name=name, args_digest=digest))
    return out


def summary(findings: Sequence[CycleFinding]) -> list[Summary]:
    return [(f.kind, ",".join(f.tools), f.period, f.repeats) for f in findings]


# --- tool calls: positives ----------------------------------------------------------------------

POSITIVES: list[tuple[str, str, list[Summary]]] = [
    # with arguments
    (
        "args/same-call-scattered",
        "search:q1 fetch:u1 search:q1 read:r1 search:q1",
        [("repeated_call", "search", 1, 3)],
    ),
    (
        "args/ping-pong-same-args",
        "search:q fetch:u search:q fetch:u search:q fetch:u",
        [
            ("repeated_call", "search", 1, 3),
            ("repeated_call", "fetch", 1, 3),
            ("tool_pattern", "search,fetch", 2, 3),
        ],
    ),
    (
        "args/same-tool-alternating-args",
        "read:a read:b read:a read:b read:a read:b",
        [
            ("repeated_call", "read", 1, 3),
            ("repeated_call", "read", 1, 3),
            ("tool_pattern", "read,read", 2, 3),
        ],
    ),
    (
        "args/period-3",
        "plan:p act:a check:c plan:p act:a check:c plan:p act:a check:c",
        [
            ("repeated_call", "plan", 1, 3),
            ("repeated_call", "act", 1, 3),
            ("repeated_call", "check", 1, 3),
            ("tool_pattern", "plan,act,check", 3, 3),
        ],
    ),
    (
        "args/recorded-for-one-tool-only",
        "search:q fetch search:q fetch search:q fetch",
        [("repeated_call", "search", 1, 3), ("tool_pattern", "search,fetch", 2, 3)],
    ),
    (
        "args/recorded-on-some-calls-only",
        "search:1 search search search:1 search search",
        [("repeated_tool", "search", 1, 6)],
    ),
    # names only
    ("names/same-tool-six-in-a-row", "search " * 6, [("repeated_tool", "search", 1, 6)]),
    (
        "names/longest-run-reported-once",
        "search " * 6 + "fetch " + "search " * 8,
        [("repeated_tool", "search", 1, 8)],
    ),
    ("names/ping-pong", "search fetch " * 3, [("tool_pattern", "search,fetch", 2, 3)]),
    (
        "names/ping-pong-maximal-repeats",
        "search fetch " * 5 + "search",
        [("tool_pattern", "search,fetch", 2, 5)],
    ),
    ("names/period-3", "a b c " * 3, [("tool_pattern", "a,b,c", 3, 3)]),
    ("names/period-4", "a b c d " * 3, [("tool_pattern", "a,b,c,d", 4, 3)]),
    ("names/period-4-with-inner-repeat", "a a b c " * 3, [("tool_pattern", "a,a,b,c", 4, 3)]),
    ("names/smallest-period-wins", "a b " * 6, [("tool_pattern", "a,b", 2, 6)]),
    (
        "names/same-pattern-entered-elsewhere-once",
        "a b a b a b x b a b a b a b a",
        [("tool_pattern", "a,b", 2, 4)],
    ),
    (
        "names/two-patterns",
        "a b a b a b c d c d c d",
        [("tool_pattern", "a,b", 2, 3), ("tool_pattern", "c,d", 2, 3)],
    ),
    (
        "names/pattern-after-a-run",
        "a a a a a a b a b a b",
        [("repeated_tool", "a", 1, 6), ("tool_pattern", "a,b", 2, 3)],
    ),
]


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [(seq, exp) for _, seq, exp in POSITIVES],
    ids=[row[0] for row in POSITIVES],
)
def test_tool_cycles_found(sequence: str, expected: list[Summary]) -> None:
    assert summary(find_tool_cycles(calls(sequence), DEFAULT)) == expected


# --- tool calls: negatives (legitimate traffic) --------------------------------------------------

NEGATIVES: list[tuple[str, str]] = [
    ("empty", ""),
    ("args/same-tool-different-args", "search:q1 search:q2 search:q3"),
    ("args/same-call-twice", "search:q1 fetch:u search:q1"),
    (
        "args/ping-pong-different-args",
        "search:q1 fetch:u1 search:q2 fetch:u2 search:q3 fetch:u3",
    ),
    ("args/ping-pong-args-only-on-search", "search:q1 fetch search:q2 fetch search:q3 fetch"),
    (
        "args/same-tool-six-in-a-row-different-args",
        "search:1 search:2 search:3 search:4 search:5 search:6",
    ),
    ("names/five-in-a-row", "search " * 5),
    ("names/scattered-same-tool", "search x search y search z search"),
    ("names/abc-abd", "a b c a b d"),
    ("names/pattern-twice-only", "a b a b a"),
    ("names/pattern-not-consecutive", "a b x a b y a b"),
    ("names/period-above-max", "a b c d e " * 3),
    ("names/all-distinct", "a b c d e f g h"),
]


@pytest.mark.parametrize(
    "sequence", [seq for _, seq in NEGATIVES], ids=[row[0] for row in NEGATIVES]
)
def test_legitimate_traffic_is_not_a_cycle(sequence: str) -> None:
    assert find_tool_cycles(calls(sequence), DEFAULT) == []


# --- a conversation: turns, model decisions, failures --------------------------------------------


def conversation(text: str) -> tuple[list[ToolCall], list[int]]:
    """A session written step by step, as an agent makes calls: every word is one model
    decision (a model call starts, then its tool calls), ``|`` ends a turn (the next word is
    in the session's next trace). A decision making several calls joins them with ``+``
    (``fetch:a+fetch:b``: a fan-out, or a poll or retry run by code); a call ending with ``!``
    failed. Returns the calls and the model calls' start times."""
    found: list[ToolCall] = []
    model_starts: list[int] = []
    turn, clock = 0, 0
    for word in text.split():
        if word == "|":
            turn += 1
            continue
        clock += 1_000
        model_starts.append(clock)
        for call in word.split("+"):
            clock += 10
            name, _, digest = call.removesuffix("!").partition(":")
            found.append(ToolCall(clock, name, digest, turn, call.endswith("!")))
    return found, model_starts


def find(text: str, t: CycleThresholds = DEFAULT) -> list[Summary]:
    found, model_starts = conversation(text)
    return summary(find_tool_cycles(found, t, model_starts))


REVIEW_TURN = "diff:pr7 run_tests:pr7 lint:pr7 write:{} "

# Legitimate iteration and ordinary conversations: no loop, whatever the thresholds see in the
# raw sequence of calls.
LEGITIMATE: list[tuple[str, str]] = [
    (
        "turns/the-same-workflow-for-every-message",
        " | ".join(REVIEW_TURN.format(f"c{n}") for n in range(4)),
    ),
    ("turns/the-same-workflow-without-arguments", " | ".join(["diff tests lint write"] * 4)),
    ("turns/one-search-per-message-without-arguments", " | ".join(["search"] * 8)),
    (
        "turns/same-arguments-but-a-new-query-each-turn",
        "lookup:cust9 search:refund | lookup:cust9 search:delivery | lookup:cust9 search:invoice",
    ),
    ("turns/identical-twice-only", "lookup:c search:q | lookup:c search:q"),
    ("turns/the-same-question-asked-three-times", " | ".join(["lookup:c search:q"] * 3)),
    (
        "turns/identical-but-not-every-argument-recorded",
        " | ".join(["lookup:c search"] * 4),
    ),
    (
        "turns/identical-turns-not-in-a-row",
        "lookup:c search:q | lookup:c search:q | refund:r | lookup:c search:q",
    ),
    ("pagination/arguments-advance", " ".join(f"list_items:page{n}" for n in range(1, 9))),
    ("pagination/in-the-tools-code", "search " + "+".join(["list_items"] * 8) + " answer"),
    (
        "polling/by-the-tools-code-until-done",
        "submit:job1 " + "+".join(["job_status:job1"] * 6) + " fetch_result:job1",
    ),
    ("polling/twice-by-the-model", "submit:job1 job_status:job1 job_status:job1 fetch:job1"),
    ("retry/after-a-transient-error", "search:q! search:q! search:q fetch:u"),
    ("retry/by-the-framework", "search:q!+search:q!+search:q fetch:u"),
    ("retry/succeeds-then-used-twice", "search:q! search:q search:q fetch:u"),
    ("fan-out/distinct-arguments-one-decision-each", " ".join(f"fetch:u{n}" for n in range(8))),
    ("fan-out/parallel-without-arguments", "plan " + "+".join(["fetch"] * 8) + " summarize"),
    (
        "fan-out/a-list-per-turn",
        " | ".join("+".join(f"fetch:t{turn}u{n}" for n in range(5)) for turn in range(4)),
    ),
]


@pytest.mark.parametrize(
    "text", [text for _, text in LEGITIMATE], ids=[name for name, _ in LEGITIMATE]
)
def test_legitimate_iteration_is_not_a_loop(text: str) -> None:
    assert find(text) == []


# The loops that must still be found, written the same way.
LOOPS: list[tuple[str, str, list[Summary]]] = [
    ("same-call", "search:q fetch:u search:q search:q", [("repeated_call", "search", 1, 3)]),
    ("same-tool-without-arguments", "search " * 6, [("repeated_tool", "search", 1, 6)]),
    (
        "ping-pong",
        "search:q fetch:u " * 3,
        [
            ("repeated_call", "search", 1, 3),
            ("repeated_call", "fetch", 1, 3),
            ("tool_pattern", "search,fetch", 2, 3),
        ],
    ),
    ("ping-pong-without-arguments", "search fetch " * 3, [("tool_pattern", "search,fetch", 2, 3)]),
    (
        "in-a-later-turn",
        "lookup:c search:q | lookup:c fetch:u fetch:u fetch:u",
        [("repeated_call", "fetch", 1, 3)],
    ),
    (
        "the-same-loop-in-two-turns-reported-once",
        "search:q search:q search:q | search:q search:q search:q search:q",
        [("repeated_call", "search", 1, 4)],
    ),
    (
        "a-failed-call-inside-a-loop",
        "search:q search:q! search:q search:q",
        [("repeated_call", "search", 1, 3)],
    ),
    ("retried-until-it-fails-for-good", "search:q! " * 3, [("repeated_call", "search", 1, 3)]),
    (
        "the-same-fan-out-decided-again-and-again",
        "fetch:a+fetch:b " * 3,
        [("repeated_call", "fetch", 1, 3), ("repeated_call", "fetch", 1, 3)],
    ),
    (
        "turns/retried-three-times",
        " | ".join(["lookup:c search:q"] * 4),
        [("repeated_turn", "lookup,search", 2, 4)],
    ),
    (
        "turns/retried-with-a-fan-out-started-in-another-order",
        " | ".join(["diff:p read:a+read:b lint:p", "diff:p read:b+read:a lint:p"] * 2),
        [("repeated_turn", "diff,read,read,lint", 4, 4)],
    ),
    (
        "turns/a-trace-per-step-of-a-looping-agent",
        "search:q | search:q | search:q | search:q",
        [("repeated_turn", "search", 1, 4)],
    ),
    (
        "turns/retries-after-an-ordinary-turn",
        "a:1 | b:2 c:3 | b:2 c:3 | b:2 c:3 | b:2 c:3",
        [("repeated_turn", "b,c", 2, 4)],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [row[1:] for row in LOOPS],
    ids=[row[0] for row in LOOPS],
)
def test_loops_are_still_found(text: str, expected: list[Summary]) -> None:
    assert find(text) == expected


# What the detectors cannot tell apart, stated so that a change to it is a decision.
KNOWN_LIMITS: list[tuple[str, str, list[Summary]]] = [
    (
        "polling-by-the-model-with-the-same-arguments",
        "submit:job1 job_status:job1 job_status:job1 job_status:job1 fetch:job1",
        [("repeated_call", "job_status", 1, 3)],
    ),
    (
        "paging-by-the-model-without-arguments",
        "list_items " * 6,
        [("repeated_tool", "list_items", 1, 6)],
    ),
    (
        "a-user-asking-the-same-thing-four-times",
        " | ".join(["order_status:o1"] * 4),
        [("repeated_turn", "order_status", 1, 4)],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [row[1:] for row in KNOWN_LIMITS],
    ids=[row[0] for row in KNOWN_LIMITS],
)
def test_known_limits(text: str, expected: list[Summary]) -> None:
    assert find(text) == expected


def test_without_model_calls_every_call_is_a_decision() -> None:
    """Instrumentation without model spans: a run of calls cannot be told from a loop."""
    found, _ = conversation("fetch+fetch+fetch+fetch+fetch+fetch")
    assert summary(find_tool_cycles(found, DEFAULT)) == [("repeated_tool", "fetch", 1, 6)]
    assert summary(find_tool_cycles(found, DEFAULT, [0])) == []


def test_a_model_call_streaming_while_its_tool_starts_still_divides_decisions() -> None:
    """Decisions are divided by model calls' *starts*: a tool started before the model call
    that chose it has ended (streamed tool calls) is still that call's decision."""
    found = [ToolCall(100 * n + 50, "search", "q") for n in range(3)]
    assert summary(find_tool_cycles(found, DEFAULT, [100 * n for n in range(3)])) == [
        ("repeated_call", "search", 1, 3)
    ]


@pytest.mark.parametrize(
    ("threshold", "turns", "expected"),
    [
        (4, 3, []),
        (4, 4, [("repeated_turn", "search", 1, 4)]),
        (2, 2, [("repeated_turn", "search", 1, 2)]),
    ],
    ids=["default-below", "default-at", "two"],
)
def test_same_turn_repeats(threshold: int, turns: int, expected: list[Summary]) -> None:
    text = " | ".join(["search:q"] * turns)
    assert find(text, CycleThresholds(same_turn_repeats=threshold)) == expected


THRESHOLDS: list[tuple[str, CycleThresholds, str, list[Summary]]] = [
    (
        "same-call-twice",
        CycleThresholds(same_call_repeats=2),
        "search:q x search:q",
        [("repeated_call", "search", 1, 2)],
    ),
    (
        "three-in-a-row",
        CycleThresholds(same_tool_repeats=3),
        "a a a",
        [("repeated_tool", "a", 1, 3)],
    ),
    (
        "pattern-twice",
        CycleThresholds(pattern_min_repeats=2),
        "a b a b",
        [("tool_pattern", "a,b", 2, 2)],
    ),
    ("period-capped", CycleThresholds(pattern_max_period=2), "a b c " * 3, []),
    ("patterns-disabled", CycleThresholds(pattern_max_period=1), "a b " * 3, []),
    ("calls-capped", CycleThresholds(max_calls_examined=5), "a " * 6, []),
]


@pytest.mark.parametrize(
    ("t", "sequence", "expected"),
    [row[1:] for row in THRESHOLDS],
    ids=[row[0] for row in THRESHOLDS],
)
def test_thresholds(t: CycleThresholds, sequence: str, expected: list[Summary]) -> None:
    assert summary(find_tool_cycles(calls(sequence), t)) == expected


def test_calls_are_taken_in_start_order() -> None:
    reversed_calls = list(reversed(calls("search fetch " * 3)))
    assert summary(find_tool_cycles(reversed_calls, DEFAULT)) == [
        ("tool_pattern", "search,fetch", 2, 3)
    ]


def test_equal_start_times_keep_input_order() -> None:
    same_time = [ToolCall(0, c.name, c.args_digest) for c in calls("a b " * 3)]
    assert summary(find_tool_cycles(same_time, DEFAULT)) == [("tool_pattern", "a,b", 2, 3)]


def test_only_the_first_calls_by_start_time_are_examined() -> None:
    late_loop = [ToolCall(10**12 + i, "search", "q") for i in range(6)]
    early = [ToolCall(i, f"tool{i}", "") for i in range(DEFAULT.max_calls_examined)]
    assert find_tool_cycles(late_loop + early, DEFAULT) == []


@pytest.mark.parametrize(
    "field",
    [
        "same_call_repeats",
        "same_tool_repeats",
        "pattern_min_repeats",
        "same_turn_repeats",
        "max_agent_depth",
    ],
)
def test_nonsense_thresholds_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CycleThresholds(**{field: 0})


DESCRIPTIONS: list[tuple[str, CycleFinding, str]] = [
    (
        "repeated_call",
        CycleFinding("repeated_call", ("search",), 1, 4),
        "search x4 (same arguments)",
    ),
    ("repeated_tool", CycleFinding("repeated_tool", ("search",), 1, 7), "search x7 in a row"),
    (
        "repeated_turn",
        CycleFinding("repeated_turn", ("lookup", "search"), 2, 3),
        "lookup,search: the same calls in 3 turns in a row",
    ),
    (
        "tool_pattern",
        CycleFinding("tool_pattern", ("search", "fetch"), 2, 4),
        "search,fetch x4 (period 2)",
    ),
    (
        "agent_recursion",
        CycleFinding("agent_recursion", ("planner", "", "planner"), 1, 3),
        "agent depth 3: planner>?>planner",
    ),
    (
        "agent_recursion_long",
        CycleFinding("agent_recursion", tuple("abcdefghij"), 1, 10),
        "agent depth 10: a>b>c>d>e>f>g>h>...",
    ),
    ("link_cycle", CycleFinding("link_cycle", ("0a", "0b"), 2, 1), "span link cycle: 0a->0b->0a"),
]


@pytest.mark.parametrize(
    ("finding", "text"),
    [row[1:] for row in DESCRIPTIONS],
    ids=[row[0] for row in DESCRIPTIONS],
)
def test_describe(finding: CycleFinding, text: str) -> None:
    assert finding.describe() == text


# --- properties ---------------------------------------------------------------------------------

_call = st.tuples(st.sampled_from("abc"), st.sampled_from(["", "x", "y"]))


@settings(max_examples=60)
@given(st.lists(_call, max_size=40), st.randoms(use_true_random=False))
def test_input_order_does_not_matter_when_start_times_are_distinct(
    raw: list[tuple[str, str]], rnd: random.Random
) -> None:
    ordered = [ToolCall(i * 10, name, digest) for i, (name, digest) in enumerate(raw)]
    shuffled = ordered[:]
    rnd.shuffle(shuffled)
    assert find_tool_cycles(shuffled, DEFAULT) == find_tool_cycles(ordered, DEFAULT)


@settings(max_examples=60)
@given(
    st.lists(st.text(min_size=1, max_size=6), unique=True, max_size=60),
    st.lists(st.sampled_from(["", "x"]), min_size=60, max_size=60),
)
def test_all_distinct_tool_names_yield_no_findings(names: list[str], digests: list[str]) -> None:
    seq = [
        ToolCall(i, name, digest)
        for i, (name, digest) in enumerate(zip(names, digests, strict=False))
    ]
    assert detect_cycles(seq, [], {}, {}, DEFAULT) == []


def test_512_calls_are_processed_quickly() -> None:
    # Best of a few runs, so a busy machine does not fail it; typical is well under 1 ms.
    rnd = random.Random(7)
    seq = [ToolCall(i, rnd.choice("ab"), rnd.choice(["", "x"])) for i in range(512)]
    assert min(_elapsed(seq) for _ in range(5)) < 0.010
    beyond_cap = seq + [ToolCall(10_000 + i, "late", "") for i in range(50_000)]
    assert min(_elapsed(beyond_cap) for _ in range(3)) < 0.050


def _elapsed(seq: Sequence[ToolCall]) -> float:
    began = time.perf_counter()
    find_tool_cycles(seq, DEFAULT)
    return time.perf_counter() - began


# --- agent nesting ------------------------------------------------------------------------------


def spans(tree: Mapping[str, str], agent_names: str) -> tuple[list[AgentSpan], dict[bytes, bytes]]:
    """``tree`` maps span -> parent ("" for a root); the named spans are agents, named as such."""
    parents = {child.encode(): parent.encode() for child, parent in tree.items()}
    agents = [AgentSpan(a.encode(), parents[a.encode()], a) for a in agent_names.split()]
    return agents, parents


DEPTHS: list[tuple[str, dict[str, str], str, tuple[int, tuple[str, ...]]]] = [
    ("no-agents", {"x": ""}, "", (0, ())),
    ("single-root-agent", {"a": ""}, "a", (1, ("a",))),
    (
        "through-llm-and-tool-spans",
        {"a": "", "tool": "a", "b": "tool", "llm": "b", "llm2": "llm", "c": "llm2"},
        "a b c",
        (3, ("a", "b", "c")),
    ),
    (
        "siblings-do-not-nest",
        {"a": "", "t": "a", "b": "t", "c": "t", "d": "t"},
        "a b c d",
        (2, ("a", "b")),
    ),
    (
        "deepest-branch-wins",
        {"a": "", "t1": "a", "b": "t1", "c": "t1", "t2": "c", "d": "t2", "t3": "d", "e": "t3"},
        "a b c d e",
        (4, ("a", "c", "d", "e")),
    ),
    ("under-non-agent-root", {"http": "", "a": "http", "t": "a", "b": "t"}, "a b", (2, ("a", "b"))),
    ("parent-outside-session", {"a": "gone", "t": "a", "b": "t"}, "a b", (2, ("a", "b"))),
    # An agent span directly inside an agent span is the same agent level: LangGraph's node
    # span inside its graph span (both OpenInference AGENT), or a framework's wrapper span.
    ("graph-and-node-are-one-level", {"graph": "", "node": "graph"}, "graph node", (1, ("graph",))),
    (
        "nested-graphs-through-a-tool",
        {"g1": "", "n1": "g1", "t": "n1", "g2": "t", "n2": "g2"},
        "g1 n1 g2 n2",
        (2, ("g1", "g2")),
    ),
    ("corrupt/own-parent", {"a": "a"}, "a", (1, ("a",))),
    ("corrupt/agents-parent-each-other", {"a": "b", "b": "a"}, "a b", (0, ())),
    ("corrupt/loop-among-other-spans", {"x": "y", "y": "x", "a": "x"}, "a", (1, ("a",))),
    ("corrupt/loop-back-through-span", {"x": "a", "a": "x"}, "a", (1, ("a",))),
]


@pytest.mark.parametrize(
    ("tree", "agent_names", "expected"),
    [row[1:] for row in DEPTHS],
    ids=[row[0] for row in DEPTHS],
)
def test_agent_depth(
    tree: dict[str, str], agent_names: str, expected: tuple[int, tuple[str, ...]]
) -> None:
    assert agent_depth(*spans(tree, agent_names)) == expected


def test_deep_nesting_needs_no_recursion() -> None:
    depth = 5_000
    tree = {"n0": ""} | {f"n{i}": f"n{i - 1}" for i in range(1, depth)}
    agents, parents = spans(tree, " ".join(f"n{i}" for i in range(0, depth, 2)))
    found, chain = agent_depth(agents, parents)
    assert found == depth // 2
    assert chain[0] == "n0" and chain[-1] == f"n{depth - 2}"


def nested_through_tools(levels: int) -> dict[str, str]:
    """a0 calls a tool t1 that invokes agent a1, which calls t2 ... (agents named a0, a1, ...)."""
    tree = {"a0": ""}
    for i in range(1, levels):
        tree[f"t{i}"] = f"a{i - 1}"
        tree[f"a{i}"] = f"t{i}"
    return tree


RECURSION: list[tuple[str, int, int, Summary | None]] = [
    ("at-the-bound", 4, 4, None),
    ("one-deeper", 5, 4, ("agent_recursion", "a0,a1,a2,a3,a4", 1, 5)),
    ("custom-bound", 3, 2, ("agent_recursion", "a0,a1,a2", 1, 3)),
]


@pytest.mark.parametrize(
    ("nesting", "bound", "expected"),
    [row[1:] for row in RECURSION],
    ids=[row[0] for row in RECURSION],
)
def test_agent_recursion(nesting: int, bound: int, expected: Summary | None) -> None:
    tree = nested_through_tools(nesting)
    agents, parents = spans(tree, " ".join(name for name in tree if name.startswith("a")))
    finding = find_agent_recursion(agents, parents, CycleThresholds(max_agent_depth=bound))
    assert (summary([finding])[0] if finding else None) == expected


# --- span links ---------------------------------------------------------------------------------


def link_graph(text: str) -> dict[bytes, list[bytes]]:
    """``"a>b a>c"``: span a links to b and c. Span ids are the letters' bytes (b"a" = 61)."""
    graph: dict[bytes, list[bytes]] = {}
    for edge in text.split():
        source, target = edge.split(">")
        graph.setdefault(source.encode(), []).append(target.encode())
    return graph


LINKS: list[tuple[str, str, tuple[str, ...] | None]] = [
    ("no-links", "", None),
    ("chain", "a>b b>c", None),
    ("diamond", "a>b a>c b>d c>d", None),
    ("cross-edge-to-finished-span", "a>b c>b c>a", None),
    ("link-outside-session", "a>z", None),
    ("self-link", "a>a", ("61",)),
    ("two-cycle", "b>a a>b", ("61", "62")),
    ("cycle-behind-a-tail", "a>b b>c c>d d>b", ("62", "63", "64")),
]


@pytest.mark.parametrize(
    ("edges", "cycle"), [row[1:] for row in LINKS], ids=[row[0] for row in LINKS]
)
def test_link_cycle(edges: str, cycle: tuple[str, ...] | None) -> None:
    finding = find_link_cycle(link_graph(edges))
    if cycle is None:
        assert finding is None
    else:
        assert finding == CycleFinding("link_cycle", cycle, len(cycle), 1)


def test_long_link_chain_needs_no_recursion() -> None:
    n = 20_000
    ids = [i.to_bytes(4, "big") for i in range(n)]
    graph = {ids[i]: [ids[i + 1]] for i in range(n - 1)} | {ids[-1]: [ids[n // 2]]}
    finding = find_link_cycle(graph)
    assert finding is not None and finding.period == n - n // 2


def test_link_search_gives_up_after_max_edges() -> None:
    assert find_link_cycle(link_graph("a>b b>c c>a"), max_edges=2) is None
    assert find_link_cycle(link_graph("a>b b>c c>a"), max_edges=3) is not None


# --- everything at once -------------------------------------------------------------------------


def test_detect_cycles_reports_every_kind() -> None:
    tree = nested_through_tools(6)
    agents, parents = spans(tree, " ".join(name for name in tree if name.startswith("a")))
    found = detect_cycles(
        calls("search:q fetch:u " * 3 + "read " * 6),
        agents,
        parents,
        link_graph("a>b b>a"),
        DEFAULT,
    )
    assert [f.kind for f in found] == [
        "repeated_call",
        "repeated_call",
        "repeated_tool",
        "tool_pattern",
        "agent_recursion",
        "link_cycle",
    ]


def test_detect_cycles_on_a_quiet_session() -> None:
    agents, parents = spans({"a": "", "t": "a", "b": "t"}, "a b")
    assert detect_cycles(calls("search:q1 fetch:u1 search:q2"), agents, parents, {}, DEFAULT) == []
