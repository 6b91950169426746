"""The collector binary, built (or found up to date) by build.sh, for tests and benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

BUILD_SCRIPT = Path(__file__).with_name("build.sh")
BUILD_TIMEOUT_S = 1200  # a cold build is minutes on 2 cores


def build_collector() -> tuple[Path | None, str]:
    """The binary, or None and why there is none."""
    return run_build_script(BUILD_SCRIPT, "collector")


def run_build_script(script: Path, what: str) -> tuple[Path | None, str]:
    """Runs a cached Go build script that prints its binary's path on stdout (the collector's,
    tests/kitcheck's): the binary, or None and why there is none."""
    try:
        result = subprocess.run(
            ["bash", str(script)],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"the {what} build took more than {BUILD_TIMEOUT_S}s"
    path = result.stdout.strip()
    if result.returncode == 0 and path and Path(path).is_file():
        return Path(path), ""
    # build.sh says why on stderr: no Go (exit 0), or the build's error and then its own line.
    said = [line for line in result.stderr.splitlines() if line.strip()]
    return None, " | ".join(said[-3:] if result.returncode else said[-1:]) or "no output"
