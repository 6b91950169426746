"""Retry: what one attempt to send a batch came to, and what to do next.

Everything here is a pure function of the send outcome, the time already spent on the batch
and a random source: no clock, no sleeping, no I/O. The delivery loop (``delivery.py``) reads
the clock, sleeps and counts; the transports only turn what the wire said into a ``SendResult``
with the classifiers below, so that which failures are transient is decided in one place.

Transient per the OTLP specification: for OTLP/gRPC the codes in ``RETRYABLE_GRPC_CODES`` (plus
RESOURCE_EXHAUSTED, see ``classify_grpc``); for OTLP/HTTP the statuses in
``RETRYABLE_HTTP_STATUSES``. A delay the server asks for (gRPC ``RetryInfo``, HTTP
``Retry-After`` in seconds) replaces our own backoff for that retry.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2


class Outcome(enum.Enum):
    OK = "ok"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one attempt to send a batch came to; built by the transports."""

    outcome: Outcome
    reason: str = ""
    server_delay_s: float | None = None  # RetryInfo / Retry-After; replaces our backoff
    rejected_spans: int = 0  # partial success: the downstream accepted the rest

    @classmethod
    def ok(cls, rejected_spans: int = 0, reason: str = "") -> SendResult:
        return cls(Outcome.OK, reason=reason, rejected_spans=rejected_spans)

    @classmethod
    def retryable(cls, reason: str, server_delay_s: float | None = None) -> SendResult:
        return cls(Outcome.RETRYABLE, reason=reason, server_delay_s=server_delay_s)

    @classmethod
    def permanent(cls, reason: str) -> SendResult:
        return cls(Outcome.PERMANENT, reason=reason)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter for one outgoing batch."""

    initial_interval_s: float = 1.0
    max_interval_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- fraction of each interval
    # give up on one batch after this (counted as failed, logged); 0: never, retry until the
    # batch is delivered or refused for good (with a disk queue, an outage then only fills it)
    max_elapsed_s: float = 300.0

    def backoff_s(self, retry_number: int, rng: random.Random) -> float:
        """Delay before retry ``retry_number`` (0 for the first retry), jitter applied."""
        base = min(self.max_interval_s, self.initial_interval_s * self.multiplier**retry_number)
        return max(0.0, base * (1.0 + rng.uniform(-self.jitter, self.jitter)))


@dataclass(frozen=True, slots=True)
class Delivered:
    """The attempt succeeded (``rejected_spans`` of the batch were refused by partial success)."""

    rejected_spans: int
    reason: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The batch is failed for good: a permanent error, or the deadline would pass."""

    why: str


@dataclass(frozen=True, slots=True)
class RetryIn:
    """Try again after ``delay_s``; ``server_asked``: the delay is the server's, not our backoff."""

    delay_s: float
    server_asked: bool


Step = Delivered | GiveUp | RetryIn


def next_step(
    policy: RetryPolicy,
    result: SendResult,
    *,
    retries: int,
    elapsed_s: float,
    rng: random.Random,
) -> Step:
    """What follows an attempt that came to ``result``, after ``retries`` retries and
    ``elapsed_s`` since the batch's first attempt began. A retry whose wait would end past
    ``max_elapsed_s`` is not made (0: no deadline)."""
    if result.outcome is Outcome.OK:
        return Delivered(result.rejected_spans, result.reason)
    if result.outcome is Outcome.PERMANENT:
        return GiveUp(f"permanent error: {result.reason}")
    if result.server_delay_s is not None:
        delay = max(0.0, result.server_delay_s)
    else:
        delay = policy.backoff_s(retries, rng)
    if policy.max_elapsed_s and elapsed_s + delay > policy.max_elapsed_s:
        return GiveUp(
            f"still failing after {policy.max_elapsed_s:g}s and {retries} retries "
            f"(last: {result.reason})"
        )
    return RetryIn(delay, server_asked=result.server_delay_s is not None)


# -- OTLP/gRPC ----------------------------------------------------------------------------

# Transient per the OTLP specification ("Failures", OTLP/gRPC), plus RESOURCE_EXHAUSTED
# (see classify_grpc).
RETRYABLE_GRPC_CODES = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def classify_grpc(code: grpc.StatusCode, details: str | None, trailing_metadata: Any) -> SendResult:
    """Map a failed Export call to retryable / permanent.

    RESOURCE_EXHAUSTED is retried (a throttling backend, or another sampler whose buffer is
    full), with the server's RetryInfo delay when it sends one. The OTLP spec retries it only
    with RetryInfo; we retry it always, bounded by ``max_elapsed_s``, because a kept session
    must not be lost to a backend that throttles without saying for how long. The exception
    is gRPC's own "message larger than max" refusal: the same bytes would be refused forever.
    A RetryInfo delay on any retryable code replaces our own backoff for that retry.
    """
    reason = f"{code.name}: {details or 'no details'}"
    delay = _retry_info_delay_s(trailing_metadata)
    too_large = code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (details or "")
    if code in RETRYABLE_GRPC_CODES and not too_large:
        return SendResult.retryable(reason, server_delay_s=delay)
    return SendResult.permanent(reason)


def _retry_info_delay_s(trailing_metadata: Any) -> float | None:
    """The RetryInfo delay carried in the ``grpc-status-details-bin`` trailer, if any."""
    if not trailing_metadata:
        return None
    for key, value in trailing_metadata:
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:  # a malformed trailer only costs us the server's hint
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                delay = info.retry_delay
                return max(0.0, float(delay.seconds) + float(delay.nanos) / 1e9)
    return None


# -- OTLP/HTTP ----------------------------------------------------------------------------

# Transient per the OTLP/HTTP specification; every other non-2xx status is permanent.
RETRYABLE_HTTP_STATUSES = frozenset({429, 502, 503, 504})


def classify_http(status: int, reason: str, retry_after: str | None) -> SendResult:
    """Map a non-2xx answer to retryable / permanent; ``reason`` describes it for the logs."""
    if status in RETRYABLE_HTTP_STATUSES:
        return SendResult.retryable(reason, server_delay_s=parse_retry_after(retry_after))
    return SendResult.permanent(reason)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After given in seconds; anything else (absent, HTTP-date, junk) gives None, and
    our own backoff applies."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
