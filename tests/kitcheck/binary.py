"""The kitcheck binary, built (or found up to date) by build.sh, for the deploy kit's tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

BUILD_SCRIPT = Path(__file__).with_name("build.sh")
BUILD_TIMEOUT_S = 1200  # a cold build downloads and compiles minutes' worth of modules


def build_kitcheck() -> tuple[Path | None, str]:
    """The binary, or None and why there is none."""
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"the kitcheck build took more than {BUILD_TIMEOUT_S}s"
    path = result.stdout.strip()
    if result.returncode == 0 and path and Path(path).is_file():
        return Path(path), ""
    said = [line for line in result.stderr.splitlines() if line.strip()]
    return None, " | ".join(said[-3:] if result.returncode else said[-1:]) or "no output"
