"""The delivery loop, driven through a scripted transport (no sockets, fake time)."""

from __future__ import annotations

import asyncio

import pytest

from sampler.export.base import ExporterSettings
from sampler.export.retry import RetryPolicy, SendResult
from tests.unit.export.support import (
    FakeClock,
    ScriptedExporter,
    ScriptedTransport,
    expected_names,
    make_request,
    run,
    settings,
    span_names,
)


def test_batches_join_requests_without_crossing_batch_max_spans() -> None:
    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(settings(batch_max_spans=7))
        for prefix in "abcde":
            assert exporter.try_submit(make_request(prefix, 3), 3)
        await exporter.start()
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    # 3+3 fits in 7, a third request would not: batches of 6, 6, 3, in submission order.
    assert [len(span_names([body])) for body in exporter.delivered] == [6, 6, 3]
    assert span_names(exporter.delivered) == expected_names(*((p, 3) for p in "abcde"))
    assert exporter.stats.requests_sent == 3
    assert exporter.stats.spans_sent == 15


def test_an_oversized_request_goes_out_alone_and_whole() -> None:
    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(settings(batch_max_spans=4))
        exporter.try_submit(make_request("small", 2), 2)
        exporter.try_submit(make_request("big", 10), 10)
        exporter.try_submit(make_request("tail", 1), 1)
        await exporter.start()
        await exporter.stop(2.0)
        return exporter

    exporter = run(scenario())
    assert [len(span_names([body])) for body in exporter.delivered] == [2, 10, 1]


def test_batch_max_bytes_limits_a_batch() -> None:
    request = make_request("r", 5)

    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(settings(batch_max_bytes=2 * len(request) + 1))
        for _ in range(5):
            exporter.try_submit(request, 5)
        await exporter.start()
        await exporter.stop(2.0)
        return exporter

    exporter = run(scenario())
    assert [len(body) for body in exporter.delivered] == [2 * len(request)] * 2 + [len(request)]


def test_a_partial_batch_leaves_after_batch_timeout_without_a_flush() -> None:
    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(settings(batch_timeout_s=0.02))
        await exporter.start()
        exporter.try_submit(make_request("lonely", 1), 1)
        for _ in range(100):
            if exporter.delivered:
                break
            await asyncio.sleep(0.01)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert span_names(exporter.delivered) == ["lonely-0"]


def test_retryable_failures_back_off_with_jitter_then_deliver_once() -> None:
    clock = FakeClock()

    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(
            settings(),
            [SendResult.retryable("UNAVAILABLE")] * 3,
            clock=clock,
        )
        exporter.try_submit(make_request("a", 4), 4)
        await exporter.start()
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert len(exporter.attempts) == 4
    assert span_names(exporter.delivered) == expected_names(("a", 4))
    assert exporter.stats.retries == 3
    # 1 s, 2 s, 4 s, each within the +/-20 % jitter.
    for slept, base in zip(clock.sleeps, [1.0, 2.0, 4.0], strict=True):
        assert base * 0.8 <= slept <= base * 1.2
    assert exporter.stats.failed_spans == 0


def test_every_attempt_is_timed_failed_and_broken_ones_included() -> None:
    class BrokenOnce(ScriptedTransport):
        async def send(self, body: bytes) -> SendResult:
            if not self.attempts:
                self.attempts.append(body)
                raise RuntimeError("boom")
            return await super().send(body)

    async def scenario() -> ScriptedExporter:
        transport = BrokenOnce([SendResult.retryable("UNAVAILABLE"), SendResult.ok()])
        exporter = ScriptedExporter(settings(), transport=transport)
        exporter.try_submit(make_request("bad", 1), 1)  # the bug fails this batch for good
        await exporter.start()
        assert await exporter.flush(2.0)
        exporter.try_submit(make_request("a", 1), 1)  # one retry, then delivered
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert len(exporter.attempts) == 3
    assert exporter.stats.send_durations.count == 3


