"""The session scorer: error kinds, tool cycles, shape and rarity of one session being decided.

A session is written as its agent and its tool calls, one per word, in start order:
``search:q1`` is the tool ``search`` called with arguments whose digest is ``q1``; a bare
``search`` recorded no arguments. Every session is one trace: a root agent span, then its tools,
each after a model call that decided it (as an agent makes them).
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from sampler.config.model import RarityConfig, ShapeConfig, SignalsConfig
from sampler.signals.errors import ErrorKind
from sampler.signals.rarity import RarityModel
from sampler.signals.scorer import SessionScorer
from sampler.signals.tool_cycles import AgentSpan, ToolCall, detect_cycles
from tests.reference.legacy.features import SessionFeatures
from tests.reference.legacy.spans import KIND_AGENT, KIND_LLM, KIND_OTHER, KIND_TOOL, SpanFacts

TRACE = b"\0" * 15 + b"t"
ROOT = (1).to_bytes(8, "big")


def span_facts(
    number: int,
    start_ns: int,
    kind: str,
    *,
    agent_name: str = "",
    tool_name: str = "",
    tool_args: str = "",
    error_kinds: int = 0,
    duration_ns: int = 500,
) -> SpanFacts:
    """Span ``number`` of the session's one trace: span 1 is the root, the others its children."""
    return SpanFacts(
        trace_id=TRACE,
        session_key=None,
        is_root=number == 1,
        start_ns=start_ns,
        end_ns=start_ns + duration_ns,
        test_bits=0,
        error_kinds=error_kinds,
        span_id=number.to_bytes(8, "big"),
        parent_span_id=b"" if number == 1 else ROOT,
        kind=kind,
        agent_name=agent_name,
        tool_name=tool_name,
        tool_args=tool_args,
    )


def session(
    tools: str = "", *, agent: str = "support", errors: int = 0, failing: str = KIND_LLM
) -> SessionFeatures:
    """``errors`` are put on one more span of kind ``failing`` (on the last tool if "tool")."""
    features = SessionFeatures()
    features.observe(span_facts(1, 1_000, KIND_AGENT, agent_name=agent))
    words = tools.split()
    for i, word in enumerate(words):
        name, _, digest = word.partition(":")
        on_this = failing == KIND_TOOL and i == len(words) - 1
        features.observe(span_facts(100 + i, 1_500 + i * 1_000, KIND_LLM, duration_ns=400))
        features.observe(
            span_facts(
                i + 2,
                2_000 + i * 1_000,
                KIND_TOOL,
                tool_name=name,
                tool_args=digest,
                error_kinds=errors if on_this else 0,
            )
        )
    if failing != KIND_TOOL:
        features.observe(span_facts(99, 90_000, failing, error_kinds=errors))
    return features


def timed(latency_s: float, duration_s: float) -> SessionFeatures:
    """A session whose root span (its turn) lasts ``latency_s``, while another span (not a model
    call) started with it ends ``duration_s`` later: the session's wall time is the longer."""
    features = SessionFeatures()
    features.observe(
        span_facts(1, 1_000, KIND_AGENT, agent_name="support", duration_ns=int(latency_s * 1e9))
    )
    features.observe(span_facts(2, 1_000, KIND_OTHER, duration_ns=int(duration_s * 1e9)))
    return features


