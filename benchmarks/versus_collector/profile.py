"""Where a Python process spends its CPU: a py-spy recording, summarised by function.

py-spy samples the process from outside (``--nonblocking``: it does not pause it), so the
process runs at nearly full speed while it is recorded. The summary gives each function's
share of the samples, inclusive (the function or anything it calls; the trunk common to 90% of
the samples or more, such as the event loop, is left out) and self (the function's own code),
with line numbers folded so that a function is one row.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.throughput.processes import taskset

_LINE = re.compile(r":\d+\)$")
_PREFIXES = ("site-packages/", "/work/", "/usr/lib/")
TRUNK_SHARE = 0.9


def py_spy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def start_recording(
    pid: int, seconds: float, out: Path, cpus: Sequence[int], rate: int = 200
) -> subprocess.Popen[bytes] | None:
    """py-spy recording ``pid`` for ``seconds`` into ``out`` (collapsed stacks), or None when
    py-spy is not installed."""
    binary = py_spy()
    if binary is None:
        return None
    command = [
        binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
        "--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(out),
    ]  # fmt: skip
    return subprocess.Popen(
        [*taskset(cpus), *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _frame(raw: str) -> str:
    name = _LINE.sub(")", raw.strip())
    for prefix in _PREFIXES:
        at = name.find(prefix)
        if at >= 0:
            head = name[: name.index("(") + 1]
            name = head + name[at + len(prefix) :]
            break
    return name


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    """Shares of the samples by function: ``inclusive`` and ``self``, the largest first."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "share": round(n / total, 3)} for name, n in counter.most_common(top)
        ]

    # The trunk (the event loop, main, ...) is in nearly every sample and says nothing.
    branches = Counter({name: n for name, n in inclusive.items() if n < TRUNK_SHARE * total})
    return {"samples": total, "inclusive": rows(branches), "self": rows(own)}
