"""The Kubernetes manifests of the deploy kit (deploy/kubernetes/) cannot be applied here (no
cluster): they are rendered by kustomize's own library, decoded strictly into the Kubernetes
API types (tests/kitcheck), and what they say is checked against what they run. The sampler's
arguments are parsed by the CLI's parser and its config, taken from the rendered ConfigMap, is
loaded as the sampler would load it in that container; addresses, ports, probes, the image, the
user, the writable paths and the resources are checked against it, the Dockerfile, the
collector's config and the sizing in docs/operations.md. test_deploy_kit_configs.py validates
the same ConfigMaps with the collector and `agent-sampler check-config`."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sampler.cli import apply_overrides
from sampler.config.load import load_config_text
from sampler.config.model import SamplerConfig
from tests.deploy_kit import (
    DEPLOY,
    KUSTOMIZATIONS,
    ROOT,
    SAMPLER_IMAGE,
    collector_version,
    expand_env,
    host_port,
    image,
    parse_cli,
    project_version,
)

pytestmark = pytest.mark.e2e

LAYOUTS = sorted(KUSTOMIZATIONS)
QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "": 1}


def quantity(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMGT]i)?", value).groups()  # type: ignore[union-attr]
    return int(number) * QUANTITY[unit or ""]


@dataclass
class Pod:
    """One workload's pod template, with what it mounts."""

    kind: str
    name: str
    spec: dict[str, Any]
    configmaps: dict[str, dict[str, str]]  # every rendered ConfigMap by name

    def containers(self) -> list[dict[str, Any]]:
        return [*self.spec.get("initContainers", []), *self.spec["containers"]]

    def container(self, image_name: str) -> dict[str, Any]:
        (found,) = [c for c in self.containers() if image_name in c["image"]]
        return found

    def volume(self, name: str) -> dict[str, Any]:
        (found,) = [v for v in self.spec["volumes"] if v["name"] == name]
        return found

    def mounted_file(self, container: dict[str, Any], path: str) -> str:
        """The content a container sees at ``path``, from a mounted ConfigMap."""
        for mount in container["volumeMounts"]:
            base = mount["mountPath"]
            if mount.get("subPath"):
                key = mount["subPath"] if path == base else None
            else:
                key = path[len(base) + 1 :] if path.startswith(base + "/") else None
            volume = self.volume(mount["name"])
            if key and "configMap" in volume:
                return self.configmaps[volume["configMap"]["name"]][key]
        raise AssertionError(f"{path} is not mounted from a ConfigMap in {container['name']}")

    def writable_paths(self, container: dict[str, Any]) -> list[str]:
        return [
            m["mountPath"]
            for m in container["volumeMounts"]
            if "emptyDir" in self.volume(m["name"])
            or "persistentVolumeClaim" in self.volume(m["name"])
        ]


@pytest.fixture(scope="module", params=LAYOUTS)
def layout(request: pytest.FixtureRequest, rendered: dict[str, list[dict[str, Any]]]) -> str:
    return str(request.param)


def pods(docs: list[dict[str, Any]]) -> list[Pod]:
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    return [
        Pod(d["kind"], d["metadata"]["name"], d["spec"]["template"]["spec"], configmaps)
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
    ]


def sampler_of(docs: list[dict[str, Any]]) -> tuple[Pod, dict[str, Any]]:
    (pod,) = [p for p in pods(docs) if any(SAMPLER_IMAGE in c["image"] for c in p.containers())]
    return pod, pod.container(SAMPLER_IMAGE)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def sampler_setup(pod: Pod, container: dict[str, Any]) -> tuple[argparse.Namespace, SamplerConfig]:
    assert "command" not in container, "the image's ENTRYPOINT (agent-sampler) runs"
    args = parse_cli(container["args"])
    assert args.command == "run"
    text = pod.mounted_file(container, args.config)
    config = load_config_text(text, args.config, environ=env_of(container))
    return args, apply_overrides(config, args)


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_the_manifests_decode_strictly_into_their_api_types(
    kitcheck_manifests: dict[str, str], layout: str
) -> None:
    assert "OK" in kitcheck_manifests[layout]


def test_the_sampler_image_is_the_dockerfiles_at_the_project_version(
    rendered: dict[str, list[dict[str, Any]]], layout: str
) -> None:
    _, container = sampler_of(rendered[layout])
    assert container["image"] == f"registry.example.com/{SAMPLER_IMAGE}:{project_version()}"


def test_the_collector_is_the_distribution_of_the_tested_version(
    rendered: dict[str, list[dict[str, Any]]], layout: str
) -> None:
    images = {c["image"] for pod in pods(rendered[layout]) for c in pod.containers()}
    collectors = {i for i in images if "collector" in i}
    assert collectors == {f"otel/opentelemetry-collector-contrib:{collector_version()}"}


def test_the_sampler_runs_non_root_on_a_read_only_root_writing_only_to_its_volumes(
    rendered: dict[str, list[dict[str, Any]]], layout: str
) -> None:
    pod, container = sampler_of(rendered[layout])
    assert pod.spec["securityContext"]["runAsNonRoot"] is True
    assert pod.spec["securityContext"]["runAsUser"] == image().uid
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    _, config = sampler_setup(pod, container)
    writable = pod.writable_paths(container)
    # The image's working directory (a file:// downstream writes there) and the queue dir.
    assert image().workdir in writable
    assert config.exporter.queue_dir is not None
    assert any(Path(config.exporter.queue_dir).is_relative_to(p) for p in writable)
    (data,) = [
        pod.volume(m["name"])
        for m in container["volumeMounts"]
        if m["mountPath"] == image().workdir
    ]
    assert quantity(data["emptyDir"]["sizeLimit"]) > config.exporter.queue_max_bytes
    for other in pod.containers():
        assert other["securityContext"]["readOnlyRootFilesystem"] is True


