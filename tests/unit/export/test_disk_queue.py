"""The disk queue's core: records go in and come back in order, survive a restart until they
are acknowledged, damage costs only the damaged records (reading resynchronises at the next
valid one) and is counted, and the cap is kept."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator
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


# -- damage: reading resynchronises at the next valid record ----------------------------------

MANY = 200  # records in one segment for the damage tests


def varied(index: int) -> bytes:
    """Bodies of random bytes and varying size (a few hundred to a few thousand bytes), so that
    record boundaries fall anywhere and the damaged bytes look like data, not like padding."""
    rng = random.Random(index)
    return rng.randbytes(rng.randrange(200, 3000))


def spans_of(index: int) -> int:
    return 1 + index % 7


@pytest.fixture
def many(opened: list[DiskQueue], queue_dir: Path) -> tuple[Path, list[int]]:
    """A closed queue whose one segment holds MANY records; returns the segment and the offset
    of each record in it."""
    queue = open_queue(opened, queue_dir)
    offsets = []
    for i in range(MANY):
        offsets.append(queue.tail.offset)
        queue.append(varied(i), spans_of(i))
    queue.close()
    (segment,) = [p for p in segments(queue_dir) if p.stat().st_size]
    return segment, offsets


def damaged(segment: Path, change: Callable[[bytearray], None]) -> None:
    data = bytearray(segment.read_bytes())
    change(data)
    segment.write_bytes(bytes(data))


def bodies_after_recovery(opened: list[DiskQueue], queue_dir: Path) -> tuple[DiskQueue, list[int]]:
    """Reopen; the indexes of the records that come back, in order."""
    queue = open_queue(opened, queue_dir)
    index = {varied(i): i for i in range(MANY)}
    return queue, [index[r.body] for r in read_all(queue)]


def test_a_flipped_byte_mid_segment_loses_that_record_only_and_counts_its_spans(
    opened: list[DiskQueue], queue_dir: Path, many: tuple[Path, list[int]]
) -> None:
    segment, offsets = many
    hit = MANY // 2
    damaged(
        segment,
        lambda d: d.__setitem__(
            offsets[hit] + HEADER.size + 100, d[offsets[hit] + HEADER.size + 100] ^ 0x10
        ),
    )
    queue, back = bodies_after_recovery(opened, queue_dir)
    assert back == [i for i in range(MANY) if i != hit]
    found = queue.recovery
    assert (found.records, found.spans) == (MANY - 1, sum(map(spans_of, back)))
    (damage,) = found.damage
    assert (damage.start, damage.end) == (offsets[hit], offsets[hit + 1])
    assert (damage.records, damage.spans, damage.unframed) == (1, spans_of(hit), False)
    assert (found.corrupt_records, found.corrupt_spans) == (1, spans_of(hit))
    assert found.corrupt_bytes == offsets[hit + 1] - offsets[hit]


def test_a_header_written_over_loses_that_record_and_says_its_spans_are_unknown(
    opened: list[DiskQueue], queue_dir: Path, many: tuple[Path, list[int]]
) -> None:
    segment, offsets = many
    hit = 50
    damaged(
        segment,
        lambda d: d.__setitem__(
            slice(offsets[hit], offsets[hit] + HEADER.size), b"\xee" * HEADER.size
        ),
    )
    queue, back = bodies_after_recovery(opened, queue_dir)
    assert back == [i for i in range(MANY) if i != hit]
    (damage,) = queue.recovery.damage
    assert (damage.start, damage.end) == (offsets[hit], offsets[hit + 1])
    assert (damage.records, damage.spans) == (0, 0)
    assert damage.unframed_bytes == offsets[hit + 1] - offsets[hit]
    assert queue.recovery.corrupt_records == 1  # a stretch without framing counts as one
    assert "unknown" in damage.describe()


def test_a_record_truncated_mid_segment_loses_only_itself(
    opened: list[DiskQueue], queue_dir: Path, many: tuple[Path, list[int]]
) -> None:
    segment, offsets = many
    hit = 120
    cut = slice(offsets[hit] + HEADER.size + 50, offsets[hit + 1] - 10)  # bytes lost from inside
    damaged(segment, lambda d: d.__delitem__(cut))
    queue, back = bodies_after_recovery(opened, queue_dir)
    assert back == [i for i in range(MANY) if i != hit]
    (damage,) = queue.recovery.damage
    assert (damage.records, damage.spans, damage.unframed) == (1, spans_of(hit), False)


def test_garbage_between_records_loses_nothing_but_is_counted(
    opened: list[DiskQueue], queue_dir: Path, many: tuple[Path, list[int]]
) -> None:
    segment, offsets = many
    at = offsets[80]
    garbage = random.Random("garbage").randbytes(1000)
    damaged(segment, lambda d: d.__setitem__(slice(at, at), garbage))
    queue, back = bodies_after_recovery(opened, queue_dir)
    assert back == list(range(MANY))
    (damage,) = queue.recovery.damage
    assert (damage.start, damage.end, damage.unframed_bytes) == (at, at + 1000, 1000)
    assert queue.recovery.corrupt_records == 1  # no record lost, but nothing says so


def test_zeroes_over_several_records_lose_just_those(
    opened: list[DiskQueue], queue_dir: Path, many: tuple[Path, list[int]]
) -> None:
    segment, offsets = many
    start, end = offsets[30] + 20, offsets[33] + 5  # records 30 to 33 touched
    damaged(segment, lambda d: d.__setitem__(slice(start, end), bytes(end - start)))
    queue, back = bodies_after_recovery(opened, queue_dir)
    assert back == [i for i in range(MANY) if not 30 <= i <= 33]
    (damage,) = queue.recovery.damage
    assert (damage.start, damage.end) == (offsets[30], offsets[34])
    # record 30's header is intact: it and its spans are known; the rest is not
    assert (damage.records, damage.spans, damage.unframed) == (1, spans_of(30), True)
    assert queue.recovery.corrupt_records == 2


def test_damage_in_many_places_loses_each_damaged_record_only(
    opened: list[DiskQueue], queue_dir: Path, many: tuple[Path, list[int]]
) -> None:
    segment, offsets = many
    hits = sorted(random.Random(5).sample(range(MANY), 20))

    def flip(data: bytearray) -> None:
        for i in hits:
            data[offsets[i] + HEADER.size + 7] ^= 0x01

    damaged(segment, flip)
    queue, back = bodies_after_recovery(opened, queue_dir)
    assert back == [i for i in range(MANY) if i not in hits]
    found = queue.recovery
    assert (found.corrupt_records, found.corrupt_spans) == (20, sum(map(spans_of, hits)))


def test_a_torn_last_write_is_cut_off_and_counted_with_its_spans(
    opened: list[DiskQueue], queue_dir: Path, many: tuple[Path, list[int]]
) -> None:
    segment, offsets = many
    os.truncate(segment, offsets[-1] + HEADER.size + 30)  # the process died mid-write
    queue, back = bodies_after_recovery(opened, queue_dir)
    assert back == list(range(MANY - 1))
    (damage,) = queue.recovery.damage
    assert (damage.records, damage.spans, damage.unframed) == (1, spans_of(MANY - 1), False)
    assert segment.stat().st_size == offsets[-1]  # cut off: nothing valid after it


def test_a_random_segment_yields_no_record_and_a_bounded_search(
    opened: list[DiskQueue], queue_dir: Path
) -> None:
    """A false resync needs a CRC32 to match by chance: 4 MiB of random bytes hold none, and
    the search stops spending CRC work at its budget rather than hashing every candidate."""
    queue = open_queue(opened, queue_dir)
    queue.close()
    (queue_dir / f"{1:020d}.seg").write_bytes(random.Random(11).randbytes(4 << 20))
    queue = open_queue(opened, queue_dir)
    assert queue.recovery.records == 0
    (damage,) = queue.recovery.damage
    assert (damage.start, damage.end, damage.unframed_bytes) == (0, 4 << 20, 4 << 20)


def test_damage_found_while_reading_is_skipped_to_the_next_valid_record(
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
    damage = queue.skip_damage(caught.value.position)
    assert (damage.records, damage.spans) == (1, 2)
    assert (damage.start, damage.end) == (0, HEADER.size + 100)
    # reads, counts and the queue's emptiness step over it from now on
    assert queue.count(queue.head) == (5, 10)
    assert [r.body for r in read_all(queue)] == [body(i) for i in (0, 1, 3, 4, 5)]


def test_acknowledging_up_to_damage_moves_past_it_so_a_restart_does_not_count_it_again(
    opened: list[DiskQueue], queue_dir: Path, many: tuple[Path, list[int]]
) -> None:
    segment, offsets = many
    damaged(
        segment,
        lambda d: d.__setitem__(offsets[10] + HEADER.size, d[offsets[10] + HEADER.size] ^ 1),
    )
    queue, _ = bodies_after_recovery(opened, queue_dir)
    assert queue.recovery.corrupt_records == 1
    records = read_all(queue)
    queue.ack(records[9].end)  # the record just before the damage
    assert queue.head == Position(records[9].end.segment, offsets[11])
    queue.close()
    queue, back = bodies_after_recovery(opened, queue_dir)
    assert back == list(range(11, MANY))
    assert queue.recovery.damage == ()


def test_damage_at_the_head_is_acknowledged_past_at_open(
    opened: list[DiskQueue], queue_dir: Path, many: tuple[Path, list[int]]
) -> None:
    segment, offsets = many
    damaged(segment, lambda d: d.__setitem__(HEADER.size + 3, d[HEADER.size + 3] ^ 1))
    queue, back = bodies_after_recovery(opened, queue_dir)
    assert back == list(range(1, MANY))
    assert queue.recovery.corrupt_records == 1
    queue = reopen(opened, queue)
    assert (queue.recovery.records, queue.recovery.damage) == (MANY - 1, ())


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
