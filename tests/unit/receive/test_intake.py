"""The receive flow both receivers share: decode (bounded), admission, and one counter per
request outcome."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from sampler.otlp.json_codec import request_to_json
from sampler.receive.intake import (
    ACCEPTED,
    INLINE_DECODE_BYTES,
    Admission,
    Answer,
    Encoding,
    Outcome,
    ReceiveFlow,
    ReceiverStats,
)
from tests.unit.receive._support import RecordingConsumer, flow, make_request, run


def receive(
    consumer: RecordingConsumer,
    body: bytes,
    encoding: Encoding = "protobuf",
    *,
    max_spans: int = 1000,
    stats: ReceiverStats | None = None,
) -> tuple[Answer, ReceiverStats]:
    stats = stats or ReceiverStats()
    answer = run(flow(consumer, max_spans).receive(body, encoding, stats))
    return answer, stats


def test_an_accepted_request_counts_ok_and_its_spans() -> None:
    consumer = RecordingConsumer(ACCEPTED)
    answer, stats = receive(consumer, make_request(4).SerializeToString())
    assert answer == Answer(Outcome.OK)
    assert stats == ReceiverStats(requests_ok=1, spans_received=4)
    assert len(consumer.spans()) == 4
    assert consumer.reserved == 0  # decoding room given back


def test_a_refused_request_counts_all_its_spans_as_refused() -> None:
    refusal = Admission(False, "full", retry_after_s=1.0)
    answer, stats = receive(RecordingConsumer(refusal), make_request(4).SerializeToString())
    assert answer == Answer(Outcome.REFUSED, "full", 1.0)
    assert stats == ReceiverStats(requests_refused=1, spans_received=4, spans_refused=4)


def test_a_partial_rejection_is_ok_with_refused_spans() -> None:
    consumer = RecordingConsumer(Admission(True, "too old", rejected_spans=1))
    answer, stats = receive(consumer, make_request(4).SerializeToString())
    assert answer == Answer(Outcome.OK, "too old", rejected_spans=1)
    assert stats == ReceiverStats(requests_ok=1, spans_received=4, spans_refused=1)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"\x0a\x05\x12", "runs past the end", id="truncated"),
        pytest.param(b"\x0f", "invalid wire type", id="wire-type-7"),
        # request { resource_spans { scope_spans { spans { name: b"\xff" } } } }
        pytest.param(b"\x0a\x07\x12\x05\x12\x03\x2a\x01\xff", "UTF-8", id="bad-utf8"),
    ],
)
def test_a_malformed_body_is_invalid_and_nothing_is_admitted(body: bytes, reason: str) -> None:
    consumer = RecordingConsumer()
    answer, stats = receive(consumer, body)
    assert answer.outcome is Outcome.INVALID
    assert reason in answer.message
    assert stats == ReceiverStats(requests_invalid=1)
    assert consumer.requests == []


def test_too_many_spans_is_too_large_and_not_admitted() -> None:
    consumer = RecordingConsumer()
    answer, stats = receive(consumer, make_request(11).SerializeToString(), max_spans=10)
    assert answer.outcome is Outcome.TOO_LARGE
    assert "more than 10 spans" in answer.message
    assert stats == ReceiverStats(requests_too_large=1)
    assert consumer.requests == []


def test_without_room_to_decode_json_the_request_is_refused_before_decoding() -> None:
    consumer = RecordingConsumer(room=False)
    answer, stats = receive(consumer, b"{not even json", "json")
    assert answer.outcome is Outcome.REFUSED and answer.retry_after_s > 0
    assert stats == ReceiverStats(requests_refused=1)
    # protobuf takes no memory to decode: validated, then admitted (or refused) by the pipeline
    answer, _ = receive(consumer, make_request(2).SerializeToString())
    assert answer.outcome is Outcome.OK


def test_json_is_decoded_to_the_same_request() -> None:
    request = make_request(3)
    consumer = RecordingConsumer()
    answer, _ = receive(consumer, request_to_json(request).encode(), "json")
    assert answer.outcome is Outcome.OK
    assert consumer.requests == [request]


def test_a_large_body_is_decoded_off_the_event_loop() -> None:
    """While a large body decodes on a worker thread, the loop keeps running other tasks."""
    big = make_request(20_000)
    body = big.SerializeToString()
    assert len(body) > INLINE_DECODE_BYTES
    consumer = RecordingConsumer()

    async def scenario() -> tuple[Answer, int]:
        ticks = 0

        async def ticking() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        with ThreadPoolExecutor(1) as decoding:
            receiving = ReceiveFlow(consumer, max_spans=100_000, decoding=decoding)
            ticker = asyncio.create_task(ticking())
            answer = await receiving.receive(body, "protobuf", ReceiverStats())
            ticker.cancel()
        return answer, ticks

    answer, ticks = run(scenario())
    assert answer.outcome is Outcome.OK
    assert ticks > 1
