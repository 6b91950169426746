"""The runtime dependencies in pyproject.toml are exactly what the package imports: nothing
declared that nothing uses (it would be installed in every image for nothing), nothing used
that is not declared (it would work here only because a test extra pulled it in).

numpy is one of them: the durable queue's resync scan uses it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The top-level import name of each runtime dependency (a new dependency gets a row here).
IMPORTED_AS = {
    "opentelemetry-proto": "opentelemetry",
    "protobuf": "google",
    "googleapis-common-protos": "google",
    "grpcio": "grpc",
    "grpcio-health-checking": "grpc_health",
    "aiohttp": "aiohttp",
    "numpy": "numpy",  # the durable queue's resync scan (export/disk_queue.py)
    "pyyaml": "yaml",
    "prometheus-client": "prometheus_client",
    "redis": "redis",  # the cluster's store (cluster/link.py), used only when configured
}


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower() for spec in project["dependencies"]
    }


def imported() -> set[str]:
    """Top-level modules imported anywhere in sampler/, outside the standard library."""
    names: set[str] = set()
    for path in (ROOT / "sampler").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    # _typeshed: the standard library's stubs, imported for type checking only
    ours = {"sampler", "_typeshed"}
    return {name for name in names if name not in sys.stdlib_module_names and name not in ours}


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    unknown = sorted(declared() - IMPORTED_AS.keys())
    assert not unknown, f"declared but nothing in sampler/ imports them: {unknown}"
    unused = sorted(d for d in declared() if IMPORTED_AS[d] not in imported())
    assert not unused, f"declared but nothing in sampler/ imports them: {unused}"


def test_every_module_the_package_imports_is_declared() -> None:
    provided = {IMPORTED_AS[d] for d in declared()}
    assert imported() <= provided, sorted(imported() - provided)
