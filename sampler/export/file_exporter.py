"""File transport: one OTLP/JSON line per outgoing batch, as the collector's file exporter
writes them (so ``otlpjsonfilereceiver`` and ``agent-sampler replay`` read them back)."""

from __future__ import annotations

import io
import logging
import os
import random
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

    async def _open(self) -> None:
        try:
            self._ensure_open()
        except OSError as err:  # not fatal: every send retries the open
            logger.warning("exporter %s: cannot open output yet: %s", self.name, err)

    async def _close(self) -> None:
        self.close()

    async def _send(self, body: bytes) -> SendResult:
        try:
            line = _json_line(body)
        except OtlpDecodeError as err:  # resending the same bytes will not help
            return SendResult.permanent(f"cannot convert to OTLP/JSON: {err}")
        try:
            self._append(line)
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
