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
A torn or corrupt record, and whatever follows it in its segment (framing is lost there), is cut
off and reported in ``Recovery``; later segments are read as usual. Everything here is
synchronous and standard library only; time and asyncio stay with the exporter.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

logger = logging.getLogger(__name__)

HEADER = struct.Struct("<III")  # body length, span count, crc32(span count + body)
_COUNT = struct.Struct("<I")
_ACK_POSITION = struct.Struct("<QQ")  # segment, offset; followed by their crc32
SEGMENT_SUFFIX = ".seg"
MAX_SEGMENT_BYTES = 64 << 20
MIN_SEGMENT_BYTES = 64 << 10
MAX_RECORD_BYTES = 1 << 30  # a length beyond this is a torn header, not a record
SYNC_INTERVAL_S = 1.0


class Position(NamedTuple):
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Record:
    body: bytes
    span_count: int
    end: Position  # acknowledging this position acknowledges the record and all before it


@dataclass(frozen=True, slots=True)
class Recovery:
    """What ``DiskQueue.open`` found: the unacknowledged records, and what it had to cut off."""

    records: int = 0
    spans: int = 0
    corrupt_records: int = 0  # torn or corrupt records cut off (each with the rest of its segment)
    corrupt_bytes: int = 0


class CorruptRecord(Exception):
    """A record that fails its length or CRC check while being read back."""

    def __init__(self, position: Position, why: str) -> None:
        super().__init__(f"corrupt record at segment {position.segment} offset {position.offset}")
        self.position = position
        self.why = why


def encode_header(body: bytes, span_count: int) -> bytes:
    return HEADER.pack(len(body), span_count, record_crc(span_count, body))


def record_crc(span_count: int, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(_COUNT.pack(span_count)))


def segment_bytes_for(max_bytes: int) -> int:
    """Segments of an eighth of the cap (64 KiB to 64 MiB): acknowledged records wait for their
    whole segment to be deleted, so at most about one segment of the cap is not usable."""
    return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, max_bytes // 8))


class DiskQueue:
    """Append-only segments plus an acknowledged position; see the module docstring.

    Invariants: ``bytes`` is the total size of the segment files; ``head <= tail``; every
    segment before ``head.segment`` is deleted; the segment ``tail`` points into is the only one
    written to (``active``). Records are read back and acknowledged in write order.
    """

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.recovery = Recovery()
        self._segments: dict[int, int] = {}  # number -> size, ascending
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
        records = spans = corrupt = corrupt_bytes = 0
        for number in numbers:
            path = self._path(number)
            size = path.stat().st_size
            start = min(head.offset, size) if number == head.segment else 0
            if number == head.segment:
                head = Position(number, start)
            found, found_spans, valid_end = _scan(path, start, size)
            records += found
            spans += found_spans
            if valid_end < size:
                corrupt += 1
                corrupt_bytes += size - valid_end
                logger.error(
                    "disk queue %s: cut off a torn or corrupt record at %s offset %d "
                    "(%d bytes to the end of the segment)",
                    self.directory,
                    path.name,
                    valid_end,
                    size - valid_end,
                )
                os.truncate(path, valid_end)
                size = valid_end
            self._segments[number] = size
        self._bytes = sum(self._segments.values())
        self._active = (numbers[-1] + 1) if numbers else head.segment + 1
        self._head = head
        if records == 0:  # nothing to deliver: start clean
            for number in list(self._segments):
                self._delete(number)
            self._head = Position(self._active, 0)
        self._open_active()
        self.recovery = Recovery(records, spans, corrupt, corrupt_bytes)

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

    def skip_segment(self, position: Position) -> Position:
        """Where reading resumes after a corrupt record: the start of the next segment."""
        later = [n for n in self._segments if n > position.segment]
        return Position(later[0], 0) if later else self.tail

    def count(self, start: Position) -> tuple[int, int]:
        """(records, spans) readable from ``start`` to the tail, each segment read up to its
        first corrupt record (as ``read`` does after ``skip_segment``)."""
        records = spans = 0
        position = self._next(start)
        while position != self.tail:
            found, found_spans, _ = _scan(
                self._path(position.segment), position.offset, self._segments[position.segment]
            )
            records += found
            spans += found_spans
            position = self.skip_segment(position)
        return records, spans

    def ack(self, end: Position) -> None:
        """Everything before ``end`` was delivered (or given up on): remember it and delete the
        segments it empties. Raises OSError if the ack file cannot be written; the position is
        still taken (a restart then delivers those records again)."""
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
        """The same place, moved past the ends of finished segments."""
        while position.segment != self._active and position.offset >= self._segments.get(
            position.segment, 0
        ):
            later = [n for n in self._segments if n > position.segment]
            position = Position(later[0], 0)
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
        self._path(number).unlink(missing_ok=True)
        self._dir_dirty = True


def _scan(path: Path, start: int, size: int) -> tuple[int, int, int]:
    """(records, spans, end of the last valid record) of one segment from ``start``."""
    records = spans = 0
    position = start
    with path.open("rb") as file:
        file.seek(start)
        while position + HEADER.size <= size:
            header = file.read(HEADER.size)
            length, count, crc = HEADER.unpack(header)
            if length > MAX_RECORD_BYTES or position + HEADER.size + length > size:
                break
            body = file.read(length)
            if len(body) < length or record_crc(count, body) != crc:
                break
            records += 1
            spans += count
            position += HEADER.size + length
    return records, spans, position


def _encode_ack(position: Position) -> bytes:
    data = _ACK_POSITION.pack(*position)
    return data + _COUNT.pack(zlib.crc32(data))


def _decode_ack(data: bytes) -> Position | None:
    if len(data) != _ACK_POSITION.size + _COUNT.size:
        return None
    body, (crc,) = data[: _ACK_POSITION.size], _COUNT.unpack(data[_ACK_POSITION.size :])
    return Position(*_ACK_POSITION.unpack(body)) if zlib.crc32(body) == crc else None