def test_server_delay_replaces_backoff() -> None:
    clock = FakeClock()

    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(
            settings(),
            [SendResult.retryable("throttled", server_delay_s=7.5)],
            clock=clock,
        )
        exporter.try_submit(make_request("a", 1), 1)
        await exporter.start()
        await exporter.stop(2.0)
        return exporter

    exporter = run(scenario())
    assert clock.sleeps == [7.5]
    assert exporter.stats.spans_sent == 1


def test_gives_up_after_max_elapsed_and_counts_the_batch_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_elapsed_s=60.0)

    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(
            settings(retry=policy), [SendResult.retryable("UNAVAILABLE")] * 1000, clock=clock
        )
        exporter.try_submit(make_request("a", 3), 3)
        exporter.try_submit(make_request("b", 2), 2)
        await exporter.start()
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert sum(clock.sleeps) <= 60.0
    assert exporter.stats.failed_requests == 1
    assert exporter.stats.failed_spans == 5
    assert exporter.stats.spans_sent == 0
    gave_up = [r for r in caplog.records if "gave up" in r.getMessage()]
    assert len(gave_up) == 1  # once per batch, not per attempt


def test_max_elapsed_zero_retries_until_the_downstream_takes_the_batch() -> None:
    clock = FakeClock()
    outage = [SendResult.retryable("UNAVAILABLE")] * 500  # hours of backoff at 30 s at most

    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(
            settings(retry=RetryPolicy(max_elapsed_s=0.0)), outage, clock=clock
        )
        exporter.try_submit(make_request("a", 3), 3)
        await exporter.start()
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert sum(clock.sleeps) > 3600.0
    assert exporter.stats.failed_spans == 0
    assert span_names(exporter.delivered) == expected_names(("a", 3))


def test_permanent_failure_is_not_retried() -> None:
    clock = FakeClock()

    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(
            settings(), [SendResult.permanent("INVALID_ARGUMENT: bad span")], clock=clock
        )
        exporter.try_submit(make_request("bad", 3), 3)
        exporter.try_submit(make_request("good", 1), 1)
        await exporter.start()
        assert await exporter.flush(2.0)
        exporter.try_submit(make_request("later", 2), 2)
        await exporter.stop(2.0)
        return exporter

    exporter = run(scenario())
    assert clock.sleeps == []
    assert exporter.stats.failed_requests == 1
    assert exporter.stats.failed_spans == 4  # "bad" and "good" shared the failed batch
    assert span_names(exporter.delivered) == expected_names(("later", 2))


def test_partial_success_counts_rejected_spans_as_failed() -> None:
    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(settings(), [SendResult.ok(rejected_spans=2, reason="old")])
        exporter.try_submit(make_request("a", 5), 5)
        await exporter.start()
        await exporter.stop(2.0)
        return exporter

    stats = run(scenario()).stats
    assert (stats.requests_sent, stats.spans_sent, stats.failed_spans) == (1, 3, 2)


def test_a_transport_bug_fails_the_batch_instead_of_wedging_the_queue() -> None:
    class Broken(ScriptedTransport):
        async def send(self, body: bytes) -> SendResult:
            raise RuntimeError("boom")

    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(settings(), transport=Broken())
        exporter.try_submit(make_request("a", 2), 2)
        await exporter.start()
        assert await exporter.flush(2.0)
        await exporter.stop(1.0)
        return exporter

    stats = run(scenario()).stats
    assert (stats.failed_requests, stats.failed_spans) == (1, 2)


def test_full_queue_refuses_and_counts() -> None:
    exporter = ScriptedExporter(ExporterSettings(queue_max_spans=10))
    assert exporter.try_submit(make_request("a", 6), 6)
    assert exporter.try_submit(make_request("b", 4), 4)
    assert not exporter.try_submit(make_request("c", 1), 1)
    assert exporter.queued_spans() == 10
    assert exporter.stats.refused_submits == 1


def test_an_oversized_request_is_accepted_only_into_an_empty_queue() -> None:
    exporter = ScriptedExporter(ExporterSettings(queue_max_spans=10))
    assert exporter.try_submit(make_request("huge", 25), 25)
    assert not exporter.try_submit(make_request("more", 1), 1)
    assert exporter.queued_spans() == 25


