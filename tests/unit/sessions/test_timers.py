"""TimerWheel: deadlines rounded up to ticks, one heap entry per non-empty tick."""

from __future__ import annotations

import math
import time

import pytest

from sampler.sessions.timers import TimerWheel


@pytest.mark.parametrize(
    ("tick", "deadline", "now", "due"),
    [
        pytest.param(0.25, 1.0, 0.99, False, id="before-deadline-on-a-tick"),
        pytest.param(0.25, 1.0, 1.0, True, id="exactly-at-deadline-on-a-tick"),
        pytest.param(0.25, 1.0, 7.0, True, id="long-after-deadline"),
        pytest.param(0.25, 1.1, 1.1, False, id="between-ticks-rounds-up-not-at-deadline"),
        pytest.param(0.25, 1.1, 1.2, False, id="between-ticks-still-before-tick"),
        pytest.param(0.25, 1.1, 1.25, True, id="between-ticks-due-at-next-tick"),
        pytest.param(0.1, 40.0, 39.95, False, id="tick-0.1-half-tick-early"),
        pytest.param(0.1, 40.0, 40.0, True, id="tick-0.1-exactly-at-deadline"),
        pytest.param(0.25, 0.0, 0.0, True, id="deadline-zero"),
        pytest.param(0.25, -3.0, 0.0, True, id="deadline-in-the-past"),
        pytest.param(
            0.1,
            0.3,
            0.3,
            True,
            id="tick-0.1-deadline-0.3-due-at-0.3",
        ),
        pytest.param(
            0.1,
            math.nextafter(0.9, math.inf),
            0.9,
            True,  # within the wheel's float tolerance: the same tick as 0.9
            id="tick-0.1-one-ulp-after-a-tick-is-that-tick",
        ),
    ],
)
def test_item_is_due_at_or_after_its_deadline_never_before(
    tick: float, deadline: float, now: float, due: bool
) -> None:
    wheel: TimerWheel[str] = TimerWheel(tick)
    scheduled_tick = wheel.schedule("item", deadline)

    popped = list(wheel.pop_due(now))

    assert popped == ([(scheduled_tick, "item")] if due else [])
    assert len(wheel) == (0 if due else 1)


@pytest.mark.parametrize(
    ("schedule", "now", "expected"),
    [
        pytest.param([("c", 3.0), ("a", 1.0), ("b", 2.0)], 10.0, ["a", "b", "c"], id="by-deadline"),
        pytest.param(
            [("x", 1.0), ("y", 0.8), ("z", 0.9)],
            10.0,
            ["x", "y", "z"],
            id="same-tick-in-insertion-order",
        ),
        pytest.param(
            [("late", 5.0), ("early", 1.0), ("mid", 2.0)], 2.0, ["early", "mid"], id="only-due"
        ),
        pytest.param([], 10.0, [], id="empty"),
    ],
)
def test_pop_due_yields_in_tick_order(
    schedule: list[tuple[str, float]], now: float, expected: list[str]
) -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0)
    for item, deadline in schedule:
        wheel.schedule(item, deadline)

    assert [item for _, item in wheel.pop_due(now)] == expected
    assert len(wheel) == len(schedule) - len(expected)


@pytest.mark.parametrize(
    ("deadlines", "now"),
    [
        pytest.param([0.0, 1e8], 1e9, id="two-items-far-apart"),
        pytest.param([1e9], 1e9, id="one-item-at-1e9"),
        pytest.param([5.0, 2e8, 7e8], 1e12, id="jump-far-past-everything"),
    ],
)
def test_sparse_far_future_jump_does_not_walk_empty_ticks(
    deadlines: list[float], now: float
) -> None:
    wheel: TimerWheel[float] = TimerWheel(0.1)
    for deadline in deadlines:
        wheel.schedule(deadline, deadline)

    started = time.perf_counter()
    popped = [item for _, item in wheel.pop_due(now)]
    elapsed = time.perf_counter() - started

    assert popped == sorted(deadlines)
    assert elapsed < 0.5  # 1e10 empty ticks would take hours


@pytest.mark.parametrize(
    ("items", "ticks"),
    [
        pytest.param(10_000, 1, id="10k-items-one-tick"),
        pytest.param(10_000, 10, id="10k-items-ten-ticks"),
        pytest.param(3, 3, id="one-item-per-tick"),
    ],
)
def test_heap_holds_one_entry_per_tick_not_per_item(items: int, ticks: int) -> None:
    wheel: TimerWheel[int] = TimerWheel(1.0)
    for i in range(items):
        wheel.schedule(i, float(i % ticks) + 0.5)

    assert len(wheel._ticks) == ticks  # white box: the documented bound on the heap
    assert len(wheel) == items
    assert sorted(item for _, item in wheel.pop_due(float(ticks))) == list(range(items))
    assert (len(wheel), wheel._ticks) == (0, [])


@pytest.mark.parametrize(
    ("steps", "expected_lengths"),
    [
        pytest.param([("schedule", 1.0), ("schedule", 1.0)], [1, 2], id="counts-items"),
        pytest.param(
            [("schedule", 1.0), ("schedule", 3.0), ("pop", 2.0), ("pop", 3.0)],
            [1, 2, 1, 0],
            id="pop-removes",
        ),
        pytest.param([("pop", 100.0), ("schedule", 1.0)], [0, 1], id="pop-empty"),
    ],
)
def test_len_counts_entries_held(
    steps: list[tuple[str, float]], expected_lengths: list[int]
) -> None:
    wheel: TimerWheel[str] = TimerWheel(1.0)
    lengths = []
    for action, when in steps:
        if action == "schedule":
            wheel.schedule("item", when)
        else:
            list(wheel.pop_due(when))
        lengths.append(len(wheel))

    assert lengths == expected_lengths


@pytest.mark.parametrize(
    ("tick", "deadline", "expected_tick"),
    [
        pytest.param(1.0, 3.0, 3, id="exact"),
        pytest.param(1.0, 3.2, 4, id="rounds-up"),
        pytest.param(0.5, 0.1, 1, id="fraction-of-a-tick"),
    ],
)
def test_schedule_returns_the_rounded_up_tick(
    tick: float, deadline: float, expected_tick: int
) -> None:
    wheel: TimerWheel[str] = TimerWheel(tick)

    assert wheel.schedule("item", deadline) == expected_tick == wheel.tick_of(deadline)


@pytest.mark.parametrize("tick", [0.0, -0.1], ids=["zero", "negative"])
def test_tick_must_be_positive(tick: float) -> None:
    with pytest.raises(ValueError, match="tick must be positive"):
        TimerWheel(tick)
