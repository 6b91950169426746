"""How the connection caps fit the file-descriptor limit (runtime.connection_budget), and the
soft limit raised to the hard one at start (runtime.raise_descriptor_limit)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sampler.config.load import load_config_text
from sampler.runtime import DESCRIPTOR_RESERVE, MIN_CONNECTIONS, connection_budget

CONFIG = "rules:\n  - {name: all, action: keep}\n"


def config(grpc: str = "", http: str = "", metrics: str = "") -> str:
    receivers = f"receivers:\n  grpc: {{{grpc}}}\n  http: {{{http}}}\n"
    return CONFIG + receivers + f"metrics: {{{metrics}}}\n"


@pytest.mark.parametrize(
    ("text", "descriptors", "expected"),
    [
        # the defaults (1024 + 1024 + 32) fit in 1,048,576 descriptors
        (config(), 1 << 20, (1024, 1024, 32, False)),
        # a soft limit of 1,024: metrics keeps 32, the OTLP listeners share 1024 - 64 - 32
        (config(), 1024, (464, 464, 32, True)),
        # just enough for the defaults
        (config(), 2048 + 32 + DESCRIPTOR_RESERVE, (1024, 1024, 32, False)),
        # one listener off: the other gets the room
        (config(http="listen: ''"), 1024, (928, 0, 32, True)),
        # a small cap is kept; the other listener gets what it leaves
        (config(grpc="max_connections: 100"), 1024, (100, 828, 32, True)),
        (config(metrics="listen: '', max_connections: 5"), 1024, (480, 480, 0, True)),
        # however low the limit, each listener keeps a few
        (config(), 64, (MIN_CONNECTIONS, MIN_CONNECTIONS, 32, True)),
    ],
    ids=["roomy", "1024", "just-enough", "http-off", "small-grpc-cap", "metrics-off", "tiny"],
)
def test_caps_fit_the_descriptor_limit(
    text: str, descriptors: int, expected: tuple[int, int, int, bool]
) -> None:
    budget = connection_budget(load_config_text(text, "test.yaml"), descriptors)
    assert (budget.grpc, budget.http, budget.metrics, budget.lowered) == expected
    if budget.grpc > MIN_CONNECTIONS:
        assert budget.grpc + budget.http + budget.metrics + DESCRIPTOR_RESERVE <= descriptors


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))\n"
        "from sampler.runtime import raise_descriptor_limit\n"
        "print(raise_descriptor_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["1024", "(1024,", "1024)"]
