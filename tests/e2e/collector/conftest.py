"""The collector binary for the tests of this directory, built (or found up to date) once per
session by benchmarks/collector/build.sh. Without Go, or when the build fails, these tests
(and only these) are skipped, saying why; AGENT_SAMPLER_REQUIRE_COLLECTOR=1 makes that a
failure instead (for CI, where Go is installed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.collector.otelcol import BUILD_SCRIPT

HERE = Path(__file__).parent
BUILD_TIMEOUT_S = 1200  # a cold build is minutes on 2 cores
BUILD_RESULT = pytest.StashKey[tuple[Path | None, str]]()


def build_collector() -> tuple[Path | None, str]:
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
        return None, f"the collector build took more than {BUILD_TIMEOUT_S}s"
    path = result.stdout.strip()
    if result.returncode == 0 and path and Path(path).is_file():
        return Path(path), ""
    # build.sh says why on stderr: no Go (exit 0), or the build's error and then its own line.
    said = [line for line in result.stderr.splitlines() if line.strip()]
    return None, " | ".join(said[-3:] if result.returncode else said[-1:]) or "no output"


def pytest_collection_finish(session: pytest.Session) -> None:
    # Built here, after collection and outside any test's timeout, and only when a test of
    # this directory is selected: a cold build takes minutes.
    if session.config.option.collectonly:
        return
    if any(HERE in Path(item.path).parents for item in session.items):
        session.config.stash[BUILD_RESULT] = build_collector()


@pytest.fixture(scope="session")
def otelcol(request: pytest.FixtureRequest) -> Path:
    """Path of the collector binary (see benchmarks/collector/README.md)."""
    if BUILD_RESULT not in request.config.stash:
        request.config.stash[BUILD_RESULT] = build_collector()
    binary, why = request.config.stash[BUILD_RESULT]
    if binary is None:
        message = f"collector tests skipped, no collector binary: {why}"
        if os.environ.get("AGENT_SAMPLER_REQUIRE_COLLECTOR") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary
