"""Resident memory of a process, sampled from /proc/PID/status while a test runs (Linux)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from benchmarks.throughput.processes import status_kib

MIB = 1024 * 1024


def rss_mib(pid: int) -> float:
    return status_kib(pid, "VmRSS") / 1024


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the largest resident set the process ever had (since ``reset_peak_rss``)."""
    return status_kib(pid, "VmHWM") / 1024


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM over from the current resident set (Linux: clear_refs 5)."""
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")


@dataclass
class RssWatch:
    """Samples VmRSS every ``interval_s`` in a thread: ``with RssWatch(pid) as watch: ...``."""

    pid: int
    interval_s: float = 0.1
    samples: list[tuple[float, float]] = field(default_factory=list)  # (monotonic s, MiB)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssWatch:
        self._thread = threading.Thread(target=self._run, name="rss-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), rss_mib(self.pid)))
            except (OSError, KeyError):  # the process is gone
                return
            self._stop.wait(self.interval_s)

    @property
    def peak(self) -> float:
        return max((mib for _, mib in self.samples), default=0.0)

    def between(self, start: float, end: float) -> list[float]:
        """The samples taken in [start, end) (monotonic seconds)."""
        return [mib for t, mib in self.samples if start <= t < end]
