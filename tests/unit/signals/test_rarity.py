"""The rarity model: what is rare is relative to recent traffic, per window, with decay."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sampler.signals.rarity import (
    COLD,
    DIMENSIONS,
    TAIL_SIGNALS,
    RarityModel,
    RarityScores,
    RaritySettings,
)

COMMON = tuple(f"support:search>tool{i}" for i in range(5))
NO_NUMBERS: Mapping[str, float] = {}


def common(n: int) -> list[str]:
    return [COMMON[i % len(COMMON)] for i in range(n)]


def observe_all(
    model: RarityModel,
    shapes: Iterable[str],
    now: float,
    group: str = "support",
    numbers: Mapping[str, float] = NO_NUMBERS,
) -> None:
    for shape in shapes:
        model.observe(shape, group, numbers, now)
    model.flush()


def shape_score(model: RarityModel, shape: str, now: float) -> float:
    return model.score(shape, "support", NO_NUMBERS, now).shape


# --- shapes -------------------------------------------------------------------------------


def test_cold_start_scores_nothing_until_warmup() -> None:
    model = RarityModel(RaritySettings())
    observe_all(model, common(199), now=0.0)

    cold = model.score("never-seen", "support", {"duration": 1e9, "latency": 1e9}, now=0.0)
    assert cold == COLD == RarityScores(0.0, cold=True)
    assert cold.cold  # the pipeline holds what it drops, for a second look
    assert dict(cold.numeric) == dict.fromkeys(DIMENSIONS, 0.0)
    assert cold.fired(0.0) == ()
    assert model.sessions_seen(0.0) == 199

    observe_all(model, common(1), now=0.0)  # the 200th session ends the warmup
    warm = model.score("never-seen", "support", NO_NUMBERS, now=0.0)
    assert (warm.shape, warm.cold) == (1.0, False)


def test_after_common_traffic_a_new_shape_is_rare_and_a_common_one_is_not() -> None:
    model = RarityModel(RaritySettings())
    observe_all(model, common(1000), now=10.0)

    new = model.score("support:search>refund>escalate", "support", NO_NUMBERS, now=10.0)
    assert new.shape == 1.0
    assert new.fired(0.5) == ("rare_shape",)
    assert shape_score(model, COMMON[0], now=10.0) == 0.0


# 5000 sessions: a few shapes at known shares, the rest spread over the common ones.
SHARES = {
    "once": 1,
    "twice": 2,
    "five-times": 5,
    "ten-times": 10,
    "twenty-times": 20,
    "a-hundred-times": 100,
    "five-hundred-times": 500,
}


@pytest.fixture(scope="module")
def known_shares() -> dict[float, RarityModel]:
    models = {}
    for rare_share in (0.002, 0.01):
        model = RarityModel(RaritySettings(rare_shape_share=rare_share))
        for shape, count in SHARES.items():
            observe_all(model, [shape] * count, now=0.0)
        observe_all(model, common(5000 - sum(SHARES.values())), now=0.0)
        models[rare_share] = model
    return models


def log_score(rare_share: float, share: float) -> float:
    """The shape curve, written out: 0.5 at the boundary, one point per two decades."""
    return 0.5 + 0.5 * math.log10(rare_share / share)


# Shares are of the 5000 sessions; log_score is only used where it lies in [0, 1].
@pytest.mark.parametrize(
    ("rare_share", "shape", "expected"),
    [
        pytest.param(0.002, "never", 1.0, id="unseen-scores-1"),
        pytest.param(0.002, "once", 1.0, id="0.02pct-a-tenth-of-the-boundary-scores-1"),
        pytest.param(0.002, "twice", log_score(0.002, 0.0004), id="0.04pct-scores-0.85"),
        pytest.param(0.002, "five-times", log_score(0.002, 0.001), id="0.1pct-scores-0.65"),
        pytest.param(0.002, "ten-times", 0.5, id="0.2pct-at-the-boundary-scores-0.5"),
        pytest.param(0.002, "twenty-times", log_score(0.002, 0.004), id="0.4pct-scores-0.35"),
        pytest.param(0.002, "a-hundred-times", 0.0, id="2pct-ten-times-the-boundary-scores-0"),
        pytest.param(0.002, "five-hundred-times", 0.0, id="10pct-scores-0"),
        pytest.param(0.01, "five-times", 1.0, id="0.1pct-against-1pct-scores-1"),
        pytest.param(
            0.01, "ten-times", log_score(0.01, 0.002), id="0.2pct-against-1pct-scores-0.85"
        ),
        pytest.param(
            0.01, "twenty-times", log_score(0.01, 0.004), id="0.4pct-against-1pct-scores-0.70"
        ),
        pytest.param(
            0.01, "a-hundred-times", log_score(0.01, 0.02), id="2pct-against-1pct-scores-0.35"
        ),
        pytest.param(0.01, "five-hundred-times", 0.0, id="10pct-against-1pct-scores-0"),
    ],
)
def test_shape_score_is_log_linear_in_share(
    known_shares: dict[float, RarityModel], rare_share: float, shape: str, expected: float
) -> None:
    assert shape_score(known_shares[rare_share], shape, now=0.0) == pytest.approx(expected)


def test_a_shape_exactly_at_the_boundary_share_scores_exactly_half(
    known_shares: dict[float, RarityModel],
) -> None:
    # 10 of 5000 sessions is exactly 0.2%: a signal threshold of 0.5 means "at the boundary".
    at_boundary = shape_score(known_shares[0.002], "ten-times", now=0.0)

    assert at_boundary == 0.5
    assert RarityScores(at_boundary).fired(0.5) == ("rare_shape",)
    assert shape_score(known_shares[0.002], "twenty-times", now=0.0) < 0.5


def test_a_shape_common_hours_ago_is_rare_again() -> None:
    model = RarityModel(RaritySettings())
    observe_all(model, ["old-favourite"] * 500 + common(500), now=0.0)
    assert shape_score(model, "old-favourite", now=0.0) == 0.0

    observe_all(model, common(300), now=7200.0)

    assert model.sessions_seen(7200.0) == 300
    assert shape_score(model, "old-favourite", now=7200.0) == 1.0


def test_a_burst_of_a_rare_shape_makes_it_common() -> None:
    model = RarityModel(RaritySettings())
    observe_all(model, common(1000), now=0.0)
    assert shape_score(model, "burst", now=1.0) == 1.0

    observe_all(model, ["burst"] * 100, now=1.0)  # 100 of 1100 sessions: 9%

    assert shape_score(model, "burst", now=1.0) == 0.0


@pytest.mark.parametrize(
    ("decay", "windows_later", "expected"),
    [
        # 500 "fading" of 1000 sessions five windows ago, then 1000 other sessions now:
        # share = 0.5**5 * 500 / (0.5**5 * 1000 + 1000) = 15.625 / 1031.25 = 1.5% against 5%,
        # 0.5 + 0.5 * log10(5% / 1.5%) = 0.76. Without decay: 500 / 2000 = 25%, 0.15.
        pytest.param(
            0.5, 5, log_score(0.05, 15.625 / 1031.25), id="decay-0.5-age-5-share-1.5pct-0.76"
        ),
        pytest.param(1.0, 5, log_score(0.05, 0.25), id="no-decay-age-5-share-25pct-0.15"),
        pytest.param(0.5, 6, 1.0, id="aged-out-after-six-windows"),
        pytest.param(1.0, 6, 1.0, id="aged-out-without-decay-too"),
    ],
)
def test_older_windows_weigh_less_and_age_out_whole(
    decay: float, windows_later: int, expected: float
) -> None:
    model = RarityModel(RaritySettings(decay=decay, rare_shape_share=0.05))
    observe_all(model, ["fading"] * 500 + common(500), now=0.0)
    later = 300.0 * windows_later
    observe_all(model, common(1000), now=later)

    assert shape_score(model, "fading", now=later) == pytest.approx(expected)


# --- shapes among their group's sessions ----------------------------------------------------


def test_a_quiet_agents_usual_path_is_not_rare() -> None:
    # 50 "billing" sessions among 10000: its one path is 0.5% of all traffic but 100% of billing.
    model = RarityModel(RaritySettings(rare_shape_share=0.01, min_group_values=50))
    observe_all(model, common(9950), now=0.0)
    observe_all(model, ["billing:refund"] * 50, now=0.0, group="billing")

    billing = model.score("billing:refund", "billing", NO_NUMBERS, now=0.0)
    assert (billing.shape, billing.cold) == (0.0, False)
    assert model.score("billing:other", "billing", NO_NUMBERS, now=0.0).shape == 1.0
    # 0.5% of all sessions would score 0.65 against everyone; an agent never seen is not
    # measured against everyone any more: it is cold, and its shape scores nothing
    unknown = model.score("billing:refund", "unknown-agent", NO_NUMBERS, now=0.0)
    assert (unknown.shape, unknown.cold) == (0.0, True)


def test_a_path_rare_for_a_busy_agent_is_rare_even_if_common_for_others() -> None:
    # Shapes without the agent (shape.include_agent false): "search>refund" is 0.5% of
    # support's 2000 sessions but all of billing's 2000, so (10 + 2000) / 4000 = 50% globally.
    model = RarityModel(RaritySettings(rare_shape_share=0.01, min_group_values=50))
    observe_all(model, ["search>answer"] * 1990 + ["search>refund"] * 10, now=0.0)
    observe_all(model, ["search>refund"] * 2000, now=0.0, group="billing")

    assert model.score("search>refund", "billing", NO_NUMBERS, now=0.0).shape == 0.0
    for_support = model.score("search>refund", "support", NO_NUMBERS, now=0.0).shape
    assert for_support == pytest.approx(log_score(0.01, 0.005))  # 0.65: rare for support


def test_a_small_groups_shapes_are_not_scored_until_it_has_min_group_values() -> None:
    # 49 "quiet" sessions (fewer than min_group_values) among 10000. Against all sessions its
    # usual path (0.49%) would score 0.65 and any other path 1: a young or quiet agent would
    # look rare throughout. So the group is cold: no shape score, and the scores say so.
    model = RarityModel(RaritySettings(rare_shape_share=0.01, min_group_values=50))
    observe_all(model, common(9951), now=0.0)
    observe_all(model, ["quiet:usual"] * 49, now=0.0, group="quiet")

    for shape in ("quiet:usual", "quiet:never-seen"):
        small = model.score(shape, "quiet", {"tokens": 1e9}, now=0.0)
        assert (small.shape, small.cold, small.fired(0.0)) == (0.0, True, ())
    assert not model.score(COMMON[0], "support", NO_NUMBERS, now=0.0).cold  # only that group

    observe_all(model, ["quiet:usual"] * 1, now=0.0, group="quiet")  # the 50th: its own share

    usual = model.score("quiet:usual", "quiet", NO_NUMBERS, now=0.0)
    assert (usual.shape, usual.cold) == (0.0, False)
    assert model.score("quiet:never-seen", "quiet", NO_NUMBERS, now=0.0).shape == 1.0


def test_a_group_is_cold_again_once_its_sessions_age_out() -> None:
    model = RarityModel(RaritySettings(warmup_sessions=10, min_group_values=50))
    observe_all(model, common(50), now=0.0, group="early")
    observe_all(model, common(100), now=0.0)
    assert not model.score("x", "early", NO_NUMBERS, now=0.0).cold

    later = 300.0 * 6  # six windows on: the early group's windows are gone
    observe_all(model, common(100), now=later)

    assert model.score("x", "early", NO_NUMBERS, now=later) == RarityScores(0.0, cold=True)
    assert model.score("x", "support", NO_NUMBERS, now=later).shape == 1.0


def test_a_common_shape_is_never_called_rare_however_many_rare_ones_go_by() -> None:
    # 20k distinct shapes overflow the 768 counters many times over; 5 shapes at 4% each
    # stay tracked and score 0, and each one-off shape is told rare.
    model = RarityModel(RaritySettings())
    for i in range(4000):
        observe_all(model, [f"one-off-{5 * i + j}" for j in range(4)] + [COMMON[i % 5]], now=0.0)

    assert 0.0 < model.shape_resolution(0.0) <= 3.5 / 2**10
    assert all(shape_score(model, shape, now=0.0) == 0.0 for shape in COMMON)
    assert shape_score(model, "one-off-7", now=0.0) == 1.0


# --- numbers ------------------------------------------------------------------------------


def durations(seed: int, centre: float, n: int) -> list[float]:
    return [float(v) for v in np.random.default_rng(seed).uniform(0.9 * centre, 1.1 * centre, n)]


@pytest.fixture(scope="module")
def two_agents() -> RarityModel:
    model = RarityModel(RaritySettings())
    for a, b in zip(durations(1, 10.0, 1000), durations(2, 100.0, 1000), strict=True):
        model.observe(COMMON[0], "agent-a", {"duration": a, "tool_calls": 2.0}, now=0.0)
        model.observe(COMMON[1], "agent-b", {"duration": b, "tool_calls": 2.0}, now=0.0)
    model.flush()
    return model


@pytest.mark.parametrize(
    ("group", "numbers", "expected"),
    [
        pytest.param("agent-a", {"duration": 100.0}, 1.0, id="100s-is-far-tail-for-a"),
        pytest.param("agent-b", {"duration": 100.0}, 0.0, id="100s-is-median-for-b"),
        pytest.param("agent-a", {"duration": 10.0}, 0.0, id="10s-is-median-for-a"),
        pytest.param("agent-a", {"duration": 10.96}, 0.0, id="98th-percentile-is-below-the-tail"),
        # 10.99 is the 99.5th percentile of uniform(9, 11): 0.5 + 0.5 * (0.995 - 0.99) / 0.01
        pytest.param("agent-a", {"duration": 10.99}, 0.75, id="99.5th-percentile-scores-0.75"),
        pytest.param("agent-b", {"duration": 1e6}, 1.0, id="above-everything-seen"),
        pytest.param("agent-a", {"tool_calls": 2.0}, 0.0, id="the-usual-constant-value"),
        pytest.param("agent-a", {"tool_calls": 3.0}, 1.0, id="above-a-constant"),
        pytest.param("agent-c", {"duration": 1e6}, 0.0, id="unknown-group-is-cold"),
    ],
)
def test_numeric_tails_are_per_group(
    two_agents: RarityModel, group: str, numbers: dict[str, float], expected: float
) -> None:
    scores = two_agents.score(COMMON[0], group, numbers, now=0.0)

    ((dimension, value),) = numbers.items()
    assert scores.numeric[dimension] == pytest.approx(expected, abs=0.05)
    others = set(DIMENSIONS) - {dimension}
    assert all(scores.numeric[other] == 0.0 for other in others)


@pytest.fixture(scope="module")
def hundred_values() -> RarityModel:
    # 0, 1, ..., 99 once each: each value is its own centroid, so ranks are exact and 98.5,
    # halfway between the 99th and the 100th value, has rank 0.99 (the tail quantile).
    # latency and duration get the same values: each dimension is its own tail
    model = RarityModel(RaritySettings(warmup_sessions=100))
    for i in range(100):
        model.observe("s", "support", {"latency": float(i), "duration": float(i)}, now=0.0)
    model.flush()
    return model


def duration_score(model: RarityModel, value: float) -> float:
    return model.score("s", "support", {"duration": value}, now=0.0).numeric["duration"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(50.0, 0.0, id="rank-0.505-scores-0"),
        pytest.param(98.4, 0.0, id="rank-0.984-just-below-the-tail-scores-0"),
        pytest.param(98.5, 0.5, id="rank-0.99-the-tail-quantile-scores-0.5"),
        pytest.param(99.0, 0.75, id="rank-0.995-scores-0.75"),
        pytest.param(99.5, 1.0, id="rank-1-above-every-value-scores-1"),
    ],
)
def test_tail_score_is_half_at_the_tail_quantile_then_linear(
    hundred_values: RarityModel, value: float, expected: float
) -> None:
    assert duration_score(hundred_values, value) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("dimension", "signal"),
    [
        pytest.param("latency", "tail_latency", id="longest-turn-fires-tail-latency"),
        pytest.param("duration", "tail_duration", id="whole-session-fires-tail-duration"),
    ],
)
def test_a_value_exactly_at_the_tail_quantile_scores_exactly_half(
    hundred_values: RarityModel, dimension: str, signal: str
) -> None:
    at_tail = hundred_values.score("s", "support", {dimension: 98.5}, now=0.0)

    assert at_tail.numeric[dimension] == 0.5
    assert at_tail.fired(0.5) == (signal,)


def test_numeric_signal_names() -> None:
    scores = RarityScores(
        0.7,
        {
            "latency": 0.95,
            "duration": 1.0,
            "tokens": 0.6,
            "span_count": 0.2,
            "tool_calls": 0.5,
        },
    )

    assert scores.fired(0.5) == (
        "rare_shape",
        "tail_latency",
        "tail_duration",
        "tail_tokens",
        "tail_tool_calls",
    )
    assert scores.fired(0.9) == ("tail_latency", "tail_duration")
    assert scores.fired(0.99) == ("tail_duration",)
    assert RarityScores(0.0).fired(0.0) == ()


def test_every_dimension_has_its_own_signal() -> None:
    assert DIMENSIONS == (
        "latency", "model_latency", "tool_latency", "duration", "tokens", "span_count",
        "tool_calls",
    )  # fmt: skip
    assert dict(TAIL_SIGNALS) == {
        "latency": "tail_latency",
        "model_latency": "tail_model_latency",
        "tool_latency": "tail_tool_latency",
        "duration": "tail_duration",
        "tokens": "tail_tokens",
        "span_count": "tail_span_count",
        "tool_calls": "tail_tool_calls",
    }


def test_a_group_with_few_values_scores_zero() -> None:
    model = RarityModel(RaritySettings(warmup_sessions=0, min_group_values=50))
    observe_all(model, common(49), now=0.0, group="quiet", numbers={"tokens": 100.0})
    assert model.score("s", "quiet", {"tokens": 1e9}, now=0.0).numeric["tokens"] == 0.0

    observe_all(model, common(1), now=0.0, group="quiet", numbers={"tokens": 100.0})
    assert model.score("s", "quiet", {"tokens": 1e9}, now=0.0).numeric["tokens"] == 1.0


def test_unknown_dimensions_are_refused() -> None:
    model = RarityModel(RaritySettings())
    with pytest.raises(ValueError, match="wall_time"):
        model.observe("s", "g", {"wall_time": 1.0}, now=0.0)
    with pytest.raises(ValueError, match="wall_time"):
        model.score("s", "g", {"wall_time": 1.0}, now=0.0)
    model.observe("s", "g", {"latency": 1.0}, now=0.0)  # a dimension now
    assert model.sessions_seen(0.0) == 1


def test_groups_are_bounded_least_recently_observed_evicted() -> None:
    model = RarityModel(RaritySettings(warmup_sessions=0, min_group_values=1, max_groups=3))
    for group in ("a", "b", "c", "a"):
        model.observe("s", group, {"duration": 1.0}, now=0.0)
    model.score("s", "b", {"duration": 5.0}, now=0.0)  # scoring is not a use
    model.observe("s", "d", {"duration": 1.0}, now=0.0)
    model.flush()

    assert model.groups == ("c", "a", "d")
    assert model.score("s", "b", {"duration": 5.0}, now=0.0).numeric["duration"] == 0.0
    assert model.score("s", "a", {"duration": 5.0}, now=0.0).numeric["duration"] == 1.0


# --- time ---------------------------------------------------------------------------------


def test_a_big_jump_in_time_leaves_nothing_behind() -> None:
    model = RarityModel(RaritySettings())
    observe_all(model, common(1000), now=0.0, numbers={"duration": 1.0})
    before = model.approx_bytes()

    model.observe("after-the-gap", "support", {"duration": 1.0}, now=1e7)

    assert model.sessions_seen(1e7) == 1
    assert model.approx_bytes() < before / 2
    assert model.score("new", "support", {"duration": 9.0}, now=1e7) == COLD


def test_time_never_goes_backwards() -> None:
    model = RarityModel(RaritySettings())
    observe_all(model, common(300), now=1000.0)
    observe_all(model, ["late"] * 300, now=10.0)  # counts as now=1000

    assert model.sessions_seen(10.0) == model.sessions_seen(1000.0) == 600
    assert shape_score(model, "late", now=10.0) == 0.0
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="finite"):
            model.observe("s", "g", NO_NUMBERS, now=bad)


def test_scoring_is_a_pure_read() -> None:
    model = RarityModel(RaritySettings())
    observe_all(model, common(500), now=0.0, numbers={"duration": 1.0})
    first = model.score("x", "support", {"duration": 2.0}, now=0.0)
    far_later = model.score("x", "support", {"duration": 2.0}, now=1e6)  # nothing live then

    assert far_later == COLD
    assert model.score("x", "support", {"duration": 2.0}, now=0.0) == first
    assert model.sessions_seen(0.0) == 500


# --- bounds and determinism ---------------------------------------------------------------


def test_memory_is_bounded_under_high_cardinality() -> None:
    limits = RaritySettings(window_s=100.0, max_groups=256)
    model = RarityModel(limits)
    sizes = []
    for i in range(50_000):
        model.observe(f"agent-{i % 1000}:tool-{i:05d}", f"agent-{i % 1000}", {"tokens": i}, i / 60)
        if i % 5_000 == 4_999:
            sizes.append(model.approx_bytes())

    shapes_bound = 64 + int(0.75 * 2**limits.shape_lg_max_k) * (len("agent-999:tool-00000") + 16)
    values_bound = 16 * limits.quantile_k  # per t-digest
    bound = limits.windows * shapes_bound + limits.max_groups * limits.windows * values_bound
    assert len(model.groups) == limits.max_groups
    assert max(sizes) <= bound
    full_ring = sizes[-3:]  # from 40k sessions on (667 s), six windows of 100 s are live
    assert max(full_ring) <= 1.2 * min(full_ring)  # it stops growing


def replay(seed: int) -> list[RarityScores]:
    rng = np.random.default_rng(seed)
    model = RarityModel(RaritySettings(warmup_sessions=100))
    scores = []
    for i in range(3000):
        shape = f"s{int(rng.zipf(1.5)) % 500}"
        group = f"g{i % 3}"
        numbers = {"duration": float(rng.lognormal(1, 1)), "tokens": float(rng.integers(9, 9999))}
        now = i * 0.5
        scores.append(model.score(shape, group, numbers, now))
        model.observe(shape, group, numbers, now)
        model.flush()  # one session a batch
    return scores


def test_the_same_traffic_gives_the_same_scores() -> None:
    first, second = replay(seed=3), replay(seed=3)

    assert first == second
    assert any(s.shape > 0 for s in first)
    assert any(s.numeric["duration"] > 0 for s in first)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from(["g1", "g2"]),
            st.floats(-1e6, 1e6),
            st.floats(0, 5000),
        ),
        max_size=60,
    )
)
def test_scores_stay_in_range(sessions: list[tuple[str, str, float, float]]) -> None:
    model = RarityModel(RaritySettings(warmup_sessions=5, min_group_values=3, window_s=60.0))
    for shape, group, value, now in sessions:
        scores = model.score(shape, group, {"duration": value}, now)
        assert 0.0 <= scores.shape <= 1.0
        assert set(scores.numeric) == set(DIMENSIONS)
        assert all(0.0 <= score <= 1.0 for score in scores.numeric.values())
        if scores.cold:  # a cold shape is never called rare
            assert scores.shape == 0.0
        model.observe(shape, group, {"duration": value}, now)
        model.flush()


@pytest.mark.parametrize(
    ("changes", "problems"),
    [
        pytest.param({"window_s": 0.0}, ["window_s"], id="window"),
        pytest.param({"decay": 0.0}, ["decay"], id="decay-zero"),
        pytest.param({"decay": 1.5}, ["decay"], id="decay-above-one"),
        pytest.param({"shape_lg_max_k": 2}, ["shape_lg_max_k"], id="sketch-too-small"),
        pytest.param({"tail_quantile": 1.0}, ["tail_quantile"], id="tail-quantile-one"),
        pytest.param(
            {"windows": 0, "max_groups": 0, "rare_shape_share": 0.0},
            ["windows", "max_groups", "rare_shape_share"],
            id="every-problem-at-once",
        ),
    ],
)
def test_invalid_settings_are_refused(changes: dict[str, float], problems: list[str]) -> None:
    with pytest.raises(ValueError) as raised:
        RaritySettings(**changes)  # type: ignore[arg-type]
    for problem in problems:
        assert problem in str(raised.value)


def test_a_reconfigured_model_scores_with_new_thresholds_on_what_it_learned() -> None:
    """A reload changes the tail quantile: what the model answered for the old one (the
    below-the-tail thresholds it remembers) must not answer for the new one."""
    model = RarityModel(RaritySettings(warmup_sessions=100))
    for i in range(100):
        model.observe("s", "support", {"duration": float(i)}, now=0.0)
    model.flush()
    for _ in range(20):  # enough scores for the current window to remember its threshold
        assert duration_score(model, 95.0) == 0.0
    model.reconfigure(RaritySettings(warmup_sessions=100, tail_quantile=0.9))
    assert duration_score(model, 95.0) == pytest.approx(0.5 + 0.5 * (0.955 - 0.9) / 0.1, abs=0.01)
    assert model.sessions_seen(0.0) == 100

    before = model.settings
    with pytest.raises(ValueError, match="windows"):
        model.reconfigure(RaritySettings(warmup_sessions=100, windows=3))
    assert model.settings is before


# --- shape parts, turns, typical values: what keeps long conversations ordinary -------------------


def test_a_shape_in_parts_is_as_rare_as_its_rarest_part() -> None:
    model = RarityModel(RaritySettings(warmup_sessions=0))
    workflow = ("^lookup", "lookup", "lookup>search", "search", "search$")
    for _ in range(200):
        model.observe(workflow, "support", NO_NUMBERS, now=0.0)

    # the workflow twice (two turns) is made of the same parts: as common as once
    assert model.score(workflow, "support", NO_NUMBERS, now=0.0).shape == 0.0
    unusual = (*workflow, "search>lookup", "refund")
    assert model.score(unusual, "support", NO_NUMBERS, now=0.0).shape == 1.0


def test_a_part_is_counted_once_per_session() -> None:
    model = RarityModel(RaritySettings(warmup_sessions=0, rare_shape_share=0.05))
    for _ in range(97):
        model.observe(("a",), "support", NO_NUMBERS, now=0.0)
    for _ in range(3):  # three sessions, each with the part five times: a share of 3%
        model.observe(("b", "b", "b", "b", "b"), "support", NO_NUMBERS, now=0.0)

    assert model.score(("b",), "support", NO_NUMBERS, now=0.0).shape == pytest.approx(
        0.5 + 0.5 * math.log10(0.05 / 0.03)
    )


@pytest.mark.parametrize(
    ("sightings", "expected"),
    [(1, 0.5), (2, 0.5), (3, 0.5 + 0.5 * math.log10(0.01 / 0.05))],
    ids=["once", "twice", "three-times-a-share-of-5pct"],
)
def test_a_part_seen_less_than_three_times_is_rare_whatever_its_share(
    sightings: int, expected: float
) -> None:
    """In a group of 60 sessions one sighting is already 1.7%: two make no habit."""
    model = RarityModel(RaritySettings(warmup_sessions=0, rare_shape_share=0.01))
    observe_all(model, ["usual"] * (60 - sightings) + ["odd"] * sightings, now=0.0)

    assert shape_score(model, "odd", now=0.0) == pytest.approx(expected)


def per_turn_model() -> RarityModel:
    """Turns of 0, 1, ..., 999 ms: one session of ten turns per hundred values."""
    model = RarityModel(RaritySettings(warmup_sessions=0))
    values = [float(v) for v in range(1000)]
    for start in range(0, 1000, 10):
        model.observe("s", "support", {"latency": values[start : start + 10]}, now=0.0)
    model.flush()
    return model


@pytest.mark.parametrize(
    ("value", "turns", "fires"),
    [
        pytest.param(995.0, 1, True, id="p99.5-of-one-turn"),
        pytest.param(995.0, 10, False, id="the-longest-of-ten-turns-at-p99.5-is-usual"),
        pytest.param(999.9, 10, True, id="the-longest-of-ten-beyond-everything"),
    ],
)
def test_the_longest_turn_is_ranked_as_the_longest_of_its_turns(
    value: float, turns: int, fires: bool
) -> None:
    """Learned per turn, the rank r of the longest of n turns is r**n: the chance that n
    ordinary turns stay below it. A conversation of many turns is no likelier to be called
    slow than one of a single turn."""
    scores = per_turn_model().score("s", "support", {"latency": value}, 0.0, {"latency": turns})
    assert (scores.numeric["latency"] >= 0.5) is fires


def test_a_group_needs_min_group_values_sessions_not_just_values() -> None:
    model = RarityModel(RaritySettings(warmup_sessions=0, min_group_values=50))
    for _ in range(10):  # ten sessions of ten turns: a hundred values
        model.observe("s", "quiet", {"latency": [1.0] * 10}, now=0.0)
    assert model.score("s", "quiet", {"latency": 1e9}, now=0.0).numeric["latency"] == 0.0


def test_a_typical_value_far_beyond_the_bulk_is_tail_however_many_share_it() -> None:
    """A degraded model slows 5% of sessions four times: a p99 sits inside them, but they are
    beyond Tukey's outer fence (Q3 + 3 IQR) of the agent's typical model call."""
    rng = np.random.default_rng(3)
    model = RarityModel(RaritySettings(warmup_sessions=0))
    normal = rng.uniform(0.8, 1.2, 950)
    slow = rng.uniform(3.5, 4.5, 50)
    for value in [*normal, *slow]:
        numbers = {"model_latency": float(value), "latency": float(value)}
        model.observe("s", "support", numbers, now=0.0)
    model.flush()

    scores = model.score("s", "support", {"model_latency": 3.6, "latency": 3.6}, now=0.0)
    assert scores.numeric["model_latency"] == 1.0
    assert scores.numeric["latency"] == 0.0  # an extreme, not fenced: ranked only
    usual = model.score("s", "support", {"model_latency": 1.19}, now=0.0)
    assert usual.numeric["model_latency"] == 0.0
