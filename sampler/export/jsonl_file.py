"""The file downstream's file: OTLP/JSON lines, as the collector's ``file`` exporter writes
them (so ``otlpjsonfilereceiver`` and ``agent-sampler replay`` read them back).

Synchronous: the file transport calls it from its worker thread, ``replay`` directly.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

from sampler.otlp.json_codec import request_bytes_to_json

logger = logging.getLogger(__name__)


def json_line(request: bytes) -> bytes:
    """One serialized ``ExportTraceServiceRequest`` as one line of OTLP/JSON, newline included.
    Raises ``OtlpDecodeError`` for bytes that are not a request."""
    return (request_bytes_to_json(request) + "\n").encode("utf-8")


class JsonlFile:
    """Appends whole lines to ``path``, creating parent directories.

    Each line is written unbuffered, straight to the OS, so a concurrent reader never sees a
    line half-flushed from a user-space buffer. A failed write (disk full) is cut back to the
    previous end of file, so a line written again after a failure never leaves a torn line
    behind.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: io.FileIO | None = None

    def open(self) -> None:
        """Open (or create) the file now rather than at the first line; raises OSError."""
        self._ensure_open()

    def append(self, line: bytes) -> None:
        """Write ``line`` whole; raises OSError with nothing of it left in the file."""
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

    def write_request(self, request: bytes) -> None:
        """Append one request as one line; raises OSError or ``OtlpDecodeError``."""
        self.append(json_line(request))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _ensure_open(self) -> io.FileIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = io.FileIO(self.path, "ab")
        return self._file

    def _truncate_after_failure(self, file: io.FileIO, size: int) -> None:
        try:
            file.truncate(size)
        except OSError as err:
            logger.warning(
                "file %s: could not remove a partial line after a failed write: %s",
                self.path,
                err,
            )
            # Reopen next time so we at least start from a fresh descriptor.
            self.close()
