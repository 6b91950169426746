"""The stratified budget: allocation properties, floors, and unbiased adjusted counts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sampler.rules.budget import BudgetController, BudgetSettings, allocate
from sampler.rules.randomness import RANDOMNESS_SPAN, keeps

demands = st.dictionaries(
    st.text(min_size=1, max_size=3), st.floats(min_value=0, max_value=1e4), max_size=12
)


@given(
    available=st.floats(min_value=0, max_value=1e5),
    demand=demands,
    floor=st.floats(min_value=0, max_value=1),
)
def test_allocation_never_exceeds_demand_nor_the_budget(
    available: float, demand: dict[str, float], floor: float
) -> None:
    out = allocate(available, demand, floor)
    assert set(out) == set(demand)
    for name, given_ in out.items():
        assert -1e-9 <= given_ <= demand[name] + 1e-6
    assert sum(out.values()) <= available + 1e-6 * max(1.0, available)
    if sum(demand.values()) <= available:  # enough for everybody: everybody gets it all
        for name in demand:
            assert out[name] == pytest.approx(demand[name], rel=1e-6, abs=1e-9)


def test_without_a_floor_every_stratum_gets_the_same_probability() -> None:
    # 100/s of budget; a busy stratum of 10,000/s and a rare one of 10/s
    out = allocate(100.0, {"busy": 10_000.0, "rare": 10.0}, floor=0.0)
    assert out["rare"] / 10.0 == pytest.approx(out["busy"] / 10_000.0)
    assert out["rare"] / 10.0 == pytest.approx(100.0 / 10_010.0)


def test_a_floor_keeps_a_rare_stratum_whole_and_the_busy_one_takes_the_rest() -> None:
    out = allocate(100.0, {"busy": 10_000.0, "rare": 10.0}, floor=0.5)
    assert out["rare"] == pytest.approx(10.0)  # its even part (25/s) covers it
    assert out["busy"] == pytest.approx(90.0)


def run_traffic(
    settings: BudgetSettings,
    strata: dict[str, float],
    must_keep_share: float,
    seconds: int,
    seed: int,
) -> tuple[dict[str, int], dict[str, float], int, int]:
    """Sessions per second per stratum for `seconds`; returns true counts, sums of adjusted
    counts over kept sessions, and total kept and decided."""
    rng = random.Random(seed)
    controller = BudgetController(settings)
    true_counts = dict.fromkeys(strata, 0)
    estimates = dict.fromkeys(strata, 0.0)
    kept = decided = 0
    for second in range(seconds):
        arrivals = [name for name, rate in strata.items() for _ in range(int(rate))]
        rng.shuffle(arrivals)
        for index, name in enumerate(arrivals):
            now = second + index / max(1, len(arrivals))
            controller.observe_decided(1, now)
            decided += 1
            if rng.random() < must_keep_share:  # an error session kept by its own rule
                controller.observe_must_keep(1, now)
                kept += 1
                continue
            true_counts[name] += 1
            p = controller.probability(name, 1, now)
            if keeps(rng.randrange(RANDOMNESS_SPAN), p):
                kept += 1
                estimates[name] += 1.0 / p
    return true_counts, estimates, kept, decided


def test_adjusted_counts_estimate_each_strata_size() -> None:
    """Summing 1/p over kept sessions estimates each stratum's session count, without bias.
    Over 20 seeds the relative error's standard deviation is about 4% (support, ~36,000
    sessions), 7% (research, ~9,600) and 6% (billing, ~600, kept by its floor): each seed's
    estimate is within 20%, and the mean of five within 8% (over 2.5 standard errors)."""
    settings = BudgetSettings(ratio=0.05, floor=0.5, window_s=30.0)
    strata = {"support": 300.0, "research": 80.0, "billing": 5.0}
    errors: dict[str, list[float]] = {name: [] for name in strata}
    for seed in range(5):
        true, estimate, _, _ = run_traffic(settings, strata, 0.02, seconds=120, seed=seed)
        for name in strata:
            errors[name].append(estimate[name] / true[name] - 1)
    for name, relative in errors.items():
        assert max(abs(e) for e in relative) <= 0.20, (name, relative)
        assert abs(sum(relative) / len(relative)) <= 0.08, (name, relative)


def test_the_budget_holds_the_target_ratio_with_must_keeps_counted() -> None:
    settings = BudgetSettings(ratio=0.05, floor=0.5, window_s=20.0)
    _, _, kept, decided = run_traffic(settings, {"a": 200.0, "b": 50.0}, 0.02, seconds=120, seed=3)
    assert kept / decided == pytest.approx(0.05, rel=0.15)


def test_must_keeps_above_the_target_leave_nothing_for_the_budget() -> None:
    settings = BudgetSettings(ratio=0.05, window_s=10.0)
    _, _, kept, decided = run_traffic(settings, {"a": 100.0}, 0.10, seconds=60, seed=5)
    assert kept / decided == pytest.approx(0.10, rel=0.15)  # only the must-keeps


def test_an_absolute_spans_per_second_target() -> None:
    settings = BudgetSettings(unit="spans", per_second=500.0, window_s=10.0)
    controller = BudgetController(settings)
    kept_spans = 0.0
    rng = random.Random(1)
    for step in range(60 * 100):  # 100 sessions of 50 spans per second for 60 s: 5,000 spans/s
        now = step / 100
        controller.observe_decided(50, now)
        if keeps(rng.randrange(RANDOMNESS_SPAN), controller.probability("x", 50, now)):
            kept_spans += 50
    assert kept_spans / 60 == pytest.approx(500.0, rel=0.15)


def test_a_reconfigured_budget_keeps_its_rates_where_they_still_mean_the_same() -> None:
    """A reload keeps the traffic the budget has seen: no new warm-up for a new ratio."""
    controller = BudgetController(BudgetSettings(ratio=0.05, window_s=20.0))
    for step in range(2_000):  # 100 sessions a second for 20 s, one stratum
        now = step / 100
        controller.observe_decided(1, now)
        controller.probability("a", 1, now)
    before = controller.probability("a", 1, 20.0)
    assert before == pytest.approx(0.05, rel=0.2)

    doubled = controller.reconfigured(BudgetSettings(ratio=0.10, window_s=20.0), same_strata=True)
    assert doubled.probability("a", 1, 20.01) == pytest.approx(2 * before, rel=0.05)
    # a longer window: rates are rescaled, so the probability holds
    longer = controller.reconfigured(BudgetSettings(ratio=0.05, window_s=60.0), same_strata=True)
    assert longer.probability("a", 1, 20.01) == pytest.approx(before, rel=0.05)
    # strata divided otherwise: their rates start over, the offered traffic stays
    regrouped = controller.reconfigured(controller.settings, same_strata=False)
    assert regrouped._strata == {} and regrouped._offered.value == controller._offered.value
    # another unit counts other things: everything starts over
    spans = controller.reconfigured(BudgetSettings(unit="spans"), same_strata=True)
    assert spans._offered.value == 0.0 and spans._started is None
    assert controller.probability("a", 1, 20.02) == pytest.approx(before, rel=0.05)  # untouched


@pytest.mark.parametrize("first_is_a_must_keep", [True, False], ids=["must-keep", "budget"])
def test_the_first_second_is_not_decided_on_the_first_session_alone(
    first_is_a_must_keep: bool,
) -> None:
    """200 sessions in the first second, one in twenty kept by another rule: whichever comes
    first, the budget keeps about (ratio - must-keep share) of the traffic. Recomputed only
    once a second, the first session's view held for the whole second: a must-keep first
    left the budget nothing (p = 0), a budget session first had it keep at the full ratio."""
    settings = BudgetSettings(ratio=0.2, window_s=10.0)
    controller = BudgetController(settings)
    rng = random.Random(2)
    kept = 0
    for index in range(200):
        now = index / 200
        controller.observe_decided(1, now)
        if (index == 0) if first_is_a_must_keep else (index % 20 == 10):
            controller.observe_must_keep(1, now)
            continue
        if index % 20 == 0 and index:
            controller.observe_must_keep(1, now)
            continue
        kept += keeps(rng.randrange(RANDOMNESS_SPAN), controller.probability("a", 1, now))
    expected = (0.2 - 0.05) * 200  # 30
    assert expected * 0.6 <= kept <= expected * 1.4, kept
