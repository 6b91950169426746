"""The native session buffer, scenario by scenario: spans arrive at given times (one a request),
due sessions are popped by hand and decided at once.

A scenario is a list of steps; running it yields a log that the row compares as a whole:
  ("due", now, [sessions])        what pop_due(now) / pop_all() returned (sorted)
  ("follows", trace, keep)        the span followed the verdict of a decided session
  ("followed", spans, keep)       a provisional session of that many spans joined a decided one
A session is written (key, trace names, span count); a provisional one's key is "~" + trace name.
Every popped session is decided with the step's verdict (and so remembered for late spans);
with ``hold=True`` a dropped one is also held, so that new spans can reopen it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from sampler._native import Core, SessionView
from sampler.config.model import SamplerConfig, SessionsConfig
from sampler.sessions.native import BufferStats, build_core
from tests.unit.sessions.builders import native, simple_request, span, trace_name


@dataclass(frozen=True)
class Add:
    at: float
    trace: str
    key: str | None = None
    root: bool = False


@dataclass(frozen=True)
class Pop:
    at: float
    keep: bool = True
    hold: bool = False  # hold the dropped sessions (sessions.dropped_hold)


@dataclass(frozen=True)
class PopAll:
    at: float
    keep: bool = True


Step = Add | Pop | PopAll
Summary = tuple[str, tuple[str, ...], int]


class Harness:
    def __init__(self, settings: dict[str, Any], cache_sessions: int = 100) -> None:
        config = SamplerConfig()
        config = dataclasses.replace(
            config,
            sessions=dataclasses.replace(SessionsConfig(), **settings),
            decision_cache=dataclasses.replace(config.decision_cache, max_sessions=cache_sessions),
        )
        self.core: Core = build_core(config, ())
        self._span_ids = 1

    @property
    def stats(self) -> BufferStats:
        return BufferStats.of(self.core)

    def add(self, step: Add) -> tuple[int, int]:
        """Ingests one span: (spans kept late, spans dropped late)."""
        self._span_ids += 1
        attrs = {"gen_ai.conversation.id": step.key} if step.key else {}
        one = span(step.trace, self._span_ids, parent=None if step.root else 1, attrs=attrs)
        request = native(simple_request(one))
        *_, late_kept, late_dropped, _ = self.core.ingest(request, step.at, 4096)
        assert request.done
        return late_kept, late_dropped

    def run(self, steps: Sequence[Step]) -> list[tuple[Any, ...]]:
        log: list[tuple[Any, ...]] = []
        for step in steps:
            if isinstance(step, Add):
                kept, dropped = self.add(step)
                if kept or dropped:
                    log.append(("follows", step.trace, bool(kept)))
                    if kept + dropped > 1:  # the span, and a provisional session before it
                        log.append(("followed", kept + dropped - 1, bool(kept)))
                continue
            views = self.core.pop_due(step.at) if isinstance(step, Pop) else self.core.pop_all()
            for view in views:
                rule = "kept" if step.keep else "dropped"
                self.core.decide(view.handle, step.keep, rule, 1.0, (), not view.keyed)
                if step.keep:
                    continue
                if isinstance(step, Pop) and step.hold:
                    assert self.core.hold(view.handle, False, step.at, 1)
                else:
                    self.core.release(view.handle)
            log.append(("due", step.at, sorted(summary(v) for v in views)))
        return log


def summary(view: SessionView) -> Summary:
    names = tuple(trace_name(t) for t in view.trace_ids)
    key = view.key if view.keyed else f"~{names[0]}"
    return (key, names, view.span_count)


# Default settings: open_trace_wait 90s, decision_wait 30s, root_end_grace 2s,
# max_session_duration 300s, tick 0.1s.
SCENARIOS = [
    # -- grouping --------------------------------------------------------------------------------
    pytest.param(
        {},
        [
            Add(0, "t1"),
            Add(0, "t2", key="c2", root=True),
            Add(0.5, "t1"),
            Add(1, "t1", key="c1", root=True),
            Pop(29.95),
            Pop(30.0),
            Pop(30.95),
            Pop(31.05),
        ],
        [
            ("due", 29.95, []),
            ("due", 30.0, [("c2", ("t2",), 1)]),
            ("due", 30.95, []),
            ("due", 31.05, [("c1", ("t1",), 3)]),
        ],
        id="children-before-root-join-the-roots-keyed-session",
    ),
    pytest.param(
        {},
        [
            Add(0, "t2", key="c1"),
            Add(0.5, "t1"),
            Add(1, "t1", key="c1", root=True),
            Add(1.5, "t2", root=True),
            Pop(31.45),
            Pop(31.55),
        ],
        [("due", 31.45, []), ("due", 31.55, [("c1", ("t2", "t1"), 4)])],
        id="provisional-trace-merges-into-buffering-keyed-session",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1", root=True),
            Pop(5),  # past root_end_grace: a conversation still waits for another turn
            Add(10, "t2"),
            Add(10.5, "t2", key="c1", root=True),
            Pop(40.45),
            Pop(40.55),
            Pop(1000),
        ],
        [
            ("due", 5, []),
            ("due", 40.45, []),
            ("due", 40.55, [("c1", ("t1", "t2"), 3)]),
            ("due", 1000, []),
        ],
        id="two-traces-of-one-conversation-decided-once",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1"),
            Add(0.2, "t1", root=True),
            Add(0.2, "t2", key="c1", root=True),
            Pop(2.25),
            Pop(30.25),
            Pop(1000),
        ],
        [
            ("due", 2.25, [("~t1", ("t1",), 2)]),
            ("due", 30.25, [("c1", ("t2",), 1)]),
            ("due", 1000, []),
        ],
        id="trace-without-key-decided-alone-by-trace-id",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1"),
            Add(1, "t1", key="c2"),
            Add(2, "t1", key="c2", root=True),
            Add(2, "t9", key="c2", root=True),
            Pop(32.05),
        ],
        [("due", 32.05, [("c1", ("t1",), 3), ("c2", ("t9",), 1)])],
        id="conflicting-key-on-a-later-span-ignored",
    ),
    # -- decided sessions, late spans and continuations ------------------------------------------
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1", root=True),
            Pop(30.05),
            Add(31, "t2"),
            Add(31.5, "t2"),
            Add(32, "t2", key="c1", root=True),
            Add(33, "t2"),
            Pop(1000),
        ],
        [
            ("due", 30.05, [("c1", ("t1",), 1)]),
            ("follows", "t2", True),
            ("followed", 2, True),
            ("follows", "t2", True),
            ("due", 1000, []),
        ],
        id="root-revealing-a-kept-key-follows-keep",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1", root=True),
            Pop(30.05),
            Add(31, "t3", key="c1"),
            Add(31, "t3"),
            Pop(1000),
        ],
        [
            ("due", 30.05, [("c1", ("t1",), 1)]),
            ("follows", "t3", True),
            ("follows", "t3", True),
            ("due", 1000, []),
        ],
        id="new-trace-of-a-kept-conversation-follows-keep",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1", root=True),
            Pop(30.05, keep=False),
            Add(31, "t3", key="c1"),
            Add(32, "t3", key="c1", root=True),
            Pop(61.95),
            Pop(62.05),
            Add(63, "t4", key="c1"),  # the continuation was kept: a further turn follows it
        ],
        [
            ("due", 30.05, [("c1", ("t1",), 1)]),
            ("due", 61.95, []),
            ("due", 62.05, [("c1", ("t3",), 2)]),
            ("follows", "t4", True),
        ],
        id="new-trace-of-a-dropped-conversation-is-a-continuation",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1", root=True),
            Pop(30.05, keep=False),
            Add(31, "t2"),
            Add(32, "t2", key="c1", root=True),
            Pop(61.95),
            Pop(62.05),
        ],
        [
            ("due", 30.05, [("c1", ("t1",), 1)]),
            ("due", 61.95, []),
            ("due", 62.05, [("c1", ("t2",), 2)]),
        ],
        id="root-revealing-a-dropped-key-opens-a-continuation",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1", root=True),
            Pop(30.05, keep=False),
            Add(31, "t2", key="c1", root=True),
            Add(32, "t1"),
            Add(32, "t1", key="c1"),  # names the buffering continuation, still its trace's drop
            Pop(61.05),
        ],
        [
            ("due", 30.05, [("c1", ("t1",), 1)]),
            ("follows", "t1", False),
            ("follows", "t1", False),
            ("due", 61.05, [("c1", ("t2",), 1)]),
        ],
        id="late-span-of-a-dropped-trace-is-dropped-not-a-continuation",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1", root=True),
            Add(0, "t2", key="c2", root=True),
            Pop(30.05, keep=False),
            Add(40, "t1"),
            Add(40, "t2"),
        ],
        [
            ("due", 30.05, [("c2", ("t2",), 1), ("~t1", ("t1",), 1)]),
            ("follows", "t1", False),
            ("follows", "t2", False),
        ],
        id="late-span-of-a-decided-trace-follows-via-cache",
    ),
    # -- dropped sessions still held: reopened by new spans, decided again as a whole ------------
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1", root=True),
            Pop(30.05, keep=False, hold=True),
            Add(31, "t2", key="c1", root=True),
            Pop(60.95),
            Pop(61.05),
            Add(62, "t3", key="c1"),  # kept this time: a further turn follows it
        ],
        [
            ("due", 30.05, [("c1", ("t1",), 1)]),
            ("due", 60.95, []),
            ("due", 61.05, [("c1", ("t1", "t2"), 2)]),
            ("follows", "t3", True),
        ],
        id="new-trace-of-a-held-conversation-reopens-it",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1", root=True),
            Pop(30.05, keep=False, hold=True),
            Add(31, "t2"),
            Add(32, "t2", key="c1", root=True),
            Pop(61.95),
            Pop(62.05),
        ],
        [
            ("due", 30.05, [("c1", ("t1",), 1)]),
            ("due", 61.95, []),
            ("due", 62.05, [("c1", ("t1", "t2"), 3)]),
        ],
        id="root-revealing-a-held-key-reopens-it",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1", root=True),
            Pop(30.05, keep=False, hold=True),
            Add(32, "t1"),
            Pop(61.95),
            Pop(62.05),
        ],
        [
            ("due", 30.05, [("c1", ("t1",), 1)]),
            ("due", 61.95, []),
            ("due", 62.05, [("c1", ("t1",), 2)]),
        ],
        id="late-span-of-a-held-conversation-reopens-it",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1"),
            Pop(90.05, keep=False, hold=True),  # open_trace_wait: decided without its root
            Add(100, "t1", root=True),
            Pop(101.95),
            Pop(102.05),
        ],
        [
            ("due", 90.05, [("~t1", ("t1",), 1)]),
            ("due", 101.95, []),
            ("due", 102.05, [("~t1", ("t1",), 2)]),
        ],
        id="late-root-of-a-held-lone-trace-reopens-it",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1", root=True),
            Pop(30.05, keep=False, hold=True),
            Add(31, "t2", key="c1", root=True),
            Pop(61.05, keep=False, hold=True),  # dropped again, and held again
            Add(70, "t1"),
            Pop(100.05),
        ],
        [
            ("due", 30.05, [("c1", ("t1",), 1)]),
            ("due", 61.05, [("c1", ("t1", "t2"), 2)]),
            ("due", 100.05, [("c1", ("t1", "t2"), 3)]),
        ],
        id="a-conversation-can-be-reopened-again",
    ),
    pytest.param(
        {"max_session_duration": 60.0},
        [
            Add(0, "t1", key="c1", root=True),
            Pop(30.05, keep=False, hold=True),
            Add(90, "t2", key="c1", root=True),  # past created + max_session_duration
            Add(91, "t2"),
            Pop(91.05),  # not due at once: the cap counts from the reopening
            Pop(121.05),
        ],
        [
            ("due", 30.05, [("c1", ("t1",), 1)]),
            ("due", 91.05, []),
            ("due", 121.05, [("c1", ("t1", "t2"), 3)]),
        ],
        id="a-conversation-longer-than-the-cap-is-not-decided-again-on-every-span",
    ),
    # -- completion ------------------------------------------------------------------------------
    pytest.param(
        {},
        [
            Add(0, "t1"),
            Add(10, "t1"),
            Add(10, "t2", key="c2"),
            Pop(40.05),  # decision_wait passed, but both traces are still running
            Pop(99.95),
            Pop(100),
        ],
        [
            ("due", 40.05, []),
            ("due", 99.95, []),
            ("due", 100, [("c2", ("t2",), 1), ("~t1", ("t1",), 2)]),
        ],
        id="missing-root-waits-open-trace-wait-not-decision-wait",
    ),
    pytest.param(
        {},
        [Add(0, "t1", key="c1", root=True), Pop(2.05), Pop(29.95), Pop(30.0)],
        [("due", 2.05, []), ("due", 29.95, []), ("due", 30.0, [("c1", ("t1",), 1)])],
        id="keyed-session-waits-decision-wait-ignoring-root-end-grace",
    ),
    pytest.param(
        {},
        [Add(0, "t1", key="c1", root=True), Add(10, "t1"), Pop(30.0), Pop(39.95), Pop(40.0)],
        [("due", 30.0, []), ("due", 39.95, []), ("due", 40.0, [("c1", ("t1",), 2)])],
        id="keyed-session-idle-for-decision-wait-after-its-last-span",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1", key="c1", root=True),
            Add(1, "t2", key="c1"),
            Pop(31.05),  # decision_wait after the last span passed, but t2 is still running
            Add(50, "t2", root=True),
            Pop(79.95),
            Pop(80.05),
        ],
        [("due", 31.05, []), ("due", 79.95, []), ("due", 80.05, [("c1", ("t1", "t2"), 3)])],
        id="decision-wait-only-once-every-trace-has-its-root",
    ),
    pytest.param(
        {},
        [Add(0, "t1"), Add(5, "t1", root=True), Add(6, "t1"), Pop(6.95), Pop(7.05)],
        [("due", 6.95, []), ("due", 7.05, [("~t1", ("t1",), 3)])],
        id="unkeyed-lone-trace-decided-root-end-grace-after-its-root",
    ),
    pytest.param(
        {"root_end_grace": 0.0},
        [Add(0, "t1", root=True), Pop(2.05), Pop(29.95), Pop(30.0)],
        [("due", 2.05, []), ("due", 29.95, []), ("due", 30.0, [("~t1", ("t1",), 1)])],
        id="root-end-grace-zero-makes-an-unkeyed-trace-wait-decision-wait",
    ),
    pytest.param(
        {"open_trace_wait": 3.0, "max_session_duration": 10.0},
        [Add(0, "t1"), Add(2, "t1"), Add(4, "t1"), Add(6, "t1"), Add(8, "t1"), Pop(9.95), Pop(10)],
        [("due", 9.95, []), ("due", 10, [("~t1", ("t1",), 5)])],
        id="max-session-duration-caps-a-chatty-session",
    ),
    pytest.param(
        {"max_session_spans": 3},
        [Add(0, "t1"), Add(0, "t1"), Add(0, "t1"), Pop(0), Add(0, "t1")],
        [("due", 0, [("~t1", ("t1",), 3)]), ("follows", "t1", True)],
        id="max-session-spans-decides-at-once",
    ),
    pytest.param(
        {"max_session_spans": 3},
        [Add(0, "t1", key="c1"), Add(0, "t2"), Add(0, "t2", key="c1"), Pop(0)],
        [("due", 0, [("c1", ("t1", "t2"), 3)])],
        id="max-session-spans-reached-by-a-merge",
    ),
    pytest.param(
        {},
        [
            Add(0, "t1"),
            Add(0, "t2", key="c1"),
            Add(1, "t3", key="c1", root=True),
            PopAll(2),
            PopAll(3),
            Pop(1000),
        ],
        [
            ("due", 2, [("c1", ("t2", "t3"), 2), ("~t1", ("t1",), 1)]),
            ("due", 3, []),
            ("due", 1000, []),
        ],
        id="pop-all-returns-everything-once",
    ),
]


@pytest.mark.parametrize(("settings", "steps", "expected"), SCENARIOS)
def test_scenario(
    settings: dict[str, Any], steps: list[Step], expected: list[tuple[Any, ...]]
) -> None:
    assert Harness(settings).run(steps) == expected


@pytest.mark.parametrize(("settings", "steps", "expected"), SCENARIOS)
def test_counters_return_to_zero_once_everything_is_decided(
    settings: dict[str, Any], steps: list[Step], expected: list[tuple[Any, ...]]
) -> None:
    harness = Harness(settings)
    harness.run([*steps, PopAll(10_000)])

    stats = harness.stats
    assert (stats.session_count, stats.span_count, stats.span_bytes, stats.memory) == (0, 0, 0, 0)
    assert stats.undecided == 0


@pytest.mark.parametrize(
    ("steps", "expected_counts"),
    [
        pytest.param([Add(0, "t1"), Add(0, "t1")], (1, 2), id="one-provisional"),
        pytest.param([Add(0, "t1"), Add(0, "t2")], (2, 2), id="two-provisional"),
        pytest.param(
            [Add(0, "t1", key="c1"), Add(0, "t2", key="c1")], (1, 2), id="two-traces-one-key"
        ),
        pytest.param(
            [Add(0, "t1", key="c1"), Add(0, "t2"), Add(0, "t2", key="c1")],
            (1, 3),
            id="merge-removes-a-session",
        ),
        pytest.param(
            [
                Add(0, "t1", key="c1", root=True),
                Pop(30.05),
                Add(31, "t2"),
                Add(31, "t2", key="c1"),
            ],
            (0, 0),
            id="followed-provisional-leaves",
        ),
        pytest.param(
            [
                Add(0, "t1", key="c1", root=True),
                Pop(30.05, keep=False),
                Add(31, "t2"),
                Add(31, "t2", key="c1"),
            ],
            (1, 2),
            id="continuation-stays",
        ),
        pytest.param(
            [Add(0, "t1", root=True), Add(0, "t2"), Pop(2.05)], (1, 1), id="decided-leaves"
        ),
        pytest.param(
            [Add(0, "t1", key="c1", root=True), Add(0, "t1"), Pop(30.05, keep=False, hold=True)],
            (0, 0),
            id="held-spans-are-not-buffered",
        ),
        pytest.param(
            [
                Add(0, "t1", key="c1", root=True),
                Add(0, "t1"),
                Pop(30.05, keep=False, hold=True),
                Add(31, "t2", key="c1"),
            ],
            (1, 3),
            id="reopened-spans-are-buffered-again",
        ),
    ],
)
def test_counters_track_buffered_sessions_and_spans(
    steps: list[Step], expected_counts: tuple[int, int]
) -> None:
    harness = Harness({})
    harness.run(steps)

    stats = harness.stats
    sessions, spans = expected_counts
    assert (stats.session_count, stats.span_count) == (sessions, spans)
    assert (stats.span_bytes > 0, stats.memory > 0) == (spans > 0, sessions > 0)


@pytest.mark.parametrize(
    ("reopen", "key"),
    [
        pytest.param(Add(31, "t2", key="c1", root=True), "c1", id="by-a-new-turn"),
        pytest.param(Add(31, "t1"), "c1", id="by-a-late-span"),
    ],
)
def test_a_reopened_session_leaves_the_hold_and_is_known_as_decided_before(
    reopen: Add, key: str
) -> None:
    harness = Harness({})
    harness.run([Add(0, "t1", key="c1", root=True), Pop(30.05, keep=False, hold=True)])
    stats = harness.stats
    assert (stats.held_sessions, stats.held_spans, stats.reopened) == (1, 1, 0)

    harness.run([reopen])

    stats = harness.stats
    assert (stats.held_sessions, stats.held_spans, stats.reopened) == (0, 0, 1)
    (session,) = harness.core.pop_all()
    assert (session.key, session.decided_before, session.span_count) == (key, True, 2)


def test_a_session_is_due_once_even_when_re_filed_onto_a_stale_entry() -> None:
    harness = Harness({})
    steps: list[Step] = [
        Add(0, "t1", key="c1"),  # a running trace: due at 0 + 90 (open_trace_wait), tick 900
        Add(1, "t1", root=True),  # its root: due at 1 + 30, earlier; the tick-900 entry is stale
        Add(20, "t1"),  # activity: due at 50 now
        Pop(31.05),  # re-filed at 50
        Add(60, "t2", key="c1", root=True),  # a second turn: due at 90, tick 900 again
        Pop(60),  # re-filed at 90: next to the stale entry of tick 900
        Pop(90.05),
    ]

    log = harness.run(steps)

    assert log[-1] == ("due", 90.05, [("c1", ("t1", "t2"), 4)])


def test_pop_due_one_ulp_before_a_deadline_returns() -> None:
    harness = Harness({"decision_wait": 1.6})

    # 0.1 + 1.6 is 1.7000000000000002: the session is still due at 1.7.
    log = harness.run([Add(0.1, "t1", key="c1", root=True), Pop(1.7), Pop(1.8)])

    assert [s for *_, sessions in log for s in sessions] == [("c1", ("t1",), 1)]


@pytest.mark.parametrize(
    ("cache_sessions", "late_traces", "expected"),
    [
        pytest.param(
            1,
            ["t2", "t1"],
            [("follows", "t2", True), ("due", 99, [("~t1", ("t1",), 1)])],
            id="size-1-forgets-the-oldest",
        ),
        pytest.param(
            2,
            ["t2", "t1"],
            [("follows", "t2", True), ("follows", "t1", True), ("due", 99, [])],
            id="size-2-remembers-both",
        ),
    ],
)
def test_decision_cache_eviction_forgets_the_oldest(
    cache_sessions: int, late_traces: list[str], expected: list[tuple[Any, ...]]
) -> None:
    harness = Harness({}, cache_sessions=cache_sessions)
    harness.run([Add(0, "t1", root=True), Pop(2.05), Add(3, "t2", root=True), Pop(5.05)])

    late: list[Step] = [Add(6, trace) for trace in late_traces]
    assert harness.run([*late, PopAll(99)]) == expected
