"""File transport: one OTLP/JSON line per outgoing batch, as the collector's file exporter
writes them (so ``otlpjsonfilereceiver`` and ``agent-sampler replay`` read them back).

Converting a batch to JSON is pure Python and slow (seconds for a batch of a few hundred
thousand spans), and a write can block on a slow disk: both run in the exporter's own worker
thread, never on the event loop, which keeps answering (the thread gives up the GIL every few
milliseconds). One thread, and one batch at a time from the sender task, keep lines in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sampler.export.base import ExporterSettings, QueuedExporter, RetryClock, SendResult
from sampler.otlp.json_codec import OtlpDecodeError, request_bytes_to_json

logger = logging.getLogger(__name__)


class FileExporter(QueuedExporter):
    """Appends to ``path``, creating parent directories.

    Each line is written unbuffered, straight to the OS, so a concurrent reader never sees a
    batch half-flushed from a user-space buffer. A failed write (disk full) is cut back to the
    previous end of file before the retry, so a retried batch never leaves a torn line behind.
    ``write_now`` serves the offline ``replay`` command, with no queue and no retry.

    Sends convert and write in the worker thread (module docstring). If stop() cancels the
    sender meanwhile, a batch still being converted is abandoned unwritten (and counted lost
    by stop), and a batch being written is waited for and counted delivered: the file holds a
    line exactly for each batch counted in ``spans_sent``. Only the worker touches the file
    while a send is in progress.
    """

    def __init__(
        self,
        path: str,
        settings: ExporterSettings,
        *,
        clock: RetryClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(f"file://{path}", settings, clock=clock, rng=rng)
        self.path = Path(path)
        self._file: io.FileIO | None = None
        self._worker: ThreadPoolExecutor | None = None  # one thread: lines in order

    async def _open(self) -> None:
        try:
            self._ensure_open()
        except OSError as err:  # not fatal: every send retries the open
            logger.warning("exporter %s: cannot open output yet: %s", self.name, err)

    async def _close(self) -> None:
        if self._worker is not None:  # an abandoned conversion may still run: it writes nothing
            self._worker.shutdown(wait=False, cancel_futures=True)
            self._worker = None
        self.close()

    async def _send(self, body: bytes) -> SendResult:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="file-exporter")
        line = _Line(body)
        future = asyncio.get_running_loop().run_in_executor(self._worker, self._write, line)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if line.abandon():  # still converting: it will not be written
                raise
            # Being written (or written): a line cannot be taken back halfway. Wait for it,
            # however often cancelled (one write), and count it delivered if it went out.
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(future)
            if not future.cancelled() and future.exception() is None:
                self._settle_in_flight(future.result())
            raise

    def _write(self, line: _Line) -> SendResult:
        """In the worker thread: convert, then append unless abandoned meanwhile."""
        if line.abandoned():
            return SendResult.retryable("abandoned")
        try:
            text = _json_line(line.body)
        except OtlpDecodeError as err:  # resending the same bytes will not help
            return SendResult.permanent(f"cannot convert to OTLP/JSON: {err}")
        if not line.start_writing():
            return SendResult.retryable("abandoned")
        try:
            self._append(text)
        except OSError as err:
            return SendResult.retryable(f"write failed: {err}")
        return SendResult.ok()

    def write_now(self, request: bytes) -> None:
        """Synchronously append one request as one line; raises on failure."""
        self._append(_json_line(request))
        self.stats.requests_sent += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _ensure_open(self) -> io.FileIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = io.FileIO(self.path, "ab")
        return self._file

    def _append(self, line: bytes) -> None:
        file = self._ensure_open()
        start = os.fstat(file.fileno()).st_size
        try:
            view = memoryview(line)
            while view:
                written = file.write(view)
                view = view[written or 0 :]
        except OSError:
            self._truncate_after_failure(file, start)
            raise

    def _truncate_after_failure(self, file: io.FileIO, size: int) -> None:
        try:
            file.truncate(size)
        except OSError as err:
            logger.warning(
                "exporter %s: could not remove a partial line after a failed write: %s",
                self.name,
                err,
            )
            # Reopen next time so we at least start from a fresh descriptor.
            self.close()


def _json_line(request: bytes) -> bytes:
    return (request_bytes_to_json(request) + "\n").encode("utf-8")


class _Line:
    """One batch on its way to the file through the worker thread: converting, then writing,
    unless the sender abandoned it while it was still converting."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._lock = threading.Lock()
        self._state = "converting"  # -> "writing" (worker) | "abandoned" (sender)

    def abandon(self) -> bool:
        """True if it will not be written; False if it is being (or was) written."""
        with self._lock:
            if self._state == "converting":
                self._state = "abandoned"
            return self._state == "abandoned"

    def abandoned(self) -> bool:
        with self._lock:
            return self._state == "abandoned"

    def start_writing(self) -> bool:
        with self._lock:
            if self._state == "abandoned":
                return False
            self._state = "writing"
            return True
