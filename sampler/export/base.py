"""Shared delivery machinery for every exporter: bounded queue, batching, retries.

The pipeline hands kept data over as ready-made serialized ``ExportTraceServiceRequest`` bytes
through the synchronous, O(1) ``try_submit``. One background task per exporter drains the queue:
it joins submitted requests into outgoing batches, sends each batch through the transport's
``_send`` and retries transient failures with exponential backoff and jitter (or the delay the
server asked for) until the batch is delivered, refused for good, or ``max_elapsed_s`` passes.

Joining requests is valid because ``ExportTraceServiceRequest`` has a single field, the repeated
``resource_spans`` (field 1): the concatenation of serialized requests is one request holding all
of their resource spans. A submitted request is never split.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sampler.tls import ClientTls

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter for one outgoing batch."""

    initial_interval_s: float = 1.0
    max_interval_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- fraction of each interval
    max_elapsed_s: float = 300.0  # give up on one batch after this (counted as failed, logged)

    def backoff_s(self, retry_number: int, rng: random.Random) -> float:
        """Delay before retry ``retry_number`` (0 for the first retry), jitter applied."""
        base = min(self.max_interval_s, self.initial_interval_s * self.multiplier**retry_number)
        return max(0.0, base * (1.0 + rng.uniform(-self.jitter, self.jitter)))


@dataclass(frozen=True, slots=True)
class ExporterSettings:
    timeout_s: float = 10.0  # per attempt
    queue_max_spans: int = 200_000  # bounded queue, counted in spans (queued + in flight)
    batch_max_spans: int = 8192  # max spans per outgoing request
    batch_max_bytes: int = 4 * 1024 * 1024
    batch_timeout_s: float = 0.2  # max time a partial batch waits
    retry: RetryPolicy = RetryPolicy()
    # gRPC metadata / HTTP headers; may hold credentials, so kept out of repr()
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    compression: str = "none"  # "none" | "gzip"
    tls: ClientTls | None = None  # for grpcs:// and https://; None: the system's trusted roots

    def __post_init__(self) -> None:
        if self.compression not in ("none", "gzip"):
            raise ValueError(f"compression must be 'none' or 'gzip', not {self.compression!r}")


@dataclass(slots=True)
class ExporterStats:
    """Plain counters, read by the self-metrics layer."""

    requests_sent: int = 0  # outgoing requests the downstream accepted
    spans_sent: int = 0  # spans in them, minus any the downstream rejected (partial success)
    retries: int = 0  # retry attempts (not counting the first attempt of a batch)
    failed_requests: int = 0  # batches given up on (permanent error, deadline), plus requests
    # still queued or in flight when stop() ran out of time
    failed_spans: int = 0  # spans in those batches, plus spans rejected by partial success
    refused_submits: int = 0  # try_submit calls answered False


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


