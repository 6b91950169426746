"""What every exporter shares: its settings, its counters, and the two seams.

An exporter is three rooms (docs/architecture.md, "Forward"):

- ``retry.py``: what one attempt came to and what to do next, a pure function of the outcome,
  the time spent and a random source (backoff, deadline, retryable statuses, throttling);
- ``queues.py`` / ``durable.py``: where kept requests wait, in memory or written through to
  disk (``disk_queue.py``), behind one ``Queue`` protocol;
- ``delivery.py``: the loop between them, ``QueuedExporter``, which batches, sends through a
  ``Transport`` (``grpc_transport``, ``http_transport``, ``file_transport``) and retries.

The pipeline sees only ``Exporter``: a synchronous, O(1) ``try_submit`` of serialized
``ExportTraceServiceRequest`` bytes, and the lifecycle around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sampler.export.jsonl_file import Rotation
from sampler.export.retry import RetryPolicy, SendResult
from sampler.latency import Histogram, send_durations
from sampler.tls import ClientTls


@dataclass(frozen=True, slots=True)
class ExporterSettings:
    timeout_s: float = 10.0  # per attempt
    queue_max_spans: int = 200_000  # bounded queue, counted in spans (queued + in flight)
    batch_max_spans: int = 8192  # max spans per outgoing request
    batch_max_bytes: int = 4 * 1024 * 1024
    batch_timeout_s: float = 0.2  # max time a partial batch waits
    retry: RetryPolicy = RetryPolicy()
    # gRPC metadata / HTTP headers; may hold credentials, so kept out of repr()
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    compression: str = "gzip"  # "none" | "gzip"
    tls: ClientTls | None = None  # for grpcs:// and https://; None: the system's trusted roots
    queue_dir: str = ""  # a durable queue there (disk_queue.py); "": in memory only
    queue_max_bytes: int = 1 << 30  # disk use of queue_dir at most
    rotation: Rotation | None = None  # of the file:// downstream's file; None: never rotated

    def __post_init__(self) -> None:
        if self.compression not in ("none", "gzip"):
            raise ValueError(f"compression must be 'none' or 'gzip', not {self.compression!r}")
        if self.queue_max_bytes <= 0:
            raise ValueError("queue_max_bytes must be above 0")


@dataclass(slots=True)
class ExporterStats:
    """Plain counters, read by the self-metrics layer."""

    requests_sent: int = 0  # outgoing requests the downstream accepted
    spans_sent: int = 0  # spans in them, minus any the downstream rejected (partial success)
    retries: int = 0  # retry attempts (not counting the first attempt of a batch)
    failed_requests: int = 0  # batches given up on (permanent error, deadline), plus requests
    # still queued or in flight when stop() ran out of time
    failed_spans: int = 0  # spans in those batches, plus spans rejected by partial success
    refused_submits: int = 0  # try_submit calls answered False
    # With a disk queue (queue_dir) only:
    disk_bytes: int = 0  # gauge: size of the queue's segment files
    disk_records: int = 0  # gauge: requests on disk the downstream has not acknowledged
    disk_spilled_spans: int = 0  # written to disk only, the in-memory queue being full
    disk_replayed_spans: int = 0  # found on disk at start (delivered from there)
    disk_corrupt_records: int = 0  # records lost to damage on disk (a stretch of unreadable
    # framing counts as one); their spans, where their headers tell, count in failed_spans
    disk_full_refusals: int = 0  # submits refused at queue_max_bytes or by a failed write
    # (an attempt each: the pipeline offers a waiting request again on every tick and request)
    # how long each attempt to send a batch took, failed attempts included (not one that stop()
    # cancelled halfway)
    send_durations: Histogram = field(default_factory=send_durations)


class Exporter(Protocol):
    name: str  # e.g. "grpc://127.0.0.1:4317", for logs
    stats: ExporterStats

    def try_submit(self, request: bytes, span_count: int) -> bool:
        """Sync, O(1). False when the queue cannot take it (the caller refuses intake)."""
        ...

    def queued_spans(self) -> int: ...

    async def start(self) -> None: ...

    async def flush(self, timeout_s: float) -> bool:
        """Deliver everything queued (retrying) until empty or timeout; True if empty."""
        ...

    async def stop(self, timeout_s: float) -> None:
        """Refuse new submits, flush, then close; what is left is counted as failed."""
        ...


class Transport(Protocol):
    """Sends one batch to one downstream; knows nothing of queues or retries.

    ``send`` must not raise for expected errors: it answers with a ``SendResult`` (built with
    the classifiers of ``retry.py``). A transport that cannot abandon an attempt halfway when
    cancelled (the file: a line is written whole or not at all) may finish it and then raise
    ``CancelledAfterSending`` with what it came to, so that the batch is counted once."""

    name: str  # e.g. "grpc://127.0.0.1:4317", for logs

    async def open(self) -> None:
        """Create connections / sessions / files; called once, before the first send."""
        ...

    async def send(self, body: bytes) -> SendResult:
        """One attempt to deliver one serialized request."""
        ...

    async def close(self) -> None:
        """Release what open created; called once, after the last send."""
        ...


class CancelledAfterSending(asyncio.CancelledError):
    """A send was cancelled but finished its attempt first: ``result`` is what it came to."""

    def __init__(self, result: SendResult) -> None:
        super().__init__()
        self.result = result