def scorer(
    warmup_sessions: int = RarityConfig().warmup_sessions, min_group_values: int | None = None
) -> SessionScorer:
    """``min_group_values`` (not a config setting: 50 unless given) is set on the model."""
    config = SignalsConfig()
    rarity = dataclasses.replace(config.rarity, warmup_sessions=warmup_sessions)
    result = SessionScorer(dataclasses.replace(config, rarity=rarity))
    if min_group_values is not None:
        settings = dataclasses.replace(result.rarity.settings, min_group_values=min_group_values)
        result.rarity = RarityModel(settings)
    return result


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failing", "errors", "signals"),
    [
        pytest.param(KIND_LLM, 0, (), id="no-error-no-signal"),
        pytest.param(KIND_LLM, ErrorKind.STATUS, ("error",), id="status-error"),
        pytest.param(KIND_LLM, ErrorKind.EXCEPTION, ("error",), id="exception-event"),
        pytest.param(KIND_LLM, ErrorKind.ERROR_TYPE, ("error",), id="error-type"),
        pytest.param(
            KIND_TOOL, ErrorKind.STATUS | ErrorKind.TOOL, ("error", "tool_error"), id="failed-tool"
        ),
        pytest.param(KIND_LLM, ErrorKind.LLM_REFUSAL, ("llm_refusal",), id="content-filter"),
        pytest.param(KIND_LLM, ErrorKind.LLM_TRUNCATED, ("llm_truncated",), id="length"),
        pytest.param(KIND_LLM, ErrorKind.HTTP_5XX, ("http_5xx",), id="http-5xx"),
        pytest.param(
            KIND_TOOL,
            ErrorKind(127),
            ("error", "tool_error", "llm_refusal", "llm_truncated", "http_5xx"),
            id="every-kind-in-a-stable-order",
        ),
    ],
)
def test_error_kinds_fire_their_signals(
    failing: str, errors: int, signals: tuple[str, ...]
) -> None:
    result = scorer().score(session("search:q1", errors=errors, failing=failing), now=0.0)

    assert result.signals == signals


# --- tool cycles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tools", "kinds"),
    [
        pytest.param("search:q1 fetch:u1 answer:a1", frozenset(), id="ordinary-path"),
        pytest.param("search:q1 search:q2 search:q3", frozenset(), id="same-tool-new-args"),
        pytest.param(
            "search:q1 fetch:u1 search:q1 search:q1",
            frozenset({"repeated_call"}),
            id="same-call-three-times",
        ),
    ],
)
def test_tool_cycles(tools: str, kinds: frozenset[str]) -> None:
    result = scorer().score(session(tools), now=0.0)

    assert result.cycle_kinds == kinds
    assert ("tool_cycle" in result.signals) == bool(kinds)
    assert len(result.cycle_details) == len(kinds)


def conversation(*turns: str) -> SessionFeatures:
    """One trace per turn, each written as ``session`` writes its tools; a turn is numbered
    (its index among the session's traces) as the buffer numbers it."""
    features = SessionFeatures()
    for turn, tools in enumerate(turns):
        base = turn * 100_000
        for i, word in enumerate(tools.split()):
            name, _, digest = word.partition(":")
            features.observe(span_facts(1000 + i, base + 1_500 + i * 1_000, KIND_LLM))
            tool_span = span_facts(2000 + i, base + 2_000 + i * 1_000, KIND_TOOL)
            features.observe(tool_span._replace(tool_name=name, tool_args=digest), turn)
    return features


@pytest.mark.parametrize(
    ("turns", "kinds"),
    [
        pytest.param(
            ("lookup:c1 search:q1 reply:r1", "lookup:c1 search:q2 reply:r2", "lookup:c1 search:q3"),
            frozenset(),
            id="the-same-workflow-for-every-message",
        ),
        pytest.param(("lookup search reply",) * 5, frozenset(), id="the-same-without-arguments"),
        pytest.param(("lookup:c1 search:q1",) * 3, frozenset(), id="a-turn-asked-again-twice"),
        pytest.param(
            ("lookup:c1 search:q1",) * 4, frozenset({"repeated_turn"}), id="a-turn-retried"
        ),
        pytest.param(
            ("lookup:c1", "search:q search:q search:q"),
            frozenset({"repeated_call"}),
            id="a-loop-within-a-turn",
        ),
    ],
)
def test_turns_are_looked_at_one_by_one(turns: tuple[str, ...], kinds: frozenset[str]) -> None:
    result = scorer().score(conversation(*turns), now=0.0)

    assert result.cycle_kinds == kinds


# --- shape --------------------------------------------------------------------------------

PATH = "search search fetch search answer"


