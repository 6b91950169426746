"""Fixtures shared by the unit and end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, stopped after the test. Missing, it is a
    failure, not a skip: scripts/test.sh installs it."""
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()
