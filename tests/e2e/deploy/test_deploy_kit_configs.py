"""Every config the deploy kit mounts is valid where it is mounted: each collector config is
validated by the collector this repository builds (`validate`, with the environment its
container sets), each sampler config by `agent-sampler check-config` (likewise). The configs
are taken from what the kit mounts: the compose file's bind mounts, and the ConfigMaps of the
rendered Kubernetes manifests. (The local recipe runs config/ as shipped: see
tests/e2e/collector/test_shipped_configs.py and test_local_recipe.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy_kit import COMPOSE, compose, required_env

pytestmark = pytest.mark.e2e


def compose_configs() -> list[tuple[str, str, Path, dict[str, str]]]:
    """(where, collector|sampler, file, env) for the compose file's mounted configs."""
    out = []
    for name, service in compose()["services"].items():
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            path = (COMPOSE.parent / source).resolve()
            kinds = {"/etc/otelcol/": "collector", "/etc/agent-sampler/": "sampler"}
            kind = next((k for prefix, k in kinds.items() if target.startswith(prefix)), "")
            if kind:
                out.append((f"compose {name} {target}", kind, path, env))
    return out


COMPOSE_CONFIGS = compose_configs()


def test_compose_mounts_a_collector_and_a_sampler_config() -> None:
    assert sorted(kind for _, kind, _, _ in COMPOSE_CONFIGS) == ["collector", "sampler"]


def validate(kind: str, otelcol: Path, path: Path, env: dict[str, str]) -> None:
    text = path.read_text()
    missing = required_env(text) - set(env)
    assert not missing, f"{path}: the container does not set {sorted(missing)}"
    # Only the container's environment, as in the container.
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    if kind == "collector":
        command = [str(otelcol), "validate", f"--config={path}"]
    else:
        command = [sys.executable, "-m", "sampler", "check-config", str(path)]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=30, env={**base, **env}, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "where, kind, path, env", COMPOSE_CONFIGS, ids=[c[0] for c in COMPOSE_CONFIGS]
)
def test_compose_configs_are_valid(
    otelcol: Path, where: str, kind: str, path: Path, env: dict[str, str]
) -> None:
    validate(kind, otelcol, path, env)


def test_kubernetes_configmaps_are_valid(
    otelcol: Path, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    checked = []
    for layout, docs in rendered.items():
        configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        for doc in docs:
            if doc["kind"] not in ("Deployment", "StatefulSet"):
                continue
            spec = doc["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in spec["volumes"]}
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                kind = "sampler" if "agent-tail-sampler" in container["image"] else "collector"
                env = {e["name"]: e["value"] for e in container.get("env", [])}
                for mount in container["volumeMounts"]:
                    volume = volumes[mount["name"]]
                    if "configMap" not in volume:
                        continue
                    data = configmaps[volume["configMap"]["name"]]["data"]
                    key = kind + ".yaml"
                    assert key in data, f"{layout}: {container['name']} mounts no {key}"
                    path = tmp_path / f"{layout}-{container['name']}-{key}"
                    path.write_text(data[key])
                    validate(kind, otelcol, path, env)
                    checked.append((layout, kind))
    assert sorted(checked) == [
        ("load-balanced", "collector"),
        ("load-balanced", "sampler"),
        ("sidecar", "collector"),
        ("sidecar", "sampler"),
    ]
