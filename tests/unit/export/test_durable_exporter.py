"""The exporter with a disk queue (``queue_dir``): what try_submit accepts is on disk, spills
past the memory queue in order, stays there across a stop, and comes back on start."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from sampler.export.base import ExporterSettings
from sampler.export.delivery import QueuedExporter
from sampler.export.disk_queue import HEADER, DiskQueue
from sampler.export.retry import RetryPolicy, SendResult
from tests.unit.export.support import (
    ScriptedExporter,
    ScriptedTransport,
    expected_names,
    make_request,
    run,
    settings,
    span_names,
)


def durable(queue_dir: Path, **overrides: Any) -> ExporterSettings:
    return settings(queue_dir=str(queue_dir), **overrides)


def test_delivered_batches_are_acknowledged_and_the_disk_emptied(tmp_path: Path) -> None:
    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(durable(tmp_path))
        await exporter.start()
        assert exporter.try_submit(make_request("a", 2), 2)
        assert exporter.try_submit(make_request("b", 3), 3)
        assert exporter.stats.disk_records == 2
        assert exporter.stats.disk_bytes > 0
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert span_names(exporter.delivered) == expected_names(("a", 2), ("b", 3))
    assert (exporter.stats.disk_records, exporter.stats.disk_bytes) == (0, 0)
    assert exporter.stats.disk_spilled_spans == 0
    queue = DiskQueue.open(tmp_path, 1 << 30)
    assert queue.recovery.records == 0
    queue.close()


def test_past_the_memory_queue_requests_spill_to_disk_and_keep_their_order(
    tmp_path: Path,
) -> None:
    async def scenario() -> ScriptedExporter:
        gate = asyncio.Event()
        exporter = ScriptedExporter(durable(tmp_path, queue_max_spans=5), gate=gate)
        await exporter.start()
        assert exporter.try_submit(make_request("a", 3), 3)
        await asyncio.sleep(0.05)  # "a" is in flight, held at the gate
        for prefix in ("b", "c", "d"):
            assert exporter.try_submit(make_request(prefix, 2), 2)  # "b" fits, "c", "d" spill
        assert exporter.stats.disk_spilled_spans == 4
        assert exporter.queued_spans() == 9
        assert exporter.stats.disk_records == 4
        gate.set()
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert span_names(exporter.delivered) == expected_names(("a", 3), ("b", 2), ("c", 2), ("d", 2))


def test_what_is_not_delivered_at_stop_stays_on_disk_and_goes_out_after_the_next_start(
    tmp_path: Path,
) -> None:
    async def first_run() -> ScriptedExporter:
        gate = asyncio.Event()  # never opened: the downstream hangs
        exporter = ScriptedExporter(durable(tmp_path, queue_max_spans=4), gate=gate)
        await exporter.start()
        for prefix, count in (("a", 2), ("b", 2), ("c", 3)):
            assert exporter.try_submit(make_request(prefix, count), count)
        await asyncio.sleep(0.05)
        await exporter.stop(0.1)
        return exporter

    async def second_run() -> ScriptedExporter:
        exporter = ScriptedExporter(durable(tmp_path))
        await exporter.start()
        assert exporter.queued_spans() == 7
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    stopped = run(first_run())
    assert stopped.stats.failed_spans == 0  # not lost: left on disk
    assert stopped.queued_spans() == 0
    resumed = run(second_run())
    assert span_names(resumed.delivered) == expected_names(("a", 2), ("b", 2), ("c", 3))
    assert resumed.stats.disk_replayed_spans == 7
    assert resumed.stats.spans_sent == 7


class Down(ScriptedTransport):
    """A downstream that is down: every attempt fails with a retryable error."""

    async def send(self, body: bytes) -> SendResult:
        return SendResult.retryable("UNAVAILABLE: connection refused")


def test_stop_does_not_wait_for_a_downstream_that_is_down(tmp_path: Path) -> None:
    slow_retries = RetryPolicy(initial_interval_s=30.0, max_interval_s=30.0)

    async def scenario() -> float:
        exporter = QueuedExporter(
            Down(), durable(tmp_path, retry=slow_retries), rng=random.Random(1)
        )
        await exporter.start()
        assert exporter.try_submit(make_request("a", 2), 2)
        await asyncio.sleep(0.05)  # the first attempt failed; the next is 30 s away
        started = time.monotonic()
        await exporter.stop(5.0)
        return time.monotonic() - started

    assert run(scenario()) < 1.0
    queue = DiskQueue.open(tmp_path, 1 << 30)
    assert (queue.recovery.records, queue.recovery.spans) == (1, 2)
    queue.close()


def test_the_disk_cap_refuses_submits_and_counts_them_until_delivery_makes_room(
    tmp_path: Path,
) -> None:
    request = make_request("a", 1)
    record = len(request) + 12

    async def scenario() -> ScriptedExporter:
        gate = asyncio.Event()
        exporter = ScriptedExporter(
            durable(tmp_path, queue_max_bytes=3 * record, batch_max_spans=1), gate=gate
        )
        await exporter.start()
        accepted = 0
        while exporter.try_submit(request, 1):
            accepted += 1
        assert accepted == 3
        assert exporter.stats.disk_full_refusals == 1
        assert exporter.stats.refused_submits == 1
        gate.set()
        assert await exporter.flush(2.0)
        assert exporter.try_submit(request, 1)  # room again
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert exporter.stats.spans_sent == 4
    assert exporter.stats.failed_spans == 0


def test_nothing_is_accepted_before_the_disk_queue_is_open(tmp_path: Path) -> None:
    exporter = ScriptedExporter(durable(tmp_path))
    assert not exporter.try_submit(make_request("a", 1), 1)
    assert exporter.stats.refused_submits == 1


def test_a_corrupt_spilled_record_is_skipped_and_counted(tmp_path: Path) -> None:
    async def scenario() -> ScriptedExporter:
        gate = asyncio.Event()
        exporter = ScriptedExporter(
            durable(tmp_path, queue_max_spans=1, queue_max_bytes=1 << 20), gate=gate
        )
        await exporter.start()
        assert exporter.try_submit(make_request("a", 1), 1)
        await asyncio.sleep(0.05)  # in flight
        assert exporter.try_submit(make_request("b", 1), 1)  # spilled
        segment = sorted(tmp_path.glob("*.seg"))[-1]
        with segment.open("r+b") as file:  # damage "b" on disk
            file.seek(segment.stat().st_size - 3)
            file.write(b"\xff\xff\xff")
        gate.set()
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert span_names(exporter.delivered) == expected_names(("a", 1))
    assert exporter.stats.disk_corrupt_records == 1
    assert exporter.stats.failed_spans == 1  # b's header was readable: its span is counted


def test_damage_among_spilled_records_loses_only_the_damaged_one(tmp_path: Path) -> None:
    """Found while reading back: the exporter resynchronises at the next valid record, delivers
    everything after it, and counts the lost request and its spans as failed."""

    async def scenario() -> ScriptedExporter:
        gate = asyncio.Event()
        exporter = ScriptedExporter(
            durable(tmp_path, queue_max_spans=1, queue_max_bytes=1 << 20), gate=gate
        )
        await exporter.start()
        assert exporter.try_submit(make_request("a", 1), 1)
        await asyncio.sleep(0.05)  # in flight
        offsets = {}
        segment = sorted(tmp_path.glob("*.seg"))[-1]
        for prefix in "bcdefg":
            offsets[prefix] = segment.stat().st_size
            assert exporter.try_submit(make_request(prefix, 3), 3)  # spilled
        assert exporter.queued_spans() == 1 + 6 * 3
        with segment.open("r+b") as file:  # damage "d" on disk, in its body
            file.seek(offsets["d"] + HEADER.size + 20)
            file.write(b"\xff\xff\xff")
        gate.set()
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert span_names(exporter.delivered) == expected_names(
        ("a", 1), ("b", 3), ("c", 3), ("e", 3), ("f", 3), ("g", 3)
    )
    assert exporter.stats.disk_corrupt_records == 1
    assert (exporter.stats.failed_requests, exporter.stats.failed_spans) == (1, 3)
    assert exporter.queued_spans() == 0


def test_damage_found_at_start_is_counted_as_lost_and_the_rest_delivered(
    tmp_path: Path,
) -> None:
    queue = DiskQueue.open(tmp_path, 1 << 30)
    offsets = {}
    for prefix in "abcde":
        offsets[prefix] = queue.tail.offset
        queue.append(make_request(prefix, 4), 4)
    queue.close()
    segment = max(tmp_path.glob("*.seg"), key=lambda p: p.stat().st_size)
    with segment.open("r+b") as file:  # "b" loses a byte of its body, "d" its header
        file.seek(offsets["b"] + HEADER.size + 5)
        file.write(b"\x00")
        file.seek(offsets["d"])
        file.write(b"\xab" * HEADER.size)

    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(durable(tmp_path))
        await exporter.start()
        assert exporter.stats.disk_replayed_spans == 12
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert span_names(exporter.delivered) == expected_names(("a", 4), ("c", 4), ("e", 4))
    # b: one record and its 4 spans, from its header; d: a stretch with no readable header,
    # one record, spans unknown
    assert exporter.stats.disk_corrupt_records == 2
    assert (exporter.stats.failed_requests, exporter.stats.failed_spans) == (2, 4)
