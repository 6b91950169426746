"""deploy/compose/compose.yaml cannot be run here (no container engine): these tests check what
it says against what it runs. The sampler's command is parsed by the CLI's own parser, its
mounted config loaded as the sampler would, and every address, port, image and path checked
against the collector's config, Prometheus's scrape targets, the Dockerfile and the files of
the repository. tests/e2e/collector/test_deploy_kit_configs.py validates the mounted configs
with the collector and `agent-sampler check-config`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from sampler.cli import apply_overrides
from sampler.config.load import load_config
from sampler.config.model import SamplerConfig
from tests.deploy_kit import (
    COMPOSE,
    DEPLOY,
    SAMPLER_IMAGE,
    collector_version,
    compose,
    expand_env,
    host_port,
    image,
    parse_cli,
    project_version,
    required_env,
)

HERE = COMPOSE.parent
SERVICES: dict[str, Any] = compose()["services"]


def mounts(service: str) -> dict[str, Path]:
    """Bind mounts of a service: container path -> the file or folder in the repository."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = (HERE / source).resolve()
    return out


def named_volumes(service: str) -> dict[str, str]:
    """Named volumes of a service: container path -> volume name."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/")):
            out[target] = source
    return out


def published(service: str) -> set[int]:
    return {int(str(p).split(":")[-1]) for p in SERVICES[service].get("ports", [])}


def sampler_args() -> argparse.Namespace:
    entrypoint = image().entrypoint
    assert entrypoint == ("agent-sampler",)
    return parse_cli(SERVICES["sampler"]["command"])


def sampler_config() -> SamplerConfig:
    args = sampler_args()
    source = mounts("sampler")[args.config]
    config = load_config(source, environ=SERVICES["sampler"].get("environment", {}))
    return apply_overrides(config, args)


def collector_config() -> tuple[dict[str, Any], dict[str, str]]:
    command = SERVICES["collector"]["command"]
    (path,) = [c.split("=", 1)[1] for c in command if c.startswith("--config=")]
    text = mounts("collector")[path].read_text()
    env = {k: str(v) for k, v in SERVICES["collector"].get("environment", {}).items()}
    assert required_env(text) <= set(env), "every ${env:...} without a default is set"
    return yaml.safe_load(expand_env(text, env)), env


def test_the_quickstart_has_its_services() -> None:
    assert set(SERVICES) == {"demo-app", "collector", "sampler", "jaeger", "prometheus", "grafana"}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_bind_mount_is_a_file_of_the_repository(service: str) -> None:
    for target, source in mounts(service).items():
        assert source.exists(), f"{service}: {source} (mounted at {target}) does not exist"


def test_the_sampler_is_the_repositorys_image_run_as_the_dockerfile_says() -> None:
    sampler = SERVICES["sampler"]
    assert sampler["image"] == f"{SAMPLER_IMAGE}:{project_version()}"
    context = (HERE / sampler["build"]["context"]).resolve()
    assert (context / sampler["build"]["dockerfile"]).resolve() == DEPLOY.parent / "Dockerfile"
    args = sampler_args()
    assert args.command == "run"
    # A read-only root, with the image's working directory (the only place it writes: the
    # durable queue, or a file:// downstream) on a volume.
    assert sampler["read_only"] is True
    workdir = image().workdir
    assert workdir in named_volumes("sampler")
    config = sampler_config()
    assert config.exporter.queue_dir is not None
    assert Path(config.exporter.queue_dir).is_relative_to(workdir)
    # The image's HEALTHCHECK probes 127.0.0.1:9464, which the metrics listener must cover.
    metrics_host, metrics_port = host_port(config.metrics.listen)
    assert metrics_host in ("0.0.0.0", "127.0.0.1") and metrics_port in image().exposed
    assert metrics_port in published("sampler")
    # SIGTERM: decide, flush up to 25 s.
    assert sampler["stop_grace_period"] == "40s"


def test_the_collector_sends_to_the_samplers_listener() -> None:
    config, _ = collector_config()
    endpoint = config["exporters"]["otlp_grpc/sampler"]["endpoint"]
    host, port = host_port(endpoint)
    assert host == "sampler"
    sampler = sampler_config()
    listen_host, listen_port = host_port(sampler.receivers.grpc.listen)
    assert listen_host == "0.0.0.0" and listen_port == port
    assert "collector" in SERVICES and "sampler" in SERVICES["collector"]["depends_on"]


def test_the_collector_is_the_distribution_of_the_tested_version() -> None:
    assert SERVICES["collector"]["image"] == (
        f"otel/opentelemetry-collector-contrib:{collector_version()}"
    )
    config, _ = collector_config()
    receivers = config["receivers"]["otlp"]["protocols"]
    assert {host_port(receivers[p]["endpoint"])[1] for p in ("grpc", "http")} == published(
        "collector"
    )


def test_kept_sessions_go_to_jaeger() -> None:
    downstream = urlsplit(sampler_config().exporter.url)
    assert (downstream.scheme, downstream.hostname, downstream.port) == ("grpc", "jaeger", 4317)


def test_the_demo_app_sends_to_the_collector() -> None:
    app = SERVICES["demo-app"]
    context = (HERE / app["build"]["context"]).resolve()
    assert {"Dockerfile", "agent_app.py", "requirements.txt"} <= {p.name for p in context.iterdir()}
    command = app["command"]
    endpoint = command[command.index("--endpoint") + 1]
    config, _ = collector_config()
    grpc_port = host_port(config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])[1]
    assert urlsplit(endpoint).hostname == "collector" and urlsplit(endpoint).port == grpc_port


def test_prometheus_scrapes_the_sampler_and_loads_the_alerts() -> None:
    config = yaml.safe_load((HERE / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (targets,) = [c["targets"] for c in jobs["agent-sampler"]["static_configs"]]
    metrics_port = host_port(sampler_config().metrics.listen)[1]
    assert targets == [f"sampler:{metrics_port}"]
    collector, env = collector_config()
    port = collector["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"][
        "prometheus"
    ]["port"]
    assert env["COLLECTOR_METRICS_HOST"] == "0.0.0.0"
    assert [c["targets"] for c in jobs["otel-collector"]["static_configs"]] == [
        [f"collector:{port}"]
    ]
    rule_files = mounts("prometheus")
    for path in config["rule_files"]:
        assert rule_files[path] == DEPLOY / "monitoring" / "alerts.yaml"


def test_grafana_provisions_the_dashboard_and_its_data_source() -> None:
    provisioning = mounts("grafana")["/etc/grafana/provisioning"]
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())
    (folder,) = [p["options"]["path"] for p in providers["providers"]]
    dashboards = {t: s for t, s in mounts("grafana").items() if t.startswith(folder + "/")}
    assert list(dashboards.values()) == [DEPLOY / "monitoring" / "grafana-dashboard.json"]
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())
    (prometheus,) = [s for s in sources["datasources"] if s["type"] == "prometheus"]
    assert prometheus["isDefault"] and prometheus["url"] == "http://prometheus:9090"
    jaeger = [s for s in sources["datasources"] if s["type"] == "jaeger"]
    assert [s["url"] for s in jaeger] == ["http://jaeger:16686"]
