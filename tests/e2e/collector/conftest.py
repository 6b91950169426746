"""The collector binary for the tests of this directory, built (or found up to date) once per
session by benchmarks/collector/build.sh. Without Go, or when the build fails, these tests
(and only these) are skipped, saying why; AGENT_SAMPLER_REQUIRE_COLLECTOR=1 makes that a
failure instead (for CI, where Go is installed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.collector.binary import build_collector

HERE = Path(__file__).parent
BUILD_RESULT = pytest.StashKey[tuple[Path | None, str]]()


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
