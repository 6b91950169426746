"""The kitcheck binary, built (or found up to date) by build.sh, for the deploy kit's tests."""

from __future__ import annotations

from pathlib import Path

from benchmarks.collector.binary import run_build_script

BUILD_SCRIPT = Path(__file__).with_name("build.sh")


def build_kitcheck() -> tuple[Path | None, str]:
    """The binary, or None and why there is none."""
    return run_build_script(BUILD_SCRIPT, "kitcheck")
