"""The one receive flow: every transport (OTLP/gRPC, OTLP/HTTP protobuf and JSON) hands its
request body here and maps the `Answer` to its own status codes.

The flow, for one body:
1. **decode, bounded**: the protobuf is validated by the native core without building anything
   (``sampler._native.validate``): malformed input is INVALID_ARGUMENT, more than ``max_spans``
   spans RESOURCE_EXHAUSTED (not retryable). OTLP/JSON becomes protobuf bytes first, the one
   decode that takes memory: while it runs the body counts against the buffer's memory limit
   (``IntakeTarget.reserve``), and without room for it the request is refused at once,
   retryable. A body larger than a few hundred KiB is decoded on a worker thread, without
   the GIL, so the event loop keeps answering;
2. **admission**: the pipeline takes the request or refuses it whole (retryable);
3. **ingest**, chunk by chunk, yielding to the event loop between chunks.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from sampler._native import (
    InternalError,
    InvalidRequest,
    Request,
    RequestTooLarge,
    validate,
    validate_json,
)

Encoding = Literal["protobuf", "json"]
T = TypeVar("T")

# Bodies up to this size are decoded on the event loop: well under a millisecond natively.
INLINE_DECODE_BYTES = 256 << 10
# Work ingested between two turns of the event loop, in units: a span, each KiB of a large
# span, a resource or scope block (a request of empty blocks is taken in steps too).
INGEST_CHUNK_SPANS = 4096

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Admission:
    """The pipeline's answer to one export request.

    `accepted=False` means nothing of the request was kept and the sender must retry it after
    `retry_after_s`. `accepted=True` with `rejected_spans > 0` is an OTLP partial success: the
    rest was kept, the rejected spans must not be retried.
    """

    accepted: bool
    reason: str = ""
    retry_after_s: float = 0.0
    rejected_spans: int = 0


ACCEPTED = Admission(True)
REFUSED_DEFAULT_REASON = "the sampler cannot take more data now; retry later"


class Outcome(enum.Enum):
    OK = "ok"  # taken (maybe a partial success: rejected_spans)
    REFUSED = "refused"  # retry later: RESOURCE_EXHAUSTED + RetryInfo / 429
    INVALID = "invalid"  # INVALID_ARGUMENT / 400
    TOO_LARGE = "too_large"  # RESOURCE_EXHAUSTED without RetryInfo / 413


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
    message: str = ""
    retry_after_s: float = 0.0
    rejected_spans: int = 0


@dataclass(slots=True)
class Intake:
    """One admitted request on its way into the buffer, chunk by chunk."""

    request: Request
    memory: int  # what the pipeline counts as in flight until the request is all in
    invalid: int = 0  # spans rejected so far for invalid ids

    def admission(self) -> Admission:
        if not self.invalid:
            return ACCEPTED
        return Admission(
            True,
            reason=f"{self.invalid} span(s) with an invalid trace or span id "
            "(trace ids are 16 bytes, span ids 8, neither all zero)",
            rejected_spans=self.invalid,
        )


class IntakeTarget(Protocol):
    """What the flow needs of the pipeline."""

    def reserve(self, size: int) -> bool:
        """Room for ``size`` bytes being decoded; False: refuse the request for now."""
        ...

    def unreserve(self, size: int) -> None: ...

    def admit(self, request: Request) -> Intake | Admission: ...

    def ingest(self, intake: Intake, max_spans: int = INGEST_CHUNK_SPANS) -> bool: ...


@dataclass(slots=True)
class ReceiverStats:
    """Counters one receiver updates as requests arrive (read by the metrics layer).

    Every request that reaches the export handler lands in exactly one `requests_*` counter.
    `spans_received` counts the spans of every decoded request, `spans_refused` the part of them
    that was refused (whole refused requests plus partial rejections).
    """

    requests_ok: int = 0
    requests_invalid: int = 0
    requests_refused: int = 0
    requests_too_large: int = 0
    requests_unauthenticated: int = 0
    requests_timed_out: int = 0  # OTLP/HTTP: the body did not arrive within the read timeout
    spans_received: int = 0
    spans_refused: int = 0


def decode(body: bytes, encoding: Encoding, max_spans: int, max_bytes: int) -> Request:
    """Validates a body (``InvalidRequest``, ``RequestTooLarge``), OTLP/JSON converted to
    protobuf first (at most ``max_bytes`` of it). Runs without the GIL: fine on a worker
    thread."""
    if encoding == "json":
        return validate_json(body, max_bytes, max_spans)
    return validate(body, max_spans)


class CaptureSink(Protocol):
    """Where admitted request bodies are recorded (``sampler.receive.capture``); must not block."""

    def offer(self, body: bytes, encoding: Encoding) -> None: ...


class ReceiveFlow:
    def __init__(
        self,
        target: IntakeTarget,
        *,
        max_spans: int,
        max_message_bytes: int = 16 << 20,
        decoding: Executor | None = None,
        capture: CaptureSink | None = None,
    ) -> None:
        self._target = target
        self._max_spans = max_spans
        self._max_bytes = max_message_bytes
        self._decoding = decoding  # None: decode on the loop (tests, tiny deployments)
        self._capture = capture

    async def receive(self, body: bytes, encoding: Encoding, stats: ReceiverStats) -> Answer:
        # Only JSON takes memory to decode (its protobuf form, no larger than the body): the
        # spans of a JSON body refused here are not known, so not counted as refused spans.
        size = len(body) if encoding == "json" else 0
        if size and not self._target.reserve(size):
            stats.requests_refused += 1
            return Answer(Outcome.REFUSED, "session buffer memory full", 1.0)
        try:
            request = await self._decode(body, encoding)
        except InvalidRequest as exc:
            stats.requests_invalid += 1
            return Answer(Outcome.INVALID, _clip(str(exc)))
        except RequestTooLarge as exc:
            stats.requests_too_large += 1
            return Answer(Outcome.TOO_LARGE, str(exc))
        finally:
            if size:
                self._target.unreserve(size)
        stats.spans_received += request.spans
        intake = self._target.admit(request)
        if isinstance(intake, Admission):
            stats.requests_refused += 1
            stats.spans_refused += request.spans
            return Answer(Outcome.REFUSED, intake.reason, intake.retry_after_s)
        if self._capture is not None:  # admitted: in the order the buffer takes them
            self._capture.offer(body, encoding)
        del body  # the request holds what is needed of it
        try:
            while not self._target.ingest(intake):
                await asyncio.sleep(0)  # let the loop answer others between chunks
        except (InvalidRequest, InternalError) as exc:
            # validated, yet unreadable: a bug in the native core, caught there; what came
            # before in the request was taken
            _log.error("a validated request could not be ingested: %s", exc)
            stats.requests_invalid += 1
            return Answer(Outcome.INVALID, _clip(str(exc)))
        admission = intake.admission()
        stats.requests_ok += 1
        stats.spans_refused += admission.rejected_spans
        return Answer(Outcome.OK, admission.reason, rejected_spans=admission.rejected_spans)

    async def off_loop(self, work: Callable[[], T]) -> T:
        """Runs ``work`` on the decoding threads (on the loop when there are none)."""
        if self._decoding is None:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._decoding, work)

    async def _decode(self, body: bytes, encoding: Encoding) -> Request:
        if self._decoding is None or len(body) <= INLINE_DECODE_BYTES:
            return decode(body, encoding, self._max_spans, self._max_bytes)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._decoding, decode, body, encoding, self._max_spans, self._max_bytes
        )


def _clip(message: str, limit: int = 1000) -> str:
    """An error text fit to send back: cut to ``limit`` characters, keeping both ends."""
    if len(message) <= limit:
        return message
    half = (limit - 5) // 2
    return f"{message[:half]} ... {message[-half:]}"
