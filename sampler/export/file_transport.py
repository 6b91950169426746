"""File transport: one OTLP/JSON line per outgoing batch (``jsonl_file``).

Converting a batch to JSON is pure Python and slow (seconds for a batch of a few hundred
thousand spans), and a write can block on a slow disk: both run in the transport's own worker
thread, never on the event loop, which keeps answering (the thread gives up the GIL every few
milliseconds). One thread, and one batch at a time from the sender task, keep lines in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sampler.export.base import CancelledAfterSending
from sampler.export.jsonl_file import JsonlFile, Rotation, json_line
from sampler.export.retry import SendResult
from sampler.otlp.json_codec import OtlpDecodeError

logger = logging.getLogger(__name__)


class FileTransport:
    """Appends each batch to ``path`` as one line of ``encode(batch)`` (OTLP/JSON), rotating
    the file by ``rotation`` (None: never); rotated files are deleted and compressed by a
    thread of their own (``jsonl_file``'s mill), so that writes never wait for them.

    Sends convert and write in the worker thread (module docstring). If the sender is
    cancelled meanwhile (stop() ran out of time), a batch still being converted is abandoned
    unwritten, and a batch being written is waited for and reported with
    ``CancelledAfterSending``: the file holds a line exactly for each batch counted sent. Only
    the worker touches the file while a send is in progress.
    """

    def __init__(
        self,
        path: str,
        rotation: Rotation | None = None,
        *,
        encode: Callable[[bytes], bytes] = json_line,
    ) -> None:
        self.name = f"file://{path}"
        self._worker: ThreadPoolExecutor | None = None  # one thread: lines in order
        self._mill = ThreadPoolExecutor(1, thread_name_prefix="file-rotation")
        self.file = JsonlFile(path, rotation, mill=self._mill)
        self.path = self.file.path
        self._encode = encode

    async def open(self) -> None:
        try:
            self.file.open()
        except OSError as err:  # not fatal: every send retries the open
            logger.warning("exporter %s: cannot open output yet: %s", self.name, err)

    async def close(self) -> None:
        if self._worker is not None:  # an abandoned conversion may still run: it writes nothing
            self._worker.shutdown(wait=False, cancel_futures=True)
            self._worker = None
        self.file.close()
        # A compression under way finishes in its thread (the interpreter waits for it at
        # exit); one cut short by a kill is done again by the next start's mill.
        self._mill.shutdown(wait=False)

    async def send(self, body: bytes) -> SendResult:
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
            # however often cancelled (one write), and report what it came to.
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(future)
            if not future.cancelled() and future.exception() is None:
                raise CancelledAfterSending(future.result()) from None
            raise

    def _write(self, line: _Line) -> SendResult:
        """In the worker thread: convert, then append unless abandoned meanwhile."""
        if line.abandoned():
            return SendResult.retryable("abandoned")
        try:
            text = self._encode(line.body)
        except OtlpDecodeError as err:  # resending the same bytes will not help
            return SendResult.permanent(f"cannot convert to OTLP/JSON: {err}")
        if not line.start_writing():
            return SendResult.retryable("abandoned")
        try:
            self.file.append(text)
        except OSError as err:
            return SendResult.retryable(f"write failed: {err}")
        return SendResult.ok()


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
