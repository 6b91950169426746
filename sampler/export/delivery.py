"""The delivery loop: one sender task per exporter between its queue and its transport.

The pipeline hands kept data over through the synchronous, O(1) ``try_submit``. The sender
task waits for a full batch (or ``batch_timeout_s``, or a flush), takes it from the queue,
sends it through the transport and, when the attempt fails, asks ``retry.next_step`` what to
do: deliver, give up, or sleep and try again. Then it settles the batch with the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Protocol

from sampler.export.base import CancelledAfterSending, ExporterSettings, ExporterStats, Transport
from sampler.export.durable import DurableQueue
from sampler.export.queues import Batch, MemoryQueue, Queue
from sampler.export.retry import (
    Delivered,
    GiveUp,
    Outcome,
    RetryIn,
    SendResult,
    next_step,
)

logger = logging.getLogger(__name__)


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


class QueuedExporter:
    """An ``Exporter``: a queue (durable with ``settings.queue_dir``) and a transport, with the
    delivery loop between them.

    Invariants: ``queued_spans()`` counts the spans waiting in the queue plus the batch in
    flight. Every span accepted by ``try_submit`` ends up counted exactly once, in
    ``spans_sent`` or ``failed_spans``, or, with a durable queue, stays on disk for the next
    start.

    The injected ``clock`` drives retry backoff and the give-up deadline; the short wait of a
    partial batch (``batch_timeout_s``) uses the event loop's own time.
    """

    def __init__(
        self,
        transport: Transport,
        settings: ExporterSettings,
        *,
        clock: RetryClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self.name = transport.name
        self.settings = settings
        self.stats = ExporterStats()
        self._queue: Queue = (
            DurableQueue(self.name, settings, self.stats)
            if settings.queue_dir
            else MemoryQueue(settings.queue_max_spans)
        )
        self._clock: RetryClock = clock if clock is not None else SystemClock()
        self._rng = rng if rng is not None else random.Random()
        self._refused = False  # a submit was refused since the last batch was taken
        self._wakeup = asyncio.Event()  # something was submitted, or a flush/stop began
        self._idle = asyncio.Event()  # nothing queued and nothing in flight
        self._idle.set()
        self._stalled = asyncio.Event()  # the last attempt failed; the batch waits for a retry
        self._flushers = 0
        self._closing = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    # -- the Exporter protocol ------------------------------------------------------------

    def try_submit(self, request: bytes, span_count: int) -> bool:
        if self._closing or not self._queue.offer(request, span_count, time.monotonic()):
            self.stats.refused_submits += 1
            # A full queue is a reason to send what it holds now rather than wait for a fuller
            # batch: when queue_max_spans is below batch_max_spans that batch would never come.
            self._refused = True
            self._wakeup.set()
            return False
        self._idle.clear()
        self._wakeup.set()
        return True

    def queued_spans(self) -> int:
        return self._queue.spans()

    async def start(self) -> None:
        """Raises OSError when a durable queue's directory cannot be used."""
        if self._task is not None:
            return
        await self._queue.open()
        if self._queue.spans():  # left by an earlier run
            self._idle.clear()
        await self.transport.open()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"exporter {self.name}"
        )
        self._task.add_done_callback(self._log_crash)

    async def flush(self, timeout_s: float) -> bool:
        """Deliver everything queued (retrying) until empty or timeout; True if empty."""
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
        """Refuse new submits and deliver for up to ``timeout_s``, then close. A memory queue's
        leftovers are counted as failed; a durable queue stops delivering as soon as an attempt
        fails (the downstream is down: waiting would not help) and keeps the rest on disk."""
        if self._stopped:
            return
        self._stopped = True
        self._closing = True
        self._wakeup.set()
        if self._queue.durable:
            await self._flush_while_progressing(timeout_s)
        else:
            await self.flush(timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        lost_requests, lost_spans = await self._queue.close()
        if lost_spans:
            self.stats.failed_requests += lost_requests
            self.stats.failed_spans += lost_spans
            logger.error(
                "exporter %s: stopped before delivering %d spans (%d requests); dropped",
                self.name,
                lost_spans,
                lost_requests,
            )
        self._idle.set()
        await self.transport.close()

    async def _flush_while_progressing(self, timeout_s: float) -> None:
        if self.queued_spans() == 0 or self._task is None or self._task.done():
            return
        self._flushers += 1
        self._wakeup.set()
        waits = [asyncio.ensure_future(e.wait()) for e in (self._idle, self._stalled)]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._flushers -= 1
            for wait in waits:
                wait.cancel()

    # -- the sender task ------------------------------------------------------------------

    async def _run(self) -> None:
        s = self.settings
        while True:
            oldest = self._queue.oldest()
            if oldest is None:
                self._idle.set()  # nothing waiting or in flight
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._linger(oldest + s.batch_timeout_s)
            batch = self._queue.take(s.batch_max_spans, s.batch_max_bytes)
            self._refused = False
            try:
                await self._deliver(batch)
            except CancelledAfterSending as sent:
                if sent.result.outcome is Outcome.OK:
                    self._record_success(batch, sent.result)
                    self._queue.settle(batch)
                raise
            # Not settled when stop() cancels us mid-delivery: a memory queue counts the batch
            # as lost, a durable one leaves it unacknowledged, delivered after the next start.
            self._queue.settle(batch)
            if not self._queue.spans():
                self._idle.set()

    def _batch_is_full(self) -> bool:
        s = self.settings
        return self._refused or self._queue.full_batch_waiting(s.batch_max_spans, s.batch_max_bytes)

    async def _linger(self, deadline: float) -> None:
        """Wait until a full batch is queued, the oldest request is batch_timeout_s old, or a
        flush or stop asks for everything now."""
        while not (self._batch_is_full() or self._flushers or self._closing):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def _deliver(self, batch: Batch) -> None:
        started = self._clock.now()
        retries = 0
        while True:
            sending = time.perf_counter()  # a measurement, not the retry loop's (injected) time
            try:
                result = await self.transport.send(batch.body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a transport bug must not wedge the queue
                logger.exception("exporter %s: unexpected error while sending", self.name)
                result = SendResult.permanent(f"unexpected {type(exc).__name__}: {exc}")
            self.stats.send_durations.observe(time.perf_counter() - sending)
            if result.outcome is Outcome.RETRYABLE:
                self._stalled.set()
            step = next_step(
                self.settings.retry,
                result,
                retries=retries,
                elapsed_s=self._clock.now() - started,
                rng=self._rng,
            )
            if isinstance(step, Delivered):
                self._stalled.clear()
                self._record_success(batch, result)
                return
            if isinstance(step, GiveUp):
                self._record_failure(batch, step.why)
                return
            self._log_retry(step, retries, batch, result.reason)
            await self._clock.sleep(step.delay_s)
            retries += 1
            self.stats.retries += 1

    def _log_retry(self, step: RetryIn, retries: int, batch: Batch, reason: str) -> None:
        if retries == 0:
            logger.warning(
                "exporter %s: send failed (%s); retrying %d spans in %.2fs%s",
                self.name,
                reason,
                batch.span_count,
                step.delay_s,
                " as the server asked" if step.server_asked else "",
            )
        else:
            logger.debug(
                "exporter %s: retry %d failed (%s); next in %.2fs",
                self.name,
                retries,
                reason,
                step.delay_s,
            )

    def _record_success(self, batch: Batch, result: SendResult) -> None:
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

    def _record_failure(self, batch: Batch, why: str) -> None:
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
