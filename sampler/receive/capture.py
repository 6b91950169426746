"""Traffic capture (``agent-sampler run --capture PATH``, ``capture.path``): every export request
the receivers accept, over gRPC or HTTP, in protobuf or JSON, appended to a file as one line of
OTLP/JSON in the order the requests were admitted, for ``agent-sampler replay`` to run through
other rules later. A request refused for room is not captured; its sender's retry is.

The event loop only hands over the body it already holds (no copy, no parsing). Converting
protobuf to OTLP/JSON (pure Python, about 65 µs a span) and writing run in one background
thread, behind a queue bounded in bytes: when the writer falls behind, a request is left out
of the capture rather than intake slowed or refused. Each one left out is counted
(``agent_sampler_capture_requests``) and the first logged, since a capture with gaps does not
replay as live ran. At ``capture.max_size`` capturing stops, with one log line: the file then
holds one unbroken stretch of traffic from its start, never a sample. A write that fails
(disk full) is cut back to the last whole line and stops the capture the same way.

An OTLP/JSON body is written as it came, its line breaks turned into spaces: in valid JSON a raw
line break can only be whitespace between tokens (inside a string it must be escaped), and the
body was validated before it was admitted. Replay reads it back with the same converter.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, cast

from sampler.otlp.json_codec import OtlpDecodeError, request_bytes_to_json
from sampler.receive.intake import Encoding

log = logging.getLogger(__name__)

# Bytes of request bodies waiting for the writer at most (one request is always taken when none
# waits): about four seconds of conversion, so shutdown does not wait long for the rest.
QUEUE_MAX_BYTES = 16 << 20
CLOSE_TIMEOUT_S = 10.0

# Why a request was left out of the capture (the `outcome` label besides "written").
QUEUE_FULL: Final = "queue_full"
SIZE_CAP: Final = "size_cap"
WRITE_ERROR: Final = "write_error"
SHUTDOWN: Final = "shutdown"

_STOP = object()


@dataclass(slots=True)
class CaptureStats:
    """What became of the requests offered (read through ``TrafficCapture.snapshot``)."""

    requests_written: int = 0
    bytes_written: int = 0
    requests_dropped: dict[str, int] = field(default_factory=dict)  # by reason


class TrafficCapture:
    """Appends accepted requests to ``path`` as OTLP/JSON lines, up to ``max_size`` bytes.

    ``offer`` is called on the event loop and never blocks; ``open`` and ``close`` start and
    stop the writer thread. Only the writer thread touches the file once it is open."""

    def __init__(self, path: str, max_size: int, *, queue_max_bytes: int = QUEUE_MAX_BYTES):
        self.path = Path(path)
        self.max_size = max_size
        self.queue_max_bytes = queue_max_bytes
        self.stats = CaptureStats()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._queued_bytes = 0
        self._stopped: str | None = None  # why nothing more is captured
        self._warned_queue_full = False
        self._abandon = threading.Event()
        self._file: io.FileIO | None = None
        self._size = 0
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Opens the file (raises ``OSError``: the sampler does not start without the capture
        it was asked for) and starts the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = io.FileIO(self.path, "ab")
        self._size = os.fstat(self._file.fileno()).st_size
        if self._size >= self.max_size:
            self._stop(SIZE_CAP)
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()
        log.info("capturing accepted traffic to %s (up to %s)", self.path, _size(self.max_size))

    def offer(self, body: bytes, encoding: Encoding) -> None:
        """An accepted request, to be captured; returns at once, whatever becomes of it."""
        size = len(body)
        with self._lock:
            if self._stopped is not None:
                self._count_dropped(self._stopped)
                return
            if self._queued_bytes and self._queued_bytes + size > self.queue_max_bytes:
                self._count_dropped(QUEUE_FULL)
                warn = not self._warned_queue_full
                self._warned_queue_full = True
            else:
                self._queued_bytes += size
                self._queue.put((body, encoding))
                return
        if warn:
            log.warning(
                "capture %s: the writer is behind; requests are left out of the capture "
                "(counted in agent_sampler_capture_requests): it has gaps from here",
                self.path,
            )

    def snapshot(self) -> CaptureStats:
        """The counters as they are now (the writer thread updates them)."""
        with self._lock:
            s = self.stats
            return CaptureStats(s.requests_written, s.bytes_written, dict(s.requests_dropped))

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Writes what is queued (for at most ``timeout_s``; the rest is counted as left out),
        stops the writer and closes the file. Blocks: not on the event loop."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout_s)
            if thread.is_alive():
                self._abandon.set()
                thread.join(timeout_s)
        stats = self.snapshot()
        log.info(
            "capture %s closed: %d request(s) written (%s), %d left out",
            self.path,
            stats.requests_written,
            _size(stats.bytes_written),
            sum(stats.requests_dropped.values()),
        )

    # -- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not _STOP:
                body, encoding = cast(tuple[bytes, Encoding], item)
                try:
                    if self._abandon.is_set():
                        with self._lock:
                            self._count_dropped(SHUTDOWN)
                    else:
                        self._capture(body, encoding)
                finally:
                    with self._lock:
                        self._queued_bytes -= len(body)
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _capture(self, body: bytes, encoding: Encoding) -> None:
        with self._lock:
            if self._stopped is not None:  # queued before capturing stopped
                self._count_dropped(self._stopped)
                return
        try:
            line = _line(body, encoding)
        except OtlpDecodeError as err:  # it was validated: a bug, not a reason to stop
            log.error("capture %s: a request could not be converted: %s", self.path, err)
            with self._lock:
                self._count_dropped(WRITE_ERROR)
            return
        if self._size + len(line) > self.max_size:
            self._stop(SIZE_CAP)
            with self._lock:
                self._count_dropped(SIZE_CAP)
            return
        try:
            self._append(line)
        except OSError as err:
            log.error("capture %s: cannot write (%s); capturing stops here", self.path, err)
            with self._lock:
                self._stopped = WRITE_ERROR
                self._count_dropped(WRITE_ERROR)
            return
        with self._lock:
            self.stats.requests_written += 1
            self.stats.bytes_written += len(line)

    def _append(self, line: bytes) -> None:
        assert self._file is not None
        start = self._size
        try:
            view = memoryview(line)
            while view:
                written = self._file.write(view)
                view = view[written or 0 :]
        except OSError:
            try:  # no torn line left behind
                self._file.truncate(start)
            except OSError:
                pass
            raise
        self._size += len(line)

    def _stop(self, reason: str) -> None:
        with self._lock:
            self._stopped = reason
        if reason == SIZE_CAP:
            log.warning(
                "capture %s reached capture.max_size (%s): capturing stops here",
                self.path,
                _size(self.max_size),
            )

    def _count_dropped(self, reason: str) -> None:
        """With the lock held."""
        dropped = self.stats.requests_dropped
        dropped[reason] = dropped.get(reason, 0) + 1


def _line(body: bytes, encoding: Encoding) -> bytes:
    if encoding == "json":
        return body.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n"
    return (request_bytes_to_json(body) + "\n").encode("utf-8")


def _size(value: int) -> str:
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if value >= 1 << shift:
            return f"{value / (1 << shift):.3g}{unit}"
    return f"{value}B"