class RetryClock(Protocol):
    """Time as the retry loop sees it: ``sampler.clock.Clock`` plus a sleep, so tests can pass
    a fake that records the delays asked for and returns at once."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Exporter(Protocol):
    name: str  # e.g. "grpc://127.0.0.1:4317", for logs
    stats: ExporterStats

    def try_submit(self, request: bytes, span_count: int) -> bool:
        """Sync, O(1). False when the queue cannot take it (the caller refuses intake)."""
        ...

    def queued_spans(self) -> int: ...

    async def start(self) -> None: ...

    async def flush(self, timeout_s: float) -> bool:
        """Deliver everything queued (retrying) until empty or timeout; True if empty."""
        ...

    async def stop(self, timeout_s: float) -> None:
        """Refuse new submits, flush, then close; what is left is counted as failed."""
        ...


@dataclass(slots=True)
class _Batch:
    body: bytes
    span_count: int
    request_count: int


class QueuedExporter(ABC):
    """Base of all exporters: the queue, batching and retry loop live here.

    Invariants: ``queued_spans()`` counts the spans waiting in the queue plus the batch in
    flight, and never exceeds ``queue_max_spans`` except for a single oversized request, which
    is accepted when the queue is empty so that it cannot block intake forever. Every span
    accepted by ``try_submit`` ends up counted exactly once, in ``spans_sent`` or
    ``failed_spans``.

    The injected ``clock`` drives retry backoff and the give-up deadline; the short wait of a
    partial batch (``batch_timeout_s``) uses the event loop's own time.
    """

    name: str
    stats: ExporterStats

    def __init__(
        self,
        name: str,
        settings: ExporterSettings,
        *,
        clock: RetryClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.stats = ExporterStats()
        self._clock: RetryClock = clock if clock is not None else SystemClock()
        self._rng = rng if rng is not None else random.Random()
        # (request, span_count, enqueued_at in time.monotonic())
        self._pending: deque[tuple[bytes, int, float]] = deque()
        self._pending_spans = 0
        self._pending_bytes = 0
        self._inflight_spans = 0
        self._wakeup = asyncio.Event()  # something was submitted, or a flush/stop began
        self._idle = asyncio.Event()  # nothing queued and nothing in flight
        self._idle.set()
        self._flushers = 0
        self._closing = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    # -- transport hooks ------------------------------------------------------------------

    @abstractmethod
    async def _send(self, body: bytes) -> SendResult:
        """One attempt to deliver one serialized request; must not raise for expected errors."""

    async def _open(self) -> None:
        """Create connections / sessions / files; called once by start()."""
        return None

    async def _close(self) -> None:
        """Release what _open created; called once by stop() after the queue is drained."""
        return None

    # -- Exporter protocol ----------------------------------------------------------------

    def try_submit(self, request: bytes, span_count: int) -> bool:
        queued = self.queued_spans()
        if self._closing or (queued > 0 and queued + span_count > self.settings.queue_max_spans):
            self.stats.refused_submits += 1
            return False
        self._pending.append((request, span_count, time.monotonic()))
        self._pending_spans += span_count
        self._pending_bytes += len(request)
        self._idle.clear()
        self._wakeup.set()
        return True

    def queued_spans(self) -> int:
        return self._pending_spans + self._inflight_spans

    async def start(self) -> None:
        if self._task is not None:
            return
        await self._open()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"exporter {self.name}"
        )
        self._task.add_done_callback(self._log_crash)

    async def flush(self, timeout_s: float) -> bool:
        if self.queued_spans() == 0:
            return True
        if self._task is None or self._task.done():
            return False
        self._flushers += 1
        self._wakeup.set()  # cut a partial batch's wait short
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        finally:
            self._flushers -= 1
        return True

    async def stop(self, timeout_s: float) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._closing = True
        self._wakeup.set()
        drained = await self.flush(timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not drained and self.queued_spans() > 0:
            lost_spans = self.queued_spans()
            lost_requests = len(self._pending) + (1 if self._inflight_spans else 0)
            self.stats.failed_requests += lost_requests
            self.stats.failed_spans += lost_spans
            logger.error(
                "exporter %s: stopped before delivering %d spans (%d requests); dropped",
                self.name,
                lost_spans,
                lost_requests,
            )
        self._pending.clear()
        self._pending_spans = self._pending_bytes = self._inflight_spans = 0
        self._idle.set()
        await self._close()

    # -- sender task ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._linger()
            batch = self._take_batch()
            # Left set if stop() cancels us mid-delivery, so stop() can count the batch as lost.
            self._inflight_spans = batch.span_count
            await self._deliver(batch)
            self._inflight_spans = 0
            if not self._pending:
                self._idle.set()

    def _batch_is_full(self) -> bool:
        s = self.settings
        return self._pending_spans >= s.batch_max_spans or self._pending_bytes >= s.batch_max_bytes

    async def _linger(self) -> None:
        """Wait until a full batch is queued, the oldest request is batch_timeout_s old, or a
        flush or stop asks for everything now."""
        deadline = self._pending[0][2] + self.settings.batch_timeout_s
        while not (self._batch_is_full() or self._flushers or self._closing):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> _Batch:
        """Pop requests from the front while the batch stays within both limits; always at
        least one, so an oversized request goes out alone rather than being split."""
        s = self.settings
        parts: list[bytes] = []
        spans = size = 0
        while self._pending:
            request, count, _ = self._pending[0]
            too_big = spans + count > s.batch_max_spans or size + len(request) > s.batch_max_bytes
            if parts and too_big:
                break
            self._pending.popleft()
            parts.append(request)
            spans += count
            size += len(request)
        self._pending_spans -= spans
        self._pending_bytes -= size
        return _Batch(b"".join(parts), spans, len(parts))

    async def _deliver(self, batch: _Batch) -> None:
        policy = self.settings.retry
        give_up_at = self._clock.now() + policy.max_elapsed_s
        retry_number = 0
        while True:
            try:
                result = await self._send(batch.body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a transport bug must not wedge the queue
                logger.exception("exporter %s: unexpected error while sending", self.name)
                result = SendResult.permanent(f"unexpected {type(exc).__name__}: {exc}")

            if result.outcome is Outcome.OK:
                self._record_success(batch, result)
                return
            if result.outcome is Outcome.PERMANENT:
                self._record_failure(batch, f"permanent error: {result.reason}")
                return

            if result.server_delay_s is not None:
                delay = max(0.0, result.server_delay_s)
            else:
                delay = policy.backoff_s(retry_number, self._rng)
            if self._clock.now() + delay > give_up_at:
                self._record_failure(
                    batch,
                    f"still failing after {policy.max_elapsed_s:g}s and {retry_number} retries "
                    f"(last: {result.reason})",
                )
                return
            if retry_number == 0:
                logger.warning(
                    "exporter %s: send failed (%s); retrying %d spans in %.2fs%s",
                    self.name,
                    result.reason,
                    batch.span_count,
                    delay,
                    " as the server asked" if result.server_delay_s is not None else "",
                )
            else:
                logger.debug(
                    "exporter %s: retry %d failed (%s); next in %.2fs",
                    self.name,
                    retry_number,
                    result.reason,
                    delay,
                )
            await self._clock.sleep(delay)
            retry_number += 1
            self.stats.retries += 1

    def _record_success(self, batch: _Batch, result: SendResult) -> None:
        rejected = min(max(result.rejected_spans, 0), batch.span_count)
        self.stats.requests_sent += 1
        self.stats.spans_sent += batch.span_count - rejected
        if rejected or result.reason:
            self.stats.failed_spans += rejected
            logger.warning(
                "exporter %s: downstream rejected %d of %d spans: %s",
                self.name,
                rejected,
                batch.span_count,
                result.reason or "no reason given",
            )

    def _record_failure(self, batch: _Batch, why: str) -> None:
        self.stats.failed_requests += 1
        self.stats.failed_spans += batch.span_count
        logger.error(
            "exporter %s: gave up on %d spans (%d requests joined): %s",
            self.name,
            batch.span_count,
            batch.request_count,
            why,
        )

    def _log_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("exporter %s: sender task died", self.name, exc_info=task.exception())
