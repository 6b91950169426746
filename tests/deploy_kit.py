"""The deploy kit (deploy/) as the tests read it: the PromQL of its alert rules and Grafana
dashboard taken apart into the metrics and labels each query uses, its compose file, and what
the kit must agree with (the Dockerfile, the project's version, the collector build)."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from sampler.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "monitoring" / "alerts.yaml"
DASHBOARD = DEPLOY / "monitoring" / "grafana-dashboard.json"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
KUSTOMIZATIONS = {
    "sidecar": DEPLOY / "kubernetes" / "sidecar",
    "load-balanced": DEPLOY / "kubernetes" / "load-balanced",
}

# Labels Prometheus adds to every scraped series (not the sampler's own).
SCRAPE_LABELS = frozenset({"job", "instance"})
# Series Prometheus makes itself: `up` is 1 when a scrape succeeded (AgentSamplerDown).
PROMETHEUS_SERIES = frozenset({"up"})
# Grafana's built-in interval variables, as a query would see them.
GRAFANA_BUILTINS = {"$__rate_interval": "2m", "$__interval": "1m", "$__range": "1h"}


@dataclass(frozen=True)
class Selector:
    """One series selector of a query: its metric, label matchers (name, op, value) and the
    labels that an aggregation around it groups by."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...]
    grouped_by: frozenset[str]


def selectors(expression: str) -> list[Selector]:
    """Every series selector in a PromQL expression (parsed, so a syntax error raises)."""
    found: list[Selector] = []

    def visit(node: Any, grouped_by: frozenset[str]) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = tuple(
                (m.name, str(m.op).rsplit(".", 1)[-1], m.value)
                for m in node.matchers.matchers
                if m.name != "__name__"
            )
            found.append(Selector(str(node.name), matchers, grouped_by))
        elif isinstance(node, promql_parser.MatrixSelector):
            visit(node.vector_selector, grouped_by)
        elif isinstance(node, promql_parser.AggregateExpr):
            modifier = node.modifier
            if modifier is not None and "By" in str(modifier.type):
                grouped_by = grouped_by | frozenset(modifier.labels)
            visit(node.expr, grouped_by)
            if node.param is not None:
                visit(node.param, grouped_by)
        elif isinstance(node, promql_parser.Call):
            for argument in node.args:
                visit(argument, grouped_by)
        elif isinstance(node, promql_parser.BinaryExpr):
            visit(node.lhs, grouped_by)
            visit(node.rhs, grouped_by)
        elif isinstance(
            node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr
        ):
            visit(node.expr, grouped_by)

    visit(promql_parser.parse(expression), frozenset())
    return found


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def grafana_variables() -> dict[str, str]:
    """The dashboard's variables as a query would see them: query variables match anything,
    textbox and constant variables take their value."""
    values = dict(GRAFANA_BUILTINS)
    for variable in dashboard()["templating"]["list"]:
        name = "$" + variable["name"]
        if variable["type"] == "query":
            values[name] = ".*"
        elif variable["type"] in ("textbox", "constant"):
            values[name] = str(variable["query"])
    return values


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every query, Grafana's variables substituted."""
    variables = grafana_variables()
    pattern = re.compile("|".join(re.escape(v) for v in sorted(variables, key=len, reverse=True)))
    queries = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expression = pattern.sub(lambda m: variables[m.group(0)], target["expr"])
            queries.append((panel["title"], expression))
    return queries


def kit_queries() -> list[tuple[str, str]]:
    """Every PromQL expression of the kit: (where, expression)."""
    rules = [(f"alert {rule['alert']}", str(rule["expr"])) for rule in alert_rules()]
    panels = [(f"panel {title!r}", expression) for title, expression in dashboard_queries()]
    return rules + panels


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


# --- what the kit must agree with: the image, the project, the collector build -------------

DOCKERFILE = ROOT / "Dockerfile"
SAMPLER_IMAGE = "agent-tail-sampler"


@dataclass(frozen=True)
class Image:
    """What the Dockerfile's runtime stage says about the sampler's image."""

    entrypoint: tuple[str, ...]
    exposed: frozenset[int]
    uid: int
    workdir: str


def image() -> Image:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    runtime = text[text.rindex("\nFROM ") :]  # the last stage is the image
    (entrypoint,) = re.findall(r"^ENTRYPOINT (\[.*\])$", runtime, re.MULTILINE)
    exposed = {
        int(p) for line in re.findall(r"^EXPOSE (.*)$", runtime, re.MULTILINE) for p in line.split()
    }
    (uid,) = re.findall(r"useradd [^\n]*--uid (\d+)", runtime)
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", runtime, re.MULTILINE)
    return Image(tuple(json.loads(entrypoint)), frozenset(exposed), int(uid), workdir)


def project_version() -> str:
    (version,) = re.findall(
        r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
    )
    return version


def collector_version() -> str:
    """The version of the collector benchmarks/collector builds (and the tests run)."""
    manifest = yaml.safe_load((ROOT / "benchmarks/collector/builder-config.yaml").read_text())
    return str(manifest["dist"]["version"])


ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def required_env(config_text: str) -> set[str]:
    """The ${env:NAME} references of a config that have no default."""
    return {name for name, default in ENV_REFERENCE.findall(config_text) if not default}


def expand_env(value: str, env: dict[str, str]) -> str:
    """A collector or sampler config value with its ${env:NAME:-default} references filled."""
    return ENV_REFERENCE.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def parse_cli(words: list[str]) -> argparse.Namespace:
    """``agent-sampler WORDS`` parsed by the CLI's own parser, each flag spelt exactly as the
    parser declares it (argparse would take an abbreviation the docs should not teach)."""
    parser = build_parser()
    args = parser.parse_args(words)
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    declared = {
        option
        for action in subparsers.choices[words[0]]._actions
        for option in action.option_strings
    }
    for word in words:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in declared, f"agent-sampler {words[0]}: no flag {word}"
    return args
