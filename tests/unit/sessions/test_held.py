"""The hold of dropped sessions: bounded, oldest first out, and its sums always right.

Sessions here are built by hand: ``held_session("conv", ["a", "b"], spans=3)`` is the keyed
session ``conv`` with traces ``a`` and ``b``, three spans of ten bytes each in all.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from sampler.rules.verdict import Verdict
from sampler.sessions.buffer import Session
from sampler.sessions.held import DroppedHold
from tests.unit.sessions.builders import BLOCK, facts, trace_id

DROPPED = Verdict(False, "baseline")
SPAN_BYTES = 10


def held_session(key: str, traces: Sequence[str], spans: int = 1) -> Session:
    session = Session(key, True, now=0.0)
    for name in traces:
        session.add_trace(trace_id(name))
    for i in range(spans):
        name = traces[i % len(traces)]
        session.add_span(BLOCK, bytes(SPAN_BYTES), facts(name, root=True), now=0.0)
    return session


def assert_holds(hold: DroppedHold, *sessions: Session) -> None:
    """The hold holds exactly these sessions: its length, sums and trace index agree."""
    assert len(hold) == len(sessions)
    assert hold.span_count == sum(s.span_count for s in sessions)
    assert hold.span_bytes == sum(s.span_bytes for s in sessions)
    for session in sessions:
        for trace in session.trace_ids:
            assert hold.key_of_trace(trace) == session.key


def test_a_held_session_is_found_by_each_of_its_traces_and_taken_once() -> None:
    hold = DroppedHold(hold_s=60.0, max_spans=100)
    conversation = held_session("conv", ["a", "b"], spans=3)

    assert hold.hold(conversation, DROPPED, cold=True, now=5.0)

    assert_holds(hold, conversation)
    assert hold.span_bytes == 3 * SPAN_BYTES
    assert hold.key_of_trace(trace_id("other")) is None
    taken = hold.take("conv")
    assert taken is not None
    assert (taken.session, taken.verdict, taken.cold, taken.expires) == (
        conversation,
        DROPPED,
        True,
        65.0,
    )
    assert_holds(hold)
    assert hold.key_of_trace(trace_id("a")) is None
    assert hold.take("conv") is None
    assert hold.released_early == 0  # taken back is not released


def test_a_session_held_again_for_another_look_says_which_look_is_next() -> None:
    hold = DroppedHold(hold_s=60.0, max_spans=100)
    session = held_session("conv", ["a"])
    hold.hold(session, DROPPED, cold=True, now=0.0)
    (first,) = hold.pop_expired(60.0)
    assert first.looks == 1

    hold.hold(session, first.verdict, cold=True, now=60.0, looks=first.looks + 1)

    (second,) = hold.pop_expired(120.0)
    assert (second.session, second.verdict, second.cold, second.looks) == (
        session,
        DROPPED,
        True,
        2,
    )


def test_the_hold_ends_hold_s_after_the_drop_oldest_first() -> None:
    hold = DroppedHold(hold_s=60.0, max_spans=100)
    first, second, third = (held_session(k, [k]) for k in ("s1", "s2", "s3"))
    for session, now in ((first, 0.0), (second, 10.0), (third, 20.0)):
        hold.hold(session, DROPPED, cold=False, now=now)

    assert hold.pop_expired(59.9) == []
    assert [h.session for h in hold.pop_expired(70.0)] == [first, second]  # 60 and 70: over
    assert_holds(hold, third)
    assert [h.session for h in hold.pop_expired(1e9)] == [third]
    assert_holds(hold)
    assert hold.released_early == 0  # their time was up: not early


def test_release_oldest_makes_room_and_counts_it() -> None:
    hold = DroppedHold(hold_s=60.0, max_spans=100)
    first, second = held_session("s1", ["a"], spans=2), held_session("s2", ["b"], spans=3)
    hold.hold(first, DROPPED, cold=False, now=0.0)
    hold.hold(second, DROPPED, cold=False, now=1.0)

    released = hold.release_oldest()

    assert released is not None and released.session is first
    assert hold.released_early == 1
    assert_holds(hold, second)
    assert hold.key_of_trace(trace_id("a")) is None
    assert hold.release_oldest() is not None
    assert hold.release_oldest() is None  # nothing left: nothing counted
    assert hold.released_early == 2
    assert_holds(hold)


def test_the_hold_is_capped_at_max_spans_oldest_released_first() -> None:
    hold = DroppedHold(hold_s=60.0, max_spans=5)
    first, second, third = (held_session(k, [k], spans=2) for k in ("s1", "s2", "s3"))

    assert hold.hold(first, DROPPED, cold=False, now=0.0)
    assert hold.hold(second, DROPPED, cold=False, now=1.0)
    assert_holds(hold, first, second)
    assert hold.hold(third, DROPPED, cold=False, now=2.0)  # 6 spans > 5
    assert hold.over_cap  # the caller releases (a cold session gets its second look first)
    released = hold.release_oldest()

    assert released is not None and released.session is first
    assert not hold.over_cap
    assert_holds(hold, second, third)
    assert hold.released_early == 1
    assert hold.key_of_trace(trace_id("s1")) is None


def test_a_session_larger_than_the_whole_hold_is_not_held() -> None:
    hold = DroppedHold(hold_s=60.0, max_spans=5)
    small = held_session("small", ["a"], spans=2)
    hold.hold(small, DROPPED, cold=False, now=0.0)

    assert not hold.hold(held_session("big", ["b"], spans=6), DROPPED, cold=True, now=1.0)

    assert_holds(hold, small)  # and nothing was released for it
    assert hold.released_early == 0


@pytest.mark.parametrize(
    ("hold_s", "max_spans", "enabled"),
    [
        pytest.param(0.0, 100, False, id="hold-0s-is-off"),
        pytest.param(60.0, 0, False, id="no-spans-is-off"),
        pytest.param(0.001, 1, True, id="any-hold-is-on"),
    ],
)
def test_a_zero_hold_holds_nothing(hold_s: float, max_spans: int, enabled: bool) -> None:
    hold = DroppedHold(hold_s=hold_s, max_spans=max_spans)
    session = held_session("conv", ["a"])

    assert hold.enabled is enabled
    assert hold.hold(session, DROPPED, cold=True, now=0.0) is enabled
    if enabled:
        assert_holds(hold, session)
    else:
        assert_holds(hold)


def test_holding_the_same_key_again_replaces_it_and_counts_it_once() -> None:
    hold = DroppedHold(hold_s=60.0, max_spans=100)
    before = held_session("conv", ["a"], spans=2)
    after = held_session("conv", ["a", "b"], spans=4)
    hold.hold(before, DROPPED, cold=True, now=0.0)

    hold.hold(after, DROPPED, cold=False, now=10.0)

    assert_holds(hold, after)
    (expired,) = hold.pop_expired(70.0)
    assert (expired.session, expired.cold) == (after, False)


def test_pop_all_empties_the_hold_oldest_first() -> None:
    hold = DroppedHold(hold_s=60.0, max_spans=100)
    sessions = [held_session(k, [k], spans=i + 1) for i, k in enumerate(("s1", "s2", "s3"))]
    for now, session in enumerate(sessions):
        hold.hold(session, DROPPED, cold=False, now=float(now))

    assert [h.session for h in hold.pop_all()] == sessions

    assert_holds(hold)
    assert all(hold.key_of_trace(t) is None for s in sessions for t in s.trace_ids)
    assert hold.pop_all() == []
    assert hold.released_early == 0


def test_the_sums_stay_right_through_every_way_out() -> None:
    hold = DroppedHold(hold_s=10.0, max_spans=12)
    sizes = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}
    sessions = {k: held_session(k, [k, k + "-2"], spans=n) for k, n in sizes.items()}
    held: list[Session] = []

    def put(key: str, now: float) -> None:
        hold.hold(sessions[key], DROPPED, cold=False, now=now)
        held.append(sessions[key])
        while hold.over_cap:  # the caller releases the oldest, as the pipeline does
            hold.release_oldest()
            held.pop(0)

    put("a", 0.0)
    put("b", 1.0)
    put("c", 2.0)
    assert_holds(hold, *held)
    hold.take("b")
    held.remove(sessions["b"])
    assert_holds(hold, *held)
    put("d", 3.0)
    put("e", 4.0)  # 1 + 3 + 4 + 5 = 13 > 12: "a" goes
    assert_holds(hold, *held)
    assert sessions["a"] not in held
    hold.release_oldest()
    held.pop(0)
    assert_holds(hold, *held)
    put("f", 15.0)  # 4 + 5 + 6 = 15 > 12: "d" goes
    assert_holds(hold, *held)
    expired = hold.pop_expired(14.5)  # "e" was held at 4: its hold ended at 14
    assert [h.session for h in expired] == [sessions["e"]]
    held.remove(sessions["e"])
    assert_holds(hold, *held)
    assert held == [sessions["f"]]
    assert hold.released_early == 3  # "a" and "d" for the cap, "c" for room