def test_probes_use_the_samplers_health_endpoints_on_its_ports(
    rendered: dict[str, list[dict[str, Any]]], layout: str
) -> None:
    pod, container = sampler_of(rendered[layout])
    _, config = sampler_setup(pod, container)
    metrics_host, metrics_port = host_port(config.metrics.listen)
    assert metrics_host == "0.0.0.0", "the kubelet probes the pod's address"
    assert metrics_port in image().exposed
    probes = {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["startupProbe"]["httpGet"]["path"] == "/readyz"
    for probe in probes.values():
        if "httpGet" in probe:
            assert port_number(container, probe["httpGet"]["port"]) == metrics_port
    readiness = probes["readinessProbe"]
    grpc_host, grpc_port = host_port(config.receivers.grpc.listen)
    if "grpc" in readiness:  # the OTLP port's grpc.health.v1 service
        assert grpc_host == "0.0.0.0" and readiness["grpc"]["port"] == grpc_port
        assert grpc_port in image().exposed
    else:  # the OTLP listener is on loopback: the kubelet cannot reach it
        assert grpc_host == "127.0.0.1"
        assert readiness["httpGet"]["path"] == "/readyz"


def test_shutdown_has_time_to_decide_and_flush(
    rendered: dict[str, list[dict[str, Any]]], layout: str
) -> None:
    pod, _ = sampler_of(rendered[layout])
    assert pod.spec["terminationGracePeriodSeconds"] >= 30  # a flush takes up to 25 s


def test_resources_follow_the_documented_sizing(
    rendered: dict[str, list[dict[str, Any]]], layout: str
) -> None:
    # docs/operations.md: one process uses one core; keep max_buffered_memory at most half of
    # the container's memory limit.
    pod, container = sampler_of(rendered[layout])
    _, config = sampler_setup(pod, container)
    resources = container["resources"]
    assert resources["requests"]["cpu"] == "1"
    assert "cpu" not in resources.get("limits", {})
    limit = quantity(resources["limits"]["memory"])
    assert limit >= 2 * config.sessions.max_buffered_memory
    assert quantity(resources["requests"]["memory"]) == limit
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "keep `max_buffered_memory` at most half of it" in operations


def collector_config(pod: Pod) -> dict[str, Any]:
    container = pod.container("opentelemetry-collector")
    (flag,) = [a for a in container["args"] if a.startswith("--config=")]
    text = pod.mounted_file(container, flag.split("=", 1)[1])
    return dict(yaml.safe_load(expand_env(text, env_of(container))))


def test_sidecar_the_collector_sends_to_the_samplers_loopback_listener(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["sidecar"]
    pod, container = sampler_of(docs)
    _, config = sampler_setup(pod, container)
    assert container in pod.spec["initContainers"] and container["restartPolicy"] == "Always"
    collector = collector_config(pod)
    assert collector["exporters"]["otlp_grpc/sampler"]["endpoint"] == config.receivers.grpc.listen
    assert config.exporter.url.startswith("grpc://"), "kept sessions straight to the backend"
    service = next(d for d in docs if d["kind"] == "Service")
    collector_container = pod.container("opentelemetry-collector")
    for port in service["spec"]["ports"]:
        number = port_number(collector_container, port["targetPort"])
        receivers = collector["receivers"]["otlp"]["protocols"]
        assert number in {host_port(receivers[p]["endpoint"])[1] for p in receivers}


def test_load_balanced_the_collectors_resolve_every_sampler_through_the_headless_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["load-balanced"]
    pod, container = sampler_of(docs)
    _, config = sampler_setup(pod, container)
    (statefulset,) = [d for d in docs if d["kind"] == "StatefulSet"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    headless = services[statefulset["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= labels.items()
    (collector_pod,) = [p for p in pods(docs) if p.name != statefulset["metadata"]["name"]]
    resolver = collector_config(collector_pod)["exporters"]["load_balancing"]["resolver"]
    assert resolver["dns"]["hostname"] == headless["metadata"]["name"]
    grpc_port = host_port(config.receivers.grpc.listen)[1]
    assert int(resolver["dns"]["port"]) == grpc_port
    (otlp,) = [p for p in headless["spec"]["ports"] if p["port"] == grpc_port]
    assert port_number(container, otlp["targetPort"]) == grpc_port


def test_the_config_copies_match_config(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """kustomize reads no file outside a kustomization's folder: the configs of config/ are
    copied beside the manifests and must stay the same."""
    copies = {
        "sidecar/collector.yaml": "collector-sidecar.yaml",
        "sidecar/sampler.yaml": "sampler-sidecar.yaml",
        "load-balanced/sampler.yaml": "sampler-loadbalanced.yaml",
    }
    for copy, original in copies.items():
        text = (DEPLOY / "kubernetes" / copy).read_text()
        assert text == (ROOT / "config" / original).read_text(), (
            f"cp config/{original} deploy/kubernetes/{copy}"
        )
    # The collector tier: config/collector-loadbalancing-traceid.yaml but for the resolver.
    kit = yaml.safe_load((DEPLOY / "kubernetes" / "load-balanced" / "collector.yaml").read_text())
    shipped = yaml.safe_load((ROOT / "config" / "collector-loadbalancing-traceid.yaml").read_text())
    assert set(kit["exporters"]["load_balancing"].pop("resolver")) == {"dns"}
    assert set(shipped["exporters"]["load_balancing"].pop("resolver")) == {"static"}
    assert kit == shipped
