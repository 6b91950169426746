"""The disk queue's core: records go in and come back in order, survive a restart until they
are acknowledged, a torn or corrupt tail is cut off and counted, and the cap is kept."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sampler.export.disk_queue import (
    HEADER,
    CorruptRecord,
    DiskQueue,
    Position,
    Record,
    segment_bytes_for,
)

BIG = 1 << 30
EVERYTHING = {"max_records": 1 << 30, "max_spans": 1 << 30, "max_bytes": 1 << 30}


def body(index: int, size: int = 100) -> bytes:
    return bytes([index % 256]) * size


@pytest.fixture
def queue_dir(tmp_path: Path) -> Path:
    return tmp_path / "queue"


@pytest.fixture
def opened(queue_dir: Path) -> Iterator[list[DiskQueue]]:
    """Closes every queue a test opened, however it ends."""
    queues: list[DiskQueue] = []
    yield queues
    for queue in queues:
        queue.close()


def open_queue(
    opened: list[DiskQueue], path: Path, max_bytes: int = BIG, segment_bytes: int | None = None
) -> DiskQueue:
    queue = DiskQueue.open(path, max_bytes, segment_bytes=segment_bytes)
    opened.append(queue)
    return queue


def reopen(opened: list[DiskQueue], queue: DiskQueue, **kwargs: int) -> DiskQueue:
    queue.close()
    return open_queue(opened, queue.directory, queue.max_bytes, **kwargs)


def read_all(queue: DiskQueue, start: Position | None = None) -> list[Record]:
    records, _ = queue.read(queue.head if start is None else start, **EVERYTHING)
    return records


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def test_records_come_back_in_order_with_their_span_counts(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    queue = open_queue(opened, queue_dir)
    assert queue.is_empty
    ends = [queue.append(body(i), i + 1) for i in range(5)]
    assert not queue.is_empty
    records = read_all(queue)
    assert [(r.body, r.span_count, r.end) for r in records] == [
        (body(i), i + 1, ends[i]) for i in range(5)
    ]
    assert queue.used_bytes == 5 * (HEADER.size + 100)


def test_reads_stop_at_the_limits_but_always_return_one_record(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    queue = open_queue(opened, queue_dir)
    for i in range(4):
        queue.append(body(i), 10)
    by_spans, after = queue.read(queue.head, max_records=99, max_spans=25, max_bytes=BIG)
    assert [r.body for r in by_spans] == [body(0), body(1)]
    assert after == by_spans[-1].end
    by_bytes, _ = queue.read(after, max_records=99, max_spans=99, max_bytes=150)
    assert [r.body for r in by_bytes] == [body(2)]
    by_count, _ = queue.read(queue.head, max_records=3, max_spans=99, max_bytes=BIG)
    assert len(by_count) == 3
    oversized, _ = queue.read(queue.head, max_records=99, max_spans=1, max_bytes=1)
    assert [r.body for r in oversized] == [body(0)]


def test_acknowledged_records_are_gone_after_a_restart_and_the_rest_come_back(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    queue = open_queue(opened, queue_dir)
    ends = [queue.append(body(i), 1) for i in range(3)]
    queue.ack(ends[0])
    queue = reopen(opened, queue)
    assert (queue.recovery.records, queue.recovery.spans) == (2, 2)
    assert queue.recovery.corrupt_records == 0
    assert [r.body for r in read_all(queue)] == [body(1), body(2)]
    queue.append(body(3), 1)  # new records go after the recovered ones
    assert [r.body for r in read_all(queue)] == [body(1), body(2), body(3)]


def test_a_queue_acknowledged_to_the_end_frees_its_disk_space(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    queue = open_queue(opened, queue_dir)
    end = None
    for i in range(3):
        end = queue.append(body(i), 1)
    assert end is not None
    queue.ack(end)
    assert queue.is_empty
    assert queue.used_bytes == 0
    assert [p.stat().st_size for p in segments(queue_dir)] == [0]
    queue = reopen(opened, queue)
    assert queue.recovery.records == 0
    assert read_all(queue) == []


def test_records_span_segments_and_whole_acknowledged_segments_are_deleted(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    queue = open_queue(opened, queue_dir, segment_bytes=250)  # two records per segment
    ends = [queue.append(body(i), 1) for i in range(6)]
    assert len(segments(queue_dir)) == 3
    assert [r.body for r in read_all(queue)] == [body(i) for i in range(6)]
    queue.ack(ends[2])  # the first segment and half of the second
    assert len(segments(queue_dir)) == 2
    assert [r.body for r in read_all(queue)] == [body(i) for i in range(3, 6)]
    queue.ack(ends[3])  # the second segment, ending exactly at its end
    assert len(segments(queue_dir)) == 1
    queue = reopen(opened, queue, segment_bytes=250)
    assert [r.body for r in read_all(queue)] == [body(4), body(5)]


def test_a_torn_last_record_is_cut_off_and_counted(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    queue = open_queue(opened, queue_dir)
    for i in range(3):
        queue.append(body(i), 1)
    queue.close()
    last = segments(queue_dir)[-1]
    whole = last.stat().st_size
    os.truncate(last, whole - 5)  # the process died in the middle of the third write
    queue = open_queue(opened, queue_dir)
    assert (queue.recovery.records, queue.recovery.corrupt_records) == (2, 1)
    assert queue.recovery.corrupt_bytes == HEADER.size + 100 - 5
    assert last.stat().st_size == 2 * (HEADER.size + 100)
    assert [r.body for r in read_all(queue)] == [body(0), body(1)]


def test_a_torn_header_is_cut_off(opened: list[DiskQueue], queue_dir: Path) -> None:
    queue = open_queue(opened, queue_dir)
    queue.append(body(0), 1)
    queue.close()
    with segments(queue_dir)[-1].open("ab") as file:
        file.write(b"\x07\x00")  # two bytes of a header
    queue = open_queue(opened, queue_dir)
    assert (queue.recovery.records, queue.recovery.corrupt_records) == (1, 1)


def test_a_corrupt_record_loses_the_rest_of_its_segment_only(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    queue = open_queue(opened, queue_dir, segment_bytes=250)  # two records per segment
    for i in range(6):
        queue.append(body(i), 1)
    queue.close()
    second = segments(queue_dir)[1]
    data = bytearray(second.read_bytes())
    data[HEADER.size + 50] ^= 0xFF  # a flipped bit in record 2's body
    second.write_bytes(bytes(data))
    queue = open_queue(opened, queue_dir, segment_bytes=250)
    assert (queue.recovery.records, queue.recovery.corrupt_records) == (4, 1)
    assert [r.body for r in read_all(queue)] == [body(0), body(1), body(4), body(5)]


def test_corruption_found_while_reading_names_its_place_and_reading_goes_on_after_it(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    queue = open_queue(opened, queue_dir, segment_bytes=250)
    for i in range(6):
        queue.append(body(i), 2)
    second = segments(queue_dir)[1]
    with second.open("r+b") as file:  # damaged on disk after it was written
        file.seek(HEADER.size + 10)
        file.write(b"\xff\xff")
    with pytest.raises(CorruptRecord) as caught:
        read_all(queue)
    assert caught.value.position == Position(caught.value.position.segment, 0)
    resume = queue.skip_segment(caught.value.position)
    assert queue.count(resume) == (2, 4)
    assert [r.body for r in read_all(queue, resume)] == [body(4), body(5)]


def test_an_unreadable_ack_file_means_delivering_again_not_losing(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    queue = open_queue(opened, queue_dir)
    ends = [queue.append(body(i), 1) for i in range(3)]
    queue.ack(ends[1])
    queue.close()
    (queue_dir / "ack").write_bytes(b"garbage")
    queue = open_queue(opened, queue_dir)
    assert queue.recovery.records == 3  # at least once: the acknowledged ones come again


def test_the_cap_refuses_records_until_acknowledged_segments_are_deleted(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    record = HEADER.size + 100
    queue = open_queue(opened, queue_dir, max_bytes=4 * record, segment_bytes=2 * record)
    ends = []
    while queue.has_room(100):
        ends.append(queue.append(body(len(ends)), 1))
    assert len(ends) == 4
    assert queue.used_bytes == 4 * record
    queue.ack(ends[0])  # half a segment: no space comes back yet
    assert not queue.has_room(100)
    queue.ack(ends[1])
    assert queue.has_room(100)


def test_an_empty_queue_takes_a_record_larger_than_the_cap(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    queue = open_queue(opened, queue_dir, max_bytes=1000)
    assert queue.has_room(5000)
    queue.append(body(0, 5000), 1)
    assert not queue.has_room(1)
    assert [len(r.body) for r in read_all(queue)] == [5000]


def test_one_process_owns_a_queue_directory(opened: list[DiskQueue], queue_dir: Path) -> None:
    open_queue(opened, queue_dir)
    with pytest.raises(OSError, match="in use by another process"):
        DiskQueue.open(queue_dir, BIG)


def test_sync_jobs_run_in_a_thread_and_own_their_descriptors(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    queue = open_queue(opened, queue_dir, segment_bytes=250)
    first = queue.sync_later()
    assert first is not None  # the new segment's directory entry
    first()
    assert queue.sync_later() is None  # nothing written since
    for i in range(5):  # rolls over two segments
        queue.append(body(i), 1)
    job = queue.sync_later()
    assert job is not None
    worker = threading.Thread(target=job)
    worker.start()
    worker.join(5)
    assert not worker.is_alive()
    queue.append(body(9), 1)  # the queue's own descriptor is still open
    assert len(read_all(queue)) == 6


def test_segment_size_follows_the_cap_within_bounds() -> None:
    assert segment_bytes_for(1 << 30) == 64 << 20
    assert segment_bytes_for(80 << 20) == 10 << 20
    assert segment_bytes_for(1000) == 64 << 10
