"""Fixtures for the deploy kit's tests: the collector binary (benchmarks/collector/build.sh)
and kitcheck (tests/kitcheck/build.sh), each built once per session after collection, outside
any test's timeout, and only when a test of this directory is selected; the Kubernetes
manifests rendered by kitcheck. Without Go, or when a build fails, the tests that need the
binary are skipped, saying why; AGENT_SAMPLER_REQUIRE_COLLECTOR=1 (CI) makes that a failure."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.collector.binary import build_collector
from tests.deploy_kit import KUSTOMIZATIONS
from tests.kitcheck.binary import build_kitcheck

HERE = Path(__file__).parent
BUILDS: dict[str, Callable[[], tuple[Path | None, str]]] = {
    "collector": build_collector,
    "kitcheck": build_kitcheck,
}
BUILT = pytest.StashKey[dict[str, tuple[Path | None, str]]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if any(HERE in Path(item.path).parents for item in session.items):
        session.config.stash[BUILT] = {name: build() for name, build in BUILDS.items()}


def _binary(request: pytest.FixtureRequest, name: str) -> Path:
    built = request.config.stash.setdefault(BUILT, {})
    if name not in built:
        built[name] = BUILDS[name]()
    binary, why = built[name]
    if binary is None:
        message = f"deploy kit tests skipped, no {name} binary: {why}"
        if os.environ.get("AGENT_SAMPLER_REQUIRE_COLLECTOR") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def otelcol(request: pytest.FixtureRequest) -> Path:
    """The collector binary (benchmarks/collector/README.md)."""
    return _binary(request, "collector")


@pytest.fixture(scope="session")
def kitcheck(request: pytest.FixtureRequest) -> Path:
    """The kitcheck binary (tests/kitcheck/main.go)."""
    return _binary(request, "kitcheck")


def run_kitcheck(kitcheck: Path, *args: str) -> str:
    result = subprocess.run(
        [str(kitcheck), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kitcheck {' '.join(args)}:\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="session")
def rendered_text(kitcheck: Path) -> dict[str, str]:
    """Each Kubernetes layout rendered by kustomize's library, as `kubectl apply -k` would."""
    return {name: run_kitcheck(kitcheck, "kustomize", str(d)) for name, d in KUSTOMIZATIONS.items()}


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [doc for doc in yaml.safe_load_all(text) if doc]
        for name, text in rendered_text.items()
    }


@pytest.fixture(scope="session")
def kitcheck_manifests(
    kitcheck: Path, rendered_text: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """kitcheck's strict decoding of each rendered layout (its report)."""
    out = {}
    for name, text in rendered_text.items():
        path = tmp_path_factory.mktemp("manifests") / f"{name}.yaml"
        path.write_text(text)
        out[name] = run_kitcheck(kitcheck, "manifests", str(path))
    return out