def test_queue_counts_the_batch_in_flight_until_it_is_delivered() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()
        exporter = ScriptedExporter(settings(queue_max_spans=10), gate=gate)
        await exporter.start()
        assert exporter.try_submit(make_request("a", 8), 8)
        assert not await exporter.flush(0.05)  # held at the gate: flush times out
        assert len(exporter.attempts) == 1
        assert exporter.queued_spans() == 8
        assert not exporter.try_submit(make_request("b", 3), 3)
        gate.set()
        assert await exporter.flush(2.0)
        assert exporter.queued_spans() == 0
        assert exporter.try_submit(make_request("b", 3), 3)
        await exporter.stop(1.0)

    run(scenario())


def test_flush_waits_for_delivery() -> None:
    async def scenario() -> None:
        exporter = ScriptedExporter(settings(batch_timeout_s=60.0))
        await exporter.start()
        exporter.try_submit(make_request("a", 2), 2)
        assert exporter.delivered == []
        assert await exporter.flush(2.0)  # does not wait out the 60 s linger
        assert span_names(exporter.delivered) == expected_names(("a", 2))
        await exporter.stop(1.0)

    run(scenario())


def test_stop_flushes_then_refuses_new_work() -> None:
    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(settings(batch_timeout_s=60.0))
        await exporter.start()
        exporter.try_submit(make_request("a", 2), 2)
        await exporter.stop(2.0)
        assert not exporter.try_submit(make_request("late", 1), 1)
        return exporter

    exporter = run(scenario())
    assert span_names(exporter.delivered) == expected_names(("a", 2))
    assert exporter.stats.refused_submits == 1


def test_stop_counts_what_it_could_not_deliver_in_time() -> None:
    async def scenario() -> ScriptedExporter:
        gate = asyncio.Event()  # never set: the downstream hangs
        exporter = ScriptedExporter(settings(batch_max_spans=2), gate=gate)
        exporter.try_submit(make_request("a", 2), 2)
        exporter.try_submit(make_request("b", 1), 1)
        await exporter.start()
        await exporter.stop(0.05)
        return exporter

    exporter = run(scenario())
    assert exporter.delivered == []
    assert exporter.queued_spans() == 0
    assert (exporter.stats.failed_requests, exporter.stats.failed_spans) == (2, 3)


def test_settings_reject_an_unknown_compression() -> None:
    with pytest.raises(ValueError, match="compression"):
        ExporterSettings(compression="zstd")


def test_a_queue_smaller_than_a_batch_sends_at_once_rather_than_waiting_to_fill_one() -> None:
    # queue_max_spans below batch_max_spans: the batch linger waits for can never fill, and
    # waiting out batch_timeout before every send throttled the whole queue to a crawl.
    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(settings(queue_max_spans=10, batch_timeout_s=60.0))
        await exporter.start()
        assert exporter.try_submit(make_request("a", 6), 6)
        assert exporter.try_submit(make_request("b", 4), 4)  # the queue is full
        await asyncio.wait_for(_delivered(exporter, 1), 2.0)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert span_names(exporter.delivered) == expected_names(("a", 6), ("b", 4))


def test_a_refused_submit_sends_what_the_queue_holds_at_once() -> None:
    async def scenario() -> ScriptedExporter:
        exporter = ScriptedExporter(settings(queue_max_spans=10, batch_timeout_s=60.0))
        await exporter.start()
        assert exporter.try_submit(make_request("a", 7), 7)
        assert not exporter.try_submit(make_request("b", 5), 5)  # does not fit: refused
        await asyncio.wait_for(_delivered(exporter, 1), 2.0)
        assert exporter.try_submit(make_request("b", 5), 5)
        await exporter.stop(1.0)
        return exporter

    exporter = run(scenario())
    assert span_names(exporter.delivered) == expected_names(("a", 7), ("b", 5))


async def _delivered(exporter: ScriptedExporter, batches: int) -> None:
    while len(exporter.delivered) < batches or exporter.queued_spans():
        await asyncio.sleep(0.01)