@pytest.mark.parametrize(
    ("shape_config", "tools", "expected"),
    [
        pytest.param(ShapeConfig(), PATH, "support:search>fetch>search>answer", id="default"),
        pytest.param(
            ShapeConfig(include_agent=False), PATH, ":search>fetch>search>answer", id="no-agent"
        ),
        pytest.param(
            ShapeConfig(collapse_repeats=False),
            PATH,
            "support:search>search>fetch>search>answer",
            id="repeats-kept",
        ),
        pytest.param(ShapeConfig(max_tools=2), PATH, "support:search>fetch", id="first-2-tools"),
        pytest.param(
            ShapeConfig(max_tools=2, collapse_repeats=False),
            PATH,
            "support:search>search",
            id="first-2-tools-repeats-kept",
        ),
        pytest.param(ShapeConfig(), "", "support:", id="no-tools"),
    ],
)
def test_shape_of_follows_the_shape_config(
    shape_config: ShapeConfig, tools: str, expected: str
) -> None:
    features = session(tools)
    shaped = SessionScorer(SignalsConfig(shape=shape_config))

    assert shaped.shape_of(features) == expected
    assert shaped.score(features, now=0.0).shape == expected


def test_the_shape_follows_start_order_not_arrival_order() -> None:
    features = SessionFeatures()
    features.observe(span_facts(1, 1_000, KIND_AGENT, agent_name="support"))
    for number, start_ns, name in ((3, 3_000, "answer"), (2, 2_000, "search")):
        features.observe(span_facts(number, start_ns, KIND_TOOL, tool_name=name))

    assert scorer().shape_of(features) == "support:search>answer"


# --- rarity -------------------------------------------------------------------------------


def test_after_warmup_a_never_seen_shape_is_rare() -> None:
    warm_after_5 = scorer(warmup_sessions=5, min_group_values=5)
    first = warm_after_5.score(session("search:q1 answer:a1"), now=0.0)
    assert first.rarity["shape"] == 0.0  # cold: nothing is rare yet, not even a first shape
    assert "rare_shape" not in first.signals
    assert first.cold  # so the pipeline holds it, if dropped, for a second look
    for _ in range(4):
        warm_after_5.score(session("search:q1 answer:a1"), now=0.0)

    new = warm_after_5.score(session("search:q1 refund:r1 escalate:e1"), now=1.0)
    usual = warm_after_5.score(session("search:q1 answer:a1"), now=1.0)

    assert new.rarity["shape"] == 1.0
    assert "rare_shape" in new.signals
    assert usual.rarity["shape"] == 0.0
    assert "rare_shape" not in usual.signals
    assert not new.cold and not usual.cold


def test_a_cold_agents_shape_is_not_scored() -> None:
    """Warm overall, but an agent with fewer than min_group_values recent sessions is cold:
    measured against everyone, all its paths would look rare."""
    model = scorer(warmup_sessions=5, min_group_values=10)
    for _ in range(10):
        model.score(session("search:q1 answer:a1"), now=0.0)
    for _ in range(9):
        model.score(session("refund:r1", agent="billing"), now=0.0)

    young = model.score(session("never:n1 seen:s1", agent="billing"), now=0.0)
    busy = model.score(session("never:n1 seen:s1"), now=0.0)

    assert (young.rarity["shape"], young.cold) == (0.0, True)
    assert "rare_shape" not in young.signals
    assert (busy.rarity["shape"], busy.cold) == (1.0, False)
    # the tenth billing session was learned from when scored: billing is warm now
    warm = model.score(session("escalate:e1", agent="billing"), now=0.0, learn=False)
    assert (warm.rarity["shape"], warm.cold) == (1.0, False)


@pytest.mark.parametrize(
    ("latency_s", "duration_s", "fired"),
    [
        pytest.param(1.0, 10.0, (), id="usual"),
        pytest.param(9.0, 9.0, ("tail_latency",), id="slow-turn-fires-tail-latency"),
        pytest.param(1.0, 100.0, ("tail_duration",), id="long-session-quick-turns-tail-duration"),
        pytest.param(100.0, 100.0, ("tail_latency", "tail_duration"), id="both"),
    ],
)
def test_the_longest_turn_and_the_whole_session_are_separate_tails(
    latency_s: float, duration_s: float, fired: tuple[str, ...]
) -> None:
    model = scorer(warmup_sessions=5, min_group_values=5)
    for _ in range(60):
        model.score(timed(1.0, 10.0), now=0.0)  # turns of 1 s, sessions of 10 s
    model.flush()  # the end of a batch: the numbers count from now on

    scored = model.score(timed(latency_s, duration_s), now=0.0)

    assert scored.signals == fired
    assert (scored.rarity["latency"] == 1.0) is ("tail_latency" in fired)
    assert (scored.rarity["duration"] == 1.0) is ("tail_duration" in fired)


