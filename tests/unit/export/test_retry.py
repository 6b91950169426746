"""Retry as a pure function: the step after each outcome, and how the wire's answers are
classified (no sockets, no clock: elapsed time and randomness are passed in)."""

from __future__ import annotations

import random

import grpc
import pytest

from sampler.export.retry import (
    Delivered,
    GiveUp,
    Outcome,
    RetryIn,
    RetryPolicy,
    SendResult,
    Step,
    classify_grpc,
    classify_http,
    next_step,
    parse_retry_after,
)
from tests.unit.export.support import retry_info_trailer

NO_JITTER = RetryPolicy(initial_interval_s=1.0, max_interval_s=30.0, jitter=0.0, max_elapsed_s=60)
UNAVAILABLE = SendResult.retryable("UNAVAILABLE")


def throttled(delay_s: float) -> SendResult:
    return SendResult.retryable("throttled", server_delay_s=delay_s)


def wait(delay_s: float, *, server_asked: bool = False) -> RetryIn:
    return RetryIn(delay_s, server_asked)


@pytest.mark.parametrize(
    ("result", "retries", "elapsed_s", "step"),
    [
        (SendResult.ok(), 0, 0.0, Delivered(0, "")),
        (SendResult.ok(rejected_spans=2, reason="old"), 3, 50.0, Delivered(2, "old")),
        (SendResult.permanent("BAD"), 0, 0.0, GiveUp("permanent error: BAD")),
        (UNAVAILABLE, 0, 0.0, wait(1.0)),
        (UNAVAILABLE, 3, 7.0, wait(8.0)),
        (UNAVAILABLE, 9, 10.0, wait(30.0)),
        (throttled(7.5), 0, 0.0, wait(7.5, server_asked=True)),
        (throttled(-3.0), 0, 0.0, wait(0.0, server_asked=True)),
        (UNAVAILABLE, 5, 30.0, wait(30.0)),
        (UNAVAILABLE, 5, 30.5, GiveUp("still failing after 60s and 5 retries (last: UNAVAILABLE)")),
        (
            throttled(61.0),
            0,
            0.0,
            GiveUp("still failing after 60s and 0 retries (last: throttled)"),
        ),
    ],
    ids=[
        "ok",
        "partial-success",
        "permanent",
        "first-retry",
        "fourth-retry-doubles",
        "capped-at-max-interval",
        "server-delay-replaces-backoff",
        "negative-server-delay-is-zero",
        "wait-ending-at-the-deadline",
        "wait-ending-past-the-deadline",
        "server-delay-past-the-deadline",
    ],
)
def test_next_step(result: SendResult, retries: int, elapsed_s: float, step: Step) -> None:
    rng = random.Random(1)
    assert next_step(NO_JITTER, result, retries=retries, elapsed_s=elapsed_s, rng=rng) == step


def test_max_elapsed_zero_never_gives_up() -> None:
    policy = RetryPolicy(max_elapsed_s=0.0, jitter=0.0)
    step = next_step(
        policy,
        SendResult.retryable("UNAVAILABLE"),
        retries=500,
        elapsed_s=1e6,
        rng=random.Random(1),
    )
    assert step == RetryIn(30.0, server_asked=False)


def test_jitter_stays_within_its_fraction_and_comes_from_the_random_source() -> None:
    policy = RetryPolicy(initial_interval_s=4.0, jitter=0.2)
    delays = [policy.backoff_s(0, random.Random(seed)) for seed in range(200)]
    assert all(3.2 <= d <= 4.8 for d in delays)
    assert len(set(delays)) > 100  # jittered, not one value
    assert policy.backoff_s(0, random.Random(5)) == policy.backoff_s(0, random.Random(5))


def test_backoff_is_capped_at_max_interval() -> None:
    policy = RetryPolicy(initial_interval_s=1.0, max_interval_s=5.0, jitter=0.0)
    delays = [policy.backoff_s(n, random.Random(1)) for n in range(6)]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


# -- OTLP/gRPC ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "delay_s", "outcome"),
    [
        (grpc.StatusCode.UNAVAILABLE, None, Outcome.RETRYABLE),
        (grpc.StatusCode.CANCELLED, None, Outcome.RETRYABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, None, Outcome.RETRYABLE),
        (grpc.StatusCode.ABORTED, None, Outcome.RETRYABLE),
        (grpc.StatusCode.OUT_OF_RANGE, None, Outcome.RETRYABLE),
        (grpc.StatusCode.DATA_LOSS, None, Outcome.RETRYABLE),
        (grpc.StatusCode.UNAVAILABLE, 0.25, Outcome.RETRYABLE),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 3.0, Outcome.RETRYABLE),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, None, Outcome.RETRYABLE),
        (grpc.StatusCode.INVALID_ARGUMENT, None, Outcome.PERMANENT),
        (grpc.StatusCode.UNAUTHENTICATED, None, Outcome.PERMANENT),
        (grpc.StatusCode.UNIMPLEMENTED, None, Outcome.PERMANENT),
        (grpc.StatusCode.INTERNAL, None, Outcome.PERMANENT),
    ],
    ids=lambda v: v.name.lower() if hasattr(v, "name") else f"delay={v}",
)
def test_status_classification(
    code: grpc.StatusCode, delay_s: float | None, outcome: Outcome
) -> None:
    trailer = retry_info_trailer(code, delay_s) if delay_s is not None else ()
    result = classify_grpc(code, "details", trailer)
    assert result.outcome is outcome
    if outcome is Outcome.RETRYABLE:
        assert result.server_delay_s == delay_s


def test_a_malformed_status_trailer_is_ignored() -> None:
    result = classify_grpc(
        grpc.StatusCode.UNAVAILABLE, None, (("grpc-status-details-bin", b"\xff\xff"),)
    )
    assert result.outcome is Outcome.RETRYABLE
    assert result.server_delay_s is None


def test_a_message_over_the_servers_size_limit_is_not_retried() -> None:
    result = classify_grpc(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (5000 vs. 1000)", ()
    )
    assert result.outcome is Outcome.PERMANENT


# -- OTLP/HTTP ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "outcome", "delay_s"),
    [
        (429, "3", Outcome.RETRYABLE, 3.0),
        (502, None, Outcome.RETRYABLE, None),
        (503, "Wed, 21 Oct 2015 07:28:00 GMT", Outcome.RETRYABLE, None),
        (504, None, Outcome.RETRYABLE, None),
        (400, "3", Outcome.PERMANENT, None),
        (401, None, Outcome.PERMANENT, None),
        (404, None, Outcome.PERMANENT, None),
        (500, None, Outcome.PERMANENT, None),
    ],
    ids=["429", "502", "503-http-date", "504", "400", "401", "404", "500"],
)
def test_http_status_classification(
    status: int, retry_after: str | None, outcome: Outcome, delay_s: float | None
) -> None:
    result = classify_http(status, f"HTTP {status}", retry_after)
    assert (result.outcome, result.server_delay_s, result.reason) == (
        outcome,
        delay_s,
        f"HTTP {status}",
    )


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        (" 0.5 ", 0.5),
        ("0", 0.0),
        (None, None),
        ("-1", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("inf", None),
    ],
    ids=["int", "float", "zero", "absent", "negative", "junk", "http-date", "inf"],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds
