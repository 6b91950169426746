"""SessionBuffer scenarios, each a row: spans arrive at given times, the timer is popped by hand.

A scenario is a list of steps; running it yields a log that the row compares as a whole:
  ("due", now, [sessions])        what pop_due(now) / pop_all() returned (sorted)
  ("follows", trace, keep)        add() returned a verdict: the span follows a decided session
  ("followed", session, keep)     a provisional session joined a decided one (buffer.followed)
A session is written (key, trace names, span count); a provisional one's key is "~" + trace name.
Every popped session is decided at once with the step's verdict and recorded in the cache; with
``hold=True`` a dropped one is also held (as the pipeline holds it), so new spans can reopen it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from sampler.config.model import SessionsConfig
from sampler.rules.verdict import Verdict
from sampler.sessions.buffer import Session, SessionBuffer, spans_of
from sampler.sessions.decision_cache import DecisionCache
from sampler.sessions.timers import TimerWheel
from tests.unit.sessions.builders import BLOCK, facts, trace_name

PAYLOAD = b"s" * 10  # every buffered span is 10 bytes


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


class RescheduleLoop(RuntimeError):
    """pop_due kept putting a session back into a tick it was already draining."""


class Harness:
    def __init__(self, settings: dict[str, Any], cache_sessions: int = 100) -> None:
        self.buffer = SessionBuffer(
            dataclasses.replace(SessionsConfig(), **settings), DecisionCache(cache_sessions)
        )
        self._guard_wheel(self.buffer._wheel)

    @staticmethod
    def _guard_wheel(wheel: TimerWheel[Session]) -> None:
        """Turn an endless reschedule loop inside one pop_due into an exception, not a hang."""
        schedule = wheel.schedule
        calls = 0

        def guarded(item: Session, deadline: float) -> int:
            nonlocal calls
            calls += 1
            if calls > 10_000:
                raise RescheduleLoop(f"rescheduled {calls} times (deadline {deadline!r})")
            return schedule(item, deadline)

        wheel.schedule = guarded  # type: ignore[method-assign]

    def run(self, steps: Sequence[Step]) -> list[tuple[Any, ...]]:
        log: list[tuple[Any, ...]] = []
        for step in steps:
            if isinstance(step, Add):
                verdict = self.buffer.add(
                    facts(step.trace, key=step.key, root=step.root), BLOCK, PAYLOAD, step.at
                )
                if verdict is not None:
                    log.append(("follows", step.trace, verdict.keep))
                for session, followed in self.buffer.followed:
                    log.append(("followed", summary(session), followed.keep))
                self.buffer.followed.clear()
                continue
            if isinstance(step, Pop):
                sessions = self.buffer.pop_due(step.at)
            else:
                sessions = self.buffer.pop_all()
            for session in sessions:
                verdict = Verdict(step.keep, "kept" if step.keep else "dropped")
                self.buffer.record(session, verdict)
                if isinstance(step, Pop) and step.hold and not step.keep:
                    assert self.buffer.hold.hold(session, verdict, cold=False, now=step.at)
            log.append(("due", step.at, sorted(summary(s) for s in sessions)))
        return log


def summary(session: Session) -> Summary:
    names = tuple(trace_name(t) for t in session.trace_ids)
    key = session.key if session.keyed else f"~{names[0]}"
    return (key, names, session.span_count)


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
            ("followed", ("~t2", ("t2",), 2), True),
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

    buffer = harness.buffer
    assert (buffer.session_count, buffer.span_count, buffer.span_bytes) == (0, 0, 0)
    assert (buffer._traces, buffer._keyed) == ({}, {})


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

    buffer = harness.buffer
    sessions, spans = expected_counts
    assert (buffer.session_count, buffer.span_count) == (sessions, spans)
    assert buffer.span_bytes == spans * len(PAYLOAD)


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
    buffer = harness.buffer
    assert (len(buffer.hold), buffer.hold.span_count, buffer.reopened) == (1, 1, 0)

    harness.run([reopen])

    assert (len(buffer.hold), buffer.hold.span_count, buffer.reopened) == (0, 0, 1)
    (session,) = buffer.pop_all()
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


def _deadline_rows() -> list[Any]:
    base = {
        "open_trace_wait": 90.0,
        "decision_wait": 30.0,
        "root_end_grace": 2.0,
        "max_session_duration": 300.0,
    }
    running = {b"t"}  # a trace whose root has not arrived
    # name, settings, keyed, rootless, roots_done_at, expected (last span at 5)
    rows: list[tuple[str, dict[str, float], bool, set[bytes], float, float]] = [
        ("open-trace-keyed", {}, True, running, math.inf, 5 + 90.0),
        ("open-trace-unkeyed", {}, False, running, math.inf, 5 + 90.0),
        ("keyed-roots-done-ignores-grace", {}, True, set(), 4.0, 5 + 30.0),
        ("unkeyed-roots-done-grace", {}, False, set(), 4.0, 4 + 2.0),
        ("unkeyed-grace-off", {"root_end_grace": 0.0}, False, set(), 4.0, 5 + 30.0),
        ("duration-cap-keyed", {"max_session_duration": 20.0}, True, set(), 4.0, 20.0),
        ("duration-cap-open", {"max_session_duration": 60.0}, False, running, math.inf, 60.0),
    ]
    return [
        pytest.param({**base, **over}, keyed, rootless, done, want, id=name)
        for name, over, keyed, rootless, done, want in rows
    ]


@pytest.mark.parametrize(
    ("settings", "keyed", "rootless", "roots_done_at", "expected"), _deadline_rows()
)
def test_deadline_is_the_earliest_completion_rule(
    settings: dict[str, float],
    keyed: bool,
    rootless: set[bytes],
    roots_done_at: float,
    expected: float,
) -> None:
    buffer = Harness(settings).buffer
    session = Session("k", keyed, 0.0)
    session.rootless = set(rootless)
    session.roots_done_at = roots_done_at
    session.last_seen = 5.0

    assert buffer.deadline(session) == expected


def test_a_sessions_spans_come_back_as_they_were_added_block_by_block() -> None:
    other_block = (b"resource-2", "", b"", "")
    spans = [b"first", b"", b"x" * 70_000, b"last"]  # empty, and larger than 64 KiB
    session = Session("s", True, 0.0)
    for index, span in enumerate(spans):
        session.add_span(BLOCK if index != 1 else other_block, span, facts("t"), 0.0)
    merged = Session("m", True, 0.0)
    merged.add_span(BLOCK, b"before", facts("u"), 0.0)
    merged.absorb(session)
    out = {block: list(spans) for block, spans in merged.span_blocks().items()}
    assert out == {BLOCK: [b"before", b"first", b"x" * 70_000, b"last"], other_block: [b""]}
    assert merged.span_bytes == sum(map(len, spans)) + len(b"before")


def test_a_run_can_grow_again_once_a_reader_is_dropped_half_way() -> None:
    session = Session("s", True, 0.0)
    session.add_span(BLOCK, b"one", facts("t"), 0.0)
    session.add_span(BLOCK, b"two", facts("t"), 0.0)
    reader = spans_of(session.blocks[BLOCK])
    assert next(reader) == b"one"
    del reader  # its view of the run is released with it
    session.add_span(BLOCK, b"three", facts("t"), 0.0)
    assert list(spans_of(session.blocks[BLOCK])) == [b"one", b"two", b"three"]