def test_learn_false_scores_without_teaching_the_model() -> None:
    model = scorer(warmup_sessions=5, min_group_values=5)
    for _ in range(5):
        model.score(session("search:q1 answer:a1"), now=0.0)
    odd = session("refund:r1 escalate:e1")

    looked = model.score(odd, now=0.0, learn=False)
    again = model.score(odd, now=0.0, learn=False)

    assert looked == again
    assert looked.rarity["shape"] == 1.0
    assert model.rarity.sessions_seen(0.0) == 5
    model.score(odd, now=0.0)  # learn=True (the default) teaches it
    assert model.rarity.sessions_seen(0.0) == 6


def test_a_fragment_scores_its_steps_and_latency_and_learns_only_its_steps() -> None:
    """A conversation decided before (a continuation, or reopened): its totals were judged (and
    learned) the first time. Its latency is scored again (as the longest of its turns), and its
    tool path by its steps, without where it starts and ends (a continuation starts mid-way);
    the steps are learned (a later turn may take steps the first did not), the numbers not."""
    warm_after_5 = scorer(warmup_sessions=5, min_group_values=5)
    for _ in range(60):
        warm_after_5.score(session("search:q1 answer:a1"), now=0.0)  # 500 ns turns
    warm_after_5.flush()
    looping = session("refund:r1 refund:r1 refund:r1", errors=ErrorKind.HTTP_5XX)

    fragment = warm_after_5.score(looping, now=1.0, fragment=True)

    assert fragment.rarity == {
        "shape": 1.0,
        "latency": 0.0,
        "model_latency": 0.0,
        "tool_latency": 0.0,
    }
    assert fragment.signals == ("http_5xx", "tool_cycle", "rare_shape")
    assert fragment.shape == "support:refund"
    assert warm_after_5.rarity.sessions_seen(1.0) == 61  # its steps are taught

    later_turn = warm_after_5.score(session("answer:a2"), now=1.0, fragment=True)
    assert later_turn.rarity["shape"] == 0.0  # starts with "answer": no matter in a fragment
    assert warm_after_5.score(session("answer:a2"), now=1.0, learn=False).rarity["shape"] == 1.0

    slow = warm_after_5.score(timed(60.0, 60.0), now=1.0, fragment=True)

    assert slow.rarity == {
        "shape": 0.0,
        "latency": 1.0,
        "model_latency": 0.0,
        "tool_latency": 0.0,
    }
    assert slow.signals == ("tail_latency",)


def test_the_rarity_config_reaches_the_model() -> None:
    config = RarityConfig(warmup_sessions=7, rare_shape_share=0.05, tail_quantile=0.9)
    settings = SessionScorer(SignalsConfig(rarity=config)).rarity.settings

    assert (settings.warmup_sessions, settings.rare_shape_share, settings.tail_quantile) == (
        7,
        0.05,
        0.9,
    )


def running(*, turn_ended: bool) -> SessionFeatures:
    """A trace whose root has not arrived (still running), after a turn that ended or not."""
    features = SessionFeatures()
    if turn_ended:
        features.observe(span_facts(1, 1_000, KIND_AGENT, agent_name="support"))
    features.observe(span_facts(5, 2_000, KIND_TOOL, tool_name="search")._replace(is_root=False))
    return features


@pytest.mark.parametrize("fragment", [False, True], ids=["session", "fragment"])
def test_a_session_still_running_at_the_duration_cap_is_tail_latency(fragment: bool) -> None:
    """Cold (no history at all), yet a trace still running at max_session_duration when no turn
    of the session has ended: that turn has lasted the whole session, among the longest by
    construction."""
    scored = scorer().score(
        running(turn_ended=False), now=1.0, fragment=fragment, running_at_cap=True
    )
    assert scored.signals.count("tail_latency") == 1
    assert scored.rarity["latency"] == 1.0
    assert "tail_duration" not in scored.signals
    if not fragment:
        assert scored.rarity["duration"] == 0.0  # the cap says nothing of the session's length
    plain = scorer().score(running(turn_ended=False), now=1.0, fragment=fragment)
    assert "tail_latency" not in plain.signals
    assert plain.rarity["latency"] == 0.0


