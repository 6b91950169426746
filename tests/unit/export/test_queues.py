"""The Queue protocol's contract, run over both queues: the memory queue and the durable one.

What holds for both: first in, first out; batches within their limits but never splitting a
request; the batch in flight counted until it is settled; the span bound, with one oversized
request let into an empty queue. Where they differ (close), each says so."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from sampler.export.base import ExporterStats
from sampler.export.durable import DurableQueue
from sampler.export.queues import MemoryQueue, Queue
from tests.unit.export.support import expected_names, make_request, settings, span_names

T = TypeVar("T")
QueueFactory = Callable[[int], Queue]
KINDS = ["memory", "durable"]


@pytest.fixture(params=KINDS)
def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> QueueFactory:
    def memory(max_spans: int) -> Queue:
        return MemoryQueue(max_spans)

    def durable(max_spans: int) -> Queue:
        exporter_settings = settings(queue_dir=str(tmp_path / "q"), queue_max_spans=max_spans)
        return DurableQueue("test", exporter_settings, ExporterStats())

    return memory if request.param == "memory" else durable


def opened(queue: Queue, scenario: Callable[[Queue], Awaitable[T]]) -> T:
    async def run() -> T:
        await queue.open()
        try:
            return await scenario(queue)
        finally:
            await queue.close()

    return asyncio.run(run())


def test_first_in_first_out_in_batches_that_never_split_a_request(
    make_queue: QueueFactory,
) -> None:
    async def scenario(queue: Queue) -> list[list[str]]:
        for prefix, count in (("a", 3), ("b", 3), ("c", 5), ("d", 1)):
            assert queue.offer(make_request(prefix, count), count, now=1.0)
        batches = []
        while queue.oldest() is not None:
            batch = queue.take(max_spans=6, max_bytes=1 << 20)
            batches.append(span_names([batch.body]))
            queue.settle(batch)
        return batches

    batches = opened(make_queue(100), scenario)
    assert batches == [
        expected_names(("a", 3), ("b", 3)),
        expected_names(("c", 5), ("d", 1)),
    ]


def test_an_oversized_request_goes_out_alone(make_queue: QueueFactory) -> None:
    async def scenario(queue: Queue) -> list[int]:
        for prefix, count in (("small", 1), ("big", 9), ("tail", 1)):
            queue.offer(make_request(prefix, count), count, now=1.0)
        sizes = []
        while queue.oldest() is not None:
            batch = queue.take(max_spans=4, max_bytes=1 << 20)
            sizes.append(batch.span_count)
            queue.settle(batch)
        return sizes

    assert opened(make_queue(100), scenario) == [1, 9, 1]


def test_the_batch_in_flight_counts_until_it_is_settled(make_queue: QueueFactory) -> None:
    async def scenario(queue: Queue) -> None:
        queue.offer(make_request("a", 4), 4, now=1.0)
        queue.offer(make_request("b", 2), 2, now=2.0)
        assert queue.oldest() == 1.0
        batch = queue.take(max_spans=4, max_bytes=1 << 20)
        assert queue.spans() == 6  # in flight, and waiting
        assert queue.oldest() == 2.0  # the batch in flight does not wait
        queue.settle(batch)
        assert queue.spans() == 2

    opened(make_queue(100), scenario)


def test_a_full_batch_is_waiting_at_a_batch_limit_or_at_the_queue_bound(
    make_queue: QueueFactory,
) -> None:
    async def scenario(queue: Queue) -> None:
        request = make_request("a", 3)
        assert queue.offer(request, 3, now=1.0)
        assert not queue.full_batch_waiting(max_spans=6, max_bytes=1 << 20)
        assert queue.full_batch_waiting(max_spans=3, max_bytes=1 << 20)
        assert queue.full_batch_waiting(max_spans=6, max_bytes=len(request))
        assert queue.offer(request, 3, now=1.0)
        assert queue.full_batch_waiting(max_spans=6, max_bytes=1 << 20)

    opened(make_queue(100), scenario)


def test_memory_is_bounded_in_spans_with_one_oversized_request_let_into_an_empty_queue() -> None:
    async def scenario(queue: Queue) -> None:
        assert queue.offer(make_request("huge", 25), 25, now=1.0)
        assert not queue.offer(make_request("more", 1), 1, now=1.0)
        batch = queue.take(max_spans=100, max_bytes=1 << 20)
        assert not queue.offer(make_request("more", 1), 1, now=1.0)  # in flight still counts
        queue.settle(batch)
        assert queue.offer(make_request("more", 6), 6, now=1.0)
        assert queue.offer(make_request("more", 4), 4, now=1.0)
        assert not queue.offer(make_request("more", 1), 1, now=1.0)

    opened(MemoryQueue(10), scenario)


def test_past_its_memory_bound_the_durable_queue_spills_to_disk_and_keeps_the_order(
    tmp_path: Path,
) -> None:
    stats = ExporterStats()
    queue = DurableQueue("test", settings(queue_dir=str(tmp_path), queue_max_spans=4), stats)

    async def scenario(queue: Queue) -> list[str]:
        for prefix in "abcde":
            assert queue.offer(make_request(prefix, 2), 2, now=1.0)
        assert stats.disk_spilled_spans == 6  # c, d and e are on disk only
        assert queue.spans() == 10
        names = []
        while queue.oldest() is not None:
            batch = queue.take(max_spans=100, max_bytes=1 << 20)
            names += span_names([batch.body])
            queue.settle(batch)
        return names

    assert opened(queue, scenario) == expected_names(*((p, 2) for p in "abcde"))


@pytest.mark.parametrize(("kind", "lost"), [("memory", (2, 5)), ("durable", (0, 0))], ids=KINDS)
def test_close_loses_what_memory_holds_and_keeps_what_is_on_disk(
    tmp_path: Path, kind: str, lost: tuple[int, int]
) -> None:
    directory = str(tmp_path / "q")

    async def first_run() -> tuple[int, int]:
        queue: Queue
        if kind == "memory":
            queue = MemoryQueue(100)
        else:
            queue = DurableQueue("test", settings(queue_dir=directory), ExporterStats())
        await queue.open()
        queue.offer(make_request("a", 2), 2, now=1.0)
        queue.offer(make_request("b", 3), 3, now=1.0)
        queue.take(max_spans=2, max_bytes=1 << 20)  # "a" in flight, never settled
        return await queue.close()

    assert asyncio.run(first_run()) == lost
    if kind == "durable":
        stats = ExporterStats()
        queue = DurableQueue("test", settings(queue_dir=directory), stats)

        async def second_run(queue: Queue) -> list[str]:
            assert queue.oldest() == 0  # left by an earlier run
            waiting = queue.oldest() is not None
            batch = queue.take(max_spans=100, max_bytes=1 << 20) if waiting else None
            return span_names([batch.body]) if batch else []

        assert opened(queue, second_run) == expected_names(("a", 2), ("b", 3))
        assert stats.disk_replayed_spans == 5
