"""The file downstream's file: OTLP/JSON lines, as the collector's ``file`` exporter writes
them (so ``otlpjsonfilereceiver`` and ``agent-sampler replay`` read them back), rotated as
that exporter rotates (``Rotation``), so that left running it cannot fill the disk.

Rotated files are named after the file and the time of rotation, ``kept.jsonl`` becoming
``kept-2024-05-01T12-00-00.000.jsonl`` (UTC unless ``localtime``), then gzipped to
``....jsonl.gz`` if asked. Keeping only the newest ``max_backups`` and those younger than
``max_age_s`` (the *mill*) goes by the time in the name; compressing is written to a ``.tmp``
file renamed when whole, so a crash leaves either the plain file or the whole ``.gz``, and the
next mill finishes the job.

Synchronous: the file transport calls ``append`` from its worker thread (and hands the mill to
another, so compressing a rotated file never holds up a write); ``replay`` calls it directly.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sampler.otlp.json_codec import request_bytes_to_json

logger = logging.getLogger(__name__)

_STAMP = "%Y-%m-%dT%H-%M-%S"  # then .mmm: the collector's (lumberjack's) backup names
_STAMP_RE = r"(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2})\.(\d{3})"
GZIP_SUFFIX = ".gz"


def json_line(request: bytes) -> bytes:
    """One serialized ``ExportTraceServiceRequest`` as one line of OTLP/JSON, newline included.
    Raises ``OtlpDecodeError`` for bytes that are not a request."""
    return (request_bytes_to_json(request) + "\n").encode("utf-8")


@dataclass(frozen=True, slots=True)
class Rotation:
    """When the file is rotated and which rotated files are kept (the collector's file
    exporter's ``rotation``: ``max_megabytes``, ``max_backups``, ``max_days``, ``localtime``)."""

    max_bytes: int = 100 << 20  # rotate before a line would take the file past this; 0: never
    max_backups: int = 10  # rotated files kept, newest first; 0: all (max_age_s still applies)
    max_age_s: float = 0.0  # rotated files older than this are deleted; 0: no age limit
    localtime: bool = False  # rotated files named by local time, not UTC
    compress: bool = False  # gzip rotated files


class JsonlFile:
    """Appends whole lines to ``path``, creating parent directories, rotating it by
    ``rotation`` (None: never).

    Each line is written unbuffered, straight to the OS, so a concurrent reader never sees a
    line half-flushed from a user-space buffer, and never split across two files: a rotation
    happens between lines, and a line larger than ``max_bytes`` gets a file of its own. A
    failed write (disk full) is cut back to the previous end of file, so a line written again
    after a failure never leaves a torn line behind.

    ``clock`` gives wall-clock seconds (rotated files' names and ages); ``mill`` runs the
    deleting and compressing of rotated files (None: at once, in the caller's thread).
    """

    def __init__(
        self,
        path: str | Path,
        rotation: Rotation | None = None,
        *,
        clock: Callable[[], float] = time.time,
        mill: Executor | None = None,
    ) -> None:
        self.path = Path(path)
        self.rotation = rotation
        self._clock = clock
        self._mill = mill
        self._file: io.FileIO | None = None
        self._milled_at_open = False
        name = self.path.name
        self._stem, self._suffix = (name, "") if "." not in name[1:] else name.rsplit(".", 1)
        if self._suffix:
            self._suffix = "." + self._suffix
        self._backup_re = re.compile(
            rf"{re.escape(self._stem)}-{_STAMP_RE}{re.escape(self._suffix)}"
            rf"(?P<gz>{re.escape(GZIP_SUFFIX)})?"
        )

    def open(self) -> None:
        """Open (or create) the file now rather than at the first line; raises OSError."""
        self._ensure_open()

    def append(self, line: bytes) -> None:
        """Write ``line`` whole; raises OSError with nothing of it left in the file."""
        file = self._ensure_open()
        start = os.fstat(file.fileno()).st_size
        limit = self.rotation.max_bytes if self.rotation is not None else 0
        if limit and start and start + len(line) > limit:
            self.rotate()
            file = self._ensure_open()
            start = 0
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

    def rotate(self) -> None:
        """Move the file aside under its rotated name and start a new one at the next line;
        then mill. Raises OSError if it cannot be moved."""
        self.close()
        now = self._clock()
        target = self._backup_path(now)
        while target.exists() or target.with_name(target.name + GZIP_SUFFIX).exists():
            now += 0.001  # two rotations within a millisecond: never overwrite a backup
            target = self._backup_path(now)
        os.rename(self.path, target)
        self._request_mill()

    def mill(self) -> None:
        """Delete the rotated files past ``max_backups`` or ``max_age_s``; gzip the others if
        ``compress``. Problems are logged, never raised: the next mill tries again."""
        rotation = self.rotation
        if rotation is None:
            return
        try:
            for entry in os.scandir(self.path.parent):  # compressions a crash cut short
                if entry.name.startswith(f"{self._stem}-") and entry.name.endswith(".gz.tmp"):
                    os.unlink(entry.path)  # (their plain file is still there)
            found, compressed_twice = self._scan()
            for path in compressed_twice:
                path.unlink(missing_ok=True)
        except OSError as err:
            logger.warning("file %s: cannot list rotated files: %s", self.path, err)
            return
        cutoff = self._clock() - rotation.max_age_s if rotation.max_age_s else None
        for rank, (stamp, path) in enumerate(found):
            too_many = rotation.max_backups and rank >= rotation.max_backups
            too_old = cutoff is not None and stamp < cutoff
            try:
                if too_many or too_old:
                    path.unlink(missing_ok=True)
                elif rotation.compress and not path.name.endswith(GZIP_SUFFIX):
                    _gzip(path)
            except OSError as err:
                logger.warning("file %s: cannot mill rotated file %s: %s", self.path, path, err)

    # -- internals ------------------------------------------------------------------------

    def _ensure_open(self) -> io.FileIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = io.FileIO(self.path, "ab")
            if not self._milled_at_open:
                self._milled_at_open = True
                self._request_mill()  # what an earlier run left, under today's settings
        return self._file

    def _request_mill(self) -> None:
        if self.rotation is None:
            return
        if self._mill is None:
            self.mill()
        else:
            self._mill.submit(self.mill)

    def _backup_path(self, now: float) -> Path:
        rotation = self.rotation or Rotation()
        moment = datetime.fromtimestamp(now, None if rotation.localtime else UTC)
        stamp = f"{moment.strftime(_STAMP)}.{moment.microsecond // 1000:03d}"
        return self.path.with_name(f"{self._stem}-{stamp}{self._suffix}")

    def _scan(self) -> tuple[list[tuple[float, Path]], list[Path]]:
        """The rotated files, newest first, as (time in the name, path); and the plain files
        whose whole ``.gz`` is beside them (a compression that ended before its unlink)."""
        zone = None if (self.rotation or Rotation()).localtime else UTC
        plain: dict[str, tuple[float, Path]] = {}
        gzipped: dict[str, tuple[float, Path]] = {}
        for entry in os.scandir(self.path.parent):
            match = self._backup_re.fullmatch(entry.name)
            if match is None:
                continue
            moment = datetime.strptime(match.group(1), _STAMP).replace(tzinfo=zone)
            stamp = (moment + timedelta(milliseconds=int(match.group(2)))).timestamp()
            into = gzipped if match.group("gz") else plain
            into[entry.name.removesuffix(GZIP_SUFFIX)] = (stamp, Path(entry.path))
        redundant = [plain.pop(name)[1] for name in list(plain) if name in gzipped]
        found = sorted([*plain.values(), *gzipped.values()], key=lambda item: -item[0])
        return found, redundant

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


def _gzip(path: Path) -> None:
    """``path`` to ``path.gz``, whole or not at all, then remove ``path``."""
    final = path.with_name(path.name + GZIP_SUFFIX)
    partial = path.with_name(final.name + ".tmp")
    try:
        with path.open("rb") as source, gzip.open(partial, "wb", compresslevel=6) as target:
            shutil.copyfileobj(source, target, 1 << 20)
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    path.unlink()