def test_a_conversation_at_the_duration_cap_is_not_slow_for_it() -> None:
    """Turns have ended: the cap measured the conversation, not the turn still running."""
    scored = scorer().score(running(turn_ended=True), now=1.0, running_at_cap=True)
    assert "tail_latency" not in scored.signals
    assert scored.rarity["latency"] == 0.0


def model_calls(*seconds: float) -> SessionFeatures:
    """One turn of 1 s making model calls of these durations."""
    features = SessionFeatures()
    features.observe(span_facts(1, 1_000, KIND_AGENT, agent_name="support", duration_ns=10**9))
    for number, duration in enumerate(seconds, start=2):
        features.observe(span_facts(number, 1_000, KIND_LLM, duration_ns=int(duration * 1e9)))
    return features


@pytest.mark.parametrize(
    ("calls", "fires"),
    [
        pytest.param((5.0, 5.0, 5.0), True, id="every-call-five-times-slower"),
        pytest.param((1.0, 1.0, 5.0), False, id="one-slow-call-among-usual-ones"),
        pytest.param((1.0, 1.1, 0.9), False, id="usual"),
    ],
)
def test_a_session_whose_model_calls_are_slower_fires_tail_model_latency(
    calls: tuple[float, ...], fires: bool
) -> None:
    """The session's typical (median) model call, against its agent's: a model made several
    times slower hides in turn latency when the turn also makes fewer calls, not here; one
    slow call is the longest turn's business."""
    model = scorer(warmup_sessions=5, min_group_values=5)
    for _ in range(60):
        model.score(timed(1.0, 1.0), now=0.0)
    model.flush()
    slow_call = SessionFeatures()
    slow_call.observe(span_facts(1, 1_000, KIND_AGENT, agent_name="support", duration_ns=10**9))
    slow_call.observe(span_facts(2, 1_000, KIND_LLM, duration_ns=5 * 10**9))

    for i in range(60):
        model.score(model_calls(0.9 + i % 3 * 0.1, 1.0, 1.1), now=0.0)
    model.flush()

    scored = model.score(model_calls(*calls), now=0.0)

    assert ("tail_model_latency" in scored.signals) is fires
    assert (scored.rarity["model_latency"] == 1.0) is fires
    assert "tail_latency" not in scored.signals  # the turn itself is as long as usual


def tool_calls(*seconds: float) -> SessionFeatures:
    """One turn of 10 s making tool calls of these durations, each after a model call."""
    features = SessionFeatures()
    features.observe(span_facts(1, 1_000, KIND_AGENT, agent_name="support", duration_ns=10**10))
    for number, duration in enumerate(seconds, start=2):
        features.observe(span_facts(100 + number, 1_000 + number, KIND_LLM, duration_ns=10**8))
        call = span_facts(number, 2_000 + number, KIND_TOOL, duration_ns=int(duration * 1e9))
        features.observe(call._replace(tool_name=f"tool{number}"))
    return features


@pytest.mark.parametrize(
    ("calls", "fires"),
    [
        pytest.param((2.0, 2.0, 2.0), True, id="every-call-to-a-slow-dependency"),
        pytest.param((0.5, 0.5, 2.0), False, id="one-slow-call"),
        pytest.param((0.5, 0.45, 0.55), False, id="usual"),
    ],
)
def test_a_session_whose_tool_calls_are_slower_fires_tail_tool_latency(
    calls: tuple[float, ...], fires: bool
) -> None:
    """A slow dependency: the turn hardly changes when tools are a small part of it."""
    model = scorer(warmup_sessions=5, min_group_values=5)
    for i in range(60):
        model.score(tool_calls(0.45 + i % 3 * 0.05, 0.5, 0.55), now=0.0)
    model.flush()

    scored = model.score(tool_calls(*calls), now=0.0)

    assert ("tail_tool_latency" in scored.signals) is fires
    assert "tail_latency" not in scored.signals


