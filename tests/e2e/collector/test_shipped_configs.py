"""The deployment files of config/ are valid as shipped (the other tests here run them with
shorter timings): the collector's own `validate` and `agent-sampler check-config`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.collector.otelcol import CONFIG_DIR

pytestmark = pytest.mark.e2e

COLLECTOR_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("collector-*.yaml"))
SAMPLER_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("sampler-*.yaml"))
# The variables the files require (those with a default are left to it). The sidecar pair,
# collector and sampler, needs none: it runs on one machine as shipped.
ENV = {
    "BACKEND_ENDPOINT": "tempo:4317",
    "SAMPLER_ENDPOINTS": "[sampler-0:4317, sampler-1:4317]",
    "SAMPLER_DOWNSTREAM": "grpc://tempo:4317",
}


# Files the collector merges (`--config A --config B`), validated together too.
MERGED = [("collector-sidecar.yaml", "collector-sidecar-backend.yaml")]


def test_there_are_deployment_files() -> None:
    assert len(COLLECTOR_CONFIGS) >= 3 and len(SAMPLER_CONFIGS) >= 2


@pytest.mark.parametrize(
    "names", [(name,) for name in COLLECTOR_CONFIGS] + MERGED, ids=lambda names: "+".join(names)
)
def test_collector_config_is_valid(otelcol: Path, names: tuple[str, ...]) -> None:
    result = subprocess.run(
        [str(otelcol), "validate", *(f"--config={CONFIG_DIR / name}" for name in names)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **ENV},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", SAMPLER_CONFIGS)
def test_sampler_config_is_valid(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sampler", "check-config", str(CONFIG_DIR / name)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **ENV},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sidecar_pair_needs_no_backend(otelcol: Path) -> None:
    """Without a backend (no BACKEND_ENDPOINT, no SAMPLER_DOWNSTREAM) the sidecar chain is
    still valid: the sampler writes what it keeps to a file (deploy/local/run.sh runs it)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    collector = subprocess.run(
        [str(otelcol), "validate", f"--config={CONFIG_DIR / 'collector-sidecar.yaml'}"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert collector.returncode == 0, collector.stdout + collector.stderr
    sampler = subprocess.run(
        [sys.executable, "-m", "sampler", "check-config", str(CONFIG_DIR / "sampler-sidecar.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert sampler.returncode == 0, sampler.stdout + sampler.stderr
