"""`admit` is the bookkeeping both receivers share: one counter per request outcome."""

from sampler.receive.consumer import ACCEPTED, Admission, ReceiverStats, admit, count_spans
from tests.unit.receive._support import RecordingConsumer, make_request


def test_count_spans_counts_across_resources_and_scopes() -> None:
    request = make_request(3)
    request.resource_spans.extend(make_request(2).resource_spans)
    assert count_spans(request) == 5


def test_accepted_request_counts_ok_and_spans() -> None:
    stats = ReceiverStats()
    consumer = RecordingConsumer(ACCEPTED)
    assert admit(consumer, make_request(4), "grpc", stats) is ACCEPTED
    assert stats == ReceiverStats(requests_ok=1, spans_received=4)
    assert [transport for _, transport in consumer.requests] == ["grpc"]


def test_refused_request_counts_all_its_spans_as_refused() -> None:
    stats = ReceiverStats()
    refusal = Admission(False, "full", retry_after_s=1.0)
    assert admit(RecordingConsumer(refusal), make_request(4), "http", stats) is refusal
    assert stats == ReceiverStats(requests_refused=1, spans_received=4, spans_refused=4)


def test_partial_rejection_is_ok_with_refused_spans() -> None:
    stats = ReceiverStats()
    admit(
        RecordingConsumer(Admission(True, "too old", rejected_spans=1)),
        make_request(4),
        "http",
        stats,
    )
    assert stats == ReceiverStats(requests_ok=1, spans_received=4, spans_refused=1)