@pytest.mark.parametrize(
    ("levels", "found"), [(4, False), (5, True)], ids=["at-the-bound", "one-deeper"]
)
def test_agent_recursion_is_found_through_the_spans_between_an_agent_and_its_tools(
    levels: int, found: bool
) -> None:
    """LangGraph with OpenInference puts a `tools` CHAIN span between an agent and its TOOL
    spans: an agent calling itself as a tool, level after level, is still a recursion. Spans
    arrive as they end: children first."""
    spans: list[SpanFacts] = []
    parent = 0  # span numbers: agent 10*i+1, its tools CHAIN 10*i+2, its delegate TOOL 10*i+3
    for level in range(levels):
        agent, chain, tool = 10 * level + 1, 10 * level + 2, 10 * level + 3
        facts_of_level = [
            (agent, parent, KIND_AGENT, {"agent_name": "planner"}),
            (chain, agent, KIND_OTHER, {}),
            (tool, chain, KIND_TOOL, {"tool_name": "delegate", "tool_args": f"task {level}"}),
        ]
        for number, of, kind, names in facts_of_level:
            span = span_facts(number, 1_000 * number, kind, **names)
            parent_id = of.to_bytes(8, "big") if of else b""
            spans.append(span._replace(parent_span_id=parent_id, is_root=not of))
        parent = tool
    features = SessionFeatures()
    for span in reversed(spans):  # innermost (ending first) first
        features.observe(span)

    result = scorer().score(features, now=0.0)

    assert ("agent_recursion" in result.cycle_kinds) is found


def random_session(rng: random.Random) -> SessionFeatures:
    """Up to six turns of up to nine calls of one to three tools (in some sessions every turn
    the same), arguments recorded for none, few or every call, some failing, a model call before
    some of them; then up to six levels of an agent delegating to itself through a tool."""
    features = SessionFeatures()
    arguments = rng.choice([[""], ["", "x", "y"], [f"q{i}" for i in range(9)]])
    tools = rng.choice(["abc", "ab", "a"])
    first: list[tuple[str, str]] = []  # every turn repeats the first one, in some sessions
    repeat = rng.random() < 0.3
    number = 10
    for turn in range(rng.randint(1, 6)):
        base = turn * 1_000_000
        made = (
            first
            if repeat and turn
            else [(rng.choice(tools), rng.choice(arguments)) for _ in range(rng.randint(0, 9))]
        )
        first = first or made
        for i, (name, args) in enumerate(made):
            number += 1
            start = base + 1_000 * i
            if rng.random() < 0.5:
                features.observe(span_facts(number, start - 10, KIND_LLM))
                number += 1
            tool = span_facts(
                number,
                start,
                KIND_TOOL,
                tool_name=name,
                tool_args=args,
                error_kinds=int(rng.random() < 0.2),
            )
            features.observe(tool, turn)
    parent = b""
    for level in range(rng.randint(0, 6)):
        agent_id, tool_id = (
            (500 + 2 * level).to_bytes(8, "big"),
            (501 + 2 * level).to_bytes(8, "big"),
        )
        agent = span_facts(500 + 2 * level, 1, KIND_AGENT, agent_name="planner")
        features.observe(agent._replace(parent_span_id=parent, is_root=not parent))
        delegate = span_facts(501 + 2 * level, 2, KIND_TOOL, tool_name="delegate")
        features.observe(delegate._replace(parent_span_id=agent_id, tool_args=f"task {level}"))
        parent = tool_id
    return features


@pytest.mark.parametrize("seed", range(5))
def test_skipping_what_cannot_fire_finds_what_every_detector_finds(seed: int) -> None:
    """The scorer runs the tool detectors only when some tool is called often enough in one
    turn, or enough turns call tools, and the recursion detector only with enough agents:
    the findings are those of all the detectors."""
    rng = random.Random(seed)
    s = scorer()
    for _ in range(300):
        features = random_session(rng)
        parents = features.parents
        agents = [AgentSpan(i, parents.get(i, b""), name) for i, name in features.agents]
        calls = [ToolCall(*call[:5]) for call in features.tool_calls]
        expected = detect_cycles(
            calls, agents, parents, features.links, s.thresholds, features.model_starts
        )
        assert s.score(features, now=0.0).cycle_details == tuple(f.describe() for f in expected)
