"""Shared delivery machinery for every exporter: bounded queue, batching, retries.

The pipeline hands kept data over as ready-made serialized ``ExportTraceServiceRequest`` bytes
through the synchronous, O(1) ``try_submit``. One background task per exporter drains the queue:
it joins submitted requests into outgoing batches, sends each batch through the transport's
``_send`` and retries transient failures with exponential backoff and jitter (or the delay the
server asked for) until the batch is delivered, refused for good, or ``max_elapsed_s`` passes.

Joining requests is valid because ``ExportTraceServiceRequest`` has a single field, the repeated
``resource_spans`` (field 1): the concatenation of serialized requests is one request holding all
of their resource spans. A submitted request is never split.

With ``queue_dir`` set the queue is durable (``disk_queue.DiskQueue``): ``try_submit`` writes the
request through to disk before it answers True, the in-memory queue holds the oldest of them (up
to ``queue_max_spans``) ready to send, and the rest *spill*: they are on disk only and read back
when the memory queue empties. A batch is acknowledged on disk once delivered (or given up on);
on start, what the directory holds is delivered first. Only ``queue_max_bytes`` refuses a submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sampler.export.disk_queue import (
    SYNC_INTERVAL_S,
    CorruptRecord,
    Damage,
    DiskQueue,
    Position,
)
from sampler.tls import ClientTls

logger = logging.getLogger(__name__)


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
    queue_dir: str = ""  # a durable queue there (disk_queue.py); "": in memory only
    queue_max_bytes: int = 1 << 30  # disk use of queue_dir at most

    def __post_init__(self) -> None:
        if self.compression not in ("none", "gzip"):
            raise ValueError(f"compression must be 'none' or 'gzip', not {self.compression!r}")
        if self.queue_max_bytes <= 0:
            raise ValueError("queue_max_bytes must be above 0")


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
    # With a disk queue (queue_dir) only:
    disk_bytes: int = 0  # gauge: size of the queue's segment files
    disk_records: int = 0  # gauge: requests on disk the downstream has not acknowledged
    disk_spilled_spans: int = 0  # written to disk only, the in-memory queue being full
    disk_replayed_spans: int = 0  # found on disk at start (delivered from there)
    disk_corrupt_records: int = 0  # records lost to damage on disk (a stretch of unreadable
    # framing counts as one); their spans, where their headers tell, count in failed_spans
    disk_full_refusals: int = 0  # submits refused at queue_max_bytes or by a failed write
    # (an attempt each: the pipeline offers a waiting request again on every tick and request)


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
    end: Position | None  # on disk: acknowledging it acknowledges the batch


class _Queued:
    """One submitted request waiting in memory."""

    __slots__ = ("request", "span_count", "enqueued_at", "end")

    def __init__(
        self, request: bytes, span_count: int, enqueued_at: float, end: Position | None
    ) -> None:
        self.request = request
        self.span_count = span_count
        self.enqueued_at = enqueued_at  # time.monotonic(); 0 for requests read back from disk
        self.end = end  # its end position in the disk queue, if there is one


class QueuedExporter(ABC):
    """Base of all exporters: the queue, batching and retry loop live here.

    Invariants: ``queued_spans()`` counts the spans waiting in the queue plus the batch in
    flight (plus, with a disk queue, the spilled ones). The spans in memory never exceed
    ``queue_max_spans`` except for a single oversized request, which is accepted when the queue
    is empty so that it cannot block intake forever. Every span accepted by ``try_submit`` ends
    up counted exactly once, in ``spans_sent`` or ``failed_spans``, or, with a disk queue, stays
    on disk for the next start. On disk, the records from the acknowledged position are the
    batch in flight, then the memory queue, then the spilled records, in this order.

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
        self._pending: deque[_Queued] = deque()
        self._pending_spans = 0
        self._pending_bytes = 0
        self._inflight_spans = 0
        self._inflight_requests = 0
        self._refused = False  # a submit was refused since the last batch was taken
        self._wakeup = asyncio.Event()  # something was submitted, or a flush/stop began
        self._idle = asyncio.Event()  # nothing queued and nothing in flight
        self._idle.set()
        self._stalled = asyncio.Event()  # the last attempt failed; the batch waits for a retry
        self._flushers = 0
        self._closing = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        # the disk queue (opened by start() when settings.queue_dir is set), and its spill:
        # records on disk only, from _spill_from to the disk queue's tail
        self._disk: DiskQueue | None = None
        self._spill_from = Position(0, 0)
        self._spilled_records = 0
        self._spilled_spans = 0
        self._disk_full = False  # refusing at queue_max_bytes; logged once per episode
        self._sync_task: asyncio.Task[None] | None = None
        self._inflight: _Batch | None = None  # the batch _deliver is working on

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
        if self.settings.queue_dir:
            return self._submit_durably(request, span_count)
        queued = self.queued_spans()
        if self._closing or (queued > 0 and queued + span_count > self.settings.queue_max_spans):
            return self._refuse()
        self._pending.append(_Queued(request, span_count, time.monotonic(), None))
        self._pending_spans += span_count
        self._pending_bytes += len(request)
        self._idle.clear()
        self._wakeup.set()
        return True

    def _refuse(self) -> bool:
        self.stats.refused_submits += 1
        # A full queue is a reason to send what it holds now rather than wait for a fuller
        # batch: when queue_max_spans is below batch_max_spans that batch would never come.
        self._refused = True
        self._wakeup.set()
        return False

    def _submit_durably(self, request: bytes, span_count: int) -> bool:
        """Write through to disk; keep the request in memory too while memory has room and
        nothing is spilled (order is kept: once one record spills, the next ones do too)."""
        disk = self._disk
        if self._closing or disk is None:
            return self._refuse()
        if not disk.has_room(len(request)):
            self.stats.disk_full_refusals += 1
            if not self._disk_full:
                self._disk_full = True
                logger.warning(
                    "exporter %s: disk queue full (%d of %d bytes); refusing intake until the "
                    "downstream catches up",
                    self.name,
                    disk.used_bytes,
                    disk.max_bytes,
                )
            return self._refuse()
        start = disk.tail
        try:
            end = disk.append(request, span_count)
        except OSError as err:
            self.stats.disk_full_refusals += 1
            if not self._disk_full:
                self._disk_full = True
                logger.error(
                    "exporter %s: cannot write to the disk queue (%s); refusing intake",
                    self.name,
                    err,
                )
            return self._refuse()
        if self._disk_full:
            self._disk_full = False
            logger.info("exporter %s: the disk queue takes requests again", self.name)
        in_memory = self._pending_spans + self._inflight_spans
        if not self._spilled_records and (
            in_memory == 0 or in_memory + span_count <= self.settings.queue_max_spans
        ):
            self._pending.append(_Queued(request, span_count, time.monotonic(), end))
            self._pending_spans += span_count
            self._pending_bytes += len(request)
        else:
            if not self._spilled_records:
                self._spill_from = start
            self._spilled_records += 1
            self._spilled_spans += span_count
            self.stats.disk_spilled_spans += span_count
        self._update_disk_gauges()
        self._idle.clear()
        self._wakeup.set()
        return True

    def queued_spans(self) -> int:
        return self._pending_spans + self._inflight_spans + self._spilled_spans

    async def start(self) -> None:
        if self._task is not None:
            return
        if self.settings.queue_dir:
            self._open_disk()
        await self._open()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"exporter {self.name}")
        self._task.add_done_callback(self._log_crash)
        if self._disk is not None:
            self._sync_task = loop.create_task(self._sync_forever(), name=f"fsync {self.name}")

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
        if self._disk is not None:
            await self._stop_durably(timeout_s)
            return
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

    # -- the disk queue -------------------------------------------------------------------

    def _open_disk(self) -> None:
        """Open (and recover) the disk queue; what it holds is delivered before anything new.
        Raises OSError when the directory cannot be used."""
        disk = DiskQueue.open(self.settings.queue_dir, self.settings.queue_max_bytes)
        self._disk = disk
        found = disk.recovery
        if found.damage:
            self._count_damage(found.damage)
            logger.error(
                "exporter %s: disk queue %s: skipped %d damaged stretch(es), %d bytes: lost "
                "%d record(s) and %d span(s)%s; every valid record after them is delivered",
                self.name,
                disk.directory,
                len(found.damage),
                found.corrupt_bytes,
                found.corrupt_records,
                found.corrupt_spans,
                _unknown_note(found.damage),
            )
        if found.records:
            self._spill_from = disk.head
            self._spilled_records = found.records
            self._spilled_spans = found.spans
            self.stats.disk_replayed_spans += found.spans
            self._idle.clear()
            logger.info(
                "exporter %s: resuming delivery of %d kept span(s) in %d request(s) from the "
                "disk queue %s",
                self.name,
                found.spans,
                found.records,
                disk.directory,
            )
        self._update_disk_gauges()

    def _refill(self, disk: DiskQueue) -> None:
        """Read spilled records back into the memory queue: one batch's worth at most."""
        s = self.settings
        room = s.queue_max_spans - self._pending_spans - self._inflight_spans
        try:
            records, after = disk.read(
                self._spill_from,
                max_records=self._spilled_records,
                max_spans=max(1, min(s.batch_max_spans, room)),
                max_bytes=s.batch_max_bytes,
            )
        except (CorruptRecord, OSError) as err:
            self._skip_unreadable(disk, err)
            return
        if not records:  # the count was off (cannot happen): trust the disk, not the count
            logger.error(
                "exporter %s: %d spilled record(s) expected, none on disk",
                self.name,
                self._spilled_records,
            )
            self._spilled_records = self._spilled_spans = 0
            self._update_disk_gauges()
            return
        for record in records:
            self._pending.append(_Queued(record.body, record.span_count, 0.0, record.end))
            self._pending_spans += record.span_count
            self._pending_bytes += len(record.body)
            self._spilled_spans -= record.span_count
        self._spilled_records -= len(records)
        self._spill_from = after

    def _skip_unreadable(self, disk: DiskQueue, err: CorruptRecord | OSError) -> None:
        """Go on reading after damage found while reading back, from the next valid record of
        the segment (or from the next segment when this one cannot be read at all), and count
        again what is left to read."""
        if isinstance(err, CorruptRecord):
            try:
                damage = disk.skip_damage(err.position)
            except OSError as unreadable:
                self._skip_segment(disk, err.position, unreadable)
                return
            self._count_damage((damage,))
            self._spill_from = Position(damage.segment, damage.end)
            self._recount_spilled(disk)
            logger.error(
                "exporter %s: disk queue %s: %s (%s); skipped %s",
                self.name,
                disk.directory,
                err,
                err.why,
                damage.describe(),
            )
            self._update_disk_gauges()
        else:
            self._skip_segment(disk, self._spill_from, err)

    def _skip_segment(self, disk: DiskQueue, at: Position, err: OSError) -> None:
        self.stats.disk_corrupt_records += 1
        before = self._spilled_spans
        self._spill_from = disk.skip_segment(at)
        self._recount_spilled(disk)
        logger.error(
            "exporter %s: disk queue %s: %s; skipped to the next segment, losing up to %d span(s)",
            self.name,
            disk.directory,
            err,
            before - self._spilled_spans,
        )
        self._update_disk_gauges()

    def _recount_spilled(self, disk: DiskQueue) -> None:
        try:
            self._spilled_records, self._spilled_spans = disk.count(self._spill_from)
        except OSError:  # the disk fails: nothing more can be read back
            self._spilled_records = self._spilled_spans = 0

    def _count_damage(self, damage: tuple[Damage, ...]) -> None:
        """Records lost to damage on disk are kept data lost: counted as failed as well."""
        lost_records = sum(d.lost_records for d in damage)
        lost_spans = sum(d.spans for d in damage)
        self.stats.disk_corrupt_records += lost_records
        self.stats.failed_requests += lost_records
        self.stats.failed_spans += lost_spans

    def _acknowledge(self, batch: _Batch) -> None:
        if self._disk is None or batch.end is None:
            return
        try:
            self._disk.ack(batch.end)
        except OSError as err:  # the position still moved: a restart delivers it again
            logger.warning("exporter %s: cannot write the disk queue's ack: %s", self.name, err)
        self._update_disk_gauges()

    def _update_disk_gauges(self) -> None:
        if self._disk is not None:
            self.stats.disk_bytes = self._disk.used_bytes
            self.stats.disk_records = (
                len(self._pending) + self._inflight_requests + self._spilled_records
            )

    async def _sync_forever(self) -> None:
        """fsync on an interval, in a worker thread (see disk_queue's durability notes)."""
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            job = self._disk.sync_later() if self._disk is not None else None
            if job is not None:
                try:
                    await asyncio.to_thread(job)
                except OSError as err:
                    logger.error("exporter %s: fsync of the disk queue failed: %s", self.name, err)

    async def _stop_durably(self, timeout_s: float) -> None:
        """Deliver while the downstream takes it (up to ``timeout_s``), then leave the rest on
        disk for the next start: nothing is counted lost."""
        await self._flush_while_progressing(timeout_s)
        for task in (self._task, self._sync_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        disk = self._disk
        assert disk is not None
        if self.queued_spans():
            logger.info(
                "exporter %s: %d kept span(s) in %d request(s) stay in the disk queue %s; they "
                "are delivered after the next start",
                self.name,
                self.queued_spans(),
                self.stats.disk_records,
                disk.directory,
            )
        self._pending.clear()
        self._pending_spans = self._pending_bytes = self._inflight_spans = 0
        self._inflight_requests = self._spilled_records = self._spilled_spans = 0
        self._idle.set()
        self._disk = None
        try:
            disk.close()
        except OSError as err:
            logger.error("exporter %s: closing the disk queue failed: %s", self.name, err)
        await self._close()

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

    # -- sender task ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._pending and self._spilled_records and self._disk is not None:
                self._refill(self._disk)
                continue
            if not self._pending:
                self._idle.set()  # nothing pending, spilled or in flight
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._linger()
            batch = self._take_batch()
            # Left set if stop() cancels us mid-delivery, so stop() can count the batch as lost
            # (with a disk queue: so it stays unacknowledged, delivered after the next start).
            self._inflight_spans = batch.span_count
            self._inflight_requests = batch.request_count
            self._inflight = batch
            await self._deliver(batch)
            self._inflight = None
            self._inflight_spans = self._inflight_requests = 0
            self._acknowledge(batch)
            if not self._pending and not self._spilled_records:
                self._idle.set()

    def _settle_in_flight(self, result: SendResult) -> None:
        """Count the batch in flight as delivered by ``result``, an attempt that finished while
        the sender was being cancelled. For a transport that cannot abandon an attempt halfway
        (the file: a line is written whole or not at all), which lets the attempt finish and
        calls this, so that stop() neither counts the batch lost nor leaves it on disk to be
        delivered again."""
        batch = self._inflight
        if batch is None or result.outcome is not Outcome.OK:
            return
        self._inflight = None
        self._record_success(batch, result)
        self._inflight_spans = self._inflight_requests = 0
        self._acknowledge(batch)

    def _batch_is_full(self) -> bool:
        """Whether waiting could not make the batch any fuller: it is at a batch limit, or the
        queue is (a submit was refused, or requests spill to disk)."""
        s = self.settings
        return (
            self._pending_spans >= min(s.batch_max_spans, s.queue_max_spans)
            or self._pending_bytes >= s.batch_max_bytes
            or self._refused
            or self._spilled_records > 0
        )

    async def _linger(self) -> None:
        """Wait until a full batch is queued, the oldest request is batch_timeout_s old, or a
        flush or stop asks for everything now."""
        deadline = self._pending[0].enqueued_at + self.settings.batch_timeout_s
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
        end: Position | None = None
        while self._pending:
            head = self._pending[0]
            request, count = head.request, head.span_count
            too_big = spans + count > s.batch_max_spans or size + len(request) > s.batch_max_bytes
            if parts and too_big:
                break
            self._pending.popleft()
            parts.append(request)
            spans += count
            size += len(request)
            end = head.end
        self._pending_spans -= spans
        self._pending_bytes -= size
        self._refused = False
        return _Batch(b"".join(parts), spans, len(parts), end)

    async def _deliver(self, batch: _Batch) -> None:
        policy = self.settings.retry
        give_up_at = self._clock.now() + policy.max_elapsed_s if policy.max_elapsed_s else math.inf
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
                self._stalled.clear()
                self._record_success(batch, result)
                return
            if result.outcome is Outcome.PERMANENT:
                self._record_failure(batch, f"permanent error: {result.reason}")
                return
            self._stalled.set()

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


def _unknown_note(damage: tuple[Damage, ...]) -> str:
    unframed = sum(1 for d in damage if d.unframed)
    if not unframed:
        return ""
    return (
        f" ({unframed} stretch(es) without a readable record header, each counted as one "
        "record; the spans they held, if any, are not known)"
    )
