"""The durable queue (``exporter.queue_dir``): a memory queue in front of ``disk_queue``.

``offer`` writes the request through to disk before it answers True; the memory queue in front
holds the oldest of them (up to ``queue_max_spans``) ready to send, and the rest *spill*: they
are on disk only and are read back when the memory queue empties. Order is kept: once one
request spills, the following ones spill too until the reader catches up, so disk order is
delivery order. A batch is acknowledged on disk once settled (delivered or given up on); on
open, what the directory holds is delivered first. Only ``queue_max_bytes`` refuses an offer.

Invariant: on disk, the records from the acknowledged position are the batch in flight, then
the memory queue, then the spilled records, in this order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sampler.export.base import ExporterSettings, ExporterStats
from sampler.export.disk_queue import (
    SYNC_INTERVAL_S,
    CorruptRecord,
    Damage,
    DiskQueue,
    Position,
)
from sampler.export.queues import Batch, MemoryQueue

logger = logging.getLogger(__name__)


class DurableQueue:
    """See the module docstring. Keeps the disk gauges and damage counts of ``stats``."""

    durable = True

    def __init__(self, name: str, settings: ExporterSettings, stats: ExporterStats) -> None:
        self.name = name  # the exporter's, for logs
        self.settings = settings
        self.stats = stats
        self._front = MemoryQueue(settings.queue_max_spans)
        self._disk: DiskQueue | None = None
        # the spill: records on disk only, from _spill_from to the disk queue's tail
        self._spill_from = Position(0, 0)
        self._spilled_records = 0
        self._spilled_spans = 0
        self._disk_full = False  # refusing at queue_max_bytes; logged once per episode
        self._sync_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
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
            logger.info(
                "exporter %s: resuming delivery of %d kept span(s) in %d request(s) from the "
                "disk queue %s",
                self.name,
                found.spans,
                found.records,
                disk.directory,
            )
        self._update_gauges()
        self._sync_task = asyncio.get_running_loop().create_task(
            self._sync_forever(), name=f"fsync {self.name}"
        )

    def offer(self, request: bytes, span_count: int, now: float) -> bool:
        """Write through to disk; keep the request in memory too while memory has room and
        nothing is spilled."""
        disk = self._disk
        if disk is None:
            return False
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
            return False
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
            return False
        if self._disk_full:
            self._disk_full = False
            logger.info("exporter %s: the disk queue takes requests again", self.name)
        if self._spilled_records or not self._front.offer(request, span_count, now, end):
            if not self._spilled_records:
                self._spill_from = start
            self._spilled_records += 1
            self._spilled_spans += span_count
            self.stats.disk_spilled_spans += span_count
        self._update_gauges()
        return True

    def oldest(self) -> float | None:
        """Reads spilled records back into memory first when memory holds none."""
        while self._front.oldest() is None and self._spilled_records and self._disk is not None:
            self._refill(self._disk)
        return self._front.oldest()

    def full_batch_waiting(self, max_spans: int, max_bytes: int) -> bool:
        return self._spilled_records > 0 or self._front.full_batch_waiting(max_spans, max_bytes)

    def take(self, max_spans: int, max_bytes: int) -> Batch:
        return self._front.take(max_spans, max_bytes)

    def settle(self, batch: Batch) -> None:
        self._front.settle(batch)
        if self._disk is None or batch.end is None:
            return
        try:
            self._disk.ack(batch.end)
        except OSError as err:  # the position still moved: a restart delivers it again
            logger.warning("exporter %s: cannot write the disk queue's ack: %s", self.name, err)
        self._update_gauges()

    def spans(self) -> int:
        return self._front.spans() + self._spilled_spans

    async def close(self) -> tuple[int, int]:
        """Leave what is not delivered on disk for the next start: nothing is lost."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
            self._sync_task = None
        disk = self._disk
        if disk is None:
            return 0, 0
        if self.spans():
            logger.info(
                "exporter %s: %d kept span(s) in %d request(s) stay in the disk queue %s; they "
                "are delivered after the next start",
                self.name,
                self.spans(),
                self.stats.disk_records,
                disk.directory,
            )
        self._front.clear()
        self._spilled_records = self._spilled_spans = 0
        self._disk = None
        try:
            disk.close()
        except OSError as err:
            logger.error("exporter %s: closing the disk queue failed: %s", self.name, err)
        return 0, 0

    # -- reading back ---------------------------------------------------------------------

    def _refill(self, disk: DiskQueue) -> None:
        """Read spilled records back into the memory queue: one batch's worth at most."""
        s = self.settings
        room = s.queue_max_spans - self._front.spans()
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
            self._update_gauges()
            return
        for record in records:
            self._front.append(record.body, record.span_count, 0.0, record.end)
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
            self._update_gauges()
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
        self._update_gauges()

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

    def _update_gauges(self) -> None:
        if self._disk is not None:
            self.stats.disk_bytes = self._disk.used_bytes
            self.stats.disk_records = self._front.requests() + self._spilled_records

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


def _unknown_note(damage: tuple[Damage, ...]) -> str:
    unframed = sum(1 for d in damage if d.unframed)
    if not unframed:
        return ""
    return (
        f" ({unframed} stretch(es) without a readable record header, each counted as one "
        "record; the spans they held, if any, are not known)"
    )
