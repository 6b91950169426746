"""A durable first-in first-out queue of kept requests on disk (``exporter.queue_dir``).

Layout of the directory::

    lock                        held (flock) by the one process that owns the queue
    ack                         the position up to which the downstream acknowledged records
    00000000000000000007.seg    append-only segment files, numbered in write order

A record is a 12-byte header, ``<body length u32><span count u32><crc32 u32>`` (little endian;
the CRC covers the span count and the body), then the body: one serialized
``ExportTraceServiceRequest``. A *position* is (segment number, byte offset); the queue holds
the records from the acknowledged position (``head``) to the write position (``tail``).

Durability, exactly:

- ``append`` hands the record to the operating system with one ``pwritev`` before it returns
  (no user-space buffer). From then on the record survives the death of the process (SIGKILL,
  the OOM killer, a crash): the kernel owns the bytes.
- Surviving the loss of the machine (power, kernel panic) needs ``fsync``. ``sync`` /
  ``sync_later`` do it; the exporter calls them every ``SYNC_INTERVAL_S``, so a machine crash
  can lose the records of the last interval, and fsync stays off the hot path.
- The ``ack`` file is replaced atomically (write, rename) after each delivered batch, without
  fsync: an older ack after a machine crash only means records delivered again.

Recovery (``open``) reads every record from ``head`` to the end and checks its length and CRC.
Damage (a torn write, a flipped bit, bytes overwritten or inserted) costs only the damaged bytes:
reading *resynchronises* at the next offset where a whole record with a matching CRC starts, and
everything valid after it is delivered (see ``_SegmentView.resync`` for how a false match is kept
practically impossible and the search bounded). Each damaged stretch is reported as a ``Damage``
with the records and spans lost, as far as the damaged bytes still tell. Damage found at open is
remembered as a hole that reads skip (damage running to the end of a segment is cut off);
damage found later, while reading back, raises ``CorruptRecord`` and ``skip_damage`` steps over
it. Everything here is synchronous (numpy for the resync scan); time and asyncio stay with the
exporter.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

HEADER = struct.Struct("<III")  # body length, span count, crc32(span count + body)
_COUNT = struct.Struct("<I")
_ACK_POSITION = struct.Struct("<QQ")  # segment, offset; followed by their crc32
SEGMENT_SUFFIX = ".seg"
MAX_SEGMENT_BYTES = 64 << 20
MIN_SEGMENT_BYTES = 64 << 10
MAX_RECORD_BYTES = 1 << 30  # a length beyond this is a torn header, not a record
SYNC_INTERVAL_S = 1.0
# The resync search (``_SegmentView.resync``) CRC-checks candidates whose header does not chain
# on to further plausible headers only while it has hashed less than UNCHAINED times the bytes
# it searches, and no candidate at all past TOTAL times: a 64 MiB segment of garbage costs at
# most 512 MiB of CRC32 (~0.15 s) plus a header scan of ~0.15 s.
RESYNC_UNCHAINED_BUDGET = 2
RESYNC_TOTAL_BUDGET = 8
RESYNC_BUDGET_FLOOR = 1 << 20
_RESYNC_CHUNKS = (1 << 16, 1 << 20)  # candidates are looked for a chunk at a time
_READ_BYTES = 1 << 20  # a segment is read a piece of at most this at a time


class Position(NamedTuple):
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Record:
    body: bytes
    span_count: int
    end: Position  # acknowledging this position acknowledges the record and all before it


@dataclass(frozen=True, slots=True)
class Damage:
    """A stretch of a segment, ``[start, end)``, that holds no valid record and is skipped.

    ``end`` is where the next valid record starts (or the end of the segment). What was lost is
    read from the damaged bytes as far as they allow: ``records`` and ``spans`` are those of the
    headers that can be followed from ``start`` (a record whose body was damaged; a record cut
    short by the end of the segment, a torn last write); a span count is only as right as the
    header that holds it. If those headers do not lead exactly to ``end``, the rest is
    ``unframed``: overwritten or inserted bytes, or a header too damaged to follow, whose
    records and spans, if any, are unknown; it counts as one more lost record.
    """

    segment: int
    start: int
    end: int
    records: int = 0
    spans: int = 0
    unframed_bytes: int = 0
    searched: bool = True  # False: candidates in it went unchecked (the search's CRC budget)

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def unframed(self) -> bool:
        return self.unframed_bytes > 0

    @property
    def lost_records(self) -> int:
        return self.records + (1 if self.unframed else 0)

    def describe(self) -> str:
        where = f"segment {self.segment} offsets {self.start}-{self.end} ({self.size} bytes)"
        lost = f"{self.records} record(s) with {self.spans} span(s) lost"
        if self.unframed:
            lost += (
                f", and {self.unframed_bytes} bytes without a readable record header: their "
                "records and spans, if any, are unknown (counted as one record)"
            )
        if not self.searched:
            lost += "; some offsets went unchecked (search budget): a valid record may be lost"
        return f"{where}: {lost}"


@dataclass(frozen=True, slots=True)
class Recovery:
    """What ``DiskQueue.open`` found: the unacknowledged records, and the damage it skipped."""

    records: int = 0
    spans: int = 0
    damage: tuple[Damage, ...] = ()

    @property
    def corrupt_records(self) -> int:
        """Records lost to damage (an unframed stretch counts as one)."""
        return sum(d.lost_records for d in self.damage)

    @property
    def corrupt_spans(self) -> int:
        """Spans in the lost records whose header could still be read."""
        return sum(d.spans for d in self.damage)

    @property
    def corrupt_bytes(self) -> int:
        return sum(d.size for d in self.damage)


class CorruptRecord(Exception):
    """A record that fails its length or CRC check while being read back."""

    def __init__(self, position: Position, why: str) -> None:
        super().__init__(f"corrupt record at segment {position.segment} offset {position.offset}")
        self.position = position
        self.why = why


def encode_header(body: bytes, span_count: int) -> bytes:
    return HEADER.pack(len(body), span_count, record_crc(span_count, body))


def record_crc(span_count: int, body: bytes | memoryview) -> int:
    return zlib.crc32(body, zlib.crc32(_COUNT.pack(span_count)))


def segment_bytes_for(max_bytes: int) -> int:
    """Segments of an eighth of the cap (64 KiB to 64 MiB): acknowledged records wait for their
    whole segment to be deleted, so at most about one segment of the cap is not usable."""
    return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, max_bytes // 8))


class DiskQueue:
    """Append-only segments plus an acknowledged position; see the module docstring.

    Invariants: ``bytes`` is the total size of the segment files; ``head <= tail``; every
    segment before ``head.segment`` is deleted; the segment ``tail`` points into is the only one
    written to (``active``). Records are read back and acknowledged in write order. A hole
    (damage skipped) starts where a valid record ends and ends where one starts (or where its
    segment ends), so every position reads and acknowledgements handle is a record boundary.
    """

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.recovery = Recovery()
        self._segments: dict[int, int] = {}  # number -> size, ascending
        self._holes: dict[int, dict[int, int]] = {}  # number -> {start: end} of damage skipped
        self._bytes = 0
        self._head = Position(1, 0)
        self._active = 1
        self._active_fd = -1
        self._lock_fd = -1
        self._read: tuple[int, int] | None = None  # (segment, fd) kept open for reads
        self._unsynced_fds: list[int] = []  # rolled-over segments written since the last sync
        self._dirty = False
        self._dir_dirty = False

    # -- opening and recovery -----------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: str | Path, max_bytes: int, *, segment_bytes: int | None = None
    ) -> DiskQueue:
        """Lock the directory (creating it), recover what it holds, start a new segment.

        Raises OSError when the directory cannot be used or another process holds it."""
        queue = cls(
            Path(directory),
            max_bytes,
            segment_bytes if segment_bytes is not None else segment_bytes_for(max_bytes),
        )
        queue.directory.mkdir(parents=True, exist_ok=True)
        queue._lock()
        try:
            queue._recover()
        except BaseException:
            queue.close()
            raise
        return queue

    def _lock(self) -> None:
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OSError(
                    err.errno, f"queue directory {self.directory} is in use by another process"
                ) from None
            raise
        self._lock_fd = fd

    def _recover(self) -> None:
        numbers = sorted(
            int(p.name[: -len(SEGMENT_SUFFIX)])
            for p in self.directory.iterdir()
            if p.name.endswith(SEGMENT_SUFFIX) and p.name[: -len(SEGMENT_SUFFIX)].isdigit()
        )
        head = self._read_ack()
        if head is None:
            head = Position(numbers[0] if numbers else 1, 0)
        for number in [n for n in numbers if n < head.segment]:  # acknowledged, not yet deleted
            self._path(number).unlink(missing_ok=True)
        numbers = [n for n in numbers if n >= head.segment]
        if numbers and numbers[0] != head.segment:  # the acked segment itself is gone
            head = Position(numbers[0], 0)
        records = spans = 0
        damage: list[Damage] = []
        for number in numbers:
            path = self._path(number)
            size = path.stat().st_size
            start = min(head.offset, size) if number == head.segment else 0
            if number == head.segment:
                head = Position(number, start)
            with _SegmentView(path, size) as view:
                for item in view.scan(number, start):
                    if isinstance(item, Damage):
                        damage.append(item)
                        self._log_damage(item, len(damage))
                        if item.end < size:
                            self._holes.setdefault(number, {})[item.start] = item.end
                        else:  # nothing valid after it: cut it off (a torn last write)
                            size = item.start
                    else:
                        records += 1
                        spans += item.span_count
            if size < path.stat().st_size:
                os.truncate(path, size)
            self._segments[number] = size
        if len(damage) > _DAMAGE_LOG_LINES:
            logger.error(
                "disk queue %s: %d damaged stretches in all (%d logged)",
                self.directory,
                len(damage),
                _DAMAGE_LOG_LINES,
            )
        self._bytes = sum(self._segments.values())
        self._active = (numbers[-1] + 1) if numbers else head.segment + 1
        self._head = head
        if records == 0:  # nothing to deliver: start clean
            for number in list(self._segments):
                self._delete(number)
            self._head = Position(self._active, 0)
        self._open_active()
        if records and self._next(self._head) != self._head:
            # Damage right at the head: acknowledge past it, so that a restart before the next
            # delivery does not find and count it again. (Damage further on is found again if
            # the process restarts before the records in front of it are acknowledged.)
            with contextlib.suppress(OSError):
                self.ack(self._head)
        self.recovery = Recovery(records, spans, tuple(damage))

    def _log_damage(self, damage: Damage, ordinal: int) -> None:
        if ordinal <= _DAMAGE_LOG_LINES:
            logger.error("disk queue %s: skipped damage at %s", self.directory, damage.describe())

    def _read_ack(self) -> Position | None:
        try:
            data = (self.directory / "ack").read_bytes()
        except FileNotFoundError:
            return None
        position = _decode_ack(data)
        if position is not None:
            return position
        logger.warning(
            "disk queue %s: the ack file is unreadable; delivering again from the oldest segment",
            self.directory,
        )
        return None

    # -- the queue ----------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return self._bytes

    @property
    def head(self) -> Position:
        return self._head

    @property
    def tail(self) -> Position:
        return Position(self._active, self._segments[self._active])

    @property
    def is_empty(self) -> bool:
        return self._next(self._head) == self.tail

    def has_room(self, body_size: int) -> bool:
        """Whether a record of ``body_size`` fits under ``max_bytes``. An empty queue takes any
        record, so that one larger than the cap cannot block the queue for ever."""
        return self._bytes + HEADER.size + body_size <= self.max_bytes or self.is_empty

    def append(self, body: bytes, span_count: int) -> Position:
        """Write one record; returns its end position. When this returns, the record survives
        the death of this process. Raises OSError (disk full, I/O error) with nothing written."""
        size = self._segments[self._active]
        record_size = HEADER.size + len(body)
        if size and size + record_size > self.segment_bytes:
            self._roll()
            size = 0
        try:
            written = os.pwritev(self._active_fd, [encode_header(body, span_count), body], size)
            if written != record_size:
                raise OSError(errno.ENOSPC, f"short write ({written} of {record_size} bytes)")
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._active_fd, size)
            raise
        self._segments[self._active] = size + record_size
        self._bytes += record_size
        self._dirty = True
        return Position(self._active, size + record_size)

    def read(
        self, start: Position, *, max_records: int, max_spans: int, max_bytes: int
    ) -> tuple[list[Record], Position]:
        """Records from ``start`` on, while within the limits (always one, if any is there);
        also returns where the next read starts. Raises CorruptRecord."""
        records: list[Record] = []
        spans = size = 0
        position = self._next(start)
        tail = self.tail
        while position != tail and len(records) < max_records:
            fd = self._reader(position.segment)
            header = os.pread(fd, HEADER.size, position.offset)
            if len(header) < HEADER.size:
                raise CorruptRecord(position, "short header")
            length, count, crc = HEADER.unpack(header)
            if records and (spans + count > max_spans or size + length > max_bytes):
                break
            segment_end = self._segments[position.segment]
            if position.offset + HEADER.size + length > segment_end:
                raise CorruptRecord(position, "length beyond the end of the segment")
            body = os.pread(fd, length, position.offset + HEADER.size)
            if len(body) < length or record_crc(count, body) != crc:
                raise CorruptRecord(position, "CRC mismatch")
            end = Position(position.segment, position.offset + HEADER.size + length)
            records.append(Record(body, count, end))
            spans += count
            size += length
            position = self._next(end)
        return records, position

    def skip_damage(self, position: Position) -> Damage:
        """Step over the damage ``read`` raised CorruptRecord for at ``position``: find where
        the next valid record of that segment starts and remember the stretch as a hole, which
        reads, counts and acknowledgements skip from then on. Returns the damage, to be counted
        once by the caller. Raises OSError when the segment cannot be read."""
        size = self._segments[position.segment]
        with _SegmentView(self._path(position.segment), size) as view:
            damage = view.resync(position.segment, position.offset)
        self._holes.setdefault(position.segment, {})[damage.start] = damage.end
        return damage

    def skip_segment(self, position: Position) -> Position:
        """Where reading resumes when a segment cannot be read at all: the next segment."""
        later = [n for n in self._segments if n > position.segment]
        return Position(later[0], 0) if later else self.tail

    def count(self, start: Position) -> tuple[int, int]:
        """(records, spans) that reads from ``start`` will deliver up to the tail: damage not
        yet skipped is resynchronised over, as ``read`` plus ``skip_damage`` will."""
        records = spans = 0
        position = self._next(start)
        tail = self.tail
        while position != tail:
            number = position.segment
            size = self._segments[number]
            with _SegmentView(self._path(number), size) as view:
                for item in view.scan(number, position.offset, self._holes.get(number, {})):
                    if not isinstance(item, Damage):
                        records += 1
                        spans += item.span_count
            if number == self._active:
                break
            position = self._next(Position(number, size))
        return records, spans

    def ack(self, end: Position) -> None:
        """Everything before ``end`` was delivered (or given up on): remember it and delete the
        segments it empties. Raises OSError if the ack file cannot be written; the position is
        still taken (a restart then delivers those records again)."""
        end = self._next(end)  # past holes: a restart need not find that damage again
        self._head = end
        for number in [n for n in self._segments if n < end.segment]:
            self._delete(number)
        if end.segment != self._active and end.offset >= self._segments.get(end.segment, 0):
            self._delete(end.segment)
        if self.is_empty and self._segments[self._active]:
            finished = self._active  # start afresh, so that its acknowledged bytes can go
            self._roll()
            self._delete(finished)
            self._head = self.tail
        tmp = self.directory / "ack.tmp"
        tmp.write_bytes(_encode_ack(end))
        os.replace(tmp, self.directory / "ack")

    # -- durability and closing ---------------------------------------------------------------

    def sync(self) -> None:
        """fsync everything written so far (segments and the directory), now."""
        job = self.sync_later()
        if job is not None:
            job()

    def sync_later(self) -> Callable[[], None] | None:
        """The fsync of everything written so far, as a job that owns its file descriptors, so
        it can run in a worker thread while appends go on; None when nothing is unsynced."""
        fds = self._unsynced_fds
        self._unsynced_fds = []
        if self._dirty and self._active_fd >= 0:
            fds.append(os.dup(self._active_fd))
        if self._dir_dirty:
            fds.append(os.open(self.directory, os.O_RDONLY))
        self._dirty = self._dir_dirty = False
        if not fds:
            return None

        def job() -> None:
            try:
                for fd in fds:
                    os.fsync(fd)
            finally:
                for fd in fds:
                    os.close(fd)

        return job

    def close(self) -> None:
        """Sync and release the directory. What is not acknowledged stays for the next open."""
        try:
            if self._active_fd >= 0:
                self.sync()
        finally:
            for fd in self._unsynced_fds:
                os.close(fd)
            self._unsynced_fds = []
            self._close_reader()
            if self._active_fd >= 0:
                os.close(self._active_fd)
                self._active_fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1

    # -- internals ----------------------------------------------------------------------------

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:020d}{SEGMENT_SUFFIX}"

    def _open_active(self) -> None:
        self._active_fd = os.open(
            self._path(self._active), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
        )
        self._segments[self._active] = 0
        self._dir_dirty = True

    def _roll(self) -> None:
        if self._dirty:
            self._unsynced_fds.append(self._active_fd)  # fsynced and closed by the next sync
        else:
            os.close(self._active_fd)
        self._dirty = False
        self._active += 1
        self._open_active()

    def _next(self, position: Position) -> Position:
        """The same place, moved past holes and past the ends of finished segments."""
        while True:
            hole_end = self._holes.get(position.segment, {}).get(position.offset)
            if hole_end is not None:
                position = Position(position.segment, hole_end)
            elif position.segment != self._active and position.offset >= self._segments.get(
                position.segment, 0
            ):
                later = [n for n in self._segments if n > position.segment]
                position = Position(later[0], 0)
            else:
                return position

    def _reader(self, number: int) -> int:
        if self._read is None or self._read[0] != number:
            self._close_reader()
            self._read = (number, os.open(self._path(number), os.O_RDONLY))
        return self._read[1]

    def _close_reader(self) -> None:
        if self._read is not None:
            os.close(self._read[1])
            self._read = None

    def _delete(self, number: int) -> None:
        if self._read is not None and self._read[0] == number:
            self._close_reader()
        self._bytes -= self._segments.pop(number, 0)
        self._holes.pop(number, None)
        self._path(number).unlink(missing_ok=True)
        self._dir_dirty = True


_DAMAGE_LOG_LINES = 10  # per open: a segment of garbage must not flood the log


class _Found(NamedTuple):
    offset: int
    length: int
    span_count: int


class _SegmentView:
    """One segment file read with ``pread`` (in pieces of at most 1 MiB, so that walking a
    64 MiB segment, or checking a candidate that claims to be 60 MiB long, holds a few MiB),
    to walk its records and resynchronise over damage.

    Resynchronising (``resync``) looks for the first offset after the damage where a whole
    record starts: its header in bounds and the CRC32 over its span count and body matching. The
    CRC decides; a random match has odds of 2**-32 per candidate checked, and candidates are
    few: a header is a *candidate* only if it is plausible (a non-empty body that fits in the
    segment and holds at least a byte per span, as every request the exporter writes does:
    about one offset in 8,000 of OTLP data, one in 25,000 of random bytes, none in zeroes),
    found by a vectorised scan at ~0.5 GB/s. The CRC work is bounded: a candidate whose length
    leads to two more plausible headers, or exactly to the end of the segment (as a real
    record's does unless more damage follows), is always checked; others only while the
    search has hashed less than ``RESYNC_UNCHAINED_BUDGET`` times the bytes it searches; none
    past ``RESYNC_TOTAL_BUDGET`` times. A candidate left unchecked is reported
    (``Damage.searched``): a valid record could be lost with it; the budget never lets a
    candidate through without its CRC.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.size = size
        self._fd = os.open(path, os.O_RDONLY)

    def __enter__(self) -> _SegmentView:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def scan(
        self, segment: int, start: int, holes: dict[int, int] | None = None
    ) -> Iterator[_Found | Damage]:
        """Each valid record from ``start`` on, and a Damage for each stretch between them that
        holds none (``holes``, damage already known, are stepped over silently)."""
        position = start
        while position < self.size:
            if holes and position in holes:
                position = holes[position]
                continue
            found = self.record_at(position)
            if found is not None:
                yield found
                position += HEADER.size + found.length
            else:
                damage = self.resync(segment, position)
                yield damage
                position = damage.end

    def record_at(self, offset: int) -> _Found | None:
        """The valid record at ``offset``: whole within the segment, its CRC matching."""
        header = self._header(offset)
        if header is None:
            return None
        length, count, crc = header
        end = offset + HEADER.size + length
        if length > MAX_RECORD_BYTES or end > self.size:
            return None
        found = zlib.crc32(_COUNT.pack(count))
        for piece in range(offset + HEADER.size, end, _READ_BYTES):
            found = zlib.crc32(os.pread(self._fd, min(_READ_BYTES, end - piece), piece), found)
        return _Found(offset, length, count) if found == crc else None

    def _header(self, offset: int) -> tuple[int, int, int] | None:
        if offset + HEADER.size > self.size:
            return None
        data = os.pread(self._fd, HEADER.size, offset)
        if len(data) < HEADER.size:  # the file shrank under us: as good as damaged
            return None
        length, count, crc = HEADER.unpack(data)
        return length, count, crc

    def resync(self, segment: int, start: int) -> Damage:
        """The damage from ``start`` (where no valid record starts) to the next valid record."""
        end, searched = self._next_record(start)
        return self._assess(segment, start, end, searched)

    def _plausible(self, offset: int) -> tuple[int, int] | None:
        """(length, span count) of a header at ``offset`` that could be a record's."""
        header = self._header(offset)
        if header is None:
            return None
        length, count, _ = header
        if length == 0 or count > length or offset + HEADER.size + length > self.size:
            return None
        return length, count

    def _chains(self, offset: int) -> bool:
        """Whether the candidate at ``offset`` is followed by two more plausible headers, or
        reaches the end of the segment exactly before that."""
        position = offset
        for _ in range(3):
            header = self._plausible(position)
            if header is None:
                return False
            position += HEADER.size + header[0]
            if position == self.size:
                return True
        return True

    def _next_record(self, start: int) -> tuple[int, bool]:
        header = self._plausible(start)
        if header is not None:  # a damaged body leaves its length right: the next one is there
            after = start + HEADER.size + header[0]
            if after == self.size or self.record_at(after) is not None:
                return after, True
        searched = self.size - start
        unchained_budget = RESYNC_UNCHAINED_BUDGET * searched + RESYNC_BUDGET_FLOOR
        total_budget = RESYNC_TOTAL_BUDGET * searched + RESYNC_BUDGET_FLOOR
        spent = unchained_spent = 0
        complete = True
        for offset, length in self._candidates(start + 1):
            chained = self._chains(offset)
            if spent + length > total_budget or (
                not chained and unchained_spent + length > unchained_budget
            ):
                complete = False
                continue
            spent += length
            if not chained:
                unchained_spent += length
            if self.record_at(offset) is not None:
                return offset, complete
        return self.size, complete

    def _candidates(self, start: int) -> Iterator[tuple[int, int]]:
        """(offset, length) of each plausible header from ``start`` on, in order."""
        last = self.size - HEADER.size  # the last offset a header fits at
        low = start
        chunk = _RESYNC_CHUNKS[0]
        while low <= last:
            n = min(chunk, last + 1 - low)
            data = os.pread(self._fd, n + 7, low)  # the headers' first 8 bytes at n offsets
            if len(data) < n + 7:  # the file shrank under us
                return
            # little-endian u32 at every byte offset: views with a stride of one byte
            lengths = np.ndarray((n,), dtype="<u4", buffer=data, offset=0, strides=(1,))
            counts = np.ndarray((n,), dtype="<u4", buffer=data, offset=4, strides=(1,))
            # bytes after each header, at most MAX_RECORD_BYTES (segments stay below 4 GiB)
            room = np.arange(last - low, last - low - n, -1, dtype=np.uint32)
            np.minimum(room, MAX_RECORD_BYTES, out=room)
            plausible = lengths <= room
            plausible &= counts <= lengths
            plausible &= lengths != 0
            found = np.flatnonzero(plausible)
            yield from zip((found + low).tolist(), lengths[found].tolist(), strict=True)
            low += n
            chunk = _RESYNC_CHUNKS[1]

    def _assess(self, segment: int, start: int, end: int, searched: bool) -> Damage:
        """What ``[start, end)`` held, as far as its headers can be followed from ``start`` (a
        record boundary, so the first header is the damaged record's own unless bytes were
        written over it or inserted before it)."""
        position = start
        records = spans = 0
        while position < end:
            if position + HEADER.size > end:
                break
            length, count, _ = self._header(position) or (0, 0, 0)
            if length == 0 or count > length or length > MAX_RECORD_BYTES:
                break
            after = position + HEADER.size + length
            if after > end:
                # A record cut short: by the end of the segment (a torn last write), or, if this
                # is the damaged record's own header, by bytes lost from its middle.
                if end == self.size or position == start:
                    records += 1
                    spans += count
                    position = end
                break
            records += 1
            spans += count
            position = after
        return Damage(segment, start, end, records, spans, end - position, searched)


def _encode_ack(position: Position) -> bytes:
    data = _ACK_POSITION.pack(*position)
    return data + _COUNT.pack(zlib.crc32(data))


def _decode_ack(data: bytes) -> Position | None:
    if len(data) != _ACK_POSITION.size + _COUNT.size:
        return None
    body, (crc,) = data[: _ACK_POSITION.size], _COUNT.unpack(data[_ACK_POSITION.size :])
    return Position(*_ACK_POSITION.unpack(body)) if zlib.crc32(body) == crc else None
