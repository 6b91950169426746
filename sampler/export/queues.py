"""Queues: where kept requests wait for the downstream, oldest first, bounded.

Two kinds behind one small protocol, so the delivery loop (``delivery.py``) has no branch on
which one it drives: ``MemoryQueue`` (the default) and ``DurableQueue`` (``durable.py``, with
``exporter.queue_dir``: every request written through to ``disk_queue.DiskQueue`` first).

A queue hands out *batches*: requests from its front joined into one request body, which is
valid because ``ExportTraceServiceRequest`` has a single field, the repeated ``resource_spans``
(field 1): the concatenation of serialized requests is one request holding all of their
resource spans. A request is never split. A batch taken is *in flight* until it is settled
(delivered or given up on); the queue counts it until then.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from sampler.export.disk_queue import Position


@dataclass(slots=True)
class Batch:
    """Requests joined for one send."""

    body: bytes
    span_count: int
    request_count: int
    end: Position | None  # on disk: acknowledging it acknowledges the batch


class Queue(Protocol):
    """Kept requests waiting for delivery, oldest first."""

    @property
    def durable(self) -> bool:
        """True: what is left at close stays for the next start; False: it is lost."""
        ...

    async def open(self) -> None:
        """Make the queue ready to take requests (and find what an earlier run left)."""
        ...

    def offer(self, request: bytes, span_count: int, now: float) -> bool:
        """Sync, O(1) in memory. False when there is no room (``now`` is when it was offered,
        on the delivery loop's clock)."""
        ...

    def oldest(self) -> float | None:
        """When the oldest waiting request was offered (0 if an earlier run left it), or None
        when nothing waits. The batch in flight does not wait."""
        ...

    def full_batch_waiting(self, max_spans: int, max_bytes: int) -> bool:
        """Whether waiting longer could not make the next batch any fuller."""
        ...

    def take(self, max_spans: int, max_bytes: int) -> Batch:
        """The next batch, from the front, within both limits but always one request at least
        (an oversized one goes out alone). Only when ``oldest()`` is not None; at most one
        batch is in flight."""
        ...

    def settle(self, batch: Batch) -> None:
        """The batch in flight was delivered or given up on: forget it."""
        ...

    def spans(self) -> int:
        """Spans waiting, plus those in flight."""
        ...

    async def close(self) -> tuple[int, int]:
        """Release the queue. Returns the (requests, spans) still held that are lost with it:
        everything for a memory queue, nothing for a durable one."""
        ...


class _Queued:
    """One request waiting in memory."""

    __slots__ = ("request", "span_count", "offered_at", "end")

    def __init__(
        self, request: bytes, span_count: int, offered_at: float, end: Position | None
    ) -> None:
        self.request = request
        self.span_count = span_count
        self.offered_at = offered_at
        self.end = end  # its end position in the disk queue, if there is one


class MemoryQueue:
    """Requests in memory, bounded in spans.

    Invariant: the spans held (waiting plus in flight) never exceed ``max_spans``, except for a
    single oversized request, which is taken when the queue is empty so that it cannot block
    intake forever.
    """

    durable = False

    def __init__(self, max_spans: int) -> None:
        self.max_spans = max_spans
        self._waiting: deque[_Queued] = deque()
        self._waiting_spans = 0
        self._waiting_bytes = 0
        self._in_flight: Batch | None = None

    async def open(self) -> None:
        return None

    def offer(
        self, request: bytes, span_count: int, now: float, end: Position | None = None
    ) -> bool:
        held = self.spans()
        if held > 0 and held + span_count > self.max_spans:
            return False
        self.append(request, span_count, now, end)
        return True

    def append(self, request: bytes, span_count: int, now: float, end: Position | None) -> None:
        """Add at the back whatever the bound says (for requests read back from disk)."""
        self._waiting.append(_Queued(request, span_count, now, end))
        self._waiting_spans += span_count
        self._waiting_bytes += len(request)

    def oldest(self) -> float | None:
        return self._waiting[0].offered_at if self._waiting else None

    def full_batch_waiting(self, max_spans: int, max_bytes: int) -> bool:
        return (
            self._waiting_spans >= min(max_spans, self.max_spans)
            or self._waiting_bytes >= max_bytes
        )

    def take(self, max_spans: int, max_bytes: int) -> Batch:
        assert self._in_flight is None, "one batch in flight at a time"
        parts: list[bytes] = []
        spans = size = 0
        end: Position | None = None
        while self._waiting:
            head = self._waiting[0]
            request, count = head.request, head.span_count
            too_big = spans + count > max_spans or size + len(request) > max_bytes
            if parts and too_big:
                break
            self._waiting.popleft()
            parts.append(request)
            spans += count
            size += len(request)
            end = head.end
        self._waiting_spans -= spans
        self._waiting_bytes -= size
        self._in_flight = Batch(b"".join(parts), spans, len(parts), end)
        return self._in_flight

    def settle(self, batch: Batch) -> None:
        if self._in_flight is batch:
            self._in_flight = None

    def spans(self) -> int:
        in_flight = self._in_flight.span_count if self._in_flight is not None else 0
        return self._waiting_spans + in_flight

    def requests(self) -> int:
        """Requests waiting, plus those joined in the batch in flight."""
        in_flight = self._in_flight.request_count if self._in_flight is not None else 0
        return len(self._waiting) + in_flight

    async def close(self) -> tuple[int, int]:
        lost = (len(self._waiting) + (1 if self._in_flight is not None else 0), self.spans())
        self.clear()
        return lost

    def clear(self) -> None:
        self._waiting.clear()
        self._waiting_spans = self._waiting_bytes = 0
        self._in_flight = None
